//! The API's client of the shards' internal HTTP listeners: it relays joins and leaves over
//! the cluster network, so browsers and the loadgen talk only to the API's origin.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use surge_cluster::ShardInfo;

/// Connecting to a live shard on the cluster network takes milliseconds; past this it is
/// treated as gone (a killed pod's address often drops packets instead of refusing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A join waits for the shard's worker (which answers within 10 s or says it is busy).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Below the shards' default header timeout (`--header-timeout-secs`, 20 s), which also
/// closes idle keep-alive connections.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a relayed request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RelayError {
    /// No connection could be made: the shard is gone (refused, or no answer to connect).
    #[error("cannot connect to the shard: {0}")]
    Unreachable(String),
    /// Connected and sent, but no answer in time: the shard may have acted on it.
    #[error("the shard did not answer in time")]
    TimedOut,
    #[error("the shard's answer could not be read: {0}")]
    Broken(String),
}

/// A shard's answer, as received.
#[derive(Debug)]
pub(crate) struct ShardAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

impl ShardAnswer {
    /// The `error.code` of a JSON error body.
    pub fn code(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .pointer("/error/code")?
            .as_str()
            .map(str::to_owned)
    }
}

#[derive(Clone)]
pub(crate) struct ShardClient {
    http: reqwest::Client,
}

impl ShardClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            // Dropped here before the shard closes it, or a relayed join could be written into
            // a socket the shard is closing.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Cluster-internal traffic never goes through an HTTP proxy from the environment.
            .no_proxy()
            .user_agent(concat!("surge-api/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http })
    }

    fn participants_url(shard: &ShardInfo, room: &str) -> String {
        format!(
            "{}/v1/sfu/rooms/{room}/participants",
            shard.signal_url.trim_end_matches('/')
        )
    }

    /// Posts an SDP offer with a join token.
    pub async fn join(
        &self,
        shard: &ShardInfo,
        room: &str,
        token: &str,
        offer: Bytes,
    ) -> Result<ShardAnswer, RelayError> {
        let request = self
            .http
            .post(Self::participants_url(shard, room))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer);
        Self::send(request).await
    }

    /// `PATCH` one participant with an ICE restart offer; the token names its user.
    pub async fn restart(
        &self,
        shard: &ShardInfo,
        room: &str,
        participant: &str,
        token: &str,
        offer: Bytes,
    ) -> Result<ShardAnswer, RelayError> {
        let url = format!("{}/{participant}", Self::participants_url(shard, room));
        let request = self
            .http
            .patch(url)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer);
        Self::send(request).await
    }

    /// `DELETE` (leave) or `GET` (is it there?) on one participant; the token names the
    /// user it must belong to.
    pub async fn participant(
        &self,
        method: reqwest::Method,
        shard: &ShardInfo,
        room: &str,
        participant: &str,
        token: &str,
    ) -> Result<ShardAnswer, RelayError> {
        let url = format!("{}/{participant}", Self::participants_url(shard, room));
        let request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, format!("Bearer {token}"));
        Self::send(request).await
    }

    async fn send(request: reqwest::RequestBuilder) -> Result<ShardAnswer, RelayError> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                RelayError::Unreachable(e.to_string())
            } else if e.is_timeout() {
                RelayError::TimedOut
            } else {
                RelayError::Broken(e.to_string())
            }
        })?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, retry_after) = (header(LOCATION), header(RETRY_AFTER));
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                RelayError::TimedOut
            } else {
                RelayError::Broken(e.to_string())
            }
        })?;
        Ok(ShardAnswer {
            status,
            location,
            retry_after,
            body,
        })
    }
}
