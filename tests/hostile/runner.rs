//! Hostile input: runner.
