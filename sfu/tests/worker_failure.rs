//! A worker thread that panics: its calls end with a clear reason, joins for its rooms are
//! refused, the shard turns unready, counts the failure and asks to be restarted.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestShard;
use surge_cluster::health::Health;
use surge_cluster::http::{finish_router, ops_routes, serve};
use surge_participant::{Participant, ParticipantError};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_ends_its_calls_turns_the_shard_unready_and_exits() {
    let metrics = surge_cluster::telemetry::install_metrics().unwrap();
    let shard = TestShard::start().await;
    // `/readyz` as the binary serves it, with the shard's gate.
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let readyz = format!("http://{}/readyz", ops.local_addr().unwrap());
    let stop_ops = CancellationToken::new();
    let health = Health::new(vec![shard.shard.ready_gate()], Vec::new());
    tokio::spawn(serve(
        ops,
        finish_router(ops_routes(health)),
        stop_ops.clone(),
        Duration::from_secs(1),
    ));
    let client = reqwest::Client::new();
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 200);

    let a = shard.join("doomed", "a").await;
    let b = shard.join("doomed", "b").await;
    assert_eq!(shard.shard.status().participants, 2);
    let a_id = a.stats().participant_id.unwrap();

    shard.shard.inject_worker_panic("doomed");
    tokio::time::timeout(Duration::from_secs(10), shard.shard.worker_failed())
        .await
        .expect("the shard learns its worker failed (and the binary exits non-zero)");

    // Its participants are gone, their slots back.
    assert_eq!(shard.shard.status().participants, 0);
    assert_eq!(shard.shard.status().rooms, 0);
    let lookup = client
        .get(format!("{}/{a_id}", shard.url("doomed")))
        .bearer_auth(shard.token("doomed", "a"))
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 404);
    let body: serde_json::Value = lookup.json().await.unwrap();
    assert_eq!(body["error"]["code"], "worker_failed", "{body}");

    // Joins for its rooms: 503 worker_unavailable, with a retry hint.
    match Participant::join(shard.config("doomed", "c")).await {
        Err(ParticipantError::Refused { status, code }) => {
            assert_eq!((status, code.as_str()), (503, "worker_unavailable"));
        }
        other => panic!("expected worker_unavailable, got {:?}", other.map(|_| ())),
    }

    // Not ready, saying why.
    let ready = client.get(&readyz).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sfu_worker_failed"),
        "{body}"
    );

    // The other worker still serves its rooms until the process exits (room names hash
    // to workers deterministically; with two workers some of these land on the healthy one).
    let mut healthy = None;
    for n in 0..16 {
        if let Ok(p) = Participant::join(shard.config(&format!("other-{n}"), "d")).await {
            healthy = Some(p);
            break;
        }
    }
    let healthy = healthy.expect("a room on the healthy worker");

    let text = metrics.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("surge_sfu_worker_failures_total") && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("surge_sfu_participants_removed_total")
                && l.contains("reason=\"worker_failed\"")
                && l.ends_with(" 2")),
        "{text}"
    );

    healthy.leave().await.unwrap();
    a.vanish();
    b.vanish();
    stop_ops.cancel();
    shard.stop().await;
}
