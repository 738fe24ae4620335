//! The open tasks in the inbox's order, held in memory beside the `tasks` table, so that a
//! reviewer's first page (and the open tasks per queue) costs the page, not a read and a
//! decode of every open task: a night's backlog can be tens of thousands.
//!
//! The order is derived, never stored: it is built from the table the first time it is
//! asked for, and the commit thread keeps it in step with every write to the table after
//! the write is durable, in commit order, so it never shows a task that is not on disk. A
//! write that failed may have landed in part on the way down, so after one the order is
//! dropped and built again from the table at the next question. A listing reads each task
//! of its page from the table; one deleted meanwhile is passed over.
//!
//! Memory: about 200 bytes per open task (its id twice, the queue shared).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use jiff::Timestamp;
use serde::Deserialize;

use super::{Error, Op, Store, Table, TaskEntry};

/// Where a task stands in the inbox: high priority first, then the soonest due (a task with
/// no due time after every dated one), then the oldest, then by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// `false` for a high-priority task, so that those sort first.
    normal: bool,
    undated: bool,
    due: Option<Timestamp>,
    created_at: Timestamp,
    task_id: String,
}

impl Place {
    /// The place of a task with these fields.
    pub fn new(high: bool, due: Option<Timestamp>, created_at: Timestamp, task_id: &str) -> Place {
        Place {
            normal: !high,
            undated: due.is_none(),
            due,
            created_at,
            task_id: task_id.to_string(),
        }
    }

    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// This place as an opaque, URL-safe text: the cursor a listing hands out to go on
    /// after its last task (`GET /v1/tasks?after=`). It names a place, not a task, so it
    /// stays good when that task is completed meanwhile.
    pub fn cursor(&self) -> String {
        let due = self
            .due
            .map(|d| d.as_nanosecond().to_string())
            .unwrap_or_default();
        hex::encode(format!(
            "{}|{due}|{}|{}",
            if self.normal { "n" } else { "h" },
            self.created_at.as_nanosecond(),
            self.task_id
        ))
    }

    /// The place a [`Place::cursor`] text names; `None` for any other text.
    pub fn from_cursor(cursor: &str) -> Option<Place> {
        let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
        let mut parts = text.splitn(4, '|');
        let high = match parts.next()? {
            "h" => true,
            "n" => false,
            _ => return None,
        };
        let due = match parts.next()? {
            "" => None,
            n => Some(Timestamp::from_nanosecond(n.parse().ok()?).ok()?),
        };
        let created_at = Timestamp::from_nanosecond(parts.next()?.parse().ok()?).ok()?;
        let task_id = parts.next().filter(|id| !id.is_empty())?;
        Some(Place::new(high, due, created_at, task_id))
    }
}

/// The fields of a stored task the order needs (the rest is not decoded).
#[derive(Deserialize)]
struct Row {
    task_id: String,
    queue: String,
    created_at: Timestamp,
    sla_due: Option<Timestamp>,
    /// `high`, or absent for a normal one (as [`TaskEntry`] writes it).
    #[serde(default)]
    priority: Option<String>,
}

/// A queue's open tasks and when its oldest was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenQueue {
    pub open: usize,
    pub oldest: Timestamp,
}

#[derive(Debug, Default)]
struct Order {
    /// Whether the maps hold the table: false until built, and after a failed write.
    built: bool,
    /// Every open task in the inbox's order, with its queue.
    places: BTreeMap<Place, Arc<str>>,
    /// task id → its place, to move or remove it when the table's row changes.
    by_id: HashMap<String, Place>,
    /// The queues' names, each held once.
    queues: Vec<Arc<str>>,
}

impl Order {
    fn queue(&mut self, name: &str) -> Arc<str> {
        if let Some(q) = self.queues.iter().find(|q| &***q == name) {
            return q.clone();
        }
        let q: Arc<str> = Arc::from(name);
        self.queues.push(q.clone());
        q
    }

    fn insert(&mut self, row: Row) {
        self.remove(&row.task_id);
        let high = row.priority.as_deref() == Some("high");
        let place = Place::new(high, row.sla_due, row.created_at, &row.task_id);
        let queue = self.queue(&row.queue);
        self.by_id.insert(row.task_id, place.clone());
        self.places.insert(place, queue);
    }

    fn remove(&mut self, task_id: &str) {
        if let Some(place) = self.by_id.remove(task_id) {
            self.places.remove(&place);
        }
    }

    fn clear(&mut self) {
        *self = Order::default();
    }
}

/// The inbox order of a store (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct Inbox(RwLock<Order>);

impl Inbox {
    /// Follows a durable write: each task row put takes its place, each deleted one leaves.
    pub(super) fn written(&self, groups: &[Vec<Op>]) {
        let mut order = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if !order.built {
            // whoever builds it next reads the table, this write included
            return;
        }
        for op in groups
            .iter()
            .flatten()
            .filter(|op| op.table == Table::Tasks)
        {
            let Ok(id) = std::str::from_utf8(&op.key) else {
                order.clear();
                return;
            };
            match &op.value {
                None => order.remove(id),
                Some(v) => match serde_json::from_slice::<Row>(v) {
                    Ok(row) if row.task_id == id => order.insert(row),
                    // the build reads it again and says what is wrong with it
                    _ => {
                        order.clear();
                        return;
                    }
                },
            }
        }
    }

    /// Forgets the order after a failed write (which may have landed in part).
    pub(super) fn failed(&self) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The order, built from `store`'s task table (a chunk at a time) if it is not.
    fn read(&self, store: &Store) -> Result<RwLockReadGuard<'_, Order>, Error> {
        {
            let order = self.0.read().unwrap_or_else(PoisonError::into_inner);
            if order.built {
                return Ok(order);
            }
        }
        {
            // Writes wait while the table is read, and apply after: the order then holds
            // each of them whether the read saw it or not.
            let mut order = self.0.write().unwrap_or_else(PoisonError::into_inner);
            if !order.built {
                order.clear();
                let built = store.each_chunk(Table::Tasks, super::EACH_CHUNK, |chunk| {
                    for (k, v) in &chunk {
                        order.insert(super::decode::<Row>("task", k, v)?);
                    }
                    Ok(())
                });
                if let Err(e) = built {
                    order.clear();
                    return Err(e);
                }
                order.built = true;
            }
        }
        Ok(self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The ids of the first `n` open tasks after `after` (from the first if `None`), only
    /// `queue`'s if given, in the inbox's order.
    pub(super) fn after(
        &self,
        store: &Store,
        queue: Option<&str>,
        after: Option<&Place>,
        n: usize,
    ) -> Result<Vec<Place>, Error> {
        let order = self.read(store)?;
        let range = match after {
            Some(p) => order
                .places
                .range((std::ops::Bound::Excluded(p), std::ops::Bound::Unbounded)),
            None => order.places.range(..),
        };
        Ok(range
            .filter(|(_, q)| queue.is_none_or(|want| &***q == want))
            .take(n)
            .map(|(p, _)| p.clone())
            .collect())
    }

    /// Open tasks per queue and when each queue's oldest was created.
    pub(super) fn per_queue(&self, store: &Store) -> Result<BTreeMap<String, OpenQueue>, Error> {
        let order = self.read(store)?;
        let mut counts = BTreeMap::<&str, OpenQueue>::new();
        for (place, queue) in &order.places {
            let c = counts.entry(queue).or_insert(OpenQueue {
                open: 0,
                oldest: place.created_at,
            });
            c.open += 1;
            c.oldest = c.oldest.min(place.created_at);
        }
        Ok(counts
            .into_iter()
            .map(|(q, c)| (q.to_string(), c))
            .collect())
    }
}

impl Store {
    /// The first `limit` open tasks in the inbox's order ([`Place`]), only `queue`'s if
    /// given: the page's tasks are read, not every open one.
    pub fn tasks_page(&self, queue: Option<&str>, limit: usize) -> Result<Vec<TaskEntry>, Error> {
        self.tasks_after(queue, None, limit)
    }

    /// [`Store::tasks_page`] that begins after the place `after` (a page's last task's),
    /// so a client reads a backlog page by page. A task that moves while the client pages
    /// (its priority or due time changed) is listed where it stands when its page is read.
    pub fn tasks_after(
        &self,
        queue: Option<&str>,
        after: Option<&Place>,
        limit: usize,
    ) -> Result<Vec<TaskEntry>, Error> {
        let mut page: Vec<TaskEntry> = Vec::new();
        let mut last: Option<Place> = after.cloned();
        while page.len() < limit {
            let want = limit - page.len();
            let places = self.inbox.after(self, queue, last.as_ref(), want)?;
            let exhausted = places.len() < want;
            for place in &places {
                // deleted since the order was read: passed over
                if let Some(t) =
                    self.get_json::<TaskEntry>(Table::Tasks, place.task_id.as_bytes(), "task")?
                {
                    page.push(t);
                }
            }
            last = places.into_iter().last();
            if exhausted || last.is_none() {
                break;
            }
        }
        // a task rewritten since the order was read sits where its row now says
        page.sort_by_cached_key(TaskEntry::place);
        Ok(page)
    }

    /// Open tasks per queue and when each queue's oldest was created, without reading a
    /// task.
    pub fn open_tasks_per_queue(&self) -> Result<BTreeMap<String, OpenQueue>, Error> {
        self.inbox.per_queue(self)
    }
}

impl TaskEntry {
    /// Where this task stands in the inbox.
    pub fn place(&self) -> Place {
        Place::new(
            !self.priority.is_normal(),
            self.sla_due,
            self.created_at,
            &self.task_id,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::{Backend, Batch, Entry, Options};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_780_000_000 + s).unwrap()
    }

    fn task(n: usize, queue: &str, priority: &str, due: Option<i64>) -> TaskEntry {
        serde_json::from_value(serde_json::json!({
            "task_id": format!("t{n:05}"), "case_id": format!("c{n:05}"), "queue": queue,
            "node": "review", "title": null, "decisions": ["approve"],
            // created in an order unlike the ids', so a listing must sort
            "created_at": at(((n * 7919) % 1000) as i64), "sla_due": due.map(at),
            "priority": priority,
        }))
        .unwrap()
    }

    fn put(store: &Store, tasks: &[TaskEntry]) -> Result<(), Error> {
        let mut batch = Batch::new();
        for t in tasks {
            batch.put(Table::Tasks, t.task_id.clone(), t);
        }
        store.commit(batch)
    }

    fn delete(store: &Store, ids: &[&str]) -> Result<(), Error> {
        let mut batch = Batch::new();
        for id in ids {
            batch.delete(Table::Tasks, id.as_bytes());
        }
        store.commit(batch)
    }

    fn ids(tasks: &[TaskEntry]) -> Vec<&str> {
        tasks.iter().map(|t| t.task_id.as_str()).collect()
    }

    /// The whole inbox sorted from the table, the way it is defined.
    fn truth(store: &Store, queue: Option<&str>) -> Vec<TaskEntry> {
        let mut all = Vec::new();
        store
            .each_chunk(Table::Tasks, 64, |chunk| {
                for (k, v) in &chunk {
                    let t: TaskEntry = super::super::decode("task", k, v)?;
                    if queue.is_none_or(|q| t.queue == q) {
                        all.push(t);
                    }
                }
                Ok(())
            })
            .unwrap();
        all.sort_by_key(TaskEntry::place);
        all
    }

    /// Every open task, read a page at a time, each page after the cursor of the last.
    fn page_by_page(store: &Store, queue: Option<&str>, limit: usize) -> Vec<TaskEntry> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor.as_deref().map(|c| Place::from_cursor(c).unwrap());
            let page = store.tasks_after(queue, after.as_ref(), limit).unwrap();
            let full = page.len() == limit;
            cursor = page.last().map(|t| t.place().cursor());
            all.extend(page);
            if !full {
                return all;
            }
        }
    }

    fn assert_pages(store: &Store) {
        for queue in [None, Some("refunds"), Some("triage"), Some("nobody's")] {
            let all = truth(store, queue);
            for limit in [1, 3, 50, 299, 1000] {
                let page = store.tasks_page(queue, limit).unwrap();
                assert_eq!(
                    ids(&page),
                    ids(&all[..limit.min(all.len())]),
                    "queue {queue:?}, limit {limit}"
                );
            }
            for limit in [1, 7, 50] {
                assert_eq!(
                    ids(&page_by_page(store, queue, limit)),
                    ids(&all),
                    "queue {queue:?}, pages of {limit}"
                );
            }
        }
        let counts = store.open_tasks_per_queue().unwrap();
        for (queue, c) in &counts {
            let all = truth(store, Some(queue));
            assert_eq!(c.open, all.len());
            assert_eq!(Some(c.oldest), all.iter().map(|t| t.created_at).min());
        }
        assert_eq!(
            counts.values().map(|c| c.open).sum::<usize>(),
            truth(store, None).len()
        );
    }

    #[test]
    fn a_cursor_names_a_place_and_nothing_else_is_one() {
        for place in [
            Place::new(false, None, at(1), "c-01.triage"),
            Place::new(true, Some(at(90)), at(8), "t|with|bars"),
        ] {
            let cursor = place.cursor();
            assert!(
                cursor.chars().all(|c| c.is_ascii_alphanumeric()),
                "{cursor}"
            );
            assert_eq!(Place::from_cursor(&cursor), Some(place));
        }
        let forged = |text: &str| Place::from_cursor(&hex::encode(text));
        for bad in ["", "zz", "6e7c", "not hex at all"] {
            assert_eq!(Place::from_cursor(bad), None, "{bad}");
        }
        for bad in [
            "x||1|t",
            "n||1|",
            "n|soon|1|t",
            "n||yesterday|t",
            "n||1",
            "h|99999999999999999999999999999|1|t",
        ] {
            assert_eq!(forged(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_page_goes_on_after_its_cursor_when_the_last_task_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Options::default()).unwrap();
        let tasks: Vec<TaskEntry> = (0..10)
            .map(|n| task(n, "refunds", "normal", None))
            .collect();
        put(&store, &tasks).unwrap();
        let all = truth(&store, None);
        let first = store.tasks_page(None, 4).unwrap();
        let cursor = first.last().unwrap().place().cursor();
        // the reviewer completes the page's tasks before asking for the next one
        delete(&store, &ids(&first)).unwrap();
        let after = Place::from_cursor(&cursor).unwrap();
        let next = store.tasks_after(None, Some(&after), 4).unwrap();
        assert_eq!(ids(&next), ids(&all[4..8]));
    }

    #[test]
    fn high_priority_first_then_soonest_due_then_oldest() {
        let mut places = [
            Place::new(false, None, at(1), "a"),
            Place::new(false, Some(at(50)), at(9), "b"),
            Place::new(true, None, at(5), "c"),
            Place::new(true, Some(at(90)), at(8), "d"),
            Place::new(false, None, at(0), "e"),
        ];
        places.sort();
        let ids: Vec<&str> = places.iter().map(Place::task_id).collect();
        assert_eq!(ids, ["d", "c", "b", "e", "a"]);
    }

    #[test]
    fn a_page_is_the_head_of_the_whole_inbox_after_every_commit_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Options::default()).unwrap();
        // more than one chunk of the table, three queues, high and normal, dated or not
        let tasks: Vec<TaskEntry> = (0..300)
            .map(|n| {
                let queue = ["triage", "refunds", "cards"][n % 3];
                let priority = if n % 7 == 0 { "high" } else { "normal" };
                task(n, queue, priority, (n % 4 == 0).then_some((n % 50) as i64))
            })
            .collect();
        put(&store, &tasks[..150]).unwrap();
        assert_pages(&store);
        // the order built, later commits move it
        put(&store, &tasks[150..]).unwrap();
        delete(&store, &["t00000", "t00007", "t00100", "no such task"]).unwrap();
        // a task written again with another priority and queue moves
        put(&store, &[task(5, "refunds", "high", Some(1))]).unwrap();
        assert_pages(&store);
        assert_eq!(store.tasks_page(None, 1).unwrap()[0].task_id, "t00005");
        drop(store);

        let store = Store::open(dir.path(), &Options::default()).unwrap();
        assert_eq!(truth(&store, None).len(), 297);
        assert_pages(&store);
    }

    #[test]
    fn listings_beside_commits_never_block_them_and_end_where_the_table_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Options::default()).unwrap();
        std::thread::scope(|s| {
            // two writers open and close tasks while two readers list and count, the
            // first listing building the order while commits arrive
            for w in 0..2 {
                let store = &store;
                s.spawn(move || {
                    for n in 0..200 {
                        let id = w * 1000 + n;
                        let queue = ["triage", "refunds"][n % 2];
                        put(store, &[task(id, queue, "normal", None)]).unwrap();
                        if n % 3 == 0 {
                            delete(store, &[&format!("t{id:05}")]).unwrap();
                        }
                    }
                });
            }
            for r in 0..2 {
                let store = &store;
                s.spawn(move || {
                    for _ in 0..100 {
                        let page = store
                            .tasks_page(["refunds", "triage"].get(r).copied(), 20)
                            .unwrap();
                        assert!(page.windows(2).all(|w| w[0].place() <= w[1].place()));
                        store.open_tasks_per_queue().unwrap();
                    }
                });
            }
        });
        assert_pages(&store);
        assert_eq!(truth(&store, None).len(), 2 * (200 - 67));
    }

    /// A backend whose writes land and then report failure, as a write that failed at its
    /// final sync may have.
    #[derive(Debug)]
    struct LandsThenFails {
        inner: Arc<dyn Backend>,
        fail: AtomicBool,
    }

    impl Backend for LandsThenFails {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
            self.inner.get(table, key)
        }
        fn range(
            &self,
            t: Table,
            from: &[u8],
            to: Option<&[u8]>,
            n: usize,
        ) -> Result<Vec<Entry>, Error> {
            self.inner.range(t, from, to, n)
        }
        fn range_back(
            &self,
            t: Table,
            from: &[u8],
            to: Option<&[u8]>,
            n: usize,
        ) -> Result<Vec<Entry>, Error> {
            self.inner.range_back(t, from, to, n)
        }
        fn last(&self, table: Table) -> Result<Option<Entry>, Error> {
            self.inner.last(table)
        }
        fn write(&self, groups: &[Vec<Op>]) -> Result<(), Error> {
            self.inner.write(groups)?;
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::Io {
                    backend: "test",
                    message: "sync failed".into(),
                });
            }
            Ok(())
        }
        fn disk_bytes(&self) -> u64 {
            self.inner.disk_bytes()
        }
        fn name(&self) -> &'static str {
            "test"
        }
    }

    #[test]
    fn a_write_that_reported_failure_after_it_landed_is_not_missed_by_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LandsThenFails {
            inner: super::super::open_backend(dir.path(), &Options::default()).unwrap(),
            fail: AtomicBool::new(false),
        });
        let store = Store::with_backend(backend.clone(), 8).unwrap();
        put(&store, &[task(1, "triage", "normal", None)]).unwrap();
        assert_eq!(ids(&store.tasks_page(None, 10).unwrap()), ["t00001"]);

        backend.fail.store(true, Ordering::SeqCst);
        assert!(put(&store, &[task(2, "triage", "high", None)]).is_err());
        assert!(delete(&store, &["t00001"]).is_err());
        backend.fail.store(false, Ordering::SeqCst);
        // both landed: the inbox says what the table holds
        assert_eq!(ids(&store.tasks_page(None, 10).unwrap()), ["t00002"]);
        assert_eq!(store.open_tasks_per_queue().unwrap()["triage"].open, 1);
    }

    #[test]
    fn a_task_deleted_after_the_order_was_read_is_passed_over_and_the_page_still_fills() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Options::default()).unwrap();
        let tasks: Vec<TaskEntry> = (0..10).map(|n| task(n, "triage", "normal", None)).collect();
        put(&store, &tasks).unwrap();
        let first = store.tasks_page(None, 3).unwrap();
        // the row goes without the order hearing of it (as between its read and the gets)
        store
            .backend
            .write(&[vec![Op {
                table: Table::Tasks,
                key: first[0].task_id.clone().into_bytes(),
                value: None,
            }]])
            .unwrap();
        let page = store.tasks_page(None, 3).unwrap();
        assert_eq!(ids(&page), ids(&truth(&store, None)[..3]));
    }
}
