//! The accept loop every Surge HTTP listener runs: bounded in connections (per process and
//! per client address), in time spent sending headers, and in time per request, so a
//! client that trickles bytes (slowloris) or opens sockets by the thousand cannot hold
//! the process's tasks and file descriptors.
//!
//! Only HTTP/1.1 is spoken: browsers reach the API through the Ingress, and the API and
//! the loadgen use HTTP/1.1 clients, so HTTP/2 would only add an unbounded preface read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::ErrorCode;
use crate::client_addr::ProxyList;
use crate::http::HttpError;

/// How long a refused accept (out of file descriptors) waits before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The limits of one HTTP listener (each flag with a `SURGE_…` fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct ListenerConfig {
    /// Seconds a client has to send a request's headers (and longest idle keep-alive);
    /// slower connections are closed.
    #[arg(long, env = "SURGE_HEADER_TIMEOUT_SECS", default_value_t = 20)]
    pub header_timeout_secs: u64,

    /// Seconds from a request's headers to its response's headers, body upload included;
    /// a response that streams (presence events) is not cut once it has started.
    #[arg(long, env = "SURGE_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Most open HTTP connections this process holds per listener; further ones are
    /// answered `503 connection_limit` and closed.
    #[arg(long, env = "SURGE_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: u32,

    /// Most open HTTP connections from one client address (IPv6 by /64); further ones are
    /// answered `429 too_many_connections` and closed. 0 disables. Trusted proxies are
    /// exempt: they carry many clients.
    #[arg(long, env = "SURGE_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: u32,

    /// Peers exempt from the per-address cap (the API's trusted proxies).
    #[arg(skip)]
    pub exempt: ProxyList,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            header_timeout_secs: 20,
            request_timeout_secs: 30,
            max_connections: 8192,
            max_connections_per_ip: 256,
            exempt: ProxyList::default(),
        }
    }
}

impl ListenerConfig {
    fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }
}

/// The key a client address is capped under: IPv6 by /64, which one subscriber usually
/// holds whole.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpNet::new(ip, 64).map_or(ip, |net| net.trunc().addr()),
        },
    }
}

/// Open connections, process-wide and per client address.
struct Slots {
    total: Arc<Semaphore>,
    capacity: u32,
    per_address: Mutex<HashMap<IpAddr, u32>>,
    per_address_max: u32,
    exempt: Vec<IpNet>,
}

/// One admitted connection; dropping it frees its slots.
struct Slot {
    slots: Arc<Slots>,
    key: Option<IpAddr>,
    _permit: OwnedSemaphorePermit,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Process,
    Address,
}

impl Slots {
    fn new(config: &ListenerConfig) -> Arc<Self> {
        let capacity = config.max_connections.max(1);
        Arc::new(Self {
            total: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            per_address: Mutex::new(HashMap::new()),
            per_address_max: config.max_connections_per_ip,
            exempt: config.exempt.0.clone(),
        })
    }

    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Process)?;
        let capped = self.per_address_max > 0 && !self.exempt.iter().any(|n| n.contains(&peer));
        let key = if capped {
            let key = address_key(peer);
            let mut open = self
                .per_address
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = open.entry(key).or_insert(0);
            if *count >= self.per_address_max {
                return Err(Refusal::Address);
            }
            *count += 1;
            Some(key)
        } else {
            None
        };
        Ok(Slot {
            slots: self.clone(),
            key,
            _permit: permit,
        })
    }

    fn open(&self) -> u32 {
        self.capacity
            .saturating_sub(u32::try_from(self.total.available_permits()).unwrap_or(u32::MAX))
    }

    /// Resolves once every connection has ended.
    async fn all_closed(&self) {
        // The semaphore is never closed, so acquiring cannot fail; an error would only
        // mean there is nothing left to wait for.
        let _ = self.total.acquire_many(self.capacity).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self
            .slots
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

/// A canned answer written without waiting, so a refused connection costs no task.
fn refusal_bytes(refusal: Refusal) -> &'static [u8] {
    match refusal {
        Refusal::Process => concat!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n",
            "retry-after: 1\r\nconnection: close\r\ncontent-length: 88\r\n\r\n",
            r#"{"error":{"code":"connection_limit","message":"this server holds too many connections"}}"#,
        )
        .as_bytes(),
        Refusal::Address => concat!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n",
            "retry-after: 1\r\nconnection: close\r\ncontent-length: 92\r\n\r\n",
            r#"{"error":{"code":"too_many_connections","message":"too many connections from your address"}}"#,
        )
        .as_bytes(),
    }
}

fn refuse(stream: &TcpStream, refusal: Refusal) {
    let reason = match refusal {
        Refusal::Process => "process",
        Refusal::Address => "address",
    };
    metrics::counter!("surge_http_connections_refused_total", "reason" => reason).increment(1);
    // Best effort: a fresh socket's send buffer takes these few bytes at once; a client
    // that cannot receive them gets the close alone.
    let _ = stream.try_write(refusal_bytes(refusal));
}

/// Ends a request that has not produced its response headers within `limit`.
async fn request_deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("surge_http_request_timeouts_total").increment(1);
            HttpError::unavailable(
                ErrorCode::RequestTimeout,
                format!(
                    "the request did not complete within {} s (its body included)",
                    limit.as_secs()
                ),
                Duration::from_secs(1),
            )
            .into_response()
        }
    }
}

/// Serves `router` under `config`'s limits until `shutdown` is cancelled, then lets open
/// connections finish their requests for up to `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ListenerConfig,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let router = router.layer(middleware::from_fn_with_state(
        config.request_timeout(),
        request_deadline,
    ));
    let slots = Slots::new(config);
    let header_timeout = config.header_timeout();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: keep serving.
                tracing::warn!(%e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(&stream, refusal);
                continue;
            }
        };
        metrics::gauge!("surge_http_connections").set(f64::from(slots.open()));
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            header_timeout,
            slot,
            shutdown.clone(),
        ));
    }
    drop(listener);
    if tokio::time::timeout(grace, slots.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still running after the shutdown grace period; closing"
        );
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    slot: Slot,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics::counter!("surge_http_header_timeouts_total").increment(1);
        }
        tracing::debug!(%e, %peer, "HTTP connection ended with an error");
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that sends its headers and then stalls its body gets a JSON 503 when the
    /// request timeout passes, and the server goes on serving.
    #[tokio::test]
    async fn a_stalled_body_ends_with_a_timeout_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let router = crate::http::finish_router(
            Router::new()
                .route(
                    "/echo",
                    axum::routing::post(|body: String| async move { body }),
                )
                .route("/ok", axum::routing::get(|| async { "ok" })),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let config = ListenerConfig {
            request_timeout_secs: 1,
            ..ListenerConfig::default()
        };
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { serve(listener, router, &config, shutdown, Duration::from_secs(1)).await }
        });
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nten bytes!")
            .await
            .unwrap();
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer))
            .await
            .expect("answered within the request timeout and some slack")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        let ok = reqwest::get(format!("http://{addr}/ok")).await.unwrap();
        assert_eq!(ok.status(), 200);
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn ipv6_clients_are_capped_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn slots_cap_per_address_and_in_total_and_free_on_drop() {
        let config = ListenerConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            exempt: "10.0.0.0/8".parse().unwrap(),
            ..ListenerConfig::default()
        };
        let slots = Slots::new(&config);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let first = slots.admit(a).unwrap();
        let _second = slots.admit(a).unwrap();
        assert_eq!(slots.admit(a).err(), Some(Refusal::Address));
        let _third = slots.admit(proxy).unwrap();
        assert_eq!(slots.admit(proxy).err(), Some(Refusal::Process));
        assert_eq!(slots.open(), 3);
        drop(first);
        assert_eq!(slots.open(), 2);
        let _again = slots.admit(a).unwrap();
    }

    #[test]
    fn refusals_are_well_formed_json_responses() {
        for refusal in [Refusal::Process, Refusal::Address] {
            let text = std::str::from_utf8(refusal_bytes(refusal)).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{head}");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            let code = json["error"]["code"].as_str().unwrap();
            assert!(
                ErrorCode::parse(code).is_some(),
                "{code} is not an ErrorCode"
            );
        }
    }
}
