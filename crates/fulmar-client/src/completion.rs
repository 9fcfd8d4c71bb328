//! How publishes travel between the handles and the connection task: one
//! table per client, behind one lock, instead of a command channel message
//! and a oneshot channel per publish.
//!
//! - The way there: a bounded queue of [`Outgoing`] publishes. A publisher
//!   finding it full waits (its waker is kept) until the connection task
//!   takes the queue; the connection task takes the whole queue at once and
//!   is woken by the first publish after it found the queue empty.
//! - The way back: a slot per publish. The publisher takes a slot (with its
//!   waker) when it queues its message; the connection task writes the
//!   outcome into the slot and wakes the publisher. A slot is used by one
//!   publish at a time and goes back to the free list when both sides are
//!   finished with it: the future read the outcome (`Done` → free), or the
//!   future was dropped first (`Waiting` → `Abandoned`) and the outcome came
//!   later (`Abandoned` → free).
//!
//! The connection task completes every slot it took exactly once (with
//! [`Error::Closed`] when it stops, and [`close`](PublishQueue::close) fails
//! what is still queued), so no future waits forever.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::client::{Outgoing, PublishOutcome};
use crate::error::Error;

/// How a publish ended.
pub(crate) type Outcome = Result<PublishOutcome, Error>;

/// The index of a slot, handed from the future to the connection task.
pub(crate) type Key = usize;

/// Publishes queued for the connection task at most; more wait for room.
pub(crate) const QUEUE_CAPACITY: usize = 64;

enum Slot {
    /// On the free list.
    Free,
    /// The outcome is not known yet; the waker of the last poll.
    Waiting(Waker),
    /// The outcome, not read yet.
    Done(Outcome),
    /// The future was dropped; the slot is freed with the outcome.
    Abandoned,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Slot>,
    free: Vec<Key>,
    queue: VecDeque<Outgoing>,
    /// The connection task, when it found the queue empty.
    driver: Option<Waker>,
    /// Publishers that found the queue full.
    waiting_for_room: Vec<Waker>,
    /// The connection task stopped: nothing is taken any more.
    closed: bool,
}

impl Inner {
    fn release(&mut self, key: Key) {
        if let Some(slot) = self.slots.get_mut(key) {
            *slot = Slot::Free;
            self.free.push(key);
        }
    }

    /// Writes one outcome; the waker to wake, if any.
    fn complete(&mut self, key: Key, outcome: Outcome) -> Option<Waker> {
        match self.slots.get_mut(key) {
            Some(slot @ Slot::Waiting(_)) => match std::mem::replace(slot, Slot::Done(outcome)) {
                Slot::Waiting(waker) => Some(waker),
                _ => None,
            },
            Some(Slot::Abandoned) => {
                self.release(key);
                None
            }
            _ => None,
        }
    }
}

/// What [`PublishQueue::push`] did.
pub(crate) enum Pushed {
    /// Queued; the outcome will be in slot `Key`.
    Queued(Key),
    /// The queue is full: the publisher is woken when there is room.
    Full(Outgoing),
    /// The connection task has stopped.
    Closed,
}

/// The publishes of one client, shared by its handles and its connection task.
#[derive(Default)]
pub(crate) struct PublishQueue {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PublishQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishQueue").finish_non_exhaustive()
    }
}

impl PublishQueue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The table stays consistent if a waker panicked: keep going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `outgoing` for the connection task (its `key` is set here) and
    /// takes a slot for its outcome, to wake `cx` when it is known.
    pub(crate) fn push(&self, mut outgoing: Outgoing, cx: &Context<'_>) -> Pushed {
        let (driver, key) = {
            let mut inner = self.lock();
            if inner.closed {
                return Pushed::Closed;
            }
            if inner.queue.len() >= QUEUE_CAPACITY {
                if !inner
                    .waiting_for_room
                    .iter()
                    .any(|w| w.will_wake(cx.waker()))
                {
                    inner.waiting_for_room.push(cx.waker().clone());
                }
                return Pushed::Full(outgoing);
            }
            let waiting = Slot::Waiting(cx.waker().clone());
            let key = match inner.free.pop() {
                Some(key) if key < inner.slots.len() => {
                    inner.slots[key] = waiting;
                    key
                }
                _ => {
                    inner.slots.push(waiting);
                    inner.slots.len() - 1
                }
            };
            outgoing.key = key;
            inner.queue.push_back(outgoing);
            (inner.driver.take(), key)
        };
        if let Some(driver) = driver {
            driver.wake();
        }
        Pushed::Queued(key)
    }

    /// The outcome, once the connection task wrote it (which frees the slot).
    pub(crate) fn poll(&self, key: Key, cx: &Context<'_>) -> Poll<Outcome> {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(key) else {
            return Poll::Ready(Err(Error::Closed));
        };
        match slot {
            Slot::Waiting(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                Poll::Pending
            }
            Slot::Done(_) => {
                let Slot::Done(outcome) = std::mem::replace(slot, Slot::Free) else {
                    return Poll::Ready(Err(Error::Closed));
                };
                inner.free.push(key);
                Poll::Ready(outcome)
            }
            // Not a state a live future sees.
            Slot::Free | Slot::Abandoned => Poll::Ready(Err(Error::Closed)),
        }
    }

    /// The future of `key` was dropped before reading its outcome.
    pub(crate) fn abandon(&self, key: Key) {
        let mut inner = self.lock();
        match inner.slots.get_mut(key) {
            Some(slot @ Slot::Waiting(_)) => *slot = Slot::Abandoned,
            Some(Slot::Done(_)) => inner.release(key),
            _ => {}
        }
    }

    /// Connection task: ready when publishes are queued; otherwise the next
    /// publish wakes `cx`.
    pub(crate) fn poll_queued(&self, cx: &Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if !inner.queue.is_empty() {
            return Poll::Ready(());
        }
        match &mut inner.driver {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            driver => *driver = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Connection task: moves every queued publish to the back of `into`.
    ///
    /// The task is awake and looks at the queue again
    /// ([`poll_queued`](Self::poll_queued)) before it sleeps, so its waker is
    /// dropped here: a publish queued meanwhile does not wake a running task
    /// (which would make the runtime schedule it again and wake another
    /// worker thread to steal it, once per round trip).
    pub(crate) fn take(&self, into: &mut VecDeque<Outgoing>) {
        let room = {
            let mut inner = self.lock();
            inner.driver = None;
            if inner.queue.is_empty() {
                return;
            }
            if into.is_empty() {
                std::mem::swap(&mut inner.queue, into);
            } else {
                into.append(&mut inner.queue);
            }
            std::mem::take(&mut inner.waiting_for_room)
        };
        for waker in room {
            waker.wake();
        }
    }

    /// Connection task: writes the outcomes in `done` (emptied) and wakes
    /// their futures, each distinct waker once.
    pub(crate) fn complete(&self, done: &mut Vec<(Key, Outcome)>, wakers: &mut Vec<Waker>) {
        if done.is_empty() {
            return;
        }
        {
            let mut inner = self.lock();
            for (key, outcome) in done.drain(..) {
                if let Some(waker) = inner.complete(key, outcome)
                    && !wakers.last().is_some_and(|last| last.will_wake(&waker))
                {
                    wakers.push(waker);
                }
            }
        }
        for waker in wakers.drain(..) {
            waker.wake();
        }
    }

    /// Connection task, when it stops: refuses further publishes and fails
    /// those still queued.
    pub(crate) fn close(&self) {
        let wakers = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.driver = None;
            let queued = std::mem::take(&mut inner.queue);
            let mut wakers: Vec<_> = queued
                .into_iter()
                .filter_map(|outgoing| inner.complete(outgoing.key, Err(Error::Closed)))
                .collect();
            wakers.append(&mut inner.waiting_for_room);
            wakers
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use bytes::Bytes;
    use fulmar_codec::{MqttString, QoS, ReasonCode};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            topic: MqttString::from("t"),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            key: usize::MAX,
        }
    }

    fn success() -> Outcome {
        Ok(PublishOutcome {
            qos: QoS::AtLeastOnce,
            reason_code: ReasonCode::Success,
            properties: Default::default(),
        })
    }

    fn queued(queue: &PublishQueue, cx: &Context<'_>) -> Key {
        match queue.push(outgoing(), cx) {
            Pushed::Queued(key) => key,
            _ => panic!("not queued"),
        }
    }

    #[test]
    fn a_completed_slot_wakes_its_future_once_and_is_reused() {
        let queue = PublishQueue::default();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let cx = Context::from_waker(&waker);
        let first = queued(&queue, &cx);
        let second = queued(&queue, &cx);
        let mut taken = VecDeque::new();
        queue.take(&mut taken);
        assert_eq!(
            taken.iter().map(|o| o.key).collect::<Vec<_>>(),
            [first, second]
        );
        assert!(queue.poll(first, &cx).is_pending());
        let mut wakers = Vec::new();
        queue.complete(
            &mut vec![(first, success()), (second, success())],
            &mut wakers,
        );
        // The same waker for both: woken once.
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(matches!(queue.poll(first, &cx), Poll::Ready(Ok(_))));
        assert!(matches!(queue.poll(second, &cx), Poll::Ready(Ok(_))));
        // Read: the slots are free again.
        let again = queued(&queue, &cx);
        assert!(again == first || again == second);
    }

    #[test]
    fn an_abandoned_slot_is_freed_by_its_outcome_only() {
        let queue = PublishQueue::default();
        let waker = Waker::noop();
        let cx = Context::from_waker(waker);
        let first = queued(&queue, &cx);
        queue.abandon(first);
        // Still owned by the connection task: a new publish gets another slot.
        let second = queued(&queue, &cx);
        assert_ne!(first, second);
        queue.complete(&mut vec![(first, Err(Error::Closed))], &mut Vec::new());
        assert_eq!(queued(&queue, &cx), first);
    }

    #[test]
    fn an_outcome_not_read_is_freed_when_the_future_goes() {
        let queue = PublishQueue::default();
        let cx = Context::from_waker(Waker::noop());
        let key = queued(&queue, &cx);
        queue.complete(&mut vec![(key, success())], &mut Vec::new());
        queue.abandon(key);
        assert_eq!(queued(&queue, &cx), key);
    }

    #[test]
    fn a_full_queue_wakes_publishers_when_taken_and_close_fails_the_rest() {
        let queue = PublishQueue::default();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let cx = Context::from_waker(&waker);
        let keys: Vec<_> = (0..QUEUE_CAPACITY).map(|_| queued(&queue, &cx)).collect();
        assert!(matches!(queue.push(outgoing(), &cx), Pushed::Full(_)));
        let mut taken = VecDeque::new();
        queue.take(&mut taken);
        assert_eq!(taken.len(), QUEUE_CAPACITY);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "waiting publisher woken"
        );
        let last = queued(&queue, &cx);
        queue.close();
        assert!(matches!(
            queue.poll(last, &cx),
            Poll::Ready(Err(Error::Closed))
        ));
        assert!(matches!(queue.push(outgoing(), &cx), Pushed::Closed));
        // Taken before the close: still the connection task's to complete.
        assert!(queue.poll(keys[0], &cx).is_pending());
    }

    #[test]
    fn a_publish_wakes_the_connection_task_only_while_it_sleeps() {
        let queue = PublishQueue::default();
        let publisher = Context::from_waker(Waker::noop());
        let driver_count = Arc::new(Count::default());
        let driver_waker = Waker::from(driver_count.clone());
        let driver = Context::from_waker(&driver_waker);
        let woken = || driver_count.0.load(Ordering::Relaxed);
        // Asleep on an empty queue: the first publish wakes it, once.
        assert!(queue.poll_queued(&driver).is_pending());
        queued(&queue, &publisher);
        queued(&queue, &publisher);
        assert_eq!(woken(), 1);
        let mut taken = VecDeque::new();
        queue.take(&mut taken);
        assert_eq!(taken.len(), 2);
        // Asleep again, then woken by something else (a packet read): while
        // it runs, a publish is found by its next look at the queue, and
        // does not wake it.
        assert!(queue.poll_queued(&driver).is_pending());
        queue.take(&mut taken);
        queued(&queue, &publisher);
        assert_eq!(woken(), 1);
        assert!(queue.poll_queued(&driver).is_ready());
        queue.take(&mut taken);
        assert_eq!(taken.len(), 3);
        // Asleep: woken again.
        assert!(queue.poll_queued(&driver).is_pending());
        queued(&queue, &publisher);
        assert_eq!(woken(), 2);
    }
}
