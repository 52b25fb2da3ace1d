//! `sotp:telemetry/snmp`: GET and bulk walks over `snmp2`, v2c and v3 (authPriv), with the
//! device's credentials resolved from the secret store — the guest never sees them.
//!
//! Sessions are kept per device for the instance's life, so SNMPv3 engine discovery happens
//! once. Time spent waiting on the network does not count against the CPU deadline, but does
//! against the call's wall-clock budget (`limits.wall_ms`): no new try starts once it is
//! spent, so a call looping on a device that never answers ends at most one try (the
//! device's timeout, capped at `inventory::MAX_SNMP_TIMEOUT_MS`) after its budget.

use super::{HostState, WitError};
use crate::host::sotp::telemetry::snmp::{self, Value, Varbind};
use crate::inventory::{Device, SnmpCredentials};
use snmp2::{Oid, SyncSession, v3};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const BULK_REPETITIONS: u32 = 25;
const MAX_WALK_ROWS: u32 = 100_000;
const MAX_GET_OIDS: usize = 128;

pub(crate) struct Session {
    /// Boxed: a SyncSession carries a 64 KiB receive buffer inline.
    inner: Box<SyncSession>,
    retries: u32,
    target: String,
}

impl snmp::Host for HostState {
    fn get(&mut self, device: String, oids: Vec<String>) -> Result<Vec<Varbind>, WitError> {
        let device = self.granted_device(&device)?;
        if oids.is_empty() || oids.len() > MAX_GET_OIDS {
            return Err(WitError::Invalid(format!("give 1 to {MAX_GET_OIDS} OIDs")));
        }
        let parsed: Vec<Oid<'static>> = oids
            .iter()
            .map(|o| parse_oid(o))
            .collect::<Result<_, _>>()?;
        let started = Instant::now();
        let deadline = self.clock.started + self.clock.wall_limit;
        let result = self.with_session(&device, |s| {
            s.request(deadline, |inner| {
                let refs: Vec<&Oid> = parsed.iter().collect();
                inner
                    .get_many(&refs)
                    .map(|pdu| (pdu.error_status, convert(pdu.varbinds)))
            })
        });
        self.clock.in_host += started.elapsed();
        let (status, varbinds) = result?;
        if status != 0 {
            return Err(WitError::Invalid(format!(
                "the agent answered with error status {status}"
            )));
        }
        Ok(varbinds)
    }

    fn walk(
        &mut self,
        device: String,
        root: String,
        max_rows: u32,
    ) -> Result<Vec<Varbind>, WitError> {
        let device = self.granted_device(&device)?;
        let root_oid = parse_oid(&root)?;
        let prefix = format!("{}.", root_oid.to_id_string());
        let max_rows = max_rows.clamp(1, MAX_WALK_ROWS) as usize;
        let started = Instant::now();
        let deadline = self.clock.started + self.clock.wall_limit;
        let result = self.with_session(&device, |s| {
            let mut out: Vec<Varbind> = Vec::new();
            let mut cursor = root_oid.clone();
            loop {
                let batch = s.request(deadline, |inner| {
                    inner
                        .getbulk(&[&cursor], 0, BULK_REPETITIONS)
                        .map(|pdu| convert(pdu.varbinds))
                })?;
                let mut advanced = false;
                for vb in batch {
                    if !vb.oid.starts_with(&prefix) || matches!(vb.value, Value::EndOfMibView) {
                        return Ok(out);
                    }
                    if out.last().is_some_and(|last| last.oid == vb.oid) {
                        return Ok(out);
                    }
                    cursor = parse_oid(&vb.oid)?;
                    out.push(vb);
                    advanced = true;
                    if out.len() >= max_rows {
                        return Ok(out);
                    }
                }
                if !advanced {
                    return Ok(out);
                }
            }
        });
        self.clock.in_host += started.elapsed();
        result
    }
}

impl HostState {
    fn with_session<T>(
        &mut self,
        device: &Device,
        f: impl FnOnce(&mut Session) -> Result<T, WitError>,
    ) -> Result<T, WitError> {
        if !self.snmp_sessions.contains_key(&device.name) {
            let session = self.open_session(device)?;
            self.snmp_sessions.insert(device.name.clone(), session);
        }
        let session = self
            .snmp_sessions
            .get_mut(&device.name)
            .expect("inserted above");
        let result = f(session);
        if result.is_err() {
            // Start clean next time (engine ids, counters, a half-read socket).
            self.snmp_sessions.remove(&device.name);
        }
        result
    }

    fn open_session(&mut self, device: &Device) -> Result<Session, WitError> {
        let creds = device.snmp.as_ref().ok_or_else(|| {
            WitError::Invalid(format!(
                "device `{}` has no SNMP credentials in the inventory",
                device.name
            ))
        })?;
        // Resolved and checked against the operator's egress policy; the session talks to
        // that address.
        let target = self
            .egress_address(&device.address, creds.port.unwrap_or(161))?
            .to_string();
        // Caps apply to devices stored before they were validated at import too.
        let timeout_ms = creds
            .timeout_ms
            .unwrap_or(2000)
            .clamp(1, crate::inventory::MAX_SNMP_TIMEOUT_MS);
        let timeout = Some(Duration::from_millis(timeout_ms));
        let unreachable = |e: std::io::Error| WitError::Unavailable(format!("{target}: {e}"));
        let inner = match creds.version.as_str() {
            "2c" => {
                let community =
                    self.required_secret(&creds.community_secret, "snmp.community_secret")?;
                Box::new(
                    SyncSession::new_v2c(target.as_str(), community.as_bytes(), timeout, 0)
                        .map_err(unreachable)?,
                )
            }
            _ => {
                let security = self.v3_security(creds)?;
                Box::new(
                    SyncSession::new_v3(target.as_str(), timeout, 0, security)
                        .map_err(unreachable)?,
                )
            }
        };
        let mut session = Session {
            inner,
            retries: creds
                .retries
                .unwrap_or(1)
                .min(crate::inventory::MAX_SNMP_RETRIES),
            target,
        };
        if creds.version == "3" {
            // Engine discovery (engine id, boots, time) before the first request.
            let deadline = self.clock.started + self.clock.wall_limit;
            session.request(deadline, |inner| inner.init())?;
        }
        Ok(session)
    }

    fn v3_security(&mut self, creds: &SnmpCredentials) -> Result<v3::Security, WitError> {
        let user = creds.user.clone().unwrap_or_default();
        let auth = match &creds.auth_secret {
            Some(_) => self.required_secret(&creds.auth_secret, "snmp.auth_secret")?,
            None => String::new(),
        };
        let protocol = match creds.auth_protocol.as_deref().unwrap_or("sha") {
            "md5" => v3::AuthProtocol::Md5,
            "sha" | "sha1" => v3::AuthProtocol::Sha1,
            "sha224" => v3::AuthProtocol::Sha224,
            "sha256" => v3::AuthProtocol::Sha256,
            "sha384" => v3::AuthProtocol::Sha384,
            "sha512" => v3::AuthProtocol::Sha512,
            other => {
                return Err(WitError::Invalid(format!(
                    "snmp.auth_protocol `{other}` is not supported"
                )));
            }
        };
        let mode = match (&creds.auth_secret, &creds.priv_secret) {
            (None, _) => v3::Auth::NoAuthNoPriv,
            (Some(_), None) => v3::Auth::AuthNoPriv,
            (Some(_), Some(_)) => {
                let privacy = self.required_secret(&creds.priv_secret, "snmp.priv_secret")?;
                let cipher = match creds.priv_protocol.as_deref().unwrap_or("aes") {
                    "des" => v3::Cipher::Des,
                    "aes" | "aes128" => v3::Cipher::Aes128,
                    "aes192" => v3::Cipher::Aes192,
                    "aes256" => v3::Cipher::Aes256,
                    other => {
                        return Err(WitError::Invalid(format!(
                            "snmp.priv_protocol `{other}` is not supported"
                        )));
                    }
                };
                v3::Auth::AuthPriv {
                    cipher,
                    privacy_password: privacy.into_bytes(),
                }
            }
        };
        Ok(v3::Security::new(user.as_bytes(), auth.as_bytes())
            .with_auth_protocol(protocol)
            .with_auth(mode))
    }

    /// A secret the device's credentials name (the component itself needs no grant for it:
    /// the inventory, which only the tenant edits, put it there).
    fn required_secret(&mut self, name: &Option<String>, key: &str) -> Result<String, WitError> {
        let name = name
            .as_deref()
            .ok_or_else(|| WitError::Invalid(format!("the device has no {key}")))?;
        self.env
            .services
            .read_secret(&self.env.tenant, name)
            .map_err(WitError::Unavailable)?
            .ok_or_else(|| WitError::Invalid(format!("{key}: no secret named `{name}`")))
    }
}

impl Session {
    /// Run a request with the device's retries; SNMPv3 resynchronisation is transparent. No
    /// try starts after `deadline` (the call's wall-clock budget).
    fn request<T>(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(&mut SyncSession) -> Result<T, snmp2::Error>,
    ) -> Result<T, WitError> {
        let mut attempts = 0;
        let mut resyncs = 0;
        loop {
            if Instant::now() >= deadline {
                return Err(WitError::Timeout(format!(
                    "the call's wall-clock budget (limits.wall_ms) is spent; {} not asked",
                    self.target
                )));
            }
            match f(&mut self.inner) {
                Ok(v) => return Ok(v),
                Err(snmp2::Error::AuthUpdated) if resyncs < 3 => resyncs += 1,
                Err(snmp2::Error::Receive | snmp2::Error::Send) if attempts < self.retries => {
                    attempts += 1
                }
                Err(snmp2::Error::Receive | snmp2::Error::Send) => {
                    return Err(WitError::Timeout(format!(
                        "no SNMP answer from {} after {} tries",
                        self.target,
                        attempts + 1
                    )));
                }
                Err(snmp2::Error::AuthFailure(kind)) => {
                    return Err(WitError::Unavailable(format!(
                        "SNMPv3 authentication with {} failed: {kind:?}",
                        self.target
                    )));
                }
                Err(e) => {
                    return Err(WitError::Unavailable(format!(
                        "SNMP with {}: {e}",
                        self.target
                    )));
                }
            }
        }
    }
}

fn parse_oid(text: &str) -> Result<Oid<'static>, WitError> {
    let parts: Result<Vec<u64>, _> = text
        .trim_start_matches('.')
        .split('.')
        .map(str::parse::<u64>)
        .collect();
    match parts {
        Ok(p) if p.len() >= 2 => {
            Oid::from(&p).map_err(|e| WitError::Invalid(format!("OID `{text}`: {e:?}")))
        }
        _ => Err(WitError::Invalid(format!(
            "`{text}` is not a numeric OID (like 1.3.6.1.2.1.1.5.0)"
        ))),
    }
}

fn convert(varbinds: snmp2::Varbinds<'_>) -> Vec<Varbind> {
    varbinds
        .map(|(oid, value)| Varbind {
            oid: oid.to_id_string(),
            value: match value {
                snmp2::Value::Integer(i) => Value::Integer(i),
                snmp2::Value::Boolean(b) => Value::Integer(b as i64),
                snmp2::Value::OctetString(b) => Value::Octets(b.to_vec()),
                snmp2::Value::ObjectIdentifier(o) => Value::ObjectId(o.to_id_string()),
                snmp2::Value::IpAddress(a) => Value::IpAddress(Ipv4Addr::from(a).to_string()),
                snmp2::Value::Counter32(c) => Value::Counter32(c),
                snmp2::Value::Unsigned32(g) => Value::Gauge32(g),
                snmp2::Value::Timeticks(t) => Value::Timeticks(t),
                snmp2::Value::Opaque(b) => Value::Opaque(b.to_vec()),
                snmp2::Value::Counter64(c) => Value::Counter64(c),
                snmp2::Value::NoSuchObject => Value::NoSuchObject,
                snmp2::Value::NoSuchInstance => Value::NoSuchInstance,
                snmp2::Value::EndOfMibView => Value::EndOfMibView,
                _ => Value::Null,
            },
        })
        .collect()
}
