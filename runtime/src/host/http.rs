//! `sotp:telemetry/http`: HTTP(S) requests for probes and API collectors, with the time of
//! every phase, the server's certificate and the `traceparent` sent.
//!
//! Why not a pooled client (reqwest, ureq): a probe is about the phases a client library
//! hides — how long DNS, connect, TLS and the first byte took, which certificate was shown —
//! and about connecting only to the address the grant and egress checks approved. So each
//! hop resolves through the egress policy, connects and handshakes TLS (tokio-rustls) itself,
//! timing each step, and hands the stream to hyper's HTTP/1.1 connection API. No connection
//! is reused: every probe measures a cold request, as blackbox_exporter does.
//!
//! Grants are checked before resolving (the URL's scheme, host, port against `grants.http`)
//! and after (an address outside the public Internet must be granted by address or range).
//! Redirects are followed hop by hop under the same checks. Network waits count against the
//! call's wall-clock budget (`clock.in_host`), never its CPU deadline; the request's timeout
//! is capped by what is left of that budget.

use super::{HostState, WitError};
use crate::grants::{deny_http_address, deny_url};
use crate::host::sotp::telemetry::http::{
    self, Certificate, Failure, Header, Method, Request, Response, Timings,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BODY: u32 = 1 << 20;
const MAX_BODY: u32 = 8 << 20;
const MAX_REDIRECTS: u32 = 10;
const MAX_HEADERS: usize = 64;
const USER_AGENT: &str = concat!("sotp/", env!("CARGO_PKG_VERSION"));

/// The cookies kept during one call (a probe run); `begin_call` drops them.
pub(crate) type CookieJar = cookie_store::CookieStore;

impl http::Host for HostState {
    fn send(&mut self, request: Request) -> Result<Response, Failure> {
        let started = Instant::now();
        let mut progress = Progress::new(request.traceparent.as_deref());
        let result = self.exchange(request, &mut progress);
        self.clock.in_host += started.elapsed();
        progress.timings.total_ms = ms(started.elapsed());
        let stats = &self.env.stats;
        stats.http_requests.fetch_add(
            u64::from(progress.hops),
            std::sync::atomic::Ordering::Relaxed,
        );
        match result {
            Ok(mut response) => {
                response.timings = progress.timings;
                response.traceparent = progress.traceparent;
                Ok(response)
            }
            Err(error) => {
                stats
                    .http_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(Failure {
                    error,
                    phase: progress.phase.to_string(),
                    timings: progress.timings,
                    traceparent: progress.traceparent,
                })
            }
        }
    }

    fn clear_cookies(&mut self) {
        self.http_cookies = None;
    }
}

/// What one `send` has measured so far, kept whether it succeeds or not.
struct Progress {
    timings: Timings,
    /// The phase under way (or where it stopped).
    phase: &'static str,
    traceparent: String,
    hops: u32,
}

impl Progress {
    fn new(traceparent: Option<&str>) -> Self {
        let traceparent = traceparent
            .filter(|t| valid_traceparent(t))
            .map(str::to_string)
            .unwrap_or_else(new_traceparent);
        Progress {
            timings: no_timings(),
            phase: "request",
            traceparent,
            hops: 0,
        }
    }
}

/// One hop's answer.
struct HopResponse {
    status: u16,
    version: String,
    headers: Vec<Header>,
    body: Vec<u8>,
    truncated: bool,
    certificate: Option<Certificate>,
}

/// A request as sent on one hop.
struct Outgoing {
    method: hyper::Method,
    url: url::Url,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    body: Bytes,
}

impl HostState {
    fn exchange(
        &mut self,
        request: Request,
        progress: &mut Progress,
    ) -> Result<Response, WitError> {
        let timeout = match request.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        }
        .min(self.clock.wall_remaining());
        let deadline = tokio::time::Instant::now() + timeout;
        let max_body = match request.max_body_bytes {
            0 => DEFAULT_MAX_BODY,
            n => n.min(MAX_BODY),
        } as usize;
        let max_redirects = request.max_redirects.min(MAX_REDIRECTS);
        // Made at the first https hop: a plain-HTTP probe reads no CA secret.
        let mut tls: Option<Arc<rustls::ClientConfig>> = None;
        let (insecure, ca_secret) = (request.insecure_skip_verify, request.ca_secret.clone());
        let mut outgoing = Outgoing {
            method: method(request.method),
            url: url::Url::parse(&request.url)
                .map_err(|e| WitError::Invalid(format!("`{}` is not a URL: {e}", request.url)))?,
            headers: guest_headers(&request.headers)?,
            body: Bytes::from(request.body),
        };
        let handle = io_runtime();
        let mut redirects = 0;
        loop {
            let address = self.checked_address(&outgoing.url, progress)?;
            if outgoing.url.scheme() == "https" && tls.is_none() {
                progress.phase = "tls";
                tls = Some(self.tls_config(insecure, ca_secret.as_deref())?);
            }
            let sent = self.request_headers(&outgoing, &progress.traceparent);
            progress.hops += 1;
            let hop = handle.block_on(tokio::time::timeout_at(
                deadline,
                one_hop(address, &outgoing, sent, tls.clone(), max_body, progress),
            ));
            let hop = match hop {
                Ok(hop) => hop?,
                Err(_) => {
                    return Err(WitError::Timeout(format!(
                        "no complete answer from {} within {timeout:?} (stopped in {})",
                        outgoing.url, progress.phase
                    )));
                }
            };
            self.keep_cookies(&outgoing.url, &hop.headers);
            let next = (redirects < max_redirects)
                .then(|| redirect_target(&outgoing.url, &hop))
                .flatten();
            match next {
                Some(target) => {
                    progress.phase = "redirect";
                    redirects += 1;
                    let target = target.map_err(WitError::Invalid)?;
                    if hop.status == 303
                        || (matches!(hop.status, 301 | 302)
                            && outgoing.method == hyper::Method::POST)
                    {
                        outgoing.method = hyper::Method::GET;
                        outgoing.body = Bytes::new();
                    }
                    outgoing.url = target;
                }
                None => {
                    return Ok(Response {
                        status: hop.status,
                        headers: hop.headers,
                        body: hop.body,
                        truncated: hop.truncated,
                        url: outgoing.url.to_string(),
                        redirects,
                        version: hop.version,
                        timings: progress.timings,
                        certificate: hop.certificate,
                        traceparent: String::new(),
                    });
                }
            }
        }
    }

    /// The URL checked against `grants.http`, resolved through the egress policy, and the
    /// address checked again (a refusal is counted as denied).
    fn checked_address(
        &mut self,
        url: &url::Url,
        progress: &mut Progress,
    ) -> Result<SocketAddr, WitError> {
        progress.phase = "grant";
        let scheme = url.scheme();
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(WitError::Invalid(format!("`{url}` has no host")));
        };
        if !matches!(scheme, "http" | "https") {
            return Err(WitError::Invalid(format!(
                "`{url}`: only http and https URLs can be requested"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WitError::Invalid(
                "credentials do not belong in URLs (they end up in logs): send an Authorization header built from a secret".into(),
            ));
        }
        let grants = self.env.manifest.grants.http_grants();
        if let Some(reason) = deny_url(&grants, scheme, host, port) {
            return Err(self.deny(reason));
        }
        progress.phase = "dns";
        let started = Instant::now();
        let address = self.env.services.connect_address(host, port);
        add(&mut progress.timings.dns_ms, started.elapsed());
        let address = match address {
            Ok(a) => a,
            Err(WitError::Denied(reason)) => {
                progress.phase = "grant";
                return Err(self.deny(reason));
            }
            Err(other) => return Err(other),
        };
        if let Some(reason) = deny_http_address(&grants, scheme, port, address.ip()) {
            progress.phase = "grant";
            return Err(self.deny(reason));
        }
        Ok(address)
    }

    /// The guest's headers plus Host, User-Agent, traceparent and the kept cookies, unless
    /// the guest set them.
    fn request_headers(
        &self,
        outgoing: &Outgoing,
        traceparent: &str,
    ) -> Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)> {
        use hyper::header::{self, HeaderValue};
        let mut headers = outgoing.headers.clone();
        let has = |headers: &[(header::HeaderName, HeaderValue)], name: &header::HeaderName| {
            headers.iter().any(|(n, _)| n == name)
        };
        let url = &outgoing.url;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        let mut add_default = |name: header::HeaderName, value: &str| {
            if !has(&headers, &name)
                && let Ok(v) = HeaderValue::from_str(value)
            {
                headers.push((name, v));
            }
        };
        add_default(header::HOST, &host);
        add_default(header::USER_AGENT, USER_AGENT);
        add_default(header::HeaderName::from_static("traceparent"), traceparent);
        if let Some(jar) = &self.http_cookies {
            let cookies: Vec<String> = jar
                .get_request_values(url)
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            if !cookies.is_empty() {
                add_default(header::COOKIE, &cookies.join("; "));
            }
        }
        headers
    }

    fn keep_cookies(&mut self, url: &url::Url, headers: &[Header]) {
        let set: Vec<cookie_store::RawCookie<'static>> = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|h| cookie_store::RawCookie::parse(h.value.clone()).ok())
            .collect();
        if !set.is_empty() {
            self.http_cookies
                .get_or_insert_with(CookieJar::default)
                .store_response_cookies(set.into_iter(), url);
        }
    }

    /// The TLS settings of this request: the system's roots, plus the CA certificates of a
    /// granted secret, or no verification at all when asked.
    fn tls_config(
        &mut self,
        insecure: bool,
        ca_secret: Option<&str>,
    ) -> Result<Arc<rustls::ClientConfig>, WitError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| WitError::Unavailable(format!("TLS setup: {e}")))?;
        let mut config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        } else {
            let roots = match ca_secret {
                None => system_roots(),
                Some(name) => {
                    let pem = super::secrets::granted_secret(self, name)?;
                    let mut roots = (*system_roots()).clone();
                    let mut added = 0;
                    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                        let cert = cert.map_err(|e| {
                            WitError::Invalid(format!("secret `{name}` is not PEM: {e}"))
                        })?;
                        roots
                            .add(cert)
                            .map_err(|e| WitError::Invalid(format!("secret `{name}`: {e}")))?;
                        added += 1;
                    }
                    if added == 0 {
                        return Err(WitError::Invalid(format!(
                            "secret `{name}` holds no PEM certificate"
                        )));
                    }
                    Arc::new(roots)
                }
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Connect, handshake, send, read: one hop, timing each phase into `progress`.
async fn one_hop(
    address: SocketAddr,
    outgoing: &Outgoing,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_body: usize,
    progress: &mut Progress,
) -> Result<HopResponse, WitError> {
    progress.phase = "connect";
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| WitError::Unavailable(format!("connecting to {address}: {e}")))?;
    add(&mut progress.timings.connect_ms, started.elapsed());
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls.filter(|_| outgoing.url.scheme() == "https") else {
        return exchange(tcp, outgoing, headers, max_body, None, progress).await;
    };
    progress.phase = "tls";
    let started = Instant::now();
    let host = outgoing.url.host_str().unwrap_or_default();
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| WitError::Invalid(format!("`{host}` is not a TLS server name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| WitError::Unavailable(format!("TLS with {host}: {e}")))?;
    add(&mut progress.timings.tls_ms, started.elapsed());
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| describe_certificate(leaf.as_ref()));
    exchange(stream, outgoing, headers, max_body, certificate, progress).await
}

async fn exchange<S>(
    io: S,
    outgoing: &Outgoing,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    max_body: usize,
    certificate: Option<Certificate>,
    progress: &mut Progress,
) -> Result<HopResponse, WitError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    progress.phase = "request";
    let failed = |what: &str, e: hyper::Error| WitError::Unavailable(format!("{what}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| failed("starting HTTP/1.1", e))?;
    // The connection is driven beside the request and dropped with it (no reuse).
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut builder = hyper::Request::builder()
        .method(outgoing.method.clone())
        .uri(request_target(&outgoing.url));
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(outgoing.body.clone()))
        .map_err(|e| WitError::Invalid(format!("request: {e}")))?;
    progress.phase = "first-byte";
    let started = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed("no response", e))?;
    add(&mut progress.timings.first_byte_ms, started.elapsed());
    progress.phase = "transfer";
    let started = Instant::now();
    let status = response.status().as_u16();
    let version = format!("{:?}", response.version());
    let headers: Vec<Header> = response
        .headers()
        .iter()
        .take(MAX_HEADERS * 2)
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect();
    let mut body = response.into_body();
    let mut kept = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed("reading the body", e))?;
        if let Ok(data) = frame.into_data() {
            let room = max_body - kept.len();
            if data.len() > room {
                kept.extend_from_slice(&data[..room]);
                truncated = true;
                break;
            }
            kept.extend_from_slice(&data);
        }
    }
    add(&mut progress.timings.transfer_ms, started.elapsed());
    drop(driver);
    Ok(HopResponse {
        status,
        version,
        headers,
        body: kept,
        truncated,
        certificate,
    })
}

/// The next URL if this answer is a redirect with a `Location` (`Err`: not a usable URL).
fn redirect_target(from: &url::Url, hop: &HopResponse) -> Option<Result<url::Url, String>> {
    if !matches!(hop.status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = hop
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("location"))?;
    Some(
        from.join(&location.value)
            .map_err(|e| format!("redirect to `{}`: {e}", location.value)),
    )
}

/// Path and query, as the request line carries them.
fn request_target(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

fn guest_headers(
    headers: &[Header],
) -> Result<Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>, WitError> {
    if headers.len() > MAX_HEADERS {
        return Err(WitError::Invalid(format!(
            "at most {MAX_HEADERS} request headers"
        )));
    }
    headers
        .iter()
        .map(|h| {
            let name = hyper::header::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| WitError::Invalid(format!("`{}` is not a header name", h.name)))?;
            let value = hyper::header::HeaderValue::from_str(&h.value).map_err(|_| {
                WitError::Invalid(format!("the value of header `{}` is not valid", h.name))
            })?;
            Ok((name, value))
        })
        .collect()
}

fn method(m: Method) -> hyper::Method {
    match m {
        Method::Get => hyper::Method::GET,
        Method::Head => hyper::Method::HEAD,
        Method::Post => hyper::Method::POST,
        Method::Put => hyper::Method::PUT,
        Method::Patch => hyper::Method::PATCH,
        Method::Delete => hyper::Method::DELETE,
        Method::Options => hyper::Method::OPTIONS,
    }
}

fn describe_certificate(der: &[u8]) -> Option<Certificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(Certificate {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after_ms: cert.validity().not_after.timestamp() * 1000,
    })
}

/// Timings of a request that measured nothing yet.
pub(crate) fn no_timings() -> Timings {
    Timings {
        dns_ms: None,
        connect_ms: None,
        tls_ms: None,
        first_byte_ms: None,
        transfer_ms: None,
        total_ms: 0.0,
    }
}

fn add(slot: &mut Option<f64>, elapsed: Duration) {
    *slot = Some(slot.unwrap_or(0.0) + ms(elapsed));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// A new sampled trace: random trace and span ids.
pub(crate) fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            Arc::new(roots)
        })
        .clone()
}

/// The runtime that drives the sockets: the caller's (calls run on its blocking pool), or a
/// small one of our own for callers outside any runtime (benchmarks).
fn io_runtime() -> tokio::runtime::Handle {
    static OWN: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
        OWN.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("sotp-http-io")
                .enable_all()
                .build()
                .expect("an I/O runtime for http")
        })
        .handle()
        .clone()
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `insecure-skip-verify`: any certificate is accepted (signatures are still checked, so
/// the handshake means something); it is still reported to the guest.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked_and_made() {
        let made = new_traceparent();
        assert!(valid_traceparent(&made), "{made}");
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "not a traceparent",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn redirects_resolve_relative_locations() {
        let from = url::Url::parse("http://10.0.0.1:8080/login?next=/").unwrap();
        let hop = |status: u16, location: &str| HopResponse {
            status,
            version: "HTTP/1.1".into(),
            headers: vec![Header {
                name: "Location".into(),
                value: location.into(),
            }],
            body: Vec::new(),
            truncated: false,
            certificate: None,
        };
        let to = redirect_target(&from, &hop(303, "/home")).unwrap().unwrap();
        assert_eq!(to.as_str(), "http://10.0.0.1:8080/home");
        assert!(redirect_target(&from, &hop(200, "/home")).is_none());
        assert_eq!(request_target(&from), "/login?next=/");
    }
}
