//! Just enough STUN parsing to route the first packet of a new remote address: the
//! ICE username fragment this shard handed out sits before the colon of the USERNAME
//! attribute of a binding request (RFC 8445 §7.2.2). This only picks the session to ask;
//! str0m does the full validation (message integrity, fingerprint), and the address is
//! registered only once str0m answered the request with a binding success.

const HEADER_LEN: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// Whether `datagram` looks like a STUN message (RFC 7983 demultiplexing: first byte 0..=3,
/// plus the magic cookie).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

/// Whether `datagram` is a STUN binding success response (RFC 8489 §5: method 0x001, class
/// success), which str0m sends only for a request that passed its integrity check.
pub fn is_binding_success(datagram: &[u8]) -> bool {
    is_stun(datagram) && datagram[0..2] == [0x01, 0x01]
}

/// The local (our) ufrag from a STUN message's USERNAME attribute, if it has one.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = HEADER_LEN.checked_add(body_len)?.min(datagram.len());
    let mut at = HEADER_LEN;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let value_start = at + 4;
        let value_end = value_start.checked_add(len)?;
        if value_end > end {
            return None;
        }
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(&datagram[value_start..value_end]).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to a multiple of four bytes.
        at = value_start + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        // An unrelated attribute first, to check skipping and padding.
        attrs.extend_from_slice(&[0x80, 0x2A, 0x00, 0x03, 1, 2, 3, 0]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn finds_the_local_ufrag() {
        let msg = binding_request(b"srvfrag:clifrag");
        assert!(is_stun(&msg));
        assert!(!is_binding_success(&msg));
        let mut success = msg.clone();
        success[0..2].copy_from_slice(&[0x01, 0x01]);
        assert!(is_binding_success(&success));
        assert_eq!(local_ufrag(&msg), Some("srvfrag"));
    }

    #[test]
    fn garbage_and_truncation_are_none() {
        assert_eq!(local_ufrag(b""), None);
        assert_eq!(local_ufrag(&[0x80; 100]), None);
        let msg = binding_request(b"srvfrag:clifrag");
        for cut in 0..msg.len() {
            // Never panics; a cut inside the username yields None or a prefix.
            let _ = local_ufrag(&msg[..cut]);
        }
        let mut bad_len = binding_request(b"a:b");
        bad_len[2] = 0xFF;
        let _ = local_ufrag(&bad_len);
        assert_eq!(local_ufrag(&binding_request(b":x")), None);
    }
}
