//! Room chat, raised hands, the welcome's participant state and connection quality, on the
//! switchboard's virtual time (see `switchboard.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Net, Publish, WALL_CLOCK_START_MS};
use surge_sfu_proto::core::ParticipantId;
use surge_sfu_proto::protocol::{
    ChatRefusal, ClientMessage, Kind, MAX_CHAT_CHARS, ParticipantSummary, QualityLevel,
    ServerMessage,
};
use surge_sfu_proto::switchboard::CHAT_BURST;

const LONG: Duration = Duration::from_secs(5);

/// A chat message as a client got it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chat {
    seq: u64,
    from: ParticipantId,
    name: String,
    text: String,
    ts_ms: u64,
}

fn chats(net: &Net, client: usize) -> Vec<Chat> {
    net.clients[client]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat {
                seq,
                participant_id,
                name,
                text,
                ts_ms,
            } => Some(Chat {
                seq: *seq,
                from: *participant_id,
                name: name.clone(),
                text: text.clone(),
                ts_ms: *ts_ms,
            }),
            _ => None,
        })
        .collect()
}

fn refusals(net: &Net, client: usize) -> Vec<(ChatRefusal, Option<u64>)> {
    net.clients[client]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ChatRefused {
                reason,
                retry_after_ms,
            } => Some((*reason, *retry_after_ms)),
            _ => None,
        })
        .collect()
}

fn welcomed(net: &Net, client: usize) -> bool {
    net.clients[client].channel.is_some()
        && net.clients[client].saw(|m| matches!(m, ServerMessage::Welcome { .. }))
}

/// `n` clients in room `r`, each with its channel open and welcomed.
fn room(n: usize, publish: Publish) -> (Net, Vec<usize>) {
    let mut net = Net::new(50, Duration::from_secs(15));
    let clients: Vec<usize> = (0..n).map(|_| net.join("r", publish)).collect();
    net.run_until(LONG, "every channel open", |net| {
        (0..n).all(|c| welcomed(net, c))
    });
    (net, clients)
}

fn chat(text: &str) -> ClientMessage {
    ClientMessage::Chat { text: text.into() }
}

/// The welcome's entry for `who` at `client`.
fn welcome_entry(net: &Net, client: usize, who: ParticipantId) -> Option<ParticipantSummary> {
    net.clients[client].messages.iter().find_map(|m| match m {
        ServerMessage::Welcome { participants, .. } => {
            participants.iter().find(|p| p.id == who).cloned()
        }
        _ => None,
    })
}

#[test]
fn chat_reaches_everyone_in_order_with_the_names_from_the_tokens() {
    let (mut net, c) = room(3, Publish::Nothing);
    let (alice, bob, carol) = (c[0], c[1], c[2]);
    let started = net.now;
    // Interleaved senders, several messages per step.
    for n in 0..4 {
        net.clients[alice].send(&chat(&format!("alice {n}")));
        net.clients[bob].send(&chat(&format!("bob {n}")));
        net.step();
    }
    // A name of the client's own choosing is not read: the token's name goes out.
    net.clients[alice].send_raw(r#"{"type":"chat","text":"it is me","name":"The Admin"}"#);
    net.run_until(LONG, "every chat at everyone", |net| {
        (0..3).all(|client| chats(net, client).len() == 9)
    });
    let seen = chats(&net, carol);
    assert_eq!(
        seen.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>(),
        "numbered from 1 in order"
    );
    // Each sender's messages in the order it sent them, under its token's name.
    for (client, who) in [(alice, "alice"), (bob, "bob")] {
        let own: Vec<&Chat> = seen
            .iter()
            .filter(|c| c.from == net.clients[client].id)
            .collect();
        assert!(own.iter().all(|c| c.name == format!("Client {client}")));
        let texts: Vec<&str> = own
            .iter()
            .map(|c| c.text.as_str())
            .filter(|t| t.starts_with(who))
            .collect();
        assert_eq!(
            texts,
            (0..4).map(|n| format!("{who} {n}")).collect::<Vec<_>>()
        );
    }
    let last = seen.last().unwrap();
    assert_eq!(
        (last.text.as_str(), last.name.as_str()),
        ("it is me", "Client 0")
    );
    // Everyone (the senders too) got the very same sequence; times are the shard's clock.
    assert_eq!(chats(&net, alice), seen);
    assert_eq!(chats(&net, bob), seen);
    let ms_at = |at: std::time::Instant| WALL_CLOCK_START_MS + (at - net.epoch).as_millis() as u64;
    for c in &seen {
        assert!(
            c.ts_ms >= ms_at(started) && c.ts_ms <= ms_at(net.now),
            "{c:?}"
        );
    }
    assert!(seen.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
}

#[test]
fn oversized_empty_over_rate_and_malformed_chat_is_relayed_to_nobody() {
    let (mut net, c) = room(2, Publish::Nothing);
    let (alice, bob) = (c[0], c[1]);
    let bob_before = net.clients[bob].messages.len();

    net.clients[alice].send(&chat(&"x".repeat(MAX_CHAT_CHARS + 1)));
    net.run_until(LONG, "the too-long refusal", |n| {
        !refusals(n, alice).is_empty()
    });
    net.clients[alice].send(&chat(" \n "));
    net.run_until(LONG, "the empty refusal", |n| refusals(n, alice).len() == 2);
    assert_eq!(
        refusals(&net, alice),
        vec![(ChatRefusal::TooLong, None), (ChatRefusal::Empty, None)]
    );

    // Malformed messages are ignored: no refusal, no relay, no sequence number used.
    for raw in [
        "{not json",
        r#"{"type":"chat"}"#,
        r#"{"type":"chat","text":42}"#,
        r#"{"type":"chat","text":["a"]}"#,
        r#"{"type":"chat","txt":"a typo"}"#,
    ] {
        net.clients[alice].send_raw(raw);
    }
    net.run_for(Duration::from_millis(500));
    assert_eq!(refusals(&net, alice).len(), 2);
    assert_eq!(
        net.clients[bob].messages.len(),
        bob_before,
        "bob heard nothing of it"
    );
    assert!(chats(&net, alice).is_empty());

    // A full-length message goes, then the burst: the ones past it are refused with a wait.
    net.clients[alice].send(&chat(&"é".repeat(MAX_CHAT_CHARS)));
    for n in 1..CHAT_BURST + 2 {
        net.clients[alice].send(&chat(&format!("burst {n}")));
    }
    net.run_until(LONG, "the burst and its refusals", |n| {
        chats(n, bob).len() == CHAT_BURST as usize && refusals(n, alice).len() == 4
    });
    net.run_for(Duration::from_millis(200));
    let relayed = chats(&net, bob);
    assert_eq!(relayed.len(), CHAT_BURST as usize, "no more than the burst");
    assert_eq!(
        relayed[0].seq, 1,
        "malformed and refused messages took no number"
    );
    assert_eq!(relayed[0].text.chars().count(), MAX_CHAT_CHARS);
    assert_eq!(
        relayed.last().unwrap().text,
        format!("burst {}", CHAT_BURST - 1)
    );
    for (reason, wait) in &refusals(&net, alice)[2..] {
        assert_eq!(*reason, ChatRefusal::RateLimited);
        assert!(wait.is_some_and(|w| w > 0 && w <= 1_000), "{wait:?}");
    }

    // A second later one more is taken, numbered next.
    net.run_for(Duration::from_millis(1_000));
    net.clients[alice].send(&chat("later"));
    net.run_until(LONG, "the later message", |n| {
        chats(n, bob).len() == CHAT_BURST as usize + 1
    });
    let later = chats(&net, bob).pop().unwrap();
    assert_eq!(
        (later.seq, later.text.as_str()),
        (u64::from(CHAT_BURST) + 1, "later")
    );
    // Bob's own rate is his: untouched by Alice's.
    net.clients[bob].send(&chat("bob here"));
    net.run_until(LONG, "bob's message", |n| {
        chats(n, alice).last().is_some_and(|c| c.text == "bob here")
    });
    assert!(refusals(&net, bob).is_empty());
}

#[test]
fn hands_and_mutes_reach_the_room_and_late_joiners_see_them_in_the_welcome() {
    let (mut net, c) = room(2, Publish::Audio);
    let (alice, bob) = (c[0], c[1]);
    let alice_id = net.clients[alice].id;
    let hands = |net: &Net, client: usize| -> Vec<(ParticipantId, bool)> {
        net.clients[client]
            .messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Hand {
                    participant_id,
                    raised,
                } => Some((*participant_id, *raised)),
                _ => None,
            })
            .collect()
    };
    net.clients[alice].send(&ClientMessage::RaiseHand);
    net.clients[alice].send(&ClientMessage::Mute {
        kind: Kind::Audio,
        muted: true,
    });
    net.run_until(LONG, "bob sees the hand", |n| !hands(n, bob).is_empty());
    // Raising a raised hand again tells nobody anything.
    net.clients[alice].send(&ClientMessage::RaiseHand);
    net.run_for(Duration::from_millis(300));
    assert_eq!(hands(&net, bob), vec![(alice_id, true)]);
    assert_eq!(hands(&net, alice), vec![(alice_id, true)], "the sender too");

    let carol = net.join("r", Publish::Nothing);
    net.run_until(LONG, "carol's welcome", |n| welcomed(n, carol));
    let entry = welcome_entry(&net, carol, alice_id).expect("alice in carol's welcome");
    assert_eq!(entry.name, "Client 0");
    assert!(
        entry.hand && entry.audio_muted && !entry.video_muted,
        "{entry:?}"
    );
    let bob_entry = welcome_entry(&net, carol, net.clients[bob].id).unwrap();
    assert!(!bob_entry.hand && !bob_entry.audio_muted);

    net.clients[alice].send(&ClientMessage::LowerHand);
    net.run_until(LONG, "carol sees the hand lowered", |n| {
        hands(n, carol) == vec![(alice_id, false)]
    });
    assert_eq!(hands(&net, bob), vec![(alice_id, true), (alice_id, false)]);
    let dave = net.join("r", Publish::Nothing);
    net.run_until(LONG, "dave's welcome", |n| welcomed(n, dave));
    assert!(!welcome_entry(&net, dave, alice_id).unwrap().hand);
}

fn quality_of(net: &Net, client: usize, who: ParticipantId) -> Vec<(QualityLevel, Option<u32>)> {
    net.clients[client]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Quality {
                participant_id,
                level,
                loss_pct,
                ..
            } if *participant_id == who => Some((*level, *loss_pct)),
            _ => None,
        })
        .collect()
}

#[test]
fn quality_levels_come_from_the_sessions_stats_and_only_on_a_change() {
    let (mut net, c) = room(2, Publish::Audio);
    let (alice, bob) = (c[0], c[1]);
    let (alice_id, bob_id) = (net.clients[alice].id, net.clients[bob].id);
    net.run_until(Duration::from_secs(10), "both levels known at both", |n| {
        [alice, bob].iter().all(|&client| {
            !quality_of(n, client, alice_id).is_empty() && !quality_of(n, client, bob_id).is_empty()
        })
    });
    assert_eq!(quality_of(&net, bob, alice_id)[0].0, QualityLevel::Good);
    assert_eq!(
        quality_of(&net, alice, alice_id)[0].0,
        QualityLevel::Good,
        "told of itself too"
    );
    // A clean link stays good, and nothing more is said.
    net.run_for(Duration::from_secs(10));
    assert_eq!(quality_of(&net, bob, alice_id).len(), 1);
    assert_eq!(quality_of(&net, alice, bob_id).len(), 1);

    // A quarter of what Alice sends is lost: her level drops, Bob hears it with the loss.
    net.clients[alice].lose_every = Some(4);
    net.run_until(Duration::from_secs(10), "alice's level drops", |n| {
        quality_of(n, bob, alice_id).len() >= 2
    });
    let (level, loss) = quality_of(&net, bob, alice_id)[1];
    println!("lossy uplink: {level:?}, loss {loss:?} %");
    assert_eq!(level, QualityLevel::Poor);
    assert!(loss.is_some_and(|l| l >= 10), "{loss:?}");
    assert_eq!(
        quality_of(&net, bob, bob_id).len(),
        1,
        "bob's link is still good"
    );

    // A late joiner learns Alice's level in its welcome.
    let carol = net.join("r", Publish::Nothing);
    net.run_until(LONG, "carol's welcome", |n| welcomed(n, carol));
    assert_eq!(
        welcome_entry(&net, carol, alice_id).unwrap().quality,
        Some(QualityLevel::Poor)
    );

    // The loss stops: after two clean windows she is good again.
    net.clients[alice].lose_every = None;
    net.run_until(Duration::from_secs(15), "alice recovers", |n| {
        quality_of(n, bob, alice_id).last().map(|q| q.0) == Some(QualityLevel::Good)
    });
}
