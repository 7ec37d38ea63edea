//! Screen sharing through the switchboard on virtual time: a publisher offers its camera and
//! a second video m-line reserved for the screen; subscribers get the screen as a separate
//! track of source `screen` only while it is shared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use str0m::media::Mid;
use support::{Net, Publish};
use surge_sfu_proto::protocol::{ClientMessage, Kind, ServerMessage, TrackSource};

const LONG: Duration = Duration::from_secs(5);

/// Packets `viewer` received on the m-lines its last `tracks` message names for `source`
/// from `publisher`.
fn received_from(net: &Net, viewer: usize, publisher: usize, source: TrackSource) -> u64 {
    let from = net.clients[publisher].id;
    let c = &net.clients[viewer];
    c.tracks()
        .map(|t| {
            t.iter()
                .filter(|t| t.source == source && t.participant_id == from)
                .filter_map(|t| c.received.get(&Mid::from(t.mid.as_str())))
                .sum()
        })
        .unwrap_or(0)
}

fn screens(net: &Net, viewer: usize) -> Vec<Mid> {
    net.clients[viewer].mids_of(TrackSource::Screen)
}

#[test]
fn a_shared_screen_reaches_subscribers_as_a_second_video_track_while_shared() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", Publish::AudioVideoScreen);
    let bob = net.join("r", Publish::Nothing);
    net.run_until(LONG, "bob receives alice's camera", |n| {
        received_from(n, bob, alice, TrackSource::Camera) > 30
    });
    // Not shared yet: the screen's m-line reaches nobody (and costs nobody bandwidth).
    let tracks = net.clients[bob].tracks().unwrap().clone();
    let mut sources: Vec<(Kind, TrackSource)> = tracks.iter().map(|t| (t.kind, t.source)).collect();
    sources.sort_by_key(|(k, s)| (*k as u8, *s as u8));
    assert_eq!(
        sources,
        vec![
            (Kind::Audio, TrackSource::Audio),
            (Kind::Video, TrackSource::Camera)
        ]
    );
    let offers_before = net.clients[bob].offers_answered;

    // Messages that change nothing: the camera's mid, an unknown mid, stopping a screen
    // that is not shared.
    let camera_mid = net.clients[alice].camera_mid().unwrap().to_string();
    for mid in [camera_mid.as_str(), "zz"] {
        net.clients[alice].send(&ClientMessage::Screen {
            mid: mid.to_owned(),
            sharing: true,
        });
    }
    net.clients[alice].share_screen(false);
    net.run_for(Duration::from_secs(1));
    assert!(screens(&net, bob).is_empty());
    assert_eq!(net.clients[bob].offers_answered, offers_before);

    // Sharing: Bob gets a `screen` track of Alice's, with its own layer, and decodes both.
    net.clients[alice].share_screen(true);
    net.run_until(LONG, "bob receives alice's screen", |n| {
        received_from(n, bob, alice, TrackSource::Screen) > 30
    });
    let screen_mid = screens(&net, bob)[0];
    let screen_info = net.clients[bob]
        .tracks()
        .unwrap()
        .iter()
        .find(|t| t.mid == screen_mid.to_string())
        .cloned()
        .unwrap();
    assert_eq!(
        (screen_info.participant_id, screen_info.kind),
        (net.clients[alice].id, Kind::Video)
    );
    net.run_until(LONG, "a layer message for the screen", |n| {
        n.clients[bob].saw(
            |m| matches!(m, ServerMessage::Layer { mid, .. } if *mid == screen_mid.to_string()),
        )
    });
    let camera_before = received_from(&net, bob, alice, TrackSource::Camera);
    let screen_before = received_from(&net, bob, alice, TrackSource::Screen);
    net.run_for(Duration::from_secs(1));
    let camera_rate = received_from(&net, bob, alice, TrackSource::Camera) - camera_before;
    let screen_rate = received_from(&net, bob, alice, TrackSource::Screen) - screen_before;
    println!("per second while sharing: camera {camera_rate} packets, screen {screen_rate}");
    assert!(camera_rate > 20, "the camera keeps flowing: {camera_rate}");
    // The screen chooses first: at least the camera's layer.
    assert!(
        screen_rate >= camera_rate,
        "screen {screen_rate} vs camera {camera_rate}"
    );

    // Sharing again changes nothing; a late joiner gets the screen too.
    let offers_before = net.clients[bob].offers_answered;
    net.clients[alice].share_screen(true);
    let carol = net.join("r", Publish::Nothing);
    net.run_until(LONG, "carol receives alice's screen", |n| {
        received_from(n, carol, alice, TrackSource::Screen) > 30
    });
    assert_eq!(
        net.clients[bob].offers_answered, offers_before,
        "no renegotiation for a repeated share"
    );

    // Stopping: the screen's m-lines go by an offer, and nothing more arrives on them.
    net.clients[alice].share_screen(false);
    net.run_until(LONG, "the screen is gone for bob and carol", |n| {
        screens(n, bob).is_empty() && screens(n, carol).is_empty()
    });
    let stopped_at = net.clients[bob]
        .received
        .get(&screen_mid)
        .copied()
        .unwrap_or(0);
    let camera_before = received_from(&net, bob, alice, TrackSource::Camera);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.clients[bob]
            .received
            .get(&screen_mid)
            .copied()
            .unwrap_or(0),
        stopped_at
    );
    assert!(received_from(&net, bob, alice, TrackSource::Camera) > camera_before + 20);

    // And again: a new m-line carries it.
    net.clients[alice].share_screen(true);
    net.run_until(LONG, "bob receives alice's screen again", |n| {
        received_from(n, bob, alice, TrackSource::Screen) > 30
    });
}

#[test]
fn a_third_video_m_line_is_refused_but_camera_and_screen_are_admitted() {
    let mut net = Net::new(50, Duration::from_secs(15));
    let refusal = net.try_join_with("r", Publish::AudioVideoScreen, |change| {
        change.add_media(
            str0m::media::MediaKind::Video,
            str0m::media::Direction::SendOnly,
            None,
            None,
            None,
        );
    });
    assert!(refusal.is_err(), "three sending video m-lines");
    assert_eq!(net.participants(), 0);
    net.join("r", Publish::AudioVideoScreen);
    assert_eq!(net.participants(), 1);
}
