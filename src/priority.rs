//! Scheduling priority of the service's own threads: intake before case work.
//!
//! On a two-core box the case workers and the intent model can keep both cores busy, and a
//! request waiting to be made durable then waits behind them for a core. Linux keeps a nice
//! value per thread, so the threads that run cases (and every thread they start, such as
//! the model's) lower their own; intake, the commit thread and the HTTP runtime stay where
//! the operator started the server. Lowering needs no privilege; nothing here raises one.

/// The highest nice value Linux has (the lowest priority).
pub const MAX_NICE: u8 = 19;

/// Lowers the calling thread's priority by `by` nice steps (capped at [`MAX_NICE`]); the
/// threads it starts afterwards inherit it. Only this thread changes, never the process.
/// A failure is logged and changes nothing: the thread runs at its old priority.
pub fn lower_this_thread(by: u8) {
    if by == 0 {
        return;
    }
    // `None`: PRIO_PROCESS with who = 0, which on Linux is the calling thread alone.
    let lowered = rustix::process::getpriority_process(None).and_then(|now| {
        let to = (now + i32::from(by)).min(i32::from(MAX_NICE));
        rustix::process::setpriority_process(None, to)
    });
    if let Err(e) = lowered {
        tracing::warn!("cannot lower a background thread's priority by {by}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(None).expect("getpriority")
    }

    #[test]
    fn only_the_calling_thread_and_its_children_are_lowered_and_never_past_19() {
        let before = nice();
        let (lowered, child, capped) = std::thread::spawn(move || {
            lower_this_thread(3);
            let lowered = nice();
            let child = std::thread::spawn(nice).join().expect("child");
            lower_this_thread(MAX_NICE);
            (lowered, child, nice())
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, (before + 3).min(19));
        assert_eq!(child, lowered, "a thread started afterwards inherits it");
        assert_eq!(capped, 19);
        assert_eq!(nice(), before, "the calling thread's siblings keep theirs");
    }
}
