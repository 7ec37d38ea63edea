//! Presence by connection: a user whose presence stream this process holds is online
//! without sending heartbeats. The process counts itself once per user in the backend
//! ([`Presence::connect`]) when it takes the user's first stream, refreshes the TTLs of all
//! the users it holds in batches ([`Presence::refresh`]: one round trip per tick for the
//! whole process, each user once per third of the TTL), and lets go ([`Presence::disconnect`])
//! a short linger after the user's last stream here ended, so a page reload that reconnects
//! at once does not flash offline to the user's contacts.
//!
//! A process that dies without letting go leaves its count behind: its users then go
//! offline when their TTL lapses (nobody refreshes them), and the sweep drops the count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Presence, Publisher, Status};

/// How often the refresher runs; each run refreshes the users whose turn it is.
pub const REFRESH_TICK: Duration = Duration::from_secs(1);

/// One user held by this process.
struct Hold {
    /// This process's open streams of the user (0 while lingering).
    streams: usize,
    /// Bumped whenever the count drops to 0, so a linger that ended after the user came back
    /// (and left again) does not let go of the newer hold.
    generation: u64,
    /// The refresher tick (modulo the refresh period in ticks) at which this user is refreshed:
    /// spreading users over the period keeps every tick's batch the same size.
    phase: u64,
}

/// The users whose presence streams this process holds.
pub struct Connections {
    presence: Arc<dyn Presence>,
    publisher: Arc<Publisher>,
    ttl: Duration,
    linger: Duration,
    held: Mutex<HeldUsers>,
}

#[derive(Default)]
struct HeldUsers {
    users: HashMap<String, Hold>,
    next_phase: u64,
}

/// A stream's hold on its user; dropping it starts the linger.
pub struct Held {
    connections: Arc<Connections>,
    user: String,
}

impl Connections {
    /// Users held keep statuses that last `ttl`; a user whose last stream ended is let go
    /// after `linger`.
    pub fn new(
        presence: Arc<dyn Presence>,
        publisher: Arc<Publisher>,
        ttl: Duration,
        linger: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            presence,
            publisher,
            ttl,
            linger,
            held: Mutex::default(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldUsers> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ticks between two refreshes of one user: a third of the TTL, so two refreshes can be
    /// lost (or late) before the status lapses.
    fn period_ticks(&self) -> u64 {
        let third = self.ttl.as_millis() / 3;
        u64::try_from(third / REFRESH_TICK.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A stream of `user` opened here: `user` is online while it lasts.
    pub async fn hold(self: &Arc<Self>, user: &str) -> Held {
        let first = {
            let mut held = self.held();
            let phase = held.next_phase;
            let first = !held.users.contains_key(user);
            let hold = held.users.entry(user.to_owned()).or_insert(Hold {
                streams: 0,
                generation: 0,
                phase,
            });
            hold.streams += 1;
            if first {
                held.next_phase = held.next_phase.wrapping_add(1);
            }
            metrics::gauge!("surge_api_presence_connected_users").set(held.users.len() as f64);
            first
        };
        if first {
            match self.presence.connect(user, self.ttl).await {
                Ok(true) => {
                    if let Err(e) = self.publisher.announce(user, Status::Online).await {
                        tracing::debug!(error = %e, "could not publish a connected user");
                    }
                }
                Ok(false) => {}
                // The refresher sets the user online once the backend is back.
                Err(e) => tracing::debug!(error = %e, "could not count a presence connection"),
            }
        }
        Held {
            connections: self.clone(),
            user: user.to_owned(),
        }
    }

    /// A stream of `user` ended: after the linger, if no stream of `user` opened here since,
    /// let go of it.
    fn release(self: &Arc<Self>, user: &str) {
        let generation = {
            let mut held = self.held();
            let Some(hold) = held.users.get_mut(user) else {
                return;
            };
            hold.streams = hold.streams.saturating_sub(1);
            if hold.streams > 0 {
                return;
            }
            hold.generation = hold.generation.wrapping_add(1);
            hold.generation
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.clone();
        let user = user.to_owned();
        runtime.spawn(async move {
            tokio::time::sleep(me.linger).await;
            let gone = {
                let mut held = me.held();
                let still_idle = held
                    .users
                    .get(&user)
                    .is_some_and(|h| h.streams == 0 && h.generation == generation);
                if still_idle {
                    held.users.remove(&user);
                    metrics::gauge!("surge_api_presence_connected_users")
                        .set(held.users.len() as f64);
                }
                still_idle
            };
            if gone && let Err(e) = me.publisher.disconnect(&user).await {
                // The status lapses at its TTL instead.
                tracing::debug!(error = %e, "could not let go of a presence connection");
            }
        });
    }

    /// Users held now (lingering ones included).
    pub fn len(&self) -> usize {
        self.held().users.len()
    }

    /// Whether no user is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The users whose turn it is at refresher tick `tick`.
    fn due(&self, tick: u64) -> Vec<String> {
        let period = self.period_ticks();
        let turn = tick % period;
        self.held()
            .users
            .iter()
            .filter(|(_, h)| h.phase % period == turn)
            .map(|(user, _)| user.clone())
            .collect()
    }

    /// Refreshes the users whose turn it is at `tick`, and publishes those it set online
    /// again.
    pub async fn refresh(&self, tick: u64) {
        let due = self.due(tick);
        if due.is_empty() {
            return;
        }
        metrics::counter!("surge_api_presence_refreshed_total").increment(due.len() as u64);
        match self.presence.refresh(&due, self.ttl).await {
            Ok(revived) => {
                metrics::counter!("surge_api_presence_revived_total")
                    .increment(revived.len() as u64);
                for user in revived {
                    if let Err(e) = self.publisher.announce(&user, Status::Online).await {
                        tracing::debug!(error = %e, "could not publish a revived user");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence refresh failed; retrying next turn"),
        }
    }

    /// Runs [`Self::refresh`] every [`REFRESH_TICK`] until `shutdown`.
    pub fn spawn_refresher(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = 0_u64;
        crate::every::spawn_every(REFRESH_TICK, REFRESH_TICK, shutdown, move || {
            let me = self.clone();
            let turn = tick;
            tick = tick.wrapping_add(1);
            async move { me.refresh(turn).await }
        });
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.connections.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::MemoryPresence;

    fn changes(rx: &mut tokio::sync::broadcast::Receiver<super::super::Change>) -> Vec<Status> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.status)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_its_user_online_and_a_reload_within_the_linger_is_not_seen() {
        let presence: Arc<dyn Presence> = Arc::new(MemoryPresence::default());
        let publisher = Arc::new(Publisher::new(presence.clone(), Duration::ZERO));
        let ttl = Duration::from_secs(3);
        let connections =
            Connections::new(presence.clone(), publisher, ttl, Duration::from_millis(500));
        let mut rx = presence.subscribe();
        let first = connections.hold("u").await;
        assert_eq!(changes(&mut rx), [Status::Online]);
        // Refreshed every tick (a third of 3 s), the status outlives its TTL many times.
        for tick in 0..10 {
            tokio::time::advance(REFRESH_TICK).await;
            connections.refresh(tick).await;
        }
        let ids = ["u".to_owned()];
        assert_eq!(presence.statuses(&ids).await.unwrap(), [Status::Online]);
        // A reload: the old stream ends, a new one opens within the linger.
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = connections.hold("u").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(changes(&mut rx).is_empty(), "no offline for a reload");
        assert_eq!(connections.len(), 1);
        // The last stream ends: offline once the linger has passed.
        drop(second);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(changes(&mut rx).is_empty(), "still lingering");
        // Sleeping (not advancing) lets the linger's task run when its timer fires.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(changes(&mut rx), [Status::Offline]);
        assert!(connections.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn each_tick_refreshes_its_share_of_the_users() {
        let presence: Arc<dyn Presence> = Arc::new(MemoryPresence::default());
        let publisher = Arc::new(Publisher::new(presence.clone(), Duration::ZERO));
        // A 30 s TTL: each user once per 10 ticks.
        let connections = Connections::new(
            presence,
            publisher,
            Duration::from_secs(30),
            Duration::from_secs(2),
        );
        let mut holds = Vec::new();
        for i in 0..1000 {
            holds.push(connections.hold(&format!("user-{i}")).await);
        }
        let mut seen = std::collections::HashSet::new();
        for tick in 0..10 {
            let due = connections.due(tick);
            assert_eq!(due.len(), 100, "an even share each tick");
            seen.extend(due);
        }
        assert_eq!(seen.len(), 1000, "every user once per period");
    }
}
