//! Hostile input: bundle.
