//! The start trigger: an accepted request becomes a case, along the one corridor of
//! [`crate::pipeline`]. It is classified (a classifier that fails classifies it out of
//! scope, with the error, and routing decides), routed by the catalog's policy, and either
//! starts the workflow routing chose or waits in the queue routing named. A request that
//! does not fit the chosen workflow's input schema waits in the triage queue for a
//! reviewer to correct ([`Runner::started`]).
//!
//! Routing also reads the customer's history, counted from their earlier case records in
//! the store by pseudonym ([`crate::customer`]; erased cases do not count).
//!
//! It may not fail the case for a classifier that is down, and it records the
//! classification and the route with why it was chosen (the rule, the priority and the
//! signals it read) on the case and in its audit trail; like every trigger it writes only
//! through its [`Segment`].

use std::sync::Arc;

use serde_json::json;

use super::segment::{Outcome, Segment};
use super::triage::TRIAGE_QUEUE;
use super::{Error, Runner};
use crate::audit;
use crate::customer::History;
use crate::exec::{self, Case, Failure, StepRecord};
use crate::pipeline::{
    self, Classification, Decision, Pipeline, Received, Request, Start, Subject,
};
use crate::routing;
use crate::store::{QueueReason, WorkflowRef};
use crate::workflow::{Catalog, Workflow};

impl Runner {
    /// Classifies, routes, and starts the workflow or opens the queue's task.
    pub(super) fn on_start(&self, seg: &mut Segment<'_>) -> Result<Outcome, Error> {
        let request = match stored_request(seg) {
            Ok(r) => r,
            Err(failure) => return Ok(Err(failure)),
        };
        let received = Received::new(request);
        let classification = self.classification(seg, &received);
        let customer = self.customer_history(seg)?;
        let catalog = self.catalog();
        let pipeline = Pipeline {
            catalog: &catalog,
            rules: &self.rules,
        };
        let subject = Subject {
            request: &received.request,
            classification: &classification,
            customer: &customer,
        };
        let (decision, start) = match pipeline.start(&seg.exec, seg.case_id, subject) {
            Ok(routed) => routed,
            Err(e) => return Ok(Err(routing_failure(&e))),
        };
        record_route(seg, &catalog, subject, decision);
        Ok(match start {
            Start::Queued { queue, rule } => {
                let reason = QueueReason::Routed { rule };
                self.open_triage(&mut seg.rec, &queue, reason, seg.at, &mut seg.batch);
                Ok(None)
            }
            Start::NotLoaded { workflow } => Err(Failure::public(format!(
                "routing chose workflow `{workflow}`, which is not loaded"
            ))),
            Start::Started {
                workflow,
                case,
                steps,
            } => self.started(seg, &workflow, Ok((*case, steps))),
            Start::Refused { workflow, error } => self.started(seg, &workflow, Err(error)),
        })
    }

    /// The model's answer, recorded on the case and in its audit trail.
    fn classification(&self, seg: &mut Segment<'_>, received: &Received) -> Classification {
        let classification = self.classifier.classify(received).unwrap_or_else(|e| {
            tracing::warn!(case = %seg.case_id, "classification failed: {e}");
            Classification::unavailable(&e)
        });
        let body = classification.to_json();
        seg.entries.push(audit::Entry::new(
            seg.case_id,
            audit::Kind::Classified,
            seg.at,
            body.clone(),
        ));
        seg.rec.classification = Some(body);
        classification
    }

    /// The history of the case's customer at the segment's time, from their earlier case
    /// records (the newest [`HISTORY_CASES`]); an anonymous request has none.
    pub(super) fn customer_history(&self, seg: &Segment<'_>) -> Result<History, Error> {
        let Some(customer) = &seg.rec.customer else {
            return Ok(History::default());
        };
        let records = self
            .store
            .customer_cases()
            .newest_records(customer, HISTORY_CASES)?;
        Ok(History::from_records(&records, seg.at, seg.case_id))
    }

    /// Starts `wf` on the case's request (for a reviewer's triage decision).
    pub(super) fn start_workflow(
        &self,
        seg: &mut Segment<'_>,
        wf: &Arc<Workflow>,
        request: &Request,
        classification: &Classification,
    ) -> Result<Outcome, Error> {
        let customer = self.customer_history(seg)?;
        let subject = Subject {
            request,
            classification,
            customer: &customer,
        };
        let begun = pipeline::begin(&seg.exec, wf, &seg.rec.id, subject);
        Ok(self.started(seg, wf, begun))
    }

    /// What starting `wf` came to. A request that does not fit the workflow's input schema
    /// is not a failure of the case but of its data: it goes to the triage queue, where a
    /// reviewer can correct it (see [`Runner::correct`]) and choose a workflow again.
    pub(super) fn started(
        &self,
        seg: &mut Segment<'_>,
        wf: &Arc<Workflow>,
        begun: Result<(Case, Vec<StepRecord>), exec::Error>,
    ) -> Outcome {
        match begun {
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

/// The case's stored request. One that does not read as a request (a damaged or tampered
/// data directory) fails the case; its wording may quote the data, so only the log's
/// reason is public.
pub(super) fn stored_request(seg: &Segment<'_>) -> Result<Request, Failure> {
    serde_json::from_value(seg.personal.request.clone()).map_err(|e| Failure {
        message: format!("the stored request cannot be read: {e}"),
        reason: "the stored request cannot be read".into(),
    })
}

/// How many of a customer's newest cases their history is counted from: enough for any
/// 30-day window a person produces, and a bound on the reads a case's start makes.
pub(super) const HISTORY_CASES: usize = 500;

/// Records the route routing chose, by which rule of which policy version, and why: the
/// priority and scores it gave and the signals it read (labels and counts, no text).
fn record_route(
    seg: &mut Segment<'_>,
    catalog: &Catalog,
    subject: Subject<'_>,
    decision: Decision,
) {
    let why = subject.why(catalog.routing.version, &decision);
    seg.entries.push(audit::Entry::new(
        seg.case_id,
        audit::Kind::Routed,
        seg.at,
        json!({ "policy_version": why.policy_version, "rule": why.rule, "route": decision.route,
                "priority": why.priority, "scores": why.scores, "signals": why.signals }),
    ));
    seg.rec.route = Some(decision.route);
    seg.rec.why = Some(why);
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
