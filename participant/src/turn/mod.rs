//! A TURN client (UDP to the server, RFC 8656) so the headless participant can reach a
//! shard through a relay, as a browser with `iceTransportPolicy: 'relay'` does; str0m 0.25
//! has none. [`message`] is the wire format, [`client`] the sans-IO allocation,
//! [`socket`] drives it on the participant's UDP socket.

pub mod client;
pub mod message;
pub mod socket;

use std::net::SocketAddr;

/// Why a relay could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// Relay-only, but no `turn:` URL over UDP with credentials was given or answered.
    #[error(
        "relay-only ICE needs a turn: server (UDP) with credentials; the join answer named none"
    )]
    NoServer,
    /// A `turn:` URL that does not name a reachable host and port.
    #[error("TURN URL {0} does not resolve to an address")]
    BadUrl(String),
    /// The server refused the credentials (a second 401, with them).
    #[error("the TURN server refused the credentials (401, realm {realm:?})")]
    Unauthorized { realm: String },
    /// Allocate or Refresh was refused with another error code.
    #[error("the TURN server refused the allocation: {code} {reason}")]
    Refused { code: u16, reason: String },
    /// No answer to a request within the transaction timeout.
    #[error("no answer from the TURN server at {server}")]
    Timeout { server: SocketAddr },
    /// An answer that lacks what it must carry.
    #[error("malformed TURN answer: {0}")]
    Malformed(&'static str),
    /// The socket to the server failed.
    #[error("TURN socket: {0}")]
    Io(String),
}
