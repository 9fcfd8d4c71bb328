//! How publishes travel between the handles and the connection task: one
//! table per client, behind one lock, instead of a command channel message
//! and a oneshot channel per publish.
//!
//! - The way there: a bounded queue of [`Outgoing`] publishes; the
//!   connection task takes the whole queue at once and is woken by the first
//!   publish after it found the queue empty. A publisher finding the queue
//!   full, or earlier publishers still waiting for room, takes a [`Ticket`]
//!   and waits in line (first come, first served): only the front of the
//!   line may queue its message. The front is woken when the connection task
//!   takes the queue, and each waiter that queued its message, or left the
//!   line, wakes the next one while there is room. So publishes reach the
//!   connection task in the order of their first push, however many wait.
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

/// A place in the line of publishers waiting for room, handed out in
/// ascending order.
pub(crate) type Ticket = u64;

/// A publisher waiting for room.
struct Waiter {
    ticket: Ticket,
    /// The waker of its last poll.
    waker: Waker,
}

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
    /// Publishers waiting for room, in the order of their tickets: only the
    /// front one may queue its message.
    waiters: VecDeque<Waiter>,
    /// The ticket of the next publisher to wait.
    next_ticket: Ticket,
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

    /// Whether the queue to the connection task has room.
    fn has_room(&self) -> bool {
        self.queue.len() < QUEUE_CAPACITY
    }

    /// The waker of the front waiter, if there is room for it.
    fn front_if_room(&self) -> Option<Waker> {
        if self.closed || !self.has_room() {
            return None;
        }
        self.waiters.front().map(|front| front.waker.clone())
    }

    /// Keeps `waker` for the waiter with `ticket`, which waits (again).
    fn wait(&mut self, ticket: Ticket, waker: &Waker) {
        match self.waiters.binary_search_by_key(&ticket, |w| w.ticket) {
            Ok(i) => {
                if let Some(waiter) = self.waiters.get_mut(i)
                    && !waiter.waker.will_wake(waker)
                {
                    waiter.waker = waker.clone();
                }
            }
            // Not in line (not a state a live future sees): back in its place.
            Err(i) => self.waiters.insert(
                i,
                Waiter {
                    ticket,
                    waker: waker.clone(),
                },
            ),
        }
    }
}

/// What [`PublishQueue::push`] did.
pub(crate) enum Pushed {
    /// Queued; the outcome will be in slot `Key`.
    Queued(Key),
    /// Not queued: the queue is full, or earlier publishers wait for room.
    /// The publisher waits in line with `Ticket` and is woken when it is at
    /// the front and there is room; it pushes again with the ticket, or
    /// gives it back with [`PublishQueue::cancel`].
    Full(Outgoing, Ticket),
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
    ///
    /// `ticket`: `None` at the first push; the ticket of
    /// [`Pushed::Full`] when pushing again. A first push while others wait
    /// for room goes to the back of the line even if there is room, and only
    /// the front of the line is queued, so messages are queued in the order
    /// of their first push.
    pub(crate) fn push(
        &self,
        mut outgoing: Outgoing,
        ticket: Option<Ticket>,
        cx: &Context<'_>,
    ) -> Pushed {
        let (driver, next, key) = {
            let mut inner = self.lock();
            if inner.closed {
                return Pushed::Closed;
            }
            match ticket {
                // The fast path: nobody waits and there is room.
                None if inner.waiters.is_empty() && inner.has_room() => {}
                None => {
                    let ticket = inner.next_ticket;
                    inner.next_ticket = ticket.wrapping_add(1);
                    inner.waiters.push_back(Waiter {
                        ticket,
                        waker: cx.waker().clone(),
                    });
                    return Pushed::Full(outgoing, ticket);
                }
                Some(ticket) => {
                    let front = inner.waiters.front().is_some_and(|w| w.ticket == ticket);
                    if !front || !inner.has_room() {
                        inner.wait(ticket, cx.waker());
                        return Pushed::Full(outgoing, ticket);
                    }
                    inner.waiters.pop_front();
                }
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
            // A waiter that got its turn passes it on while there is room
            // (nobody else would wake the next one before the next take).
            let next = match ticket {
                Some(_) => inner.front_if_room(),
                None => None,
            };
            (inner.driver.take(), next, key)
        };
        if let Some(driver) = driver {
            driver.wake();
        }
        if let Some(next) = next {
            next.wake();
        }
        Pushed::Queued(key)
    }

    /// A publisher waiting for room with `ticket` leaves the line (its
    /// future was dropped). If it was at the front, the next one gets its
    /// turn: it may have been woken for room and not used it.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        let next = {
            let mut inner = self.lock();
            let Ok(i) = inner.waiters.binary_search_by_key(&ticket, |w| w.ticket) else {
                return;
            };
            inner.waiters.remove(i);
            if i == 0 { inner.front_if_room() } else { None }
        };
        if let Some(next) = next {
            next.wake();
        }
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
    ///
    /// There is room again: the front of the line of publishers waiting for
    /// room is woken (and wakes the next one when it has queued its message).
    pub(crate) fn take(&self, into: &mut VecDeque<Outgoing>) {
        let front = {
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
            inner.front_if_room()
        };
        if let Some(front) = front {
            front.wake();
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

    /// Connection task, when it stops: refuses further publishes, fails
    /// those still queued and wakes every publisher waiting for room (to
    /// see [`Error::Closed`]).
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
            wakers.extend(inner.waiters.drain(..).map(|waiter| waiter.waker));
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
        numbered(0)
    }

    /// A publish whose payload is `n`, to tell publishes apart.
    fn numbered(n: u32) -> Outgoing {
        Outgoing {
            topic: MqttString::from("t"),
            payload: Bytes::copy_from_slice(&n.to_be_bytes()),
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

    /// The payloads of what the connection task takes now.
    fn take_numbers(queue: &PublishQueue) -> Vec<u32> {
        let mut taken = VecDeque::new();
        queue.take(&mut taken);
        taken
            .iter()
            .map(|o| u32::from_be_bytes(o.payload[..].try_into().unwrap()))
            .collect()
    }

    /// A publisher with its own counting waker.
    struct Publisher {
        count: Arc<Count>,
        waker: Waker,
    }

    impl Publisher {
        fn new() -> Self {
            let count = Arc::new(Count::default());
            let waker = Waker::from(count.clone());
            Self { count, waker }
        }

        fn woken(&self) -> usize {
            self.count.0.load(Ordering::Relaxed)
        }

        /// Pushes publish `n` (again, with `ticket`).
        fn push(&self, queue: &PublishQueue, n: u32, ticket: Option<Ticket>) -> Pushed {
            queue.push(numbered(n), ticket, &Context::from_waker(&self.waker))
        }

        /// Pushes publish `n`, which must wait for room: its ticket.
        fn wait(&self, queue: &PublishQueue, n: u32, ticket: Option<Ticket>) -> Ticket {
            match self.push(queue, n, ticket) {
                Pushed::Full(_, ticket) => ticket,
                _ => panic!("publish {n} did not wait"),
            }
        }

        /// Pushes publish `n`, which must be queued.
        fn queue(&self, queue: &PublishQueue, n: u32, ticket: Option<Ticket>) {
            assert!(
                matches!(self.push(queue, n, ticket), Pushed::Queued(_)),
                "publish {n} not queued"
            );
        }
    }

    /// Fills the queue with publishes numbered from 0.
    fn fill(queue: &PublishQueue) -> u32 {
        let publisher = Publisher::new();
        let full = u32::try_from(QUEUE_CAPACITY).unwrap();
        for n in 0..full {
            publisher.queue(queue, n, None);
        }
        full
    }

    fn queued(queue: &PublishQueue, cx: &Context<'_>) -> Key {
        match queue.push(outgoing(), None, cx) {
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
        let Pushed::Full(waiting, ticket) = queue.push(outgoing(), None, &cx) else {
            panic!("not full");
        };
        let mut taken = VecDeque::new();
        queue.take(&mut taken);
        assert_eq!(taken.len(), QUEUE_CAPACITY);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "waiting publisher woken"
        );
        let Pushed::Queued(last) = queue.push(waiting, Some(ticket), &cx) else {
            panic!("not queued");
        };
        queue.close();
        assert!(matches!(
            queue.poll(last, &cx),
            Poll::Ready(Err(Error::Closed))
        ));
        assert!(matches!(queue.push(outgoing(), None, &cx), Pushed::Closed));
        // Taken before the close: still the connection task's to complete.
        assert!(queue.poll(keys[0], &cx).is_pending());
    }

    #[test]
    fn waiting_publishers_are_queued_in_the_order_of_their_first_push() {
        let queue = PublishQueue::default();
        let full = fill(&queue);
        let (a, b, c, d) = (
            Publisher::new(),
            Publisher::new(),
            Publisher::new(),
            Publisher::new(),
        );
        let ta = a.wait(&queue, full, None);
        let tb = b.wait(&queue, full + 1, None);
        let tc = c.wait(&queue, full + 2, None);
        assert!(ta < tb && tb < tc);
        // Still full: waits again, with the same ticket.
        assert_eq!(b.wait(&queue, full + 1, Some(tb)), tb);
        assert_eq!(take_numbers(&queue), (0..full).collect::<Vec<_>>());
        // Room: only the front of the line is woken.
        assert_eq!((a.woken(), b.woken(), c.woken()), (1, 0, 0));
        // The others may not overtake it, though there is room...
        assert_eq!(c.wait(&queue, full + 2, Some(tc)), tc);
        assert_eq!(b.wait(&queue, full + 1, Some(tb)), tb);
        // ...and neither may a new publish: it gets in line.
        let td = d.wait(&queue, full + 3, None);
        assert!(tc < td);
        // Each queued waiter wakes the next one.
        a.queue(&queue, full, Some(ta));
        assert_eq!((b.woken(), c.woken()), (1, 0));
        b.queue(&queue, full + 1, Some(tb));
        assert_eq!((c.woken(), d.woken()), (1, 0));
        c.queue(&queue, full + 2, Some(tc));
        assert_eq!(d.woken(), 1);
        d.queue(&queue, full + 3, Some(td));
        // Nobody waits: the fast path again.
        a.queue(&queue, full + 4, None);
        assert_eq!(take_numbers(&queue), (full..full + 5).collect::<Vec<_>>());
        assert_eq!(
            (a.woken(), b.woken(), c.woken(), d.woken()),
            (1, 1, 1, 1),
            "nobody woken for nothing"
        );
    }

    #[test]
    fn the_chain_of_wakes_stops_when_the_queue_is_full() {
        let queue = PublishQueue::default();
        let full = fill(&queue);
        // One more waiter than the queue holds.
        let waiters: Vec<_> = (full..=2 * full)
            .map(|n| {
                let publisher = Publisher::new();
                let ticket = publisher.wait(&queue, n, None);
                (publisher, n, ticket)
            })
            .collect();
        assert_eq!(take_numbers(&queue).len(), QUEUE_CAPACITY);
        let (last, waiters) = waiters.split_last().unwrap();
        for (publisher, n, ticket) in waiters {
            assert_eq!(publisher.woken(), 1, "publish {n} woken in turn");
            publisher.queue(&queue, *n, Some(*ticket));
        }
        // The queue is full again: the last one sleeps until the next take.
        let (publisher, n, ticket) = last;
        assert_eq!(publisher.woken(), 0);
        assert_eq!(publisher.wait(&queue, *n, Some(*ticket)), *ticket);
        assert_eq!(take_numbers(&queue), (full..2 * full).collect::<Vec<_>>());
        assert_eq!(publisher.woken(), 1);
        publisher.queue(&queue, *n, Some(*ticket));
        assert_eq!(take_numbers(&queue), [2 * full]);
    }

    #[test]
    fn a_waiter_leaving_the_front_of_the_line_wakes_the_next() {
        let queue = PublishQueue::default();
        let full = fill(&queue);
        let (a, b, c) = (Publisher::new(), Publisher::new(), Publisher::new());
        let ta = a.wait(&queue, full, None);
        let tb = b.wait(&queue, full + 1, None);
        let tc = c.wait(&queue, full + 2, None);
        take_numbers(&queue);
        assert_eq!((a.woken(), b.woken()), (1, 0));
        // Woken, but dropped before it queued its message: its turn goes on.
        queue.cancel(ta);
        assert_eq!((b.woken(), c.woken()), (1, 0));
        b.queue(&queue, full + 1, Some(tb));
        assert_eq!(c.woken(), 1);
        c.queue(&queue, full + 2, Some(tc));
        assert_eq!(take_numbers(&queue), [full + 1, full + 2]);
        // Given back twice (not a state a live future sees): nothing happens.
        queue.cancel(ta);
    }

    #[test]
    fn a_waiter_leaving_the_front_of_a_full_queue_wakes_nobody() {
        let queue = PublishQueue::default();
        let full = fill(&queue);
        let (a, b) = (Publisher::new(), Publisher::new());
        let ta = a.wait(&queue, full, None);
        let tb = b.wait(&queue, full + 1, None);
        queue.cancel(ta);
        assert_eq!(b.woken(), 0, "no room");
        take_numbers(&queue);
        assert_eq!(b.woken(), 1, "the new front");
        b.queue(&queue, full + 1, Some(tb));
        assert_eq!(take_numbers(&queue), [full + 1]);
    }

    #[test]
    fn a_waiter_leaving_the_middle_of_the_line_is_skipped() {
        let queue = PublishQueue::default();
        let full = fill(&queue);
        let (a, b, c) = (Publisher::new(), Publisher::new(), Publisher::new());
        let ta = a.wait(&queue, full, None);
        let tb = b.wait(&queue, full + 1, None);
        let tc = c.wait(&queue, full + 2, None);
        queue.cancel(tb);
        assert_eq!((a.woken(), b.woken(), c.woken()), (0, 0, 0));
        take_numbers(&queue);
        assert_eq!((a.woken(), c.woken()), (1, 0));
        // After the front, the one behind the one that left.
        a.queue(&queue, full, Some(ta));
        assert_eq!((b.woken(), c.woken()), (0, 1));
        c.queue(&queue, full + 2, Some(tc));
        assert_eq!(take_numbers(&queue), [full, full + 2]);
    }

    #[test]
    fn close_wakes_every_waiter_to_see_it_closed() {
        let queue = PublishQueue::default();
        let full = fill(&queue);
        let (a, b, c) = (Publisher::new(), Publisher::new(), Publisher::new());
        let ta = a.wait(&queue, full, None);
        let tb = b.wait(&queue, full + 1, None);
        let tc = c.wait(&queue, full + 2, None);
        queue.close();
        assert_eq!((a.woken(), b.woken(), c.woken()), (1, 1, 1));
        assert!(matches!(b.push(&queue, full + 1, Some(tb)), Pushed::Closed));
        assert!(matches!(a.push(&queue, full, Some(ta)), Pushed::Closed));
        // Dropped after the close: nothing left to give back, nobody woken.
        queue.cancel(tc);
        assert_eq!(c.woken(), 1);
        assert!(take_numbers(&queue).is_empty());
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
