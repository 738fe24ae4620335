//! The box's health snapshot ([`wire::Health`]): what the hub shows for a branch beside
//! its cases. Built from the running service's state; blocking (it reads the store), so the
//! relay runs it on a blocking thread. Holds counts, versions and the chain head only,
//! never a case's content.

use std::collections::BTreeMap;

use casegraph_engine::store::Store;
use jiff::Timestamp;

use super::wire;
use crate::api::AppState;

/// The snapshot of the box behind `state`, with the relay's `backlog`.
pub fn snapshot(state: &AppState, branch: &str, backlog: u64) -> wire::Health {
    let runner = &state.runner;
    let store = runner.store();
    let catalog = runner.catalog();
    let workflows = catalog
        .workflows()
        .map(|w| (w.id.clone(), w.version))
        .collect();
    let mut open_tasks = BTreeMap::new();
    match runner.open_tasks_by_queue() {
        Ok(queues) => {
            for (queue, q) in queues {
                open_tasks.insert(queue, q.open as u64);
            }
        }
        Err(e) => tracing::warn!("fleet health: cannot list the open tasks: {e}"),
    }
    state.memory.sample();
    wire::Health {
        branch: branch.to_string(),
        at: Timestamp::now(),
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        model_version: Some(state.model.clone()),
        routing_version: Some(catalog.routing.version),
        workflows,
        queue_depth: state.workers.queued() as u64,
        open_tasks,
        cases: cases_by_status(store),
        rss_bytes: Some(state.memory.resident()).filter(|b| *b > 0),
        audit_head: store
            .audit_head()
            .map_err(|e| tracing::warn!("fleet health: cannot read the audit head: {e}"))
            .ok()
            .filter(|h| h.seq > 0)
            .map(|h| wire::ChainHead {
                seq: h.seq,
                hash: h.hash,
            }),
        backlog,
        chain_problem: match store.audit_verify_incremental() {
            Ok(Ok(_)) => None,
            Ok(Err(problem)) => Some(problem.to_string()),
            Err(e) => Some(format!("the chain could not be read: {e}")),
        },
    }
}

/// Cases in the live store by status (one pass over the case records, a chunk at a time).
fn cases_by_status(store: &Store) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    if let Err(e) = store.cases().for_each(|c| {
        *by.entry(c.status.as_str().to_string()).or_insert(0) += 1;
    }) {
        tracing::warn!("fleet health: cannot count the cases: {e}");
    }
    by
}
