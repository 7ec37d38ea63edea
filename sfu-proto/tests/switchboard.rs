//! The switchboard on virtual time: real str0m client sessions in memory (ICE, DTLS, SCTP,
//! SRTP), no sockets, no wall clock. Each test runs a few virtual seconds in milliseconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{Net, Publish};
use surge_sfu_proto::protocol::{ClientMessage, EndReason, Kind, LayerName, ServerMessage};
use surge_sfu_proto::{Event, JoinRefusal, RemoveReason};

const LONG: Duration = Duration::from_secs(5);

#[test]
fn joins_renegotiate_and_audio_reaches_the_others_only() {
    let wall = std::time::Instant::now();
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::Audio);
    let bob = net.join("r", Publish::Nothing);
    net.run_until(LONG, "bob receives alice's audio", |n| {
        n.clients[bob].received_total() > 10
    });
    let (a, b) = (&net.clients[alice], &net.clients[bob]);
    // Welcome first, naming the other participant (or a `joined` for it).
    match b.messages.first() {
        Some(ServerMessage::Welcome {
            participant_id,
            participants,
        }) => {
            assert_eq!(*participant_id, b.id);
            assert!(participants.iter().any(|p| p.id == a.id) || b.saw(|m| matches!(m, ServerMessage::Joined { participant } if participant.id == a.id)));
        }
        other => panic!("first message {other:?}"),
    }
    let tracks = b.tracks().expect("a tracks message");
    assert_eq!(tracks.len(), 1);
    assert_eq!(
        (tracks[0].participant_id, tracks[0].kind),
        (a.id, Kind::Audio)
    );
    assert!(b.offers_answered >= 1);
    // Alice publishes only: nothing comes back to her, and she gets no offer.
    assert_eq!(a.received_total(), 0);
    assert_eq!(a.offers_answered, 0);
    assert_eq!((net.rooms(), net.participants()), (1, 2));

    // A second publisher: Bob gets a renegotiation with both tracks, Alice one with Carol's.
    let carol = net.join("r", Publish::Audio);
    net.run_until(LONG, "bob and alice receive carol", |n| {
        n.clients[bob].tracks().is_some_and(|t| t.len() == 2)
            && n.clients[alice].received_total() > 10
    });
    assert_eq!(
        net.clients[alice].tracks().unwrap()[0].participant_id,
        net.clients[carol].id
    );
    assert!(net.counters.packets_out > net.counters.packets_in);
    assert!(
        wall.elapsed() < Duration::from_secs(60),
        "virtual time, not wall time"
    );
}

#[test]
fn leaving_tells_the_others_and_closes_the_empty_room() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::Audio);
    let bob = net.join("r", Publish::Nothing);
    net.run_until(LONG, "media flows", |n| n.clients[bob].received_total() > 5);
    let (alice_id, bob_id) = (net.clients[alice].id, net.clients[bob].id);
    assert!(
        !net.sb.handle_leave(net.now, "r", alice_id, "user-1"),
        "someone else's participant"
    );
    assert!(
        !net.sb.handle_leave(net.now, "other", alice_id, "user-0"),
        "wrong room"
    );
    assert!(net.sb.handle_leave(net.now, "r", alice_id, "user-0"));
    net.clients[alice].gone = true;
    net.run_until(LONG, "bob learns alice left and her track is gone", |n| {
        n.clients[bob].saw(
            |m| matches!(m, ServerMessage::Left { participant_id } if *participant_id == alice_id),
        ) && n.clients[bob].tracks().is_some_and(|t| t.is_empty())
    });
    assert_eq!((net.rooms(), net.participants()), (1, 1));
    assert!(net.sb.handle_leave(net.now, "r", bob_id, "user-1"));
    net.step();
    assert_eq!((net.rooms(), net.participants()), (0, 0));
    assert!(net.events.contains(&Event::RoomClosed("r".into())));
    assert!(net.events.iter().any(|e| matches!(e, Event::Removed { participant, reason: RemoveReason::Left, .. } if *participant == bob_id)));
}

#[test]
fn a_vanished_participant_times_out() {
    let mut net = Net::new(50, Duration::from_secs(2));
    let stays = net.join("r", Publish::Audio);
    let vanishes = net.join("r", Publish::Audio);
    net.run_until(LONG, "media flows both ways", |n| {
        n.clients[stays].received_total() > 5 && n.clients[vanishes].received_total() > 5
    });
    let gone_id = net.clients[vanishes].id;
    net.clients[vanishes].gone = true;
    let vanished_at = net.now;
    net.run_until(Duration::from_secs(10), "the other learns it left", |n| {
        n.clients[stays].saw(
            |m| matches!(m, ServerMessage::Left { participant_id } if *participant_id == gone_id),
        )
    });
    // Removed by the room's timeout or by ICE, whichever notices first; not before 2 s.
    assert!(
        net.now - vanished_at >= Duration::from_secs(2),
        "{:?}",
        net.now - vanished_at
    );
    assert!(net.events.iter().any(|e| matches!(e, Event::Removed { participant, reason: RemoveReason::Timeout | RemoveReason::IceDisconnected, .. } if *participant == gone_id)));
    assert_eq!(net.participants(), 1);
}

/// A small deterministic generator for garbage.
fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (*seed >> 33) as u8
        })
        .collect()
}

#[test]
fn garbage_datagrams_are_counted_and_change_nothing() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::Audio);
    let bob = net.join("r", Publish::Nothing);
    net.run_until(LONG, "media flows", |n| n.clients[bob].received_total() > 5);
    let stranger = SocketAddr::from(([192, 0, 2, 9], 4444));
    let known = net.clients[alice].addr;
    let mut seed = 7;
    let now = net.now;
    for n in 0..500 {
        let mut data = garbage(&mut seed, 1 + n % 300);
        net.sb.handle_datagram(now, stranger, &data);
        // Looks like RTP/RTCP/DTLS/STUN to str0m's demultiplexer, from a known address.
        data[0] = [0x80, 0x16, 0x00, 0x01][n % 4];
        net.sb.handle_datagram(now, known, &data);
    }
    // A STUN binding request naming a ufrag this switchboard never handed out.
    let mut stun = vec![0x00, 0x01, 0x00, 0x0C, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
    stun.extend_from_slice(b"nobody:x\0");
    stun.truncate(32);
    net.sb.handle_datagram(now, stranger, &stun);
    let before = net.clients[bob].received_total();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.counters.dropped_unknown, 500);
    assert_eq!(net.counters.dropped_stun_unknown, 1);
    assert!(net.counters.dropped_garbage > 0);
    assert_eq!(net.participants(), 2);
    assert!(
        net.clients[bob].received_total() >= before + 40,
        "media goes on"
    );
}

#[test]
fn admission_room_and_shard_limits_and_the_drain_rule() {
    let mut net = Net::new(2, Duration::from_secs(15));
    net.join("a", Publish::Audio);
    net.join("a", Publish::Nothing);
    assert_eq!(
        net.try_join("a", Publish::Nothing).err(),
        Some(JoinRefusal::RoomFull)
    );
    // Draining: no new rooms, but the hosted room still takes joins (it has room after a
    // leave).
    net.load.draining.store(true, Ordering::Relaxed);
    assert_eq!(
        net.try_join("b", Publish::Audio).err(),
        Some(JoinRefusal::Draining)
    );
    let leaver = net.clients[1].id;
    assert!(net.sb.handle_leave(net.now, "a", leaver, "user-1"));
    net.clients[1].gone = true;
    assert!(
        net.try_join("a", Publish::Nothing).is_ok(),
        "a draining shard admits joins to its rooms"
    );
    net.load.draining.store(false, Ordering::Relaxed);
    // The shard-wide participant limit.
    net.load.max_participants.store(2, Ordering::Relaxed);
    assert_eq!(
        net.try_join("c", Publish::Audio).err(),
        Some(JoinRefusal::ShardFull)
    );
    assert_eq!((net.rooms(), net.participants()), (1, 2));
}

/// The layer the last `layer` message named for `mid`.
fn layer_on(net: &Net, client: usize, mid: &str) -> Option<LayerName> {
    net.clients[client]
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMessage::Layer { mid: m, layer } if m == mid => Some(*layer),
            _ => None,
        })
}

#[test]
fn simulcast_layers_follow_the_subscribers_max_height() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let publisher = net.join("r", Publish::AudioVideo);
    let viewer = net.join("r", Publish::Nothing);
    net.run_until(LONG, "the viewer receives video", |n| {
        n.clients[viewer].received_kind(Kind::Video) > 30
    });
    let video_mid = net.clients[viewer]
        .tracks()
        .unwrap()
        .iter()
        .find(|t| t.kind == Kind::Video && t.participant_id == net.clients[publisher].id)
        .map(|t| t.mid.clone())
        .unwrap();
    let first = layer_on(&net, viewer, &video_mid).expect("a layer message");
    // Down to the smallest layer, then up to the middle one (the initial 1 Mbps estimate
    // does not fit the largest).
    for (height, want) in [(180, LayerName::Q), (360, LayerName::H)] {
        net.clients[viewer].send(&ClientMessage::MaxHeight {
            mid: video_mid.clone(),
            height,
        });
        net.run_until(LONG, "the layer follows max_height", |n| {
            layer_on(n, viewer, &video_mid) == Some(want)
        });
        let before = net.clients[viewer].received_kind(Kind::Video);
        net.run_for(Duration::from_millis(500));
        assert!(
            net.clients[viewer].received_kind(Kind::Video) > before + 10,
            "video flows on {want:?}"
        );
    }
    assert_ne!(
        first,
        LayerName::F,
        "the start layer fits the initial estimate"
    );
    assert!(net.counters.layer_switches >= 2, "{:?}", net.counters);
    assert!(
        net.counters.keyframe_requests >= 1,
        "switches wait for keyframes"
    );
}

/// One session per user per room: the same account joining again (another tab, a second
/// device, a replayed join) ends its older session instead of adding one.
#[test]
fn a_second_join_by_the_same_user_replaces_the_first() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::Audio);
    let bob = net.join("r", Publish::Audio);
    net.run_until(LONG, "media flows both ways", |n| {
        n.clients[alice].received_total() > 5 && n.clients[bob].received_total() > 5
    });
    let old_id = net.clients[alice].id;
    let user = "user-0";

    let again = net.try_join_as("r", Publish::Audio, user).unwrap();
    let new_id = net.clients[again].id;
    assert_eq!(
        (net.rooms(), net.participants()),
        (1, 2),
        "the new session took the old one's slot"
    );
    net.run_until(
        LONG,
        "the old session is told, bob sees it leave and the new one join and hears it",
        |n| {
            n.clients[alice].saw(|m| {
                matches!(
                    m,
                    ServerMessage::Ended {
                        reason: EndReason::Replaced
                    }
                )
            }) && n.clients[bob].saw(
                |m| matches!(m, ServerMessage::Left { participant_id } if *participant_id == old_id),
            ) && n.clients[bob].saw(
                |m| matches!(m, ServerMessage::Joined { participant } if participant.id == new_id),
            ) && n.clients[bob]
                .tracks()
                .is_some_and(|t| t.len() == 1 && t[0].participant_id == new_id)
                && n.clients[again].received_total() > 5
        },
    );
    net.clients[alice].gone = true;
    let before = net.clients[bob].received_total();
    net.run_until(LONG, "bob keeps receiving", |n| {
        n.clients[bob].received_total() > before + 5
    });
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::Removed { participant, reason: RemoveReason::Replaced, .. } if *participant == old_id
    )));
    assert!(
        !net.events.iter().any(|e| matches!(e, Event::RoomClosed(_))),
        "the room stayed open"
    );
    // The old session is gone for good; the new one is the user's only one.
    assert!(!net.sb.contains("r", old_id, user));
    assert!(!net.sb.handle_leave(net.now, "r", old_id, user));
    assert!(net.sb.contains("r", new_id, user));
    assert_eq!((net.rooms(), net.participants()), (1, 2));
    assert!(
        !net.clients[again].saw(|m| matches!(m, ServerMessage::Ended { .. })),
        "the newest session is not ended"
    );
}

/// A replacement needs no free place: it fits a full room and a full shard, while another
/// user is still refused.
#[test]
fn a_replacement_fits_a_full_room_and_a_full_shard() {
    let mut net = Net::new(2, Duration::from_secs(15));
    net.join("r", Publish::Audio);
    net.join("r", Publish::Nothing);
    // Connected, so that they can be told (a session replaced before its data channel
    // opened just ends).
    net.run_until(LONG, "both channels open", |n| {
        n.clients.iter().all(|c| c.channel.is_some())
    });
    assert_eq!(
        net.try_join("r", Publish::Audio),
        Err(JoinRefusal::RoomFull)
    );
    net.try_join_as("r", Publish::Audio, "user-1").unwrap();
    assert_eq!((net.rooms(), net.participants()), (1, 2));

    net.load.max_participants.store(2, Ordering::Relaxed);
    assert_eq!(
        net.try_join("s", Publish::Audio),
        Err(JoinRefusal::ShardFull)
    );
    net.try_join_as("r", Publish::Audio, "user-0").unwrap();
    assert_eq!((net.rooms(), net.participants()), (1, 2));
    net.run_until(LONG, "the replaced sessions are told", |n| {
        n.clients
            .iter()
            .take(2)
            .all(|c| c.saw(|m| matches!(m, ServerMessage::Ended { .. })))
    });
}

/// The same user in another room is another session: nothing is replaced.
#[test]
fn the_same_user_in_two_rooms_keeps_both() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let first = net.join("r", Publish::Audio);
    let second = net.try_join_as("other", Publish::Audio, "user-0").unwrap();
    net.run_for(Duration::from_secs(1));
    assert_eq!((net.rooms(), net.participants()), (2, 2));
    assert!(net.sb.contains("r", net.clients[first].id, "user-0"));
    assert!(net.sb.contains("other", net.clients[second].id, "user-0"));
}

#[test]
fn receive_only_media_lines_of_the_join_carry_the_room_without_a_renegotiation() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::AudioVideo);
    net.run_for(Duration::from_millis(300));
    // Bob offers one receive-only pair up front: alice's audio and video go there.
    let bob = net.try_join_receiving("r", Publish::Nothing, 1).unwrap();
    net.run_until(LONG, "bob receives alice's audio and video", |n| {
        let b = &n.clients[bob];
        b.received_kind(Kind::Audio) > 5 && b.received_kind(Kind::Video) > 5
    });
    let b = &net.clients[bob];
    assert_eq!(b.offers_answered, 0, "no renegotiation was needed");
    let tracks = b.tracks().expect("a tracks message");
    let mut kinds: Vec<_> = tracks.iter().map(|t| (t.participant_id, t.kind)).collect();
    kinds.sort_by_key(|(_, k)| *k == Kind::Video);
    let alice_id = net.clients[alice].id;
    assert_eq!(
        kinds,
        vec![(alice_id, Kind::Audio), (alice_id, Kind::Video)]
    );

    // A second publisher finds no spare m-line left: Bob gets a renegotiation for Carol.
    let carol = net.join("r", Publish::Audio);
    net.run_until(LONG, "bob receives carol", |n| {
        n.clients[bob].tracks().is_some_and(|t| t.len() == 3)
    });
    assert_eq!(net.clients[bob].offers_answered, 1);
    assert!(
        net.clients[bob]
            .tracks()
            .unwrap()
            .iter()
            .any(|t| t.participant_id == net.clients[carol].id)
    );
}

#[test]
fn the_clients_first_check_nominates_so_dtls_need_not_wait_for_its_nomination() {
    // A browser nominates an ICE-lite server only on a later check, after its first one was
    // answered: until then str0m has no address to answer the DTLS handshake on. Here the
    // client's nominations never arrive at all, so the session connects only if the first
    // check, from an address the shard has not seen, was taken as the nomination.
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::Audio);
    net.clients[alice].nomination_lost = true;
    net.run_until(
        Duration::from_secs(1),
        "the welcome arrives without the client's nomination",
        |n| n.clients[alice].saw(|m| matches!(m, ServerMessage::Welcome { .. })),
    );
}

#[test]
fn a_joiner_gets_the_publishers_last_keyframe_at_once_then_the_live_one() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::AudioVideo);
    let viewer = net.join("r", Publish::Nothing);
    net.run_until(LONG, "the viewer receives video", |n| {
        n.clients[viewer].received_kind(Kind::Video) > 30
    });
    // The viewer may have had alice's first keyframe replayed already.
    let replays_before = net.counters.keyframes_replayed;
    // Alice's encoder is slow to answer keyframe requests: the keyframe bob sees first can
    // only be the cached one.
    net.clients[alice].ignore_keyframe_requests = true;
    let bob = net.try_join_receiving("r", Publish::Nothing, 1).unwrap();
    net.run_until(LONG, "bob receives a video packet", |n| {
        n.clients[bob].received_kind(Kind::Video) > 0
    });
    let video_mid = net.clients[bob]
        .mids_of(surge_sfu_proto::protocol::TrackSource::Camera)
        .pop()
        .expect("bob has alice's camera");
    // The whole frame came in one go, and nothing after it while alice does not answer: her
    // deltas reference frames bob never had.
    net.run_for(Duration::from_millis(500));
    let replayed = net.clients[bob].rtp[&video_mid].clone();
    assert!(replayed[0].keyframe, "{replayed:?}");
    assert!(replayed.last().unwrap().marker, "{replayed:?}");
    assert!(replayed.len() > 1, "a keyframe of several packets");
    for w in replayed.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].ts, w[0].ts);
    }
    assert_eq!(net.counters.keyframes_replayed, replays_before + 1);

    // Alice answers: bob's stream goes on with her fresh keyframe, numbered on.
    net.clients[alice].ignore_keyframe_requests = false;
    net.run_until(LONG, "bob receives the live stream", |n| {
        n.clients[bob].rtp[&video_mid].len() > replayed.len() + 30
    });
    let all = &net.clients[bob].rtp[&video_mid];
    let live = all[replayed.len()];
    assert!(live.keyframe, "the live stream starts on a keyframe");
    assert_eq!(live.seq, replayed.last().unwrap().seq + 1);
    assert!(
        live.ts.wrapping_sub(replayed[0].ts) < 90_000 * 2,
        "a sane timestamp step"
    );
    let (a, b) = (replayed[0].picture_id.unwrap(), live.picture_id.unwrap());
    assert_eq!(b, (a + 1) & 0x7FFF, "picture ids continue");
    for w in all.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "no gap");
    }
}
