//! A Janus session over the REST transport: requests by `POST`, events by long-polling
//! `GET /janus/{session}`, keep-alives so the session does not time out. One poller task
//! per session hands each event to the request waiting for its transaction, or to the
//! handle it concerns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::lock;

use super::message::{
    Jsep, PluginData, Reply, Request, TrickleCandidate, VIDEOROOM, VideoroomReply, VideoroomRequest,
};

/// How long a request waits for its asynchronous answer (an `event` after the `ack`).
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Janus ends a session after 60 s without traffic; a long poll counts, these make sure.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Events fetched per long poll at most.
const MAX_EVENTS: u32 = 10;

/// Why a Janus exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JanusError {
    #[error("HTTP: {0}")]
    Http(String),
    #[error("unexpected reply to {step}: {detail}")]
    Protocol { step: &'static str, detail: String },
    #[error("Janus refused {step}: {code} {reason}")]
    Refused {
        step: &'static str,
        code: i64,
        reason: String,
    },
    #[error("videoroom refused {step}: {code} {reason}")]
    Plugin {
        step: &'static str,
        code: i64,
        reason: String,
    },
    #[error("no answer to {0} in time")]
    Timeout(&'static str),
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>;
type Handles = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Reply>>>>;

/// A live Janus session; destroyed on [`JanusSession::destroy`], its tasks stopped on drop.
pub struct JanusSession {
    http: reqwest::Client,
    /// `http://host:8088/janus/{session}`.
    url: String,
    waiters: Waiters,
    handles: Handles,
    next: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

/// A plugin handle's asynchronous events (`webrtcup`, `media`, `hangup`, plugin events
/// without a transaction).
pub struct HandleEvents(mpsc::UnboundedReceiver<Reply>);

impl HandleEvents {
    /// Waits until the handle's PeerConnection is up (`webrtcup`) and Janus receives
    /// media on it (`media` with `receiving: true`), in whichever order they come.
    pub async fn media_flowing(&mut self, within: Duration) -> Result<(), JanusError> {
        let wait = async {
            let (mut up, mut receiving) = (false, false);
            while let Some(event) = self.0.recv().await {
                match event {
                    Reply::Webrtcup { .. } => up = true,
                    Reply::Media {
                        receiving: Some(true),
                        ..
                    } => receiving = true,
                    Reply::Hangup { reason, .. } => {
                        return Err(JanusError::Protocol {
                            step: "media",
                            detail: format!("hangup: {}", reason.unwrap_or_default()),
                        });
                    }
                    _ => {}
                }
                if up && receiving {
                    return Ok(());
                }
            }
            Err(JanusError::Protocol {
                step: "media",
                detail: "session closed".into(),
            })
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| JanusError::Timeout("media"))?
    }
}

impl JanusSession {
    /// Creates a session at `base` (`http://host:8088/janus`) and starts its poller and
    /// keep-alive.
    pub async fn create(http: reqwest::Client, base: &str) -> Result<Self, JanusError> {
        let base = base.trim_end_matches('/');
        let reply = post(
            &http,
            base,
            &Request::Create {
                transaction: "create".into(),
            },
        )
        .await?;
        let id = created_id(reply, "create")?;
        let url = format!("{base}/{id}");
        let waiters: Waiters = Arc::default();
        let handles: Handles = Arc::default();
        let poller = tokio::spawn(poll_events(
            http.clone(),
            url.clone(),
            waiters.clone(),
            handles.clone(),
        ));
        let keepalive = tokio::spawn(keep_alive(http.clone(), url.clone()));
        Ok(Self {
            http,
            url,
            waiters,
            handles,
            next: AtomicU64::new(1),
            tasks: vec![poller, keepalive],
        })
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Attaches a videoroom handle; returns its id and its event stream.
    pub async fn attach(&self) -> Result<(u64, HandleEvents), JanusError> {
        let reply = post(
            &self.http,
            &self.url,
            &Request::Attach {
                plugin: VIDEOROOM.into(),
                transaction: self.transaction(),
            },
        )
        .await?;
        let id = created_id(reply, "attach")?;
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.handles).insert(id, tx);
        Ok((id, HandleEvents(rx)))
    }

    /// Sends a videoroom request on a handle and returns the plugin's answer (at once, or
    /// from the long poll after an `ack`) with its SDP, if any.
    pub async fn message(
        &self,
        handle: u64,
        step: &'static str,
        body: VideoroomRequest,
        jsep: Option<Jsep>,
    ) -> Result<(VideoroomReply, Option<Jsep>), JanusError> {
        let transaction = self.transaction();
        // Registered before the POST: the event may be polled before the ack is read.
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(transaction.clone(), tx);
        let request = Request::Message {
            transaction: transaction.clone(),
            body,
            jsep,
        };
        let reply = match post(&self.http, &format!("{}/{handle}", self.url), &request).await {
            Ok(r) => r,
            Err(e) => {
                lock(&self.waiters).remove(&transaction);
                return Err(e);
            }
        };
        let reply = match reply {
            Reply::Ack { .. } => match tokio::time::timeout(EVENT_TIMEOUT, rx).await {
                Ok(Ok(event)) => event,
                Ok(Err(_)) => {
                    return Err(JanusError::Protocol {
                        step,
                        detail: "session closed".into(),
                    });
                }
                Err(_) => {
                    lock(&self.waiters).remove(&transaction);
                    return Err(JanusError::Timeout(step));
                }
            },
            other => {
                lock(&self.waiters).remove(&transaction);
                other
            }
        };
        plugin_reply(reply, step)
    }

    /// Tells Janus the handle has no more candidates (ours are all in the SDP).
    pub async fn trickle_completed(&self, handle: u64) -> Result<(), JanusError> {
        let reply = post(
            &self.http,
            &format!("{}/{handle}", self.url),
            &Request::Trickle {
                transaction: self.transaction(),
                candidate: TrickleCandidate { completed: true },
            },
        )
        .await?;
        match reply {
            Reply::Ack { .. } | Reply::Success { .. } => Ok(()),
            Reply::Error { error, .. } => Err(JanusError::Refused {
                step: "trickle",
                code: error.code,
                reason: error.reason,
            }),
            other => Err(JanusError::Protocol {
                step: "trickle",
                detail: format!("{other:?}"),
            }),
        }
    }

    /// Ends the session (Janus hangs up its handles).
    pub async fn destroy(mut self) -> Result<(), JanusError> {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let reply = post(
            &self.http,
            &self.url,
            &Request::Destroy {
                transaction: self.transaction(),
            },
        )
        .await?;
        match reply {
            Reply::Error { error, .. } => Err(JanusError::Refused {
                step: "destroy",
                code: error.code,
                reason: error.reason,
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, request: &Request) -> Result<Reply, JanusError> {
    let response = http
        .post(url)
        .json(request)
        .send()
        .await
        .map_err(|e| JanusError::Http(e.to_string()))?;
    let body = response
        .bytes()
        .await
        .map_err(|e| JanusError::Http(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| JanusError::Protocol {
        step: "reply",
        detail: format!("{e}: {}", String::from_utf8_lossy(&body)),
    })
}

/// The id in a `success` to `create` or `attach`.
fn created_id(reply: Reply, step: &'static str) -> Result<u64, JanusError> {
    match reply {
        Reply::Success { data: Some(d), .. } => Ok(d.id),
        Reply::Error { error, .. } => Err(JanusError::Refused {
            step,
            code: error.code,
            reason: error.reason,
        }),
        other => Err(JanusError::Protocol {
            step,
            detail: format!("{other:?}"),
        }),
    }
}

/// The plugin's answer in a `success` or `event`, its error turned into one.
pub(crate) fn plugin_reply(
    reply: Reply,
    step: &'static str,
) -> Result<(VideoroomReply, Option<Jsep>), JanusError> {
    let (data, jsep): (Option<PluginData>, Option<Jsep>) = match reply {
        Reply::Success { plugindata, .. } => (plugindata, None),
        Reply::Event {
            plugindata, jsep, ..
        } => (plugindata, jsep),
        Reply::Error { error, .. } => {
            return Err(JanusError::Refused {
                step,
                code: error.code,
                reason: error.reason,
            });
        }
        other => {
            return Err(JanusError::Protocol {
                step,
                detail: format!("{other:?}"),
            });
        }
    };
    let Some(data) = data else {
        return Err(JanusError::Protocol {
            step,
            detail: "no plugindata".into(),
        });
    };
    if let Some((code, reason)) = data.data.error() {
        return Err(JanusError::Plugin {
            step,
            code,
            reason: reason.to_owned(),
        });
    }
    Ok((data.data, jsep))
}

/// Long-polls the session's events until the session ends, routing each one.
async fn poll_events(http: reqwest::Client, url: String, waiters: Waiters, handles: Handles) {
    let poll = format!("{url}?maxev={MAX_EVENTS}");
    loop {
        let events = match http.get(&poll).send().await {
            Ok(r) => match r.bytes().await {
                Ok(body) => parse_events(&body),
                Err(_) => Vec::new(),
            },
            Err(e) => {
                tracing::debug!(error = %e, "janus long poll failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for event in events {
            if matches!(event, Reply::Timeout {}) {
                return;
            }
            route(event, &waiters, &handles);
        }
    }
}

/// One long poll's body: an array with `maxev`, a single event otherwise; what does not
/// parse is skipped.
fn parse_events(body: &[u8]) -> Vec<Reply> {
    if let Ok(events) = serde_json::from_slice::<Vec<serde_json::Value>>(body) {
        return events
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
    }
    serde_json::from_slice::<Reply>(body)
        .map(|r| vec![r])
        .unwrap_or_default()
}

fn route(event: Reply, waiters: &Waiters, handles: &Handles) {
    if let Some(t) = event.transaction()
        && let Some(waiter) = lock(waiters).remove(t)
    {
        let _ = waiter.send(event);
        return;
    }
    let sender = match &event {
        Reply::Event { sender, .. }
        | Reply::Webrtcup { sender }
        | Reply::Media { sender, .. }
        | Reply::Hangup { sender, .. } => *sender,
        _ => None,
    };
    if let Some(sender) = sender
        && let Some(handle) = lock(handles).get(&sender)
    {
        let _ = handle.send(event);
    }
}

async fn keep_alive(http: reqwest::Client, url: String) {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(KEEPALIVE).await;
        n += 1;
        let request = Request::Keepalive {
            transaction: format!("keepalive-{n}"),
        };
        if let Err(e) = post(&http, &url, &request).await {
            tracing::debug!(error = %e, "janus keep-alive failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_poll_body_parses_as_an_array_or_a_single_event() {
        let many = br#"[{"janus": "webrtcup", "sender": 2}, {"janus": 5}, {"janus": "keepalive"}]"#;
        assert_eq!(
            parse_events(many),
            vec![Reply::Webrtcup { sender: Some(2) }, Reply::Keepalive {}]
        );
        assert_eq!(
            parse_events(br#"{"janus": "keepalive"}"#),
            vec![Reply::Keepalive {}]
        );
        assert!(parse_events(b"<html>").is_empty());
    }

    #[test]
    fn events_go_to_the_waiting_transaction_or_else_to_their_handle() {
        let waiters: Waiters = Arc::default();
        let handles: Handles = Arc::default();
        let (tx, mut rx) = oneshot::channel();
        lock(&waiters).insert("t5".into(), tx);
        let (htx, mut hrx) = mpsc::unbounded_channel();
        lock(&handles).insert(2, htx);
        let answer: Reply = serde_json::from_str(r#"{"janus": "event", "transaction": "t5", "sender": 2, "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "event", "configured": "ok"}}}"#).unwrap();
        route(answer.clone(), &waiters, &handles);
        assert_eq!(rx.try_recv().unwrap(), answer);
        assert!(lock(&waiters).is_empty());
        route(Reply::Webrtcup { sender: Some(2) }, &waiters, &handles);
        // An event for a handle nobody knows is dropped.
        route(Reply::Webrtcup { sender: Some(9) }, &waiters, &handles);
        assert_eq!(hrx.try_recv().unwrap(), Reply::Webrtcup { sender: Some(2) });
        assert!(hrx.try_recv().is_err());
    }

    #[test]
    fn a_plugin_error_in_an_event_is_a_typed_error() {
        let reply: Reply = serde_json::from_str(r#"{"janus": "event", "transaction": "t6", "sender": 2, "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "event", "error_code": 428, "error": "No such feed (11)"}}}"#).unwrap();
        match plugin_reply(reply, "subscribe") {
            Err(JanusError::Plugin {
                code: 428, reason, ..
            }) => {
                assert_eq!(reason, "No such feed (11)")
            }
            other => panic!("{other:?}"),
        }
        let reply = Reply::Ack { transaction: None };
        assert!(matches!(
            plugin_reply(reply, "x"),
            Err(JanusError::Protocol { .. })
        ));
    }
}
