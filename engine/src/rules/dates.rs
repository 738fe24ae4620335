//! Dates and durations for business rules. Dates are ISO strings (`YYYY-MM-DD`),
//! timestamps RFC 3339 strings; "now" is the executor's clock, never the system's.

use std::cell::Cell;
use std::sync::LazyLock;

use jiff::civil::{Date, Weekday};
use jiff::{SignedDuration, Timestamp, ToSpan};
use regex::Regex;
use rhai::{Dynamic, Engine, EvalAltResult};

thread_local! {
    /// "Now" of the script running on this thread; set by `Rules` around every run.
    static NOW: Cell<Option<Timestamp>> = const { Cell::new(None) };
}

/// Sets "now" for scripts run on this thread until the guard drops.
pub(crate) struct NowGuard(Option<Timestamp>);

impl NowGuard {
    pub(crate) fn set(now: Timestamp) -> Self {
        NowGuard(NOW.with(|n| n.replace(Some(now))))
    }
}

impl Drop for NowGuard {
    fn drop(&mut self) {
        NOW.with(|n| n.set(self.0));
    }
}

/// "Now" of the script running on this thread, if one runs.
pub(super) fn current_now() -> Option<Timestamp> {
    NOW.with(Cell::get)
}

fn now() -> Result<Timestamp, Box<EvalAltResult>> {
    NOW.with(Cell::get)
        .ok_or_else(|| "now() and today() are only available while a case runs".into())
}

fn date(s: &str) -> Result<Date, Box<EvalAltResult>> {
    s.trim()
        .parse::<Date>()
        .map_err(|e| format!("`{s}` is not a date (YYYY-MM-DD): {e}").into())
}

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Box<EvalAltResult> + '_ {
    move |e| format!("{what}: {e}").into()
}

static NUMERIC_DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:(\d{4})-(\d{2})-(\d{2})|(\d{1,2})\.(\d{1,2})\.(\d{4})|(\d{1,2})/(\d{1,2})/(\d{4}))\b")
        .expect("date pattern compiles")
});

/// The first date in `text` (2026-11-22, 22.11.2026, 22/11/2026 read day-first), as ISO.
pub(crate) fn extract_date(text: &str) -> Option<String> {
    NUMERIC_DATE.captures_iter(text).find_map(|c| {
        let num = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<i16>().ok());
        let (y, m, d) = if c.get(1).is_some() {
            (num(1)?, num(2)?, num(3)?)
        } else if c.get(4).is_some() {
            (num(6)?, num(5)?, num(4)?)
        } else {
            (num(9)?, num(8)?, num(7)?)
        };
        Date::new(y, i8::try_from(m).ok()?, i8::try_from(d).ok()?)
            .ok()
            .map(|d| d.to_string())
    })
}

fn is_business_day(d: Date) -> bool {
    !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

fn add_business_days(d: Date, n: i64) -> Result<Date, Box<EvalAltResult>> {
    let step: i64 = if n < 0 { -1 } else { 1 };
    let mut left = n.abs();
    let mut cur = d;
    if left > 3650 {
        return Err("add_business_days: at most 3650 days".into());
    }
    while left > 0 {
        cur = cur
            .checked_add(step.days())
            .map_err(err("add_business_days"))?;
        if is_business_day(cur) {
            left -= 1;
        }
    }
    Ok(cur)
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("now", || now().map(|t| t.to_string()))
        .register_fn("today", || {
            now().map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
        })
        .register_fn("add_days", |d: &str, n: i64| {
            date(d)?
                .checked_add(n.days())
                .map(|d| d.to_string())
                .map_err(err("add_days"))
        })
        .register_fn("add_business_days", |d: &str, n: i64| {
            add_business_days(date(d)?, n).map(|d| d.to_string())
        })
        .register_fn(
            "days_between",
            |a: &str, b: &str| -> Result<i64, Box<EvalAltResult>> {
                let (a, b) = (date(a)?, date(b)?);
                Ok(i64::from((b - a).get_days()))
            },
        )
        .register_fn("weekday", |d: &str| -> Result<String, Box<EvalAltResult>> {
            Ok(format!("{:?}", date(d)?.weekday()).to_lowercase())
        })
        .register_fn("is_business_day", |d: &str| date(d).map(is_business_day))
        .register_fn("parse_date", |s: &str| {
            let s = s.trim();
            match extract_date(s) {
                Some(d) if s.len() <= 10 => Dynamic::from(d),
                _ => Dynamic::UNIT,
            }
        })
        .register_fn("extract_date", |s: &str| {
            extract_date(s).map(Dynamic::from).unwrap_or(Dynamic::UNIT)
        })
        .register_fn(
            "duration_secs",
            |s: &str| -> Result<i64, Box<EvalAltResult>> {
                let d = humantime::parse_duration(s).map_err(err("duration_secs"))?;
                i64::try_from(d.as_secs()).map_err(err("duration_secs"))
            },
        )
        .register_fn(
            "add_duration",
            |t: &str, s: &str| -> Result<String, Box<EvalAltResult>> {
                let t: Timestamp = t
                    .parse()
                    .map_err(err("add_duration: not an RFC 3339 timestamp"))?;
                let d = humantime::parse_duration(s).map_err(err("add_duration"))?;
                let d = SignedDuration::try_from(d).map_err(err("add_duration"))?;
                t.checked_add(d)
                    .map(|t| t.to_string())
                    .map_err(err("add_duration"))
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_found_in_german_and_english_text() {
        assert_eq!(
            extract_date("Schreiben vom 03.11.2026 bzgl."),
            Some("2026-11-03".into())
        );
        assert_eq!(
            extract_date("ordered on 2026-10-30, still waiting"),
            Some("2026-10-30".into())
        );
        assert_eq!(extract_date("sent 5/11/2026"), Some("2026-11-05".into()));
        assert_eq!(extract_date("31.02.2026 is no date"), None);
    }

    #[test]
    fn business_days_skip_weekends() {
        let fri: Date = "2026-11-20".parse().expect("date");
        assert_eq!(
            add_business_days(fri, 1).expect("ok").to_string(),
            "2026-11-23"
        );
        assert_eq!(
            add_business_days(fri, 5).expect("ok").to_string(),
            "2026-11-27"
        );
        assert_eq!(
            add_business_days(fri, -1).expect("ok").to_string(),
            "2026-11-19"
        );
    }
}
