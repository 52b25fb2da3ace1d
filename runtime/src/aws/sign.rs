//! SigV4 request signing with AWS's own `aws-sigv4` crate: the headers to add (`x-amz-date`,
//! `x-amz-security-token` for temporary keys, `authorization`) to a request of the given
//! method, URL, headers and body. Checked against AWS's published SigV4 test suite.

use super::Keys;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::SystemTime;

/// What is signed: `headers` must include `host`.
pub struct Unsigned<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// The headers to add to `request` so AWS accepts it as `keys`' for `service` in `region`,
/// at `time`.
pub fn signature_headers(
    keys: &Keys,
    service: &str,
    region: &str,
    request: &Unsigned<'_>,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity: Identity = Credentials::new(
        keys.access_key_id.clone(),
        keys.secret_access_key.clone(),
        keys.session_token.clone(),
        None,
        "sotp",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url,
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| format!("cannot sign this request: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("cannot sign this request: {e}"))?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// AWS's SigV4 test suite (the `aws-sig-v4-test-suite` published with the SigV4
    /// documentation, as the SDKs carry it): credentials AKIDEXAMPLE, region us-east-1,
    /// service `service`, 2015-08-30T12:36:00Z, Host example.amazonaws.com.
    fn suite(method: &str, url: &str) -> String {
        let keys = Keys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = vec![("host".to_string(), "example.amazonaws.com".to_string())];
        let signed = signature_headers(
            &keys,
            "service",
            "us-east-1",
            &Unsigned {
                method,
                url,
                headers: &headers,
                body: b"",
            },
            at,
        )
        .unwrap();
        let date = signed.iter().find(|(n, _)| n == "x-amz-date").unwrap();
        assert_eq!(date.1, "20150830T123600Z");
        signed
            .into_iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1
    }

    fn expected(signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
        )
    }

    #[test]
    fn signs_as_the_aws_test_suite_says() {
        // get-vanilla
        assert_eq!(
            suite("GET", "https://example.amazonaws.com/"),
            expected("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
        // get-vanilla-query-order-key-case: the query is sorted before signing.
        assert_eq!(
            suite(
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1"
            ),
            expected("b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
        );
        // post-vanilla
        assert_eq!(
            suite("POST", "https://example.amazonaws.com/"),
            expected("5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
        );
        // post-vanilla-empty-query-value
        assert_eq!(
            suite("POST", "https://example.amazonaws.com/?Param1=value1"),
            expected("28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11")
        );
    }

    #[test]
    fn temporary_keys_send_their_session_token() {
        let keys = Keys {
            access_key_id: "ASIA".into(),
            secret_access_key: "s".into(),
            session_token: Some("token-1".into()),
        };
        let headers = vec![(
            "host".to_string(),
            "sts.us-east-1.amazonaws.com".to_string(),
        )];
        let signed = signature_headers(
            &keys,
            "sts",
            "us-east-1",
            &Unsigned {
                method: "POST",
                url: "https://sts.us-east-1.amazonaws.com/",
                headers: &headers,
                body: b"Action=GetCallerIdentity&Version=2011-06-15",
            },
            SystemTime::now(),
        )
        .unwrap();
        assert!(
            signed
                .iter()
                .any(|(n, v)| n == "x-amz-security-token" && v == "token-1")
        );
        let auth = &signed.iter().find(|(n, _)| n == "authorization").unwrap().1;
        assert!(auth.contains("x-amz-security-token"), "{auth}");
    }
}
