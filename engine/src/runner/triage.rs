//! Triage: a case parked in a queue without a workflow, for a reviewer to route, correct or
//! close. Routing sends cases here by rule; the runner sends a case whose request does not
//! fit the input schema of its workflow (reason `input_invalid`).

use serde_json::{Value, json};

use super::Runner;
use crate::routing::Priority;
use crate::store::{
    Batch, CaseRecord, CaseStatus, PersonalRecord, QueueReason, Table, TaskEntry, key,
};

/// Decisions a reviewer has on a case routed to a queue: a workflow to run it, or close it.
pub(super) const CLOSE: &str = "close";

/// The queue a case goes to when its request does not fit the workflow chosen for it.
pub const TRIAGE_QUEUE: &str = "triage";

/// The intent a reviewer gave a triaged request (`data.intent`): a training label that
/// `casegraph corrections export` reads back from the audit trail. `None` when none was
/// given. The trail outlives erasure, so only a label-shaped value is kept (at most 64
/// ASCII letters, digits and `_-?`, no personal datum); anything else is `Err`.
/// `Runner::complete_task` refuses such completions (and labels the model does not know);
/// trails written before it did may still record `intent_refused`.
pub(super) fn reviewed_intent(data: &Value) -> Option<Result<&str, ()>> {
    let given = data.get("intent").filter(|v| !v.is_null())?;
    let label = given.as_str().filter(|s| is_intent_label(s));
    Some(label.ok_or(()))
}

/// The intent a case started from triage is about, among those the chosen workflow
/// serves: the reviewer's `data.intent` when given, else the classified intent, else the
/// workflow's only intent. `None` when that names none of the workflow's intents —
/// a workflow that answers per intent (a knowledge base) could not answer such a case, so
/// [`Runner::complete_task`] refuses the completion.
pub(super) fn case_intent<'a>(
    served: &'a [String],
    reviewed: Option<&str>,
    classified: Option<&str>,
) -> Option<&'a String> {
    let find = |i: Option<&str>| served.iter().find(|s| Some(s.as_str()) == i);
    if reviewed.is_some() {
        // The reviewer's word wins; one the workflow does not serve names no intent of it.
        return find(reviewed);
    }
    let only = match served {
        [only] => Some(only),
        _ => None,
    };
    find(classified).or(only)
}

/// Whether `s` is shaped like an intent label: 1–64 ASCII letters, digits and `_-?`, and
/// nothing the intake's personal-data finder recognizes. Every intent the box writes into
/// the audit chain (a reviewer's correction, a sender's stated intent) passes it first.
pub fn is_intent_label(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '?'))
        && crate::intake::pii::find(s).is_empty()
}

impl Runner {
    pub(super) fn open_triage(
        &self,
        rec: &mut CaseRecord,
        queue: &str,
        reason: QueueReason,
        at: jiff::Timestamp,
        batch: &mut Batch,
    ) {
        let task_id = format!("{}.triage", rec.id);
        let mut decisions: Vec<String> = self.catalog().workflows().map(|w| w.id.clone()).collect();
        decisions.push(CLOSE.to_string());
        let why = rec.why.clone();
        let priority = why.as_ref().map(|w| w.priority).unwrap_or_default();
        // A high-priority case must be seen sooner: its queue task is due within the
        // configured priority SLA. Other queue tasks have no SLA.
        let sla_due = (priority == Priority::High)
            .then(|| at.checked_add(self.priority_sla).ok())
            .flatten();
        let title = match &reason {
            QueueReason::InputInvalid { .. } => {
                "Check this request: its fields do not fit the workflow; correct them and choose a workflow, or close it"
            }
            QueueReason::Routed { .. } => "Route this request: choose a workflow or close it",
        };
        batch.put(
            Table::Tasks,
            task_id.as_bytes(),
            &TaskEntry {
                task_id: task_id.clone(),
                case_id: rec.id.clone(),
                queue: queue.to_string(),
                node: "triage".into(),
                title: Some(title.into()),
                decisions,
                created_at: at,
                sla_due,
                reason: Some(reason.clone()),
                priority,
                why,
            },
        );
        rec.queue_task = Some(task_id);
        rec.queue_reason = Some(reason);
        rec.status = CaseStatus::Waiting;
    }

    /// Applies a reviewer's corrections (`data.request` of a triage completion, checked by
    /// [`check_corrections`]) to the request before a workflow starts on it, and returns
    /// the corrected fields' paths. A corrected `customer_id` indexes the case under the
    /// new customer too, so erasure by either id finds it.
    pub(super) fn correct(
        &self,
        rec: &mut CaseRecord,
        personal: &mut PersonalRecord,
        data: &Value,
        batch: &mut Batch,
    ) -> Vec<String> {
        let Some(Value::Object(given)) = data.get("request") else {
            return Vec::new();
        };
        let Value::Object(request) = &mut personal.request else {
            return Vec::new();
        };
        let mut corrected = Vec::new();
        for (k, v) in given {
            if k == "fields"
                && let Value::Object(fields) = v
            {
                let target = request.entry("fields").or_insert_with(|| json!({}));
                if !target.is_object() {
                    *target = json!({});
                }
                if let Value::Object(target) = target {
                    for (f, fv) in fields {
                        corrected.push(format!("/fields/{f}"));
                        if fv.is_null() {
                            target.remove(f);
                        } else {
                            target.insert(f.clone(), fv.clone());
                        }
                    }
                }
                continue;
            }
            corrected.push(format!("/{k}"));
            request.insert(k.clone(), v.clone());
            if k == "customer_id"
                && let Some(id) = v.as_str()
            {
                let customer = self.store.pseudonym(id);
                batch.put_raw(Table::CustomerCases, key(&[&customer, &rec.id]), Vec::new());
                rec.customer = Some(customer);
            }
        }
        corrected
    }
}

/// The sentiment labels a reviewer may give (`data.sentiment`), as the model's head has them.
pub const SENTIMENT_LABELS: [&str; 3] = ["negative", "neutral", "positive"];

/// A reviewer's reading of the customer's mood on a triage task: `data.sentiment` (one of
/// [`SENTIMENT_LABELS`]) and `data.frustrated` (a boolean), each optional. They are
/// training labels for the model's sentiment and frustration heads, kept in the audit
/// trail (labels only) for `casegraph corrections export`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReviewedMood {
    pub sentiment: Option<&'static str>,
    pub frustrated: Option<bool>,
}

/// The reviewer's [`ReviewedMood`] in `data`, or what is wrong with it.
pub(super) fn reviewed_mood(data: &Value) -> Result<ReviewedMood, String> {
    let mut mood = ReviewedMood::default();
    if let Some(given) = data.get("sentiment").filter(|v| !v.is_null()) {
        let label = given
            .as_str()
            .and_then(|s| SENTIMENT_LABELS.iter().find(|l| **l == s));
        mood.sentiment = Some(*label.ok_or_else(|| {
            format!(
                "`data.sentiment` must be one of {}",
                SENTIMENT_LABELS.join(", ")
            )
        })?);
    }
    if let Some(given) = data.get("frustrated").filter(|v| !v.is_null()) {
        mood.frustrated = Some(
            given
                .as_bool()
                .ok_or("`data.frustrated` must be true or false")?,
        );
    }
    Ok(mood)
}

/// Which keys of `data.request` a reviewer may correct on a triage task, and their shapes:
/// the customer number, the language and the form fields. Anything else (channel, text,
/// reply address, metadata) is what the customer sent and stays as it was.
pub(super) fn check_corrections(data: &Value) -> Result<(), String> {
    let Some(given) = data.get("request").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let Value::Object(given) = given else {
        return Err("`data.request` must be an object".into());
    };
    for (k, v) in given {
        let fits = match k.as_str() {
            "customer_id" | "language" => v.is_string(),
            "fields" => v.is_object(),
            _ => {
                return Err(format!(
                    "`data.request.{k}` cannot be corrected; only `customer_id`, `language` and `fields`"
                ));
            }
        };
        if !fits {
            return Err(format!("`data.request.{k}` has the wrong type"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_case_intent_is_the_reviewers_then_the_classified_then_the_only_one() {
        let many = ["card_acceptance".to_string(), "fees".to_string()];
        let one = ["terminate_account".to_string()];
        fn pick<'a>(served: &'a [String], r: Option<&str>, c: Option<&str>) -> Option<&'a str> {
            case_intent(served, r, c).map(String::as_str)
        }
        assert_eq!(
            pick(&many, Some("fees"), Some("card_acceptance")),
            Some("fees")
        );
        assert_eq!(
            pick(&many, None, Some("card_acceptance")),
            Some("card_acceptance")
        );
        assert_eq!(pick(&many, Some("request_refund"), Some("fees")), None);
        assert_eq!(pick(&many, None, Some("request_refund")), None);
        assert_eq!(pick(&one, None, Some("fees")), Some("terminate_account"));
        assert_eq!(pick(&one, Some("fees"), None), None);
    }

    #[test]
    fn a_reviewers_mood_is_a_label_and_a_boolean_or_refused() {
        assert_eq!(reviewed_mood(&json!({})), Ok(ReviewedMood::default()));
        assert_eq!(
            reviewed_mood(&json!({"sentiment": "negative", "frustrated": true})),
            Ok(ReviewedMood {
                sentiment: Some("negative"),
                frustrated: Some(true)
            })
        );
        for refused in [
            json!({"sentiment": "furious"}),
            json!({"sentiment": 1}),
            json!({"sentiment": "Frau Muster ist sauer"}),
            json!({"frustrated": "yes"}),
        ] {
            assert!(reviewed_mood(&refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn only_a_label_shaped_reviewed_intent_is_kept() {
        assert_eq!(reviewed_intent(&json!({})), None);
        assert_eq!(reviewed_intent(&Value::Null), None);
        assert_eq!(reviewed_intent(&json!({"intent": null})), None);
        assert_eq!(
            reviewed_intent(&json!({"intent": "request_refund"})),
            Some(Ok("request_refund"))
        );
        assert_eq!(
            reviewed_intent(&json!({"intent": "reverted_card_payment?"})),
            Some(Ok("reverted_card_payment?"))
        );
        for refused in [
            json!("Frau Mustermann will Geld zurück"),
            json!("erika@example.de"),
            json!("DE89370400440532013000"),
            json!(""),
            json!(7),
            json!("x".repeat(65)),
        ] {
            assert_eq!(
                reviewed_intent(&json!({ "intent": refused })),
                Some(Err(())),
                "{refused}"
            );
        }
    }
}
