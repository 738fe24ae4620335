//! `casegraph-loadgen`: drives a running casegraph server with a realistic request mix and
//! reports what it sustained.
//!
//! Senders post requests open-loop (`--rate`: a fixed schedule, latency counted from the
//! moment a request was *due*, so a stalled server cannot hide its stall) or closed-loop
//! (`--concurrency`: each sender waits for its answer). Pollers follow every accepted
//! case to its end; a reviewer completes the human tasks the mix creates. RSS comes from
//! `/proc/<pid>/status` of `--server-pid`. Nothing here is a test assertion: the numbers
//! go to `docs/benchmarks.md` with the command that produced them.
#![forbid(unsafe_code)]

mod mix;
mod stats;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};

use mix::{Mix, Rng};
use stats::{Latencies, Totals};

/// Load generator for a running casegraph server.
#[derive(Debug, Parser)]
#[command(name = "casegraph-loadgen", version, about)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API token (a submitter for intake; the reviewer uses `--reviewer-token` or this one,
    /// so an admin token does both). Or `--token-file`.
    #[arg(long, env = "CASEGRAPH_TOKEN")]
    token: Option<String>,
    /// File holding the token, e.g. `data/admin.token`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Token of the reviewer that completes human tasks.
    #[arg(long)]
    reviewer_token: Option<String>,
    /// Open loop: requests per second on a fixed schedule.
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Closed loop: senders that each wait for their answer before the next request (and,
    /// told `429`/`503` with `Retry-After`, wait that long first).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Connections (sender threads) for the open loop.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// After sending, how long to wait for accepted cases to finish, in seconds.
    #[arg(long, default_value_t = 60.0)]
    drain: f64,
    /// Don't follow cases to their end (acceptance only).
    #[arg(long)]
    no_follow: bool,
    /// Share of accepted cases followed to their end, percent: following costs the server
    /// a `GET` per case and poll, which a small box feels. Completed cases/s is the
    /// followed cases' rate scaled by this share.
    #[arg(long, default_value_t = 100.0)]
    follow: f64,
    /// Sample requests (JSON lines); the shipped ones by default.
    #[arg(long, default_value = "workflows/samples/requests.jsonl")]
    mix: PathBuf,
    /// Post the samples' `metadata` (a stated intent: the token needs `state_intent`);
    /// without it the metadata is dropped and the box's model classifies every request.
    #[arg(long)]
    keep_metadata: bool,
    /// Share of off-topic requests, percent.
    #[arg(long, default_value_t = 10.0)]
    off_topic: f64,
    /// OCR confusions in letters, percent of positions.
    #[arg(long, default_value_t = 3.0)]
    ocr_noise: f64,
    /// Threads following accepted cases to their end.
    #[arg(long, default_value_t = 2)]
    pollers: usize,
    /// Reviewers completing human tasks side by side (each takes its own share of the open
    /// tasks, so that no two complete the same one). One reviewer completes a task at a
    /// time, each a durable commit: a single one falls behind a box finishing hundreds of
    /// cases a second.
    #[arg(long, default_value_t = 4)]
    reviewers: usize,
    /// How often a pending case is looked at, in milliseconds (the resolution of the
    /// completion latency), unless `--poll-age-percent` of its age is longer.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// A case that has been pending for a while is looked at less often: the next poll is
    /// at most this share of its age away (and at least `--poll-ms`). Under saturation
    /// completion takes seconds (the queue) and a fixed interval would cost the server a
    /// `GET` every `--poll-ms` for every followed case; with 25 % a case pending 16 s is
    /// polled 16 times instead of 64, and its completion latency is still known to within
    /// a quarter. 0 polls at the fixed interval.
    #[arg(long, default_value_t = 25.0)]
    poll_age_percent: f64,
    /// Share of the customer questions (cases waiting for an answer of an `ask` node) that
    /// the customer answers, percent: a poller posts the answer to
    /// `/v1/cases/{id}/messages` and follows the case on; the rest stay waiting for the
    /// customer and are no longer followed.
    #[arg(long, default_value_t = 100.0)]
    answer_percent: f64,
    /// Closed loop: a sender told `429`/`503` sends again at once instead of waiting for
    /// `Retry-After` (a client that ignores back-pressure: what a rejection costs the box).
    #[arg(long)]
    ignore_retry_after: bool,
    /// Server process to read RSS from (`/proc/<pid>/status`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the report as JSON to this file as well.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
}

/// An accepted case being followed to its end; ordered by its fields in turn, so by the
/// next poll first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Followed {
    next_poll: Instant,
    accepted: Instant,
    id: String,
}

/// Followed cases ordered by their next poll, the earliest first.
type Pending = BinaryHeap<Reverse<Followed>>;

/// What the threads share.
#[derive(Debug, Default)]
struct Shared {
    sent: AtomicU64,
    accepted: AtomicU64,
    completed: AtomicU64,
    tasks: AtomicU64,
    /// Accepted cases waiting on a durable timer (not followed further).
    parked: AtomicU64,
    /// Answers to customer questions posted, and their `202` latency.
    answers: AtomicU64,
    answer_accept: Mutex<Latencies>,
    /// Questions left unanswered (`--answer-percent`; not followed further).
    unanswered: AtomicU64,
    sending_done: AtomicBool,
    stop: AtomicBool,
    pending: Mutex<Pending>,
    accept: Mutex<Latencies>,
    completion: Mutex<Latencies>,
    by_status: Mutex<std::collections::BTreeMap<String, u64>>,
    outcomes: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Requests sent per kind of the mix (form, letter, chat, off_topic).
    kinds: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    last_accept: Mutex<Option<Instant>>,
    last_completion: Mutex<Option<Instant>>,
    rss_peak: AtomicU64,
    rss_last: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client that gives each phase of a call up to a minute. Not one global timeout: with
/// any timeout that covers name resolution ureq resolves the host in a thread of its own,
/// one thread started and ended per request, which cost the load generator about a third
/// of its CPU on the cores it shares with the server.
fn agent() -> ureq::Agent {
    let minute = Some(Duration::from_secs(60));
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_request(minute)
        .timeout_send_body(minute)
        .timeout_recv_response(minute)
        .timeout_recv_body(minute)
        .http_status_as_error(false)
        .build()
        .into()
}

/// Sends one request; returns the label of the answer and the case id when accepted.
/// Posts one request: its answer's label (`202`, `429 queue_full`, …), the case id if
/// accepted, and the `Retry-After` the server asked for, if any.
fn send(
    agent: &ureq::Agent,
    url: &str,
    auth: &str,
    body: &str,
) -> (String, Option<String>, Option<Duration>) {
    let r = agent
        .post(url)
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .send(body.as_bytes());
    match r {
        Ok(mut resp) => {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let (label, id) = answer(&mut resp);
            (label, id, retry_after)
        }
        Err(e) => (format!("transport: {}", short(&e.to_string())), None, None),
    }
}

/// The label and case id of an answer.
fn answer(resp: &mut ureq::http::Response<ureq::Body>) -> (String, Option<String>) {
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == 202 {
        ("202".into(), v["case_id"].as_str().map(str::to_string))
    } else {
        let code = v["error"]["code"].as_str().unwrap_or("?");
        (format!("{status} {code}"), None)
    }
}

fn short(s: &str) -> String {
    s.split(':').next().unwrap_or(s).chars().take(40).collect()
}

fn record(shared: &Shared, due: Instant, label: String, id: Option<String>, follow: bool) {
    // Which cases are followed is decided by the caller (a sample of them).
    let now = Instant::now();
    *lock(&shared.by_status).entry(label).or_default() += 1;
    if let Some(id) = id {
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        lock(&shared.accept).record(now - due);
        *lock(&shared.last_accept) = Some(now);
        if follow {
            let next_poll = now + Duration::from_millis(20);
            lock(&shared.pending).push(Reverse(Followed {
                next_poll,
                accepted: due,
                id,
            }));
        }
    }
}

/// When a case that has been pending since `accepted` is looked at next: after `every`,
/// or after `age_share` of its age if that is longer.
fn next_poll(seen: Instant, accepted: Instant, every: Duration, age_share: f64) -> Instant {
    seen + every.max((seen - accepted).mul_f64(age_share))
}

/// What the customer answers to a shipped question, by the `ask` node that asked.
fn customer_answer(node: &str, language: &str) -> Value {
    let de = language == "de";
    match node {
        "ask_amount" => json!({"channel": "chat",
            "text": if de { "Es waren 42,50 EUR" } else { "It was 42.50 EUR" }}),
        "ask_details" => json!({"channel": "form", "text": "",
            "fields": {"email": "new.address@example.com"}}),
        "ask_customer_number" => json!({"channel": "chat", "text": "Kundennummer C-2003457"}),
        _ => json!({"channel": "chat", "text": if de { "Ja, danke" } else { "Yes, thank you" }}),
    }
}

/// Posts the customer's answer to the question case `id` waits on; `false` when the box
/// did not take it (the case is then polled again).
fn answer_question(
    shared: &Shared,
    agent: &ureq::Agent,
    base: &str,
    auth: &str,
    id: &str,
    case: &Value,
) -> bool {
    let waiting = &case["waiting"];
    let body = customer_answer(
        waiting["node"].as_str().unwrap_or(""),
        case["language"].as_str().unwrap_or("en"),
    );
    let key = format!("answer-{id}-{}", waiting["asked_at"].as_str().unwrap_or(""));
    let sent = Instant::now();
    let r = agent
        .post(&format!("{base}/v1/cases/{id}/messages"))
        .header("Authorization", auth)
        .header("Idempotency-Key", &key)
        .header("Content-Type", "application/json")
        .send(body.to_string());
    let ok = r.is_ok_and(|resp| resp.status().as_u16() == 202);
    if ok {
        lock(&shared.answer_accept).record(sent.elapsed());
        shared.answers.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Whether the customer of case `id` answers its questions (`percent` of cases, by id).
fn answers(id: &str, percent: f64) -> bool {
    let h = id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    ((h % 10_000) as f64) < percent * 100.0
}

fn poller(
    shared: &Shared,
    base: &str,
    auth: &str,
    every: Duration,
    age_share: f64,
    answer_percent: f64,
) {
    let agent = agent();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let next = {
            let mut pending = lock(&shared.pending);
            match pending.peek() {
                Some(Reverse(case)) if case.next_poll > now => Err(case.next_poll - now),
                Some(_) => Ok(pending.pop().map(|Reverse(case)| case)),
                None => Ok(None),
            }
        };
        let mut case = match next {
            Ok(Some(case)) => case,
            Ok(None) => {
                if shared.sending_done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(wait) => {
                std::thread::sleep(wait.min(Duration::from_millis(10)));
                continue;
            }
        };
        let r = agent
            .get(&format!("{base}/v1/cases/{}", case.id))
            .header("Authorization", auth)
            .call();
        let status = r.ok().and_then(|mut resp| {
            let text = resp.body_mut().read_to_string().ok()?;
            serde_json::from_str::<Value>(&text).ok()
        });
        let seen = Instant::now();
        match status {
            Some(v)
                if matches!(
                    v["status"].as_str(),
                    Some("completed" | "failed" | "escalated")
                ) =>
            {
                shared.completed.fetch_add(1, Ordering::Relaxed);
                lock(&shared.completion).record(seen - case.accepted);
                *lock(&shared.last_completion) = Some(seen);
                let outcome = format!(
                    "{}:{}",
                    v["status"].as_str().unwrap_or("?"),
                    v["outcome"].as_str().unwrap_or("-")
                );
                *lock(&shared.outcomes).entry(outcome).or_default() += 1;
            }
            // A question to the customer: answered (and followed on), or left waiting.
            Some(v) if v["status"] == "waiting" && v["waiting"]["kind"] == "answer" => {
                if !answers(&case.id, answer_percent) {
                    shared.unanswered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                answer_question(shared, &agent, base, auth, &case.id, &v);
                case.next_poll = next_poll(seen, case.accepted, every, age_share);
                lock(&shared.pending).push(Reverse(case));
            }
            // A durable timer (e.g. days of a retention offer) outlasts any run: the case
            // is counted as parked and no longer followed.
            Some(v)
                if v["status"] == "waiting"
                    && v["waiting"].get("due").is_some()
                    && v["waiting"].get("task_id").is_none() =>
            {
                shared.parked.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                case.next_poll = next_poll(seen, case.accepted, every, age_share);
                lock(&shared.pending).push(Reverse(case));
            }
        }
    }
}

/// Open tasks a reviewer asks for at a time (the soonest due first).
const TASK_PAGE: usize = 256;

/// Completes open tasks with one of their decisions, as a reviewer would: reviewer `me` of
/// `of` takes the tasks whose id hashes to it.
fn reviewer(shared: &Shared, base: &str, auth: &str, seed: u64, me: usize, of: usize) {
    let agent = agent();
    let mut rng = Rng::new(seed ^ 0xBEEF ^ me as u64);
    let mine = |id: &str| {
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        h % of as u64 == me as u64
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let tasks = agent
            .get(&format!("{base}/v1/tasks?limit={TASK_PAGE}"))
            .header("Authorization", auth)
            .call()
            .ok()
            .and_then(|mut r| {
                serde_json::from_str::<Value>(&r.body_mut().read_to_string().ok()?).ok()
            });
        let tasks = tasks
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let mut worked = false;
        for t in &tasks {
            let (Some(id), Some(decisions)) = (t["task_id"].as_str(), t["decisions"].as_array())
            else {
                continue;
            };
            if decisions.is_empty() || !mine(id) {
                continue;
            }
            worked = true;
            let decision = &decisions[rng.below(decisions.len() as u64) as usize];
            let complete = |data: Value| {
                let body = json!({ "decision": decision, "data": data, "comment": "load generator review" });
                agent
                    .post(&format!("{base}/v1/tasks/{id}/complete"))
                    .header("Authorization", auth)
                    .header("Content-Type", "application/json")
                    .send(body.to_string().as_bytes())
                    .ok()
                    .map(|mut r| {
                        // Read to the end, or the connection cannot be reused: a new TCP
                        // connection per task would cost both sides more than the request.
                        let text = r.body_mut().read_to_string().unwrap_or_default();
                        (r.status().as_u16(), text)
                    })
            };
            let mut answer = complete(json!({}));
            // A triage decision that starts a workflow answering per intent needs the intent
            // the request is about when the model's is not one of the workflow's: a reviewer
            // reads the refusal and names one of those it lists.
            if let Some((422, text)) = &answer
                && let Ok(refusal) = serde_json::from_str::<Value>(text)
                && refusal["error"]["code"] == "invalid_intent"
                && let Some(allowed) = refusal["error"]["details"]["allowed"].as_array()
                && !allowed.is_empty()
            {
                let intent = &allowed[rng.below(allowed.len() as u64) as usize];
                answer = complete(json!({ "intent": intent }));
            }
            let ok = matches!(answer, Some((200, _)));
            if ok {
                shared.tasks.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !worked {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Case segments that ended in a final status, from the server's `/metrics` (the token
/// needs the auditor or admin role); `None` when the server does not show them.
fn finished_on_server(agent: &ureq::Agent, base: &str, auth: &str) -> Option<f64> {
    let mut r = agent
        .get(&format!("{base}/metrics"))
        .header("Authorization", auth)
        .call()
        .ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    let text = r.body_mut().read_to_string().ok()?;
    let mut total = 0.0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("casegraph_case_segments_total{"))
    {
        let final_status = ["completed", "failed", "escalated"]
            .iter()
            .any(|s| line.contains(&format!("status=\"{s}\"")));
        if final_status {
            total += line.rsplit(' ').next()?.parse::<f64>().ok()?;
        }
    }
    Some(total)
}

fn rss_sampler(shared: &Shared, pid: u32) {
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(b) = rss_of(pid) {
            shared.rss_last.store(b, Ordering::Relaxed);
            shared.rss_peak.fetch_max(b, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("give --token, CASEGRAPH_TOKEN or --token-file"),
    };
    let auth = format!("Bearer {token}");
    let reviewer_auth = args
        .reviewer_token
        .as_ref()
        .map_or_else(|| auth.clone(), |t| format!("Bearer {t}"));
    let base = args.url.trim_end_matches('/').to_string();
    let mut mix = Mix::load(&args.mix, args.off_topic, args.ocr_noise)?;
    mix.keep_metadata = args.keep_metadata;
    let mix = Arc::new(mix);
    let ready = agent().get(&format!("{base}/readyz")).call();
    anyhow::ensure!(
        ready.as_ref().is_ok_and(|r| r.status().as_u16() == 200),
        "{base}/readyz is not ready"
    );

    let shared = Arc::new(Shared::default());
    let rss_idle = args.server_pid.and_then(rss_of);
    let follow = !args.no_follow;
    let mut helpers = Vec::new();
    if let Some(pid) = args.server_pid {
        let s = shared.clone();
        helpers.push(std::thread::spawn(move || rss_sampler(&s, pid)));
    }
    let mut followers = Vec::new();
    if follow {
        for _ in 0..args.pollers.max(1) {
            let (s, b, a) = (shared.clone(), base.clone(), reviewer_auth.clone());
            let every = Duration::from_millis(args.poll_ms.max(1));
            let age_share = args.poll_age_percent.clamp(0.0, 100.0) / 100.0;
            let answer_percent = args.answer_percent.clamp(0.0, 100.0);
            followers.push(std::thread::spawn(move || {
                poller(&s, &b, &a, every, age_share, answer_percent)
            }));
        }
        let seed = args.seed;
        let of = args.reviewers.max(1);
        for me in 0..of {
            let (s, b, a) = (shared.clone(), base.clone(), reviewer_auth.clone());
            helpers.push(std::thread::spawn(move || {
                reviewer(&s, &b, &a, seed, me, of)
            }));
        }
    }

    let metrics_agent = agent();
    let finished_before = finished_on_server(&metrics_agent, &base, &reviewer_auth);
    let mut finished_last = finished_before.map(|f| (f, Instant::now()));
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let deadline = start + duration;
    let url = format!("{base}/v1/requests");
    let (threads, rate) = match (args.rate, args.concurrency) {
        (Some(rate), _) => (args.connections.max(1), Some(rate)),
        (None, Some(c)) => (c.max(1), None),
        (None, None) => anyhow::bail!("give --rate (open loop) or --concurrency (closed loop)"),
    };
    let ticket = Arc::new(AtomicU64::new(0));
    let follow_percent = args.follow.clamp(0.0, 100.0);
    let ignore_retry_after = args.ignore_retry_after;
    let mut senders = Vec::new();
    for t in 0..threads {
        let (s, mix, url, auth, ticket) = (
            shared.clone(),
            mix.clone(),
            url.clone(),
            auth.clone(),
            ticket.clone(),
        );
        let seed = args.seed.wrapping_mul(1000).wrapping_add(t as u64);
        senders.push(std::thread::spawn(move || {
            let agent = agent();
            let mut rng = Rng::new(seed);
            loop {
                let due = match rate {
                    Some(rate) => {
                        let i = ticket.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        if due >= deadline {
                            return;
                        }
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        due
                    }
                    None => {
                        let now = Instant::now();
                        if now >= deadline {
                            return;
                        }
                        now
                    }
                };
                let drawn = mix.draw(&mut rng);
                s.sent.fetch_add(1, Ordering::Relaxed);
                *lock(&s.kinds).entry(drawn.kind).or_default() += 1;
                let (label, id, retry_after) = send(&agent, &url, &auth, &drawn.body);
                let sampled = follow && rng.chance(follow_percent);
                record(&s, due, label, id, sampled);
                // A closed-loop sender is a well-behaved client: told to come back later,
                // it waits as long as asked (never past the end of the run). The open
                // loop keeps its schedule: it measures what an impatient crowd does.
                if rate.is_none()
                    && !ignore_retry_after
                    && let Some(wait) = retry_after
                {
                    std::thread::sleep(
                        wait.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
            }
        }));
    }

    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let drain_deadline = deadline + Duration::from_secs_f64(args.drain);
    let mut ticks = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        ticks += 1;
        // Once a second: cases the server finished (a cheap count, not one GET per case).
        if ticks.is_multiple_of(5)
            && let Some((last, _)) = finished_last
            && let Some(now) = finished_on_server(&metrics_agent, &base, &reviewer_auth)
            && now > last
        {
            finished_last = Some((now, Instant::now()));
        }
        let elapsed = start.elapsed();
        let sending = senders.iter().any(|h| !h.is_finished());
        if !sending {
            shared.sending_done.store(true, Ordering::Relaxed);
        }
        let pending = lock(&shared.pending).len();
        let accepted = shared.accepted.load(Ordering::Relaxed);
        bar.set_position(elapsed.as_secs().min(duration.as_secs()));
        bar.set_message(format!(
            "{} {} sent, {accepted} accepted ({:.0}/s), {} completed, {pending} following, {} tasks done{}",
            if sending { "sending" } else { "draining" },
            shared.sent.load(Ordering::Relaxed),
            accepted as f64 / elapsed.as_secs_f64().min(duration.as_secs_f64()).max(0.001),
            shared.completed.load(Ordering::Relaxed),
            shared.tasks.load(Ordering::Relaxed),
            args.server_pid.map_or(String::new(), |_| format!(", server RSS {} MiB", shared.rss_last.load(Ordering::Relaxed) >> 20)),
        ));
        if !sending && (pending == 0 || Instant::now() >= drain_deadline) {
            break;
        }
    }
    bar.finish_and_clear();
    shared.stop.store(true, Ordering::Relaxed);
    for h in senders.into_iter().chain(followers).chain(helpers) {
        let _ = h.join();
    }

    let mut totals = Totals {
        sent: shared.sent.load(Ordering::Relaxed),
        accepted: shared.accepted.load(Ordering::Relaxed),
        completed: shared.completed.load(Ordering::Relaxed),
        unfinished: lock(&shared.pending).len() as u64,
        by_status: std::mem::take(&mut *lock(&shared.by_status)),
        tasks_completed: shared.tasks.load(Ordering::Relaxed),
        parked: shared.parked.load(Ordering::Relaxed),
        send_window: lock(&shared.last_accept).map_or(Duration::ZERO, |t| t - start),
        completion_window: lock(&shared.last_completion).map_or(Duration::ZERO, |t| t - start),
        outcomes: std::mem::take(&mut *lock(&shared.outcomes)),
        rss_idle,
        rss_peak: Some(shared.rss_peak.load(Ordering::Relaxed)).filter(|b| *b > 0),
        rss_end: args.server_pid.and_then(rss_of),
        ..Totals::default()
    };
    totals
        .accept
        .extend(std::mem::take(&mut *lock(&shared.accept)));
    totals
        .completion
        .extend(std::mem::take(&mut *lock(&shared.completion)));
    let scale = if follow_percent > 0.0 {
        100.0 / follow_percent
    } else {
        0.0
    };
    let mut report = totals.report();
    if let Some(c) = report["completed_per_s"].as_f64() {
        report["completed_per_s"] = json!((c * scale * 10.0).round() / 10.0);
    }
    report["followed_percent"] = json!(follow_percent);
    // The server's own count: every case that reached a final status during the run,
    // over the time from the first request to the last increase of the count.
    if let (Some(before), Some((after, at))) = (finished_before, finished_last) {
        let window = (at - start).as_secs_f64();
        report["server_finished_cases"] = json!(after - before);
        report["server_finished_per_s"] = json!(if window > 0.0 {
            ((after - before) / window * 10.0).round() / 10.0
        } else {
            0.0
        });
    }
    report["mode"] = match rate {
        Some(r) => json!({ "open_loop_rate": r, "connections": threads }),
        None => json!({ "closed_loop_concurrency": threads }),
    };
    report["duration_s"] = json!(args.duration);
    report["mix"] = json!(*lock(&shared.kinds));
    let mut answer_accept = std::mem::take(&mut *lock(&shared.answer_accept));
    report["customer_answers"] = json!({
        "posted": shared.answers.load(Ordering::Relaxed),
        "left_unanswered": shared.unanswered.load(Ordering::Relaxed),
        "answer_percent": args.answer_percent,
        "accept_ms": {
            "p50": answer_accept.quantile_ms(0.5),
            "p95": answer_accept.quantile_ms(0.95),
            "p99": answer_accept.quantile_ms(0.99),
            "max": answer_accept.quantile_ms(1.0),
        },
    });
    report["completion_resolution_ms"] = json!(args.poll_ms);
    report["completion_resolution_age_percent"] = json!(args.poll_age_percent);
    println!("{}", stats::table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_pending_case_is_polled_less_often() {
        let accepted = Instant::now();
        let every = Duration::from_millis(250);
        let seen = accepted + Duration::from_millis(400);
        assert_eq!(next_poll(seen, accepted, every, 0.25), seen + every);
        let seen = accepted + Duration::from_secs(16);
        assert_eq!(
            next_poll(seen, accepted, every, 0.25),
            seen + Duration::from_secs(4)
        );
        assert_eq!(next_poll(seen, accepted, every, 0.0), seen + every);
    }

    #[test]
    fn the_earliest_poll_comes_first() {
        let now = Instant::now();
        let mut pending = Pending::new();
        for (ms, id) in [(300, "c"), (100, "a"), (200, "b")] {
            pending.push(Reverse(Followed {
                next_poll: now + Duration::from_millis(ms),
                accepted: now,
                id: id.into(),
            }));
        }
        let order: Vec<String> =
            std::iter::from_fn(|| pending.pop().map(|Reverse(f)| f.id)).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }
}
