//! Group commit: one committer thread turns every batch that arrived while the previous sync
//! ran into a single backend write, so many commits share one sync.
//!
//! Invariant: a caller's [`Committer::commit`] returns `Ok` only after the backend's
//! `write` covering its batch returned, i.e. after the data is durable. Audit entries are
//! chained here, in the order batches are written, so the chain order is the commit order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

use super::inbox::Inbox;
use super::{Backend, Batch, Error, Op, Table};
use crate::audit;

/// Commit counters since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommitStats {
    /// Batches committed.
    pub commits: u64,
    /// Backend writes (each one sync).
    pub syncs: u64,
    /// Audit records appended.
    pub audit_records: u64,
}

struct Job {
    batch: Batch,
    done: Done,
}

/// What the commit thread does once a batch's write returned.
enum Done {
    /// Tells the caller waiting in [`Committer::commit`].
    Wait(mpsc::SyncSender<Result<(), Error>>),
    /// Runs the caller's continuation ([`Committer::commit_then`]) on the commit thread.
    Then(Then),
}

/// A continuation run on the commit thread after the write that covers its batch: it
/// must be short (release a lock, send on a channel), as every later commit waits for it.
pub type Then = Box<dyn FnOnce(Result<(), Error>) + Send>;

impl Done {
    fn send(self, result: Result<(), Error>) {
        match self {
            Done::Wait(tx) => {
                let _ = tx.send(result);
            }
            Done::Then(then) => {
                // A continuation that panics must not end the commit thread (every later
                // commit would fail): its caller's work is stored, recovery runs it again.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| then(result))).is_err()
                {
                    tracing::error!("a commit's continuation panicked; the commit thread goes on");
                }
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    syncs: AtomicU64,
    audit_records: AtomicU64,
}

pub(super) struct Committer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    pub(super) fn start(
        backend: Arc<dyn Backend>,
        head: audit::Head,
        max_group: usize,
        inbox: Arc<Inbox>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || run(backend, head, max_group, rx, c, &inbox))
            .expect("the commit thread starts");
        Committer {
            jobs: Mutex::new(Some(tx)),
            counters,
            thread: Mutex::new(Some(thread)),
        }
    }

    pub(super) fn commit(&self, batch: Batch) -> Result<(), Error> {
        let (done, wait) = mpsc::sync_channel(1);
        self.submit(Job {
            batch,
            done: Done::Wait(done),
        })
        .map_err(|_| Error::Closed)?;
        wait.recv().map_err(|_| Error::Closed)?
    }

    /// Queues the batch and returns at once; `then` runs on the commit thread with the
    /// write's result (or here with [`Error::Closed`] when the committer has stopped).
    pub(super) fn commit_then(&self, batch: Batch, then: Then) {
        if let Err(job) = self.submit(Job {
            batch,
            done: Done::Then(then),
        }) {
            job.done.send(Err(Error::Closed));
        }
    }

    fn submit(&self, job: Job) -> Result<(), Job> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match jobs.as_ref() {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    pub(super) fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            audit_records: self.counters.audit_records.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// The head of the audit chain as the store holds it (`None`: no record yet). After an
/// archive cut took every record, the chain goes on from its anchor.
pub(super) fn stored_head(backend: &dyn Backend) -> Result<Option<audit::Head>, Error> {
    let last = match backend.last(Table::Audit)? {
        Some((_, v)) => {
            let r: audit::Record = super::decode("audit record", b"last", &v)?;
            Some(audit::Head {
                seq: r.seq,
                hash: r.hash,
            })
        }
        None => None,
    };
    let anchor = match backend.get(Table::Meta, super::archive::ANCHOR)? {
        Some(v) => Some(super::decode::<audit::Head>(
            "audit anchor",
            super::archive::ANCHOR,
            &v,
        )?),
        None => None,
    };
    Ok(match (last, anchor) {
        (Some(last), Some(anchor)) if anchor.seq > last.seq => Some(anchor),
        (None, anchor) => anchor,
        (last, _) => last,
    })
}

fn run(
    backend: Arc<dyn Backend>,
    mut head: audit::Head,
    max_group: usize,
    rx: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
    inbox: &Inbox,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_group {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Chain tentatively; adopt the new head only if the write lands.
        let mut next = head.clone();
        let mut appended = 0u64;
        let mut groups = Vec::with_capacity(jobs.len());
        let mut waiters = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Job { batch, done } = job;
            let mut ops = batch.ops;
            for entry in batch.audit {
                let (seq, record) = next.append_written(&entry);
                ops.push(Op {
                    table: Table::AuditByCase,
                    key: audit::case_key(entry.case_id(), seq),
                    value: Some(Vec::new()),
                });
                ops.push(Op {
                    table: Table::Audit,
                    key: seq.to_be_bytes().to_vec(),
                    value: Some(record),
                });
                appended += 1;
            }
            groups.push(ops);
            waiters.push(done);
        }
        let result = backend.write(&groups);
        if result.is_ok() {
            // before any waiter hears of it: a reviewer who is told a task is done never
            // finds it in the inbox afterwards
            inbox.written(&groups);
            head = next;
            counters
                .commits
                .fetch_add(waiters.len() as u64, Ordering::Relaxed);
            counters.syncs.fetch_add(1, Ordering::Relaxed);
            counters
                .audit_records
                .fetch_add(appended, Ordering::Relaxed);
        } else if let Err(e) = &result {
            tracing::error!(
                "store write failed; {} commit(s) refused: {e}",
                waiters.len()
            );
            // A write that failed at its final sync may still have landed: the chain goes
            // on from the head the store holds, never from a guess, and the inbox's order
            // is read from the table again.
            inbox.failed();
            match stored_head(backend.as_ref()) {
                Ok(Some(stored)) => head = stored,
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "cannot read the audit head back after a failed write; the next write tries again: {e}"
                ),
            }
        }
        for done in waiters {
            done.send(result.clone());
        }
    }
}
