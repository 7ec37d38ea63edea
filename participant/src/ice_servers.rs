//! The TURN/STUN servers a join answer carries, as WHIP `Link` headers (RFC 9725 §4.6):
//! `<turn:host:3478?transport=udp>; rel="ice-server"; username="…"; credential="…";
//! credential-type="password"`.

/// One server (or several URLs sharing one username and credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// The `rel="ice-server"` links among `values` (each a `Link` header value, which may hold
/// several comma-separated links); other links are skipped.
pub fn from_link_headers<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<IceServer> {
    let mut servers: Vec<IceServer> = Vec::new();
    for value in values {
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>').map(|c| open + c) else {
                break;
            };
            let url = &rest[open + 1..close];
            let params_end = rest[close..].find('<').map_or(rest.len(), |n| close + n);
            let params = link_params(&rest[close + 1..params_end]);
            rest = &rest[params_end..];
            if params.rel.as_deref() != Some("ice-server") {
                continue;
            }
            match servers
                .iter_mut()
                .find(|s| s.username == params.username && s.credential == params.credential)
            {
                Some(server) => server.urls.push(url.to_owned()),
                None => servers.push(IceServer {
                    urls: vec![url.to_owned()],
                    username: params.username,
                    credential: params.credential,
                }),
            }
        }
    }
    servers
}

#[derive(Default)]
struct LinkParams {
    rel: Option<String>,
    username: Option<String>,
    credential: Option<String>,
}

/// `; key="value"` pairs after a link's URL (quoted strings hold no `"` in these links).
fn link_params(text: &str) -> LinkParams {
    let mut params = LinkParams::default();
    for part in text.split(';') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_end_matches(',')
            .trim()
            .trim_matches('"')
            .to_owned();
        match key.trim() {
            "rel" => params.rel = Some(value),
            "username" => params.username = Some(value),
            "credential" => params.credential = Some(value),
            _ => {}
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_become_ice_servers() {
        let udp = r#"<turn:t.example:3478?transport=udp>; rel="ice-server"; username="1700000000:0a1b2c3d4e5f6071"; credential="b2Wr/+=="; credential-type="password""#;
        let tcp = r#"<turn:t.example:3478?transport=tcp>; rel="ice-server"; username="1700000000:0a1b2c3d4e5f6071"; credential="b2Wr/+=="; credential-type="password""#;
        let joined = format!(
            r#"{tcp}, <https://example.com/x>; rel="other", <stun:s.example:3478>; rel="ice-server""#
        );
        let servers = from_link_headers([udp, joined.as_str()]);
        assert_eq!(
            servers,
            [
                IceServer {
                    urls: vec![
                        "turn:t.example:3478?transport=udp".into(),
                        "turn:t.example:3478?transport=tcp".into()
                    ],
                    username: Some("1700000000:0a1b2c3d4e5f6071".into()),
                    credential: Some("b2Wr/+==".into()),
                },
                IceServer {
                    urls: vec!["stun:s.example:3478".into()],
                    username: None,
                    credential: None,
                },
            ]
        );
        assert!(from_link_headers(["garbage <", "<x"]).is_empty());
    }
}
