//! A minimal HTTP/1.1 server that records every request and answers with scripted status codes:
//! the receiving end of a push sink (Loki's API) in tests, where no real Loki can be installed.
//! It speaks just enough HTTP for a client that sends `Content-Length` or chunked bodies and
//! reuses connections.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status the recorder answered with.
    pub status: u16,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// Status for the next requests; when empty, `default_status`.
    script: std::collections::VecDeque<u16>,
    default_status: u16,
}

pub struct HttpRecorder {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl HttpRecorder {
    /// Listen on a free loopback port; answer `default_status` unless scripted otherwise.
    pub fn start(default_status: u16) -> HttpRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            default_status,
            ..Default::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(stream, s));
            }
        });
        HttpRecorder { port, state }
    }

    /// Answer from now on with `status` (unless scripted).
    pub fn set_default(&self, status: u16) {
        self.state.lock().unwrap().default_status = status;
    }

    /// Answer the next requests with these statuses, in order.
    pub fn script(&self, statuses: &[u16]) {
        self.state.lock().unwrap().script.extend(statuses);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let body = if headers.get("transfer-encoding").map(|v| v.as_str()) == Some("chunked") {
            read_chunked(&mut reader)
        } else {
            let len = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        let status = {
            let mut s = state.lock().unwrap();
            let status = s.script.pop_front().unwrap_or(s.default_status);
            s.requests.push(Request {
                method,
                path,
                headers,
                body,
                status,
            });
            status
        };
        let text = if status < 300 { "" } else { "scripted failure" };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; n + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
        if n == 0 {
            return body;
        }
    }
}
