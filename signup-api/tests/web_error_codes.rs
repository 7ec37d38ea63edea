//! The web client matches only error codes that a Surge server emits: every code it names
//! in `err.code === '…'`, `switch (err.code)` or `FATAL_CODES` is an `ErrorCode` (or one of
//! the codes `api.js` makes up itself for failures that never reached a server).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use surge_cluster::ErrorCode;

/// Codes `api.js` gives errors that no server answered.
const CLIENT_CODES: [&str; 1] = ["network"];

fn web_files() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "js"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The `'…'` literals in `text`.
fn literals(text: &str) -> Vec<&str> {
    text.split('\'').skip(1).step_by(2).collect()
}

/// The text of the block that starts at `at` (its first `{`) up to the matching `}`.
fn block(text: &str, at: usize) -> &str {
    let open = at + text[at..].find('{').unwrap();
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open..open + i];
                }
            }
            _ => {}
        }
    }
    &text[open..]
}

/// Every error code the client compares against, with the file it is in.
fn codes_matched(file: &str, text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("switch (err.code)") {
        for line in block(text, at).lines() {
            if let Some(rest) = line.trim().strip_prefix("case ") {
                found.extend(literals(rest).into_iter().take(1).map(str::to_owned));
            }
        }
    }
    for (at, prefix) in text.match_indices("err.code === ") {
        let rest = &text[at + prefix.len()..];
        found.extend(literals(rest).into_iter().take(1).map(str::to_owned));
    }
    if let Some(at) = text.find("FATAL_CODES = new Set([") {
        let rest = &text[at..];
        let list = &rest[..rest.find("])").unwrap()];
        found.extend(literals(list).into_iter().map(str::to_owned));
    }
    found
        .into_iter()
        .map(|code| (file.to_owned(), code))
        .collect()
}

#[test]
fn the_web_client_matches_only_codes_a_server_emits() {
    let mut checked = 0;
    for (file, text) in web_files() {
        for (file, code) in codes_matched(&file, &text) {
            checked += 1;
            assert!(
                ErrorCode::parse(&code).is_some() || CLIENT_CODES.contains(&code.as_str()),
                "{file} matches error code {code:?}, which no Surge server emits"
            );
        }
    }
    // The extraction found the client's matches at all (a refactor of the JS would show).
    assert!(
        checked >= 10,
        "only {checked} codes found in the web client"
    );
}
