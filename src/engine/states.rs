//! The engine's copy of every job's persisted state, so that the once-a-second tick judges
//! due-ness without reading thousands of rows from the store each time. Each run's end puts
//! the state it recorded; a full re-read every [`REFRESH`] picks up what other processes (CLI
//! commands) recorded. A run itself still reads its job's state from the store under the job's
//! lock, so the copy only decides *when* a job is looked at, never what is recorded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::JobState;

/// How often the copy is re-read from the store.
pub const REFRESH: Duration = Duration::from_secs(30);

/// Job states by job name, with the change counter that orders them against re-reads.
#[derive(Debug, Default)]
pub struct StateCache {
    by_job: HashMap<String, Entry>,
    /// Bumped at every [`StateCache::put`].
    changes: u64,
    /// When the last full read was taken; `None` before the first.
    loaded_at: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    state: JobState,
    /// [`StateCache::changes`] when this entry was put; 0 for entries from a full read.
    put_at: u64,
}

impl StateCache {
    pub fn get(&self, job: &str) -> Option<&JobState> {
        self.by_job.get(job).map(|e| &e.state)
    }

    /// Whether a full re-read is due at `now`.
    pub fn stale(&self, now: Instant) -> bool {
        self.loaded_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH)
    }

    /// A marker to take just before reading every state from the store, for [`Self::load`].
    pub fn mark(&self) -> u64 {
        self.changes
    }

    /// Takes a full read begun at `mark`; states put since are newer than the read and stay.
    pub fn load(&mut self, states: Vec<JobState>, mark: u64, now: Instant) {
        for state in states {
            match self.by_job.get_mut(&state.job) {
                Some(e) if e.put_at > mark => {}
                Some(e) => {
                    e.state = state;
                    e.put_at = 0;
                }
                None => {
                    self.by_job
                        .insert(state.job.clone(), Entry { state, put_at: 0 });
                }
            }
        }
        self.loaded_at = Some(now);
    }

    /// The state a run just recorded.
    pub fn put(&mut self, state: JobState) {
        self.changes += 1;
        let put_at = self.changes;
        match self.by_job.get_mut(&state.job) {
            Some(e) => *e = Entry { state, put_at },
            None => {
                self.by_job
                    .insert(state.job.clone(), Entry { state, put_at });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(job: &str, failures: u32) -> JobState {
        JobState {
            job: job.into(),
            kind: "api-key".into(),
            consecutive_failures: failures,
            ..JobState::default()
        }
    }

    #[test]
    fn a_read_begun_before_a_put_does_not_undo_it() {
        let t0 = Instant::now();
        let mut c = StateCache::default();
        assert!(c.stale(t0));
        c.load(vec![state("a", 1), state("b", 1)], c.mark(), t0);
        assert!(!c.stale(t0));
        assert!(c.stale(t0 + REFRESH));

        // A re-read starts, a run of `a` records its end, then the re-read lands.
        let mark = c.mark();
        c.put(state("a", 0));
        c.load(vec![state("a", 1), state("b", 2)], mark, t0);
        assert_eq!(c.get("a").map(|s| s.consecutive_failures), Some(0));
        assert_eq!(c.get("b").map(|s| s.consecutive_failures), Some(2));

        // A later read sees the put's commit (and whatever came after it) and wins.
        c.load(vec![state("a", 3)], c.mark(), t0);
        assert_eq!(c.get("a").map(|s| s.consecutive_failures), Some(3));
        assert!(c.get("c").is_none());
    }
}
