//! `casegraph run --input FILE.jsonl`: route and run a batch of requests offline.
//!
//! Each line is a request as the HTTP intake takes it, classified by the intent model as the
//! service does (a line may instead carry its own `intent`, with optional `confidence` and
//! `out_of_scope`, e.g. to replay a known classification). Calls go to the built-in
//! simulated back office. Timers are fast-forwarded (there is no service to
//! wait for them); cases that need a reviewer stay waiting and are listed by queue.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph_engine::exec::{Clock, Event, Executor, ManualClock, Status, SystemClock, Waiting};
use casegraph_engine::routing::{self, Route};
use casegraph_engine::rules::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Deserialize;
use serde_json::{Value, json};

use casegraph::backoffice::SimulatedBackOffice;
use casegraph::classifier::ModelClassifier;
use casegraph::profile::InferenceOptions;
use casegraph_engine::runner::Classifier as _;

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
}

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    channel: Channel,
    text: Option<String>,
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
    customer_id: Option<String>,
    language: Option<Language>,
    reply_to: Option<String>,
    metadata: Option<Value>,
    /// A known classification, used instead of the model's.
    intent: Option<String>,
    #[serde(default = "full_confidence")]
    confidence: f64,
    #[serde(default)]
    out_of_scope: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Channel {
    Form,
    Letter,
    Chat,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Language {
    De,
    En,
}

fn full_confidence() -> f64 {
    1.0
}

impl RequestLine {
    fn check(&self) -> Result<(), String> {
        let has_text = self.text.as_deref().is_some_and(|t| !t.trim().is_empty());
        match self.channel {
            Channel::Letter | Channel::Chat if !has_text => {
                Err("`text` is required for letters and chats".into())
            }
            Channel::Form if !has_text && self.fields.is_empty() => {
                Err("a form needs `text` or `fields`".into())
            }
            _ if !(0.0..=1.0).contains(&self.confidence) => Err(format!(
                "`confidence` must be between 0 and 1, not {}",
                self.confidence
            )),
            _ => Ok(()),
        }
    }

    /// `case.request` as a workflow sees it.
    fn request(&self) -> Value {
        let mut r = serde_json::Map::new();
        r.insert("channel".into(), json!(self.channel));
        let language = self.language.unwrap_or_else(|| {
            match casegraph_engine::intake::detect_language(self.text.as_deref().unwrap_or("")) {
                "de" => Language::De,
                _ => Language::En,
            }
        });
        r.insert("language".into(), json!(language));
        if let Some(t) = &self.text {
            r.insert("text".into(), json!(t));
        }
        r.insert("fields".into(), Value::Object(self.fields.clone()));
        if let Some(c) = &self.customer_id {
            r.insert("customer_id".into(), json!(c));
        }
        if let Some(u) = &self.reply_to {
            r.insert("reply_to".into(), json!(u));
        }
        if let Some(m) = &self.metadata {
            r.insert("metadata".into(), m.clone());
        }
        Value::Object(r)
    }

    /// The line's own classification, if it carries one.
    fn given_classification(&self) -> Option<Value> {
        self.intent.as_ref().map(|intent| {
            json!({
                "intent": intent,
                "confidence": self.confidence,
                "out_of_scope": self.out_of_scope,
                "model": "given-in-input",
                "source": "input",
            })
        })
    }
}

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
    let model = ModelClassifier::load(&models, &InferenceOptions::default())?;
    let progress = indicatif::ProgressBar::new(lines.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} requests {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    let mut rejected = 0usize;
    for (i, text) in lines.iter().enumerate() {
        progress.inc(1);
        let line_no = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        let line: RequestLine = match serde_json::from_str(text) {
            Ok(l) => l,
            Err(e) => {
                progress.suspend(|| eprintln!("{}:{line_no}: rejected: {e}", args.input.display()));
                rejected += 1;
                continue;
            }
        };
        if let Err(e) = line.check() {
            progress.suspend(|| eprintln!("{}:{line_no}: rejected: {e}", args.input.display()));
            rejected += 1;
            continue;
        }
        let case_id = format!("run-{line_no:05}");
        let clock = ManualClock::new(SystemClock.now());
        let request = line.request();
        let classification = match line.given_classification() {
            Some(given) => given,
            None => match model.classify(&request) {
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
        let language = classification["language"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!("{:?}", line.language.unwrap_or(Language::En)).to_lowercase()
            });
        let ctx = Context {
            case_id: &case_id,
            node: "routing",
            now: clock.now(),
        };
        let input = routing::input(&request, &classification);
        let mut row = Row {
            line: line_no,
            channel: format!("{:?}", line.channel).to_lowercase(),
            language,
            intent: format!(
                "{} ({:.2}){}",
                classification["intent"].as_str().unwrap_or("–"),
                classification["confidence"].as_f64().unwrap_or(0.0),
                if classification["out_of_scope"] == true {
                    " out of scope"
                } else {
                    ""
                }
            ),
            route: String::new(),
            status: String::new(),
            detail: String::new(),
        };
        let mut record =
            json!({ "line": line_no, "case_id": case_id, "classification": classification });
        match catalog
            .routing
            .route(&rules, &ctx, &input, catalog.intent_map())
        {
            Err(e) => {
                row.route = "error".into();
                row.status = "failed".into();
                row.detail = e.to_string();
            }
            Ok(Route::Queue { queue, rule }) => {
                row.route = format!("queue {queue}");
                row.status = "waiting".into();
                row.detail = format!("rule `{rule}`; waits for a reviewer in `{queue}`");
                record["route"] = json!({ "queue": queue, "rule": rule });
            }
            Ok(Route::Workflow { workflow, rule }) => {
                row.route = workflow.clone();
                record["route"] = json!({ "workflow": workflow, "rule": rule });
                let wf = catalog
                    .get(&workflow)
                    .context("routing chose a loaded workflow")?;
                let exec = Executor::new(&rules, &clock, &backoffice);
                match exec.start(wf, &case_id, request, classification) {
                    Err(e) => {
                        row.status = "rejected".into();
                        row.detail = e.to_string();
                    }
                    Ok((mut case, _)) => {
                        // Fast-forward timers: waits and retry backoffs fire at once.
                        while let (Status::Waiting, Some(Waiting::Timer { due, .. })) =
                            (case.status, &case.waiting)
                        {
                            clock.advance_to(*due);
                            if exec.resume(wf, &mut case, Event::TimerFired).is_err() {
                                break;
                            }
                        }
                        row.status = case.status.as_str().into();
                        row.detail = match (&case.waiting, &case.outcome, &case.error) {
                            (Some(Waiting::Task { queue, .. }), _, _) => {
                                format!("waits for a reviewer in `{queue}` at `{}`", case.current)
                            }
                            (_, Some(outcome), _) => format!("outcome `{outcome}`"),
                            (_, _, Some(error)) => error.clone(),
                            _ => String::new(),
                        };
                        record["case"] = serde_json::to_value(&case)?;
                    }
                }
            }
        }
        if let Some(out) = output.as_mut() {
            writeln!(out, "{record}")?;
        }
        rows.push(row);
    }
    progress.finish_and_clear();
    print_report(&rows, rejected, args.verbose);
    // Failed cases are outcomes and are reported; malformed input lines make the run fail.
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
    println!(
        "{} request(s): {} completed, {} escalated, {} waiting for a reviewer, {} failed, {} rejected",
        rows.len() + rejected,
        count("completed"),
        count("escalated"),
        count("waiting"),
        count("failed"),
        rejected + count("rejected"),
    );
}
