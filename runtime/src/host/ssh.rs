//! `sotp:telemetry/ssh`: run commands on inventory devices over `russh`.
//!
//! The guest names a device; the host resolves the address, the user and the password or
//! private key (from the secret store), and enforces the host-key policy: the first key seen
//! is pinned, a different one later is refused (until the tenant forgets the pin). Output is
//! capped per command, the whole exchange bounded by the guest's timeout and by what is left
//! of the call's wall-clock budget; waiting on the network does not count against the
//! component's CPU deadline.

use super::{HostState, WitError};
use crate::host::sotp::telemetry::ssh::{self, CommandOutput};
use crate::inventory::Device;
use parking_lot::Mutex;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, decode_secret_key};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_COMMANDS: usize = 32;
const OUTPUT_CAP: usize = 1 << 20;

impl ssh::Host for HostState {
    fn run(
        &mut self,
        device: String,
        commands: Vec<String>,
        timeout_ms: u32,
    ) -> Result<Vec<CommandOutput>, WitError> {
        let device = self.granted_device(&device)?;
        if commands.is_empty() || commands.len() > MAX_COMMANDS {
            return Err(WitError::Invalid(format!(
                "give 1 to {MAX_COMMANDS} commands"
            )));
        }
        // Within the call's wall-clock budget: a host call never outlasts it.
        let remaining = self.clock.wall_remaining();
        if remaining.is_zero() {
            return Err(WitError::Timeout(
                "the call's wall-clock budget (limits.wall_ms) is spent".into(),
            ));
        }
        let timeout =
            Duration::from_millis(u64::from(timeout_ms).clamp(1_000, 120_000)).min(remaining);
        let started = Instant::now();
        let result = self.ssh_exchange(&device, &commands, timeout);
        self.clock.in_host += started.elapsed();
        result
    }
}

/// What a connection learned about the server's key.
struct KeyCheck {
    pinned: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for KeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        let fingerprint = format!(
            "{} {}",
            key.algorithm().as_str(),
            key.fingerprint(HashAlg::Sha256)
        );
        let ok = self.pinned.as_ref().is_none_or(|p| *p == fingerprint);
        *self.seen.lock() = Some(fingerprint);
        Ok(ok)
    }
}

enum Credential {
    Password(String),
    Key(String),
}

impl HostState {
    fn ssh_exchange(
        &mut self,
        device: &Device,
        commands: &[String],
        timeout: Duration,
    ) -> Result<Vec<CommandOutput>, WitError> {
        let creds = device.ssh.clone().ok_or_else(|| {
            WitError::Invalid(format!(
                "device `{}` has no SSH credentials in the inventory",
                device.name
            ))
        })?;
        let credential = match (&creds.key_secret, &creds.password_secret) {
            (Some(k), _) => Credential::Key(self.device_secret(k, "ssh.key_secret")?),
            (None, Some(p)) => Credential::Password(self.device_secret(p, "ssh.password_secret")?),
            (None, None) => {
                return Err(WitError::Invalid(
                    "the device has no SSH password or key".into(),
                ));
            }
        };
        let (tenant, services) = (self.env.tenant.clone(), self.env.services.clone());
        let pinned = services
            .ssh_host_key(&tenant, &device.name)
            .map_err(WitError::Unavailable)?;
        let seen = Arc::new(Mutex::new(None));
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| WitError::Unavailable("no I/O runtime for SSH".into()))?;
        // Resolved and checked against the operator's egress policy; connect to that address.
        let address = self.egress_address(&device.address, creds.port.unwrap_or(22))?;
        let name = device.name.clone();
        let check = KeyCheck {
            pinned: pinned.clone(),
            seen: seen.clone(),
        };
        let work = exchange(
            address,
            creds.user.clone(),
            credential,
            commands.to_vec(),
            check,
        );
        let outcome = handle.block_on(async { tokio::time::timeout(timeout, work).await });
        let result = match outcome {
            Err(_) => Err(WitError::Timeout(format!(
                "SSH to {name} did not finish within {timeout:?}"
            ))),
            Ok(Err(Failure::Refused)) => {
                let got = seen.lock().clone().unwrap_or_default();
                Err(WitError::Unavailable(format!(
                    "host key of {name} changed: pinned {}, offered {got}; if the change is legitimate: sotp device forget-host-key {name}",
                    pinned.clone().unwrap_or_default()
                )))
            }
            Ok(Err(Failure::Auth)) => Err(WitError::Unavailable(format!(
                "SSH authentication as `{}` on {name} failed (wrong password or key?)",
                creds.user
            ))),
            Ok(Err(Failure::Other(e))) => Err(WitError::Unavailable(format!("SSH to {name}: {e}"))),
            Ok(Ok(outputs)) => Ok(outputs),
        };
        // Pin on first use, only once the server proved it holds the key (the exchange ran).
        if result.is_ok()
            && pinned.is_none()
            && let Some(key) = seen.lock().clone()
        {
            services
                .pin_ssh_host_key(&tenant, &name, &key)
                .map_err(WitError::Unavailable)?;
        }
        result
    }

    fn device_secret(&self, name: &str, key: &str) -> Result<String, WitError> {
        self.env
            .services
            .read_secret(&self.env.tenant, name)
            .map_err(WitError::Unavailable)?
            .ok_or_else(|| WitError::Invalid(format!("{key}: no secret named `{name}`")))
    }
}

enum Failure {
    Refused,
    Auth,
    Other(String),
}

async fn exchange(
    address: std::net::SocketAddr,
    user: String,
    credential: Credential,
    commands: Vec<String>,
    check: KeyCheck,
) -> Result<Vec<CommandOutput>, Failure> {
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let mut session = match client::connect(config, address, check).await {
        Ok(s) => s,
        Err(russh::Error::UnknownKey) => return Err(Failure::Refused),
        Err(e) => return Err(Failure::Other(e.to_string())),
    };
    let auth = match credential {
        Credential::Password(p) => session.authenticate_password(user, p).await,
        Credential::Key(text) => {
            let key = decode_secret_key(&text, None)
                .map_err(|e| Failure::Other(format!("the private key: {e}")))?;
            let hash = session
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten();
            session
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
        }
    }
    .map_err(|e| Failure::Other(e.to_string()))?;
    if !auth.success() {
        return Err(Failure::Auth);
    }
    let mut outputs = Vec::with_capacity(commands.len());
    for command in commands {
        let mut channel = session
            .channel_open_session()
            .await
            .map_err(|e| Failure::Other(e.to_string()))?;
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(|e| Failure::Other(e.to_string()))?;
        let mut output = Vec::new();
        let mut exit_status = None;
        let mut truncated = false;
        while let Some(msg) = channel.wait().await {
            match msg {
                russh::ChannelMsg::Data { ref data }
                | russh::ChannelMsg::ExtendedData { ref data, .. } => {
                    let room = OUTPUT_CAP.saturating_sub(output.len());
                    truncated |= data.len() > room;
                    output.extend_from_slice(&data[..data.len().min(room)]);
                }
                russh::ChannelMsg::ExitStatus { exit_status: s } => exit_status = Some(s),
                _ => {}
            }
        }
        outputs.push(CommandOutput {
            command,
            output: String::from_utf8_lossy(&output).into_owned(),
            exit_status,
            truncated,
        });
    }
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    Ok(outputs)
}
