//! `POST /v1/console/dry-run`: what the box would do with a request (classification,
//! routing decision, the path the workflow takes until a human task), all in memory: no
//! case, no audit record, no connector call. Admitted `limits.max_classify` at a time with
//! `/v1/classify`, bounded like the intake; authors only.

use axum::extract::State;
use casegraph_engine::exec::{
    CallError, CallRequest, Case, Connector, Executor, ManualClock, Waiting,
};
use casegraph_engine::pipeline::{self, History, Pipeline, Received, Request, Start, Subject};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::super::requests::{Channel, Language};
use super::super::{AppError, AppState, Caller, Json, blocking};
use super::VersionRef;
use crate::auth::Role;

/// A request as `POST /v1/requests` takes it, to try without making a case.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunBody {
    channel: Channel,
    /// `en` when absent.
    language: Option<Language>,
    #[serde(default)]
    text: String,
    /// Form fields (web-form channel).
    #[serde(default)]
    #[schema(value_type = Object)]
    fields: Map<String, Value>,
    customer_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
}

/// What the box would do with a request: its classification, the routing decision, and the
/// path the workflow takes until its first wait. Fields after `created_case` are present
/// as far as the request got.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    /// As `GET /v1/cases/{id}` shows it.
    #[schema(value_type = Object)]
    classification: Value,
    routing_version: u32,
    /// Always `false`: a dry run stores nothing.
    created_case: bool,
    /// The routing policy failed (the workflow is not started).
    #[serde(skip_serializing_if = "Option::is_none")]
    route_error: Option<String>,
    /// The routing decision: a workflow or a human queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    route: Option<Value>,
    /// The served workflow version routing chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<VersionRef>,
    /// The workflow refused to start (e.g. its input schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    run_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<RunView>,
}

/// The case as the dry run left it: at its first human task, or at its end.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView {
    status: &'static str,
    /// The nodes visited, in order.
    path: Vec<String>,
    waiting: Option<WaitingView>,
    outcome: Option<String>,
    error: Option<String>,
    reply: Option<ReplyView>,
}

/// What the case waits for (timers up to `DRY_RUN_TIMERS` are fast-forwarded).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WaitingView {
    Task {
        node: String,
        queue: String,
        decisions: Vec<String>,
    },
    Timer {
        node: String,
        due: String,
    },
    /// The customer's answer to the question of an `ask` node.
    Answer {
        node: String,
        due: String,
        reference: String,
    },
}

/// The reply the case would send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplyView {
    template: String,
    language: String,
    text: String,
}

impl RunView {
    fn of(case: &Case) -> RunView {
        RunView {
            status: case.status.as_str(),
            path: case.path.clone(),
            waiting: case.waiting.as_ref().map(|w| match w {
                Waiting::Task {
                    node,
                    queue,
                    decisions,
                    ..
                } => WaitingView::Task {
                    node: node.clone(),
                    queue: queue.clone(),
                    decisions: decisions.clone(),
                },
                Waiting::Timer { node, due, .. } => WaitingView::Timer {
                    node: node.clone(),
                    due: due.to_string(),
                },
                Waiting::Answer { node, due, .. } => WaitingView::Answer {
                    node: node.clone(),
                    due: due.to_string(),
                    reference: casegraph_engine::reference::of(&case.id),
                },
            }),
            outcome: case.outcome.clone(),
            error: case.error.clone(),
            reply: case.reply.as_ref().map(|r| ReplyView {
                template: r.template.clone(),
                language: r.language.clone(),
                text: r.text.clone(),
            }),
        }
    }
}

/// The connector of a dry run: calls nothing and answers success with an empty result.
struct NoCalls;

impl Connector for NoCalls {
    fn call(&self, _request: &CallRequest) -> Result<Value, CallError> {
        Ok(json!({ "dry_run": true }))
    }
}

/// Most timers a dry run lets pass before it stops.
const DRY_RUN_TIMERS: usize = 20;

/// Classification, routing decision and the path the workflow would take (until a human
/// task), all in memory: no case, no audit record, no call. The answer:
/// `{classification, routing_version, created_case: false, route?, route_error?, workflow?:
/// {id, version}, run?: {status, path, waiting, outcome, error, reply}, run_error?}`.
#[utoipa::path(post, path = "/v1/console/dry-run", tag = "console", security(("bearer" = [])),
    request_body = DryRunBody,
    responses((status = 200, description = "What the box would do with the request", body = DryRun),
        (status = 400, body = super::super::error::ErrorBody), (status = 401, body = super::super::error::ErrorBody),
        (status = 403, body = super::super::error::ErrorBody), (status = 413, body = super::super::error::ErrorBody),
        (status = 415, body = super::super::error::ErrorBody), (status = 422, body = super::super::error::ErrorBody),
        (status = 503, description = "Too many classifications at once, or the model is unavailable", body = super::super::error::ErrorBody)))]
pub async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<DryRunBody>,
) -> Result<Json<DryRun>, AppError> {
    caller.require(&[Role::Author])?;
    // The intake's bounds: text and form fields together, as at `POST /v1/requests`.
    super::super::requests::limits::text_and_fields(&body.text, &body.fields)?;
    if let Some(m) = &body.metadata {
        super::super::requests::limits::metadata(m)?;
    }
    let mut request = Request::text(body.channel, body.text);
    request.text = request.text.filter(|t| !t.is_empty());
    request.language = Some(body.language.unwrap_or(Language::En).code().to_string());
    request.fields = body.fields;
    request.customer_id = body.customer_id.filter(|c| !c.is_empty());
    request.metadata = body.metadata;
    let s = state.clone();
    let call = state.admit_model_call()?;
    blocking("dry run", move || {
        let _call = call;
        let received = Received::new(request);
        let classification = s.classifier.classify(&received).map_err(|e| {
            tracing::warn!("classification failed: {e}");
            AppError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "classifier_unavailable",
                "the intent model could not classify the text",
            )
        })?;
        let catalog = s.runner.catalog();
        let rules = s.library.rules().clone();
        let mut answer = DryRun {
            classification: classification.to_json(),
            routing_version: catalog.routing.version,
            created_case: false,
            route_error: None,
            route: None,
            workflow: None,
            run_error: None,
            run: None,
        };
        let clock = ManualClock::new(s.runner.now());
        let exec = Executor::new(&rules, &clock, &NoCalls);
        let pipeline = Pipeline {
            catalog: &catalog,
            rules: &rules,
        };
        // A dry run is of no customer: the history is unknown, every count 0.
        let customer = History::default();
        let subject = Subject {
            request: &received.request,
            classification: &classification,
            customer: &customer,
        };
        let (decision, start) = match pipeline.start(&exec, "dry-run", subject) {
            Ok(routed) => routed,
            Err(e) => {
                answer.route_error = Some(e.to_string());
                return Ok(Json(answer));
            }
        };
        answer.route = Some(serde_json::to_value(&decision.route).unwrap_or(Value::Null));
        let (wf, mut case) = match start {
            Start::Queued { .. } | Start::NotLoaded { .. } => return Ok(Json(answer)),
            Start::Refused { workflow, error } => {
                answer.workflow = Some(VersionRef::of(&workflow));
                answer.run_error = Some(error.to_string());
                return Ok(Json(answer));
            }
            Start::Started { workflow, case, .. } => (workflow, case),
        };
        answer.workflow = Some(VersionRef::of(&wf));
        pipeline::fast_forward(&exec, &clock, &wf, &mut case, DRY_RUN_TIMERS);
        answer.run = Some(RunView::of(&case));
        Ok(Json(answer))
    })
    .await
}
