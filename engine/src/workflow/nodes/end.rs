//! `end`: a terminal node with an outcome; `status: escalated` marks a case that ended by
//! handing over.

use serde::Serialize;

use super::{Build, Code, Kind, Outcome, Step, StepDetails};
use crate::yaml::line_of;

pub(super) const KIND: Kind = Kind {
    name: "end",
    fields: &["outcome", "status"],
    compile,
    waits: false,
    ends: true,
    mermaid: ("((", "))"),
    dot: "doublecircle",
};

fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    let outcome = b.required("outcome", &def.outcome)?;
    let escalated = match def.status.as_ref().map(|s| s.as_str()) {
        None | Some("completed") => false,
        Some("escalated") => true,
        Some(other) => {
            let msg = format!("`status` must be `completed` or `escalated`, not `{other}`");
            let line = def.status.as_ref().map(line_of).unwrap_or(0);
            b.problem(Code::InvalidValue, line, msg);
            return None;
        }
    };
    Some(Step::End {
        outcome: outcome.to_string(),
        escalated,
    })
}

pub(super) fn run(outcome: &str, escalated: bool) -> (Outcome, Option<String>) {
    let outcome = Outcome::End {
        outcome: outcome.to_string(),
        escalated,
    };
    (outcome, None)
}

pub(super) fn label(outcome: &str) -> String {
    format!("end: {outcome}")
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndDetails {
    pub outcome: String,
    pub escalated: bool,
}

pub(super) fn details(outcome: &str, escalated: bool) -> StepDetails {
    StepDetails::End(EndDetails {
        outcome: outcome.to_owned(),
        escalated,
    })
}
