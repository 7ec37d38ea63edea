//! Slots for presence streams: each open stream holds one, per account and per process, so
//! one session cannot hold thousands of tasks and sockets, and a crowd cannot hold more
//! than the process can feed. A slot is given back when its guard drops (the stream ended,
//! however it ended).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    #[error("this account holds as many presence streams as it may")]
    PerAccount,
    #[error("this process holds as many presence streams as it may")]
    Total,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_account: HashMap<String, usize>,
}

/// The stream slots of this process.
#[derive(Clone)]
pub struct StreamSlots {
    per_account: usize,
    total: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One held slot; dropping it frees it.
pub struct StreamSlot {
    account: String,
    counts: Arc<Mutex<Counts>>,
}

impl StreamSlots {
    /// At most `per_account` streams per account and `total` in all (each at least 1).
    pub fn new(per_account: usize, total: usize) -> Self {
        Self {
            per_account: per_account.max(1),
            total: total.max(1),
            counts: Arc::default(),
        }
    }

    /// Takes a slot for `account`, or says why not.
    pub fn acquire(&self, account: &str) -> Result<StreamSlot, StreamRefused> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.per_account.get(account).copied().unwrap_or(0) >= self.per_account {
            return Err(StreamRefused::PerAccount);
        }
        if counts.total >= self.total {
            return Err(StreamRefused::Total);
        }
        counts.total += 1;
        *counts.per_account.entry(account.to_owned()).or_insert(0) += 1;
        metrics::gauge!("surge_api_presence_streams").set(counts.total as f64);
        Ok(StreamSlot {
            account: account.to_owned(),
            counts: self.counts.clone(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_account.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_account.remove(&self.account);
            }
        }
        metrics::gauge!("surge_api_presence_streams").set(counts.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_per_account_and_in_total_and_free_on_drop() {
        let slots = StreamSlots::new(2, 3);
        let a1 = slots.acquire("a").unwrap();
        let _a2 = slots.acquire("a").unwrap();
        assert_eq!(slots.acquire("a").err(), Some(StreamRefused::PerAccount));
        let _b1 = slots.acquire("b").unwrap();
        assert_eq!(slots.acquire("c").err(), Some(StreamRefused::Total));
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _c1 = slots.acquire("c").unwrap();
        assert_eq!(slots.acquire("a").err(), Some(StreamRefused::Total));
    }
}
