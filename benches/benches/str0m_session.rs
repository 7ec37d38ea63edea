//! What str0m 0.25 costs Surge per RTP packet on the forwarding path, in user space, SRTP
//! included: two real `Rtc`s connected in memory (ICE, DTLS, SRTP keys from the handshake)
//! and driven on a virtual clock, with no sockets.
//!
//! - `egress/write_rtp+poll/1`: the SFU side (built from `surge_sfu::session`, as the shard
//!   builds it: RTP mode, ICE lite, BWE from 1 Mbps with the 100 kbps..2.5 Mbps target)
//!   writes one 1,100-byte VP8 packet to its send-only m-line the way `write_forward` does
//!   (`stream_tx_by_mid(..).write_rtp(..)`, nackable, a VP8 picture-id patch; the stream
//!   got its RTX SSRC from the negotiation), then polls until `Output::Timeout`, collecting
//!   the SRTP datagrams. str0m answers a write with a timeout that is already due (its
//!   pacer releases the packet on `Input::Timeout`): with the worker's rule
//!   (`session::Drain`, shared with the shard) the bench feeds it at once and polls
//!   on, so the packet leaves within the step. Before each write the
//!   virtual clock moves one packet gap (10 ms) and every timer that fell due meanwhile is
//!   fired with `Input::Timeout` as a worker would, so pacing, TWCC, RTCP, stats and BWE
//!   ticks are paid for in the figure, per packet.
//! - `egress/write_rtp+poll/8`: the same with eight packets written back to back and one
//!   poll (a worker that drained a receive batch); throughput still counts packets.
//! - `ingress/handle_input`: the SFU side takes one SRTP datagram from the client (its
//!   ICE-controlling, RTP-mode peer) with `Input::Receive` and polls until the
//!   `Event::RtpPacket` and `Output::Timeout`; the client's RTCP and STUN between two RTP
//!   packets count toward the packet that follows them.
//!
//! Not measured: syscalls (no socket is touched; a datagram is only moved into a `Vec`),
//! the room core (see `sfu_forwarding`), and the peer's side of the exchange. Every 32
//! packets, outside the timed part (`iter_custom`), the datagrams are delivered to the other
//! side and its replies (receiver reports, TWCC and NACK feedback, STUN) fed back, so the
//! send-side state stays realistic and bounded. The ingress datagrams are produced by the
//! client in chunks outside the timed part too, each packet fresh (SRTP rejects replays).
//!
//! After each case a line on stderr tells how many packets went through, over how much
//! virtual time, and how many timeouts the SFU side handled per packet; the case panics if
//! a packet went missing or the session dropped while measuring.
//!
//! Run: `cargo bench -p surge-benches --bench str0m_session`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Receive, Transmit};
use str0m::rtp::{RtpWrite, Vp8Descriptor};
use str0m::{Candidate, Event, Input, Rtc};
use surge_sfu::session;

/// The SFU's and the client's made-up loopback addresses: nothing is bound to them.
const SFU_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5000);
const CLIENT_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 6000);
const PAYLOAD_LEN: usize = 1_100;
/// One packet every 10 ms: 0.9 Mbps of payload, under what the pacer lets out at the
/// initial estimate (1.1 × 1 Mbps), so its queue stays short without relying on BWE growth.
const PACKET_GAP: Duration = Duration::from_millis(10);
/// Packets between two (untimed) deliveries to the other side and back.
const SHUTTLE_EVERY: u64 = 32;
/// Packets the client encrypts per (untimed) ingress chunk: 2.56 s of virtual time, so the
/// SFU's STUN answers and feedback reach the client well before ICE gives up on it.
const INGRESS_CHUNK: u64 = 256;
/// Packets pushed through before measuring: the session is past its start-up (BWE's
/// initial probes, the first reports) by then.
const WARM_UP_PACKETS: u64 = 1_000;

/// One `Rtc` and the clock it has seen.
struct Endpoint {
    rtc: Rtc,
    /// The last time handed to `rtc`; str0m's inputs must not go back in time.
    clock: Instant,
    /// When `rtc` last asked to be woken.
    wake: Instant,
    /// Scheduled wake-ups: `Input::Timeout`s for a timer that fell due while waiting.
    wakes: u64,
    /// `Input::Timeout`s for a timeout already due when polled.
    due: u64,
}

/// A datagram on its way, with the virtual time it left.
struct InFlight {
    at: Instant,
    transmit: Transmit,
}

impl Endpoint {
    fn new(rtc: Rtc, now: Instant) -> Self {
        Self {
            rtc,
            clock: now,
            wake: now,
            wakes: 0,
            due: 0,
        }
    }

    /// Polls until `Output::Timeout` in the future: datagrams go to `out`, events to
    /// `on_event`. A timeout already due (the pacer releasing what was just written) is
    /// handled at once, a few rounds at most, as Surge's worker does.
    fn drain(&mut self, out: &mut Vec<InFlight>, on_event: &mut impl FnMut(Event)) {
        let mut drain = session::Drain::new(self.clock);
        loop {
            let polled = drain.next(&mut self.rtc).expect("poll_output");
            // As the worker does: due timeouts move the session's clock forward.
            self.clock = drain.now();
            match polled {
                session::Polled::Timeout(at) => {
                    self.due += u64::from(drain.timeouts());
                    self.wake = at;
                    return;
                }
                session::Polled::Transmit(transmit) => out.push(InFlight {
                    at: self.clock,
                    transmit,
                }),
                session::Polled::Event(event) => on_event(event),
            }
        }
    }

    /// Fires, in order and at their own times, the timers that fell due up to `now`.
    fn run_until(
        &mut self,
        now: Instant,
        out: &mut Vec<InFlight>,
        on_event: &mut impl FnMut(Event),
    ) {
        while self.wake <= now {
            // A timer already in the past (str0m asks to be polled right away) fires now.
            let at = self.wake.max(self.clock);
            self.clock = self.clock.max(at);
            self.wakes += 1;
            self.rtc
                .handle_input(Input::Timeout(at))
                .expect("handle_input(Timeout)");
            self.drain(out, on_event);
            if self.wake <= at {
                // Asked for the same instant again: move on rather than spin.
                break;
            }
        }
        self.clock = self.clock.max(now);
    }

    /// Hands one datagram from the other side to `rtc`, at `now` or later.
    fn receive(&mut self, now: Instant, datagram: &Transmit) {
        self.clock = self.clock.max(now);
        let receive = Receive::new(
            datagram.proto,
            datagram.source,
            datagram.destination,
            &datagram.contents[..],
        )
        .expect("a parsable datagram");
        self.rtc
            .handle_input(Input::Receive(self.clock, receive))
            .expect("handle_input(Receive)");
    }

    fn vp8_pt(&self) -> Pt {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
            .expect("VP8 negotiated")
    }
}

fn ignore_event(event: Event) {
    black_box(event);
}

/// True for an RTP (not RTCP, not STUN, not DTLS) datagram: SRTP leaves the header clear.
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() > 12 && datagram[0] >> 6 == 2 && !(192..=223).contains(&datagram[1])
}

/// An SFU-side and a client-side `Rtc` connected over ICE, DTLS and SRTP, with one video
/// m-line in the direction the client offers.
struct Pair {
    sfu: Endpoint,
    client: Endpoint,
    mid: Mid,
    now: Instant,
}

impl Pair {
    fn connect(client_direction: Direction) -> Self {
        let start = Instant::now();
        let sfu_addr = SocketAddr::from(SFU_ADDR);
        let client_addr = SocketAddr::from(CLIENT_ADDR);

        let mut client = Rtc::builder().set_rtp_mode(true).build(start);
        client.add_local_candidate(Candidate::host(client_addr, "udp").expect("candidate"));
        let mut change = client.sdp_api();
        let mid = change.add_media(
            MediaKind::Video,
            client_direction,
            Some("bench".into()),
            None,
            None,
        );
        let (offer, pending) = change.apply().expect("an offer");
        // Through text, as it would come over signalling.
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).expect("offer parses");

        // As the shard builds it.
        let mut sfu = session::rtc_config().build(start);
        sfu.add_local_candidate(Candidate::host(sfu_addr, "udp").expect("candidate"));
        let answer = sfu.sdp_api().accept_offer(offer).expect("an answer");
        sfu.bwe()
            .set_bitrate(session::MIN_BITRATE, session::START_DESIRED_BITRATE);
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");

        let mut pair = Self {
            sfu: Endpoint::new(sfu, start),
            client: Endpoint::new(client, start),
            mid,
            now: start,
        };
        let (mut sfu_up, mut client_up) = (false, false);
        let mut to_client = Vec::new();
        let mut to_sfu = Vec::new();
        for _ in 0..10_000 {
            pair.now += Duration::from_millis(1);
            let now = pair.now;
            pair.sfu.run_until(now, &mut to_client, &mut |e| {
                sfu_up |= matches!(e, Event::Connected);
            });
            pair.client.run_until(now, &mut to_sfu, &mut |e| {
                client_up |= matches!(e, Event::Connected);
            });
            // Zero latency: ping-pong within the same instant until both are quiet.
            while !to_client.is_empty() || !to_sfu.is_empty() {
                for d in std::mem::take(&mut to_sfu) {
                    pair.sfu.receive(now, &d.transmit);
                    pair.sfu.drain(&mut to_client, &mut |e| {
                        sfu_up |= matches!(e, Event::Connected);
                    });
                }
                for d in std::mem::take(&mut to_client) {
                    pair.client.receive(now, &d.transmit);
                    pair.client.drain(&mut to_sfu, &mut |e| {
                        client_up |= matches!(e, Event::Connected);
                    });
                }
            }
            if sfu_up && client_up {
                return pair;
            }
        }
        panic!("not connected after 10 s of virtual time (sfu {sfu_up}, client {client_up})");
    }
}

/// The SFU side sending to the client.
struct Egress {
    pair: Pair,
    pt: Pt,
    payload: Arc<[u8]>,
    vp8: Vp8Descriptor,
    seq: u64,
    ts: u32,
    picture_id: u16,
    /// What the SFU sent since the last shuttle, for the client.
    to_client: Vec<InFlight>,
    to_sfu: Vec<InFlight>,
    /// RTP packets the client received: the check that the pacer lets everything out.
    delivered: u64,
    sent_since_shuttle: u64,
    /// Virtual time once connected.
    start: Instant,
}

impl Egress {
    fn new() -> Self {
        let pair = Pair::connect(Direction::RecvOnly);
        let pt = pair.sfu.vp8_pt();
        let start = pair.now;
        // A VP8 payload descriptor with a 15-bit picture id and TL0PICIDX, then filler.
        let mut payload = vec![0x5a; PAYLOAD_LEN];
        payload[..6].copy_from_slice(&[0x90, 0xe0, 0x80, 0x01, 0x00, 0x00]);
        let vp8 = Vp8Descriptor::parse(&payload).expect("a VP8 descriptor");
        let mut egress = Self {
            pair,
            pt,
            payload: payload.into(),
            vp8,
            seq: 1,
            ts: 0,
            picture_id: 0,
            to_client: Vec::with_capacity(256),
            to_sfu: Vec::with_capacity(256),
            delivered: 0,
            sent_since_shuttle: 0,
            start,
        };
        for _ in 0..WARM_UP_PACKETS {
            egress.step(1);
            egress.maybe_shuttle();
        }
        egress.check();
        egress
    }

    /// Panics unless the client got (nearly) every packet written so far and the session
    /// is still up: a growing pacer queue or a dropped session would make the figure lie.
    fn check(&mut self) {
        self.shuttle();
        let written = self.seq - 1;
        assert!(
            self.delivered + 16 >= written && self.pair.sfu.rtc.is_connected(),
            "the client got {} of {written} packets (connected: {})",
            self.delivered,
            self.pair.sfu.rtc.is_connected(),
        );
    }

    /// The timed part: `batch` packets written, then one poll to `Output::Timeout`.
    fn step(&mut self, batch: u64) {
        let sfu = &mut self.pair.sfu;
        self.pair.now += PACKET_GAP * batch as u32;
        let now = self.pair.now;
        sfu.run_until(now, &mut self.to_client, &mut ignore_event);
        for _ in 0..batch {
            // A 30 fps frame of 4 packets: the marker on the last.
            let marker = self.seq.is_multiple_of(4);
            let mut write =
                RtpWrite::new(self.pt, self.seq.into(), self.ts, now, self.payload.clone())
                    .marker(marker)
                    .nackable(true);
            if let Ok(patch) = self.vp8.patch().picture_id(self.picture_id).build() {
                write = write.vp8_patch(patch);
            }
            let mut api = sfu.rtc.direct_api();
            let stream = api
                .stream_tx_by_mid(self.pair.mid, None)
                .expect("a send stream");
            stream.write_rtp(write);
            self.seq += 1;
            if marker {
                self.ts = self.ts.wrapping_add(3_000);
                self.picture_id = (self.picture_id + 1) & 0x7fff;
            }
        }
        sfu.drain(&mut self.to_client, &mut ignore_event);
        self.sent_since_shuttle += batch;
    }

    fn maybe_shuttle(&mut self) {
        if self.sent_since_shuttle >= SHUTTLE_EVERY {
            self.shuttle();
        }
    }

    /// Untimed: the client takes what the SFU sent (each at the time it left) and its
    /// feedback goes back to the SFU now, as if it had taken that long to arrive.
    fn shuttle(&mut self) {
        let client = &mut self.pair.client;
        let mut delivered = 0;
        let mut count = |e: Event| {
            if matches!(e, Event::RtpPacket(_)) {
                delivered += 1;
            }
        };
        for d in self.to_client.drain(..) {
            client.run_until(d.at, &mut self.to_sfu, &mut count);
            client.receive(d.at, &d.transmit);
            client.drain(&mut self.to_sfu, &mut count);
        }
        client.run_until(self.pair.now, &mut self.to_sfu, &mut count);
        self.delivered += delivered;
        let sfu = &mut self.pair.sfu;
        for d in self.to_sfu.drain(..) {
            sfu.receive(self.pair.now, &d.transmit);
            sfu.drain(&mut self.to_client, &mut ignore_event);
        }
        self.sent_since_shuttle = 0;
    }
}

/// The client sending to the SFU side.
struct Ingress {
    pair: Pair,
    pt: Pt,
    payload: Arc<[u8]>,
    seq: u64,
    ts: u32,
    /// The client's time: ahead of the SFU's by up to one chunk.
    client_now: Instant,
    /// Datagrams from the client, oldest first, not yet given to the SFU.
    queue: VecDeque<InFlight>,
    /// RTP datagrams in `queue`.
    rtp_queued: u64,
    to_client: Vec<InFlight>,
    scratch: Vec<InFlight>,
    received: u64,
    /// Virtual time once connected.
    start: Instant,
}

impl Ingress {
    fn new() -> Self {
        let pair = Pair::connect(Direction::SendOnly);
        let pt = pair.client.vp8_pt();
        let mut payload = vec![0x5a; PAYLOAD_LEN];
        payload[..6].copy_from_slice(&[0x90, 0xe0, 0x80, 0x01, 0x00, 0x00]);
        let client_now = pair.now;
        let mut ingress = Self {
            pair,
            pt,
            payload: payload.into(),
            seq: 1,
            ts: 0,
            client_now,
            queue: VecDeque::new(),
            rtp_queued: 0,
            to_client: Vec::with_capacity(256),
            scratch: Vec::with_capacity(256),
            received: 0,
            start: client_now,
        };
        while ingress.seq <= WARM_UP_PACKETS {
            ingress.generate(INGRESS_CHUNK);
            while ingress.rtp_queued > 0 {
                ingress.step();
            }
        }
        ingress.check();
        ingress
    }

    /// Untimed: the client gets the SFU's feedback, then encrypts `packets` new ones.
    fn generate(&mut self, packets: u64) {
        let client = &mut self.pair.client;
        for d in self.to_client.drain(..) {
            client.receive(d.at, &d.transmit);
            client.drain(&mut self.scratch, &mut ignore_event);
        }
        for _ in 0..packets {
            self.client_now += PACKET_GAP;
            client.run_until(self.client_now, &mut self.scratch, &mut ignore_event);
            let marker = self.seq.is_multiple_of(4);
            let write = RtpWrite::new(
                self.pt,
                self.seq.into(),
                self.ts,
                self.client_now,
                self.payload.clone(),
            )
            .marker(marker)
            .nackable(true);
            let mut api = client.rtc.direct_api();
            api.stream_tx_by_mid(self.pair.mid, None)
                .expect("a send stream")
                .write_rtp(write);
            client.drain(&mut self.scratch, &mut ignore_event);
            self.seq += 1;
            if marker {
                self.ts = self.ts.wrapping_add(3_000);
            }
        }
        for d in self.scratch.drain(..) {
            if is_rtp(&d.transmit.contents) {
                self.rtp_queued += 1;
            }
            self.queue.push_back(d);
        }
    }

    /// Panics unless the SFU got every packet the client sent so far (but the one its
    /// pacer may still hold) and the session is still up.
    fn check(&self) {
        let written = self.seq - 1;
        assert!(
            self.received + self.rtp_queued + 1 >= written && self.pair.sfu.rtc.is_connected(),
            "the SFU got {} of {written} packets (connected: {})",
            self.received,
            self.pair.sfu.rtc.is_connected(),
        );
    }

    /// The timed part: datagrams to the SFU up to and including the next RTP one.
    fn step(&mut self) {
        let sfu = &mut self.pair.sfu;
        let mut got = 0;
        while let Some(d) = self.queue.pop_front() {
            let rtp = is_rtp(&d.transmit.contents);
            sfu.run_until(d.at, &mut self.to_client, &mut ignore_event);
            sfu.receive(d.at, &d.transmit);
            sfu.drain(&mut self.to_client, &mut |e| {
                if let Event::RtpPacket(packet) = e {
                    got += 1;
                    black_box(packet);
                }
            });
            self.pair.now = self.pair.now.max(d.at);
            if rtp {
                self.rtp_queued -= 1;
                break;
            }
        }
        self.received += got;
    }
}

fn bench_egress(c: &mut Criterion) {
    let mut group = c.benchmark_group("egress");
    for batch in [1_u64, 8] {
        let mut egress = Egress::new();
        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::new("write_rtp+poll", batch), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let run = (iters - done).min(SHUTTLE_EVERY / batch);
                    let start = Instant::now();
                    for _ in 0..run {
                        egress.step(batch);
                    }
                    timed += start.elapsed();
                    egress.maybe_shuttle();
                    done += run;
                }
                timed
            });
        });
        egress.check();
        let packets = egress.seq - 1;
        eprintln!(
            "  egress/{batch}: {packets} packets over {:.0} s of virtual time, all delivered; \
             per packet, {:.2} SFU wake-ups and {:.2} already-due timeouts",
            egress.pair.now.duration_since(egress.start).as_secs_f64(),
            egress.pair.sfu.wakes as f64 / packets as f64,
            egress.pair.sfu.due as f64 / packets as f64,
        );
    }
    group.finish();
}

fn bench_ingress(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingress");
    let mut ingress = Ingress::new();
    group.throughput(Throughput::Elements(1));
    group.bench_function("handle_input", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                if ingress.rtp_queued == 0 {
                    ingress.generate(INGRESS_CHUNK);
                }
                let run = (iters - done).min(ingress.rtp_queued);
                let start = Instant::now();
                for _ in 0..run {
                    ingress.step();
                }
                timed += start.elapsed();
                done += run;
            }
            timed
        });
    });
    ingress.check();
    eprintln!(
        "  ingress: {} packets over {:.0} s of virtual time, all received; \
         per packet, {:.2} SFU wake-ups and {:.2} already-due timeouts",
        ingress.received,
        ingress.pair.now.duration_since(ingress.start).as_secs_f64(),
        ingress.pair.sfu.wakes as f64 / ingress.received as f64,
        ingress.pair.sfu.due as f64 / ingress.received as f64,
    );
    group.finish();
}

criterion_group!(benches, bench_egress, bench_ingress);
criterion_main!(benches);
