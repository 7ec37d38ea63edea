//! Helpers shared by the binary's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The built `surge` binary, with none of the caller's `SURGE_*` settings leaking in and
/// logs at `warn`.
pub fn surge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_surge"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SURGE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn").stdin(Stdio::null());
    cmd
}

/// The ports `free_port` picks from: below Linux's default ephemeral range (32768–60999).
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A loopback port free at the time of asking, for a process the test starts to listen on.
/// Not one the kernel hands out (port 0): that range also serves every outgoing connection
/// (the tests' Redis, PostgreSQL and HTTP clients), which can take the port again before the
/// process binds it ("Address already in use"). Ports below it are only taken by explicit
/// binds; the walk starts at a place of its own per process and call.
pub fn free_port() -> u16 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(977));
    // 7919 is prime and does not divide the span, so the walk visits every port once.
    (0..span)
        .map(|i| PORTS.start + start.wrapping_add(i.wrapping_mul(7919)) % span)
        .filter_map(|p| u16::try_from(p).ok())
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
}
