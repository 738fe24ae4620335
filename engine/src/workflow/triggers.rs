//! What starts a workflow besides intents: business events and a schedule (`triggers:` in
//! `workflow.yaml`), compiled once, and the consent rule such a workflow must keep.
//!
//! A workflow with triggers reaches out to a customer who did not write, so it may only
//! contact them with their consent. The rule checked at publish: every path from `start`
//! to a node that contacts the customer (`reply`, `ask`) passes a *consent check* — a
//! decision branch whose `when` calls `consent(...)` without negating it, taken. A path
//! around it is an error naming the path. The rule reads the graph, not the scripts'
//! meaning: `when: consent("marketing") && contacts("marketing", 365) == 0` is a check,
//! `when: !consent("marketing")` is not, and a rule script that sets data is not either.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use petgraph::graph::{DiGraph, NodeIndex};

use super::compiler::Compiler;
use super::def::TriggersDef;
use super::guard::{Call, unguarded_path};
use super::{Code, Edge, Node};
use crate::yaml::line_of;

/// The node kinds that contact the customer; a triggered workflow reaches them only past a
/// consent check.
pub const CONTACTING_KINDS: &[&str] = &["reply", "ask"];

/// How many occurrences one schedule may have due at once before the rest count as missed
/// and are collapsed (see [`Schedule::due`]).
const MAX_DUE: usize = 1000;

/// A workflow's compiled triggers. Empty for a workflow only routing starts.
#[derive(Debug, Default)]
pub struct Triggers {
    /// CloudEvent types that start a case.
    pub events: Vec<String>,
    pub schedule: Option<Schedule>,
    /// The consent purpose its replies are contacts for.
    pub purpose: Option<String>,
    /// Path into the start (`event.data.product_id`) whose value starts one case per customer.
    pub once_per: Option<String>,
}

impl Triggers {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.schedule.is_none()
    }
}

/// A compiled schedule: the cron pattern in its time zone and the query for its customers.
#[derive(Debug)]
pub struct Schedule {
    /// The pattern as written, for the console and the audit trail.
    pub pattern: String,
    cron: croner::Cron,
    pub timezone: String,
    tz: TimeZone,
    pub connector: String,
    pub operation: String,
    /// rhai expression over `schedule` giving the query's payload.
    pub payload: Option<Arc<crate::rules::Script>>,
    pub catch_up: bool,
}

/// The occurrences of a schedule due at a tick: the ones that run, the ones skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    pub run: Vec<Timestamp>,
    pub skipped: Vec<Timestamp>,
}

impl Schedule {
    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The next `n` occurrences after `t`.
    pub fn upcoming(&self, t: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n
            && let Some(next) = self.next_after(at)
        {
            out.push(next);
            at = next;
        }
        out
    }

    /// What to do with the occurrences after `last` up to `now`. The latest one due within
    /// `grace` of `now` is on time and runs. Older ones were missed (the box was off or
    /// busy): with `catch_up` the latest missed one runs once — a box that slept through
    /// several occurrences catches up exactly once, never once per occurrence — and the
    /// rest are skipped; without it all missed ones are skipped.
    pub fn due(&self, last: Timestamp, now: Timestamp, grace: jiff::SignedDuration) -> Due {
        let mut all = Vec::new();
        let mut at = last;
        while let Some(next) = self.next_after(at).filter(|n| *n <= now) {
            all.push(next);
            at = next;
            if all.len() >= MAX_DUE {
                break;
            }
        }
        let mut due = Due::default();
        let Some(&latest) = all.last() else {
            return due;
        };
        let on_time = now.duration_since(latest) <= grace;
        if on_time || self.catch_up {
            all.pop();
            due.run.push(latest);
        }
        due.skipped = all;
        due
    }
}

/// A decision condition that checks consent: it calls `consent(` and never negates it.
fn is_consent_check(condition: &str) -> bool {
    static CALL: LazyLock<Call> = LazyLock::new(|| Call::new("consent"));
    CALL.unnegated_in(condition)
}

/// The shortest path from `start` to a contacting node that passes no consent check, as
/// node ids, if there is one.
pub(super) fn unconsented_path(
    graph: &DiGraph<Node, Edge>,
    start: NodeIndex,
) -> Option<Vec<String>> {
    unguarded_path(
        graph,
        start,
        |node| CONTACTING_KINDS.contains(&node.step.kind()),
        |edge| matches!(edge, Edge::When { source, .. } if is_consent_check(source)),
    )
}

impl Compiler<'_> {
    /// Compiles `triggers:`: event types are dotted names, the cron pattern parses, the time
    /// zone is known, the query's payload compiles.
    pub(super) fn triggers(&mut self, def: Option<&TriggersDef>) -> Triggers {
        let Some(def) = def else {
            return Triggers::default();
        };
        let mut triggers = Triggers {
            purpose: def.purpose.as_ref().map(|p| p.to_string()),
            once_per: def.once_per.as_ref().map(|p| p.to_string()),
            ..Triggers::default()
        };
        for event in &def.events {
            if !is_event_type(event) {
                let msg = format!(
                    "`triggers.events`: `{}` is not an event type such as `warranty.expiring` (letters, digits, `.`, `_`, `-`)",
                    event.as_str()
                );
                self.diag(Code::InvalidValue, line_of(event), msg);
            }
            triggers.events.push(event.to_string());
        }
        if let Some(p) = &def.purpose
            && !super::compile::is_identifier(p)
        {
            let msg = format!(
                "`triggers.purpose` `{}` must be lower_snake_case",
                p.as_str()
            );
            self.diag(Code::InvalidValue, line_of(p), msg);
        }
        if let Some(o) = &def.once_per
            && !(o.starts_with("event.") || o.starts_with("schedule."))
        {
            let msg = format!(
                "`triggers.once_per` `{}` must be a path under `event.` or `schedule.`",
                o.as_str()
            );
            self.diag(Code::InvalidValue, line_of(o), msg);
        }
        if def.purpose.is_none() {
            self.diag(
                Code::MissingField,
                1,
                "`triggers.purpose` must name the consent purpose the workflow contacts customers for (`marketing`, `service`)",
            );
        }
        if def.events.is_empty() && def.schedule.is_none() {
            self.diag(
                Code::MissingField,
                1,
                "`triggers` must name `events` or a `schedule`",
            );
        }
        if let Some(s) = &def.schedule {
            let cron = match croner::Cron::from_str(&s.cron) {
                Ok(c) => Some(c),
                Err(e) => {
                    let msg = format!(
                        "`triggers.schedule.cron` `{}` is not a cron pattern such as `0 9 * * MON-FRI`: {e}",
                        s.cron.as_str()
                    );
                    self.diag(Code::InvalidValue, line_of(&s.cron), msg);
                    None
                }
            };
            let tz_name = s.timezone.as_ref().map_or("UTC", |t| t.as_str());
            let tz = match TimeZone::get(tz_name) {
                Ok(tz) => Some(tz),
                Err(e) => {
                    let line = s.timezone.as_ref().map_or(1, line_of);
                    let msg = format!(
                        "`triggers.schedule.timezone` `{tz_name}` is not an IANA time zone such as `Europe/Berlin`: {e}"
                    );
                    self.diag(Code::InvalidValue, line, msg);
                    None
                }
            };
            let payload = s
                .subjects
                .payload
                .as_ref()
                .and_then(|p| self.expression(p, "triggers"));
            if let (Some(cron), Some(tz)) = (cron, tz) {
                triggers.schedule = Some(Schedule {
                    pattern: s.cron.to_string(),
                    cron,
                    timezone: tz_name.to_string(),
                    tz,
                    connector: s.subjects.connector.to_string(),
                    operation: s.subjects.operation.to_string(),
                    payload,
                    catch_up: s.catch_up.as_ref().is_none_or(|c| **c),
                });
            }
        }
        triggers
    }

    /// The consent rule of a triggered workflow, reported at the `triggers` line.
    pub(super) fn check_consent(
        &mut self,
        graph: &DiGraph<Node, Edge>,
        start: NodeIndex,
        line: usize,
    ) {
        if let Some(path) = unconsented_path(graph, start) {
            let last = path.last().cloned().unwrap_or_default();
            let msg = format!(
                "a workflow started by events or a schedule may contact the customer only after a consent check, but the path {} reaches `{last}` without one; add a decision branch whose `when` calls `consent(\"<purpose>\")`",
                path.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" → ")
            );
            self.diag(Code::NoConsentCheck, line, msg).node = Some(last);
        }
    }
}

/// `warranty.expiring`: 1–128 ASCII letters, digits, `.`, `_`, `-`.
pub fn is_event_type(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consent_check_calls_consent_and_does_not_negate_it() {
        assert!(is_consent_check(r#"consent("marketing")"#));
        assert!(is_consent_check(
            r#"consent("marketing") && contacts("marketing", 365) == 0"#
        ));
        assert!(!is_consent_check(r#"!consent("marketing")"#));
        assert!(!is_consent_check(r#"! consent("marketing")"#));
        assert!(!is_consent_check(r#"contacts("marketing", 30) < 2"#));
        assert!(!is_consent_check(r#"case.consented"#));
    }

    fn schedule(pattern: &str, catch_up: bool) -> Schedule {
        Schedule {
            pattern: pattern.into(),
            cron: croner::Cron::from_str(pattern).expect("pattern"),
            timezone: "Europe/Berlin".into(),
            tz: TimeZone::get("Europe/Berlin").expect("tz"),
            connector: "crm".into(),
            operation: "x".into(),
            payload: None,
            catch_up,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn occurrences_are_read_in_the_schedule_time_zone() {
        let s = schedule("0 9 * * MON-FRI", true);
        // Friday 2026-12-04 09:00 in Berlin is 08:00 UTC; the next is Monday.
        assert_eq!(
            s.next_after(ts("2026-12-04T07:00:00Z")),
            Some(ts("2026-12-04T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-12-04T08:00:00Z")),
            Some(ts("2026-12-07T08:00:00Z"))
        );
        // Summer time: 09:00 in Berlin is 07:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-07-01T00:00:00Z")),
            Some(ts("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn missed_occurrences_run_once_or_not_at_all() {
        let grace = jiff::SignedDuration::from_mins(5);
        let daily = schedule("0 9 * * *", true);
        // On time: the one occurrence runs.
        let due = daily.due(
            ts("2026-12-01T07:59:00Z"),
            ts("2026-12-01T08:00:30Z"),
            grace,
        );
        assert_eq!(due.run, vec![ts("2026-12-01T08:00:00Z")]);
        assert!(due.skipped.is_empty());
        // Off across three occurrences: the latest runs once, the others are skipped.
        let due = daily.due(
            ts("2026-12-01T08:00:00Z"),
            ts("2026-12-04T12:00:00Z"),
            grace,
        );
        assert_eq!(due.run, vec![ts("2026-12-04T08:00:00Z")]);
        assert_eq!(
            due.skipped,
            vec![ts("2026-12-02T08:00:00Z"), ts("2026-12-03T08:00:00Z")]
        );
        // Without catch-up nothing missed runs.
        let strict = schedule("0 9 * * *", false);
        let due = strict.due(
            ts("2026-12-01T08:00:00Z"),
            ts("2026-12-04T12:00:00Z"),
            grace,
        );
        assert!(due.run.is_empty());
        assert_eq!(due.skipped.len(), 3);
        // Nothing due.
        let due = daily.due(
            ts("2026-12-01T08:00:00Z"),
            ts("2026-12-01T09:00:00Z"),
            grace,
        );
        assert_eq!(due, Due::default());
    }
}
