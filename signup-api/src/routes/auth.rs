//! Session tokens: 256 random bits, handed to the client once, stored only as a SHA-256
//! digest (a leaked database does not leak usable tokens). The [`Session`] extractor
//! authenticates a request by `Authorization: Bearer` only: a token never travels in a URL
//! (the presence stream takes a single-use ticket instead, see `crate::tickets`).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use surge_cluster::ErrorCode;
use surge_cluster::http::HttpError;

use super::{AppState, now_secs, store_error};
use crate::store::Account;

/// A fresh session token and its stored digest.
pub(crate) fn new_token() -> (String, String) {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let digest = token_digest(&token);
    (token, digest)
}

pub(crate) fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An authenticated request's account.
pub(crate) struct Session {
    pub account: Account,
    pub token_digest: String,
}

fn invalid_session() -> HttpError {
    HttpError::unauthorized(
        ErrorCode::InvalidSession,
        "missing, invalid or expired session token",
    )
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Tokens we issue are 43 base64url characters; anything else is refused before the
/// database is asked.
fn plausible(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FromRequestParts<AppState> for Session {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let token = bearer(parts).ok_or_else(invalid_session)?;
        if !plausible(&token) {
            return Err(invalid_session());
        }
        let digest = token_digest(&token);
        match state.store.session_account(&digest, now_secs()).await {
            Ok(Some(account)) => Ok(Self {
                account,
                token_digest: digest,
            }),
            Ok(None) => Err(invalid_session()),
            Err(e) => Err(store_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_digested() {
        let (a, da) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(plausible(&a));
        assert_eq!(da, token_digest(&a));
        assert_eq!(da.len(), 64);
        assert!(!plausible("short"));
        assert!(!plausible(&"%".repeat(43)));
    }
}
