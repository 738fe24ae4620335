//! Recovery through the worker pool: the cases left from the last run are fed to the
//! workers' queue a few at a time, so they run at the pool's full throughput while new
//! requests interleave with them, and a gauge counts those still to run. The box is ready
//! while this goes on: recovery is work for the pool, not a phase of the start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Job, Workers};

/// Recovery jobs in the queue or in a worker's hands, per worker: enough to keep every
/// worker busy, few enough that a request accepted now runs before the backlog is done.
const RECOVERY_WINDOW_PER_WORKER: usize = 2;

/// The cases left from the last run, as recovery works them off.
#[derive(Default)]
pub(super) struct Recovery {
    /// Left-over cases not yet run (the `casegraph_recovery_pending` gauge).
    pub(super) left: AtomicUsize,
    /// Recovery jobs handed to the queue and not finished.
    in_flight: Mutex<usize>,
    /// Signalled when a recovery job finishes or the pool stops.
    room: Condvar,
}

impl Workers {
    /// Runs the cases left from the last run through the pool, a few at a time (see
    /// [`RECOVERY_WINDOW_PER_WORKER`]); returns at once. [`Workers::recovery_pending`]
    /// counts down as they finish; a stop leaves the rest stored for the next start.
    pub fn recover(self: &Arc<Self>, cases: Vec<String>) -> std::io::Result<()> {
        // Added, not set: the service also resumes cases this way after a failed write,
        // possibly while an earlier recovery is still being worked off.
        let left = self.recovery.left.fetch_add(cases.len(), Ordering::Relaxed) + cases.len();
        self.metrics.recovery_pending.set(left as i64);
        if cases.is_empty() {
            return Ok(());
        }
        let window = RECOVERY_WINDOW_PER_WORKER
            * self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
                .max(1);
        let w = self.clone();
        let started = Instant::now();
        let feeder = std::thread::Builder::new()
            .name("recovery".into())
            .spawn(move || {
                let total = cases.len();
                let mut fed = 0usize;
                for id in cases {
                    if !w.wait_for_room(window) {
                        break;
                    }
                    let sent =
                        w.tx.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .send(Job::Recover(id));
                    if sent.is_err() {
                        break;
                    }
                    fed += 1;
                }
                tracing::info!(
                    cases = fed,
                    of = total,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "recovery queued the cases left from the last run"
                );
            })?;
        *self.feeder.lock().unwrap_or_else(|e| e.into_inner()) = Some(feeder);
        Ok(())
    }

    /// Waits until fewer than `window` recovery jobs are out, and takes a place; `false`
    /// when the pool stops first.
    fn wait_for_room(&self, window: usize) -> bool {
        let mut out = self
            .recovery
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return false;
            }
            if *out < window {
                *out += 1;
                return true;
            }
            // The timeout only bounds how late a stop is noticed.
            out = self
                .recovery
                .room
                .wait_timeout(out, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops feeding recovery jobs (the pool is stopping) and waits for the feeder; the
    /// cases not yet fed keep their stored work for the next start.
    pub(super) fn stop_recovery(&self) {
        self.recovery.room.notify_all();
        if let Some(feeder) = self.feeder.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = feeder.join();
        }
    }

    /// Cases left from the last run not yet run again.
    pub fn recovery_pending(&self) -> usize {
        self.recovery.left.load(Ordering::Relaxed)
    }
}

/// Frees a recovery job's place in the window when the job is over (even by a panic).
pub(super) struct RecoveryDone<'a>(pub(super) &'a Workers);

impl Drop for RecoveryDone<'_> {
    fn drop(&mut self) {
        let r = &self.0.recovery;
        *r.in_flight.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        r.room.notify_one();
    }
}
