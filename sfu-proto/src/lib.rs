//! The Surge SFU's sans-IO part.
//!
//! [`core`] is the room state machine (who receives which track, simulcast layer choice,
//! keyframe coalescing, active speaker, RTP rewriting); [`switchboard`] owns a worker's
//! rooms and str0m sessions (demultiplexing, admission, renegotiation, forwarding);
//! [`protocol`] is the typed signalling spoken on the `surge` data channel; [`session`] is
//! how every participant session is configured; [`synthetic`] makes VP8 frames for
//! headless participants; [`framing`] is ICE-TCP's RFC 4571 framing (the shard's and the
//! headless participant's). Nothing here owns a socket, reads the clock
//! or spawns a task: the runtime (`surge-sfu`) feeds inputs with an explicit `Instant` and
//! drains outputs.

pub mod core;
pub mod framing;
pub mod protocol;
pub mod session;
mod stun;
pub mod switchboard;
pub mod synthetic;

/// Whether a packet is a STUN message (the first packet of an ICE-TCP connection must be).
pub use stun::is_stun;
pub use switchboard::{
    Event, Join, JoinRefusal, Load, RemoveReason, RestartRefusal, Switchboard, SwitchboardConfig,
    WallClock,
};
