//! Hostile input: personal data. What a customer sent must be erasable to the last byte of
//! the data directory, must never reach the audit trail or the case record (both outlive
//! erasure), and must not be shown to a role that may not see it. A request that does not
//! fit its workflow goes to a reviewer and says why, without quoting the value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::routing::post;
use casegraph::auth::Role;
use casegraph::config::Config;
use casegraph_engine::store::Kind;
use serde_json::{Value, json};

use crate::support::{self, Server};

/// The erased customer: number, name, IBAN (as written and as extracted) and a snippet of
/// the letter. None of it may be found in the data directory after the erasure.
const CUSTOMER: &str = "C-77001234";
const NAME: &str = "Wilhelmine Zaunkoenig";
const IBAN_WRITTEN: &str = "DE44 5001 0517 5407 3249 31";
const IBAN: &str = "DE44500105175407324931";
const SNIPPET: &str = "Quittung vom Gartencenter";
/// Another customer, whose data must survive the erasure untouched.
const OTHER: &str = "C-55501234";
const OTHER_NAME: &str = "Bartholomaeus Krummbein";

fn letter(customer: &str, name: &str) -> Value {
    // The other customer writes about something else, from another account.
    let (snippet, iban) = if customer == CUSTOMER {
        (SNIPPET, IBAN_WRITTEN)
    } else {
        ("Rechnung vom Baumarkt", "DE75 5121 0800 1245 1261 99")
    };
    json!({
        "channel": "letter",
        "language": "de",
        "customer_id": customer,
        "text": format!("Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung über 42,50 € ({snippet}). Bitte überweisen Sie das Geld zurück auf {iban}.\nMit freundlichen Grüßen\n{name}"),
    })
}

fn is_final(c: &Value) -> bool {
    ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
}

/// A back office that answers like a real one: with the customer number and IBAN it was
/// sent, so the outbox holds personal data.
fn echoing_back_office() -> String {
    async fn answer(body: String) -> axum::Json<Value> {
        let p: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        axum::Json(json!({
            "refund_id": "R-1", "status": "booked", "amount": p["amount"],
            "customer_id": p["customer_id"], "iban": p["iban"],
        }))
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route("/{connector}/{operation}", post(answer));
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv_timeout(Duration::from_secs(10)).unwrap())
}

/// A server whose data directory is `dir`, which outlives it (the support server deletes
/// its own). The fresh tokens of this start are copied in.
fn serve_in(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Server {
    let dir = dir.to_path_buf();
    Server::start_with(move |c| {
        std::fs::copy(c.data_dir.join("tokens.json"), dir.join("tokens.json")).unwrap();
        c.data_dir = dir;
        adjust(c);
    })
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Which of `needles` occur in which file under `dir`, as raw bytes.
fn grep(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files(dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for needle in needles {
            if bytes
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(format!("{needle} in {}", file.display()));
            }
        }
    }
    found
}

fn erase_leaves_no_byte_of_the_customer(backend: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let back_office = echoing_back_office();
    let (erased, kept) = {
        let s = serve_in(dir.path(), |c| {
            c.store.backend = backend;
            c.connectors.base_url = Some(back_office.clone());
            c.webhooks.allowed_hosts = vec!["127.0.0.1".into()];
        });
        let mut erased = Vec::new();
        for i in 0..3 {
            let mut body = letter(CUSTOMER, NAME);
            body["reply_to"] = json!(format!("http://127.0.0.1:9/hooks/{CUSTOMER}"));
            let r = s.raw(
                "POST",
                "/v1/requests",
                Some(s.token(Role::Submitter)),
                Some(("application/json", body.to_string().into_bytes())),
                &[("Idempotency-Key", &format!("{CUSTOMER}-{i}"))],
            );
            assert_eq!(r.status, 202, "{}", r.text);
            erased.push(r.json["case_id"].as_str().unwrap().to_string());
        }
        let kept = s.submit(&letter(OTHER, OTHER_NAME));
        for id in erased.iter().chain([&kept]) {
            let case = s.wait_case(id, is_final);
            assert_eq!(case["status"], "completed", "{case}");
            // The back office's answer (with the customer's number) is in the case data.
            assert_eq!(case["data"]["refund"]["status"], "booked", "{case}");
        }
        (erased, kept)
    };
    // Before: the data directory holds the customer everywhere.
    let needles = [CUSTOMER, NAME, IBAN, SNIPPET];
    assert!(!grep(dir.path(), &needles).is_empty());

    let data = dir.path().to_str().unwrap();
    let out = support::casegraph(&["erase", "--customer", CUSTOMER, "--data", data]);
    assert!(out.status.success(), "{out:?}");
    let found = grep(dir.path(), &needles);
    assert!(found.is_empty(), "erased data still on disk: {found:?}");
    // The other customer is whole.
    assert_eq!(grep(dir.path(), &[OTHER, OTHER_NAME]).len(), 2);

    let out = support::casegraph(&["audit", "verify", "--data", data]);
    assert!(out.status.success(), "{out:?}");
    let s = serve_in(dir.path(), |c| {
        c.store.backend = backend;
        c.connectors.base_url = Some(back_office.clone());
    });
    for id in &erased {
        let case = s.wait_case(id, |_| true);
        assert_eq!(case["erased"], true, "{case}");
        assert_eq!(case["request"], Value::Null, "{case}");
        assert_eq!(case["status"], "completed");
    }
    let other = s.wait_case(&kept, |_| true);
    assert_eq!(other["request"]["customer_id"], OTHER, "{other}");
    assert_eq!(other["data"]["refund"]["customer_id"], OTHER, "{other}");
    // A reused idempotency key of the erased customer no longer finds its case.
    let r = s.raw(
        "POST",
        "/v1/requests",
        Some(s.token(Role::Submitter)),
        Some((
            "application/json",
            letter(OTHER, OTHER_NAME).to_string().into_bytes(),
        )),
        &[("Idempotency-Key", &format!("{CUSTOMER}-0"))],
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(!erased.iter().any(|id| r.json["case_id"] == **id));
}

#[test]
fn erasure_leaves_no_byte_of_the_customer_in_a_redb_store() {
    erase_leaves_no_byte_of_the_customer(Kind::Redb);
}

#[test]
fn erasure_leaves_no_byte_of_the_customer_in_a_sled_store() {
    erase_leaves_no_byte_of_the_customer(Kind::Sled);
}
