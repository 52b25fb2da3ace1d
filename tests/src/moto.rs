//! A real AWS emulator: moto's server (Apache-2.0, pinned in scripts/python-requirements.txt
//! and installed by scripts/setup into the tools venv), on a loopback port, with IAM
//! authentication on: after the three unauthenticated calls that create the test's IAM user,
//! its policy and its access key, every request must carry a valid SigV4 signature of a
//! known key (moto answers `SignatureDoesNotMatch` / `InvalidClientTokenId` otherwise).
//! Tests drive it with boto3 (`Moto::python`), the AWS SDK users have.
//!
//! `ThrottlingProxy` sits in front of it and answers CloudWatch's throttling reply for as
//! many requests as a test asks, forwarding the rest untouched (the Host header too, so the
//! signature still holds).

use crate::mosquitto::free_port;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "123456789012";
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/sotp-cloudwatch";

fn venv_bin(name: &str) -> PathBuf {
    let deps = std::env::var("SOTP_DEPS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sotp/deps"));
    let path = deps.join("python-venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing (scripts/setup installs moto into the tools venv)",
        path.display()
    );
    path
}

/// A datapoint to put: (metric, [(dimension, value)], Unix seconds, value).
pub type Datum<'a> = (&'a str, Vec<(&'a str, &'a str)>, i64, f64);

pub struct Moto {
    pub port: u16,
    /// The IAM user's access key id and secret access key.
    pub key_id: String,
    pub secret_key: String,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let deadline = Instant::now() + Duration::from_secs(60);
        // A connection, not a request: moto counts requests against the unauthenticated
        // three that create the test's user.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut moto = Moto {
            port,
            key_id: String::new(),
            secret_key: String::new(),
            child,
        };
        let keys = moto.python(
            r#"
iam = boto3.client("iam", endpoint_url=ENDPOINT, region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="sotp")
iam.put_user_policy(UserName="sotp", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="sotp")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
"#,
        );
        let mut parts = keys.split_whitespace();
        moto.key_id = parts.next().expect("an access key id").to_string();
        moto.secret_key = parts.next().expect("a secret key").to_string();
        moto.python(&format!(
            r#"
iam = client("iam")
iam.create_role(RoleName="sotp-cloudwatch", AssumeRolePolicyDocument=json.dumps(
    {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "*"}}, "Action": "sts:AssumeRole"}}]}}))
iam.put_role_policy(RoleName="sotp-cloudwatch", PolicyName="read", PolicyDocument=json.dumps(
    {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "*", "Resource": "*"}}]}}))
assert "{ROLE_ARN}".endswith("sotp-cloudwatch")
"#
        ));
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The user's keys as SOTP's `aws` secret holds them.
    pub fn keys_json(&self) -> String {
        serde_json::json!({ "access_key_id": self.key_id, "secret_access_key": self.secret_key })
            .to_string()
    }

    /// Run `script` with boto3: `ENDPOINT`, `json`, `time`, `boto3` and `client(service)`
    /// (signed with the test user's key) are defined. Its stdout; panics if it fails.
    pub fn python(&self, script: &str) -> String {
        let prelude = format!(
            r#"
import boto3, json, time, datetime
ENDPOINT = "{endpoint}"
def client(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id="{key}", aws_secret_access_key="{secret}")
"#,
            endpoint = self.endpoint(),
            key = self.key_id,
            secret = self.secret_key,
        );
        let output = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(format!("{prelude}\n{script}"))
            .output()
            .expect("running python");
        assert!(
            output.status.success(),
            "boto3 script failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// PutMetricData of `points`.
    pub fn put_metric(&self, namespace: &str, points: &[Datum<'_>]) {
        let data: Vec<serde_json::Value> = points
            .iter()
            .map(|(name, dims, at, value)| {
                serde_json::json!({
                    "MetricName": name,
                    "Dimensions": dims.iter().map(|(n, v)| serde_json::json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
                    "Timestamp": at,
                    "Value": value,
                })
            })
            .collect();
        self.python(&format!(
            r#"
data = json.loads('{data}')
for d in data:
    d["Timestamp"] = datetime.datetime.fromtimestamp(d["Timestamp"], datetime.timezone.utc)
client("cloudwatch").put_metric_data(Namespace="{namespace}", MetricData=data)
"#,
            data = serde_json::Value::from(data)
        ));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct ProxyState {
    upstream: String,
    throttle: AtomicU64,
    forwarded: AtomicU64,
    throttled: AtomicU64,
}

/// Forwards to moto, or answers `ThrottlingException` while a throttle count is set.
pub struct ThrottlingProxy {
    pub port: u16,
    state: Arc<ProxyState>,
    _runtime: tokio::runtime::Runtime,
}

impl ThrottlingProxy {
    pub fn start(upstream: &str) -> ThrottlingProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            ..ProxyState::default()
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let (port, runtime) = crate::harness::serve_loopback(app);
        ThrottlingProxy {
            port,
            state,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answer the next `n` requests with a throttling reply.
    pub fn throttle_next(&self, n: u64) {
        self.state.throttle.store(n, Ordering::SeqCst);
    }

    /// (requests forwarded, requests throttled).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.forwarded.load(Ordering::SeqCst),
            self.state.throttled.load(Ordering::SeqCst),
        )
    }
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let throttle = state
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if throttle {
        state.throttled.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/x-amz-json-1.0")],
            r#"{"__type":"com.amazonaws.cloudwatch#ThrottlingException","message":"Rate exceeded"}"#,
        )
            .into_response();
    }
    state.forwarded.fetch_add(1, Ordering::SeqCst);
    let client = reqwest::Client::new();
    let url = format!(
        "{}{}",
        state.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = client.request(method, url).body(body);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
