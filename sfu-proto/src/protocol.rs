//! The signalling spoken on the `surge` data channel after a join: JSON text messages
//! tagged by `type` (see `docs/signalling.md`, which a test checks against these types).
//!
//! The SFU sends [`ServerMessage`]s and reads [`ClientMessage`]s; the Rust participant does
//! the reverse with the same types, and the browser client is checked against examples of
//! both.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::core::TrackSource;
use crate::core::{Layer, MediaKind, ParticipantId};

/// What the SFU sends a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// A renegotiation: m-lines added or stopped for other participants' tracks. The client
    /// answers with [`ClientMessage::Answer`]. Only the server offers after the join.
    Offer {
        /// The SDP offer.
        sdp: String,
    },
    /// Which participant each receiving m-line carries (sent after each negotiation).
    Tracks {
        /// One entry per negotiated receiving m-line.
        tracks: Vec<TrackInfo>,
    },
    /// The first message once the channel opens: who the client is and who is there.
    Welcome {
        /// The client's own participant id.
        participant_id: ParticipantId,
        /// Everyone else in the room.
        participants: Vec<ParticipantSummary>,
    },
    /// Someone joined the room.
    Joined {
        /// Who.
        participant: ParticipantSummary,
    },
    /// Someone left the room (or timed out).
    Left {
        /// Who.
        participant_id: ParticipantId,
    },
    /// Someone (un)muted a kind of media.
    Muted {
        /// Who.
        participant_id: ParticipantId,
        /// Which media.
        kind: Kind,
        /// Muted now.
        muted: bool,
    },
    /// The active speaker changed.
    Speaker {
        /// The new active speaker.
        participant_id: ParticipantId,
    },
    /// The simulcast layer this client now receives on one of its m-lines.
    Layer {
        /// The receiving m-line.
        mid: String,
        /// The layer.
        layer: LayerName,
    },
    /// The server ends this client's session now, for `reason`; the client must not rejoin
    /// on its own (its session was not lost).
    Ended {
        /// Why.
        reason: EndReason,
    },

    // Room chat, raised hands and connection quality (the participant list).
    /// A chat message, relayed to everyone in the room (its sender too). The sender's id
    /// and name come from its join token, never from the client.
    Chat {
        /// The room's chat sequence number (from 1, one per relayed message): clients
        /// show messages in this order and can tell when some were dropped.
        seq: u64,
        /// The sender.
        participant_id: ParticipantId,
        /// The sender's display name (from its join token).
        name: String,
        /// The message as sent.
        text: String,
        /// When the shard relayed it, Unix milliseconds.
        ts_ms: u64,
    },
    /// The client's chat message was refused and relayed to nobody.
    ChatRefused {
        /// Why.
        reason: ChatRefusal,
        /// For `rate_limited`: when the next message will be taken, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Someone raised or lowered their hand.
    Hand {
        /// Who.
        participant_id: ParticipantId,
        /// Raised now.
        raised: bool,
    },
    /// Someone's connection quality level changed (see [`QualityLevel`]); the figures are
    /// those of the window that decided it.
    Quality {
        /// Whose connection (to the shard).
        participant_id: ParticipantId,
        /// The level.
        level: QualityLevel,
        /// Packet loss, percent (the worse of the two directions), when measured.
        loss_pct: Option<u32>,
        /// Round-trip time, milliseconds, when measured.
        rtt_ms: Option<u32>,
        /// Interarrival jitter, milliseconds, when measured.
        jitter_ms: Option<u32>,
    },
}

/// Why a chat message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChatRefusal {
    /// Nothing but white space.
    Empty,
    /// Longer than [`MAX_CHAT_CHARS`] characters.
    TooLong,
    /// The sender sends faster than the room's chat allows (see `docs/signalling.md`).
    RateLimited,
}

/// The longest chat message, in characters (Unicode scalar values).
pub const MAX_CHAT_CHARS: usize = 2_000;

/// A participant's connection quality as the shard measures it from RTCP and ICE: loss,
/// round-trip time and jitter over a few seconds (thresholds in `docs/signalling.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityLevel {
    /// Nothing a person would notice.
    Good,
    /// Noticeable: some loss, delay or jitter.
    Fair,
    /// Bad enough to disturb the call.
    Poor,
}

/// Why the server ended a client's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// The same account joined the room again (another tab or device): one session per
    /// user per room, and the newest wins.
    Replaced,
}

/// What a client sends the SFU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The answer to the server's last [`ServerMessage::Offer`].
    Answer {
        /// The SDP answer.
        sdp: String,
    },
    /// The client (un)muted its audio or video.
    Mute {
        /// Which media.
        kind: Kind,
        /// Muted now.
        muted: bool,
    },
    /// The largest video height the client wants on a receiving m-line (0 pauses it).
    MaxHeight {
        /// The receiving m-line.
        mid: String,
        /// Pixels.
        height: u32,
    },
    // Screen sharing (its own block: other features add their variants apart).
    /// The client starts or stops sharing its screen on `mid`, the second sending video
    /// m-line of its join offer (reserved for the screen): while sharing, the room gets it as
    /// a `screen` track; when stopped, subscribers' m-lines for it go.
    Screen {
        /// The client's screen m-line.
        mid: String,
        /// Sharing now.
        sharing: bool,
    },

    // Room chat and raised hands.
    /// A chat message for the room.
    Chat {
        /// The text (at most [`MAX_CHAT_CHARS`] characters, not only white space).
        text: String,
    },
    /// The client raises its hand.
    RaiseHand,
    /// The client lowers its hand.
    LowerHand,
    /// A type this server does not know (a newer client): ignored.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// One receiving m-line and whose track it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// The client's m-line.
    pub mid: String,
    /// The publisher.
    pub participant_id: ParticipantId,
    /// Audio or video.
    pub kind: Kind,
    /// What it carries: `audio`, `camera` or `screen` (a shared screen, shown large).
    pub source: TrackSource,
}

/// A participant as others see it: the per-join participant id and the display name, never
/// the account id (which would let every call participant follow a person across calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantSummary {
    /// The participant id (one per join).
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Audio muted (in `welcome`, the state when the client joined; `muted` follows).
    #[serde(default, skip_serializing_if = "is_false")]
    pub audio_muted: bool,
    /// Video muted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub video_muted: bool,
    /// Hand raised (`hand` follows).
    #[serde(default, skip_serializing_if = "is_false")]
    pub hand: bool,
    /// The last connection quality level sent for it, if any (`quality` follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityLevel>,
}

impl ParticipantSummary {
    /// A participant as a `joined` names it: id and name, nothing muted or raised yet.
    pub fn new(id: ParticipantId, name: String) -> Self {
        Self {
            id,
            name,
            audio_muted: false,
            video_muted: false,
            hand: false,
            quality: None,
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A kind of media, as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl From<MediaKind> for Kind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => Kind::Audio,
            MediaKind::Video => Kind::Video,
        }
    }
}

impl From<Kind> for MediaKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Audio => MediaKind::Audio,
            Kind::Video => MediaKind::Video,
        }
    }
}

/// A simulcast layer as the protocol names it (`q`, `h`, `f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LayerName {
    /// The smallest.
    #[serde(rename = "q")]
    Q,
    /// The middle one.
    #[serde(rename = "h")]
    H,
    /// The largest.
    #[serde(rename = "f")]
    F,
}

impl From<Layer> for LayerName {
    fn from(layer: Layer) -> Self {
        match layer {
            Layer::Low => LayerName::Q,
            Layer::Mid => LayerName::H,
            Layer::High => LayerName::F,
        }
    }
}

impl From<LayerName> for Layer {
    fn from(name: LayerName) -> Self {
        match name {
            LayerName::Q => Layer::Low,
            LayerName::H => Layer::Mid,
            LayerName::F => Layer::High,
        }
    }
}

/// Participant ids travel as 16 lowercase hex digits (the same as in the join's
/// `Location`), not as JSON numbers, which JavaScript cannot hold at 64 bits.
impl Serialize for ParticipantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ParticipantId::parse(&text).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&text),
                &"a participant id of 16 hex digits",
            )
        })
    }
}

impl ParticipantId {
    /// Parses the 16-hex-digit form ([`Display`](std::fmt::Display)'s).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(ParticipantId)
    }
}

impl ServerMessage {
    /// The JSON text sent on the channel.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: no maps with non-string keys, no
        // fallible custom serialisers.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every `type` tag, for checks that the docs and clients cover all of them.
    pub const TYPES: [&'static str; 13] = [
        "offer",
        "tracks",
        "welcome",
        "joined",
        "left",
        "muted",
        "speaker",
        "layer",
        "ended",
        "chat",
        "chat_refused",
        "hand",
        "quality",
    ];
}

impl ClientMessage {
    /// The JSON text sent on the channel.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every `type` tag a server understands.
    pub const TYPES: [&'static str; 7] = [
        "answer",
        "mute",
        "max_height",
        "screen",
        "chat",
        "raise_hand",
        "lower_hand",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_have_the_documented_shape() {
        let id = ParticipantId(0x00ab_cdef_0123_4567);
        let json = ServerMessage::Muted {
            participant_id: id,
            kind: Kind::Video,
            muted: true,
        }
        .to_json();
        assert_eq!(
            json,
            r#"{"type":"muted","participant_id":"00abcdef01234567","kind":"video","muted":true}"#
        );
        let json = ServerMessage::Layer {
            mid: "3".into(),
            layer: Layer::Mid.into(),
        }
        .to_json();
        assert_eq!(json, r#"{"type":"layer","mid":"3","layer":"h"}"#);
        let json = ServerMessage::Tracks {
            tracks: vec![TrackInfo {
                mid: "5".into(),
                participant_id: id,
                kind: Kind::Video,
                source: TrackSource::Screen,
            }],
        }
        .to_json();
        assert_eq!(
            json,
            r#"{"type":"tracks","tracks":[{"mid":"5","participant_id":"00abcdef01234567","kind":"video","source":"screen"}]}"#
        );
    }

    #[test]
    fn client_messages_parse_and_unknown_types_are_ignored() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"max_height","mid":"1","height":360}"#).expect("valid");
        assert_eq!(
            m,
            ClientMessage::MaxHeight {
                mid: "1".into(),
                height: 360
            }
        );
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"dance","speed":3}"#).expect("unknown type");
        assert_eq!(m, ClientMessage::Unknown);
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"screen","mid":"2","sharing":true}"#).expect("valid");
        assert_eq!(
            m,
            ClientMessage::Screen {
                mid: "2".into(),
                sharing: true
            }
        );
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"mute","kind":"smell"}"#).is_err()
        );
    }

    #[test]
    fn chat_hand_and_quality_messages_have_the_documented_shape() {
        let id = ParticipantId(0x00c0_ffee_00c0_ffee);
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"chat","text":"hi"}"#).expect("valid");
        assert_eq!(m, ClientMessage::Chat { text: "hi".into() });
        for (json, want) in [
            (r#"{"type":"raise_hand"}"#, ClientMessage::RaiseHand),
            (r#"{"type":"lower_hand"}"#, ClientMessage::LowerHand),
        ] {
            assert_eq!(serde_json::from_str::<ClientMessage>(json).ok(), Some(want));
        }
        // A chat without text, or with a name of its own choosing, is not a chat.
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"chat"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"chat","text":5}"#).is_err());
        let json = ServerMessage::ChatRefused {
            reason: ChatRefusal::TooLong,
            retry_after_ms: None,
        }
        .to_json();
        assert_eq!(json, r#"{"type":"chat_refused","reason":"too_long"}"#);
        let json = ServerMessage::Quality {
            participant_id: id,
            level: QualityLevel::Poor,
            loss_pct: Some(12),
            rtt_ms: None,
            jitter_ms: Some(3),
        }
        .to_json();
        assert_eq!(
            json,
            r#"{"type":"quality","participant_id":"00c0ffee00c0ffee","level":"poor","loss_pct":12,"rtt_ms":null,"jitter_ms":3}"#
        );
        // A summary without state carries none of the state fields (as in `joined`).
        let plain = serde_json::to_string(&ParticipantSummary::new(id, "A".into())).expect("ok");
        assert_eq!(plain, r#"{"id":"00c0ffee00c0ffee","name":"A"}"#);
    }

    #[test]
    fn participant_ids_are_sixteen_hex_digits() {
        let id = ParticipantId(u64::MAX - 5);
        let text = serde_json::to_string(&id).expect("serialises");
        assert_eq!(serde_json::from_str::<ParticipantId>(&text).ok(), Some(id));
        for bad in [
            r#""12""#,
            r#""zzzzzzzzzzzzzzzz""#,
            "12",
            r#""+123456789abcdef""#,
        ] {
            assert!(serde_json::from_str::<ParticipantId>(bad).is_err(), "{bad}");
        }
    }
}
