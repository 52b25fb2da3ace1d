//! STS calls the host makes itself (query protocol, XML answers): `AssumeRole` for a
//! component that calls as a role, `GetCallerIdentity` to learn which account plain keys
//! belong to (the key of its rate limiter). Both are signed with the caller's own keys.

use super::{Answer, CallError, Caller, Keys, Transport};
use std::time::{Duration, SystemTime};

/// How long assumed credentials are asked for (renewed five minutes before they lapse).
const ROLE_SECONDS: u32 = 3600;

/// The account in a role ARN: `arn:aws:iam::123456789012:role/name` → `123456789012`.
pub fn role_account(arn: &str) -> Result<String, String> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _partition, "iam", "", account, resource]
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.starts_with("role/") =>
        {
            Ok((*account).to_string())
        }
        _ => Err(format!(
            "`{arn}` is not a role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
        )),
    }
}

/// Temporary credentials for `role`, and when they expire.
pub fn assume_role(
    caller: &Caller<'_>,
    role: &str,
    transport: &mut dyn Transport,
    timeout: Duration,
) -> Result<(Keys, SystemTime), CallError> {
    let session = format!("sotp-{}", caller.tenant);
    let session: String = session
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(*c))
        .take(64)
        .collect();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRole")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role)
        .append_pair("RoleSessionName", &session)
        .append_pair("DurationSeconds", &ROLE_SECONDS.to_string())
        .finish();
    let answer = post(caller, &caller.keys, &body, transport, timeout)?;
    let text = ok_text(&answer, &format!("STS AssumeRole {role}"))?;
    let doc = roxmltree::Document::parse(&text)
        .map_err(|e| CallError::Unavailable(format!("STS AssumeRole answered no XML: {e}")))?;
    let field = |tag: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(tag))
            .and_then(|n| n.text())
            .map(str::to_string)
            .ok_or_else(|| CallError::Unavailable(format!("STS AssumeRole answered no {tag}")))
    };
    let keys = Keys {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
    };
    let expiration = field("Expiration")?;
    let until = chrono::DateTime::parse_from_rfc3339(&expiration)
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(u64::from(ROLE_SECONDS)));
    Ok((keys, until))
}

/// The account plain keys belong to.
pub fn caller_account(
    caller: &Caller<'_>,
    transport: &mut dyn Transport,
    timeout: Duration,
) -> Result<String, CallError> {
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let answer = post(caller, &caller.keys, body, transport, timeout)?;
    let text = ok_text(&answer, "STS GetCallerIdentity")?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| {
        CallError::Unavailable(format!("STS GetCallerIdentity answered no XML: {e}"))
    })?;
    doc.descendants()
        .find(|n| n.has_tag_name("Account"))
        .and_then(|n| n.text())
        .map(str::to_string)
        .ok_or_else(|| CallError::Unavailable("STS GetCallerIdentity answered no Account".into()))
}

fn post(
    caller: &Caller<'_>,
    keys: &Keys,
    body: &str,
    transport: &mut dyn Transport,
    timeout: Duration,
) -> Result<Answer, CallError> {
    let url = format!("{}/", caller.sts_endpoint.trim_end_matches('/'));
    super::send_signed(
        keys,
        "sts",
        caller.region,
        super::Exchange {
            method: "POST",
            url: &url,
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body: body.as_bytes(),
        },
        transport,
        timeout,
    )
}

/// The body of a 200 answer; any other answer is an error with AWS's code and message.
fn ok_text(answer: &Answer, what: &str) -> Result<String, CallError> {
    if answer.status == 200 {
        return Ok(String::from_utf8_lossy(&answer.body).into_owned());
    }
    let summary = super::error_summary(&answer.body);
    let message = format!("{what}: HTTP {}: {summary}", answer.status);
    if matches!(answer.status, 400 | 401 | 403)
        && !super::is_throttling(answer.status, &answer.body)
    {
        Err(CallError::Invalid(message))
    } else {
        Err(CallError::Unavailable(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_name_their_account() {
        assert_eq!(
            role_account("arn:aws:iam::123456789012:role/cloudwatch-read").unwrap(),
            "123456789012"
        );
        assert_eq!(
            role_account("arn:aws-us-gov:iam::123456789012:role/a/b").unwrap(),
            "123456789012"
        );
        assert!(role_account("arn:aws:iam::1234:role/x").is_err());
        assert!(role_account("arn:aws:iam::123456789012:user/x").is_err());
        assert!(role_account("cloudwatch-read").is_err());
    }
}
