//! Embeds every file under `web/` (the web client) into the binary, so `surge up` serves
//! the client with nothing else installed and the web files can change without code edits.
//!
//! Paths stay relative to the package (`rerun-if-changed=web`, `include_bytes!` through
//! `CARGO_MANIFEST_DIR` at the lib's compile time): a target directory shared by several
//! checkouts (CI's warm cache, a worktree) then never embeds another checkout's files.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=web");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = PathBuf::from(manifest_dir).join("web");
    let mut names: Vec<String> = Vec::new();
    if let Ok(read) = std::fs::read_dir(&dir) {
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_file()
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    let mut code = String::from(
        "/// Files of the web client: (name, bytes).\npub static WEB_FILES: &[(&str, &[u8])] = &[\n",
    );
    for name in names {
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/web/\", {name:?}))),"
        );
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("web_files.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("cannot write {}: {e}", out.display());
    }
}
