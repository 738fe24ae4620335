//! The fleet relay's metrics (`casegraph_fleet_*`) and the `/readyz` check made of them.
//! Apart from the relay itself so that the box's metrics (`src/metrics.rs`) can hold them
//! without depending on the relay, which depends on the API's state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use casegraph_engine::store::Store;
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::wire::Kind;

/// A backlog not acknowledged for this long makes the fleet check `degraded`.
pub const STALL: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// The relay's metrics (`casegraph_fleet_*`) and what `/readyz` reads of it.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Whether `[fleet]` is set (the relay runs).
    pub enabled: Arc<AtomicBool>,
    /// Audit records committed and not yet acknowledged by the branch stream.
    pub backlog: Gauge,
    /// 1 while the NATS connection is up.
    pub connected: Gauge,
    /// Messages acknowledged, by kind.
    pub published: Family<KindLabels, Counter>,
    /// Seconds since the last acknowledgement (or since the start), set when scraped.
    pub last_ack_age: Gauge,
    /// Unix milliseconds of the last acknowledged record or empty backlog.
    last_progress: Arc<AtomicI64>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Metrics {
        let m = Metrics::default();
        m.last_progress
            .store(Timestamp::now().as_millisecond(), Ordering::Relaxed);
        r.register(
            "fleet_backlog_records",
            "Audit records committed but not yet acknowledged by the branch stream",
            m.backlog.clone(),
        );
        r.register(
            "fleet_connected",
            "1 while the box's NATS connection is up (fleet configured)",
            m.connected.clone(),
        );
        r.register(
            "fleet_published",
            "Messages the branch stream acknowledged, by kind (audit, case, health)",
            m.published.clone(),
        );
        r.register(
            "fleet_last_ack_age_seconds",
            "Seconds since the relay last caught up or had a record acknowledged",
            m.last_ack_age.clone(),
        );
        m
    }

    pub(super) fn published(&self, kind: Kind) {
        self.published
            .get_or_create(&KindLabels {
                kind: kind.as_str().into(),
            })
            .inc();
        if kind != Kind::Health {
            self.progress();
        }
    }

    pub(super) fn progress(&self) {
        self.last_progress
            .store(Timestamp::now().as_millisecond(), Ordering::Relaxed);
    }

    /// Sets the backlog from the store itself (head minus cursor), so a scrape right after
    /// a commit counts it even before the relay looked.
    pub fn refresh(&self, store: &Store) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        if let (Ok(head), Ok(cursor)) = (store.audit_head(), store.relay_cursor().get()) {
            let backlog = head.seq.saturating_sub(cursor);
            self.backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
    }

    /// Seconds since the relay last made progress; also sets the gauge.
    pub fn sample(&self) -> u64 {
        let since = Timestamp::now().as_millisecond() - self.last_progress.load(Ordering::Relaxed);
        let secs = u64::try_from(since / 1000).unwrap_or(0);
        self.last_ack_age
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
        secs
    }

    /// The fleet check of `/readyz`: `off`, `ok`, or `degraded` (disconnected, or a backlog
    /// that has not moved for [`STALL`]) with why. Never makes the box unready.
    pub fn check(&self) -> (&'static str, Option<&'static str>) {
        if !self.enabled.load(Ordering::Relaxed) {
            return ("off", None);
        }
        let stalled = self.backlog.get() > 0 && self.sample() >= STALL.as_secs();
        if self.connected.get() == 0 {
            ("degraded", Some("not connected to NATS"))
        } else if stalled {
            ("degraded", Some("the backlog is not acknowledged"))
        } else {
            ("ok", None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_check_degrades_and_never_fails() {
        let m = Metrics::register(&mut Registry::default());
        assert_eq!(m.check(), ("off", None), "no fleet configured");
        m.enabled.store(true, Ordering::Relaxed);
        assert_eq!(m.check().0, "degraded", "not connected yet");
        m.connected.set(1);
        m.backlog.set(5);
        assert_eq!(m.check(), ("ok", None), "a backlog that moves is fine");
        let long_ago = Timestamp::now().as_millisecond() - 31_000;
        m.last_progress.store(long_ago, Ordering::Relaxed);
        assert_eq!(
            m.check(),
            ("degraded", Some("the backlog is not acknowledged"))
        );
        assert!(m.last_ack_age.get() >= 31);
        m.backlog.set(0);
        assert_eq!(m.check(), ("ok", None), "nothing to relay is never stalled");
    }
}
