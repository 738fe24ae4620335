//! Workflow fixtures: a request, its classification, scripted reviewer decisions and
//! connector answers, and what must come out. `casegraph test` and `cargo test` run them.
//!
//! Fixtures run on a [`ManualClock`]: timers (waits, retry backoff, SLAs) fire by moving
//! the clock to their due time, so a fixture of a two-day wait runs in microseconds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::exec::{
    CallError, CallRequest, Case, Connector, Event, Executor, ManualClock, Status, TaskCompletion,
    Waiting, lookup,
};
use crate::routing::{self, Route};
use crate::rules::{Context, Rules};
use crate::workflow::{Catalog, Diagnostic, Workflow};
use crate::yaml;

/// Clock start when a fixture does not set `now`: a Monday morning.
const DEFAULT_NOW: &str = "2026-03-02T09:00:00Z";

/// A workflow fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub name: String,
    pub request: Value,
    pub classification: Value,
    pub now: Option<String>,
    #[serde(default)]
    pub connectors: BTreeMap<String, Vec<ConnectorAnswer>>,
    #[serde(default)]
    pub humans: BTreeMap<String, Vec<HumanAction>>,
    pub expect: Expect,
}

/// One scripted answer of a call node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorAnswer {
    pub response: Option<Value>,
    pub error: Option<FixtureError>,
}

/// A scripted call failure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureError {
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
}

/// One scripted reviewer action on a human node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanAction {
    pub decision: Option<String>,
    #[serde(default)]
    pub data: Value,
    pub comment: Option<String>,
    pub by: Option<String>,
    /// Let the task's SLA pass instead of deciding.
    #[serde(default)]
    pub sla_expired: bool,
}

/// What the fixture expects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub route: Option<RouteExpect>,
    pub path: Option<Vec<String>>,
    pub status: Option<String>,
    pub outcome: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, Value>,
    pub reply: Option<ReplyExpect>,
    pub error_contains: Option<String>,
    /// Routing fixtures only: the rule that must fire.
    pub rule: Option<String>,
    /// Routing fixtures only.
    pub workflow: Option<String>,
    /// Routing fixtures only.
    pub queue: Option<String>,
}

/// Expected routing decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteExpect {
    pub workflow: Option<String>,
    pub queue: Option<String>,
    pub rule: Option<String>,
}

/// Expected reply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyExpect {
    pub language: Option<String>,
    #[serde(default)]
    pub contains: Vec<String>,
}

/// The result of one fixture.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Workflow id, or `routing`.
    pub suite: String,
    pub file: PathBuf,
    pub name: String,
    /// Each mismatch as readable text; empty when the fixture passed.
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every fixture of every workflow and of the routing policy.
pub fn run_all(catalog: &Catalog, rules: &Rules) -> Vec<Outcome> {
    let mut out = Vec::new();
    for wf in catalog.workflows() {
        for file in fixture_files(&wf.dir.join("tests")) {
            out.push(run_file(catalog, wf, rules, &file));
        }
    }
    for file in fixture_files(&catalog.routing.dir.join("tests")) {
        out.push(run_routing_file(catalog, rules, &file));
    }
    out
}

/// Runs the fixtures of one workflow.
pub fn run_workflow(catalog: &Catalog, wf: &Workflow, rules: &Rules) -> Vec<Outcome> {
    fixture_files(&wf.dir.join("tests"))
        .iter()
        .map(|f| run_file(catalog, wf, rules, f))
        .collect()
}

fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn load(file: &Path) -> Result<Fixture, Diagnostic> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Diagnostic::new(
            crate::workflow::Code::Io,
            file,
            0,
            format!("cannot read fixture: {e}"),
        )
    })?;
    let root = yaml::parse(file, &text)?;
    yaml::from_json_node(&root, file, &text, "fixture")
}

fn run_file(catalog: &Catalog, wf: &Workflow, rules: &Rules, file: &Path) -> Outcome {
    let mut outcome = Outcome {
        suite: wf.id.clone(),
        file: file.to_path_buf(),
        name: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        failures: Vec::new(),
    };
    match load(file) {
        Ok(fixture) => {
            outcome.name = fixture.name.clone();
            outcome.failures = run_fixture(catalog, wf, rules, &fixture);
        }
        Err(d) => outcome.failures.push(d.to_string()),
    }
    outcome
}

fn start_time(now: Option<&str>) -> Result<Timestamp, String> {
    now.unwrap_or(DEFAULT_NOW)
        .parse()
        .map_err(|e| format!("`now` is not an RFC 3339 timestamp: {e}"))
}

/// Runs one fixture; returns its mismatches.
pub fn run_fixture(catalog: &Catalog, wf: &Workflow, rules: &Rules, f: &Fixture) -> Vec<String> {
    let mut failures = Vec::new();
    let clock = match start_time(f.now.as_deref()) {
        Ok(t) => ManualClock::new(t),
        Err(e) => return vec![e],
    };
    let case_id = "fixture-case";

    if let Some(expected) = &f.expect.route {
        let ctx = Context {
            case_id,
            node: "routing",
            now: clock_now(&clock),
        };
        let input = routing::input(&f.request, &f.classification);
        match catalog
            .routing
            .route(rules, &ctx, &input, catalog.intent_map())
        {
            Ok(route) => check_route(
                &mut failures,
                &route,
                expected.workflow.as_deref(),
                expected.queue.as_deref(),
                expected.rule.as_deref(),
            ),
            Err(e) => failures.push(format!("routing failed: {e}")),
        }
    }

    let connector = Scripted::new(&f.connectors);
    let exec = Executor::new(rules, &clock, &connector);
    let (mut case, _) = match exec.start(wf, case_id, f.request.clone(), f.classification.clone()) {
        Ok(started) => started,
        Err(e) => {
            let msg = e.to_string();
            match (&f.expect.status, &f.expect.error_contains) {
                (Some(s), Some(needle)) if s == "rejected" && msg.contains(needle.as_str()) => {}
                _ => failures.push(format!("the case did not start: {msg}")),
            }
            return failures;
        }
    };
    let mut humans: HashMap<&str, VecDeque<&HumanAction>> = f
        .humans
        .iter()
        .map(|(node, actions)| (node.as_str(), actions.iter().collect()))
        .collect();
    while case.status == Status::Waiting {
        let event = match case.waiting.clone() {
            Some(Waiting::Task {
                node,
                task_id,
                sla_due,
                ..
            }) => {
                match humans.get_mut(node.as_str()).and_then(VecDeque::pop_front) {
                    Some(action) if action.sla_expired => match sla_due {
                        Some(due) => {
                            clock.advance_to(due);
                            Event::TimerFired
                        }
                        None => {
                            failures.push(format!(
                                "`sla_expired` given for node `{node}`, which has no SLA"
                            ));
                            break;
                        }
                    },
                    Some(action) => Event::TaskCompleted(TaskCompletion {
                        task_id,
                        decision: action.decision.clone().unwrap_or_default(),
                        data: action.data.clone(),
                        comment: action.comment.clone(),
                        by: action
                            .by
                            .clone()
                            .unwrap_or_else(|| "fixture-reviewer".into()),
                    }),
                    // No scripted action left: the case stays waiting for the reviewer.
                    None => break,
                }
            }
            Some(Waiting::Timer { due, .. }) => {
                clock.advance_to(due);
                Event::TimerFired
            }
            None => break,
        };
        if let Err(e) = exec.resume(wf, &mut case, event) {
            failures.push(format!("the case could not resume: {e}"));
            break;
        }
    }
    check_case(&mut failures, &f.expect, &case);
    for (node, left) in humans {
        if !left.is_empty() {
            failures.push(format!(
                "{} scripted reviewer action(s) for node `{node}` were never used",
                left.len()
            ));
        }
    }
    for (node, left) in connector.unused() {
        failures.push(format!(
            "{left} scripted connector answer(s) for node `{node}` were never used"
        ));
    }
    for missing in connector.missing() {
        failures.push(format!("the case called node `{missing}`, but the fixture scripts no answer for it under `connectors`"));
    }
    failures
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    use crate::exec::Clock;
    clock.now()
}

fn check_route(
    failures: &mut Vec<String>,
    route: &Route,
    workflow: Option<&str>,
    queue: Option<&str>,
    rule: Option<&str>,
) {
    let (got_workflow, got_queue) = match route {
        Route::Workflow { workflow, .. } => (Some(workflow.as_str()), None),
        Route::Queue { queue, .. } => (None, Some(queue.as_str())),
    };
    if workflow.is_some() && workflow != got_workflow || queue.is_some() && queue != got_queue {
        failures.push(format!(
            "route: expected {}, got {}",
            describe_route(workflow, queue),
            describe_route(got_workflow, got_queue)
        ));
    }
    if let Some(rule) = rule
        && rule != route.rule()
    {
        failures.push(format!(
            "route rule: expected `{rule}`, got `{}`",
            route.rule()
        ));
    }
}

fn describe_route(workflow: Option<&str>, queue: Option<&str>) -> String {
    match (workflow, queue) {
        (Some(w), _) => format!("workflow `{w}`"),
        (None, Some(q)) => format!("queue `{q}`"),
        (None, None) => "nothing".into(),
    }
}

fn check_case(failures: &mut Vec<String>, expect: &Expect, case: &Case) {
    if let Some(path) = &expect.path
        && path != &case.path
    {
        let expected = path.join("\n") + "\n";
        let got = case.path.join("\n") + "\n";
        let diff = similar::TextDiff::from_lines(&expected, &got)
            .unified_diff()
            .context_radius(2)
            .header("expected path", "actual path")
            .to_string();
        failures.push(format!("path differs:\n{diff}"));
    }
    if let Some(status) = &expect.status
        && status != case.status.as_str()
    {
        let why = case
            .error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        failures.push(format!(
            "status: expected `{status}`, got `{}`{why}",
            case.status.as_str()
        ));
    }
    if let Some(outcome) = &expect.outcome
        && Some(outcome) != case.outcome.as_ref()
    {
        failures.push(format!(
            "outcome: expected `{outcome}`, got {}",
            show_opt(case.outcome.as_deref())
        ));
    }
    for (path, expected) in &expect.data {
        let got = lookup(&case.data, path);
        if !json_matches(expected, got) {
            failures.push(format!(
                "data `{path}`: expected {expected}, got {}",
                got.map(Value::to_string)
                    .unwrap_or_else(|| "nothing".into())
            ));
        }
    }
    if let Some(reply) = &expect.reply {
        match &case.reply {
            None => failures.push("reply: expected one, the case produced none".into()),
            Some(got) => {
                if let Some(lang) = &reply.language
                    && lang != &got.language
                {
                    failures.push(format!(
                        "reply language: expected `{lang}`, got `{}`",
                        got.language
                    ));
                }
                for needle in &reply.contains {
                    if !got.text.contains(needle.as_str()) {
                        failures.push(format!(
                            "reply: expected it to contain {needle:?}; it reads:\n{}",
                            got.text
                        ));
                    }
                }
            }
        }
    }
    if let Some(needle) = &expect.error_contains {
        match &case.error {
            Some(e) if e.contains(needle.as_str()) => {}
            other => failures.push(format!(
                "error: expected one containing {needle:?}, got {}",
                show_opt(other.as_deref())
            )),
        }
    }
}

fn show_opt(s: Option<&str>) -> String {
    s.map(|s| format!("`{s}`"))
        .unwrap_or_else(|| "nothing".into())
}

/// Expected values match when equal; numbers compare by value and a number matches a
/// string holding the same decimal (`120` matches `"120.00"`), since amounts are decimals.
fn json_matches(expected: &Value, got: Option<&Value>) -> bool {
    let Some(got) = got else {
        return expected.is_null();
    };
    if expected == got {
        return true;
    }
    let as_decimal = |v: &Value| -> Option<rust_decimal::Decimal> {
        match v {
            Value::Number(n) => n.to_string().parse().ok(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    match (expected, got) {
        (Value::Number(_) | Value::String(_), Value::Number(_) | Value::String(_)) => {
            matches!((as_decimal(expected), as_decimal(got)), (Some(a), Some(b)) if a == b)
        }
        (Value::Object(e), Value::Object(g)) => e.iter().all(|(k, v)| json_matches(v, g.get(k))),
        (Value::Array(e), Value::Array(g)) => {
            e.len() == g.len() && e.iter().zip(g).all(|(a, b)| json_matches(a, Some(b)))
        }
        _ => false,
    }
}

fn run_routing_file(catalog: &Catalog, rules: &Rules, file: &Path) -> Outcome {
    let mut outcome = Outcome {
        suite: "routing".into(),
        file: file.to_path_buf(),
        name: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        failures: Vec::new(),
    };
    let fixture = match load(file) {
        Ok(f) => f,
        Err(d) => {
            outcome.failures.push(d.to_string());
            return outcome;
        }
    };
    outcome.name = fixture.name.clone();
    let now = match start_time(fixture.now.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            outcome.failures.push(e);
            return outcome;
        }
    };
    let ctx = Context {
        case_id: "fixture-case",
        node: "routing",
        now,
    };
    let input = routing::input(&fixture.request, &fixture.classification);
    let e = &fixture.expect;
    match catalog
        .routing
        .route(rules, &ctx, &input, catalog.intent_map())
    {
        Ok(route) => check_route(
            &mut outcome.failures,
            &route,
            e.workflow.as_deref(),
            e.queue.as_deref(),
            e.rule.as_deref(),
        ),
        Err(err) => outcome.failures.push(format!("routing failed: {err}")),
    }
    outcome
}

/// The connector of a fixture: answers from the fixture, in order, per node.
struct Scripted {
    answers: Mutex<HashMap<String, VecDeque<ConnectorAnswer>>>,
    missing: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(answers: &BTreeMap<String, Vec<ConnectorAnswer>>) -> Self {
        Scripted {
            answers: Mutex::new(
                answers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                    .collect(),
            ),
            missing: Mutex::new(Vec::new()),
        }
    }

    fn unused(&self) -> Vec<(String, usize)> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let mut left: Vec<_> = answers
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, q)| (k.clone(), q.len()))
            .collect();
        left.sort();
        left
    }

    fn missing(&self) -> Vec<String> {
        self.missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Connector for Scripted {
    fn call(&self, request: &CallRequest) -> Result<Value, CallError> {
        let next = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&request.node)
            .and_then(VecDeque::pop_front);
        match next {
            Some(ConnectorAnswer { error: Some(e), .. }) => Err(CallError {
                retryable: e.retryable,
                message: e.message,
            }),
            Some(ConnectorAnswer { response, .. }) => Ok(response.unwrap_or_else(|| json!({}))),
            None => {
                self.missing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(request.node.clone());
                Err(CallError {
                    retryable: false,
                    message: format!("the fixture scripts no answer for node `{}`", request.node),
                })
            }
        }
    }
}
