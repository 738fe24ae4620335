//! Hostile input: sandbox.
