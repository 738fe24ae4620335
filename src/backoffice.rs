//! The built-in **simulated back office**: what `call` nodes talk to on the shipped
//! defaults, so the main job runs end to end on a fresh machine. It is deterministic (every
//! answer derives from the request; no clock, no randomness), labels every answer
//! `"simulated": true`, and logs that it is in use. A real deployment points connectors
//! at real systems instead.
//!
//! Operations (connector.operation → answer):
//! - `cards.block_card` → `{blocked, card_ref, blocked_at_step}`
//! - `cards.order_replacement` → `{order_id, delivery_business_days}`
//! - `cards.delivery_status` → `{status, dispatched_on, carrier, tracking_id}`; cards of
//!   customers whose number ends in 9 are reported `lost_in_post`
//! - `payments.refund` → `{refund_id, status: "booked", amount}`; amounts above 5000 are
//!   refused (non-retryable)
//! - `payments.dispute` → `{dispute_id, status: "opened"}`
//! - `crm.get_customer` → `{customer_id, segment, verified, tenure_years}`; ids ending in 0
//!   are `vip`, ids ending in 7 not verified
//! - `crm.update_contact` → `{updated, fields}`
//! - `fraud.open_case` → `{fraud_case_id, priority}`
//! - `accounts.close_account` → `{closed, closing_date_offset_days}`
//! - `accounts.retention_offer` → `{offer, monthly_fee_waived_months}`
//! - `crm.warranties_expiring` → `{subjects: [{customer_id, language, data: {product_id,
//!   product, expires_on}}]}`: two fixed customers (`K-1001` en, `K-1002` de)
//! - `crm.birthdays_today` → `{subjects: [{customer_id, language, data: {first_name}}]}`:
//!   two fixed customers (`K-2001` en, `K-2002` de)
//! - `crm.report_missing_items` → `{ticket_id, status: "opened"}`
//! - `payments.transaction_status` (`customer_id`, `kind`, optional `reference`) →
//!   `{found, kind, reference, status: "pending" | "completed", amount, currency,
//!   business_days_left | booked_business_days_ago}` for the customer's latest transaction
//!   of that kind (`transfer`, `incoming_transfer`, `top_up`, `card_payment`,
//!   `cash_withdrawal`, `deposit`); status, amount and days derive from the ids. Nothing is
//!   found for customer numbers starting `C-404` (unless a reference is given) or for a
//!   reference ending in 0; customer numbers starting `C-503` get a retryable outage.
//! - `payments.cancel_transfer` (`customer_id`, `reference`) → `{cancelled, reference,
//!   cancellation_id}`; a reference ending in 0 is refused (no such transfer), `C-503…`
//!   is a retryable outage
//!
//! Any other connector or operation is a non-retryable error naming it.

use casegraph_engine::exec::{CallError, CallRequest, Connector};
use serde_json::{Value, json};
use sha2::Digest;

/// The deterministic stand-in for a bank's back-office systems.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimulatedBackOffice;

/// A short stable id derived from the idempotency key, e.g. `R-3fa94c1b`.
fn id(prefix: &str, key: &str) -> String {
    let hash = sha2::Sha256::digest(key.as_bytes());
    format!("{prefix}-{}", hex::encode(&hash[..4]))
}

fn customer(payload: &Value) -> &str {
    payload
        .get("customer_id")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The transaction kinds `payments.transaction_status` knows.
const KINDS: &[&str] = &[
    "transfer",
    "incoming_transfer",
    "top_up",
    "card_payment",
    "cash_withdrawal",
    "deposit",
];

fn text<'p>(payload: &'p Value, field: &str) -> Option<&'p str> {
    payload
        .get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The outage a customer number starting `C-503` simulates, so fixtures and demos can walk
/// the failure path.
fn outage(operation: &str, customer: &str) -> Result<(), CallError> {
    if customer.starts_with("C-503") {
        return Err(CallError {
            retryable: true,
            message: format!("{operation}: payments system unavailable (simulated outage)"),
        });
    }
    Ok(())
}

/// The customer's latest transaction of a kind: deterministic from the ids.
fn transaction_status(p: &Value) -> Result<Value, CallError> {
    let c = customer(p);
    outage("payments.transaction_status", c)?;
    let kind = text(p, "kind").unwrap_or("");
    if !KINDS.contains(&kind) {
        return Err(refused(format!(
            "payments.transaction_status: `kind` is `{kind}`; expected one of {}",
            KINDS.join(", ")
        )));
    }
    let reference = text(p, "reference");
    let found = match reference {
        Some(r) => !r.ends_with('0'),
        None => !c.is_empty() && !c.starts_with("C-404"),
    };
    if !found {
        return Ok(json!({ "found": false, "kind": kind, "reference": reference }));
    }
    let seed = format!("{c}|{kind}|{}", reference.unwrap_or(""));
    let h = sha2::Sha256::digest(seed.as_bytes());
    let cents = (u32::from(h[2]) * 256 + u32::from(h[3])) % 50_000 + 500;
    let days = 1 + u32::from(h[1] % 3);
    let mut answer = json!({
        "found": true,
        "kind": kind,
        "reference": reference.map_or_else(|| id("TX", &seed), str::to_owned),
        "amount": format!("{}.{:02}", cents / 100, cents % 100),
        "currency": "EUR",
    });
    if h[0] % 4 == 0 {
        answer["status"] = json!("completed");
        answer["booked_business_days_ago"] = json!(days);
    } else {
        answer["status"] = json!("pending");
        answer["business_days_left"] = json!(days);
    }
    Ok(answer)
}

/// Stops a pending transfer; the workflow checked it is pending and the customer confirmed.
fn cancel_transfer(p: &Value, key: &str) -> Result<Value, CallError> {
    outage("payments.cancel_transfer", customer(p))?;
    let Some(reference) = text(p, "reference") else {
        return Err(refused(
            "payments.cancel_transfer: `reference` names the transfer to cancel and is missing"
                .into(),
        ));
    };
    if reference.ends_with('0') {
        return Err(refused(format!(
            "payments.cancel_transfer: no pending transfer {reference}"
        )));
    }
    Ok(json!({ "cancelled": true, "reference": reference, "cancellation_id": id("CXL", key) }))
}

fn refused(message: String) -> CallError {
    CallError {
        retryable: false,
        message,
    }
}

impl Connector for SimulatedBackOffice {
    fn call(&self, r: &CallRequest) -> Result<Value, CallError> {
        tracing::debug!(case = %r.case_id, node = %r.node, "simulated back office: {}.{}", r.connector, r.operation);
        let key = r.idempotency_key.as_str();
        let p = &r.payload;
        let mut answer = match (r.connector.as_str(), r.operation.as_str()) {
            ("cards", "block_card") => json!({
                "blocked": true,
                "card_ref": id("CARD", &format!("{}{}", customer(p), p.get("card_last4").unwrap_or(&Value::Null))),
            }),
            ("cards", "order_replacement") => {
                json!({ "order_id": id("ORD", key), "delivery_business_days": 5 })
            }
            ("cards", "delivery_status") => {
                let lost = customer(p).ends_with('9');
                json!({
                    "status": if lost { "lost_in_post" } else { "in_transit" },
                    "dispatched_on": p.get("ordered_on").cloned().unwrap_or(Value::Null),
                    "carrier": "Deutsche Post",
                    "tracking_id": id("TRK", key),
                })
            }
            ("payments", "refund") => {
                let amount = p.get("amount").cloned().unwrap_or(Value::Null);
                let value = amount
                    .as_f64()
                    .or_else(|| amount.as_str().and_then(|s| s.parse().ok()));
                if value.is_some_and(|v| v > 5000.0) {
                    return Err(refused(format!(
                        "payments.refund: amount {amount} exceeds the booking limit of 5000"
                    )));
                }
                json!({ "refund_id": id("R", key), "status": "booked", "amount": amount })
            }
            ("payments", "transaction_status") => transaction_status(p)?,
            ("payments", "cancel_transfer") => cancel_transfer(p, key)?,
            ("payments", "dispute") => json!({ "dispute_id": id("DSP", key), "status": "opened" }),
            ("crm", "get_customer") => {
                let c = customer(p);
                json!({
                    "customer_id": c,
                    "segment": if c.ends_with('0') { "vip" } else { "retail" },
                    "verified": !c.is_empty() && !c.ends_with('7'),
                    "tenure_years": c.bytes().filter(u8::is_ascii_digit).map(|b| u32::from(b - b'0')).sum::<u32>() % 15,
                })
            }
            ("crm", "update_contact") => json!({
                "updated": true,
                "fields": p.get("changes").and_then(Value::as_object).map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
            }),
            ("crm", "warranties_expiring") => json!({ "subjects": [
                { "customer_id": "K-1001", "language": "en",
                  "data": { "product_id": "P-100", "product": "washing machine", "expires_on": "2027-01-05" } },
                { "customer_id": "K-1002", "language": "de",
                  "data": { "product_id": "P-200", "product": "Geschirrspüler", "expires_on": "2027-01-05" } },
            ]}),
            ("crm", "birthdays_today") => json!({ "subjects": [
                { "customer_id": "K-2001", "language": "en", "data": { "first_name": "Alex" } },
                { "customer_id": "K-2002", "language": "de", "data": { "first_name": "Erika" } },
            ]}),
            ("crm", "report_missing_items") => {
                json!({ "ticket_id": id("MIS", key), "status": "opened" })
            }
            ("fraud", "open_case") => {
                let score = p.get("score").and_then(Value::as_f64).unwrap_or(0.0);
                json!({ "fraud_case_id": id("FRD", key), "priority": if score >= 70.0 { "high" } else { "normal" } })
            }
            ("accounts", "close_account") => {
                json!({ "closed": true, "closing_date_offset_days": 30 })
            }
            ("accounts", "retention_offer") => {
                json!({ "offer": "fee_waiver", "monthly_fee_waived_months": 6 })
            }
            (c, o) => {
                return Err(refused(format!(
                    "the simulated back office has no operation {c}.{o}"
                )));
            }
        };
        if let Value::Object(m) = &mut answer {
            m.insert("simulated".into(), Value::Bool(true));
        }
        Ok(answer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(connector: &str, operation: &str, payload: Value) -> CallRequest {
        CallRequest {
            case_id: "c1".into(),
            node: "n".into(),
            connector: connector.into(),
            operation: operation.into(),
            payload,
            idempotency_key: "c1:n:1".into(),
            attempt: 1,
            effect: Default::default(),
        }
    }

    #[test]
    fn answers_are_deterministic_and_labelled() {
        let b = SimulatedBackOffice;
        let r = request("payments", "refund", json!({"amount": 120.5}));
        let a1 = b.call(&r).unwrap();
        assert_eq!(a1, b.call(&r).unwrap());
        assert_eq!(a1["simulated"], true);
        assert_eq!(a1["status"], "booked");
        assert!(a1["refund_id"].as_str().unwrap().starts_with("R-"));
    }

    #[test]
    fn unknown_operations_and_refusals_are_not_retryable() {
        let b = SimulatedBackOffice;
        let e = b
            .call(&request("payments", "teleport", json!({})))
            .unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("payments.teleport"));
        let e = b
            .call(&request("payments", "refund", json!({"amount": "9000.00"})))
            .unwrap_err();
        assert!(e.message.contains("booking limit"));
    }

    #[test]
    fn customer_numbers_steer_the_crm_answers() {
        let b = SimulatedBackOffice;
        let vip = b
            .call(&request(
                "crm",
                "get_customer",
                json!({"customer_id": "C-1000"}),
            ))
            .unwrap();
        assert_eq!(vip["segment"], "vip");
        let unverified = b
            .call(&request(
                "crm",
                "get_customer",
                json!({"customer_id": "C-1007"}),
            ))
            .unwrap();
        assert_eq!(unverified["verified"], false);
    }

    #[test]
    fn transaction_look_ups_derive_from_the_ids_and_say_when_nothing_is_found() {
        let b = SimulatedBackOffice;
        let look = |payload: Value| b.call(&request("payments", "transaction_status", payload));
        let a = look(json!({"customer_id": "C-1002345", "kind": "transfer"})).unwrap();
        assert_eq!(
            a,
            look(json!({"customer_id": "C-1002345", "kind": "transfer"})).unwrap()
        );
        assert_eq!(a["found"], true);
        assert_eq!(a["simulated"], true);
        assert!(["pending", "completed"].contains(&a["status"].as_str().unwrap()));
        assert!(a["reference"].as_str().unwrap().starts_with("TX-"));
        let none = look(json!({"customer_id": "C-4041234", "kind": "top_up"})).unwrap();
        assert_eq!(none["found"], false);
        let by_ref =
            look(json!({"customer_id": "C-4041234", "kind": "top_up", "reference": "TX-77"}));
        assert_eq!(by_ref.unwrap()["reference"], "TX-77");
        let e = look(json!({"customer_id": "C-1002345", "kind": "lottery"})).unwrap_err();
        assert!(
            !e.retryable && e.message.contains("`kind` is `lottery`"),
            "{e}"
        );
        let e = look(json!({"customer_id": "C-5031234", "kind": "transfer"})).unwrap_err();
        assert!(e.retryable, "an outage may pass");
    }

    #[test]
    fn a_cancellation_needs_a_reference_of_a_known_transfer() {
        let b = SimulatedBackOffice;
        let cancel = |payload: Value| b.call(&request("payments", "cancel_transfer", payload));
        let ok = cancel(json!({"customer_id": "C-1002345", "reference": "TX-1"})).unwrap();
        assert_eq!(ok["cancelled"], true);
        assert!(ok["cancellation_id"].as_str().unwrap().starts_with("CXL-"));
        let e = cancel(json!({"customer_id": "C-1002345"})).unwrap_err();
        assert!(e.message.contains("`reference`"), "{e}");
        let e = cancel(json!({"customer_id": "C-1002345", "reference": "TX-10"})).unwrap_err();
        assert!(!e.retryable && e.message.contains("TX-10"), "{e}");
    }
}
