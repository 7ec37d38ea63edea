//! Embeds every file under `web/` (the web client) into the binary, so `surge up` serves
//! the client with nothing else installed and the web files can change without code edits.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<(String, String)> = Vec::new();
    if let Ok(read) = std::fs::read_dir(&dir) {
        for entry in read.flatten() {
            let path = entry.path();
            println!("cargo:rerun-if-changed={}", path.display());
            if path.is_file()
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                entries.push((name.to_owned(), path.display().to_string()));
            }
        }
    }
    entries.sort();
    let mut code = String::from(
        "/// Files of the web client: (name, bytes).\npub static WEB_FILES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in entries {
        let _ = writeln!(code, "    ({name:?}, include_bytes!({path:?})),");
    }
    code.push_str("];\n");
    let out =
        Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("web_files.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("cannot write {}: {e}", out.display());
    }
}
