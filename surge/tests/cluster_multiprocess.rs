//! The cluster as processes: `surge sfu` shards and `surge api` replicas on loopback,
//! sharing one real Redis (`$SURGE_TEST_REDIS_URL`, a random key prefix per test) and one
//! PostgreSQL (`$SURGE_TEST_DATABASE_URL`, a fresh schema per test). Calls are in-process
//! str0m participants (`surge_participant`).
//!
//! Timings (how long media took to resume after a kill) are printed, not asserted tightly:
//! this machine is shared and busy; the bounds below only catch "never".

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use surge_cluster::registry::{ShardInfo, ShardRegistry, ShardState};
use surge_cluster::{JoinClaims, RedisRegistry, TokenSigner};
use surge_participant::{Participant, ParticipantConfig, ParticipantError};

mod common;
use common::free_port;

const ADMIN_TOKEN: &str = "cluster-test-admin";
/// Generous: debug builds of five processes start on two busy cores.
const START_TIMEOUT: Duration = Duration::from_secs(120);

fn redis_url() -> String {
    std::env::var("SURGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn postgres_url() -> String {
    std::env::var("SURGE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{nanos:x}", std::process::id())
}

/// A child process killed when the test ends, however it ends.
struct Proc {
    name: String,
    child: Child,
    base: String,
}

impl Proc {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// The exit status once it has exited, polling up to `within`.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, quiet on stdout, its warnings in the test's output.
fn surge() -> Command {
    let mut cmd = common::surge();
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    cmd
}

/// An offer that passes the API's checks but not the shard's: the API places the room and
/// relays it, and the shard refuses it with `invalid_sdp`. Enough to place rooms cheaply.
const PLACEHOLDER_OFFER: &str = "v=0\r\n";

struct Cluster {
    prefix: String,
    schema: String,
    client: reqwest::Client,
    registry: RedisRegistry,
    apis: Vec<Proc>,
    shards: Vec<Proc>,
    session: String,
    /// Sessions of other accounts, one per caller of a call (a user has one session per
    /// room: a second join by the same account would replace the first).
    callers: Vec<String>,
    /// The join-token keypair: the APIs get the private key, the shards only the public one.
    keys: TokenSigner,
}

impl Cluster {
    async fn start(shards: usize, apis: usize) -> Self {
        let prefix = format!("surge-cluster-test:{}:", unique());
        let schema = format!("cl_{}", unique());
        let registry = RedisRegistry::connect(&redis_url(), &prefix)
            .await
            .unwrap_or_else(|e| panic!("these tests need Redis at {}: {e}", redis_url()));
        let mut cluster = Self {
            prefix,
            schema,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            registry,
            apis: Vec::new(),
            shards: Vec::new(),
            session: String::new(),
            callers: Vec::new(),
            keys: TokenSigner::generate(),
        };
        for i in 0..shards {
            cluster.start_shard(&format!("sfu-{i}"));
        }
        // The first API migrates the fresh schema before the others start on it.
        for _ in 0..apis {
            cluster.start_api();
            let api = cluster.apis.last().unwrap();
            cluster.wait_ready(&api.base, &api.name).await;
        }
        cluster.wait_for_shards(shards).await;
        cluster.session = cluster.sign_up(0).await;
        for n in 1..=3 {
            let caller = cluster.sign_up(n).await;
            cluster.callers.push(caller);
        }
        cluster
    }

    fn common(&self, cmd: &mut Command, port: u16) {
        cmd.env("SURGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("SURGE_REDIS_URL", redis_url())
            .env("SURGE_REDIS_PREFIX", &self.prefix)
            .env("SURGE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SURGE_SHUTDOWN_GRACE_SECS", "2");
    }

    fn start_shard(&mut self, id: &str) {
        let port = free_port();
        let mut cmd = surge();
        self.common(&mut cmd, port);
        cmd.arg("sfu")
            .env("SURGE_JOIN_TOKEN_PUBLIC_KEY", self.keys.public_key_pem())
            .env("SURGE_SHARD_ID", id)
            .env("SURGE_WORKERS", "1")
            .env("SURGE_DRAIN_DEADLINE_SECS", "300");
        self.shards.push(Proc {
            name: id.to_owned(),
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        });
    }

    fn start_api(&mut self) {
        let port = free_port();
        let mut cmd = surge();
        self.common(&mut cmd, port);
        cmd.arg("api")
            .env("SURGE_JOIN_TOKEN_PRIVATE_KEY", self.keys.private_key_pem())
            .env("SURGE_DATABASE_URL", postgres_url())
            .env("SURGE_DATABASE_SCHEMA", &self.schema)
            .env("SURGE_DATABASE_MAX_CONNECTIONS", "4")
            .env("SURGE_ARGON2_MEMORY_KIB", "64")
            .env("SURGE_ARGON2_ITERATIONS", "1")
            .env("SURGE_HASH_THREADS", "1")
            // One test account creates every room here; the per-account limits have
            // their own test (signup-api `rooms`).
            .env("SURGE_ROOMS_PER_ACCOUNT_PER_MIN", "0")
            .env("SURGE_MAX_ROOMS_PER_ACCOUNT", "0")
            .env("SURGE_JOINS_PER_ACCOUNT_PER_MIN", "0")
            .env("SURGE_SIGNUP_IP_PER_MIN", "0")
            .env("SURGE_LOGIN_IP_PER_MIN", "0");
        self.apis.push(Proc {
            name: format!("api-{}", self.apis.len()),
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        });
    }

    async fn wait_ready(&self, base: &str, name: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = self.client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "{name} did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn live(&self) -> Vec<ShardInfo> {
        self.registry.live_shards().await.unwrap()
    }

    async fn wait_for_shards(&self, n: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        while self.live().await.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {:?} registered",
                self.live().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn post(&self, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.post(url);
        if !self.session.is_empty() {
            request = request.bearer_auth(&self.session);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn sign_up(&self, n: usize) -> String {
        let api = &self.apis[0].base;
        let creds =
            json!({"email": format!("caller{n}@example.com"), "password": "correct horse battery"});
        let (status, body) = self
            .post(
                &format!("{api}/v1/accounts"),
                Some(json!({
                    "email": creds["email"],
                    "password": creds["password"],
                    "display_name": "Caller",
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self.post(&format!("{api}/v1/sessions"), Some(creds)).await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    async fn create_room(&self, api: usize) -> String {
        let base = &self.apis[api % self.apis.len()].base;
        let (status, body) = self.post(&format!("{base}/v1/rooms"), None).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Places `room` through API `api` (a join whose offer the shard refuses) and returns
    /// the shard it is pinned to.
    async fn place(&self, api: usize, room: &str) -> String {
        let base = &self.apis[api % self.apis.len()].base;
        let response = self
            .client
            .post(format!("{base}/v1/rooms/{room}/participants"))
            .bearer_auth(&self.session)
            .header("content-type", "application/sdp")
            .body(PLACEHOLDER_OFFER)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_sdp")),
            "{body}"
        );
        self.registry.room_pin(room).await.unwrap().unwrap()
    }

    /// The URL a participant posts its offer to (through API `api`).
    fn participants_url(&self, api: usize, room: &str) -> String {
        let base = &self.apis[api % self.apis.len()].base;
        format!("{base}/v1/rooms/{room}/participants")
    }

    fn shard_mut(&mut self, id: &str) -> &mut Proc {
        self.shards.iter_mut().find(|p| p.name == id).unwrap()
    }

    /// Creates rooms until every listed shard has at least `per_shard` of them.
    async fn rooms_on_each(&self, shards: &[&str], per_shard: usize) -> HashMap<String, String> {
        let mut rooms = HashMap::new();
        for i in 0..200 {
            let have = |id: &str| rooms.values().filter(|s| *s == id).count();
            if shards.iter().all(|s| have(s) >= per_shard) {
                return rooms;
            }
            let room = self.create_room(i).await;
            let shard = self.place(i, &room).await;
            rooms.insert(room, shard);
        }
        panic!("placement never reached every shard: {rooms:?}");
    }
}

/// Joins `room` through the API (which relays the offer to the room's shard), retrying
/// while the API sheds the join, as a real client does; returns the shard it landed on.
/// Caller `who` (each its own account) joins `room` through API replica `api`.
async fn join_call(cluster: &Cluster, api: usize, who: usize, room: &str) -> (Participant, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = cluster.participants_url(api, room);
    loop {
        match Participant::join(ParticipantConfig::new(&url, &cluster.callers[who])).await {
            Ok(p) => {
                let shard = cluster.registry.room_pin(room).await.unwrap().unwrap();
                return (p, shard);
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "could not join {room}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Packets of `kind` received from the others, summed.
fn packets(p: &Participant, kind: &str) -> u64 {
    p.stats().receiving(kind).iter().map(|t| t.packets).sum()
}

/// Waits until each participant's received `kind` packet count grows past what it was.
async fn wait_kind(participants: &[&Participant], kind: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let before: Vec<u64> = participants.iter().map(|p| packets(p, kind)).collect();
    loop {
        let flowing = participants
            .iter()
            .zip(&before)
            .all(|(p, b)| packets(p, kind) > *b + 10);
        if flowing {
            return start.elapsed();
        }
        if std::env::var_os("CLUSTER_TEST_TRACE").is_some() {
            for p in participants {
                let st = p.stats();
                eprintln!(
                    "{:.1}s {:?} connected={} join={:?} tracks={:?}",
                    start.elapsed().as_secs_f64(),
                    st.participant_id,
                    st.connected,
                    st.join_time,
                    st.tracks
                        .iter()
                        .map(|t| (&t.kind, t.packets))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(950)).await;
        }
        assert!(
            start.elapsed() < within,
            "{kind} did not flow within {within:?}: {:?}",
            participants.iter().map(|p| p.stats()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until audio and video both flow to every participant; returns when audio
/// started and when video did.
async fn wait_media(participants: &[&Participant], within: Duration) -> (Duration, Duration) {
    let start = Instant::now();
    let audio = wait_kind(participants, "audio", within).await;
    wait_kind(participants, "video", within).await;
    (audio, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_evenly_and_both_apis_agree() {
    let cluster = Cluster::start(3, 2).await;

    // 300 rooms, placed alternately through the two APIs.
    let mut per_shard: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let room = cluster.create_room(i).await;
        let shard = cluster.place(i, &room).await;
        *per_shard.entry(shard).or_default() += 1;
    }
    println!("300 rooms over 3 shards: {per_shard:?}");
    assert_eq!(per_shard.len(), 3, "{per_shard:?}");
    for (shard, n) in &per_shard {
        assert!(
            (80..=120).contains(n),
            "{shard} got {n} of 300: {per_shard:?}"
        );
    }

    // The same new room asked from both APIs at the same moment lands on one shard.
    for i in 0..30 {
        let room = cluster.create_room(i).await;
        let (a, b) = tokio::join!(cluster.place(0, &room), cluster.place(1, &room));
        assert_eq!(a, b, "room {room}");
    }

    // The admin listing through either API shows the three shards.
    for api in &cluster.apis {
        let body: Value = cluster
            .client
            .get(format!("{}/v1/admin/shards", api.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let shards = body["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 3, "{body}");
        let pinned: u64 = shards
            .iter()
            .filter_map(|s| s["pinned_rooms"].as_u64())
            .sum();
        assert_eq!(pinned, 330, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_costs_only_its_own_rooms() {
    let mut cluster = Cluster::start(3, 2).await;
    let rooms = cluster.rooms_on_each(&["sfu-0", "sfu-1", "sfu-2"], 2).await;
    let victim = "sfu-1";
    let on = |shard: &str| -> Vec<String> {
        let mut r: Vec<_> = rooms
            .iter()
            .filter(|(_, s)| *s == shard)
            .map(|(r, _)| r.clone())
            .collect();
        r.sort();
        r
    };

    // One call on the victim and one on a survivor, two participants each.
    let doomed_room = on(victim)[0].clone();
    let safe_room = on("sfu-0")[0].clone();
    let (d1, s) = join_call(&cluster, 0, 0, &doomed_room).await;
    assert_eq!(s, victim);
    let (d2, _) = join_call(&cluster, 1, 1, &doomed_room).await;
    let (k1, s) = join_call(&cluster, 0, 0, &safe_room).await;
    assert_eq!(s, "sfu-0");
    let (k2, _) = join_call(&cluster, 1, 1, &safe_room).await;
    let (audio, video) = wait_media(&[&d1, &d2, &k1, &k2], Duration::from_secs(90)).await;
    println!(
        "fresh calls: audio after {:.2} s, video after {:.2} s",
        audio.as_secs_f64(),
        video.as_secs_f64()
    );

    let pins_before: HashMap<String, Option<String>> = {
        let mut pins = HashMap::new();
        for room in rooms.keys() {
            pins.insert(room.clone(), cluster.registry.room_pin(room).await.unwrap());
        }
        pins
    };

    cluster.shard_mut(victim).child.kill().unwrap();
    let killed_at = Instant::now();

    // The victim's clients notice and rejoin through the APIs; they land together on a
    // live shard, and media flows again.
    d1.vanish();
    d2.vanish();
    let ((n1, s1), (n2, s2)) = tokio::join!(
        join_call(&cluster, 0, 0, &doomed_room),
        join_call(&cluster, 1, 1, &doomed_room)
    );
    let rejoined = killed_at.elapsed();
    assert_eq!(s1, s2, "the rejoined participants were split");
    assert_ne!(s1, victim);
    let (audio, video) = wait_media(&[&n1, &n2], Duration::from_secs(90)).await;
    println!(
        "after the SIGKILL: rejoined in {:.2} s, audio resumed in {:.2} s, video in {:.2} s \
         (the API moves a room off an unreachable shard at once; debug build, busy machine)",
        rejoined.as_secs_f64(),
        (rejoined + audio).as_secs_f64(),
        (rejoined + video).as_secs_f64()
    );
    let resumed = rejoined + audio;
    assert!(resumed < Duration::from_secs(60));

    // The other call never noticed: still flowing, still on its shard.
    wait_media(&[&k1, &k2], Duration::from_secs(60)).await;
    assert!(k1.stats().connected && k2.stats().connected);

    // Every room of the survivors keeps its shard; each of the victim's rooms is placed
    // on a survivor at its next join.
    for (room, shard) in &rooms {
        if shard == victim {
            assert_ne!(cluster.place(0, room).await, victim, "{room}");
        } else {
            assert_eq!(
                cluster.registry.room_pin(room).await.unwrap(),
                pins_before[room],
                "{room} moved"
            );
            assert_eq!(&cluster.place(1, room).await, shard, "{room}");
        }
    }
    // The registry forgets the victim on its own once its heartbeats' TTL runs out; the
    // rooms did not wait for that (the API found it unreachable and moved them).
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.live().await.iter().any(|s| s.id == victim) {
        assert!(Instant::now() < deadline, "the dead shard stays registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    n1.leave().await.unwrap();
    n2.leave().await.unwrap();
    k1.leave().await.unwrap();
    k2.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_shard_then_it_exits_zero() {
    let mut cluster = Cluster::start(2, 1).await;
    let rooms = cluster.rooms_on_each(&["sfu-0", "sfu-1"], 1).await;
    let draining = "sfu-1";
    let room = rooms
        .iter()
        .find(|(_, s)| *s == draining)
        .map(|(r, _)| r.clone())
        .unwrap();
    let (p1, s) = join_call(&cluster, 0, 0, &room).await;
    assert_eq!(s, draining);
    let (p2, _) = join_call(&cluster, 0, 1, &room).await;
    wait_media(&[&p1, &p2], Duration::from_secs(90)).await;

    cluster.shard_mut(draining).signal("-TERM");

    // It says so in the registry at once (its next heartbeat).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = cluster.live().await;
        if live
            .iter()
            .any(|s| s.id == draining && s.state == ShardState::Draining)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never draining: {live:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No new room goes to it, but a late joiner of its call lands there, with the others.
    for i in 0..20 {
        let new_room = cluster.create_room(i).await;
        assert_eq!(cluster.place(i, &new_room).await, "sfu-0");
    }
    let (p3, s) = join_call(&cluster, 0, 2, &room).await;
    assert_eq!(s, draining, "the late joiner was split from the meeting");
    wait_media(&[&p1, &p2, &p3], Duration::from_secs(90)).await;
    p3.leave().await.unwrap();

    // The shard itself refuses a new room, even with a valid token for it.
    let now = surge_cluster::token::unix_now();
    let token = cluster
        .keys
        .issue(&JoinClaims {
            sub: "someone".into(),
            name: "Someone".into(),
            room: "brand-new-room".into(),
            shard: draining.into(),
            publish: true,
            subscribe: true,
            iat: now,
            exp: now + 60,
            jti: surge_cluster::token::new_jti(),
        })
        .unwrap();
    let url = format!(
        "{}/v1/sfu/rooms/brand-new-room/participants",
        cluster.shard_mut(draining).base
    );
    match Participant::join(ParticipantConfig::new(&url, &token)).await {
        Err(ParticipantError::Refused { status, code }) => {
            assert_eq!((status, code.as_str()), (503, "draining"));
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a draining shard took a new room"),
    }

    // Its call goes on, and it keeps running while the call lasts.
    wait_media(&[&p1, &p2], Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_media(&[&p1, &p2], Duration::from_secs(60)).await;
    assert!(
        cluster.shard_mut(draining).running(),
        "it left during a call"
    );

    // When the call ends, it exits cleanly.
    p1.leave().await.unwrap();
    p2.leave().await.unwrap();
    let status = cluster
        .shard_mut(draining)
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the drained shard did not exit");
    assert!(status.success(), "exit status {status:?}");
    assert!(cluster.live().await.iter().all(|s| s.id != draining));

    // An operator drains the other one through the API's admin endpoint: idle, it stops.
    let url = format!("{}/v1/admin/shards/sfu-0/drain", cluster.apis[0].base);
    let refused = cluster.client.post(&url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let accepted = cluster
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    let status = cluster
        .shard_mut("sfu-0")
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the shard drained by an operator did not exit");
    assert!(status.success(), "exit status {status:?}");
    let response = cluster
        .client
        .post(cluster.participants_url(0, &room))
        .bearer_auth(&cluster.session)
        .header("content-type", "application/sdp")
        .body(PLACEHOLDER_OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_capacity", "{body}");
}
