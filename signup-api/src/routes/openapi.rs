//! `GET /openapi.json`: the API's OpenAPI 3.1 document, written by hand (it is small, and
//! this keeps a macro-heavy dependency out of the build).

use std::sync::LazyLock;

use axum::Json;
use serde_json::{Value, json};

static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let mut doc = build();
    add_calls(&mut doc);
    doc
});

pub(crate) async fn document() -> Json<Value> {
    Json(DOCUMENT.clone())
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn retry(description: &str) -> Value {
    let mut e = error(description);
    e["headers"] =
        json!({"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}});
    e
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn build() -> Value {
    let bearer = json!([{"session": []}]);
    let unauthorized = error("`invalid_session`: missing, invalid or expired session token");
    let db_down = retry("`database_unavailable`");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Surge API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Signup, login, presence, contacts and rooms. Every error is `{\"error\":{\"code\",\"message\"}}` with a stable code; 429 and 503 carry Retry-After. Times are Unix seconds."
        },
        "components": {
            "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer", "description": "A session token from POST /v1/sessions. It never goes in a URL: the presence stream takes a single-use ticket (POST /v1/presence/tickets) instead."}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "SignupRequest": {"type": "object", "required": ["email", "password", "display_name"], "properties": {
                    "email": {"type": "string", "format": "email", "description": "trimmed and lower-cased; ASCII only"},
                    "password": {"type": "string", "minLength": 10, "description": "10 to 1024 bytes"},
                    "display_name": {"type": "string", "description": "1 to 64 characters, no control or invisible characters"}}},
                "Account": {"type": "object", "required": ["id", "email", "display_name", "created_at"], "properties": {
                    "id": {"type": "string"}, "email": {"type": "string"}, "display_name": {"type": "string"}, "created_at": {"type": "integer", "description": "Unix seconds"}}},
                "User": {"type": "object", "required": ["id", "email", "display_name"], "properties": {
                    "id": {"type": "string"}, "email": {"type": "string"}, "display_name": {"type": "string"}}},
                "LoginRequest": {"type": "object", "required": ["email", "password"], "properties": {"email": {"type": "string"}, "password": {"type": "string"}}},
                "Session": {"type": "object", "required": ["token", "expires_at", "user"], "properties": {
                    "token": {"type": "string"}, "expires_at": {"type": "integer"}, "user": {"$ref": "#/components/schemas/User"}}},
                "Status": {"type": "string", "enum": ["online", "away", "busy", "offline"]},
                "HeartbeatRequest": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["online", "away", "busy"]}}},
                "Heartbeat": {"type": "object", "required": ["status", "ttl_secs"], "properties": {"status": {"$ref": "#/components/schemas/Status"}, "ttl_secs": {"type": "integer"}}},
                "Presence": {"type": "object", "required": ["user_id", "status"], "properties": {"user_id": {"type": "string"}, "status": {"$ref": "#/components/schemas/Status"}}},
                "PresenceList": {"type": "object", "required": ["presence"], "properties": {"presence": {"type": "array", "items": {"$ref": "#/components/schemas/Presence"}}}},
                "Ticket": {"type": "object", "required": ["ticket", "expires_in_secs"], "properties": {"ticket": {"type": "string"}, "expires_in_secs": {"type": "integer"}}},
                "AddContactRequest": {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}},
                "ContactRequested": {"type": "object", "required": ["email", "state"], "properties": {"email": {"type": "string", "description": "normalised"}, "state": {"type": "string", "enum": ["requested"]}}},
                "Contact": {"type": "object", "required": ["user_id", "email", "display_name", "status"], "properties": {
                    "user_id": {"type": "string"}, "email": {"type": "string"}, "display_name": {"type": "string"}, "status": {"$ref": "#/components/schemas/Status"}}},
                "IncomingRequest": {"type": "object", "required": ["user_id", "email", "display_name", "created_at"], "properties": {
                    "user_id": {"type": "string"}, "email": {"type": "string"}, "display_name": {"type": "string"}, "created_at": {"type": "integer"}}},
                "OutgoingRequest": {"type": "object", "required": ["email", "created_at"], "properties": {"email": {"type": "string"}, "created_at": {"type": "integer"}}},
                "ContactList": {"type": "object", "required": ["contacts", "incoming", "outgoing"], "properties": {
                    "contacts": {"type": "array", "items": {"$ref": "#/components/schemas/Contact"}, "description": "accepted contacts, with their presence"},
                    "incoming": {"type": "array", "items": {"$ref": "#/components/schemas/IncomingRequest"}, "description": "requests to you, to accept or decline"},
                    "outgoing": {"type": "array", "items": {"$ref": "#/components/schemas/OutgoingRequest"}, "description": "your requests not yet accepted"}}},
                "CreateRoomRequest": {"type": "object", "properties": {"name": {"type": "string"}}},
                "Room": {"type": "object", "required": ["id", "name", "expires_at"], "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                    "expires_at": {"type": "integer", "description": "unix seconds; each join pushes it back by the room lifetime (30 days by default)"}}},
                "IceServer": {"type": "object", "required": ["urls"], "description": "an RTCIceServer; TURN entries carry TURN REST credentials: username `<unix expiry>:<opaque user id>`, credential base64(HMAC-SHA1(shared secret, username))", "properties": {
                    "urls": {"type": "array", "items": {"type": "string"}}, "username": {"type": "string"}, "credential": {"type": "string"}}},
                "IceServers": {"type": "object", "required": ["ice_servers"], "properties": {"ice_servers": {"type": "array", "items": {"$ref": "#/components/schemas/IceServer"}, "description": "empty when the service has no TURN/STUN servers"}}},
                "Participant": {"type": "object", "required": ["room", "participant"], "properties": {"room": {"type": "string"}, "participant": {"type": "string"}}}
            }
        },
        "paths": {
            "/v1/accounts": {"post": {
                "summary": "Sign up",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 128},
                    "description": "A retry with the same key gets the same answer and never a second account"}],
                "requestBody": body("SignupRequest"),
                "responses": {
                    "201": ok("created", "Account"),
                    "400": error("`malformed_json`"),
                    "409": error("`email_taken`"),
                    "413": error("`payload_too_large`"),
                    "422": error("`invalid_email`, `weak_password`, `password_too_long`, `invalid_display_name`, `invalid_body`, `invalid_idempotency_key`, `idempotency_key_reused`"),
                    "429": retry("`rate_limited` (per-client or global signup rate) or `overloaded` (hashing capacity)"),
                    "503": db_down.clone()}}},
            "/v1/sessions": {"post": {
                "summary": "Log in",
                "requestBody": body("LoginRequest"),
                "responses": {
                    "201": ok("logged in", "Session"),
                    "401": error("`invalid_credentials` (same answer and cost for an unknown email and a wrong password)"),
                    "429": retry("`rate_limited`, `overloaded`, or `login_throttled` (too many wrong passwords for this email lately, from any address: the wait doubles from 1 s to 5 min)"),
                    "503": db_down.clone()}}},
            "/v1/sessions/current": {"delete": {"summary": "Log out", "security": bearer.clone(),
                "responses": {"204": {"description": "logged out"}, "401": unauthorized.clone()}}},
            "/v1/me": {"get": {"summary": "The logged-in account", "security": bearer.clone(),
                "responses": {"200": ok("the account", "Account"), "401": unauthorized.clone()}}},
            "/v1/presence": {
                "put": {"summary": "Heartbeat: set your status for ttl_secs (send again before it passes, with jitter). Rate-limited per account; a user's changes reach the others at most once per --presence-coalesce-ms, the last one winning", "security": bearer.clone(),
                    "requestBody": body("HeartbeatRequest"),
                    "responses": {"200": ok("status set", "Heartbeat"), "401": unauthorized.clone(), "422": error("`invalid_status`"), "429": retry("`rate_limited`"), "503": retry("`presence_unavailable`")}},
                "get": {"summary": "Presence of those of the ids who are your accepted contacts (or you); other ids are left out of the answer", "security": bearer.clone(),
                    "parameters": [{"name": "ids", "in": "query", "required": true, "schema": {"type": "string"}, "description": "comma-separated user ids (at most 200)"}],
                    "responses": {"200": ok("statuses", "PresenceList"), "401": unauthorized.clone(), "422": error("`invalid_ids`")}}},
            "/v1/presence/tickets": {"post": {
                "summary": "A single-use ticket for opening the presence stream, valid for expires_in_secs (30 s)",
                "security": bearer.clone(),
                "responses": {"201": ok("ticket", "Ticket"), "401": unauthorized.clone(), "429": retry("`rate_limited`"), "503": retry("`presence_unavailable`")}}},
            "/v1/presence/stream": {"get": {
                "summary": "Server-Sent Events for your accepted contacts: event `presence` (data {user_id, status}): a snapshot, then every change (including going offline); event `contacts` (data {user_id, change: added|removed|requested|resync}): your contacts or requests changed, read GET /v1/contacts again; event `incoming_call` (data {call_id, caller: {id, name}, room: {id}}): a contact rings you (also sent at the start for calls ringing already); event `call_update` (data {call_id, state: accepted|declined|busy|no_answer|cancelled|ended, by: user id}): a ring you started or received changed (your other tabs stop ringing). Ends when your session logs out.",
                "parameters": [{"name": "ticket", "in": "query", "required": true, "schema": {"type": "string"}, "description": "from POST /v1/presence/tickets; single-use"}],
                "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "401": error("`invalid_ticket` (missing, used or expired) or `invalid_session` (logged out since)"),
                    "429": retry("`too_many_streams`: this account has as many streams open on this server as it may (8)"),
                    "503": retry("`stream_capacity` (this server holds as many streams as it may), `presence_unavailable` or `database_unavailable`")}}},
            "/v1/contacts": {
                "post": {"summary": "Ask the owner of an email to be contacts. The answer is the same whether or not the email has an account; if they had asked you, you are contacts at once", "security": bearer.clone(), "requestBody": body("AddContactRequest"),
                    "responses": {"202": ok("requested", "ContactRequested"), "401": unauthorized.clone(), "409": error("`too_many_contact_requests` (unanswered requests cap)"), "422": error("`invalid_email`, `cannot_add_self`"), "429": retry("`rate_limited`")}},
                "get": {"summary": "Your contacts with their presence, requests to you, and your pending requests", "security": bearer.clone(),
                    "responses": {"200": ok("contacts", "ContactList"), "401": unauthorized.clone()}}},
            "/v1/contacts/{user_id}": {"delete": {"summary": "Remove a contact, both ways (idempotent)", "security": bearer.clone(),
                "parameters": [{"name": "user_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"204": {"description": "not contacts (any more)"}, "401": unauthorized.clone()}}},
            "/v1/contacts/requests/{user_id}/accept": {"post": {"summary": "Accept that user's request: you become contacts", "security": bearer.clone(),
                "parameters": [{"name": "user_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok("the new contact", "Contact"), "401": unauthorized.clone(), "404": error("`contact_request_not_found`")}}},
            "/v1/contacts/requests/{user_id}": {"delete": {"summary": "Decline that user's request (they are not told)", "security": bearer.clone(),
                "parameters": [{"name": "user_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"204": {"description": "declined"}, "401": unauthorized.clone(), "404": error("`contact_request_not_found`")}}},
            "/v1/contacts/outgoing/{email}": {"delete": {"summary": "Withdraw your own pending request", "security": bearer.clone(),
                "parameters": [{"name": "email", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"204": {"description": "withdrawn"}, "401": unauthorized.clone(), "404": error("`contact_request_not_found`"), "422": error("`invalid_email`")}}},
            "/v1/ice-servers": {"get": {"summary": "The TURN/STUN servers for your calls, with short-lived TURN credentials (valid --turn-credential-ttl-secs); ask before the join so the connection gathers relay candidates early. Each join answer carries fresh ones too (Link headers)", "security": bearer.clone(),
                "responses": {"200": ok("the servers (none when the service has none)", "IceServers"), "401": unauthorized.clone()}}},
            "/v1/rooms": {"post": {"summary": "Create a room", "security": bearer.clone(),
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateRoomRequest"}}}},
                "responses": {"201": ok("created", "Room"), "401": unauthorized.clone(), "409": error("`too_many_rooms` (the account holds as many live rooms as it may)"),
                    "422": error("`invalid_room_name`"), "429": retry("`rate_limited`")}}},
            "/v1/rooms/{id}": {"get": {"summary": "A room", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok("the room", "Room"), "404": error("`room_not_found`")}}},
            "/v1/rooms/{id}/participants": {"post": {
                "summary": "Join the room's call: the SDP offer goes to the room's media server (placed now if the room has none) and its SDP answer comes back (WHIP-style, see docs/signalling.md). Media then flows to that server over UDP.",
                "security": bearer.clone(),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/sdp": {"schema": {"type": "string"}}}},
                "responses": {
                    "201": {"description": "joined: the SDP answer", "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/rooms/{id}/participants/{participant}"},
                            "Link": {"schema": {"type": "string"}, "description": "one per TURN/STUN URL when the service has them (WHIP, RFC 9725): `<turn:host:3478?transport=udp>; rel=\"ice-server\"; username=\"…\"; credential=\"…\"; credential-type=\"password\"`, fresh credentials as in GET /v1/ice-servers"}},
                        "content": {"application/sdp": {"schema": {"type": "string"}}}},
                    "400": error("`invalid_sdp`"), "401": unauthorized.clone(), "404": error("`room_not_found`"),
                    "409": error("`room_full`"), "413": error("`payload_too_large`"), "415": error("`unsupported_media_type`"),
                    "502": error("`shard_error`"),
                    "503": retry("`no_capacity`, `registry_unavailable`, `shard_full`, `shard_unavailable` or `draining`")}}},
            "/v1/rooms/{id}/participants/{participant}": {
                "delete": {"summary": "Leave the call (only your own participant)", "security": bearer.clone(),
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "participant", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {"204": {"description": "left"}, "401": unauthorized.clone(), "404": error("`participant_not_found`"), "503": retry("`shard_unavailable` or `registry_unavailable`")}},
                "patch": {"summary": "ICE restart (as WHIP does): an SDP offer with new ICE credentials for your participant whose network changed or failed; the answer comes back and the participant keeps its id, tracks and subscriptions (docs/signalling.md)", "security": bearer.clone(),
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "participant", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "requestBody": {"required": true, "content": {"application/sdp": {"schema": {"type": "string"}}}},
                    "responses": {"200": {"description": "restarted: the SDP answer", "content": {"application/sdp": {"schema": {"type": "string"}}}},
                        "400": error("`invalid_sdp` or `ice_restart_required` (the offer keeps the current ICE credentials)"), "401": unauthorized.clone(),
                        "404": error("`session_gone`: rejoin the room"), "413": error("`payload_too_large`"), "415": error("`unsupported_media_type`"),
                        "502": error("`shard_error`"), "503": retry("`shard_unavailable`, `registry_unavailable` or `worker_unavailable`")}},
                "get": {"summary": "Whether the call server still has this participant of yours (ask when media stops: 404 means rejoin now)", "security": bearer,
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "participant", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {"200": ok("still there", "Participant"), "401": unauthorized, "404": error("`participant_not_found`"), "503": retry("`shard_unavailable` or `registry_unavailable`")}}},
            "/healthz": {"get": {"summary": "The process answers", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "This process can serve (started, not draining); never a backend's health", "responses": {"200": {"description": "ready"}, "503": retry("`not_ready`")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}}
        }
    })
}

/// The calling routes (issue 15), in a function of their own: one `json!` this size per
/// function keeps the macro within its recursion limit.
fn add_calls(doc: &mut Value) {
    let bearer = json!([{"session": []}]);
    let unauthorized = error("`invalid_session`: missing, invalid or expired session token");
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "the call id"}]);
    let state = json!({"type": "string", "enum": ["ringing", "accepted", "declined", "busy", "no_answer", "cancelled", "ended"]});
    let not_found = error("`call_not_found`: no such call, or you were never in it");
    doc["components"]["schemas"]["CallRequest"] = json!({"type": "object", "required": ["callees"], "properties": {
        "callees": {"type": "array", "minItems": 1, "maxItems": 8, "items": {"type": "string"}, "description": "user ids of your accepted contacts"}}});
    doc["components"]["schemas"]["Call"] = json!({"type": "object", "required": ["call_id", "room", "callees"], "properties": {
        "call_id": {"type": "string"}, "room": {"$ref": "#/components/schemas/Room"},
        "callees": {"type": "array", "items": {"type": "object", "required": ["user_id", "display_name", "state"], "properties": {
            "user_id": {"type": "string"}, "display_name": {"type": "string"}, "state": {"type": "string", "enum": ["ringing", "busy"]}}}}}});
    doc["components"]["schemas"]["AnsweredCall"] = json!({"type": "object", "required": ["call_id", "room"], "properties": {
        "call_id": {"type": "string"}, "room": {"$ref": "#/components/schemas/Room"}}});
    doc["components"]["schemas"]["RecentCalls"] = json!({"type": "object", "required": ["calls"], "properties": {"calls": {"type": "array", "items": {
        "type": "object", "required": ["call_id", "room_id", "direction", "peer", "state", "outcome", "at"], "properties": {
            "call_id": {"type": "string"}, "room_id": {"type": "string"},
            "direction": {"type": "string", "enum": ["incoming", "outgoing"]},
            "peer": {"type": "object", "required": ["id", "name"], "properties": {"id": {"type": "string"}, "name": {"type": "string"}}, "description": "who rang you, or whom you rang"},
            "state": state,
            "outcome": {"type": "string", "enum": ["answered", "missed", "declined", "busy", "no_answer", "cancelled", "ringing"], "description": "`missed`: incoming, not answered (timed out, cancelled, or you were busy)"},
            "at": {"type": "integer", "description": "Unix seconds"}}}}}});
    let paths = &mut doc["paths"];
    paths["/v1/calls"] = json!({"post": {
        "summary": "Call contacts: a new room, and the callees' tabs ring (presence stream event `incoming_call`) for 30 s; then the ring is a missed call. Callees in another call (or with status busy) are not rung: their state is `busy`. Rate-limited per account",
        "security": bearer.clone(), "requestBody": body("CallRequest"),
        "responses": {"201": ok("ringing", "Call"), "401": unauthorized.clone(),
            "403": error("`not_a_contact`: a callee is not your accepted contact"),
            "409": error("`callee_busy` (every callee is in a call; nothing was created) or `too_many_rooms`"),
            "422": error("`invalid_callees`, `invalid_body`"), "429": retry("`rate_limited`")}}});
    paths["/v1/calls/recent"] = json!({"get": {"summary": "Your latest 50 rings, both ways, newest first (missed calls included), for call back", "security": bearer.clone(),
        "responses": {"200": ok("recent calls", "RecentCalls"), "401": unauthorized.clone()}}});
    paths["/v1/calls/{id}/accept"] = json!({"post": {"summary": "Answer a call ringing for you: join its room. The first of your tabs to accept wins; the caller and your other tabs get `call_update` accepted", "security": bearer.clone(), "parameters": id.clone(),
        "responses": {"200": ok("answered", "AnsweredCall"), "401": unauthorized.clone(), "404": not_found.clone(),
            "409": error("`call_not_ringing`: answered in another tab, cancelled or timed out")}}});
    paths["/v1/calls/{id}/decline"] = json!({"post": {"summary": "Decline a call ringing for you; the caller gets `call_update` declined", "security": bearer.clone(), "parameters": id.clone(),
        "responses": {"204": {"description": "declined"}, "401": unauthorized.clone(), "404": not_found.clone(), "409": error("`call_not_ringing`")}}});
    paths["/v1/calls/{id}/cancel"] = json!({"post": {"summary": "Stop ringing those you rang who have not answered (you stay in the call); they get `call_update` cancelled", "security": bearer.clone(), "parameters": id.clone(),
        "responses": {"200": {"description": "the callees whose ring stopped", "content": {"application/json": {"schema": {"type": "object", "required": ["cancelled"], "properties": {"cancelled": {"type": "array", "items": {"type": "string"}}}}}}},
            "401": unauthorized.clone(), "404": not_found.clone()}}});
    paths["/v1/calls/{id}/hangup"] = json!({"post": {"summary": "Leave the call (idempotent): your rings stop, and those still in it get `call_update` ended. Until you do (or go offline) you are busy for other callers", "security": bearer.clone(), "parameters": id.clone(),
        "responses": {"204": {"description": "left"}, "401": unauthorized.clone(), "404": not_found.clone()}}});
    paths["/v1/calls/{id}/members"] = json!({"post": {"summary": "Add contacts to a call you are in: they ring into its room", "security": bearer, "parameters": id, "requestBody": body("CallRequest"),
        "responses": {"200": ok("ringing", "Call"), "401": unauthorized, "403": error("`not_a_contact`"), "404": not_found,
            "409": error("`not_in_call` (you left it), `already_in_call` (all of them ring or are in it already), `callee_busy`"),
            "422": error("`invalid_callees`"), "429": retry("`rate_limited`")}}});
}
