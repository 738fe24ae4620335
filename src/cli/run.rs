//! `casegraph run --input FILE.jsonl`: route and run a batch of requests offline.
//!
//! Each line is a request as the HTTP intake takes it, classified by the intent model as the
//! service does (a line may instead carry its own `intent`, with optional `confidence` and
//! `out_of_scope`, e.g. to replay a known classification). Calls go to the built-in
//! simulated back office. Timers are fast-forwarded (there is no service to
//! wait for them); cases that need a reviewer stay waiting and are listed by queue.
//!
//! With `--report`, every line also carries the intent a person gave it (`label`), and the
//! run ends with what share of each intent the box finished without a person ([`report`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph_engine::classify::{Classification, Service as _, Source};
use casegraph_engine::exec::{Answer, Clock, Event, Executor, ManualClock, SystemClock, Waiting};
use casegraph_engine::intake::Channel;
use casegraph_engine::pipeline::{self, History, Pipeline, Received, Start, Subject};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use casegraph::api::requests::RequestBody;
use casegraph::backoffice::SimulatedBackOffice;
use casegraph::config::InferenceOptions;

use super::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON-lines file of requests (`-` for standard input).
    #[arg(long)]
    pub input: PathBuf,
    /// Workflows directory.
    #[arg(long, default_value = "workflows")]
    pub workflows: PathBuf,
    /// Write one JSON line per request (route, case, reply) to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print one row per request, not only the summary.
    #[arg(long, short)]
    pub verbose: bool,
    /// Intent models directory; default: the shipped `models/`.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Every line carries its true intent as `label`; print per intent and overall the
    /// share finished without a person, handed to a person, waiting for the customer, and
    /// finished by the workflow of a different intent.
    #[arg(long)]
    pub report: bool,
}

/// One input line: a request exactly as `POST /v1/requests` takes it (the same type, the
/// same rules), optionally with a known classification to use instead of the model's.
struct RequestLine {
    body: RequestBody,
    given: Option<Given>,
    /// The true intent, for `--report`.
    label: Option<String>,
    /// The customer's later answers, one per question the case asks, in order.
    answers: Vec<LineAnswer>,
}

/// One later answer of the customer on a request line: its text (on the request's
/// channel), or `{"channel", "text", "fields", "language"}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LineAnswer {
    Text(String),
    Message {
        #[serde(default)]
        channel: Option<Channel>,
        #[serde(default)]
        text: String,
        #[serde(default)]
        fields: Map<String, Value>,
        #[serde(default)]
        language: Option<String>,
    },
}

/// A classification the line states (`intent`, optional `confidence` and `out_of_scope`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Given {
    intent: String,
    #[serde(default = "full_confidence")]
    confidence: f64,
    #[serde(default)]
    out_of_scope: bool,
}

fn full_confidence() -> f64 {
    1.0
}

impl RequestLine {
    /// Parses and checks one line; the error says what is wrong with it.
    fn parse(text: &str) -> Result<RequestLine, String> {
        let mut map: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let label = match map.remove("label") {
            None => None,
            Some(Value::String(l)) if !l.is_empty() && l.len() <= 100 => Some(l),
            Some(_) => return Err("`label` must be an intent name (text of 1 to 100 bytes)".into()),
        };
        let given: Map<String, Value> = ["intent", "confidence", "out_of_scope"]
            .into_iter()
            .filter_map(|k| map.remove_entry(k))
            .collect();
        let answers: Vec<LineAnswer> = match map.remove("answers") {
            Some(a) => serde_json::from_value(a).map_err(|e| {
                format!(
                    "`answers` must be a list of texts or {{channel, text, fields, language}}: {e}"
                )
            })?,
            None => Vec::new(),
        };
        let body: RequestBody =
            serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())?;
        body.validate().map_err(|e| e.message)?;
        let given = if given.is_empty() {
            None
        } else {
            let g: Given =
                serde_json::from_value(Value::Object(given)).map_err(|e| e.to_string())?;
            if !(0.0..=1.0).contains(&g.confidence) {
                return Err(format!(
                    "`confidence` must be between 0 and 1, not {}",
                    g.confidence
                ));
            }
            Some(g)
        };
        Ok(RequestLine {
            body,
            given,
            label,
            answers,
        })
    }

    /// The line's own classification, if it carries one.
    fn given_classification(&self) -> Option<Classification> {
        self.given.as_ref().map(|g| Classification {
            out_of_scope: g.out_of_scope,
            model: Some("given-in-input".into()),
            source: Some(Source::Input),
            ..Classification::new(Some(g.intent.clone()), g.confidence)
        })
    }
}

/// How a row's detail starts when its case waits for the customer's answer.
const FOR_CUSTOMER: &str = "waits for the customer's";

/// What happened to one request.
struct Row {
    line: usize,
    channel: String,
    language: String,
    intent: String,
    route: String,
    status: String,
    detail: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rules = super::rules()?;
    let catalog = match super::load_catalog(&args.workflows, &rules) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        Box::new(BufReader::new(file))
    };
    let lines: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
    let mut output = match &args.output {
        Some(p) => Some(File::create(p).with_context(|| format!("cannot create {}", p.display()))?),
        None => None,
    };
    let backoffice = SimulatedBackOffice;
    let models = args
        .models
        .clone()
        .unwrap_or_else(casegraph::classifier::default_models_dir);
    let model = casegraph::classifier::load(&models, &InferenceOptions::default())?;
    let progress = indicatif::ProgressBar::new(lines.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} requests {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    let mut entries = Vec::new();
    let mut rejected = 0usize;
    for (i, text) in lines.iter().enumerate() {
        progress.inc(1);
        let line_no = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        let line = match RequestLine::parse(text) {
            Ok(l) if args.report && l.label.is_none() => {
                progress.suspend(|| {
                    eprintln!(
                        "{}:{line_no}: rejected: `label` (the true intent) is required with --report",
                        args.input.display()
                    )
                });
                rejected += 1;
                continue;
            }
            Ok(l) => l,
            Err(e) => {
                progress.suspend(|| eprintln!("{}:{line_no}: rejected: {e}", args.input.display()));
                rejected += 1;
                continue;
            }
        };
        let case_id = format!("run-{line_no:05}");
        let clock = ManualClock::new(SystemClock.now());
        let received = Received::new(line.body.normalized());
        let classification = match line.given_classification() {
            Some(given) => given,
            None => match model.classify(&received) {
                Ok(c) => c,
                Err(e) => {
                    progress.suspend(|| {
                        eprintln!("{}:{line_no}: not classified: {e}", args.input.display())
                    });
                    rejected += 1;
                    continue;
                }
            },
        };
        let request = &received.request;
        let mut row = Row {
            line: line_no,
            channel: request.channel.as_str().to_string(),
            language: classification
                .language
                .clone()
                .or_else(|| request.language.clone())
                .unwrap_or_default(),
            intent: format!(
                "{} ({:.2}){}",
                classification.intent.as_deref().unwrap_or("–"),
                classification.confidence.unwrap_or(0.0),
                if classification.out_of_scope {
                    " out of scope"
                } else {
                    ""
                }
            ),
            route: String::new(),
            status: String::new(),
            detail: String::new(),
        };
        let mut record = json!({ "line": line_no, "case_id": case_id,
                                 "classification": classification.to_json() });
        let label = line.label.clone().unwrap_or_default();
        let mut entry = report::Entry::handed_over(&label, &row.language);
        let exec = Executor::new(&rules, &clock, &backoffice);
        let pipeline = Pipeline {
            catalog: &catalog,
            rules: &rules,
        };
        // Offline, the customer's history is unknown: every count is 0.
        let customer = History::default();
        let subject = Subject {
            request,
            classification: &classification,
            customer: &customer,
        };
        match pipeline.start(&exec, &case_id, subject) {
            Err(e) => {
                row.route = "error".into();
                row.status = "failed".into();
                row.detail = e.to_string();
            }
            Ok((decision, start)) => {
                record["route"] = serde_json::to_value(&decision.route)?;
                match start {
                    Start::Queued { queue, rule } => {
                        row.route = format!("queue {queue}");
                        row.status = "waiting".into();
                        row.detail = format!("rule `{rule}`; waits for a reviewer in `{queue}`");
                    }
                    Start::NotLoaded { workflow } => {
                        anyhow::bail!("routing chose workflow `{workflow}`, which is not loaded")
                    }
                    Start::Refused { workflow, error } => {
                        row.route = workflow.id.clone();
                        row.status = "rejected".into();
                        row.detail = error.to_string();
                    }
                    Start::Started {
                        workflow, mut case, ..
                    } => {
                        row.route = workflow.id.clone();
                        // Timers are fast-forwarded: waits and retry backoffs fire at once; the
                        // line's answers answer the case's questions in turn.
                        pipeline::fast_forward(&exec, &clock, &workflow, &mut case, usize::MAX);
                        let mut answers = line.answers.iter();
                        while let Some(Waiting::Answer { .. }) = &case.waiting {
                            let Some(a) = answers.next() else { break };
                            let answer = customer_answer(a, request, &model, &clock);
                            if exec
                                .resume(&workflow, &mut case, Event::Answered(answer))
                                .is_err()
                            {
                                break;
                            }
                            pipeline::fast_forward(&exec, &clock, &workflow, &mut case, usize::MAX);
                        }
                        row.status = case.status.as_str().into();
                        row.detail = match (&case.waiting, &case.outcome, &case.error) {
                            (Some(Waiting::Task { queue, .. }), _, _) => {
                                format!("waits for a reviewer in `{queue}` at `{}`", case.current)
                            }
                            (Some(Waiting::Answer { node, .. }), _, _) => {
                                let reference = casegraph_engine::reference::of(&case.id);
                                format!("{FOR_CUSTOMER} answer to `{node}` ({reference})")
                            }
                            (_, Some(outcome), _) => format!("outcome `{outcome}`"),
                            (_, _, Some(error)) => error.clone(),
                            _ => String::new(),
                        };
                        entry = report::Entry::from_case(&label, &row.language, &workflow, &case);
                        record["case"] = serde_json::to_value(&case)?;
                    }
                }
            }
        }
        if let Some(out) = output.as_mut() {
            writeln!(out, "{record}")?;
        }
        rows.push(row);
        entries.push(entry);
    }
    progress.finish_and_clear();
    print_report(&rows, rejected, args.verbose);
    if args.report {
        report::print(&entries);
    }
    // Failed cases are outcomes and are reported; malformed input lines make the run fail.
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A line's answer as the case receives it: classified by the model like a request.
fn customer_answer(
    a: &LineAnswer,
    request: &casegraph_engine::intake::Request,
    model: &dyn casegraph_engine::classify::Service,
    clock: &ManualClock,
) -> Answer {
    let (channel, text, fields, language) = match a {
        LineAnswer::Text(t) => (request.channel, t.clone(), Map::new(), None),
        LineAnswer::Message {
            channel,
            text,
            fields,
            language,
        } => (
            channel.unwrap_or(request.channel),
            text.clone(),
            fields.clone(),
            language.clone(),
        ),
    };
    let mut r = casegraph_engine::intake::Request::text(channel, text);
    r.fields = fields;
    r.language = language.or_else(|| request.language.clone());
    let received = Received::new(r);
    let classification = model
        .classify(&received)
        .map(|c| c.to_json())
        .unwrap_or(Value::Null);
    Answer {
        message_id: format!("line-answer-{}", clock.now().as_millisecond()),
        text: received.intake.text.clone(),
        channel: channel.as_str().into(),
        fields: received.request.fields.clone(),
        language: received.request.language.clone(),
        received_at: clock.now(),
        classification,
    }
}

fn print_report(rows: &[Row], rejected: usize, verbose: bool) {
    if verbose {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header([
            "line",
            "channel",
            "lang",
            "intent (confidence)",
            "route",
            "status",
            "detail",
        ]);
        for r in rows {
            table.add_row([
                r.line.to_string(),
                r.channel.clone(),
                r.language.clone(),
                r.intent.clone(),
                r.route.clone(),
                r.status.clone(),
                r.detail.clone(),
            ]);
        }
        println!("{table}");
    }
    // Summary: per route, cases by status and what they ended with.
    let mut summary: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for r in rows {
        let key = if r.status == "completed" || r.status == "escalated" {
            format!("{}: {}", r.status, r.detail.trim_start_matches("outcome "))
        } else if r.status == "waiting" && r.detail.starts_with(FOR_CUSTOMER) {
            "waiting for the customer".to_string()
        } else if r.status == "waiting" {
            "waiting".to_string()
        } else {
            r.status.clone()
        };
        *summary
            .entry(r.route.as_str())
            .or_default()
            .entry(key)
            .or_default() += 1;
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["route", "cases", "result"]);
    for (route, results) in &summary {
        let total: usize = results.values().sum();
        let detail: Vec<String> = results.iter().map(|(k, n)| format!("{n} × {k}")).collect();
        table.add_row([route.to_string(), total.to_string(), detail.join("\n")]);
    }
    println!("{table}");
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count();
    let for_customer = rows
        .iter()
        .filter(|r| r.status == "waiting" && r.detail.starts_with(FOR_CUSTOMER))
        .count();
    println!(
        "{} request(s): {} completed, {} escalated, {} waiting for a reviewer, {} waiting for the customer, {} failed, {} rejected",
        rows.len() + rejected,
        count("completed"),
        count("escalated"),
        count("waiting") - for_customer,
        for_customer,
        count("failed"),
        rejected + count("rejected"),
    );
}
