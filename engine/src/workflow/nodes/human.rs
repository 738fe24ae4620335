//! `human`: a task in a named queue. The case waits until a reviewer takes one of the
//! declared decisions (each an edge), or until the SLA passes and it escalates.

use std::time::Duration;

use serde_json::json;

use serde::Serialize;

use super::{Build, Code, Edge, Kind, Outcome, Run, Step, StepDetails, signed};
use crate::case::Waiting;
use crate::yaml::line_of;

pub(super) const KIND: Kind = Kind {
    name: "human",
    fields: &["queue", "task", "sla", "decisions", "escalate"],
    compile,
    waits: true,
    ends: false,
    mermaid: ("[/", "/]"),
    dot: "parallelogram",
};

/// Each decision is an edge; `sla` and `escalate` come together.
fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    let queue = b.required("queue", &def.queue);
    let decisions = b.required("decisions", &def.decisions);
    let in_order = def.decisions_in_order();
    if decisions.is_some() && in_order.is_empty() {
        b.missing("decisions");
    }
    for (name, target) in &in_order {
        b.edges
            .push(((*target).clone(), Edge::Decision(name.to_string())));
    }
    b.edge(&def.escalate, Edge::Escalation);
    let sla = match &def.sla {
        Some(s) => Some(b.duration(s)?),
        None => None,
    };
    if sla.is_some() != def.escalate.is_some() {
        let msg = "`sla` and `escalate` go together: a task with an SLA needs an escalation edge, and the reverse";
        b.problem(Code::MissingField, line_of(b.id), msg);
    }
    Some(Step::Human {
        queue: queue?.to_string(),
        task: def.task.as_ref().map(|t| t.to_string()),
        sla,
        decisions: in_order.iter().map(|(k, _)| k.to_string()).collect(),
    })
}

/// Opens the task and suspends the case on it; the task id is stable per visit.
pub(super) fn run(
    run: &mut Run<'_>,
    queue: &str,
    task: &Option<String>,
    sla: Option<Duration>,
    decisions: &[String],
) -> (Outcome, Option<String>) {
    let (case, node, now) = (&run.case, run.node, run.now);
    let task_id = format!("{}-{}-{}", case.id, node.id, run.visit());
    let sla_due = sla.and_then(|d| now.saturating_add(signed(d)).ok());
    let detail = json!({ "task_id": task_id, "queue": queue, "sla_due": sla_due });
    let waiting = Waiting::Task {
        task_id,
        node: node.id.clone(),
        queue: queue.to_string(),
        task: task.clone(),
        decisions: decisions.to_vec(),
        created_at: now,
        sla_due,
    };
    (Outcome::Wait { waiting, detail }, None)
}

pub(super) fn label(queue: &str) -> String {
    format!("human task in {queue}")
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HumanDetails {
    pub queue: String,
    pub task: Option<String>,
    pub sla_secs: Option<u64>,
    pub decisions: Vec<String>,
}

pub(super) fn details(
    queue: &str,
    task: &Option<String>,
    sla: Option<Duration>,
    decisions: &[String],
) -> StepDetails {
    StepDetails::Human(HumanDetails {
        queue: queue.to_owned(),
        task: task.clone(),
        sla_secs: sla.map(|d| d.as_secs()),
        decisions: decisions.to_vec(),
    })
}
