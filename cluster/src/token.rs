//! Join tokens: short-lived signed tokens (HS256 JWTs) that the API issues after placing a
//! room and that the SFU shard verifies before it accepts an offer. Binding the token to
//! one room and one shard means a token leaked from one call opens nothing else.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// A key shorter than this is refused: HS256 with a short secret can be brute-forced.
pub const MIN_KEY_BYTES: usize = 32;

/// Clock difference between the API and a shard that is tolerated on expiry.
pub const EXPIRY_LEEWAY: Duration = Duration::from_secs(5);

/// What a join token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The user's id.
    pub sub: String,
    /// The user's display name, shown to the other participants.
    pub name: String,
    /// The room this token opens.
    pub room: String,
    /// The shard that must accept it.
    pub shard: String,
    /// May send media.
    pub publish: bool,
    /// May receive media.
    pub subscribe: bool,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused. Each maps to a distinct, stable HTTP error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the join token is malformed")]
    Malformed,
    #[error("the join token's signature is not valid")]
    BadSignature,
    #[error("the join token has expired")]
    Expired,
    #[error("the join token is for shard {token_shard}, not this shard ({this_shard})")]
    WrongShard {
        token_shard: String,
        this_shard: String,
    },
    #[error("the join token is for another room")]
    WrongRoom,
    #[error("the token key must be at least {MIN_KEY_BYTES} bytes")]
    KeyTooShort,
    #[error("could not sign the token: {0}")]
    Signing(String),
}

impl TokenError {
    /// The stable error code clients see.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed => ErrorCode::TokenMalformed,
            Self::BadSignature => ErrorCode::TokenInvalid,
            Self::Expired => ErrorCode::TokenExpired,
            Self::WrongShard { .. } => ErrorCode::TokenWrongShard,
            Self::WrongRoom => ErrorCode::TokenWrongRoom,
            Self::KeyTooShort | Self::Signing(_) => ErrorCode::Internal,
        }
    }
}

/// The shared secret that signs and verifies join tokens.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from configured secret bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(TokenError::KeyTooShort);
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// A fresh random key, for a single process that both issues and verifies.
    pub fn generate() -> Self {
        let secret: [u8; 32] = rand::random();
        // 32 random bytes always satisfy MIN_KEY_BYTES.
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        }
    }

    /// Signs `claims`.
    pub fn issue(&self, claims: &JoinClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Verifies a token for `this_shard` (and `room`, when the caller knows it) at Unix time
    /// `now`. Expiry is checked here against the explicit time, with [`EXPIRY_LEEWAY`].
    pub fn verify(
        &self,
        token: &str,
        this_shard: &str,
        room: Option<&str>,
        now: u64,
    ) -> Result<JoinClaims, TokenError> {
        self.check(token, this_shard, room, Some(now))
    }

    /// Verifies signature, shard and room but not expiry: for acting on a participant the
    /// token already admitted (leaving), since a call outlasts its short-lived join token.
    pub fn verify_ignoring_expiry(
        &self,
        token: &str,
        this_shard: &str,
        room: Option<&str>,
    ) -> Result<JoinClaims, TokenError> {
        self.check(token, this_shard, room, None)
    }

    fn check(
        &self,
        token: &str,
        this_shard: &str,
        room: Option<&str>,
        now: Option<u64>,
    ) -> Result<JoinClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<JoinClaims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            },
        )?;
        let claims = data.claims;
        if now.is_some_and(|now| claims.exp.saturating_add(EXPIRY_LEEWAY.as_secs()) < now) {
            return Err(TokenError::Expired);
        }
        if claims.shard != this_shard {
            return Err(TokenError::WrongShard {
                token_shard: claims.shard,
                this_shard: this_shard.to_owned(),
            });
        }
        if room.is_some_and(|r| r != claims.room) {
            return Err(TokenError::WrongRoom);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch, for token times.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> JoinClaims {
        JoinClaims {
            sub: "u1".into(),
            name: "Ada".into(),
            room: "r1".into(),
            shard: "shard-a".into(),
            publish: true,
            subscribe: true,
            iat: exp - 60,
            exp,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let key = TokenKey::generate();
        let token = key.issue(&claims(1_000)).unwrap();
        assert_eq!(
            key.verify(&token, "shard-a", Some("r1"), 990).unwrap(),
            claims(1_000)
        );
        assert_eq!(
            key.verify(&token, "shard-a", Some("r1"), 1_000 + 6),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            key.verify(&token, "shard-b", None, 990),
            Err(TokenError::WrongShard { .. })
        ));
        assert_eq!(
            key.verify(&token, "shard-a", Some("r2"), 990),
            Err(TokenError::WrongRoom)
        );
        let other = TokenKey::generate();
        assert_eq!(
            other.verify(&token, "shard-a", None, 990),
            Err(TokenError::BadSignature)
        );
        // Garbage is refused; whether as malformed or as badly signed depends on how far
        // the decoder gets, and both are 401s.
        for garbage in [
            "",
            "abc",
            "a.b.c",
            "eyJhbGciOiJIUzI1NiJ9.e30.",
            &"x".repeat(10_000),
        ] {
            let err = key.verify(garbage, "shard-a", None, 990).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::BadSignature),
                "{err:?}"
            );
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let key = TokenKey::generate();
        let body = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&claims(1_000)).unwrap(),
        );
        let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
        assert!(key.verify(&forged, "shard-a", None, 990).is_err());
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            TokenKey::from_secret(b"short").unwrap_err(),
            TokenError::KeyTooShort
        );
        assert!(TokenKey::from_secret(&[7u8; 32]).is_ok());
    }
}
