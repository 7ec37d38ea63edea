//! The data-channel protocol has one definition (`surge_sfu_proto::protocol`); these tests
//! hold `docs/signalling.md` and the browser client (`signup-api/web/call.js`) to it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use surge_sfu_proto::protocol::{ClientMessage, ServerMessage};

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The lines of the fenced block whose info string is `info`.
fn fenced_block(doc: &str, info: &str) -> Vec<String> {
    let start = format!("```{info}\n");
    let at = doc
        .find(&start)
        .unwrap_or_else(|| panic!("no ```{info} block"));
    let body = &doc[at + start.len()..];
    let end = body.find("```").unwrap();
    body[..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The tag of a message; exhaustive, so a new variant fails to compile until it is named.
fn server_type(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Offer { .. } => "offer",
        ServerMessage::Tracks { .. } => "tracks",
        ServerMessage::Welcome { .. } => "welcome",
        ServerMessage::Joined { .. } => "joined",
        ServerMessage::Left { .. } => "left",
        ServerMessage::Muted { .. } => "muted",
        ServerMessage::Speaker { .. } => "speaker",
        ServerMessage::Layer { .. } => "layer",
        ServerMessage::Ended { .. } => "ended",
        ServerMessage::Chat { .. } => "chat",
        ServerMessage::ChatRefused { .. } => "chat_refused",
        ServerMessage::Hand { .. } => "hand",
        ServerMessage::Quality { .. } => "quality",
    }
}

fn client_type(message: &ClientMessage) -> Option<&'static str> {
    match message {
        ClientMessage::Answer { .. } => Some("answer"),
        ClientMessage::Mute { .. } => Some("mute"),
        ClientMessage::MaxHeight { .. } => Some("max_height"),
        ClientMessage::Screen { .. } => Some("screen"),
        ClientMessage::Chat { .. } => Some("chat"),
        ClientMessage::RaiseHand => Some("raise_hand"),
        ClientMessage::LowerHand => Some("lower_hand"),
        ClientMessage::Unknown => None,
    }
}

/// Parses an example, and checks it re-serialises to the same JSON (no field the type lacks).
fn parse_exact<T: serde::de::DeserializeOwned + serde::Serialize>(line: &str) -> T {
    let message: T = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    let again = serde_json::to_value(&message).unwrap();
    let original: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(again, original, "the example has fields the type does not");
    message
}

#[test]
fn every_documented_message_parses_and_every_type_is_documented() {
    let doc = repo_file("docs/signalling.md");
    let server: BTreeSet<&str> = fenced_block(&doc, "jsonl server-to-client")
        .iter()
        .map(|line| server_type(&parse_exact::<ServerMessage>(line)))
        .collect();
    assert_eq!(server, ServerMessage::TYPES.into_iter().collect());
    let client: BTreeSet<&str> = fenced_block(&doc, "jsonl client-to-server")
        .iter()
        .map(|line| {
            client_type(&parse_exact::<ClientMessage>(line))
                .unwrap_or_else(|| panic!("{line}: not a client type"))
        })
        .collect();
    assert_eq!(client, ClientMessage::TYPES.into_iter().collect());
}

/// `onMessage(data) { … }` of the browser's call: the text up to the method's closing brace.
fn on_message_body(call_js: &str) -> &str {
    let at = call_js
        .find("  onMessage(data) {")
        .expect("call.js has onMessage");
    let body = &call_js[at..];
    let end = body.find("\n  }\n").expect("onMessage ends");
    &body[..end]
}

/// Every `'literal'` after `prefix` in `text`.
fn quoted_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let rest = rest.strip_prefix('\'')?;
            rest.find('\'').map(|end| &rest[..end])
        })
        .collect()
}

/// Identifiers read as `name.field` in `text`.
fn fields_read<'a>(text: &'a str, name: &str) -> BTreeSet<&'a str> {
    let prefix = format!("{name}.");
    text.match_indices(&prefix)
        .filter(|(at, _)| {
            // Not a longer identifier ending in `name` (`this.message.` would still count).
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

fn keys_of_examples(lines: &[String], nested: Option<&str>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let objects: Vec<&serde_json::Value> = match nested {
            None => vec![&value],
            Some(field) => value[field]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
        };
        for object in objects {
            if let Some(map) = object.as_object() {
                keys.extend(map.keys().cloned());
            }
        }
    }
    keys
}

#[test]
fn the_browser_client_speaks_the_same_protocol() {
    let doc = repo_file("docs/signalling.md");
    let call_js = repo_file("signup-api/web/call.js");
    let on_message = on_message_body(&call_js);

    // It handles every server message type, and no other.
    let handled: BTreeSet<&str> = quoted_after(on_message, "case ").into_iter().collect();
    assert_eq!(handled, ServerMessage::TYPES.into_iter().collect());

    // Every field it reads exists in the server's messages.
    let server_examples = fenced_block(&doc, "jsonl server-to-client");
    let server_keys = keys_of_examples(&server_examples, None);
    for field in fields_read(on_message, "message") {
        assert!(server_keys.contains(field), "call.js reads message.{field}");
    }
    let track_keys = keys_of_examples(&server_examples, Some("tracks"));
    for field in fields_read(on_message, "track") {
        assert!(track_keys.contains(field), "call.js reads track.{field}");
    }

    // What it sends parses as a client message with the documented fields.
    let client_examples = fenced_block(&doc, "jsonl client-to-server");
    let sent = quoted_after(&call_js, "this.send({ type: ");
    assert!(
        !sent.is_empty(),
        "call.js sends with this.send({{ type: … }})"
    );
    for kind in sent {
        assert!(ClientMessage::TYPES.contains(&kind), "call.js sends {kind}");
        let example = client_examples
            .iter()
            .find(|l| l.contains(&format!("\"type\":\"{kind}\"")))
            .unwrap();
        let keys = keys_of_examples(std::slice::from_ref(example), None);
        let literal_at = call_js
            .find(&format!("this.send({{ type: '{kind}'"))
            .unwrap();
        let literal = &call_js[literal_at + "this.send({ ".len()..];
        let literal = &literal[..literal.find('}').unwrap()];
        for part in literal.split(',') {
            let key = part.split(':').next().unwrap().trim();
            assert!(keys.contains(key), "call.js sends {kind} with {key}");
        }
    }
}
