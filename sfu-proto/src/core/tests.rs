//! Scenario tests of the room on virtual time: a simulated simulcast publisher (30 fps, three
//! layers, keyframes on request), subscribers whose slots are negotiated at once, and checks
//! on what each subscriber receives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::rewrite::FIRST_OUT_SEQ;
use super::*;

const FRAME: Duration = Duration::from_micros(33_333);

/// Packets per frame and payload size per layer: about 130 kbps, 500 kbps and 1.4 Mbps on
/// the wire, below the configured defaults' neighbours so choices are easy to predict.
const LAYER_SHAPE: [(u32, usize); 3] = [(1, 500), (2, 1000), (5, 1100)];

fn pid(n: u64) -> ParticipantId {
    ParticipantId(n)
}

fn info(publish: bool, subscribe: bool) -> ParticipantInfo {
    ParticipantInfo {
        user: "u".into(),
        name: "n".into(),
        publish,
        subscribe,
    }
}

fn simulcast(mid: &str) -> PublishedTrack {
    PublishedTrack {
        mid: Mid::from(mid),
        kind: MediaKind::Video,
        source: TrackSource::Camera,
        rids: vec![Rid::from("q"), Rid::from("h"), Rid::from("f")],
    }
}

fn audio(mid: &str) -> PublishedTrack {
    PublishedTrack {
        mid: Mid::from(mid),
        kind: MediaKind::Audio,
        source: TrackSource::Audio,
        rids: Vec::new(),
    }
}

/// One simulated incoming stream (one layer of one track).
#[derive(Debug, Clone)]
struct SimStream {
    seq: u64,
    ts: u32,
    picture_id: u16,
    tl0: u8,
    keyframe_due: bool,
}

impl SimStream {
    fn new(seed: u64) -> Self {
        Self {
            seq: 10_000 * seed + 60_000,
            ts: (seed as u32).wrapping_mul(1_000_003),
            picture_id: (seed as u16 * 7_919) % 32_768,
            tl0: (seed as u8).wrapping_mul(31),
            keyframe_due: false,
        }
    }
}

/// What one subscriber received on one out mid.
#[derive(Debug, Default, Clone)]
struct Received {
    packets: Vec<Forward>,
}

struct Sim {
    room: Room,
    now: Instant,
    streams: BTreeMap<(ParticipantId, Mid, Option<Layer>), SimStream>,
    /// Published tracks: (publisher, mid, kind, simulcast).
    tracks: Vec<(ParticipantId, Mid, MediaKind, bool)>,
    received: BTreeMap<(ParticipantId, Mid), Received>,
    /// Which layer produced each forward, per (subscriber, out mid).
    sources: BTreeMap<(ParticipantId, Mid), Vec<Layer>>,
    events: Vec<RoomEvent>,
    keyframe_requests: Vec<(ParticipantId, Mid, Option<Layer>)>,
    dropped_slots: Vec<(ParticipantId, TrackId, Option<Mid>)>,
    timed_out: Vec<ParticipantId>,
    next_out_mid: u32,
    auto_ready: bool,
    /// Whether publishers honour keyframe requests.
    answer_keyframes: bool,
    /// Audio level each publisher sends (127 = silence).
    levels: BTreeMap<ParticipantId, u8>,
    pending_slots: Vec<(ParticipantId, TrackId)>,
    /// Cached keyframes replayed: (subscriber, out mid, packets).
    replays: Vec<(ParticipantId, Mid, Vec<ReplayedPacket>)>,
}

impl Sim {
    fn new(config: RoomConfig) -> Self {
        Self {
            room: Room::new(config),
            now: Instant::now(),
            streams: BTreeMap::new(),
            tracks: Vec::new(),
            received: BTreeMap::new(),
            sources: BTreeMap::new(),
            events: Vec::new(),
            keyframe_requests: Vec::new(),
            dropped_slots: Vec::new(),
            timed_out: Vec::new(),
            next_out_mid: 0,
            auto_ready: true,
            answer_keyframes: true,
            levels: BTreeMap::new(),
            pending_slots: Vec::new(),
            replays: Vec::new(),
        }
    }

    fn join(&mut self, p: ParticipantId, publish: bool, subscribe: bool) {
        self.room
            .join(p, info(publish, subscribe), self.now)
            .unwrap();
        self.drain();
    }

    fn publish(&mut self, p: ParticipantId, track: PublishedTrack) -> TrackId {
        let mid = track.mid;
        let kind = track.kind;
        let is_simulcast = !track.rids.is_empty();
        let id = self.room.publish_track(p, track, self.now).unwrap();
        let seed = self.streams.len() as u64 + 1;
        if is_simulcast {
            for (i, layer) in Layer::ALL.into_iter().enumerate() {
                self.streams
                    .insert((p, mid, Some(layer)), SimStream::new(seed + i as u64));
            }
        } else {
            self.streams.insert((p, mid, None), SimStream::new(seed));
        }
        self.tracks.push((p, mid, kind, is_simulcast));
        self.drain();
        id
    }

    /// Drains the room's outputs, negotiating slots at once when `auto_ready`.
    fn drain(&mut self) {
        loop {
            while let Some(output) = self.room.poll_output() {
                self.record(output);
            }
            if !self.auto_ready || self.pending_slots.is_empty() {
                break;
            }
            self.ready_pending();
        }
    }

    fn record(&mut self, output: Output) {
        match output {
            Output::NeedSlot {
                subscriber, track, ..
            } => self.pending_slots.push((subscriber, track)),
            Output::DropSlot {
                subscriber,
                track,
                out_mid,
            } => self.dropped_slots.push((subscriber, track, out_mid)),
            Output::RequestKeyframe {
                publisher,
                mid,
                layer,
                ..
            } => {
                self.keyframe_requests.push((publisher, mid, layer));
                if self.answer_keyframes
                    && let Some(s) = self.streams.get_mut(&(publisher, mid, layer))
                {
                    s.keyframe_due = true;
                }
            }
            Output::ReplayKeyframe { packets, .. } => {
                let Some(first) = packets.first() else {
                    return;
                };
                let (subscriber, out_mid) = (first.forward.subscriber, first.forward.out_mid);
                let received = self.received.entry((subscriber, out_mid)).or_default();
                received.packets.extend(packets.iter().map(|p| p.forward));
                self.replays.push((subscriber, out_mid, packets));
            }
            Output::Event(e) => self.events.push(e),
            Output::ParticipantTimedOut(p) => self.timed_out.push(p),
        }
    }

    /// Negotiates every pending slot.
    fn ready_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending_slots);
        for (subscriber, track) in pending {
            self.next_out_mid += 1;
            let out_mid = Mid::from(format!("o{}", self.next_out_mid).as_str());
            if self
                .room
                .slot_ready(subscriber, track, out_mid, self.now)
                .is_ok()
            {
                self.received.entry((subscriber, out_mid)).or_default();
            }
        }
    }

    /// The out mid `subscriber` receives `track` on.
    fn out_mid(&self, subscriber: ParticipantId, track: TrackId) -> Mid {
        self.received
            .keys()
            .filter(|(s, _)| *s == subscriber)
            .map(|(_, m)| *m)
            .find(|m| self.room.slot_track(subscriber, *m) == Some(track))
            .unwrap()
    }

    /// Sends one packet of a stream.
    // A test helper mirroring the RTP fields one by one reads better than a builder here.
    #[allow(clippy::too_many_arguments)]
    fn send_packet(
        &mut self,
        p: ParticipantId,
        mid: Mid,
        layer: Option<Layer>,
        keyframe: bool,
        marker: bool,
        payload_len: usize,
        frame_start: bool,
    ) -> usize {
        let s = self.streams.get_mut(&(p, mid, layer)).unwrap();
        let is_audio = layer.is_none()
            && self
                .tracks
                .iter()
                .any(|t| t.0 == p && t.1 == mid && t.2 == MediaKind::Audio);
        if frame_start && !is_audio {
            s.picture_id = (s.picture_id + 1) % 32_768;
            if keyframe {
                s.tl0 = s.tl0.wrapping_add(1);
            }
        }
        let meta = RtpMeta {
            seq: s.seq,
            ts: s.ts,
            marker,
            keyframe,
            audio_level: if is_audio {
                Some(*self.levels.get(&p).unwrap_or(&127))
            } else {
                None
            },
            vp8: (!is_audio).then_some(Vp8Meta {
                picture_id: Some(s.picture_id),
                tl0_pic_idx: Some(s.tl0),
            }),
            payload_len,
            payload_type: 96,
        };
        // The payload names its packet, so a replay can be checked against what was sent.
        let mut payload = vec![0; payload_len.max(8)];
        payload[..8].copy_from_slice(&s.seq.to_be_bytes());
        let payload: Arc<[u8]> = payload.into();
        s.seq += 1;
        let mut out = Vec::new();
        let n = self
            .room
            .handle_rtp(p, mid, layer, &meta, &payload, self.now, &mut |f| {
                out.push(f)
            });
        for f in out {
            self.received
                .entry((f.subscriber, f.out_mid))
                .or_default()
                .packets
                .push(f);
            if let Some(l) = layer {
                self.sources
                    .entry((f.subscriber, f.out_mid))
                    .or_default()
                    .push(l);
            }
        }
        n
    }

    /// One frame of every stream of every track, then the clock advances one frame.
    fn frame(&mut self) {
        let tracks = self.tracks.clone();
        for (p, mid, kind, is_simulcast) in tracks {
            let layers: Vec<Option<Layer>> = if is_simulcast {
                Layer::ALL.into_iter().map(Some).collect()
            } else {
                vec![None]
            };
            for layer in layers {
                let Some(stream) = self.streams.get_mut(&(p, mid, layer)) else {
                    continue;
                };
                let keyframe = std::mem::take(&mut stream.keyframe_due);
                let (packets, size) = match (kind, layer) {
                    (MediaKind::Audio, _) => (1, 80),
                    (_, Some(l)) => LAYER_SHAPE[l.index()],
                    (_, None) => LAYER_SHAPE[2],
                };
                for i in 0..packets {
                    self.send_packet(
                        p,
                        mid,
                        layer,
                        keyframe && i == 0,
                        i + 1 == packets,
                        size,
                        i == 0,
                    );
                }
                if let Some(s) = self.streams.get_mut(&(p, mid, layer)) {
                    s.ts =
                        s.ts.wrapping_add(if kind == MediaKind::Audio { 1600 } else { 3000 });
                }
            }
        }
        self.drain();
        self.advance(FRAME);
    }

    /// Moves the clock, running the room's timers on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(t) = self.room.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.room.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn run(&mut self, duration: Duration) {
        let frames = (duration.as_micros() / FRAME.as_micros()) as usize;
        for _ in 0..frames {
            self.frame();
        }
    }

    fn bandwidth(&mut self, p: ParticipantId, bps: u64) {
        self.room.handle_bandwidth(p, bps, self.now);
        self.drain();
    }

    fn count(&self, subscriber: ParticipantId, out_mid: Mid) -> usize {
        self.received
            .get(&(subscriber, out_mid))
            .map_or(0, |r| r.packets.len())
    }

    fn last_source(&self, subscriber: ParticipantId, out_mid: Mid) -> Option<Layer> {
        self.sources
            .get(&(subscriber, out_mid))
            .and_then(|v| v.last().copied())
    }

    /// Asserts the invariants every outgoing stream keeps: sequence numbers start below
    /// 65,536 and are consecutive (the simulation loses nothing), timestamps never go back,
    /// VP8 picture ids step by 0 or 1.
    fn assert_continuous(&self) {
        for ((sub, mid), r) in &self.received {
            let Some(first) = r.packets.first() else {
                continue;
            };
            assert!(first.seq < 65_536, "{sub} {mid}: first seq {}", first.seq);
            assert_eq!(first.seq, FIRST_OUT_SEQ);
            for w in r.packets.windows(2) {
                assert_eq!(w[1].seq, w[0].seq + 1, "{sub} {mid}: seq gap");
                let dt = w[1].ts.wrapping_sub(w[0].ts);
                assert!(dt < 1 << 31, "{sub} {mid}: ts went back {w:?}");
                if let (Some(a), Some(b)) = (w[0].vp8, w[1].vp8) {
                    let (a, b) = (a.picture_id.unwrap(), b.picture_id.unwrap());
                    let step = (u32::from(b) + 32_768 - u32::from(a)) % 32_768;
                    assert!(step <= 1, "{sub} {mid}: picture id jumped {a} -> {b}");
                }
            }
        }
    }
}

fn config() -> RoomConfig {
    RoomConfig::default()
}

/// One simulcast publisher (1) and subscribers 2.. with their slots ready.
fn simulcast_room(subscribers: u64) -> (Sim, TrackId) {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    let track = sim.publish(pid(1), simulcast("v"));
    for s in 0..subscribers {
        sim.join(pid(2 + s), false, true);
    }
    (sim, track)
}

#[test]
fn room_full_and_duplicate_join_change_nothing() {
    let mut cfg = config();
    cfg.max_participants = 2;
    let mut sim = Sim::new(cfg);
    sim.join(pid(1), true, true);
    sim.join(pid(2), true, true);
    let before = sim.events.len();
    assert_eq!(
        sim.room.join(pid(3), info(true, true), sim.now),
        Err(RoomError::RoomFull)
    );
    assert_eq!(
        sim.room.join(pid(1), info(true, true), sim.now),
        Err(RoomError::AlreadyJoined(pid(1)))
    );
    sim.drain();
    assert_eq!(sim.events.len(), before);
    assert_eq!(sim.room.participant_count(), 2);
    assert!(!sim.room.contains(pid(3)));
    // With room to spare, a duplicate id is its own error.
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    assert_eq!(
        sim.room.join(pid(1), info(true, true), sim.now),
        Err(RoomError::AlreadyJoined(pid(1)))
    );
}

#[test]
fn publish_needs_permission_and_unique_mid() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), false, true);
    assert_eq!(
        sim.room.publish_track(pid(1), audio("a"), sim.now),
        Err(RoomError::PublishNotAllowed(pid(1)))
    );
    sim.join(pid(2), true, true);
    sim.publish(pid(2), audio("a"));
    assert_eq!(
        sim.room.publish_track(pid(2), audio("a"), sim.now),
        Err(RoomError::DuplicateTrack(Mid::from("a")))
    );
    assert_eq!(
        sim.room.publish_track(pid(9), audio("a"), sim.now),
        Err(RoomError::UnknownParticipant(pid(9)))
    );
}

#[test]
fn audio_reaches_others_but_not_its_sender() {
    let mut sim = Sim::new(config());
    for p in 1..=3 {
        sim.join(pid(p), true, true);
    }
    let a = sim.publish(pid(1), audio("a"));
    let b = sim.publish(pid(2), audio("a"));
    sim.run(Duration::from_secs(1));
    let a_at_2 = sim.out_mid(pid(2), a);
    let a_at_3 = sim.out_mid(pid(3), a);
    let b_at_1 = sim.out_mid(pid(1), b);
    assert_eq!(sim.count(pid(2), a_at_2), 30);
    assert_eq!(sim.count(pid(3), a_at_3), 30);
    assert_eq!(sim.count(pid(1), b_at_1), 30);
    // Nobody has a slot for their own track, and 1 receives only 2's audio.
    assert!(
        sim.received
            .iter()
            .filter(|((s, _), r)| *s == pid(1) && !r.packets.is_empty())
            .all(|((_, m), _)| *m == b_at_1)
    );
    assert!(
        sim.room
            .slot_ready(pid(1), a, Mid::from("x"), sim.now)
            .is_err()
    );
    sim.assert_continuous();
}

#[test]
fn subscriber_gets_a_layer_that_fits_and_only_from_a_keyframe() {
    let (mut sim, track) = simulcast_room(1);
    let out = sim.out_mid(pid(2), track);
    // The initial estimate (1 Mbps) fits Mid (500 kbps default).
    assert_eq!(sim.room.target_layer(pid(2), out), Some(Layer::Mid));
    assert_eq!(
        sim.keyframe_requests,
        vec![(pid(1), Mid::from("v"), Some(Layer::Mid))]
    );
    sim.run(Duration::from_millis(200));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    assert_eq!(sim.last_source(pid(2), out), Some(Layer::Mid));
    // The first packet forwarded is the keyframe.
    assert!(sim.sources[&(pid(2), out)].iter().all(|l| *l == Layer::Mid));
    assert!(sim.events.contains(&RoomEvent::LayerChanged {
        subscriber: pid(2),
        out_mid: out,
        layer: Layer::Mid
    }));
}

#[test]
fn layers_nobody_needs_produce_nothing() {
    let (mut sim, track) = simulcast_room(2);
    sim.run(Duration::from_millis(300));
    for p in [pid(2), pid(3)] {
        let out = sim.out_mid(p, track);
        assert_eq!(sim.room.current_layer(p, out), Some(Layer::Mid));
    }
    for layer in [Layer::Low, Layer::High] {
        for keyframe in [false, true] {
            let n = sim.send_packet(pid(1), track.mid, Some(layer), keyframe, true, 900, true);
            assert_eq!(n, 0, "{layer:?}");
        }
    }
    assert_eq!(
        sim.send_packet(pid(1), track.mid, Some(Layer::Mid), false, true, 900, true),
        2
    );
}

#[test]
fn switch_waits_for_a_keyframe_of_the_target_layer() {
    let (mut sim, track) = simulcast_room(1);
    let out = sim.out_mid(pid(2), track);
    sim.run(Duration::from_millis(500));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    // The publisher ignores keyframe requests for a while: the subscriber stays on Mid.
    sim.answer_keyframes = false;
    sim.bandwidth(pid(2), 5_000_000);
    assert_eq!(sim.room.target_layer(pid(2), out), Some(Layer::High));
    let before = sim.count(pid(2), out);
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    assert!(sim.count(pid(2), out) > before);
    assert_eq!(sim.last_source(pid(2), out), Some(Layer::Mid));
    // Requests were retried (about once per window), not once per frame.
    let high_requests = sim
        .keyframe_requests
        .iter()
        .filter(|r| r.2 == Some(Layer::High))
        .count();
    assert!((2..=4).contains(&high_requests), "{high_requests}");
    // A keyframe on High arrives: the switch happens right there.
    sim.streams
        .get_mut(&(pid(1), Mid::from("v"), Some(Layer::High)))
        .unwrap()
        .keyframe_due = true;
    sim.frame();
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::High));
    assert_eq!(sim.last_source(pid(2), out), Some(Layer::High));
    assert_eq!(sim.room.stats().layer_switches, 1);
    sim.assert_continuous();
}

#[test]
fn bandwidth_down_and_back_up_with_hysteresis() {
    let (mut sim, track) = simulcast_room(1);
    let out = sim.out_mid(pid(2), track);
    sim.bandwidth(pid(2), 3_000_000);
    sim.run(Duration::from_secs(2));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::High));
    // Measured rates replace the defaults.
    let high = sim.room.layer_bitrate(track, Layer::High).unwrap();
    assert!((1_200_000..1_600_000).contains(&high), "{high}");

    // Down: 400 kbps fits only Low (Mid measures ~500 kbps).
    sim.bandwidth(pid(2), 400_000);
    sim.run(Duration::from_millis(300));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Low));

    // Back up: not within the hold time after a downward switch...
    sim.bandwidth(pid(2), 3_000_000);
    sim.run(Duration::from_secs(2));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Low));
    // ...but after it.
    sim.run(Duration::from_secs(3));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::High));

    // Hysteresis: just above High's rate is not enough headroom to go up from Mid.
    sim.bandwidth(pid(2), 700_000);
    sim.run(Duration::from_millis(300));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    sim.run(Duration::from_secs(5));
    let switches = sim.room.stats().layer_switches;
    let high = sim.room.layer_bitrate(track, Layer::High).unwrap();
    for i in 0..20 {
        // An estimate wobbling around High's rate, always below the headroom.
        let bps = if i % 2 == 0 {
            high + 50_000
        } else {
            high - 50_000
        };
        sim.bandwidth(pid(2), bps);
        sim.run(Duration::from_millis(500));
    }
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    assert_eq!(sim.room.stats().layer_switches, switches, "flapped");
    sim.assert_continuous();
}

#[test]
fn three_subscribers_with_different_estimates_get_different_layers() {
    let (mut sim, track) = simulcast_room(3);
    sim.bandwidth(pid(2), 200_000);
    sim.bandwidth(pid(3), 800_000);
    sim.bandwidth(pid(4), 4_000_000);
    sim.run(Duration::from_secs(2));
    let layer = |sim: &Sim, p| sim.room.current_layer(p, sim.out_mid(p, track));
    assert_eq!(layer(&sim, pid(2)), Some(Layer::Low));
    assert_eq!(layer(&sim, pid(3)), Some(Layer::Mid));
    assert_eq!(layer(&sim, pid(4)), Some(Layer::High));
    sim.assert_continuous();
}

#[test]
fn keyframe_requests_are_coalesced() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(2), false, true);
    sim.join(pid(3), false, true);
    sim.join(pid(4), false, true);
    sim.answer_keyframes = false;
    let track = sim.publish(pid(1), simulcast("v"));
    // Three subscribers want Mid at once: one request.
    assert_eq!(
        sim.keyframe_requests,
        vec![(pid(1), Mid::from("v"), Some(Layer::Mid))]
    );
    assert_eq!(sim.room.stats().keyframe_requests_coalesced, 2);
    sim.keyframe_requests.clear();
    // Give them their keyframe, then all three send a PLI within the window: one request.
    sim.streams
        .get_mut(&(pid(1), Mid::from("v"), Some(Layer::Mid)))
        .unwrap()
        .keyframe_due = true;
    sim.frame();
    for p in 2..=4 {
        let out = sim.out_mid(pid(p), track);
        assert_eq!(sim.room.current_layer(pid(p), out), Some(Layer::Mid));
        sim.room.handle_keyframe_request(pid(p), out, sim.now);
        sim.drain();
    }
    assert_eq!(sim.keyframe_requests.len(), 1);
    // Within the window (no keyframe came): still one.
    sim.advance(Duration::from_millis(300));
    let out = sim.out_mid(pid(2), track);
    sim.room.handle_keyframe_request(pid(2), out, sim.now);
    sim.drain();
    assert_eq!(sim.keyframe_requests.len(), 1);
    // After the window: a new one.
    sim.advance(Duration::from_millis(300));
    sim.room.handle_keyframe_request(pid(2), out, sim.now);
    sim.drain();
    assert_eq!(sim.keyframe_requests.len(), 2);
}

#[test]
fn paused_layers_are_never_requested_or_selected() {
    let (mut sim, track) = simulcast_room(1);
    let out = sim.out_mid(pid(2), track);
    let mid = Mid::from("v");
    sim.room
        .layer_paused(pid(1), mid, Some(Layer::High), true, sim.now);
    sim.bandwidth(pid(2), 5_000_000);
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    assert!(
        !sim.keyframe_requests
            .iter()
            .any(|r| r.2 == Some(Layer::High))
    );
    // Mid pauses too: fall back to Low.
    sim.room
        .layer_paused(pid(1), mid, Some(Layer::Mid), true, sim.now);
    sim.drain();
    sim.run(Duration::from_millis(500));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Low));
    // High resumes: back up once the hold time has passed.
    sim.room
        .layer_paused(pid(1), mid, Some(Layer::High), false, sim.now);
    sim.drain();
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::High));
    sim.assert_continuous();
}

#[test]
fn a_layer_that_stops_arriving_is_abandoned() {
    let (mut sim, track) = simulcast_room(1);
    let out = sim.out_mid(pid(2), track);
    sim.bandwidth(pid(2), 5_000_000);
    sim.run(Duration::from_secs(3));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::High));
    // The publisher silently stops sending High (no StreamPaused).
    sim.streams
        .remove(&(pid(1), Mid::from("v"), Some(Layer::High)));
    sim.run(Duration::from_secs(3));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    sim.assert_continuous();
}

#[test]
fn max_height_caps_and_zero_pauses() {
    let (mut sim, track) = simulcast_room(1);
    let out = sim.out_mid(pid(2), track);
    sim.bandwidth(pid(2), 5_000_000);
    sim.room.set_max_height(pid(2), out, 360, sim.now);
    sim.drain();
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    sim.room.set_max_height(pid(2), out, 0, sim.now);
    sim.drain();
    let before = sim.count(pid(2), out);
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.count(pid(2), out), before);
    assert_eq!(sim.room.current_layer(pid(2), out), None);
    sim.room.set_max_height(pid(2), out, 180, sim.now);
    sim.drain();
    sim.run(Duration::from_millis(300));
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Low));
    assert!(sim.count(pid(2), out) > before);
    sim.assert_continuous();
}

#[test]
fn estimate_is_shared_among_video_slots() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(2), true, true);
    sim.join(pid(3), false, true);
    let v1 = sim.publish(pid(1), simulcast("v"));
    let v2 = sim.publish(pid(2), simulcast("v"));
    sim.publish(pid(1), audio("a"));
    // 1.2 Mbps less 40 kbps audio, halved: 580 kbps each fits Mid but not High.
    sim.bandwidth(pid(3), 1_200_000);
    sim.run(Duration::from_secs(2));
    for v in [v1, v2] {
        let out = sim.out_mid(pid(3), v);
        assert_eq!(sim.room.current_layer(pid(3), out), Some(Layer::Mid));
    }
    // Unlimited, it would take both High layers and the audio.
    let desired = sim.room.desired_bps(pid(3), sim.now);
    let high = |v: TrackId| sim.room.layer_bitrate(v, Layer::High).unwrap();
    assert_eq!(desired, high(v1) + high(v2) + config().audio_reserve_bps);
    // One slot paused by size: the other gets the whole share.
    let out1 = sim.out_mid(pid(3), v1);
    sim.room.set_max_height(pid(3), out1, 0, sim.now);
    sim.bandwidth(pid(3), 2_000_000);
    sim.run(Duration::from_secs(2));
    let out2 = sim.out_mid(pid(3), v2);
    assert_eq!(sim.room.current_layer(pid(3), out2), Some(Layer::High));
    sim.assert_continuous();
}

#[test]
fn a_shared_screen_chooses_its_layer_before_the_cameras() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(3), false, true);
    let camera = sim.publish(pid(1), simulcast("v"));
    let screen = sim.publish(
        pid(1),
        PublishedTrack {
            source: TrackSource::Screen,
            ..simulcast("s")
        },
    );
    // 2 Mbps shared equally would give each 1 Mbps (Mid); the screen goes first and takes
    // High (about 1.4 Mbps), the camera keeps what is left (Low or Mid), never nothing.
    sim.bandwidth(pid(3), 2_000_000);
    sim.run(Duration::from_secs(6));
    let screen_out = sim.out_mid(pid(3), screen);
    let camera_out = sim.out_mid(pid(3), camera);
    assert_eq!(
        sim.room.current_layer(pid(3), screen_out),
        Some(Layer::High)
    );
    let camera_layer = sim.room.current_layer(pid(3), camera_out);
    assert!(
        matches!(camera_layer, Some(Layer::Low | Layer::Mid)),
        "{camera_layer:?}"
    );
    // A thin link: the screen drops to what fits once each camera has its smallest layer.
    sim.bandwidth(pid(3), 700_000);
    sim.run(Duration::from_secs(2));
    assert_eq!(sim.room.current_layer(pid(3), screen_out), Some(Layer::Mid));
    assert_eq!(sim.room.current_layer(pid(3), camera_out), Some(Layer::Low));
    // The screen stops: the camera has the whole share again.
    assert!(sim.room.unpublish_track(screen, sim.now));
    sim.drain();
    sim.bandwidth(pid(3), 2_000_000);
    sim.run(Duration::from_secs(6));
    assert_eq!(
        sim.room.current_layer(pid(3), camera_out),
        Some(Layer::High)
    );
    sim.assert_continuous();
}

#[test]
fn non_simulcast_video_is_forwarded_from_a_keyframe() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(2), false, true);
    let track = sim.publish(
        pid(1),
        PublishedTrack {
            mid: Mid::from("v"),
            kind: MediaKind::Video,
            source: TrackSource::Camera,
            rids: Vec::new(),
        },
    );
    assert_eq!(sim.keyframe_requests, vec![(pid(1), Mid::from("v"), None)]);
    sim.run(Duration::from_millis(500));
    let out = sim.out_mid(pid(2), track);
    assert_eq!(sim.count(pid(2), out), 15 * 5);
    assert!(
        !sim.events
            .iter()
            .any(|e| matches!(e, RoomEvent::LayerChanged { .. }))
    );
    sim.assert_continuous();
}

#[test]
fn active_speaker_follows_the_loudest_without_flapping() {
    let mut sim = Sim::new(config());
    for p in 1..=3 {
        sim.join(pid(p), true, true);
        sim.publish(pid(p), audio("a"));
    }
    let speakers = |sim: &Sim| -> Vec<ParticipantId> {
        sim.events
            .iter()
            .filter_map(|e| match e {
                RoomEvent::ActiveSpeaker(p) => Some(*p),
                _ => None,
            })
            .collect()
    };
    // Silence: nobody.
    sim.run(Duration::from_secs(1));
    assert!(speakers(&sim).is_empty());
    sim.levels.insert(pid(2), 30);
    sim.run(Duration::from_secs(1));
    assert_eq!(speakers(&sim), vec![pid(2)]);
    assert_eq!(sim.room.active_speaker(), Some(pid(2)));
    // 3 interjects briefly (300 ms) while 2 keeps talking: no change.
    sim.levels.insert(pid(3), 20);
    sim.run(Duration::from_millis(300));
    sim.levels.insert(pid(3), 127);
    sim.run(Duration::from_secs(2));
    assert_eq!(speakers(&sim), vec![pid(2)]);
    // 2 stops, 3 talks: 3 takes over.
    sim.levels.insert(pid(2), 127);
    sim.levels.insert(pid(3), 30);
    sim.run(Duration::from_secs(3));
    assert_eq!(speakers(&sim), vec![pid(2), pid(3)]);
    // The speaker leaves: forgotten.
    sim.room.leave(pid(3), sim.now);
    assert_eq!(sim.room.active_speaker(), None);
}

#[test]
fn mute_events_only_on_change() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.events.clear();
    sim.room.set_muted(pid(1), MediaKind::Audio, true, sim.now);
    sim.room.set_muted(pid(1), MediaKind::Audio, true, sim.now);
    sim.room.set_muted(pid(1), MediaKind::Video, false, sim.now);
    sim.drain();
    assert_eq!(
        sim.events,
        vec![RoomEvent::Muted {
            participant: pid(1),
            kind: MediaKind::Audio,
            muted: true
        }]
    );
}

#[test]
fn leaving_publisher_drops_its_slots_and_stops_forwarding() {
    let (mut sim, track) = simulcast_room(2);
    sim.join(pid(9), false, true);
    sim.auto_ready = false;
    // 10 joins but its slot is never negotiated before the publisher leaves.
    sim.join(pid(10), false, true);
    sim.run(Duration::from_millis(500));
    let out2 = sim.out_mid(pid(2), track);
    assert!(sim.room.leave(pid(1), sim.now));
    assert!(!sim.room.leave(pid(1), sim.now));
    sim.drain();
    let mut dropped = sim.dropped_slots.clone();
    dropped.sort_by_key(|d| d.0);
    assert_eq!(dropped.len(), 4);
    assert_eq!(dropped[0], (pid(2), track, Some(out2)));
    assert_eq!(dropped[3], (pid(10), track, None));
    assert!(sim.events.contains(&RoomEvent::Left(pid(1))));
    let meta = RtpMeta::default();
    let n = sim.room.handle_rtp(
        pid(1),
        Mid::from("v"),
        Some(Layer::Low),
        &meta,
        &Arc::from(&[][..]),
        sim.now,
        &mut |_| {},
    );
    assert_eq!(n, 0);
    assert_eq!(sim.room.slot_track(pid(2), out2), None);
    assert_eq!(
        sim.room.slot_ready(pid(10), track, Mid::from("z"), sim.now),
        Err(RoomError::UnknownTrack)
    );
}

#[test]
fn leaving_subscriber_is_removed_from_tracks() {
    let (mut sim, track) = simulcast_room(2);
    sim.run(Duration::from_millis(300));
    let out2 = sim.out_mid(pid(2), track);
    let before_2 = sim.count(pid(2), out2);
    assert!(before_2 > 0);
    assert!(sim.room.leave(pid(2), sim.now));
    sim.drain();
    let out3 = sim.out_mid(pid(3), track);
    let before = sim.count(pid(3), out3);
    for _ in 0..10 {
        sim.frame();
    }
    // Only 3 still receives (2 packets per Mid frame).
    assert_eq!(sim.count(pid(3), out3), before + 2 * 10);
    assert_eq!(sim.count(pid(2), out2), before_2);
    assert_eq!(sim.room.slot_track(pid(2), out2), None);
}

#[test]
fn unpublish_drops_slots() {
    let (mut sim, track) = simulcast_room(1);
    let out = sim.out_mid(pid(2), track);
    assert!(sim.room.unpublish_track(track, sim.now));
    assert!(!sim.room.unpublish_track(track, sim.now));
    sim.drain();
    assert_eq!(sim.dropped_slots, vec![(pid(2), track, Some(out))]);
    // The mid can be published again.
    sim.publish(pid(1), simulcast("v"));
}

#[test]
fn silent_participants_time_out() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(2), false, true);
    sim.join(pid(3), false, true);
    sim.publish(pid(1), audio("a"));
    // 1 keeps sending audio, 2 only sends RTCP (activity), 3 goes silent.
    for _ in 0..(35 * 30) {
        sim.frame();
        sim.room.handle_activity(pid(2), sim.now);
    }
    assert_eq!(sim.timed_out, vec![pid(3)]);
    assert!(sim.events.contains(&RoomEvent::Left(pid(3))));
    assert_eq!(sim.room.participant_count(), 2);
    // Then everyone goes quiet: the room empties and stops asking for timers.
    sim.advance(Duration::from_secs(31));
    assert!(sim.room.is_empty());
    assert_eq!(sim.room.poll_timeout(), None);
    assert_eq!(sim.room.stats().timed_out, 3);
}

#[test]
fn late_joiner_gets_slots_for_existing_tracks() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.publish(pid(1), audio("a"));
    sim.publish(pid(1), simulcast("v"));
    sim.auto_ready = false;
    sim.join(pid(2), false, true);
    assert_eq!(sim.pending_slots.len(), 2);
    // A subscriber that may not subscribe is offered nothing.
    sim.join(pid(3), true, false);
    assert_eq!(sim.pending_slots.len(), 2);
    sim.auto_ready = true;
    sim.ready_pending();
    sim.drain();
    sim.run(Duration::from_millis(300));
    let got: usize = sim
        .received
        .iter()
        .filter(|((s, _), _)| *s == pid(2))
        .map(|(_, r)| r.packets.len())
        .sum();
    assert!(got > 0);
    assert!(!sim.received.keys().any(|(s, _)| *s == pid(3)));
}

#[test]
fn garbage_inputs_change_nothing() {
    let mut sim = Sim::new(config());
    let now = sim.now;
    sim.room.handle_bandwidth(pid(7), 1, now);
    sim.room.set_max_height(pid(7), Mid::from("x"), 1, now);
    sim.room
        .handle_keyframe_request(pid(7), Mid::from("x"), now);
    sim.room
        .layer_paused(pid(7), Mid::from("x"), None, true, now);
    sim.room.set_muted(pid(7), MediaKind::Audio, true, now);
    sim.room.handle_activity(pid(7), now);
    sim.room.handle_timeout(now);
    assert!(!sim.room.leave(pid(7), now));
    assert_eq!(sim.room.poll_output(), None);
    sim.join(pid(1), true, true);
    let track = sim.publish(pid(1), simulcast("v"));
    // Unknown layer on a simulcast track: counted, not forwarded.
    let meta = RtpMeta::default();
    assert_eq!(
        sim.room.handle_rtp(
            pid(1),
            track.mid,
            None,
            &meta,
            &Arc::from(&[][..]),
            now,
            &mut |_| {}
        ),
        0
    );
    assert_eq!(sim.room.stats().unknown_track_packets, 1);
    assert_eq!(
        sim.room.slot_ready(pid(1), track, Mid::from("o"), now),
        Err(RoomError::NoSlotWanted(pid(1)))
    );
}

/// A step of the continuity property test.
#[derive(Debug, Clone)]
enum Step {
    Bandwidth(u8, u64),
    Height(u8, u32),
    Frames(u8),
    Pli(u8),
    Pause(u8, bool),
    Ignore(bool),
    /// A new subscriber joins (it may get a cached keyframe replayed).
    Join,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..3, 100_000u64..5_000_000).prop_map(|(s, b)| Step::Bandwidth(s, b)),
        (
            0u8..3,
            prop_oneof![Just(0u32), Just(180), Just(360), Just(720)]
        )
            .prop_map(|(s, h)| Step::Height(s, h)),
        (1u8..40).prop_map(Step::Frames),
        (0u8..3).prop_map(Step::Pli),
        (0u8..3, any::<bool>()).prop_map(|(l, p)| Step::Pause(l, p)),
        any::<bool>().prop_map(Step::Ignore),
        Just(Step::Join),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Sequence numbers (and timestamps, picture ids) stay continuous across layer
    /// switches, whatever the estimates, sizes, pauses and keyframe timing.
    #[test]
    fn numbering_stays_continuous_across_switches(steps in prop::collection::vec(step(), 1..60)) {
        let (mut sim, track) = simulcast_room(3);
        let mid = track.mid;
        let mut joined = 0;
        for s in steps {
            match s {
                Step::Bandwidth(sub, bps) => sim.bandwidth(pid(2 + u64::from(sub)), bps),
                Step::Height(sub, h) => {
                    let p = pid(2 + u64::from(sub));
                    let out = sim.out_mid(p, track);
                    sim.room.set_max_height(p, out, h, sim.now);
                    sim.drain();
                }
                Step::Frames(n) => {
                    for _ in 0..n {
                        sim.frame();
                    }
                }
                Step::Pli(sub) => {
                    let p = pid(2 + u64::from(sub));
                    let out = sim.out_mid(p, track);
                    sim.room.handle_keyframe_request(p, out, sim.now);
                    sim.drain();
                }
                Step::Pause(l, paused) => {
                    sim.room.layer_paused(pid(1), mid, Some(Layer::ALL[usize::from(l)]), paused, sim.now);
                    sim.drain();
                }
                Step::Ignore(ignore) => sim.answer_keyframes = !ignore,
                // The room holds 50.
                Step::Join if joined < 20 => {
                    joined += 1;
                    sim.join(pid(100 + joined), false, true);
                }
                Step::Join => {}
            }
        }
        sim.assert_continuous();
        // The source layer of a subscriber's packets changes only where the room announced
        // a new layer (never back and forth on its own).
        let switches = sim
            .events
            .iter()
            .filter(|e| matches!(e, RoomEvent::LayerChanged { .. }))
            .count() as u64;
        let changes: u64 = sim.sources.values().map(|v| v.windows(2).filter(|w| w[0] != w[1]).count() as u64).sum();
        prop_assert!(changes <= switches);
    }
}

#[test]
fn an_announced_cap_picks_the_first_layer_and_caps_later_estimates() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(2), true, true);
    let v1 = sim.publish(pid(1), simulcast("v"));
    let v2 = sim.publish(pid(2), simulcast("v"));
    sim.publish(pid(1), audio("a"));
    sim.publish(pid(2), audio("a"));
    sim.run(Duration::from_secs(2));
    sim.keyframe_requests.clear();
    // A subscriber on a 400 kbit/s link says so in its join offer, before its slots exist.
    sim.room.join(pid(3), info(false, true), sim.now).unwrap();
    sim.room.set_receive_cap(pid(3), Some(400_000), sim.now);
    sim.drain();
    // Both videos start on Low at once: no request for a layer it cannot take.
    for v in [v1, v2] {
        let out = sim.out_mid(pid(3), v);
        assert_eq!(sim.room.target_layer(pid(3), out), Some(Layer::Low));
    }
    assert!(
        sim.keyframe_requests
            .iter()
            .all(|(_, _, layer)| *layer == Some(Layer::Low)),
        "{:?}",
        sim.keyframe_requests
    );
    sim.run(Duration::from_millis(200));
    for v in [v1, v2] {
        let out = sim.out_mid(pid(3), v);
        assert_eq!(sim.room.current_layer(pid(3), out), Some(Layer::Low));
    }
    // An estimate above the cap (probing overshoot, a fast path to the SFU) changes nothing.
    sim.bandwidth(pid(3), 5_000_000);
    sim.run(Duration::from_secs(1));
    for v in [v1, v2] {
        let out = sim.out_mid(pid(3), v);
        assert_eq!(sim.room.current_layer(pid(3), out), Some(Layer::Low));
    }
    // Without the cap (the same subscriber on a good link) the first estimate fits Mid.
    sim.room.set_receive_cap(pid(3), None, sim.now);
    sim.bandwidth(pid(3), 1_300_000);
    sim.run(Duration::from_secs(1));
    for v in [v1, v2] {
        let out = sim.out_mid(pid(3), v);
        assert_eq!(sim.room.current_layer(pid(3), out), Some(Layer::Mid));
    }
    sim.assert_continuous();
}

#[test]
fn a_layer_that_appears_after_the_keyframe_request_is_asked_again_at_once() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(2), false, true);
    // The subscriber's slot is ready before the publisher's layers reach the SFU: the
    // request goes out, but nobody can deliver it (str0m knows no stream for the rid yet).
    sim.answer_keyframes = false;
    let track = sim.publish(pid(1), simulcast("v"));
    assert_eq!(
        sim.keyframe_requests,
        vec![(pid(1), Mid::from("v"), Some(Layer::Mid))]
    );
    sim.answer_keyframes = true;
    sim.advance(Duration::from_millis(40));
    // The layers appear, mid-GOP: well within the coalescing window, the layer the
    // subscriber waits for is asked for again as its first packet arrives.
    sim.frame();
    assert_eq!(
        sim.keyframe_requests,
        vec![
            (pid(1), Mid::from("v"), Some(Layer::Mid)),
            (pid(1), Mid::from("v"), Some(Layer::Mid)),
        ]
    );
    // The publisher answers with the next frame: video flows 2 frames after the layer
    // appeared, not after the 500 ms retry.
    sim.frame();
    let out = sim.out_mid(pid(2), track);
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Mid));
    // Only once: later non-keyframes of a known layer do not ask again.
    sim.run(Duration::from_millis(200));
    assert_eq!(sim.keyframe_requests.len(), 2);
}

/// The Mid stream's packets a keyframe consists of (`LAYER_SHAPE`).
const MID_PACKETS: usize = LAYER_SHAPE[1].0 as usize;

/// The out mids of `subscriber`'s replays.
fn replayed_to(sim: &Sim, subscriber: ParticipantId) -> Vec<&[ReplayedPacket]> {
    sim.replays
        .iter()
        .filter(|(s, _, _)| *s == subscriber)
        .map(|(_, _, p)| p.as_slice())
        .collect()
}

#[test]
fn a_new_subscriber_gets_the_cached_keyframe_at_once_then_the_live_stream_from_the_next() {
    // 2 receives Mid (the initial estimate), so Mid's keyframe is in the cache.
    let (mut sim, track) = simulcast_room(1);
    sim.run(Duration::from_millis(500));
    let requests = sim.keyframe_requests.len();
    sim.join(pid(3), false, true);
    let out = sim.out_mid(pid(3), track);

    // At once, before any new packet: the whole keyframe, numbered from the first sequence
    // number, with the payloads the publisher sent.
    let replays = replayed_to(&sim, pid(3));
    assert_eq!(replays.len(), 1);
    let replay = replays[0];
    assert_eq!(replay.len(), MID_PACKETS);
    for (i, p) in replay.iter().enumerate() {
        assert_eq!(p.forward.out_mid, out);
        assert_eq!(p.forward.seq, FIRST_OUT_SEQ + i as u64);
        assert_eq!(p.payload_type, 96);
        assert_eq!(p.forward.marker, i + 1 == MID_PACKETS);
    }
    let first_in_seq = u64::from_be_bytes(replay[0].payload[..8].try_into().unwrap());
    let last_in_seq = u64::from_be_bytes(replay[MID_PACKETS - 1].payload[..8].try_into().unwrap());
    assert_eq!(last_in_seq, first_in_seq + MID_PACKETS as u64 - 1);
    // Stamped on the live stream's clock of now (within a frame of the publisher's next
    // timestamp), not with the capture time 500 ms ago.
    let live_next_ts = sim.streams[&(pid(1), track.mid, Some(Layer::Mid))].ts;
    let behind = live_next_ts.wrapping_sub(replay[0].forward.ts);
    assert!(
        behind <= 3000,
        "replayed ts {behind} ticks behind the live stream"
    );
    assert_eq!(sim.room.stats().keyframes_replayed, 1);
    // The live keyframe is asked for at the same time.
    assert!(
        sim.keyframe_requests[requests..].contains(&(pid(1), track.mid, Some(Layer::Mid))),
        "{:?}",
        &sim.keyframe_requests[requests..]
    );

    // The publisher is slow to answer: its deltas reference frames 3 never had, and are
    // held back.
    sim.answer_keyframes = false;
    for stream in sim.streams.values_mut() {
        stream.keyframe_due = false;
    }
    for _ in 0..5 {
        sim.frame();
    }
    assert_eq!(sim.count(pid(3), out), MID_PACKETS);
    assert_eq!(sim.room.current_layer(pid(3), out), None);

    // The live keyframe, then its deltas, numbered on from the replay.
    sim.streams
        .get_mut(&(pid(1), track.mid, Some(Layer::Mid)))
        .unwrap()
        .keyframe_due = true;
    for _ in 0..3 {
        sim.frame();
    }
    assert_eq!(sim.count(pid(3), out), MID_PACKETS * 4);
    assert_eq!(sim.room.current_layer(pid(3), out), Some(Layer::Mid));
    assert!(sim.events.contains(&RoomEvent::LayerChanged {
        subscriber: pid(3),
        out_mid: out,
        layer: Layer::Mid
    }));
    sim.assert_continuous();
    // A first layer is no switch.
    assert_eq!(sim.room.stats().layer_switches, 0);

    // A layer switch afterwards works as without a replay.
    sim.answer_keyframes = true;
    sim.bandwidth(pid(3), 200_000);
    sim.run(Duration::from_millis(300));
    assert_eq!(sim.room.current_layer(pid(3), out), Some(Layer::Low));
    assert_eq!(sim.last_source(pid(3), out), Some(Layer::Low));
    assert_eq!(sim.room.stats().layer_switches, 1);
    sim.assert_continuous();
    assert_eq!(sim.room.stats().keyframes_replayed, 1);
}

#[test]
fn a_non_simulcast_track_and_audio_are_handled_too() {
    let mut sim = Sim::new(config());
    sim.join(pid(1), true, true);
    sim.join(pid(2), false, true);
    let video = sim.publish(
        pid(1),
        PublishedTrack {
            rids: Vec::new(),
            ..simulcast("v")
        },
    );
    sim.publish(pid(1), audio("a"));
    sim.run(Duration::from_millis(300));
    sim.join(pid(3), false, true);
    // One replay, the video's five packets; audio needs none.
    let replays = replayed_to(&sim, pid(3));
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0].len(), LAYER_SHAPE[2].0 as usize);
    assert_eq!(replays[0][0].forward.out_mid, sim.out_mid(pid(3), video));
    sim.run(Duration::from_millis(300));
    sim.assert_continuous();
    assert_eq!(
        sim.room.current_layer(pid(3), sim.out_mid(pid(3), video)),
        Some(Layer::High)
    );
}

#[test]
fn the_cache_is_bounded_and_emptied_when_the_layer_stops_or_the_publisher_leaves() {
    // Low's keyframe (500 B) fits, Mid's (2 x 1000 B) and High's do not.
    let mut cfg = config();
    cfg.keyframe_cache_bytes = 1500;
    let mut sim = Sim::new(cfg);
    sim.join(pid(1), true, true);
    let track = sim.publish(pid(1), simulcast("v"));
    for stream in sim.streams.values_mut() {
        stream.keyframe_due = true;
    }
    sim.frame();
    assert_eq!(sim.room.cached_keyframe_bytes(track, Layer::Low), 500);
    assert_eq!(sim.room.cached_keyframe_bytes(track, Layer::Mid), 0);
    assert_eq!(sim.room.cached_keyframe_bytes(track, Layer::High), 0);
    // A subscriber on Mid waits for the live keyframe, as without a cache.
    sim.join(pid(2), false, true);
    assert!(sim.replays.is_empty());
    // One that can only take Low gets Low's.
    sim.auto_ready = false;
    sim.join(pid(3), false, true);
    sim.room.set_receive_cap(pid(3), Some(150_000), sim.now);
    sim.auto_ready = true;
    sim.drain();
    assert_eq!(replayed_to(&sim, pid(3)).len(), 1);

    // A paused layer's keyframe goes at once.
    sim.room
        .layer_paused(pid(1), track.mid, Some(Layer::Low), true, sim.now);
    assert_eq!(sim.room.cached_keyframe_bytes(track, Layer::Low), 0);
    sim.room
        .layer_paused(pid(1), track.mid, Some(Layer::Low), false, sim.now);
    sim.streams
        .get_mut(&(pid(1), track.mid, Some(Layer::Low)))
        .unwrap()
        .keyframe_due = true;
    sim.frame();
    assert_eq!(sim.room.cached_keyframe_bytes(track, Layer::Low), 500);

    // The publisher leaves: its tracks and their caches are gone.
    sim.room.leave(pid(1), sim.now);
    sim.drain();
    assert_eq!(sim.room.cached_keyframe_bytes(track, Layer::Low), 0);
}

#[test]
fn a_layer_that_went_quiet_is_not_replayed() {
    let (mut sim, track) = simulcast_room(1);
    sim.run(Duration::from_millis(500));
    assert!(sim.room.cached_keyframe_bytes(track, Layer::Mid) > 0);
    // The publisher stops sending (a camera turned off, a network gone) for longer than a
    // layer counts as live; its keyframe is dropped with it.
    sim.advance(Duration::from_millis(2_100));
    assert_eq!(sim.room.cached_keyframe_bytes(track, Layer::Mid), 0);
    sim.join(pid(3), false, true);
    assert!(sim.replays.is_empty());
    assert_eq!(sim.room.stats().keyframes_replayed, 0);

    // A subscriber already receiving never gets a replay (an old picture mid-stream would be
    // a jump back), even when its layer changes.
    sim.run(Duration::from_millis(500));
    let out = sim.out_mid(pid(2), track);
    sim.room.set_max_height(pid(2), out, 180, sim.now);
    sim.drain();
    sim.run(Duration::from_millis(300));
    assert_eq!(sim.room.stats().keyframes_replayed, 0);
    assert_eq!(sim.room.current_layer(pid(2), out), Some(Layer::Low));
    sim.assert_continuous();
}
