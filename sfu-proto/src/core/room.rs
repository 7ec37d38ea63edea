//! The room state machine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bitrate::BitrateMeter;
use super::hash::FastMap;
use super::keyframe::KeyframeCoalescer;
use super::keyframe_cache::KeyframeCache;
use super::rewrite::Rewriter;
use super::speaker::{LevelMeter, SpeakerSelector};
use super::{
    Forward, Layer, MediaKind, Mid, Output, ParticipantId, ParticipantInfo, PublishedTrack,
    ReplayedPacket, Rid, RoomConfig, RoomError, RoomEvent, RoomStats, RtpMeta, TrackId,
    TrackSource, layer_for_rid,
};

/// A layer that sent nothing for this long (while its track is older than this) is treated
/// as gone even without a `StreamPaused`: selecting it would freeze the subscriber.
const LAYER_STALE: Duration = Duration::from_secs(2);

/// How often every subscriber's layers are re-chosen from fresh bitrate measurements
/// (events such as a new estimate re-choose at once).
const REALLOCATE_EVERY: Duration = Duration::from_millis(500);

/// RTP clock rates: 90 kHz for every video codec, 48 kHz for Opus.
pub(crate) const VIDEO_CLOCK: u32 = 90_000;
pub(crate) const AUDIO_CLOCK: u32 = 48_000;

/// One conference room: membership, subscriptions, layer choice, keyframes and speakers.
///
/// Lives on one worker thread; every method takes `now` and never blocks. After every input
/// drain [`Room::poll_output`]; call [`Room::handle_timeout`] at [`Room::poll_timeout`].
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    participants: FastMap<ParticipantId, Participant>,
    tracks: FastMap<TrackId, Track>,
    outputs: VecDeque<Output>,
    stats: RoomStats,
    speaker: SpeakerSelector,
    next_tick: Option<Instant>,
    last_tick: Option<Instant>,
    last_reallocate: Option<Instant>,
    /// Reused by `handle_timeout` (participants to time out, speaker loudness).
    scratch_pids: Vec<ParticipantId>,
    scratch_loudness: Vec<(ParticipantId, f32)>,
}

#[derive(Debug)]
struct Participant {
    info: ParticipantInfo,
    last_activity: Instant,
    estimate_bps: u64,
    /// The most it wants to receive, as it announced (bits/s): estimates are capped by it.
    receive_cap_bps: Option<u64>,
    audio_muted: bool,
    video_muted: bool,
    /// Mids of the tracks it publishes.
    published: Vec<Mid>,
    /// Tracks it receives: its outgoing mid → the track.
    slots: Vec<(Mid, TrackId)>,
    /// Tracks offered with `NeedSlot`, not yet ready.
    pending: Vec<TrackId>,
}

#[derive(Debug)]
struct Track {
    id: TrackId,
    kind: MediaKind,
    source: TrackSource,
    simulcast: bool,
    layers: [LayerState; 3],
    slots: Vec<Slot>,
    first_rx: Option<Instant>,
    last_rx: Option<Instant>,
    level: LevelMeter,
}

#[derive(Debug, Default)]
struct LayerState {
    /// The publisher announced this layer (a non-simulcast track has only `High`).
    present: bool,
    rid: Option<Rid>,
    paused: bool,
    meter: BitrateMeter,
    keyframe: KeyframeCoalescer,
    /// Video: the last complete keyframe, for new subscribers (kept while the layer is live).
    cache: KeyframeCache,
    /// The timestamp of the last packet received, and when: the live stream's clock.
    latest_ts: Option<(u32, Instant)>,
}

/// One subscriber's reception of one track.
#[derive(Debug)]
struct Slot {
    subscriber: ParticipantId,
    out_mid: Mid,
    /// The layer being forwarded (`None`: nothing yet, or paused).
    current: Option<Layer>,
    /// The layer wanted; a switch happens on its next keyframe (`None`: paused).
    target: Option<Layer>,
    max_height: u32,
    last_down_switch: Option<Instant>,
    rewriter: Rewriter,
}

/// Where outputs go; split from the maps so track code can emit while a track is borrowed.
struct Sink<'a> {
    outputs: &'a mut VecDeque<Output>,
    stats: &'a mut RoomStats,
    config: &'a RoomConfig,
}

impl Room {
    /// An empty room.
    pub fn new(mut config: RoomConfig) -> Self {
        // A zero tick would make the timer due forever.
        config.tick = config.tick.max(Duration::from_millis(1));
        Self {
            config,
            participants: FastMap::default(),
            tracks: FastMap::default(),
            outputs: VecDeque::new(),
            stats: RoomStats::default(),
            speaker: SpeakerSelector::default(),
            next_tick: None,
            last_tick: None,
            last_reallocate: None,
            scratch_pids: Vec::new(),
            scratch_loudness: Vec::new(),
        }
    }

    /// The room's configuration.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Adds a participant. Emits `Event(Joined)` and, if it may subscribe, one `NeedSlot` per
    /// track of the others.
    pub fn join(
        &mut self,
        pid: ParticipantId,
        info: ParticipantInfo,
        now: Instant,
    ) -> Result<(), RoomError> {
        if self.participants.contains_key(&pid) {
            return Err(RoomError::AlreadyJoined(pid));
        }
        if self.participants.len() >= self.config.max_participants {
            return Err(RoomError::RoomFull);
        }
        self.outputs.push_back(Output::Event(RoomEvent::Joined {
            participant: pid,
            user: info.user.clone(),
            name: info.name.clone(),
        }));
        let mut participant = Participant {
            last_activity: now,
            estimate_bps: self.config.initial_estimate_bps,
            receive_cap_bps: None,
            audio_muted: false,
            video_muted: false,
            published: Vec::new(),
            slots: Vec::new(),
            pending: Vec::new(),
            info,
        };
        if participant.info.subscribe {
            // Deterministic order (maps iterate arbitrarily): by publisher, then mid.
            let mut offered: Vec<(TrackId, MediaKind, TrackSource)> = self
                .tracks
                .values()
                .map(|t| (t.id, t.kind, t.source))
                .collect();
            offered.sort_by(|a, b| {
                (a.0.publisher, a.0.mid.as_bytes()).cmp(&(b.0.publisher, b.0.mid.as_bytes()))
            });
            for (track, kind, source) in offered {
                participant.pending.push(track);
                self.outputs.push_back(Output::NeedSlot {
                    subscriber: pid,
                    track,
                    kind,
                    source,
                });
            }
        }
        self.participants.insert(pid, participant);
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.tick);
            self.last_tick = Some(now);
        }
        tracing::debug!(participant = %pid, "joined room");
        Ok(())
    }

    /// Removes a participant (its tracks, its slots). Emits `Event(Left)` and `DropSlot` for
    /// its tracks' subscribers. Returns whether it was in the room.
    pub fn leave(&mut self, pid: ParticipantId, now: Instant) -> bool {
        let Some(participant) = self.participants.remove(&pid) else {
            return false;
        };
        for mid in &participant.published {
            self.remove_track(
                TrackId {
                    publisher: pid,
                    mid: *mid,
                },
                now,
            );
        }
        for (_, track) in &participant.slots {
            if let Some(t) = self.tracks.get_mut(track) {
                t.slots.retain(|s| s.subscriber != pid);
            }
        }
        self.speaker.remove(pid);
        self.outputs.push_back(Output::Event(RoomEvent::Left(pid)));
        if self.participants.is_empty() {
            self.next_tick = None;
        }
        tracing::debug!(participant = %pid, "left room");
        true
    }

    /// Starts a track; every other participant that may subscribe gets a `NeedSlot`.
    pub fn publish_track(
        &mut self,
        pid: ParticipantId,
        track: PublishedTrack,
        now: Instant,
    ) -> Result<TrackId, RoomError> {
        let participant = self
            .participants
            .get_mut(&pid)
            .ok_or(RoomError::UnknownParticipant(pid))?;
        if !participant.info.publish {
            return Err(RoomError::PublishNotAllowed(pid));
        }
        let id = TrackId {
            publisher: pid,
            mid: track.mid,
        };
        if self.tracks.contains_key(&id) {
            return Err(RoomError::DuplicateTrack(track.mid));
        }
        participant.published.push(track.mid);
        participant.last_activity = now;

        let mut layers: [LayerState; 3] = Default::default();
        let simulcast = track.kind.is_video() && !track.rids.is_empty();
        if simulcast {
            for rid in &track.rids {
                if let Some(layer) = layer_for_rid(&track.rids, rid) {
                    let state = &mut layers[layer.index()];
                    state.present = true;
                    state.rid = Some(*rid);
                }
            }
        } else {
            layers[Layer::High.index()].present = true;
        }
        self.tracks.insert(
            id,
            Track {
                id,
                kind: track.kind,
                source: track.source,
                simulcast,
                layers,
                slots: Vec::new(),
                first_rx: None,
                last_rx: None,
                level: LevelMeter::default(),
            },
        );

        let mut subscribers: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(other, p)| **other != pid && p.info.subscribe)
            .map(|(other, _)| *other)
            .collect();
        subscribers.sort();
        for subscriber in subscribers {
            if let Some(p) = self.participants.get_mut(&subscriber) {
                p.pending.push(id);
            }
            self.outputs.push_back(Output::NeedSlot {
                subscriber,
                track: id,
                kind: track.kind,
                source: track.source,
            });
        }
        tracing::debug!(participant = %pid, mid = %track.mid, kind = ?track.kind, source = ?track.source, simulcast, "track published");
        Ok(id)
    }

    /// Ends a track; its subscribers get `DropSlot`. Returns whether it existed.
    pub fn unpublish_track(&mut self, track: TrackId, now: Instant) -> bool {
        let existed = self.remove_track(track, now);
        if existed && let Some(p) = self.participants.get_mut(&track.publisher) {
            p.published.retain(|m| *m != track.mid);
        }
        existed
    }

    /// The subscriber's outgoing m-line `out_mid` for `track` is negotiated: packets flow to
    /// it from the next keyframe (video) or at once (audio). A video slot whose layer has a
    /// cached keyframe gets it at once ([`Output::ReplayKeyframe`]).
    pub fn slot_ready(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        out_mid: Mid,
        now: Instant,
    ) -> Result<(), RoomError> {
        let participant = self
            .participants
            .get_mut(&subscriber)
            .ok_or(RoomError::UnknownParticipant(subscriber))?;
        let Some(t) = self.tracks.get_mut(&track) else {
            return Err(RoomError::UnknownTrack);
        };
        let Some(pos) = participant.pending.iter().position(|p| *p == track) else {
            return Err(RoomError::NoSlotWanted(subscriber));
        };
        if participant.slots.iter().any(|(m, _)| *m == out_mid) {
            return Err(RoomError::MidInUse(out_mid));
        }
        participant.pending.swap_remove(pos);
        participant.slots.push((out_mid, track));
        participant.last_activity = now;
        let audio = t.kind.is_audio();
        t.slots.push(Slot {
            subscriber,
            out_mid,
            current: None,
            // Audio has one layer and needs no keyframe: it flows from the next packet.
            target: audio.then_some(Layer::High),
            max_height: u32::MAX,
            last_down_switch: None,
            rewriter: Rewriter::new(if audio { AUDIO_CLOCK } else { VIDEO_CLOCK }),
        });
        if !audio {
            self.allocate(subscriber, now);
            self.replay_keyframe(subscriber, track, now);
        }
        Ok(())
    }

    /// A new video slot targets a layer whose last keyframe is cached: sends it now,
    /// renumbered into the slot's stream. The slot's current layer stays unset, so the deltas
    /// that follow (they reference frames the subscriber never had) are held back until the
    /// keyframe requested when the layer was chosen; that one starts the live stream exactly
    /// as a layer switch does, numbered on from the replayed frame.
    fn replay_keyframe(&mut self, subscriber: ParticipantId, track_id: TrackId, now: Instant) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let Some(idx) = track.slots.iter().position(|s| s.subscriber == subscriber) else {
            return;
        };
        let Some(layer) = track.slots[idx].target else {
            return;
        };
        // Called only for a slot just made, so nothing was sent on it yet (mid-stream, an old
        // picture would be a jump back).
        if !track.layer_live(layer, now) {
            return;
        }
        let state = &track.layers[layer.index()];
        let (Some(packets), Some((live_ts, live_at))) = (state.cache.keyframe(), state.latest_ts)
        else {
            return;
        };
        // The cached frame may be seconds (or minutes: browsers send keyframes when asked)
        // old. It is stamped with the live stream's clock now, where the publisher's next
        // frame will land: the jitter buffer sees a frame of the present, the RTCP sender
        // reports keep lip sync, and the live keyframe follows it by the time elapsed.
        let elapsed = now.saturating_duration_since(live_at);
        let ticks = elapsed.as_micros() * u128::from(VIDEO_CLOCK) / 1_000_000;
        // Wrapping is what RTP timestamps do anyway.
        let ts = live_ts.wrapping_add(ticks as u32);
        let slot = &mut track.slots[idx];
        slot.rewriter.start_epoch_at(&packets[0].meta, ts, now);
        let mut replayed = Vec::with_capacity(packets.len());
        for p in packets {
            let Some(r) = slot.rewriter.rewrite(&p.meta, now) else {
                continue;
            };
            replayed.push(ReplayedPacket {
                forward: Forward {
                    subscriber,
                    out_mid: slot.out_mid,
                    seq: r.seq,
                    ts: r.ts,
                    marker: p.meta.marker,
                    vp8: r.vp8,
                },
                payload_type: p.meta.payload_type,
                payload: Arc::clone(&p.payload),
            });
        }
        tracing::debug!(subscriber = %subscriber, publisher = %track_id.publisher, mid = %track_id.mid, ?layer, packets = replayed.len(), "cached keyframe replayed");
        self.stats.keyframes_replayed += 1;
        self.outputs.push_back(Output::ReplayKeyframe {
            publisher: track_id.publisher,
            packets: replayed,
        });
    }

    /// One incoming RTP packet from `from` on its m-line `mid`, of simulcast `layer` (`None`
    /// when the track is not simulcast), with its `payload`. Calls `out` once per subscriber
    /// that receives it; returns how many did. Allocates nothing, except to copy a keyframe's
    /// packets into the layer's cache.
    ///
    /// `meta.keyframe` should be true on the first packet of a keyframe: layer switches
    /// happen there.
    // The packet's parts, as the runtime has them; a struct would only be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_rtp(
        &mut self,
        from: ParticipantId,
        mid: Mid,
        layer: Option<Layer>,
        meta: &RtpMeta,
        payload: &Arc<[u8]>,
        now: Instant,
        out: &mut impl FnMut(Forward),
    ) -> usize {
        self.stats.received_packets += 1;
        let Some(track) = self.tracks.get_mut(&TrackId {
            publisher: from,
            mid,
        }) else {
            self.stats.unknown_track_packets += 1;
            return 0;
        };
        if track.first_rx.is_none() {
            track.first_rx = Some(now);
        }
        track.last_rx = Some(now);

        let layer = if track.simulcast {
            match layer {
                Some(l) if track.layers[l.index()].present => l,
                // A simulcast packet whose layer the runtime could not tell: nobody can be
                // switched onto it safely.
                _ => {
                    self.stats.unknown_track_packets += 1;
                    return 0;
                }
            }
        } else {
            Layer::High
        };
        let state = &mut track.layers[layer.index()];
        let layer_appears = state.meter.last_packet().is_none();
        state.meter.add(meta.payload_len, now);
        if track.kind.is_video() {
            state.latest_ts = Some((meta.ts, now));
            state
                .cache
                .add(meta, payload, self.config.keyframe_cache_bytes);
        }
        if meta.keyframe {
            state.keyframe.keyframe_arrived();
        } else if layer_appears && track.kind.is_video() {
            // A request made before this layer reached us could not be delivered (the
            // publisher's stream was not known yet) and holds the coalescing window: ask now,
            // instead of at the retry after the window, if a subscriber waits for it.
            state.keyframe.keyframe_arrived();
            let waiting = track
                .slots
                .iter()
                .any(|s| s.target == Some(layer) && s.current != Some(layer));
            if waiting {
                let mut sink = Sink {
                    outputs: &mut self.outputs,
                    stats: &mut self.stats,
                    config: &self.config,
                };
                track.request_keyframe(layer, now, &mut sink);
            }
        }
        if let Some(level) = meta.audio_level {
            track.level.add(level, self.config.speaker.silence_level);
        }

        let is_video = track.kind.is_video();
        let simulcast = track.simulcast;
        let mut forwarded = 0usize;
        for slot in &mut track.slots {
            if slot.current != Some(layer) {
                if slot.target != Some(layer) || (is_video && !meta.keyframe) {
                    continue;
                }
                // The keyframe the target layer was waiting for: switch here.
                if slot.current.is_some() {
                    self.stats.layer_switches += 1;
                }
                slot.current = Some(layer);
                slot.rewriter.start_epoch(meta, now);
                if simulcast {
                    self.outputs
                        .push_back(Output::Event(RoomEvent::LayerChanged {
                            subscriber: slot.subscriber,
                            out_mid: slot.out_mid,
                            layer,
                        }));
                }
            }
            let Some(rewritten) = slot.rewriter.rewrite(meta, now) else {
                continue;
            };
            forwarded += 1;
            out(Forward {
                subscriber: slot.subscriber,
                out_mid: slot.out_mid,
                seq: rewritten.seq,
                ts: rewritten.ts,
                marker: meta.marker,
                vp8: rewritten.vp8,
            });
        }
        self.stats.forwarded_packets += forwarded as u64;
        self.stats.forwarded_bytes += (forwarded * meta.payload_len) as u64;
        forwarded
    }

    /// Anything else arrived from `pid` (RTCP, STUN, data channel): it is alive.
    pub fn handle_activity(&mut self, pid: ParticipantId, now: Instant) {
        if let Some(p) = self.participants.get_mut(&pid) {
            p.last_activity = now;
        }
    }

    /// The subscriber's egress bandwidth estimate (TWCC) changed.
    pub fn handle_bandwidth(&mut self, subscriber: ParticipantId, bps: u64, now: Instant) {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        p.estimate_bps = p.receive_cap_bps.map_or(bps, |cap| bps.min(cap));
        self.allocate(subscriber, now);
    }

    /// The subscriber announced the most it wants to receive (bits/s; `None`: no cap), e.g.
    /// with `b=AS` in its join offer. Layers are chosen for it from then on, before any
    /// estimate, and estimates above it are capped.
    pub fn set_receive_cap(
        &mut self,
        subscriber: ParticipantId,
        cap_bps: Option<u64>,
        now: Instant,
    ) {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        p.receive_cap_bps = cap_bps;
        if let Some(cap) = cap_bps {
            p.estimate_bps = p.estimate_bps.min(cap);
        }
        self.allocate(subscriber, now);
    }

    /// The subscriber wants at most `height` pixels on `out_mid` (0 pauses the slot).
    pub fn set_max_height(
        &mut self,
        subscriber: ParticipantId,
        out_mid: Mid,
        height: u32,
        now: Instant,
    ) {
        let Some(track) = self.slot_track(subscriber, out_mid) else {
            return;
        };
        let Some(slot) = self
            .tracks
            .get_mut(&track)
            .and_then(|t| t.slots.iter_mut().find(|s| s.subscriber == subscriber))
        else {
            return;
        };
        slot.max_height = height;
        self.allocate(subscriber, now);
    }

    /// The subscriber asked for a keyframe (PLI/FIR) on `out_mid`.
    pub fn handle_keyframe_request(
        &mut self,
        subscriber: ParticipantId,
        out_mid: Mid,
        now: Instant,
    ) {
        let Some(track_id) = self.slot_track(subscriber, out_mid) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let Some(layer) = track
            .slots
            .iter()
            .find(|s| s.subscriber == subscriber)
            .and_then(|s| s.target.or(s.current))
        else {
            return;
        };
        let mut sink = Sink {
            outputs: &mut self.outputs,
            stats: &mut self.stats,
            config: &self.config,
        };
        track.request_keyframe(layer, now, &mut sink);
    }

    /// The publisher paused or resumed a layer (str0m `Event::StreamPaused`); `layer` is
    /// `None` for a track without simulcast.
    pub fn layer_paused(
        &mut self,
        publisher: ParticipantId,
        mid: Mid,
        layer: Option<Layer>,
        paused: bool,
        now: Instant,
    ) {
        let Some(track) = self.tracks.get_mut(&TrackId { publisher, mid }) else {
            return;
        };
        let layer = if track.simulcast {
            let Some(l) = layer else { return };
            l
        } else {
            Layer::High
        };
        let state = &mut track.layers[layer.index()];
        if state.paused == paused {
            return;
        }
        state.paused = paused;
        // A request for a paused layer fails at the publisher; start afresh on resume.
        state.keyframe.keyframe_arrived();
        if paused {
            state.cache.clear();
        }
        tracing::debug!(publisher = %publisher, %mid, ?layer, paused, "layer paused");
        let mut subscribers: Vec<ParticipantId> =
            track.slots.iter().map(|s| s.subscriber).collect();
        subscribers.sort();
        for subscriber in subscribers {
            self.allocate(subscriber, now);
        }
    }

    /// The participant (un)muted `kind`; emits `Event(Muted)` when it changed.
    pub fn set_muted(&mut self, pid: ParticipantId, kind: MediaKind, muted: bool, now: Instant) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        p.last_activity = now;
        let flag = match kind {
            MediaKind::Audio => &mut p.audio_muted,
            MediaKind::Video => &mut p.video_muted,
        };
        if *flag == muted {
            return;
        }
        *flag = muted;
        self.outputs.push_back(Output::Event(RoomEvent::Muted {
            participant: pid,
            kind,
            muted,
        }));
    }

    /// Periodic work: layer bitrates, speaker detection, keyframe retries, idle clean-up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(next) = self.next_tick else {
            return;
        };
        if now < next {
            return;
        }
        let elapsed = self
            .last_tick
            .map_or(self.config.tick, |t| now.saturating_duration_since(t));
        self.last_tick = Some(now);
        self.next_tick = Some(now + self.config.tick);

        self.time_out_idle(now);
        self.detect_speaker(elapsed, now);

        let mut sink = Sink {
            outputs: &mut self.outputs,
            stats: &mut self.stats,
            config: &self.config,
        };
        for track in self.tracks.values_mut() {
            for state in &mut track.layers {
                state.meter.tick(now);
                // A layer that went quiet is not replayed; its keyframe's memory goes too.
                let quiet = state
                    .meter
                    .last_packet()
                    .is_none_or(|t| now.saturating_duration_since(t) >= LAYER_STALE);
                if quiet {
                    state.cache.clear();
                }
            }
            track.retry_keyframes(now, &mut sink);
        }

        let due = self
            .last_reallocate
            .is_none_or(|t| now.saturating_duration_since(t) >= REALLOCATE_EVERY);
        if due {
            self.last_reallocate = Some(now);
            let mut pids = std::mem::take(&mut self.scratch_pids);
            pids.clear();
            pids.extend(self.participants.keys().copied());
            pids.sort();
            for pid in &pids {
                self.allocate(*pid, now);
            }
            self.scratch_pids = pids;
        }
    }

    /// When [`Room::handle_timeout`] wants to run next (`None`: the room is empty).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// The next thing to do; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether `pid` has its audio and its video muted (`None`: not in the room).
    pub fn muted(&self, pid: ParticipantId) -> Option<(bool, bool)> {
        self.participants
            .get(&pid)
            .map(|p| (p.audio_muted, p.video_muted))
    }

    /// Counters since the room was created.
    pub fn stats(&self) -> &RoomStats {
        &self.stats
    }

    /// How many participants are in the room.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Whether `pid` is in the room.
    pub fn contains(&self, pid: ParticipantId) -> bool {
        self.participants.contains_key(&pid)
    }

    /// The participant's join information.
    pub fn participant(&self, pid: ParticipantId) -> Option<&ParticipantInfo> {
        self.participants.get(&pid).map(|p| &p.info)
    }

    /// The participants in the room (arbitrary order).
    pub fn participant_ids(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.participants.keys().copied()
    }

    /// Which track `subscriber` receives on `out_mid`.
    pub fn slot_track(&self, subscriber: ParticipantId, out_mid: Mid) -> Option<TrackId> {
        self.participants
            .get(&subscriber)?
            .slots
            .iter()
            .find(|(m, _)| *m == out_mid)
            .map(|(_, t)| *t)
    }

    /// The layer `subscriber` currently receives on `out_mid`.
    pub fn current_layer(&self, subscriber: ParticipantId, out_mid: Mid) -> Option<Layer> {
        self.slot(subscriber, out_mid)?.current
    }

    /// The layer `subscriber` should receive on `out_mid` (it switches on that layer's next
    /// keyframe).
    pub fn target_layer(&self, subscriber: ParticipantId, out_mid: Mid) -> Option<Layer> {
        self.slot(subscriber, out_mid)?.target
    }

    /// The current active speaker.
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        self.speaker.current()
    }

    /// Payload bytes held by a publisher layer's keyframe cache.
    pub fn cached_keyframe_bytes(&self, track: TrackId, layer: Layer) -> usize {
        self.tracks
            .get(&track)
            .map_or(0, |t| t.layers[layer.index()].cache.bytes())
    }

    /// The bitrate measured for a publisher layer (`None` until a full window was seen).
    pub fn layer_bitrate(&self, track: TrackId, layer: Layer) -> Option<u64> {
        self.tracks.get(&track)?.layers[layer.index()].meter.bps()
    }

    /// What `subscriber` would receive with unlimited bandwidth: per video slot the rate of
    /// the largest active layer its size cap allows, plus the audio reserve per audio slot.
    /// A good `desired` for str0m's `Bwe::set_bitrate`, so probing looks for room to go up.
    pub fn desired_bps(&self, subscriber: ParticipantId, now: Instant) -> u64 {
        let Some(p) = self.participants.get(&subscriber) else {
            return 0;
        };
        let mut total = 0u64;
        for (_, track_id) in &p.slots {
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            if track.kind.is_audio() {
                total += self.config.audio_reserve_bps;
                continue;
            }
            let Some(slot) = track.slots.iter().find(|s| s.subscriber == subscriber) else {
                continue;
            };
            let Some(cap) = Layer::cap_for_height(slot.max_height) else {
                continue;
            };
            let top = Layer::ALL
                .into_iter()
                .rfind(|l| *l <= cap && track.layer_active(*l, now))
                .or_else(|| Layer::ALL.into_iter().find(|l| track.layer_active(*l, now)));
            if let Some(layer) = top {
                total += track.layer_bps(layer, &self.config);
            }
        }
        total
    }

    fn slot(&self, subscriber: ParticipantId, out_mid: Mid) -> Option<&Slot> {
        let track = self.slot_track(subscriber, out_mid)?;
        self.tracks
            .get(&track)?
            .slots
            .iter()
            .find(|s| s.subscriber == subscriber)
    }

    /// Removes a track and tells its subscribers (ready or pending).
    fn remove_track(&mut self, id: TrackId, _now: Instant) -> bool {
        let Some(track) = self.tracks.remove(&id) else {
            return false;
        };
        for slot in &track.slots {
            if let Some(p) = self.participants.get_mut(&slot.subscriber) {
                p.slots.retain(|(m, _)| *m != slot.out_mid);
            }
            self.outputs.push_back(Output::DropSlot {
                subscriber: slot.subscriber,
                track: id,
                out_mid: Some(slot.out_mid),
            });
        }
        let mut pending: Vec<ParticipantId> = Vec::new();
        for (pid, p) in self.participants.iter_mut() {
            let before = p.pending.len();
            p.pending.retain(|t| *t != id);
            if p.pending.len() != before {
                pending.push(*pid);
            }
        }
        pending.sort();
        for subscriber in pending {
            self.outputs.push_back(Output::DropSlot {
                subscriber,
                track: id,
                out_mid: None,
            });
        }
        true
    }

    /// Removes participants that sent nothing for `participant_timeout`.
    fn time_out_idle(&mut self, now: Instant) {
        let timeout = self.config.participant_timeout;
        let mut idle = std::mem::take(&mut self.scratch_pids);
        idle.clear();
        for (pid, p) in &self.participants {
            let mut last = p.last_activity;
            for mid in &p.published {
                let rx = self
                    .tracks
                    .get(&TrackId {
                        publisher: *pid,
                        mid: *mid,
                    })
                    .and_then(|t| t.last_rx);
                if let Some(rx) = rx {
                    last = last.max(rx);
                }
            }
            if now.saturating_duration_since(last) >= timeout {
                idle.push(*pid);
            }
        }
        idle.sort();
        for pid in &idle {
            tracing::info!(participant = %pid, "participant timed out");
            self.stats.timed_out += 1;
            self.leave(*pid, now);
            self.outputs.push_back(Output::ParticipantTimedOut(*pid));
        }
        self.scratch_pids = idle;
    }

    fn detect_speaker(&mut self, elapsed: Duration, now: Instant) {
        let window = self.config.speaker.window;
        let mut loudness = std::mem::take(&mut self.scratch_loudness);
        loudness.clear();
        for track in self.tracks.values_mut() {
            if track.kind.is_audio() {
                let muted = self
                    .participants
                    .get(&track.id.publisher)
                    .is_some_and(|p| p.audio_muted);
                let value = track.level.tick(elapsed, window);
                loudness.push((track.id.publisher, if muted { 0.0 } else { value }));
            }
        }
        if let Some(pid) = self
            .speaker
            .update(loudness.iter().copied(), &self.config.speaker, now)
        {
            tracing::debug!(participant = %pid, "active speaker");
            self.outputs
                .push_back(Output::Event(RoomEvent::ActiveSpeaker(pid)));
        }
        self.scratch_loudness = loudness;
    }

    /// Re-chooses the layer of each of `subscriber`'s video slots from its estimate, less
    /// the audio reserve. A shared screen is shown large, so screens choose first, from what
    /// is left once every camera could have its smallest layer; the cameras then share what
    /// the screens' layers leave, equally.
    fn allocate(&mut self, subscriber: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get(&subscriber) else {
            return;
        };
        if p.slots.is_empty() {
            return;
        }
        let mut audio = 0u64;
        let mut cameras = 0u64;
        let mut screens = 0u64;
        let mut camera_floor = 0u64;
        for (_, track_id) in &p.slots {
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            if track.kind.is_audio() {
                audio += 1;
            } else if track
                .slots
                .iter()
                .any(|s| s.subscriber == subscriber && s.max_height > 0)
            {
                if track.source == TrackSource::Screen {
                    screens += 1;
                } else {
                    cameras += 1;
                    camera_floor += track.floor_bps(now, &self.config);
                }
            }
        }
        let video_budget = p
            .estimate_bps
            .saturating_sub(audio * self.config.audio_reserve_bps);
        let mut sink = Sink {
            outputs: &mut self.outputs,
            stats: &mut self.stats,
            config: &self.config,
        };
        let mut screens_take = 0u64;
        if let Some(screen_budget) = video_budget
            .saturating_sub(camera_floor)
            .checked_div(screens)
        {
            for (_, track_id) in &p.slots {
                let Some(track) = self.tracks.get_mut(track_id) else {
                    continue;
                };
                if track.kind.is_video() && track.source == TrackSource::Screen {
                    track.allocate_slot(subscriber, screen_budget, now, &mut sink);
                    screens_take += track.target_bps(subscriber, sink.config);
                }
            }
        }
        let camera_budget = video_budget.saturating_sub(screens_take) / cameras.max(1);
        for (_, track_id) in &p.slots {
            let Some(track) = self.tracks.get_mut(track_id) else {
                continue;
            };
            if track.kind.is_video() && track.source != TrackSource::Screen {
                track.allocate_slot(subscriber, camera_budget, now, &mut sink);
            }
        }
    }
}

impl Track {
    /// What the smallest layer that can be sent costs (0 when none can).
    fn floor_bps(&self, now: Instant, config: &RoomConfig) -> u64 {
        Layer::ALL
            .into_iter()
            .find(|l| self.layer_active(*l, now))
            .map_or(0, |l| self.layer_bps(l, config))
    }

    /// What `subscriber`'s slot costs at its target layer (0 when paused).
    fn target_bps(&self, subscriber: ParticipantId, config: &RoomConfig) -> u64 {
        self.slots
            .iter()
            .find(|s| s.subscriber == subscriber)
            .and_then(|s| s.target)
            .map_or(0, |l| self.layer_bps(l, config))
    }

    /// The bitrate assumed for a layer: measured, or the configured default.
    fn layer_bps(&self, layer: Layer, config: &RoomConfig) -> u64 {
        self.layers[layer.index()]
            .meter
            .bps()
            .unwrap_or(config.default_layer_bps[layer.index()])
    }

    /// Whether a layer can be selected: announced, not paused, and not silently gone.
    fn layer_active(&self, layer: Layer, now: Instant) -> bool {
        let state = &self.layers[layer.index()];
        if !state.present || state.paused {
            return false;
        }
        let Some(first) = self.first_rx else {
            return true;
        };
        if now.saturating_duration_since(first) < LAYER_STALE {
            return true;
        }
        state
            .meter
            .last_packet()
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_STALE)
    }

    /// Whether a layer is active and sent something lately: its cached keyframe may be
    /// replayed.
    fn layer_live(&self, layer: Layer, now: Instant) -> bool {
        self.layer_active(layer, now)
            && self.layers[layer.index()]
                .meter
                .last_packet()
                .is_some_and(|t| now.saturating_duration_since(t) < LAYER_STALE)
    }

    /// Picks the target layer of `subscriber`'s slot for `budget` bps, with hysteresis.
    fn allocate_slot(
        &mut self,
        subscriber: ParticipantId,
        budget: u64,
        now: Instant,
        sink: &mut Sink<'_>,
    ) {
        let Some(idx) = self.slots.iter().position(|s| s.subscriber == subscriber) else {
            return;
        };
        let slot = &self.slots[idx];
        let choice = match Layer::cap_for_height(slot.max_height) {
            None => None,
            Some(cap) => self.choose(cap, slot.target, slot.last_down_switch, budget, now, sink),
        };
        let slot = &mut self.slots[idx];
        if choice == slot.target {
            return;
        }
        if let (Some(old), Some(new)) = (slot.target, choice)
            && new < old
        {
            slot.last_down_switch = Some(now);
        }
        tracing::trace!(subscriber = %subscriber, out_mid = %slot.out_mid, from = ?slot.target, to = ?choice, budget, "layer target");
        slot.target = choice;
        match choice {
            // Paused (size 0, or the publisher sends nothing usable): stop at once.
            None => slot.current = None,
            Some(layer) if slot.current != Some(layer) => {
                self.request_keyframe(layer, now, sink);
            }
            Some(_) => {}
        }
    }

    /// The layer to target: the largest active layer up to `cap` whose bitrate fits
    /// `budget` (the smallest active one when none fits). Going up needs headroom and must
    /// wait `up_hold` after a downward switch, so an estimate hovering near a layer's rate
    /// does not flap.
    fn choose(
        &self,
        cap: Layer,
        target: Option<Layer>,
        last_down: Option<Instant>,
        budget: u64,
        now: Instant,
        sink: &Sink<'_>,
    ) -> Option<Layer> {
        let config = sink.config;
        let active = |l: Layer| self.layer_active(l, now);
        let lowest_active = Layer::ALL.into_iter().find(|l| active(*l))?;
        let fits = |l: Layer| self.layer_bps(l, config) <= budget;
        let best = Layer::ALL
            .into_iter()
            .rfind(|l| *l <= cap && active(*l) && fits(*l))
            .unwrap_or_else(|| {
                // Nothing fits: the smallest we can send (below the cap if possible).
                Layer::ALL
                    .into_iter()
                    .find(|l| *l <= cap && active(*l))
                    .unwrap_or(lowest_active)
            });
        let Some(current) = target.filter(|t| *t <= cap && active(*t)) else {
            return Some(best);
        };
        if best <= current {
            return Some(best);
        }
        let held = last_down.is_some_and(|t| now.saturating_duration_since(t) < config.up_hold);
        if held {
            return Some(current);
        }
        let up = Layer::ALL.into_iter().rfind(|l| {
            *l > current
                && *l <= best
                && active(*l)
                && (self.layer_bps(*l, config) as f64) * config.up_headroom <= budget as f64
        });
        Some(up.unwrap_or(current))
    }

    /// Asks the publisher for a keyframe of `layer`, unless one was asked recently.
    fn request_keyframe(&mut self, layer: Layer, now: Instant, sink: &mut Sink<'_>) {
        if !self.try_request_keyframe(layer, now, sink) && self.layer_active(layer, now) {
            sink.stats.keyframe_requests_coalesced += 1;
        }
    }

    /// Re-asks for keyframes that slots still wait for once the previous request's window
    /// has passed (a PLI can be lost, or the publisher ignored it).
    fn retry_keyframes(&mut self, now: Instant, sink: &mut Sink<'_>) {
        if self.kind.is_audio() {
            return;
        }
        let mut wanted = [false; 3];
        for slot in &self.slots {
            if let Some(target) = slot.target
                && slot.current != Some(target)
            {
                wanted[target.index()] = true;
            }
        }
        for layer in Layer::ALL {
            if wanted[layer.index()] {
                self.try_request_keyframe(layer, now, sink);
            }
        }
    }

    /// Emits a keyframe request for an active layer unless one is outstanding; returns
    /// whether it did.
    fn try_request_keyframe(&mut self, layer: Layer, now: Instant, sink: &mut Sink<'_>) -> bool {
        // Asking for a layer the publisher does not send fails in str0m (NoReceiverSource).
        if !self.layer_active(layer, now) {
            return false;
        }
        let state = &mut self.layers[layer.index()];
        if !state
            .keyframe
            .should_request(now, sink.config.keyframe_request_window)
        {
            return false;
        }
        sink.stats.keyframe_requests += 1;
        sink.outputs.push_back(Output::RequestKeyframe {
            publisher: self.id.publisher,
            mid: self.id.mid,
            layer: self.simulcast.then_some(layer),
            rid: state.rid,
        });
        true
    }
}
