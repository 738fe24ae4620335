//! The case workers: a few threads that run accepted cases, fed by a bounded queue.
//!
//! Intake reserves a queue slot *before* it makes a request durable ([`Workers::admit`]),
//! so a full queue is answered `429` without storing anything and an accepted case always
//! has a place in the queue. Case work is CPU (rules, templates) plus blocking connector
//! calls, which is why it runs on its own threads, off the async runtime. A worker does not
//! wait for a segment's commit to sync: it runs the next case meanwhile, and the segment is
//! recorded once its commit is durable (ADR 0031). On shutdown the workers finish the case
//! in hand, the commits they left syncing land, and they stop; cases still queued keep
//! their stored work and are resumed by recovery at the next start.
//!
//! Recovery goes through the same pool ([`Workers::recover`]): the cases left from the last
//! run are fed to the queue a few at a time, so they run at the pool's full throughput
//! while new requests interleave with them, and the box is ready as soon as its workers run.
//!
//! A panic while running a case must not cost a worker: the pool would silently shrink,
//! and the case, still holding its stored work, would panic again at every start. Each job
//! runs under `catch_unwind`; a case whose segment panicked is failed with an incident id.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use casegraph_engine::runner::Runner;
use casegraph_engine::store::CaseStatus;

mod recovery;

use crate::metrics::Metrics;
use crate::webhook::Notifier;
use recovery::{Recovery, RecoveryDone};

/// How many cases each worker may leave syncing while it runs the next ones.
const IN_FLIGHT_PER_WORKER: usize = 4;

/// How long a stop waits for the commits the workers left syncing.
const STOP_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

enum Job {
    /// An accepted case (intake holds a queue place for it).
    Case(String),
    /// A case left from the last run (fed by recovery, outside the intake queue's count).
    Recover(String),
    Stop,
}

/// The worker pool and its queue.
pub struct Workers {
    tx: Mutex<mpsc::Sender<Job>>,
    queued: AtomicUsize,
    depth: usize,
    /// Signalled whenever a queue place frees up, for the requests held for one.
    freed: tokio::sync::Notify,
    /// Requests held for a queue place ([`Workers::admit_within`]), at most `depth`.
    holding: tokio::sync::Semaphore,
    stopping: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Worker threads running; a panic in a job never ends one.
    alive: Arc<AtomicUsize>,
    recovery: Recovery,
    /// The thread feeding recovery jobs, joined on stop.
    feeder: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    /// Cases whose worker went on while their commit syncs.
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// A reserved queue place; released on drop unless a case was put in it.
#[derive(Debug)]
pub struct Slot {
    workers: Arc<Workers>,
    used: bool,
}

impl Slot {
    /// Queues the case in the reserved place.
    pub fn send(mut self, case_id: String) {
        self.used = true;
        let sent = self
            .workers
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Job::Case(case_id.clone()));
        if sent.is_err() {
            // The workers are gone (shutting down): the case's work is stored and recovery
            // resumes it at the next start.
            self.workers.release();
            tracing::info!(case = %case_id, "workers stopped; the case resumes at the next start");
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.used {
            self.workers.release();
        }
    }
}

/// What runs a case's stored work and reacts to where it ended.
#[derive(Clone, Debug)]
pub struct CaseRunner {
    pub runner: Arc<Runner>,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
}

impl CaseRunner {
    /// Runs the case's stored work and records the result. A panic inside the segment is
    /// caught here: the case is failed with an incident id (its stored work would panic
    /// again at every start) and the caller's thread goes on.
    /// Returns where the segment left the case (`None` if it could not run).
    pub fn process(&self, case_id: &str) -> Option<CaseStatus> {
        let started = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.runner.process(case_id))) {
            Ok(Ok(status)) => {
                self.finished(case_id, status, started);
                Some(status)
            }
            Ok(Err(e)) => {
                tracing::error!(case = %case_id, "case could not be processed: {e}");
                None
            }
            Err(panic) => self.panicked(case_id, panic.as_ref(), started, &crate::incident::id()),
        }
    }

    /// Fails a case whose segment panicked, logging it as `incident`. The panic message
    /// goes to the log only: it may quote case data, and the case's error (and its audit
    /// record) must not.
    pub fn panicked(
        &self,
        case_id: &str,
        panic: &(dyn std::any::Any + Send),
        started: Instant,
        incident: &str,
    ) -> Option<CaseStatus> {
        let what = crate::incident::panic_message(panic);
        tracing::error!(case = %case_id, incident = %incident, "the case's segment panicked: {what}");
        let reason = format!(
            "internal error while running the case (incident {incident}); the box's log has the details"
        );
        match self.runner.fail(case_id, &reason) {
            Ok(status) => {
                self.finished(case_id, status, started);
                Some(status)
            }
            Err(e) => {
                tracing::error!(case = %case_id, incident = %incident, "the case could not be failed: {e}");
                None
            }
        }
    }

    /// Runs the case's stored work like [`CaseRunner::process`], but returns as soon as
    /// the segment's batch is handed to the store: the worker runs the next case while
    /// this one's commit syncs. The segment is recorded (metrics, notification) once its
    /// commit is durable, and `leave` is dropped then. The case's lock is held until then,
    /// so nothing reads the case between the segment and its commit.
    fn process_then(&self, case_id: &str, leave: Leave) {
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let notifier = self.notifier.clone();
        let id = case_id.to_string();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.runner.process_then(case_id, move |processed| {
                let _leave = leave;
                match processed {
                    Ok(p) => {
                        record_segment(&metrics, &id, p.status, started);
                        // A final case, or one that asked the customer a question: the
                        // notification the segment stored goes out now, not at the
                        // sender's next sweep.
                        if p.notify {
                            notifier.notify(&id);
                        }
                    }
                    Err(e) => tracing::error!(case = %id, "case could not be processed: {e}"),
                }
            })
        }));
        if let Err(panic) = run {
            self.panicked(case_id, panic.as_ref(), started, &crate::incident::id());
        }
    }

    /// Records a segment that ended with `status`; notifies the requester of a final one.
    pub fn finished(&self, case_id: &str, status: CaseStatus, started: Instant) {
        record_segment(&self.metrics, case_id, status, started);
        // A final case, or one that asked the customer a question: its notification (if
        // the segment stored one) goes out now, not at the sender's next sweep.
        if status.is_final() || status == CaseStatus::Waiting {
            self.notify(case_id);
        }
    }

    /// Hands the case's stored notification (if it has one) to the sender. The entry was
    /// written with the final segment, so nothing is lost if this never happens.
    fn notify(&self, case_id: &str) {
        match self.runner.notification(case_id) {
            Ok(Some(_)) => self.notifier.notify(case_id),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(case = %case_id, "cannot read the stored notification; the sweep sends it: {e}")
            }
        }
    }
}

/// Counts a segment that ended with `status` and how long it took.
fn record_segment(metrics: &Metrics, case_id: &str, status: CaseStatus, started: Instant) {
    metrics
        .segment_duration
        .observe(started.elapsed().as_secs_f64());
    metrics
        .segments
        .get_or_create(&crate::metrics::StatusLabels {
            status: status.as_str().to_string(),
        })
        .inc();
    tracing::debug!(case = %case_id, status = status.as_str(), "segment done");
}

/// Cases whose last commit is still syncing after their worker went on: bounded, so a
/// disk that stalls holds the workers instead of piling up batches, and drained at stop.
struct InFlight {
    state: Mutex<InFlightState>,
    changed: Condvar,
    limit: usize,
}

#[derive(Default)]
struct InFlightState {
    count: usize,
    waiting: usize,
}

/// One case in flight; dropped when its commit is durable (or failed).
struct Leave(Arc<InFlight>);

impl InFlight {
    fn new(limit: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            state: Mutex::new(InFlightState::default()),
            changed: Condvar::new(),
            limit: limit.max(1),
        })
    }

    /// Waits for a place below the limit and takes it.
    fn enter(self: &Arc<Self>) -> Leave {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.count >= self.limit {
            s.waiting += 1;
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            s.waiting -= 1;
        }
        s.count += 1;
        Leave(self.clone())
    }

    /// Waits until no case is in flight, at most `timeout`; whether none is.
    fn drain(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s.waiting += 1;
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            s.waiting -= 1;
        }
        true
    }
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.count -= 1;
        if s.waiting > 0 {
            self.0.changed.notify_all();
        }
    }
}

impl Workers {
    /// Starts `threads` workers with a queue of `depth` cases, each running `nice` steps
    /// below the threads that start them (see [`crate::priority`]).
    pub fn start(
        threads: usize,
        depth: usize,
        nice: u8,
        cases: CaseRunner,
    ) -> std::io::Result<Arc<Workers>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = Arc::new(Workers {
            tx: Mutex::new(tx),
            queued: AtomicUsize::new(0),
            depth,
            freed: tokio::sync::Notify::new(),
            holding: tokio::sync::Semaphore::new(depth),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            alive: Arc::new(AtomicUsize::new(0)),
            recovery: Recovery::default(),
            feeder: Mutex::new(None),
            metrics: cases.metrics.clone(),
            in_flight: InFlight::new(threads * IN_FLIGHT_PER_WORKER),
        });
        let mut handles = Vec::new();
        for i in 0..threads {
            let rx = rx.clone();
            let cases = cases.clone();
            let w = workers.clone();
            let alive = Alive::new(workers.alive.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("case-worker-{i}"))
                    .spawn(move || {
                        let _alive = alive;
                        crate::priority::lower_this_thread(nice);
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let job = match job {
                                Ok(Job::Stop) | Err(_) => break,
                                Ok(job) => job,
                            };
                            // `CaseRunner::process` catches a segment's panic; this catches
                            // the rest (metrics, notification), so no job ends a worker.
                            let run =
                                std::panic::catch_unwind(AssertUnwindSafe(|| w.run(&cases, job)));
                            if run.is_err() {
                                tracing::error!("a case worker's job panicked; the worker goes on");
                            }
                        }
                    })?,
            );
        }
        *workers.threads.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        Ok(workers)
    }

    fn run(&self, cases: &CaseRunner, job: Job) {
        match job {
            Job::Case(id) => {
                self.release();
                if !self.stopping.load(Ordering::Relaxed) {
                    let leave = self.in_flight.enter();
                    cases.process_then(&id, leave);
                } // else: resumed by recovery next start
            }
            Job::Recover(id) => {
                // Counted done whatever happens, so the gauge cannot stick above zero.
                let _done = RecoveryDone(self);
                if !self.stopping.load(Ordering::Relaxed) {
                    cases.process(&id);
                    let left = self.recovery.left.fetch_sub(1, Ordering::Relaxed) - 1;
                    self.metrics.recovery_pending.set(left as i64);
                }
            }
            Job::Stop => {}
        }
    }

    /// Worker threads running.
    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::Relaxed)
    }

    /// Reserves a queue place, or `None` when the queue is full.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let before = self.queued.fetch_add(1, Ordering::Relaxed);
        if before >= self.depth || self.stopping.load(Ordering::Relaxed) {
            // No place was taken, so none frees up: the held requests are not woken.
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot {
            workers: self.clone(),
            used: false,
        })
    }

    /// Reserves a queue place, holding the caller up to `wait` for one when the queue is
    /// full (at most `depth` callers are held; the others get `None` at once). A client
    /// that sends again as soon as it is refused is slowed to the pace at which the workers
    /// take cases, instead of costing the box a refusal each time.
    pub async fn admit_within(self: &Arc<Self>, wait: std::time::Duration) -> Option<Slot> {
        if let Some(slot) = self.admit() {
            return Some(slot);
        }
        if wait.is_zero() {
            return None;
        }
        let _held = self.holding.try_acquire().ok()?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.admit() {
                return Some(slot);
            }
            if self.stopping.load(Ordering::Relaxed) {
                return None;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.admit();
            }
        }
    }

    /// A queue place frees up: one held request may take it.
    fn release(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }

    /// Cases waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Lets the workers finish the case in hand, then stops them and waits.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop_recovery();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            for _ in &handles {
                let _ = tx.send(Job::Stop);
            }
        }
        for h in handles {
            let _ = h.join();
        }
        // The commits the workers left syncing land (or fail) before the store closes.
        if !self.in_flight.drain(STOP_DRAIN) {
            tracing::warn!(
                "case commits still syncing after {STOP_DRAIN:?}; their cases resume at the next start"
            );
        }
        self.metrics.intake_queue.set(0);
    }
}

/// Counts a worker thread as running for as long as it lives.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: Arc<AtomicUsize>) -> Alive {
        count.fetch_add(1, Ordering::Relaxed);
        Alive(count)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;
    use std::time::Duration;

    use casegraph_engine::classify::{self, Classification};
    use casegraph_engine::exec::SystemClock;
    use casegraph_engine::intake::Received;
    use casegraph_engine::rules::Rules;
    use casegraph_engine::runner::{NewRequest, Parts};
    use casegraph_engine::store::Store;
    use casegraph_engine::workflow::Catalog;
    use serde_json::json;

    use super::*;

    /// Every request is a refund; one whose text says so panics (a bug in a segment).
    struct Refund;

    impl classify::Service for Refund {
        fn classify(&self, r: &Received) -> Result<Classification, classify::Error> {
            assert!(
                r.request.text.as_deref() != Some("panic"),
                "a bug in the segment"
            );
            Ok(Classification {
                model: Some("test".into()),
                ..Classification::new(Some("request_refund".into()), 0.97)
            })
        }
    }

    fn pool(dir: &Path, threads: usize) -> (Arc<Workers>, Arc<Runner>) {
        let rules = Arc::new(Rules::default());
        let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let runner = Arc::new(Runner::new(Parts {
            store: Store::open(dir, &Default::default()).unwrap(),
            catalog: Arc::new(Catalog::load(&workflows, &rules).unwrap()),
            rules,
            connector: Arc::new(crate::backoffice::SimulatedBackOffice),
            classifier: Arc::new(Refund),
            clock: Arc::new(SystemClock),
            versions_dir: dir.join("versions"),
            priority_sla: casegraph_engine::runner::DEFAULT_PRIORITY_SLA,
            quiet_hours: None,
        }));
        let cases = CaseRunner {
            runner: runner.clone(),
            metrics: Arc::new(Metrics::new()),
            notifier: Notifier::start(
                &Default::default(),
                &crate::config::Roots::bundled(),
                &runner,
            ),
        };
        (Workers::start(threads, 64, 0, cases).unwrap(), runner)
    }

    fn accept(runner: &Runner, text: &str) -> String {
        let request = serde_json::from_value(json!({ "channel": "form", "language": "en",
            "customer_id": "C-100001", "text": text, "fields": { "amount": "25.00" } }))
        .unwrap();
        runner
            .accept(NewRequest {
                request,
                idempotency_key: None,
                submitted_by: None,
            })
            .unwrap()
            .case_id
    }

    fn wait_final(runner: &Runner, id: &str) -> casegraph_engine::store::CaseRecord {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (rec, _) = runner.case(id).unwrap().unwrap();
            if rec.status.is_final() {
                return rec;
            }
            assert!(Instant::now() < deadline, "case {id} did not end: {rec:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn cases_left_syncing_are_bounded_and_a_stop_waits_for_them() {
        let in_flight = InFlight::new(2);
        let first = in_flight.enter();
        let second = in_flight.enter();
        let f = in_flight.clone();
        let third = std::thread::spawn(move || drop(f.enter()));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!third.is_finished(), "a third case went in past the limit");
        assert!(
            !in_flight.drain(Duration::from_millis(50)),
            "a drain reports commits still syncing when it gives up"
        );
        // released on another thread, as the commit thread does
        std::thread::spawn(move || drop(first)).join().unwrap();
        third.join().unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(second);
        });
        assert!(
            in_flight.drain(Duration::from_secs(10)),
            "the last one landed"
        );
        late.join().unwrap();
    }

    #[test]
    fn a_panicking_case_fails_and_the_one_worker_runs_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (workers, runner) = pool(dir.path(), 1);
        for text in ["panic", "panic", "Please refund the order."] {
            let id = accept(&runner, text);
            workers.admit().unwrap().send(id.clone());
            let rec = wait_final(&runner, &id);
            if text == "panic" {
                assert_eq!(rec.status, CaseStatus::Failed);
                assert!(rec.error.unwrap().contains("internal error"));
            } else {
                assert_eq!(rec.status, CaseStatus::Completed, "{rec:?}");
            }
        }
        assert_eq!(workers.alive(), 1);
        assert!(runner.pending().unwrap().is_empty());
        workers.stop();
        assert_eq!(workers.alive(), 0);
    }

    #[test]
    fn recovery_runs_the_backlog_through_the_pool_and_new_work_goes_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let (workers, runner) = pool(dir.path(), 1);
        let left: Vec<String> = (0..40)
            .map(|_| accept(&runner, "Please refund the order."))
            .collect();
        workers.recover(left.clone()).unwrap();
        assert!(workers.recovery_pending() > 0);
        // A request accepted now waits behind a few left-over cases, not all of them.
        let new = accept(&runner, "Please refund the order.");
        workers.admit().unwrap().send(new.clone());
        wait_final(&runner, &new);
        let deadline = Instant::now() + Duration::from_secs(60);
        while workers.recovery_pending() > 0 {
            assert!(Instant::now() < deadline, "recovery did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The audit chain orders the commits: the new case's end is not after the backlog's.
        let ended = |id: &str| runner.case_audit(id).unwrap().last().unwrap().seq;
        let last = left.iter().map(|id| {
            wait_final(&runner, id);
            ended(id)
        });
        assert!(
            ended(&new) < last.max().unwrap(),
            "the new case ran before the backlog was done"
        );
        assert_eq!(workers.metrics.recovery_pending.get(), 0);
        workers.stop();
    }
}
