//! A participant's data-channel outbox: what waits for the channel to open or for room in
//! its SCTP buffer (a client that stops reading fills it).
//!
//! Nothing the client needs to stay in the call is ever dropped: offers (a lost one would
//! stop all renegotiation, so the client would never receive a new track), `tracks`,
//! `welcome`, `joined` and `left`. What only describes the present state is coalesced so
//! the queue stays bounded however long the client stalls: a newer `muted` for the same
//! participant and kind, `speaker`, or `layer` for the same m-line replaces the queued
//! one. A `left` for a participant whose `joined` is still queued cancels both (and that
//! participant's queued `muted`), since the client never needs to hear of it.
//!
//! So the queue holds at most: one `welcome`, one `offer` (only one is in flight at a
//! time), one `tracks` per answered offer (there is no answer while the offer waits here),
//! a `joined` per present member, a `left` per member the client already heard of, two
//! `muted` per member, one `speaker` and one `layer` per m-line.
//!
//! Room chat, hands and quality: `hand` and `quality` coalesce per participant (and go with
//! a cancelled `joined`), `chat_refused` to the latest. Chat messages keep their order,
//! but at most [`MAX_QUEUED_CHAT`] wait: past that the oldest queued one is dropped (the
//! client sees a gap in `seq`) rather than the session ended for a busy chat.

use std::collections::VecDeque;

use crate::core::ParticipantId;
use crate::protocol::{Kind, ServerMessage};

/// A backstop far above what the rules above allow for any room size the shard accepts:
/// past it the session is ended rather than a message dropped.
pub(super) const MAX_QUEUED: usize = 4_096;

/// Chat messages waiting at most (see the module docs).
pub(super) const MAX_QUEUED_CHAT: usize = 256;

/// What a queued message is about, which decides what may replace or cancel it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum About {
    /// Must be delivered, in order (offer, tracks, welcome).
    Needed,
    /// `joined` for this participant: needed, unless its `left` follows before it is sent.
    Joined(ParticipantId),
    /// `left` for this participant: needed.
    Left(ParticipantId),
    /// Only the latest one with this key matters.
    Latest(Key),
    /// A chat message: kept in order, the oldest dropped past [`MAX_QUEUED_CHAT`].
    Chat,
}

/// The key informational messages are coalesced by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Muted(ParticipantId, Kind),
    Speaker,
    Layer(String),
    Hand(ParticipantId),
    Quality(ParticipantId),
    ChatRefused,
}

impl About {
    /// How `message` is queued.
    pub fn of(message: &ServerMessage) -> Self {
        match message {
            ServerMessage::Offer { .. }
            | ServerMessage::Tracks { .. }
            | ServerMessage::Welcome { .. }
            | ServerMessage::Ended { .. } => About::Needed,
            ServerMessage::Joined { participant } => About::Joined(participant.id),
            ServerMessage::Left { participant_id } => About::Left(*participant_id),
            ServerMessage::Muted {
                participant_id,
                kind,
                ..
            } => About::Latest(Key::Muted(*participant_id, *kind)),
            ServerMessage::Speaker { .. } => About::Latest(Key::Speaker),
            ServerMessage::Layer { mid, .. } => About::Latest(Key::Layer(mid.clone())),
            ServerMessage::Chat { .. } => About::Chat,
            ServerMessage::ChatRefused { .. } => About::Latest(Key::ChatRefused),
            ServerMessage::Hand { participant_id, .. } => About::Latest(Key::Hand(*participant_id)),
            ServerMessage::Quality { participant_id, .. } => {
                About::Latest(Key::Quality(*participant_id))
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    about: About,
    text: String,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: VecDeque<Entry>,
    /// Chat messages in `queue`.
    chats: usize,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues `text` behind everything else, applying the coalescing rules.
    pub fn push(&mut self, about: About, text: String) {
        match &about {
            About::Latest(_) => {
                // The newer state goes to the back, after whatever it followed.
                if let Some(at) = self.queue.iter().position(|e| e.about == about) {
                    self.queue.remove(at);
                }
            }
            About::Left(pid) => {
                let joined = About::Joined(*pid);
                if let Some(at) = self.queue.iter().position(|e| e.about == joined) {
                    self.queue.remove(at);
                    self.queue.retain(|e| {
                        !matches!(
                            &e.about,
                            About::Latest(Key::Muted(p, _) | Key::Hand(p) | Key::Quality(p))
                                if p == pid
                        )
                    });
                    return;
                }
            }
            About::Chat => {
                if self.chats >= MAX_QUEUED_CHAT
                    && let Some(at) = self.queue.iter().position(|e| e.about == About::Chat)
                {
                    self.queue.remove(at);
                    self.chats -= 1;
                }
                self.chats += 1;
            }
            About::Needed | About::Joined(_) => {}
        }
        self.queue.push_back(Entry { about, text });
    }

    /// Queues `text` before everything else (the welcome, once the channel opens).
    pub fn push_front(&mut self, text: String) {
        self.queue.push_front(Entry {
            about: About::Needed,
            text,
        });
    }

    /// The next message to send.
    pub fn front(&self) -> Option<&str> {
        self.queue.front().map(|e| e.text.as_str())
    }

    /// The front message was sent.
    pub fn pop_front(&mut self) {
        if let Some(entry) = self.queue.pop_front()
            && entry.about == About::Chat
        {
            self.chats -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LayerName, ParticipantSummary};

    fn queue(outbox: &mut Outbox, message: ServerMessage) {
        outbox.push(About::of(&message), message.to_json());
    }

    fn drain(outbox: &mut Outbox) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Some(text) = outbox.front() {
            out.push(serde_json::from_str(text).expect("valid JSON"));
            outbox.pop_front();
        }
        out
    }

    fn muted(pid: u64, kind: Kind, muted: bool) -> ServerMessage {
        ServerMessage::Muted {
            participant_id: ParticipantId(pid),
            kind,
            muted,
        }
    }

    #[test]
    fn offers_are_kept_informational_messages_coalesce_and_joined_left_cancel() {
        let mut outbox = Outbox::default();
        let offer = ServerMessage::Offer { sdp: "v=0".into() };
        queue(&mut outbox, offer.clone());
        for n in 0..1_000u64 {
            queue(&mut outbox, muted(1, Kind::Audio, n % 2 == 0));
            queue(&mut outbox, muted(1, Kind::Video, n % 3 == 0));
            queue(
                &mut outbox,
                ServerMessage::Speaker {
                    participant_id: ParticipantId(n),
                },
            );
            queue(
                &mut outbox,
                ServerMessage::Layer {
                    mid: "4".into(),
                    layer: LayerName::Q,
                },
            );
            // Someone joins and leaves before the client reads: neither is sent.
            let churn = ParticipantId(10_000 + n);
            queue(
                &mut outbox,
                ServerMessage::Joined {
                    participant: ParticipantSummary::new(churn, "Churn".into()),
                },
            );
            queue(&mut outbox, muted(churn.0, Kind::Audio, true));
            queue(
                &mut outbox,
                ServerMessage::Left {
                    participant_id: churn,
                },
            );
        }
        // Someone the client heard of leaves: that `left` stays.
        queue(
            &mut outbox,
            ServerMessage::Left {
                participant_id: ParticipantId(1),
            },
        );
        assert_eq!(outbox.len(), 6);
        outbox.push_front(
            "{\"type\":\"welcome\",\"participant_id\":\"0000000000000009\",\"participants\":[]}"
                .into(),
        );
        let sent = drain(&mut outbox);
        assert!(matches!(sent[0], ServerMessage::Welcome { .. }));
        assert_eq!(sent[1], offer);
        assert_eq!(sent[2], muted(1, Kind::Audio, false), "the latest state");
        assert_eq!(sent[3], muted(1, Kind::Video, true));
        assert_eq!(
            sent[4],
            ServerMessage::Speaker {
                participant_id: ParticipantId(999)
            }
        );
        assert!(matches!(sent[6], ServerMessage::Left { participant_id } if participant_id.0 == 1));
    }

    fn chat(seq: u64) -> ServerMessage {
        ServerMessage::Chat {
            seq,
            participant_id: ParticipantId(1),
            name: "Alice".into(),
            text: format!("message {seq}"),
            ts_ms: 0,
        }
    }

    #[test]
    fn chat_keeps_its_order_and_drops_the_oldest_past_the_cap() {
        let mut outbox = Outbox::default();
        let offer = ServerMessage::Offer { sdp: "v=0".into() };
        queue(&mut outbox, offer.clone());
        let total = MAX_QUEUED_CHAT as u64 + 10;
        for seq in 1..=total {
            queue(&mut outbox, chat(seq));
            queue(
                &mut outbox,
                ServerMessage::Hand {
                    participant_id: ParticipantId(1),
                    raised: seq.is_multiple_of(2),
                },
            );
        }
        assert_eq!(outbox.len(), 1 + MAX_QUEUED_CHAT + 1);
        let sent = drain(&mut outbox);
        assert_eq!(sent[0], offer, "never dropped");
        let seqs: Vec<u64> = sent
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Chat { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(
            seqs,
            (11..=total).collect::<Vec<_>>(),
            "the newest, in order"
        );
        assert_eq!(
            sent.last(),
            Some(&ServerMessage::Hand {
                participant_id: ParticipantId(1),
                raised: total.is_multiple_of(2)
            })
        );
        // Sent and popped: the count starts afresh.
        queue(&mut outbox, chat(total + 1));
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.chats, 1);
    }
}
