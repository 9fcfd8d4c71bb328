//! The journal: changes from every connection, committed in batches by one
//! writer thread (group commit), with a watermark that connections wait on
//! before sending an acknowledgement that depends on a change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use super::{Durability, Store, StoreOp};

/// Changes waiting for the writer.
#[derive(Default)]
struct Queue {
    ops: Vec<StoreOp>,
    /// About how much memory `ops` holds ([`op_bytes`]).
    bytes: usize,
    /// About how much memory the batch the writer is committing holds: a
    /// commit that does not return (a slow disk) keeps it in memory as
    /// long, on top of what is queued meanwhile.
    committing: usize,
    /// `bytes` passed [`Bounds::wake_bytes`]: the writer takes the batch
    /// now, without waiting for its interval or back-off to end.
    urgent: bool,
    /// Sequence number of the last change pushed.
    issued: u64,
    closed: bool,
}

/// How much the journal holds in memory.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// Queued changes holding this many bytes wake the writer at once.
    wake_bytes: usize,
    /// A failing commit with more changes, or more bytes, than this is
    /// given up rather than held for another attempt.
    max_changes: usize,
    max_bytes: usize,
    /// Queued changes holding this many bytes (with the batch being
    /// committed), or this many changes, hold
    /// back the connections that push more ([`Journal::backlogged`]) until
    /// the writer catches up (a slow disk); the number also wakes the writer.
    pace_bytes: usize,
    pace_changes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            wake_bytes: WAKE_BYTES,
            max_changes: MAX_BACKLOG,
            max_bytes: MAX_BACKLOG_BYTES,
            pace_bytes: PACE_BYTES,
            pace_changes: PACE_CHANGES,
        }
    }
}

/// The write path to a [`Store`].
pub(crate) struct Journal {
    queue: Mutex<Queue>,
    /// Held while pushing changes that must be committed together (the
    /// writer takes it before taking a batch).
    group: Mutex<()>,
    wake: Condvar,
    /// How far the commits got.
    progress: watch::Sender<Progress>,
    /// The journal gave up on a failing store (at close, or with too many
    /// changes waiting): nothing is written nor acknowledged from then on.
    failed: AtomicBool,
    durability: Durability,
    /// The first wait before a failed commit is tried again.
    retry_first: std::time::Duration,
    bounds: Bounds,
}

/// How far the writer got.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// The last sequence number committed.
    committed: u64,
    /// The last commit failed (it is being retried).
    failing: bool,
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
        Self::start_retrying(store, durability, RETRY_FIRST, Bounds::default())
    }

    /// [`start`](Self::start), waiting `retry_first` before the first retry
    /// of a failed commit, within `bounds`.
    fn start_retrying(
        store: Arc<dyn Store>,
        durability: Durability,
        retry_first: std::time::Duration,
        bounds: Bounds,
    ) -> std::io::Result<(Arc<Self>, std::thread::JoinHandle<()>)> {
        let journal = Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            group: Mutex::new(()),
            wake: Condvar::new(),
            progress: watch::channel(Progress::default()).0,
            failed: AtomicBool::new(false),
            durability,
            retry_first,
            bounds,
        });
        let writer = journal.clone();
        let handle = std::thread::Builder::new()
            .name("fulmar-store".into())
            .spawn(move || writer.run(&*store))?;
        Ok((journal, handle))
    }

    /// Whether the last commit failed (it is being retried) or the journal
    /// gave up: acknowledgements that depend on a change must not go out.
    pub(crate) fn is_failing(&self) -> bool {
        self.failed.load(Ordering::Acquire) || self.progress.borrow().failing
    }

    /// Whether acknowledgements wait for commits.
    pub(crate) fn immediate(&self) -> bool {
        self.durability == Durability::Immediate
    }

    /// Queues one change; returns its sequence number. Once the journal
    /// has given up, the change is not kept (it would never be written).
    pub(crate) fn push(&self, op: StoreOp) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.issued += 1;
        let seq = q.issued;
        if self.failed.load(Ordering::Acquire) {
            return seq;
        }
        let first = q.ops.is_empty();
        q.bytes += op_bytes(&op);
        q.ops.push(op);
        let urgent = !q.urgent
            && (q.bytes >= self.bounds.wake_bytes || q.ops.len() >= self.bounds.pace_changes);
        q.urgent |= urgent;
        drop(q);
        // Periodic: the writer sleeps while there is nothing, and collects
        // for one interval from the first change, unless the changes grow
        // large first.
        if first || urgent || self.immediate() {
            self.wake.notify_one();
        }
        seq
    }

    /// Whether the changes waiting for the writer, with the batch it is
    /// committing, passed the bound past which
    /// the connections that push more wait for their commit before going on
    /// (under [`Durability::Periodic`] too): a store slower than its
    /// publishers (a slow disk) holds them back instead of the journal
    /// growing without bound in memory.
    pub(crate) fn backlogged(&self) -> bool {
        let q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.bytes.saturating_add(q.committing) >= self.bounds.pace_bytes
            || q.ops.len() >= self.bounds.pace_changes
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

    /// Waits until every change up to `seq` is committed; fails as soon
    /// as a commit of it fails (the writer keeps trying, but what waits for
    /// it, an acknowledgement, must not wait on a store that may not come
    /// back).
    pub(crate) async fn wait(&self, seq: u64) -> Result<(), StoreFailed> {
        let mut rx = self.progress.subscribe();
        let Ok(progress) = rx.wait_for(|p| p.committed >= seq || p.failing).await else {
            return Err(StoreFailed);
        };
        if progress.committed < seq || self.failed.load(Ordering::Acquire) {
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
        // Changes taken from the queue but not committed yet: a batch whose
        // commit failed, retried (with what came after it) until it
        // succeeds, so that the store always holds a prefix of the changes
        // in order (a batch lost in the middle could bring back a deleted
        // record).
        let mut backlog: Vec<StoreOp> = Vec::new();
        let mut retry = self.retry_first;
        let mut attempts = 0_u32;
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if !backlog.is_empty() {
                    // Failing: wait before trying again, whatever is pushed
                    // meanwhile (a close cuts it short).
                    q = self.sleep(q, Instant::now() + retry);
                } else {
                    while q.ops.is_empty() && !q.closed {
                        q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                    }
                    if let Durability::Periodic(every) = self.durability {
                        // Collect for one interval from the first change.
                        q = self.sleep(q, Instant::now() + every);
                    }
                }
            }
            // Never in the middle of a group (lock order: group, then queue).
            let (ops, last, closed) = {
                let _group = self.group();
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                let ops = std::mem::take(&mut q.ops);
                // In memory until its commit returns (after giving up,
                // nothing is queued: none).
                q.committing = std::mem::take(&mut q.bytes);
                q.urgent = false;
                (ops, q.issued, q.closed)
            };
            if self.failed.load(Ordering::Acquire) {
                // Given up: nothing more is written, so the store keeps the
                // prefix it has; waiters learn that their change is not in it.
                self.progress.send_replace(Progress {
                    committed: last,
                    failing: true,
                });
            } else if backlog.is_empty() && ops.is_empty() {
                // Nothing to do (woken by a close, or spuriously).
            } else {
                backlog.extend(ops);
                let batch = coalesce(std::mem::take(&mut backlog));
                let result = store.commit(&batch);
                // Returned: what a failed batch holds waits in the backlog,
                // bounded apart (`max_bytes`), with no commit to wait for.
                self.queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .committing = 0;
                match result {
                    Ok(()) => {
                        if attempts > 0 {
                            tracing::warn!(attempts, "store commits again");
                        }
                        attempts = 0;
                        retry = self.retry_first;
                        self.progress.send_replace(Progress {
                            committed: last,
                            failing: false,
                        });
                    }
                    Err(error) => {
                        attempts += 1;
                        let bytes: usize = batch.iter().map(op_bytes).sum();
                        if closed
                            || batch.len() > self.bounds.max_changes
                            || bytes > self.bounds.max_bytes
                        {
                            tracing::error!(
                                %error,
                                changes = batch.len(),
                                bytes,
                                attempts,
                                "store commit failed; giving up: acknowledgements stop, \
                                 the store keeps the changes committed before"
                            );
                            // What came meanwhile goes too (and later
                            // pushes are not kept): it will never be written.
                            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                            self.failed.store(true, Ordering::Release);
                            q.ops = Vec::new();
                            q.bytes = 0;
                            drop(q);
                            self.progress.send_replace(Progress {
                                committed: last,
                                failing: true,
                            });
                        } else {
                            if attempts == 1 {
                                tracing::error!(
                                    %error,
                                    changes = batch.len(),
                                    "store commit failed; retrying, acknowledgements that \
                                     depend on it are refused meanwhile"
                                );
                            } else {
                                tracing::debug!(%error, attempts, "store commit failed again");
                            }
                            backlog = batch;
                            retry = (retry * 2).min(RETRY_MAX);
                            self.progress
                                .send_if_modified(|p| !std::mem::replace(&mut p.failing, true));
                        }
                    }
                }
            }
            if closed {
                return;
            }
        }
    }
}

impl Journal {
    /// Waits until `until`, a close, or changes too large to wait.
    fn sleep<'a>(&self, mut q: MutexGuard<'a, Queue>, until: Instant) -> MutexGuard<'a, Queue> {
        while !q.closed && !q.urgent {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = self
                .wake
                .wait_timeout(q, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        q
    }
}

/// The first wait before a failed commit is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest wait between two attempts of a failed commit.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// How many changes may wait behind a failing commit before the journal
/// gives up (and stops writing) rather than hold more in memory.
const MAX_BACKLOG: usize = 100_000;
/// How many bytes of changes may wait behind a failing commit before the
/// journal gives up.
const MAX_BACKLOG_BYTES: usize = 256 << 20;
/// Queued changes of this many bytes are taken at once: a periodic
/// interval, or the back-off of a failing store, does not hold more.
const WAKE_BYTES: usize = 32 << 20;
/// Queued changes of this many bytes hold back the connections that push
/// more until they are committed ([`Journal::backlogged`]).
const PACE_BYTES: usize = 2 * WAKE_BYTES;
/// Queued changes this many hold back the connections that push more, and
/// are taken at once.
const PACE_CHANGES: usize = MAX_BACKLOG / 2;

/// About how many bytes a change holds in memory: its message (payload,
/// topic, properties) and a fixed overhead. A payload shared by several
/// sessions' messages is counted for each, so this errs high.
fn op_bytes(op: &StoreOp) -> usize {
    const OVERHEAD: usize = 64;
    let message = match op {
        StoreOp::PutMessage { message, .. } | StoreOp::PutRetained { message, .. } => {
            publish_bytes(&message.publish)
        }
        StoreOp::PutSession(session) => {
            let subscriptions: usize = session
                .subscriptions
                .iter()
                .map(|s| s.filter.len() + OVERHEAD)
                .sum();
            // The will a session record keeps (its client's, or one waiting
            // out its delay) may be as large as any message.
            subscriptions
                + session
                    .will
                    .as_ref()
                    .map_or(0, |w| publish_bytes(&w.publish))
        }
        _ => 0,
    };
    OVERHEAD + message
}

/// About how many bytes a message holds: payload, topic, properties.
fn publish_bytes(p: &fulmar_codec::Publish) -> usize {
    p.payload.len()
        + p.topic.len()
        + p.properties
            .correlation_data
            .as_ref()
            .map_or(0, |d| d.len())
        + p.properties.response_topic.as_ref().map_or(0, |t| t.len())
        + p.properties.content_type.as_ref().map_or(0, |t| t.len())
        + p.properties
            .user_properties
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>()
}

/// Drops the changes of a batch that cancel out: a message put and deleted
/// in the same batch (its subscriber acknowledged it before the commit) is
/// never written, nor what happened to it in between; a message deleted in
/// the batch is not marked as sent in it (a QoS 1 message acknowledged
/// soon after it was sent).
fn coalesce(ops: Vec<StoreOp>) -> Vec<StoreOp> {
    use std::collections::HashSet;
    let mut put: HashSet<(&str, u64)> = HashSet::new();
    let mut gone: HashSet<(Arc<str>, u64)> = HashSet::new();
    let mut deleted: HashSet<(Arc<str>, u64)> = HashSet::new();
    for op in &ops {
        match op {
            StoreOp::PutMessage { client, seq, .. } => {
                put.insert((client, *seq));
            }
            StoreOp::DeleteMessage { client, seq } => {
                if put.contains(&(&**client, *seq)) {
                    gone.insert((client.clone(), *seq));
                }
                deleted.insert((client.clone(), *seq));
            }
            _ => {}
        }
    }
    if deleted.is_empty() {
        return ops;
    }
    ops.into_iter()
        .filter(|op| match op {
            StoreOp::MarkSent { client, seq, .. } => !deleted.contains(&(client.clone(), *seq)),
            StoreOp::PutMessage { client, seq, .. } | StoreOp::DeleteMessage { client, seq } => {
                !gone.contains(&(client.clone(), *seq))
            }
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

    use crate::store::{MemoryStore, StoreError};
    use std::sync::atomic::AtomicU32;
    use std::time::{Duration, Instant};

    /// Waits (at most 10 s, a guard against a hang) for `done`.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        done()
    }

    #[test]
    fn periodic_commits_changes_that_come_after_an_idle_interval() {
        let store = Arc::new(MemoryStore::new());
        let every = Duration::from_millis(2);
        let (journal, writer) = Journal::start(store.clone(), Durability::Periodic(every)).unwrap();
        // Several intervals pass with nothing to commit.
        std::thread::sleep(every * 20);
        journal.push(put("a", 1));
        assert!(eventually(|| store.commits() == 1), "never committed");
        journal.push(put("a", 2));
        assert!(eventually(|| store.commits() == 2));
        journal.close();
        writer.join().unwrap();
        assert_eq!(store.load().unwrap().messages.len(), 2);
    }

    /// A store whose next `failures` commits fail.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryStore,
        failures: AtomicU32,
    }

    impl Store for Flaky {
        fn load(&self) -> Result<super::super::Snapshot, StoreError> {
            self.inner.load()
        }

        fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
            let fail = self
                .failures
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(std::io::Error::other("disk full").into());
            }
            self.inner.commit(ops)
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_failed_commit_is_retried_in_order() {
        let store = Arc::new(Flaky::default());
        let (journal, writer) = Journal::start(store.clone(), Durability::Immediate).unwrap();
        let first = journal.push(put("a", 1));
        block_on(journal.wait(first)).unwrap();
        // The delete fails twice; later changes do not overtake it, or
        // message 1 would come back after a restart.
        store.failures.store(u32::MAX, Ordering::Release);
        journal.push(del("a", 1));
        let last = journal.push(put("a", 2));
        // What depends on the failing commit is not acknowledged ...
        assert!(block_on(journal.wait(last)).is_err());
        store.failures.store(1, Ordering::Release);
        let keys = || -> Vec<u64> { store.load().unwrap().messages.iter().map(|m| m.1).collect() };
        // ... but it is written once the store works again, in order.
        assert!(eventually(|| keys() == vec![2]), "{:?}", keys());
        assert_eq!(store.failures.load(Ordering::Acquire), 0);
        let next = journal.push(put("a", 3));
        block_on(journal.wait(next)).unwrap();
        journal.close();
        writer.join().unwrap();
    }

    /// A store that fails every commit, counting them.
    #[derive(Default)]
    struct Broken(AtomicU32);

    impl Store for Broken {
        fn load(&self) -> Result<super::super::Snapshot, StoreError> {
            Ok(super::super::Snapshot::default())
        }

        fn commit(&self, _: &[StoreOp]) -> Result<(), StoreError> {
            self.0.fetch_add(1, Ordering::AcqRel);
            Err(std::io::Error::other("disk full").into())
        }
    }

    #[test]
    fn changes_pushed_while_failing_wait_for_the_next_attempt() {
        for durability in [
            Durability::Immediate,
            Durability::Periodic(Duration::from_millis(1)),
        ] {
            let store = Arc::new(Broken::default());
            let (journal, writer) = Journal::start_retrying(
                store.clone(),
                durability,
                Duration::from_secs(3600),
                Bounds::default(),
            )
            .unwrap();
            journal.push(put("a", 1));
            assert!(eventually(|| store.0.load(Ordering::Acquire) == 1));
            // Each push wakes an Immediate writer: it must not try again
            // before its back-off is over (only the close cuts it short).
            for seq in 2..50 {
                journal.push(put("a", seq));
                std::thread::sleep(Duration::from_millis(1));
            }
            journal.close();
            writer.join().unwrap();
            assert_eq!(store.0.load(Ordering::Acquire), 2, "{durability:?}");
        }
    }

    /// A message of `size` payload bytes for `client`.
    fn put_sized(client: &str, seq: u64, size: usize) -> StoreOp {
        let StoreOp::PutMessage {
            client,
            mut message,
            ..
        } = put(client, seq)
        else {
            unreachable!()
        };
        message.publish.payload = vec![0; size].into();
        StoreOp::PutMessage {
            client,
            seq,
            message,
        }
    }

    fn small_bounds() -> Bounds {
        Bounds {
            wake_bytes: 10_000,
            max_changes: 1_000_000,
            max_bytes: 50_000,
            pace_bytes: 20_000,
            pace_changes: 1_000,
        }
    }

    // Behind a failing store, the changes waiting are bounded in bytes, not
    // only in number: large messages make the journal give up before it
    // holds more than its bound, without waiting for its back-off, and
    // what is pushed afterwards is not kept.
    #[test]
    fn a_failing_store_holds_a_bounded_number_of_bytes() {
        for durability in [
            Durability::Immediate,
            Durability::Periodic(Duration::from_secs(3600)),
        ] {
            let store = Arc::new(Broken::default());
            let (journal, writer) = Journal::start_retrying(
                store.clone(),
                durability,
                Duration::from_secs(3600),
                small_bounds(),
            )
            .unwrap();
            let first = journal.push(put_sized("a", 1, 1_000));
            if durability == Durability::Immediate {
                assert!(eventually(|| store.0.load(Ordering::Acquire) == 1));
            }
            // 100 x 1 kB: twice the bound, pushed during an hour's back-off
            // (or interval).
            for seq in 2..=100 {
                journal.push(put_sized("a", seq, 1_000));
            }
            assert!(
                eventually(|| journal.failed.load(Ordering::Acquire)),
                "{durability:?}: still holding the changes"
            );
            assert!(block_on(journal.wait(first)).is_err());
            journal.push(put_sized("a", 101, 1_000));
            let queue = journal.queue.lock().unwrap();
            assert!(queue.ops.is_empty(), "{durability:?}: kept after giving up");
            drop(queue);
            // Nothing held, nothing to pace.
            assert!(eventually(|| !journal.backlogged()), "{durability:?}");
            journal.close();
            writer.join().unwrap();
        }
    }

    // A periodic journal does not collect more than its wake bound for the
    // rest of its interval: a large batch is committed at once.
    #[test]
    fn periodic_commits_at_once_when_the_changes_grow_large() {
        let store = Arc::new(MemoryStore::new());
        let (journal, writer) = Journal::start_retrying(
            store.clone(),
            Durability::Periodic(Duration::from_secs(3600)),
            RETRY_FIRST,
            small_bounds(),
        )
        .unwrap();
        journal.push(put_sized("a", 1, 100));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.commits(), 0, "a small change waits for the interval");
        let last = journal.push(put_sized("a", 2, 20_000));
        assert!(eventually(|| store.commits() == 1), "not committed early");
        block_on(journal.wait(last)).unwrap();
        journal.close();
        writer.join().unwrap();
    }

    /// A store whose commits wait while `stuck` is set (a slow disk).
    #[derive(Default)]
    struct Stuck {
        inner: MemoryStore,
        stuck: Mutex<bool>,
        unstuck: Condvar,
        waiting: AtomicBool,
    }

    impl Store for Stuck {
        fn load(&self) -> Result<super::super::Snapshot, StoreError> {
            self.inner.load()
        }

        fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
            let mut stuck = self.stuck.lock().unwrap();
            while *stuck {
                self.waiting.store(true, Ordering::Release);
                stuck = self.unstuck.wait(stuck).unwrap();
            }
            self.waiting.store(false, Ordering::Release);
            drop(stuck);
            self.inner.commit(ops)
        }
    }

    // The batch a slow disk is committing is still in memory: it counts
    // with what is queued behind it, so the publishers are held back at
    // the bound in all, not at the bound plus a batch.
    #[test]
    fn the_batch_being_committed_counts_towards_the_pace() {
        let store = Arc::new(Stuck::default());
        *store.stuck.lock().unwrap() = true;
        let (journal, writer) = Journal::start_retrying(
            store.clone(),
            Durability::Immediate,
            RETRY_FIRST,
            small_bounds(),
        )
        .unwrap();
        // 12 kB taken by the writer, which waits in its commit.
        journal.push(put_sized("a", 1, 12_000));
        assert!(eventually(|| store.waiting.load(Ordering::Acquire)));
        assert!(!journal.backlogged());
        // 9 kB queued: 21 kB in all, past the 20 kB bound, though the
        // queue alone is not.
        let last = journal.push(put_sized("a", 2, 9_000));
        assert!(journal.backlogged());
        *store.stuck.lock().unwrap() = false;
        store.unstuck.notify_all();
        block_on(journal.wait(last)).unwrap();
        assert!(!journal.backlogged());
        journal.close();
        writer.join().unwrap();
    }

    #[test]
    fn a_store_still_failing_at_close_fails_the_waiters() {
        let store = Arc::new(Flaky::default());
        store.failures.store(u32::MAX, Ordering::Release);
        let (journal, writer) = Journal::start(store.clone(), Durability::Immediate).unwrap();
        let seq = journal.push(put("a", 1));
        journal.close();
        writer.join().unwrap();
        assert!(block_on(journal.wait(seq)).is_err());
        assert!(store.load().unwrap().messages.is_empty());
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
        // A message put in an earlier batch, marked as sent and deleted in
        // this one (a QoS 1 message acknowledged at once): only the delete.
        let sent = |seq| StoreOp::MarkSent {
            client: Arc::from("a"),
            seq,
            packet_id: fulmar_codec::PacketId::new(9).unwrap(),
            released: false,
        };
        let ops = vec![sent(4), sent(5), del("a", 4)];
        assert_eq!(coalesce(ops), vec![sent(5), del("a", 4)]);
    }
}
