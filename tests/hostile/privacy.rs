//! Hostile input: privacy.
