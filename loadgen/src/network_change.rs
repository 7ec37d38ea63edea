//! `--network-change-after`: participants change networks mid-call. A mover takes a new
//! local UDP socket (as a phone going from Wi-Fi to mobile: datagrams to the old address
//! are lost) and restarts ICE on the same session with the API's `PATCH`; if the restart
//! is refused it falls back to a full rejoin through the API, as the web client does.
//!
//! The report gives, per move, the time from the restart until media flows again, for the
//! mover (anything it receives) and for each room mate that was receiving the mover, how
//! many restarts fell back to a rejoin, and how many `left`/`joined` about a mover its room
//! mates saw around the move (the bar: media again within 2 s, the same id, and
//! nobody sees the mover leave).
//!
//! Times come from the participants' own packet clocks, not from the 100 ms sampling: the
//! mover's first packet on its new socket, and for its room mates the end of the silence
//! (a gap longer than 25 ms of audio, 40 ms of video) around the restart in what they
//! receive from the mover.

use std::sync::Mutex;
use std::time::{Duration, Instant as StdInstant};

use serde::{Deserialize, Serialize};
use surge_participant::{ParticipantStats, TrackStats};
use surge_sfu_proto::protocol::ServerMessage;

use crate::duration::parse_duration;
use crate::stats::{LatencyHistogram, Percentiles};

/// Room mates hear of a move this long before it, so they note what they had seen.
pub const NOTICE: Duration = Duration::from_millis(300);
/// A move is judged this long after its restart: media not back by then counts as not back,
/// and `left`/`joined` seen until then count against it.
pub const WINDOW: Duration = Duration::from_secs(4);
/// The bar: media again within this after a network change.
pub const BAR: Duration = Duration::from_secs(2);
/// A silence that began up to this long before the restart is the move's (the last packets
/// before it may be in flight when the socket changes).
const SLACK: Duration = Duration::from_millis(100);

/// Flags of the network changes (part of `surge-loadgen calls`).
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkChangeArgs {
    /// Each chosen participant changes networks this long after its join: it moves to a new
    /// local socket and restarts ICE over the API's PATCH (a full rejoin if that fails).
    /// The run must last long enough to judge it (4 s after the move).
    #[arg(long, env = "SURGE_LOADGEN_NETWORK_CHANGE_AFTER", value_parser = parse_duration)]
    pub network_change_after: Option<Duration>,
    /// Share of each room's participants that change networks (0 to 1, spread over
    /// publishers and subscribers).
    #[arg(
        long,
        env = "SURGE_LOADGEN_NETWORK_CHANGES_SHARE",
        default_value_t = 1.0,
        value_parser = parse_share
    )]
    pub network_changes_share: f64,
}

impl Default for NetworkChangeArgs {
    fn default() -> Self {
        Self {
            network_change_after: None,
            network_changes_share: 1.0,
        }
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

impl NetworkChangeArgs {
    /// When participant `i` of a room of `per_room` changes networks (after its join), if it
    /// does. The chosen ones are spread evenly over the room (publishers come first), so
    /// a half moves every other participant.
    pub fn after_for(&self, i: usize, per_room: usize) -> Option<Duration> {
        let after = self.network_change_after?;
        let share = self.network_changes_share;
        let chosen = per_room > 0 && ((i + 1) as f64 * share).floor() > (i as f64 * share).floor();
        chosen.then_some(after)
    }
}

/// One move, as the mover saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveReport {
    /// Its participant id before the move.
    pub id: Option<String>,
    /// Too late in the run to be judged: not made.
    pub skipped: bool,
    /// Restart → its answer applied (the `PATCH` round trip).
    pub restart_ms: Option<f64>,
    /// Restart → the mover receives media again; `None`: not within [`WINDOW`].
    pub back_ms: Option<f64>,
    /// Why the restart failed, when it fell back to a full rejoin.
    pub fell_back: Option<String>,
    /// It kept its participant id.
    pub same_id: bool,
}

/// One room mate's move, as another participant saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedMove {
    pub mover: String,
    /// It was receiving the mover's media before the move (so it should again).
    pub expected: bool,
    /// Restart → it receives the mover's media again; `None`: not within [`WINDOW`].
    pub back_ms: Option<f64>,
    /// `left`/`joined` about the mover it got from the notice to the end of the window.
    pub membership_events: u32,
}

/// All moves of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkChanges {
    pub after_secs: f64,
    pub share: f64,
    /// Moves made (restarts tried).
    pub moves: u64,
    /// Movers too late in the run to be judged.
    pub skipped: u64,
    /// Restarts that failed and fell back to a full rejoin.
    pub fell_back: u64,
    /// Movers that came back with another participant id.
    pub changed_id: u64,
    /// Restart → the mover receives media again.
    pub mover_back: Percentiles,
    /// Restart → a room mate receives the mover's media again.
    pub others_back: Percentiles,
    /// Movers and room mates whose media was not back within the window.
    pub not_back: u64,
    /// Media back, but later than [`BAR`].
    pub over_bar: u64,
    /// `left`/`joined` about a mover its room mates saw around its move.
    pub membership_events: u64,
}

impl NetworkChanges {
    /// Within the bar: every move made, media back within 2 s everywhere, no
    /// fallback, same ids, nobody saw a mover leave or join.
    pub fn pass(&self) -> bool {
        self.moves > 0
            && self.fell_back == 0
            && self.changed_id == 0
            && self.not_back == 0
            && self.over_bar == 0
            && self.membership_events == 0
    }

    /// For the verdict line.
    pub fn summary(&self) -> String {
        format!(
            "{} network changes: media again (mover) p50 {:.0} ms p99 {:.0} ms max {:.0} ms, (others) p50 {:.0} ms p99 {:.0} ms max {:.0} ms; {} not back in {}s, {} over {}s, {} fell back to a rejoin, {} changed id, {} left/joined seen",
            self.moves,
            self.mover_back.p50_ms,
            self.mover_back.p99_ms,
            self.mover_back.max_ms,
            self.others_back.p50_ms,
            self.others_back.p99_ms,
            self.others_back.max_ms,
            self.not_back,
            WINDOW.as_secs(),
            self.over_bar,
            BAR.as_secs(),
            self.fell_back,
            self.changed_id,
            self.membership_events,
        )
    }

    /// The text report's table.
    pub fn table(&self) -> String {
        let row = |name: &str, p: &Percentiles| {
            format!(
                "  {name:<34} {:>5} {:>8.0} {:>8.0} {:>8.0}\n",
                p.count, p.p50_ms, p.p99_ms, p.max_ms
            )
        };
        format!(
            "network changes ({:.1}s after join, share {}): {} moves, {} skipped (too late), {} fell back to a full rejoin, {} changed id, {} left/joined seen by room mates\n  {:<34} {:>5} {:>8} {:>8} {:>8}\n{}{}",
            self.after_secs,
            self.share,
            self.moves,
            self.skipped,
            self.fell_back,
            self.changed_id,
            self.membership_events,
            "restart → media again",
            "count",
            "p50 ms",
            "p99 ms",
            "max ms",
            row("mover receives again", &self.mover_back),
            row("room mates receive the mover again", &self.others_back),
        )
    }
}

/// The moves of one room: who announced one and when it restarted.
#[derive(Debug, Default)]
pub struct RoomMoves(Mutex<Vec<Notice>>);

#[derive(Debug, Clone)]
struct Notice {
    mover: String,
    restarted: Option<StdInstant>,
}

impl RoomMoves {
    fn announce(&self, mover: &str) {
        self.lock().push(Notice {
            mover: mover.to_owned(),
            restarted: None,
        });
    }

    fn restarted(&self, mover: &str, at: StdInstant) {
        if let Some(n) = self.lock().iter_mut().rev().find(|n| n.mover == mover) {
            n.restarted = Some(at);
        }
    }

    fn notices(&self) -> Vec<Notice> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Notice>> {
        crate::lock(&self.0)
    }
}

/// Restart → media flowing again on `tracks` of a session that started at `started`: the
/// end of the first silence around the restart, or the first packet of a track that began
/// after it; zero when media went on with no gap (shorter than
/// [`surge_participant::AUDIO_GAP`] on audio).
pub fn back_after<'a>(
    tracks: impl IntoIterator<Item = &'a TrackStats>,
    started: StdInstant,
    restart: StdInstant,
) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for t in tracks {
        let at = |d: Duration| started + d;
        let candidate = if let Some(first) = t.first_packet_at.map(at).filter(|f| *f > restart) {
            Some(first - restart)
        } else if let Some(&(_, until)) = t
            .gaps
            .iter()
            .find(|(after, until)| at(*until) > restart && at(*after) + SLACK >= restart)
        {
            Some(at(until) - restart)
        } else if t.last_packet_at.map(at).is_some_and(|l| l > restart) {
            Some(Duration::ZERO)
        } else {
            None
        };
        if let Some(c) = candidate {
            best = Some(best.map_or(c, |b| b.min(c)));
        }
    }
    best
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `left`/`joined` messages about `id`.
fn membership(stats: &ParticipantStats, id: &str) -> u32 {
    let n = stats
        .messages
        .iter()
        .filter(|m| match m {
            ServerMessage::Left { participant_id } => participant_id.to_string() == id,
            ServerMessage::Joined { participant } => participant.id.to_string() == id,
            _ => false,
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What the mover does, and when.
#[derive(Debug)]
pub struct Mover {
    notice_at: tokio::time::Instant,
    restart_at: tokio::time::Instant,
    stage: Stage,
    report: MoveReport,
    id_before: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Waiting,
    Announced,
    /// Restarted at this instant; judged at the end of the window.
    Moved(StdInstant),
    Done,
}

/// What the caller should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Restart ICE now (then call [`Mover::restarted`] or [`Mover::fell_back`]).
    Restart,
}

impl Mover {
    /// A move `after` the join at `joined`; skipped when it could not be judged before
    /// `end`.
    pub fn new(joined: tokio::time::Instant, after: Duration, end: tokio::time::Instant) -> Self {
        let restart_at = joined + after;
        let too_late = restart_at + WINDOW + Duration::from_secs(1) > end;
        Self {
            notice_at: restart_at.checked_sub(NOTICE).unwrap_or(joined).max(joined),
            restart_at,
            stage: if too_late {
                Stage::Done
            } else {
                Stage::Waiting
            },
            report: MoveReport {
                skipped: too_late,
                ..MoveReport::default()
            },
            id_before: None,
        }
    }

    /// Announces the move to the room when due, and says when to restart.
    pub fn step(
        &mut self,
        now: tokio::time::Instant,
        stats: &ParticipantStats,
        room: &RoomMoves,
    ) -> Step {
        match self.stage {
            Stage::Waiting if now >= self.notice_at => {
                self.id_before.clone_from(&stats.participant_id);
                self.report.id.clone_from(&stats.participant_id);
                if let Some(id) = &self.id_before {
                    room.announce(id);
                }
                self.stage = Stage::Announced;
                Step::Nothing
            }
            Stage::Announced if now >= self.restart_at => Step::Restart,
            Stage::Moved(at) if now.into_std() >= at + WINDOW => {
                self.judge(stats, at);
                Step::Nothing
            }
            _ => Step::Nothing,
        }
    }

    /// The restart is starting now (the socket moves); tells the room.
    pub fn restarting(&mut self, room: &RoomMoves) -> StdInstant {
        let at = StdInstant::now();
        if let Some(id) = &self.id_before {
            room.restarted(id, at);
        }
        self.stage = Stage::Moved(at);
        at
    }

    /// The restart's answer was applied.
    pub fn restarted(&mut self, at: StdInstant) {
        self.report.restart_ms = Some(ms(at.elapsed()));
    }

    /// The restart failed with `why`; the caller rejoins.
    pub fn fell_back(&mut self, why: String) {
        self.report.fell_back = Some(why);
    }

    fn judge(&mut self, stats: &ParticipantStats, at: StdInstant) {
        if let Some(started) = stats.started {
            // The same session: its first packet on the new socket. A new one (after a
            // fallback rejoin): its first packets.
            let back = match (stats.moved_at, stats.media_after_move_at) {
                (Some(moved), Some(media)) if started + moved >= at => {
                    Some((started + media).saturating_duration_since(at))
                }
                (Some(moved), None) if started + moved >= at => None,
                _ => back_after(&stats.tracks, started, at),
            };
            self.report.back_ms = back.map(ms);
        }
        self.report.same_id = self.id_before.is_some() && stats.participant_id == self.id_before;
        self.stage = Stage::Done;
    }

    /// The report, once the move was judged (`None` while it is still under way).
    pub fn finish(self) -> Option<MoveReport> {
        (self.stage == Stage::Done).then_some(self.report)
    }
}

/// A participant watching its room mates' moves.
#[derive(Debug, Default)]
pub struct Observer {
    watching: Vec<Watch>,
    seen: Vec<ObservedMove>,
}

#[derive(Debug)]
struct Watch {
    mover: String,
    membership_before: u32,
    done: bool,
}

impl Observer {
    /// One sample of this participant's session.
    pub fn sample(&mut self, room: &RoomMoves, stats: &ParticipantStats, now: StdInstant) {
        let me = stats.participant_id.as_deref();
        for notice in room.notices() {
            if Some(notice.mover.as_str()) == me {
                continue;
            }
            if !self.watching.iter().any(|w| w.mover == notice.mover) {
                self.watching.push(Watch {
                    membership_before: membership(stats, &notice.mover),
                    mover: notice.mover.clone(),
                    done: false,
                });
            }
            let Some(restart) = notice.restarted else {
                continue;
            };
            let Some(w) = self
                .watching
                .iter_mut()
                .find(|w| w.mover == notice.mover && !w.done)
            else {
                continue;
            };
            if now < restart + WINDOW {
                continue;
            }
            w.done = true;
            let Some(started) = stats.started else {
                continue;
            };
            let from_mover: Vec<&TrackStats> = stats
                .tracks
                .iter()
                .filter(|t| t.participant_id.as_deref() == Some(notice.mover.as_str()))
                .collect();
            let expected = from_mover
                .iter()
                .any(|t| t.first_packet_at.is_some_and(|f| started + f < restart));
            self.seen.push(ObservedMove {
                mover: notice.mover.clone(),
                expected,
                back_ms: back_after(from_mover, started, restart).map(ms),
                membership_events: membership(stats, &notice.mover)
                    .saturating_sub(w.membership_before),
            });
        }
    }

    /// The moves it judged (those still in their window at the end are left out: the run's
    /// end, where everyone leaves, would blur them).
    pub fn finish(self) -> Vec<ObservedMove> {
        self.seen
    }
}

/// The run's figures, from each participant's `moved` and `observed`.
pub fn summarise<'a>(
    args: &NetworkChangeArgs,
    participants: impl IntoIterator<Item = (&'a Option<MoveReport>, &'a [ObservedMove])>,
) -> Option<NetworkChanges> {
    let after = args.network_change_after?;
    let mut n = NetworkChanges {
        after_secs: after.as_secs_f64(),
        share: args.network_changes_share,
        ..NetworkChanges::default()
    };
    let (mut mover, mut others) = (LatencyHistogram::new(), LatencyHistogram::new());
    let record = |h: &mut LatencyHistogram, n: &mut NetworkChanges, back: Option<f64>| match back {
        Some(ms) => {
            h.record(Duration::from_secs_f64(ms / 1000.0));
            if ms > BAR.as_secs_f64() * 1000.0 {
                n.over_bar += 1;
            }
        }
        None => n.not_back += 1,
    };
    for (moved, observed) in participants {
        if let Some(m) = moved {
            if m.skipped {
                n.skipped += 1;
            } else {
                n.moves += 1;
                n.fell_back += u64::from(m.fell_back.is_some());
                n.changed_id += u64::from(!m.same_id);
                record(&mut mover, &mut n, m.back_ms);
            }
        }
        for o in observed {
            n.membership_events += u64::from(o.membership_events);
            if o.expected {
                record(&mut others, &mut n, o.back_ms);
            }
        }
    }
    n.mover_back = mover.percentiles();
    n.others_back = others.percentiles();
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(first: u64, last: u64, gaps: &[(u64, u64)]) -> TrackStats {
        let d = Duration::from_millis;
        TrackStats {
            first_packet_at: Some(d(first)),
            last_packet_at: Some(d(last)),
            gaps: gaps.iter().map(|&(a, b)| (d(a), d(b))).collect(),
            ..TrackStats::default()
        }
    }

    #[test]
    fn media_is_back_at_the_end_of_the_silence_around_the_restart() {
        let started = StdInstant::now();
        let restart = started + Duration::from_millis(5000);
        // An older silence, then the move's: from just before the restart to 180 ms after.
        let audio = track(100, 9000, &[(2000, 2300), (4990, 5180)]);
        // Video came back later (a keyframe): the first media counts.
        let video = track(100, 9000, &[(4980, 5400)]);
        assert_eq!(
            back_after([&audio, &video], started, restart),
            Some(Duration::from_millis(180))
        );
        // No silence longer than GAP: no interruption.
        let smooth = track(100, 9000, &[(2000, 2300)]);
        assert_eq!(
            back_after([&smooth], started, restart),
            Some(Duration::ZERO)
        );
        // Nothing since the restart: not back.
        let stopped = track(100, 4999, &[]);
        assert_eq!(back_after([&stopped], started, restart), None);
        // A new session (after a rejoin): its first packet.
        let fresh = track(5700, 9000, &[]);
        assert_eq!(
            back_after([&fresh], started, restart),
            Some(Duration::from_millis(700))
        );
    }

    #[test]
    fn the_share_spreads_movers_over_the_room() {
        let args = |share| NetworkChangeArgs {
            network_change_after: Some(Duration::from_secs(5)),
            network_changes_share: share,
        };
        let chosen = |share| {
            (0..4)
                .filter(|i| args(share).after_for(*i, 4).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(chosen(1.0), [0, 1, 2, 3]);
        assert_eq!(chosen(0.5), [1, 3]);
        assert_eq!(chosen(0.25), [3]);
        assert!(chosen(0.0).is_empty());
        assert_eq!(NetworkChangeArgs::default().after_for(0, 4), None);
        assert!(parse_share("1.5").is_err() && parse_share("x").is_err());
        assert_eq!(parse_share("0.5"), Ok(0.5));
    }

    #[test]
    fn a_move_too_late_to_judge_is_skipped() {
        let now = tokio::time::Instant::now();
        let late = Mover::new(now, Duration::from_secs(8), now + Duration::from_secs(10));
        assert_eq!(
            late.finish().map(|r| r.skipped),
            Some(true),
            "8 s + a 4 s window does not fit in 10 s"
        );
        let fits = Mover::new(now, Duration::from_secs(2), now + Duration::from_secs(10));
        assert_eq!(fits.finish(), None, "still to come");
    }

    #[test]
    fn the_summary_fails_a_fallback_a_slow_return_and_a_leave() {
        let args = NetworkChangeArgs {
            network_change_after: Some(Duration::from_secs(5)),
            network_changes_share: 1.0,
        };
        let good = MoveReport {
            restart_ms: Some(20.0),
            back_ms: Some(150.0),
            same_id: true,
            ..MoveReport::default()
        };
        let seen = vec![ObservedMove {
            mover: "p1".into(),
            expected: true,
            back_ms: Some(120.0),
            membership_events: 0,
        }];
        let n = summarise(&args, [(&Some(good.clone()), seen.as_slice())]).unwrap();
        assert!(n.pass(), "{n:?}");
        assert_eq!((n.mover_back.count, n.others_back.count), (1, 1));
        let slow = Some(MoveReport {
            back_ms: Some(2500.0),
            ..good.clone()
        });
        let left = vec![ObservedMove {
            membership_events: 1,
            ..seen[0].clone()
        }];
        let n = summarise(&args, [(&slow, left.as_slice())]).unwrap();
        assert!(!n.pass());
        assert_eq!((n.over_bar, n.membership_events), (1, 1));
        let fell = Some(MoveReport {
            fell_back: Some("refused with 404: session_gone".into()),
            same_id: false,
            ..good
        });
        let n = summarise(&args, [(&fell, &[][..])]).unwrap();
        assert_eq!((n.fell_back, n.changed_id), (1, 1));
        assert!(!n.pass());
        assert!(summarise(&NetworkChangeArgs::default(), [(&fell, &[][..])]).is_none());
    }
}
