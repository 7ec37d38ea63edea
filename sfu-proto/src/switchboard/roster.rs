//! The room's people as its clients see them (the participant list): the `welcome`'s list
//! with mute state, hands and connection quality; chat relayed with names from the join
//! tokens; raised hands; quality levels from each session's stats.

use std::time::Instant;

use str0m::media::MediaKind;
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use super::Switchboard;
use super::chat::check_text;
use super::quality::jitter_duration;
use crate::core::ParticipantId;
use crate::protocol::{ChatRefusal, ParticipantSummary, ServerMessage};

impl Switchboard {
    /// Everyone in `room` but `pid`, as `pid`'s `welcome` lists them: with what they muted,
    /// their hands and the quality level the room last heard for each.
    pub(super) fn roster_for(&self, room: &str, pid: ParticipantId) -> Vec<ParticipantSummary> {
        let Some(entry) = self.rooms.get(room) else {
            return Vec::new();
        };
        entry
            .members
            .iter()
            .filter(|p| **p != pid)
            .filter_map(|p| {
                let other = self.peers.get(p)?;
                let (audio_muted, video_muted) = entry.room.muted(*p).unwrap_or_default();
                Some(ParticipantSummary {
                    audio_muted,
                    video_muted,
                    hand: other.hand,
                    quality: other.quality.level(),
                    ..ParticipantSummary::new(*p, other.info.name.clone())
                })
            })
            .collect()
    }

    /// A chat message from `pid`: refused back to it (and relayed to nobody) when empty,
    /// too long or over its rate; otherwise numbered, dated and relayed to the whole room
    /// under the name its join token carries.
    pub(super) fn handle_chat(&mut self, pid: ParticipantId, text: String, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        // The text first: a refused text uses up none of the sender's rate.
        let refused = match check_text(&text) {
            Err(reason) => Some((reason, None)),
            Ok(()) => peer.chat.take(now).err().map(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                (ChatRefusal::RateLimited, Some(ms))
            }),
        };
        if let Some((reason, retry_after_ms)) = refused {
            tracing::debug!(participant = %pid, ?reason, chars = text.len(), "chat message refused");
            self.counters.chat_refused += 1;
            peer.send(&ServerMessage::ChatRefused {
                reason,
                retry_after_ms,
            });
            self.mark_dirty(pid);
            return;
        }
        let name = peer.info.name.clone();
        let room = peer.room.clone();
        let Some(entry) = self.rooms.get_mut(&room) else {
            return;
        };
        entry.chat_seq += 1;
        let message = ServerMessage::Chat {
            seq: entry.chat_seq,
            participant_id: pid,
            name,
            text,
            ts_ms: self.config.wall_clock.unix_ms(now),
        };
        self.counters.chat_messages += 1;
        self.broadcast(&room, &message);
    }

    /// `pid` raised or lowered its hand; the room hears of a change only.
    pub(super) fn handle_hand(&mut self, pid: ParticipantId, raised: bool) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        if peer.hand == raised {
            return;
        }
        peer.hand = raised;
        let room = peer.room.clone();
        self.broadcast(
            &room,
            &ServerMessage::Hand {
                participant_id: pid,
                raised,
            },
        );
    }

    /// A session's periodic stats: loss both ways and the round-trip time go into its
    /// quality window; at the window's end, a changed level goes to the room.
    ///
    /// Loss and round-trip time are str0m's transport-wide (TWCC) figures: sequence numbers
    /// per transport hop, so a subscriber is not blamed for what its publishers lost on their
    /// way in (per-stream receiver reports would show those gaps, which forwarding keeps).
    pub(super) fn handle_peer_stats(
        &mut self,
        pid: ParticipantId,
        stats: &PeerStats,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let loss = match (stats.ingress_loss_fraction, stats.egress_loss_fraction) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(loss) = loss {
            peer.quality.record_loss(loss);
        }
        let rtt = stats.rtt.or_else(|| {
            stats
                .selected_candidate_pair
                .as_ref()
                .and_then(|p| p.current_round_trip_time)
        });
        if let Some(rtt) = rtt {
            peer.quality.record_feedback_rtt(rtt);
        }
        let Some((level, measured)) = peer.quality.poll(now) else {
            return;
        };
        tracing::debug!(participant = %pid, ?level, ?measured, "connection quality changed");
        let room = peer.room.clone();
        self.broadcast(
            &room,
            &ServerMessage::Quality {
                participant_id: pid,
                level,
                loss_pct: measured.loss_pct(),
                rtt_ms: measured.rtt_ms(),
                jitter_ms: measured.jitter_ms(),
            },
        );
    }

    /// The jitter of the audio the participant sends us (as we measure it), while it is not
    /// muted. Not video: a frame's packets share one timestamp and leave paced, and a muted
    /// camera sends a frame now and then, so its jitter says little about the link. Not the
    /// jitter its receiver reports give for what we send it: forwarding passes publishers'
    /// jitter on.
    pub(super) fn handle_ingress_stats(&mut self, pid: ParticipantId, stats: &MediaIngressStats) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let audio_muted = self
            .rooms
            .get(&peer.room)
            .and_then(|e| e.room.muted(pid))
            .is_some_and(|(audio, _)| audio);
        if !audio_muted && peer.rtc.media(stats.mid).map(|m| m.kind()) == Some(MediaKind::Audio) {
            peer.quality
                .record_jitter(jitter_duration(stats.jitter, MediaKind::Audio));
        }
    }

    /// The round-trip time of what we send the participant, from its receiver reports.
    pub(super) fn handle_egress_stats(&mut self, pid: ParticipantId, stats: &MediaEgressStats) {
        if let Some(peer) = self.peers.get_mut(&pid)
            && let Some(rtt) = stats.rtt
        {
            peer.quality.record_rtt(rtt);
        }
    }

    /// Sends `message` to every member of `room`, encoded once.
    pub(super) fn broadcast(&mut self, room: &str, message: &ServerMessage) {
        let about = super::outbox::About::of(message);
        let text = message.to_json();
        let members = self
            .rooms
            .get(room)
            .map(|e| e.members.clone())
            .unwrap_or_default();
        for pid in members {
            if let Some(peer) = self.peers.get_mut(&pid) {
                peer.send_encoded(about.clone(), text.clone());
            }
            self.mark_dirty(pid);
        }
    }
}
