//! Short-lived TURN credentials (the "TURN REST API" scheme that coturn implements as
//! `use-auth-secret` / `static-auth-secret`): the API and the TURN server share one secret,
//! so the API can hand out credentials the TURN server checks without a database.
//!
//! username = `<unix expiry>:<opaque user id>`, credential = base64(HMAC-SHA1(secret,
//! username)). The TURN server refuses a username whose expiry has passed; the opaque id is a
//! keyed hash of the account, so TURN logs never carry account ids or emails, yet whoever
//! holds the secret can tell one user's relays apart from another's.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha1::Sha1;

/// The shared secret; its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSecret(String);

impl TurnSecret {
    /// The secret as configured.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }
}

impl FromStr for TurnSecret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the TURN secret is empty".into());
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(***)")
    }
}

/// Why a TURN configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnConfigError {
    #[error("--turn-urls: {0:?} is not a turn:, turns: or stun: URL")]
    BadUrl(String),
    #[error("--turn-urls names TURN servers but --turn-secret is not set")]
    NoSecret,
}

/// One entry of `RTCConfiguration.iceServers`, as the web client and the loadgen take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The TURN (and STUN) servers the API hands to clients, with the means to mint credentials.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    turn_urls: Vec<String>,
    stun_urls: Vec<String>,
    secret: Option<TurnSecret>,
    ttl: Duration,
}

fn is_turn(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

impl Turn {
    /// Checks the URLs (each `turn:`, `turns:` or `stun:`); TURN URLs need the secret.
    pub fn new(
        urls: &[String],
        secret: Option<TurnSecret>,
        ttl: Duration,
    ) -> Result<Self, TurnConfigError> {
        let mut turn = Self {
            secret,
            ttl: ttl.max(Duration::from_secs(60)),
            ..Self::default()
        };
        for url in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            if is_turn(url) {
                turn.turn_urls.push(url.to_owned());
            } else if url.starts_with("stun:") {
                turn.stun_urls.push(url.to_owned());
            } else {
                return Err(TurnConfigError::BadUrl(url.to_owned()));
            }
        }
        if !turn.turn_urls.is_empty() && turn.secret.is_none() {
            return Err(TurnConfigError::NoSecret);
        }
        Ok(turn)
    }

    /// Whether any server is configured (no servers: clients get none).
    pub fn is_configured(&self) -> bool {
        !self.turn_urls.is_empty() || !self.stun_urls.is_empty()
    }

    /// The servers for `account`, with TURN credentials valid until `now_unix` + the TTL.
    pub fn ice_servers(&self, account: &str, now_unix: u64) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), &self.secret) {
            let expiry = now_unix.saturating_add(self.ttl.as_secs());
            let username = format!("{expiry}:{}", opaque_user(secret, account));
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                credential: Some(credential(secret, &username)),
                username: Some(username),
            });
        }
        servers
    }
}

fn mac(secret: &TurnSecret) -> Hmac<Sha1> {
    // HMAC takes a key of any length; the error case is for fixed-size-key MACs only.
    <Hmac<Sha1> as KeyInit>::new_from_slice(secret.0.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// The password the TURN server derives for `username`: base64(HMAC-SHA1(secret, username)).
pub fn credential(secret: &TurnSecret, username: &str) -> String {
    let mut mac = mac(secret);
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// 16 hex digits that stand for the account in TURN usernames (and so in TURN logs).
fn opaque_user(secret: &TurnSecret, account: &str) -> String {
    let mut mac = mac(secret);
    mac.update(b"surge-turn-user:");
    mac.update(account.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// The WHIP form (RFC 9725 §4.6) of `servers`: one `Link` header value per URL, sent beside
/// the SDP answer of a join.
pub fn link_headers(servers: &[IceServer]) -> Vec<String> {
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{user}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            links.push(link);
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn credential_matches_a_known_vector() {
        // Computed independently: python3 hmac.new(b'surge-turn-secret', b'1700086400:3f2a9c1d5e7b8a60', sha1), base64.
        let secret = TurnSecret::new("surge-turn-secret");
        assert_eq!(
            credential(&secret, "1700086400:3f2a9c1d5e7b8a60"),
            "b2WrOlwhuvsn5eJzJ7uiARhsBck="
        );
    }

    #[test]
    fn username_carries_the_expiry_and_no_account_id() {
        let secret = TurnSecret::new("s3cret");
        let turn = Turn::new(
            &urls(&["turn:127.0.0.1:3478?transport=udp", "stun:127.0.0.1:3478"]),
            Some(secret.clone()),
            Duration::from_secs(3600),
        )
        .unwrap();
        let servers = turn.ice_servers("acct-42@example.com", 1_700_000_000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:127.0.0.1:3478"]);
        assert_eq!(servers[0].username, None);
        let relay = &servers[1];
        let username = relay.username.as_deref().unwrap();
        let (expiry, user) = username.split_once(':').unwrap();
        assert_eq!(expiry, "1700003600", "now + TTL");
        assert_eq!(user.len(), 16);
        assert!(!username.contains("acct"));
        assert_eq!(
            relay.credential.as_deref(),
            Some(credential(&secret, username).as_str())
        );
        // Stable per account (TURN logs can be correlated), different between accounts.
        let again = turn.ice_servers("acct-42@example.com", 1_700_000_000);
        assert_eq!(again[1].username.as_deref(), Some(username));
        let other = turn.ice_servers("acct-43", 1_700_000_000);
        assert_ne!(other[1].username.as_deref(), Some(username));
        // Later requests get later expiries.
        let later = turn.ice_servers("acct-42@example.com", 1_700_000_100);
        assert!(
            later[1]
                .username
                .as_deref()
                .unwrap()
                .starts_with("1700003700:")
        );
    }

    #[test]
    fn misconfiguration_is_refused() {
        let ttl = Duration::from_secs(60);
        assert_eq!(
            Turn::new(&urls(&["turn:x:3478"]), None, ttl).unwrap_err(),
            TurnConfigError::NoSecret
        );
        assert!(matches!(
            Turn::new(&urls(&["http://x"]), Some(TurnSecret::new("s")), ttl),
            Err(TurnConfigError::BadUrl(_))
        ));
        let none = Turn::new(&[], None, ttl).unwrap();
        assert!(!none.is_configured());
        assert!(none.ice_servers("a", 0).is_empty());
        assert!("".parse::<TurnSecret>().is_err());
    }

    #[test]
    fn the_secret_is_never_printed() {
        let secret: TurnSecret = "hunter2-long-secret".parse().unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
        let turn = Turn::new(&urls(&["turn:x"]), Some(secret), Duration::from_secs(60)).unwrap();
        assert!(!format!("{turn:?}").contains("hunter2"));
    }

    #[test]
    fn link_headers_follow_whip() {
        let servers = [IceServer {
            urls: urls(&["turn:t.example:3478?transport=udp"]),
            username: Some("1:ab".into()),
            credential: Some("c/+=".into()),
        }];
        assert_eq!(
            link_headers(&servers),
            [
                "<turn:t.example:3478?transport=udp>; rel=\"ice-server\"; username=\"1:ab\"; credential=\"c/+=\"; credential-type=\"password\""
            ]
        );
    }
}
