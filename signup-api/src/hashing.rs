//! Argon2id on a fixed pool of threads with a bounded, two-lane queue.
//!
//! - One thread per core, each owning its Argon2 working memory (19 MiB at OWASP's
//!   parameters) for its whole life: memory use is bounded by `threads × m`, never by load.
//! - Admission is decided up front from the queue's depth and the measured hash time: a
//!   job whose expected wait exceeds the latency budget is refused at once ([`Busy`]), so
//!   nothing queues unboundedly and nothing times out.
//! - Logins jump ahead of signups, and signups may fill only part of the budget, so a
//!   signup flood leaves room for existing users to log in.
//! - A job holds its place until a worker has finished it: a client that disconnects does
//!   not free capacity while its hash still runs. A job whose client left before it
//!   started is skipped (it would burn CPU for nobody).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use tokio::sync::oneshot;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl HashParams {
    /// OWASP's recommendation and the `argon2` crate's default: 19 MiB, 2 passes, 1 lane.
    pub const OWASP: Self = Self {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        let params = Params::new(self.m_kib, self.t, self.p, Some(OUTPUT_LEN))
            .map_err(|e| HashError::Params(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

const OUTPUT_LEN: usize = 32;

/// Bounds of [`Shared::trust_milli`].
const TRUST_MAX: u64 = 1000;
const TRUST_MIN: u64 = 200;
const SALT_LEN: usize = 16;

/// Which queue a job goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Verifying a password at login: served first.
    Login,
    /// Hashing a new password: limited to a share of the latency budget.
    Signup,
}

/// The queue is too deep to finish this job within the latency budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is at capacity; retry in {retry_after:?}")]
pub struct Busy {
    /// When the queue is expected to have drained enough.
    pub retry_after: Duration,
}

/// Hashing failures that are not about load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("the hashing pool has stopped")]
    Stopped,
}

/// What the pool is asked to compute.
enum Work {
    Hash(String),
    /// Verify against a stored PHC string, or against a dummy hash when the account does
    /// not exist, so unknown emails cost exactly what wrong passwords cost.
    Verify(String, Option<String>),
}

/// What it answers.
enum Output {
    Hashed(Result<String, HashError>),
    Verified(bool),
}

struct Job {
    lane: Lane,
    work: Work,
    reply: oneshot::Sender<Output>,
    enqueued: Instant,
}

#[derive(Default)]
struct Queues {
    logins: VecDeque<Job>,
    signups: VecDeque<Job>,
    running: usize,
    stopped: bool,
    /// Share of the recent starts that were logins while both lanes had work (EWMA,
    /// weight 1/16): what keeps a login flood from starving signups.
    contended_login_share: f64,
}

impl Queues {
    /// The next job to start: logins first, except when signups are waiting too and
    /// logins already had their share of the recent starts.
    fn pop_next(&mut self, max_login_share: f64) -> Option<Job> {
        if self.logins.is_empty() || self.signups.is_empty() {
            return self.logins.pop_front().or_else(|| self.signups.pop_front());
        }
        let login = self.contended_login_share < max_login_share;
        let sample = if login { 1.0 } else { 0.0 };
        self.contended_login_share += (sample - self.contended_login_share) / 16.0;
        if login {
            self.logins.pop_front()
        } else {
            self.signups.pop_front()
        }
    }
}

struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    threads: usize,
    budget: Duration,
    /// Fraction of the budget that signups may not use.
    login_reserve: f64,
    /// Most of the starts logins may take while signups wait.
    login_max_share: f64,
    /// Exponentially weighted mean of recent hash times, in nanoseconds.
    hash_nanos: AtomicU64,
    /// Feedback on the estimate, in thousandths (1000 = trust it fully). When jobs wait
    /// longer than their lane's budget (the machine slowed down faster than the mean
    /// followed), the admitted depth shrinks at once; it grows back slowly while waits
    /// stay well inside the budget.
    trust_milli: AtomicU64,
    params: HashParams,
    /// A hash of a random password, verified against for unknown emails.
    dummy: String,
}

impl Shared {
    /// The longest expected queueing delay `lane` may be admitted with.
    fn lane_budget(&self, lane: Lane) -> Duration {
        match lane {
            Lane::Login => self.budget,
            Lane::Signup => self.budget.mul_f64(1.0 - self.login_reserve),
        }
    }

    /// Adjusts the trust in the estimate from one job's real wait: multiplicative
    /// decrease on a miss, additive increase while comfortably inside the budget.
    fn learn(&self, lane: Lane, waited: Duration) {
        let budget = self.lane_budget(lane);
        let old = self.trust_milli.load(Ordering::Relaxed);
        let new = if waited > budget {
            (old * 85 / 100).max(TRUST_MIN)
        } else if waited < budget / 2 {
            (old + 5).min(TRUST_MAX)
        } else {
            old
        };
        if new != old {
            self.trust_milli.store(new, Ordering::Relaxed);
            metrics::gauge!("surge_api_hash_admission_trust").set(new as f64 / TRUST_MAX as f64);
        }
    }
}

/// Settings for [`HashPool::start`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub params: HashParams,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Longest expected queueing delay a job may be admitted with.
    pub budget: Duration,
    /// Share of the budget (0..1) kept for logins.
    pub login_reserve: f64,
    /// Most of the hashing starts (0..1) logins take while signups are waiting too; the
    /// rest go to signups, so a flood of logins (password guessing from many addresses)
    /// cannot starve signups. Never below `login_reserve`.
    pub login_max_share: f64,
}

/// The hashing pool; cheap to clone.
#[derive(Clone)]
pub struct HashPool {
    shared: Arc<Shared>,
    handles: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl HashPool {
    /// Starts the workers and measures one hash to seed the admission estimate.
    pub fn start(config: &PoolConfig) -> Result<Self, HashError> {
        let argon2 = config.params.argon2()?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            config.threads
        };
        let mut memory = vec![Block::default(); argon2.params().block_count()];
        let started = Instant::now();
        let dummy = hash_with(&argon2, &mut memory, &random_password())?;
        let measured = started.elapsed();
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            threads,
            budget: config.budget,
            login_reserve: config.login_reserve.clamp(0.0, 0.9),
            login_max_share: config
                .login_max_share
                .max(config.login_reserve)
                .clamp(0.1, 1.0),
            hash_nanos: AtomicU64::new(duration_nanos(measured)),
            trust_milli: AtomicU64::new(TRUST_MAX),
            params: config.params,
            dummy,
        });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let shared = shared.clone();
            let argon2 = argon2.clone();
            let handle = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&shared, &argon2))
                .map_err(|e| HashError::Argon2(format!("cannot start a hashing thread: {e}")))?;
            handles.push(handle);
        }
        metrics::gauge!("surge_api_hash_threads").set(threads as f64);
        Ok(Self {
            shared,
            handles: Arc::new(Mutex::new(handles)),
        })
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// The current estimate of one hash's duration.
    pub fn hash_time(&self) -> Duration {
        Duration::from_nanos(self.shared.hash_nanos.load(Ordering::Relaxed))
    }

    /// Would a job on `lane` be admitted now? (A cheap pre-check before database work;
    /// [`HashPool::hash`] and [`HashPool::verify`] check again.)
    pub fn check(&self, lane: Lane) -> Result<(), Busy> {
        let queues = self.lock();
        self.admit(&queues, lane)
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<Result<String, HashError>, Busy> {
        match self.submit(Lane::Signup, Work::Hash(password)).await? {
            Some(Output::Hashed(result)) => Ok(result),
            _ => Ok(Err(HashError::Stopped)),
        }
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is no
    /// account, at the same cost either way.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Busy> {
        match self
            .submit(Lane::Login, Work::Verify(password, phc))
            .await?
        {
            Some(Output::Verified(ok)) => Ok(ok),
            _ => Ok(false),
        }
    }

    /// Stops the workers after the jobs already queued.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.shared.wake.notify_all();
        let handles =
            std::mem::take(&mut *self.handles.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in handles {
            let _ = handle.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A worker panicking mid-hash leaves the queues consistent (it holds no lock while
        // hashing), so a poisoned lock is safe to keep using.
        self.shared
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self, queues: &Queues, lane: Lane) -> Result<(), Busy> {
        let s = &self.shared;
        let hash = self.hash_time().as_secs_f64();
        let threads = s.threads as f64;
        let waiting_all = (queues.logins.len() + queues.signups.len() + queues.running) as f64;
        let trust = s.trust_milli.load(Ordering::Relaxed) as f64 / TRUST_MAX as f64;
        let ahead = match lane {
            // Logins jump the signup queue: only running jobs and other logins are ahead,
            // and while signups wait, logins get only their share of the starts.
            Lane::Login if queues.signups.is_empty() => {
                (queues.logins.len() + queues.running) as f64
            }
            Lane::Login => queues.logins.len() as f64 / s.login_max_share + queues.running as f64,
            Lane::Signup => waiting_all,
        };
        // Logins are few and go first; the feedback governs the flood lane only.
        let budget = match lane {
            Lane::Login => s.lane_budget(lane).as_secs_f64(),
            Lane::Signup => s.lane_budget(lane).as_secs_f64() * trust,
        };
        // With `ahead` jobs in front, this job starts after about ahead/threads hash times
        // (jobs in front of it that are running have on average half their time left, but
        // counting them whole keeps the promise on the safe side).
        let expected_wait = ahead / threads * hash;
        if expected_wait <= budget {
            return Ok(());
        }
        metrics::counter!("surge_api_hash_rejected_total", "lane" => lane_name(lane)).increment(1);
        let drain = waiting_all / threads * hash - budget;
        Err(Busy {
            retry_after: Duration::from_secs_f64(drain.max(hash).max(0.001)),
        })
    }

    async fn submit(&self, lane: Lane, work: Work) -> Result<Option<Output>, Busy> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queues = self.lock();
            if queues.stopped {
                return Ok(None);
            }
            self.admit(&queues, lane)?;
            let job = Job {
                lane,
                work,
                reply,
                enqueued: Instant::now(),
            };
            match lane {
                Lane::Login => queues.logins.push_back(job),
                Lane::Signup => queues.signups.push_back(job),
            }
            metrics::gauge!("surge_api_hash_queue_depth")
                .set((queues.logins.len() + queues.signups.len()) as f64);
        }
        self.shared.wake.notify_one();
        Ok(answer.await.ok())
    }
}

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Login => "login",
        Lane::Signup => "signup",
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn random_password() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn worker(shared: &Shared, argon2: &Argon2<'static>) {
    // This thread's Argon2 memory, reused for every job.
    let mut memory = vec![Block::default(); argon2.params().block_count()];
    loop {
        let job = {
            let mut queues = shared.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let job = loop {
                if let Some(job) = queues.pop_next(shared.login_max_share) {
                    if job.reply.is_closed() {
                        // The client left before its job started: skip it, it would burn
                        // CPU for nobody (nothing was running, so nothing is freed early).
                        metrics::counter!("surge_api_hash_skipped_total").increment(1);
                        continue;
                    }
                    // Counted as running in the same critical section as the pop, so
                    // admission never sees the job in neither place.
                    queues.running += 1;
                    break job;
                }
                if queues.stopped {
                    return;
                }
                queues = shared
                    .wake
                    .wait(queues)
                    .unwrap_or_else(PoisonError::into_inner);
            };
            metrics::gauge!("surge_api_hash_queue_depth")
                .set((queues.logins.len() + queues.signups.len()) as f64);
            job
        };
        let started = Instant::now();
        let waited = started.duration_since(job.enqueued);
        metrics::histogram!("surge_api_hash_queue_wait_seconds").record(waited.as_secs_f64());
        if job.lane == Lane::Signup {
            shared.learn(job.lane, waited);
        }
        let output = match job.work {
            Work::Hash(password) => Output::Hashed(hash_with(argon2, &mut memory, &password)),
            Work::Verify(password, phc) => {
                let target = phc.as_deref().unwrap_or(&shared.dummy);
                let ok = verify_with(argon2, &shared.params, &mut memory, &password, target);
                Output::Verified(ok && phc.is_some())
            }
        };
        let took = started.elapsed();
        metrics::histogram!(surge_cluster::telemetry::HASH_SECONDS).record(took.as_secs_f64());
        // EWMA with weight 1/8: follows the machine's load within a few dozen hashes.
        let old = shared.hash_nanos.load(Ordering::Relaxed);
        let new = old - old / 8 + duration_nanos(took) / 8;
        shared.hash_nanos.store(new, Ordering::Relaxed);
        // Capacity is released only now that the hash is done, whoever is still waiting.
        shared
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running -= 1;
        let _ = job.reply.send(output);
    }
}

fn hash_with(
    argon2: &Argon2<'static>,
    memory: &mut [Block],
    password: &str,
) -> Result<String, HashError> {
    let salt: [u8; SALT_LEN] = rand::random();
    let mut out = [0u8; OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut *memory)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    let p = argon2.params();
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        p.m_cost(),
        p.t_cost(),
        p.p_cost(),
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// A parsed `$argon2id$v=19$m=…,t=…,p=…$salt$hash` string.
struct Phc {
    params: HashParams,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

fn parse_phc(phc: &str) -> Option<Phc> {
    let mut parts = phc.split('$');
    if !parts.next()?.is_empty() || parts.next()? != "argon2id" || parts.next()? != "v=19" {
        return None;
    }
    let mut params = HashParams {
        m_kib: 0,
        t: 0,
        p: 0,
    };
    for kv in parts.next()?.split(',') {
        let (k, v) = kv.split_once('=')?;
        let v: u32 = v.parse().ok()?;
        match k {
            "m" => params.m_kib = v,
            "t" => params.t = v,
            "p" => params.p = v,
            _ => return None,
        }
    }
    let salt = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    let hash = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    Some(Phc { params, salt, hash })
}

fn verify_with(
    argon2: &Argon2<'static>,
    params: &HashParams,
    memory: &mut [Block],
    password: &str,
    phc: &str,
) -> bool {
    let Some(parsed) = parse_phc(phc) else {
        return false;
    };
    let mut out = vec![0u8; parsed.hash.len()];
    let result = if parsed.params == *params && parsed.hash.len() == OUTPUT_LEN {
        argon2.hash_password_into_with_memory(password.as_bytes(), &parsed.salt, &mut out, memory)
    } else {
        // Hashed under other parameters (a config change): rare, so fresh memory is fine.
        match Params::new(
            parsed.params.m_kib,
            parsed.params.t,
            parsed.params.p,
            Some(parsed.hash.len()),
        ) {
            Ok(p) => Argon2::new(Algorithm::Argon2id, Version::V0x13, p).hash_password_into(
                password.as_bytes(),
                &parsed.salt,
                &mut out,
            ),
            Err(e) => Err(e),
        }
    };
    result.is_ok() && constant_time_eq(&out, &parsed.hash)
}

/// Compares without an early exit, so timing says nothing about where bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashParams = HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn pool(budget_ms: u64, threads: usize) -> HashPool {
        HashPool::start(&PoolConfig {
            params: CHEAP,
            threads,
            budget: Duration::from_millis(budget_ms),
            login_reserve: 0.25,
            login_max_share: 0.5,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let pool = pool(500, 2);
        let phc = pool.hash("correct horse".into()).await.unwrap().unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(
            pool.verify("correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong horse".into(), Some(phc)).await.unwrap());
        assert!(!pool.verify("anything".into(), None).await.unwrap());
        assert!(
            !pool
                .verify("x".into(), Some("$garbage".into()))
                .await
                .unwrap()
        );
        pool.stop();
    }

    #[test]
    fn hashes_under_other_parameters_still_verify() {
        let a = CHEAP.argon2().unwrap();
        let mut mem = vec![Block::default(); a.params().block_count()];
        let phc = hash_with(&a, &mut mem, "pw-0123456789").unwrap();
        let b = HashParams {
            m_kib: 128,
            ..CHEAP
        };
        let argon_b = b.argon2().unwrap();
        let mut mem_b = vec![Block::default(); argon_b.params().block_count()];
        assert!(verify_with(&argon_b, &b, &mut mem_b, "pw-0123456789", &phc));
        assert!(!verify_with(
            &argon_b,
            &b,
            &mut mem_b,
            "pw-0123456788",
            &phc
        ));
    }

    /// A client that leaves while its hash runs does not free the slot: the job stays
    /// counted until the worker has finished it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disconnect_does_not_free_a_running_slot() {
        let pool = HashPool::start(&PoolConfig {
            // Slow enough (hundreds of ms) that the checks below run while it hashes.
            params: HashParams {
                m_kib: 64 * 1024,
                t: 3,
                p: 1,
            },
            threads: 1,
            budget: Duration::from_secs(60),
            login_reserve: 0.25,
            login_max_share: 0.5,
        })
        .unwrap();
        let client = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.hash("correct horse battery".into()).await })
        };
        while pool.lock().running == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        client.abort();
        let _ = client.await;
        assert_eq!(
            pool.lock().running,
            1,
            "still counted after the client left"
        );
        while pool.lock().running == 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pool.stop();
    }

    #[test]
    fn missed_budgets_shrink_the_admitted_depth_then_it_recovers() {
        let pool = pool(100, 1);
        let s = &pool.shared;
        s.learn(Lane::Signup, Duration::from_millis(200));
        let after_miss = s.trust_milli.load(Ordering::Relaxed);
        assert_eq!(after_miss, 850);
        for _ in 0..100 {
            s.learn(Lane::Signup, Duration::from_millis(500));
        }
        assert_eq!(s.trust_milli.load(Ordering::Relaxed), TRUST_MIN);
        for _ in 0..1000 {
            s.learn(Lane::Signup, Duration::from_millis(1));
        }
        assert_eq!(s.trust_milli.load(Ordering::Relaxed), TRUST_MAX);
        pool.stop();
    }

    #[test]
    fn admission_refuses_deep_queues_and_keeps_room_for_logins() {
        let pool = pool(100, 1);
        pool.shared.hash_nanos.store(10_000_000, Ordering::Relaxed); // 10 ms per hash
        let mut queues = Queues::default();
        let dummy = || {
            let (reply, _) = oneshot::channel();
            Job {
                lane: Lane::Signup,
                work: Work::Hash(String::new()),
                reply,
                enqueued: Instant::now(),
            }
        };
        // Signups may fill 75 ms of the 100 ms budget: 7 ahead is 70 ms, fine; 8 is not.
        for _ in 0..7 {
            queues.signups.push_back(dummy());
        }
        assert!(pool.admit(&queues, Lane::Signup).is_ok());
        queues.signups.push_back(dummy());
        let busy = pool.admit(&queues, Lane::Signup).unwrap_err();
        assert!(busy.retry_after > Duration::ZERO);
        // Logins do not wait behind signups.
        assert!(pool.admit(&queues, Lane::Login).is_ok());
        for _ in 0..11 {
            queues.logins.push_back(dummy());
        }
        assert!(pool.admit(&queues, Lane::Login).is_err());
        pool.stop();
    }

    fn job(lane: Lane) -> Job {
        let (reply, _) = oneshot::channel();
        Job {
            lane,
            work: Work::Hash(String::new()),
            reply,
            enqueued: Instant::now(),
        }
    }

    /// A flood of logins (a botnet guessing passwords) keeps at most its share of the
    /// starts while signups wait; alone, logins take everything, and they still go first.
    #[test]
    fn a_login_flood_does_not_starve_signups() {
        let mut queues = Queues::default();
        for _ in 0..1000 {
            queues.logins.push_back(job(Lane::Login));
        }
        for _ in 0..100 {
            queues.signups.push_back(job(Lane::Signup));
        }
        let first = queues.pop_next(0.5).map(|j| j.lane);
        assert_eq!(first, Some(Lane::Login), "logins still go first");
        let mut signups = 0;
        for _ in 0..99 {
            if queues.pop_next(0.5).map(|j| j.lane) == Some(Lane::Signup) {
                signups += 1;
            }
        }
        assert!(
            (45..=55).contains(&signups),
            "signups got {signups} of 99 starts under a login flood"
        );
        while !queues.signups.is_empty() {
            queues.pop_next(0.5);
        }
        assert_eq!(queues.pop_next(0.5).map(|j| j.lane), Some(Lane::Login));
        // A lane alone is served without a share.
        let mut only_signups = Queues::default();
        for _ in 0..10 {
            only_signups.signups.push_back(job(Lane::Signup));
        }
        assert_eq!(
            std::iter::from_fn(|| only_signups.pop_next(0.5)).count(),
            10
        );
    }
}
