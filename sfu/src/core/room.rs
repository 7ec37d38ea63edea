//! The room state machine.

use std::collections::VecDeque;
use std::time::Instant;

use super::{
    Forward, Layer, MediaKind, Mid, Output, ParticipantId, ParticipantInfo, PublishedTrack,
    RoomConfig, RoomError, RoomStats, RtpMeta, TrackId,
};

/// One conference room: membership, subscriptions, layer choice, keyframes and speakers.
///
/// Lives on one worker thread; every method takes `now` and never blocks.
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    outputs: VecDeque<Output>,
    stats: RoomStats,
}

impl Room {
    /// An empty room.
    pub fn new(config: RoomConfig) -> Self {
        Self {
            config,
            outputs: VecDeque::new(),
            stats: RoomStats::default(),
        }
    }

    /// Adds a participant. Emits `Event(Joined)` and, if it may subscribe, one `NeedSlot` per
    /// track of the others.
    pub fn join(
        &mut self,
        pid: ParticipantId,
        info: ParticipantInfo,
        now: Instant,
    ) -> Result<(), RoomError> {
        let _ = (pid, info, now, &self.config);
        Ok(())
    }

    /// Removes a participant (its tracks, its slots). Emits `Event(Left)` and `DropSlot` for
    /// its tracks' subscribers. Returns whether it was in the room.
    pub fn leave(&mut self, pid: ParticipantId, now: Instant) -> bool {
        let _ = (pid, now);
        false
    }

    /// Starts a track; every participant that may subscribe gets a `NeedSlot`.
    pub fn publish_track(
        &mut self,
        pid: ParticipantId,
        track: PublishedTrack,
        now: Instant,
    ) -> Result<TrackId, RoomError> {
        let _ = now;
        Ok(TrackId {
            publisher: pid,
            mid: track.mid,
        })
    }

    /// Ends a track; its subscribers get `DropSlot`. Returns whether it existed.
    pub fn unpublish_track(&mut self, track: TrackId, now: Instant) -> bool {
        let _ = (track, now);
        false
    }

    /// The subscriber's outgoing m-line `out_mid` for `track` is negotiated: packets flow to
    /// it from the next keyframe (video) or at once (audio).
    pub fn slot_ready(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        out_mid: Mid,
        now: Instant,
    ) -> Result<(), RoomError> {
        let _ = (subscriber, track, out_mid, now);
        Ok(())
    }

    /// One incoming RTP packet from `from` on its m-line `mid`, of simulcast `layer` (`None`
    /// when the track is not simulcast). Calls `out` once per subscriber that receives it;
    /// returns how many did. Allocates nothing.
    pub fn handle_rtp(
        &mut self,
        from: ParticipantId,
        mid: Mid,
        layer: Option<Layer>,
        meta: &RtpMeta,
        now: Instant,
        out: &mut impl FnMut(Forward),
    ) -> usize {
        let _ = (from, mid, layer, meta, now, out);
        0
    }

    /// Anything else arrived from `pid` (RTCP, STUN, data channel): it is alive.
    pub fn handle_activity(&mut self, pid: ParticipantId, now: Instant) {
        let _ = (pid, now);
    }

    /// The subscriber's egress bandwidth estimate (TWCC) changed.
    pub fn handle_bandwidth(&mut self, subscriber: ParticipantId, bps: u64, now: Instant) {
        let _ = (subscriber, bps, now);
    }

    /// The subscriber wants at most `height` pixels on `out_mid` (0 pauses the slot).
    pub fn set_max_height(
        &mut self,
        subscriber: ParticipantId,
        out_mid: Mid,
        height: u32,
        now: Instant,
    ) {
        let _ = (subscriber, out_mid, height, now);
    }

    /// The subscriber asked for a keyframe (PLI/FIR) on `out_mid`.
    pub fn handle_keyframe_request(
        &mut self,
        subscriber: ParticipantId,
        out_mid: Mid,
        now: Instant,
    ) {
        let _ = (subscriber, out_mid, now);
    }

    /// The publisher paused or resumed a layer (str0m `Event::StreamPaused`).
    pub fn layer_paused(
        &mut self,
        publisher: ParticipantId,
        mid: Mid,
        layer: Option<Layer>,
        paused: bool,
        now: Instant,
    ) {
        let _ = (publisher, mid, layer, paused, now);
    }

    /// The participant (un)muted `kind`; emits `Event(Muted)` when it changed.
    pub fn set_muted(&mut self, pid: ParticipantId, kind: MediaKind, muted: bool, now: Instant) {
        let _ = (pid, kind, muted, now);
    }

    /// Periodic work: layer bitrates, speaker detection, keyframe retries, idle clean-up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// When [`Room::handle_timeout`] wants to run next (`None`: the room is empty).
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next thing to do; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Counters since the room was created.
    pub fn stats(&self) -> &RoomStats {
        &self.stats
    }

    /// How many participants are in the room.
    pub fn participant_count(&self) -> usize {
        0
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.participant_count() == 0
    }

    /// Whether `pid` is in the room.
    pub fn contains(&self, pid: ParticipantId) -> bool {
        let _ = pid;
        false
    }

    /// The layer `subscriber` currently receives on `out_mid`.
    pub fn current_layer(&self, subscriber: ParticipantId, out_mid: Mid) -> Option<Layer> {
        let _ = (subscriber, out_mid);
        None
    }

    /// The current active speaker.
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        None
    }
}
