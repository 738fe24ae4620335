//! What a rule may ask about the case's customer: `consent(purpose)`,
//! `contacts(purpose, days)`, and the box's contact rules `quiet_hours()` and
//! `quiet_hours_end()` (`quiet.rs`).
//!
//! Both read the snapshot the runner took when the case was accepted (`case.customer`:
//! the consents per purpose and the times the customer was contacted per purpose), never
//! the store: a run stays a pure function of the case, so a replay after a crash decides
//! the same way. A case without a snapshot (one a customer started) has no consent.

use std::cell::RefCell;

use jiff::{SignedDuration, Timestamp};
use rhai::Engine;
use serde_json::Value;

use super::QuietHours;

thread_local! {
    /// `case.customer` of the script running on this thread; set by `Rules` around a run.
    static CUSTOMER: RefCell<Value> = const { RefCell::new(Value::Null) };
}

/// Sets the customer snapshot for scripts run on this thread until the guard drops.
pub(super) struct CustomerGuard(Value);

impl CustomerGuard {
    /// Takes `case.customer` out of the case data a script runs on.
    pub(super) fn set(case: Option<&Value>) -> Self {
        let customer = case
            .and_then(|c| c.get("customer"))
            .cloned()
            .unwrap_or(Value::Null);
        CustomerGuard(CUSTOMER.with(|c| c.replace(customer)))
    }
}

impl Drop for CustomerGuard {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.0);
        CUSTOMER.with(|c| *c.borrow_mut() = previous);
    }
}

/// Whether the customer granted `purpose` when the case was accepted.
fn consent(purpose: &str) -> bool {
    CUSTOMER.with(|c| c.borrow()["consents"][purpose].as_bool() == Some(true))
}

/// How often the customer was contacted for `purpose` in the `days` before now.
fn contacts(purpose: &str, days: i64, now: Option<Timestamp>) -> i64 {
    let Some(since) = now.and_then(|n| {
        n.checked_sub(SignedDuration::from_hours(days.max(0).saturating_mul(24)))
            .ok()
    }) else {
        return 0;
    };
    CUSTOMER.with(|c| {
        c.borrow()["contacts"][purpose]
            .as_array()
            .map_or(0, |times| {
                times
                    .iter()
                    .filter_map(|t| t.as_str()?.parse::<Timestamp>().ok())
                    .filter(|t| *t >= since)
                    .count() as i64
            })
    })
}

/// The quiet-hours rule in the snapshot, if the box had one when the case was accepted.
fn quiet_rule() -> Option<QuietHours> {
    CUSTOMER.with(|c| serde_json::from_value(c.borrow().get("quiet_hours")?.clone()).ok())
}

/// Whether `now` is in the quiet hours of the snapshot (never without a rule).
fn quiet_hours(now: Option<Timestamp>) -> bool {
    match (quiet_rule(), now) {
        (Some(q), Some(now)) => q.contains(now),
        _ => false,
    }
}

/// When the quiet hours around `now` end (RFC 3339), `now` itself when it is not quiet.
fn quiet_hours_end(now: Option<Timestamp>) -> Result<String, Box<rhai::EvalAltResult>> {
    let now = now.ok_or("quiet_hours_end() is only available while a case runs")?;
    Ok(quiet_rule().map_or(now, |q| q.end(now)).to_string())
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("quiet_hours", || quiet_hours(super::dates::current_now()))
        .register_fn("quiet_hours_end", || {
            quiet_hours_end(super::dates::current_now())
        })
        .register_fn("consent", |purpose: &str| consent(purpose))
        .register_fn("contacts", |purpose: &str, days: i64| {
            contacts(purpose, days, super::dates::current_now())
        });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn consent_and_contacts_read_the_snapshot_of_the_case() {
        let case = json!({"customer": {
            "consents": {"marketing": true, "service": false},
            "contacts": {"marketing": ["2026-12-01T10:00:00Z", "2026-01-01T10:00:00Z"]}
        }});
        let _g = CustomerGuard::set(Some(&case));
        assert!(consent("marketing"));
        assert!(!consent("service"));
        assert!(!consent("unknown"));
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().expect("ts");
        assert_eq!(contacts("marketing", 30, Some(now)), 1);
        assert_eq!(contacts("marketing", 365, Some(now)), 2);
        assert_eq!(contacts("service", 365, Some(now)), 0);
        drop(_g);
        assert!(!consent("marketing"), "the snapshot ends with the run");
    }

    #[test]
    fn quiet_hours_read_the_rule_of_the_snapshot() {
        let night: Timestamp = "2026-12-07T22:00:00Z".parse().expect("ts");
        let noon: Timestamp = "2026-12-07T12:00:00Z".parse().expect("ts");
        assert!(!quiet_hours(Some(night)), "no snapshot, no quiet hours");
        let case = json!({"customer": {"quiet_hours": {
            "from": "20:00", "until": "08:00", "timezone": "Europe/Berlin"
        }}});
        let _g = CustomerGuard::set(Some(&case));
        assert!(quiet_hours(Some(night)));
        assert!(!quiet_hours(Some(noon)));
        assert_eq!(
            quiet_hours_end(Some(night)).expect("end"),
            "2026-12-08T07:00:00Z"
        );
        assert_eq!(quiet_hours_end(Some(noon)).expect("end"), noon.to_string());
    }
}
