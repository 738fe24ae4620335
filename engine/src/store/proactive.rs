//! The tables of proactive care: business events seen, proactive cases started (the
//! exactly-once keys of events and schedule occurrences), consents with their history,
//! contacts made, and how far each schedule got. Records and key layouts live here; the
//! runner reads and writes them only through these accessors and [`Batch`] methods.
//!
//! Consents and contacts are keyed by the customer's pseudonym, never the customer number;
//! erasure deletes them ([`Consents::rows_of`], [`Contacts::rows_of`]).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Batch, Error, Row, Store, Table, key};

/// A business event as accepted: what it started, and the digest of its body so that the
/// same `(source, id)` with another body is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEntry {
    /// sha256 of the event as first accepted.
    pub digest: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The cases it started, possibly none.
    pub cases: Vec<String>,
    pub accepted_at: Timestamp,
}

/// One change of a consent: who said it, where, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub granted: bool,
    /// The system or channel the customer said it in (`crm`, `branch`, `app`).
    pub source: String,
    /// When the customer gave or withdrew it.
    pub at: Timestamp,
    /// The token that recorded it.
    pub by: String,
    pub recorded_at: Timestamp,
}

/// A customer's consent for one purpose: the latest change and every earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub purpose: String,
    pub current: ConsentChange,
    /// Earlier changes, oldest first.
    #[serde(default)]
    pub history: Vec<ConsentChange>,
}

/// How far a workflow's schedule got: its occurrences up to `last` are handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleMark {
    /// The schedule pattern and time zone `last` was reckoned under.
    pub pattern: String,
    pub last: Timestamp,
}

impl Store {
    pub fn events(&self) -> Events<'_> {
        Events(self)
    }

    pub fn starts(&self) -> Starts<'_> {
        Starts(self)
    }

    pub fn consents(&self) -> Consents<'_> {
        Consents(self)
    }

    pub fn contacts(&self) -> Contacts<'_> {
        Contacts(self)
    }

    pub fn schedules(&self) -> Schedules<'_> {
        Schedules(self)
    }
}

fn event_key(source: &str, id: &str) -> Vec<u8> {
    key(&[source, id])
}

fn start_key(workflow: &str, customer: &str, once: &str) -> Vec<u8> {
    key(&[workflow, customer, once])
}

fn consent_key(customer: &str, purpose: &str) -> Vec<u8> {
    key(&[customer, purpose])
}

fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut p = key(parts);
    p.push(0);
    p
}

/// The `events` table: `(source, id)` → [`EventEntry`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'a>(&'a Store);

impl Events<'_> {
    pub fn get(&self, source: &str, id: &str) -> Result<Option<EventEntry>, Error> {
        self.0
            .get_json(Table::Events, &event_key(source, id), "event")
    }
}

/// The `starts` table: `(workflow, customer, once key)` → case id.
#[derive(Debug, Clone, Copy)]
pub struct Starts<'a>(&'a Store);

impl Starts<'_> {
    /// The case already started for the key, if any.
    pub fn get(&self, workflow: &str, customer: &str, once: &str) -> Result<Option<String>, Error> {
        self.0
            .get_json(Table::Starts, &start_key(workflow, customer, once), "start")
    }
}

/// The `consents` table: `(customer, purpose)` → [`ConsentRecord`].
#[derive(Debug, Clone, Copy)]
pub struct Consents<'a>(&'a Store);

impl Consents<'_> {
    pub fn get(&self, customer: &str, purpose: &str) -> Result<Option<ConsentRecord>, Error> {
        self.0
            .get_json(Table::Consents, &consent_key(customer, purpose), "consent")
    }

    /// Every purpose the customer said something about, by purpose.
    pub fn of(&self, customer: &str) -> Result<Vec<ConsentRecord>, Error> {
        Ok(self
            .0
            .scan_json::<ConsentRecord>(Table::Consents, &prefix(&[customer]), "consent")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    pub fn rows_of(&self, customer: &str) -> Result<Vec<Row>, Error> {
        rows(self.0, Table::Consents, &prefix(&[customer]))
    }
}

/// The `contacts` table: `(customer, purpose, time, case)` → nothing.
#[derive(Debug, Clone, Copy)]
pub struct Contacts<'a>(&'a Store);

impl Contacts<'_> {
    /// When the customer was contacted, as `(purpose, time)`, by purpose and oldest first.
    pub fn of(&self, customer: &str) -> Result<Vec<(String, Timestamp)>, Error> {
        let p = prefix(&[customer]);
        Ok(self
            .0
            .scan_keys(Table::Contacts, &p)?
            .into_iter()
            .filter_map(|k| {
                let rest = std::str::from_utf8(&k[p.len()..]).ok()?;
                let mut parts = rest.split('\0');
                let purpose = parts.next()?.to_string();
                let at = parts.next()?.parse().ok()?;
                Some((purpose, at))
            })
            .collect())
    }

    /// The rows of every contact of the customer, for erasure.
    pub fn rows_of(&self, customer: &str) -> Result<Vec<Row>, Error> {
        rows(self.0, Table::Contacts, &prefix(&[customer]))
    }
}

/// The `schedules` table: workflow id → [`ScheduleMark`].
#[derive(Debug, Clone, Copy)]
pub struct Schedules<'a>(&'a Store);

impl Schedules<'_> {
    pub fn get(&self, workflow: &str) -> Result<Option<ScheduleMark>, Error> {
        self.0
            .get_json(Table::Schedules, workflow.as_bytes(), "schedule mark")
    }
}

fn rows(store: &Store, table: Table, prefix: &[u8]) -> Result<Vec<Row>, Error> {
    Ok(store
        .scan_keys(table, prefix)?
        .into_iter()
        .map(|key| Row { table, key })
        .collect())
}

/// The writes of proactive care.
impl Batch {
    pub fn put_event(&mut self, source: &str, id: &str, entry: &EventEntry) -> &mut Self {
        self.put(Table::Events, event_key(source, id), entry)
    }

    pub fn put_start(
        &mut self,
        workflow: &str,
        customer: &str,
        once: &str,
        case_id: &str,
    ) -> &mut Self {
        self.put(Table::Starts, start_key(workflow, customer, once), &case_id)
    }

    pub fn put_consent(&mut self, customer: &str, record: &ConsentRecord) -> &mut Self {
        self.put(
            Table::Consents,
            consent_key(customer, &record.purpose),
            record,
        )
    }

    pub fn put_contact(
        &mut self,
        customer: &str,
        purpose: &str,
        at: Timestamp,
        case_id: &str,
    ) -> &mut Self {
        let at = at.to_string();
        self.put_raw(
            Table::Contacts,
            key(&[customer, purpose, &at, case_id]),
            Vec::new(),
        )
    }

    pub fn put_schedule_mark(&mut self, workflow: &str, mark: &ScheduleMark) -> &mut Self {
        self.put(Table::Schedules, workflow.as_bytes(), mark)
    }
}
