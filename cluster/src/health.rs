//! Health: readiness ("this process can serve") and the dependencies it uses.
//!
//! Readiness is decided by cheap, local gates only (the process has started, it is not
//! draining, its workers run). Backends (the database, Redis, the shard registry) never
//! decide it: a process whose Redis is gone still serves on local limits, and one whose
//! database is gone still answers database routes with a JSON `503` + `Retry-After`.
//! Taking every replica out of the Service because a shared backend blinked would turn a
//! blip into a total outage. Instead a background task checks each dependency every few
//! seconds and exports `surge_dependency_up{dependency=…}` (1 or 0); the last result, with
//! its error text, is shown on the admin status route.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How often the dependencies are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// A check longer than this counts as a failure.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Something a node uses but can serve without for a while: the database, Redis, the
/// shard registry.
#[async_trait]
pub trait Dependency: Send + Sync {
    /// The `dependency` label: `database`, `redis` or `registry`.
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

/// A readiness gate: `Err(why)` while the process cannot serve (stopped, draining).
pub type Gate = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// One dependency's last check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DependencyStatus {
    pub name: &'static str,
    pub up: bool,
    /// Unix seconds of the last check; `None` before the first one finished.
    pub checked_at: Option<u64>,
    /// Unix seconds since which it has been in its current state.
    pub since: Option<u64>,
    /// The last failure's text while it is down.
    pub error: Option<String>,
}

struct Inner {
    gates: Vec<Gate>,
    dependencies: Vec<Arc<dyn Dependency>>,
    last: Mutex<BTreeMap<&'static str, DependencyStatus>>,
}

/// A process's readiness gates and dependencies; cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<Inner>);

impl Health {
    pub fn new(gates: Vec<Gate>, dependencies: Vec<Arc<dyn Dependency>>) -> Self {
        let last = dependencies
            .iter()
            .map(|d| {
                let status = DependencyStatus {
                    name: d.name(),
                    up: false,
                    checked_at: None,
                    since: None,
                    error: Some("not checked yet".to_owned()),
                };
                (d.name(), status)
            })
            .collect();
        Self(Arc::new(Inner {
            gates,
            dependencies,
            last: Mutex::new(last),
        }))
    }

    /// `Err` with every reason while a gate is closed.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        let closed: Vec<String> = self.0.gates.iter().filter_map(|g| g().err()).collect();
        if closed.is_empty() {
            Ok(())
        } else {
            Err(closed)
        }
    }

    /// The last check of every dependency, by name.
    pub fn dependencies(&self) -> Vec<DependencyStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, DependencyStatus>> {
        // Plain values behind the lock: a panic while holding it leaves them usable.
        self.0.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks every dependency once, concurrently, and records the results.
    pub async fn check_now(&self) {
        let checks = self.0.dependencies.iter().map(|d| async move {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, d.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (d.name(), result)
        });
        let results = futures::future::join_all(checks).await;
        let now = crate::token::unix_now();
        let mut last = self.lock();
        for (name, result) in results {
            let up = result.is_ok();
            metrics::gauge!("surge_dependency_up", "dependency" => name).set(if up {
                1.0
            } else {
                0.0
            });
            let entry = last.entry(name).or_insert_with(|| DependencyStatus {
                name,
                up,
                checked_at: None,
                since: None,
                error: None,
            });
            let changed = entry.checked_at.is_none() || entry.up != up;
            if changed {
                entry.since = Some(now);
                match &result {
                    Ok(()) if entry.checked_at.is_some() => {
                        tracing::info!(dependency = name, "dependency answers again");
                    }
                    Ok(()) => {}
                    Err(e) => tracing::warn!(dependency = name, error = %e, "dependency down"),
                }
            }
            entry.up = up;
            entry.checked_at = Some(now);
            entry.error = result.err();
        }
    }

    /// Checks the dependencies now and then every `every` until `stop`.
    pub fn spawn_monitor(&self, every: Duration, stop: CancellationToken) {
        if self.0.dependencies.is_empty() {
            return;
        }
        let health = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => health.check_now().await,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Switch(&'static str, Arc<AtomicBool>);

    #[async_trait]
    impl Dependency for Switch {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn check(&self) -> Result<(), String> {
            if self.1.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("connection refused".into())
            }
        }
    }

    struct Hangs;

    #[async_trait]
    impl Dependency for Hangs {
        fn name(&self) -> &'static str {
            "redis"
        }
        async fn check(&self) -> Result<(), String> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dependencies_are_recorded_not_gated() {
        let db = Arc::new(AtomicBool::new(true));
        let health = Health::new(
            vec![],
            vec![Arc::new(Switch("database", db.clone())), Arc::new(Hangs)],
        );
        assert!(
            health
                .dependencies()
                .iter()
                .all(|d| !d.up && d.checked_at.is_none())
        );
        health.check_now().await;
        let deps = health.dependencies();
        let database = deps.iter().find(|d| d.name == "database").unwrap();
        assert!(database.up && database.error.is_none());
        let redis = deps.iter().find(|d| d.name == "redis").unwrap();
        assert!(!redis.up);
        assert!(redis.error.as_deref().unwrap().contains("no answer"));
        db.store(false, Ordering::SeqCst);
        health.check_now().await;
        let deps = health.dependencies();
        let database = deps.iter().find(|d| d.name == "database").unwrap();
        assert_eq!(database.error.as_deref(), Some("connection refused"));
        assert!(health.ready().is_ok(), "backends never decide readiness");
    }

    #[test]
    fn gates_decide_readiness() {
        let draining = Arc::new(AtomicBool::new(false));
        let flag = draining.clone();
        let gate: Gate = Arc::new(move || {
            if flag.load(Ordering::SeqCst) {
                Err("draining".to_owned())
            } else {
                Ok(())
            }
        });
        let health = Health::new(vec![gate], vec![]);
        assert!(health.ready().is_ok());
        draining.store(true, Ordering::SeqCst);
        assert_eq!(health.ready().unwrap_err(), vec!["draining".to_owned()]);
    }
}
