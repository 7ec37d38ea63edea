//! Single-use join tokens: a shard remembers each token's `jti` until the token expires, so
//! a token (leaked from a log, or captured on the cluster network) opens one join only.
//! Memory stays bounded by the tokens issued within one token lifetime: expired entries are
//! purged on every check.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

use super::{EXPIRY_LEEWAY, TokenError};

/// A `jti` longer than this is refused (the API sends 32 hex digits); it bounds each entry.
pub const MAX_JTI_BYTES: usize = 64;

/// The `jti`s seen on this shard whose tokens have not expired yet.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    state: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<String>,
    /// Soonest expiry first, to purge without scanning.
    by_expiry: BinaryHeap<Reverse<(u64, String)>>,
}

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the use of token `jti` (expiring at `exp`) at Unix time `now`: `Ok` the first
    /// time, [`TokenError::Replayed`] after. The token's expiry has been checked already.
    pub fn first_use(&self, jti: &str, exp: u64, now: u64) -> Result<(), TokenError> {
        if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut seen = self.state.lock().unwrap_or_else(|e| e.into_inner());
        seen.purge(now);
        if !seen.ids.insert(jti.to_owned()) {
            return Err(TokenError::Replayed);
        }
        seen.by_expiry.push(Reverse((exp, jti.to_owned())));
        Ok(())
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .len()
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Seen {
    /// Forgets tokens that expiry alone refuses now (with the same leeway as the check).
    fn purge(&mut self, now: u64) {
        while let Some(Reverse((exp, _))) = self.by_expiry.peek()
            && exp.saturating_add(EXPIRY_LEEWAY.as_secs()) < now
        {
            if let Some(Reverse((_, jti))) = self.by_expiry.pop() {
                self.ids.remove(&jti);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_once_and_forgotten_after_expiry() {
        let guard = ReplayGuard::new();
        assert_eq!(guard.first_use("a", 100, 50), Ok(()));
        assert_eq!(guard.first_use("a", 100, 60), Err(TokenError::Replayed));
        assert_eq!(guard.first_use("b", 200, 60), Ok(()));
        assert_eq!(guard.len(), 2);
        // Past a's expiry (and the leeway) it is purged: expiry refuses it from then on.
        assert_eq!(guard.first_use("c", 300, 100 + 6), Ok(()));
        assert_eq!(guard.len(), 2);
        assert_eq!(guard.first_use("b", 200, 150), Err(TokenError::Replayed));
    }

    #[test]
    fn memory_stays_bounded_by_live_tokens() {
        let guard = ReplayGuard::new();
        // A long run of joins, each token living 60 s: at most a minute's worth is kept.
        for now in 0..10_000u64 {
            guard
                .first_use(&format!("{now:032x}"), now + 60, now)
                .unwrap();
            assert!(guard.len() <= 60 + 6 + 1, "{} at {now}", guard.len());
        }
    }

    #[test]
    fn empty_or_oversized_ids_are_malformed() {
        let guard = ReplayGuard::new();
        assert_eq!(guard.first_use("", 10, 0), Err(TokenError::Malformed));
        let long = "x".repeat(MAX_JTI_BYTES + 1);
        assert_eq!(guard.first_use(&long, 10, 0), Err(TokenError::Malformed));
        assert!(guard.is_empty());
    }
}
