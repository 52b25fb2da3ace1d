//! Plain-HTTP calls SOTP makes to a tenant's own endpoints (its Alertmanager and webhook, its
//! OTLP backend): the URL's host is resolved and checked against the operator's egress
//! policy, and the request goes to the checked address, with the URL's host in `Host` (plain
//! HTTP only for now: with TLS the certificate names the host, not the address).

use crate::egress::EgressPolicy;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// An `http://` URL's host, port and path prefix (no trailing `/`).
pub fn target(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL (https is not supported yet)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(port) => (h, port),
            Err(_) => return Err(format!("bad port in `{url}`")),
        },
        _ => (authority, 80),
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

/// `host:port` as a Host header says it (an IPv6 address in brackets).
fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
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
    let (host, port, prefix) = target(base)?;
    let address = egress.resolve(&host, port).map_err(|e| e.to_string())?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{address}{prefix}{path}");
    let shown = format!("{method} {}{path}", base.trim_end_matches('/'));
    let host = host_header(&host, port);
    let auth = bearer.map(|token| format!("Bearer {token}"));
    let response = match (method, body) {
        ("GET", _) => with_auth(agent.get(&url).header("Host", &host), &auth).call(),
        ("DELETE", _) => with_auth(agent.delete(&url).header("Host", &host), &auth).call(),
        (_, body) => {
            let (body, content_type) = body.unwrap_or((&[], "application/json"));
            with_auth(agent.post(&url).header("Host", &host), &auth)
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

fn with_auth<B>(
    request: ureq::RequestBuilder<B>,
    auth: &Option<String>,
) -> ureq::RequestBuilder<B> {
    match auth {
        Some(value) => request.header("Authorization", value),
        None => request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_a_host() {
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
        assert!(target("https://am:9093").unwrap_err().contains("https"));
        assert!(target("http://user@am:9093").is_err());
        assert!(target("http://am:port").is_err());
        assert_eq!(host_header("::1", 9093), "[::1]:9093");
        assert_eq!(host_header("am.example", 80), "am.example:80");
    }
}
