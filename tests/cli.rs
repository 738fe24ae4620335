//! The `casegraph` binary as a process owner uses it, on the shipped workflows and on
//! broken ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use support::casegraph;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn validate_accepts_the_shipped_workflows() {
    let out = casegraph(&["validate", "workflows"]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("are valid"));
}

#[test]
fn validate_lists_every_problem_with_file_line_and_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    std::fs::create_dir_all(dir.join("routing")).unwrap();
    std::fs::write(
        dir.join("routing/routing.yaml"),
        "version: 1\nscript: routing.rhai\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("routing/routing.rhai"),
        "#{queue: \"triage\", rule: \"all\"}",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("demo")).unwrap();
    std::fs::write(dir.join("demo/input.schema.json"), "{}").unwrap();
    std::fs::write(
        dir.join("demo/workflow.yaml"),
        "id: demo\nversion: 1\nintents: [x]\nstart: a\ncolour: red\nnodes:\n  a: {kind: decision, branches: [{when: \"true\", to: nowhere}]}\n",
    )
    .unwrap();
    let out = casegraph(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let wf = Path::new(&dir)
        .join("demo/workflow.yaml")
        .display()
        .to_string();
    assert!(text.contains(&format!("{wf}:5:1: unknown_field")), "{text}");
    assert!(text.contains("missing_otherwise in node `a`"), "{text}");
    assert!(
        text.contains(&format!("{wf}:7")) && text.contains("dangling_edge"),
        "{text}"
    );
}

#[test]
fn test_runs_every_shipped_fixture() {
    let out = casegraph(&["test", "workflows"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(text.contains("PASS  routing:"), "{text}");
}

#[test]
fn graph_draws_mermaid_and_dot() {
    let out = casegraph(&["graph", "request_refund", "--format", "mermaid"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("flowchart TD"));
    let out = casegraph(&["graph", "request_refund", "--format", "dot"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("digraph \"request_refund\""));
    let out = casegraph(&["graph", "no_such_workflow"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_processes_the_sample_requests_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("out.jsonl");
    let out = casegraph(&[
        "run",
        "--input",
        "workflows/samples/requests.jsonl",
        "--output",
        results.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("completed"), "{text}");
    let lines = std::fs::read_to_string(&results).unwrap();
    let samples = std::fs::read_to_string("workflows/samples/requests.jsonl").unwrap();
    assert_eq!(
        lines.lines().count(),
        samples.lines().filter(|l| !l.trim().is_empty()).count()
    );
    assert!(lines.contains("\"status\":\"completed\""));
}

#[test]
fn run_rejects_a_malformed_line_naming_it_and_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"channel\": \"chat\", \"language\": \"en\", \"text\": \"my card arrived?\", \"intent\": \"card_arrival\"}\n{\"channel\": \"fax\", \"intent\": \"x\"}\n{\"channel\": \"chat\", \"text\": \"hi\", \"customer_id\": \"no spaces allowed\"}\n",
    )
    .unwrap();
    let out = casegraph(&["run", "--input", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.jsonl:2: rejected"), "{err}");
    // The HTTP intake's own rules apply to `run` input too.
    assert!(
        err.contains("in.jsonl:3: rejected: `customer_id` must be"),
        "{err}"
    );
    assert!(stdout(&out).contains("3 request(s)"), "{}", stdout(&out));
}

#[test]
fn run_report_counts_what_the_box_finished_and_every_irreversible_action_on_a_wrong_intent() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("labelled.jsonl");
    let line = |text: &str, label: &str, intent: &str, confidence: f64| {
        format!(
            "{{\"channel\": \"chat\", \"language\": \"en\", \"customer_id\": \"C-1002345\", \"text\": \"{text}\", \"fields\": {{}}, \"label\": \"{label}\", \"intent\": \"{intent}\", \"confidence\": {confidence}}}\n"
        )
    };
    let text = [
        line(
            "how do I activate my card?",
            "activate_my_card",
            "activate_my_card",
            0.99,
        ),
        // Misread with full confidence: the irreversible workflow asks the customer to
        // confirm the block before it acts, so nothing is blocked.
        line(
            "activate my card please",
            "activate_my_card",
            "lost_or_stolen_card",
            1.0,
        ),
        line(
            "what rate do you use?",
            "exchange_rate",
            "exchange_rate",
            0.5,
        ),
    ]
    .concat();
    std::fs::write(&input, &text).unwrap();
    let out = casegraph(&["run", "--report", "--input", input.to_str().unwrap()]);
    let stdout = stdout(&out);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 labelled request(s): 1 finished without a person (33.3 %), 0 of them by another intent's workflow; 0 irreversible action(s) on a wrong intent"),
        "{stdout}"
    );
    let activate = stdout
        .lines()
        .find(|l| l.contains("activate_my_card"))
        .unwrap();
    assert!(
        activate.contains("50.0 %") && activate.contains("0.0 % (0)"),
        "{activate}"
    );

    // A line without its label cannot be measured: it is named and the run fails.
    std::fs::write(
        &input,
        format!("{text}{{\"channel\": \"chat\", \"text\": \"hi\"}}\n"),
    )
    .unwrap();
    let out = casegraph(&["run", "--report", "--input", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("labelled.jsonl:4: rejected: `label`"), "{err}");
}
