//! What the worker does with a session's events and the room's decisions: forwarding RTP
//! to subscribers, renegotiating subscribers' m-lines over the data channel, keyframe
//! requests toward publishers, bandwidth estimates into the room, room events out as JSON.

use std::time::Instant;

use serde_json::json;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpAnswer;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Event, IceConnectionState};

use super::Worker;
use super::peer::{Published, Slot, SlotState};
use crate::core::{
    Forward, Output, ParticipantId, PublishedTrack, RoomEvent, RtpMeta, Vp8Meta, layer_for_rid,
};

/// What the client may send on the `surge` data channel.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Answer {
        sdp: String,
    },
    Mute {
        kind: String,
        muted: bool,
    },
    MaxHeight {
        mid: String,
        height: u32,
    },
    #[serde(other)]
    Unknown,
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// Whether an RTP payload starts a keyframe, per codec. Conservative: unknown → false.
pub(crate) fn is_keyframe(codec: Codec, payload: &[u8], vp8: Option<&Vp8Descriptor>) -> bool {
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

impl Worker {
    pub(super) fn handle_event(&mut self, pid: ParticipantId, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(packet) => self.forward(pid, packet, now),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.remove_peer(pid, "ice_disconnected", now);
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
                peer.published.insert(
                    added.mid,
                    Published {
                        kind: added.kind,
                        rids: rids.clone(),
                    },
                );
                let room = peer.room.clone();
                if let Some(entry) = self.rooms.get_mut(&room) {
                    let track = PublishedTrack {
                        mid: added.mid,
                        kind: added.kind,
                        rids,
                    };
                    if let Err(e) = entry.room.publish_track(pid, track, now) {
                        tracing::debug!(participant = %pid, %e, "track not published");
                    }
                }
                self.drain_room(&room, now);
            }
            Event::ChannelOpen(id, label) => {
                tracing::debug!(participant = %pid, %label, "data channel open");
                let Some(peer) = self.peers.get_mut(&pid) else {
                    return;
                };
                peer.channel = Some(id);
                let room = peer.room.clone();
                let others: Vec<serde_json::Value> = self
                    .rooms
                    .get(&room)
                    .map(|e| {
                        e.members
                            .iter()
                            .filter(|p| **p != pid)
                            .filter_map(|p| {
                                self.peers.get(p).map(|o| {
                                    json!({"id": p.to_string(), "user": o.user, "name": o.name})
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let welcome = json!({
                    "type": "welcome",
                    "participant_id": pid.to_string(),
                    "participants": others,
                })
                .to_string();
                if let Some(peer) = self.peers.get_mut(&pid) {
                    // The welcome goes first, then whatever queued before the channel opened.
                    peer.outbox.insert(0, welcome);
                    peer.flush_outbox();
                }
                self.negotiate_if_needed(pid, now);
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
                self.shared.add_egress(delta);
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
            }
            _ => {}
        }
    }

    /// Runs `f` on the participant's room, then acts on what the room decided.
    fn with_room(
        &mut self,
        pid: ParticipantId,
        now: Instant,
        f: impl FnOnce(&mut crate::core::Room, Instant),
    ) {
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
                let kind = match kind.as_str() {
                    "audio" => MediaKind::Audio,
                    "video" => MediaKind::Video,
                    _ => return,
                };
                self.with_room(pid, now, |room, now| room.set_muted(pid, kind, muted, now));
            }
            ClientMessage::MaxHeight { mid, height } => {
                let mid = Mid::from(mid.as_str());
                self.with_room(pid, now, |room, now| {
                    room.set_max_height(pid, mid, height, now);
                });
            }
            ClientMessage::Unknown => {}
        }
    }

    fn handle_answer(&mut self, pid: ParticipantId, sdp: &str, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let Some(pending) = peer.pending.take() else {
            tracing::debug!(participant = %pid, "answer without a pending offer");
            return;
        };
        let accepted = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| e.to_string())
            .and_then(|answer| {
                peer.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| e.to_string())
            });
        let mut ready = Vec::new();
        match accepted {
            Ok(()) => {
                for slot in &mut peer.slots {
                    match slot.state {
                        SlotState::Negotiating(mid) if slot.cancelled => {
                            slot.state = SlotState::ToRemove(mid);
                        }
                        SlotState::Negotiating(mid) => {
                            slot.state = SlotState::Ready(mid);
                            ready.push((slot.track, mid));
                        }
                        _ => {}
                    }
                }
                peer.slots
                    .retain(|s| !matches!(s.state, SlotState::Removing(_)));
            }
            Err(e) => {
                tracing::info!(participant = %pid, %e, "the client's answer was refused");
                // Offer the same changes again.
                for slot in &mut peer.slots {
                    match slot.state {
                        SlotState::Negotiating(_) => slot.state = SlotState::ToAdd,
                        SlotState::Removing(mid) => slot.state = SlotState::ToRemove(mid),
                        _ => {}
                    }
                }
            }
        }
        // Probe toward what the subscribed tracks could use at their best.
        let videos = peer
            .slots
            .iter()
            .filter(|s| s.kind == MediaKind::Video)
            .count() as u64;
        let audios = peer.slots.len() as u64 - videos;
        let desired = (videos * 2_000 + audios * 60).max(300);
        peer.rtc
            .bwe()
            .set_bitrate(crate::session::MIN_BITRATE, Bitrate::kbps(desired));
        let tracks: Vec<serde_json::Value> = peer
            .slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Ready(mid) => Some(json!({
                    "mid": mid.to_string(),
                    "participant_id": s.track.publisher.to_string(),
                    "kind": kind_name(s.kind),
                })),
                _ => None,
            })
            .collect();
        peer.send_json(json!({"type": "tracks", "tracks": tracks}).to_string());
        let room = peer.room.clone();
        let mut stale = Vec::new();
        if let Some(entry) = self.rooms.get_mut(&room) {
            for (track, mid) in ready {
                if let Err(e) = entry.room.slot_ready(pid, track, mid, now) {
                    tracing::debug!(participant = %pid, %e, "slot no longer wanted");
                    stale.push(mid);
                }
            }
        }
        if let Some(peer) = self.peers.get_mut(&pid) {
            for slot in &mut peer.slots {
                if let Some(mid) = slot.mid()
                    && stale.contains(&mid)
                {
                    slot.state = SlotState::ToRemove(mid);
                }
            }
        }
        self.drain_room(&room, now);
        self.mark_dirty(pid);
    }

    /// Puts wanted and unwanted m-lines into one offer, when no other is in flight.
    pub(super) fn negotiate_if_needed(&mut self, pid: ParticipantId, _now: Instant) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        if peer.channel.is_none() || peer.pending.is_some() {
            return;
        }
        let wanted = peer
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::ToAdd | SlotState::ToRemove(_)));
        if !wanted {
            return;
        }
        let mut change = peer.rtc.sdp_api();
        for slot in &mut peer.slots {
            match slot.state {
                SlotState::ToAdd => {
                    let stream = slot.track.publisher.to_string();
                    let mid =
                        change.add_media(slot.kind, Direction::SendOnly, Some(stream), None, None);
                    slot.state = SlotState::Negotiating(mid);
                }
                SlotState::ToRemove(mid) => {
                    change.stop_media(mid);
                    slot.state = SlotState::Removing(mid);
                }
                _ => {}
            }
        }
        if let Some((offer, pending)) = change.apply() {
            peer.pending = Some(pending);
            peer.send_json(json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string());
        }
    }

    /// Acts on everything the room decided, until it is quiet.
    pub(super) fn drain_room(&mut self, name: &str, now: Instant) {
        let mut timed_out = Vec::new();
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
                } => {
                    if let Some(peer) = self.peers.get_mut(&subscriber) {
                        peer.slots.push(Slot {
                            track,
                            kind,
                            state: SlotState::ToAdd,
                            cancelled: false,
                            pt_map: Vec::new(),
                        });
                    }
                    self.mark_dirty(subscriber);
                }
                Output::DropSlot {
                    subscriber, track, ..
                } => {
                    if let Some(peer) = self.peers.get_mut(&subscriber) {
                        peer.slots
                            .retain(|s| !(s.track == track && s.state == SlotState::ToAdd));
                        for slot in peer.slots.iter_mut().filter(|s| s.track == track) {
                            match slot.state {
                                SlotState::Negotiating(_) => slot.cancelled = true,
                                SlotState::Ready(mid) => slot.state = SlotState::ToRemove(mid),
                                _ => {}
                            }
                        }
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
                Output::Event(event) => self.send_room_event(name, event),
                Output::ParticipantTimedOut(pid) => timed_out.push(pid),
            }
        }
        for pid in timed_out {
            self.remove_peer(pid, "timeout", now);
        }
    }

    fn send_room_event(&mut self, room: &str, event: RoomEvent) {
        let (message, only) = match event {
            RoomEvent::Joined {
                participant,
                user,
                name,
            } => (
                json!({"type": "joined", "participant": {"id": participant.to_string(), "user": user, "name": name}}),
                None,
            ),
            RoomEvent::Left(participant) => (
                json!({"type": "left", "participant_id": participant.to_string()}),
                None,
            ),
            RoomEvent::Muted {
                participant,
                kind,
                muted,
            } => (
                json!({"type": "muted", "participant_id": participant.to_string(), "kind": kind_name(kind), "muted": muted}),
                None,
            ),
            RoomEvent::ActiveSpeaker(participant) => (
                json!({"type": "speaker", "participant_id": participant.to_string()}),
                None,
            ),
            RoomEvent::LayerChanged {
                subscriber,
                out_mid,
                layer,
            } => (
                json!({"type": "layer", "mid": out_mid.to_string(), "layer": layer.signal_name()}),
                Some(subscriber),
            ),
        };
        let text = message.to_string();
        let members: Vec<ParticipantId> = match only {
            Some(pid) => vec![pid],
            None => self
                .rooms
                .get(room)
                .map(|e| e.members.clone())
                .unwrap_or_default(),
        };
        for pid in members {
            if let Some(peer) = self.peers.get_mut(&pid) {
                peer.send_json(text.clone());
            }
            self.mark_dirty(pid);
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
        let Some(published) = peer.published.get(&mid) else {
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
            .handle_rtp(pid, mid, layer, &meta, now, &mut |f| forwards.push(f));
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
        let Some(slot) = sub.slots.iter_mut().find(|s| s.mid() == Some(f.out_mid)) else {
            return;
        };
        let in_pt = params.pt();
        let out_pt = match slot.pt_map.iter().find(|(i, _)| *i == in_pt) {
            Some((_, out)) => *out,
            None => {
                let out = sub.rtc.codec_config().match_params(*params).map(|p| p.pt());
                slot.pt_map.push((in_pt, out));
                out
            }
        };
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
            if let Ok(patch) = patch.build() {
                write = write.vp8_patch(patch);
            }
        }
        let mut api = sub.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(f.out_mid, None) else {
            return;
        };
        stream.write_rtp(write);
        self.counters.packets_out += 1;
        self.counters.bytes_out += packet.payload.len() as u64;
        self.mark_dirty(f.subscriber);
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
