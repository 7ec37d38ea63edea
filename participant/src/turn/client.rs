//! A sans-IO TURN client over UDP (RFC 8656): one allocation with long-term credentials,
//! permissions and channels towards the peers, refreshes before anything expires. The
//! caller moves datagrams between it and a socket (see [`super::socket`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::TurnError;
use super::message::{
    Builder, CHANNEL_MAX, CHANNEL_MIN, Class, Message, Method, TRANSPORT_UDP, TransactionId, attr,
    channel_data, long_term_key, parse_channel_data,
};

/// The first retransmission; each next one waits twice as long, up to [`MAX_RTO`].
const INITIAL_RTO: Duration = Duration::from_millis(250);
const MAX_RTO: Duration = Duration::from_secs(2);
/// A request unanswered this long has failed.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The lifetime asked for (the server's default, RFC 8656 §3.2).
const LIFETIME: u32 = 600;
/// Refresh this long before the allocation expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Permissions last 300 s and channels 600 s (RFC 8656 §9, §12): refresh well before.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
const CHANNEL_REFRESH: Duration = Duration::from_secs(480);
/// Stale-nonce retries in a row before giving up (a server that keeps rejecting).
const MAX_STALE_RETRIES: u32 = 3;

/// Where the allocation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
    },
    Failed(TurnError),
    /// Released (Refresh with lifetime 0 sent).
    Closed,
}

#[derive(Debug, Clone)]
enum Request {
    Allocate,
    Refresh { lifetime: u32 },
    CreatePermission { peers: Vec<IpAddr> },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

struct Transaction {
    request: Request,
    bytes: Vec<u8>,
    started: Instant,
    resend_at: Instant,
    rto: Duration,
}

/// Long-term credentials once the server named its realm and nonce.
struct Auth {
    realm: String,
    nonce: String,
    key: [u8; 16],
}

struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Instant,
}

pub struct TurnClient {
    server: SocketAddr,
    username: String,
    password: String,
    auth: Option<Auth>,
    state: State,
    transactions: HashMap<TransactionId, Transaction>,
    /// Datagrams for the server.
    outbox: VecDeque<Vec<u8>>,
    /// Permission per peer IP: when to refresh it.
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<SocketAddr, Channel>,
    by_number: HashMap<u16, SocketAddr>,
    next_channel: u16,
    refresh_at: Option<Instant>,
    stale_retries: u32,
}

impl TurnClient {
    /// Starts allocating: the first Allocate (unauthenticated, to learn realm and nonce)
    /// is queued.
    pub fn new(server: SocketAddr, username: &str, password: &str, now: Instant) -> Self {
        let mut client = Self {
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            auth: None,
            state: State::Allocating,
            transactions: HashMap::new(),
            outbox: VecDeque::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_number: HashMap::new(),
            next_channel: CHANNEL_MIN,
            refresh_at: None,
            stale_retries: 0,
        };
        client.request(Request::Allocate, now);
        client
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed } => Some(relayed),
            _ => None,
        }
    }

    /// The next datagram for the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// When [`TurnClient::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::Failed(_) | State::Closed) {
            return None;
        }
        let resend = self.transactions.values().map(|t| t.resend_at).min();
        let permissions = self.permissions.values().copied().min();
        let channels = self.channels.values().map(|c| c.refresh_at).min();
        [resend, permissions, channels, self.refresh_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Retransmits, gives up on requests, refreshes what is about to expire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Failed(_) | State::Closed) {
            return;
        }
        let mut failed = Vec::new();
        for (id, t) in &mut self.transactions {
            if now < t.resend_at {
                continue;
            }
            if now.duration_since(t.started) >= TRANSACTION_TIMEOUT {
                failed.push(*id);
                continue;
            }
            self.outbox.push_back(t.bytes.clone());
            t.rto = (t.rto * 2).min(MAX_RTO);
            t.resend_at = now + t.rto;
        }
        for id in failed {
            if let Some(t) = self.transactions.remove(&id) {
                self.timed_out(t.request, now);
            }
        }
        if !matches!(self.state, State::Allocated { .. }) {
            return;
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh_at = None;
            self.request(Request::Refresh { lifetime: LIFETIME }, now);
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, at)| now >= **at)
            .map(|(ip, _)| *ip)
            .collect();
        if !due.is_empty() {
            for ip in &due {
                self.permissions.insert(*ip, now + PERMISSION_REFRESH);
            }
            self.request(Request::CreatePermission { peers: due }, now);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter_mut()
            .filter(|(_, c)| now >= c.refresh_at)
            .map(|(peer, c)| {
                c.refresh_at = now + CHANNEL_REFRESH;
                (*peer, c.number)
            })
            .collect();
        for (peer, channel) in due {
            self.request(Request::ChannelBind { peer, channel }, now);
        }
    }

    fn timed_out(&mut self, request: Request, now: Instant) {
        match request {
            Request::Allocate if self.state == State::Allocating => {
                self.state = State::Failed(TurnError::Timeout {
                    server: self.server,
                });
            }
            // A lost refresh is tried again soon; the allocation has a minute left.
            Request::Refresh { lifetime } if lifetime > 0 => {
                self.refresh_at = Some(now + Duration::from_secs(5));
            }
            other => tracing::debug!(?other, "TURN request unanswered"),
        }
    }

    /// Lets the relay carry traffic to and from `peer`: a permission for its IP and a
    /// channel for its address (until the channel is bound, sends go as Send indications).
    pub fn add_peer(&mut self, peer: SocketAddr, now: Instant) {
        if !matches!(self.state, State::Allocated { .. }) || self.channels.contains_key(&peer) {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(entry) = self.permissions.entry(peer.ip())
        {
            entry.insert(now + PERMISSION_REFRESH);
            self.request(
                Request::CreatePermission {
                    peers: vec![peer.ip()],
                },
                now,
            );
        }
        if self.next_channel > CHANNEL_MAX {
            return;
        }
        let number = self.next_channel;
        self.next_channel += 1;
        self.channels.insert(
            peer,
            Channel {
                number,
                bound: false,
                refresh_at: now + CHANNEL_REFRESH,
            },
        );
        self.by_number.insert(number, peer);
        self.request(
            Request::ChannelBind {
                peer,
                channel: number,
            },
            now,
        );
    }

    /// Wraps `payload` for `peer` into `out` (ChannelData on a bound channel, else a Send
    /// indication); `false` when the relay may not carry it (no allocation, or an unknown
    /// peer: then a permission is asked for, and the caller's retransmission gets through).
    pub fn wrap(
        &mut self,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> bool {
        if !matches!(self.state, State::Allocated { .. }) {
            return false;
        }
        match self.channels.get(&peer) {
            Some(c) if c.bound => {
                channel_data(c.number, payload, out);
                true
            }
            Some(_) => {
                let txid: TransactionId = rand::random();
                *out = Builder::new(Method::Send, Class::Indication, &txid)
                    .xor_address(attr::XOR_PEER_ADDRESS, peer)
                    .attr(attr::DATA, payload)
                    .finish();
                true
            }
            None => {
                self.add_peer(peer, now);
                false
            }
        }
    }

    /// A datagram from the server. Relayed data comes back as the peer it came from and
    /// the payload's range in `data`; everything else (responses, junk) is consumed.
    pub fn handle_input(
        &mut self,
        data: &[u8],
        now: Instant,
    ) -> Option<(SocketAddr, std::ops::Range<usize>)> {
        if let Some((number, range)) = parse_channel_data(data) {
            return self.by_number.get(&number).map(|peer| (*peer, range));
        }
        let message = Message::parse(data).ok()?;
        match message.class {
            Class::Indication if message.method == Method::Data => {
                let peer = message.xor_address(attr::XOR_PEER_ADDRESS)?;
                let payload = message.get(attr::DATA)?;
                // `payload` borrows `data`: turn it into a range of it.
                let start = payload.as_ptr() as usize - data.as_ptr() as usize;
                Some((peer, start..start + payload.len()))
            }
            Class::Success | Class::Error => {
                self.handle_response(&message, now);
                None
            }
            _ => None,
        }
    }

    fn handle_response(&mut self, message: &Message<'_>, now: Instant) {
        let Some(transaction) = self.transactions.get(&message.txid) else {
            return;
        };
        // Once the key is known, a response with a wrong MESSAGE-INTEGRITY is not the
        // server's: drop it and keep waiting (coturn signs its responses).
        if let Some(auth) = &self.auth
            && message.has_integrity()
            && !message.integrity_ok(&auth.key)
        {
            tracing::debug!("TURN response with a bad MESSAGE-INTEGRITY dropped");
            return;
        }
        let request = transaction.request.clone();
        self.transactions.remove(&message.txid);
        if message.class == Class::Success {
            self.stale_retries = 0;
            self.succeeded(request, message, now);
            return;
        }
        let (code, reason) = message.error_code().unwrap_or((0, String::new()));
        match code {
            401 if self.auth.is_none() && matches!(request, Request::Allocate) => {
                let (Some(realm), Some(nonce)) =
                    (message.text(attr::REALM), message.text(attr::NONCE))
                else {
                    self.fail(TurnError::Malformed("a 401 without REALM and NONCE"));
                    return;
                };
                let key = long_term_key(&self.username, &realm, &self.password);
                self.auth = Some(Auth { realm, nonce, key });
                self.request(request, now);
            }
            401 => {
                let realm = self
                    .auth
                    .as_ref()
                    .map(|a| a.realm.clone())
                    .unwrap_or_default();
                self.fail(TurnError::Unauthorized { realm });
            }
            438 if self.stale_retries < MAX_STALE_RETRIES => {
                self.stale_retries += 1;
                if let (Some(auth), Some(nonce)) = (&mut self.auth, message.text(attr::NONCE)) {
                    auth.nonce = nonce;
                }
                self.request(request, now);
            }
            _ => match request {
                Request::Allocate | Request::Refresh { .. } => {
                    self.fail(TurnError::Refused { code, reason });
                }
                other => tracing::debug!(?other, code, reason, "TURN request refused"),
            },
        }
    }

    fn succeeded(&mut self, request: Request, message: &Message<'_>, now: Instant) {
        let lifetime = message.u32_attr(attr::LIFETIME).unwrap_or(LIFETIME);
        match request {
            Request::Allocate => {
                let Some(relayed) = message.xor_address(attr::XOR_RELAYED_ADDRESS) else {
                    self.fail(TurnError::Malformed(
                        "an Allocate success without XOR-RELAYED-ADDRESS",
                    ));
                    return;
                };
                self.state = State::Allocated { relayed };
                self.schedule_refresh(lifetime, now);
            }
            Request::Refresh { lifetime: 0 } => {}
            Request::Refresh { .. } => self.schedule_refresh(lifetime, now),
            Request::CreatePermission { .. } => {}
            Request::ChannelBind { peer, .. } => {
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.bound = true;
                }
            }
        }
    }

    fn schedule_refresh(&mut self, lifetime: u32, now: Instant) {
        let lifetime = Duration::from_secs(u64::from(lifetime));
        let before = if lifetime > REFRESH_MARGIN * 2 {
            lifetime - REFRESH_MARGIN
        } else {
            lifetime / 2
        };
        self.refresh_at = Some(now + before);
    }

    fn fail(&mut self, error: TurnError) {
        tracing::debug!(%error, server = %self.server, "TURN allocation failed");
        self.state = State::Failed(error);
        self.transactions.clear();
    }

    /// Releases the allocation (Refresh with lifetime 0; best effort, not retransmitted).
    pub fn close(&mut self, now: Instant) {
        if matches!(self.state, State::Allocated { .. }) {
            self.request(Request::Refresh { lifetime: 0 }, now);
        }
        self.transactions.clear();
        self.state = State::Closed;
    }

    fn request(&mut self, request: Request, now: Instant) {
        let txid: TransactionId = rand::random();
        let bytes = self.encode(&request, &txid);
        self.outbox.push_back(bytes.clone());
        self.transactions.insert(
            txid,
            Transaction {
                request,
                bytes,
                started: now,
                resend_at: now + INITIAL_RTO,
                rto: INITIAL_RTO,
            },
        );
    }

    fn encode(&self, request: &Request, txid: &TransactionId) -> Vec<u8> {
        let mut b = match request {
            Request::Allocate => Builder::new(Method::Allocate, Class::Request, txid)
                .attr(attr::REQUESTED_TRANSPORT, &[TRANSPORT_UDP, 0, 0, 0])
                .u32_attr(attr::LIFETIME, LIFETIME),
            Request::Refresh { lifetime } => Builder::new(Method::Refresh, Class::Request, txid)
                .u32_attr(attr::LIFETIME, *lifetime),
            Request::CreatePermission { peers } => peers.iter().fold(
                Builder::new(Method::CreatePermission, Class::Request, txid),
                // The port of XOR-PEER-ADDRESS is ignored for permissions.
                |b, ip| b.xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::new(*ip, 0)),
            ),
            Request::ChannelBind { peer, channel } => {
                let mut number = [0u8; 4];
                number[..2].copy_from_slice(&channel.to_be_bytes());
                Builder::new(Method::ChannelBind, Class::Request, txid)
                    .attr(attr::CHANNEL_NUMBER, &number)
                    .xor_address(attr::XOR_PEER_ADDRESS, *peer)
            }
        };
        match &self.auth {
            Some(auth) => {
                b = b
                    .attr(attr::USERNAME, self.username.as_bytes())
                    .attr(attr::REALM, auth.realm.as_bytes())
                    .attr(attr::NONCE, auth.nonce.as_bytes());
                b.finish_with_integrity(&auth.key)
            }
            None => b.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "127.0.0.1:3478";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn sent(client: &mut TurnClient) -> Vec<u8> {
        client
            .poll_transmit()
            .unwrap_or_else(|| panic!("the client sent nothing"))
    }

    fn parsed(bytes: &[u8]) -> Message<'_> {
        Message::parse(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(txid: &TransactionId, code: u16, nonce: &str) -> Vec<u8> {
        let value = [&[0u8, 0, (code / 100) as u8, (code % 100) as u8][..], b"x"].concat();
        Builder::new(Method::Allocate, Class::Error, txid)
            .attr(attr::ERROR_CODE, &value)
            .attr(attr::REALM, b"surge")
            .attr(attr::NONCE, nonce.as_bytes())
            .finish()
    }

    fn allocated(now: Instant) -> (TurnClient, [u8; 16]) {
        let mut c = TurnClient::new(addr(SERVER), "u", "p", now);
        let first = sent(&mut c);
        let first = parsed(&first);
        assert_eq!(first.get(attr::USERNAME), None);
        c.handle_input(&error(&first.txid, 401, "n1"), now);
        let second = sent(&mut c);
        let second = parsed(&second);
        let key = long_term_key("u", "surge", "p");
        assert!(second.integrity_ok(&key));
        assert_eq!(second.text(attr::NONCE).as_deref(), Some("n1"));
        let ok = Builder::new(Method::Allocate, Class::Success, &second.txid)
            .xor_address(attr::XOR_RELAYED_ADDRESS, addr("127.0.0.1:40001"))
            .u32_attr(attr::LIFETIME, 600)
            .finish_with_integrity(&key);
        c.handle_input(&ok, now);
        assert_eq!(c.relayed(), Some(addr("127.0.0.1:40001")));
        (c, key)
    }

    #[test]
    fn allocates_after_the_401_and_relays_both_ways() {
        let now = Instant::now();
        let (mut c, key) = allocated(now);
        let peer = addr("127.0.0.1:5000");
        let mut out = Vec::new();
        // Unknown peer: a permission and a channel are asked for, nothing is sent.
        assert!(!c.wrap(peer, b"x", &mut out, now));
        let permission = sent(&mut c);
        assert_eq!(parsed(&permission).method, Method::CreatePermission);
        let bind = sent(&mut c);
        let bind = parsed(&bind);
        assert_eq!(bind.method, Method::ChannelBind);
        // Before the channel is bound: a Send indication.
        assert!(c.wrap(peer, b"ping", &mut out, now));
        let send = parsed(&out);
        assert_eq!((send.method, send.class), (Method::Send, Class::Indication));
        assert_eq!(send.get(attr::DATA), Some(&b"ping"[..]));
        let bound = Builder::new(Method::ChannelBind, Class::Success, &bind.txid)
            .finish_with_integrity(&key);
        c.handle_input(&bound, now);
        assert!(c.wrap(peer, b"ping", &mut out, now));
        assert_eq!(parse_channel_data(&out), Some((CHANNEL_MIN, 4..8)));
        // Back: ChannelData and a Data indication, both with the peer as source.
        let mut back = Vec::new();
        channel_data(CHANNEL_MIN, b"pong", &mut back);
        assert_eq!(c.handle_input(&back, now), Some((peer, 4..8)));
        let data = Builder::new(Method::Data, Class::Indication, &[3; 12])
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, b"pong")
            .finish();
        let (from, range) = c
            .handle_input(&data, now)
            .unwrap_or_else(|| panic!("no data"));
        assert_eq!((from, &data[range]), (peer, &b"pong"[..]));
        // An unbound channel number is dropped.
        channel_data(CHANNEL_MIN + 9, b"pong", &mut back);
        assert_eq!(c.handle_input(&back, now), None);
    }

    #[test]
    fn refreshes_before_expiry_and_releases_on_close() {
        let now = Instant::now();
        let (mut c, _) = allocated(now);
        let at = c.poll_timeout().unwrap_or_else(|| panic!("no timer"));
        assert_eq!(at, now + Duration::from_secs(540));
        c.handle_timeout(at);
        let refresh = sent(&mut c);
        let refresh = parsed(&refresh);
        assert_eq!(refresh.method, Method::Refresh);
        assert_eq!(refresh.u32_attr(attr::LIFETIME), Some(LIFETIME));
        c.close(at);
        let release = sent(&mut c);
        let release = parsed(&release);
        assert_eq!(release.method, Method::Refresh);
        assert_eq!(release.u32_attr(attr::LIFETIME), Some(0));
        assert_eq!(c.state(), &State::Closed);
    }

    #[test]
    fn a_stale_nonce_is_replaced_and_the_request_sent_again() {
        let now = Instant::now();
        let mut c = TurnClient::new(addr(SERVER), "u", "p", now);
        let first = sent(&mut c);
        c.handle_input(&error(&parsed(&first).txid, 401, "n1"), now);
        let second = sent(&mut c);
        c.handle_input(&error(&parsed(&second).txid, 438, "n2"), now);
        let third = sent(&mut c);
        let third = parsed(&third);
        assert_eq!(third.text(attr::NONCE).as_deref(), Some("n2"));
        assert!(third.integrity_ok(&long_term_key("u", "surge", "p")));
        assert_eq!(c.state(), &State::Allocating);
    }

    #[test]
    fn refused_credentials_fail_with_unauthorized() {
        let now = Instant::now();
        let mut c = TurnClient::new(addr(SERVER), "u", "forged", now);
        let first = sent(&mut c);
        c.handle_input(&error(&parsed(&first).txid, 401, "n1"), now);
        let second = sent(&mut c);
        c.handle_input(&error(&parsed(&second).txid, 401, "n1"), now);
        assert_eq!(
            c.state(),
            &State::Failed(TurnError::Unauthorized {
                realm: "surge".into()
            })
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_silent_server_times_out_after_retransmissions() {
        let now = Instant::now();
        let mut c = TurnClient::new(addr(SERVER), "u", "p", now);
        let mut sends = 0;
        while let Some(at) = c.poll_timeout() {
            while c.poll_transmit().is_some() {
                sends += 1;
            }
            c.handle_timeout(at);
        }
        assert!(sends >= 4, "{sends} sends");
        assert_eq!(
            c.state(),
            &State::Failed(TurnError::Timeout {
                server: addr(SERVER)
            })
        );
    }

    #[test]
    fn a_response_with_a_forged_integrity_is_ignored() {
        let now = Instant::now();
        let mut c = TurnClient::new(addr(SERVER), "u", "p", now);
        let first = sent(&mut c);
        c.handle_input(&error(&parsed(&first).txid, 401, "n1"), now);
        let second = sent(&mut c);
        let forged = Builder::new(Method::Allocate, Class::Success, &parsed(&second).txid)
            .xor_address(attr::XOR_RELAYED_ADDRESS, addr("192.0.2.66:1"))
            .finish_with_integrity(&long_term_key("u", "surge", "other"));
        c.handle_input(&forged, now);
        assert_eq!(c.state(), &State::Allocating);
    }

    proptest::proptest! {
        #[test]
        fn random_datagrams_never_panic_the_client(
            datagrams in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..20)
        ) {
            let now = Instant::now();
            let (mut c, _) = allocated(now);
            c.add_peer(addr("127.0.0.1:5000"), now);
            for d in &datagrams {
                if let Some((_, range)) = c.handle_input(d, now) {
                    proptest::prop_assert!(range.end <= d.len());
                }
            }
        }
    }
}
