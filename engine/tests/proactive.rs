//! Proactive care on the shipped workflows and a real store: business events start cases
//! that contact only customers who consented, the same event starts nothing twice,
//! schedules fire at their occurrence and catch up exactly once after the box was off, and
//! a triggered workflow that could contact a customer without a consent check does not
//! publish.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use casegraph_engine::classify::{self, Classification};
use casegraph_engine::exec::{CallError, CallRequest, Connector, ManualClock};
use casegraph_engine::intake::Received;
use casegraph_engine::rules::{QuietHours, Rules};
use casegraph_engine::runner::{self, ConsentChange, NewEvent, Parts, Runner};
use casegraph_engine::store::{self, CaseStatus, Store};
use casegraph_engine::workflow::{Catalog, compile_dir};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

/// The CRM: names two customers per birthday occurrence and counts the queries.
#[derive(Default)]
struct Crm {
    queries: AtomicUsize,
    payloads: Mutex<Vec<Value>>,
}

impl Connector for Crm {
    fn call(&self, r: &CallRequest) -> Result<Value, CallError> {
        match (r.connector.as_str(), r.operation.as_str()) {
            ("crm", "birthdays_today") => {
                self.queries.fetch_add(1, Ordering::SeqCst);
                self.payloads.lock().unwrap().push(r.payload.clone());
                Ok(json!({ "subjects": [
                    { "customer_id": "K-2001", "language": "en", "data": { "first_name": "Alex" } },
                    { "customer_id": "K-2002", "language": "de", "data": { "first_name": "Erika" } },
                ]}))
            }
            (c, o) => Err(CallError {
                retryable: false,
                message: format!("no {c}.{o}"),
            }),
        }
    }
}

struct NoModel;

impl classify::Service for NoModel {
    fn classify(&self, _: &Received) -> Result<Classification, classify::Error> {
        Ok(Classification::new(None, 0.0))
    }
}

fn open(dir: &Path, crm: Arc<Crm>, clock: Arc<ManualClock>) -> Runner {
    open_with(dir, crm, clock, None)
}

fn open_with(
    dir: &Path,
    crm: Arc<Crm>,
    clock: Arc<ManualClock>,
    quiet_hours: Option<QuietHours>,
) -> Runner {
    let rules = Arc::new(Rules::default());
    let catalog = Arc::new(Catalog::load(&shipped(), &rules).expect("shipped workflows load"));
    let store = Store::open(dir, &store::Options::default()).unwrap();
    Runner::new(Parts {
        store,
        catalog,
        rules,
        connector: crm,
        classifier: Arc::new(NoModel),
        clock,
        versions_dir: dir.join("versions"),
        priority_sla: runner::DEFAULT_PRIORITY_SLA,
        quiet_hours,
    })
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn grant(runner: &Runner, customer: &str, purpose: &str, granted: bool) {
    runner
        .change_consent(
            customer,
            &ConsentChange {
                purpose: purpose.into(),
                granted,
                source: "crm".into(),
                at: None,
                by: "crm".into(),
            },
        )
        .unwrap();
}

fn warranty(id: &str, customer: &str, product: &str) -> NewEvent {
    NewEvent {
        source: "products".into(),
        id: id.into(),
        event_type: "warranty.expiring".into(),
        subject: Some(customer.into()),
        time: Some(ts("2026-12-06T08:00:00Z")),
        data: json!({ "product_id": product, "product": "washing machine",
                      "expires_on": "2027-01-05", "language": "en" }),
        reply_to: None,
        sent_by: "products".into(),
    }
}

/// Runs the cases and answers `(status, outcome, reply text)` of each.
fn run(runner: &Runner, cases: &[String]) -> Vec<(CaseStatus, Option<String>, Option<String>)> {
    cases
        .iter()
        .map(|id| {
            runner.process(id).unwrap();
            let (rec, personal) = runner.case(id).unwrap().unwrap();
            let outcome = rec.state.as_ref().and_then(|s| s.outcome.clone());
            (rec.status, outcome, personal.and_then(|p| p.reply_text))
        })
        .collect()
}

#[test]
fn an_event_reminds_only_the_customer_who_consented_and_starts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ts("2026-12-06T09:00:00Z")));
    let runner = open(dir.path(), Arc::default(), clock);
    grant(&runner, "K-A", "marketing", true);

    let a = runner.accept_event(warranty("ev-a", "K-A", "P-1")).unwrap();
    let b = runner.accept_event(warranty("ev-b", "K-B", "P-2")).unwrap();
    assert_eq!((a.cases.len(), b.cases.len()), (1, 1));
    let ran = run(&runner, &[a.cases[0].clone(), b.cases[0].clone()]);
    assert_eq!(ran[0].0, CaseStatus::Completed);
    assert_eq!(ran[0].1.as_deref(), Some("reminded"));
    assert!(ran[0].2.as_deref().unwrap().contains("washing machine"));
    assert_eq!(ran[1].1.as_deref(), Some("no_consent"));
    assert_eq!(ran[1].2, None, "a customer without consent is sent nothing");

    // The same event again answers what it started and starts nothing.
    let again = runner.accept_event(warranty("ev-a", "K-A", "P-1")).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.cases, a.cases);
    // The same id with another body is refused.
    let other = runner.accept_event(warranty("ev-a", "K-A", "P-9"));
    assert!(
        matches!(other, Err(runner::Error::EventReused { .. })),
        "{other:?}"
    );
    // Another event about the same product starts no second reminder (`once_per`).
    let same_product = runner
        .accept_event(warranty("ev-a2", "K-A", "P-1"))
        .unwrap();
    assert!(same_product.cases.is_empty());

    // The reminder was a marketing contact: the next case's snapshot counts it.
    let next = runner
        .accept_event(warranty("ev-a3", "K-A", "P-3"))
        .unwrap();
    let (_, personal) = runner.case(&next.cases[0]).unwrap().unwrap();
    let contacts = &personal.unwrap().request["customer"]["contacts"]["marketing"];
    assert_eq!(contacts.as_array().map(Vec::len), Some(1), "{contacts}");

    // A customer who withdraws consent is not contacted again.
    grant(&runner, "K-A", "marketing", false);
    let withdrawn = runner
        .accept_event(warranty("ev-a4", "K-A", "P-4"))
        .unwrap();
    let ran = run(&runner, &withdrawn.cases);
    assert_eq!(ran[0].1.as_deref(), Some("no_consent"));
    let consents = runner.consents("K-A").unwrap();
    assert_eq!(consents[0].history.len(), 1, "the earlier grant is kept");

    // Erasure deletes the customer's consents and contacts; the chain keeps the changes,
    // pseudonymous.
    runner.erase_customer("K-A", "dpo").unwrap();
    assert!(runner.consents("K-A").unwrap().is_empty());
    let pseudonym = runner.store().pseudonym("K-A");
    assert!(runner.store().contacts().of(&pseudonym).unwrap().is_empty());
    let changes = runner.case_audit(&format!("customer:{pseudonym}")).unwrap();
    assert!(changes.len() >= 2, "{changes:?}");
    assert!(!serde_json::to_string(&changes).unwrap().contains("K-A"));
}

#[test]
fn a_consent_changed_event_changes_the_consent_and_an_event_without_subject_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ts("2026-12-06T09:00:00Z")));
    let runner = open(dir.path(), Arc::default(), clock);
    let changed = NewEvent {
        source: "crm".into(),
        id: "c-1".into(),
        event_type: runner::CONSENT_CHANGED.into(),
        subject: Some("K-C".into()),
        time: None,
        data: json!({ "purpose": "marketing", "granted": true }),
        reply_to: None,
        sent_by: "crm".into(),
    };
    assert!(
        runner
            .accept_event(changed.clone())
            .unwrap()
            .cases
            .is_empty()
    );
    assert!(runner.consents("K-C").unwrap()[0].current.granted);
    let bad = runner.accept_event(NewEvent {
        id: "c-2".into(),
        data: json!({ "purpose": "Marketing!", "granted": true }),
        ..changed
    });
    assert!(
        matches!(&bad, Err(runner::Error::InvalidEvent { attribute, .. }) if attribute == "data.purpose"),
        "{bad:?}"
    );
    let no_subject = runner.accept_event(NewEvent {
        subject: None,
        ..warranty("w-1", "x", "P-1")
    });
    assert!(
        matches!(&no_subject, Err(runner::Error::InvalidEvent { attribute, .. }) if attribute == "subject"),
        "{no_subject:?}"
    );
}

#[test]
fn the_same_event_posted_twice_at_once_starts_one_set_of_cases() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ts("2026-12-06T09:00:00Z")));
    let runner = Arc::new(open(dir.path(), Arc::default(), clock));
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = runner.clone();
                s.spawn(move || r.accept_event(warranty("ev-race", "K-R", "P-1")).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
    assert!(answers.iter().all(|a| a.cases == answers[0].cases));
    assert_eq!(runner.pending().unwrap().len(), 1);
}

#[test]
fn different_events_for_the_same_product_at_once_start_one_reminder() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ts("2026-12-06T09:00:00Z")));
    let runner = Arc::new(open(dir.path(), Arc::default(), clock));
    grant(&runner, "K-S", "marketing", true);
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let r = runner.clone();
                s.spawn(move || {
                    r.accept_event(warranty(&format!("ev-same-{i}"), "K-S", "P-9"))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        answers.iter().all(|a| !a.duplicate),
        "eight different events"
    );
    let started: Vec<_> = answers.iter().flat_map(|a| a.cases.clone()).collect();
    assert_eq!(started.len(), 1, "once per product: {answers:?}");
    assert_eq!(runner.pending().unwrap().len(), 1);
}

#[test]
fn quiet_hours_hold_a_reminder_until_the_morning() {
    let dir = tempfile::tempdir().unwrap();
    // 22:30 in Berlin on a Monday.
    let clock = Arc::new(ManualClock::new(ts("2026-12-07T21:30:00Z")));
    let quiet = QuietHours {
        from: "20:00".into(),
        until: "08:00".into(),
        timezone: "Europe/Berlin".into(),
        days: vec!["sunday".into()],
    };
    let runner = open_with(dir.path(), Arc::default(), clock.clone(), Some(quiet));
    grant(&runner, "K-Q", "marketing", true);
    let accepted = runner
        .accept_event(warranty("ev-night", "K-Q", "P-7"))
        .unwrap();
    let [(status, outcome, reply)] = &run(&runner, &accepted.cases)[..] else {
        panic!("one case: {accepted:?}");
    };
    assert_eq!(*status, CaseStatus::Waiting, "{outcome:?}");
    assert!(reply.is_none(), "nothing is sent at night");
    clock.advance(SignedDuration::from_hours(9));
    // 07:30 in Berlin: still quiet.
    assert!(runner.fire_due(runner.now()).unwrap().is_empty());
    clock.advance(SignedDuration::from_mins(30));
    assert_eq!(runner.fire_due(runner.now()).unwrap(), accepted.cases);
    let (rec, personal) = runner.case(&accepted.cases[0]).unwrap().unwrap();
    assert_eq!(rec.status, CaseStatus::Completed);
    assert_eq!(
        rec.state.and_then(|s| s.outcome).as_deref(),
        Some("reminded")
    );
    assert!(
        personal
            .and_then(|p| p.reply_text)
            .is_some_and(|t| t.contains("washing machine"))
    );
}

#[test]
fn a_schedule_fires_at_its_occurrence_and_catches_up_once_after_the_box_was_off() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(Crm::default());
    // 30 December, 08:00 Berlin: before the day's occurrence.
    let clock = Arc::new(ManualClock::new(ts("2026-12-30T07:00:00Z")));
    let runner = open(dir.path(), crm.clone(), clock.clone());
    grant(&runner, "K-2001", "marketing", true);
    assert_eq!(
        runner.mark_new_schedules().unwrap(),
        1,
        "a new schedule starts from now"
    );
    assert_eq!(runner.mark_new_schedules().unwrap(), 0);
    assert!(
        runner.fire_schedules().unwrap().is_empty(),
        "publishing does not fire the past"
    );

    // 09:00:20 Berlin: the occurrence fires once for each customer the CRM names.
    clock.advance_to(ts("2026-12-30T08:00:20Z"));
    let cases = runner.fire_schedules().unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(
        crm.payloads.lock().unwrap()[0],
        json!({ "date": "2026-12-30" })
    );
    let ran = run(&runner, &cases);
    assert_eq!(ran[0].1.as_deref(), Some("greeted"));
    assert!(ran[0].2.as_deref().unwrap().contains("Dear Alex"));
    assert_eq!(ran[1].1.as_deref(), Some("no_consent"));
    assert_eq!(ran[1].2, None);
    clock.advance(SignedDuration::from_mins(1));
    assert!(
        runner.fire_schedules().unwrap().is_empty(),
        "an occurrence runs once"
    );

    // The next day's occurrence: still 2026, so nobody is greeted twice (`once_per: year`).
    clock.advance_to(ts("2026-12-31T08:00:05Z"));
    assert!(runner.fire_schedules().unwrap().is_empty());
    assert_eq!(crm.queries.load(Ordering::SeqCst), 2);

    // The box is off across the occurrences of 1 and 2 January.
    drop(runner);
    clock.advance_to(ts("2027-01-02T15:00:00Z"));
    let runner = open(dir.path(), crm.clone(), clock.clone());
    let caught_up = runner.fire_schedules().unwrap();
    assert_eq!(
        crm.queries.load(Ordering::SeqCst),
        3,
        "one catch-up, not one per occurrence"
    );
    assert_eq!(caught_up.len(), 2, "a new year: both customers again");
    let (_, personal) = runner.case(&caught_up[0]).unwrap().unwrap();
    assert_eq!(
        personal.unwrap().request["schedule"]["date"],
        "2027-01-02",
        "the latest missed occurrence runs"
    );
    // Restarting again finds the occurrence handled.
    drop(runner);
    let runner = open(dir.path(), crm.clone(), clock.clone());
    assert!(runner.fire_schedules().unwrap().is_empty());
    assert_eq!(crm.queries.load(Ordering::SeqCst), 3);
    // The audit trail records what ran and what was skipped.
    let audit = runner.case_audit("schedule:birthday_greeting").unwrap();
    let last = &audit.last().unwrap().body;
    assert_eq!(last["ran"], json!(["2027-01-02T08:00:00Z"]));
    assert_eq!(last["skipped"], json!(["2027-01-01T08:00:00Z"]));
}

#[test]
fn a_triggered_workflow_that_can_reply_without_a_consent_check_does_not_publish() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("warranty_expiry_reminder");
    std::fs::create_dir_all(&dir).unwrap();
    let src = shipped().join("warranty_expiry_reminder");
    std::fs::copy(src.join("input.schema.json"), dir.join("input.schema.json")).unwrap();
    let yaml = std::fs::read_to_string(src.join("workflow.yaml"))
        .unwrap()
        .replace(
            r#"'consent("marketing") && contacts("marketing", 30) < 3'"#,
            r#"'contacts("marketing", 30) < 3'"#,
        );
    std::fs::write(dir.join("workflow.yaml"), yaml).unwrap();
    let errors = compile_dir(&dir, &Rules::default()).unwrap_err();
    let e = errors
        .iter()
        .find(|d| d.code.as_str() == "no_consent_check")
        .unwrap_or_else(|| panic!("{errors:?}"));
    assert!(
        e.message.contains("`consent` → `quiet` → `reply_reminder`"),
        "the path is named: {}",
        e.message
    );
    assert_eq!(e.node.as_deref(), Some("reply_reminder"));
}
