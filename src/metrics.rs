//! Prometheus metrics: what an operator watches on a box. Counters and histograms are
//! updated where things happen (HTTP layer, workers, the classifier and the store backend,
//! both wrapped here); gauges that describe stored state are read when scraped.

use std::sync::Arc;
use std::time::Instant;

use casegraph_engine::classify::{self, Classification, Source};
use casegraph_engine::intake::Received;
use casegraph_engine::store::{self, Backend, Entry, Op, Table};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// One of the methods the API knows, or `other` ([`method_label`]): a client may send
    /// any token as its method, and each would be a new series.
    pub method: String,
    /// The matched route pattern (`/v1/cases/{id}`), never the raw path: bounded labels.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

/// Who decided a classification: `lexical` (the model's n-gram half alone), `full` (the
/// whole model), `metadata` (the submitter's `metadata.intent`) or `none` (nothing to read).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

/// The model's sentiment of a request: `negative`, `neutral` or `positive`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SentimentLabels {
    pub label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.5 ms … ~8 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    /// Case segments run by workers, timers and task completions, by the status they left.
    pub segments: Family<StatusLabels, Counter>,
    pub segment_duration: Histogram,
    pub accept_duration: Histogram,
    pub classify_duration: Histogram,
    pub classify_confidence: Histogram,
    pub classifications: Family<StageLabels, Counter>,
    /// Model classifications by sentiment, and those flagged frustrated.
    pub sentiment: Family<SentimentLabels, Counter>,
    pub frustration_flagged: Counter,
    pub store_write_duration: Histogram,
    pub store_commits: Gauge,
    pub store_syncs: Gauge,
    pub store_disk_bytes: Gauge,
    pub intake_queue: Gauge,
    pub intake_rejected: Family<StatusLabels, Counter>,
    pub open_tasks: Family<QueueLabels, Gauge>,
    pub pending_cases: Gauge,
    /// Cases left from the last run that recovery has not yet run again; set by the
    /// workers as they go, so a box that is ready while it works off a backlog shows it.
    pub recovery_pending: Gauge,
    /// `reply_to` notifications stored and not yet delivered, read when scraped.
    pub pending_notifications: Gauge,
    /// Resident memory of the process and its budget (0: none), read when scraped.
    pub resident_bytes: Gauge,
    pub memory_budget_bytes: Gauge,
    /// Requests refused `401`: no token, a malformed header or an unknown or revoked token.
    /// A rising count is someone guessing, or a client holding a revoked token.
    pub auth_failures: Counter,
    /// Free disk, data-directory size, the storage marks and refusals (`casegraph_storage_*`).
    pub storage: crate::storage::Metrics,
    /// Archived cases, the last archive run and compaction (`casegraph_retention_*`).
    pub retention: crate::retention::Metrics,
    /// The fleet relay's backlog, connection and acknowledgements (`casegraph_fleet_*`).
    pub fleet: crate::fleet::metrics::Metrics,
}

/// The label of an HTTP method: the ones the API answers by name, everything else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("casegraph");
        let http_requests = Family::<HttpLabels, Counter>::default();
        r.register(
            "http_requests",
            "HTTP requests answered",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency as fn() -> Histogram);
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let segments = Family::<StatusLabels, Counter>::default();
        r.register(
            "case_segments",
            "Case segments run, by the case status they left",
            segments.clone(),
        );
        let segment_duration = latency();
        r.register(
            "case_segment_duration_seconds",
            "Time to run a case from one checkpoint to the next (rules, calls, commit)",
            segment_duration.clone(),
        );
        let accept_duration = latency();
        r.register(
            "accept_duration_seconds",
            "Time to make an accepted request durable",
            accept_duration.clone(),
        );
        let classify_duration = latency();
        r.register(
            "classification_duration_seconds",
            "Intent classification latency",
            classify_duration.clone(),
        );
        let classify_confidence = Histogram::new((1..=10).map(|i| f64::from(i) / 10.0));
        r.register(
            "classification_confidence",
            "Confidence of the top intent",
            classify_confidence.clone(),
        );
        let classifications = Family::<StageLabels, Counter>::default();
        r.register(
            "classifications",
            "Classifications by who decided: lexical (the model's n-gram half alone, encoder \
             not run), full (the whole model), metadata (the submitter), none (no text)",
            classifications.clone(),
        );
        let sentiment = Family::<SentimentLabels, Counter>::default();
        r.register(
            "sentiment",
            "Model classifications by the sentiment the model read (negative, neutral, positive)",
            sentiment.clone(),
        );
        let frustration_flagged = Counter::default();
        r.register(
            "frustration_flagged",
            "Model classifications flagged frustrated (angry, fed up, threatening to leave or \
             to go to a lawyer or regulator, complaining about repeated contact or waiting)",
            frustration_flagged.clone(),
        );
        let store_write_duration = latency();
        r.register(
            "store_write_duration_seconds",
            "Durable store writes (one sync each, covering a group of commits)",
            store_write_duration.clone(),
        );
        let store_commits = Gauge::default();
        r.register(
            "store_commits",
            "Batches committed since start",
            store_commits.clone(),
        );
        let store_syncs = Gauge::default();
        r.register(
            "store_syncs",
            "Store syncs since start",
            store_syncs.clone(),
        );
        let store_disk_bytes = Gauge::default();
        r.register(
            "store_disk_bytes",
            "Bytes the store occupies",
            store_disk_bytes.clone(),
        );
        let intake_queue = Gauge::default();
        r.register(
            "intake_queue_depth",
            "Accepted cases waiting for a worker",
            intake_queue.clone(),
        );
        let intake_rejected = Family::<StatusLabels, Counter>::default();
        r.register(
            "intake_rejected",
            "Requests refused by back-pressure, by HTTP status",
            intake_rejected.clone(),
        );
        let open_tasks = Family::<QueueLabels, Gauge>::default();
        r.register(
            "open_tasks",
            "Open human tasks by queue",
            open_tasks.clone(),
        );
        let pending_cases = Gauge::default();
        r.register(
            "pending_cases",
            "Cases with stored work not yet done",
            pending_cases.clone(),
        );
        let recovery_pending = Gauge::default();
        r.register(
            "recovery_pending",
            "Cases left from the last run not yet run again by recovery",
            recovery_pending.clone(),
        );
        let pending_notifications = Gauge::default();
        r.register(
            "pending_notifications",
            "reply_to notifications of ended cases stored and not yet delivered",
            pending_notifications.clone(),
        );
        let resident_bytes = Gauge::default();
        r.register(
            "process_resident_bytes",
            "Resident memory of the server process",
            resident_bytes.clone(),
        );
        let memory_budget_bytes = Gauge::default();
        r.register(
            "memory_budget_bytes",
            "Resident memory budget (memory.budget_mib); intake sheds near it",
            memory_budget_bytes.clone(),
        );
        let auth_failures = Counter::default();
        r.register(
            "auth_failures",
            "Requests refused 401 (no token, malformed Authorization, unknown or revoked token)",
            auth_failures.clone(),
        );
        let storage = crate::storage::Metrics::register(&mut r);
        let retention = crate::retention::Metrics::register(&mut r);
        let fleet = crate::fleet::metrics::Metrics::register(&mut r);
        Metrics {
            fleet,
            storage,
            retention,
            registry: r,
            http_requests,
            http_duration,
            segments,
            segment_duration,
            accept_duration,
            classify_duration,
            classify_confidence,
            classifications,
            sentiment,
            frustration_flagged,
            store_write_duration,
            store_commits,
            store_syncs,
            store_disk_bytes,
            intake_queue,
            intake_rejected,
            open_tasks,
            pending_cases,
            recovery_pending,
            pending_notifications,
            resident_bytes,
            memory_budget_bytes,
            auth_failures,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("metrics encoding failed: {e}");
        }
        out
    }
}

/// A classifier that records latency and confidence of the one it wraps.
#[allow(
    missing_debug_implementations,
    reason = "holds a trait object without Debug"
)]
pub struct MeasuredClassifier {
    pub inner: Arc<dyn classify::Service>,
    pub metrics: Arc<Metrics>,
}

impl classify::Service for MeasuredClassifier {
    fn classify(&self, request: &Received) -> Result<Classification, classify::Error> {
        let started = Instant::now();
        let answer = self.inner.classify(request);
        self.metrics
            .classify_duration
            .observe(started.elapsed().as_secs_f64());
        if let Ok(a) = &answer {
            if let Some(c) = a.confidence {
                self.metrics.classify_confidence.observe(c);
            }
            let stage = match (a.source, a.stage) {
                (Some(Source::Model), Some(stage)) => stage.as_str(),
                (Some(Source::Model), None) => "none",
                (Some(other), _) => other.as_str(),
                (None, _) => "none",
            };
            self.metrics
                .classifications
                .get_or_create(&StageLabels {
                    stage: stage.to_string(),
                })
                .inc();
            if let Some(s) = a.sentiment() {
                self.metrics
                    .sentiment
                    .get_or_create(&SentimentLabels {
                        label: s.label.as_str().to_string(),
                    })
                    .inc();
            }
            if a.frustration().is_some_and(|f| f.flagged) {
                self.metrics.frustration_flagged.inc();
            }
        }
        answer
    }

    fn labels(&self) -> Option<&[String]> {
        self.inner.labels()
    }
}

/// A store backend that times its writes.
#[derive(Debug)]
pub struct TimedBackend {
    pub inner: Arc<dyn Backend>,
    pub write_duration: Histogram,
    /// Learns from every write whether the disk takes writes (see [`crate::storage`]).
    pub disk: Arc<crate::storage::Guard>,
}

impl Backend for TimedBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, store::Error> {
        self.inner.get(table, key)
    }
    fn range(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, store::Error> {
        self.inner.range(table, from, to, limit)
    }
    fn range_back(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, store::Error> {
        self.inner.range_back(table, from, to, limit)
    }
    fn last(&self, table: Table) -> Result<Option<Entry>, store::Error> {
        self.inner.last(table)
    }
    fn write(&self, groups: &[Vec<Op>]) -> Result<(), store::Error> {
        let started = Instant::now();
        let r = self.inner.write(groups);
        self.write_duration.observe(started.elapsed().as_secs_f64());
        self.disk.record(&r);
        r
    }
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn compact(&self) -> Result<Option<store::Compaction>, store::Error> {
        self.inner.compact()
    }
}
