//! Where a join's time goes, from the participant's own clock: signalling through the API,
//! ICE, DTLS, the data channel, the server's offer of each remote track and its answer, the
//! first packet and the first complete keyframe of each remote track.
//!
//! Each remote track has its own clock start: the participant's join, or, for a track
//! published after it joined, the moment that track came to exist (its publisher's join was
//! answered). So a subscriber that joins before anyone publishes is not charged for the wait,
//! and the report counts those tracks separately as renegotiations.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use surge_participant::ParticipantStats;

use crate::stats::{LatencyHistogram, Percentiles};

/// One remote track's way to the first frame (ms).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrackJoin {
    pub mid: String,
    pub kind: String,
    pub from: Option<String>,
    /// Published after this participant joined: its clock starts when it came to exist,
    /// and it arrived by renegotiating a running session.
    pub published_later: bool,
    /// Clock start → the server's offer with this track arrived.
    pub offer_ms: Option<f64>,
    /// Offer arrived → answer sent.
    pub answer_ms: Option<f64>,
    /// Answer sent → the server confirmed the track (`tracks` message).
    pub accepted_ms: Option<f64>,
    /// Clock start → first RTP packet.
    pub first_packet_ms: Option<f64>,
    /// First packet → first complete keyframe (video); 0 for audio.
    pub keyframe_ms: Option<f64>,
    /// Clock start → first decodable frame.
    pub first_frame_ms: Option<f64>,
}

/// One participant's join, phase by phase (ms).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JoinBreakdown {
    /// Join started → the shard's SDP answer came back through the API (retries included).
    pub signalling_ms: Option<f64>,
    /// Answer → ICE connected.
    pub ice_ms: Option<f64>,
    /// ICE connected → DTLS done.
    pub dtls_ms: Option<f64>,
    /// DTLS done → the data channel open (renegotiations go over it).
    pub channel_ms: Option<f64>,
    pub tracks: Vec<TrackJoin>,
    /// Clock start → first frame of every remote video track: the longest of the tracks'
    /// `first_frame_ms` (`None` while one is missing, or when there is no remote video).
    pub all_video_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Computes the breakdown of one session. `joined_at` is when the participant started
/// joining (before any retry); `published` holds when each publisher's join was answered,
/// by participant id.
pub fn breakdown(
    stats: &ParticipantStats,
    joined_at: Instant,
    published: &HashMap<String, Instant>,
) -> JoinBreakdown {
    let Some(started) = stats.started else {
        return JoinBreakdown::default();
    };
    // Instants of the session's events.
    let at = |d: Option<Duration>| d.map(|d| started + d);
    let answer = at(stats.answer_at);
    let ice = at(stats.ice_connected_at);
    let dtls = at(stats.dtls_connected_at);
    let channel = at(stats.channel_open_at);
    let between = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => Some(ms(b.saturating_duration_since(a))),
        _ => None,
    };
    let mut out = JoinBreakdown {
        signalling_ms: between(Some(joined_at), answer),
        ice_ms: between(answer, ice),
        dtls_ms: between(ice, dtls),
        channel_ms: between(dtls, channel),
        ..JoinBreakdown::default()
    };
    let mut all_video: Option<f64> = None;
    let mut video_missing = false;
    for t in &stats.tracks {
        let exists = t
            .participant_id
            .as_ref()
            .and_then(|p| published.get(p))
            .copied();
        let published_later = exists.is_some_and(|e| e > joined_at);
        let clock = exists.map_or(joined_at, |e| e.max(joined_at));
        let offer = at(t.offer_at);
        let answered = at(t.answered_at);
        let first_packet = at(t.first_packet_at);
        let first_frame = at(t.first_frame_at);
        let track = TrackJoin {
            mid: t.mid.clone(),
            kind: t.kind.clone(),
            from: t.participant_id.clone(),
            published_later,
            offer_ms: between(Some(clock), offer),
            answer_ms: between(offer, answered),
            accepted_ms: between(answered, at(t.accepted_at)),
            first_packet_ms: between(Some(clock), first_packet),
            keyframe_ms: between(first_packet, first_frame),
            first_frame_ms: between(Some(clock), first_frame),
        };
        if t.kind == "video" {
            match track.first_frame_ms {
                Some(v) => all_video = Some(all_video.map_or(v, |a: f64| a.max(v))),
                None => video_missing = true,
            }
        }
        out.tracks.push(track);
    }
    out.tracks.sort_by(|a, b| a.mid.cmp(&b.mid));
    out.all_video_ms = all_video.filter(|_| !video_missing);
    out
}

/// Percentiles of every phase over a run: one row per phase, in the order a join goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JoinPhases {
    pub rows: Vec<(String, Percentiles)>,
    /// Remote tracks whose clock started at their publication (published after the
    /// participant joined), of all remote tracks.
    pub published_later: u64,
    pub tracks: u64,
}

/// Aggregates the breakdowns of a run.
pub fn phases<'a>(all: impl IntoIterator<Item = &'a JoinBreakdown>) -> JoinPhases {
    const NAMES: [&str; 13] = [
        "API join → shard answer (signalling)",
        "answer → ICE connected",
        "ICE connected → DTLS done",
        "DTLS done → data channel open",
        "joined: clock start → server offer of the track",
        "joined: offer → answer sent",
        "joined: answer sent → answer accepted",
        "joined: clock start → first packet (video)",
        "joined: first packet → first keyframe complete (video)",
        "renegotiation: track published → offer arrived",
        "renegotiation: offer → answer accepted",
        "renegotiation: track published → first video frame",
        "join → first video frame of every remote track",
    ];
    let mut h: Vec<LatencyHistogram> = NAMES.iter().map(|_| LatencyHistogram::new()).collect();
    let mut record = |i: usize, v: Option<f64>| {
        if let Some(v) = v {
            h[i].record(Duration::from_secs_f64(v.max(0.0) / 1000.0));
        }
    };
    let mut published_later = 0;
    let mut tracks = 0;
    for b in all {
        record(0, b.signalling_ms);
        record(1, b.ice_ms);
        record(2, b.dtls_ms);
        record(3, b.channel_ms);
        for t in &b.tracks {
            tracks += 1;
            let video = t.kind == "video";
            if t.published_later {
                published_later += 1;
                record(9, t.offer_ms);
                record(10, t.answer_ms.zip(t.accepted_ms).map(|(a, b)| a + b));
                if video {
                    record(11, t.first_frame_ms);
                }
            } else {
                record(4, t.offer_ms);
                record(5, t.answer_ms);
                record(6, t.accepted_ms);
                if video {
                    record(7, t.first_packet_ms);
                    record(8, t.keyframe_ms);
                }
            }
        }
        record(12, b.all_video_ms);
    }
    JoinPhases {
        rows: NAMES
            .iter()
            .zip(h)
            .map(|(n, h)| ((*n).to_owned(), h.percentiles()))
            .collect(),
        published_later,
        tracks,
    }
}

impl JoinPhases {
    /// The headline: join → first video frame of every remote track.
    pub fn all_video(&self) -> Percentiles {
        self.rows.last().map(|(_, p)| p.clone()).unwrap_or_default()
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<56} {:>5} {:>7} {:>7} {:>7} {:>7}\n",
            "join phase (ms)", "n", "p50", "p90", "p99", "max"
        );
        for (name, p) in &self.rows {
            out.push_str(&format!(
                "{:<56} {:>5} {:>7.0} {:>7.0} {:>7.0} {:>7.0}\n",
                name, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            ));
        }
        out.push_str(&format!(
            "{} of {} remote tracks were published after the participant joined: their clock starts at publication\n",
            self.published_later, self.tracks
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_participant::TrackStats;

    fn d(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    fn track(mid: &str, kind: &str, from: &str, offer: u64, first: u64, frame: u64) -> TrackStats {
        TrackStats {
            mid: mid.into(),
            kind: kind.into(),
            participant_id: Some(from.into()),
            offer_at: d(offer),
            answered_at: d(offer + 2),
            accepted_at: d(offer + 5),
            first_packet_at: d(first),
            first_frame_at: d(frame),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_each_other_and_late_tracks_start_their_own_clock() {
        let joined = Instant::now();
        let started = joined + Duration::from_millis(10);
        let stats = ParticipantStats {
            started: Some(started),
            answer_at: d(30),
            ice_connected_at: d(40),
            dtls_connected_at: d(55),
            channel_open_at: d(60),
            tracks: vec![
                track("1", "video", "a", 62, 80, 95),
                track("2", "audio", "a", 62, 75, 75),
                // Published 500 ms after the join.
                track("3", "video", "b", 520, 540, 560),
            ],
            ..Default::default()
        };
        let mut published = HashMap::new();
        published.insert("a".to_owned(), joined - Duration::from_secs(1));
        published.insert("b".to_owned(), joined + Duration::from_millis(500));
        let b = breakdown(&stats, joined, &published);
        assert_eq!(b.signalling_ms, Some(40.0));
        assert_eq!(b.ice_ms, Some(10.0));
        assert_eq!(b.dtls_ms, Some(15.0));
        assert_eq!(b.channel_ms, Some(5.0));
        let v1 = &b.tracks[0];
        assert!(!v1.published_later);
        assert_eq!(v1.offer_ms, Some(72.0));
        assert_eq!(v1.answer_ms, Some(2.0));
        assert_eq!(v1.accepted_ms, Some(3.0));
        assert_eq!(v1.first_packet_ms, Some(90.0));
        assert_eq!(v1.keyframe_ms, Some(15.0));
        assert_eq!(v1.first_frame_ms, Some(105.0));
        let v3 = &b.tracks[2];
        assert!(v3.published_later);
        // Clock from publication (joined + 500 ms): frame at started + 560 = joined + 570.
        assert_eq!(v3.first_frame_ms, Some(70.0));
        assert_eq!(b.all_video_ms, Some(105.0));

        let p = phases([&b]);
        assert_eq!(p.tracks, 3);
        assert_eq!(p.published_later, 1);
        assert_eq!(p.all_video().count, 1);
        assert!(p.table().contains("join → first video frame"));
    }

    #[test]
    fn a_missing_video_frame_leaves_the_headline_open() {
        let joined = Instant::now();
        let mut t = track("1", "video", "a", 5, 10, 0);
        t.first_frame_at = None;
        let stats = ParticipantStats {
            started: Some(joined),
            tracks: vec![t, track("2", "video", "b", 5, 10, 20)],
            ..Default::default()
        };
        let b = breakdown(&stats, joined, &HashMap::new());
        assert_eq!(b.all_video_ms, None);
    }
}
