//! The device's HTTP client for the federation API (`doorstep_protocol`).
//!
//! Rules:
//! - HTTPS with rustls (`ring` provider). When the device was enrolled with a CA certificate,
//!   that CA is the only trust anchor (built-in and platform roots are off): the server is pinned
//!   to its federation's CA. Plain `http://` is accepted only for a loopback host.
//! - Every answer becomes either the typed body or a [`ClientError`] that says what to do:
//!   `Offline` when the server cannot be reached, `SignInFailed` with the server's own message
//!   when it refuses the user or device, `DeviceRevoked` for 403 `device_revoked` (the
//!   caller wipes the cache), `Server` for 5xx/429 (retried), `Invalid` for 400.
//! - Pull answers are gzip'd (reqwest asks with `Accept-Encoding: gzip` and inflates).
//! - Every body is read with a cap on its inflated size ([`MAX_PAGE_BYTES`] for a page,
//!   [`MAX_ANSWER_BYTES`] for the rest): past it the answer is refused, not applied.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use doorstep_protocol::{
    API_PREFIX, ApiError, EnrolRequest, EnrolResponse, PROTOCOL_VERSION, PushRequest, PushResponse,
    RefreshRequest, ResyncRequired, TokenResponse,
};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::{ClientError, Result};
use crate::wire::Page;

/// The error code of the server's 403 for a revoked device (`server/src/api.rs`).
const DEVICE_REVOKED: &str = "device_revoked";
/// The most a pull answer may hold, inflated. The server's page budget is 4 MiB of JSON
/// (`DEFAULT_PAGE_BYTES` in server/src/api.rs), but a page always carries at least one change,
/// and one patient's snapshot may be larger: room for that, and no more, so that a broken or
/// hostile server cannot fill the device's memory (a gzip bomb inflates to whatever it likes).
pub(crate) const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;
/// The most any other answer may hold (tokens, push results, errors), inflated.
pub(crate) const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one whole request (a pull page is at most a few MB).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for the reachability probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Check and normalise a server address: `https://host[:port][/path]`, or `http://` on a
/// loopback host only. Answers it without a trailing slash.
pub fn check_server_url(input: &str) -> Result<String> {
    let trimmed = input.trim();
    let url = Url::parse(trimmed).map_err(|e| {
        ClientError::Invalid(format!(
            "The server address '{trimmed}' is not a valid URL ({e}). It looks like \
             https://federation.example:8443"
        ))
    })?;
    let Some(host) = url.host_str() else {
        return Err(ClientError::Invalid(format!(
            "The server address '{trimmed}' has no host name."
        )));
    };
    let loopback = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(ClientError::Invalid(
                "The server address must start with https:// (plain http is allowed only for a \
                 server on this machine, for development)."
                    .into(),
            ));
        }
        other => {
            return Err(ClientError::Invalid(format!(
                "The server address must start with https://, not {other}://."
            )));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Invalid(
            "The server address must not have a query (?…) or fragment (#…).".into(),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Outcome of one pull request.
#[derive(Debug)]
pub(crate) enum Pulled {
    Page(Page),
    /// 410: the cache must be rebuilt from scratch.
    Resync(ResyncRequired),
    /// 401 `token_expired`: refresh the access token and ask again.
    TokenExpired,
}

/// Outcome of one push request.
#[derive(Debug)]
pub(crate) enum Pushed {
    Answered(PushResponse),
    /// 401 `token_expired`: refresh the access token and send again.
    TokenExpired,
}

/// The federation API, bound to one server.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for `server_url` (already checked), trusting only `ca_pem` when given.
    pub fn new(server_url: &str, ca_pem: Option<&[u8]>) -> Result<Api> {
        // reqwest is built without a default provider; Doorstep uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(format!(
                "doorstep-client/{} (protocol {PROTOCOL_VERSION})",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .gzip(true)
            .https_only(!server_url.starts_with("http://"));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ClientError::Invalid(format!("The CA certificate file is not PEM: {e}"))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Invalid(
                    "The CA certificate file holds no certificate.".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Internal(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(Api {
            http,
            base: server_url.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    /// `POST /auth/enrol`.
    pub async fn enrol(&self, req: &EnrolRequest) -> Result<EnrolResponse> {
        let resp = self
            .http
            .post(self.url("/auth/enrol"))
            .json(req)
            .send()
            .await
            .map_err(transport_error)?;
        read_json(resp).await
    }

    /// `POST /auth/reauth`.
    pub async fn reauth(&self, req: &doorstep_protocol::ReauthRequest) -> Result<TokenResponse> {
        let resp = self
            .http
            .post(self.url("/auth/reauth"))
            .json(req)
            .send()
            .await
            .map_err(transport_error)?;
        read_json(resp).await
    }

    /// `POST /auth/refresh`.
    pub async fn refresh(&self, req: &RefreshRequest) -> Result<TokenResponse> {
        let resp = self
            .http
            .post(self.url("/auth/refresh"))
            .json(req)
            .send()
            .await
            .map_err(transport_error)?;
        read_json(resp).await
    }

    /// `GET /sync/pull?cursor=…`.
    pub async fn pull(&self, access_token: &str, cursor: Option<&str>) -> Result<Pulled> {
        let mut url = Url::parse(&self.url("/sync/pull"))
            .map_err(|e| ClientError::Internal(format!("pull URL: {e}")))?;
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let resp = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(transport_error)?;
        match resp.status() {
            StatusCode::GONE => {
                let body = read_body(resp, MAX_ANSWER_BYTES).await?;
                let resync = serde_json::from_slice(&body).map_err(|e| {
                    ClientError::Server(format!("unreadable must-resync answer: {e}"))
                })?;
                Ok(Pulled::Resync(resync))
            }
            StatusCode::UNAUTHORIZED => {
                let err = api_error(resp).await;
                if err.code == "token_expired" {
                    Ok(Pulled::TokenExpired)
                } else {
                    Err(ClientError::SignInFailed(err.message))
                }
            }
            status if status.is_success() => {
                let body = read_body(resp, MAX_PAGE_BYTES).await?;
                Page::from_json(&body).map(Pulled::Page)
            }
            _ => match read_json::<serde_json::Value>(resp).await {
                Err(e) => Err(e),
                Ok(_) => Err(ClientError::Server("unexpected answer to a pull".into())),
            },
        }
    }

    /// `POST /sync/push`.
    pub async fn push(&self, access_token: &str, req: &PushRequest) -> Result<Pushed> {
        let resp = self
            .http
            .post(self.url("/sync/push"))
            .bearer_auth(access_token)
            .json(req)
            .send()
            .await
            .map_err(transport_error)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let err = api_error(resp).await;
            return if err.code == "token_expired" {
                Ok(Pushed::TokenExpired)
            } else {
                Err(ClientError::SignInFailed(err.message))
            };
        }
        read_json(resp).await.map(Pushed::Answered)
    }

    /// `POST` a break-glass request (`path`: `/break-glass/search` or `/break-glass`). The
    /// server's refusals (no emergency access, a wrong field, no such patient) come back as
    /// [`ClientError::Invalid`] in the server's words; `Ok(None)`: the access token expired.
    pub(crate) async fn break_glass<Req: serde::Serialize, Resp: DeserializeOwned>(
        &self,
        access_token: &str,
        path: &str,
        req: &Req,
    ) -> Result<Option<Resp>> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(access_token)
            .json(req)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status();
        if status.is_success() {
            return read_json(resp).await.map(Some);
        }
        let err = api_error(resp).await;
        match (status, err.code.as_str()) {
            (StatusCode::UNAUTHORIZED, "token_expired") => Ok(None),
            (_, "emergency_access_not_allowed" | "invalid" | "not_found" | "bad_request") => {
                Err(ClientError::Invalid(err.message))
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                Err(ClientError::SignInFailed(err.message))
            }
            _ => Err(ClientError::Server(format!("{status}: {}", err.message))),
        }
    }

    /// `GET /healthz` with a short timeout: is the server there?
    pub async fn probe(&self) -> bool {
        match self
            .http
            .get(format!("{}/healthz", self.base))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
        {
            Ok(resp) => resp.status().is_success(),
            Err(_) => false,
        }
    }
}

/// The body of a successful answer, or the error the status and body say.
async fn read_json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status();
    if status.is_success() {
        let body = read_body(resp, MAX_ANSWER_BYTES).await?;
        return serde_json::from_slice(&body)
            .map_err(|e| ClientError::Server(format!("unreadable answer ({status}): {e}")));
    }
    let err = api_error(resp).await;
    Err(match status {
        StatusCode::FORBIDDEN if err.code == DEVICE_REVOKED => ClientError::DeviceRevoked,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ClientError::SignInFailed(err.message),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            ClientError::Invalid(err.message)
        }
        StatusCode::NOT_FOUND => ClientError::Server(format!(
            "this address does not serve the Doorstep API (404): {}",
            err.message
        )),
        _ => ClientError::Server(format!("{status}: {}", err.message)),
    })
}

/// The [`ApiError`] body of an error answer, or one made from the status when there is none.
async fn api_error(resp: reqwest::Response) -> ApiError {
    let status = resp.status();
    let body = read_body(resp, MAX_ANSWER_BYTES).await.unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or_else(|_| ApiError {
        code: "unknown".into(),
        message: status
            .canonical_reason()
            .unwrap_or("unexpected answer")
            .to_owned(),
    })
}

/// The body of an answer, inflated as it streams in, refused as soon as it passes `limit`
/// bytes (before it is decoded, so nothing of it is applied).
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ClientError::AnswerTooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(ClientError::AnswerTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failure to talk to the server at all.
fn transport_error(e: reqwest::Error) -> ClientError {
    let timed_out = e.is_timeout();
    let chain = error_chain(&e.without_url());
    if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        ClientError::Offline(format!(
            "the server's TLS certificate is not trusted by this device ({chain})"
        ))
    } else if timed_out {
        ClientError::Offline(format!("timed out ({chain})"))
    } else {
        ClientError::Offline(chain)
    }
}

/// `e` and its sources, joined, for a message a support person can act on.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// How often and how long to retry a transient failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 4,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
        }
    }
}

impl Backoff {
    /// The pause before retry number `n` (0-based): exponential, capped, with "equal jitter"
    /// (half fixed, half random) so that many devices coming back online do not retry in step.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .first_delay
            .saturating_mul(2u32.saturating_pow(n))
            .min(self.max_delay);
        let half = exp / 2;
        let mut r = [0u8; 4];
        let random = if getrandom::fill(&mut r).is_ok() {
            u32::from_le_bytes(r) as f64 / u32::MAX as f64
        } else {
            0.5
        };
        half + half.mul_f64(random)
    }

    /// Run `op` until it succeeds, fails with a non-transient error, or the attempts run out.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut n = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && n + 1 < self.attempts => {
                    let pause = self.delay(n);
                    tracing::debug!(attempt = n + 1, ?pause, error = %e, "retrying");
                    tokio::time::sleep(pause).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            check_server_url("https://fed.example:8443/").unwrap(),
            "https://fed.example:8443"
        );
        assert_eq!(
            check_server_url(" http://127.0.0.1:8080 ").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(check_server_url("http://localhost:1").is_ok());
        assert!(check_server_url("http://[::1]:1").is_ok());
        assert!(matches!(
            check_server_url("http://fed.example"),
            Err(ClientError::Invalid(_))
        ));
        assert!(matches!(
            check_server_url("ftp://fed.example"),
            Err(ClientError::Invalid(_))
        ));
        assert!(matches!(
            check_server_url("fed.example"),
            Err(ClientError::Invalid(_))
        ));
        assert!(check_server_url("https://fed.example/?x=1").is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let b = Backoff::default();
        for n in 0..8 {
            let d = b.delay(n);
            let exp = (b.first_delay * 2u32.pow(n)).min(b.max_delay);
            assert!(
                d >= exp / 2 && d <= exp,
                "retry {n}: {d:?} not in [{:?}, {exp:?}]",
                exp / 2
            );
        }
    }

    #[tokio::test]
    async fn backoff_retries_transient_only() {
        let b = Backoff {
            attempts: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let mut calls = 0;
        let r: Result<()> = b
            .run(|| {
                calls += 1;
                async { Err(ClientError::Offline("down".into())) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<()> = b
            .run(|| {
                calls += 1;
                async { Err(ClientError::SignInFailed("no".into())) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);

        let mut calls = 0;
        let r = b
            .run(|| {
                calls += 1;
                let ok = calls == 2;
                async move {
                    if ok {
                        Ok(7)
                    } else {
                        Err(ClientError::Server("503".into()))
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls, 2);
    }

    #[test]
    fn bad_ca_file_is_invalid() {
        assert!(matches!(
            Api::new("https://127.0.0.1:1", Some(b"not a pem")),
            Err(ClientError::Invalid(_))
        ));
    }
}
