//! Janus (the videoroom plugin over its REST transport) as the SFU under load: the peer
//! the side-by-side benchmark (`benches/peers.sh`) compares Surge with.

mod client;
pub mod message;
mod room;

pub use client::{JanusError, JanusSession};
pub use room::{
    FeedBoard, JanusJoinError, JanusParticipant, JanusRole, RoomSettings, create_rooms,
};
