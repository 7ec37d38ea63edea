//! One Redis connection for every Redis user in Surge, on a single server or on a Redis
//! Cluster, chosen by the URL:
//!
//! - `redis://host:port/` (or `rediss://`): one server, through a [`ConnectionManager`]
//!   that reconnects in the background;
//! - `redis+cluster://host:port,host:port,.../`: a Redis Cluster, the listed nodes being
//!   seeds from which the client learns the whole topology (any reachable master or replica
//!   will do). User, password and query apply to every node.
//!
//! Commands go through [`RedisConn`], which implements [`ConnectionLike`], so scripts,
//! pipelines and plain commands are written once. What differs on a cluster is the key
//! layout (every multi-key script's keys share a hash tag, see each user's module docs),
//! pipelines (one slot each: [`RedisConn::is_cluster`] tells callers to spread them), and
//! pub/sub, which [`subscribe`] hides: `SUBSCRIBE` on one server, sharded `SSUBSCRIBE` on a
//! cluster (with [`publish_command`] the matching `PUBLISH` / `SPUBLISH`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, PushKind, RedisFuture, RedisResult, Value};

/// What a Redis URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Single(String),
    /// A Redis Cluster, by its seed nodes (one URL each).
    Cluster(Vec<String>),
}

/// A Redis URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisUrlError {
    #[error("a redis+cluster:// URL needs at least one host:port")]
    NoNodes,
    #[error("{0}")]
    Invalid(String),
}

/// The scheme suffix that selects Redis Cluster.
const CLUSTER_SUFFIX: &str = "+cluster";

impl RedisTarget {
    /// Parses `redis://…` (one server) or `redis+cluster://[user:pass@]h:p,h:p[/db][?q]`.
    pub fn parse(url: &str) -> Result<Self, RedisUrlError> {
        let invalid = |e: redis::RedisError| RedisUrlError::Invalid(e.to_string());
        let Some((scheme, rest)) = url.split_once("://") else {
            url.into_connection_info().map_err(invalid)?;
            return Ok(Self::Single(url.to_owned()));
        };
        let Some(base) = scheme.strip_suffix(CLUSTER_SUFFIX) else {
            url.into_connection_info().map_err(invalid)?;
            return Ok(Self::Single(url.to_owned()));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| format!("{base}://{userinfo}{host}{tail}"))
            .collect();
        if seeds.is_empty() {
            return Err(RedisUrlError::NoNodes);
        }
        for seed in &seeds {
            seed.as_str().into_connection_info().map_err(invalid)?;
        }
        Ok(Self::Cluster(seeds))
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// How long a connection waits, and how often it retries, before a command fails.
#[derive(Debug, Clone, Copy)]
pub struct RedisTimeouts {
    pub connect: Duration,
    pub response: Duration,
    pub retries: u32,
    pub max_delay: Duration,
}

impl RedisTimeouts {
    fn manager(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect))
            .set_response_timeout(Some(self.response))
            .set_number_of_retries(usize::try_from(self.retries).unwrap_or(usize::MAX))
            .set_max_delay(self.max_delay)
    }

    fn cluster_builder(&self, seeds: &[String]) -> ClusterClientBuilder {
        ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .connection_timeout(self.connect)
            .response_timeout(self.response)
            .retries(self.retries)
            .max_retry_wait(u64::try_from(self.max_delay.as_millis()).unwrap_or(u64::MAX))
    }

    fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig::new()
            .set_connection_timeout(self.connect)
            .set_response_timeout(self.response)
    }
}

/// A connection to one server or to a cluster; cheap to clone (clones share the sockets),
/// and both kinds reconnect in the background after a failure (on a cluster, following a
/// failover to the promoted replica).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connects now: fails when Redis cannot be reached.
    pub async fn connect(target: &RedisTarget, timeouts: &RedisTimeouts) -> RedisResult<Self> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, timeouts.manager()).await?,
                ))
            }
            RedisTarget::Cluster(seeds) => {
                let client = timeouts.cluster_builder(seeds).build()?;
                Ok(Self::Cluster(
                    client
                        .get_async_connection_with_config(timeouts.cluster_config())
                        .await?,
                ))
            }
        }
    }

    /// Connects in the background: commands fail (quickly) until Redis answers.
    pub fn lazy(target: &RedisTarget, timeouts: &RedisTimeouts) -> RedisResult<Self> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                    client,
                    timeouts.manager(),
                )?))
            }
            RedisTarget::Cluster(seeds) => {
                let client = timeouts.cluster_builder(seeds).build()?;
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(timeouts.cluster_config()),
                ))
            }
        }
    }

    /// Whether this is a cluster connection: a pipeline must then stay within one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The command that publishes on a channel [`subscribe`] follows: `PUBLISH` on one server,
/// `SPUBLISH` on a cluster (delivered within the channel's shard only, instead of to
/// every node of the cluster). Also the name to call from a Lua script, where a sharded
/// channel must hash to the script's slot.
pub fn publish_command(cluster: bool) -> &'static str {
    if cluster { "SPUBLISH" } else { "PUBLISH" }
}

/// One pub/sub message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: String,
    pub payload: Vec<u8>,
}

/// Messages from the channels given to [`subscribe`]; ends when the subscription is lost
/// (the caller subscribes again).
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Message> + Send>>,
    /// Keeps the cluster connection (and so its subscriptions) alive.
    _cluster: Option<ClusterConnection>,
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Subscribes to `channels` on a dedicated connection: `SUBSCRIBE` on one server,
/// `SSUBSCRIBE` on a cluster (each channel on the master of its slot). On a cluster the
/// stream ends when any node connection drops, so the caller's resubscription starts from
/// a fresh view of the topology (after a failover, the promoted replica).
pub async fn subscribe(
    target: &RedisTarget,
    channels: &[String],
    timeouts: &RedisTimeouts,
) -> RedisResult<Subscription> {
    match target {
        RedisTarget::Single(url) => {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in channels {
                pubsub.subscribe(channel).await?;
            }
            let messages = pubsub.into_on_message().map(|m| Message {
                channel: m.get_channel_name().to_owned(),
                payload: m.get_payload_bytes().to_vec(),
            });
            Ok(Subscription {
                inner: Box::pin(messages),
                _cluster: None,
            })
        }
        RedisTarget::Cluster(seeds) => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let client = timeouts
                .cluster_builder(seeds)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .build()?;
            let mut conn = client.get_async_connection().await?;
            // One command per channel: the channels may hash to different slots.
            for channel in channels {
                conn.ssubscribe(channel).await?;
            }
            let pushes = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let messages = pushes
                .take_while(|push| futures::future::ready(push.kind != PushKind::Disconnection))
                .filter_map(|push| {
                    futures::future::ready(match (push.kind, push.data.as_slice()) {
                        (
                            PushKind::SMessage | PushKind::Message,
                            [Value::BulkString(channel), Value::BulkString(payload)],
                        ) => Some(Message {
                            channel: String::from_utf8_lossy(channel).into_owned(),
                            payload: payload.clone(),
                        }),
                        _ => None,
                    })
                });
            Ok(Subscription {
                inner: Box::pin(messages),
                _cluster: Some(conn),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_urls_stay_single() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/".into())
        );
    }

    #[test]
    fn cluster_urls_become_seeds() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://u:pw@10.0.0.1:7000, 10.0.0.2:7001/?protocol=2")
                .unwrap(),
            RedisTarget::Cluster(vec![
                "redis://u:pw@10.0.0.1:7000/?protocol=2".into(),
                "redis://u:pw@10.0.0.2:7001/?protocol=2".into(),
            ])
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://h:1").unwrap(),
            RedisTarget::Cluster(vec!["redis://h:1".into()])
        );
        assert!(matches!(
            RedisTarget::parse("redis+cluster:///"),
            Err(RedisUrlError::NoNodes)
        ));
        assert!(RedisTarget::parse("redis+cluster://h:notaport").is_err());
        assert!(RedisTarget::parse("nonsense").is_err());
    }
}
