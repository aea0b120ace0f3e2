//! The federation's API as a test calls it directly, the way a device or a practice system
//! would: an HTTPS client trusting only the federation's CA, enrolment for a token, and a
//! staff sign-in for a staff token.

use std::path::Path;
use std::time::Duration;

use doorstep_protocol::{EnrolRequest, EnrolResponse};

/// An HTTPS client that trusts only the CA in `ca_pem` (the federation's dev CA).
pub fn https_client(ca_pem: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_pem).expect("the federation's CA");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("a PEM certificate")])
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTPS client")
}

/// Enrol a device for `username` (password, base32 TOTP secret) at `base` and answer its
/// access token. Panics when the server refuses: the caller's test expects a sign-in.
pub async fn enrol_for_token(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
    totp_secret: &str,
) -> String {
    let answer: EnrolResponse = http
        .post(format!("{base}/api/v1/auth/enrol"))
        .json(&EnrolRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            totp: crate::totp_code(totp_secret, 0),
            device_name: "Test tablet".into(),
        })
        .send()
        .await
        .expect("the enrol request")
        .error_for_status()
        .expect("the server accepts the sign-in")
        .json()
        .await
        .expect("an enrol answer");
    answer.tokens.access_token
}

/// Sign in staff member `username` (a receptionist, team leader or service manager) at `base`
/// and answer their staff token. Panics when the server refuses.
pub async fn staff_token(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
    totp_secret: &str,
) -> String {
    let answer: serde_json::Value = http
        .post(format!("{base}/api/v1/staff/sign-in"))
        .json(&serde_json::json!({
            "username": username,
            "password": password,
            "totp": crate::totp_code(totp_secret, 0),
        }))
        .send()
        .await
        .expect("the staff sign-in request")
        .error_for_status()
        .expect("the server accepts the staff sign-in")
        .json()
        .await
        .expect("a staff sign-in answer");
    answer["token"].as_str().expect("a staff token").to_owned()
}
