//! The one corridor from a request to a case: a [`Request`] arrives (the HTTP intake, a
//! line of `casegraph run`, the console's dry run, a workflow fixture), its intake is made
//! once ([`Received`]), a [`Service`] answers its [`Classification`], the
//! catalog's routing policy picks a [`Route`], and [`Pipeline::start`] starts the workflow
//! routing chose (or says which queue waits for it). Every entry point calls this; none
//! routes or starts a case by itself.
//!
//! Pure: no store, no clock of its own (the executor brings it), no HTTP. What a caller
//! records or answers (the runner's audit trail, the CLI's table, the dry run's JSON) is
//! the caller's; the order of the steps and what each sees is this module's.

use std::sync::Arc;

use serde_json::Value;

use crate::exec::{self, Case, Event, Executor, ManualClock, Status, StepRecord, Waiting};
use crate::rules::{Context, Rules};
use crate::workflow::{Catalog, Workflow};

pub use crate::classify::{Classification, Service};
pub use crate::intake::{Channel, Received, Request};
pub use crate::routing::Route;

/// What routing and starting need: the served catalog and the rules sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Pipeline<'a> {
    pub catalog: &'a Catalog,
    pub rules: &'a Rules,
}

/// What became of a routed request.
#[derive(Debug)]
pub enum Start {
    /// Routing sent it to a human queue.
    Queued { queue: String, rule: String },
    /// The workflow routing chose ran to its first wait or its end.
    Started {
        workflow: Arc<Workflow>,
        case: Box<Case>,
        steps: Vec<StepRecord>,
    },
    /// Routing chose a workflow that is not loaded.
    NotLoaded { workflow: String },
    /// The workflow refused to start (e.g. the request does not fit its input schema).
    Refused {
        workflow: Arc<Workflow>,
        error: exec::Error,
    },
}

impl Pipeline<'_> {
    /// Where the classified request goes, by the catalog's routing policy, decided at
    /// `now` for case `case_id`.
    pub fn route(
        &self,
        case_id: &str,
        now: jiff::Timestamp,
        request: &Request,
        classification: &Classification,
    ) -> Result<Route, crate::routing::Error> {
        let ctx = Context {
            case_id,
            node: "routing",
            now,
        };
        self.catalog.routing.route(
            self.rules,
            &ctx,
            &input(request, classification),
            self.catalog.intent_map(),
            self.catalog.risk_map(),
        )
    }

    /// Routes the classified request and starts what routing chose, on `exec` (whose
    /// clock is the decision's "now"). A routing failure is the `Err`; everything after it
    /// is a [`Start`], beside the route that led to it.
    pub fn start(
        &self,
        exec: &Executor<'_>,
        case_id: &str,
        request: &Request,
        classification: &Classification,
    ) -> Result<(Route, Start), crate::routing::Error> {
        let route = self.route(case_id, exec.clock.now(), request, classification)?;
        let start = match &route {
            Route::Queue { queue, rule } => Start::Queued {
                queue: queue.clone(),
                rule: rule.clone(),
            },
            Route::Workflow { workflow, .. } => match self.catalog.get(workflow) {
                None => Start::NotLoaded {
                    workflow: workflow.clone(),
                },
                Some(wf) => match begin(exec, wf, case_id, request, classification) {
                    Ok((case, steps)) => Start::Started {
                        workflow: wf.clone(),
                        case: Box::new(case),
                        steps,
                    },
                    Err(error) => Start::Refused {
                        workflow: wf.clone(),
                        error,
                    },
                },
            },
        };
        Ok((route, start))
    }
}

/// Starts `workflow` on the request: where every case begins (after routing, after a
/// reviewer's triage decision, in a fixture). The request becomes `case.request`, the
/// classification `case.classification`.
pub fn begin(
    exec: &Executor<'_>,
    workflow: &Workflow,
    case_id: &str,
    request: &Request,
    classification: &Classification,
) -> Result<(Case, Vec<StepRecord>), exec::Error> {
    exec.start(
        workflow,
        case_id,
        request.to_json(),
        classification.to_json(),
    )
}

/// What the routing policy sees as `request`: the request's fields with the
/// classification's `intent`, `confidence` and `out_of_scope` beside them (the
/// classifier's win over fields of the same name).
pub fn input(request: &Request, classification: &Classification) -> Value {
    let mut merged = match request.to_json() {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    merged.insert(
        "intent".into(),
        classification
            .intent
            .clone()
            .map_or(Value::Null, Value::String),
    );
    merged.insert(
        "confidence".into(),
        classification.confidence.map_or(Value::Null, Value::from),
    );
    merged.insert("out_of_scope".into(), classification.out_of_scope.into());
    Value::Object(merged)
}

/// Lets the case's timers pass at once, up to `limit` of them, for runs that have no
/// service to wait for (`casegraph run`, the console's dry run): it stops when the case
/// waits for a person, ends, or cannot resume.
pub fn fast_forward(
    exec: &Executor<'_>,
    clock: &ManualClock,
    workflow: &Workflow,
    case: &mut Case,
    limit: usize,
) {
    let mut passed = 0;
    while passed < limit
        && let (Status::Waiting, Some(Waiting::Timer { due, .. })) = (case.status, &case.waiting)
    {
        clock.advance_to(*due);
        passed += 1;
        if exec.resume(workflow, case, Event::TimerFired).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn routing_sees_the_classification_beside_the_request() {
        let mut r = Request::text(Channel::Chat, "hi");
        r.metadata = json!({"intent": "spoofed"}).as_object().cloned();
        let c = Classification::new(Some("card_arrival".into()), 0.8);
        let input = input(&r, &c);
        assert_eq!(
            input["intent"], "card_arrival",
            "the classifier's intent wins"
        );
        assert_eq!(input["confidence"], 0.8);
        assert_eq!(input["out_of_scope"], false);
        assert_eq!(input["text"], "hi");
        assert_eq!(input["metadata"]["intent"], "spoofed");
    }
}
