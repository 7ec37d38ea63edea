//! `GET /openapi.json`: the API's OpenAPI 3.1 document, written by hand (it is small, and
//! this keeps a macro-heavy dependency out of the build).

use std::sync::LazyLock;

use axum::Json;
use serde_json::{Value, json};

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

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
                "session": {"type": "http", "scheme": "bearer", "description": "A session token from POST /v1/sessions. The presence stream also accepts ?token=."}
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
                "AddContactRequest": {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}},
                "Contact": {"type": "object", "required": ["user_id", "email", "display_name", "status"], "properties": {
                    "user_id": {"type": "string"}, "email": {"type": "string"}, "display_name": {"type": "string"}, "status": {"$ref": "#/components/schemas/Status"}}},
                "ContactList": {"type": "object", "required": ["contacts"], "properties": {"contacts": {"type": "array", "items": {"$ref": "#/components/schemas/Contact"}}}},
                "CreateRoomRequest": {"type": "object", "properties": {"name": {"type": "string"}}},
                "Room": {"type": "object", "required": ["id", "name", "expires_at"], "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                    "expires_at": {"type": "integer", "description": "unix seconds; each join pushes it back by the room lifetime (30 days by default)"}}},
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
                "put": {"summary": "Heartbeat: set your status for ttl_secs (send again before it passes, with jitter)", "security": bearer.clone(),
                    "requestBody": body("HeartbeatRequest"),
                    "responses": {"200": ok("status set", "Heartbeat"), "401": unauthorized.clone(), "422": error("`invalid_status`"), "503": retry("`presence_unavailable`")}},
                "get": {"summary": "Presence of several users (offline when unknown or expired)", "security": bearer.clone(),
                    "parameters": [{"name": "ids", "in": "query", "required": true, "schema": {"type": "string"}, "description": "comma-separated user ids (at most 200)"}],
                    "responses": {"200": ok("statuses", "PresenceList"), "401": unauthorized.clone(), "422": error("`invalid_ids`")}}},
            "/v1/presence/stream": {"get": {
                "summary": "Server-Sent Events: event `presence`, data {user_id, status}, for your contacts: a snapshot, then every change (including going offline)",
                "security": bearer.clone(),
                "parameters": [{"name": "token", "in": "query", "required": false, "schema": {"type": "string"}, "description": "session token, for EventSource"}],
                "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "401": unauthorized.clone()}}},
            "/v1/contacts": {
                "post": {"summary": "Add a contact by email", "security": bearer.clone(), "requestBody": body("AddContactRequest"),
                    "responses": {"201": ok("added", "Contact"), "401": unauthorized.clone(), "404": error("`user_not_found`"), "422": error("`invalid_email`, `cannot_add_self`")}},
                "get": {"summary": "Your contacts with their presence", "security": bearer.clone(),
                    "responses": {"200": ok("contacts", "ContactList"), "401": unauthorized.clone()}}},
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
                    "201": {"description": "joined: the SDP answer", "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/rooms/{id}/participants/{participant}"}},
                        "content": {"application/sdp": {"schema": {"type": "string"}}}},
                    "400": error("`invalid_sdp`"), "401": unauthorized.clone(), "404": error("`room_not_found`"),
                    "409": error("`room_full`"), "413": error("`payload_too_large`"), "415": error("`unsupported_media_type`"),
                    "502": error("`shard_error`"),
                    "503": retry("`no_capacity`, `registry_unavailable`, `shard_full`, `shard_unavailable` or `draining`")}}},
            "/v1/rooms/{id}/participants/{participant}": {
                "delete": {"summary": "Leave the call (only your own participant)", "security": bearer.clone(),
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "participant", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {"204": {"description": "left"}, "401": unauthorized.clone(), "404": error("`participant_not_found`"), "503": retry("`shard_unavailable` or `registry_unavailable`")}},
                "get": {"summary": "Whether the call server still has this participant of yours (ask when media stops: 404 means rejoin now)", "security": bearer,
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "participant", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {"200": ok("still there", "Participant"), "401": unauthorized, "404": error("`participant_not_found`"), "503": retry("`shard_unavailable` or `registry_unavailable`")}}},
            "/healthz": {"get": {"summary": "The process answers", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "This process can serve (started, not draining); never a backend's health", "responses": {"200": {"description": "ready"}, "503": retry("`not_ready`")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}}
        }
    })
}
