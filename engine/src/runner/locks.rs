//! Striped per-key locks (a case, an idempotency key, an event's source and id): one
//! segment per case at a time, one acceptance per key.
//!
//! A held lock is an owned value ([`Held`]) that may be released on another thread: a case
//! worker hands its case's lock to the commit of the segment ([`crate::store::Store::commit_then`])
//! and goes on to the next case; the commit thread releases it once the segment is durable,
//! so whoever takes the case next reads what was written. Keys share a stripe by their hash;
//! a thread waiting for a stripe it handed to a commit itself waits for that commit only.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex};

use super::Error;
use crate::store::{Batch, Store};

/// Enough that the cases workers leave syncing (up to 4 per worker) seldom share a stripe
/// with the next case a worker takes.
const STRIPES: usize = 1024;

#[derive(Default)]
struct State {
    held: bool,
    waiting: usize,
}

#[derive(Default)]
struct Stripe {
    state: Mutex<State>,
    freed: Condvar,
}

/// The lock table.
pub(super) struct Locks {
    stripes: Vec<Stripe>,
}

/// A held stripe; released when dropped, on whatever thread drops it.
#[must_use = "the lock is released when this is dropped"]
pub(super) struct Held {
    locks: Arc<Locks>,
    stripe: usize,
}

impl Locks {
    pub(super) fn new() -> Arc<Locks> {
        Arc::new(Locks {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        })
    }

    /// Waits until no one holds `key`'s stripe, then holds it.
    pub(super) fn hold(self: &Arc<Self>, key: &str) -> Held {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let stripe = (h.finish() % STRIPES as u64) as usize;
        let s = &self.stripes[stripe];
        let mut state = s.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.held {
            state.waiting += 1;
            state = s.freed.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
        state.held = true;
        Held {
            locks: self.clone(),
            stripe,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let s = &self.locks.stripes[self.stripe];
        let mut state = s.state.lock().unwrap_or_else(|e| e.into_inner());
        state.held = false;
        // A notification costs a system call; most releases have no one to wake.
        if state.waiting > 0 {
            s.freed.notify_one();
        }
    }
}

/// A batch to commit under a held lock, and what to answer once it is durable: the lock is
/// released only after the write, so whoever takes the key next reads what it wrote.
pub(super) struct Guarded<T> {
    pub batch: Batch,
    pub value: T,
    pub lock: Option<Held>,
}

impl<T: Send + 'static> Guarded<T> {
    /// Commits, waits for the sync, then releases the lock.
    pub(super) fn commit(self, store: &Store) -> Result<T, Error> {
        store.commit(self.batch)?;
        drop(self.lock);
        Ok(self.value)
    }

    /// Hands the batch to the store and returns; the commit thread releases the lock and
    /// runs `then` once the write returned (see [`Store::commit_then`]).
    pub(super) fn commit_then(
        self,
        store: &Store,
        then: impl FnOnce(Result<T, Error>) + Send + 'static,
    ) {
        let Guarded { batch, value, lock } = self;
        store.commit_then(batch, move |written| {
            drop(lock);
            then(written.map(|()| value).map_err(Error::from));
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_lock_released_on_another_thread_lets_the_next_holder_in() {
        let locks = Locks::new();
        let held = locks.hold("c-1");
        let (tx, rx) = std::sync::mpsc::channel();
        let l = locks.clone();
        let waiter = std::thread::spawn(move || {
            let _h = l.hold("c-1");
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "the key is held: the second holder must wait"
        );
        // released by a thread that is neither the holder nor the waiter
        std::thread::spawn(move || drop(held)).join().unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the waiter gets the key once it is released");
        waiter.join().unwrap();
    }

    #[test]
    fn holders_of_one_key_never_overlap() {
        let locks = Locks::new();
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (l, inside) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let held = l.hold("same");
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        // half of the releases happen on another thread
                        if rand_bit() {
                            std::thread::spawn(move || drop(held)).join().unwrap();
                        } else {
                            drop(held);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    fn rand_bit() -> bool {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b).unwrap();
        b[0] & 1 == 1
    }
}
