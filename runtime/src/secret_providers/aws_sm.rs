//! AWS Secrets Manager as a secret provider: `aws-sm:<secret id>#<key>` is `<key>` of the
//! secret's JSON `SecretString` (the shape the console stores key/value secrets in), and
//! `aws-sm:<secret id>` the whole `SecretString`. The secret id is its name or ARN.
//!
//! Signed with the tenant's access key (kept in the built-in store under
//! `credentials_secret`), as a role if `role_arn` is set — the same signer, STS calls and
//! per-account rate limiter as the `aws` capability (`crate::aws`). The endpoint goes through
//! the operator's egress policy (`crate::outbound`). Errors name AWS's error code, never a
//! value.

use super::ProviderContext;
use crate::aws::{self, Answer, CallError, Caller, Exchange, Keys, Transport};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The prefix of secret names Secrets Manager holds.
pub const PREFIX: &str = "aws-sm:";

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSecretsManagerSettings {
    pub region: String,
    /// The built-in secret holding the access key (JSON: access_key_id, secret_access_key).
    pub credentials_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Secrets Manager's base URL; default `https://secretsmanager.<region>.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// STS's base URL; default `https://sts.<region>.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
    /// How long a value read is used before it is read again (default `5m`).
    #[serde(default = "default_ttl")]
    pub ttl: String,
}

fn default_ttl() -> String {
    "5m".into()
}

impl AwsSecretsManagerSettings {
    pub fn check(&self) -> Result<(), String> {
        let valid_region = !self.region.is_empty()
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_region {
            return Err(format!(
                "aws_secrets_manager.region: `{}` is not a region",
                self.region
            ));
        }
        for (key, url) in [
            ("endpoint", &self.endpoint),
            ("sts_endpoint", &self.sts_endpoint),
        ] {
            if let Some(url) = url {
                crate::outbound::target(url)
                    .map_err(|e| format!("aws_secrets_manager.{key}: {e}"))?;
            }
        }
        if let Some(role) = &self.role_arn {
            aws::sts::role_account(role)
                .map_err(|e| format!("aws_secrets_manager.role_arn: {e}"))?;
        }
        if self.credentials_secret.is_empty() {
            return Err("aws_secrets_manager.credentials_secret: name a built-in secret".into());
        }
        super::duration(&self.ttl).map_err(|e| format!("aws_secrets_manager.ttl: {e}"))?;
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        super::duration(&self.ttl).unwrap_or(Duration::from_secs(300))
    }
}

/// `aws-sm:prod/db#password` → (`prod/db`, `Some("password")`).
pub fn parse_name(name: &str) -> Result<(&str, Option<&str>), String> {
    let rest = name.strip_prefix(PREFIX).unwrap_or(name);
    let (id, key) = match rest.split_once('#') {
        Some((id, key)) => (id, Some(key)),
        None => (rest, None),
    };
    let id_ok = !id.is_empty()
        && id.len() <= 2048
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-:".contains(&b));
    if !id_ok || key.is_some_and(str::is_empty) {
        return Err(format!(
            "`{name}`: a Secrets Manager secret is named aws-sm:<secret id>[#<key>]"
        ));
    }
    Ok((id, key))
}

/// Sends through `crate::outbound` (egress-checked).
struct Outbound<'a>(&'a crate::egress::EgressPolicy);

impl Transport for Outbound<'_> {
    fn send(&mut self, exchange: Exchange<'_>, _timeout: Duration) -> Result<Answer, String> {
        let url = url::Url::parse(exchange.url).map_err(|e| e.to_string())?;
        let base = url.origin().ascii_serialization();
        let path = &exchange.url[base.len()..];
        let content_type = exchange
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "application/octet-stream".into());
        let headers: Vec<(String, String)> = exchange
            .headers
            .into_iter()
            .filter(|(n, _)| {
                !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("content-type")
            })
            .collect();
        let answer = crate::outbound::request_with(
            exchange.method,
            &base,
            path,
            &headers,
            self.0,
            Some((exchange.body, &content_type)),
        )?;
        Ok(Answer {
            status: answer.status,
            headers: Vec::new(),
            body: answer.text.into_bytes(),
        })
    }
}

pub(super) fn read(
    tenant: &str,
    name: &str,
    settings: &AwsSecretsManagerSettings,
    ctx: &ProviderContext<'_>,
) -> Result<Option<String>, String> {
    let (id, key) = parse_name(name)?;
    let credentials = (ctx.builtin)(&settings.credentials_secret)?.ok_or_else(|| {
        format!(
            "no secret `{}` in the built-in store (the Secrets Manager provider's access key)",
            settings.credentials_secret
        )
    })?;
    let keys = Keys::from_secret(&settings.credentials_secret, &credentials)?;
    let sts_endpoint = settings
        .sts_endpoint
        .clone()
        .unwrap_or_else(|| aws::default_endpoint("sts", &settings.region));
    let caller = Caller {
        tenant,
        keys,
        role_arn: settings.role_arn.as_deref(),
        sts_endpoint: &sts_endpoint,
        region: &settings.region,
    };
    let mut transport = Outbound(ctx.egress);
    let (keys, account) =
        aws::identity(&caller, &mut transport, TIMEOUT).map_err(|e| e.to_string())?;
    let wait = aws::shared().acquire(tenant, &account);
    if wait > TIMEOUT {
        return Err(format!(
            "AWS account {account}'s rate limit leaves no time to read {id} now"
        ));
    }
    std::thread::sleep(wait);
    let endpoint = settings
        .endpoint
        .clone()
        .unwrap_or_else(|| aws::default_endpoint("secretsmanager", &settings.region));
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let body = serde_json::json!({ "SecretId": id }).to_string();
    let answer = aws::send_signed(
        &keys,
        "secretsmanager",
        &settings.region,
        Exchange {
            method: "POST",
            url: &url,
            headers: vec![
                ("content-type".into(), "application/x-amz-json-1.1".into()),
                (
                    "x-amz-target".into(),
                    "secretsmanager.GetSecretValue".into(),
                ),
            ],
            body: body.as_bytes(),
        },
        &mut transport,
        TIMEOUT,
    )
    .map_err(|e| match e {
        CallError::Invalid(m) | CallError::Unavailable(m) => {
            format!("Secrets Manager unavailable: {m}")
        }
    })?;
    if aws::is_throttling(answer.status, &answer.body) {
        aws::shared().throttled(tenant, &account);
    }
    if answer.status != 200 {
        let summary = aws::error_summary(&answer.body);
        if summary.starts_with("ResourceNotFoundException") {
            return Ok(None);
        }
        return Err(format!(
            "Secrets Manager answered HTTP {} for {id}: {}",
            answer.status,
            summary.split(':').next().unwrap_or("")
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|_| format!("Secrets Manager's answer for {id} is not JSON"))?;
    let Some(text) = doc["SecretString"].as_str() else {
        return Err(format!(
            "{id} has no SecretString (binary secrets are not supported)"
        ));
    };
    let Some(key) = key else {
        return Ok(Some(text.to_string()));
    };
    let fields: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("{id} is not a JSON key/value secret, so `#{key}` names nothing"))?;
    match &fields[key] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        other => Ok(Some(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_settings() {
        assert_eq!(
            parse_name("aws-sm:prod/db#password").unwrap(),
            ("prod/db", Some("password"))
        );
        assert_eq!(parse_name("aws-sm:api-key").unwrap(), ("api-key", None));
        assert_eq!(
            parse_name("aws-sm:arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCd#k")
                .unwrap()
                .1,
            Some("k")
        );
        assert!(parse_name("aws-sm:").is_err());
        assert!(parse_name("aws-sm:a b#k").is_err());
        assert!(parse_name("aws-sm:db#").is_err());
        let ok = AwsSecretsManagerSettings {
            region: "eu-west-1".into(),
            credentials_secret: "aws".into(),
            role_arn: None,
            endpoint: None,
            sts_endpoint: None,
            ttl: "1m".into(),
        };
        assert!(ok.check().is_ok());
        let bad = AwsSecretsManagerSettings {
            region: "EU west".into(),
            ..ok.clone()
        };
        assert!(bad.check().unwrap_err().contains("region"));
        let bad = AwsSecretsManagerSettings {
            role_arn: Some("admin".into()),
            ..ok
        };
        assert!(bad.check().unwrap_err().contains("role_arn"));
    }
}
