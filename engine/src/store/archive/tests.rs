//! Archives on a real redb store: the round trip, a crash between the file and the
//! removal, and hostile files refused with the file and line named.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::store::{Options, PersonalRecord};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("time")
}

/// A case of `customer` finished at `second`, with personal data and two audit records.
fn finished(store: &Store, id: &str, customer: &str, second: i64) {
    let pseudonym = store.pseudonym(customer);
    let case: CaseRecord = serde_json::from_value(json!({
        "id": id, "status": "completed", "channel": "email", "language": "en",
        "customer": pseudonym, "request_digest": "ab", "classification": null,
        "route": null, "workflow": null, "state": null, "queue_task": null,
        "pending": null, "accepted_at": at(second), "updated_at": at(second),
        "submitted_by": "submitter", "reply_to": null,
    }))
    .expect("case");
    let mut batch = Batch::new();
    batch
        .put(Table::Cases, id, &case)
        .put(
            Table::Personal,
            id,
            &PersonalRecord {
                request: json!({ "text": format!("I am {customer}") }),
                data: json!({ "customer_id": customer }),
                reply_text: Some("Dear customer".into()),
                error: None,
                messages: Vec::new(),
            },
        )
        .put_raw(Table::CustomerCases, key(&[&pseudonym, id]), Vec::new())
        .put(
            Table::Idempotency,
            format!("{customer}-{id}"),
            &IdempotencyEntry {
                case_id: id.into(),
                request_digest: "ab".into(),
            },
        )
        .audit(audit::Entry::new(
            id,
            audit::Kind::Accepted,
            at(second),
            json!({}),
        ))
        .audit(audit::Entry::new(
            id,
            audit::Kind::Outcome,
            at(second),
            json!({ "status": "completed" }),
        ));
    store.commit(batch).expect("commit");
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &Options::default()).expect("store")
}

fn live(store: &Store, id: &str) -> bool {
    store
        .backend()
        .get(Table::Cases, id.as_bytes())
        .expect("get")
        .is_some()
}

#[test]
fn a_cut_archives_old_cases_keeps_new_ones_and_the_history_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for i in 0..5 {
        finished(&store, &format!("old-{i}"), "C-1", 100 + i);
    }
    finished(&store, "new-0", "C-2", 1000);
    let first = out.path().join("a1.jsonl.zst");
    let done = archive(&store, &Cutoffs::all_before(at(500)), &first, 100, at(2000))
        .expect("archive")
        .expect("cases taken");
    assert_eq!((done.cases, done.removed, done.audit_records), (5, 5, 12));
    assert_eq!(done.anchor.seq, 12);
    assert!(!live(&store, "old-0") && live(&store, "new-0"));
    // The live chain verifies from the anchor; the kept case's early records are checked
    // on their own.
    let v = store.audit_verify().expect("read").expect("intact");
    assert_eq!(v.records, 12);
    // More work, a second cut: the two files and the live store are one chain.
    finished(&store, "later-0", "C-1", 3000);
    let second = out.path().join("a2.jsonl.zst");
    let done = archive(
        &store,
        &Cutoffs::all_before(at(1500)),
        &second,
        100,
        at(4000),
    )
    .expect("archive")
    .expect("cases taken");
    assert_eq!((done.cases, done.removed), (1, 1));
    let whole = verify(&store, &[second.clone(), first.clone()]).expect("history");
    assert_eq!(whole.records, 14);
    // Without the first file, records 1..=12 are in no archive given.
    let err = verify(&store, std::slice::from_ref(&second)).expect_err("gap");
    assert!(err.to_string().contains("1..=12"), "{err}");
    // The incremental verification behind the case audit route starts at the anchor.
    assert!(store.audit_verify_incremental().expect("read").is_ok());
}

/// The state a crash between the file and the removal leaves: the file whole, the store as
/// before. Running the cut again with the same file finishes it; with a new file, the copy
/// is a duplicate the history check accepts.
#[test]
fn a_cut_interrupted_after_the_file_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for i in 0..4 {
            finished(&store, &format!("c-{i}"), "C-1", 100 + i);
        }
    }
    for entry in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
    }
    let file = out.path().join("a.jsonl.zst");
    {
        let store = open(dir.path());
        archive(&store, &Cutoffs::all_before(at(500)), &file, 100, at(600))
            .expect("archive")
            .expect("cases taken");
    }
    // `copy` is the store as it was when `file` was complete and nothing was deleted.
    let store = open(copy.path());
    assert!(live(&store, "c-0"));
    let again = archive(&store, &Cutoffs::all_before(at(500)), &file, 100, at(700))
        .expect("finish")
        .expect("resumed");
    assert!(again.resumed);
    assert_eq!(again.removed, 4);
    assert!(!live(&store, "c-3"));
    verify(&store, std::slice::from_ref(&file)).expect("history");
    // The same again removes nothing more and changes nothing.
    let once_more = archive(&store, &Cutoffs::all_before(at(500)), &file, 100, at(800))
        .expect("idempotent")
        .expect("resumed");
    assert_eq!(once_more.removed, 0);
    verify(&store, &[file]).expect("history");
}

#[test]
fn erasure_reaches_into_an_archive_and_the_history_still_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    finished(&store, "anna", "C-ANNA-1985", 100);
    finished(&store, "bert", "C-BERT-1970", 101);
    let file = out.path().join("a.jsonl.zst");
    archive(&store, &Cutoffs::all_before(at(500)), &file, 100, at(600))
        .expect("archive")
        .expect("cases taken");
    assert!(text(&file).contains("C-ANNA-1985"));
    let erased = crate::runner::erase_archived(
        &store,
        "C-ANNA-1985",
        "dpo",
        std::slice::from_ref(&file),
        at(700),
    )
    .expect("erase");
    assert_eq!(erased[0].1, ["anna"]);
    let after = text(&file);
    assert!(!after.contains("C-ANNA-1985"), "{after}");
    assert!(after.contains("C-BERT-1970"));
    assert!(!out.path().join("a.jsonl.zst.rewriting").exists());
    verify(&store, &[file]).expect("history after erasure");
}

/// The decompressed text of an archive.
fn text(path: &Path) -> String {
    let mut s = String::new();
    zstd::Decoder::new(std::fs::File::open(path).expect("open"))
        .expect("zstd")
        .read_to_string(&mut s)
        .expect("read");
    s
}

/// Writes `text` as a zstd file at `path`.
fn write(path: &Path, text: &[u8]) {
    let mut e = zstd::Encoder::new(std::fs::File::create(path).expect("create"), 3).expect("zstd");
    e.write_all(text).expect("write");
    e.finish().expect("finish");
}

/// A store with one archived case and the archive's path.
fn archived() -> (tempfile::TempDir, Store, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    finished(&store, "c-1", "C-1", 100);
    finished(&store, "c-2", "C-1", 100);
    let file = dir.path().join("a.jsonl.zst");
    archive(&store, &Cutoffs::all_before(at(500)), &file, 100, at(600))
        .expect("archive")
        .expect("cases taken");
    (dir, store, file)
}

fn refused(store: &Store, file: &Path) -> String {
    let err = verify(store, &[file.to_path_buf()]).expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    msg
}

#[test]
fn a_truncated_archive_is_refused() {
    let (_dir, store, file) = archived();
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("write");
    let msg = refused(&store, &file);
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn an_archive_cut_at_a_line_end_is_refused_for_its_missing_manifest() {
    let (_dir, store, file) = archived();
    let t = text(&file);
    let lines: Vec<&str> = t.lines().collect();
    write(
        &file,
        format!("{}\n", lines[..lines.len() - 1].join("\n")).as_bytes(),
    );
    let msg = refused(&store, &file);
    assert!(msg.contains("without its manifest"), "{msg}");
}

#[test]
fn an_edited_line_is_refused_by_the_manifest_hash() {
    let (_dir, store, file) = archived();
    let t = text(&file).replace("Dear customer", "Dear custardy");
    write(&file, t.as_bytes());
    let msg = refused(&store, &file);
    assert!(
        msg.contains("line 8") && msg.contains("manifest does not match"),
        "{msg}"
    );
}

#[test]
fn a_wrong_manifest_is_refused() {
    let (_dir, store, file) = archived();
    let t = text(&file);
    let t = t.replace("\"cases\":2", "\"cases\":1");
    write(&file, t.as_bytes());
    let msg = refused(&store, &file);
    assert!(msg.contains("manifest does not match"), "{msg}");
}

#[test]
fn an_altered_audit_record_is_refused_at_its_line() {
    let (_dir, store, file) = archived();
    let t = text(&file).replace("\"status\":\"completed\"}", "\"status\":\"failed\"}");
    write(&file, t.as_bytes());
    let msg = refused(&store, &file);
    assert!(msg.contains("altered"), "{msg}");
}

#[test]
fn a_huge_line_is_refused_before_it_is_held() {
    let (_dir, store, file) = archived();
    let t = text(&file);
    let first = t.lines().next().expect("header");
    let huge = format!(
        "{first}\n{{\"line\":\"case\",\"x\":\"{}\"}}\n",
        "a".repeat(file::MAX_LINE + 10)
    );
    write(&file, huge.as_bytes());
    let msg = refused(&store, &file);
    assert!(
        msg.contains("line 2") && msg.contains("longer than"),
        "{msg}"
    );
}

#[test]
fn garbage_and_another_boxs_archive_are_refused() {
    let (_dir, store, file) = archived();
    std::fs::write(&file, b"not zstd at all").expect("write");
    refused(&store, &file);
    let (_other_dir, _other, other_file) = archived();
    let msg = refused(&store, &other_file);
    assert!(
        msg.contains("another box") || msg.contains("archive of box"),
        "{msg}"
    );
}

/// A cut that takes every case leaves no audit record live: the chain goes on from the
/// anchor after a restart, not from the genesis.
#[test]
fn after_a_cut_that_took_everything_the_chain_goes_on_from_the_anchor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.jsonl.zst");
    {
        let store = open(dir.path());
        finished(&store, "c-1", "C-1", 100);
        archive(&store, &Cutoffs::all_before(at(500)), &file, 100, at(600))
            .expect("archive")
            .expect("cases taken");
    }
    let store = open(dir.path());
    finished(&store, "c-2", "C-1", 700);
    let v = store.audit_verify().expect("read").expect("intact");
    assert_eq!((v.records, v.checked), (4, 2));
    verify(&store, &[file]).expect("history");
}

/// Erasure reads an archive whole before it writes anything from it: a damaged file is
/// refused by name and left as it was, not rewritten into a "valid" one.
#[test]
fn erasure_refuses_a_damaged_archive_and_leaves_it_alone() {
    let (_dir, store, file) = archived();
    let t = text(&file).replace("Dear customer", "Dear custardy");
    write(&file, t.as_bytes());
    let before = std::fs::read(&file).expect("read");
    let err =
        crate::runner::erase_archived(&store, "C-1", "dpo", std::slice::from_ref(&file), at(700))
            .expect_err("refused");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).expect("read"), before);
}
