//! Dynamic micro-batching: concurrent single requests are gathered into one model call.
//!
//! A worker takes the first waiting request, then keeps collecting until it has `max_batch`
//! requests or `max_wait` has passed since the first one, and answers all of them with one
//! `classify_prepared` (the ONNX classifier then runs each text as its own model call, so
//! that no request's answer depends on its company: ADR 0027). Several workers (one per
//! model session) run batches side by side.
//! The per-request work that needs no session ([`Classifier::prepare`]: tokenizing,
//! features) runs on the caller's thread, so a worker's thread only runs the model.
//! Callers block on their answer; async code calls [`Batcher::classify`] from a blocking
//! task.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Classifier, Error, Prediction, Prepared};

/// Micro-batching settings (a firmware profile sets these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchOptions {
    /// Most requests in one model call.
    pub max_batch: usize,
    /// Longest time the first request of a batch waits for company, in milliseconds.
    pub max_wait_ms: u64,
    /// Batches run side by side (match the classifier's sessions).
    pub workers: usize,
    /// Requests waiting beyond this are refused (back-pressure) instead of queued.
    pub queue_depth: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_batch: 16,
            max_wait_ms: 2,
            workers: 1,
            queue_depth: 1024,
        }
    }
}

type Job = (Prepared, SyncSender<Result<Prediction, Error>>);

/// Gathers requests into batches for a [`Classifier`].
pub struct Batcher {
    /// Prepares each request on its caller's thread.
    classifier: Arc<dyn Classifier>,
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model", &self.classifier.model())
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    pub fn start(
        classifier: Arc<dyn Classifier>,
        options: &BatchOptions,
    ) -> Result<Batcher, Error> {
        let (tx, rx) = sync_channel::<Job>(options.queue_depth.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..options.workers.max(1))
            .map(|i| {
                let rx = Arc::clone(&rx);
                let classifier = Arc::clone(&classifier);
                let max_batch = options.max_batch.max(1);
                let max_wait = Duration::from_millis(options.max_wait_ms);
                std::thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn(move || worker(&*classifier, &rx, max_batch, max_wait))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Inference(format!("cannot start an inference thread: {e}")))?;
        Ok(Batcher {
            classifier,
            tx: Some(tx),
            workers,
        })
    }

    /// Classifies one text in `language` (stated or detected; it picks the calibration),
    /// batched with whatever else is waiting. Blocks.
    pub fn classify(&self, text: &str, language: Option<&str>) -> Result<Prediction, Error> {
        let (reply, answer) = sync_channel(1);
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Inference("the batcher is shut down".into()))?;
        let prepared = Prepared {
            language: language.map(str::to_string),
            ..self.classifier.prepare(text)?
        };
        if let Some(sure) = self.classifier.decide_early(&prepared) {
            return Ok(sure);
        }
        tx.try_send((prepared, reply)).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                Error::Inference("too many requests waiting for the model".into())
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                Error::Inference("the batcher is shut down".into())
            }
        })?;
        answer
            .recv()
            .map_err(|_| Error::Inference("the batch worker stopped".into()))?
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(
    classifier: &dyn Classifier,
    rx: &Mutex<Receiver<Job>>,
    max_batch: usize,
    max_wait: Duration,
) {
    loop {
        let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
        {
            // one worker gathers at a time; the others wait for the lock
            let Ok(rx) = rx.lock() else { return };
            let Ok(first) = rx.recv() else { return };
            jobs.push(first);
            let deadline = Instant::now() + max_wait;
            while jobs.len() < max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let (batch, replies): (Vec<Prepared>, Vec<_>) = jobs.into_iter().unzip();
        match classifier.classify_prepared(&batch) {
            Ok(preds) if preds.len() == replies.len() => {
                for (reply, p) in replies.into_iter().zip(preds) {
                    let _ = reply.send(Ok(p));
                }
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(Error::Inference(
                        "the model answered a different number of requests".into(),
                    )));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A certain, in-scope answer.
    fn sure(intent: String, model: &str) -> Prediction {
        Prediction {
            intent,
            confidence: 1.0,
            top: vec![],
            out_of_scope: false,
            model: model.into(),
            stage: super::super::Stage::Full,
            signals: None,
        }
    }

    /// A batcher with one worker over `classifier`.
    fn started(
        classifier: Arc<dyn Classifier>,
        max_batch: usize,
        max_wait_ms: u64,
    ) -> Arc<Batcher> {
        let options = BatchOptions {
            max_batch,
            max_wait_ms,
            workers: 1,
            queue_depth: 64,
        };
        Arc::new(Batcher::start(classifier, &options).expect("batcher starts"))
    }

    /// Answers each text with its length as the intent, and records batch sizes.
    #[derive(Debug, Default)]
    struct Echo {
        calls: AtomicUsize,
        largest: AtomicUsize,
    }

    impl Classifier for Echo {
        fn classify_batch(&self, texts: &[&str]) -> Result<Vec<Prediction>, Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.largest.fetch_max(texts.len(), Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            Ok(texts
                .iter()
                .map(|t| sure(t.len().to_string(), "echo"))
                .collect())
        }

        fn model(&self) -> &str {
            "echo"
        }
    }

    #[test]
    fn concurrent_requests_are_batched_and_answered_in_kind() {
        let echo = Arc::new(Echo::default());
        let batcher = started(echo.clone(), 8, 20);
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let b = Arc::clone(&batcher);
                std::thread::spawn(move || {
                    let text = "x".repeat(i + 1);
                    (i + 1, b.classify(&text, None).expect("answer").intent)
                })
            })
            .collect();
        for h in handles {
            let (len, intent) = h.join().expect("thread");
            assert_eq!(intent, len.to_string(), "each caller gets its own answer");
        }
        assert!(
            echo.largest.load(Ordering::SeqCst) > 1,
            "requests were batched"
        );
        assert!(echo.largest.load(Ordering::SeqCst) <= 8, "max_batch holds");
        assert!(echo.calls.load(Ordering::SeqCst) < 32);
    }

    /// Answers from what `prepare` made, and records the threads each half ran on.
    #[derive(Debug, Default)]
    struct Prepares {
        prepared_on: Mutex<Vec<std::thread::ThreadId>>,
        run_on: Mutex<Vec<std::thread::ThreadId>>,
    }

    impl Classifier for Prepares {
        fn classify_batch(&self, _: &[&str]) -> Result<Vec<Prediction>, Error> {
            Err(Error::Inference(
                "the batcher hands over prepared texts".into(),
            ))
        }

        fn prepare(&self, text: &str) -> Result<Prepared, Error> {
            self.prepared_on
                .lock()
                .expect("lock")
                .push(std::thread::current().id());
            Ok(Prepared {
                text: text.to_string(),
                token_ids: vec![i64::try_from(text.len()).expect("short")],
                ..Prepared::default()
            })
        }

        fn classify_prepared(&self, batch: &[Prepared]) -> Result<Vec<Prediction>, Error> {
            self.run_on
                .lock()
                .expect("lock")
                .push(std::thread::current().id());
            Ok(batch
                .iter()
                .map(|p| {
                    let language = p.language.as_deref().unwrap_or("-");
                    sure(format!("{}:{language}", p.token_ids[0]), "prepares")
                })
                .collect())
        }

        fn model(&self) -> &str {
            "prepares"
        }
    }

    #[test]
    fn requests_are_prepared_on_the_callers_thread_and_only_run_on_the_workers_in_their_language() {
        let classifier = Arc::new(Prepares::default());
        let batcher = started(classifier.clone(), 4, 5);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let b = Arc::clone(&batcher);
                std::thread::spawn(move || {
                    let text = "y".repeat(i + 1);
                    let language = ["de", "en"][i % 2];
                    let intent = b.classify(&text, Some(language)).expect("answer").intent;
                    (i + 1, intent, std::thread::current().id())
                })
            })
            .collect();
        let mut callers = Vec::new();
        for h in handles {
            let (len, intent, caller) = h.join().expect("thread");
            let language = ["de", "en"][(len - 1) % 2];
            assert_eq!(
                intent,
                format!("{len}:{language}"),
                "each caller gets its own answer, decided in its language"
            );
            callers.push(caller);
        }
        let prepared_on = classifier.prepared_on.lock().expect("lock").clone();
        assert_eq!(prepared_on.len(), 8);
        assert!(prepared_on.iter().all(|t| callers.contains(t)));
        let run_on = classifier.run_on.lock().expect("lock").clone();
        assert!(!run_on.is_empty());
        assert!(
            run_on.iter().all(|t| !callers.contains(t)),
            "a worker runs the model"
        );
    }
}
