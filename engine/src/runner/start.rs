//! The start trigger: an accepted request becomes a case. It is classified (a classifier
//! that fails classifies it out of scope, with the error, and routing decides), routed by
//! the catalog's policy, and either starts the workflow routing chose or waits in the
//! queue routing named. A request that does not fit the chosen workflow's input schema
//! waits in the triage queue for a reviewer to correct ([`Runner::start_workflow`]).
//!
//! It may not fail the case for a classifier that is down, and it records the
//! classification and the route (with the rule that chose it) before anything runs; like
//! every trigger it writes only through its [`Segment`].

use std::sync::Arc;

use serde_json::{Value, json};

use super::segment::{Outcome, Segment};
use super::triage::TRIAGE_QUEUE;
use super::{Error, Runner};
use crate::audit;
use crate::exec::{self, Failure};
use crate::routing::{self, Route};
use crate::rules::Context;
use crate::store::{QueueReason, WorkflowRef};
use crate::workflow::{Catalog, Workflow};

impl Runner {
    /// Classifies, routes, and starts the workflow or opens the queue's task.
    pub(super) fn on_start(&self, seg: &mut Segment<'_>) -> Result<Outcome, Error> {
        let classification = self.classification(seg);
        let catalog = self.catalog();
        let route = match self.route(seg, &catalog, &classification) {
            Ok(route) => route,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(match route {
            Route::Workflow { workflow, .. } => match catalog.get(&workflow) {
                Some(wf) => self.start_workflow(seg, &wf.clone(), classification),
                None => Err(Failure::public(format!(
                    "routing chose workflow `{workflow}`, which is not loaded"
                ))),
            },
            Route::Queue { queue, rule } => {
                let reason = QueueReason::Routed { rule };
                self.open_triage(&mut seg.rec, &queue, reason, seg.at, &mut seg.batch);
                Ok(None)
            }
        })
    }

    /// The model's answer, recorded on the case and in its audit trail.
    fn classification(&self, seg: &mut Segment<'_>) -> Value {
        let classification = match self.classifier.classify(&seg.personal.request) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(case = %seg.case_id, "classification failed: {e}");
                json!({ "intent": null, "confidence": 0.0, "out_of_scope": true,
                        "error": e, "model": "unavailable" })
            }
        };
        seg.entries.push(audit::Entry::new(
            seg.case_id,
            audit::Kind::Classified,
            seg.at,
            classification.clone(),
        ));
        seg.rec.classification = Some(classification.clone());
        classification
    }

    /// Routes the classified request by the catalog's policy and records the route.
    fn route(
        &self,
        seg: &mut Segment<'_>,
        catalog: &Catalog,
        classification: &Value,
    ) -> Result<Route, Failure> {
        let ctx = Context {
            case_id: seg.case_id,
            node: "routing",
            now: seg.at,
        };
        let input = routing::input(&seg.personal.request, classification);
        let route = catalog
            .routing
            .route(&self.rules, &ctx, &input, catalog.intent_map())
            .map_err(|e| routing_failure(&e))?;
        seg.entries.push(audit::Entry::new(
            seg.case_id,
            audit::Kind::Routed,
            seg.at,
            json!({ "policy_version": catalog.routing.version, "rule": route.rule(), "route": route }),
        ));
        seg.rec.route = Some(route.clone());
        Ok(route)
    }

    /// Starts `wf` on the case (for the start trigger, and for a reviewer's triage
    /// decision). A request that does not fit the workflow's input schema is not a failure
    /// of the case but of its data: it goes to the triage queue, where a reviewer can
    /// correct it (see [`Runner::correct`]) and choose a workflow again.
    pub(super) fn start_workflow(
        &self,
        seg: &mut Segment<'_>,
        wf: &Arc<Workflow>,
        classification: Value,
    ) -> Outcome {
        let request = seg.personal.request.clone();
        match seg.exec.start(wf, &seg.rec.id, request, classification) {
            Ok((case, steps)) => {
                seg.rec.workflow = Some(WorkflowRef {
                    id: wf.id.clone(),
                    version: wf.version,
                    digest: wf.digest.clone(),
                });
                self.keep_version(wf, &mut seg.batch);
                Ok(Some((case, steps)))
            }
            Err(exec::Error::InvalidInput { workflow, errors }) => {
                let reason = QueueReason::InputInvalid {
                    workflow: workflow.clone(),
                    fields: errors.iter().map(|e| e.reason()).collect(),
                };
                // The full message quotes the values: it is erasable personal data.
                let message = exec::Error::InvalidInput { workflow, errors }.to_string();
                seg.entries.push(audit::Entry::new(
                    &seg.rec.id,
                    audit::Kind::Routed,
                    seg.at,
                    json!({ "queue": TRIAGE_QUEUE, "reason": reason }),
                ));
                seg.personal.error = Some(message);
                self.open_triage(&mut seg.rec, TRIAGE_QUEUE, reason, seg.at, &mut seg.batch);
                Ok(None)
            }
            Err(e) => Err(Failure::public(e.to_string())),
        }
    }
}

/// A routing failure: the policy's script may have thrown or returned case data.
fn routing_failure(e: &routing::Error) -> Failure {
    let reason = match e {
        routing::Error::Script(e) => Failure::script(e).reason,
        routing::Error::NotARoute { file, .. } => format!("{file}: routing returned no route"),
        routing::Error::UnknownWorkflow { file, .. } => {
            format!("{file}: routing chose a workflow that does not exist")
        }
    };
    Failure {
        message: format!("routing failed: {e}"),
        reason: format!("routing failed: {reason}"),
    }
}
