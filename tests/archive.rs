//! Retention end to end, as an operator runs it: real cases through the real server, then
//! `casegraph archive`, `audit verify [--archive]`, `erase --archive` and `compact` as
//! processes on the data directory; and the archive process killed between writing its
//! file and removing the cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use casegraph::auth::Role;
use casegraph_engine::audit;
use casegraph_engine::store::archive::{Line, file};
use casegraph_engine::store::{Batch, CaseRecord, Options, Store, Table};
use serde_json::{Value, json};
use support::{Server, casegraph};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn refund(customer: &str, name: &str) -> Value {
    json!({
        "channel": "letter",
        "language": "de",
        "customer_id": customer,
        "text": format!("Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung über 42,50 €. Bitte überweisen Sie das Geld zurück auf DE89 3704 0044 0532 0130 00.\nMit freundlichen Grüßen\n{name}"),
    })
}

/// A server on `dir`, which outlives it; the fresh tokens of this start are copied in.
fn serve_in(dir: &Path) -> Server {
    let dir = dir.to_path_buf();
    Server::start_with(move |c| {
        std::fs::copy(c.data_dir.join("tokens.json"), dir.join("tokens.json")).unwrap();
        c.data_dir = dir;
    })
}

fn is_final(c: &Value) -> bool {
    ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
}

fn archive(data: &Path, output: &Path) -> Output {
    let before = jiff::Timestamp::now().to_string();
    casegraph(&[
        "archive",
        "--data",
        data.to_str().unwrap(),
        "--before",
        &before,
        "--output",
        output.to_str().unwrap(),
    ])
}

fn verify(data: &Path, archives: &[&Path]) -> Output {
    let mut args = vec!["audit", "verify", "--data", data.to_str().unwrap()];
    if !archives.is_empty() {
        args.push("--archive");
        args.extend(archives.iter().map(|p| p.to_str().unwrap()));
    }
    casegraph(&args)
}

/// The decompressed lines of an archive, checked whole by the reader.
fn lines(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    file::read(path, |_, line| {
        out.push(serde_json::to_string(line).unwrap());
        Ok(())
    })
    .unwrap();
    out
}

fn archived_ids(path: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    file::read(path, |_, line| {
        if let Line::Case(c) = line {
            ids.push(c.case.id.clone());
        }
        Ok(())
    })
    .unwrap();
    ids
}

#[test]
fn archived_cases_leave_the_live_store_and_the_whole_history_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (done, waiting) = {
        let s = serve_in(data);
        let done: Vec<String> = (0..3)
            .map(|i| s.submit(&refund(&format!("C-100{i}"), "Erika Mustermann")))
            .collect();
        let waiting = s.submit(
            &json!({"channel": "chat", "text": "Wie wird das Wetter am Wochenende in Hamburg?"}),
        );
        for id in &done {
            s.wait_case(id, is_final);
        }
        s.wait_case(&waiting, |c| c["status"] == "waiting");
        (done, waiting)
    };
    let first = out.path().join("a1.jsonl.zst");
    let o = archive(data, &first);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 case(s)"), "{}", text(&o));
    let mut ids = archived_ids(&first);
    ids.sort();
    let mut expected = done.clone();
    expected.sort();
    assert_eq!(ids, expected);
    // The file holds the cases whole: the request, for as long as retention keeps it.
    assert!(lines(&first).iter().any(|l| l.contains("Erika Mustermann")));
    // The live chain verifies from its anchor; the whole history through the file.
    let o = verify(data, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("are in archives"), "{}", text(&o));
    let o = verify(data, &[&first]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("audit history intact"), "{}", text(&o));
    // Running it again finds nothing new to take and writes no file.
    let again = out.path().join("a-again.jsonl.zst");
    let o = archive(data, &again);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nothing archived"), "{}", text(&o));
    assert!(!again.exists());

    // The server starts on the cut store: archived cases are gone, the waiting one is
    // there with its audit trail (verified from the anchor), and new work chains on.
    let second = out.path().join("a2.jsonl.zst");
    {
        let s = serve_in(data);
        let gone = s.call(
            "GET",
            &format!("/v1/cases/{}", done[0]),
            Some(Role::Admin),
            None,
        );
        assert_eq!(gone.status, 404, "{}", gone.text);
        let trail = s.call(
            "GET",
            &format!("/v1/cases/{waiting}/audit"),
            Some(Role::Admin),
            None,
        );
        assert_eq!(trail.status, 200, "{}", trail.text);
        let id = s.submit(&refund("C-2000", "Max Mustermann"));
        s.wait_case(&id, is_final);
    }
    let o = archive(data, &second);
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(data, &[&second, &first]);
    assert!(o.status.success(), "{}", text(&o));
    // Without the first file, the history has a gap, and the answer says so.
    let o = verify(data, &[&second]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("an archive is missing") || text(&o).contains("in none of the archives"),
        "{}",
        text(&o)
    );
    // A damaged file is refused by name.
    let damaged = out.path().join("damaged.jsonl.zst");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() - 20]).unwrap();
    let o = verify(data, &[&damaged, &second]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("damaged.jsonl.zst"), "{}", text(&o));

    // Compaction gives back what the removed cases held, and keeps everything live.
    let o = casegraph(&["compact", "--data", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("store compacted"), "{}", text(&o));
    let o = verify(data, &[&first, &second]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn erasure_reaches_the_customer_in_an_archive() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = dir.path();
    {
        let s = serve_in(data);
        for (customer, name) in [
            ("C-7700123", "Wilhelmine Zaunkoenig"),
            ("C-5550123", "Bartholomaeus Krummbein"),
        ] {
            let id = s.submit(&refund(customer, name));
            s.wait_case(&id, is_final);
        }
    }
    let file = out.path().join("a.jsonl.zst");
    let o = archive(data, &file);
    assert!(o.status.success(), "{}", text(&o));
    let before = lines(&file).join("\n");
    assert!(before.contains("Wilhelmine Zaunkoenig") && before.contains("C-7700123"));
    let o = casegraph(&[
        "erase",
        "--customer",
        "C-7700123",
        "--data",
        data.to_str().unwrap(),
        "--archive",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 case(s) erased"), "{}", text(&o));
    let after = lines(&file).join("\n");
    assert!(!after.contains("Wilhelmine Zaunkoenig"), "{after}");
    assert!(!after.contains("C-7700123"), "{after}");
    assert!(after.contains("Bartholomaeus Krummbein"));
    // Nothing of the old file is left beside it, and the raw bytes do not hold the name.
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let o = verify(data, &[&file]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `n` finished cases written straight into a store in `dir`, each with two audit records.
fn populate(dir: &Path, n: usize) -> Vec<String> {
    let store = Store::open(dir, &Options::default()).unwrap();
    let at = jiff::Timestamp::from_second(1_000_000).unwrap();
    let mut ids = Vec::new();
    for chunk in 0..n.div_ceil(100) {
        let mut batch = Batch::new();
        for i in chunk * 100..((chunk + 1) * 100).min(n) {
            let id = format!("case-{i:05}");
            let case: CaseRecord = serde_json::from_value(json!({
                "id": id, "status": "completed", "channel": "email", "language": "en",
                "customer": null, "request_digest": "ab", "classification": null,
                "route": null, "workflow": null, "state": null, "queue_task": null,
                "pending": null, "accepted_at": at, "updated_at": at,
                "submitted_by": null, "reply_to": null,
            }))
            .unwrap();
            batch
                .put(Table::Cases, id.as_bytes(), &case)
                .put(
                    Table::Personal,
                    id.as_bytes(),
                    &json!({"request": {"text": "x".repeat(500)}, "data": {}, "reply_text": null}),
                )
                .audit(audit::Entry::new(&id, audit::Kind::Accepted, at, json!({})))
                .audit(audit::Entry::new(
                    &id,
                    audit::Kind::Outcome,
                    at,
                    json!({"status": "completed"}),
                ));
            ids.push(id);
        }
        store.commit(batch).unwrap();
    }
    ids
}

fn live_ids(dir: &Path) -> Vec<String> {
    let store = Store::open(dir, &Options::default()).unwrap();
    store
        .backend()
        .range(Table::Cases, b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

/// SIGKILL the archive process as soon as its file is in place: the removal has not
/// started or is under way. Every case is live or archived (or both); running the same
/// command again finishes the removal, and the history verifies.
#[test]
fn a_kill_between_the_archive_file_and_the_removal_loses_nothing() {
    let mut landed_between = false;
    for attempt in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let data = dir.path();
        let ids = populate(data, 3000);
        let file: PathBuf = out.path().join("a.jsonl.zst");
        let before = "2000-01-01";
        let args = [
            "archive",
            "--data",
            data.to_str().unwrap(),
            "--before",
            before,
            "--output",
            file.to_str().unwrap(),
        ];
        let mut child = Command::new(env!("CARGO_BIN_EXE_casegraph"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !file.exists() && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the archive was not written");
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            file.exists(),
            "attempt {attempt}: the process ended before its file was in place"
        );
        let live = live_ids(data);
        let archived = archived_ids(&file);
        for id in &ids {
            assert!(
                live.contains(id) || archived.contains(id),
                "attempt {attempt}: {id} is neither live nor archived"
            );
        }
        landed_between |= !live.is_empty();
        // The same command again finishes the interrupted run.
        let o = casegraph(&args);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("finished the interrupted run"),
            "{}",
            text(&o)
        );
        assert!(live_ids(data).is_empty());
        let o = verify(data, &[&file]);
        assert!(o.status.success(), "{}", text(&o));
        if landed_between {
            return;
        }
    }
    panic!("no kill landed before the removal had finished");
}

/// `[retention]` in `serve`: once the store is quiet, finished cases past their age go to
/// a file in the configured directory and leave the live store; the history verifies.
#[test]
fn serve_archives_finished_cases_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let archives = out.path().to_path_buf();
    let id = {
        let d = data.clone();
        let s = Server::start_with(move |c| {
            std::fs::copy(c.data_dir.join("tokens.json"), d.join("tokens.json")).unwrap();
            c.data_dir = d;
            c.retention.enabled = true;
            c.retention.completed = Duration::from_millis(200);
            c.retention.idle_after = Duration::from_millis(500);
            c.retention.directory = Some(archives);
        });
        let id = s.submit(&refund("C-3000", "Erika Mustermann"));
        s.wait_case(&id, is_final);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Admin), None);
            if r.status == 404 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the case was not archived: {}",
                r.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        id
    };
    let files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(archived_ids(&files[0]), [id]);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let o = verify(&data, &refs);
    assert!(o.status.success(), "{}", text(&o));
}

/// After the retention job archived cases, `serve` compacts the store in place: the file
/// shrinks while the server keeps answering. A reader hammering a live case meanwhile gets
/// 200 every time (requests wait the compaction out, never a 500), a writer's requests are
/// accepted, and every accepted case is there afterwards.
#[test]
fn serve_compacts_the_store_after_archiving_while_it_keeps_serving() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    populate(&data, 3000);
    let d = data.clone();
    let archives = out.path().to_path_buf();
    let s = Arc::new(Server::start_with(move |c| {
        std::fs::copy(c.data_dir.join("tokens.json"), d.join("tokens.json")).unwrap();
        c.data_dir = d;
        c.retention.enabled = true;
        c.retention.completed = Duration::from_secs(3600);
        c.retention.idle_after = Duration::from_millis(300);
        c.retention.directory = Some(archives);
    }));
    assert_eq!(s.metric("casegraph_store_compactions_total"), 0.0);
    let live = s.submit(&refund("C-4000", "Erika Mustermann"));
    let stop = Arc::new(AtomicBool::new(false));
    // Reads do not commit, so the store stays idle for the job; each must be answered.
    let reader = {
        let (s, stop, live) = (s.clone(), stop.clone(), live.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let r = s.call("GET", &format!("/v1/cases/{live}"), Some(Role::Admin), None);
                assert_eq!(
                    r.status, 200,
                    "a read during archiving or compaction: {}",
                    r.text
                );
                reads += 1;
            }
            reads
        })
    };
    // Writes now and then, with quiet gaps longer than `idle_after` between them.
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut accepted = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = s.call(
                    "POST",
                    "/v1/requests",
                    Some(Role::Submitter),
                    Some(&refund(&format!("C-41{i:02}"), "Erika Mustermann")),
                );
                assert!(
                    r.status == 202 || (r.status == 503 && r.headers.contains_key("retry-after")),
                    "a request during archiving or compaction: {} {}",
                    r.status,
                    r.text
                );
                if r.status == 202 {
                    accepted.push(r.json["case_id"].as_str().unwrap().to_string());
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(700));
            }
            accepted
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric("casegraph_store_compactions_total") < 1.0 {
        assert!(Instant::now() < deadline, "the store was not compacted");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let accepted = writer.join().unwrap();
    let before = s.metric("casegraph_store_last_compaction_bytes_before");
    let after = s.metric("casegraph_store_last_compaction_bytes_after");
    assert!(
        after > 0.0 && after < before / 2.0,
        "the store file did not shrink: {before} -> {after} bytes"
    );
    assert_eq!(s.metric("casegraph_retention_archived_cases_total"), 3000.0);
    let status = s.call("GET", "/v1/console/status", Some(Role::Admin), None);
    let retention = &status.json["retention"];
    assert_eq!(retention["archived_cases"], 3000, "{}", status.text);
    assert!(retention["last_archive"].is_string(), "{}", status.text);
    assert_eq!(retention["last_compaction"]["bytes_after"], after as u64);
    assert!(
        status.json["store"]["disk_bytes"].as_f64().unwrap() < before / 2.0,
        "{}",
        status.text
    );
    // Nothing acknowledged is lost, and the store takes writes after the compaction.
    for id in accepted.iter().chain([&live]) {
        let r = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Admin), None);
        assert_eq!(r.status, 200, "{id}: {}", r.text);
    }
    let id = s.submit(&refund("C-4200", "Erika Mustermann"));
    s.wait_case(&id, |_| true);
}

#[test]
fn retention_settings_out_of_bounds_are_refused_at_start() {
    for (adjust, field) in [
        (
            (|c: &mut casegraph::config::Config| c.retention.max_cases = 0)
                as fn(&mut casegraph::config::Config),
            "retention.max_cases",
        ),
        (
            |c: &mut casegraph::config::Config| c.retention.failed = Duration::ZERO,
            "retention",
        ),
    ] {
        let mut c = support::config(Path::new("/nonexistent"));
        adjust(&mut c);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

/// The archive command's own limits: no date in the future, no zero or huge batch, no
/// stdout, never overwriting a file that is not an archive of this box.
#[test]
fn archive_refuses_bad_arguments_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    populate(data, 3);
    let out = data.join("x.jsonl.zst");
    let d = data.to_str().unwrap();
    let o = casegraph(&[
        "archive",
        "--data",
        d,
        "--before",
        "2999-01-01",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("in the future"),
        "{}",
        text(&o)
    );
    for n in ["0", "1000001"] {
        let o = casegraph(&[
            "archive",
            "--data",
            d,
            "--before",
            "2000-01-01",
            "--max-cases",
            n,
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{}", text(&o));
    }
    let o = casegraph(&[
        "archive",
        "--data",
        d,
        "--before",
        "yesterday",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("neither a date"),
        "{}",
        text(&o)
    );
    let o = casegraph(&[
        "archive",
        "--data",
        d,
        "--before",
        "2000-01-01",
        "--output",
        "-",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    std::fs::write(&out, b"my notes").unwrap();
    let o = casegraph(&[
        "archive",
        "--data",
        d,
        "--before",
        "2000-01-01",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("x.jsonl.zst"), "{}", text(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"my notes");
    assert_eq!(live_ids(data).len(), 3);
}
