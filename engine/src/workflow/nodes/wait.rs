//! `wait`: a durable timer, for a fixed `duration` or `until` a date a rhai expression
//! gives. The case suspends; a timer event moves it on.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use serde::Serialize;

use super::{Build, Code, Edge, Kind, Outcome, Run, Step, StepDetails, signed};
use crate::case::{Failure, Waiting};
use crate::rules::Script;
use crate::yaml::line_of;

pub(super) const KIND: Kind = Kind {
    name: "wait",
    fields: &["duration", "until", "next"],
    compile,
    waits: true,
    ends: false,
    mermaid: ("[(", ")]"),
    dot: "cylinder",
};

/// How long a `wait` node waits.
#[derive(Debug)]
pub enum WaitFor {
    Duration(Duration),
    /// rhai expression giving an RFC 3339 timestamp or a `YYYY-MM-DD` date.
    Until(Arc<Script>),
}

/// Exactly one of `duration` and `until`.
fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    b.next();
    match (&def.duration, &def.until) {
        (Some(d), None) => Some(Step::Wait(WaitFor::Duration(b.duration(d)?))),
        (None, Some(u)) => Some(Step::Wait(WaitFor::Until(b.expression(u)?))),
        _ => {
            let msg = "a `wait` node needs exactly one of `duration` and `until`";
            b.problem(Code::MissingField, line_of(b.id), msg);
            None
        }
    }
}

/// Suspends the case until its due time; a due time already past goes straight on.
pub(super) fn run(run: &mut Run<'_>, wait_for: &WaitFor) -> (Outcome, Option<String>) {
    let now = run.now;
    let (due, script_digest) = match wait_for {
        WaitFor::Duration(d) => (now.saturating_add(signed(*d)).unwrap_or(now), None),
        WaitFor::Until(expr) => {
            let digest = Some(expr.digest.clone());
            match until(run, expr) {
                Ok(due) => (due, digest),
                Err(failure) => {
                    let detail = Value::Null;
                    return (Outcome::Fail { failure, detail }, digest);
                }
            }
        }
    };
    if due <= now {
        let detail = json!({ "due": due, "already_due": true });
        return (run.next(Edge::Next, detail), script_digest);
    }
    let waiting = Waiting::Timer {
        node: run.node.id.clone(),
        due,
        retry_attempt: None,
    };
    let detail = json!({ "due": due });
    (Outcome::Wait { waiting, detail }, script_digest)
}

/// The date `until` gives, or why the case fails.
fn until(run: &mut Run<'_>, expr: &Script) -> Result<Timestamp, Failure> {
    let rules = run.rules;
    let (ctx, data) = run.sandbox();
    let v = rules
        .eval(expr, &ctx, &[("case", data)])
        .map_err(|e| Failure::script(&e))?;
    parse_due(&v).ok_or_else(|| {
        let expected = "expected an RFC 3339 timestamp or a YYYY-MM-DD date";
        let node = &run.node.id;
        Failure {
            message: format!("`until` of node `{node}` gave {v}, {expected}"),
            reason: format!("`until` of node `{node}` gave no date, {expected}"),
        }
    })
}

fn parse_due(v: &Value) -> Option<Timestamp> {
    let s = v.as_str()?;
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let date: jiff::civil::Date = s.parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

pub(super) fn label() -> String {
    "wait".into()
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WaitDetails {
    pub duration_secs: u64,
}

/// A wait until the time its script gives.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WaitUntilDetails {
    pub until: bool,
}

/// An `until` expression is shown on its own (see `Step::script`).
pub(super) fn details(wait_for: &WaitFor) -> StepDetails {
    match wait_for {
        WaitFor::Duration(d) => StepDetails::Wait(WaitDetails {
            duration_secs: d.as_secs(),
        }),
        WaitFor::Until(_) => StepDetails::WaitUntil(WaitUntilDetails { until: true }),
    }
}
