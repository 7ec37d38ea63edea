//! The API's periodic background work (limiter eviction, purges, presence sweeps and
//! flushes): one loop that runs a task every period until shutdown.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `task` every `period`, the first time after `first` (zero: at once), until
/// `shutdown`. A round that overruns delays the next one instead of bunching them.
pub(crate) fn spawn_every<F, Fut>(
    first: Duration,
    period: Duration,
    shutdown: CancellationToken,
    mut task: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            task().await;
        }
    });
}
