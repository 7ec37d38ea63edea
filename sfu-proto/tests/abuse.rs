//! Attacks on the switchboard by one client, on virtual time (see `support`): each performs
//! the attack and checks the refusal, that the others in the room are unaffected, and that
//! nothing is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use str0m::media::{Direction, MediaKind};
use support::{Net, Publish};
use surge_sfu_proto::JoinRefusal;
use surge_sfu_proto::protocol::{ClientMessage, Kind, ServerMessage};

const LONG: Duration = Duration::from_secs(5);

#[test]
fn an_offer_with_extra_m_lines_is_refused_and_the_room_is_unaffected() {
    let mut net = Net::new(50, Duration::from_secs(15));
    net.join("r", Publish::Audio);
    let bob = net.join("r", Publish::Nothing);
    net.run_until(LONG, "media flows", |n| n.clients[bob].received_total() > 5);
    let heard_before = net.clients[bob].messages.len();
    // The publisher's camera plus one more video (the screen) is allowed; a third is not.
    for (audio, video) in [(1, 0), (0, 2), (5, 5)] {
        let refusal = net
            .try_join_with("r", Publish::AudioVideo, |change| {
                for _ in 0..audio {
                    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                }
                for _ in 0..video {
                    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                }
            })
            .expect_err("refused");
        match refusal {
            JoinRefusal::InvalidSdp(why) => assert!(
                why.contains("at most one audio and two video m-lines"),
                "a clear message: {why}"
            ),
            other => panic!("expected invalid SDP, got {other:?}"),
        }
    }
    // Receive-only m-lines count too: one client cannot open fifty subscriptions' worth.
    let refusal = net.try_join_with("r", Publish::Nothing, |change| {
        for _ in 0..3 {
            change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
    });
    assert!(matches!(refusal, Err(JoinRefusal::InvalidSdp(_))));
    assert_eq!((net.rooms(), net.participants()), (1, 2), "no slot taken");
    let before = net.clients[bob].received_total();
    net.run_for(Duration::from_secs(1));
    assert!(
        net.clients[bob].received_total() >= before + 40,
        "media goes on"
    );
    assert!(
        !net.clients[bob].messages[heard_before..]
            .iter()
            .any(|m| matches!(
                m,
                ServerMessage::Joined { .. } | ServerMessage::Offer { .. }
            )),
        "the others heard of no refused join"
    );
    // One audio and one video m-line plus the channel is what a browser offers: admitted.
    let carol = net.join("r", Publish::AudioVideo);
    net.run_until(LONG, "bob receives carol's video", |n| {
        n.clients[bob]
            .tracks()
            .is_some_and(|t| t.iter().any(|t| t.participant_id == n.clients[carol].id))
    });
}

/// A client whose tab stops reading its data channel for a long while (its SCTP window
/// fills, then the server's buffer), while the room is busy.
#[test]
fn a_client_that_stops_reading_still_gets_every_offer_and_subscribes_to_new_tracks() {
    let mut net = Net::new(50, Duration::from_secs(120));
    let slow = net.join("r", Publish::Nothing);
    let members: Vec<usize> = (0..8).map(|_| net.join("r", Publish::Nothing)).collect();
    net.run_until(LONG, "every channel is open", |n| {
        n.clients.iter().all(|c| c.channel.is_some())
            && n.clients[slow]
                .saw(|m| matches!(m, ServerMessage::Welcome { participants, .. } if participants.len() == 8))
    });
    let slow_id = net.clients[slow].id;
    net.clients[slow].stalled = true;

    // About 200 KB of `muted` toggles (more than str0m's 128 KB channel buffer), then
    // others join and leave while the toggles go on.
    let mut churners = Vec::new();
    let rounds = 250;
    let churn_from = 150;
    for round in 0..rounds {
        let muted = round % 2 == 0;
        for &m in &members {
            for kind in [Kind::Audio, Kind::Video] {
                net.clients[m].send(&ClientMessage::Mute { kind, muted });
            }
        }
        if round == churn_from {
            assert!(
                net.sb.queued_messages(slow_id).unwrap() > 0,
                "the channel's buffer is full: messages wait in the outbox"
            );
        }
        if round >= churn_from && round % 10 == 0 {
            churners.push(net.join("r", Publish::Nothing));
        }
        if round >= churn_from && round % 10 == 5 {
            let c = *churners.last().unwrap();
            let id = net.clients[c].id;
            assert!(net.sb.handle_leave(net.now, "r", id, &format!("user-{c}")));
            net.clients[c].gone = true;
        }
        net.step();
    }
    // A new publisher: the stalled client needs a renegotiation offer to receive it.
    let late = net.join("r", Publish::Audio);
    let late_id = net.clients[late].id;
    net.run_for(Duration::from_secs(3));
    let queued = net.sb.queued_messages(slow_id).unwrap();
    assert!(
        (2..=40).contains(&queued),
        "the offer waits in the outbox, which stays small: {queued}"
    );
    assert_eq!(net.clients[slow].offers_answered, 0, "still stalled");

    net.clients[slow].stalled = false;
    net.run_until(Duration::from_secs(90), "slow receives late's audio", |n| {
        let c = &n.clients[slow];
        c.tracks()
            .is_some_and(|t| t.iter().any(|t| t.participant_id == late_id))
            && c.received_kind(Kind::Audio) > 10
    });
    let client = &net.clients[slow];
    assert!(client.offers_answered >= 1);
    assert!(
        client.saw(
            |m| matches!(m, ServerMessage::Joined { participant } if participant.id == late_id)
        )
    );
    // Joined and left while its messages waited: neither is sent.
    assert_eq!(churners.len(), 10);
    for &c in &churners {
        let id = net.clients[c].id;
        assert!(!client.saw(|m| match m {
            ServerMessage::Joined { participant } => participant.id == id,
            ServerMessage::Left { participant_id } => *participant_id == id,
            _ => false,
        }));
    }
    // The latest mute state of everyone arrived (the last round unmuted: 249 is odd).
    for &m in &members {
        let id = net.clients[m].id;
        let last = client.messages.iter().rev().find_map(|msg| match msg {
            ServerMessage::Muted {
                participant_id,
                kind: Kind::Audio,
                muted,
            } if *participant_id == id => Some(*muted),
            _ => None,
        });
        assert_eq!(last, Some(false), "member {m}");
    }
    assert_eq!(net.sb.queued_messages(slow_id), Some(0));
}

/// CRC-32 (IEEE), for a STUN FINGERPRINT that is right, so that only the integrity is not.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn stun_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A binding request as a client sends it, with the right USERNAME (both ufrags cross the
/// network in clear) but a MESSAGE-INTEGRITY made without the ICE password.
fn forged_binding_request(username: &str, seed: u8) -> Vec<u8> {
    let mut attrs = Vec::new();
    stun_attr(&mut attrs, 0x0006, username.as_bytes());
    stun_attr(&mut attrs, 0x0024, &0x6E00_1EFFu32.to_be_bytes());
    stun_attr(&mut attrs, 0x802A, &[seed; 8]);
    stun_attr(&mut attrs, 0x0025, &[]);
    stun_attr(&mut attrs, 0x0008, &[seed.wrapping_mul(31); 20]);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&((attrs.len() + 8) as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[seed; 12]);
    msg.extend_from_slice(&attrs);
    let fingerprint = crc32(&msg) ^ 0x5354_554E;
    stun_attr(&mut msg, 0x8028, &fingerprint.to_be_bytes());
    msg
}

#[test]
fn a_forged_stun_request_from_a_new_address_binds_nothing_and_redirects_no_media() {
    let mut net = Net::new(50, Duration::from_secs(15));
    net.join("r", Publish::Audio);
    let bob = net.join("r", Publish::Nothing);
    net.run_until(LONG, "media flows", |n| n.clients[bob].received_total() > 5);
    let client_ufrag = net.clients[bob]
        .rtc
        .direct_api()
        .local_ice_credentials()
        .ufrag
        .clone();
    let username = format!("{}:{client_ufrag}", net.clients[bob].server_ufrag);
    let unverified_before = net.counters.stun_unverified;
    let unknown_before = net.counters.dropped_unknown;
    let now = net.now;
    // More forgers than a participant has address slots (8).
    let forgers = 20u8;
    for n in 1..=forgers {
        let forger = SocketAddr::from(([198, 51, 100, n], 7000));
        net.sb
            .handle_datagram(now, forger, &forged_binding_request(&username, n));
        // Media-looking traffic from the same address: not bound, so not for bob's session.
        let mut rtp = vec![0x80, 0x6F, 0, 1, 0, 0, 0, 1, 0xAB, 0xCD, 0xEF, 0x01];
        rtp.extend_from_slice(&[0x5A; 80]);
        net.sb.handle_datagram(now, forger, &rtp);
    }
    let before = net.clients[bob].received_total();
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.counters.stun_unverified - unverified_before,
        u64::from(forgers),
        "each forged request is counted"
    );
    assert_eq!(
        net.counters.dropped_unknown - unknown_before,
        u64::from(forgers),
        "the forgers' addresses were never bound"
    );
    assert!(
        net.stray_transmits.is_empty(),
        "nothing went to a forger: {:?}",
        net.stray_transmits
    );
    assert!(
        net.clients[bob].received_total() >= before + 40,
        "bob's media still reaches bob"
    );
    assert_eq!(net.participants(), 2);
}

#[test]
fn room_messages_name_participants_and_display_names_never_account_ids() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::Audio);
    let bob = net.join("r", Publish::Nothing);
    net.run_until(LONG, "bob receives alice", |n| {
        n.clients[bob].received_total() > 5
    });
    let carol = net.join("r", Publish::Nothing);
    net.run_until(LONG, "carol is welcomed, the others hear she joined", |n| {
        n.clients[carol].channel.is_some()
            && n.clients[alice].saw(|m| matches!(m, ServerMessage::Joined { .. }))
            && n.clients[bob].saw(|m| matches!(m, ServerMessage::Joined { .. }))
    });
    net.clients[alice].send(&ClientMessage::Mute {
        kind: Kind::Audio,
        muted: true,
    });
    let carol_id = net.clients[carol].id;
    assert!(net.sb.handle_leave(net.now, "r", carol_id, "user-2"));
    net.clients[carol].gone = true;
    net.run_until(LONG, "bob hears carol left and alice muted", |n| {
        n.clients[bob].saw(|m| matches!(m, ServerMessage::Left { .. }))
            && n.clients[bob].saw(|m| matches!(m, ServerMessage::Muted { .. }))
    });
    let mut summaries = 0;
    for client in &net.clients {
        for raw in &client.raw {
            for n in 0..net.clients.len() {
                assert!(!raw.contains(&format!("user-{n}")), "an account id: {raw}");
            }
            let value: serde_json::Value = serde_json::from_str(raw).unwrap();
            let people = match value["type"].as_str() {
                Some("welcome") => value["participants"].as_array().unwrap().clone(),
                Some("joined") => vec![value["participant"].clone()],
                _ => continue,
            };
            for person in people {
                let keys: Vec<&String> = person.as_object().unwrap().keys().collect();
                assert_eq!(keys, ["id", "name"], "{raw}");
                assert!(person["name"].as_str().unwrap().starts_with("Client "));
                summaries += 1;
            }
        }
    }
    assert!(
        summaries >= 4,
        "welcome and joined were checked: {summaries}"
    );
}
