//! Issue 18: a Redis Cluster master dies (SIGKILL) and its replica takes over. Meanwhile
//! signups and logins keep succeeding (limits fall back to the local ones, accounts are in
//! the database), and once the replica is promoted presence changes flow again through the
//! sharded channel that lived on the dead master.
//!
//! Needs the cluster that `scripts/test` starts (scripts/lib/redis-cluster.sh): its URL in
//! SURGE_TEST_REDIS_CLUSTER_URL and its pid files in SURGE_TEST_REDIS_CLUSTER_DIR. Ignored
//! by default because it kills one of that cluster's masters; scripts/test runs it alone,
//! after the suites that share the cluster.

use std::time::Duration;

use crate::common::{Db, TestApi, TestDb, random_hex};
use crate::presence::{Events, befriend, open_stream};

/// A plain connection to one node.
async fn node(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()
}

/// The port of the master that serves `slot`, as `port`'s node sees the cluster.
async fn master_of(port: u16, slot: u16) -> Option<u16> {
    let mut conn = node(port).await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .ok()?;
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let (addr, flags) = (fields.get(1)?, fields.get(2)?);
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.iter().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        serves.then(|| addr.split(['@', ':']).nth(1)?.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills a master of the Redis Cluster that scripts/test starts"]
async fn redis_cluster_master_failover() {
    let (Ok(url), Ok(dir)) = (
        std::env::var("SURGE_TEST_REDIS_CLUSTER_URL"),
        std::env::var("SURGE_TEST_REDIS_CLUSTER_DIR"),
    ) else {
        panic!("run by scripts/test, with a cluster from scripts/lib/redis-cluster.sh");
    };
    let ports: Vec<u16> = url
        .trim_start_matches("redis+cluster://")
        .trim_end_matches('/')
        .split(',')
        .filter_map(|node| node.rsplit_once(':')?.1.parse().ok())
        .collect();
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.presence_ttl_secs = 60;
    config.heartbeats_per_account_per_min = 0;
    config.presence_coalesce_ms = 0;
    let prefix = format!("test:{}:", random_hex());
    let api = TestApi::start(&config, Some((url.clone(), prefix.clone()))).await;
    let tag = random_hex();
    let (_, alice) = api.user(&format!("alice-{tag}@example.com")).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = api.user(&bob_email).await;
    befriend(&api, &alice, &bob_email, &bob).await;
    let mut events = Events::new(open_stream(&api, &alice).await);
    assert_eq!(events.next().await["status"], "offline");

    // The master that carries bob's presence channel (and keys) is the one to kill.
    let channel = surge_signup_api::presence::changes_channel(&prefix, &bob_id);
    let mut any = node(ports[0]).await.unwrap();
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&channel)
        .query_async(&mut any)
        .await
        .unwrap();
    let victim = master_of(ports[0], slot).await.unwrap();
    let pid = std::fs::read_to_string(format!("{dir}/{victim}.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    println!("killed the master on :{victim} (slot {slot} of {channel})");

    // While the replica has not taken over: every signup and login still succeeds.
    let before = api.accounts().await;
    for i in 0..5 {
        api.user(&format!("during-{i}-{tag}@example.com")).await;
    }
    assert_eq!(api.accounts().await, before + 5, "no account lost");

    // The replica is promoted (node timeout 3 s; generous bound for a busy machine).
    let survivor = *ports.iter().find(|p| **p != victim).unwrap();
    let mut promoted = None;
    for _ in 0..300 {
        promoted = master_of(survivor, slot).await.filter(|p| *p != victim);
        if promoted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = promoted.expect("a replica took over within 30 s");
    println!("slot {slot} is served by :{promoted} now");

    // Presence resumes: bob's changes reach alice's stream again (heartbeat until the
    // listener has resubscribed on the new master; each status differs, so each is a change).
    let statuses = ["online", "away", "busy"];
    let mut seen = None;
    for i in 0..120 {
        let res = crate::presence::heartbeat(&api, &bob, statuses[i % 3]).await;
        if res.status() == 200
            && let Ok(event) = tokio::time::timeout(Duration::from_millis(500), events.next()).await
        {
            assert_eq!(event["user_id"], bob_id.as_str());
            seen = Some(event);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.is_some(),
        "presence changes flow again after the failover"
    );
    // And signups still work, now with the shared limits back.
    api.user(&format!("after-{tag}@example.com")).await;
    api.stop().await;
}
