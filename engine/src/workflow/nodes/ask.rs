//! `ask`: a question to the customer. The node renders a reply template (the question,
//! with the case reference printed below it) and the case waits durably for the answer,
//! which may come back on any channel: `answer` is taken when it arrives (kept at
//! `case.answers.<node>`), `on_timeout` when nobody answered within `timeout`.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{Build, Edge, Kind, Outcome, Run, Step, StepDetails, reply, signed};
use crate::case::Waiting;

pub(super) const KIND: Kind = Kind {
    name: "ask",
    fields: &["template", "answer", "timeout", "on_timeout"],
    compile,
    waits: true,
    ends: false,
    mermaid: ("([", "])"),
    dot: "invhouse",
};

/// `template` names a reply template; `answer`, `timeout` and `on_timeout` are required: a
/// question nobody answers must not hold a case for ever.
fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    b.required("answer", &def.answer);
    b.edge(&def.answer, Edge::Answer);
    b.required("on_timeout", &def.on_timeout);
    b.edge(&def.on_timeout, Edge::Timeout);
    let timeout = match b.required("timeout", &def.timeout) {
        Some(t) => b.duration(t),
        None => None,
    };
    let template = reply::template(b)?;
    Some(Step::Ask {
        template,
        timeout: timeout?,
    })
}

/// Sends the question (into `case.reply`, which the service delivers to `reply_to`) and
/// suspends the case on the answer.
pub(super) fn run(
    run: &mut Run<'_>,
    template: &str,
    timeout: Duration,
) -> (Outcome, Option<String>) {
    let mut detail = match reply::render(run, template) {
        Ok(detail) => detail,
        Err(failure) => {
            let detail = Value::Null;
            return (Outcome::Fail { failure, detail }, None);
        }
    };
    let now = run.now;
    let due = now.saturating_add(signed(timeout)).unwrap_or(now);
    if let Value::Object(m) = &mut detail {
        m.insert("due".into(), serde_json::json!(due));
        m.insert("question".into(), Value::Bool(true));
    }
    let waiting = Waiting::Answer {
        node: run.node.id.clone(),
        asked_at: now,
        due,
    };
    (Outcome::Wait { waiting, detail }, None)
}

pub(super) fn label(template: &str) -> String {
    format!("ask {template}")
}

/// A question to the customer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AskDetails {
    /// The reply template the question is rendered from.
    pub question: String,
    /// How long the case waits for the answer before it takes `on_timeout`.
    pub timeout_secs: u64,
}

pub(super) fn details(template: &str, timeout: Duration) -> StepDetails {
    StepDetails::Ask(AskDetails {
        question: template.to_owned(),
        timeout_secs: timeout.as_secs(),
    })
}
