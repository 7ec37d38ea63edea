//! Opening a presence stream as the web client does: the single-use ticket that
//! `POST /v1/presence/tickets` answered (asked for by the caller, which counts and retries it
//! in its own way), then `GET /v1/presence/stream?ticket=…`. Shared by the outage's users
//! (`online`) and the presence bench (`presence::hold`).

use std::time::Duration;

use crate::client::{ApiClient, Attempt};

/// How an attempt to open the stream ended.
pub enum StreamOpen {
    /// Open: read it.
    Opened(reqwest::Response),
    /// The ticket request's answer carried no ticket, so no stream was asked for.
    NoTicket,
    /// The server answered the stream request with an error.
    Refused {
        status: u16,
        retry_after: Option<Duration>,
        /// The `error.code` of its JSON body.
        code: Option<String>,
    },
    /// No answer: `timeout` or `transport_error`.
    Failed(&'static str),
}

impl StreamOpen {
    /// The stream request's outcome as counted in a status mix: its HTTP status, `timeout` or
    /// `transport_error` (`None` when no stream was asked for).
    pub fn key(&self) -> Option<String> {
        match self {
            Self::Opened(r) => Some(r.status().as_u16().to_string()),
            Self::Refused { status, .. } => Some(status.to_string()),
            Self::Failed(key) => Some((*key).to_owned()),
            Self::NoTicket => None,
        }
    }
}

/// Opens the stream with the ticket of `ticket_answer`; `timeout` bounds the whole stream, so
/// it must outlast the time it is meant to be held (the client's per-request timeout would
/// cut it short).
pub async fn open(api: &ApiClient, ticket_answer: &Attempt, timeout: Duration) -> StreamOpen {
    let ticket = ticket_answer
        .body
        .as_ref()
        .and_then(|b| b.get("ticket"))
        .and_then(|t| t.as_str());
    let Some(ticket) = ticket else {
        return StreamOpen::NoTicket;
    };
    let url = format!("{}/v1/presence/stream?ticket={ticket}", api.base());
    match api.http().get(url).timeout(timeout).send().await {
        Ok(r) if r.status().is_success() => StreamOpen::Opened(r),
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::client::parse_retry_after);
            let code = r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|j| j.pointer("/error/code")?.as_str().map(str::to_owned));
            StreamOpen::Refused {
                status,
                retry_after,
                code,
            }
        }
        Err(e) if e.is_timeout() => StreamOpen::Failed("timeout"),
        Err(e) => {
            tracing::debug!(error = %e, "presence stream: transport error");
            StreamOpen::Failed("transport_error")
        }
    }
}
