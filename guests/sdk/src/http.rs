//! HTTP(S) requests through the host (`sotp:telemetry/http`): the URL must be covered by the
//! manifest's `grants.http`. Every answer carries the time of each phase, the certificate and
//! the `traceparent` sent; a failure carries the phase it stopped in and what was measured
//! before.

pub use crate::bindings::sotp::telemetry::http::{
    Certificate, Failure, Header, Method, Request, Response, Timings, clear_cookies, send,
};

impl Request {
    /// A GET with the host's defaults (10 s timeout, no redirects, 1 MiB of body).
    pub fn get(url: &str) -> Request {
        Request {
            method: Method::Get,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 0,
            max_redirects: 0,
            max_body_bytes: 0,
            insecure_skip_verify: false,
            ca_secret: None,
            traceparent: None,
        }
    }

    /// A POST of an HTML form (`application/x-www-form-urlencoded`).
    pub fn post_form(url: &str, fields: &[(&str, &str)]) -> Request {
        let mut request = Request::get(url);
        request.method = Method::Post;
        request.body = form_encode(fields).into_bytes();
        request.header("Content-Type", "application/x-www-form-urlencoded")
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push(Header {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    pub fn timeout_ms(mut self, ms: u32) -> Request {
        self.timeout_ms = ms;
        self
    }

    pub fn redirects(mut self, max: u32) -> Request {
        self.max_redirects = max;
        self
    }

    pub fn traceparent(mut self, traceparent: Option<String>) -> Request {
        self.traceparent = traceparent;
        self
    }
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `application/x-www-form-urlencoded`, as browsers encode forms.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The trace id of a `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_encode_like_browsers() {
        assert_eq!(
            form_encode(&[("user", "a b"), ("pass", "p&=ü")]),
            "user=a+b&pass=p%26%3D%C3%BC"
        );
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
