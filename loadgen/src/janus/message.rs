//! The JSON of Janus's REST API (Janus 1.x, `janus.plugin.videoroom`), typed: what the
//! load generator sends, and what Janus answers or pushes on the long poll.
//!
//! Janus tags every message with `"janus": "<type>"`; plugin replies carry the plugin's
//! own JSON in `plugindata.data`, tagged `"videoroom": "<what>"`. Unknown types parse as
//! `Other`, so a newer Janus adding events does not break a run.

use serde::{Deserialize, Serialize};

/// The plugin the load generator talks to.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";

/// A request to Janus (`POST /janus`, `/janus/{session}` or `/janus/{session}/{handle}`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "janus", rename_all = "lowercase")]
pub enum Request {
    /// Creates a session.
    Create { transaction: String },
    /// Attaches a plugin handle to the session.
    Attach { plugin: String, transaction: String },
    /// A message for the plugin, with an SDP when negotiating.
    Message {
        transaction: String,
        body: VideoroomRequest,
        #[serde(skip_serializing_if = "Option::is_none")]
        jsep: Option<Jsep>,
    },
    /// A trickled candidate; the load generator only ever says it has no more.
    Trickle {
        transaction: String,
        candidate: TrickleCandidate,
    },
    /// Keeps the session from timing out.
    Keepalive { transaction: String },
    /// Ends the session (and its handles).
    Destroy { transaction: String },
}

/// `{"completed": true}`: end of candidates (Janus waits for it before it starts ICE).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrickleCandidate {
    pub completed: bool,
}

/// An SDP offer or answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Jsep {
    /// `offer` or `answer`.
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
}

impl Jsep {
    pub fn offer(sdp: String) -> Self {
        Self {
            kind: "offer".to_owned(),
            sdp,
        }
    }

    pub fn answer(sdp: String) -> Self {
        Self {
            kind: "answer".to_owned(),
            sdp,
        }
    }
}

/// The videoroom requests the load generator makes.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum VideoroomRequest {
    /// Creates a room (not permanent).
    Create {
        description: String,
        /// Publishers at most.
        publishers: u32,
        /// Cap on each publisher's video, bits/s (Janus sends it in REMB).
        bitrate: u64,
        /// Asks publishers for a keyframe this often (seconds; 0 = never).
        fir_freq: u32,
        audiocodec: String,
        videocodec: String,
    },
    /// Joins a room as a publisher or as a subscriber.
    Join(Join),
    /// Publishes (with the offer in the `jsep`).
    Configure { audio: bool, video: bool },
    /// A subscriber's answer (in the `jsep`) starts the media.
    Start {},
    /// Destroys a room.
    Destroy { room: u64 },
}

/// `join`: a publisher (`ptype: publisher`) or a subscriber to some feeds.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "ptype", rename_all = "lowercase")]
pub enum Join {
    Publisher {
        room: u64,
        display: String,
    },
    Subscriber {
        room: u64,
        streams: Vec<FeedStream>,
        /// Janus 1.x would otherwise wait for the publisher's media before offering.
        #[serde(skip_serializing_if = "Option::is_none")]
        private_id: Option<u64>,
    },
}

/// One feed to subscribe to (all its streams).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeedStream {
    pub feed: u64,
}

/// A message from Janus: the reply to a request, or an event from the long poll.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "janus", rename_all = "lowercase")]
pub enum Reply {
    /// Done at once; `data.id` for `create`/`attach`, `plugindata` for synchronous plugin
    /// requests.
    Success {
        transaction: Option<String>,
        data: Option<IdData>,
        plugindata: Option<PluginData>,
    },
    /// Accepted; the answer comes later as an `event` with the same transaction.
    Ack { transaction: Option<String> },
    /// Refused by Janus itself (no such session, bad JSON...).
    Error {
        transaction: Option<String>,
        error: JanusError,
    },
    /// The plugin's answer to a request, or something that happened on a handle.
    Event {
        transaction: Option<String>,
        sender: Option<u64>,
        plugindata: Option<PluginData>,
        jsep: Option<Jsep>,
    },
    /// A handle's PeerConnection is up (ICE and DTLS done).
    Webrtcup { sender: Option<u64> },
    /// Janus started or stopped receiving a medium on a handle.
    Media {
        sender: Option<u64>,
        #[serde(rename = "type")]
        kind: Option<String>,
        receiving: Option<bool>,
    },
    /// A handle's PeerConnection went down.
    Hangup {
        sender: Option<u64>,
        reason: Option<String>,
    },
    /// The session timed out.
    Timeout {},
    /// Nothing happened during the long poll.
    Keepalive {},
    /// Any other event (slowlink, detached, trickle...).
    #[serde(other)]
    Other,
}

impl Reply {
    /// The transaction it answers, if any.
    pub fn transaction(&self) -> Option<&str> {
        match self {
            Reply::Success { transaction, .. }
            | Reply::Ack { transaction }
            | Reply::Error { transaction, .. }
            | Reply::Event { transaction, .. } => transaction.as_deref(),
            _ => None,
        }
    }
}

/// `data` of a `success`: the new session's or handle's id.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IdData {
    pub id: u64,
}

/// Janus's own error.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct JanusError {
    pub code: i64,
    pub reason: String,
}

/// What a plugin answered.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PluginData {
    pub plugin: String,
    pub data: VideoroomReply,
}

/// The videoroom plugin's replies and events.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "videoroom", rename_all = "lowercase")]
pub enum VideoroomReply {
    /// A room was created.
    Created { room: u64 },
    /// Joined as a publisher: its feed id and who already publishes.
    Joined {
        room: u64,
        id: u64,
        private_id: Option<u64>,
        #[serde(default)]
        publishers: Vec<Publisher>,
    },
    /// Joined as a subscriber (Janus's offer is in the `jsep`).
    Attached { room: u64 },
    /// Anything else on a handle: `configured`, `started`, new publishers, errors.
    Event {
        error_code: Option<i64>,
        error: Option<String>,
        configured: Option<String>,
        started: Option<String>,
        publishers: Option<Vec<Publisher>>,
    },
    /// A room was destroyed.
    Destroyed { room: u64 },
    #[serde(other)]
    Other,
}

impl VideoroomReply {
    /// The plugin's error, if this is one.
    pub fn error(&self) -> Option<(i64, &str)> {
        match self {
            VideoroomReply::Event {
                error_code: Some(code),
                error,
                ..
            } => Some((*code, error.as_deref().unwrap_or(""))),
            _ => None,
        }
    }
}

/// A publisher in a room.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Publisher {
    pub id: u64,
    pub display: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_serialise_as_janus_expects() {
        let create = Request::Message {
            transaction: "t3".into(),
            body: VideoroomRequest::Create {
                description: "room 0".into(),
                publishers: 4,
                bitrate: 2_500_000,
                fir_freq: 0,
                audiocodec: "opus".into(),
                videocodec: "vp8".into(),
            },
            jsep: None,
        };
        assert_eq!(
            serde_json::to_value(&create).unwrap(),
            json!({"janus": "message", "transaction": "t3", "body": {
                "request": "create", "description": "room 0", "publishers": 4,
                "bitrate": 2_500_000, "fir_freq": 0, "audiocodec": "opus", "videocodec": "vp8"}})
        );
        let configure = Request::Message {
            transaction: "t5".into(),
            body: VideoroomRequest::Configure {
                audio: true,
                video: true,
            },
            jsep: Some(Jsep::offer("v=0\r\n".into())),
        };
        assert_eq!(
            serde_json::to_value(&configure).unwrap(),
            json!({"janus": "message", "transaction": "t5",
                "body": {"request": "configure", "audio": true, "video": true},
                "jsep": {"type": "offer", "sdp": "v=0\r\n"}})
        );
        let subscribe = VideoroomRequest::Join(Join::Subscriber {
            room: 7,
            streams: vec![FeedStream { feed: 11 }, FeedStream { feed: 12 }],
            private_id: None,
        });
        assert_eq!(
            serde_json::to_value(&subscribe).unwrap(),
            json!({"request": "join", "ptype": "subscriber", "room": 7,
                "streams": [{"feed": 11}, {"feed": 12}]})
        );
        let publisher = VideoroomRequest::Join(Join::Publisher {
            room: 7,
            display: "p0".into(),
        });
        assert_eq!(
            serde_json::to_value(&publisher).unwrap(),
            json!({"request": "join", "ptype": "publisher", "room": 7, "display": "p0"})
        );
        assert_eq!(
            serde_json::to_value(VideoroomRequest::Start {}).unwrap(),
            json!({"request": "start"})
        );
        let trickle = Request::Trickle {
            transaction: "t9".into(),
            candidate: TrickleCandidate { completed: true },
        };
        assert_eq!(
            serde_json::to_value(&trickle).unwrap(),
            json!({"janus": "trickle", "transaction": "t9", "candidate": {"completed": true}})
        );
        assert_eq!(
            serde_json::to_value(Request::Attach {
                plugin: VIDEOROOM.into(),
                transaction: "t2".into()
            })
            .unwrap(),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "t2"})
        );
    }

    // The replies below are Janus 1.1.2's, captured on this machine.
    #[test]
    fn session_and_handle_ids_parse() {
        let r: Reply = serde_json::from_str(
            r#"{"janus": "success", "transaction": "t1", "data": {"id": 4894395067332902}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Reply::Success {
                transaction: Some("t1".into()),
                data: Some(IdData {
                    id: 4894395067332902
                }),
                plugindata: None
            }
        );
        assert_eq!(r.transaction(), Some("t1"));
    }

    #[test]
    fn a_created_room_and_a_publisher_join_parse() {
        let r: Reply = serde_json::from_str(r#"{"janus": "success", "session_id": 4894395067332902, "transaction": "t4", "sender": 5952018701897917, "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "created", "room": 4242, "permanent": false}}}"#).unwrap();
        let Reply::Success {
            plugindata: Some(p),
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(p.data, VideoroomReply::Created { room: 4242 });
        let r: Reply = serde_json::from_str(r#"{"janus": "event", "session_id": 4894395067332902, "transaction": "t5", "sender": 5952018701897917, "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "joined", "room": 4242, "description": "Room 4242", "id": 4532359543084829, "private_id": 3016046201, "publishers": [{"id": 11, "display": "p0", "streams": []}]}}}"#).unwrap();
        let Reply::Event {
            plugindata: Some(p),
            sender,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(sender, Some(5952018701897917));
        assert_eq!(
            p.data,
            VideoroomReply::Joined {
                room: 4242,
                id: 4532359543084829,
                private_id: Some(3016046201),
                publishers: vec![Publisher {
                    id: 11,
                    display: Some("p0".into())
                }]
            }
        );
    }

    #[test]
    fn an_answer_and_an_offer_come_in_the_jsep() {
        let r: Reply = serde_json::from_str(r#"{"janus": "event", "session_id": 1, "transaction": "t6", "sender": 2, "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "event", "room": 4242, "configured": "ok", "audio_codec": "opus", "video_codec": "vp8", "streams": []}}, "jsep": {"type": "answer", "sdp": "v=0\r\n"}}"#).unwrap();
        let Reply::Event {
            plugindata: Some(p),
            jsep: Some(jsep),
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(jsep, Jsep::answer("v=0\r\n".into()));
        assert!(p.data.error().is_none());
        let r: Reply = serde_json::from_str(r#"{"janus": "event", "session_id": 1, "transaction": "t7", "sender": 3, "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "attached", "room": 4242, "streams": [{"type": "audio", "mindex": 0, "mid": "0", "feed_id": 11}]}}, "jsep": {"type": "offer", "sdp": "v=0\r\n"}}"#).unwrap();
        let Reply::Event {
            plugindata: Some(p),
            jsep: Some(jsep),
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(p.data, VideoroomReply::Attached { room: 4242 });
        assert_eq!(jsep.kind, "offer");
    }

    #[test]
    fn errors_parse_whether_janus_or_the_plugin_refuses() {
        let r: Reply = serde_json::from_str(r#"{"janus": "error", "session_id": 999, "transaction": "t7", "error": {"code": 458, "reason": "No such session 999"}}"#).unwrap();
        assert_eq!(
            r,
            Reply::Error {
                transaction: Some("t7".into()),
                error: JanusError {
                    code: 458,
                    reason: "No such session 999".into()
                }
            }
        );
        let r: Reply = serde_json::from_str(r#"{"janus": "event", "session_id": 1, "transaction": "t6", "sender": 2, "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "event", "error_code": 428, "error": "No such feed (11)"}}}"#).unwrap();
        let Reply::Event {
            plugindata: Some(p),
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(p.data.error(), Some((428, "No such feed (11)")));
    }

    #[test]
    fn long_poll_events_and_unknown_ones_parse() {
        let events: Vec<Reply> = serde_json::from_str(r#"[{"janus": "webrtcup", "session_id": 1, "sender": 2}, {"janus": "media", "session_id": 1, "sender": 2, "mid": "1", "type": "video", "receiving": true}, {"janus": "keepalive"}, {"janus": "slowlink", "session_id": 1, "sender": 2, "uplink": true, "lost": 4}, {"janus": "hangup", "session_id": 1, "sender": 2, "reason": "DTLS alert"}]"#).unwrap();
        assert_eq!(
            events,
            vec![
                Reply::Webrtcup { sender: Some(2) },
                Reply::Media {
                    sender: Some(2),
                    kind: Some("video".into()),
                    receiving: Some(true)
                },
                Reply::Keepalive {},
                Reply::Other,
                Reply::Hangup {
                    sender: Some(2),
                    reason: Some("DTLS alert".into())
                },
            ]
        );
        // Malformed input is an error, never a panic.
        assert!(
            serde_json::from_str::<Reply>(r#"{"janus": "success", "data": {"id": "x"}}"#).is_err()
        );
        assert!(serde_json::from_str::<Reply>("[1,2]").is_err());
    }
}
