//! What the kernel charges a sender per UDP datagram on this machine (not a test): the floor
//! under any SFU's forwarding cost, whatever it does in user space.
//!
//! Sends 1,200-byte datagrams over loopback to 20 receivers (threads that drain their
//! sockets every millisecond, as remote peers would not be woken per packet), one by one
//! with `sendmsg` and then in GSO runs of 2, 4 and 8 datagrams per destination (as the
//! worker sends a subscriber's share of a video frame), and prints the sender thread's CPU
//! time per datagram.
//!
//! `cargo run --release -p surge-sfu --example udp_cost -- [seconds per case]`
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};

#[path = "support/thread_cpu.rs"]
mod thread_cpu;

const RECEIVERS: usize = 20;
const DATAGRAM: usize = 1_200;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2.0);
    let stop = Arc::new(AtomicBool::new(false));
    let mut targets: Vec<SocketAddr> = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..RECEIVERS {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        targets.push(socket.local_addr().unwrap());
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                while socket.recv_from(&mut buf).is_ok() {}
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
    }
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let state = UdpSocketState::new(UdpSockRef::from(&sender)).unwrap();
    println!(
        "{} receivers, {DATAGRAM}-byte datagrams, GSO up to {} segments",
        RECEIVERS,
        state.max_gso_segments()
    );
    let payload = vec![0x5Au8; DATAGRAM * 8];
    for run in [1usize, 2, 4, 8] {
        let run = run.min(state.max_gso_segments());
        let cpu_start = thread_cpu::this_thread();
        let started = Instant::now();
        let mut datagrams = 0u64;
        let mut next = 0usize;
        while started.elapsed().as_secs_f64() < seconds {
            for _ in 0..64 {
                let transmit = Transmit {
                    destination: targets[next % RECEIVERS],
                    ecn: None,
                    contents: &payload[..DATAGRAM * run],
                    segment_size: (run > 1).then_some(DATAGRAM),
                    src_ip: None,
                };
                if state.try_send(UdpSockRef::from(&sender), &transmit).is_ok() {
                    datagrams += run as u64;
                }
                next += 1;
            }
        }
        let cpu = thread_cpu::this_thread() - cpu_start;
        println!(
            "{run} datagram(s) per sendmsg: {:.2} µs of sender CPU per datagram, {:.0} datagrams per CPU-second",
            cpu / datagrams as f64 * 1e6,
            datagrams as f64 / cpu
        );
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
}
