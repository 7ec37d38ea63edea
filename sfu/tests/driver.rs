//! Many headless participants stepped by one driver thread, against one in-process shard.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestShard, wait_for};
use surge_participant::{Driver, Participant, ParticipantStats};

const LONG: Duration = Duration::from_secs(40);

fn received(stats: &ParticipantStats) -> u64 {
    stats.tracks.iter().map(|t| t.packets).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_on_one_driver_thread_all_receive_media_and_a_leaver_disturbs_none() {
    let shard = TestShard::start().await;
    let driver = Driver::new(1).unwrap();
    let mut config = shard.config("crowd", "pub");
    config.driver = Some(driver.clone());
    let publisher = Participant::join(config).await.unwrap();
    let mut subscribers = Vec::new();
    for n in 0..12 {
        let mut config = shard.config("crowd", &format!("sub{n}")).subscriber_only();
        config.driver = Some(driver.clone());
        subscribers.push(Participant::join(config).await.unwrap());
    }
    assert_eq!(driver.threads(), 1);
    assert_eq!(driver.sessions(), 13);
    for subscriber in &subscribers {
        let got = wait_for(subscriber, LONG, |s| {
            !s.receiving("audio").is_empty() && !s.receiving("video").is_empty()
        })
        .await;
        assert!(got.connected, "{got:?}");
        assert_eq!(got.receiving("audio").len(), 1, "{got:?}");
        assert_eq!(got.receiving("video").len(), 1, "{got:?}");
    }
    // One leaves, one vanishes: the thread's other sessions go on receiving.
    subscribers.remove(0).leave().await.unwrap();
    subscribers.remove(0).vanish();
    assert_eq!(driver.sessions(), 11);
    let before: Vec<u64> = subscribers.iter().map(|s| received(&s.stats())).collect();
    for (subscriber, before) in subscribers.iter().zip(before) {
        let got = wait_for(subscriber, LONG, |s| received(s) > before + 50).await;
        assert!(received(&got) > before + 50, "{got:?}");
        assert!(got.connected, "{got:?}");
    }
    for subscriber in subscribers {
        subscriber.leave().await.unwrap();
    }
    publisher.leave().await.unwrap();
    assert_eq!(driver.sessions(), 0);
    shard.stop().await;
}
