//! The `surge` binary as an operator meets it: it starts on embedded defaults, answers its
//! health checks, fails with one clear line on a config that cannot work, and shuts down
//! gracefully on a signal.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, surge};

struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(data: &std::path::Path) -> Running {
    let port = free_port();
    let child = surge()
        .current_dir(data)
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http_get::blocking_get(&format!("{base}/healthz")) {
            assert_eq!(response, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "surge up did not answer /healthz within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Running { child, base }
}

/// A tiny blocking GET so the tests need no async runtime.
mod http_get {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        request("GET", url, "")
    }

    pub fn post_json(url: &str, body: &str) -> std::io::Result<u16> {
        request("POST", url, body)
    }

    fn request(method: &str, url: &str, body: &str) -> std::io::Result<u16> {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = TcpStream::connect(host)?;
        write!(
            stream,
            "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(status)
    }
}

#[cfg(unix)]
fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[cfg(unix)]
fn up_runs_on_embedded_defaults_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let mut running = start_up(data.path());
    assert_eq!(
        http_get::blocking_get(&format!("{}/readyz", running.base)).unwrap(),
        200
    );
    assert_eq!(
        http_get::blocking_get(&format!("{}/metrics", running.base)).unwrap(),
        404,
        "metrics are for operators: an ops listener or the admin token"
    );
    assert_eq!(
        http_get::blocking_get(&format!("{}/no-such-route", running.base)).unwrap(),
        404
    );
    let db: PathBuf = data.path().join("data").join("surge.db");
    assert!(
        db.exists(),
        "the SQLite file is created under ./data/ on first run"
    );
    interrupt(&running.child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "surge up did not stop within 30 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

#[test]
#[cfg(unix)]
fn up_keeps_accounts_across_restarts_on_the_same_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let account = r#"{"email":"Keep.Me@Example.com","password":"correct horse battery","display_name":"Keeper"}"#;
    let login = r#"{"email":"keep.me@example.com","password":"correct horse battery"}"#;
    {
        let running = start_up(data.path());
        let url = format!("{}/v1/accounts", running.base);
        assert_eq!(http_get::post_json(&url, account).unwrap(), 201);
    }
    let running = start_up(data.path());
    let status = http_get::post_json(&format!("{}/v1/sessions", running.base), login).unwrap();
    assert_eq!(
        status, 201,
        "the account made by the first run logs in after a restart"
    );
    let again = http_get::post_json(&format!("{}/v1/accounts", running.base), account).unwrap();
    assert_eq!(again, 409, "and its email is still taken");
}

fn fails_with_one_line(args: &[&str]) -> String {
    let output = surge().args(args).output().unwrap();
    assert!(!output.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    stderr
}

#[test]
fn a_port_in_use_fails_at_start_with_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let stderr = fails_with_one_line(&[
        "up",
        "--listen",
        &addr,
        "--database-url",
        &format!("sqlite://{}/db.sqlite", data.path().display()),
    ]);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_database_fails_at_start_with_one_clear_line() {
    let port = free_port();
    let stderr = fails_with_one_line(&[
        "up",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &format!("postgres://nobody@127.0.0.1:{port}/none"),
    ]);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("surge: "), "{stderr}");
    assert!(
        last.contains("database") || last.contains("127.0.0.1"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_refused_with_usage() {
    let stderr = fails_with_one_line(&["up", "--listen", "nowhere"]);
    assert!(stderr.contains("--listen"), "{stderr}");
    let stderr = fails_with_one_line(&["sfu"]);
    assert!(stderr.contains("--join-token-public-key"), "{stderr}");
    let stderr = fails_with_one_line(&["api"]);
    assert!(stderr.contains("--join-token-private-key"), "{stderr}");
}

/// A shard holds only the public key: given the private one (as its own flag, or in place
/// of the public key) it refuses to start, saying why; a wrong public key for the API's
/// private key is refused too.
#[test]
fn a_shard_refuses_the_join_token_private_key() {
    let keys = surge_cluster::TokenSigner::generate();
    let private = keys.private_key_pem();
    let public = keys.public_key_pem();
    let stderr = fails_with_one_line(&[
        "sfu",
        "--join-token-public-key",
        &public,
        "--join-token-private-key",
        &private,
    ]);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("must hold only the public key"), "{stderr}");
    let stderr = fails_with_one_line(&["sfu", "--join-token-public-key", &private]);
    assert!(stderr.contains("this is a private key"), "{stderr}");
    let stderr = fails_with_one_line(&["sfu", "--join-token-public-key", "not a key"]);
    assert!(stderr.contains("--join-token-public-key"), "{stderr}");
    let other = surge_cluster::TokenSigner::generate().public_key_pem();
    let stderr = fails_with_one_line(&[
        "api",
        "--join-token-private-key",
        &private,
        "--join-token-public-key",
        &other,
    ]);
    assert!(stderr.contains("not the public half"), "{stderr}");
}

#[test]
#[cfg(unix)]
fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = surge()
        .current_dir(data.path())
        .env("RUST_LOG", "info")
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let listening = line.contains(&format!("127.0.0.1:{port}"));
        lines.push(line);
        if listening || lines.len() > 200 {
            break;
        }
    }
    drop(running);
    assert!(!lines.is_empty(), "surge up logged nothing");
    let coloured: Vec<_> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(
        coloured.is_empty(),
        "colour codes in a piped log: {coloured:?}"
    );
}
