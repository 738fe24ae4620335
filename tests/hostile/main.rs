//! Hostile input against the real `casegraph serve`: every role tries to read what it may
//! not, crash the box, hold its workers or race another. Each module takes one trust
//! boundary; `docs/security.md` lists every attack and the test that answers it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bundle;
mod edges;
mod events;
mod fleet;
mod fleet_hub;
mod knowledge;
mod messages;
mod privacy;
mod runner;
mod sandbox;
mod surface;
