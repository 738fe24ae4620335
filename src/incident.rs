//! Incidents: a failure that is not the client's gets a short random id, logged with the
//! details and shown to the client without them, so an operator can find the log line.

/// A fresh incident id (8 hex digits).
pub fn id() -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    hex::encode(r)
}

/// What a caught panic said, for the log only (it may quote case data).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
