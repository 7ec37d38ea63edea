//! The whole sans-IO SFU in memory: a `Switchboard` with real str0m client sessions on a
//! virtual clock (the harness of `sfu-proto/tests/switchboard.rs`), no sockets. Only the
//! time spent inside the switchboard's calls is counted (the clients' own work is not):
//! `handle_datagram` (SRTP decrypt, the room's decision, the writes to subscribers' sessions),
//! `handle_timeout` (session and room timers) and `poll_transmit` (draining the sessions that
//! got writes: pacing, SRTP encrypt, RTCP, TWCC).
//!
//! - `1x30`: one room, one simulcast publisher (VP8 q/h/f + Opus), 30 subscribers.
//! - `10x(2+6)`: ten rooms, each two publishers and six subscribers.
//! - `audio_3x30`: three rooms of thirty participants that all publish Opus.
//!
//! Throughput is in forwarded packets (one per subscriber reached); the inverse of the time
//! per element is forwarded packets per CPU-second of the switchboard. After each case a line
//! on stderr gives the share of each call in that time and the session timeouts per packet.
//!
//! Run: `cargo bench -p surge-benches --bench switchboard`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "../../sfu-proto/tests/support/mod.rs"]
mod support;

use support::{Net, Publish, SwitchboardTime};

/// Virtual time before measuring: ICE, DTLS, renegotiation, first keyframes, BWE start-up.
const WARM_UP: Duration = Duration::from_secs(4);

fn scenario(rooms: usize, publishers: usize, subscribers: usize, publish: Publish) -> Net {
    let mut net = Net::new(100, Duration::from_secs(3600));
    for r in 0..rooms {
        let room = format!("room-{r}");
        for _ in 0..publishers {
            net.join(&room, publish);
        }
        for _ in 0..subscribers {
            net.join(&room, Publish::Nothing);
        }
    }
    net.run_for(WARM_UP);
    net
}

fn measure(c: &mut Criterion, name: &str, mut net: Net) {
    let mut group = c.benchmark_group("switchboard");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    let start_counters = net.counters;
    let start_time = net.time;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let forwarded = net.counters.packets_out;
            let spent = net.time.total();
            while net.counters.packets_out < forwarded + iters {
                net.step();
            }
            let done = net.counters.packets_out - forwarded;
            // Scaled to exactly `iters` packets (the last step overshoots a little).
            (net.time.total() - spent).mul_f64(iters as f64 / done as f64)
        });
    });
    group.finish();
    let packets = net.counters.packets_out - start_counters.packets_out;
    let received = net.counters.packets_in - start_counters.packets_in;
    let timeouts = net.counters.session_timeouts - start_counters.session_timeouts;
    let time = SwitchboardTime {
        datagrams: net.time.datagrams - start_time.datagrams,
        timeouts: net.time.timeouts - start_time.timeouts,
        transmits: net.time.transmits - start_time.transmits,
    };
    let total = time.total().as_secs_f64();
    let per = |d: Duration| d.as_secs_f64() / packets.max(1) as f64 * 1e9;
    eprintln!(
        "{name}: {packets} forwarded ({received} received), {:.0} forwarded per switchboard CPU-second; \
         per forwarded packet: {:.0} ns in handle_datagram, {:.0} ns in handle_timeout, {:.0} ns in poll_transmit; \
         {:.2} session timeouts per packet",
        packets as f64 / total,
        per(time.datagrams),
        per(time.timeouts),
        per(time.transmits),
        timeouts as f64 / packets.max(1) as f64,
    );
    assert!(packets > 0, "nothing was forwarded");
}

fn bench(c: &mut Criterion) {
    measure(c, "1x30", scenario(1, 1, 30, Publish::AudioVideo));
    measure(c, "10x(2+6)", scenario(10, 2, 6, Publish::AudioVideo));
    measure(c, "audio_3x30", scenario(3, 30, 0, Publish::Audio));
}

criterion_group!(benches, bench);
criterion_main!(benches);
