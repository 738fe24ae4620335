//! One conformance suite for the storage trait, run against every backend, plus the group
//! commit, the audit chain and (redb) power loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use casegraph_engine::audit::{self, Entry, Kind};
use casegraph_engine::store::{
    self, Backend, Batch, Op, Options, PowerLossDisk, RedbBackend, SledBackend, Store, Table,
};
use jiff::Timestamp;
use serde_json::json;

fn put(table: Table, k: &str, v: &str) -> Op {
    Op {
        table,
        key: k.as_bytes().to_vec(),
        value: Some(v.as_bytes().to_vec()),
    }
}

fn del(table: Table, k: &str) -> Op {
    Op {
        table,
        key: k.as_bytes().to_vec(),
        value: None,
    }
}

fn opts(kind: store::Kind) -> Options {
    Options {
        backend: kind,
        ..Options::default()
    }
}

fn open(kind: store::Kind, dir: &Path) -> Arc<dyn Backend> {
    store::open_backend(dir, &opts(kind)).unwrap()
}

fn entry(case: &str, n: u64) -> Entry {
    Entry::new(case, Kind::Step, Timestamp::UNIX_EPOCH, json!({ "n": n }))
}

fn puts_gets_and_deletes(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(kind, dir.path());
    assert_eq!(b.get(Table::Cases, b"a").unwrap(), None);
    b.write(&[vec![
        put(Table::Cases, "a", "1"),
        put(Table::Tasks, "a", "2"),
    ]])
    .unwrap();
    assert_eq!(b.get(Table::Cases, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(b.get(Table::Tasks, b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(
        b.get(Table::Timers, b"a").unwrap(),
        None,
        "tables are apart"
    );
    b.write(&[
        vec![put(Table::Cases, "a", "3")],
        vec![del(Table::Tasks, "a")],
    ])
    .unwrap();
    assert_eq!(b.get(Table::Cases, b"a").unwrap(), Some(b"3".to_vec()));
    assert_eq!(b.get(Table::Tasks, b"a").unwrap(), None);
}

fn every_table_is_kept_apart_and_reopens(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(kind, dir.path());
        let ops: Vec<Op> = Table::ALL.iter().map(|t| put(*t, "k", t.name())).collect();
        b.write(&[ops]).unwrap();
    }
    let b = open(kind, dir.path());
    for t in Table::ALL {
        assert_eq!(
            b.get(t, b"k").unwrap(),
            Some(t.name().as_bytes().to_vec()),
            "{t:?}"
        );
    }
    b.write(&[vec![del(Table::Notifications, "k")]]).unwrap();
    assert_eq!(b.get(Table::Notifications, b"k").unwrap(), None);
    assert!(b.get(Table::Cases, b"k").unwrap().is_some());
}

fn later_ops_in_a_write_win(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(kind, dir.path());
    b.write(&[
        vec![put(Table::Cases, "k", "first")],
        vec![put(Table::Cases, "k", "second"), del(Table::Cases, "gone")],
        vec![put(Table::Cases, "gone", "back")],
    ])
    .unwrap();
    assert_eq!(b.get(Table::Cases, b"k").unwrap(), Some(b"second".to_vec()));
    assert_eq!(
        b.get(Table::Cases, b"gone").unwrap(),
        Some(b"back".to_vec())
    );
}

fn ranges_are_ordered_bounded_and_limited(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(kind, dir.path());
    let ops: Vec<Op> = ["b", "a", "c", "ab", "d"]
        .iter()
        .map(|k| put(Table::Timers, k, k))
        .collect();
    b.write(&[ops]).unwrap();
    let keys = |r: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
        r.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    };
    assert_eq!(
        keys(b.range(Table::Timers, b"", None, usize::MAX).unwrap()),
        ["a", "ab", "b", "c", "d"]
    );
    assert_eq!(
        keys(
            b.range(Table::Timers, b"ab", Some(b"c"), usize::MAX)
                .unwrap()
        ),
        ["ab", "b"]
    );
    assert_eq!(
        keys(b.range(Table::Timers, b"b", None, 2).unwrap()),
        ["b", "c"]
    );
    assert_eq!(b.last(Table::Timers).unwrap().unwrap().0, b"d".to_vec());
    assert_eq!(b.last(Table::Outbox).unwrap(), None);
    // Backwards: greatest key first, same bounds, the limit taken from the top.
    assert_eq!(
        keys(b.range_back(Table::Timers, b"", None, usize::MAX).unwrap()),
        ["d", "c", "b", "ab", "a"]
    );
    assert_eq!(
        keys(
            b.range_back(Table::Timers, b"ab", Some(b"c"), usize::MAX)
                .unwrap()
        ),
        ["b", "ab"]
    );
    assert_eq!(
        keys(b.range_back(Table::Timers, b"", Some(b"c"), 2).unwrap()),
        ["b", "ab"]
    );
    assert!(
        b.range_back(Table::Outbox, b"", None, 5)
            .unwrap()
            .is_empty()
    );
}

fn data_survives_reopening(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(kind, dir.path());
        b.write(&[vec![put(Table::Cases, "kept", "yes")]]).unwrap();
    }
    let b = open(kind, dir.path());
    assert_eq!(b.get(Table::Cases, b"kept").unwrap(), Some(b"yes".to_vec()));
    assert!(b.disk_bytes() > 0);
}

fn concurrent_commits_share_syncs_and_chain_in_order(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &opts(kind)).unwrap();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let mut batch = Batch::new();
                    batch
                        .put_raw(Table::Cases, format!("c{t}-{i}"), b"x".to_vec())
                        .audit(entry(&format!("c{t}-{i}"), i));
                    store.commit(batch).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.commits, 400);
    assert_eq!(stats.audit_records, 400);
    assert!(
        stats.syncs < stats.commits,
        "16 committers should share syncs: {stats:?}"
    );
    let verified = store.audit_verify().unwrap().unwrap();
    assert_eq!(verified.records, 400);
    for t in 0..16 {
        for i in 0..25 {
            assert!(
                store
                    .backend()
                    .get(Table::Cases, format!("c{t}-{i}").as_bytes())
                    .unwrap()
                    .is_some()
            );
        }
    }
}

fn the_chain_continues_after_reopening(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &opts(kind)).unwrap();
        let mut batch = Batch::new();
        batch.audit(entry("a", 1)).audit(entry("b", 2));
        store.commit(batch).unwrap();
    }
    let store = Store::open(dir.path(), &opts(kind)).unwrap();
    let mut batch = Batch::new();
    batch.audit(entry("a", 3));
    store.commit(batch).unwrap();
    assert_eq!(store.audit_verify().unwrap().unwrap().records, 3);
}

fn a_tampered_record_is_named(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &opts(kind)).unwrap();
    for i in 0..5 {
        let mut batch = Batch::new();
        batch.audit(entry("a", i));
        store.commit(batch).unwrap();
    }
    let key = 3u64.to_be_bytes();
    let bytes = store.backend().get(Table::Audit, &key).unwrap().unwrap();
    let changed = String::from_utf8(bytes)
        .unwrap()
        .replace("\"n\":2", "\"n\":9");
    store
        .backend()
        .write(&[vec![Op {
            table: Table::Audit,
            key: key.to_vec(),
            value: Some(changed.into_bytes()),
        }]])
        .unwrap();
    assert_eq!(
        store.audit_verify().unwrap(),
        Err(audit::Problem::Altered { seq: 3 })
    );
}

fn pseudonyms_are_stable_per_box(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), &opts(kind))
        .unwrap()
        .pseudonym("CUST-1");
    let again = Store::open(dir.path(), &opts(kind))
        .unwrap()
        .pseudonym("CUST-1");
    assert_eq!(first, again);
    assert!(!first.contains("CUST-1"));
    let other_box = tempfile::tempdir().unwrap();
    let elsewhere = Store::open(other_box.path(), &opts(kind))
        .unwrap()
        .pseudonym("CUST-1");
    assert_ne!(first, elsewhere, "pseudonyms are salted per box");
}

fn append(store: &Store, from: u64, n: u64) {
    for i in from..from + n {
        let mut batch = Batch::new();
        batch.audit(entry("a", i));
        store.commit(batch).unwrap();
    }
}

fn tamper(store: &Store, seq: u64) {
    let key = seq.to_be_bytes();
    let bytes = store.backend().get(Table::Audit, &key).unwrap().unwrap();
    let changed = String::from_utf8(bytes)
        .unwrap()
        .replace(&format!("\"n\":{}", seq - 1), "\"n\":999");
    store
        .backend()
        .write(&[vec![Op {
            table: Table::Audit,
            key: key.to_vec(),
            value: Some(changed.into_bytes()),
        }]])
        .unwrap();
}

fn incremental_verification_checks_only_the_tail(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &opts(kind)).unwrap();
    append(&store, 0, 5);
    let v = store.audit_verify_incremental().unwrap().unwrap();
    assert_eq!((v.records, v.checked), (5, 5));
    let v = store.audit_verify_incremental().unwrap().unwrap();
    assert_eq!(
        (v.records, v.checked),
        (5, 0),
        "nothing new, nothing checked"
    );
    append(&store, 5, 3);
    let v = store.audit_verify_incremental().unwrap().unwrap();
    assert_eq!((v.records, v.checked), (8, 3));
    assert_eq!(v, {
        let full = store.audit_verify().unwrap().unwrap();
        audit::Verified { checked: 3, ..full }
    });
    // The mark survives a restart.
    drop(store);
    let store = Store::open(dir.path(), &opts(kind)).unwrap();
    append(&store, 8, 2);
    let v = store.audit_verify_incremental().unwrap().unwrap();
    assert_eq!((v.records, v.checked), (10, 2));
    // A record changed after the mark: the next incremental verification names it.
    append(&store, 10, 3);
    tamper(&store, 12);
    assert_eq!(
        store.audit_verify_incremental().unwrap(),
        Err(audit::Problem::Altered { seq: 12 })
    );
}

fn records_before_the_mark_are_left_to_the_full_verification(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &opts(kind)).unwrap();
    append(&store, 0, 6);
    store.audit_verify_incremental().unwrap().unwrap();
    tamper(&store, 3);
    assert_eq!(
        store.audit_verify().unwrap(),
        Err(audit::Problem::Altered { seq: 3 }),
        "the full verification ignores the mark"
    );
    // The marked record itself is checked every time.
    tamper(&store, 6);
    assert_eq!(
        store.audit_verify_incremental().unwrap(),
        Err(audit::Problem::Unverified { seq: 6 })
    );
}

/// The fleet relay's cursor: 0 on a fresh store, durable across reopening, and a write of
/// its own that adds nothing to the audit chain (relaying never changes what it relays).
fn the_relay_cursor_survives_and_stays_out_of_the_chain(kind: store::Kind) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &opts(kind)).unwrap();
        assert_eq!(
            store.relay_cursor().get().unwrap(),
            0,
            "nothing relayed yet"
        );
        assert_eq!(store.audit_head().unwrap(), audit::Head::genesis());
        append(&store, 0, 5);
        let before = store.stats();
        store.relay_cursor().set(3).unwrap();
        let after = store.stats();
        assert_eq!(
            after.commits,
            before.commits + 1,
            "one small commit of its own"
        );
        assert_eq!(after.audit_records, before.audit_records, "no audit record");
        assert_eq!(store.relay_cursor().get().unwrap(), 3);
    }
    let store = Store::open(dir.path(), &opts(kind)).unwrap();
    assert_eq!(store.relay_cursor().get().unwrap(), 3, "durable");
    let head = store.audit_head().unwrap();
    assert_eq!(head.seq, 5);
    assert_eq!(store.audit_verify().unwrap().unwrap().head, head.hash);
    let after: Vec<u64> = store
        .audit_records_after(3)
        .map(|(_, v)| serde_json::from_slice::<audit::Record>(&v).unwrap().seq)
        .collect();
    assert_eq!(after, [4, 5], "what is left to relay");
}

macro_rules! conformance {
    ($($backend:ident => $kind:expr),*) => {
        $(mod $backend {
            use super::*;
            #[test] fn puts_gets_and_deletes() { super::puts_gets_and_deletes($kind) }
            #[test] fn every_table_is_kept_apart_and_reopens() { super::every_table_is_kept_apart_and_reopens($kind) }
            #[test] fn later_ops_in_a_write_win() { super::later_ops_in_a_write_win($kind) }
            #[test] fn ranges_are_ordered_bounded_and_limited() { super::ranges_are_ordered_bounded_and_limited($kind) }
            #[test] fn data_survives_reopening() { super::data_survives_reopening($kind) }
            #[test] fn concurrent_commits_share_syncs_and_chain_in_order() { super::concurrent_commits_share_syncs_and_chain_in_order($kind) }
            #[test] fn the_chain_continues_after_reopening() { super::the_chain_continues_after_reopening($kind) }
            #[test] fn a_tampered_record_is_named() { super::a_tampered_record_is_named($kind) }
            #[test] fn pseudonyms_are_stable_per_box() { super::pseudonyms_are_stable_per_box($kind) }
            #[test] fn incremental_verification_checks_only_the_tail() { super::incremental_verification_checks_only_the_tail($kind) }
            #[test] fn records_before_the_mark_are_left_to_the_full_verification() { super::records_before_the_mark_are_left_to_the_full_verification($kind) }
            #[test] fn the_relay_cursor_survives_and_stays_out_of_the_chain() { super::the_relay_cursor_survives_and_stays_out_of_the_chain($kind) }
        })*
    };
}

conformance!(redb => store::Kind::Redb, sled => store::Kind::Sled);

#[test]
fn a_store_opens_the_backend_its_directory_holds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), &opts(store::Kind::Sled)).unwrap();
        s.backend()
            .write(&[vec![put(Table::Cases, "x", "1")]])
            .unwrap();
    }
    let s = Store::open(dir.path(), &opts(store::Kind::Redb)).unwrap();
    assert_eq!(s.backend().name(), "sled");
    assert!(s.backend().get(Table::Cases, b"x").unwrap().is_some());
}

#[test]
fn redb_keeps_every_acknowledged_commit_through_power_loss() {
    let disk = PowerLossDisk::new();
    let options = Options::default();
    let store = Store::with_backend(
        Arc::new(RedbBackend::with_storage(disk.clone(), &options).unwrap()),
        64,
    )
    .unwrap();
    let acknowledged: Vec<String> = (0..50)
        .map(|i| {
            let id = format!("case-{i}");
            let mut batch = Batch::new();
            batch
                .put_raw(Table::Cases, id.clone(), b"accepted".to_vec())
                .audit(entry(&id, i));
            store.commit(batch).unwrap();
            id
        })
        .collect();
    // Power goes: everything not synced is gone. Keep the store alive so nothing is
    // flushed on close.
    let after = disk.power_loss();
    std::mem::forget(store);
    let reopened = Store::with_backend(
        Arc::new(RedbBackend::with_storage(after, &options).unwrap()),
        64,
    )
    .unwrap();
    for id in &acknowledged {
        assert!(
            reopened
                .backend()
                .get(Table::Cases, id.as_bytes())
                .unwrap()
                .is_some(),
            "{id} was acknowledged and lost"
        );
    }
    assert_eq!(reopened.audit_verify().unwrap().unwrap().records, 50);
}

#[test]
fn redb_loses_only_unacknowledged_writes_at_any_power_cut() {
    // Cut the power after every number of syncs and check that what is there is a prefix of
    // the acknowledged commits, never a torn one.
    for cut in 1..12 {
        let disk = PowerLossDisk::new();
        let options = Options::default();
        let backend = RedbBackend::with_storage(disk.clone(), &options).unwrap();
        let base = disk.syncs();
        let mut acked = 0;
        for i in 0..20 {
            if disk.syncs() >= base + cut {
                break;
            }
            backend
                .write(&[vec![
                    put(Table::Cases, &format!("c{i:02}"), "1"),
                    put(Table::Tasks, &format!("c{i:02}"), "1"),
                ]])
                .unwrap();
            acked = i + 1;
        }
        let after = disk.power_loss();
        std::mem::forget(backend);
        let b = RedbBackend::with_storage(after, &options).unwrap();
        let cases = b.range(Table::Cases, b"", None, usize::MAX).unwrap();
        let tasks = b.range(Table::Tasks, b"", None, usize::MAX).unwrap();
        assert_eq!(cases.len(), acked, "cut after {cut} syncs");
        assert_eq!(tasks.len(), cases.len(), "a write is all or nothing");
    }
}

#[test]
fn sled_is_opened_with_the_configured_cache() {
    let dir = tempfile::tempdir().unwrap();
    let b = SledBackend::open(
        &dir.path().join("s"),
        &Options {
            cache_mib: 4,
            ..opts(store::Kind::Sled)
        },
    )
    .unwrap();
    b.write(&[vec![put(Table::Cases, "a", "1")]]).unwrap();
    assert_eq!(b.name(), "sled");
}
