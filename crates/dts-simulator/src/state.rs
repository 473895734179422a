//! The simulator's mutable state, shared by the HTTP handlers and the test-facing handle.
//!
//! Owns: registered access keys and expired tokens, seen nonces, the answer queues, gates, the
//! call record, in-flight accounting, STS settings and the simulated clock. No I/O; all locks are
//! short and never held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::answer::Answer;
use crate::flow::{Buckets, RateLimit};
use crate::jobs::Job;
use crate::oidc::OidcProvider;
use crate::record::RecordedCall;
use crate::verify::{KeyRecord, KeyStore};

pub(crate) struct Shared {
    pub(crate) max_skew: Duration,
    m: Mutex<Mutable>,
    /// Bumped whenever the number of requests held at some gate changes.
    gate_events: watch::Sender<u64>,
    /// True once the simulator is shutting down: held requests give up.
    pub(crate) shutdown: watch::Sender<bool>,
}

struct Gate {
    open: watch::Sender<bool>,
    waiters: usize,
}

struct Mutable {
    keys: HashMap<String, KeyRecord>,
    expired_tokens: HashSet<String>,
    nonces: HashSet<(String, String)>,
    scripts: HashMap<String, VecDeque<Answer>>,
    default_answer: Answer,
    calls: Vec<RecordedCall>,
    in_flight: HashMap<(String, String), usize>,
    max_in_flight: HashMap<(String, String), usize>,
    gates: HashMap<String, Gate>,
    sts_validity: Option<Duration>,
    valid_oidc_tokens: Option<HashSet<String>>,
    oidc_provider: Option<OidcProvider>,
    clock_offset: jiff::SignedDuration,
    jobs: HashMap<String, Job>,
    missing_jobs: HashSet<String>,
    read_scripts: HashMap<String, VecDeque<Answer>>,
    reset_delay: Duration,
    flow: Option<Buckets>,
}

impl Shared {
    pub(crate) fn new(max_skew: Duration, sts_validity: Option<Duration>) -> Shared {
        Shared {
            max_skew,
            m: Mutex::new(Mutable {
                keys: HashMap::new(),
                expired_tokens: HashSet::new(),
                nonces: HashSet::new(),
                scripts: HashMap::new(),
                default_answer: Answer::Success,
                calls: Vec::new(),
                in_flight: HashMap::new(),
                max_in_flight: HashMap::new(),
                gates: HashMap::new(),
                sts_validity,
                valid_oidc_tokens: None,
                oidc_provider: None,
                clock_offset: jiff::SignedDuration::ZERO,
                jobs: HashMap::new(),
                missing_jobs: HashSet::new(),
                read_scripts: HashMap::new(),
                reset_delay: Duration::ZERO,
                flow: None,
            }),
            gate_events: watch::channel(0).0,
            shutdown: watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        // A panic while holding the lock leaves consistent data (every critical section is a few
        // assignments), so keep going rather than cascade the panic into every test assertion.
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    // --- clock -----------------------------------------------------------------------------

    pub(crate) fn now(&self) -> jiff::Timestamp {
        let offset = self.lock().clock_offset;
        jiff::Timestamp::now()
            .checked_add(offset)
            .unwrap_or_else(|_| jiff::Timestamp::now())
    }

    pub(crate) fn set_clock_offset(&self, offset: jiff::SignedDuration) {
        self.lock().clock_offset = offset;
    }

    // --- keys ------------------------------------------------------------------------------

    pub(crate) fn add_key(&self, id: &str, record: KeyRecord) {
        self.lock().keys.insert(id.to_owned(), record);
    }

    pub(crate) fn expire_token(&self, token: &str) {
        self.lock().expired_tokens.insert(token.to_owned());
    }

    // --- scripts ---------------------------------------------------------------------------

    pub(crate) fn script(&self, job: &str, answers: impl IntoIterator<Item = Answer>) {
        self.lock()
            .scripts
            .entry(job.to_owned())
            .or_default()
            .extend(answers);
    }

    pub(crate) fn set_default_answer(&self, answer: Answer) {
        self.lock().default_answer = answer;
    }

    pub(crate) fn next_answer(&self, job: &str) -> Answer {
        let mut m = self.lock();
        match m.scripts.get_mut(job).and_then(VecDeque::pop_front) {
            Some(a) => a,
            None => m.default_answer.clone(),
        }
    }

    // --- jobs ------------------------------------------------------------------------------

    /// Job `id` as it is at `now` (`None`: DTS has no such job).
    pub(crate) fn job(&self, id: &str, now: jiff::Timestamp) -> Option<Job> {
        let mut m = self.lock();
        if m.missing_jobs.contains(id) {
            return None;
        }
        let job = m
            .jobs
            .entry(id.to_owned())
            .or_insert_with(|| Job::synchronizing(id, now));
        job.settle(now);
        Some(job.clone())
    }

    pub(crate) fn set_job(&self, id: &str, job: Option<Job>) {
        let mut m = self.lock();
        match job {
            Some(j) => {
                m.missing_jobs.remove(id);
                m.jobs.insert(id.to_owned(), j);
            }
            None => {
                m.jobs.remove(id);
                m.missing_jobs.insert(id.to_owned());
            }
        }
    }

    /// An executed reset of job `id`.
    pub(crate) fn reset_job(&self, id: &str, now: jiff::Timestamp) {
        let mut m = self.lock();
        let delay = m.reset_delay;
        if m.missing_jobs.contains(id) {
            return;
        }
        m.jobs
            .entry(id.to_owned())
            .or_insert_with(|| Job::synchronizing(id, now))
            .reset(now, delay);
    }

    pub(crate) fn set_reset_delay(&self, delay: Duration) {
        self.lock().reset_delay = delay;
    }

    pub(crate) fn script_reads(&self, job: &str, answers: impl IntoIterator<Item = Answer>) {
        self.lock()
            .read_scripts
            .entry(job.to_owned())
            .or_default()
            .extend(answers);
    }

    /// The next scripted answer to a read of `job`; `Success` (the job as it is) by default.
    pub(crate) fn next_read_answer(&self, job: &str) -> Answer {
        self.lock()
            .read_scripts
            .get_mut(job)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Success)
    }

    pub(crate) fn pending_answers(&self, job: &str) -> usize {
        self.lock().scripts.get(job).map_or(0, VecDeque::len)
    }

    // --- flow control ----------------------------------------------------------------------

    /// Sets (or with `None` lifts) the server-side limit; buckets start full.
    pub(crate) fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.lock().flow = limit.map(Buckets::new);
    }

    /// Whether a call by `key` to `action` passes flow control now (always, without a limit).
    pub(crate) fn admit(&self, key: &str, action: &str) -> bool {
        let now = std::time::Instant::now();
        self.lock()
            .flow
            .as_mut()
            .is_none_or(|b| b.admit(key, action, now))
    }

    // --- STS -------------------------------------------------------------------------------

    pub(crate) fn set_sts_validity(&self, validity: Duration) {
        self.lock().sts_validity = Some(validity);
    }

    pub(crate) fn sts_validity(&self) -> Option<Duration> {
        self.lock().sts_validity
    }

    pub(crate) fn add_valid_oidc_token(&self, token: &str) {
        self.lock()
            .valid_oidc_tokens
            .get_or_insert_with(HashSet::new)
            .insert(token.to_owned());
    }

    pub(crate) fn oidc_token_valid(&self, token: &str) -> bool {
        match &self.lock().valid_oidc_tokens {
            Some(valid) => valid.contains(token),
            None => !token.is_empty(),
        }
    }

    pub(crate) fn set_oidc_provider(&self, provider: OidcProvider) {
        self.lock().oidc_provider = Some(provider);
    }

    pub(crate) fn oidc_provider(&self) -> Option<OidcProvider> {
        self.lock().oidc_provider.clone()
    }

    // --- record ----------------------------------------------------------------------------

    /// Appends a call, assigning its `seq`; returns the seq.
    pub(crate) fn push_call(&self, mut call: RecordedCall) -> u64 {
        let mut m = self.lock();
        let seq = m.calls.len() as u64 + 1;
        call.seq = seq;
        m.calls.push(call);
        seq
    }

    pub(crate) fn update_call(&self, seq: u64, f: impl FnOnce(&mut RecordedCall)) {
        let mut m = self.lock();
        if let Some(call) = usize::try_from(seq - 1)
            .ok()
            .and_then(|i| m.calls.get_mut(i))
        {
            f(call);
        }
    }

    pub(crate) fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    pub(crate) fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    // --- concurrency -----------------------------------------------------------------------

    pub(crate) fn enter(self: &Arc<Self>, region: &str, job: &str) -> InFlight {
        let key = (region.to_owned(), job.to_owned());
        let mut m = self.lock();
        let now = {
            let n = m.in_flight.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        let max = m.max_in_flight.entry(key.clone()).or_default();
        *max = (*max).max(now);
        InFlight {
            shared: self.clone(),
            key,
        }
    }

    pub(crate) fn max_in_flight(&self, region: &str, job: &str) -> usize {
        self.lock()
            .max_in_flight
            .get(&(region.to_owned(), job.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn in_flight(&self, region: &str, job: &str) -> usize {
        self.lock()
            .in_flight
            .get(&(region.to_owned(), job.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    // --- gates -----------------------------------------------------------------------------

    fn gate_entry<'a>(m: &'a mut Mutable, name: &str) -> &'a mut Gate {
        m.gates.entry(name.to_owned()).or_insert_with(|| Gate {
            open: watch::channel(false).0,
            waiters: 0,
        })
    }

    pub(crate) fn open_gate(&self, name: &str) {
        Self::gate_entry(&mut self.lock(), name)
            .open
            .send_replace(true);
        self.gate_events.send_modify(|n| *n += 1);
    }

    pub(crate) fn close_gate(&self, name: &str) {
        Self::gate_entry(&mut self.lock(), name)
            .open
            .send_replace(false);
        self.gate_events.send_modify(|n| *n += 1);
    }

    pub(crate) fn gate_waiters(&self, name: &str) -> usize {
        self.lock().gates.get(name).map_or(0, |g| g.waiters)
    }

    /// Waits until gate `name` is open (returns at once if it already is).
    pub(crate) async fn pass_gate(self: &Arc<Self>, name: &str) {
        let mut rx = {
            let mut m = self.lock();
            let gate = Self::gate_entry(&mut m, name);
            gate.waiters += 1;
            gate.open.subscribe()
        };
        self.gate_events.send_modify(|n| *n += 1);
        let _waiter = GateWaiter {
            shared: self.clone(),
            name: name.to_owned(),
        };
        // The sender lives in the map for the simulator's lifetime, so this only ends when open.
        let _ = rx.wait_for(|open| *open).await;
    }

    pub(crate) async fn wait_for_gate_waiters(&self, name: &str, n: usize) {
        let mut rx = self.gate_events.subscribe();
        loop {
            if self.gate_waiters(name) >= n {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Decrements the in-flight count for a (region, job) when the execution ends.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.shared.lock();
        if let Some(n) = m.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

struct GateWaiter {
    shared: Arc<Shared>,
    name: String,
}

impl Drop for GateWaiter {
    fn drop(&mut self) {
        {
            let mut m = self.shared.lock();
            let gate = Shared::gate_entry(&mut m, &self.name);
            gate.waiters = gate.waiters.saturating_sub(1);
        }
        self.shared.gate_events.send_modify(|n| *n += 1);
    }
}

impl KeyStore for Shared {
    fn lookup(&self, access_key_id: &str) -> Option<KeyRecord> {
        self.lock().keys.get(access_key_id).cloned()
    }

    fn use_nonce(&self, access_key_id: &str, nonce: &str) -> bool {
        self.lock()
            .nonces
            .insert((access_key_id.to_owned(), nonce.to_owned()))
    }

    fn token_expired(&self, token: &str) -> bool {
        self.lock().expired_tokens.contains(token)
    }
}
