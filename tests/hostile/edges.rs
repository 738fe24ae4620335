//! Hostile input: edges.
