//! Every `code` an HTTP error of a Surge listener can carry (`{"error":{"code","message"}}`).
//!
//! One enum so that the codes are a closed, documented set: clients match on them, and a
//! test of the web client fails when it matches a code that no server emits.

use serde::{Serialize, Serializer};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A stable, machine-readable HTTP error code; serialised as its snake_case string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for checks against clients and docs.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    // Generic HTTP.
    /// No such resource (or route).
    NotFound = "not_found",
    /// The route exists, the method does not.
    MethodNotAllowed = "method_not_allowed",
    /// The body is not JSON.
    MalformedJson = "malformed_json",
    /// The JSON does not have the expected shape.
    InvalidBody = "invalid_body",
    /// The body's content type is not the expected one.
    UnsupportedMediaType = "unsupported_media_type",
    /// The body is over the size limit.
    PayloadTooLarge = "payload_too_large",
    /// A bug or a failed dependency; details are logged, not returned.
    Internal = "internal",
    /// The listener is shedding load.
    Overloaded = "overloaded",
    /// A rate limit was hit.
    RateLimited = "rate_limited",
    /// The request (its body included) did not complete within the request timeout.
    RequestTimeout = "request_timeout",
    /// Too many open connections from the client's address (written by the accept loop).
    TooManyConnections = "too_many_connections",
    /// The listener holds as many connections as it may (written by the accept loop).
    ConnectionLimit = "connection_limit",
    /// Not ready to serve (readiness).
    NotReady = "not_ready",
    /// Metrics are not exported by this process.
    MetricsDisabled = "metrics_disabled",
    /// The admin token is missing or wrong.
    AdminUnauthorized = "admin_unauthorized",
    /// No such shard in the registry (admin routes).
    ShardNotFound = "shard_not_found",
    // Accounts and sessions.
    /// Another account has this email.
    EmailTaken = "email_taken",
    /// Not an email address.
    InvalidEmail = "invalid_email",
    /// The password is too short.
    WeakPassword = "weak_password",
    /// The password is too long.
    PasswordTooLong = "password_too_long",
    /// The display name is empty, too long or has forbidden characters.
    InvalidDisplayName = "invalid_display_name",
    /// Wrong email or password.
    InvalidCredentials = "invalid_credentials",
    /// No valid session token.
    InvalidSession = "invalid_session",
    /// Too many wrong passwords for this account lately: wait `Retry-After`.
    LoginThrottled = "login_throttled",
    /// The `Idempotency-Key` header is malformed.
    InvalidIdempotencyKey = "invalid_idempotency_key",
    /// The idempotency key was used for another request.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// A request with this idempotency key is still running.
    IdempotencyConflict = "idempotency_conflict",
    /// The database cannot be reached.
    DatabaseUnavailable = "database_unavailable",
    // Presence and contacts.
    /// Not a presence status.
    InvalidStatus = "invalid_status",
    /// The list of user ids is malformed or too long.
    InvalidIds = "invalid_ids",
    /// Presence cannot be read or written now.
    PresenceUnavailable = "presence_unavailable",
    /// A user cannot add themselves as a contact.
    CannotAddSelf = "cannot_add_self",
    /// The account has as many unanswered contact requests out as it may.
    TooManyContactRequests = "too_many_contact_requests",
    /// No pending contact request from that user.
    ContactRequestNotFound = "contact_request_not_found",
    /// The presence-stream ticket is missing, unknown, used or expired.
    InvalidTicket = "invalid_ticket",
    /// The account has as many presence streams open on this process as it may.
    TooManyStreams = "too_many_streams",
    /// This process holds as many presence streams as it may.
    StreamCapacity = "stream_capacity",
    // Rooms and calls.
    /// The room name is not allowed.
    InvalidRoomName = "invalid_room_name",
    /// No such room.
    RoomNotFound = "room_not_found",
    /// The account has as many rooms as it may; old ones expire when unused.
    TooManyRooms = "too_many_rooms",
    /// The room has as many participants as it may.
    RoomFull = "room_full",
    /// No such participant in the room (or its shard is gone).
    ParticipantNotFound = "participant_not_found",
    /// The SDP offer cannot be parsed or accepted.
    InvalidSdp = "invalid_sdp",
    /// An ICE restart for a session the shard no longer has: rejoin instead.
    SessionGone = "session_gone",
    /// An ICE restart offer with the session's current ICE credentials (`restartIce()`
    /// makes new ones).
    IceRestartRequired = "ice_restart_required",
    /// No shard can take the room now.
    NoCapacity = "no_capacity",
    /// The shard registry cannot be reached.
    RegistryUnavailable = "registry_unavailable",
    /// The room's shard cannot be reached.
    ShardUnavailable = "shard_unavailable",
    /// The shard refused in a way the client cannot fix.
    ShardError = "shard_error",
    /// The shard hosts as many rooms or participants as it may.
    ShardFull = "shard_full",
    /// The shard is draining and takes no new rooms.
    Draining = "draining",
    /// The shard is stopping.
    Stopping = "stopping",
    /// The shard's media worker did not answer in time, or has failed (the shard restarts).
    WorkerUnavailable = "worker_unavailable",
    /// The media worker that hosted the participant failed: the call ended; rejoin.
    WorkerFailed = "worker_failed",
    // Calling (issue 15).
    /// The callee list is empty, too long, names yourself or is not user ids.
    InvalidCallees = "invalid_callees",
    /// Only accepted contacts can ring each other.
    NotAContact = "not_a_contact",
    /// Every callee is in another call (or set their status to busy).
    CalleeBusy = "callee_busy",
    /// No such call, or not one of yours.
    CallNotFound = "call_not_found",
    /// The call no longer rings for you: answered in another tab, cancelled or timed out.
    CallNotRinging = "call_not_ringing",
    /// Only someone in the call can do this (add people to it).
    NotInCall = "not_in_call",
    /// Everyone asked for is already ringing or in this call.
    AlreadyInCall = "already_in_call",
    // Join tokens (shard side).
    /// No bearer join token.
    TokenMalformed = "token_malformed",
    /// The token's signature or claims are invalid.
    TokenInvalid = "token_invalid",
    /// The token has expired.
    TokenExpired = "token_expired",
    /// The token names another shard.
    TokenWrongShard = "token_wrong_shard",
    /// The token names another room.
    TokenWrongRoom = "token_wrong_room",
    /// The token was used already: each join token opens one join.
    TokenReplayed = "token_replayed",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl ErrorCode {
    /// The code with this wire name, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            assert_eq!(ErrorCode::parse(text), Some(*code));
            assert_eq!(
                serde_json::to_string(code).expect("serialises"),
                format!("\"{text}\"")
            );
        }
    }
}
