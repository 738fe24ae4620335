//! `[contact]`: the box's rules for contacting customers proactively.

use casegraph_engine::rules::QuietHours;
use serde::{Deserialize, Serialize};

/// Contact rules for proactive cases (events and schedules). Workflows read them with
/// `quiet_hours()` and `quiet_hours_end()` (docs/workflows.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactOptions {
    /// When no customer is contacted, e.g.
    /// `quiet_hours = { from = "20:00", until = "08:00", timezone = "Europe/Berlin",
    /// days = ["sunday"] }`. Unset: no quiet hours.
    pub quiet_hours: Option<QuietHours>,
}
