//! Helpers shared by the binary's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};

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

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
