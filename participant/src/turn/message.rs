//! The STUN message format (RFC 8489) with the TURN methods and attributes the client uses
//! (RFC 8656), and TURN's ChannelData framing. Parsing never panics: everything here reads
//! what a TURN server (or anyone who can send to our socket) chose to send.
//!
//! Hand-written rather than a crate: the STUN/TURN codecs on crates.io that work without
//! an async runtime (`stun-types`/`turn-types`) pull older majors of hmac, sha1, md-5 and
//! rand next to the workspace's; the subset needed here is small.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER: usize = 20;
const INTEGRITY_LEN: usize = 20;

/// STUN methods of TURN (RFC 8656 §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
    Other(u16),
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
            Method::Other(code) => code,
        }
    }

    fn from_code(code: u16) -> Self {
        match code {
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            other => Method::Other(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Attribute types (RFC 8489 §18.3, RFC 8656 §18).
pub mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// UDP's protocol number, for REQUESTED-TRANSPORT.
pub const TRANSPORT_UDP: u8 = 17;

pub type TransactionId = [u8; 12];

fn message_type(method: Method, class: Class) -> u16 {
    let m = method.code() & 0x0FFF;
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (Method::from_code(m), class)
}

/// Writes one STUN message.
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    pub fn new(method: Method, class: Class, txid: &TransactionId) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(txid);
        Self { buf }
    }

    /// Appends an attribute (values longer than 65535 bytes are cut: none of ours are).
    pub fn attr(mut self, kind: u16, value: &[u8]) -> Self {
        let len = value.len().min(usize::from(u16::MAX));
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        self.buf.extend_from_slice(&value[..len]);
        let padded = len.div_ceil(4) * 4;
        self.buf.resize(self.buf.len() + padded - len, 0);
        self
    }

    pub fn u32_attr(self, kind: u16, value: u32) -> Self {
        self.attr(kind, &value.to_be_bytes())
    }

    pub fn xor_address(self, kind: u16, addr: SocketAddr) -> Self {
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&self.buf[8..HEADER]);
        let value = encode_xor_address(addr, &txid);
        self.attr(kind, &value)
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key` over the message so far, its length
    /// field already counting the attribute) and returns the message.
    pub fn finish_with_integrity(mut self, key: &[u8]) -> Vec<u8> {
        let total = self.buf.len() - HEADER + 4 + INTEGRITY_LEN;
        self.set_length(total);
        let mac = hmac_sha1(key, &[&self.buf]);
        self.buf
            .extend_from_slice(&attr::MESSAGE_INTEGRITY.to_be_bytes());
        self.buf
            .extend_from_slice(&(INTEGRITY_LEN as u16).to_be_bytes());
        self.buf.extend_from_slice(&mac);
        self.buf
    }

    pub fn finish(mut self) -> Vec<u8> {
        let total = self.buf.len() - HEADER;
        self.set_length(total);
        self.buf
    }

    fn set_length(&mut self, len: usize) {
        let len = (len.min(usize::from(u16::MAX)) as u16).to_be_bytes();
        self.buf[2..4].copy_from_slice(&len);
    }
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; INTEGRITY_LEN] {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut out = [0u8; INTEGRITY_LEN];
    if let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) {
        for part in parts {
            mac.update(part);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// The long-term credential key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&md5.finalize());
    key
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than a STUN header")]
    Short,
    #[error("not a STUN message (first bits or magic cookie)")]
    NotStun,
    #[error("the length field does not fit the datagram")]
    BadLength,
    #[error("an attribute runs past the message")]
    BadAttribute,
}

/// A parsed STUN message borrowing the datagram.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub method: Method,
    pub class: Class,
    pub txid: TransactionId,
    raw: &'a [u8],
    attrs: Vec<(u16, &'a [u8])>,
    /// Where the MESSAGE-INTEGRITY attribute starts, when there is one.
    integrity_at: Option<usize>,
}

impl<'a> Message<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, ParseError> {
        if data.len() < HEADER {
            return Err(ParseError::Short);
        }
        let kind = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let cookie = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        if kind & 0xC000 != 0 || cookie != MAGIC_COOKIE {
            return Err(ParseError::NotStun);
        }
        if len % 4 != 0 || HEADER + len > data.len() {
            return Err(ParseError::BadLength);
        }
        let raw = &data[..HEADER + len];
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&raw[8..HEADER]);
        let (method, class) = split_type(kind);
        let mut attrs = Vec::new();
        let mut integrity_at = None;
        let mut at = HEADER;
        while at + 4 <= raw.len() {
            let t = u16::from_be_bytes([raw[at], raw[at + 1]]);
            let l = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
            let start = at + 4;
            let end = start + l;
            if end > raw.len() {
                return Err(ParseError::BadAttribute);
            }
            // After MESSAGE-INTEGRITY only FINGERPRINT may follow; the rest is not covered
            // by the integrity check, so it is not believed (RFC 8489 §14.5).
            if integrity_at.is_none() {
                if t == attr::MESSAGE_INTEGRITY {
                    integrity_at = Some(at);
                }
                attrs.push((t, &raw[start..end]));
            }
            at = start + l.div_ceil(4) * 4;
        }
        Ok(Self {
            method,
            class,
            txid,
            raw,
            attrs,
            integrity_at,
        })
    }

    /// The first attribute of `kind`.
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|(t, _)| *t == kind).map(|(_, v)| *v)
    }

    pub fn text(&self, kind: u16) -> Option<String> {
        self.get(kind)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    }

    pub fn u32_attr(&self, kind: u16) -> Option<u32> {
        let v = self.get(kind)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    pub fn xor_address(&self, kind: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(kind)?, &self.txid)
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<(u16, String)> {
        let v = self.get(attr::ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        let reason = String::from_utf8_lossy(&v[4..]).into_owned();
        Some((code, reason))
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Whether MESSAGE-INTEGRITY is present and right for `key`.
    pub fn integrity_ok(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(expected) = self.raw.get(at + 4..at + 4 + INTEGRITY_LEN) else {
            return false;
        };
        // The length field as it was when the sender computed the HMAC: up to and
        // including MESSAGE-INTEGRITY.
        let len = ((at - HEADER + 4 + INTEGRITY_LEN) as u16).to_be_bytes();
        // Constant-time comparison through the MAC's own verify.
        let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
            return false;
        };
        mac.update(&self.raw[..2]);
        mac.update(&len);
        mac.update(&self.raw[4..at]);
        mac.verify_slice(expected).is_ok()
    }
}

fn encode_xor_address(addr: SocketAddr, txid: &TransactionId) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut value = vec![0u8];
    match addr.ip() {
        IpAddr::V4(ip) => {
            value.push(1);
            value.extend_from_slice(&port.to_be_bytes());
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            value.extend_from_slice(&x.to_be_bytes());
        }
        IpAddr::V6(ip) => {
            value.push(2);
            value.extend_from_slice(&port.to_be_bytes());
            let mask = v6_mask(txid);
            value.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    value
}

fn v6_mask(txid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(txid);
    mask
}

fn decode_xor_address(v: &[u8], txid: &TransactionId) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match v.get(1)? {
        1 => {
            let x = u32::from_be_bytes(v.get(4..8)?.try_into().ok()?);
            IpAddr::V4(Ipv4Addr::from(x ^ MAGIC_COOKIE))
        }
        2 => {
            let raw: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            let mask = v6_mask(txid);
            let mut octets = [0u8; 16];
            for (o, (a, m)) in octets.iter_mut().zip(raw.iter().zip(mask)) {
                *o = a ^ m;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The channel numbers a client may bind (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;

/// A ChannelData message: channel number, length, payload (no padding over UDP).
pub fn channel_data(channel: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let len = payload.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&payload[..len]);
}

/// The channel number and payload range of a ChannelData message, if `data` is one.
pub fn parse_channel_data(data: &[u8]) -> Option<(u16, std::ops::Range<usize>)> {
    let channel = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
    if !(0x4000..=0x7FFF).contains(&channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?]));
    (4 + len <= data.len()).then_some((channel, 4..4 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn types_round_trip() {
        for method in [
            Method::Allocate,
            Method::Refresh,
            Method::Send,
            Method::Data,
            Method::CreatePermission,
            Method::ChannelBind,
        ] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(method, class)), (method, class));
            }
        }
        // Well-known values: Allocate request 0x0003, its error response 0x0113, a Data
        // indication 0x0017.
        assert_eq!(message_type(Method::Allocate, Class::Request), 0x0003);
        assert_eq!(message_type(Method::Allocate, Class::Error), 0x0113);
        assert_eq!(message_type(Method::Data, Class::Indication), 0x0017);
    }

    #[test]
    fn a_message_with_integrity_round_trips_and_a_tampered_one_fails() {
        let txid = [7u8; 12];
        let key = long_term_key("user", "realm", "pass");
        let bytes = Builder::new(Method::Allocate, Class::Request, &txid)
            .attr(attr::REQUESTED_TRANSPORT, &[TRANSPORT_UDP, 0, 0, 0])
            .attr(attr::USERNAME, b"user")
            .xor_address(attr::XOR_PEER_ADDRESS, addr("192.0.2.1:3478"))
            .xor_address(attr::XOR_RELAYED_ADDRESS, addr("[2001:db8::1]:40000"))
            .finish_with_integrity(&key);
        let m = Message::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.method, m.class, m.txid),
            (Method::Allocate, Class::Request, txid)
        );
        assert_eq!(m.text(attr::USERNAME).as_deref(), Some("user"));
        assert_eq!(
            m.xor_address(attr::XOR_PEER_ADDRESS),
            Some(addr("192.0.2.1:3478"))
        );
        assert_eq!(
            m.xor_address(attr::XOR_RELAYED_ADDRESS),
            Some(addr("[2001:db8::1]:40000"))
        );
        assert!(m.integrity_ok(&key));
        assert!(!m.integrity_ok(&long_term_key("user", "realm", "forged")));
        let mut tampered = bytes.clone();
        // A byte of USERNAME's value.
        tampered[33] ^= 1;
        let t = Message::parse(&tampered).unwrap_or_else(|e| panic!("{e}"));
        assert!(!t.integrity_ok(&key));
    }

    #[test]
    fn the_long_term_key_is_md5_of_user_realm_password() {
        // md5sum of "1700000000:alice:surge:c2VjcmV0".
        let key = long_term_key("1700000000:alice", "surge", "c2VjcmV0");
        assert_eq!(
            key,
            [
                0x33, 0x7c, 0x87, 0xea, 0xa2, 0x49, 0xdf, 0x4a, 0x3b, 0x35, 0x20, 0xae, 0xb9, 0x3a,
                0xb1, 0x84
            ]
        );
    }

    #[test]
    fn error_codes_are_read() {
        let txid = [1u8; 12];
        let bytes = Builder::new(Method::Allocate, Class::Error, &txid)
            .attr(
                attr::ERROR_CODE,
                &[0, 0, 4, 38, b'S', b't', b'a', b'l', b'e'],
            )
            .finish();
        let m = Message::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.error_code(), Some((438, "Stale".into())));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(Message::parse(&[0; 4]).err(), Some(ParseError::Short));
        let mut bytes = Builder::new(Method::Data, Class::Indication, &[0; 12])
            .attr(attr::DATA, b"abcd")
            .finish();
        assert!(Message::parse(&bytes).is_ok());
        bytes[22..24].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(Message::parse(&bytes).err(), Some(ParseError::BadAttribute));
        bytes[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(Message::parse(&bytes).err(), Some(ParseError::BadLength));
        bytes[4] = 0;
        assert_eq!(Message::parse(&bytes).err(), Some(ParseError::NotStun));
    }

    #[test]
    fn channel_data_round_trips() {
        let mut out = Vec::new();
        channel_data(0x4001, b"hello", &mut out);
        assert_eq!(parse_channel_data(&out), Some((0x4001, 4..9)));
        assert_eq!(parse_channel_data(&out[..6]), None);
        assert_eq!(parse_channel_data(&[0x00, 0x01, 0, 0]), None);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(m) = Message::parse(&data) {
                let _ = m.error_code();
                let _ = m.xor_address(attr::XOR_PEER_ADDRESS);
                let _ = m.xor_address(attr::XOR_RELAYED_ADDRESS);
                let _ = m.u32_attr(attr::LIFETIME);
                let _ = m.integrity_ok(b"key");
            }
            let _ = parse_channel_data(&data);
        }

        #[test]
        fn random_attributes_behind_a_valid_header_never_panic(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            kind in proptest::num::u16::ANY,
        ) {
            let len = body.len() / 4 * 4;
            let mut data = Vec::new();
            data.extend_from_slice(&(kind & 0x3FFF).to_be_bytes());
            data.extend_from_slice(&(len as u16).to_be_bytes());
            data.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            data.extend_from_slice(&[9; 12]);
            data.extend_from_slice(&body[..len]);
            if let Ok(m) = Message::parse(&data) {
                let _ = m.error_code();
                let _ = m.xor_address(attr::XOR_PEER_ADDRESS);
                let _ = m.xor_address(attr::XOR_RELAYED_ADDRESS);
                let _ = m.text(attr::REALM);
                let _ = m.integrity_ok(b"key");
            }
        }
    }
}
