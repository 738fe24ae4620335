//! casegraph's domain core: the workflow format and its compiler, the sandboxed rhai rules,
//! the routing policy, the executor and the fixture runner, channel intake and the intent model.
//!
//! No I/O beyond reading workflow directories: clocks, connectors and storage come in
//! through traits, so a run is deterministic and the same code serves the CLI, the tests
//! and the service. This crate must not depend on HTTP or storage crates; the one inference
//! adapter (`classify::onnx`, ONNX Runtime through `ort`) is behind the `onnx` feature.
#![forbid(unsafe_code)]

pub mod classify;
pub mod exec;
pub mod fixture;
pub mod intake;
pub mod routing;
pub mod rules;
pub mod workflow;
mod yaml;
