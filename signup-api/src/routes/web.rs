//! The web client's static files, embedded at build time from `signup-api/web/` (see
//! `build.rs`): `/` and `/rooms/{id}` (join by link) serve `index.html`, `/static/{file}`
//! the rest.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use surge_cluster::http::HttpError;

use super::AppState;

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/rooms/{id}", get(index))
        .route("/static/{*file}", get(file))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// The web client's Content-Security-Policy: scripts and styles from this origin only (the
/// client has no inline script or style attribute), images also as `data:` (the favicon)
/// and `blob:`, network requests to this origin only, no plugins, never framed.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn serve(name: &str) -> Response {
    match WEB_FILES.iter().find(|(n, _)| *n == name) {
        Some((name, bytes)) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(name)),
            );
            // Files change with each release and carry no version in their names.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            // For browsers that predate frame-ancestors.
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            response
        }
        None => HttpError::not_found(format!("no file {name}")).into_response(),
    }
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A CSP without 'unsafe-inline' only holds if the client has nothing inline: no
    /// `<script>` with a body, no `on…=` handler, no `style` attribute or element, no
    /// `javascript:` URL in any embedded file.
    #[test]
    fn the_web_client_has_nothing_inline_that_the_csp_would_block() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        for (name, bytes) in WEB_FILES {
            if !name.ends_with(".html") && !name.ends_with(".js") {
                continue;
            }
            let text = std::str::from_utf8(bytes).unwrap().to_ascii_lowercase();
            for (i, _) in text.match_indices("<script") {
                let tag_end = text[i..].find('>').unwrap() + i;
                assert!(
                    text[i..tag_end].contains(" src="),
                    "{name}: an inline <script>"
                );
                assert!(
                    text[tag_end + 1..].starts_with("</script>"),
                    "{name}: a <script src> with a body"
                );
            }
            for banned in ["<style", " style=\"", " style='", "javascript:"] {
                assert!(!text.contains(banned), "{name} contains {banned:?}");
            }
            let handler = text.match_indices(" on").any(|(i, _)| {
                let rest = &text[i + 3..];
                let word: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !word.is_empty() && rest[word.len()..].starts_with("=\"")
            });
            assert!(!handler, "{name}: an inline on…= event handler");
        }
    }

    #[tokio::test]
    async fn pages_and_files_carry_the_security_headers() {
        for response in [index().await, file(Path("app.js".to_owned())).await] {
            let headers = response.headers();
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert!(
                CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'")
                    && CONTENT_SECURITY_POLICY.contains("script-src 'self';")
            );
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        }
    }
}
