//! The `casegraph serve` process as an operator runs it: on the shipped defaults with no
//! configuration file, tokens from `casegraph token create`, SIGTERM for a graceful stop
//! (exit 0), and a restart that finds every accepted case again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::casegraph;

/// Starts `casegraph serve --data DIR --listen 127.0.0.1:0` in the repository (so the
/// default `./workflows` is the shipped one) and returns it with its base URL.
fn serve(data: &Path) -> (Child, String) {
    serve_with(data, &[])
}

/// [`serve`] with more environment variables (settings).
fn serve_with(data: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_casegraph"))
        .args([
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CASEGRAPH_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line names the address: {line:?}"))
        .to_string();
    (child, base)
}

fn agent() -> ureq::Agent {
    casegraph::connector::agent(Duration::from_secs(10))
}

fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    let mut r = agent()
        .get(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = agent().get(&format!("{base}/readyz")).call()
            && r.status() == 200
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not ready");
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_runs_on_the_defaults_stops_on_sigterm_and_finds_its_cases_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = casegraph(&[
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--role",
        "submitter",
        "--name",
        "webform",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().trim().to_string();
    assert!(token.starts_with("cg_"), "{stdout}");
    assert!(
        !std::fs::read_to_string(data.join("tokens.json"))
            .unwrap()
            .contains(&token)
    );

    let (mut child, base) = serve(&data);
    wait_ready(&base);
    // A token existed, so no bootstrap admin token was made.
    assert!(!data.join("admin.token").exists());
    let body = json!({"channel": "chat", "language": "en", "text": "I was charged twice, please refund €20",
        "metadata": {"intent": "request_refund", "confidence": 0.9}});
    let mut r = agent()
        .post(&format!("{base}/v1/requests"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let id = accepted["case_id"].as_str().unwrap().to_string();
    let status = sigterm(&mut child);
    assert!(status.success(), "graceful stop exits 0: {status:?}");

    let (mut child, base) = serve(&data);
    wait_ready(&base);
    let (code, case) = get(&base, &format!("/v1/cases/{id}"), &token);
    assert_eq!(code, 200, "{case}");
    // recovery runs it on the workers, beside new requests: it ends soon after the start
    let case = wait_case_moved_on(&base, &id, &token);
    assert!(
        ["completed", "waiting", "escalated"].contains(&case["status"].as_str().unwrap()),
        "{case}"
    );
    assert!(sigterm(&mut child).success());
}

/// The case once it is neither `accepted` nor `running` (at most 30 s).
fn wait_case_moved_on(base: &str, id: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, case) = get(base, &format!("/v1/cases/{id}"), token);
        if !["accepted", "running"].contains(&case["status"].as_str().unwrap_or("")) {
            return case;
        }
        assert!(Instant::now() < deadline, "the case never ran: {case}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_fresh_box_creates_an_admin_token_for_its_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (mut child, base) = serve(&data);
    wait_ready(&base);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let (code, tokens) = get(&base, "/v1/tokens", token.trim());
    assert_eq!(code, 200, "{tokens}");
    assert_eq!(tokens[0]["role"], "admin");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only the owner reads the token file");
    }
    assert!(sigterm(&mut child).success());
    let out = casegraph(&["token", "list", "--data", data.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
}

/// Runs `casegraph serve` expecting it to refuse to start; returns its stderr.
fn refused_start(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_casegraph"));
    cmd.args([
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .args(extra)
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "serve started anyway");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_does_not_start_without_a_sound_model_and_says_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // No model where the configuration points.
    let empty = tmp.path().join("no-models");
    std::fs::create_dir_all(&empty).unwrap();
    let err = refused_start(&data, &["--models", empty.to_str().unwrap()], &[]);
    assert!(
        err.contains("cannot load the intent model `intent-e5-de-en`")
            && err.contains(empty.to_str().unwrap()),
        "{err}"
    );

    // A model file that does not match its card.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/intent-e5-de-en");
    let copy = tmp.path().join("models/intent-e5-de-en");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let labels = copy.join("labels.json");
    let text = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(&labels, text.replacen("card_arrival", "card_arrivals", 1)).unwrap();
    let models = tmp.path().join("models");
    let err = refused_start(&data, &["--models", models.to_str().unwrap()], &[]);
    assert!(
        err.contains("labels.json") && err.contains("does not match the model card"),
        "{err}"
    );

    // A variant the shipped model does not have.
    let err = refused_start(&data, &[], &[("CASEGRAPH_INFERENCE__VARIANT", "fp32")]);
    assert!(err.contains("int8"), "{err}");
}

/// Each thread of process `pid` by name, with its nice value (`/proc/PID/task/TID/stat`).
fn thread_nice(pid: u32) -> Vec<(String, i32)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?.path();
            let name = std::fs::read_to_string(t.join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.join("stat")).ok()?;
            // the fields after the parenthesised name: state is field 3, nice field 19
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            Some((name.trim().to_string(), fields[16].parse().ok()?))
        })
        .collect()
}

#[test]
fn with_a_background_nice_cases_and_the_model_run_below_intake_and_still_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (mut child, base) = serve_with(&data, &[("CASEGRAPH_RUNTIME__BACKGROUND_NICE", "7")]);
    wait_ready(&base);
    let threads = thread_nice(child.id());
    let of = |prefix: &str| {
        threads
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect::<Vec<_>>()
    };
    let (workers, model, http) = (of("case-worker-"), of("inference-"), of("http"));
    assert!(
        !workers.is_empty() && !model.is_empty() && !http.is_empty(),
        "{threads:?}"
    );
    assert!(workers.iter().chain(&model).all(|n| *n == 7), "{threads:?}");
    assert!(
        http.iter().all(|n| *n == 0),
        "intake keeps its priority: {threads:?}"
    );
    // the lowered workers still run cases to their end
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let body = json!({"channel": "chat", "language": "en", "text": "I was charged twice, please refund €20",
        "metadata": {"intent": "request_refund", "confidence": 0.9}});
    let mut r = agent()
        .post(&format!("{base}/v1/requests"))
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let id = accepted["case_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, case) = get(&base, &format!("/v1/cases/{id}"), token.trim());
        if ["completed", "waiting", "escalated", "failed"]
            .contains(&case["status"].as_str().unwrap_or(""))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the case never ran: {case}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sigterm(&mut child).success());
}
