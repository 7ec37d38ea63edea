//! Presence in this process's memory (one process, no Redis).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{BUS_CAPACITY, Change, Notice, Presence, PresenceError, Status};

/// Presence in this process's memory.
pub struct MemoryPresence {
    users: Mutex<HashMap<String, (Status, Instant)>>,
    /// Connection counts, as in Redis (one process here, so at most one per user).
    connections: Mutex<HashMap<String, usize>>,
    bus: broadcast::Sender<Change>,
    notices: broadcast::Sender<Notice>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        Self {
            users: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            bus: broadcast::channel(BUS_CAPACITY).0,
            notices: broadcast::channel(BUS_CAPACITY).0,
        }
    }
}

impl MemoryPresence {
    fn announce(&self, user_id: &str, status: Status) {
        let _ = self.bus.send(Change {
            user_id: user_id.to_owned(),
            status,
        });
    }

    /// Removes `user`'s status and announces offline; answers whether there was one. An
    /// expired status the sweep has not reached yet is announced too: removed here, the sweep
    /// would never announce it.
    fn remove(&self, user: &str) -> bool {
        let old = self
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(user);
        if old.is_some() {
            self.announce(user, Status::Offline);
        }
        old.is_some()
    }

    /// Extends `user`'s status to `now + ttl`, or sets it online when it had lapsed;
    /// answers whether it was set online.
    fn extend(&self, user: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        match users.get_mut(user) {
            Some((_, until)) if *until > now => {
                *until = now + ttl;
                false
            }
            _ => {
                users.insert(user.to_owned(), (Status::Online, now + ttl));
                true
            }
        }
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn heartbeat(
        &self,
        user: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let old = self
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user.to_owned(), (status, now + ttl));
        let was = old.filter(|(_, until)| *until > now).map(|(s, _)| s);
        Ok(was != Some(status))
    }

    async fn publish(&self, change: &Change) -> Result<(), PresenceError> {
        self.announce(&change.user_id, change.status);
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), PresenceError> {
        let _ = self.notices.send(notice.clone());
        Ok(())
    }

    async fn clear(&self, user: &str) -> Result<(), PresenceError> {
        self.remove(user);
        Ok(())
    }

    async fn statuses(&self, users: &[String]) -> Result<Vec<Status>, PresenceError> {
        let now = Instant::now();
        let map = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(users
            .iter()
            .map(|u| match map.get(u) {
                Some((status, until)) if *until > now => *status,
                _ => Status::Offline,
            })
            .collect())
    }

    async fn sweep(&self) -> Result<(), PresenceError> {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|user, (_, until)| {
                let alive = *until > now;
                if !alive {
                    gone.push(user.clone());
                }
                alive
            });
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for user in &gone {
            connections.remove(user);
        }
        drop(connections);
        for user in gone {
            self.announce(&user, Status::Offline);
        }
        Ok(())
    }

    async fn connect(&self, user: &str, ttl: Duration) -> Result<bool, PresenceError> {
        *self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(user.to_owned())
            .or_insert(0) += 1;
        Ok(self.extend(user, ttl))
    }

    async fn disconnect(&self, user: &str) -> Result<bool, PresenceError> {
        {
            let mut connections = self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = connections.get_mut(user) {
                *n = n.saturating_sub(1);
                if *n > 0 {
                    return Ok(false);
                }
            }
            connections.remove(user);
        }
        Ok(self.remove(user))
    }

    async fn refresh(&self, users: &[String], ttl: Duration) -> Result<Vec<String>, PresenceError> {
        Ok(users
            .iter()
            .filter(|user| self.extend(user, ttl))
            .cloned()
            .collect())
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.bus.subscribe()
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}
