//! Driver threads: each one owns many sessions, waits on all their sockets at once (one
//! `mio::Poll`) and on the earliest of their timers, and steps a session only when a
//! datagram arrived for it or one of its timers is due. A thread per participant spent
//! most of the loadgen's CPU on wake-ups and context switches and capped how many
//! participants one machine could run; a driver thread per core does not.
//!
//! Callers talk to their session through a [`SessionHandle`]: data-channel messages, ICE
//! restarts and the stop go over the thread's command queue, with a [`mio::Waker`] to
//! interrupt its wait; statistics are read from the session's shared stats.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::ParticipantError;
use crate::session::{Control, Session};

/// The token of a thread's waker (sessions count up from zero).
const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per wait.
const EVENTS: usize = 1024;
/// The largest datagram read (a path MTU's worth, with room to spare).
const DATAGRAM: usize = 2048;

/// A pool of driver threads that step participants' sessions. Cloning shares the pool;
/// the threads stop once the last clone and the last participant on it are gone.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

/// A driver thread's load once it has ended.
const STOPPED: usize = usize::MAX;

struct Inner {
    threads: Vec<DriverThread>,
}

/// One driver thread as seen from outside it.
struct DriverThread {
    commands: mpsc::Sender<Command>,
    waker: Waker,
    /// Sessions it owns (new sessions go to the least loaded thread).
    sessions: Arc<AtomicUsize>,
    join: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum Command {
    /// A new session, with its token.
    Add(usize, Box<Session>),
    /// A message for the session's data channel.
    Send(usize, String),
    Control(usize, Control),
    /// Take the session off, close its transport, then answer.
    Stop(usize, mpsc::SyncSender<()>),
    /// The pool is dropped: close every session and end the thread.
    Shutdown,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("threads", &self.inner.threads.len())
            .field("sessions", &self.sessions())
            .finish()
    }
}

/// The process's shared driver, made on first use.
static SHARED: Mutex<Option<Driver>> = Mutex::new(None);
/// Session tokens, unique in the process.
static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(0);

impl Driver {
    /// A pool of `threads` driver threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = (0..threads.max(1))
            .map(DriverThread::spawn)
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner { threads }),
        })
    }

    /// The process's shared driver: one thread per available core, or
    /// `SURGE_PARTICIPANT_THREADS` of them. [`crate::Participant::join`] uses it unless the
    /// config names another.
    pub fn shared() -> std::io::Result<Self> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(driver) = &*shared {
            return Ok(driver.clone());
        }
        let threads = std::env::var("SURGE_PARTICIPANT_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
        let driver = Self::new(threads)?;
        *shared = Some(driver.clone());
        Ok(driver)
    }

    /// Its threads.
    pub fn threads(&self) -> usize {
        self.inner.threads.len()
    }

    /// Sessions it runs now.
    pub fn sessions(&self) -> usize {
        self.inner
            .threads
            .iter()
            .map(|t| t.sessions.load(Ordering::Relaxed))
            .filter(|&n| n != STOPPED)
            .sum()
    }

    /// Hands `session` to the least loaded thread.
    pub(crate) fn launch(&self, session: Session) -> Result<SessionHandle, ParticipantError> {
        let thread = self
            .inner
            .threads
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| t.sessions.load(Ordering::Relaxed))
            .map_or(0, |(n, _)| n);
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let handle = SessionHandle {
            driver: self.clone(),
            thread,
            token,
        };
        let load = &self.inner.threads[thread].sessions;
        load.fetch_add(1, Ordering::Relaxed);
        if !handle.command(Command::Add(token, Box::new(session))) {
            load.fetch_sub(1, Ordering::Relaxed);
            return Err(ParticipantError::Rtc(
                "the participant driver has stopped".into(),
            ));
        }
        Ok(handle)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for thread in &self.threads {
            let _ = thread.commands.send(Command::Shutdown);
            let _ = thread.waker.wake();
        }
        for thread in &self.threads {
            let join = thread.join.lock().ok().and_then(|mut j| j.take());
            if let Some(join) = join {
                let _ = join.join();
            }
        }
    }
}

impl DriverThread {
    fn spawn(n: usize) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (commands, queue) = mpsc::channel();
        let sessions = Arc::new(AtomicUsize::new(0));
        let load = sessions.clone();
        let join = std::thread::Builder::new()
            .name(format!("participants-{n}"))
            .spawn(move || Stepper::new(poll, queue, load).run())?;
        Ok(Self {
            commands,
            waker,
            sessions,
            join: Mutex::new(Some(join)),
        })
    }
}

/// A participant's way to its session on a driver thread.
pub(crate) struct SessionHandle {
    driver: Driver,
    thread: usize,
    token: usize,
}

impl SessionHandle {
    /// Queues a command and wakes the thread; `false` when the thread is gone.
    fn command(&self, command: Command) -> bool {
        let thread = &self.driver.inner.threads[self.thread];
        thread.commands.send(command).is_ok() && thread.waker.wake().is_ok()
    }

    /// A message for the data channel (sent once it is open).
    pub(crate) fn send(&self, message: String) {
        self.command(Command::Send(self.token, message));
    }

    /// A request to the session; `false` when it cannot be delivered.
    pub(crate) fn control(&self, control: Control) -> bool {
        self.command(Command::Control(self.token, control))
    }

    /// Stops the session and waits until its transport is closed.
    pub(crate) fn stop(self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.command(Command::Stop(self.token, done)) {
            // The thread answers after closing, or drops the sender if it has died.
            let _ = wait.recv();
        }
    }
}

/// A session on its thread, with the instant of the timer entry that is current for it.
struct Slot {
    session: Box<Session>,
    wake: Option<Instant>,
}

/// The loop of one driver thread.
struct Stepper {
    poll: Poll,
    queue: mpsc::Receiver<Command>,
    load: Arc<AtomicUsize>,
    sessions: HashMap<usize, Slot>,
    /// Sessions' wake-up times, earliest first; an entry whose instant is no longer its
    /// session's `wake` is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Sessions to step in this round.
    ready: Vec<usize>,
    buf: Vec<u8>,
}

impl Stepper {
    fn new(poll: Poll, queue: mpsc::Receiver<Command>, load: Arc<AtomicUsize>) -> Self {
        Self {
            poll,
            queue,
            load,
            sessions: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: Vec::new(),
            buf: vec![0u8; DATAGRAM],
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = self
                .timers
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(%e, "participant driver cannot poll; its sessions stop");
                break;
            }
            for event in &events {
                let token = event.token().0;
                if let Some(slot) = self.sessions.get_mut(&token) {
                    slot.session.set_readable();
                    self.ready.push(token);
                }
            }
            if !self.commands() {
                break;
            }
            let now = Instant::now();
            while let Some(&Reverse((at, token))) = self.timers.peek() {
                if at > now {
                    break;
                }
                self.timers.pop();
                if let Some(slot) = self.sessions.get_mut(&token)
                    && slot.wake == Some(at)
                {
                    // Spent: whatever the step answers is a new entry.
                    slot.wake = None;
                    self.ready.push(token);
                }
            }
            self.step_ready();
            self.prune_timers();
        }
        for (_, mut slot) in self.sessions.drain() {
            slot.session.finish();
        }
        // The most loaded of all, so that `launch` picks a live thread while there is one.
        self.load.store(STOPPED, Ordering::Relaxed);
    }

    /// Runs the queued commands; `false` on shutdown.
    fn commands(&mut self) -> bool {
        while let Ok(command) = self.queue.try_recv() {
            match command {
                Command::Add(token, session) => self.add(token, session),
                Command::Send(token, message) => {
                    if let Some(slot) = self.sessions.get_mut(&token) {
                        slot.session.queue(message);
                        self.ready.push(token);
                    }
                }
                Command::Control(token, control) => {
                    if let Some(slot) = self.sessions.get_mut(&token) {
                        // A restart moves the session to a new socket: poll that one.
                        let registry = self.poll.registry();
                        deregister(registry, &slot.session);
                        slot.session.control(control);
                        if let Err(e) = register(registry, &slot.session, token) {
                            tracing::debug!(%e, "participant socket cannot be polled");
                        }
                        self.ready.push(token);
                    }
                }
                Command::Stop(token, done) => {
                    self.remove(token);
                    let _ = done.send(());
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn add(&mut self, token: usize, mut session: Box<Session>) {
        if let Err(e) = register(self.poll.registry(), &session, token) {
            tracing::debug!(%e, "participant socket cannot be polled; the session stops");
            session.finish();
            self.load.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.sessions.insert(
            token,
            Slot {
                session,
                wake: None,
            },
        );
        self.ready.push(token);
    }

    fn remove(&mut self, token: usize) {
        if let Some(mut slot) = self.sessions.remove(&token) {
            deregister(self.poll.registry(), &slot.session);
            // A panic while closing must not take the other sessions down.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| slot.session.finish()));
            self.load.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Steps each ready session once; one that ends (or panics) is removed.
    fn step_ready(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.sort_unstable();
        ready.dedup();
        for token in ready.drain(..) {
            let Some(slot) = self.sessions.get_mut(&token) else {
                continue;
            };
            let buf = &mut self.buf;
            let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
                slot.session.step(Instant::now(), buf)
            }));
            match stepped {
                Ok(Some(wake)) => {
                    if slot.wake != Some(wake) {
                        slot.wake = Some(wake);
                        self.timers.push(Reverse((wake, token)));
                    }
                }
                Ok(None) => self.remove(token),
                Err(_) => {
                    tracing::error!("a participant session panicked; it stops");
                    self.remove(token);
                }
            }
        }
        // Keep the allocation for the next round.
        self.ready = ready;
    }

    /// Drops stale timer entries once they outnumber the live ones by far.
    fn prune_timers(&mut self) {
        if self.timers.len() > 4 * self.sessions.len() + 1024 {
            let sessions = &self.sessions;
            self.timers.retain(|Reverse((at, token))| {
                sessions.get(token).is_some_and(|s| s.wake == Some(*at))
            });
        }
    }
}

fn register(registry: &Registry, session: &Session, token: usize) -> std::io::Result<()> {
    let fd = session.transport().fd();
    registry.register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
}

fn deregister(registry: &Registry, session: &Session) {
    let fd = session.transport().fd();
    // Already gone with its socket (a restart replaced it): nothing to undo.
    let _ = registry.deregister(&mut SourceFd(&fd));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Participant, ParticipantConfig, ParticipantStats};

    /// A bounded wait for what a busy box may take a while to show.
    const LONG: Duration = Duration::from_secs(30);

    fn config(driver: &Driver) -> ParticipantConfig {
        // Signalling is done by the test: the URL and token are never used.
        let mut config = ParticipantConfig::new("http://127.0.0.1:9/unused", "unused");
        config.driver = Some(driver.clone());
        config
    }

    /// A publisher and a subscriber connected to each other over loopback, both on `driver`.
    async fn pair(driver: &Driver) -> (Participant, Participant) {
        let subscriber = Arc::new(Mutex::new(None));
        let answered = subscriber.clone();
        let answer_config = config(driver).subscriber_only();
        let publisher = Participant::publish_via(config(driver), |offer| async move {
            let (me, answer) = Participant::answer(answer_config, &offer, Instant::now())?;
            if let Ok(mut slot) = answered.lock() {
                *slot = Some(me);
            }
            Ok(answer)
        })
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
        let subscriber = subscriber
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_else(|| panic!("no subscriber"));
        (publisher, subscriber)
    }

    fn audio_packets(stats: &ParticipantStats) -> u64 {
        stats
            .tracks
            .iter()
            .filter(|t| t.kind == "audio")
            .map(|t| t.packets)
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_driver_thread_carries_many_sessions() {
        let driver = Driver::new(1).unwrap_or_else(|e| panic!("{e}"));
        let mut pairs = Vec::new();
        for _ in 0..8 {
            pairs.push(pair(&driver).await);
        }
        assert_eq!((driver.threads(), driver.sessions()), (1, 16));
        for (publisher, subscriber) in &pairs {
            let got = subscriber.wait_for(LONG, |s| audio_packets(s) > 10).await;
            assert!(got.connected, "{got:?}");
            assert!(audio_packets(&got) > 10, "{got:?}");
            assert!(publisher.stats().sent_packets > 0);
        }
        for (publisher, subscriber) in pairs {
            publisher.vanish();
            subscriber.vanish();
        }
        assert_eq!(driver.sessions(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_that_stops_does_not_disturb_the_others() {
        let driver = Driver::new(1).unwrap_or_else(|e| panic!("{e}"));
        let mut pairs = Vec::new();
        for _ in 0..3 {
            pairs.push(pair(&driver).await);
        }
        for (_, subscriber) in &pairs {
            subscriber.wait_for(LONG, |s| audio_packets(s) > 0).await;
        }
        let (publisher, subscriber) = pairs.remove(0);
        let gone = subscriber.stats();
        subscriber.vanish();
        assert_eq!(driver.sessions(), 5);
        // Its publisher no longer hears from it, the others still flow.
        for (_, subscriber) in &pairs {
            let before = audio_packets(&subscriber.stats());
            let got = subscriber
                .wait_for(LONG, |s| audio_packets(s) > before + 25)
                .await;
            assert!(audio_packets(&got) > before + 25, "{got:?}");
        }
        assert!(gone.connected, "{gone:?}");
        publisher.vanish();
        assert_eq!(driver.sessions(), 4);
    }

    #[test]
    fn the_shared_driver_is_made_once() {
        let a = Driver::shared().unwrap_or_else(|e| panic!("{e}"));
        let b = Driver::shared().unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        assert!(a.threads() >= 1);
    }
}
