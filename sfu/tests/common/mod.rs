//! An in-process shard served on 127.0.0.1:0, and join tokens for it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use surge_cluster::http::{finish_router, serve};
use surge_cluster::registry::MemoryRegistry;
use surge_cluster::token::{JoinClaims, TokenSigner, unix_now};
use surge_participant::{Participant, ParticipantConfig, ParticipantStats};
use surge_sfu::{SfuConfig, Shard, ShardDeps};
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "admin-secret-for-tests";

pub struct TestShard {
    pub shard: Shard,
    pub key: TokenSigner,
    pub addr: SocketAddr,
    pub shard_id: String,
    stop: CancellationToken,
}

impl TestShard {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut SfuConfig)) -> Self {
        init_tracing();
        let shard_id = format!("test-{:x}", rand::random::<u32>());
        let mut config = SfuConfig::for_tests(&shard_id);
        tweak(&mut config);
        let key = TokenSigner::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shard = Shard::start(
            &config,
            ShardDeps {
                registry: Arc::new(MemoryRegistry::new()),
                token_key: key.verifier(),
                admin_token: Some(ADMIN.to_owned()),
                default_signal_url: format!("http://{addr}"),
            },
        )
        .await
        .unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            finish_router(shard.router()),
            stop.clone(),
            Duration::from_secs(1),
        ));
        Self {
            shard,
            key,
            addr,
            shard_id,
            stop,
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("http://{}/v1/sfu/rooms/{room}/participants", self.addr)
    }

    pub fn claims(&self, room: &str, user: &str) -> JoinClaims {
        let now = unix_now();
        JoinClaims {
            sub: user.to_owned(),
            name: format!("User {user}"),
            room: room.to_owned(),
            shard: self.shard_id.clone(),
            publish: true,
            subscribe: true,
            iat: now,
            exp: now + 300,
            jti: surge_cluster::token::new_jti(),
        }
    }

    pub fn token(&self, room: &str, user: &str) -> String {
        self.key.issue(&self.claims(room, user)).unwrap()
    }

    pub fn config(&self, room: &str, user: &str) -> ParticipantConfig {
        ParticipantConfig::new(&self.url(room), &self.token(room, user))
    }

    pub async fn join(&self, room: &str, user: &str) -> Participant {
        Participant::join(self.config(room, user)).await.unwrap()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.shard.stop().await;
    }
}

/// Polls `check` on the participant's stats until it holds or `limit` passes (generous
/// bounds: the box is busy).
pub async fn wait_for(
    participant: &Participant,
    limit: Duration,
    check: impl Fn(&ParticipantStats) -> bool,
) -> ParticipantStats {
    participant.wait_for(limit, check).await
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=surge_sfu=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}
