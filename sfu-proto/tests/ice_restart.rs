//! ICE restarts and NAT rebinding on virtual time: a participant that moves to a new address
//! keeps its session, id, subscriptions and published tracks, and the room sees nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use str0m::change::SdpOffer;
use support::{Net, Publish};
use surge_sfu_proto::core::ParticipantId;
use surge_sfu_proto::protocol::ServerMessage;
use surge_sfu_proto::{Event, RestartRefusal};

const LONG: Duration = Duration::from_secs(5);

/// Alice publishes audio + video, Bob audio; both receive each other.
fn call() -> (Net, usize, usize) {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::AudioVideo);
    let bob = net.join("r", Publish::Audio);
    net.run_until(LONG, "media flows both ways", |n| {
        n.clients[alice].received_total() > 5 && n.clients[bob].received_total() > 20
    });
    (net, alice, bob)
}

/// Whether `client` was told of anyone joining or leaving after message `from`.
fn saw_membership_change(net: &Net, client: usize, from: usize) -> bool {
    net.clients[client].messages[from..]
        .iter()
        .any(|m| matches!(m, ServerMessage::Joined { .. } | ServerMessage::Left { .. }))
}

fn membership_events(net: &Net, from: usize) -> usize {
    net.events[from..]
        .iter()
        .filter(|e| matches!(e, Event::Joined { .. } | Event::Removed { .. }))
        .count()
}

#[test]
fn a_restart_on_a_new_address_keeps_the_session_and_the_room_sees_nothing() {
    let (mut net, alice, bob) = call();
    let id = net.clients[alice].id;
    let old_addr = net.clients[alice].addr;
    let (bob_messages, events) = (net.clients[bob].messages.len(), net.events.len());
    let (alice_before, bob_before) = (
        net.clients[alice].received_total(),
        net.clients[bob].received_total(),
    );

    let moved = SocketAddr::from(([10, 9, 9, 9], 7000));
    net.restart(alice, moved).unwrap();
    let restarted_at = net.now;
    net.run_until(LONG, "media flows both ways again", |n| {
        n.clients[alice].received_total() > alice_before + 10
            && n.clients[bob].received_total() > bob_before + 40
    });
    let gap = net.now - restarted_at;
    println!("media both ways again {gap:?} (virtual) after the restart");
    assert!(gap < Duration::from_secs(2), "took {gap:?}");

    assert!(net.sb.contains("r", id, "user-0"), "same participant id");
    assert_eq!((net.rooms(), net.participants()), (1, 2));
    assert!(!saw_membership_change(&net, bob, bob_messages));
    assert_eq!(membership_events(&net, events), 0);
    assert!(
        net.clients[bob]
            .tracks()
            .is_some_and(|t| t.iter().any(|t| t.participant_id == id)),
        "bob still receives alice's tracks"
    );
    // The old address no longer reaches the session: it was forgotten with the old ufrag.
    let unknown = net.counters.dropped_unknown;
    net.sb.handle_datagram(net.now, old_addr, &[0x80; 40]);
    net.step();
    assert_eq!(net.counters.dropped_unknown, unknown + 1);

    // A second restart works the same (the new credentials are the current ones).
    let alice_before = net.clients[alice].received_total();
    net.restart(alice, SocketAddr::from(([10, 9, 9, 10], 7000)))
        .unwrap();
    net.run_until(LONG, "media again after a second restart", |n| {
        n.clients[alice].received_total() > alice_before + 10
    });
    assert!(!saw_membership_change(&net, bob, bob_messages));
}

#[test]
fn bad_restarts_are_refused_and_change_nothing() {
    let (mut net, alice, bob) = call();
    let id = net.clients[alice].id;
    let addr = net.clients[alice].addr;
    let bob_messages = net.clients[bob].messages.len();

    // Unknown participant, and someone else's (Bob names Alice's session).
    net.clients[alice].id = ParticipantId(0xdead);
    assert_eq!(net.restart(alice, addr), Err(RestartRefusal::SessionGone));
    net.clients[alice].id = id;
    net.clients[alice].user = "user-1".to_owned();
    assert_eq!(net.restart(alice, addr), Err(RestartRefusal::SessionGone));
    net.clients[alice].user = "user-0".to_owned();

    // An offer that keeps the current ICE credentials is not a restart.
    let current = net.clients[alice]
        .rtc
        .direct_api()
        .local_ice_credentials()
        .ufrag
        .clone();
    let same = net.restart_with(alice, addr, |offer| {
        let sdp = offer.to_sdp_string();
        let new = sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .unwrap()
            .to_owned();
        SdpOffer::from_sdp_string(&sdp.replace(&new, &current)).unwrap()
    });
    assert_eq!(same, Err(RestartRefusal::SameCredentials));

    // An offer that sneaks in a new m-line.
    let more = net.restart_with(alice, addr, |offer| {
        let sdp = offer.to_sdp_string();
        let at = sdp.find("m=audio").unwrap();
        let end = sdp[at + 1..].find("m=").map_or(sdp.len(), |e| at + 1 + e);
        let section = sdp[at..end].replace("a=mid:", "a=mid:x");
        SdpOffer::from_sdp_string(&format!("{sdp}{section}")).unwrap()
    });
    assert!(
        matches!(more, Err(RestartRefusal::InvalidSdp(_))),
        "{more:?}"
    );

    // Nothing changed: the same session, the same routes, media on.
    let before = net.clients[bob].received_total();
    let alice_before = net.clients[alice].received_total();
    net.run_until(LONG, "media keeps flowing", |n| {
        n.clients[bob].received_total() > before + 20
            && n.clients[alice].received_total() > alice_before + 5
    });
    assert!(net.sb.contains("r", id, "user-0"));
    assert_eq!((net.rooms(), net.participants()), (1, 2));
    assert!(!saw_membership_change(&net, bob, bob_messages));
    assert_eq!(net.counters.stun_unverified, 0);
}

#[test]
fn a_nat_rebinding_without_a_restart_keeps_going() {
    let (mut net, alice, bob) = call();
    let (bob_messages, events) = (net.clients[bob].messages.len(), net.events.len());
    let (alice_before, bob_before) = (
        net.clients[alice].received_total(),
        net.clients[bob].received_total(),
    );
    net.clients[alice].nat = Some(SocketAddr::from(([192, 0, 2, 7], 40_000)));
    let rebound_at = net.now;
    net.run_until(
        Duration::from_secs(10),
        "media both ways from the new mapping",
        |n| {
            n.clients[alice].received_total() > alice_before + 10
                && n.clients[bob].received_total() > bob_before + 40
        },
    );
    println!(
        "media both ways again {:?} (virtual) after the rebinding",
        net.now - rebound_at
    );
    assert!(!saw_membership_change(&net, bob, bob_messages));
    assert_eq!(membership_events(&net, events), 0);
}
