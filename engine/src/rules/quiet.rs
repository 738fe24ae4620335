//! Quiet hours: when a proactive case must not contact the customer (the box's `[contact]`
//! configuration). The runner writes the rule into the customer snapshot of a proactive
//! case when it is accepted (`case.customer.quiet_hours`), so a replay decides the same way;
//! rules ask `quiet_hours()` (is it quiet now?) and `quiet_hours_end()` (when may we
//! write?), and a workflow waits until then before its `reply` or `ask`.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// A daily quiet window in a time zone, plus whole quiet days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local time the quiet window starts (`HH:MM`), e.g. `20:00`.
    pub from: String,
    /// Local time it ends (`HH:MM`); before `from` means the window runs over midnight.
    pub until: String,
    /// IANA time zone the times are in, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// Whole days without contact (`sunday`, …), in that time zone.
    #[serde(default)]
    pub days: Vec<String>,
}

/// The checked form of [`QuietHours`].
#[derive(Debug, Clone)]
struct Window {
    from: Time,
    until: Time,
    tz: TimeZone,
    days: Vec<Weekday>,
}

fn time(field: &str, s: &str) -> Result<Time, String> {
    let bad = || format!("`{field}` must be a local time HH:MM, got `{s}`");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

fn weekday(s: &str) -> Result<Weekday, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => {
            return Err(format!(
                "`days` holds `{s}`, which is not a weekday name (monday … sunday)"
            ));
        }
    })
}

impl QuietHours {
    /// Checks the times, the time zone and the day names; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        self.window().map(|_| ())
    }

    fn window(&self) -> Result<Window, String> {
        let tz = TimeZone::get(&self.timezone)
            .map_err(|_| format!("`timezone` `{}` is not an IANA time zone", self.timezone))?;
        let mut days: Vec<Weekday> = self
            .days
            .iter()
            .map(|d| weekday(d))
            .collect::<Result<_, _>>()?;
        days.sort_by_key(|d| d.to_monday_zero_offset());
        days.dedup();
        if days.len() == 7 {
            return Err("`days` names every weekday: no time is left to contact customers".into());
        }
        Ok(Window {
            from: time("from", &self.from)?,
            until: time("until", &self.until)?,
            tz,
            days,
        })
    }

    /// Whether `at` falls in quiet hours (an invalid rule is never quiet: it was checked
    /// when the configuration was loaded).
    pub fn contains(&self, at: Timestamp) -> bool {
        self.window().is_ok_and(|w| w.contains(at))
    }

    /// The first moment at or after `at` that is not quiet (`at` itself when it is not).
    pub fn end(&self, at: Timestamp) -> Timestamp {
        self.window().map_or(at, |w| w.end(at))
    }
}

impl Window {
    fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        if self.days.contains(&local.weekday()) {
            return true;
        }
        let t = local.time();
        match self.from.cmp(&self.until) {
            std::cmp::Ordering::Less => self.from <= t && t < self.until,
            std::cmp::Ordering::Greater => t >= self.from || t < self.until,
            std::cmp::Ordering::Equal => false,
        }
    }

    /// Quiet periods end at `until` or at a midnight (after a quiet day); the earliest such
    /// moment after `at` that is not quiet. Eight days cover seven quiet days in a row.
    fn end(&self, at: Timestamp) -> Timestamp {
        if !self.contains(at) {
            return at;
        }
        let today = at.to_zoned(self.tz.clone()).date();
        let mut candidates: Vec<Timestamp> = (0..=8i64)
            .filter_map(|d| today.checked_add(d.days()).ok())
            .flat_map(|date| {
                [
                    date.to_datetime(self.until),
                    date.to_datetime(Time::midnight()),
                ]
            })
            .filter_map(|dt| dt.to_zoned(self.tz.clone()).ok())
            .map(|z| z.timestamp())
            .filter(|t| *t > at)
            .collect();
        candidates.sort();
        candidates
            .into_iter()
            .find(|t| !self.contains(*t))
            .unwrap_or(at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn rule(from: &str, until: &str, days: &[&str]) -> QuietHours {
        QuietHours {
            from: from.into(),
            until: until.into(),
            timezone: "Europe/Berlin".into(),
            days: days.iter().map(|d| (*d).to_string()).collect(),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_window_over_midnight_is_quiet_late_and_early_in_local_time() {
        let q = rule("20:00", "08:00", &[]);
        // Winter: Berlin is UTC+1.
        assert!(q.contains(ts("2026-12-07T19:30:00Z")), "20:30 local");
        assert!(q.contains(ts("2026-12-08T06:59:00Z")), "07:59 local");
        assert!(!q.contains(ts("2026-12-08T07:00:00Z")), "08:00 local");
        assert!(!q.contains(ts("2026-12-07T18:59:00Z")), "19:59 local");
        assert_eq!(
            q.end(ts("2026-12-07T22:00:00Z")),
            ts("2026-12-08T07:00:00Z")
        );
        assert_eq!(
            q.end(ts("2026-12-07T12:00:00Z")),
            ts("2026-12-07T12:00:00Z")
        );
    }

    #[test]
    fn a_quiet_sunday_moves_the_end_to_monday_morning() {
        let q = rule("20:00", "08:00", &["sunday"]);
        // Saturday 2026-12-05 21:00 local → quiet until Monday 08:00 local.
        assert!(q.contains(ts("2026-12-06T12:00:00Z")), "Sunday noon");
        assert_eq!(
            q.end(ts("2026-12-05T20:00:00Z")),
            ts("2026-12-07T07:00:00Z")
        );
    }

    #[test]
    fn the_end_follows_daylight_saving_time() {
        let q = rule("22:00", "07:00", &[]);
        // The night the clocks go forward (2027-03-28): 07:00 local is 05:00 UTC.
        assert_eq!(
            q.end(ts("2027-03-27T22:00:00Z")),
            ts("2027-03-28T05:00:00Z")
        );
    }

    #[test]
    fn a_day_window_and_an_empty_one() {
        let q = rule("12:00", "14:00", &[]);
        assert!(q.contains(ts("2026-12-07T11:30:00Z")));
        assert!(!q.contains(ts("2026-12-07T13:30:00Z")));
        assert!(!rule("09:00", "09:00", &[]).contains(ts("2026-12-07T08:00:00Z")));
    }

    #[test]
    fn a_bad_rule_names_its_field() {
        assert!(
            rule("8:00", "09:00", &[])
                .check()
                .unwrap_err()
                .contains("from")
        );
        assert!(
            rule("08:00", "25:00", &[])
                .check()
                .unwrap_err()
                .contains("until")
        );
        assert!(
            rule("08:00", "09:00", &["funday"])
                .check()
                .unwrap_err()
                .contains("funday")
        );
        let week = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        assert!(
            rule("08:00", "09:00", &week)
                .check()
                .unwrap_err()
                .contains("every weekday")
        );
        let mut q = rule("08:00", "09:00", &[]);
        q.timezone = "Mars/Olympus".into();
        assert!(q.check().unwrap_err().contains("Mars/Olympus"));
    }
}
