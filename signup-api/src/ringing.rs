//! The ring timeout (issue 15): a ring nobody answers becomes a missed call.
//!
//! Every replica sweeps the database for rings past their deadline with one conditional
//! UPDATE (`ringing` → `no_answer`, `RETURNING` the rows it changed). The row's state is the
//! lock: two replicas sweeping at once, or an answer racing the deadline, cannot both change
//! the same ring, so each timeout is announced exactly once, by the replica whose statement
//! changed it, whichever replica placed the call and whether or not it is still up. The
//! database already holds the calls (for the recent-calls list), so no Redis key, no
//! per-call timer and no owner election is needed; the cost is one indexed UPDATE per
//! replica per sweep period, and a timeout that fires up to one period late.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::every;
use crate::presence::{Notice, Presence, notify};
use crate::store::{LegState, Store};

/// Rings one sweep ends at most; the rest wait for the next round.
const SWEEP_BATCH: u32 = 500;

/// How often to sweep for a ring timeout of `timeout`: a tenth of it, between 100 ms
/// and 1 s (a 30 s ring then ends within 31 s).
pub fn sweep_period(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// A `call_update` for `to`'s streams.
pub fn update(to: &str, call_id: &str, state: LegState, by: &str) -> Notice {
    Notice::CallUpdate {
        to: to.to_owned(),
        call_id: call_id.to_owned(),
        state,
        by: by.to_owned(),
    }
}

/// Counts a ring's outcome.
pub fn count(state: LegState) {
    metrics::counter!("surge_api_rings_total", "outcome" => state.as_str()).increment(1);
}

/// Ends the rings whose time passed: the caller hears `no_answer`, and the callee's tabs
/// stop ringing (their recent calls show a missed call).
pub async fn expire(store: &dyn Store, presence: &dyn Presence, now_ms: i64) {
    loop {
        let expired = match store.expire_rings(now_ms, SWEEP_BATCH).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::debug!(error = %e, "ring sweep failed; the next round retries");
                return;
            }
        };
        let full = expired.len() >= usize::try_from(SWEEP_BATCH).unwrap_or(usize::MAX);
        for ring in expired {
            count(LegState::NoAnswer);
            if let Some(caller) = &ring.invited_by {
                notify(
                    presence,
                    update(caller, &ring.call_id, LegState::NoAnswer, &ring.user_id),
                )
                .await;
            }
            notify(
                presence,
                update(
                    &ring.user_id,
                    &ring.call_id,
                    LegState::NoAnswer,
                    &ring.user_id,
                ),
            )
            .await;
        }
        if !full {
            return;
        }
    }
}

/// Sweeps every [`sweep_period`] of `timeout` until `shutdown`.
pub fn spawn_sweeper(
    store: Arc<dyn Store>,
    presence: Arc<dyn Presence>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let period = sweep_period(timeout);
    every::spawn_every(period, period, shutdown, move || {
        let (store, presence) = (store.clone(), presence.clone());
        async move {
            expire(store.as_ref(), presence.as_ref(), crate::now_ms()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_period_follows_the_timeout_within_bounds() {
        assert_eq!(
            sweep_period(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(
            sweep_period(Duration::from_millis(50)),
            Duration::from_millis(100)
        );
    }
}
