//! `casegraph corrections export --data DIR`: the reviewers' triage decisions as labelled
//! training examples (JSON lines), so the intent model can learn from the box's own traffic.
//!
//! A reviewer may also read the customer's mood on the triage task (`data.sentiment`,
//! `data.frustrated`): the example then carries those labels beside the model's own
//! `model_sentiment` and `model_frustration`, for the sentiment and frustration heads. A
//! decision with a mood but no usable intent label is still exported, with `intent: null`.
//!
//! A correction is the completion of a case's `<case>.triage` task, as the audit trail
//! records it. Its label is the reviewer's `data.intent` when given (checked against the
//! model's labels), else the one intent the chosen workflow serves; a `close` without
//! `data.intent` says nothing about the intent and is skipped. The text is the request as the
//! model read it with every personal datum replaced by its kind; erased cases are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph_engine::audit::{Kind, Record};
use casegraph_engine::intake::Request;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use casegraph::config::InferenceOptions;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the reviewed triage decisions as JSON lines
    /// `{"text", "channel", "language", "intent", "model_intent", ...}`; a summary of what
    /// was exported and skipped goes to standard error.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: super::audit::DataArgs,
    /// Output file (`-`: standard output).
    #[arg(long, default_value = "-")]
    pub output: PathBuf,
    /// Only decisions taken at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long)]
    pub since: Option<Timestamp>,
    /// Models directory; the labels come from `<models>/<model>/labels.json`. Default: the
    /// shipped models.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// The model whose labels the corrections are checked against.
    #[arg(long, default_value_t = InferenceOptions::default().model)]
    pub model: String,
    /// Workflows directory: which intents each workflow serves.
    #[arg(long, default_value = "workflows")]
    pub workflows: PathBuf,
}

/// One labelled example. Carries no reviewer, customer or raw text.
#[derive(Debug, Serialize)]
struct Example<'a> {
    /// The request as the model read it, personal data replaced by its kind (`[IBAN]`).
    text: String,
    channel: &'a str,
    language: &'a str,
    /// The label: an intent of the model, or `oos`; `null` when only the mood was labelled.
    intent: Option<String>,
    /// The reviewer's sentiment label (`negative`, `neutral`, `positive`), if given.
    sentiment: Option<&'a str>,
    /// The reviewer's frustration label, if given.
    frustrated: Option<bool>,
    /// What the model read: `{label, confidence}` and `{score, flagged}` (null when the model
    /// gave none).
    model_sentiment: &'a Value,
    model_frustration: &'a Value,
    /// What the model said (null when it gave no intent).
    model_intent: &'a Value,
    model_confidence: &'a Value,
    /// Whether the model found the request out of scope (`model_intent` is then only its
    /// nearest intent).
    model_out_of_scope: &'a Value,
    /// The model version that classified the request.
    model: &'a Value,
    case_id: &'a str,
    decided_at: Timestamp,
}

/// Why a correction was not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    Closed,
    AmbiguousWorkflow,
    UnknownWorkflow,
    InvalidLabel,
    Erased,
    NoText,
}

impl Skip {
    fn key(self) -> &'static str {
        match self {
            Skip::Closed => "closed",
            Skip::AmbiguousWorkflow => "ambiguous_workflow",
            Skip::UnknownWorkflow => "unknown_workflow",
            Skip::InvalidLabel => "invalid_label",
            Skip::Erased => "erased",
            Skip::NoText => "no_text",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Skip::Closed => {
                "closed without data.intent: a closed request is not necessarily off-topic"
            }
            Skip::AmbiguousWorkflow => {
                "the chosen workflow serves several intents and no data.intent said which"
            }
            Skip::UnknownWorkflow => "the chosen workflow is not in the workflows directory",
            Skip::InvalidLabel => {
                "data.intent (or the workflow's intent) is not a label of the model"
            }
            Skip::Erased => "the customer's personal data was erased",
            Skip::NoText => "the request has no text to learn from",
        }
    }
}

/// The label of a reviewer's decision on a triaged request.
///
/// `given` is the audit trail's record of `data.intent`: `Some(Ok(label))`, `Some(Err(()))`
/// when one was given but refused as not label-shaped, `None` when none was given.
fn label(
    decision: &str,
    given: Option<Result<&str, ()>>,
    labels: &BTreeSet<String>,
    intents_of: &BTreeMap<&str, Vec<&str>>,
) -> Result<String, Skip> {
    let known = |l: &str| {
        if labels.contains(l) {
            Ok(l.to_string())
        } else {
            Err(Skip::InvalidLabel)
        }
    };
    match given {
        Some(Ok(l)) => known(l),
        Some(Err(())) => Err(Skip::InvalidLabel),
        None if decision == "close" => Err(Skip::Closed),
        None => match intents_of.get(decision).map(Vec::as_slice) {
            Some([one]) => known(one),
            Some([]) | None => Err(Skip::UnknownWorkflow),
            Some(_) => Err(Skip::AmbiguousWorkflow),
        },
    }
}

fn read_labels(args: &ExportArgs) -> anyhow::Result<BTreeSet<String>> {
    let models = args
        .models
        .clone()
        .unwrap_or_else(casegraph::classifier::default_models_dir);
    let path = models.join(&args.model).join("labels.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let labels: Vec<String> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON list of labels", path.display()))?;
    Ok(labels.into_iter().collect())
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Export(args) = command;
    let labels = read_labels(&args)?;
    let catalog = match super::load_catalog(&args.workflows, &super::rules()?) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut intents_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (intent, workflow) in catalog.intent_map() {
        intents_of.entry(workflow).or_default().push(intent);
    }
    let store = super::audit::open_existing(&args.data.data)?;
    let mut out = super::output(&args.output)?;
    let mut exported = 0u64;
    let mut skipped: BTreeMap<Skip, u64> = BTreeMap::new();
    let mut records = store.audit_records();
    for (_, bytes) in &mut records {
        let record: Record =
            serde_json::from_slice(&bytes).context("an audit record is not readable")?;
        let triage_task = format!("{}.triage", record.case_id);
        if record.kind != Kind::TaskCompleted
            || record.body["task_id"].as_str() != Some(triage_task.as_str())
            || args.since.is_some_and(|since| record.at < since)
        {
            continue;
        }
        let decision = record.body["decision"].as_str().unwrap_or_default();
        let given = match (&record.body["intent"], &record.body["intent_refused"]) {
            (Value::String(l), _) => Some(Ok(l.as_str())),
            (_, Value::Bool(true)) => Some(Err(())),
            _ => None,
        };
        let sentiment = record.body["sentiment"].as_str();
        let frustrated = record.body["frustrated"].as_bool();
        let mood = sentiment.is_some() || frustrated.is_some();
        let intent = match label(decision, given, &labels, &intents_of) {
            Ok(l) => Some(l),
            // The mood is a label of its own: the example still teaches the mood heads.
            Err(_) if mood => None,
            Err(why) => {
                *skipped.entry(why).or_default() += 1;
                continue;
            }
        };
        let Some(case) = store.cases().get(&record.case_id)? else {
            *skipped.entry(Skip::Erased).or_default() += 1;
            continue;
        };
        let personal = match store.personal().get(&record.case_id)? {
            Some(p) if !case.erased => p,
            _ => {
                *skipped.entry(Skip::Erased).or_default() += 1;
                continue;
            }
        };
        // The same intake the classifier used, so the example is the text the model read.
        let stored = serde_json::from_value::<Request>(personal.request);
        let text = match stored.map(|r| r.normalize()) {
            Ok(n) if !n.redacted.is_empty() => n.redacted,
            _ => {
                *skipped.entry(Skip::NoText).or_default() += 1;
                continue;
            }
        };
        let classification = case.classification.as_ref().unwrap_or(&Value::Null);
        let example = Example {
            text,
            channel: &case.channel,
            language: &case.language,
            intent,
            sentiment,
            frustrated,
            model_sentiment: &classification["sentiment"],
            model_frustration: &classification["frustration"],
            model_intent: &classification["intent"],
            model_confidence: &classification["confidence"],
            model_out_of_scope: &classification["out_of_scope"],
            model: &classification["model"],
            case_id: &case.id,
            decided_at: record.at,
        };
        serde_json::to_writer(&mut out, &example)?;
        out.write_all(b"\n")?;
        exported += 1;
    }
    if let Some(e) = records.error {
        return Err(e.into());
    }
    out.flush()?;
    eprintln!("exported {exported} correction(s)");
    for (why, n) in &skipped {
        eprintln!("skipped {}: {n} ({})", why.key(), why.why());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_the_reviewers_intent_or_the_one_intent_of_the_chosen_workflow() {
        let labels: BTreeSet<String> = [
            "request_refund",
            "card_arrival",
            "card_delivery_estimate",
            "oos",
        ]
        .map(String::from)
        .into();
        let intents_of: BTreeMap<&str, Vec<&str>> = [
            ("request_refund", vec!["request_refund"]),
            (
                "card_arrival",
                vec!["card_arrival", "card_delivery_estimate"],
            ),
            ("legacy", vec!["not_in_the_model"]),
        ]
        .into();
        let l = |d: &str, g| label(d, g, &labels, &intents_of);
        assert_eq!(l("request_refund", None), Ok("request_refund".into()));
        assert_eq!(l("card_arrival", None), Err(Skip::AmbiguousWorkflow));
        assert_eq!(
            l("card_arrival", Some(Ok("card_delivery_estimate"))),
            Ok("card_delivery_estimate".into())
        );
        assert_eq!(l("close", None), Err(Skip::Closed));
        assert_eq!(l("close", Some(Ok("oos"))), Ok("oos".into()));
        assert_eq!(l("close", Some(Ok("weather"))), Err(Skip::InvalidLabel));
        assert_eq!(l("close", Some(Err(()))), Err(Skip::InvalidLabel));
        assert_eq!(l("legacy", None), Err(Skip::InvalidLabel));
        assert_eq!(l("retired", None), Err(Skip::UnknownWorkflow));
    }
}
