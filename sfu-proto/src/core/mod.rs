//! The sans-IO room core: who is in a room, who receives which track, which simulcast layer
//! each subscriber gets, keyframe requests, the active speaker, and the RTP rewriting that
//! makes layer switches invisible to subscribers.
//!
//! No sockets, no clocks, no tasks, no str0m sessions live here. The runtime feeds inputs
//! with an explicit `now` and drains what the room wants done:
//!
//! ```text
//!  runtime                                   Room
//!  ───────                                   ────
//!  join / leave / publish_track  ─────────▶  membership, NeedSlot / DropSlot
//!  slot_ready(sub, track, out_mid) ───────▶  a subscriber's outgoing m-line exists
//!                                            (ReplayKeyframe: the cached keyframe, at once)
//!  handle_rtp(from, mid, layer, meta, payload, out) ▶ out(Forward{..}) per subscriber
//!  handle_bandwidth / set_max_height ─────▶  layer choice (switch on the next keyframe)
//!  set_receive_cap ───────────────────────▶  the cap a subscriber announced (first layer)
//!  handle_keyframe_request / layer_paused ▶  coalesced RequestKeyframe
//!  handle_timeout(now) ───────────────────▶  bitrates, speakers, retries, idle clean-up
//!  poll_output() until None, poll_timeout()  (then sleep until that instant)
//! ```
//!
//! Subscriptions are negotiated by the runtime: when a participant that may subscribe shares
//! the room with another participant's track, the room emits [`Output::NeedSlot`]; the
//! runtime adds an outgoing m-line to the subscriber's session and calls
//! [`Room::slot_ready`] with its mid. When the track or its publisher goes away the room emits
//! [`Output::DropSlot`].
//!
//! [`Room::desired_bps`] tells what a subscriber would take with unlimited bandwidth (a
//! good `desired` for str0m's `Bwe::set_bitrate`); [`Room::stats`] holds the counters to
//! export (forwarded packets and bytes, layer switches, keyframe requests, time-outs).
//!
//! The hot path ([`Room::handle_rtp`]) does one hash lookup for the track, then walks that
//! track's ready subscriber slots: no allocation, no lock, results handed to a callback.

mod bitrate;
pub mod hash;
mod keyframe;
mod keyframe_cache;
mod layer;
mod rewrite;
mod room;
pub(crate) use room::{AUDIO_CLOCK, VIDEO_CLOCK};
mod speaker;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use layer::{Layer, layer_for_rid};
pub use room::Room;
pub use str0m::media::{MediaKind, Mid, Rid};

/// A participant's id inside one room, chosen by the runtime (unique per room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A published track: its publisher and the mid of the publisher's incoming m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackId {
    /// Who sends it.
    pub publisher: ParticipantId,
    /// The m-line it arrives on (in the publisher's session).
    pub mid: Mid,
}

/// Tunables of a room. `Default` gives values that suit browsers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RoomConfig {
    /// Joins past this many participants fail with [`RoomError::RoomFull`].
    pub max_participants: usize,
    /// A participant from whom nothing arrived (RTP via [`Room::handle_rtp`] or any other
    /// packet via [`Room::handle_activity`]) for this long is removed.
    pub participant_timeout: Duration,
    /// How often [`Room::handle_timeout`] wants to run (bitrate meters, speaker detection,
    /// keyframe retries, idle clean-up).
    pub tick: Duration,
    /// Keyframe requests for the same publisher layer within this window (and before the
    /// keyframe arrives) are coalesced into one.
    pub keyframe_request_window: Duration,
    /// The egress estimate assumed for a subscriber until its first [`Room::handle_bandwidth`]
    /// (or the cap it announced with [`Room::set_receive_cap`], when lower).
    pub initial_estimate_bps: u64,
    /// Bitrates assumed for Low/Mid/High until measured from the publisher's packets.
    pub default_layer_bps: [u64; 3],
    /// Bitrate reserved per audio subscription before video shares the estimate.
    pub audio_reserve_bps: u64,
    /// Going up a layer needs `estimate share >= layer bitrate * up_headroom`.
    pub up_headroom: f64,
    /// No upward switch this soon after a downward one (avoids flapping).
    pub up_hold: Duration,
    /// Payload bytes of the last keyframe kept per published video layer, replayed to a
    /// subscriber the moment its slot is ready (0: no cache). A bigger keyframe is not kept.
    pub keyframe_cache_bytes: usize,
    /// Active speaker detection.
    pub speaker: SpeakerConfig,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            max_participants: 50,
            participant_timeout: Duration::from_secs(30),
            tick: Duration::from_millis(100),
            keyframe_request_window: Duration::from_millis(500),
            initial_estimate_bps: 1_000_000,
            default_layer_bps: [150_000, 500_000, 1_500_000],
            audio_reserve_bps: 40_000,
            up_headroom: 1.2,
            up_hold: Duration::from_secs(4),
            // A 720p camera keyframe is 20-80 KB; a shared screen's can be more, and is then
            // not kept (its subscribers wait for the requested keyframe, as without a cache).
            keyframe_cache_bytes: 256 * 1024,
            speaker: SpeakerConfig::default(),
        }
    }
}

/// Active speaker detection from RFC 6464 audio levels.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpeakerConfig {
    /// Time constant of the loudness smoothing.
    pub window: Duration,
    /// An active speaker stays active at least this long.
    pub min_hold: Duration,
    /// Packets at or above this level (-dBov; 127 = silence) count as silence.
    pub silence_level: u8,
    /// A challenger must be this much louder (ratio of smoothed loudness) to take over.
    pub switch_ratio: f32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(1000),
            min_hold: Duration::from_millis(1500),
            silence_level: 90,
            switch_ratio: 1.25,
        }
    }
}

/// Who joins, and what their join token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// The account's user id.
    pub user: String,
    /// Display name.
    pub name: String,
    /// May publish tracks.
    pub publish: bool,
    /// May receive others' tracks.
    pub subscribe: bool,
}

/// What a track carries, as subscribers are told (`audio`, `camera`, `screen`): a shared
/// screen is shown large, so it gets the first share of a subscriber's bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A microphone.
    Audio,
    /// A camera (any video that is not a shared screen).
    Camera,
    /// A shared screen or window.
    Screen,
}

impl TrackSource {
    /// The usual source of a track of `kind`: audio, or a camera.
    pub const fn of(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => TrackSource::Audio,
            MediaKind::Video => TrackSource::Camera,
        }
    }
}

/// A track a participant sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// The publisher's m-line.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// What it carries (a video is a camera or a shared screen).
    pub source: TrackSource,
    /// The simulcast rids the publisher sends (empty: a single stream). Mapped to layers
    /// with [`layer_for_rid`] (`q/h/f` or `l/m/h`).
    pub rids: Vec<Rid>,
}

/// VP8 payload descriptor fields the room rewrites (from str0m's `Vp8Descriptor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Meta {
    /// PictureID (15-bit when present).
    pub picture_id: Option<u16>,
    /// TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
}

/// What the room needs to know about one incoming RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpMeta {
    /// Extended (roll-over counted) sequence number of the incoming stream.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// Whether the packet starts a keyframe (computed by the runtime from the payload).
    pub keyframe: bool,
    /// RFC 6464 audio level (0 = loudest, 127 = silence), audio only.
    pub audio_level: Option<u8>,
    /// VP8 descriptor fields, VP8 only.
    pub vp8: Option<Vp8Meta>,
    /// Payload size in bytes (for layer bitrates and counters).
    pub payload_len: usize,
    /// The payload type, as the publisher's session numbers it (kept with cached keyframes,
    /// so the runtime can map a replayed packet to the subscriber's payload type).
    pub payload_type: u8,
}

/// One packet to send to one subscriber, with rewritten numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Who receives it.
    pub subscriber: ParticipantId,
    /// The subscriber's outgoing m-line (from [`Room::slot_ready`]).
    pub out_mid: Mid,
    /// Rewritten sequence number: continuous per outgoing stream across layer switches; the
    /// first value is below 65,536.
    pub seq: u64,
    /// Rewritten RTP timestamp, continuous across switches.
    pub ts: u32,
    /// The marker bit (unchanged).
    pub marker: bool,
    /// Rewritten VP8 fields to patch into the payload (`Vp8Descriptor::patch`).
    pub vp8: Option<Vp8Meta>,
}

/// One packet of a cached keyframe replayed to a new subscriber ([`Output::ReplayKeyframe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedPacket {
    /// Whom to, on which m-line, renumbered into the subscriber's stream.
    pub forward: Forward,
    /// The payload type the publisher used ([`RtpMeta::payload_type`]).
    pub payload_type: u8,
    /// The payload as the publisher sent it (VP8 fields to patch are in `forward.vp8`).
    pub payload: Arc<[u8]>,
}

/// Something the runtime should tell clients about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// A participant joined.
    Joined {
        /// Who.
        participant: ParticipantId,
        /// Their user id.
        user: String,
        /// Their display name.
        name: String,
    },
    /// A participant left (or timed out).
    Left(ParticipantId),
    /// A participant (un)muted a kind of media.
    Muted {
        /// Who.
        participant: ParticipantId,
        /// Which media.
        kind: MediaKind,
        /// Now muted.
        muted: bool,
    },
    /// The active speaker changed.
    ActiveSpeaker(ParticipantId),
    /// A subscriber now receives another simulcast layer on `out_mid` (sent to it only).
    LayerChanged {
        /// Who receives.
        subscriber: ParticipantId,
        /// On which of its m-lines.
        out_mid: Mid,
        /// The layer it receives from now on.
        layer: Layer,
    },
}

/// What the room wants the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Add an outgoing m-line for `track` to `subscriber`'s session, then call
    /// [`Room::slot_ready`].
    NeedSlot {
        /// Who should receive.
        subscriber: ParticipantId,
        /// What.
        track: TrackId,
        /// Audio or video.
        kind: MediaKind,
        /// What the track carries.
        source: TrackSource,
    },
    /// Remove `subscriber`'s m-line for `track` (`out_mid` is `None` when the slot was never
    /// ready: cancel a pending negotiation).
    DropSlot {
        /// Who received.
        subscriber: ParticipantId,
        /// What.
        track: TrackId,
        /// Its m-line, if one was ready.
        out_mid: Option<Mid>,
    },
    /// Ask the publisher for a keyframe (PLI) on `mid`, for the layer's rid (`None`: not
    /// simulcast).
    RequestKeyframe {
        /// Who should send it.
        publisher: ParticipantId,
        /// On which m-line.
        mid: Mid,
        /// Which layer.
        layer: Option<Layer>,
        /// That layer's rid as the publisher named it.
        rid: Option<Rid>,
    },
    /// Send these packets (the last complete keyframe of the layer a new subscriber's slot
    /// targets, renumbered) now, before anything else on that m-line: the subscriber has a
    /// picture without waiting for the keyframe requested from the publisher. The deltas that
    /// follow are held back until that fresh keyframe arrives, as on a layer switch.
    ReplayKeyframe {
        /// Whose keyframe (its session knows the payload types).
        publisher: ParticipantId,
        /// The packets, in order.
        packets: Vec<ReplayedPacket>,
    },
    /// A room event to send as JSON (to everyone, except `LayerChanged`: its subscriber only).
    Event(RoomEvent),
    /// The participant sent nothing for too long and was removed (after `Event(Left)`); close
    /// its session.
    ParticipantTimedOut(ParticipantId),
}

/// Why a room refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The room has `max_participants` already.
    #[error("the room is full")]
    RoomFull,
    /// The participant id is already in the room.
    #[error("participant {0} is already in the room")]
    AlreadyJoined(ParticipantId),
    /// No such participant in the room.
    #[error("participant {0} is not in the room")]
    UnknownParticipant(ParticipantId),
    /// The join token does not allow publishing.
    #[error("participant {0} may not publish")]
    PublishNotAllowed(ParticipantId),
    /// The publisher already has a track on this mid.
    #[error("a track is already published on mid {0}")]
    DuplicateTrack(Mid),
    /// No such track (it was unpublished, or its publisher left).
    #[error("no such track")]
    UnknownTrack,
    /// The subscriber already receives another track on this mid.
    #[error("mid {0} already carries another track")]
    MidInUse(Mid),
    /// The track is not offered to this subscriber (own track, or it may not subscribe).
    #[error("participant {0} has no slot wanted for this track")]
    NoSlotWanted(ParticipantId),
}

/// Counters the runtime exports as metrics (monotonic since the room was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// RTP packets received through [`Room::handle_rtp`].
    pub received_packets: u64,
    /// Packets handed to the forward callback (one per subscriber).
    pub forwarded_packets: u64,
    /// Payload bytes handed to the forward callback.
    pub forwarded_bytes: u64,
    /// Layer switches completed (on a keyframe).
    pub layer_switches: u64,
    /// Keyframe requests emitted toward publishers.
    pub keyframe_requests: u64,
    /// Keyframe requests absorbed by coalescing.
    pub keyframe_requests_coalesced: u64,
    /// Packets for unknown tracks.
    pub unknown_track_packets: u64,
    /// Participants removed for inactivity.
    pub timed_out: u64,
    /// Cached keyframes replayed to new subscribers ([`Output::ReplayKeyframe`]).
    pub keyframes_replayed: u64,
}
