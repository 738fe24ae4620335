//! `casegraph classify`: intent, confidence, top intents, out-of-scope flag and language for
//! each request of a JSON-lines file, one JSON line out per line in, in order.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph_engine::classify::Scored;
use casegraph_engine::classify::onnx::{OnnxClassifier, Options};
use casegraph_engine::classify::signals::Signals;
use casegraph_engine::intake::{self, Channel, Request};
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON lines `{"text": "...", "channel": "form"|"letter"|"chat"}`; `-` reads standard input.
    #[arg(long, short)]
    input: String,
    /// Model directory (model.toml, model.onnx or model.onnx.zst, tokenizer.json, labels.json); default: the
    /// shipped model.
    #[arg(long, env = "CASEGRAPH_MODEL")]
    model: Option<PathBuf>,
    /// ONNX Runtime threads per inference.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Requests per model call.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Intents listed in `top`.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Run the encoder for every request, also where the model's n-gram half alone is sure
    /// enough (the card's `[cascade]`).
    #[arg(long)]
    no_cascade: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    text: String,
    /// Chat when absent.
    #[serde(default)]
    channel: Option<Channel>,
    /// A form's labelled values.
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
    // accepted so that sample requests classify as they are
    #[serde(default)]
    #[allow(dead_code)]
    language: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    customer_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    intent: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    confidence: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Output<'a> {
    intent: &'a str,
    confidence: f32,
    top: &'a [Scored],
    out_of_scope: bool,
    language: &'a str,
    model: &'a str,
    /// `lexical` (the n-gram half alone was sure enough) or `full`.
    stage: &'a str,
    /// `sentiment` and `frustration`, when the model has those heads.
    #[serde(flatten)]
    signals: Option<Signals>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.model.clone().unwrap_or_else(|| {
        casegraph::classifier::default_models_dir()
            .join(casegraph::config::InferenceOptions::default().model)
    });
    let classifier = OnnxClassifier::load(
        &dir,
        &Options {
            intra_threads: args.threads,
            sessions: 1,
            top_k: args.top_k,
            cascade: !args.no_cascade,
        },
    )?;
    let reader: Box<dyn BufRead> = if args.input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input))?,
        ))
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    // a chunk of lines: (line number, normalized request or the error for that line)
    let mut chunk: Vec<(usize, Result<intake::Normalized, String>)> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}: cannot read line {n}", args.input))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Line>(&line)
            .map_err(|e| e.to_string())
            .map(|l| {
                let mut request = Request::text(l.channel.unwrap_or(Channel::Chat), l.text);
                request.fields = l.fields;
                request.normalize()
            });
        chunk.push((n, parsed));
        if chunk.len() >= args.batch.max(1) {
            failed += flush(&classifier, &mut chunk, &args.input, &mut out)?;
        }
    }
    failed += flush(&classifier, &mut chunk, &args.input, &mut out)?;
    out.flush()?;
    if failed > 0 {
        eprintln!("{failed} line(s) of {} could not be classified", args.input);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Classifies the chunk's good lines in one batch and writes every line's answer in order.
/// Returns how many lines failed.
fn flush(
    classifier: &OnnxClassifier,
    chunk: &mut Vec<(usize, Result<intake::Normalized, String>)>,
    input: &str,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let good = || chunk.iter().filter_map(|(_, r)| r.as_ref().ok());
    let texts: Vec<&str> = good().map(|n| n.text.as_str()).collect();
    let languages: Vec<&str> = good().map(|n| n.language.as_str()).collect();
    let mut predictions = classifier.classify_in(&texts, &languages)?.into_iter();
    let mut failed = 0;
    for (n, r) in chunk.drain(..) {
        match r {
            Ok(norm) => {
                let p = predictions
                    .next()
                    .context("the model answered fewer requests than it was given")?;
                let o = Output {
                    intent: &p.intent,
                    confidence: p.confidence,
                    top: &p.top,
                    out_of_scope: p.out_of_scope,
                    language: &norm.language,
                    model: &p.model,
                    stage: p.stage.as_str(),
                    signals: p.signals,
                };
                serde_json::to_writer(&mut *out, &o)?;
                writeln!(out)?;
            }
            Err(e) => {
                failed += 1;
                let msg = format!("{input}: line {n}: {e}");
                eprintln!("error: {msg}");
                serde_json::to_writer(&mut *out, &serde_json::json!({ "line": n, "error": msg }))?;
                writeln!(out)?;
            }
        }
    }
    Ok(failed)
}
