//! The journal: changes from every connection, committed in batches by one
//! writer thread (group commit), with a watermark that connections wait on
//! before sending an acknowledgement that depends on a change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::{Durability, Store, StoreOp};

/// Changes waiting for the writer.
#[derive(Default)]
struct Queue {
    ops: Vec<StoreOp>,
    /// Sequence number of the last change pushed.
    issued: u64,
    closed: bool,
}

/// The write path to a [`Store`].
pub(crate) struct Journal {
    queue: Mutex<Queue>,
    /// Held while pushing changes that must be committed together (the
    /// writer takes it before taking a batch).
    group: Mutex<()>,
    wake: Condvar,
    /// The last sequence number committed.
    committed: watch::Sender<u64>,
    /// A commit failed: nothing is acknowledged from then on.
    failed: AtomicBool,
    durability: Durability,
}

/// The journal's store failed: what depends on it must not be acknowledged.
#[derive(Debug)]
pub(crate) struct StoreFailed;

impl Journal {
    /// Starts the writer thread on `store`.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        durability: Durability,
    ) -> std::io::Result<(Arc<Self>, std::thread::JoinHandle<()>)> {
        let journal = Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            group: Mutex::new(()),
            wake: Condvar::new(),
            committed: watch::channel(0).0,
            failed: AtomicBool::new(false),
            durability,
        });
        let writer = journal.clone();
        let handle = std::thread::Builder::new()
            .name("fulmar-store".into())
            .spawn(move || writer.run(&*store))?;
        Ok((journal, handle))
    }

    /// Whether acknowledgements wait for commits.
    pub(crate) fn immediate(&self) -> bool {
        self.durability == Durability::Immediate
    }

    /// Queues one change; returns its sequence number.
    pub(crate) fn push(&self, op: StoreOp) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.issued += 1;
        q.ops.push(op);
        let seq = q.issued;
        drop(q);
        if self.immediate() {
            self.wake.notify_one();
        }
        seq
    }

    /// While the returned guard lives, the changes pushed (by anyone) go into
    /// one commit: the writer does not cut a batch in between. Hold it only
    /// for a few pushes, never across an `.await`.
    pub(crate) fn group(&self) -> MutexGuard<'_, ()> {
        self.group.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sequence number of the last change pushed so far.
    pub(crate) fn issued(&self) -> u64 {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .issued
    }

    /// Waits until every change up to `seq` is committed.
    pub(crate) async fn wait(&self, seq: u64) -> Result<(), StoreFailed> {
        let mut rx = self.committed.subscribe();
        if rx.wait_for(|c| *c >= seq).await.is_err() {
            return Err(StoreFailed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreFailed);
        }
        Ok(())
    }

    /// Commits what is queued, then stops the writer.
    pub(crate) fn close(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.wake.notify_one();
    }

    fn run(&self, store: &dyn Store) {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if let Durability::Periodic(every) = self.durability
                    && !q.closed
                {
                    // Collect for one interval (a close cuts it short).
                    q = self
                        .wake
                        .wait_timeout(q, every)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                while q.ops.is_empty() && !q.closed {
                    q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
            }
            // Never in the middle of a group (lock order: group, then queue).
            let (ops, last, closed) = {
                let _group = self.group();
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                let ops = std::mem::take(&mut q.ops);
                (ops, q.issued, q.closed)
            };
            if !ops.is_empty() {
                let ops = coalesce(ops);
                if let Err(error) = store.commit(&ops) {
                    tracing::error!(
                        %error,
                        changes = ops.len(),
                        "store commit failed; acknowledgements stop"
                    );
                    self.failed.store(true, Ordering::Release);
                }
                self.committed.send_replace(last);
            }
            if closed {
                return;
            }
        }
    }
}

/// Drops the changes of a batch that cancel out: a message put and deleted
/// in the same batch (its subscriber acknowledged it before the commit) is
/// never written, nor what happened to it in between.
fn coalesce(ops: Vec<StoreOp>) -> Vec<StoreOp> {
    use std::collections::HashSet;
    let mut put: HashSet<(&str, u64)> = HashSet::new();
    let mut gone: HashSet<(Arc<str>, u64)> = HashSet::new();
    for op in &ops {
        match op {
            StoreOp::PutMessage { client, seq, .. } => {
                put.insert((client, *seq));
            }
            StoreOp::DeleteMessage { client, seq } if put.contains(&(&**client, *seq)) => {
                gone.insert((client.clone(), *seq));
            }
            _ => {}
        }
    }
    if gone.is_empty() {
        return ops;
    }
    ops.into_iter()
        .filter(|op| match op {
            StoreOp::PutMessage { client, seq, .. }
            | StoreOp::MarkSent { client, seq, .. }
            | StoreOp::DeleteMessage { client, seq } => !gone.contains(&(client.clone(), *seq)),
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredMessage;
    use fulmar_codec::{MqttString, Publish};

    fn put(client: &str, seq: u64) -> StoreOp {
        StoreOp::PutMessage {
            client: Arc::from(client),
            seq,
            message: StoredMessage {
                publish: Publish::new(MqttString::from("t"), "x".into()),
                stored_at: 0,
                packet_id: None,
                released: false,
            },
        }
    }

    fn del(client: &str, seq: u64) -> StoreOp {
        StoreOp::DeleteMessage {
            client: Arc::from(client),
            seq,
        }
    }

    #[test]
    fn a_message_put_and_deleted_in_one_batch_is_not_written() {
        let ops = vec![
            put("a", 1),
            put("a", 2),
            del("b", 7),
            del("a", 1),
            put("b", 1),
        ];
        assert_eq!(coalesce(ops), vec![put("a", 2), del("b", 7), put("b", 1)]);
        // A delete before the put (another key order) is kept.
        let ops = vec![del("a", 3), put("a", 3)];
        assert_eq!(coalesce(ops.clone()), ops);
    }
}
