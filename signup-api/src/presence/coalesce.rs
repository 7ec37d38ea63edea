//! Coalescing of status changes: a user flapping between statuses would otherwise make
//! every replica push every change to every stream. A change is published at once when the
//! user's last publication is older than the window (so a single change is not delayed);
//! changes inside the window are folded into one publication of the latest status when the
//! window ends. Sans-IO: time comes in as a parameter, the caller does the publishing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Status;

struct Window {
    /// When this user's last publication went out.
    published_at: Instant,
    /// What it said.
    published: Status,
    /// A change came after it, inside the window.
    dirty: bool,
}

/// Which changes to publish now and which later.
pub struct Coalescer {
    window: Duration,
    users: HashMap<String, Window>,
}

impl Coalescer {
    /// Publications of one user at most once per `window` (zero: every change at once).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            users: HashMap::new(),
        }
    }

    /// `user`'s status became `status` at `now`: true when the change is to be published
    /// now, false when it is folded into the publication at the end of the window.
    pub fn changed(&mut self, user: &str, status: Status, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        match self.users.get_mut(user) {
            Some(w) if now < w.published_at + self.window => {
                w.dirty = true;
                false
            }
            _ => {
                self.users.insert(
                    user.to_owned(),
                    Window {
                        published_at: now,
                        published: status,
                        dirty: false,
                    },
                );
                true
            }
        }
    }

    /// The users whose window has ended with changes not yet published, each with the status
    /// last published for it; users whose window ended quietly are forgotten (so memory
    /// holds only the users that changed within the last window).
    pub fn due(&mut self, now: Instant) -> Vec<(String, Status)> {
        let window = self.window;
        let mut due = Vec::new();
        self.users.retain(|user, w| {
            if now < w.published_at + window {
                return true;
            }
            if w.dirty {
                due.push((user.clone(), w.published));
                true
            } else {
                false
            }
        });
        due
    }

    /// The trailing publication for `user` went out at `now` with `status` (or was skipped
    /// because the status ended where it started): a new window starts.
    pub fn published(&mut self, user: &str, status: Status, now: Instant) {
        if let Some(w) = self.users.get_mut(user) {
            w.published_at = now;
            w.published = status;
            w.dirty = false;
        }
    }

    /// Users being tracked (tests).
    pub fn tracked(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_user_is_published_once_per_window_with_the_last_status() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_millis(1000));
        // The first change goes out at once.
        assert!(c.changed("u", Status::Online, ms(0)));
        // 50 flaps inside the window are held back.
        for i in 0..50u64 {
            let status = if i % 2 == 0 {
                Status::Busy
            } else {
                Status::Away
            };
            assert!(!c.changed("u", status, ms(10 + i * 10)));
        }
        assert!(c.due(ms(999)).is_empty(), "not before the window ends");
        // At the end: one trailing publication, against what was last published.
        assert_eq!(c.due(ms(1000)), vec![("u".to_owned(), Status::Online)]);
        c.published("u", Status::Away, ms(1000));
        assert!(!c.changed("u", Status::Busy, ms(1500)));
        assert_eq!(c.due(ms(2000)), vec![("u".to_owned(), Status::Away)]);
        c.published("u", Status::Busy, ms(2000));
        // A quiet window forgets the user; the next change goes out at once.
        assert!(c.due(ms(3000)).is_empty());
        assert_eq!(c.tracked(), 0);
        assert!(c.changed("u", Status::Online, ms(3001)));
        // Other users are independent.
        assert!(c.changed("v", Status::Online, ms(3002)));
    }

    #[test]
    fn a_zero_window_publishes_every_change() {
        let now = Instant::now();
        let mut c = Coalescer::new(Duration::ZERO);
        for _ in 0..3 {
            assert!(c.changed("u", Status::Busy, now));
        }
        assert_eq!(c.tracked(), 0);
    }
}
