//! The switchboard on virtual time: real str0m client sessions in memory (ICE, DTLS, SCTP,
//! SRTP), no sockets, no wall clock. Each test runs a few virtual seconds in milliseconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};
use surge_sfu_proto::core::{ParticipantId, ParticipantInfo};
use surge_sfu_proto::protocol::{ClientMessage, Kind, ServerMessage};
use surge_sfu_proto::switchboard::Counters;
use surge_sfu_proto::{
    Event, Join, JoinRefusal, Load, RemoveReason, Switchboard, SwitchboardConfig,
};

const SFU: ([u8; 4], u16) = ([10, 0, 0, 1], 5000);
const STEP: Duration = Duration::from_millis(5);
const AUDIO_EVERY: Duration = Duration::from_millis(20);

/// The shard-wide counts, as the shell keeps them.
#[derive(Default)]
struct TestLoad {
    draining: AtomicBool,
    rooms: AtomicU32,
    participants: AtomicU32,
    max_participants: AtomicU32,
    egress: AtomicI64,
}

/// The switchboard's handle on the test's counts.
struct LoadHandle(Arc<TestLoad>);

impl Load for LoadHandle {
    fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }
    fn open_room(&self, _room: &str) -> bool {
        self.0.rooms.fetch_add(1, Ordering::Relaxed);
        true
    }
    fn close_room(&self, _room: &str) {
        self.0.rooms.fetch_sub(1, Ordering::Relaxed);
    }
    fn add_participant(&self) -> bool {
        let max = self.0.max_participants.load(Ordering::Relaxed);
        self.0
            .participants
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }
    fn remove_participant(&self) {
        self.0.participants.fetch_sub(1, Ordering::Relaxed);
    }
    fn add_egress(&self, delta: i64) {
        self.0.egress.fetch_add(delta, Ordering::Relaxed);
    }
}

/// One headless client: a str0m session that answers the server's offers and counts what
/// it receives.
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    id: ParticipantId,
    channel: Option<ChannelId>,
    audio_mid: Option<Mid>,
    messages: Vec<ServerMessage>,
    received: HashMap<Mid, u64>,
    offers_answered: u32,
    next_audio: Instant,
    audio_seq: u64,
    /// A vanished client neither sends nor receives.
    gone: bool,
}

impl Client {
    fn drain(&mut self, now: Instant, to_sfu: &mut Vec<(SocketAddr, Vec<u8>)>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => return,
                Ok(Output::Transmit(t)) => to_sfu.push((t.source, t.contents.to_vec())),
                Ok(Output::Event(event)) => self.handle_event(now, event),
                Err(e) => panic!("client session failed: {e}"),
            }
        }
    }

    fn handle_event(&mut self, _now: Instant, event: RtcEvent) {
        match event {
            RtcEvent::ChannelOpen(id, _) => self.channel = Some(id),
            RtcEvent::ChannelData(data) => {
                let message: ServerMessage = serde_json::from_slice(&data.data).unwrap();
                if let ServerMessage::Offer { sdp } = &message {
                    let offer = SdpOffer::from_sdp_string(sdp).unwrap();
                    let answer = self.rtc.sdp_api().accept_offer(offer).unwrap();
                    self.send(&ClientMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    });
                    self.offers_answered += 1;
                }
                self.messages.push(message);
            }
            RtcEvent::RtpPacket(packet) => {
                let ssrc = packet.header.ssrc;
                if let Some(mid) = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) {
                    *self.received.entry(mid).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    fn send(&mut self, message: &ClientMessage) {
        let id = self.channel.expect("the channel is open");
        let mut channel = self.rtc.channel(id).unwrap();
        assert!(channel.write(false, message.to_json().as_bytes()).unwrap());
    }

    /// Due timers, then one audio packet every 20 ms once connected.
    fn tick(&mut self, now: Instant, to_sfu: &mut Vec<(SocketAddr, Vec<u8>)>) {
        self.rtc.handle_input(Input::Timeout(now)).unwrap();
        if let Some(mid) = self.audio_mid
            && self.rtc.is_connected()
        {
            while now >= self.next_audio {
                let pt = self
                    .rtc
                    .codec_config()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt())
                    .unwrap();
                let ext = ExtensionValues {
                    audio_level: Some(-30),
                    voice_activity: Some(true),
                    ..ExtensionValues::default()
                };
                let seq = self.audio_seq;
                self.audio_seq += 1;
                let ts = (seq as u32).wrapping_mul(960);
                if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    stream.write_rtp(
                        RtpWrite::new(pt, seq.into(), ts, now, vec![0x5A; 80]).ext_vals(ext),
                    );
                }
                self.next_audio += AUDIO_EVERY;
            }
        }
        self.drain(now, to_sfu);
    }

    fn received_total(&self) -> u64 {
        self.received.values().sum()
    }

    fn tracks(&self) -> Option<&Vec<surge_sfu_proto::protocol::TrackInfo>> {
        self.messages.iter().rev().find_map(|m| match m {
            ServerMessage::Tracks { tracks } => Some(tracks),
            _ => None,
        })
    }

    fn saw(&self, f: impl Fn(&ServerMessage) -> bool) -> bool {
        self.messages.iter().any(f)
    }
}

/// A switchboard, its clients and a virtual clock.
struct Net {
    sb: Switchboard,
    load: Arc<TestLoad>,
    clients: Vec<Client>,
    now: Instant,
    events: Vec<Event>,
    counters: Counters,
    next_id: u64,
}

impl Net {
    fn new(max_room_participants: usize, participant_timeout: Duration) -> Self {
        let load = Arc::new(TestLoad::default());
        load.max_participants.store(100, Ordering::Relaxed);
        let config = SwitchboardConfig {
            public_addr: SocketAddr::from(SFU),
            max_room_participants,
            participant_timeout,
        };
        Self {
            sb: Switchboard::new(config, Box::new(LoadHandle(load.clone()))),
            load,
            clients: Vec::new(),
            now: Instant::now(),
            events: Vec::new(),
            counters: Counters::default(),
            next_id: 0x1000,
        }
    }

    /// Offers (audio when `publish`, always the `surge` channel) and joins `room`.
    fn try_join(&mut self, room: &str, publish: bool) -> Result<usize, JoinRefusal> {
        let index = self.clients.len();
        let addr = SocketAddr::from(([10, 0, 1, index as u8 + 1], 6000));
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let audio_mid = publish
            .then(|| change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        change.add_channel("surge".to_owned());
        let (offer, pending) = change.apply().unwrap();
        self.next_id += 1;
        let id = ParticipantId(self.next_id);
        let join = Join {
            room: room.to_owned(),
            participant: id,
            info: ParticipantInfo {
                user: format!("user-{index}"),
                name: format!("Client {index}"),
                publish,
                subscribe: true,
            },
            offer,
        };
        let answer = self.sb.handle_join(self.now, join)?;
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.clients.push(Client {
            rtc,
            addr,
            id,
            channel: None,
            audio_mid,
            messages: Vec::new(),
            received: HashMap::new(),
            offers_answered: 0,
            next_audio: self.now,
            audio_seq: 1,
            gone: false,
        });
        Ok(index)
    }

    fn join(&mut self, room: &str, publish: bool) -> usize {
        self.try_join(room, publish).expect("join admitted")
    }

    /// One step of virtual time: clients tick, datagrams cross until the network is quiet.
    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let mut to_sfu = Vec::new();
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            c.tick(now, &mut to_sfu);
        }
        for _ in 0..100 {
            for (source, data) in to_sfu.drain(..) {
                self.sb.handle_datagram(now, source, &data);
            }
            if self.sb.poll_timeout().is_some_and(|t| t <= now) {
                self.sb.handle_timeout(now);
            }
            let mut delivered = false;
            while let Some(t) = self.sb.poll_transmit(now) {
                delivered = true;
                let Some(c) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.addr == t.destination && !c.gone)
                else {
                    continue;
                };
                let receive =
                    Receive::new(Protocol::Udp, t.source, t.destination, &t.contents).unwrap();
                c.rtc.handle_input(Input::Receive(now, receive)).unwrap();
                c.drain(now, &mut to_sfu);
            }
            if !delivered && to_sfu.is_empty() {
                break;
            }
        }
        while let Some(e) = self.sb.poll_event() {
            self.events.push(e);
        }
        let c = self.sb.take_counters();
        self.counters.datagrams += c.datagrams;
        self.counters.packets_in += c.packets_in;
        self.counters.packets_out += c.packets_out;
        self.counters.dropped_garbage += c.dropped_garbage;
        self.counters.dropped_unknown += c.dropped_unknown;
        self.counters.dropped_stun_unknown += c.dropped_stun_unknown;
    }

    /// Steps until `done` holds, at most `limit` of virtual time; panics past it.
    fn run_until(&mut self, limit: Duration, what: &str, done: impl Fn(&Net) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not within {limit:?}: {what}");
            self.step();
        }
    }

    fn run_for(&mut self, time: Duration) {
        let end = self.now + time;
        while self.now < end {
            self.step();
        }
    }

    fn participants(&self) -> u32 {
        self.load.participants.load(Ordering::Relaxed)
    }

    fn rooms(&self) -> u32 {
        self.load.rooms.load(Ordering::Relaxed)
    }
}

const LONG: Duration = Duration::from_secs(5);

#[test]
fn joins_renegotiate_and_audio_reaches_the_others_only() {
    let wall = std::time::Instant::now();
    let mut net = Net::new(50, Duration::from_secs(15));
    let alice = net.join("r", true);
    let bob = net.join("r", false);
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
    let carol = net.join("r", true);
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
    let alice = net.join("r", true);
    let bob = net.join("r", false);
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
    let stays = net.join("r", true);
    let vanishes = net.join("r", true);
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
    let alice = net.join("r", true);
    let bob = net.join("r", false);
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
    net.join("a", true);
    net.join("a", false);
    assert_eq!(net.try_join("a", false).err(), Some(JoinRefusal::RoomFull));
    // Draining: no new rooms, but the hosted room still takes joins (it has room after a
    // leave).
    net.load.draining.store(true, Ordering::Relaxed);
    assert_eq!(net.try_join("b", true).err(), Some(JoinRefusal::Draining));
    let leaver = net.clients[1].id;
    assert!(net.sb.handle_leave(net.now, "a", leaver, "user-1"));
    net.clients[1].gone = true;
    assert!(
        net.try_join("a", false).is_ok(),
        "a draining shard admits joins to its rooms"
    );
    net.load.draining.store(false, Ordering::Relaxed);
    // The shard-wide participant limit.
    net.load.max_participants.store(2, Ordering::Relaxed);
    assert_eq!(net.try_join("c", true).err(), Some(JoinRefusal::ShardFull));
    assert_eq!((net.rooms(), net.participants()), (1, 2));
    // An offer str0m refuses takes no slot.
    net.load.max_participants.store(100, Ordering::Relaxed);
    assert_eq!(net.participants(), 2);
}
