//! A new user of a run: signed up and logged in, the way the modes that need accounts
//! (`calls`, `presence`) make them.

use std::time::Duration;

use rand::RngExt;
use reqwest::Method;
use tokio::time::Instant;

use crate::client::{ApiClient, Request, RetryPolicy};
use crate::identity::IdentityFactory;

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The account's id (from the login answer).
    pub id: String,
    /// The session's bearer token.
    pub session: String,
}

/// Why a user could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {detail}")]
pub struct AccountError {
    pub step: &'static str,
    pub detail: String,
}

/// Setup is not what a run measures, so it waits out shedding patiently.
const SETUP_POLICY: RetryPolicy = RetryPolicy {
    max_retries: 20,
    max_wait: Duration::from_secs(120),
    jitter: 0.25,
};

/// Signs up the `seq`-th user of `factory` and logs it in, retrying while shed.
pub async fn sign_up_and_log_in(
    api: &ApiClient,
    factory: &IdentityFactory,
    seq: u64,
) -> Result<LoggedIn, AccountError> {
    let signup = factory.valid(seq, &mut rand::rng());
    let key = format!("{:032x}", rand::rng().random::<u128>());
    let (a, _) = api
        .send_with_retries(
            &Request {
                method: Method::POST,
                path: "/v1/accounts",
                bearer: None,
                idempotency_key: Some(&key),
                body: Some(&signup),
            },
            Instant::now(),
            SETUP_POLICY,
            |_, _| {},
        )
        .await;
    if a.status() != Some(201) {
        return Err(AccountError {
            step: "signup",
            detail: format!("{:?} {:?}", a.outcome, a.code),
        });
    }
    let (a, session) = api
        .login(&signup.email, &signup.password, SETUP_POLICY, |_, _| {})
        .await;
    let id = a
        .body
        .as_ref()
        .and_then(|b| b.pointer("/user/id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    match (id, session) {
        (Some(id), Some(session)) => Ok(LoggedIn { id, session }),
        _ => Err(AccountError {
            step: "login",
            detail: format!("{:?} {:?}", a.outcome, a.code),
        }),
    }
}
