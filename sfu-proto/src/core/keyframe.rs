//! Keyframe request coalescing: many subscribers asking for the same publisher layer within
//! a short window cause one PLI, not a keyframe storm at the publisher.

use std::time::{Duration, Instant};

/// Request state of one publisher layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyframeCoalescer {
    /// When the outstanding request was sent; cleared when a keyframe arrives.
    requested_at: Option<Instant>,
}

impl KeyframeCoalescer {
    /// Whether a request should go out now (and records it when so).
    pub(crate) fn should_request(&mut self, now: Instant, window: Duration) -> bool {
        match self.requested_at {
            Some(at) if now.saturating_duration_since(at) < window => false,
            _ => {
                self.requested_at = Some(now);
                true
            }
        }
    }

    /// A keyframe arrived: the next request may go out at once.
    #[inline]
    pub(crate) fn keyframe_arrived(&mut self) {
        self.requested_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_within_window_until_keyframe() {
        let t0 = Instant::now();
        let w = Duration::from_millis(500);
        let mut k = KeyframeCoalescer::default();
        assert!(k.should_request(t0, w));
        assert!(!k.should_request(t0 + Duration::from_millis(10), w));
        assert!(!k.should_request(t0 + Duration::from_millis(499), w));
        assert!(k.should_request(t0 + w, w));
        k.keyframe_arrived();
        assert!(k.should_request(t0 + w + Duration::from_millis(1), w));
    }
}
