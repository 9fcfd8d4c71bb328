//! Hibernation of idle plain-TCP connections.
//!
//! A connection task that has been idle for
//! [`Limits::hibernate_after`](crate::Limits::hibernate_after) hands its
//! state ([`Asleep`]: the compact form of the connection, its session a
//! `DormantSession`, its socket taken out of tokio's reactor) to the
//! [`Hibernator`] and ends. One thread per broker watches
//! the sockets of all hibernating connections with one `mio` poller, the
//! deadline of each (keep-alive) and each connection's inbox (a routed
//! message, a take-over). When one of them needs the connection, the thread
//! spawns a new task for it, which gives the socket back to tokio and carries
//! on where the old task stopped. A hibernating connection holds neither a
//! task nor a reactor registration, which is most of what an idle connection
//! costs besides its state; here it takes one allocation (a [`Sleeper`]),
//! one word in the table and one in the deadline index.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::connection::Asleep;

/// The token of the poller's own waker.
const WAKER: Token = Token(usize::MAX);

/// The thread that keeps the hibernating connections of one broker.
pub(crate) struct Hibernator {
    inner: Arc<Inner>,
}

struct Inner {
    waker: mio::Waker,
    queue: Mutex<Queue>,
    runtime: tokio::runtime::Handle,
    tracker: TaskTracker,
    /// Connections hibernating now.
    asleep: AtomicU64,
    /// Ends the task that watches for the runtime's end ([`RuntimeGone`])
    /// when the broker stops first.
    stopped: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[derive(Default)]
struct Queue {
    /// Connections to take in.
    arrivals: Vec<(Asleep, TaskTrackerToken)>,
    /// Connections to wake (those already awake are skipped).
    wakes: Vec<Arc<Sleeper>>,
    /// The broker shuts down: wake every connection, take no more.
    stopping: bool,
    /// The runtime is gone (dropped without the broker's shutdown): the
    /// connections cannot run again; they are closed, and the thread ends.
    runtime_gone: bool,
}

/// Held by a task on the broker's runtime that waits for the broker to
/// stop: dropped with the runtime while still armed, it tells the thread
/// that no connection can be woken any more. Without it the thread kept the
/// hibernating connections (their sockets, and through them the broker's
/// state and store) for ever once the runtime was dropped.
struct RuntimeGone {
    inner: Weak<Inner>,
    armed: bool,
}

impl RuntimeGone {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for RuntimeGone {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(inner) = self.inner.upgrade() {
            inner.lock().runtime_gone = true;
            let _ = inner.waker.wake();
        }
    }
}

/// One hibernating connection: its state, in the thread's table and, as
/// its inbox's waker, in its inbox. One allocation per connection.
///
/// The inbox's waker points here while the state here holds the inbox: the
/// state is taken out when the connection wakes, or when the thread ends.
struct Sleeper {
    /// Its slot in the thread's table (the poller token).
    slot: usize,
    /// `None` once awake.
    asleep: Mutex<Option<Asleep>>,
}

impl Sleeper {
    fn lock(&self) -> MutexGuard<'_, Option<Asleep>> {
        self.asleep.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Wake for Sleeper {
    fn wake(self: Arc<Self>) {
        // The thread, found through the connection's state (none: awake
        // already). Not a pointer of its own: one word less per connection.
        let inner = self.lock().as_ref().and_then(|asleep| {
            let hibernator = asleep.shared().hibernator.as_ref()?;
            Some(hibernator.inner.clone())
        });
        if let Some(inner) = inner {
            inner.lock().wakes.push(self);
            let _ = inner.waker.wake();
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.clone().wake();
    }
}

/// Deadlines are kept in milliseconds since the thread started, rounded up,
/// above the slot: one word each.
const SLOT_BITS: u32 = 24;

/// The key of the deadline `at` of the connection in `slot` (at most
/// [`SLOT_BITS`] bits).
fn deadline_key(base: Instant, at: Instant, slot: usize) -> u64 {
    let after = at.saturating_duration_since(base);
    let ms = after.as_millis() + u128::from(!after.subsec_nanos().is_multiple_of(1_000_000));
    // Beyond 2^40 ms (34 years): as good as never.
    let ms = u64::try_from(ms)
        .unwrap_or(u64::MAX)
        .min((1 << (64 - SLOT_BITS)) - 1);
    (ms << SLOT_BITS) | u64::try_from(slot).unwrap_or(0)
}

/// The instant and the slot of a deadline key.
fn deadline_of(base: Instant, key: u64) -> (Instant, usize) {
    let at = base
        .checked_add(Duration::from_millis(key >> SLOT_BITS))
        .unwrap_or(base);
    let slot = usize::try_from(key & ((1 << SLOT_BITS) - 1)).unwrap_or(usize::MAX);
    (at, slot)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hibernator {
    /// Starts the thread; connections it wakes run on `runtime`, tracked
    /// by `tracker`.
    pub(crate) fn start(
        runtime: tokio::runtime::Handle,
        tracker: TaskTracker,
    ) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let (stopped, on_stop) = tokio::sync::oneshot::channel();
        let inner = Arc::new(Inner {
            waker,
            queue: Mutex::new(Queue::default()),
            runtime,
            tracker,
            asleep: AtomicU64::new(0),
            stopped: Mutex::new(Some(stopped)),
        });
        let watch = RuntimeGone {
            inner: Arc::downgrade(&inner),
            armed: true,
        };
        inner.runtime.spawn(async move {
            let mut watch = watch;
            // Resolves when the broker stops (or the sender is dropped with
            // it); never, if the runtime is dropped first.
            let _ = on_stop.await;
            watch.disarm();
        });
        let thread = Thread {
            inner: Arc::downgrade(&inner),
            poll,
            table: Vec::new(),
            free: Vec::new(),
            base: Instant::now(),
            deadlines: BTreeSet::new(),
            occupied: 0,
            tracked: None,
        };
        std::thread::Builder::new()
            .name("fulmar-hibernate".into())
            .spawn(move || thread.run())?;
        Ok(Self { inner })
    }

    /// Takes `asleep` in; when the broker is shutting down, runs it again
    /// at once instead.
    pub(crate) fn park(&self, asleep: Asleep) {
        {
            let mut queue = self.inner.lock();
            if !queue.stopping {
                queue.arrivals.push((asleep, self.inner.tracker.token()));
                drop(queue);
                let _ = self.inner.waker.wake();
                return;
            }
        }
        spawn(&self.inner, asleep, None);
    }

    /// Connections hibernating now.
    pub(crate) fn asleep(&self) -> u64 {
        self.inner.asleep.load(Ordering::Relaxed)
    }

    /// Wakes every hibernating connection and takes no more (the broker
    /// shuts down).
    pub(crate) fn stop(&self) {
        self.inner.lock().stopping = true;
        let stopped = self
            .inner
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stopped) = stopped {
            let _ = stopped.send(());
        }
        let _ = self.inner.waker.wake();
    }
}

impl Drop for Hibernator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread's own state.
struct Thread {
    inner: Weak<Inner>,
    poll: Poll,
    /// Hibernating connections by slot (the poller token).
    table: Vec<Option<Arc<Sleeper>>>,
    /// Free slots of `table`.
    free: Vec<usize>,
    /// What the deadlines count from.
    base: Instant,
    /// Deadlines of the hibernating connections, with their slots (see
    /// [`deadline_key`]).
    deadlines: BTreeSet<u64>,
    /// Slots of `table` in use.
    occupied: usize,
    /// Keeps the broker's task tracker from seeing no task while
    /// connections hibernate (and have none).
    tracked: Option<TaskTrackerToken>,
}

impl Thread {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut due = Vec::new();
        loop {
            let timeout = self.deadlines.first().map(|&key| {
                deadline_of(self.base, key)
                    .0
                    .saturating_duration_since(Instant::now())
            });
            if let Err(error) = self.poll.poll(&mut events, timeout)
                && error.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(%error, "the hibernation poller failed: waking every connection");
                self.shut_down();
                return;
            }
            let Some(inner) = self.inner.upgrade() else {
                // The broker is gone: so are its connections.
                return;
            };
            for event in &events {
                if event.token() != WAKER {
                    due.push(event.token().0);
                }
            }
            let (arrivals, wakes, stopping, runtime_gone) = {
                let mut queue = inner.lock();
                (
                    std::mem::take(&mut queue.arrivals),
                    std::mem::take(&mut queue.wakes),
                    queue.stopping,
                    queue.runtime_gone,
                )
            };
            if runtime_gone {
                // Nothing can run them: they are closed (the table's states
                // are dropped with the thread, the arrivals here).
                drop(arrivals);
                return;
            }
            for (asleep, token) in arrivals {
                if stopping {
                    spawn(&inner, asleep, Some(token));
                } else {
                    self.admit(&inner, asleep, &mut due);
                    drop(token);
                }
            }
            for sleeper in wakes {
                if self
                    .table
                    .get(sleeper.slot)
                    .and_then(Option::as_ref)
                    .is_some_and(|entry| Arc::ptr_eq(entry, &sleeper))
                {
                    due.push(sleeper.slot);
                }
            }
            let now = Instant::now();
            while let Some(&key) = self.deadlines.first() {
                let (at, slot) = deadline_of(self.base, key);
                if at > now {
                    break;
                }
                due.push(slot);
                self.deadlines.pop_first();
            }
            for slot in due.drain(..) {
                self.wake(&inner, slot);
            }
            if stopping {
                self.shut_down();
                return;
            }
        }
    }

    /// Takes a connection in: its socket into the poller, its inbox's waker
    /// pointing here.
    fn admit(&mut self, inner: &Arc<Inner>, asleep: Asleep, due: &mut Vec<usize>) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.table.push(None);
                self.table.len() - 1
            }
        };
        let fd = asleep.fd();
        if slot >> SLOT_BITS != 0 {
            // More connections hibernate than the deadline keys can tell apart.
            self.free.push(slot);
            spawn(inner, asleep, None);
            return;
        }
        if let Err(error) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE)
        {
            tracing::debug!(%error, "a connection could not hibernate");
            self.free.push(slot);
            spawn(inner, asleep, None);
            return;
        }
        // A hibernating session's deadline does not move until it wakes.
        if let Some(at) = asleep.deadline() {
            self.deadlines.insert(deadline_key(self.base, at, slot));
        }
        let inbox = asleep.inbox();
        let sleeper = Arc::new(Sleeper {
            slot,
            asleep: Mutex::new(Some(asleep)),
        });
        // The alarm is set once the state is in place (where it finds the
        // thread), and not under its lock (setting it may wake it at once).
        // A message queued before woke the old task, which is gone: look
        // once more after setting it.
        let woken = inbox.set_waker(&Waker::from(sleeper.clone()));
        if let Some(entry) = self.table.get_mut(slot) {
            *entry = Some(sleeper);
        }
        if self.occupied == 0 {
            self.tracked = Some(inner.tracker.token());
        }
        self.occupied += 1;
        inner.asleep.fetch_add(1, Ordering::Relaxed);
        if woken {
            due.push(slot);
        }
    }

    /// Gives the connection in `slot` a task again.
    fn wake(&mut self, inner: &Arc<Inner>, slot: usize) {
        let Some(sleeper) = self.table.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.occupied = self.occupied.saturating_sub(1);
        let Some(asleep) = sleeper.lock().take() else {
            return;
        };
        if let Some(at) = asleep.deadline() {
            self.deadlines.remove(&deadline_key(self.base, at, slot));
        }
        let fd = asleep.fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        inner.asleep.fetch_sub(1, Ordering::Relaxed);
        // The last one: the tracker counts its task from now on.
        let tracked = if self.occupied == 0 {
            self.tracked.take()
        } else {
            None
        };
        spawn(inner, asleep, tracked);
    }

    /// Takes no more connections and wakes every one (the thread ends).
    fn shut_down(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let arrivals = {
            let mut queue = inner.lock();
            queue.stopping = true;
            std::mem::take(&mut queue.arrivals)
        };
        for (asleep, token) in arrivals {
            spawn(&inner, asleep, Some(token));
        }
        for slot in 0..self.table.len() {
            self.wake(&inner, slot);
        }
    }
}

impl Drop for Thread {
    /// The connections still here end with the thread: their state is
    /// taken out of the inbox's waker's reach.
    fn drop(&mut self) {
        for sleeper in self.table.iter_mut().filter_map(Option::take) {
            // Dropped once the lock is released.
            let asleep = sleeper.lock().take();
            drop(asleep);
        }
    }
}

/// Runs a woken connection on the broker's runtime; the tracker token (the
/// thread's, given up by the last hibernating connection) is dropped once
/// the task is tracked instead.
fn spawn(inner: &Inner, asleep: Asleep, tracked: Option<TaskTrackerToken>) {
    inner.tracker.spawn_on(asleep.resume(), &inner.runtime);
    drop(tracked);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hibernating_connection_is_one_block_of_at_most_224_bytes() {
        // (memory, no spec statement)
        // The `Arc<Sleeper>` block: two counters and the sleeper. jemalloc
        // (the `fulmar` binary's allocator) serves 225-256 bytes from its
        // 256-byte class, that of the runtime's I/O registrations, which
        // every connection frees as it hibernates. At 232 bytes, 10 k idle
        // connections cost 769 bytes each in RSS (eight runs, 748-800); at
        // 216, 708 (684-743): more than the 32 bytes of rounding, so
        // probably sleepers kept pages of freed registrations resident
        // (`benches/README.md`, 2026-12-06).
        let block = 2 * size_of::<usize>() + size_of::<Sleeper>();
        assert!(block <= 224, "{block} bytes");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant; only differences matter
    fn deadline_keys_order_by_time_then_slot_and_never_come_early() {
        // (memory, no spec statement)
        let base = Instant::now();
        let at = base + Duration::from_micros(1500);
        let key = deadline_key(base, at, 7);
        let (back, slot) = deadline_of(base, key);
        assert_eq!(slot, 7);
        assert_eq!(back, base + Duration::from_millis(2), "rounded up");
        assert!(back >= at);
        let exact = base + Duration::from_secs(90);
        assert_eq!(deadline_of(base, deadline_key(base, exact, 3)), (exact, 3));
        assert!(deadline_key(base, at, 9) < deadline_key(base, exact, 0));
        assert!(deadline_key(base, exact, 2) < deadline_key(base, exact, 3));
        let last = (1 << SLOT_BITS) - 1;
        assert_eq!(deadline_of(base, deadline_key(base, exact, last)).1, last);
        // Before the base (cannot happen): due at once.
        assert_eq!(deadline_of(at, deadline_key(at, base, 1)), (at, 1));
    }
}
