//! What the workers and the HTTP side both count: the shard's room and participant slots
//! against its limits, the rooms it hosts, the egress estimate, the forwarding totals, and
//! whether it drains. Workers touch it when a room or participant comes or goes and once a
//! second for the totals, never per packet.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Limits a join is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_rooms: u32,
    pub max_participants: u32,
    pub max_room_participants: u32,
}

pub(crate) struct Occupancy {
    pub limits: Limits,
    pub rooms: AtomicU32,
    pub participants: AtomicU32,
    pub egress_bps: AtomicU64,
    /// RTP packets forwarded / received since start (flushed by workers once a second).
    pub packets_out_total: AtomicU64,
    pub packets_in_total: AtomicU64,
    /// Nanoseconds the workers spent busy (not waiting for packets), for the load figure.
    pub busy_nanos: AtomicU64,
    /// The rooms hosted now, for the registry's pins and the drain rule.
    occupied_rooms: Mutex<BTreeSet<String>>,
    draining: AtomicBool,
}

impl Occupancy {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rooms: AtomicU32::new(0),
            participants: AtomicU32::new(0),
            egress_bps: AtomicU64::new(0),
            packets_out_total: AtomicU64::new(0),
            packets_in_total: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            occupied_rooms: Mutex::new(BTreeSet::new()),
            draining: AtomicBool::new(false),
        }
    }

    /// Takes one shard-wide participant slot, or `false` when the shard is full.
    pub fn reserve_participant(&self) -> bool {
        self.participants
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_participants).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release_participant(&self) {
        let _ = self
            .participants
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Takes one room slot, or `false` when the shard hosts `max_rooms` already.
    pub fn reserve_room(&self, room: &str) -> bool {
        let ok = self
            .rooms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_rooms).then_some(n + 1)
            })
            .is_ok();
        if ok && let Ok(mut rooms) = self.occupied_rooms.lock() {
            rooms.insert(room.to_owned());
        }
        ok
    }

    pub fn release_room(&self, room: &str) {
        let _ = self
            .rooms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if let Ok(mut rooms) = self.occupied_rooms.lock() {
            rooms.remove(room);
        }
    }

    /// Whether a participant is in `room` on this shard now.
    pub fn hosts(&self, room: &str) -> bool {
        self.occupied_rooms
            .lock()
            .map(|rooms| rooms.contains(room))
            .unwrap_or(false)
    }

    /// The rooms hosted now.
    pub fn hosted_rooms(&self) -> Vec<String> {
        self.occupied_rooms
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Adjusts the shard's summed egress estimate by `delta` bits/s.
    pub fn add_egress(&self, delta: i64) {
        let _ = self
            .egress_bps
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add_signed(delta))
            });
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Sets the draining flag; `true` if it was not set before.
    pub fn start_draining(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupancy(max_rooms: u32, max_participants: u32) -> Occupancy {
        Occupancy::new(Limits {
            max_rooms,
            max_participants,
            max_room_participants: 8,
        })
    }

    #[test]
    fn slots_stop_at_the_limits_and_come_back_when_released() {
        let o = occupancy(1, 2);
        assert!(o.reserve_room("a"));
        assert!(!o.reserve_room("b"));
        assert!(o.hosts("a") && !o.hosts("b"));
        assert!(o.reserve_participant() && o.reserve_participant());
        assert!(!o.reserve_participant());
        o.release_participant();
        assert!(o.reserve_participant());
        o.release_room("a");
        assert!(!o.hosts("a"));
        assert!(o.reserve_room("b"));
        assert_eq!(o.hosted_rooms(), vec!["b".to_owned()]);
    }

    #[test]
    fn releasing_more_than_was_taken_stays_at_zero() {
        let o = occupancy(1, 1);
        o.release_participant();
        o.release_room("never");
        assert_eq!(o.participants.load(Ordering::Acquire), 0);
        assert_eq!(o.rooms.load(Ordering::Acquire), 0);
        o.add_egress(-5);
        assert_eq!(o.egress_bps.load(Ordering::Acquire), 0);
    }

    #[test]
    fn draining_starts_once() {
        let o = occupancy(1, 1);
        assert!(!o.is_draining());
        assert!(o.start_draining());
        assert!(!o.start_draining());
        assert!(o.is_draining());
    }
}
