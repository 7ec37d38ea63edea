//! The participant through TURN: Debian's coturn (`turnserver`) on loopback with
//! `use-auth-secret`, as scripts/test-turn runs it. A relay-only participant sends and
//! receives media through it; forged and expired credentials are a typed error, quickly.
//! Skipped (with a message) when `turnserver` is not on PATH; scripts/test-turn installs it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{TestShard, wait_for};
use hmac::{Hmac, KeyInit, Mac};
use surge_participant::turn::message::{Builder, Class, Message, Method, attr};
use surge_participant::{
    IceServer, IceTransport, Participant, ParticipantError, ParticipantStats, TurnError,
};

const LONG: Duration = Duration::from_secs(40);

struct Coturn {
    child: Child,
    addr: SocketAddr,
    secret: String,
}

impl Coturn {
    /// Starts coturn on a free loopback port, or `None` when it is not installed.
    fn start() -> Option<Self> {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("turnserver").is_file()));
        if !found {
            println!("SKIPPED: turnserver (coturn) is not on PATH; scripts/test-turn installs it");
            return None;
        }
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let secret = format!("test-secret-{:x}", rand::random::<u64>());
        let dir = std::env::temp_dir().join(format!("surge-turn-test-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::env::var("SURGE_TEST_OUTPUT")
            .ok()
            .map(|d| std::path::PathBuf::from(d).join("sfu-turnserver.log"));
        let stdout = log
            .and_then(|path| {
                std::fs::create_dir_all(path.parent()?).ok()?;
                std::fs::File::create(path).ok()
            })
            .map_or_else(Stdio::null, Stdio::from);
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=surge",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-tcp",
                "--allow-loopback-peers",
                "--no-multicast-peers",
                // Not scripts/test-turn's range, so both may run at once.
                "--min-port=41000",
                "--max-port=41999",
                &format!("--pidfile={}", dir.join("turnserver.pid").display()),
                &format!("--userdb={}", dir.join("turndb").display()),
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
            ])
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let coturn = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            secret,
        };
        coturn.wait_until_answering();
        Some(coturn)
    }

    /// Until an unauthenticated Allocate gets an answer (its 401).
    fn wait_until_answering(&self) {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let request = Builder::new(Method::Allocate, Class::Request, &[5; 12])
            .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .finish();
        let mut buf = [0u8; 1500];
        for _ in 0..100 {
            let _ = probe.send_to(&request, self.addr);
            if let Ok((n, _)) = probe.recv_from(&mut buf) {
                let answer = Message::parse(&buf[..n]).unwrap();
                assert_eq!(answer.class, Class::Error);
                return;
            }
        }
        panic!("coturn did not answer on {}", self.addr);
    }

    /// Credentials in the TURN REST form, as the API issues them (expiring at `expiry`).
    fn credentials(&self, expiry: u64, secret: &str) -> IceServer {
        let username = format!("{expiry}:test-user");
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(username.as_bytes());
        let credential =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        IceServer {
            urls: vec![format!("turn:{}?transport=udp", self.addr)],
            username: Some(username),
            credential: Some(credential),
        }
    }

    fn valid(&self) -> IceServer {
        self.credentials(unix_now() + 600, &self.secret)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn media_both_ways(s: &ParticipantStats) -> bool {
    !s.receiving("audio").is_empty() && !s.receiving("video").is_empty()
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_participant_calls_through_coturn() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let shard = TestShard::start().await;
    let alice = shard.join("turn-room", "alice").await;
    let mut config = shard.config("turn-room", "bob");
    config.ice_transport = IceTransport::Relay;
    config.ice_servers = vec![coturn.valid()];
    let bob = Participant::join(config).await.unwrap();

    let bob_got = wait_for(&bob, LONG, media_both_ways).await;
    assert!(bob_got.connected, "{bob_got:?}");
    let relayed = bob_got.relayed.unwrap();
    assert_ne!(relayed.port(), coturn.addr.port());
    assert!(
        (41000..=41999).contains(&relayed.port()),
        "a coturn relay port: {relayed}"
    );
    assert!(
        media_both_ways(&bob_got),
        "bob via TURN receives alice: {bob_got:?}"
    );
    let alice_got = wait_for(&alice, LONG, media_both_ways).await;
    assert!(
        media_both_ways(&alice_got),
        "alice receives bob's relayed media: {alice_got:?}"
    );
    assert_eq!(alice_got.relayed, None);

    // Join times, direct and through the relay, a few of each (sequential, one at a time).
    let (mut direct, mut relay) = (Vec::new(), Vec::new());
    for i in 0..5 {
        for through_relay in [false, true] {
            let mut config = shard.config("turn-room", &format!("joiner-{i}-{through_relay}"));
            config = config.subscriber_only();
            if through_relay {
                config.ice_transport = IceTransport::Relay;
                config.ice_servers = vec![coturn.valid()];
            }
            let p = Participant::join(config).await.unwrap();
            let s = wait_for(&p, LONG, |s| s.join_time.is_some()).await;
            let join = s.join_time.unwrap();
            if through_relay {
                assert!(s.relayed.is_some());
                relay.push(join);
            } else {
                direct.push(join);
            }
            p.leave().await.unwrap();
        }
    }
    println!(
        "join (offer → ICE+DTLS connected) p50 over 5: direct {:?}, through coturn {:?}; all direct {direct:?}, relay {relay:?}",
        p50(direct.clone()),
        p50(relay.clone()),
    );
    bob.leave().await.unwrap();
    alice.leave().await.unwrap();
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_credentials_are_refused_with_a_typed_error() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let shard = TestShard::start().await;
    let forged = coturn.credentials(unix_now() + 600, "not-the-secret");
    let expired = coturn.credentials(unix_now() - 60, &coturn.secret);
    for (name, server) in [("forged", forged), ("expired", expired)] {
        let mut config = shard.config("turn-refused", name);
        config.ice_transport = IceTransport::Relay;
        config.ice_servers = vec![server];
        let started = Instant::now();
        let result = Participant::join(config).await;
        let took = started.elapsed();
        match result {
            Err(ParticipantError::Turn(TurnError::Unauthorized { realm })) => {
                assert_eq!(realm, "surge");
            }
            Err(other) => panic!("{name}: {other}"),
            Ok(_) => panic!("{name} credentials were accepted"),
        }
        // Refused, not timed out (the transaction timeout is 5 s).
        assert!(took < Duration::from_secs(4), "{name}: {took:?}");
        println!("{name} credentials refused in {took:?}");
    }
    // The refused joiners left the shard again.
    let room_left = async {
        for _ in 0..50 {
            if shard.shard.status().participants == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(room_left.await, "the refused joiners are still in the room");
    shard.stop().await;
}

#[tokio::test]
async fn relay_only_without_a_turn_server_is_a_typed_error() {
    let shard = TestShard::start().await;
    let mut config = shard.config("turn-none", "carol");
    config.ice_transport = IceTransport::Relay;
    config.ice_servers = vec![IceServer {
        urls: vec!["stun:127.0.0.1:3478".into()],
        username: None,
        credential: None,
    }];
    match Participant::join(config).await {
        Err(ParticipantError::Turn(TurnError::NoServer)) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("joined without a relay"),
    }
    shard.stop().await;
}
