//! Join tokens: short-lived, single-use EdDSA (Ed25519) JWTs that the API signs after
//! placing a room and that the SFU shard verifies before it accepts an offer. Binding the
//! token to one room and one shard means a token leaked from one call opens nothing else;
//! the shard holding only the public key means a compromised shard cannot mint tokens; the
//! `jti` remembered by the shard means a token opens one join only.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ErrorCode;

mod keys;
mod replay;

pub use keys::{KeyError, TokenSigner, TokenVerifier};
pub use replay::{MAX_JTI_BYTES, ReplayGuard};

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
    /// This token's unique id ([`new_jti`]): a shard admits one join per id.
    pub jti: String,
}

/// A fresh token id: 128 random bits in hex.
pub fn new_jti() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Why a token was refused. Each maps to a distinct, stable HTTP error code.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the join token is malformed")]
    Malformed,
    #[error("the join token's signature is not valid")]
    BadSignature,
    #[error("the join token is not signed with EdDSA (Ed25519)")]
    WrongAlgorithm,
    #[error("the join token has expired")]
    Expired,
    #[error("the join token has been used already")]
    Replayed,
    #[error("the join token is for shard {token_shard}, not this shard ({this_shard})")]
    WrongShard {
        token_shard: String,
        this_shard: String,
    },
    #[error("the join token is for another room")]
    WrongRoom,
    #[error("could not sign the token: {0}")]
    Signing(String),
}

impl TokenError {
    /// The stable error code clients see.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed => ErrorCode::TokenMalformed,
            Self::BadSignature | Self::WrongAlgorithm => ErrorCode::TokenInvalid,
            Self::Expired => ErrorCode::TokenExpired,
            Self::Replayed => ErrorCode::TokenReplayed,
            Self::WrongShard { .. } => ErrorCode::TokenWrongShard,
            Self::WrongRoom => ErrorCode::TokenWrongRoom,
            Self::Signing(_) => ErrorCode::Internal,
        }
    }
}

impl TokenSigner {
    /// Signs `claims` with EdDSA.
    pub fn issue(&self, claims: &JoinClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

impl TokenVerifier {
    /// Verifies a token for `this_shard` (and `room`, when the caller knows it) at Unix time
    /// `now`. Expiry is checked here against the explicit time, with [`EXPIRY_LEEWAY`].
    /// Whether the token was used before is the caller's [`ReplayGuard`]'s to say.
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
        // Only EdDSA: an HS256 token (signed with any secret, the public key included) or
        // `alg: none` is refused before any key is used.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<JoinClaims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
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
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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
            jti: new_jti(),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn round_trip_and_refusals() {
        let signer = TokenSigner::generate();
        let key = signer.verifier();
        let issued = claims(1_000);
        let token = signer.issue(&issued).unwrap();
        assert_eq!(
            key.verify(&token, "shard-a", Some("r1"), 990).unwrap(),
            issued
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
        // Garbage is refused; whether as malformed or as badly signed depends on how far
        // the decoder gets, and both are 401s.
        for garbage in [
            "",
            "abc",
            "a.b.c",
            "eyJhbGciOiJFZERTQSJ9.e30.",
            &"x".repeat(10_000),
        ] {
            let err = key.verify(garbage, "shard-a", None, 990).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::BadSignature),
                "{err:?}"
            );
        }
    }

    /// What a compromised shard, or anyone without the API's private key, could try.
    #[test]
    fn forgeries_are_refused_with_stable_codes() {
        let api = TokenSigner::generate();
        let shard = api.verifier();
        let genuine = api.issue(&claims(1_000)).unwrap();

        // Signed by another Ed25519 key.
        let other = TokenSigner::generate().issue(&claims(1_000)).unwrap();
        let err = shard.verify(&other, "shard-a", None, 990).unwrap_err();
        assert_eq!(
            (err.clone(), err.code()),
            (TokenError::BadSignature, ErrorCode::TokenInvalid)
        );

        // HS256 with the only secret a shard has: its public key (the classic confusion),
        // and with any other secret.
        for secret in [api.public_key_pem().into_bytes(), b"x".repeat(32)] {
            let hs256 = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(1_000),
                &jsonwebtoken::EncodingKey::from_secret(&secret),
            )
            .unwrap();
            let err = shard.verify(&hs256, "shard-a", None, 990).unwrap_err();
            assert_eq!(
                (err.clone(), err.code()),
                (TokenError::WrongAlgorithm, ErrorCode::TokenInvalid)
            );
        }

        // alg none, with and without a signature part.
        let body = b64(&serde_json::to_vec(&claims(1_000)).unwrap());
        let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
        for forged in [format!("{none}.{body}."), format!("{none}.{body}")] {
            let err = shard.verify(&forged, "shard-a", None, 990).unwrap_err();
            assert_eq!(err.code(), ErrorCode::TokenMalformed, "{err:?}");
        }

        // The genuine token with its claims changed (another room) keeps the old signature.
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let mut changed = claims(1_000);
        changed.room = "someone-elses".into();
        let changed = b64(&serde_json::to_vec(&changed).unwrap());
        parts[1] = &changed;
        let err = shard
            .verify(&parts.join("."), "shard-a", None, 990)
            .unwrap_err();
        assert_eq!(err, TokenError::BadSignature);

        // Nothing of this changed the key: the genuine token still verifies.
        assert!(shard.verify(&genuine, "shard-a", Some("r1"), 990).is_ok());
    }

    #[test]
    fn every_token_gets_its_own_id() {
        let a = claims(1_000);
        let b = claims(1_000);
        assert_ne!(a.jti, b.jti);
        assert_eq!(a.jti.len(), 32);
    }
}
