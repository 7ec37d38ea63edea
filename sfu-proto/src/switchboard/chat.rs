//! Room chat: what a participant's message must be to be relayed, and how fast it may send.
//!
//! The rate limit is a token bucket kept as a theoretical arrival time (GCRA): a burst of
//! [`CHAT_BURST`] messages, then one per [`CHAT_INTERVAL`]. It runs on the switchboard's
//! `now`, so it is as deterministic as the rest of the switchboard.

use std::time::{Duration, Instant};

use crate::protocol::{ChatRefusal, MAX_CHAT_CHARS};

/// Messages a participant may send at once after a quiet while.
pub const CHAT_BURST: u32 = 10;
/// The sustained rate: one message per this (after the burst).
pub const CHAT_INTERVAL: Duration = Duration::from_millis(1_000);

/// One participant's chat rate limit.
#[derive(Debug, Clone, Default)]
pub(super) struct ChatLimiter {
    /// When the bucket is full again; `None` before the first message.
    full_at: Option<Instant>,
}

impl ChatLimiter {
    /// Takes a token at `now`, or says how long until one is free (nothing is taken).
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let full_at = self.full_at.map_or(now, |t| t.max(now));
        let after = full_at + CHAT_INTERVAL;
        // The bucket holds CHAT_BURST tokens: it may run at most that far ahead of `now`.
        let capacity = CHAT_INTERVAL * CHAT_BURST;
        let ahead = after.saturating_duration_since(now);
        if ahead > capacity {
            return Err(ahead - capacity);
        }
        self.full_at = Some(after);
        Ok(())
    }
}

/// Why `text` cannot be relayed, if it cannot.
pub(super) fn check_text(text: &str) -> Result<(), ChatRefusal> {
    if text.trim().is_empty() {
        return Err(ChatRefusal::Empty);
    }
    // Counting stops one past the limit: a huge message costs no more than a long one.
    if text.chars().take(MAX_CHAT_CHARS + 1).count() > MAX_CHAT_CHARS {
        return Err(ChatRefusal::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_message_per_interval() {
        let start = Instant::now();
        let mut limiter = ChatLimiter::default();
        for n in 0..CHAT_BURST {
            assert_eq!(limiter.take(start), Ok(()), "message {n} of the burst");
        }
        let wait = limiter.take(start).expect_err("past the burst");
        assert_eq!(wait, CHAT_INTERVAL);
        // A refusal takes nothing: the same wait still holds a little later.
        let later = start + Duration::from_millis(400);
        assert_eq!(limiter.take(later), Err(Duration::from_millis(600)));
        assert_eq!(limiter.take(start + CHAT_INTERVAL), Ok(()));
        assert!(limiter.take(start + CHAT_INTERVAL).is_err());
        // A long quiet while refills the bucket, no further.
        let quiet = start + CHAT_INTERVAL * 100;
        for _ in 0..CHAT_BURST {
            assert_eq!(limiter.take(quiet), Ok(()));
        }
        assert!(limiter.take(quiet).is_err());
    }

    #[test]
    fn texts_are_checked_for_emptiness_and_length_in_characters() {
        assert_eq!(check_text("hello"), Ok(()));
        assert_eq!(check_text(" \n\t"), Err(ChatRefusal::Empty));
        assert_eq!(check_text(""), Err(ChatRefusal::Empty));
        // Characters, not bytes: 2000 four-byte characters are fine.
        assert_eq!(check_text(&"😀".repeat(MAX_CHAT_CHARS)), Ok(()));
        assert_eq!(
            check_text(&"x".repeat(MAX_CHAT_CHARS + 1)),
            Err(ChatRefusal::TooLong)
        );
    }
}
