//! The one corridor from a request to a case: a [`Request`] arrives (the HTTP intake, a
//! line of `casegraph run`, the console's dry run, a workflow fixture), its intake is made
//! once ([`Received`]), a [`Service`] answers its [`Classification`], the customer's
//! [`History`] is brought by the caller (the runner reads it from the store), the
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

pub use crate::classify::{Classification, FRUSTRATION, SENTIMENT, Service};
pub use crate::customer::History;
pub use crate::intake::{Channel, Received, Request};
pub use crate::routing::{Decision, Priority, Route, Signals, Why};

/// What routing and the workflow know about a request: what it says, what the model read in
/// it, and the customer's history.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub request: &'a Request,
    pub classification: &'a Classification,
    pub customer: &'a History,
}

impl Subject<'_> {
    /// The signals routing decides on, as the decision's [`Why`] records them.
    pub fn signals(&self) -> Signals {
        let c = self.classification;
        Signals {
            intent: c.intent.clone(),
            confidence: c.confidence,
            out_of_scope: c.out_of_scope,
            sentiment: c.signals.get(SENTIMENT).cloned(),
            frustration: c.signals.get(FRUSTRATION).cloned(),
            customer: self.customer.clone(),
        }
    }

    /// Why `decision` was taken by policy `policy_version`.
    pub fn why(&self, policy_version: u32, decision: &Decision) -> Why {
        Why {
            policy_version,
            rule: decision.route.rule().to_string(),
            priority: decision.priority,
            scores: decision.scores.clone(),
            signals: self.signals(),
        }
    }
}

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
        subject: Subject<'_>,
    ) -> Result<Decision, crate::routing::Error> {
        let ctx = Context {
            case_id,
            node: "routing",
            now,
        };
        self.catalog
            .routing
            .route(self.rules, &ctx, &input(subject), self.catalog.intent_map())
    }

    /// Routes the classified request and starts what routing chose, on `exec` (whose
    /// clock is the decision's "now"). A routing failure is the `Err`; everything after it
    /// is a [`Start`], beside the route that led to it.
    pub fn start(
        &self,
        exec: &Executor<'_>,
        case_id: &str,
        subject: Subject<'_>,
    ) -> Result<(Decision, Start), crate::routing::Error> {
        let decision = self.route(case_id, exec.clock.now(), subject)?;
        let start = match &decision.route {
            Route::Queue { queue, rule } => Start::Queued {
                queue: queue.clone(),
                rule: rule.clone(),
            },
            Route::Workflow { workflow, .. } => match self.catalog.get(workflow) {
                None => Start::NotLoaded {
                    workflow: workflow.clone(),
                },
                Some(wf) => match begin(exec, wf, case_id, subject) {
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
        Ok((decision, start))
    }
}

/// Starts `workflow` on the request: where every case begins (after routing, after a
/// reviewer's triage decision, in a fixture). The request becomes `case.request`, the
/// classification `case.classification`, the customer's history `case.customer`.
pub fn begin(
    exec: &Executor<'_>,
    workflow: &Workflow,
    case_id: &str,
    subject: Subject<'_>,
) -> Result<(Case, Vec<StepRecord>), exec::Error> {
    exec.start_with_customer(
        workflow,
        case_id,
        subject.request.to_json(),
        subject.classification.to_json(),
        subject.customer.to_json(),
    )
}

/// What the routing policy sees as `request`: the request's fields with the
/// classification's `intent`, `confidence`, `out_of_scope`, `sentiment` and `frustration`
/// and the customer's history (`customer`) beside them (these win over fields of the same
/// name). A signal the model did not give is `()`.
pub fn input(subject: Subject<'_>) -> Value {
    let Subject {
        request,
        classification,
        customer,
    } = subject;
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
    for signal in [SENTIMENT, FRUSTRATION] {
        let given = classification.signals.get(signal).cloned();
        merged.insert(signal.into(), given.unwrap_or(Value::Null));
    }
    merged.insert("customer".into(), customer.to_json());
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
        let mut c = Classification::new(Some("card_arrival".into()), 0.8);
        c.signals
            .insert(FRUSTRATION.into(), json!({"score": 0.9, "flagged": true}));
        let customer = History {
            known: true,
            contacts_30d: 2,
            ..History::default()
        };
        let input = input(Subject {
            request: &r,
            classification: &c,
            customer: &customer,
        });
        assert_eq!(
            input["intent"], "card_arrival",
            "the classifier's intent wins"
        );
        assert_eq!(input["confidence"], 0.8);
        assert_eq!(input["out_of_scope"], false);
        assert_eq!(input["text"], "hi");
        assert_eq!(input["metadata"]["intent"], "spoofed");
        assert_eq!(input["frustration"]["flagged"], true);
        assert_eq!(input["sentiment"], Value::Null, "absent, not missing");
        assert_eq!(input["customer"]["contacts_30d"], 2);
    }
}
