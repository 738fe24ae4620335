//! Schedules: a workflow's `triggers.schedule` fires at its cron occurrences and starts a
//! case for each customer the back office names for that occurrence.
//!
//! Exactly once across restarts (ADR 0018): each schedule's *mark* (the last occurrence it
//! handled) is stored in the same commit as the cases an occurrence starts and their start
//! keys `(workflow, customer, occurrence)`. A crash before that commit leaves the mark
//! where it was, so the occurrence is handled again at the next tick (or at start, as a
//! missed one); a crash after it finds the mark moved on. Occurrences missed while the box
//! was off run once at the first tick (`catch_up: true`) or are skipped; the audit trail
//! records both under `schedule:<workflow>`. The tick's "now" comes from the runner's
//! clock, so tests move time by hand.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::proactive::{Origin, Starting};
use super::{Error, Runner};
use crate::audit;
use crate::exec::{CallRequest, Effect};
use crate::rules::Context;
use crate::store::ScheduleMark;
use crate::workflow::{Schedule, Workflow};

/// How late an occurrence may be handled and still count as on time (not missed).
pub const GRACE: SignedDuration = SignedDuration::from_mins(5);

/// Customers one occurrence may start cases for; the back office's answer beyond it is cut
/// (and the cut logged).
pub const MAX_SUBJECTS: usize = 10_000;

impl Runner {
    /// Handles every schedule's occurrences due by the clock's now; returns the cases
    /// started, for the caller to run ([`Runner::process`]). A schedule whose query fails
    /// is logged and tried again at the next tick.
    pub fn fire_schedules(&self) -> Result<Vec<String>, Error> {
        let now = self.clock.now();
        let mut started = Vec::new();
        for wf in self.catalog().workflows() {
            let Some(schedule) = &wf.triggers.schedule else {
                continue;
            };
            match self.fire_schedule(wf, schedule, now) {
                Ok(cases) => started.extend(cases),
                Err(Error::Store(e)) => return Err(Error::Store(e)),
                Err(e) => tracing::warn!(workflow = %wf.id, "schedule not handled: {e}"),
            }
        }
        Ok(started)
    }

    /// Stores a mark at now for every schedule the store has none for (or one reckoned under
    /// another pattern), in one commit: a box calls it at start, before it serves, so the
    /// first tick only fires and catches up, and an idle box writes nothing after start.
    /// Returns how many schedules it marked.
    pub fn mark_new_schedules(&self) -> Result<usize, Error> {
        let now = self.clock.now();
        let mut batch = crate::store::Batch::new();
        let mut marked = 0;
        for wf in self.catalog().workflows() {
            let Some(schedule) = &wf.triggers.schedule else {
                continue;
            };
            let pattern = mark_pattern(schedule);
            let known = self.store.schedules().get(&wf.id)?;
            if known.is_none_or(|m| m.pattern != pattern) {
                batch.put_schedule_mark(&wf.id, &ScheduleMark { pattern, last: now });
                marked += 1;
            }
        }
        if marked > 0 {
            self.store.commit(batch)?;
        }
        Ok(marked)
    }

    fn fire_schedule(
        &self,
        wf: &Workflow,
        schedule: &Schedule,
        now: Timestamp,
    ) -> Result<Vec<String>, Error> {
        let _lock = self.lock(&format!("schedule\0{}", wf.id));
        let pattern = mark_pattern(schedule);
        let mark = self.store.schedules().get(&wf.id)?;
        let mut starting = Starting::new("schedule", now);
        let Some(mark) = mark.filter(|m| m.pattern == pattern) else {
            // A schedule seen for the first time (or changed) starts from now: publishing
            // it does not fire the occurrences of the past.
            starting
                .batch
                .put_schedule_mark(&wf.id, &ScheduleMark { pattern, last: now });
            self.store.commit(starting.batch)?;
            return Ok(Vec::new());
        };
        let due = schedule.due(mark.last, now, GRACE);
        let Some(last) = due.run.iter().chain(&due.skipped).max().copied() else {
            return Ok(Vec::new());
        };
        // The back office is asked first: the start lock is never held across a call.
        let mut ran = Vec::new();
        let mut wanted = Vec::new();
        for &occurrence in &due.run {
            let origin = occurrence_origin(schedule, occurrence);
            for s in self.subjects(wf, schedule, &origin.value, occurrence)? {
                wanted.push((s, origin.clone()));
            }
            ran.push(occurrence);
        }
        let _starts = self.starts_lock();
        for (s, origin) in wanted {
            self.start_proactive(
                &mut starting,
                wf,
                &s.customer_id,
                &s.language,
                &Origin {
                    value: with_data(&origin.value, s.data),
                    ..origin
                },
            )?;
        }
        let Starting {
            mut batch, cases, ..
        } = starting;
        batch
            .put_schedule_mark(&wf.id, &ScheduleMark { pattern, last })
            .audit(audit::Entry::new(
                format!("schedule:{}", wf.id),
                audit::Kind::Scheduled,
                now,
                json!({
                    "workflow": wf.id,
                    "ran": ran,
                    "skipped": due.skipped,
                    "catch_up": schedule.catch_up,
                    "cases": cases.len(),
                }),
            ));
        self.store.commit(batch)?;
        if !cases.is_empty() || !due.skipped.is_empty() {
            tracing::info!(workflow = %wf.id, cases = cases.len(), skipped = due.skipped.len(), "schedule fired");
        }
        Ok(cases)
    }

    /// The customers of one occurrence, from the back office.
    fn subjects(
        &self,
        wf: &Workflow,
        schedule: &Schedule,
        occurrence_value: &Value,
        occurrence: Timestamp,
    ) -> Result<Vec<Subject>, Error> {
        let case_id = format!("schedule:{}", wf.id);
        let payload = match &schedule.payload {
            None => json!({}),
            Some(script) => {
                let ctx = Context {
                    case_id: &case_id,
                    node: "triggers",
                    now: occurrence,
                };
                self.rules
                    .eval(script, &ctx, &[("schedule", occurrence_value)])
                    .map_err(|e| Error::Schedule(e.to_string()))?
            }
        };
        let answer = self
            .connector
            .call(&CallRequest {
                case_id: case_id.clone(),
                node: "triggers".into(),
                connector: schedule.connector.clone(),
                operation: schedule.operation.clone(),
                payload,
                idempotency_key: format!("{case_id}:{occurrence}"),
                attempt: 1,
                effect: Effect::Read,
            })
            .map_err(|e| Error::Schedule(format!("the subjects query failed: {e}")))?;
        let Some(list) = answer.get("subjects").and_then(Value::as_array) else {
            return Err(Error::Schedule(
                "the subjects query answered no `subjects` list".into(),
            ));
        };
        if list.len() > MAX_SUBJECTS {
            tracing::warn!(workflow = %wf.id, given = list.len(), "an occurrence names more customers than {MAX_SUBJECTS}; the rest are not contacted");
        }
        Ok(list
            .iter()
            .take(MAX_SUBJECTS)
            .filter_map(|s| {
                let customer_id = s.get("customer_id")?.as_str()?;
                let valid = !customer_id.is_empty()
                    && customer_id.len() <= 64
                    && customer_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                valid.then(|| Subject {
                    customer_id: customer_id.to_string(),
                    language: match s.get("language").and_then(Value::as_str) {
                        Some("de") => "de".into(),
                        _ => "en".into(),
                    },
                    data: s.get("data").cloned().unwrap_or(Value::Null),
                })
            })
            .collect())
    }

    /// Each scheduled workflow with its next occurrences after now, for the console.
    pub fn next_occurrences(&self, wf: &Workflow, n: usize) -> Vec<Timestamp> {
        wf.triggers
            .schedule
            .as_ref()
            .map(|s| s.upcoming(self.clock.now(), n))
            .unwrap_or_default()
    }
}

/// What a mark was reckoned under: the pattern and the time zone.
fn mark_pattern(schedule: &Schedule) -> String {
    format!("{} {}", schedule.pattern, schedule.timezone)
}

/// A customer an occurrence is for.
struct Subject {
    customer_id: String,
    language: String,
    data: Value,
}

/// `case.schedule` without the customer's data: the occurrence, its date and year in the
/// schedule's time zone.
fn occurrence_origin(schedule: &Schedule, occurrence: Timestamp) -> Origin {
    let local = occurrence
        .to_zoned(jiff::tz::TimeZone::get(&schedule.timezone).unwrap_or(jiff::tz::TimeZone::UTC));
    Origin {
        kind: "schedule",
        value: json!({
            "occurrence": occurrence,
            "date": local.date().to_string(),
            "year": local.year(),
            "timezone": schedule.timezone,
        }),
        default_once: format!("schedule:{occurrence}"),
        reply_to: None,
    }
}

fn with_data(origin: &Value, data: Value) -> Value {
    let mut v = origin.clone();
    v["data"] = data;
    v
}
