//! What a run measured, and its report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// Latencies in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The `q`-quantile (0–1) in milliseconds, or `None` without samples.
    pub fn quantile_ms(&mut self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        Some(self.0[i] as f64 / 1000.0)
    }
}

/// Totals of a run.
#[derive(Debug, Default)]
pub struct Totals {
    pub sent: u64,
    pub accepted: u64,
    /// Accepted cases seen in a final state (completed, failed, escalated).
    pub completed: u64,
    /// Accepted cases not yet final when the run ended.
    pub unfinished: u64,
    pub by_status: BTreeMap<String, u64>,
    pub tasks_completed: u64,
    /// Accepted cases waiting on a durable timer when last looked at.
    pub parked: u64,
    pub accept: Latencies,
    pub completion: Latencies,
    /// Time from the start of sending to the last acceptance / completion seen.
    pub send_window: Duration,
    pub completion_window: Duration,
    pub outcomes: BTreeMap<String, u64>,
    pub rss_idle: Option<u64>,
    pub rss_peak: Option<u64>,
    pub rss_end: Option<u64>,
}

fn mib(b: Option<u64>) -> Value {
    b.map_or(Value::Null, |b| {
        json!((b as f64 / 1048576.0 * 10.0).round() / 10.0)
    })
}

impl Totals {
    pub fn report(&mut self) -> Value {
        let per_s = |n: u64, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                (n as f64 / d.as_secs_f64() * 10.0).round() / 10.0
            }
        };
        let q = |l: &mut Latencies, p: f64| {
            l.quantile_ms(p)
                .map_or(Value::Null, |v| json!((v * 100.0).round() / 100.0))
        };
        json!({
            "sent": self.sent,
            "accepted": self.accepted,
            "accepted_per_s": per_s(self.accepted, self.send_window),
            "completed": self.completed,
            "completed_per_s": per_s(self.completed, self.completion_window),
            "unfinished": self.unfinished,
            "parked_on_timer": self.parked,
            "tasks_completed_as_reviewer": self.tasks_completed,
            "acceptance_ms": { "p50": q(&mut self.accept, 0.5), "p95": q(&mut self.accept, 0.95), "p99": q(&mut self.accept, 0.99), "max": q(&mut self.accept, 1.0) },
            "completion_ms": { "p50": q(&mut self.completion, 0.5), "p95": q(&mut self.completion, 0.95), "p99": q(&mut self.completion, 0.99), "max": q(&mut self.completion, 1.0) },
            "answers": self.by_status,
            "outcomes": self.outcomes,
            "server_rss_mib": { "idle": mib(self.rss_idle), "peak": mib(self.rss_peak), "end": mib(self.rss_end) },
            "send_window_s": self.send_window.as_secs_f64(),
            "completion_window_s": self.completion_window.as_secs_f64(),
        })
    }
}

/// A map as one `key: value` per line.
fn lines(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A readable table of the report.
pub fn table(report: &Value) -> String {
    let mut t = comfy_table::Table::new();
    t.set_header(["", "value"]);
    let row = |t: &mut comfy_table::Table, k: &str, v: String| {
        t.add_row([k.to_string(), v]);
    };
    let s = |v: &Value| match v {
        Value::Null => "—".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    row(&mut t, "sent", s(&report["sent"]));
    row(&mut t, "mix", lines(&report["mix"]));
    row(&mut t, "accepted (202)", s(&report["accepted"]));
    row(&mut t, "accepted/s", s(&report["accepted_per_s"]));
    row(
        &mut t,
        "followed share of accepted cases %",
        s(&report["followed_percent"]),
    );
    row(
        &mut t,
        "completed (followed) cases",
        s(&report["completed"]),
    );
    row(
        &mut t,
        "completed cases/s (all)",
        s(&report["completed_per_s"]),
    );
    row(
        &mut t,
        "parked on a durable timer",
        s(&report["parked_on_timer"]),
    );
    row(&mut t, "unfinished at the end", s(&report["unfinished"]));
    row(
        &mut t,
        "cases finished on the server (/metrics), per s",
        format!(
            "{}, {}/s",
            s(&report["server_finished_cases"]),
            s(&report["server_finished_per_s"])
        ),
    );
    row(
        &mut t,
        "tasks completed as reviewer",
        s(&report["tasks_completed_as_reviewer"]),
    );
    for (name, key) in [
        ("acceptance", "acceptance_ms"),
        ("completion", "completion_ms"),
    ] {
        let l = &report[key];
        row(
            &mut t,
            &format!("{name} ms p50 / p95 / p99 / max"),
            format!(
                "{} / {} / {} / {}",
                s(&l["p50"]),
                s(&l["p95"]),
                s(&l["p99"]),
                s(&l["max"])
            ),
        );
    }
    row(&mut t, "answers by status/code", lines(&report["answers"]));
    let c = &report["customer_answers"];
    if !c.is_null() {
        let a = &c["accept_ms"];
        row(
            &mut t,
            "customer answers posted / left unanswered",
            format!("{} / {}", s(&c["posted"]), s(&c["left_unanswered"])),
        );
        row(
            &mut t,
            "customer answer ms p50 / p95 / p99 / max",
            format!(
                "{} / {} / {} / {}",
                s(&a["p50"]),
                s(&a["p95"]),
                s(&a["p99"]),
                s(&a["max"])
            ),
        );
    }
    row(
        &mut t,
        "outcomes (status:outcome)",
        lines(&report["outcomes"]),
    );
    let r = &report["server_rss_mib"];
    row(
        &mut t,
        "server RSS MiB idle / peak / end",
        format!("{} / {} / {}", s(&r["idle"]), s(&r["peak"]), s(&r["end"])),
    );
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_right_sample() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.quantile_ms(0.5), Some(51.0));
        assert_eq!(l.quantile_ms(0.99), Some(99.0));
        assert_eq!(l.quantile_ms(1.0), Some(100.0));
        assert_eq!(Latencies::default().quantile_ms(0.5), None);
    }
}
