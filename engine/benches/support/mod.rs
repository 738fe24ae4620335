//! What the store benchmarks share: a runner over the shipped workflows with no back-office
//! and no model (neither is asked in these benchmarks).

use std::path::Path;
use std::sync::Arc;

use casegraph_engine::classify::{self, Classification};
use casegraph_engine::exec::{CallError, CallRequest, Connector, SystemClock};
use casegraph_engine::intake::Received;
use casegraph_engine::rules::Rules;
use casegraph_engine::runner::{Parts, Runner};
use casegraph_engine::store::{self, Store};
use casegraph_engine::workflow::Catalog;
use serde_json::Value;

struct NoCalls;
impl Connector for NoCalls {
    fn call(&self, _: &CallRequest) -> Result<Value, CallError> {
        Err(CallError {
            retryable: false,
            message: "no calls in this benchmark".into(),
        })
    }
}

struct NoModel;
impl classify::Service for NoModel {
    fn classify(&self, _: &Received) -> Result<Classification, classify::Error> {
        Err(classify::Error::Inference("not used".into()))
    }
}

/// A runner over the shipped workflows on a `kind` store in `dir`.
pub fn runner(dir: &Path, kind: store::Kind) -> Runner {
    let rules = Arc::new(Rules::default());
    let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows");
    let catalog = Arc::new(Catalog::load(&workflows, &rules).expect("shipped workflows"));
    let store = Store::open(
        dir,
        &store::Options {
            backend: kind,
            ..store::Options::default()
        },
    )
    .unwrap();
    Runner::new(Parts {
        store,
        catalog,
        rules,
        connector: Arc::new(NoCalls),
        classifier: Arc::new(NoModel),
        clock: Arc::new(SystemClock),
        versions_dir: dir.join("versions"),
        priority_sla: casegraph_engine::runner::DEFAULT_PRIORITY_SLA,
        quiet_hours: None,
    })
}
