//! What the switchboard does with a session's events and the room's decisions: forwarding RTP
//! to subscribers, renegotiating subscribers' m-lines over the data channel, keyframe
//! requests toward publishers, bandwidth estimates into the room, room events out as JSON.

use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Event, IceConnectionState};

use super::outbox::About;
use super::peer::Published;
use super::{RemoveReason, Switchboard};
use crate::core::{
    Forward, Output, ParticipantId, PublishedTrack, Room, RoomEvent, RtpMeta, TrackId, Vp8Meta,
    layer_for_rid,
};
use crate::protocol::{ClientMessage, ParticipantSummary, ServerMessage};

/// Whether an RTP payload starts a keyframe, per codec. Conservative: unknown → false.
pub fn is_keyframe(codec: Codec, payload: &[u8], vp8: Option<&Vp8Descriptor>) -> bool {
    match codec {
        Codec::Vp8 => vp8.is_some_and(|d| d.starts_keyframe(payload)),
        Codec::H264 => h264_keyframe(payload),
        // VP9 descriptor: P (inter-picture predicted) clear and B (start of frame) set.
        Codec::Vp9 => payload
            .first()
            .is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0),
        // AV1 aggregation header: N (new coded video sequence).
        Codec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        _ => false,
    }
}

fn h264_keyframe(payload: &[u8]) -> bool {
    let Some(first) = payload.first() else {
        return false;
    };
    match first & 0x1F {
        // IDR slice or SPS.
        5 | 7 => true,
        // STAP-A: walk the aggregated NAL units.
        24 => {
            let mut at = 1;
            while at + 2 < payload.len() {
                let len = usize::from(u16::from_be_bytes([payload[at], payload[at + 1]]));
                if matches!(payload[at + 2] & 0x1F, 5 | 7) {
                    return true;
                }
                at += 2 + len;
            }
            false
        }
        // FU-A: the start fragment of an IDR.
        28 => payload
            .get(1)
            .is_some_and(|h| h & 0x80 != 0 && h & 0x1F == 5),
        _ => false,
    }
}

impl Switchboard {
    pub(super) fn handle_event(&mut self, pid: ParticipantId, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(packet) => self.forward(pid, packet, now),
            Event::Connected => {
                if let Some(peer) = self.peers.get_mut(&pid) {
                    peer.connected = true;
                }
                self.ready_assigned(pid, now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.remove_peer(pid, RemoveReason::IceDisconnected, now);
            }
            Event::MediaAdded(added) => {
                if !matches!(added.direction, Direction::RecvOnly | Direction::SendRecv) {
                    return;
                }
                let rids = added
                    .simulcast
                    .map(|s| if s.recv.is_empty() { s.send } else { s.recv })
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| l.rid)
                    .collect::<Vec<_>>();
                let Some(peer) = self.peers.get_mut(&pid) else {
                    return;
                };
                // The screen's m-line waits for the client to share.
                let screen = peer.screen_mid == Some(added.mid);
                peer.published.insert(
                    added.mid,
                    Published {
                        kind: added.kind,
                        rids,
                        in_room: false,
                    },
                );
                if !screen {
                    self.publish(pid, added.mid, now);
                }
            }
            Event::ChannelOpen(id, label) => {
                tracing::debug!(participant = %pid, %label, "data channel open");
                let Some(room) = self.peers.get(&pid).map(|p| p.room.clone()) else {
                    return;
                };
                let participants = self.roster_for(&room, pid);
                let welcome = ServerMessage::Welcome {
                    participant_id: pid,
                    participants,
                };
                if let Some(peer) = self.peers.get_mut(&pid) {
                    peer.channel_opened(id, &welcome);
                    peer.negotiate_if_needed();
                }
            }
            Event::ChannelData(data) => {
                if let Some(entry) = self
                    .peers
                    .get(&pid)
                    .and_then(|p| self.rooms.get_mut(&p.room))
                {
                    entry.room.handle_activity(pid, now);
                }
                if data.binary {
                    return;
                }
                match serde_json::from_slice::<ClientMessage>(&data.data) {
                    Ok(message) => self.handle_message(pid, message, now),
                    Err(e) => tracing::debug!(participant = %pid, %e, "bad data channel message"),
                }
            }
            Event::KeyframeRequest(request) => {
                self.with_room(pid, now, |room, now| {
                    room.handle_keyframe_request(pid, request.mid, now);
                });
            }
            Event::EgressBitrateEstimate(estimate) => {
                let Some(peer) = self.peers.get_mut(&pid) else {
                    return;
                };
                match estimate {
                    BweKind::Twcc { estimate, .. } => peer.twcc_bps = Some(estimate.as_u64()),
                    BweKind::Remb { estimate, .. } => peer.remb_bps = Some(estimate.as_u64()),
                    _ => return,
                }
                let Some(bps) = peer.bandwidth() else {
                    return;
                };
                let delta = bps as i64 - peer.egress_bps as i64;
                peer.egress_bps = bps;
                self.load.add_egress(delta);
                self.with_room(pid, now, |room, now| room.handle_bandwidth(pid, bps, now));
            }
            Event::StreamPaused(paused) => {
                let Some(peer) = self.peers.get(&pid) else {
                    return;
                };
                let layer = match (&paused.rid, peer.published.get(&paused.mid)) {
                    (Some(rid), Some(p)) => layer_for_rid(&p.rids, rid),
                    _ => None,
                };
                self.with_room(pid, now, |room, now| {
                    room.layer_paused(pid, paused.mid, layer, paused.paused, now);
                });
            }
            Event::MediaEgressStats(stats) => {
                let Some(peer) = self.peers.get_mut(&pid) else {
                    return;
                };
                let seen = peer.nacks_seen.entry(stats.mid).or_default();
                self.counters.nacks += stats.nacks.saturating_sub(*seen);
                *seen = stats.nacks.max(*seen);
                self.handle_egress_stats(pid, &stats);
            }
            Event::MediaIngressStats(stats) => self.handle_ingress_stats(pid, &stats),
            Event::PeerStats(stats) => self.handle_peer_stats(pid, &stats, now),
            _ => {}
        }
    }

    /// Puts `pid`'s m-line `mid` into its room as a track; returns whether it is there now.
    fn publish(&mut self, pid: ParticipantId, mid: Mid, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return false;
        };
        let Some(kind) = peer.published.get(&mid).map(|p| p.kind) else {
            return false;
        };
        let source = peer.source_of(mid, kind);
        let Some(published) = peer.published.get_mut(&mid) else {
            return false;
        };
        let track = PublishedTrack {
            mid,
            kind,
            source,
            rids: published.rids.clone(),
        };
        let room = peer.room.clone();
        if let Some(entry) = self.rooms.get_mut(&room) {
            match entry.room.publish_track(pid, track, now) {
                Ok(_) => published.in_room = true,
                Err(e) => tracing::debug!(participant = %pid, %e, "track not published"),
            }
        }
        let in_room = published.in_room;
        self.drain_room(&room, now);
        in_room
    }

    /// The client starts or stops sharing its screen on `mid`: only its reserved screen
    /// m-line counts, and only a change of state does anything.
    fn share_screen(&mut self, pid: ParticipantId, mid: &str, sharing: bool, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let mid = Mid::from(mid);
        let Some(in_room) = (peer.screen_mid == Some(mid))
            .then(|| peer.published.get(&mid).map(|p| p.in_room))
            .flatten()
        else {
            tracing::debug!(participant = %pid, %mid, "screen message for an m-line that is not the screen's");
            return;
        };
        if in_room == sharing {
            return;
        }
        if sharing {
            let shared = self.publish(pid, mid, now);
            tracing::debug!(participant = %pid, %mid, shared, "screen sharing started");
            return;
        }
        if let Some(published) = peer.published.get_mut(&mid) {
            published.in_room = false;
        }
        tracing::debug!(participant = %pid, %mid, "screen sharing stopped");
        self.with_room(pid, now, |room, now| {
            room.unpublish_track(
                TrackId {
                    publisher: pid,
                    mid,
                },
                now,
            );
        });
    }

    /// Runs `f` on the participant's room, then acts on what the room decided.
    fn with_room(&mut self, pid: ParticipantId, now: Instant, f: impl FnOnce(&mut Room, Instant)) {
        let Some(room) = self.peers.get(&pid).map(|p| p.room.clone()) else {
            return;
        };
        if let Some(entry) = self.rooms.get_mut(&room) {
            f(&mut entry.room, now);
        }
        self.drain_room(&room, now);
    }

    fn handle_message(&mut self, pid: ParticipantId, message: ClientMessage, now: Instant) {
        match message {
            ClientMessage::Answer { sdp } => self.handle_answer(pid, &sdp, now),
            ClientMessage::Mute { kind, muted } => {
                let kind = MediaKind::from(kind);
                self.with_room(pid, now, |room, now| room.set_muted(pid, kind, muted, now));
            }
            ClientMessage::MaxHeight { mid, height } => {
                let mid = Mid::from(mid.as_str());
                self.with_room(pid, now, |room, now| {
                    room.set_max_height(pid, mid, height, now);
                });
            }
            ClientMessage::Screen { mid, sharing } => self.share_screen(pid, &mid, sharing, now),
            ClientMessage::Chat { text } => self.handle_chat(pid, text, now),
            ClientMessage::RaiseHand => self.handle_hand(pid, true),
            ClientMessage::LowerHand => self.handle_hand(pid, false),
            // A newer client's message (or `Unknown`): ignored.
            _ => {}
        }
    }

    fn handle_answer(&mut self, pid: ParticipantId, sdp: &str, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let ready = match peer.accept_answer(sdp) {
            Ok(ready) => ready,
            Err(e) => {
                tracing::info!(participant = %pid, %e, "the client's answer was refused");
                Vec::new()
            }
        };
        let room = peer.room.clone();
        let stale = self.slots_ready(&room, pid, ready, now);
        // Probe toward what the room would send at best, never past the announced cap: a
        // probe past a thin link's rate only fills its queue in front of the first frames.
        let desired = self
            .rooms
            .get(&room)
            .map_or(0, |e| e.room.desired_bps(pid, now));
        if let Some(peer) = self.peers.get_mut(&pid) {
            if !stale.is_empty() {
                peer.stop_slots(&stale);
            }
            let desired = crate::session::desired_bitrate(desired, peer.receive_cap_bps);
            peer.rtc
                .bwe()
                .set_bitrate(crate::session::MIN_BITRATE.min(desired), desired);
        }
        self.drain_room(&room, now);
        self.mark_dirty(pid);
    }

    /// The slots a connected participant has on the join offer's spare m-lines go to the
    /// room now: no renegotiation, and the keyframe request leaves at once.
    fn ready_assigned(&mut self, pid: ParticipantId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let ready = peer.take_assigned();
        if ready.is_empty() {
            return;
        }
        let room = peer.room.clone();
        let stale = self.slots_ready(&room, pid, ready, now);
        if !stale.is_empty()
            && let Some(peer) = self.peers.get_mut(&pid)
        {
            peer.stop_slots(&stale);
        }
        self.drain_room(&room, now);
        self.mark_dirty(pid);
    }

    /// Tells the room that `pid`'s slots in `ready` can carry media; returns the m-lines of
    /// those it no longer wants (to be stopped).
    fn slots_ready(
        &mut self,
        room: &str,
        pid: ParticipantId,
        ready: Vec<(TrackId, Mid)>,
        now: Instant,
    ) -> Vec<Mid> {
        let mut stale = Vec::new();
        if let Some(entry) = self.rooms.get_mut(room) {
            for (track, mid) in ready {
                if let Err(e) = entry.room.slot_ready(pid, track, mid, now) {
                    tracing::debug!(participant = %pid, %e, "slot no longer wanted");
                    stale.push(mid);
                }
            }
        }
        stale
    }

    /// Acts on everything the room decided, until it is quiet.
    pub(super) fn drain_room(&mut self, name: &str, now: Instant) {
        let mut timed_out = Vec::new();
        let mut assigned = Vec::new();
        loop {
            let Some(entry) = self.rooms.get_mut(name) else {
                return;
            };
            let Some(output) = entry.room.poll_output() else {
                let stats = *entry.room.stats();
                self.counters.layer_switches +=
                    stats.layer_switches - entry.counted_switches.min(stats.layer_switches);
                self.counters.keyframe_requests +=
                    stats.keyframe_requests - entry.counted_keyframes.min(stats.keyframe_requests);
                entry.counted_switches = stats.layer_switches;
                entry.counted_keyframes = stats.keyframe_requests;
                break;
            };
            match output {
                Output::NeedSlot {
                    subscriber,
                    track,
                    kind,
                    source,
                } => {
                    if let Some(peer) = self.peers.get_mut(&subscriber) {
                        peer.want_slot(track, kind, source);
                        if peer.connected {
                            assigned.push(subscriber);
                        }
                    }
                    self.mark_dirty(subscriber);
                }
                Output::DropSlot {
                    subscriber, track, ..
                } => {
                    if let Some(peer) = self.peers.get_mut(&subscriber) {
                        peer.drop_slot(track);
                    }
                    self.mark_dirty(subscriber);
                }
                Output::RequestKeyframe {
                    publisher,
                    mid,
                    rid,
                    ..
                } => {
                    if let Some(peer) = self.peers.get_mut(&publisher) {
                        let mut api = peer.rtc.direct_api();
                        match api.stream_rx_by_mid(mid, rid) {
                            Some(stream) => stream.request_keyframe(KeyframeRequestKind::Pli),
                            None => tracing::debug!(%mid, ?rid, "no stream to ask for a keyframe"),
                        }
                    }
                    self.mark_dirty(publisher);
                }
                Output::ReplayKeyframe { publisher, packets } => {
                    self.replay_keyframe(publisher, packets, now);
                }
                Output::Event(event) => self.send_room_event(name, event),
                Output::ParticipantTimedOut(pid) => timed_out.push(pid),
            }
        }
        for pid in timed_out {
            self.remove_peer(pid, RemoveReason::Timeout, now);
        }
        for pid in assigned {
            self.ready_assigned(pid, now);
        }
    }

    fn send_room_event(&mut self, room: &str, event: RoomEvent) {
        let (message, only) = match event {
            // The account id stays on the server: others see the participant id and name.
            RoomEvent::Joined {
                participant, name, ..
            } => (
                ServerMessage::Joined {
                    participant: ParticipantSummary::new(participant, name),
                },
                None,
            ),
            RoomEvent::Left(participant) => (
                ServerMessage::Left {
                    participant_id: participant,
                },
                None,
            ),
            RoomEvent::Muted {
                participant,
                kind,
                muted,
            } => (
                ServerMessage::Muted {
                    participant_id: participant,
                    kind: kind.into(),
                    muted,
                },
                None,
            ),
            RoomEvent::ActiveSpeaker(participant) => (
                ServerMessage::Speaker {
                    participant_id: participant,
                },
                None,
            ),
            RoomEvent::LayerChanged {
                subscriber,
                out_mid,
                layer,
            } => (
                ServerMessage::Layer {
                    mid: out_mid.to_string(),
                    layer: layer.into(),
                },
                Some(subscriber),
            ),
        };
        match only {
            Some(pid) => {
                if let Some(peer) = self.peers.get_mut(&pid) {
                    peer.send_encoded(About::of(&message), message.to_json());
                }
                self.mark_dirty(pid);
            }
            None => self.broadcast(room, &message),
        }
    }

    /// The hot path: one incoming RTP packet to every subscriber the room picks.
    fn forward(&mut self, pid: ParticipantId, packet: RtpPacket, now: Instant) {
        // Padding-only packets (bandwidth probes) carry nothing to forward.
        if packet.payload.is_empty() {
            return;
        }
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let Some((mid, rid)) = peer
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        // A screen m-line the client does not share now: nobody receives it.
        let Some(published) = peer.published.get(&mid).filter(|p| p.in_room) else {
            return;
        };
        let kind = published.kind;
        let layer = rid.and_then(|r| layer_for_rid(&published.rids, &r));
        let pt = packet.header.payload_type;
        let Some(params) = peer.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
            return;
        };
        let codec = params.spec().codec;
        let vp8 = if codec == Codec::Vp8 {
            Vp8Descriptor::parse(&packet.payload).ok()
        } else {
            None
        };
        let ext = &packet.header.ext_vals;
        let meta = RtpMeta {
            seq: *packet.seq_no,
            ts: packet.header.timestamp,
            marker: packet.header.marker,
            keyframe: is_keyframe(codec, &packet.payload, vp8.as_ref()),
            audio_level: ext.audio_level.map(|l| l.unsigned_abs().min(127)),
            vp8: vp8.map(|d| Vp8Meta {
                picture_id: d.picture_id(),
                tl0_pic_idx: d.tl0_pic_idx(),
            }),
            payload_len: packet.payload.len(),
            payload_type: *pt,
        };
        self.counters.packets_in += 1;
        self.counters.bytes_in += packet.payload.len() as u64;
        let Some(entry) = self.rooms.get_mut(&peer.room) else {
            return;
        };
        let mut forwards = std::mem::take(&mut self.forwards);
        forwards.clear();
        entry
            .room
            .handle_rtp(pid, mid, layer, &meta, &packet.payload, now, &mut |f| {
                forwards.push(f)
            });
        let mut ext_out = ExtensionValues::default();
        if kind == MediaKind::Audio {
            ext_out.audio_level = ext.audio_level;
            ext_out.voice_activity = ext.voice_activity;
        }
        for f in &forwards {
            self.write_forward(f, &packet, &params, kind, vp8.as_ref(), &ext_out);
        }
        self.forwards = forwards;
    }

    fn write_forward(
        &mut self,
        f: &Forward,
        packet: &RtpPacket,
        params: &PayloadParams,
        kind: MediaKind,
        vp8: Option<&Vp8Descriptor>,
        ext: &ExtensionValues,
    ) {
        let Some(sub) = self.peers.get_mut(&f.subscriber) else {
            return;
        };
        let out_pt = sub.out_pt(f.out_mid, params);
        let Some(out_pt) = out_pt else {
            return;
        };
        let mut write = RtpWrite::new(
            out_pt,
            f.seq.into(),
            f.ts,
            packet.timestamp,
            packet.payload.clone(),
        )
        .marker(f.marker)
        .nackable(kind == MediaKind::Video)
        .ext_vals(ext.clone());
        if let (Some(meta), Some(descriptor)) = (f.vp8, vp8) {
            write = with_vp8_patch(write, meta, descriptor);
        }
        let mut api = sub.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(f.out_mid, None) else {
            return;
        };
        stream.write_rtp(write);
        self.counters.packets_out += 1;
        self.counters.bytes_out += packet.payload.len() as u64;
        // `mark_dirty` without looking the subscriber up a second time (per packet written).
        if !sub.dirty {
            sub.dirty = true;
            self.dirty.push(f.subscriber);
        }
    }
}

/// `write` with its VP8 descriptor's picture id and TL0PICIDX renumbered to `meta` (fields
/// the descriptor does not carry stay absent).
pub(super) fn with_vp8_patch(
    write: RtpWrite,
    meta: Vp8Meta,
    descriptor: &Vp8Descriptor,
) -> RtpWrite {
    let mut patch = descriptor.patch();
    if let Some(id) = meta.picture_id
        && descriptor.picture_id().is_some()
    {
        patch = patch.picture_id(id);
    }
    if let Some(tl0) = meta.tl0_pic_idx
        && descriptor.tl0_pic_idx().is_some()
    {
        patch = patch.tl0_pic_idx(tl0);
    }
    match patch.build() {
        Ok(patch) => write.vp8_patch(patch),
        Err(_) => write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_keyframes_are_recognised_in_single_stap_a_and_fu_a() {
        assert!(h264_keyframe(&[0x65, 1, 2]));
        assert!(h264_keyframe(&[0x67, 1, 2]));
        assert!(!h264_keyframe(&[0x41, 1, 2]));
        // STAP-A carrying an SPS.
        assert!(h264_keyframe(&[
            0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68
        ]));
        // FU-A: start of an IDR, then a middle fragment.
        assert!(h264_keyframe(&[0x7C, 0x85, 0]));
        assert!(!h264_keyframe(&[0x7C, 0x05, 0]));
        // Truncated input never panics.
        for cut in [&[][..], &[0x78], &[0x78, 0xFF, 0xFF], &[0x7C]] {
            assert!(!h264_keyframe(cut));
        }
    }

    #[test]
    fn vp8_keyframes_come_from_the_descriptor_and_frame_tag() {
        // X, S; I with a 15-bit picture id; then the frame tag (bit 0 clear: keyframe).
        let key = [0x90, 0x80, 0x81, 0x02, 0x10, 0x02, 0x00];
        let delta = [0x90, 0x80, 0x81, 0x02, 0x11, 0x02, 0x00];
        let parse = |p: &[u8]| Vp8Descriptor::parse(p).ok();
        assert!(is_keyframe(Codec::Vp8, &key, parse(&key).as_ref()));
        assert!(!is_keyframe(Codec::Vp8, &delta, parse(&delta).as_ref()));
        assert!(!is_keyframe(Codec::Vp8, &[0x90], parse(&[0x90]).as_ref()));
        assert!(!is_keyframe(Codec::Opus, &key, None));
    }
}
