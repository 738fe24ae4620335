//! Typed access to the tables: the service's handlers, the CLI and the runner ask for
//! cases, personal records, workflow versions, timers, notifications and a case's call and
//! idempotency records by id, never for byte keys of a named table; a row a listing found
//! is deleted as a [`Row`], and the records the runner writes by name go into a [`Batch`]
//! through its typed methods below. Key layouts stay in this module and in
//! [`records`](super::records).
//!
//! Every listing here is bounded per store call (`EACH_CHUNK` rows, the store's one chunk
//! size), so memory stays at one chunk however many records the box holds.

use std::collections::HashMap;

use jiff::Timestamp;

use super::{
    Batch, CaseRecord, EACH_CHUNK, Error, IdempotencyEntry, Notification, PersonalRecord, Store,
    Table, WorkflowBundle, decode, key, timer_bound, timer_case,
};

impl Store {
    /// The cases (without personal data), by case id.
    pub fn cases(&self) -> Cases<'_> {
        Cases(self)
    }

    /// The cases' personal data (request, case data, reply text), by case id.
    pub fn personal(&self) -> Personal<'_> {
        Personal(self)
    }

    /// Every workflow version a case ever ran on, kept so cases resume on it.
    pub fn workflow_versions(&self) -> WorkflowVersions<'_> {
        WorkflowVersions(self)
    }

    /// The durable timers (a case's `wait` or the SLA of its task), by due time.
    pub fn timers(&self) -> Timers<'_> {
        Timers(self)
    }

    /// The `reply_to` notifications of final cases still to be sent, by case id.
    pub fn notifications(&self) -> Notifications<'_> {
        Notifications(self)
    }

    /// Which cases belong to a customer (by pseudonym), for erasure and for the customer's
    /// history that routing reads ([`crate::customer::History`]).
    pub fn customer_cases(&self) -> CustomerCases<'_> {
        CustomerCases(self)
    }

    /// The recorded back-office calls of the cases, by case.
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox(self)
    }

    /// Which cases a printed case reference names (a reference is derived from its case
    /// id, so two cases may rarely share one).
    pub fn references(&self) -> References<'_> {
        References(self)
    }

    /// The submitters' idempotency keys and the cases they point at.
    pub fn idempotency(&self) -> Idempotency<'_> {
        Idempotency(self)
    }

    /// How far the fleet relay got: the last audit seq its JetStream stream acknowledged.
    pub fn relay_cursor(&self) -> RelayCursor<'_> {
        RelayCursor(self)
    }

    /// The head of the audit chain: the last record's seq and hash (the genesis when the
    /// store holds none, the archive anchor after a cut that took every record).
    pub fn audit_head(&self) -> Result<crate::audit::Head, Error> {
        Ok(super::group::stored_head(self.backend.as_ref())?
            .unwrap_or_else(crate::audit::Head::genesis))
    }

    /// Reads one record of the box-wide settings: `Ok` when the store answers reads.
    pub fn probe(&self) -> Result<(), Error> {
        self.backend.get(Table::Meta, b"salt").map(|_| ())
    }

    /// Bytes the store occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.backend.disk_bytes()
    }

    /// The backend's name, as in configuration (`redb`, `sled`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
}

/// The `cases` table: case id → [`CaseRecord`]. Case ids begin with their acceptance time,
/// so id order is acceptance order.
#[derive(Debug, Clone, Copy)]
pub struct Cases<'a>(&'a Store);

impl Cases<'_> {
    /// The case `id`, if stored.
    pub fn get(&self, id: &str) -> Result<Option<CaseRecord>, Error> {
        self.0.get_json(Table::Cases, id.as_bytes(), "case")
    }

    /// At most `limit` cases with an id below `before` (all when `None`), newest first.
    pub fn newest_first(&self, before: Option<&str>, limit: usize) -> Result<Vec<Listed>, Error> {
        Ok(self
            .0
            .backend
            .range_back(Table::Cases, b"", before.map(str::as_bytes), limit)?
            .into_iter()
            .map(|(k, v)| Listed {
                record: decode("case", &k, &v),
                id: String::from_utf8_lossy(&k).into_owned(),
            })
            .collect())
    }

    /// Hands every readable case to `f`, oldest first, a chunk at a time without keeping
    /// them. A record that is not readable is logged and skipped: one damaged case does not
    /// hide the others.
    pub fn for_each(&self, mut f: impl FnMut(CaseRecord)) -> Result<(), Error> {
        self.0.each_chunk(Table::Cases, EACH_CHUNK, |chunk| {
            for (k, v) in chunk {
                match decode::<CaseRecord>("case", &k, &v) {
                    Ok(r) => f(r),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            Ok(())
        })
    }
}

/// The fleet relay's cursor, one row of `meta`: the audit seq up to which every record was
/// acknowledged by the branch stream. Its own small commit, never part of a case's batch,
/// so relaying adds no write to a case's commit and a case commit never waits for NATS.
#[derive(Debug, Clone, Copy)]
pub struct RelayCursor<'a>(&'a Store);

/// The key of the relay cursor in `Table::Meta`.
const RELAY_CURSOR: &[u8] = b"fleet_relay_cursor";

impl RelayCursor<'_> {
    /// The last acknowledged audit seq (0: nothing relayed yet).
    pub fn get(&self) -> Result<u64, Error> {
        Ok(self
            .0
            .get_json::<u64>(Table::Meta, RELAY_CURSOR, "fleet relay cursor")?
            .unwrap_or(0))
    }

    /// Records that every audit record up to `seq` was acknowledged; durable on return.
    pub fn set(&self, seq: u64) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.put(Table::Meta, RELAY_CURSOR, &seq);
        self.0.commit(batch)
    }
}

/// A case as a listing found it: its id and its record, or why the record is not readable,
/// so a caller paging on can go on from a case it could not read.
#[derive(Debug)]
pub struct Listed {
    pub id: String,
    pub record: Result<CaseRecord, Error>,
}

/// The `personal` table: case id → [`PersonalRecord`] (absent once erased).
#[derive(Debug, Clone, Copy)]
pub struct Personal<'a>(&'a Store);

impl Personal<'_> {
    /// The personal data of case `id`, unless there is none or it was erased.
    pub fn get(&self, case_id: &str) -> Result<Option<PersonalRecord>, Error> {
        self.0
            .get_json(Table::Personal, case_id.as_bytes(), "personal data")
    }
}

/// The `workflows` table: workflow digest → [`WorkflowBundle`].
#[derive(Debug, Clone, Copy)]
pub struct WorkflowVersions<'a>(&'a Store);

impl WorkflowVersions<'_> {
    /// The version of that digest, if stored.
    pub fn get(&self, digest: &str) -> Result<Option<WorkflowBundle>, Error> {
        self.0
            .get_json(Table::Workflows, digest.as_bytes(), "workflow version")
    }

    /// Whether the version of that digest is stored (without reading its files).
    pub fn contains(&self, digest: &str) -> Result<bool, Error> {
        Ok(self
            .0
            .backend
            .get(Table::Workflows, digest.as_bytes())?
            .is_some())
    }

    /// The stored versions of workflow `id`, lowest version first. A bundle that is not
    /// readable is logged and skipped (the others still show).
    pub fn of(&self, id: &str) -> Result<Vec<WorkflowBundle>, Error> {
        let mut found = Vec::new();
        self.0.each_chunk(Table::Workflows, EACH_CHUNK, |chunk| {
            for (k, v) in chunk {
                match decode::<WorkflowBundle>("workflow version", &k, &v) {
                    Ok(b) if b.id == id => found.push(b),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            Ok(())
        })?;
        found.sort_by_key(|b| b.version);
        Ok(found)
    }
}

/// A stored record a listing found, to delete in a [`Batch`] ([`Batch::remove`]) without
/// naming its table or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub(super) table: Table,
    pub(super) key: Vec<u8>,
}

/// The `timers` table: (due time, case id) → nothing; a case has a row while it waits on a
/// timer or a task with an SLA.
#[derive(Debug, Clone, Copy)]
pub struct Timers<'a>(&'a Store);

/// A timer row that came due.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub case_id: String,
    /// The row itself, to drop once the case's trigger is stored.
    pub row: Row,
}

impl Timers<'_> {
    /// At most `limit` timers due at or before `now`, earliest first. A row whose case id
    /// is not readable is passed over.
    pub fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<DueTimer>, Error> {
        Ok(self
            .0
            .backend
            .range(Table::Timers, b"", Some(&timer_bound(now)), limit)?
            .into_iter()
            .filter_map(|(key, _)| {
                let case_id = timer_case(&key)?.to_string();
                Some(DueTimer {
                    case_id,
                    row: Row {
                        table: Table::Timers,
                        key,
                    },
                })
            })
            .collect())
    }
}

/// The `notifications` table: case id → [`Notification`].
#[derive(Debug, Clone, Copy)]
pub struct Notifications<'a>(&'a Store);

impl Notifications<'_> {
    /// At most `limit` notifications in case-id order (oldest case first), starting after
    /// the case `after` (from the first when `None`).
    pub fn after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Notification)>, Error> {
        let from = match after {
            // The smallest key greater than `after`.
            Some(a) => [a.as_bytes(), &[0]].concat(),
            None => Vec::new(),
        };
        self.0
            .backend
            .range(Table::Notifications, &from, None, limit)?
            .into_iter()
            .map(|(k, v)| {
                let n: Notification = decode("notification", &k, &v)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), n))
            })
            .collect()
    }

    /// The notification of case `case_id`, if it is still to be sent.
    pub fn get(&self, case_id: &str) -> Result<Option<Notification>, Error> {
        self.0
            .get_json(Table::Notifications, case_id.as_bytes(), "notification")
    }

    /// How many are stored.
    pub fn count(&self) -> Result<usize, Error> {
        Ok(self.0.scan_keys(Table::Notifications, b"")?.len())
    }
}

/// The `customer_cases` table: (customer pseudonym, case id) → nothing.
#[derive(Debug, Clone, Copy)]
pub struct CustomerCases<'a>(&'a Store);

impl CustomerCases<'_> {
    /// The ids of the cases of the customer with that pseudonym, in id order.
    pub fn of(&self, pseudonym: &str) -> Result<Vec<String>, Error> {
        let mut prefix = key(&[pseudonym]);
        prefix.push(0);
        Ok(self
            .0
            .scan_keys(Table::CustomerCases, &prefix)?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    /// The records of the customer's newest `limit` cases, oldest first: what their history
    /// is counted from. A case id without a readable record (archived between the two
    /// reads, damaged) is passed over.
    pub fn newest_records(&self, pseudonym: &str, limit: usize) -> Result<Vec<CaseRecord>, Error> {
        let ids = self.of(pseudonym)?;
        let mut out = Vec::new();
        for id in &ids[ids.len().saturating_sub(limit)..] {
            match self.0.cases().get(id) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(out)
    }
}

/// The `outbox` table: `<case id>:<node>:<visit>` → the recorded call and its answer.
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a>(&'a Store);

impl Outbox<'_> {
    /// The rows of the calls case `case_id` made.
    pub fn of_case(&self, case_id: &str) -> Result<Vec<Row>, Error> {
        Ok(self
            .0
            .scan_keys(Table::Outbox, format!("{case_id}:").as_bytes())?
            .into_iter()
            .map(|key| Row {
                table: Table::Outbox,
                key,
            })
            .collect())
    }
}

/// The `idempotency` table: the submitter's key → [`IdempotencyEntry`].
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a>(&'a Store);

impl Idempotency<'_> {
    /// Every key's row, by the case it points at. The table is keyed by the submitter's
    /// key, so this reads it whole.
    pub fn rows_by_case(&self) -> Result<HashMap<String, Vec<Row>>, Error> {
        let mut map: HashMap<String, Vec<Row>> = HashMap::new();
        for (key, entry) in
            self.0
                .scan_json::<IdempotencyEntry>(Table::Idempotency, b"", "idempotency key")?
        {
            map.entry(entry.case_id).or_default().push(Row {
                table: Table::Idempotency,
                key,
            });
        }
        Ok(map)
    }
}

/// The `references` table: (case reference, case id) → nothing.
#[derive(Debug, Clone, Copy)]
pub struct References<'a>(&'a Store);

impl References<'_> {
    /// The ids of the cases printed with `reference`, in id order (at most a few).
    pub fn cases(&self, reference: &str) -> Result<Vec<String>, Error> {
        let mut prefix = key(&[reference]);
        prefix.push(0);
        Ok(self
            .0
            .backend
            .range(Table::References, &prefix, Some(&prefix_end(&prefix)), 16)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The writes the runner makes by record rather than by table and key.
impl Batch {
    /// Indexes case `case_id` under its printed reference.
    pub fn put_reference(&mut self, case_id: &str) -> &mut Self {
        let reference = crate::reference::of(case_id);
        self.put_raw(Table::References, key(&[&reference, case_id]), Vec::new())
    }

    /// Drops the reference index of case `case_id` (the case left the live store).
    pub fn delete_reference(&mut self, case_id: &str) -> &mut Self {
        let reference = crate::reference::of(case_id);
        self.delete(Table::References, key(&[&reference, case_id]))
    }

    /// Deletes a row a listing found.
    pub fn remove(&mut self, row: Row) -> &mut Self {
        self.delete(row.table, row.key)
    }

    /// Stores a case record under its id.
    pub fn put_case(&mut self, rec: &CaseRecord) -> &mut Self {
        self.put(Table::Cases, rec.id.as_bytes(), rec)
    }

    /// Marks case `case_id` as having stored work (its trigger is on its record).
    pub fn mark_pending(&mut self, case_id: &str) -> &mut Self {
        self.put_raw(Table::Pending, case_id.as_bytes(), Vec::new())
    }

    /// Deletes the personal data of case `case_id`.
    pub fn delete_personal(&mut self, case_id: &str) -> &mut Self {
        self.delete(Table::Personal, case_id.as_bytes())
    }

    /// Deletes the stored notification of case `case_id`, if any.
    pub fn delete_notification(&mut self, case_id: &str) -> &mut Self {
        self.delete(Table::Notifications, case_id.as_bytes())
    }

    /// Stores a workflow version under its digest.
    pub fn put_workflow_version(&mut self, bundle: &WorkflowBundle) -> &mut Self {
        self.put(Table::Workflows, bundle.digest.as_bytes(), bundle)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use jiff::Timestamp;

    use super::super::{
        Batch, CaseStatus, IdempotencyEntry, Kind, Notification, Options, Store, Table,
        WorkflowBundle, key, timer_key,
    };
    use super::{CaseRecord, EACH_CHUNK};

    fn case(id: &str) -> CaseRecord {
        CaseRecord {
            id: id.into(),
            status: CaseStatus::Completed,
            channel: "email".into(),
            language: "en".into(),
            customer: None,
            request_digest: "d".into(),
            classification: None,
            route: None,
            why: None,
            workflow: None,
            state: None,
            queue_task: None,
            queue_reason: None,
            error: None,
            pending: None,
            erased: false,
            accepted_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            submitted_by: None,
            reply_to: None,
            linked_case: None,
        }
    }

    fn store(kind: Kind) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            backend: kind,
            ..Options::default()
        };
        let store = Store::open(dir.path(), &options).unwrap();
        (dir, store)
    }

    fn cases_page_newest_first_and_skip_what_is_damaged(kind: Kind) {
        let (_dir, store) = store(kind);
        let mut batch = Batch::new();
        // More than one chunk, so `for_each` has to go on from where a chunk ended.
        let n = EACH_CHUNK + 3;
        for i in 0..n {
            let id = format!("c{i:05}");
            batch.put(Table::Cases, id.clone(), &case(&id));
        }
        batch.put_raw(Table::Cases, "c00002x", b"not json".to_vec());
        store.commit(batch).unwrap();

        let page = store.cases().newest_first(None, 3).unwrap();
        let ids: Vec<&str> = page.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                format!("c{:05}", n - 1),
                format!("c{:05}", n - 2),
                format!("c{:05}", n - 3)
            ]
        );
        let older = store.cases().newest_first(Some("c00003"), 10).unwrap();
        assert_eq!(older[0].id, "c00002x");
        assert!(older[0].record.is_err(), "a damaged record says so");
        assert_eq!(older[1].record.as_ref().unwrap().id, "c00002");
        assert_eq!(older.len(), 4);

        let mut seen = Vec::new();
        store.cases().for_each(|r| seen.push(r.id)).unwrap();
        assert_eq!(seen.len(), n, "every readable case, across chunks");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "oldest first");

        assert_eq!(store.cases().get("c00001").unwrap().unwrap().id, "c00001");
        assert!(store.cases().get("nope").unwrap().is_none());
        assert!(store.personal().get("c00001").unwrap().is_none());
        store.probe().unwrap();
        assert_eq!(
            store.backend_name(),
            match kind {
                Kind::Redb => "redb",
                Kind::Sled => "sled",
            }
        );
    }

    fn versions_of_one_workflow(kind: Kind) {
        let (_dir, store) = store(kind);
        let mut batch = Batch::new();
        for (id, version) in [("refund", 2), ("refund", 1), ("address", 1)] {
            let digest = format!("{id}-{version}");
            let bundle = WorkflowBundle {
                id: id.into(),
                version,
                digest: digest.clone(),
                files: BTreeMap::new(),
            };
            batch.put(Table::Workflows, digest, &bundle);
        }
        store.commit(batch).unwrap();
        let versions: Vec<u32> = store
            .workflow_versions()
            .of("refund")
            .unwrap()
            .iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(versions, [1, 2]);
        assert!(store.workflow_versions().of("none").unwrap().is_empty());
        let by_digest = store.workflow_versions().get("refund-2").unwrap().unwrap();
        assert_eq!((by_digest.id.as_str(), by_digest.version), ("refund", 2));
        assert!(store.workflow_versions().contains("address-1").unwrap());
        assert!(!store.workflow_versions().contains("address-2").unwrap());
    }

    /// What the runner finds by record (due timers, notifications, a customer's cases, a
    /// case's calls and idempotency keys) and deletes as rows, without a table name.
    fn the_runners_records_by_case(kind: Kind) {
        let (_dir, store) = store(kind);
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let mut batch = Batch::new();
        batch
            .put_raw(Table::Timers, timer_key(at(10), "c1"), Vec::new())
            .put_raw(Table::Timers, timer_key(at(20), "c2"), Vec::new())
            .put_raw(Table::Timers, timer_key(at(30), "c3"), Vec::new())
            .put_raw(Table::CustomerCases, key(&["cust-a", "c1"]), Vec::new())
            .put_raw(Table::CustomerCases, key(&["cust-a", "c2"]), Vec::new())
            .put_raw(Table::CustomerCases, key(&["cust-ab", "c3"]), Vec::new())
            .put_raw(Table::Outbox, "c1:book:1", b"{}".to_vec())
            .put_raw(Table::Outbox, "c10:book:1", b"{}".to_vec());
        for (k, case_id) in [("k1", "c1"), ("k2", "c1"), ("k3", "c2")] {
            let entry = IdempotencyEntry {
                case_id: case_id.into(),
                request_digest: "d".into(),
            };
            batch.put(Table::Idempotency, k, &entry);
        }
        for id in ["c1", "c2"] {
            let n = Notification {
                url: format!("http://crm.local/{id}"),
                since: at(1),
            };
            batch.put(Table::Notifications, id, &n);
        }
        store.commit(batch).unwrap();

        let due = store.timers().due(at(20), 10).unwrap();
        let ids: Vec<&str> = due.iter().map(|d| d.case_id.as_str()).collect();
        assert_eq!(
            ids,
            ["c1", "c2"],
            "due at or before the time, earliest first"
        );
        assert_eq!(store.customer_cases().of("cust-a").unwrap(), ["c1", "c2"]);
        let mut batch = Batch::new();
        for id in ["c1", "c2", "c3"] {
            batch.put_case(&case(id));
        }
        store.commit(batch).unwrap();
        let newest = |limit| -> Vec<String> {
            let records = store.customer_cases().newest_records("cust-a", limit);
            records.unwrap().into_iter().map(|r| r.id).collect()
        };
        assert_eq!(newest(10), ["c1", "c2"], "not `cust-ab`'s case");
        assert_eq!(newest(1), ["c2"], "the newest, when bounded");
        let notes = store.notifications().after(Some("c1"), 10).unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].0, "c2");
        assert_eq!(store.notifications().count().unwrap(), 2);
        let calls = store.outbox().of_case("c1").unwrap();
        assert_eq!(calls.len(), 1, "not the calls of `c10`");
        let mut keys = store.idempotency().rows_by_case().unwrap();
        assert_eq!(keys["c1"].len(), 2);

        let mut batch = Batch::new();
        for row in due.into_iter().map(|d| d.row).chain(calls) {
            batch.remove(row);
        }
        for row in keys.remove("c1").unwrap() {
            batch.remove(row);
        }
        batch.delete_notification("c1");
        store.commit(batch).unwrap();
        let left = store.timers().due(at(40), 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].case_id, "c3");
        assert!(store.outbox().of_case("c1").unwrap().is_empty());
        assert!(store.outbox().of_case("c10").unwrap().len() == 1);
        let keys = store.idempotency().rows_by_case().unwrap();
        assert!(!keys.contains_key("c1") && keys["c2"].len() == 1);
        assert!(store.notifications().get("c1").unwrap().is_none());
        assert!(store.notifications().get("c2").unwrap().is_some());
    }

    #[test]
    fn redb_tables() {
        cases_page_newest_first_and_skip_what_is_damaged(Kind::Redb);
        versions_of_one_workflow(Kind::Redb);
        the_runners_records_by_case(Kind::Redb);
    }

    #[test]
    fn sled_tables() {
        cases_page_newest_first_and_skip_what_is_damaged(Kind::Sled);
        versions_of_one_workflow(Kind::Sled);
        the_runners_records_by_case(Kind::Sled);
    }
}
