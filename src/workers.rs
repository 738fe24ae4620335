//! The case workers: a few threads that run accepted cases, fed by a bounded queue.
//!
//! Intake reserves a queue slot *before* it makes a request durable ([`Workers::admit`]),
//! so a full queue is answered `429` without storing anything and an accepted case always
//! has a place in the queue. Case work is CPU (rules, templates) plus blocking connector
//! calls, which is why it runs on its own threads, off the async runtime. On shutdown the
//! workers finish the case in hand and stop; cases still queued keep their stored work and
//! are resumed by recovery at the next start.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use casegraph_engine::runner::Runner;
use casegraph_engine::store::CaseStatus;

use crate::metrics::Metrics;
use crate::webhook::Notifier;

enum Job {
    Case(String),
    Stop,
}

/// The worker pool and its queue.
pub struct Workers {
    tx: Mutex<mpsc::Sender<Job>>,
    queued: AtomicUsize,
    depth: usize,
    stopping: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
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
            self.workers.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(case = %case_id, "workers stopped; the case resumes at the next start");
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.used {
            self.workers.queued.fetch_sub(1, Ordering::Relaxed);
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
    /// Runs the case's stored work and records the result.
    pub fn process(&self, case_id: &str) {
        let started = Instant::now();
        match self.runner.process(case_id) {
            Ok(status) => self.finished(case_id, status, started),
            Err(e) => tracing::error!(case = %case_id, "case could not be processed: {e}"),
        }
    }

    /// Records a segment that ended with `status`; notifies the requester of a final one.
    pub fn finished(&self, case_id: &str, status: CaseStatus, started: Instant) {
        self.metrics
            .segment_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .segments
            .get_or_create(&crate::metrics::StatusLabels {
                status: status.as_str().to_string(),
            })
            .inc();
        tracing::debug!(case = %case_id, status = status.as_str(), "segment done");
        if status.is_final() {
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

impl Workers {
    /// Starts `threads` workers with a queue of `depth` cases.
    pub fn start(threads: usize, depth: usize, cases: CaseRunner) -> std::io::Result<Arc<Workers>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = Arc::new(Workers {
            tx: Mutex::new(tx),
            queued: AtomicUsize::new(0),
            depth,
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            metrics: cases.metrics.clone(),
        });
        let mut handles = Vec::new();
        for i in 0..threads {
            let rx = rx.clone();
            let cases = cases.clone();
            let w = workers.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("case-worker-{i}"))
                    .spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match job {
                                Ok(Job::Case(id)) => {
                                    w.queued.fetch_sub(1, Ordering::Relaxed);
                                    if w.stopping.load(Ordering::Relaxed) {
                                        continue; // resumed by recovery next start
                                    }
                                    cases.process(&id);
                                }
                                Ok(Job::Stop) | Err(_) => break,
                            }
                        }
                    })?,
            );
        }
        *workers.threads.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        Ok(workers)
    }

    /// Reserves a queue place, or `None` when the queue is full.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let before = self.queued.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            workers: self.clone(),
            used: false,
        };
        if before >= self.depth || self.stopping.load(Ordering::Relaxed) {
            drop(slot);
            return None;
        }
        Some(slot)
    }

    /// Cases waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Lets the workers finish the case in hand, then stops them and waits.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
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
        self.metrics.intake_queue.set(0);
    }
}
