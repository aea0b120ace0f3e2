//! The push loop: sending the outbox.
//!
//! # Algorithm
//!
//! 1. Read up to [`PUSH_MAX_ITEMS`] waiting items, oldest first, and note the attempt.
//! 2. Send them (`POST /sync/push`), with the usual retries for transient failures and one
//!    token refresh when the access token expired.
//! 3. Apply the answers in one transaction ([`outbox::apply_results`]): accepted (or a
//!    duplicate first accepted) items become `accepted`, refused ones `rejected` with their
//!    reason. Items the answer does not mention stay `waiting`.
//! 4. Again, until nothing waits or a round answered for nothing new (the rest waits for the
//!    next sync).
//!
//! # Invariants
//!
//! - Nothing is lost: an item leaves `waiting` only on the server's answer for it; a cut
//!   connection, a crash or a 5xx leaves it waiting, to be sent again.
//! - Nothing arrives twice: the server stores an id once, and a resend is answered
//!   `duplicate` with the first outcome, which is applied like a first answer.
//! - A refused item never blocks the others: every item is answered on its own.

use chrono::Utc;
use doorstep_protocol::{PUSH_MAX_ITEMS, PushRequest};

use crate::Device;
use crate::api::Pushed;
use crate::error::{ClientError, Result};
use crate::outbox;

/// What one push did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushReport {
    /// Requests sent.
    pub rounds: u32,
    pub accepted: u32,
    pub rejected: u32,
    /// Items still waiting afterwards.
    pub waiting: u32,
}

/// Send every waiting item (see the module doc).
pub(crate) async fn push_all(device: &Device) -> Result<PushReport> {
    let mut report = PushReport::default();
    loop {
        let items = device.with_conn(|c| outbox::waiting(c, PUSH_MAX_ITEMS))?;
        if items.is_empty() {
            break;
        }
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        device.with_conn(|c| outbox::mark_attempt(c, &ids, Utc::now()))?;
        let request = PushRequest { items };
        // Markers for the kill test (crates/client/tests/sigkill.rs): counts only.
        tracing::debug!(items = request.items.len(), "pushing");
        let answer = send(device, &request).await?;
        tracing::debug!(results = answer.results.len(), "push answered");
        report.rounds += 1;
        let answered = device.with_conn(|c| outbox::apply_results(c, &answer.results))?;
        report.accepted += answered.accepted;
        report.rejected += answered.rejected;
        if answered.accepted + answered.rejected == 0 {
            // The server answered for none of them: try again at the next sync, not now.
            break;
        }
    }
    report.waiting = device.with_conn(|c| outbox::waiting_count(c))?;
    Ok(report)
}

async fn send(device: &Device, request: &PushRequest) -> Result<doorstep_protocol::PushResponse> {
    let mut access = device.access_token().await?;
    let mut refreshed = false;
    loop {
        match device
            .backoff
            .run(|| device.api.push(access.expose(), request))
            .await?
        {
            Pushed::Answered(answer) => return Ok(answer),
            Pushed::TokenExpired if !refreshed => {
                access = device.refresh_tokens().await?;
                refreshed = true;
            }
            Pushed::TokenExpired => {
                return Err(ClientError::SignInFailed(
                    "The server refused this device's fresh access token. Enrol again.".into(),
                ));
            }
        }
    }
}
