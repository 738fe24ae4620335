//! The `casegraph` application: the concrete parts around the engine and the HTTP service.
//!
//! This crate is the one place that knows every concrete type: the store backend, the
//! rules engine limits, the classifier, the connectors (HTTP or the simulated back office),
//! the token file. The engine crate stays free of HTTP and I/O choices; the CLI
//! (`src/main.rs`, `src/cli/`) is a thin layer over this library, and the end-to-end tests
//! drive [`serve::run`] on `127.0.0.1:0`.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod backoffice;
pub mod classifier;
pub mod config;
pub mod connector;
pub mod data_dir;
pub mod fleet;
pub mod http;
pub mod incident;
pub mod library;
pub mod memory;
pub mod metrics;
pub mod priority;
pub mod profile;
pub mod retention;
pub mod serve;
pub mod settings;
pub mod storage;
pub mod tls;
pub mod webhook;
pub mod workers;
