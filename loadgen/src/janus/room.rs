//! Headless str0m participants in a Janus videoroom: the same synthetic publishers and
//! receivers that load Surge, signalling through Janus's REST API instead.
//!
//! A publisher joins as `publisher`, `configure`s with its offer (simulcast VP8 on three
//! rids + Opus) and says its candidates are complete; once Janus receives its media, its
//! feed id goes on the room's board. A subscriber waits for the room's feeds, joins as
//! `subscriber` to all of them in one PeerConnection, answers Janus's offer and `start`s.
//! A publisher that should also receive the other publishers subscribes the same way on a
//! second handle (Janus has one PeerConnection per direction).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use surge_participant::{Participant, ParticipantConfig, ParticipantError, ParticipantStats};
use tokio::sync::Notify;

use super::client::{JanusError, JanusSession};
use super::message::{FeedStream, Join, Jsep, VideoroomReply, VideoroomRequest};

/// How long a step of the Janus flow may take (PeerConnection up, media flowing).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a participant could not join a Janus room.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JanusJoinError {
    #[error(transparent)]
    Janus(#[from] JanusError),
    #[error(transparent)]
    Participant(#[from] ParticipantError),
    #[error("{0}")]
    Unexpected(String),
}

/// The videoroom settings of the rooms the load generator creates.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub publishers: u32,
    /// Per publisher, bits/s (enough for the three simulcast layers).
    pub bitrate: u64,
}

/// Creates `count` rooms through one short-lived session; returns their ids.
pub async fn create_rooms(
    http: &reqwest::Client,
    url: &str,
    count: usize,
    settings: &RoomSettings,
) -> Result<Vec<u64>, JanusError> {
    let session = JanusSession::create(http.clone(), url).await?;
    let (handle, _) = session.attach().await?;
    let mut rooms = Vec::with_capacity(count);
    for n in 0..count {
        let body = VideoroomRequest::Create {
            description: format!("Load test room {n}"),
            publishers: settings.publishers,
            bitrate: settings.bitrate,
            fir_freq: 0,
            audiocodec: "opus".into(),
            videocodec: "vp8".into(),
        };
        match session.message(handle, "create room", body, None).await? {
            (VideoroomReply::Created { room }, _) => rooms.push(room),
            (other, _) => {
                return Err(JanusError::Protocol {
                    step: "create room",
                    detail: format!("{other:?}"),
                });
            }
        }
    }
    session.destroy().await?;
    Ok(rooms)
}

/// The feeds of one room whose media Janus receives: publishers post, subscribers wait.
#[derive(Debug, Default)]
pub struct FeedBoard {
    feeds: Mutex<Vec<u64>>,
    changed: Notify,
}

impl FeedBoard {
    fn post(&self, feed: u64) {
        crate::lock(&self.feeds).push(feed);
        self.changed.notify_waiters();
    }

    fn others(&self, except: Option<u64>) -> Vec<u64> {
        crate::lock(&self.feeds)
            .iter()
            .copied()
            .filter(|f| Some(*f) != except)
            .collect()
    }

    /// Waits until `count` feeds other than `except` are up (or `within` passed); returns
    /// those there are.
    pub async fn wait_for(&self, count: usize, except: Option<u64>, within: Duration) -> Vec<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            let feeds = self.others(except);
            if feeds.len() >= count {
                return feeds;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.others(except);
            }
        }
    }
}

/// What one participant of a Janus room is.
#[derive(Debug, Clone)]
pub struct JanusRole {
    pub room: u64,
    pub display: String,
    /// Publishes the template's media (else only receives).
    pub publish: bool,
    /// Feeds to receive: every publisher of the room, itself excluded.
    pub receive_feeds: usize,
}

/// A participant in a Janus room: a session, a publishing PeerConnection and/or a
/// receiving one.
pub struct JanusParticipant {
    session: JanusSession,
    publisher: Option<Participant>,
    subscriber: Option<Participant>,
}

impl JanusParticipant {
    /// Joins: publishes (when asked), then subscribes to the room's other feeds once they
    /// are up. `template` carries the media settings and the address to bind.
    pub async fn join(
        http: &reqwest::Client,
        url: &str,
        role: &JanusRole,
        template: &ParticipantConfig,
        board: &FeedBoard,
    ) -> Result<Self, JanusJoinError> {
        let session = JanusSession::create(http.clone(), url).await?;
        let mut me = Self {
            session,
            publisher: None,
            subscriber: None,
        };
        let mut own_feed = None;
        if role.publish {
            let (feed, publisher) = me.publish(role, template).await?;
            own_feed = Some(feed);
            me.publisher = Some(publisher);
            board.post(feed);
        }
        if role.receive_feeds > 0 {
            let feeds = board
                .wait_for(role.receive_feeds, own_feed, STEP_TIMEOUT)
                .await;
            if feeds.is_empty() {
                return Err(JanusJoinError::Unexpected(
                    "no publisher's media came up".into(),
                ));
            }
            me.subscriber = Some(me.subscribe(role.room, &feeds, template).await?);
        }
        Ok(me)
    }

    async fn publish(
        &self,
        role: &JanusRole,
        template: &ParticipantConfig,
    ) -> Result<(u64, Participant), JanusJoinError> {
        let session = &self.session;
        let (handle, mut events) = session.attach().await?;
        let join = VideoroomRequest::Join(Join::Publisher {
            room: role.room,
            display: role.display.clone(),
        });
        let feed = match session.message(handle, "join", join, None).await? {
            (VideoroomReply::Joined { id, .. }, _) => id,
            (other, _) => return Err(JanusJoinError::Unexpected(format!("join: {other:?}"))),
        };
        let configure = VideoroomRequest::Configure {
            audio: template.audio,
            video: template.video,
        };
        let publisher = Participant::publish_via(template.clone(), |offer| async move {
            let offer = Jsep::offer(highest_rid_first(&offer));
            match session
                .message(handle, "configure", configure, Some(offer))
                .await
            {
                Ok((_, Some(answer))) if answer.kind == "answer" => Ok(answer.sdp),
                Ok((reply, _)) => Err(ParticipantError::Http(format!(
                    "janus configure gave no answer: {reply:?}"
                ))),
                Err(e) => Err(ParticipantError::Http(format!("janus: {e}"))),
            }
        })
        .await?;
        session.trickle_completed(handle).await?;
        // Subscribing before Janus gets the media fails with "No such feed".
        events.media_flowing(STEP_TIMEOUT).await?;
        Ok((feed, publisher))
    }

    async fn subscribe(
        &self,
        room: u64,
        feeds: &[u64],
        template: &ParticipantConfig,
    ) -> Result<Participant, JanusJoinError> {
        let started = Instant::now();
        let session = &self.session;
        let (handle, _events) = session.attach().await?;
        let join = VideoroomRequest::Join(Join::Subscriber {
            room,
            streams: feeds.iter().map(|&feed| FeedStream { feed }).collect(),
            private_id: None,
        });
        let offer = match session.message(handle, "subscribe", join, None).await? {
            (VideoroomReply::Attached { .. }, Some(jsep)) if jsep.kind == "offer" => jsep.sdp,
            (other, _) => {
                return Err(JanusJoinError::Unexpected(format!(
                    "subscribe gave no offer: {other:?}"
                )));
            }
        };
        let mut config = template.clone().subscriber_only();
        config.max_receive_bps = template.max_receive_bps;
        let (subscriber, answer) = Participant::answer(config, &offer, started)?;
        session
            .message(
                handle,
                "start",
                VideoroomRequest::Start {},
                Some(Jsep::answer(answer)),
            )
            .await?;
        session.trickle_completed(handle).await?;
        Ok(subscriber)
    }

    /// What it received (the receiving PeerConnection's tracks) and sent.
    pub fn stats(&self) -> ParticipantStats {
        let sent = self.publisher.as_ref().map(Participant::stats);
        let mut stats = match &self.subscriber {
            Some(s) => s.stats(),
            None => sent.clone().unwrap_or_default(),
        };
        if let Some(sent) = sent {
            stats.sent_packets = sent.sent_packets;
            stats.connected = sent.connected && (self.subscriber.is_none() || stats.connected);
        }
        stats
    }

    /// Leaves: ends the Janus session, then stops the PeerConnections.
    pub async fn leave(self) -> Result<(), JanusJoinError> {
        let result = self.session.destroy().await;
        let (publisher, subscriber) = (self.publisher, self.subscriber);
        let _ = tokio::task::spawn_blocking(move || {
            drop(publisher);
            drop(subscriber);
        })
        .await;
        Ok(result?)
    }
}

/// Lists the simulcast rids highest first, as Janus reads them (browsers using janus.js
/// send `h;m;l`): the offer lists them lowest first (`q;h;f`), which Janus would take for
/// `q` being the best, and forward it to everyone. The order changes nothing else.
fn highest_rid_first(sdp: &str) -> String {
    let lines: Vec<&str> = sdp.split("\r\n").collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("a=rid:") {
            // A run of rid lines, reversed.
            let run_end = lines[i..]
                .iter()
                .position(|l| !l.starts_with("a=rid:"))
                .map_or(lines.len(), |n| i + n);
            out.extend(lines[i..run_end].iter().rev().map(|l| (*l).to_owned()));
            i = run_end;
            continue;
        }
        if let Some(list) = line.strip_prefix("a=simulcast:send ") {
            let reversed: Vec<&str> = list.split(';').rev().collect();
            out.push(format!("a=simulcast:send {}", reversed.join(";")));
        } else {
            out.push(line.to_owned());
        }
        i += 1;
    }
    out.join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulcast_rids_are_offered_highest_first() {
        let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\na=ssrc:1 cname:x\r\n";
        assert_eq!(
            highest_rid_first(sdp),
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:f send\r\na=rid:h send\r\na=rid:q send\r\na=simulcast:send f;h;q\r\na=ssrc:1 cname:x\r\n"
        );
        // Without simulcast, unchanged.
        let audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert_eq!(highest_rid_first(audio), audio);
    }

    #[tokio::test]
    async fn subscribers_wait_for_the_feeds_they_expect() {
        let board = std::sync::Arc::new(FeedBoard::default());
        let waiting = {
            let board = board.clone();
            tokio::spawn(async move { board.wait_for(2, Some(1), Duration::from_secs(5)).await })
        };
        board.post(1);
        board.post(2);
        tokio::task::yield_now().await;
        board.post(3);
        let mut feeds = waiting.await.unwrap();
        feeds.sort_unstable();
        assert_eq!(feeds, vec![2, 3]);
        // Past the deadline, what there is.
        assert_eq!(
            board
                .wait_for(5, None, Duration::from_millis(10))
                .await
                .len(),
            3
        );
    }
}
