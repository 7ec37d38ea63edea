//! Just enough STUN parsing to route the first packet of a new remote address: the
//! ICE username fragment this shard handed out sits before the colon of the USERNAME
//! attribute of a binding request (RFC 8445 §7.2.2). This only picks the session to ask;
//! str0m does the full validation (message integrity, fingerprint), and the address is
//! registered only once str0m answered the request with a binding success.
//!
//! And [`nominating`], which turns a client's first authenticated check into a nomination:
//! see there.

use std::sync::OnceLock;

use str0m::crypto::{CryptoProvider, Sha1HmacProvider, from_feature_flags};
use str0m::ice::{StunMessage, StunMessageBuilder};

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

/// Whether `datagram` is a binding request signed with `local_pwd` (our ICE password): only
/// a client that got our answer can send one.
pub fn is_authenticated_check(datagram: &[u8], local_pwd: &str) -> bool {
    is_stun(datagram)
        && StunMessage::parse(datagram)
            .is_ok_and(|m| m.is_binding_request() && m.verify(local_pwd.as_bytes(), sha1_hmac))
}

/// What [`nominating`] made of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nomination {
    /// Not an authenticated binding request from an ICE-controlling client: pass it on as is.
    NotACheck,
    /// An authenticated check that already nominates (USE-CANDIDATE): pass it on as is.
    Nominates,
    /// The same check re-signed with USE-CANDIDATE added: pass this on instead.
    Rewritten(Vec<u8>),
}

/// The HMAC-SHA1 str0m signs STUN with (the process default provider, else the one its
/// features build in, as `Rtc` picks it).
fn sha1_hmac(key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
    static PROVIDER: OnceLock<&'static dyn Sha1HmacProvider> = OnceLock::new();
    PROVIDER
        .get_or_init(|| match CryptoProvider::get_default() {
            Some(p) => p.sha1_hmac_provider,
            None => from_feature_flags().sha1_hmac_provider,
        })
        .sha1_hmac(key, payloads)
}

/// Aggressive nomination for an ICE-lite server (RFC 5245 §8.1.1.2 style): the client's
/// first check that proves it knows our ICE password (`local_pwd`, from our answer) is
/// taken as its nomination.
///
/// Why: str0m, being ICE-lite and controlled, has no send address until the client
/// nominates a pair with USE-CANDIDATE, so it cannot answer DTLS before that. Chrome, facing
/// an ICE-lite peer, only nominates once its first check was answered and the pair is
/// selected, on a later check; the DTLS handshake waits that long. Accepting the first check
/// saves that wait.
///
/// Not a new power for the sender: a check with a valid MESSAGE-INTEGRITY could have carried
/// USE-CANDIDATE itself. Only requests from an ICE-controlling agent are rewritten, and the
/// caller does it once per session, so the client's own later nominations still decide.
pub fn nominating(datagram: &[u8], local_pwd: &str) -> Nomination {
    if !is_stun(datagram) {
        return Nomination::NotACheck;
    }
    let Ok(message) = StunMessage::parse(datagram) else {
        return Nomination::NotACheck;
    };
    if !message.is_binding_request() || !message.verify(local_pwd.as_bytes(), sha1_hmac) {
        return Nomination::NotACheck;
    }
    let (Some(username), Some(prio), Some(tie_breaker)) = (
        message.username(),
        message.prio(),
        message.ice_controlling(),
    ) else {
        return Nomination::NotACheck;
    };
    if message.use_candidate() {
        return Nomination::Nominates;
    }
    let nomination = StunMessageBuilder::new()
        .binding()
        .request()
        .username(username)
        .prio(prio)
        .use_candidate()
        .ice_controlling(tie_breaker)
        .build(message.trans_id());
    // The original plus USE-CANDIDATE (4 bytes) always fits; a little room for other
    // attributes the builder writes in its own layout.
    let mut buf = vec![0_u8; datagram.len() + 64];
    match nomination.to_bytes(Some(local_pwd.as_bytes()), &mut buf, sha1_hmac) {
        Ok(len) => {
            buf.truncate(len);
            Nomination::Rewritten(buf)
        }
        Err(_) => Nomination::NotACheck,
    }
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

    /// A binding request as a controlling client signs it.
    fn signed_check(password: &str, use_candidate: bool) -> Vec<u8> {
        let trans_id = str0m::ice::TransId::new();
        let message = StunMessage::binding_request(
            "srvfrag:clifrag",
            trans_id,
            true,
            0x1234_5678_9abc_def0,
            0x6e00_1eff,
            use_candidate,
        );
        let mut buf = vec![0_u8; 1500];
        let len = message
            .to_bytes(Some(password.as_bytes()), &mut buf, sha1_hmac)
            .unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    fn the_first_authenticated_check_becomes_a_nomination() {
        let check = signed_check("serverpassword", false);
        let Nomination::Rewritten(nominating_check) = nominating(&check, "serverpassword") else {
            panic!("a plain check is rewritten");
        };
        let parsed = StunMessage::parse(&nominating_check).unwrap();
        let original = StunMessage::parse(&check).unwrap();
        assert!(parsed.use_candidate());
        assert!(parsed.verify(b"serverpassword", sha1_hmac));
        assert_eq!(parsed.trans_id(), original.trans_id());
        assert_eq!(parsed.username(), Some("srvfrag:clifrag"));
        assert_eq!(parsed.prio(), original.prio());
        assert_eq!(parsed.ice_controlling(), original.ice_controlling());
        assert_eq!(local_ufrag(&nominating_check), Some("srvfrag"));
        // A check that nominates already is left alone.
        let nominated = signed_check("serverpassword", true);
        assert_eq!(
            nominating(&nominated, "serverpassword"),
            Nomination::Nominates
        );
    }

    #[test]
    fn a_check_without_our_password_nominates_nothing() {
        // The attack: someone who saw only the ufrag (not the answer's password) forges a
        // check to choose where the session sends. It must not be signed into a nomination.
        let forged = signed_check("guessedpassword", false);
        assert_eq!(nominating(&forged, "serverpassword"), Nomination::NotACheck);
        assert!(!is_authenticated_check(&forged, "serverpassword"));
        assert!(is_authenticated_check(
            &signed_check("serverpassword", false),
            "serverpassword"
        ));
        let mut tampered = signed_check("serverpassword", false);
        tampered[30] ^= 1;
        assert_eq!(
            nominating(&tampered, "serverpassword"),
            Nomination::NotACheck
        );
        // An ICE-controlled sender (a confused peer) or a response is not a client's check.
        let trans_id = str0m::ice::TransId::new();
        let controlled =
            StunMessage::binding_request("srvfrag:clifrag", trans_id, false, 1, 2, false);
        let mut buf = vec![0_u8; 1500];
        let len = controlled
            .to_bytes(Some(b"serverpassword"), &mut buf, sha1_hmac)
            .unwrap();
        assert_eq!(
            nominating(&buf[..len], "serverpassword"),
            Nomination::NotACheck
        );
        // Garbage and truncations never panic.
        let check = signed_check("serverpassword", false);
        for cut in 0..check.len() {
            let _ = nominating(&check[..cut], "serverpassword");
        }
        assert_eq!(
            nominating(&[0x80; 64], "serverpassword"),
            Nomination::NotACheck
        );
    }
}
