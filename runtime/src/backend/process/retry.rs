//! `retries` and `retry_panics`: which failed jobs a process session
//! sends again (the sending is in `watch.rs`, which sees the failures).

use crate::error::Error;

/// How a session runs a failed job again.
#[derive(Clone, Copy, Default)]
pub(crate) struct Retry {
    /// How many more times a job may run.
    pub(crate) retries: u32,
    /// Whether a panic is retried too.
    pub(crate) panics: bool,
    /// Whether each retry is said on stderr.
    pub(crate) verbose: bool,
}

impl Retry {
    /// Whether a job that has run `attempts` times, the last ending with
    /// `cause`, runs again: a death, a timeout or the memory limit (or a
    /// panic, with `retry_panics`) with attempts left.
    pub(crate) fn allows(&self, cause: &Error, attempts: u32) -> bool {
        let retried = match cause {
            Error::WorkerDied { .. } | Error::Timeout { .. } | Error::MemoryLimit { .. } => true,
            Error::Panic { .. } => self.panics,
            _ => false,
        };
        retried && attempts <= self.retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_and_timeouts_are_retried_panics_only_when_asked() {
        let died = Error::WorkerDied {
            task: "t".into(),
            index: 0,
            pid: 1,
            status: "killed by signal 9 (SIGKILL)".into(),
            memory: None,
        };
        let panicked = Error::Panic {
            task: "t".into(),
            index: 0,
            message: "no".into(),
            location: None,
        };
        let config = Error::Config("bad".into());
        let two = Retry {
            retries: 2,
            ..Retry::default()
        };
        assert!(two.allows(&died, 1) && two.allows(&died, 2) && !two.allows(&died, 3));
        assert!(!two.allows(&panicked, 1) && !two.allows(&config, 1));
        let panics = Retry {
            panics: true,
            ..two
        };
        assert!(panics.allows(&panicked, 2) && !panics.allows(&panicked, 3));
        assert!(!Retry::default().allows(&died, 1));
        let memory = Error::MemoryLimit {
            task: "t".into(),
            index: 0,
            pid: 1,
            peak: 2 << 30,
            limit: 1 << 30,
        };
        assert!(two.allows(&memory, 2) && !two.allows(&memory, 3));
    }
}
