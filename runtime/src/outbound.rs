//! HTTP(S) calls SOTP makes to a tenant's own endpoints (its Alertmanager and webhook, its
//! OTLP backend, its Vault, AWS for its secrets): the URL's host is resolved and checked
//! against the operator's egress policy by the client's own resolver (`EgressResolver`), so
//! the connection goes only to the checked address, while TLS still verifies the certificate
//! against the URL's host name (with the system's roots).

use crate::egress::EgressPolicy;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

const TIMEOUT: Duration = Duration::from_secs(5);

/// An `http://` or `https://` URL's host, port and path prefix (no trailing `/`).
pub fn target(url: &str) -> Result<(String, u16, String), String> {
    let (rest, default_port) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, 80),
        (_, Some(rest)) => (rest, 443),
        _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(port) => (h, port),
            Err(_) => return Err(format!("bad port in `{url}`")),
        },
        _ => (authority, default_port),
    };
    if host.is_empty() || authority.contains('@') {
        return Err(format!("no host in `{url}`"));
    }
    Ok((
        host.trim_matches(['[', ']']).to_string(),
        port,
        path.to_string(),
    ))
}

/// Resolves through the egress policy: the only addresses the client connects to.
#[derive(Debug)]
struct EgressResolver(EgressPolicy);

impl Resolver for EgressResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let address = self.0.resolve(host, port).map_err(|e| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                e.to_string(),
            ))
        })?;
        let mut out = self.empty();
        out.push(address);
        Ok(out)
    }
}

/// The system's root certificates, read once.
fn system_roots() -> Arc<Vec<ureq::tls::Certificate<'static>>> {
    static ROOTS: OnceLock<Arc<Vec<ureq::tls::Certificate<'static>>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            Arc::new(
                found
                    .certs
                    .iter()
                    .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                    .collect(),
            )
        })
        .clone()
}

fn agent(egress: &EgressPolicy) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(system_roots()))
        .build();
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .tls_config(tls)
        .build();
    ureq::Agent::with_parts(
        config,
        DefaultConnector::new(),
        EgressResolver(egress.clone()),
    )
}

/// Most of a response body read (what an Alertmanager lists).
const MAX_RESPONSE: u64 = 32 << 20;

/// `method` `base` + `path` (with a `body` of that content type), connecting to the address
/// `egress` checked: the answer whatever its status (`Err`: no answer).
pub fn request(
    method: &str,
    base: &str,
    path: &str,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    body: Option<(&[u8], &str)>,
) -> Result<Answer, String> {
    let auth = bearer.map(|token| ("Authorization".to_string(), format!("Bearer {token}")));
    request_with(method, base, path, auth.as_slice(), egress, body)
}

/// As [`request`], with any headers (`Host` is the URL's).
pub fn request_with(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(String, String)],
    egress: &EgressPolicy,
    body: Option<(&[u8], &str)>,
) -> Result<Answer, String> {
    target(base)?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let shown = format!("{method} {url}");
    let agent = agent(egress);
    let response = match (method, body) {
        ("GET", _) => with_headers(agent.get(&url), headers).call(),
        ("DELETE", _) => with_headers(agent.delete(&url), headers).call(),
        (_, body) => {
            let (body, content_type) = body.unwrap_or((&[], "application/json"));
            with_headers(agent.post(&url), headers)
                .header("Content-Type", content_type)
                .send(body)
        }
    };
    let mut response = response.map_err(|e| format!("{shown}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_string()
        .map_err(|e| format!("{shown}: reading the answer: {e}"))?;
    Ok(Answer {
        status,
        text,
        shown,
    })
}

fn with_headers<B>(
    mut request: ureq::RequestBuilder<B>,
    headers: &[(String, String)],
) -> ureq::RequestBuilder<B> {
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

/// An answer of any status: the status, the body, and the request as errors name it.
pub struct Answer {
    pub status: u16,
    pub text: String,
    pub shown: String,
}

/// `method` `base` + `path` (with a `body` of that content type), connecting to the address
/// `egress` checked; the body of a 2xx answer, else an error naming the request and the answer.
pub fn call(
    method: &str,
    base: &str,
    path: &str,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    body: Option<(&[u8], &str)>,
) -> Result<String, String> {
    let answer = request(method, base, path, bearer, egress, body)?;
    if (200..300).contains(&answer.status) {
        return Ok(answer.text);
    }
    let text: String = answer.text.trim().chars().take(512).collect();
    Err(format!("{}: HTTP {}: {text}", answer.shown, answer.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert_eq!(
            target("http://am.example:9093").unwrap(),
            ("am.example".into(), 9093, "".into())
        );
        assert_eq!(
            target("http://10.0.0.1/am/").unwrap(),
            ("10.0.0.1".into(), 80, "/am".into())
        );
        assert_eq!(
            target("http://[::1]:9093").unwrap(),
            ("::1".into(), 9093, "".into())
        );
        assert_eq!(
            target("https://vault.example").unwrap(),
            ("vault.example".into(), 443, "".into())
        );
        assert!(target("ftp://am:9093").is_err());
        assert!(target("http://user@am:9093").is_err());
        assert!(target("http://am:port").is_err());
    }

    #[test]
    fn the_egress_policy_refuses_before_connecting() {
        // The default policy refuses loopback: no connection is tried.
        let e = request(
            "GET",
            "https://127.0.0.1:9",
            "/",
            None,
            &EgressPolicy::default(),
            None,
        )
        .err()
        .unwrap();
        assert!(e.contains("127.0.0.1"), "{e}");
    }
}
