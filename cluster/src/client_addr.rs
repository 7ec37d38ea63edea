//! The client's real address behind proxies.
//!
//! A request that arrives from a trusted proxy (`--trusted-proxies`) is keyed on the
//! right-most address of the forwarding chain that is not itself a trusted proxy: every hop
//! to the right of it was added by infrastructure we trust, and everything to its left was
//! written by the client and may be invented. A request from anywhere else keeps its socket
//! address, whatever headers it sends, so a client cannot spoof its way to a fresh rate
//! limit. A chain that does not parse falls back to the socket address: garbage is never
//! believed.
//!
//! Only one header is read, the one the proxy in front writes (`X-Forwarded-For` by
//! default, as ingress-nginx and most load balancers do; RFC 7239 `Forwarded` on request).
//! Reading both would let a client put a made-up chain in the header its proxy passes
//! through untouched.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The header a trusted proxy writes the forwarding chain into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (ingress-nginx, HAProxy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// The proxies whose forwarding headers are believed, and which header they write.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

/// A `--trusted-proxies` value: comma-separated CIDRs or addresses. An empty value (the
/// default, or `SURGE_TRUSTED_PROXIES=` as a chart renders "no proxies") trusts none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyList(pub Vec<IpNet>);

impl std::str::FromStr for ProxyList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(parse_cidr)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Parses one `--trusted-proxies` entry: a CIDR (`10.0.0.0/8`) or a single address.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not a CIDR (e.g. 10.0.0.0/8, fd00::/8) or an IP address"))
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { nets, header }
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request whose socket peer is `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let Some(chain) = self.chain(headers) else {
            return peer;
        };
        let mut farthest = peer;
        for entry in chain.iter().rev() {
            let hop = match self.header {
                ForwardedHeader::XForwardedFor => parse_hop(entry),
                ForwardedHeader::Forwarded => forwarded_for(entry),
            };
            let Some(hop) = hop.map(|ip| ip.to_canonical()) else {
                // Written by a trusted hop and unreadable: believe nothing.
                return peer;
            };
            if !self.trusts(hop) {
                return hop;
            }
            farthest = hop;
        }
        // Every hop is a trusted proxy (a request from inside the cluster): the one that
        // started the chain is the best we know.
        farthest
    }

    /// The entries of the chain, left (the client's end) to right, across all lines of
    /// the header; `None` when a line is not text. An absent header is an empty chain.
    fn chain<'h>(&self, headers: &'h HeaderMap) -> Option<Vec<&'h str>> {
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let mut chain = Vec::new();
        for value in headers.get_all(name) {
            chain.extend(value.to_str().ok()?.split(','));
        }
        Some(chain)
    }

    /// A layer that makes these proxies known to the [`ClientIp`] extractor.
    pub fn layer(self) -> Extension<Arc<Self>> {
        Extension(Arc::new(self))
    }
}

/// One hop's address: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:4711`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The `for=` node of one RFC 7239 element (`for=192.0.2.60;proto=https;by=…`). Obfuscated
/// or `unknown` nodes, and elements without `for=`, cannot key a client: `None`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    parse_hop(value)
}

/// The client's address: the socket peer, or the address a trusted proxy forwarded for.
/// `None` only when the router was served without connect info (in-process tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(Self(None));
        };
        let ip = match parts.extensions.get::<Arc<TrustedProxies>>() {
            Some(proxies) => proxies.client_ip(peer.ip(), &parts.headers),
            None => peer.ip().to_canonical(),
        };
        Ok(Self(Some(ip)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ingress() -> TrustedProxies {
        TrustedProxies::new(
            vec![
                parse_cidr("10.0.0.0/8").unwrap(),
                parse_cidr("fd00::/8").unwrap(),
            ],
            ForwardedHeader::XForwardedFor,
        )
    }

    #[test]
    fn without_trusted_proxies_headers_are_ignored() {
        let none = TrustedProxies::default();
        let h = headers("x-forwarded-for", &["198.51.100.1"]);
        assert_eq!(none.client_ip(ip("203.0.113.9"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn a_client_that_sends_its_own_chain_directly_keeps_its_address() {
        // Talking to the API directly, past the proxy: each made-up header would be a fresh
        // rate-limit budget if it were believed.
        for chain in ["198.51.100.1", "10.1.2.3", "198.51.100.1, 10.0.0.7"] {
            let h = headers("x-forwarded-for", &[chain]);
            assert_eq!(
                ingress().client_ip(ip("203.0.113.9"), &h),
                ip("203.0.113.9")
            );
        }
    }

    #[test]
    fn through_the_proxy_the_right_most_untrusted_hop_counts() {
        // ingress-nginx appends the address it saw to what the client sent.
        let spoofed = headers("x-forwarded-for", &["198.51.100.1, 203.0.113.9"]);
        assert_eq!(
            ingress().client_ip(ip("10.0.0.5"), &spoofed),
            ip("203.0.113.9")
        );
        // A chain of trusted proxies (cloud LB → ingress → API) is skipped.
        let chained = headers("x-forwarded-for", &["203.0.113.9, 10.2.0.1", "10.3.0.1"]);
        assert_eq!(
            ingress().client_ip(ip("10.0.0.5"), &chained),
            ip("203.0.113.9")
        );
        // IPv4-mapped IPv6 sockets and hops are plain IPv4.
        let mapped = headers("x-forwarded-for", &["::ffff:203.0.113.9"]);
        assert_eq!(
            ingress().client_ip(ip("::ffff:10.0.0.5"), &mapped),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        for (entry, want) in [
            ("203.0.113.9:4711", "203.0.113.9"),
            ("2001:db8:1:2::7", "2001:db8:1:2::7"),
            ("[2001:db8:1:2::7]", "2001:db8:1:2::7"),
            ("[2001:db8:1:2::7]:4711", "2001:db8:1:2::7"),
        ] {
            let h = headers("x-forwarded-for", &[entry]);
            assert_eq!(ingress().client_ip(ip("10.0.0.5"), &h), ip(want), "{entry}");
        }
    }

    #[test]
    fn garbage_falls_back_to_the_socket_address() {
        for chain in [
            "",
            "not-an-ip",
            "203.0.113.9, ",
            "unknown",
            "203.0.113.9 10.0.0.1",
        ] {
            let h = headers("x-forwarded-for", &[chain]);
            assert_eq!(
                ingress().client_ip(ip("10.0.0.5"), &h),
                ip("10.0.0.5"),
                "{chain:?}"
            );
        }
        // Garbage left of the first untrusted hop is never looked at.
        let h = headers("x-forwarded-for", &["garbage, 203.0.113.9"]);
        assert_eq!(ingress().client_ip(ip("10.0.0.5"), &h), ip("203.0.113.9"));
        // No header at all from the proxy: the proxy is the client.
        assert_eq!(
            ingress().client_ip(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn an_all_trusted_chain_gives_its_first_hop() {
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.7"]);
        assert_eq!(ingress().client_ip(ip("10.0.0.5"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn rfc_7239_forwarded() {
        let proxies = TrustedProxies::new(
            vec![parse_cidr("10.0.0.0/8").unwrap()],
            ForwardedHeader::Forwarded,
        );
        let h = headers(
            "forwarded",
            &[r#"for=198.51.100.1;proto=https, For="[2001:db8:cafe::17]:4711";by=10.0.0.1"#],
        );
        assert_eq!(
            proxies.client_ip(ip("10.0.0.5"), &h),
            ip("2001:db8:cafe::17")
        );
        let h = headers("forwarded", &["for=203.0.113.9, for=10.0.0.3"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("203.0.113.9"));
        for garbage in ["for=unknown", "for=_hidden", "proto=https", "for=\"[::1\""] {
            let h = headers("forwarded", &[garbage]);
            assert_eq!(
                proxies.client_ip(ip("10.0.0.5"), &h),
                ip("10.0.0.5"),
                "{garbage}"
            );
        }
        // This proxy writes `Forwarded`: an X-Forwarded-For the client made up is not read.
        let h = headers("x-forwarded-for", &["198.51.100.1"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("10.0.0.5"));
    }

    #[test]
    fn proxy_lists_parse_and_empty_means_none() {
        assert_eq!("".parse::<ProxyList>().unwrap(), ProxyList::default());
        assert_eq!(" , ".parse::<ProxyList>().unwrap(), ProxyList::default());
        let list: ProxyList = "10.0.0.0/8, 127.0.0.2".parse().unwrap();
        assert_eq!(list.0.len(), 2);
        assert!("10.0.0.0/8,nonsense".parse::<ProxyList>().is_err());
    }

    #[test]
    fn cidrs_parse_and_refuse_garbage() {
        assert_eq!(
            parse_cidr(" 10.1.2.3/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8"] {
            let err = parse_cidr(bad).unwrap_err();
            assert!(err.contains("not a CIDR"), "{err}");
        }
    }
}
