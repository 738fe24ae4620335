//! Hostile input: auth.
