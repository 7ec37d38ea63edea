//! The records of calls (issue 15): who rang whom into which room, and how each ring ended.

use serde::{Deserialize, Serialize};

use super::Account;

/// Where one person stands in a call. Only `Ringing` and `Accepted` are live; every other
/// state is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegState {
    /// Their tabs ring.
    Ringing,
    /// They are in the call (the caller is, from the start).
    Accepted,
    /// They said no.
    Declined,
    /// They were in another call: never rang.
    Busy,
    /// Nobody answered before the ring timeout.
    NoAnswer,
    /// The one who rang them hung up (or cancelled) before an answer.
    Cancelled,
    /// They left after answering.
    Ended,
}

impl LegState {
    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Cancelled => "cancelled",
            Self::Ended => "ended",
        }
    }

    /// The state named `s` (an unknown name, from a newer version, reads as ended).
    pub fn parse(s: &str) -> Self {
        match s {
            "ringing" => Self::Ringing,
            "accepted" => Self::Accepted,
            "declined" => Self::Declined,
            "busy" => Self::Busy,
            "no_answer" => Self::NoAnswer,
            "cancelled" => Self::Cancelled,
            _ => Self::Ended,
        }
    }
}

/// A call: the room it happens in and who started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub room_id: String,
    pub caller_id: String,
    /// Unix milliseconds.
    pub created_ms: i64,
}

/// One person added to a call: the caller (no `invited_by`, `Accepted`) or a callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLeg {
    pub user_id: String,
    pub invited_by: Option<String>,
    /// `Ringing`, `Busy` (never rang) or `Accepted` (the caller).
    pub state: LegState,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// When an unanswered ring becomes `NoAnswer` (unix milliseconds).
    pub ring_until_ms: i64,
}

/// A ring the timeout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRing {
    pub call_id: String,
    pub user_id: String,
    pub invited_by: Option<String>,
}

/// A call ringing for someone now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ringing {
    pub call_id: String,
    pub room_id: String,
    /// Who rings them.
    pub from: Account,
}

/// Which way a call went, for one of its two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// One line of someone's recent calls: one ring, from their side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentCall {
    pub call_id: String,
    pub room_id: String,
    pub direction: Direction,
    /// The other side: who rang them, or whom they rang.
    pub peer: Account,
    pub state: LegState,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Whether the ring was ever answered (a leg that `Ended` was).
    pub answered: bool,
}
