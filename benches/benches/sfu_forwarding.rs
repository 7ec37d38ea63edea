//! The SFU room core's forwarding path: incoming RTP packets per second through
//! `Room::handle_rtp` for one simulcast publisher and 1, 10 or 50 subscribers.
//!
//! - `one_layer`: every subscriber receives the High layer and every packet is a High
//!   packet, so each incoming packet fans out to all subscribers.
//! - `three_layers`: the publisher sends Low, Mid and High (one packet each in turn) and the
//!   subscribers are split across the layers by their estimates, as in a real room: each
//!   packet reaches about a third of them (their size caps differ), the others skip it.
//!
//! Throughput is reported in forwarded packets (one per subscriber reached). The room's
//! timers run as they would (every 100 ms of virtual time, 10 µs per packet); no I/O, no
//! SRTP: this is the cost the core adds per packet, not the end-to-end figure.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use surge_sfu::core::{
    Layer, MediaKind, Mid, Output, ParticipantId, ParticipantInfo, PublishedTrack, Rid, Room,
    RoomConfig, RtpMeta, TrackSource, Vp8Meta,
};

const PUBLISHER: ParticipantId = ParticipantId(1);
const PACKET_GAP: Duration = Duration::from_micros(10);

/// A room with one simulcast publisher and `subscribers` subscribers whose slots are ready
/// and switched onto their layer (`spread`: Low/Mid/High in turn, else all High).
struct Bench {
    room: Room,
    now: Instant,
    mid: Mid,
    seq: [u64; 3],
    ts: [u32; 3],
    picture_id: [u16; 3],
    sent: u64,
    /// Every packet's payload (keyframes' are kept by the room's keyframe cache).
    payload: Arc<[u8]>,
}

impl Bench {
    fn new(subscribers: u64, spread: bool) -> Self {
        let mut config = RoomConfig::default();
        config.max_participants = 1000;
        // Subscribers here send nothing back (no RTCP to report as activity): keep them.
        config.participant_timeout = Duration::from_secs(365 * 24 * 3600);
        let mut room = Room::new(config);
        let now = Instant::now();
        let info = |publish| ParticipantInfo {
            user: "u".into(),
            name: "n".into(),
            publish,
            subscribe: true,
        };
        let mid = Mid::from("v");
        room.join(PUBLISHER, info(true), now).expect("fresh room");
        room.publish_track(
            PUBLISHER,
            PublishedTrack {
                mid,
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                rids: vec![Rid::from("q"), Rid::from("h"), Rid::from("f")],
            },
            now,
        )
        .expect("publisher may publish");
        for s in 0..subscribers {
            room.join(ParticipantId(100 + s), info(false), now)
                .expect("room is large enough");
        }
        let mut bench = Self {
            room,
            now,
            mid,
            seq: [1_000, 50_000, 90_000],
            ts: [0, 1 << 20, 1 << 30],
            picture_id: [0, 100, 200],
            sent: 0,
            payload: vec![0; 1100].into(),
        };
        let mut slots = Vec::new();
        while let Some(output) = bench.room.poll_output() {
            if let Output::NeedSlot {
                subscriber, track, ..
            } = output
            {
                slots.push((subscriber, track));
            }
        }
        for (i, (subscriber, track)) in slots.into_iter().enumerate() {
            let out_mid = Mid::from(format!("o{i}").as_str());
            bench
                .room
                .slot_ready(subscriber, track, out_mid, now)
                .expect("offered slot");
            // Packets come much faster than real video (to keep the timers' share of the
            // cost realistic per packet), so measured layer rates are huge: estimates that
            // fit any layer, and sizes that put a third of the subscribers on each layer.
            bench
                .room
                .handle_bandwidth(subscriber, 1_000_000_000_000, now);
            let height = match (spread, i % 3) {
                (false, _) | (true, 2) => 720,
                (true, 1) => 360,
                (true, _) => 180,
            };
            bench.room.set_max_height(subscriber, out_mid, height, now);
        }
        // One keyframe per layer switches everybody onto their layer.
        for layer in Layer::ALL {
            bench.packet(layer, true, &mut |f| {
                black_box(f);
            });
        }
        bench.drain();
        bench
    }

    fn drain(&mut self) {
        while let Some(output) = self.room.poll_output() {
            black_box(output);
        }
    }

    /// One packet of `layer` through the room; returns how many subscribers it reached.
    #[inline]
    fn packet(
        &mut self,
        layer: Layer,
        keyframe: bool,
        out: &mut impl FnMut(surge_sfu::core::Forward),
    ) -> usize {
        let i = layer.index();
        self.sent += 1;
        self.now += PACKET_GAP;
        self.seq[i] += 1;
        // A frame of 5 packets: the timestamp and picture id advance every fifth packet.
        if self.seq[i].is_multiple_of(5) {
            self.ts[i] = self.ts[i].wrapping_add(3000);
            self.picture_id[i] = (self.picture_id[i] + 1) % 32_768;
        }
        let meta = RtpMeta {
            seq: self.seq[i],
            ts: self.ts[i],
            marker: self.seq[i] % 5 == 4,
            keyframe,
            audio_level: None,
            vp8: Some(Vp8Meta {
                picture_id: Some(self.picture_id[i]),
                tl0_pic_idx: Some(0),
            }),
            payload_len: 1100,
            payload_type: 96,
        };
        let n = self.room.handle_rtp(
            PUBLISHER,
            self.mid,
            Some(layer),
            &meta,
            &self.payload,
            self.now,
            out,
        );
        if self.room.poll_timeout().is_some_and(|t| t <= self.now) {
            self.room.handle_timeout(self.now);
            self.drain();
        }
        n
    }
}

fn forwarding(c: &mut Criterion) {
    let mut group = c.benchmark_group("sfu_forwarding");
    for subscribers in [1u64, 10, 50] {
        let mut bench = Bench::new(subscribers, false);
        let (sent, forwarded) = (bench.sent, bench.room.stats().forwarded_packets);
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(BenchmarkId::new("one_layer", subscribers), |b| {
            b.iter(|| {
                bench.packet(Layer::High, false, &mut |f| {
                    black_box(f);
                })
            })
        });
        // The figure means something only if every packet reached every subscriber.
        let expected = (bench.sent - sent) * subscribers;
        assert_eq!(bench.room.stats().forwarded_packets - forwarded, expected);
    }
    for subscribers in [3u64, 10, 50] {
        let mut bench = Bench::new(subscribers, true);
        let (sent, forwarded) = (bench.sent, bench.room.stats().forwarded_packets);
        // Three packets per iteration (one per layer), each reaching its third.
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(BenchmarkId::new("three_layers", subscribers), |b| {
            b.iter(|| {
                let mut n = 0;
                for layer in Layer::ALL {
                    n += bench.packet(layer, false, &mut |f| {
                        black_box(f);
                    });
                }
                n
            })
        });
        // Each subscriber got a third of the packets (its layer's).
        let got = bench.room.stats().forwarded_packets - forwarded;
        assert_eq!(got, (bench.sent - sent) / 3 * subscribers);
    }
    group.finish();
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
