//! Hibernation of idle plain-TCP connections.
//!
//! A connection task that has been idle for
//! [`Limits::hibernate_after`](crate::Limits::hibernate_after) hands its
//! state ([`Asleep`]: the boxed connection, its socket taken out of tokio's
//! reactor) to the [`Hibernator`] and ends. One thread per broker watches
//! the sockets of all hibernating connections with one `mio` poller, the
//! deadline of each (keep-alive) and each connection's inbox (a routed
//! message, a take-over). When one of them needs the connection, the thread
//! spawns a new task for it, which gives the socket back to tokio and carries
//! on where the old task stopped. A hibernating connection holds neither a
//! task nor a reactor registration, which is most of what an idle connection
//! costs besides its state.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::Instant;

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
}

#[derive(Default)]
struct Queue {
    /// Connections to take in.
    arrivals: Vec<Asleep>,
    /// Connections to wake: slot and generation.
    wakes: Vec<(usize, u32)>,
    /// The broker shuts down: wake every connection, take no more.
    stopping: bool,
}

/// One hibernating connection in the thread's table.
struct Entry {
    asleep: Asleep,
    generation: u32,
    /// Keeps the broker's task tracker from seeing no task while the
    /// connection has none.
    tracked: TaskTrackerToken,
}

/// Wakes one hibernating connection (registered as its inbox's waker).
struct Alarm {
    inner: Weak<Inner>,
    slot: usize,
    generation: u32,
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(inner) = self.inner.upgrade() {
            inner.lock().wakes.push((self.slot, self.generation));
            let _ = inner.waker.wake();
        }
    }
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
        let inner = Arc::new(Inner {
            waker,
            queue: Mutex::new(Queue::default()),
            runtime,
            tracker,
            asleep: AtomicU64::new(0),
        });
        let thread = Thread {
            inner: Arc::downgrade(&inner),
            poll,
            table: Vec::new(),
            free: Vec::new(),
            deadlines: BTreeSet::new(),
            generation: 0,
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
                queue.arrivals.push(asleep);
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
    table: Vec<Option<Entry>>,
    /// Free slots of `table`.
    free: Vec<usize>,
    /// Deadlines of the hibernating connections, with their slots.
    deadlines: BTreeSet<(Instant, usize)>,
    generation: u32,
}

impl Thread {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut due = Vec::new();
        loop {
            let timeout = self
                .deadlines
                .first()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()));
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
            let (arrivals, wakes, stopping) = {
                let mut queue = inner.lock();
                (
                    std::mem::take(&mut queue.arrivals),
                    std::mem::take(&mut queue.wakes),
                    queue.stopping,
                )
            };
            for asleep in arrivals {
                if stopping {
                    spawn(&inner, asleep, None);
                } else {
                    self.admit(&inner, asleep, &mut due);
                }
            }
            for (slot, generation) in wakes {
                if self
                    .table
                    .get(slot)
                    .and_then(Option::as_ref)
                    .is_some_and(|entry| entry.generation == generation)
                {
                    due.push(slot);
                }
            }
            let now = Instant::now();
            while let Some(&(at, slot)) = self.deadlines.first() {
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
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        // A hibernating session's deadline does not move until it wakes.
        if let Some(at) = asleep.deadline() {
            self.deadlines.insert((at, slot));
        }
        let alarm = Waker::from(Arc::new(Alarm {
            inner: Arc::downgrade(inner),
            slot,
            generation,
        }));
        // A message queued before the alarm was set woke the old task, which
        // is gone: look once more after setting it.
        let woken = asleep.set_waker(&alarm);
        if let Some(entry) = self.table.get_mut(slot) {
            *entry = Some(Entry {
                asleep,
                generation,
                tracked: inner.tracker.token(),
            });
        }
        inner.asleep.fetch_add(1, Ordering::Relaxed);
        if woken {
            due.push(slot);
        }
    }

    /// Gives the connection in `slot` a task again.
    fn wake(&mut self, inner: &Arc<Inner>, slot: usize) {
        let Some(entry) = self.table.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        if let Some(at) = entry.asleep.deadline() {
            self.deadlines.remove(&(at, slot));
        }
        let fd = entry.asleep.fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        inner.asleep.fetch_sub(1, Ordering::Relaxed);
        spawn(inner, entry.asleep, Some(entry.tracked));
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
        for asleep in arrivals {
            spawn(&inner, asleep, None);
        }
        for slot in 0..self.table.len() {
            self.wake(&inner, slot);
        }
    }
}

/// Runs a woken connection on the broker's runtime; the tracker token is
/// dropped once the task is tracked instead.
fn spawn(inner: &Inner, asleep: Asleep, tracked: Option<TaskTrackerToken>) {
    inner.tracker.spawn_on(asleep.resume(), &inner.runtime);
    drop(tracked);
}
