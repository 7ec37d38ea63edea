//! One participant's str0m session and what the worker tracks about it: its remote
//! addresses, its data channel, the outgoing m-lines (slots) it receives others' tracks
//! on, and the renegotiation in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::{Candidate, Rtc};
use surge_cluster::token::JoinClaims;

use crate::core::{ParticipantId, TrackId};
use crate::session;

/// Where an outgoing m-line is in its negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Wanted; goes into the next offer.
    ToAdd,
    /// In the offer awaiting the client's answer.
    Negotiating(Mid),
    /// Negotiated; the room forwards to it.
    Ready(Mid),
    /// To be stopped in the next offer.
    ToRemove(Mid),
    /// Stop offered, awaiting the answer.
    Removing(Mid),
}

/// An outgoing m-line carrying another participant's track.
#[derive(Debug)]
pub(super) struct Slot {
    pub track: TrackId,
    pub kind: MediaKind,
    pub state: SlotState,
    /// Dropped by the room while negotiating: stop it once the answer is in.
    pub cancelled: bool,
    /// Publisher payload type → this session's payload type for the same codec.
    pub pt_map: Vec<(Pt, Option<Pt>)>,
}

impl Slot {
    pub fn mid(&self) -> Option<Mid> {
        match self.state {
            SlotState::ToAdd => None,
            SlotState::Negotiating(m)
            | SlotState::Ready(m)
            | SlotState::ToRemove(m)
            | SlotState::Removing(m) => Some(m),
        }
    }
}

/// A track this participant publishes.
#[derive(Debug, Clone)]
pub(super) struct Published {
    pub kind: MediaKind,
    pub rids: Vec<Rid>,
}

pub(super) struct Peer {
    pub room: String,
    pub user: String,
    pub name: String,
    pub rtc: Rtc,
    pub ufrag: String,
    pub addrs: Vec<SocketAddr>,
    /// str0m's next timeout.
    pub timeout: Instant,
    /// The earliest entry this peer has in the worker's timer heap.
    pub scheduled: Option<Instant>,
    /// In the worker's dirty list.
    pub dirty: bool,
    pub channel: Option<ChannelId>,
    /// Messages waiting for the data channel to open.
    pub outbox: Vec<String>,
    pub pending: Option<SdpPendingOffer>,
    pub slots: Vec<Slot>,
    pub published: HashMap<Mid, Published>,
    /// The last egress estimate reported to the shard's load, bits/s.
    pub egress_bps: u64,
    /// Caps the client asked for with REMB, by mid (the smallest applies).
    pub remb_bps: Option<u64>,
    pub twcc_bps: Option<u64>,
    /// Cumulative NACK counts seen in egress stats, by mid.
    pub nacks_seen: HashMap<Mid, u64>,
}

impl Peer {
    /// A session for `offer`: RTP mode, ICE-lite, one host candidate (this worker's
    /// public address), bandwidth estimation on. Returns it with its SDP answer.
    pub fn accept(
        pid: ParticipantId,
        room: &str,
        claims: &JoinClaims,
        offer: SdpOffer,
        public_addr: SocketAddr,
        now: Instant,
    ) -> Result<(Self, SdpAnswer), String> {
        let mut rtc = session::rtc_config().build(now);
        let candidate = Candidate::host(public_addr, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        rtc.bwe()
            .set_bitrate(session::MIN_BITRATE, session::START_DESIRED_BITRATE);
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag.clone();
        tracing::debug!(participant = %pid, %ufrag, "session created");
        Ok((
            Self {
                room: room.to_owned(),
                user: claims.sub.clone(),
                name: claims.name.clone(),
                rtc,
                ufrag,
                addrs: Vec::new(),
                timeout: now,
                scheduled: None,
                dirty: false,
                channel: None,
                outbox: Vec::new(),
                pending: None,
                slots: Vec::new(),
                published: HashMap::new(),
                egress_bps: 0,
                remb_bps: None,
                twcc_bps: None,
                nacks_seen: HashMap::new(),
            },
            answer,
        ))
    }

    /// Sends a JSON message on the `surge` data channel, or queues it until it opens.
    pub fn send_json(&mut self, message: String) {
        // Behind queued messages, to keep their order.
        if self.outbox.is_empty()
            && let Some(id) = self.channel
            && let Some(mut channel) = self.rtc.channel(id)
            && let Ok(true) = channel.write(false, message.as_bytes())
        {
            return;
        }
        // Bounded: a client that never opens its channel does not grow memory forever.
        if self.outbox.len() < 256 {
            self.outbox.push(message);
        }
    }

    /// Sends what queued up before the channel opened.
    pub fn flush_outbox(&mut self) {
        let Some(id) = self.channel else {
            return;
        };
        let mut sent = 0;
        for message in &self.outbox {
            let ok = self
                .rtc
                .channel(id)
                .is_some_and(|mut c| matches!(c.write(false, message.as_bytes()), Ok(true)));
            if !ok {
                // The SCTP buffer is full: the rest waits, in order, for the next drain.
                break;
            }
            sent += 1;
        }
        self.outbox.drain(..sent);
    }

    /// The estimate the room should plan with: TWCC, capped by what the client asked
    /// for with REMB.
    pub fn bandwidth(&self) -> Option<u64> {
        match (self.twcc_bps, self.remb_bps) {
            (Some(t), Some(r)) => Some(t.min(r)),
            (t, r) => t.or(r),
        }
    }
}
