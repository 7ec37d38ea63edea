//! Attacks on the HTTP listener of a real `surge up` process: a thousand connections that
//! trickle their headers (slowloris) from one address, and the ops paths asked for from
//! the outside. The process keeps answering others, closes the slow connections, and its
//! file descriptors stay bounded.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

mod common;

use common::{free_port, surge};

const ATTACKERS: usize = 1000;
const PER_ADDRESS: usize = 200;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

async fn start(data: &std::path::Path, extra: &[&str]) -> Running {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = surge()
        .current_dir(data)
        .args(["up", "--listen", &addr.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let running = Running { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(addr, "/healthz", None).await.is_err() {
        assert!(Instant::now() < deadline, "surge up did not start in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running
}

/// A complete GET from 127.0.0.2 (another client than the attackers at 127.0.0.1):
/// status and body.
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> std::io::Result<(u16, String)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().unwrap())?;
    let mut stream = socket.connect(addr).await?;
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: surge\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Whether the server has closed `stream` (EOF, reset) or answered it, without waiting:
/// the runtime has recorded the socket's readiness by the time this is asked.
fn closed_or_answered(stream: &TcpStream) -> Option<String> {
    let mut buf = [0u8; 512];
    match stream.try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Ok(0) | Err(_) => Some(String::new()),
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_from_a_thousand_connections_neither_starve_nor_exhaust_the_process() {
    let data = tempfile::tempdir().unwrap();
    let running = start(
        data.path(),
        &[
            "--header-timeout-secs",
            &HEADER_TIMEOUT.as_secs().to_string(),
            "--max-connections-per-ip",
            &PER_ADDRESS.to_string(),
        ],
    )
    .await;
    let baseline = running.open_fds();

    // The attack: every connection sends a request line and then one header byte at a
    // time, never finishing its headers.
    let started = Instant::now();
    let mut slow = Vec::with_capacity(ATTACKERS);
    for _ in 0..ATTACKERS {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: surge\r\nX-Slow: ")
            .await;
        slow.push(Some(stream));
    }

    // Those over the per-address cap are told so at once and closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = 0;
    for entry in &mut slow {
        if let Some(answer) = closed_or_answered(entry.as_ref().unwrap()) {
            assert!(
                answer.is_empty() || answer.contains("too_many_connections"),
                "{answer}"
            );
            refused += 1;
            *entry = None;
        }
    }
    assert!(
        refused >= ATTACKERS - PER_ADDRESS,
        "only {refused} of {ATTACKERS} connections were refused past the per-address cap"
    );
    let during = running.open_fds();
    assert!(
        during <= baseline + PER_ADDRESS + 20,
        "the process holds {during} file descriptors under attack (baseline {baseline})"
    );

    // Everyone else is served promptly while the attackers trickle.
    let mut longest = Duration::ZERO;
    while started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(2) {
        for stream in slow.iter_mut().flatten() {
            let _ = stream.write_all(b"x").await;
        }
        let asked = Instant::now();
        let (status, _) =
            tokio::time::timeout(Duration::from_secs(1), get(running.addr, "/healthz", None))
                .await
                .expect("/healthz answered within 1 s during the attack")
                .unwrap();
        assert_eq!(status, 200);
        longest = longest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The slow ones have been closed by the header timeout although they kept sending.
    let mut still_open = 0;
    for stream in slow.iter_mut().flatten() {
        if closed_or_answered(stream).is_none() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "slow connections outlived the header timeout"
    );
    let after = running.open_fds();
    assert!(
        after <= baseline + 5,
        "{after} file descriptors after the attack (baseline {baseline})"
    );
    eprintln!(
        "slowloris: {refused} refused at once, fds {baseline} -> {during} -> {after}, slowest /healthz {longest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_paths_are_for_operators_only() {
    let data = tempfile::tempdir().unwrap();

    // No admin token, no ops listener: the ops paths do not exist on the public listener.
    let open = start(data.path(), &[]).await;
    for path in ["/metrics", "/v1/sfu/status"] {
        let (status, body) = get(open.addr, path, None).await.unwrap();
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(get(open.addr, "/readyz", None).await.unwrap().0, 200);
    drop(open);

    // With an admin token they need it.
    let data = tempfile::tempdir().unwrap();
    let guarded = start(data.path(), &["--admin-token", "s3cret-admin"]).await;
    let (status, body) = get(guarded.addr, "/metrics", None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("admin_unauthorized"), "{body}");
    let (status, body) = get(guarded.addr, "/metrics", Some("s3cret-admin"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(guarded.addr, "/v1/sfu/status", Some("s3cret-admin"))
            .await
            .unwrap()
            .0,
        200
    );
    drop(guarded);

    // With an ops listener they are served there, and only there.
    let data = tempfile::tempdir().unwrap();
    let ops_port = free_port();
    let ops_addr: SocketAddr = format!("127.0.0.1:{ops_port}").parse().unwrap();
    let split = start(
        data.path(),
        &[
            "--admin-token",
            "s3cret-admin",
            "--ops-listen",
            &ops_addr.to_string(),
        ],
    )
    .await;
    for path in ["/metrics", "/v1/sfu/status"] {
        assert_eq!(
            get(split.addr, path, Some("s3cret-admin")).await.unwrap().0,
            404,
            "{path} on the public listener"
        );
        let (status, body) = get(ops_addr, path, None).await.unwrap();
        assert_eq!(status, 200, "{path} on the ops listener: {body}");
    }
    assert_eq!(get(ops_addr, "/readyz", None).await.unwrap().0, 200);
    assert_eq!(get(ops_addr, "/v1/rooms", None).await.unwrap().0, 404);
}
