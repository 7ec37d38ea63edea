//! Input rules for accounts: email normalisation and validation, password length, display
//! names. Each failure has a stable error code.

use surge_cluster::ErrorCode;

/// Passwords shorter than this are refused (bytes).
pub const MIN_PASSWORD_BYTES: usize = 10;
/// Passwords longer than this are refused (bytes): hashing cost must not be client-chosen.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest display name or room name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Why an input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    #[error("the email address is not valid")]
    Email,
    #[error("the password must be at least {MIN_PASSWORD_BYTES} bytes")]
    WeakPassword,
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    #[error(
        "the display name must be 1 to {MAX_NAME_CHARS} characters without control or invisible characters"
    )]
    DisplayName,
    #[error(
        "the room name must be 1 to {MAX_NAME_CHARS} characters without control or invisible characters"
    )]
    RoomName,
}

impl InvalidInput {
    /// The stable error code.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Email => ErrorCode::InvalidEmail,
            Self::WeakPassword => ErrorCode::WeakPassword,
            Self::PasswordTooLong => ErrorCode::PasswordTooLong,
            Self::DisplayName => ErrorCode::InvalidDisplayName,
            Self::RoomName => ErrorCode::InvalidRoomName,
        }
    }
}

/// Trims and lower-cases an email and checks it is a plausible ASCII address:
/// `local@domain.tld`, no spaces, no control characters. Non-ASCII addresses are refused
/// on purpose: homoglyphs (Cyrillic "а" for Latin "a") and invisible characters would let
/// two different accounts look like the same person.
pub fn email(raw: &str) -> Result<String, InvalidInput> {
    let email = raw.trim().to_ascii_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES || !email.is_ascii() {
        return Err(InvalidInput::Email);
    }
    let (local, domain) = email.rsplit_once('@').ok_or(InvalidInput::Email)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(InvalidInput::Email)
    }
}

/// Checks a new password's length (bytes, as hashed).
pub fn password(password: &str) -> Result<(), InvalidInput> {
    if password.len() < MIN_PASSWORD_BYTES {
        Err(InvalidInput::WeakPassword)
    } else if password.len() > MAX_PASSWORD_BYTES {
        Err(InvalidInput::PasswordTooLong)
    } else {
        Ok(())
    }
}

/// Trims a display name and refuses empty, over-long, control, format (zero-width,
/// bidirectional overrides) and other invisible characters.
pub fn display_name(raw: &str) -> Result<String, InvalidInput> {
    name(raw).ok_or(InvalidInput::DisplayName)
}

/// Same rules as a display name, for room names.
pub fn room_name(raw: &str) -> Result<String, InvalidInput> {
    name(raw).ok_or(InvalidInput::RoomName)
}

fn name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(invisible) {
        return None;
    }
    Some(name.to_owned())
}

/// Control characters, and the format/invisible characters that make names lie about
/// what they show (zero-width joiners, bidi overrides, BOM, tag characters...).
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFF}'
            | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        assert_eq!(
            email("a.b+tag@sub.example.org").unwrap(),
            "a.b+tag@sub.example.org"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "ada@exa mple.com",
            "a da@example.com",
            "ada@example.c0m",
            ".ada@example.com",
            "ad..a@example.com",
            "ada@-example.com",
            "ada@exаmple.com", // Cyrillic а
            "ada\u{200B}@example.com",
            "ada@example.com\u{0000}",
            &format!("{}@example.com", "a".repeat(65)),
            &format!("a@{}.com", "b".repeat(250)),
        ] {
            assert_eq!(email(bad), Err(InvalidInput::Email), "{bad:?}");
        }
    }

    #[test]
    fn passwords_and_names() {
        assert_eq!(password("short"), Err(InvalidInput::WeakPassword));
        assert!(password("0123456789").is_ok());
        assert!(password(&"x".repeat(1024)).is_ok());
        assert_eq!(
            password(&"x".repeat(1025)),
            Err(InvalidInput::PasswordTooLong)
        );
        assert_eq!(display_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(display_name("Zoë 李").unwrap(), "Zoë 李");
        for bad in [
            "",
            "   ",
            "a\nb",
            "a\u{202E}b",
            "\u{200B}",
            "x\u{FEFF}",
            &"n".repeat(65),
        ] {
            assert_eq!(display_name(bad), Err(InvalidInput::DisplayName), "{bad:?}");
        }
    }
}
