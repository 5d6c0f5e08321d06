//! Group commit of run endings. Every run ends with one durable write (its record, the job's new
//! state, the lock released); each commit is a round trip to the store (and on PostgreSQL a
//! wait for the disk), so in a sweep of thousands of due jobs one commit per run would bound the
//! whole daemon. The daemon's runs therefore hand their endings to this task, which commits
//! whatever has queued up meanwhile in one transaction — as durable as before, each run still
//! waits for its own commit, but many runs share it. CLI commands (no recorder running) write
//! directly.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{RunEnding, Store, StoreError};

/// Most endings committed in one transaction.
const MAX_BATCH: usize = 256;

/// One run's ending and where to say it is recorded.
pub(super) struct Ending {
    pub ending: RunEnding,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// Commits endings in batches until every sender is gone.
pub(super) async fn record(store: Arc<dyn Store>, mut queue: mpsc::UnboundedReceiver<Ending>) {
    while let Some(first) = queue.recv().await {
        let mut endings = vec![first.ending];
        let mut waiting = vec![first.done];
        while endings.len() < MAX_BATCH
            && let Ok(next) = queue.try_recv()
        {
            endings.push(next.ending);
            waiting.push(next.done);
        }
        match store.end_runs(&endings).await {
            Ok(()) => {
                for done in waiting {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) if waiting.len() == 1 => {
                if let Some(done) = waiting.pop() {
                    let _ = done.send(Err(e));
                }
            }
            // One bad ending must not fail the others: record them one by one, so each run
            // gets its own answer.
            Err(_) => {
                for (ending, done) in endings.iter().zip(waiting) {
                    let _ = done.send(store.end_runs(std::slice::from_ref(ending)).await);
                }
            }
        }
    }
}
