//! The fleet: many boxes, one hub, on NATS JetStream (ADR 0019, `docs/fleet.md`).
//!
//! A box relays what it commits (audit records, case summaries without personal data,
//! health snapshots) into its branch stream; the hub sources every branch stream, keeps a
//! fleet view and verifies each branch's audit chain; the hub publishes signed workflow
//! bundles that a box applies through the same path as `POST /v1/workflows`.
//! [`wire`] is the contract between the two sides: subjects, streams, message ids and the
//! JSON messages. [`connect`] opens a NATS connection from the `[fleet]` options.

pub mod auth;
pub mod connect;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod publish;
pub mod relay;
pub mod rollout;
pub mod sign;
pub mod wire;
