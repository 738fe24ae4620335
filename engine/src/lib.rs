//! casegraph's domain core: the workflow format and its compiler, the sandboxed rhai rules,
//! the routing policy, the executor and the fixture runner; the durable runner with its
//! store and audit log; channel intake and the intent model.
//!
//! A request becomes a case along one corridor, [`pipeline`]: intake, classification,
//! routing, start; the runner, the fixtures and the application's entry points all call it.
//!
//! The domain modules (`workflow`, `rules`, `routing`, `case`, `exec`, `fixture`, `audit`,
//! `intake`, `pipeline`) do no I/O beyond reading workflow directories: clocks, connectors
//! and storage come in through traits, so a run is deterministic and the same code serves the
//! CLI, the tests and the service. The storage engines live behind [`store::Backend`] in
//! `store`, and `runner`
//! is where the executor meets the store. This crate must not depend on HTTP crates; the one
//! inference adapter (`classify::onnx`, ONNX Runtime through `ort`) is behind the `onnx`
//! feature.
#![forbid(unsafe_code)]

pub mod audit;
pub mod case;
pub mod classify;
pub mod customer;
pub mod diagnostic;
pub mod exec;
pub mod files;
pub mod fixture;
pub mod intake;
pub mod pipeline;
pub mod reference;
pub mod routing;
pub mod rules;
pub mod runner;
pub mod store;
pub mod workflow;
mod yaml;
