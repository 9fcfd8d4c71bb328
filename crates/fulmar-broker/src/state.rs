//! The broker's shared state: sessions, the subscription trie, retained
//! messages, and routing between them. Guarded by one `std::sync::Mutex`
//! that is never held across an `.await`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

use fulmar_codec::{PacketId, Publish, QoS};
use fulmar_session::SessionState;
use fulmar_topic::{
    Match, RetainedIndex, SharedFilter, SubscriptionFilter, SubscriptionTrie, TopicFilter,
    TopicName, group_matches,
};
use futures::task::AtomicWaker;
use tokio::sync::{mpsc, oneshot};

use crate::bridge::Bridge;
use crate::config::PaceAbove;
use crate::frames::Frames;
use crate::message::Message;
use crate::store::journal::Journal;
use crate::store::recover::unix_of;
use crate::store::{
    StoreOp, StoredMessage, StoredSession, StoredSubscription, StoredWill, WillDue, unix_millis,
};
use crate::{Authorizer, ClientInfo};

/// A message handed to a connection: the copy for its subscriber, and its
/// key in the store when the session is persistent.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) publish: Publish,
    pub(crate) seq: Option<u64>,
    /// Payload bytes counted in the connection's queued bytes.
    pub(crate) bytes: usize,
    /// The encoded headers of the message, shared with its other
    /// deliveries (a message routed to several subscribers).
    pub(crate) frames: Option<Arc<Frames>>,
    /// When it was routed: the time it waits in the connection's queue
    /// counts against its Message Expiry Interval (v5:MQTT-3.3.2-6).
    pub(crate) since: Instant,
    /// Sent to the client as the member of a shared group that the group
    /// chose: if the client's session ends before it acknowledged the
    /// message (QoS 1), another member gets it ([`State::end_session_with`]).
    pub(crate) shared: bool,
}

/// A message waiting in the offline queue of a session.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) publish: Publish,
    /// When it was queued (its Message Expiry Interval counts from there).
    pub(crate) since: Instant,
    /// Its key in the store.
    pub(crate) seq: Option<u64>,
    /// A QoS 1 message a shared group sent ([`Delivery::shared`]).
    pub(crate) shared: bool,
}

/// Where a routed message comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin<'a> {
    /// A client of this broker (its will too): No Local applies, the bridge hears of it.
    Client(&'a Subscriber),
    /// The embedding application ([`BrokerHandle::publish`](crate::BrokerHandle::publish)).
    App,
    /// `$SYS` topics: local only.
    System,
    /// The bridge ([`BrokerHandle::inject`](crate::BrokerHandle::inject)): not handed back.
    Bridge,
}

/// Who holds a subscription.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Subscriber {
    /// A client session, by client identifier.
    Client(Arc<str>),
    /// An in-process subscription of a [`BrokerHandle`](crate::BrokerHandle).
    Local(u64),
}

/// The options of one subscription that matter when a message is delivered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubOptions {
    /// The granted QoS.
    pub(crate) qos: QoS,
    pub(crate) no_local: bool,
    pub(crate) retain_as_published: bool,
    pub(crate) id: Option<NonZeroU32>,
}

/// A message to the task of a connection, other than a delivery.
#[derive(Debug)]
pub(crate) enum Control {
    /// Another connection took over the session: disconnect (5.0: 0x8E), store
    /// the session state, then drop the sender. With `true`, the client's
    /// will is dropped first (published elsewhere already).
    TakeOver(oneshot::Sender<()>, bool),
    /// The broker shuts down: disconnect (5.0: 0x8B).
    Shutdown,
    /// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize): ask
    /// the authorizer about every subscription again; the sender is dropped
    /// once that is done.
    Reauthorize(mpsc::Sender<()>),
    /// [`BrokerHandle::disconnect_clients`](crate::BrokerHandle::disconnect_clients):
    /// disconnect (5.0: with this reason code) if the client is one of those.
    DisconnectIf(ClientFilter, fulmar_codec::DisconnectReasonCode),
}

/// Which connected clients [`Control::DisconnectIf`] is for.
#[derive(Clone)]
pub(crate) struct ClientFilter(pub(crate) Arc<dyn Fn(&crate::ClientInfo) -> bool + Send + Sync>);

impl std::fmt::Debug for ClientFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientFilter")
    }
}

impl Control {
    fn is_take_over(&self) -> bool {
        matches!(self, Self::TakeOver(..))
    }
}

/// The connection that currently holds a session, known by its inbox: each
/// connection has its own, so the inbox is also its identity
/// ([`Owner::is`]). No connection number beside it: the session entry is 32
/// bytes, which the allocator serves without rounding.
#[derive(Debug)]
pub(crate) struct Owner {
    /// Its deliveries and control messages.
    pub(crate) control: Arc<ControlInbox>,
}

impl Owner {
    /// Whether this is the connection with the inbox `inbox`.
    pub(crate) fn is(&self, inbox: &Arc<ControlInbox>) -> bool {
        Arc::ptr_eq(&self.control, inbox)
    }

    /// Whether this is the connection that reads `receiver`.
    pub(crate) fn reads(&self, receiver: &ControlReceiver) -> bool {
        self.is(&receiver.0)
    }
}

/// What a connection task takes from its [`ControlInbox`].
#[derive(Debug)]
pub(crate) enum Inbound {
    Control(Control),
    Delivery(Box<Delivery>),
}

/// A delivery the connection queue did not take.
#[derive(Debug)]
pub(crate) enum DeliverError {
    /// The queue is full.
    Full(Box<Delivery>),
    /// The connection is ending.
    Closed(Box<Delivery>),
}

/// The messages to one connection task: its deliveries (a bounded queue)
/// and [`Control`] messages. One small allocation per connection, with no
/// buffer until something is queued (a channel would allocate its first
/// block of slots up front, for every idle connection).
#[derive(Debug)]
pub(crate) struct ControlInbox {
    /// `None` once the connection task has ended.
    queue: Mutex<Option<Queues>>,
    /// Wakes the connection task (a waker, not a `Notify`: the task waits
    /// with a poll function, which takes no room in its future).
    waker: AtomicWaker,
    /// Payload bytes of the deliveries in the connection queue.
    pub(crate) queued_bytes: AtomicUsize,
    /// Its connection is paced: it reads nothing (the acknowledgements of
    /// what it sends included), so its queues drain only once that is over.
    /// Publishers are not paced on its queue meanwhile, so that clients
    /// publishing to each other cannot hold each other back (set and read
    /// under the state lock, in [`State::route`]).
    pub(crate) paced: AtomicBool,
    /// A publisher paced on this queue waited as long as it may and the
    /// queue did not drain: its connection takes nothing (a subscriber that
    /// stopped reading). Publishers are not paced on it again until it takes
    /// a delivery; their messages are dropped when it is full meanwhile.
    stalled: AtomicBool,
    /// Its session queue holds [`Limits::max_queued_messages`](crate::Limits)
    /// (kept by its connection task): a QoS 0 copy is dropped rather than
    /// queued here, as the session would drop it, so that QoS 0 does not
    /// wait in this queue behind a full session queue.
    session_full: AtomicBool,
    /// Messages its session has in flight or cannot send yet (the client's
    /// Receive Maximum used up), at most `u16::MAX` (kept by its connection
    /// task). A shared group prefers the member with the fewest.
    outstanding: AtomicU16,
    /// A connection took the session over after the hand-over timeout with
    /// Clean Start 1 while this one was held up: the session this
    /// connection held ended then, and its will is due when it ends
    /// [MQTT-3.1.2-8].
    pub(crate) session_ended: AtomicBool,
}

#[derive(Debug, Default)]
struct Queues {
    deliveries: VecDeque<Box<Delivery>>,
    /// What most inboxes never hold: one word while empty.
    rare: Option<Box<Rare>>,
    /// The connection takes no more deliveries (it is ending).
    closed: bool,
}

/// The rarely used part of an inbox's [`Queues`].
#[derive(Debug, Default)]
struct Rare {
    /// A take-over, the shutdown: taken last first.
    controls: Vec<Control>,
    /// Senders waiting for room in the full delivery queue (back-pressure),
    /// woken when a delivery is taken or the inbox closes. A wait that ends
    /// otherwise (timed out, cancelled) takes its waker out ([`Registered`]).
    waiting: Vec<Waker>,
    /// Paced publishers waiting for the queue to drain, woken once it is
    /// down to `resume` or empty (not at every delivery taken: fifty
    /// publishers paced on one subscriber would all be polled for each of
    /// its messages), or the inbox closes. A wait that ends otherwise takes
    /// its waker out too.
    paced: Vec<Waker>,
    /// The level `paced` is woken at.
    resume: Option<PaceAbove>,
}

impl Queues {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drops the rare part once it holds nothing.
    fn tidy(&mut self) {
        if self.rare.as_ref().is_some_and(|rare| {
            rare.controls.is_empty() && rare.waiting.is_empty() && rare.paced.is_empty()
        }) {
            self.rare = None;
        }
    }

    fn has_controls(&self) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|rare| !rare.controls.is_empty())
    }

    fn pop_control(&mut self) -> Option<Control> {
        let control = self.rare.as_mut()?.controls.pop();
        self.tidy();
        control
    }

    /// Takes the waiting senders' wakers, to wake once the lock is released;
    /// the paced publishers' too if `paced`.
    fn take_waiting(&mut self, paced: bool) -> Vec<Waker> {
        let Some(rare) = self.rare.as_mut() else {
            return Vec::new();
        };
        let mut waiting = std::mem::take(&mut rare.waiting);
        if paced {
            waiting.append(&mut rare.paced);
            rare.resume = None;
        }
        self.tidy();
        waiting
    }

    /// Whether paced publishers wait for this queue to drain to a level it
    /// is at now, with `bytes` queued. An empty queue always wakes them:
    /// nothing more is taken from it to wake them later (`bytes` may still
    /// count a message being routed to it that is then dropped).
    fn resumes(&self, bytes: usize) -> bool {
        self.rare
            .as_ref()
            .and_then(|rare| rare.resume.filter(|_| !rare.paced.is_empty()))
            .is_some_and(|resume| {
                self.deliveries.is_empty() || !resume.still_over(bytes, self.deliveries.len())
            })
    }

    /// A delivery taken from the queue, `bytes` left queued after it: gives
    /// room to the senders waiting, and wakes the paced publishers if it is
    /// down to their level.
    fn pop_delivery(
        &mut self,
        bytes: impl FnOnce(usize) -> usize,
    ) -> Option<(Box<Delivery>, Vec<Waker>)> {
        let mut delivery = self.deliveries.pop_front()?;
        if self.deliveries.is_empty() && self.deliveries.capacity() > 64 {
            // A burst is over: an idle connection keeps no large queue.
            self.deliveries = VecDeque::new();
        }
        let left = bytes(std::mem::take(&mut delivery.bytes));
        let paced = self.resumes(left);
        Some((delivery, self.take_waiting(paced)))
    }
}

/// Wakes the senders that waited for room.
fn wake_all(waiting: Vec<Waker>) {
    for waker in waiting {
        waker.wake();
    }
}

/// Which waker list of a [`Rare`] a wait is registered in.
#[derive(Clone, Copy)]
enum WaitList {
    Waiting,
    Paced,
}

/// A wait's waker registered in one of an inbox's lists: taken out again
/// when the wait ends or is dropped. Otherwise a wait that timed out or was
/// cancelled (its connection taken over) would leave its waker, and with it
/// its task's memory, in the list until the queue drains: a subscriber that
/// takes nothing would collect one per publisher task that ever waited on it.
struct Registered<'a> {
    inbox: &'a ControlInbox,
    list: WaitList,
    waker: Option<Waker>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let Some(waker) = self.waker.take() else {
            return;
        };
        let mut queue = self.inbox.lock();
        let Some(queue) = queue.as_mut() else {
            return;
        };
        if let Some(rare) = queue.rare.as_mut() {
            let list = match self.list {
                WaitList::Waiting => &mut rare.waiting,
                WaitList::Paced => &mut rare.paced,
            };
            list.retain(|w| !w.will_wake(&waker));
            if rare.paced.is_empty() {
                rare.resume = None;
            }
        }
        queue.tidy();
    }
}

impl ControlInbox {
    /// Whether a take-over is queued.
    fn has_take_over(&self) -> bool {
        self.lock()
            .as_ref()
            .and_then(|queue| queue.rare.as_ref())
            .is_some_and(|rare| rare.controls.iter().any(Control::is_take_over))
    }

    /// Sends `control` to the task; gives it back when the task has ended.
    pub(crate) fn send(&self, control: Control) -> Result<(), Control> {
        {
            let mut queue = self.lock();
            match queue.as_mut() {
                Some(queue) => queue.rare().controls.push(control),
                None => return Err(control),
            }
        }
        self.waker.wake();
        Ok(())
    }

    /// Queues a delivery unless the queue holds `capacity` already (every
    /// sender of a broker gives the same) or is closed; returns how many
    /// deliveries the queue holds now.
    pub(crate) fn try_deliver(
        &self,
        delivery: Box<Delivery>,
        capacity: usize,
    ) -> Result<usize, DeliverError> {
        self.offer(delivery, capacity, None, None)
    }

    /// As [`try_deliver`](Self::try_deliver); when the queue is full,
    /// `waiting` is woken once there is room (or it closes). With
    /// `max_bytes`, the delivery is also counted in the queue's bytes (its
    /// [`Publish::memory_size`]), and the queue is full for it when it would
    /// take them over `max_bytes` (unless the queue is empty).
    fn offer(
        &self,
        mut delivery: Box<Delivery>,
        capacity: usize,
        max_bytes: Option<usize>,
        waiting: Option<&Waker>,
    ) -> Result<usize, DeliverError> {
        let len = {
            let mut queue = self.lock();
            match queue.as_mut() {
                Some(queue) if !queue.closed => {
                    let size = max_bytes.map(|max| (delivery.publish.memory_size(), max));
                    let over_bytes = size.is_some_and(|(size, max)| {
                        !queue.deliveries.is_empty()
                            && self
                                .queued_bytes
                                .load(Ordering::Relaxed)
                                .saturating_add(size)
                                > max
                    });
                    if queue.deliveries.len() >= capacity.max(1) || over_bytes {
                        if let Some(waker) = waiting {
                            let list = &mut queue.rare().waiting;
                            if !list.iter().any(|w| w.will_wake(waker)) {
                                list.push(waker.clone());
                            }
                        }
                        return Err(DeliverError::Full(delivery));
                    }
                    if let Some((size, _)) = size {
                        delivery.bytes = size;
                        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
                    }
                    queue.deliveries.push_back(delivery);
                    queue.deliveries.len()
                }
                _ => return Err(DeliverError::Closed(delivery)),
            }
        };
        self.waker.wake();
        Ok(len)
    }

    /// Whether the connection of this queue is ending (deliveries are given
    /// back).
    fn is_closed(&self) -> bool {
        self.lock().as_ref().is_none_or(|queue| queue.closed)
    }

    /// Queues a delivery once there is room (at most `capacity` queued, and
    /// at most `max_bytes` of them unless the queue is empty); gives it back
    /// when the connection is ending. Cancel safe (the delivery is dropped
    /// then).
    pub(crate) async fn deliver(
        &self,
        delivery: Box<Delivery>,
        capacity: usize,
        max_bytes: usize,
    ) -> Result<(), Box<Delivery>> {
        let mut delivery = Some(delivery);
        let mut registered = Registered {
            inbox: self,
            list: WaitList::Waiting,
            waker: None,
        };
        std::future::poll_fn(|cx| {
            // Polled again once it finished: never.
            let Some(offered) = delivery.take() else {
                return std::task::Poll::Pending;
            };
            match self.offer(offered, capacity, Some(max_bytes), Some(cx.waker())) {
                Ok(_) => std::task::Poll::Ready(Ok(())),
                Err(DeliverError::Closed(back)) => std::task::Poll::Ready(Err(back)),
                Err(DeliverError::Full(back)) => {
                    delivery = Some(back);
                    if registered.waker.is_none() {
                        registered.waker = Some(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }

    /// Takes a control message, or a delivery if `deliveries`.
    fn try_recv(&self, deliveries: bool) -> Option<Inbound> {
        let mut guard = self.lock();
        let queue = guard.as_mut()?;
        if let Some(control) = queue.pop_control() {
            return Some(Inbound::Control(control));
        }
        if !deliveries {
            return None;
        }
        let (delivery, waiting) = self.pop_delivery(queue)?;
        drop(guard);
        wake_all(waiting);
        Some(Inbound::Delivery(delivery))
    }

    /// Takes the next delivery and its bytes off the queue (under the lock,
    /// so that a sender waiting for the bytes to drop sees them gone when it
    /// is woken), with the waiting senders to wake.
    fn pop_delivery(&self, queue: &mut Queues) -> Option<(Box<Delivery>, Vec<Waker>)> {
        let (delivery, waiting) = queue.pop_delivery(|bytes| {
            if bytes > 0 {
                self.queued_bytes
                    .fetch_sub(bytes, Ordering::Relaxed)
                    .saturating_sub(bytes)
            } else {
                self.queued_bytes.load(Ordering::Relaxed)
            }
        })?;
        if self.stalled.load(Ordering::Relaxed) {
            self.stalled.store(false, Ordering::Relaxed);
        }
        Some((delivery, waiting))
    }

    /// After a pacing wait on this queue timed out: marks it stalled if it
    /// is still over `limit` (see [`stalled`](Self::stalled)).
    pub(crate) fn stalled_over(&self, limit: PaceAbove) {
        let queue = self.lock();
        if let Some(queue) = queue.as_ref()
            && self.still_over(queue, limit)
        {
            self.stalled.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a shared group should send this connection a message now
    /// rather than another member: its connection reads (not paced, not
    /// stalled), its session queue is not full, and its delivery queue holds
    /// no more bytes than `limit` (where publishers would be paced). Atomics
    /// only, no lock: asked for up to 16 members per message.
    pub(crate) fn has_room(&self, limit: PaceAbove) -> bool {
        !self.session_full.load(Ordering::Relaxed)
            && self.may_pace()
            && self.queued_bytes.load(Ordering::Relaxed) <= limit.bytes
    }

    /// How busy this connection is, for a shared group's choice: the
    /// messages its session has in flight or waiting, one more if its task
    /// has deliveries still to take. Atomics only, as [`has_room`](Self::has_room).
    pub(crate) fn busy(&self) -> usize {
        usize::from(self.outstanding.load(Ordering::Relaxed))
            + usize::from(self.queued_bytes.load(Ordering::Relaxed) > 0)
    }

    /// Whether this queue (`queue`, locked) is still over `limit`.
    fn still_over(&self, queue: &Queues, limit: PaceAbove) -> bool {
        limit.still_over(
            self.queued_bytes.load(Ordering::Relaxed),
            queue.deliveries.len(),
        )
    }

    /// Whether publishers may be paced on this queue: its connection is not
    /// paced itself (see [`paced`](Self::paced)) and not stalled (see
    /// [`stalled`](Self::stalled)).
    fn may_pace(&self) -> bool {
        !self.paced.load(Ordering::Relaxed) && !self.stalled.load(Ordering::Relaxed)
    }

    /// Ready once this queue is empty or no longer over `limit` (a quarter of
    /// [`Limits::max_queued_bytes`](crate::Limits) or of
    /// [`Limits::max_queued_messages`](crate::Limits): a publisher whose
    /// message took it over waits on it, pacing), or the connection is
    /// ending. The task is woken once the queue is down to
    /// [`limit.resume()`](PaceAbove::resume), half of that, not at every
    /// delivery taken; polled for another reason meanwhile (its own
    /// deliveries, a timer), the wait ends under `limit`.
    pub(crate) async fn drained(&self, limit: PaceAbove) {
        let mut registered = Registered {
            inbox: self,
            list: WaitList::Paced,
            waker: None,
        };
        std::future::poll_fn(|cx| {
            let mut queue = self.lock();
            match queue.as_mut() {
                // Empty: nothing more is taken from it to wake this wait
                // (the bytes of a message being routed to it may count).
                Some(queue)
                    if !queue.closed
                        && !queue.deliveries.is_empty()
                        && self.still_over(queue, limit) =>
                {
                    let rare = queue.rare();
                    rare.resume = Some(limit.resume());
                    if !rare.paced.iter().any(|w| w.will_wake(cx.waker())) {
                        rare.paced.push(cx.waker().clone());
                    }
                    if registered.waker.is_none() {
                        registered.waker = Some(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
                _ => std::task::Poll::Ready(()),
            }
        })
        .await;
    }

    /// Makes `waker` the one woken by what is queued from now on (instead
    /// of the receiving task's); true when something is queued already.
    pub(crate) fn set_waker(&self, waker: &Waker) -> bool {
        self.waker.register(waker);
        self.lock()
            .as_ref()
            .is_some_and(|queue| queue.has_controls() || !queue.deliveries.is_empty())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Queues>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiving end of a [`ControlInbox`], held by the connection task;
/// dropping it closes the inbox and drops what is still in it.
#[derive(Debug)]
pub(crate) struct ControlReceiver(Arc<ControlInbox>);

impl ControlReceiver {
    /// A new inbox (its senders bound its delivery queue).
    pub(crate) fn new() -> Self {
        Self(Arc::new(ControlInbox {
            queue: Mutex::new(Some(Queues::default())),
            waker: AtomicWaker::new(),
            queued_bytes: AtomicUsize::new(0),
            paced: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            session_full: AtomicBool::new(false),
            outstanding: AtomicU16::new(0),
            session_ended: AtomicBool::new(false),
        }))
    }

    /// The sending end, for the session's [`Owner`].
    pub(crate) fn inbox(&self) -> Arc<ControlInbox> {
        self.0.clone()
    }

    /// The address of the inbox: its identity, for [`Held::own`].
    pub(crate) fn inbox_addr(&self) -> usize {
        Arc::as_ptr(&self.0).addr()
    }

    /// Marks the connection paced, or no longer (see [`ControlInbox::paced`]).
    pub(crate) fn set_paced(&self, paced: bool) {
        self.0.paced.store(paced, Ordering::Relaxed);
    }

    /// Whether the session queue is full (see [`ControlInbox::session_full`]);
    /// written only when it changes, as every publisher to it reads it.
    pub(crate) fn set_session_full(&self, full: bool) {
        if self.0.session_full.load(Ordering::Relaxed) != full {
            self.0.session_full.store(full, Ordering::Relaxed);
        }
    }

    /// The messages the session has in flight or waiting (see
    /// [`ControlInbox::outstanding`]); written only when it changes.
    pub(crate) fn set_outstanding(&self, messages: usize) {
        let messages = u16::try_from(messages).unwrap_or(u16::MAX);
        if self.0.outstanding.load(Ordering::Relaxed) != messages {
            self.0.outstanding.store(messages, Ordering::Relaxed);
        }
    }

    /// The next control message, or delivery if `deliveries`. Cancel safe:
    /// a message stays queued until taken.
    pub(crate) async fn recv(&self, deliveries: bool) -> Inbound {
        std::future::poll_fn(|cx| self.poll(cx, || self.0.try_recv(deliveries))).await
    }

    /// The next delivery (control messages stay queued). Cancel safe.
    pub(crate) async fn recv_delivery(&self) -> Box<Delivery> {
        std::future::poll_fn(|cx| self.poll(cx, || self.try_recv_delivery())).await
    }

    /// What `take` gives, or `Pending` with the task's waker registered.
    fn poll<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        take: impl Fn() -> Option<T>,
    ) -> std::task::Poll<T> {
        if let Some(taken) = take() {
            return std::task::Poll::Ready(taken);
        }
        self.0.waker.register(cx.waker());
        // Queued between the first look and the registration: no wake came.
        match take() {
            Some(taken) => std::task::Poll::Ready(taken),
            None => std::task::Poll::Pending,
        }
    }

    /// Ready once another connection asks for the session (a take-over is
    /// queued); takes nothing. Cancel safe.
    pub(crate) async fn taken_over(&self) {
        std::future::poll_fn(|cx| self.poll(cx, || self.0.has_take_over().then_some(()))).await;
    }

    /// Takes the queued take-overs out, as the senders that wait for the
    /// session (the other control messages stay).
    pub(crate) fn take_take_overs(&self) -> Vec<(oneshot::Sender<()>, bool)> {
        let mut queue = self.0.lock();
        let Some(queue) = queue.as_mut() else {
            return Vec::new();
        };
        let Some(rare) = queue.rare.as_mut() else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for control in std::mem::take(&mut rare.controls) {
            match control {
                Control::TakeOver(done, drop_will) => taken.push((done, drop_will)),
                other => rare.controls.push(other),
            }
        }
        queue.tidy();
        taken
    }

    /// The next delivery, if one is queued.
    pub(crate) fn try_recv_delivery(&self) -> Option<Box<Delivery>> {
        let mut queue = self.0.lock();
        let (delivery, waiting) = self.0.pop_delivery(queue.as_mut()?)?;
        drop(queue);
        wake_all(waiting);
        Some(delivery)
    }

    /// Takes no more deliveries; returns those still queued.
    pub(crate) fn close_deliveries(&self) -> VecDeque<Box<Delivery>> {
        let mut queue = self.0.lock();
        let (taken, waiting) = match queue.as_mut() {
            Some(queue) => {
                queue.closed = true;
                (
                    std::mem::take(&mut queue.deliveries),
                    queue.take_waiting(true),
                )
            }
            None => (VecDeque::new(), Vec::new()),
        };
        drop(queue);
        // Senders waiting for room see it closed.
        wake_all(waiting);
        taken
    }
}

impl ControlReceiver {
    /// The connection has ended: what is still queued is dropped (so the
    /// sender of a take-over stops waiting for its answer) and nothing more
    /// is taken.
    pub(crate) fn close(&self) {
        let left = self.0.lock().take();
        // Senders waiting for room see it closed.
        if let Some(mut queues) = left {
            wake_all(queues.take_waiting(true));
        }
    }
}

impl Drop for ControlReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

/// The filters a client subscribed to, and what they take
/// ([`subscription_size`]): nothing allocated for a client without any.
#[derive(Debug, Default)]
pub(crate) struct Filters(
    // Boxed on purpose: 8 bytes instead of 56 in every session entry.
    Option<Box<FilterSet>>,
);

#[derive(Debug, Default)]
struct FilterSet {
    set: HashSet<SubscriptionFilter>,
    bytes: usize,
}

impl Filters {
    pub(crate) fn contains(&self, filter: &SubscriptionFilter) -> bool {
        self.0.as_ref().is_some_and(|f| f.set.contains(filter))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |f| f.set.len())
    }

    /// What the filters take, counted as [`subscription_size`].
    pub(crate) fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |f| f.bytes)
    }

    pub(crate) fn insert(&mut self, filter: SubscriptionFilter) -> bool {
        let f = self.0.get_or_insert_with(Box::default);
        let size = subscription_size(&filter);
        let added = f.set.insert(filter);
        if added {
            f.bytes = f.bytes.saturating_add(size);
        }
        added
    }

    pub(crate) fn remove(&mut self, filter: &SubscriptionFilter) -> bool {
        let Some(f) = self.0.as_mut() else {
            return false;
        };
        let removed = f.set.remove(filter);
        if removed {
            f.bytes = f.bytes.saturating_sub(subscription_size(filter));
        }
        if f.set.is_empty() {
            self.0 = None;
        }
        removed
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &SubscriptionFilter> {
        self.0.iter().flat_map(|f| f.set.iter())
    }
}

/// What one subscription counts against
/// [`Limits::max_subscription_bytes_per_client`](crate::Limits::max_subscription_bytes_per_client):
/// its entry ([`SUBSCRIPTION_ENTRY_BYTES`]), the filter (group included)
/// and a tree node per level ([`SUBSCRIPTION_LEVEL_BYTES`]). Measured: a
/// 128-level filter of `a` and `+` took 6.2 KB, counted as 6 655.
pub(crate) fn subscription_size(filter: &SubscriptionFilter) -> usize {
    let topic = filter.filter().as_str();
    let levels = topic.bytes().filter(|b| *b == b'/').count() + 1;
    let group = filter.group().map_or(0, str::len);
    SUBSCRIPTION_ENTRY_BYTES
        .saturating_add(topic.len())
        .saturating_add(group)
        .saturating_add(levels.saturating_mul(SUBSCRIPTION_LEVEL_BYTES))
}

/// A subscription's entries (in the tree and in its session), beyond its
/// filter and levels.
pub(crate) const SUBSCRIPTION_ENTRY_BYTES: usize = 256;

/// A level of a filter in the subscription tree.
pub(crate) const SUBSCRIPTION_LEVEL_BYTES: usize = 48;

/// The part of a session kept in the broker's state while no connection
/// holds it.
#[derive(Debug, Default)]
pub(crate) struct Away {
    /// The session state stored when the last connection ended.
    pub(crate) stored: SessionState,
    /// QoS 1/2 messages that arrived while offline (see
    /// [`SessionEntry::queue_offline`]).
    pub(crate) offline: VecDeque<Queued>,
    /// The bytes of `offline` ([`Publish::memory_size`] of each).
    pub(crate) offline_bytes: usize,
    /// The share of `offline` in
    /// [`Limits::max_offline_bytes`](crate::Limits::max_offline_bytes)
    /// ([`offline_size`] of each), given back when the queue goes.
    pub(crate) offline_charge: Option<Charge>,
    /// Store keys of the messages in `stored` (in flight or queued in the
    /// session), by packet identifier.
    pub(crate) inflight: HashMap<PacketId, u64>,
    /// The QoS 1 messages in `stored` that a shared group sent
    /// ([`Delivery::shared`]), by packet identifier.
    pub(crate) shared: HashSet<PacketId>,
    /// When the session ends if nobody reconnects (`None`: never).
    pub(crate) expires_at: Option<Instant>,
    /// When `stored` was taken: the time since counts against the Message
    /// Expiry Interval of its messages (see [`SessionState::age`]).
    pub(crate) stored_at: Option<Instant>,
    /// The will, waiting for its Will Delay Interval.
    pub(crate) will: Option<Box<PendingWill>>,
    /// When its last connection ended, in milliseconds since the Unix epoch,
    /// as its store record says ([`StoredSession::disconnected_at`]): kept
    /// for the record written again while it is away.
    pub(crate) disconnected_at: Option<u64>,
}

impl SessionEntry {
    /// The part kept while no connection holds the session, created empty.
    pub(crate) fn away(&mut self) -> &mut Away {
        self.away.get_or_insert_with(Box::default)
    }

    /// Takes that part (for the connection that holds the session now).
    pub(crate) fn take_away(&mut self) -> Away {
        self.away.take().map(|away| *away).unwrap_or_default()
    }

    /// Queues `queued` while offline, unless the queue holds `max_messages`
    /// already or would go over `max_bytes` (a message is always
    /// let into an empty queue, whatever its size), or the offline queues
    /// of all sessions together would go over `offline` (the budget and its
    /// maximum, see [`offline_size`]). `false`: not queued.
    pub(crate) fn queue_offline(
        &mut self,
        queued: Queued,
        max_messages: usize,
        max_bytes: usize,
        offline: (&ByteBudget, usize),
    ) -> bool {
        let bytes = queued.publish.memory_size();
        let away = self.away();
        let over_bytes =
            away.offline_bytes > 0 && away.offline_bytes.saturating_add(bytes) > max_bytes;
        if away.offline.len() >= max_messages || over_bytes {
            return false;
        }
        let (budget, max_total) = offline;
        let size = offline_size(&queued.publish);
        let charged = match &mut away.offline_charge {
            Some(charge) => charge.try_grow(size, max_total),
            None => budget
                .try_charge(size, max_total)
                .map(|charge| away.offline_charge = Some(charge))
                .is_some(),
        };
        if !charged {
            return false;
        }
        away.offline_bytes += bytes;
        away.offline.push_back(queued);
        true
    }

    /// When the session ends if nobody reconnects (`None`: connected or never).
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        self.away.as_ref().and_then(|away| away.expires_at)
    }

    /// Whether a will waits for its delay.
    pub(crate) fn has_will(&self) -> bool {
        self.away.as_ref().is_some_and(|away| away.will.is_some())
    }

    /// The will waiting for its delay.
    pub(crate) fn will(&self) -> Option<&PendingWill> {
        self.away.as_ref().and_then(|away| away.will.as_deref())
    }

    /// Takes the will waiting for its delay.
    pub(crate) fn take_will(&mut self) -> Option<Box<PendingWill>> {
        self.away.as_mut().and_then(|away| away.will.take())
    }
}

/// A will waiting for its Will Delay Interval.
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub(crate) publish: Publish,
    pub(crate) at: Instant,
    /// Its client, for the authorizer when the rules change meanwhile
    /// ([`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize)).
    pub(crate) info: crate::ClientInfo,
    /// Its share of [`Limits::max_delayed_will_bytes`](crate::Limits::max_delayed_will_bytes),
    /// given back when it is published or dropped (held for that only).
    pub(crate) _charge: Option<Charge>,
}

/// The will of a connected client, and its share of
/// [`Limits::max_delayed_will_bytes`](crate::Limits::max_delayed_will_bytes)
/// when it has a delay (it goes to its [`PendingWill`] when the connection
/// ends).
#[derive(Debug)]
pub(crate) struct HeldWill {
    pub(crate) publish: Publish,
    pub(crate) charge: Option<Charge>,
}

/// Bytes held at once, all sessions together, against a limit: the wills
/// with a Will Delay Interval (see
/// [`Limits::max_delayed_will_bytes`](crate::Limits::max_delayed_will_bytes)),
/// the offline queues (see
/// [`Limits::max_offline_bytes`](crate::Limits::max_offline_bytes)).
/// Each [`Charge`] gives its share back when it is dropped, wherever
/// what it counts goes (a will published, dropped, replaced; a queue taken
/// by a connection; its session removed).
#[derive(Clone, Debug, Default)]
pub(crate) struct ByteBudget(Arc<AtomicUsize>);

/// What a will counts against [`ByteBudget`]: [`Publish::memory_size`] and
/// [`WILL_ENTRY_BYTES`].
pub(crate) fn will_size(will: &Publish) -> usize {
    will.memory_size().saturating_add(WILL_ENTRY_BYTES)
}

/// What a message in an offline queue counts against
/// [`Limits::max_offline_bytes`](crate::Limits::max_offline_bytes):
/// [`Publish::memory_size`] and [`OFFLINE_ENTRY_BYTES`].
pub(crate) fn offline_size(publish: &Publish) -> usize {
    publish.memory_size().saturating_add(OFFLINE_ENTRY_BYTES)
}

/// A message's entry in an offline queue ([`Queued`], the message's own
/// fields), beyond [`Publish::memory_size`]. Measured: 2 000 offline
/// sessions with 1 000 one-byte messages each took 514 MB, 257 bytes a message.
pub(crate) const OFFLINE_ENTRY_BYTES: usize = 256;

/// A will's entries (its pending record, its client's details), beyond
/// [`Publish::memory_size`].
pub(crate) const WILL_ENTRY_BYTES: usize = 256;

impl ByteBudget {
    /// Charges `bytes` if the total stays within `max`; `None`: it would not.
    pub(crate) fn try_charge(&self, bytes: usize, max: usize) -> Option<Charge> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= max)
            })
            .ok()?;
        Some(Charge {
            bytes,
            budget: self.clone(),
        })
    }

    /// Charges `bytes` whatever the total (a will restored from the store).
    pub(crate) fn charge(&self, bytes: usize) -> Charge {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_add(bytes))
            });
        Charge {
            bytes,
            budget: self.clone(),
        }
    }

    /// The bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One holder's share of a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    bytes: usize,
    budget: ByteBudget,
}

impl Charge {
    /// Adds `bytes` to this share if the budget's total stays within `max`;
    /// `false`: it would not (nothing added).
    pub(crate) fn try_grow(&mut self, bytes: usize, max: usize) -> bool {
        let Some(more) = self.budget.try_charge(bytes, max) else {
            return false;
        };
        self.absorb(more);
        true
    }

    fn absorb(&mut self, mut other: Self) {
        self.bytes = self.bytes.saturating_add(other.bytes);
        other.bytes = 0;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = self.bytes;
        let _ = self
            .budget
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// One client session, connected or not.
#[derive(Debug, Default)]
pub(crate) struct SessionEntry {
    pub(crate) owner: Option<Owner>,
    /// What the session holds while no connection holds it (`None` while
    /// connected: a connection takes it all, and an idle client costs no
    /// room for it).
    pub(crate) away: Option<Box<Away>>,
    /// Kept in the store (a journal is set and the session outlives its
    /// connection).
    pub(crate) persistent: bool,
    /// Session Expiry Interval in seconds (`u32::MAX`: never), as last known.
    pub(crate) expiry: u32,
    /// The filters this client subscribed to (for the per-client limit).
    pub(crate) filters: Filters,
}

/// A retained message and when it was stored (for its Message Expiry Interval).
#[derive(Debug)]
pub(crate) struct Retained {
    pub(crate) publish: Publish,
    pub(crate) stored: Instant,
    /// Published by the broker itself (`$SYS`): outside the retained
    /// quotas, which are the clients' and the application's.
    pub(crate) system: bool,
}

impl Retained {
    /// When its Message Expiry Interval passes, if it has one (and that is
    /// within what [`Instant`] can represent).
    fn expires_at(&self) -> Option<Instant> {
        let interval = self.publish.properties.message_expiry_interval?;
        self.stored
            .checked_add(Duration::from_secs(u64::from(interval)))
    }

    /// Whether its Message Expiry Interval, if any, has not passed at `now`.
    /// An interval of 0 has passed at once: such a message went to the
    /// subscribers of the moment and replaced the retained message, but goes
    /// to no later subscription.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.publish
            .properties
            .message_expiry_interval
            .is_none_or(|interval| {
                now.saturating_duration_since(self.stored).as_secs() < u64::from(interval)
            })
    }
}

/// Counters shared by every task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dropped: AtomicU64,
    pub(crate) connections: AtomicU64,
    /// Publishers waiting for room in a subscriber's queue (back-pressure).
    pub(crate) blocked_publishers: AtomicU64,
    /// Accepted MQTT clients currently connected.
    pub(crate) clients_connected: AtomicU64,
    /// The most clients connected at once since the start.
    pub(crate) clients_maximum: AtomicU64,
    /// CONNECT packets received since the start, refused ones included.
    pub(crate) connects: AtomicU64,
    /// Network connections accepted since the start.
    pub(crate) sockets: AtomicU64,
    /// Sessions ended by their Session Expiry Interval since the start.
    pub(crate) sessions_expired: AtomicU64,
    pub(crate) packets_received: AtomicU64,
    pub(crate) packets_sent: AtomicU64,
    pub(crate) publish_received: AtomicU64,
    pub(crate) publish_sent: AtomicU64,
    /// Payload bytes of the PUBLISH packets received.
    pub(crate) publish_bytes_received: AtomicU64,
    /// Payload bytes of the PUBLISH packets sent.
    pub(crate) publish_bytes_sent: AtomicU64,
    /// PUBLISH packets sent with a header encoded for another subscriber.
    pub(crate) publish_reused: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    /// Bytes reserved for the rest of large packets (see
    /// [`Limits::max_read_ahead_bytes`](crate::Limits::max_read_ahead_bytes)).
    pub(crate) read_ahead: std::sync::atomic::AtomicUsize,
}

impl Counters {
    pub(crate) fn drop_one(&self) {
        self.drop_many(1);
    }

    /// Counts `n` messages dropped.
    pub(crate) fn drop_many(&self, n: usize) {
        if n > 0 {
            self.dropped
                .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
}

/// Everything behind the broker's lock.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) subs: SubscriptionTrie<Subscriber, SubOptions>,
    pub(crate) retained: RetainedIndex<Retained>,
    pub(crate) sessions: HashMap<Arc<str>, Box<SessionEntry>>,
    pub(crate) locals: HashMap<u64, mpsc::Sender<Message>>,
    /// Session deadlines (will delay, session expiry), possibly stale.
    pub(crate) deadlines: BTreeSet<(Instant, Arc<str>)>,
    pub(crate) next_id: u64,
    /// Routing beyond this broker, told of filters and messages.
    pub(crate) bridge: Option<Arc<dyn Bridge>>,
    /// The bridge delivers to shared groups ([`Bridge::routes_shared`]).
    pub(crate) bridge_shared: bool,
    /// The bridge publishes the wills of this broker's clients when it goes
    /// away ([`Bridge::keeps_wills`]): the store keeps none.
    pub(crate) bridge_wills: bool,
    /// Subscriptions per filter, kept with a bridge (for `filter_added`/`filter_removed`).
    pub(crate) filter_refs: HashMap<SubscriptionFilter, usize>,
    /// The write path to the store, when there is one.
    pub(crate) journal: Option<Arc<Journal>>,
    /// The key of the next message kept in the store.
    pub(crate) next_seq: u64,
    /// [`Limits::max_queued_bytes`](crate::Limits::max_queued_bytes).
    pub(crate) max_queued_bytes: usize,
    /// [`Limits::queue_qos0_offline`](crate::Limits::queue_qos0_offline).
    pub(crate) queue_qos0_offline: bool,
    /// [`Limits::max_retained_messages`](crate::Limits::max_retained_messages)
    /// (`None`: no limit), for the messages that reach [`route`](Self::route)
    /// without a client to refuse: wills and messages from a bridge.
    pub(crate) max_retained: Option<usize>,
    /// [`Limits::max_retained_bytes`](crate::Limits::max_retained_bytes).
    pub(crate) max_retained_bytes: usize,
    /// The bytes of the retained messages ([`retained_size`] of
    /// each; see [`State::put_retained`]), the broker's own (`$SYS`) left out.
    pub(crate) retained_bytes: usize,
    /// How many of the retained messages are the broker's own (`$SYS`),
    /// which the quotas leave out.
    pub(crate) system_retained: usize,
    /// The retained messages with a Message Expiry Interval, by when it
    /// passes ([`State::remove_expired_retained`]).
    pub(crate) retained_expiry: BTreeSet<(Instant, TopicName)>,
    /// The authorizer and the sessions' clients, when it checks each
    /// delivery ([`Authorizer::checks_reads`]).
    pub(crate) reads: Option<Reads>,
    /// The wills with a delay held now (see
    /// [`Limits::max_delayed_will_bytes`](crate::Limits::max_delayed_will_bytes)).
    pub(crate) will_budget: ByteBudget,
    /// The offline queues of all sessions (see
    /// [`Limits::max_offline_bytes`](crate::Limits::max_offline_bytes)).
    pub(crate) offline_budget: ByteBudget,
    /// [`Limits::max_offline_bytes`](crate::Limits::max_offline_bytes).
    pub(crate) max_offline_bytes: usize,
    /// The room [`route`](Self::route) collects the subscribers of a message
    /// in, kept empty between messages (see [`reuse`]).
    pub(crate) matches: Vec<Match<'static, Subscriber, SubOptions>>,
}

/// [`State::route`] keeps the room for this many subscribers of a message
/// from one message to the next.
const KEPT_MATCHES: usize = 1024;

/// A vector that was empty, for values of another lifetime: the same
/// allocation (a vector collected from an emptied vector's iterator whose
/// values have the same layout reuses its buffer).
fn reuse<'a, 'b>(
    empty: Vec<Match<'a, Subscriber, SubOptions>>,
) -> Vec<Match<'b, Subscriber, SubOptions>> {
    // Not `filter`: the values change type (their lifetime), which only a
    // map can do, and none is kept.
    #[allow(clippy::unnecessary_filter_map)]
    empty.into_iter().filter_map(|_| None).collect()
}

/// What checking each delivery needs: see [`State::reads`].
pub(crate) struct Reads {
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// The last client of each session (kept apart from [`SessionEntry`],
    /// which stays as small without an authorizer that checks reads); none
    /// for a session restored from the store until its client connects.
    pub(crate) clients: HashMap<Arc<str>, Arc<ClientInfo>>,
}

/// Whether `key` may receive a message on `topic`: asks the authorizer
/// about a client whose session knows its client.
fn may_read(reads: Option<&Reads>, key: &Subscriber, topic: &str) -> bool {
    let (Some(reads), Subscriber::Client(id)) = (reads, key) else {
        return true;
    };
    reads
        .clients
        .get(id)
        .is_none_or(|client| reads.authorizer.authorize_read(client, topic))
}

/// How a shared group ranks `key` for a message on `topic` (MQTT 5.0
/// section 4.8.2; see `SubscriptionTrie::matches_ranked`). Of the members
/// that may read it: best one that can take it now (a connected client
/// whose connection reads and whose queues have room, an in-process
/// subscriber whose channel has), then a connected one that is full, then
/// one whose client is offline (its session queues the message). Last, never
/// chosen while another may read it, a member that may not read it. With
/// read checks, a group whose members are all full asks the authorizer about
/// each member probed (at most 16 per message).
fn share_rank(
    sessions: &HashMap<Arc<str>, Box<SessionEntry>>,
    locals: &HashMap<u64, mpsc::Sender<Message>>,
    reads: Option<&Reads>,
    room: PaceAbove,
    key: &Subscriber,
    topic: &str,
) -> u8 {
    let rank = match key {
        Subscriber::Client(id) => match sessions.get(id).map(|e| e.owner.as_ref()) {
            None => return 0,
            Some(None) => 1,
            // The least busy member first (the fewest messages in flight or
            // waiting; the strategy's choice among equals), so that a
            // slower one does not pile up messages while another waits for
            // work. Every member with room ranks above those without (2).
            Some(Some(owner)) if owner.control.has_room(room) => {
                u8::MAX - u8::try_from(owner.control.busy().min(200)).unwrap_or(200)
            }
            Some(Some(_)) => 2,
        },
        Subscriber::Local(n) => match locals.get(n) {
            Some(tx) if tx.capacity() > 0 => u8::MAX,
            Some(_) => 2,
            None => return 0,
        },
    };
    if may_read(reads, key, topic) { rank } else { 0 }
}

/// The Message Expiry Interval left after `waited`, or `None` if the message expired.
pub(crate) fn age(mut publish: Publish, since: Instant, now: Instant) -> Option<Publish> {
    age_in_place(&mut publish, since, now).then_some(publish)
}

/// [`age`] in place: false if the message expired (then it is unchanged).
pub(crate) fn age_in_place(publish: &mut Publish, since: Instant, now: Instant) -> bool {
    if let Some(interval) = publish.properties.message_expiry_interval {
        let waited = now.saturating_duration_since(since).as_secs();
        match fulmar_session::message_expiry_left(interval, waited) {
            Some(left) => publish.properties.message_expiry_interval = Some(left),
            None => return false,
        }
    }
    true
}

/// A copy of a retained message to send to a new subscription with
/// `options`: RETAIN set, QoS downgraded, expiry aged, the subscription's
/// identifier; `None` if it expired.
fn retained_copy(r: &Retained, options: SubOptions, now: Instant) -> Option<Publish> {
    let mut p = age(r.publish.clone(), r.stored, now)?;
    p.qos = p.qos.min(options.qos);
    p.retain = true;
    p.properties.subscription_identifiers = options.id.into_iter().collect();
    Some(p)
}

impl State {
    /// A fresh identifier for a connection or local subscription.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Routes an application message: stores or deletes it as retained when
    /// its RETAIN flag is set, then delivers one copy to each matching
    /// subscriber (one per client even when several of its filters match).
    /// `origin` tells the publishing client, for No Local, and whether the
    /// bridge hears of the message. With `held`, the connections a client's
    /// publisher must wait for are put there (see [`Held`]).
    ///
    /// Returns false when the message is known to have no subscriber: none
    /// here may receive it and no bridge (or cluster) is attached, which
    /// could have subscribers elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route(
        &mut self,
        topic: &TopicName,
        publish: &Publish,
        origin: Origin<'_>,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
        mut held: Option<&mut Held>,
    ) -> bool {
        let from = match origin {
            Origin::Client(key) => Some(key),
            _ => None,
        };
        if publish.retain {
            if publish.payload.is_empty() {
                if self.take_retained(topic)
                    && let Some(journal) = &self.journal
                {
                    journal.push(StoreOp::DeleteRetained {
                        topic: Arc::from(topic.as_str()),
                    });
                }
            } else if !matches!(origin, Origin::System) && !self.retained_fits(topic, publish, now)
            {
                // A new retained topic over the quota. A client's PUBLISH was
                // refused before it got here (0x97); a will or a message from
                // a bridge has nobody to refuse, so it is delivered but not
                // stored.
                tracing::debug!(topic = topic.as_str(), "retained quota full: not stored");
            } else {
                let mut stored = publish.clone();
                // Kept for long: its own copy, not a slice of the buffer the
                // PUBLISH was read into (that would stay alive with it).
                stored.unshare();
                stored.packet_id = None;
                stored.dup = false;
                stored.properties.topic_alias = None;
                stored.properties.subscription_identifiers.clear();
                if let Some(journal) = &self.journal
                    && !matches!(origin, Origin::System)
                {
                    journal.push(StoreOp::PutRetained {
                        topic: Arc::from(topic.as_str()),
                        message: StoredMessage {
                            publish: stored.clone(),
                            stored_at: unix_millis(),
                            packet_id: None,
                            released: false,
                        },
                    });
                }
                let value = Retained {
                    publish: stored,
                    stored: now,
                    system: matches!(origin, Origin::System),
                };
                self.put_retained(topic.clone(), value);
            }
        }
        let Self {
            subs,
            sessions,
            locals,
            bridge,
            bridge_shared,
            journal,
            next_seq,
            max_queued_bytes,
            queue_qos0_offline,
            reads,
            offline_budget,
            max_offline_bytes,
            matches,
            ..
        } = self;
        let reads = reads.as_ref();
        let mut found = reuse(std::mem::take(matches));
        let overlap = if *bridge_shared {
            // The bridge delivers to shared groups (once across its nodes):
            // choosing a member here would move the group's strategy on for
            // nothing.
            subs.collect_plain_matches(topic, &mut found)
        } else {
            // A shared group prefers a member that may read the message
            // and has room for it.
            let room = PaceAbove::new(*max_queued_bytes, max_queued);
            subs.collect_matches_ranked(
                topic,
                None,
                |key| share_rank(sessions, locals, reads, room, key, topic.as_str()),
                &mut found,
            )
        };
        found.retain(|m| {
            !(m.options.no_local && from == Some(m.key)) && may_read(reads, m.key, topic.as_str())
        });
        let subscribed = !found.is_empty() || bridge.is_some();
        // Encoded once for all the subscribers it goes to (per variant).
        // Only where encoding costs more than finding a shared encoding: a
        // PUBLISH without properties is encoded faster than it is matched.
        let many = found.len() > 1 && !publish.properties.is_empty();
        let mut frames = None;
        // Sorted by subscriber only when one may be there twice.
        for group in group_matches(&mut found, overlap) {
            let Some(first) = group.first() else { continue };
            // A retained message to overlapping subscriptions of one client
            // that keep RETAIN and clear it goes twice: one copy each way,
            // each with its subscriptions' identifiers (v5:MQTT-3.3.1-12,
            // v5:MQTT-3.3.4-5).
            let keeps = |m: &Match<'_, Subscriber, SubOptions>| m.options.retain_as_published;
            let split = publish.retain && group.iter().any(keeps) && !group.iter().all(keeps);
            // Each copy is built where it is handed over: a `Publish` is a
            // large value, and every move is a copy.
            let mut deliver = |part: &[Match<'_, Subscriber, SubOptions>],
                               held: Option<&mut Held>| {
                let target = Target {
                    sessions: &mut *sessions,
                    locals,
                    max_queued,
                    counters,
                    now,
                    journal: journal.as_deref(),
                    next_seq: &mut *next_seq,
                    max_bytes: *max_queued_bytes,
                    offline: (&mut *offline_budget, *max_offline_bytes),
                    queue_qos0: *queue_qos0_offline,
                    frames: if many { Some(&mut frames) } else { None },
                    // A shared group's match comes alone.
                    shared: first.share_group.is_some(),
                };
                target.deliver(first.key, copy_for(publish, part), None, held);
            };
            if split {
                let (kept, cleared): (Vec<_>, Vec<_>) = group.iter().copied().partition(keeps);
                deliver(&kept, held.as_deref_mut());
                deliver(&cleared, held.as_deref_mut());
            } else {
                deliver(group, held.as_deref_mut());
            }
        }
        // A QoS 0 publisher, and one whose queues are over only for their
        // count, is held back only when reading it faster would help none
        // of its subscribers: a slow one among others that keep up loses
        // messages (dropped at the bound), it does not slow the rest down.
        if let Some(held) = held {
            held.settle();
        }
        if let (Some(bridge), Origin::Client(_) | Origin::App) = (bridge, origin) {
            bridge.message(topic, publish);
        }
        // Kept for the next message unless a large fan-out grew it.
        found.clear();
        if found.capacity() <= KEPT_MATCHES {
            *matches = reuse(found);
        }
        subscribed
    }

    /// Delivers `publish` to one member of the shared group `filter`, chosen
    /// by the group's strategy; false when the group has no member here.
    /// With `held`, the member's connection is put there as [`route`](Self::route)
    /// puts a subscriber's, for the caller to wait on (see [`Held`]).
    pub(crate) fn deliver_shared(
        &mut self,
        filter: &SharedFilter,
        publish: &Publish,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
        mut held: Option<&mut Held>,
    ) -> bool {
        let (sessions, locals, reads) = (&self.sessions, &self.locals, self.reads.as_ref());
        let topic = publish.topic.as_str();
        let room = PaceAbove::new(self.max_queued_bytes, max_queued);
        let Some((key, options)) = self.subs.pick_shared_ranked(filter, None, |key| {
            share_rank(sessions, locals, reads, room, key, topic)
        }) else {
            return false;
        };
        if !may_read(reads, key, topic) {
            // No member here may read it.
            return false;
        }
        let chosen = [Match {
            key,
            options,
            share_group: Some(filter.group()),
        }];
        let out = copy_for(publish, &chosen);
        let key = key.clone();
        let mut target = self.target(max_queued, counters, now);
        target.shared = true;
        target.deliver(&key, out, None, held.as_deref_mut());
        // One copy: it kept up, or its queue is what to wait on.
        if let Some(held) = held {
            held.settle();
        }
        true
    }

    /// Where one delivery outside [`route`](Self::route) goes.
    fn target<'a>(
        &'a mut self,
        max_queued: usize,
        counters: &'a Counters,
        now: Instant,
    ) -> Target<'a> {
        Target {
            sessions: &mut self.sessions,
            locals: &self.locals,
            max_queued,
            counters,
            now,
            journal: self.journal.as_deref(),
            next_seq: &mut self.next_seq,
            max_bytes: self.max_queued_bytes,
            offline: (&self.offline_budget, self.max_offline_bytes),
            queue_qos0: self.queue_qos0_offline,
            frames: None,
            shared: false,
        }
    }

    /// Adds (or replaces, MQTT-3.8.4-3) the subscription of `key` to
    /// `filter`; returns the options it replaced.
    pub(crate) fn add_subscription(
        &mut self,
        filter: &SubscriptionFilter,
        key: Subscriber,
        options: SubOptions,
    ) -> Option<SubOptions> {
        let old = self.subs.subscribe(filter, key, options);
        if old.is_none()
            && let Some(bridge) = &self.bridge
        {
            let n = self.filter_refs.entry(filter.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                bridge.filter_added(filter);
            }
        }
        old
    }

    /// Removes the subscription of `key` to `filter`; returns its options.
    pub(crate) fn remove_subscription(
        &mut self,
        filter: &SubscriptionFilter,
        key: &Subscriber,
    ) -> Option<SubOptions> {
        let old = self.subs.unsubscribe(filter, key)?;
        if let Some(bridge) = &self.bridge
            && let Some(n) = self.filter_refs.get_mut(filter)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.filter_refs.remove(filter);
                bridge.filter_removed(filter);
            }
        }
        Some(old)
    }

    /// Stores a retained message, replacing the topic's earlier one, and
    /// counts its bytes.
    pub(crate) fn put_retained(&mut self, topic: TopicName, value: Retained) {
        let (bytes, system) = (retained_size(&topic, &value.publish), value.system);
        let at = value.expires_at();
        // The replaced message leaves the expiry index before this one goes
        // in: both may expire at the same instant (the same key).
        if let Some(old) = self.retained.insert(topic.clone(), value) {
            self.uncount_retained(&topic, &old);
        }
        if let Some(at) = at {
            self.retained_expiry.insert((at, topic));
        }
        if system {
            self.system_retained += 1;
        } else {
            self.retained_bytes = self.retained_bytes.saturating_add(bytes);
        }
    }

    /// Removes a topic's retained message; whether there was one.
    pub(crate) fn take_retained(&mut self, topic: &TopicName) -> bool {
        match self.retained.remove(topic) {
            Some(old) => {
                self.uncount_retained(topic, &old);
                true
            }
            None => false,
        }
    }

    /// Takes a retained message that left the store out of the counts.
    fn uncount_retained(&mut self, topic: &TopicName, old: &Retained) {
        if let Some(at) = old.expires_at() {
            self.retained_expiry.remove(&(at, topic.clone()));
        }
        if old.system {
            self.system_retained = self.system_retained.saturating_sub(1);
        } else {
            self.retained_bytes = self
                .retained_bytes
                .saturating_sub(retained_size(topic, &old.publish));
        }
    }

    /// Whether `publish` may be routed under the retained quotas: a retained
    /// message for a topic not stored yet needs room
    /// ([`Limits::max_retained_messages`](crate::Limits)), and no retained
    /// message may take the bytes of all of them over
    /// [`Limits::max_retained_bytes`](crate::Limits) (a replacement counts
    /// what it adds; one message is always let into an empty store).
    pub(crate) fn retained_fits(
        &mut self,
        topic: &TopicName,
        publish: &Publish,
        now: Instant,
    ) -> bool {
        if !publish.retain || publish.payload.is_empty() {
            return true;
        }
        let replaced = self
            .retained
            .get(topic)
            .map(|r| retained_size(topic, &r.publish));
        let bytes_fit = |state: &Self| {
            let after = state
                .retained_bytes
                .saturating_sub(replaced.unwrap_or(0))
                .saturating_add(retained_size(topic, publish));
            state.retained_bytes == 0 || after <= state.max_retained_bytes
        };
        let count_fits = |state: &Self| {
            replaced.is_some()
                || state.max_retained.is_none_or(|max| {
                    state.retained.len().saturating_sub(state.system_retained) < max
                })
        };
        if !count_fits(self) || !bytes_fit(self) {
            // Expired messages nobody asked for must not hold the quota.
            self.remove_expired_retained(now);
        }
        count_fits(self) && bytes_fit(self)
    }

    /// Removes every retained message whose Message Expiry Interval has
    /// passed: one step per such message, whatever the number of retained
    /// messages. Also before the counts are read ([`Stats::retained`]), so
    /// that they leave out what expired.
    ///
    /// [`Stats::retained`]: crate::Stats::retained
    pub(crate) fn remove_expired_retained(&mut self, now: Instant) {
        let mut expired = Vec::new();
        while let Some((at, _)) = self.retained_expiry.first()
            && *at <= now
        {
            if let Some((_, topic)) = self.retained_expiry.pop_first() {
                expired.push(topic);
            }
        }
        self.delete_retained(expired);
    }

    /// Removes the retained messages of `topics`, from the store too.
    fn delete_retained(&mut self, topics: Vec<TopicName>) {
        for topic in topics {
            self.take_retained(&topic);
            if let Some(journal) = &self.journal {
                journal.push(StoreOp::DeleteRetained {
                    topic: Arc::from(topic.as_str()),
                });
            }
        }
    }

    /// Adds to `out` the retained messages matching `filter`, ready to send
    /// to a new subscription with `options` (RETAIN set, QoS downgraded,
    /// expiry aged), while `out` holds fewer than `room`; returns how many
    /// more matched (for the caller to count as dropped: they would not fit
    /// the subscriber's queue).
    pub(crate) fn retained_for(
        &mut self,
        filter: &TopicFilter,
        options: SubOptions,
        now: Instant,
        room: usize,
        out: &mut Vec<Publish>,
    ) -> usize {
        self.retained_split(filter, options, now, room, out, &mut |_| false, &|_| true)
    }

    /// The first `max` live retained messages matching `filter` whose topic
    /// is `wanted`, into `out`, and whether another one matched: the walk
    /// stops there, so its cost is bounded by `max` (and the topics not
    /// wanted or expired on the way), not by how many match.
    pub(crate) fn retained_first(
        &mut self,
        filter: &TopicFilter,
        options: SubOptions,
        now: Instant,
        max: usize,
        out: &mut Vec<Publish>,
        wanted: &mut dyn FnMut(&TopicName) -> bool,
    ) -> bool {
        let mut expired = Vec::new();
        let more = self.retained.try_matches(filter, |topic, r| {
            if !r.is_live(now) {
                expired.push(topic.clone());
            } else if wanted(topic) {
                if out.len() >= max {
                    return ControlFlow::Break(());
                }
                if let Some(p) = retained_copy(r, options, now) {
                    out.push(p);
                }
            }
            ControlFlow::Continue(())
        });
        self.delete_retained(expired);
        more.is_break()
    }

    /// As [`retained_for`](Self::retained_for), but the topic of each live
    /// message matched beyond `room` is offered to `later` (to be looked up
    /// again with [`retained_now`](Self::retained_now) when the subscriber's
    /// queue has room): only those it refuses (returns false) are counted.
    /// Messages whose topic is not `readable` are left out (not counted).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn retained_split(
        &mut self,
        filter: &TopicFilter,
        options: SubOptions,
        now: Instant,
        room: usize,
        out: &mut Vec<Publish>,
        later: &mut dyn FnMut(&TopicName) -> bool,
        readable: &dyn Fn(&TopicName) -> bool,
    ) -> usize {
        let mut expired = Vec::new();
        let mut left_out = 0;
        self.retained.matches(filter, |topic, r| {
            if !r.is_live(now) {
                expired.push(topic.clone());
            } else if readable(topic) {
                if out.len() >= room {
                    if !later(topic) {
                        left_out += 1;
                    }
                } else if let Some(p) = retained_copy(r, options, now) {
                    out.push(p);
                }
            }
        });
        self.delete_retained(expired);
        left_out
    }

    /// The retained message of `topic` as it is now, ready to send to a
    /// subscription with `options` (as by [`retained_for`](Self::retained_for));
    /// `None` if it was deleted or expired meanwhile (an expired one is
    /// removed).
    pub(crate) fn retained_now(
        &mut self,
        topic: &TopicName,
        options: SubOptions,
        now: Instant,
    ) -> Option<Publish> {
        let r = self.retained.get(topic)?;
        if !r.is_live(now) {
            self.delete_retained(vec![topic.clone()]);
            return None;
        }
        retained_copy(r, options, now)
    }

    /// Puts a QoS 1/2 message for the persistent session `client` in the
    /// store and returns its key; `None` without a store, or for QoS 0.
    pub(crate) fn store_message(&mut self, client: &Arc<str>, publish: &Publish) -> Option<u64> {
        let journal = self.journal.as_ref()?;
        (publish.qos != QoS::AtMostOnce)
            .then(|| put_message(journal, &mut self.next_seq, client, publish))
    }

    /// Removes a session and its subscriptions.
    pub(crate) fn remove_session(&mut self, id: &Arc<str>) -> Option<SessionEntry> {
        let key = Subscriber::Client(id.clone());
        self.unschedule(id);
        if let Some(reads) = &mut self.reads {
            reads.clients.remove(id);
        }
        let entry = self.sessions.remove(id)?;
        if entry.persistent
            && let Some(journal) = &self.journal
        {
            journal.push(StoreOp::DeleteSession(id.clone()));
        }
        if self.bridge.is_some() {
            for filter in entry.filters.iter() {
                self.remove_subscription(filter, &key);
            }
        } else {
            self.subs.remove_key(&key);
        }
        Some(*entry)
    }

    /// Runs the session deadlines up to `now`: delayed wills whose time has
    /// come are published, expired sessions are removed (publishing a will
    /// still pending). Returns the next deadline.
    pub(crate) fn run_deadlines(
        &mut self,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
    ) -> Option<Instant> {
        while let Some((at, id)) = self.deadlines.first().cloned() {
            if at > now {
                return Some(at);
            }
            self.deadlines.pop_first();
            let Some(entry) = self.sessions.get_mut(&id) else {
                continue;
            };
            if entry.owner.is_some() {
                continue;
            }
            let expired = entry.expires_at().is_some_and(|t| t <= now);
            let will_due = entry
                .away
                .as_ref()
                .and_then(|away| away.will.as_ref())
                .is_some_and(|w| w.at <= now || expired);
            let will = if will_due { entry.take_will() } else { None };
            if expired {
                let unacknowledged = self.unacknowledged_shared(&id, now);
                self.end_session_with(&id, unacknowledged, max_queued, counters, now);
                counters.sessions_expired.fetch_add(1, Ordering::Relaxed);
                if let Some(bridge) = &self.bridge {
                    bridge.session_gone(&id);
                }
            }
            if let Some(will) = will {
                self.publish_pending_will(&id, will.publish, max_queued, counters, now);
                if !expired {
                    // The session lives on: its record, without the will
                    // (written after the will's copies: a crash in between
                    // publishes it twice rather than never).
                    self.persist_away_session(&id);
                }
            }
        }
        None
    }

    /// Publishes the will that waited for its delay, and tells the bridge it
    /// is no longer pending.
    fn publish_pending_will(
        &mut self,
        id: &Arc<str>,
        will: Publish,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
    ) {
        self.publish_will(id, will, max_queued, counters, now);
        if let Some(bridge) = &self.bridge {
            bridge.will_cleared(id);
        }
    }

    /// Publishes every will waiting for its delay that the store does not
    /// keep ([`keeps_wills_at_shutdown`](Self::keeps_wills_at_shutdown)), at
    /// shutdown: a will left waiting with a session that is not kept would
    /// never be published (MQTT-3.1.2-8). Their sessions' records are
    /// written again without them.
    pub(crate) fn publish_pending_wills(
        &mut self,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
    ) {
        let waiting: Vec<Arc<str>> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.owner.is_none() && e.has_will())
            .filter(|(_, e)| !self.keeps_wills_at_shutdown(e.persistent, e.expiry))
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            let Some(will) = self.sessions.get_mut(&id).and_then(|e| e.take_will()) else {
                continue;
            };
            self.publish_pending_will(&id, will.publish, max_queued, counters, now);
            // The session lives on in the store: its record, without the will.
            self.persist_away_session(&id);
        }
    }

    /// Whether a will waiting out its Will Delay Interval stays in the record
    /// of its session at a shutdown rather than being published then: when
    /// the session is kept in the store (`persistent`, with an `expiry`
    /// left) and no bridge keeps the wills instead. A restart publishes it
    /// when its delay has passed, unless the client came back within it
    /// (v5:MQTT-3.1.3-9).
    pub(crate) fn keeps_wills_at_shutdown(&self, persistent: bool, expiry: u32) -> bool {
        persistent && expiry > 0 && self.journal.is_some() && !self.bridge_wills
    }

    /// Publishes a will message of client `id`.
    pub(crate) fn publish_will(
        &mut self,
        id: &Arc<str>,
        will: Publish,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
    ) {
        let Ok(topic) = will.topic.parse::<TopicName>() else {
            return;
        };
        let from = Subscriber::Client(id.clone());
        let origin = Origin::Client(&from);
        let _subscribed = self.route(&topic, &will, origin, max_queued, counters, now, None);
    }

    /// Hands a message that waited for a connection which has ended since to
    /// the session: to its new connection or to its offline queue.
    pub(crate) fn redeliver(
        &mut self,
        client: &Arc<str>,
        delivery: Delivery,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
    ) {
        let key = Subscriber::Client(client.clone());
        // Checked again: another user may hold the session now. The time it
        // waited since it was routed counts against its Message Expiry
        // Interval (v5:MQTT-3.3.2-6); expired meanwhile, it goes
        // (v5:MQTT-3.3.2-5; not counted as dropped, as elsewhere).
        let readable = may_read(self.reads.as_ref(), &key, delivery.publish.topic.as_str());
        let publish = if readable {
            age(delivery.publish, delivery.since, now)
        } else {
            None
        };
        let Some(publish) = publish else {
            if let (Some(journal), Some(seq)) = (&self.journal, delivery.seq) {
                journal.push(StoreOp::DeleteMessage {
                    client: client.clone(),
                    seq,
                });
            }
            return;
        };
        let mut target = self.target(max_queued, counters, now);
        target.shared = delivery.shared;
        target.deliver(&key, publish, Some(delivery.seq), None);
    }

    /// Writes the record of session `id` to the store (when it is persistent),
    /// with its subscriptions and the will waiting out its delay, if any;
    /// `disconnected_at` when its connection ended.
    /// Returns whether anything was written.
    pub(crate) fn persist_session(&self, id: &Arc<str>, disconnected_at: Option<u64>) -> bool {
        let will = self.sessions.get(id).and_then(|e| e.will()).map(|will| {
            let now_unix = unix_millis();
            StoredWill {
                publish: will.publish.clone(),
                due: WillDue::At(unix_of(will.at, Instant::now(), now_unix)),
                username: will.info.username.clone(),
                protocol_version: will.info.protocol_version,
            }
        });
        self.put_session_record(id, disconnected_at, will)
    }

    /// Writes the record of session `id`, which a connection holds, to the
    /// store (when it is persistent), with its subscriptions and `will`, the
    /// will of its client ([`WillDue::AfterDisconnect`]): a crash must not
    /// lose it (MQTT-3.1.2-8). Returns whether anything was written.
    pub(crate) fn persist_connected_session(
        &self,
        id: &Arc<str>,
        will: Option<StoredWill>,
    ) -> bool {
        self.put_session_record(id, None, will)
    }

    /// Writes the record of session `id` (when it is persistent) with `will`.
    fn put_session_record(
        &self,
        id: &Arc<str>,
        disconnected_at: Option<u64>,
        will: Option<StoredWill>,
    ) -> bool {
        let (Some(journal), Some(entry)) = (&self.journal, self.sessions.get(id)) else {
            return false;
        };
        if !entry.persistent {
            return false;
        }
        match self.session_record(id, disconnected_at) {
            Some(mut record) => {
                record.will = will.filter(|_| !self.bridge_wills);
                journal.push(StoreOp::PutSession(record));
                true
            }
            None => false,
        }
    }

    /// Writes the record of session `id`, which no connection holds, again
    /// (when it is persistent): its will waiting out its delay went away
    /// (published, withdrawn), and a restart must not publish it.
    pub(crate) fn persist_away_session(&self, id: &Arc<str>) {
        let Some(entry) = self.sessions.get(id).filter(|e| e.owner.is_none()) else {
            return;
        };
        let since = entry
            .away
            .as_ref()
            .and_then(|away| away.disconnected_at)
            .unwrap_or_else(unix_millis);
        self.persist_session(id, Some(since));
    }

    /// The record of session `id` as it is now: its subscriptions and
    /// expiry; `disconnected_at` when its connection ended. Without its
    /// will: [`persist_session`](Self::persist_session) adds it for the
    /// store; a bridge hears of wills otherwise ([`Bridge::will_set`](crate::Bridge::will_set)).
    pub(crate) fn session_record(
        &self,
        id: &Arc<str>,
        disconnected_at: Option<u64>,
    ) -> Option<StoredSession> {
        let entry = self.sessions.get(id)?;
        let key = Subscriber::Client(id.clone());
        let subscriptions = entry
            .filters
            .iter()
            .filter_map(|filter| {
                let options = self.subs.get(filter, &key)?;
                Some(StoredSubscription {
                    filter: filter.to_string(),
                    qos: options.qos,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    id: options.id,
                })
            })
            .collect();
        Some(StoredSession {
            client_id: id.clone(),
            expiry_interval: entry.expiry,
            disconnected_at,
            subscriptions,
            will: None,
        })
    }

    /// Subscribes session `id` again to its stored `subscriptions` (a
    /// restart, a session brought from another broker), recording each
    /// filter in `filters`; returns how many did not parse (logged, skipped).
    pub(crate) fn restore_subscriptions(
        &mut self,
        id: &Arc<str>,
        subscriptions: &[StoredSubscription],
        filters: &mut Filters,
    ) -> usize {
        let key = Subscriber::Client(id.clone());
        let mut skipped = 0;
        for sub in subscriptions {
            let Ok(filter) = sub.filter.parse::<SubscriptionFilter>() else {
                tracing::warn!(client = %id, filter = %sub.filter, "skipping a stored filter that does not parse");
                skipped += 1;
                continue;
            };
            let options = SubOptions {
                qos: sub.qos,
                no_local: sub.no_local,
                retain_as_published: sub.retain_as_published,
                id: sub.id,
            };
            self.add_subscription(&filter, key.clone(), options);
            filters.insert(filter);
        }
        skipped
    }

    /// Remembers that session `id` has something to do at `at`.
    pub(crate) fn schedule(&mut self, id: &Arc<str>, at: Instant) {
        self.deadlines.insert((at, id.clone()));
    }

    /// Drops the deadlines of session `id` (its expiry, its delayed will):
    /// it is taken by a connection or removed. They would otherwise stay
    /// until they fall due, one more for each disconnection.
    pub(crate) fn unschedule(&mut self, id: &Arc<str>) {
        let Some(away) = self.sessions.get(id).and_then(|e| e.away.as_ref()) else {
            return;
        };
        let due = [away.expires_at, away.will.as_ref().map(|w| w.at)];
        for at in due.into_iter().flatten() {
            self.deadlines.remove(&(at, id.clone()));
        }
    }

    /// Ends session `id` before its time (a Clean Start, a session brought
    /// from elsewhere): removed, and a will still waiting out its delay is
    /// published, since the session ends (MQTT-3.1.2-8).
    pub(crate) fn end_session(
        &mut self,
        id: &Arc<str>,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
    ) {
        self.unschedule(id);
        let will = self.sessions.get_mut(id).and_then(|e| e.take_will());
        let unacknowledged = self.unacknowledged_shared(id, now);
        self.end_session_with(id, unacknowledged, max_queued, counters, now);
        if let Some(will) = will {
            self.publish_pending_will(id, will.publish, max_queued, counters, now);
        }
    }

    /// Removes session `id`, which ends, and hands `unacknowledged` (the
    /// QoS 1 messages a shared group sent it that it had not acknowledged:
    /// not sent yet, or sent and no PUBACK came) to another member of their
    /// group. MQTT 5.0 section 4.8.2, for QoS 1: "If the Client's Session
    /// terminates before the Client reconnects, the Server SHOULD send the
    /// Application Message to another Client that is subscribed to the same
    /// Shared Subscription." A QoS 2 message must not be
    /// (v5:MQTT-4.8.2-5): the caller leaves those out.
    ///
    /// The group is the one of the client's shared subscriptions whose
    /// filter matches the topic. When several of them do (the client is in
    /// more than one group for that topic), which group sent which copy is
    /// not known: those messages are dropped, as they were before. Returns
    /// how many went to another member.
    pub(crate) fn end_session_with(
        &mut self,
        id: &Arc<str>,
        unacknowledged: Vec<Publish>,
        max_queued: usize,
        counters: &Counters,
        now: Instant,
    ) -> usize {
        let groups: Vec<SharedFilter> = self
            .sessions
            .get(id)
            .map(|entry| {
                entry
                    .filters
                    .iter()
                    .filter_map(|f| match f {
                        SubscriptionFilter::Shared(shared) => Some(shared.clone()),
                        SubscriptionFilter::Plain(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.remove_session(id);
        let mut handed = 0;
        for publish in unacknowledged {
            let Ok(topic) = TopicName::from_bytes(publish.topic.as_bytes().clone()) else {
                continue;
            };
            let mut matching = groups.iter().filter(|g| g.filter().matches(&topic));
            let (Some(group), None) = (matching.next(), matching.next()) else {
                continue;
            };
            if self.deliver_shared(group, &publish, max_queued, counters, now, None) {
                handed += 1;
            }
        }
        handed
    }

    /// The QoS 1 messages a shared group sent to session `id` that it has
    /// not acknowledged, while no connection holds it: in its stored state
    /// (not sent yet, or sent without PUBACK) and in its offline queue; each
    /// with the time it waited counted against its Message Expiry Interval
    /// (expired ones left out).
    fn unacknowledged_shared(&self, id: &Arc<str>, now: Instant) -> Vec<Publish> {
        let Some(away) = self.sessions.get(id).and_then(|e| e.away.as_deref()) else {
            return Vec::new();
        };
        let tagged = |p: &Publish| p.packet_id.is_some_and(|id| away.shared.contains(&id));
        let stored_at = away.stored_at.unwrap_or(now);
        let stored = away
            .stored
            .outgoing()
            .iter()
            .filter_map(|o| match o {
                fulmar_session::Outgoing::Publish(p) if tagged(p) => Some((**p).clone()),
                _ => None,
            })
            .chain(away.stored.pending().iter().filter(|p| tagged(p)).cloned())
            .filter_map(|p| age(p, stored_at, now));
        let offline = away
            .offline
            .iter()
            .filter(|q| q.shared)
            .filter_map(|q| age(q.publish.clone(), q.since, now));
        stored.chain(offline).collect()
    }

    /// The number of session deadlines waiting (expiries, delayed wills).
    #[cfg(test)]
    pub(crate) fn deadlines_len(&self) -> usize {
        self.deadlines.len()
    }
}

/// What routing a client's message leaves its connection to wait on before
/// it reads on.
#[derive(Default)]
pub(crate) struct Held {
    /// Under back-pressure: QoS 1/2 copies for connections whose queue was
    /// full go to [`blocked`](Self::blocked) instead of being dropped.
    pub(crate) backpressure: bool,
    /// Copies to send once their connection has room, before the message is
    /// acknowledged.
    pub(crate) blocked: Vec<Blocked>,
    /// Connections whose queue this message's QoS 1/2 copy took over a
    /// quarter of [`Limits::max_queued_bytes`](crate::Limits), at most 256 KiB ([`PaceAbove`]):
    /// the publisher reads nothing more until they are back under it.
    pub(crate) paced: Vec<Arc<ControlInbox>>,
    /// The same for the QoS 0 copies of the message being routed, and for
    /// the QoS 1/2 copies that took a queue over a quarter of
    /// [`Limits::max_queued_messages`](crate::Limits) only: they join
    /// `paced` only if no copy went to a subscriber that keeps up (see
    /// [`State::route`]).
    pub(crate) paced_unless_kept_up: Vec<Arc<ControlInbox>>,
    /// A copy of the message being routed (of any QoS) went to a queue
    /// that stays under the quarter, or to an in-process subscription.
    pub(crate) kept_up: bool,
    /// The address of the publisher's own inbox (its identity only): it is
    /// never paced on its own queue, nor on that of a connection that is
    /// paced itself (see [`ControlInbox::paced`]).
    pub(crate) own: usize,
}

impl Held {
    /// Whether the publisher may be paced on `queue`: not its own, and not
    /// one whose connection is paced itself (it cannot drain until then).
    fn may_wait_on(&self, queue: &Arc<ControlInbox>) -> bool {
        queue.may_pace() && Arc::as_ptr(queue).addr() != self.own
    }

    /// After one message's copies are handed over: the queues of
    /// `paced_unless_kept_up` are waited on only if no copy went to a
    /// subscriber that keeps up; ready for the next message.
    fn settle(&mut self) {
        if self.kept_up {
            self.paced_unless_kept_up.clear();
        } else {
            self.paced.append(&mut self.paced_unless_kept_up);
        }
        self.kept_up = false;
    }
}

/// A copy of a message for a connection whose queue was full, to be sent
/// when it has room (back-pressure).
pub(crate) struct Blocked {
    /// The client whose connection queue was full.
    pub(crate) client: Arc<str>,
    /// That connection's queue.
    pub(crate) queue: Arc<ControlInbox>,
    pub(crate) delivery: Box<Delivery>,
}

/// Where [`State::route`] delivers.
struct Target<'a> {
    sessions: &'a mut HashMap<Arc<str>, Box<SessionEntry>>,
    locals: &'a HashMap<u64, mpsc::Sender<Message>>,
    max_queued: usize,
    counters: &'a Counters,
    now: Instant,
    journal: Option<&'a Journal>,
    next_seq: &'a mut u64,
    max_bytes: usize,
    /// The offline queues' budget and its maximum.
    offline: (&'a ByteBudget, usize),
    /// QoS 0 messages go to the offline queue too.
    queue_qos0: bool,
    /// Where the shared encodings of a message with several subscribers
    /// are created, on the first delivery that can use them.
    frames: Option<&'a mut Option<Arc<Frames>>>,
    /// The subscriber is the member a shared group chose ([`Delivery::shared`]).
    shared: bool,
}

impl Target<'_> {
    /// Hands one message to one subscriber: to its connection, to its offline
    /// queue (QoS 1/2 only, bounded), or to an in-process subscription. A
    /// QoS 1/2 message for a persistent session is put in the store first
    /// (unless it is there already: `stored` is its key then).
    fn deliver(
        self,
        key: &Subscriber,
        publish: Publish,
        stored: Option<Option<u64>>,
        held: Option<&mut Held>,
    ) {
        match key {
            Subscriber::Client(id) => {
                let Some(entry) = self.sessions.get_mut(id) else {
                    return;
                };
                let journal = self.journal.filter(|_| entry.persistent);
                let seq = match (stored, journal) {
                    (Some(seq), _) => seq,
                    (None, Some(journal)) if publish.qos != QoS::AtMostOnce => {
                        Some(put_message(journal, self.next_seq, id, &publish))
                    }
                    (None, _) => None,
                };
                let dropped = |counters: &Counters| {
                    counters.drop_one();
                    if let (Some(journal), Some(seq)) = (journal, seq) {
                        journal.push(StoreOp::DeleteMessage {
                            client: id.clone(),
                            seq,
                        });
                    }
                };
                let frames = match self.frames {
                    Some(slot) if entry.owner.is_some() => {
                        Some(slot.get_or_insert_with(Arc::default).clone())
                    }
                    _ => None,
                };
                let qos = publish.qos;
                let bytes = publish.memory_size();
                let mut delivery = Box::new(Delivery {
                    publish,
                    seq,
                    bytes: 0,
                    frames,
                    since: self.now,
                    shared: self.shared,
                });
                let delivery = match &entry.owner {
                    Some(owner) => {
                        // The queue is bounded in bytes as well as
                        // messages: beyond, a message is dropped (QoS 1/2:
                        // as for a full queue, or held with its publisher
                        // under back-pressure); over a quarter, the
                        // publisher is held back (QoS 0: if all its
                        // subscribers are, in `route`).
                        let queued = &owner.control.queued_bytes;
                        let before = queued.fetch_add(bytes, Ordering::Relaxed);
                        let after = before.saturating_add(bytes);
                        let over = before > 0 && after > self.max_bytes;
                        if qos == QoS::AtMostOnce
                            && (over || owner.control.session_full.load(Ordering::Relaxed))
                        {
                            queued.fetch_sub(bytes, Ordering::Relaxed);
                            dropped(self.counters);
                            return;
                        }
                        delivery.bytes = bytes;
                        let delivered = if over && owner.control.is_closed() {
                            // Ending: its session keeps the message.
                            Err(DeliverError::Closed(delivery))
                        } else if over {
                            Err(DeliverError::Full(delivery))
                        } else {
                            owner.control.try_deliver(delivery, self.max_queued)
                        };
                        match delivered {
                            Ok(len) => {
                                let limit = PaceAbove::new(self.max_bytes, self.max_queued);
                                let over_bytes = limit.over_bytes(before, after);
                                // Over the count: QoS 1/2 only (QoS 0 is
                                // dropped once the queue is full).
                                let over_count = qos != QoS::AtMostOnce && limit.over_count(len);
                                if let Some(held) = held {
                                    if !over_bytes && !over_count {
                                        held.kept_up = true;
                                    } else if held.may_wait_on(&owner.control) {
                                        if over_bytes && qos != QoS::AtMostOnce {
                                            held.paced.push(owner.control.clone());
                                        } else {
                                            held.paced_unless_kept_up.push(owner.control.clone());
                                        }
                                    }
                                }
                                return;
                            }
                            Err(error) => {
                                queued.fetch_sub(bytes, Ordering::Relaxed);
                                match error {
                                    DeliverError::Full(mut delivery) => {
                                        delivery.bytes = 0;
                                        match held {
                                            Some(held)
                                                if held.backpressure
                                                    && delivery.publish.qos != QoS::AtMostOnce =>
                                            {
                                                held.blocked.push(Blocked {
                                                    client: id.clone(),
                                                    queue: owner.control.clone(),
                                                    delivery,
                                                });
                                            }
                                            Some(held) => {
                                                dropped(self.counters);
                                                // Full: its publisher is
                                                // paced too (QoS 1/2), as over
                                                // the count.
                                                if delivery.publish.qos != QoS::AtMostOnce
                                                    && held.may_wait_on(&owner.control)
                                                {
                                                    held.paced_unless_kept_up
                                                        .push(owner.control.clone());
                                                }
                                            }
                                            None => dropped(self.counters),
                                        }
                                        return;
                                    }
                                    // The connection is ending: keep the message with the session.
                                    DeliverError::Closed(d) => d,
                                }
                            }
                        }
                    }
                    None => delivery,
                };
                if delivery.publish.qos == QoS::AtMostOnce && !self.queue_qos0 {
                    return;
                }
                let queued = Queued {
                    shared: delivery.shared && delivery.publish.qos == QoS::AtLeastOnce,
                    publish: delivery.publish,
                    since: self.now,
                    seq: delivery.seq,
                };
                if !entry.queue_offline(queued, self.max_queued, self.max_bytes, self.offline) {
                    dropped(self.counters);
                }
            }
            Subscriber::Local(n) => {
                if let Some(tx) = self.locals.get(n) {
                    if tx.try_send(Message::from(publish)).is_ok() {
                        if let Some(held) = held {
                            held.kept_up = true;
                        }
                    } else {
                        self.counters.drop_one();
                    }
                }
            }
        }
    }
}

/// What a retained message on `topic` counts against
/// [`Limits::max_retained_bytes`](crate::Limits::max_retained_bytes): its
/// [`Publish::memory_size`], its entry in the retained index
/// ([`RETAINED_ENTRY_BYTES`]) and a tree node per topic level
/// ([`RETAINED_LEVEL_BYTES`]): 50 000 retained messages of 1 byte on
/// distinct 128-level topics took 8 150 bytes each, counted as 261.
pub(crate) fn retained_size(topic: &TopicName, publish: &Publish) -> usize {
    let levels = topic.as_str().bytes().filter(|b| *b == b'/').count() + 1;
    publish
        .memory_size()
        .saturating_add(RETAINED_ENTRY_BYTES)
        .saturating_add(levels.saturating_mul(RETAINED_LEVEL_BYTES))
}

/// A retained message's entry in the index, beyond its message, at most
/// (measured: about 410 bytes).
pub(crate) const RETAINED_ENTRY_BYTES: usize = 512;

/// A level of a retained message's topic in the index's tree, at most
/// (measured: about 60 bytes; shared with the other topics below it).
pub(crate) const RETAINED_LEVEL_BYTES: usize = 64;

/// Puts `publish` in the store for `client` under the next key of
/// `next_seq`, not sent yet; returns the key.
fn put_message(journal: &Journal, next_seq: &mut u64, client: &Arc<str>, publish: &Publish) -> u64 {
    *next_seq += 1;
    journal.push(StoreOp::PutMessage {
        client: client.clone(),
        seq: *next_seq,
        message: StoredMessage {
            publish: publish.clone(),
            stored_at: unix_millis(),
            packet_id: None,
            released: false,
        },
    });
    *next_seq
}

/// The copy of `publish` for one delivery: QoS downgraded to the highest
/// granted of `group` (the matching subscriptions of one subscriber), RETAIN
/// per Retain As Published, every Subscription Identifier attached.
fn copy_for(publish: &Publish, group: &[Match<'_, Subscriber, SubOptions>]) -> Publish {
    let granted = group
        .iter()
        .map(|m| m.options.qos)
        .max()
        .unwrap_or(QoS::AtMostOnce);
    let mut out = publish.clone();
    out.qos = publish.qos.min(granted);
    out.retain = publish.retain && group.iter().any(|m| m.options.retain_as_published);
    out.packet_id = None;
    out.dup = false;
    out.properties.topic_alias = None;
    out.properties.subscription_identifiers = group.iter().filter_map(|m| m.options.id).collect();
    out
}

/// Seconds as a `Duration`.
pub(crate) fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake};

    use fulmar_codec::MqttString;

    use super::*;

    // (performance, no spec statement) The room `route` collects matches in
    // is the same allocation from one message to the next.
    #[test]
    fn the_room_for_matches_is_reused() {
        let key = Subscriber::Local(1);
        let options = SubOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            id: None,
        };
        let mut kept: Vec<Match<'static, Subscriber, SubOptions>> = Vec::with_capacity(8);
        let room = kept.as_ptr() as usize;
        let mut found = reuse(std::mem::take(&mut kept));
        found.push(Match {
            key: &key,
            options: &options,
            share_group: None,
        });
        assert_eq!(found.as_ptr() as usize, room);
        found.clear();
        kept = reuse(found);
        assert_eq!((kept.as_ptr() as usize, kept.capacity()), (room, 8));
    }

    // v5:MQTT-3.3.2-5: the expiry index follows the retained messages: a
    // replacement without expiry, a removal and an expiry each take the
    // entry out, so it never holds more than the retained messages.
    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant; only differences matter
    fn the_retained_expiry_index_follows_the_messages() {
        let now = Instant::now();
        let retained = |expiry: Option<u32>| {
            let mut publish = Publish::new(MqttString::from("r"), bytes::Bytes::from_static(b"x"));
            publish.properties.message_expiry_interval = expiry;
            Retained {
                publish,
                stored: now,
                system: false,
            }
        };
        let topic: TopicName = "r".parse().unwrap();
        let mut state = State::default();
        state.put_retained(topic.clone(), retained(Some(10)));
        state.put_retained(topic.clone(), retained(Some(20)));
        assert_eq!(state.retained_expiry.len(), 1);
        // Replaced by one that expires at the same instant (found by a
        // review: the entry was added, then taken out with the old one).
        state.put_retained(topic.clone(), retained(Some(20)));
        assert_eq!(state.retained_expiry.len(), 1);
        state.put_retained(topic.clone(), retained(None));
        assert!(state.retained_expiry.is_empty());
        state.put_retained(topic.clone(), retained(Some(5)));
        assert!(state.take_retained(&topic));
        assert!(state.retained_expiry.is_empty());
        state.put_retained(topic.clone(), retained(Some(5)));
        state.remove_expired_retained(now + Duration::from_secs(4));
        assert_eq!(state.retained.len(), 1);
        state.remove_expired_retained(now + Duration::from_secs(5));
        assert_eq!(state.retained.len(), 0);
        assert!(state.retained_expiry.is_empty());
        // The longest interval (136 years) is kept.
        state.put_retained(topic, retained(Some(u32::MAX)));
        assert_eq!(state.retained.len(), 1);
    }

    #[test]
    fn a_session_entry_is_32_bytes() {
        // (memory, no spec statement)
        // One per client, connected or not. jemalloc (the `fulmar` binary's
        // allocator) serves 33-48 bytes from its 48-byte class: the
        // connection number the owner had beside its inbox cost 16 bytes per
        // client.
        assert!(size_of::<SessionEntry>() <= 32);
    }

    // A session's deadlines (its expiry, its delayed will) leave the
    // schedule when a connection takes it or it is removed: they stayed until
    // they fell due, one more per disconnection (a client reconnecting every
    // few seconds with a year of Session Expiry grew the set for a year).
    #[test]
    fn deadlines_leave_with_the_session_that_had_them() {
        let mut state = State::default();
        let counters = Counters::default();
        let now = Instant::now();
        let id: Arc<str> = Arc::from("c");
        for round in 1..=3u64 {
            let entry = state.sessions.entry(id.clone()).or_default();
            let expires = now + std::time::Duration::from_secs(3600 * round);
            let will_at = now + std::time::Duration::from_secs(60 * round);
            entry.away().expires_at = Some(expires);
            entry.away().will = Some(Box::new(PendingWill {
                publish: Publish::new(MqttString::from("will"), bytes::Bytes::new()),
                at: will_at,
                info: crate::ClientInfo {
                    client_id: "c".into(),
                    username: None,
                    protocol_version: fulmar_codec::ProtocolVersion::V5,
                },
                _charge: None,
            }));
            state.schedule(&id, expires);
            state.schedule(&id, will_at);
            assert_eq!(state.deadlines_len(), 2);
            match round {
                // Taken by a connection (as `register` does).
                1 => state.unschedule(&id),
                // Ended by a Clean Start: the will is published at once.
                2 => state.end_session(&id, 10, &counters, now),
                _ => drop(state.remove_session(&id)),
            }
            assert_eq!(state.deadlines_len(), 0, "round {round}");
            if round == 1 {
                state.sessions.get_mut(&id).unwrap().take_away();
            }
        }
        assert!(state.sessions.is_empty());
    }

    // v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6: a copy handed back by a connection
    // that ended while it waited for room (back-pressure) keeps counting the
    // time it waited since it was routed: it went to the offline queue as if
    // routed just now, with its whole Message Expiry Interval left, and one
    // whose interval had passed meanwhile was queued and sent all the same.
    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant; only differences matter
    fn a_redelivered_copy_keeps_the_time_it_waited() {
        let routed = Instant::now();
        let now = routed + Duration::from_secs(5);
        let mut state = State {
            max_queued_bytes: usize::MAX,
            max_offline_bytes: usize::MAX,
            ..State::default()
        };
        let counters = Counters::default();
        let id: Arc<str> = Arc::from("c");
        state.sessions.entry(id.clone()).or_default();
        let copy = |interval: u32| {
            let mut publish = Publish::new(MqttString::from("t"), bytes::Bytes::from_static(b"x"));
            publish.qos = QoS::AtLeastOnce;
            publish.properties.message_expiry_interval = Some(interval);
            Delivery {
                publish,
                seq: None,
                bytes: 0,
                frames: None,
                since: routed,
                shared: false,
            }
        };
        state.redeliver(&id, copy(60), 10, &counters, now);
        state.redeliver(&id, copy(3), 10, &counters, now);
        let offline = &mut state.sessions.get_mut(&id).unwrap().away().offline;
        assert_eq!(offline.len(), 1, "the expired copy is not queued");
        let queued = offline.pop_front().unwrap();
        let sent = age(queued.publish, queued.since, now).unwrap();
        assert_eq!(sent.properties.message_expiry_interval, Some(55));
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn delivery(n: u8) -> Box<Delivery> {
        Box::new(Delivery {
            publish: Publish::new(MqttString::from("t"), bytes::Bytes::from(vec![n])),
            seq: None,
            bytes: 0,
            frames: None,
            since: Instant::now(),
            shared: false,
        })
    }

    #[test]
    fn a_sender_waiting_for_room_is_woken_when_a_delivery_is_taken_or_the_inbox_closes() {
        // (back-pressure, no spec statement)
        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        assert!(inbox.try_deliver(delivery(1), 1).is_ok());
        assert!(matches!(
            inbox.try_deliver(delivery(2), 1),
            Err(DeliverError::Full(_))
        ));
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut send = std::pin::pin!(inbox.deliver(delivery(3), 1, usize::MAX));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        // Polled again while full: registered once.
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert!(receiver.try_recv_delivery().is_some());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        // Nothing waits any more: the rare part is gone again.
        assert!(inbox.lock().as_ref().is_some_and(|q| q.rare.is_none()));

        let mut blocked = std::pin::pin!(inbox.deliver(delivery(4), 1, usize::MAX));
        assert!(blocked.as_mut().poll(&mut cx).is_pending());
        drop(receiver);
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(matches!(
            blocked.as_mut().poll(&mut cx),
            Poll::Ready(Err(_))
        ));
    }

    #[test]
    fn a_sender_waits_for_bytes_as_for_room() {
        // (back-pressure, no spec statement) A delivery handed over later
        // (back-pressure) counts its bytes and waits while they would go
        // over the bound; one always goes into an empty queue.
        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        let big = |n: u8| {
            let mut d = delivery(n);
            d.publish.payload = bytes::Bytes::from(vec![n; 600]);
            d
        };
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut first = std::pin::pin!(inbox.deliver(big(1), 10, 1000));
        assert!(matches!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        // 601 bytes (payload and topic) counted.
        assert_eq!(inbox.queued_bytes.load(Ordering::Relaxed), 601);
        let mut second = std::pin::pin!(inbox.deliver(big(2), 10, 1000));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        let taken = receiver.try_recv_delivery();
        assert!(taken.is_some());
        assert_eq!(inbox.queued_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(matches!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(inbox.queued_bytes.load(Ordering::Relaxed), 601);
    }

    /// A delivery of `bytes` payload bytes, counted in `inbox` as routing counts it.
    fn sized(inbox: &ControlInbox, bytes: usize) -> Box<Delivery> {
        inbox.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut d = delivery(0);
        d.bytes = bytes;
        d
    }

    #[test]
    fn a_paced_publisher_is_woken_once_half_the_bytes_are_taken() {
        // (pacing, no spec statement)
        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        for bytes in [600, 300, 300] {
            assert!(inbox.try_deliver(sized(&inbox, bytes), 8).is_ok());
        }
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut drained = std::pin::pin!(inbox.drained(BYTES_1000));
        assert!(drained.as_mut().poll(&mut cx).is_pending());
        // Under the bound, not yet under half of it: not woken.
        assert!(receiver.try_recv_delivery().is_some());
        assert_eq!(inbox.queued_bytes.load(Ordering::Relaxed), 600);
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        // Taking a delivery takes its bytes off before the waiter is woken.
        assert!(receiver.try_recv_delivery().is_some_and(|d| d.bytes == 0));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(inbox.queued_bytes.load(Ordering::Relaxed), 300);
        assert!(drained.as_mut().poll(&mut cx).is_ready());
        assert!(inbox.lock().as_ref().is_some_and(|q| q.rare.is_none()));

        // Over the bound again: the end of the connection ends the wait.
        assert!(inbox.try_deliver(sized(&inbox, 900), 8).is_ok());
        let mut drained = std::pin::pin!(inbox.drained(BYTES_1000));
        assert!(drained.as_mut().poll(&mut cx).is_pending());
        drop(receiver);
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(drained.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn waits_that_end_unwoken_take_their_wakers_out() {
        // (pacing and back-pressure, no spec statement) Publisher tasks that
        // stop waiting on a subscriber that takes nothing (their wait timed
        // out, their connection was taken over) leave no waker behind: the
        // lists would otherwise grow with every such task, each waker
        // holding its task's memory.
        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        for _ in 0..2 {
            assert!(inbox.try_deliver(sized(&inbox, 900), 2).is_ok());
        }
        for _ in 0..100 {
            // A new task each round: wakers that `will_wake` cannot tell apart
            // from the earlier ones would not show the growth.
            let count = Arc::new(Count::default());
            let waker = Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            let mut drained = Box::pin(inbox.drained(BYTES_1000));
            assert!(drained.as_mut().poll(&mut cx).is_pending());
            let mut deliver = Box::pin(inbox.deliver(sized(&inbox, 1), 2, usize::MAX));
            assert!(deliver.as_mut().poll(&mut cx).is_pending());
            let lens = |inbox: &ControlInbox| {
                inbox
                    .lock()
                    .as_ref()
                    .and_then(|q| q.rare.as_ref())
                    .map(|r| (r.paced.len(), r.waiting.len()))
            };
            assert_eq!(lens(&inbox), Some((1, 1)));
            drop(drained);
            drop(deliver);
            assert_eq!(lens(&inbox), None, "the rare part is dropped once empty");
        }
        // A wait still registered is woken as before.
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut deliver = Box::pin(inbox.deliver(sized(&inbox, 1), 2, usize::MAX));
        assert!(deliver.as_mut().poll(&mut cx).is_pending());
        assert!(receiver.try_recv_delivery().is_some());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(matches!(
            deliver.as_mut().poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn an_emptied_queue_wakes_its_paced_publishers() {
        // (pacing, no spec statement)
        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        assert!(inbox.try_deliver(sized(&inbox, 1200), 8).is_ok());
        assert!(inbox.try_deliver(sized(&inbox, 1), 8).is_ok());
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut drained = std::pin::pin!(inbox.drained(BYTES_1000));
        assert!(drained.as_mut().poll(&mut cx).is_pending());
        // A message being routed counts its bytes before it is queued; if
        // it is dropped after all, the queue may be empty with no more
        // deliveries to take: its last one wakes the publishers anyway.
        inbox.queued_bytes.fetch_add(900, Ordering::Relaxed);
        assert!(receiver.try_recv_delivery().is_some());
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        assert!(receiver.try_recv_delivery().is_some());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        inbox.queued_bytes.fetch_sub(900, Ordering::Relaxed);
        assert!(drained.as_mut().poll(&mut cx).is_ready());
        // Nor does a wait that starts on an empty queue whose bytes count
        // such a message: it ends at once.
        inbox.queued_bytes.fetch_add(2000, Ordering::Relaxed);
        assert!(
            std::pin::pin!(inbox.drained(BYTES_1000))
                .as_mut()
                .poll(&mut cx)
                .is_ready()
        );
    }

    /// Over 1000 bytes, and no bound on the count.
    const BYTES_1000: PaceAbove = PaceAbove {
        bytes: 1000,
        messages: usize::MAX,
    };

    #[test]
    fn a_paced_publisher_is_woken_once_the_queue_is_back_to_an_eighth() {
        // (pacing, no spec statement)
        let pace = PaceAbove::new(1 << 20, 8);
        assert_eq!(pace.messages, 2);
        // The count: over 2 queued.
        assert!(!pace.over_count(2));
        assert!(pace.over_count(3));
        // The bytes: one message alone is never over, whatever its size.
        assert!(!pace.over_bytes(0, 1 << 30));
        assert!(pace.over_bytes(1, (1 << 18) + 1));
        assert_eq!(PaceAbove::new(1000, 3).messages, 1);
        // A quarter of the bound in bytes, but never more than 256 KiB: the
        // default bound (16 MiB) paces at 256 KiB, not 4 MiB.
        assert_eq!(PaceAbove::new(1 << 18, 8).bytes, 1 << 16);
        assert_eq!(PaceAbove::new(1 << 20, 8).bytes, 1 << 18);
        assert_eq!(PaceAbove::new(4 << 20, 8).bytes, 1 << 18);
        assert_eq!(
            PaceAbove::new(crate::Limits::default().max_queued_bytes, 8).bytes,
            crate::config::PACE_ABOVE_BYTES
        );
        assert_eq!(PaceAbove::new(usize::MAX, 8).bytes, 1 << 18);
        // Paced publishers are woken at half the threshold.
        assert_eq!(pace.resume().messages, 1);
        assert_eq!(pace.resume().bytes, 1 << 17);

        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        for expected in 1..=3 {
            assert_eq!(inbox.try_deliver(delivery(0), 8).ok(), Some(expected));
        }
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut drained = std::pin::pin!(inbox.drained(pace));
        assert!(drained.as_mut().poll(&mut cx).is_pending());
        // Two left: no longer over, but not down to one either: not woken
        // (polled for another reason, the wait would end).
        assert!(receiver.try_recv_delivery().is_some());
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        assert!(receiver.try_recv_delivery().is_some());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(drained.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn no_publisher_waits_on_its_own_a_paced_or_a_stalled_queue() {
        // (pacing, no spec statement)
        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        let other = ControlReceiver::new();
        let held = Held {
            own: other.inbox_addr(),
            ..Held::default()
        };
        assert!(held.may_wait_on(&inbox));
        let own = Held {
            own: receiver.inbox_addr(),
            ..Held::default()
        };
        assert!(!own.may_wait_on(&inbox));

        // Its connection is paced itself: it cannot drain meanwhile.
        receiver.set_paced(true);
        assert!(!held.may_wait_on(&inbox));
        receiver.set_paced(false);
        assert!(held.may_wait_on(&inbox));

        // A wait on it timed out while it was over: stalled until it takes
        // a delivery. Under the bound, a timeout does not mark it.
        let pace = PaceAbove::new(1 << 20, 8);
        for _ in 0..3 {
            inbox.try_deliver(delivery(0), 8).unwrap();
        }
        inbox.stalled_over(pace);
        assert!(!held.may_wait_on(&inbox));
        assert!(receiver.try_recv_delivery().is_some());
        assert!(held.may_wait_on(&inbox));
        inbox.stalled_over(pace);
        assert!(held.may_wait_on(&inbox));
    }

    #[test]
    fn control_messages_come_first_and_take_no_room_once_taken() {
        // (memory, no spec statement)
        let receiver = ControlReceiver::new();
        let inbox = receiver.inbox();
        assert!(inbox.try_deliver(delivery(1), 8).is_ok());
        assert!(inbox.send(Control::Shutdown).is_ok());
        assert!(matches!(
            inbox.try_recv(true),
            Some(Inbound::Control(Control::Shutdown))
        ));
        assert!(inbox.lock().as_ref().is_some_and(|q| q.rare.is_none()));
        assert!(inbox.try_recv(false).is_none());
        assert!(matches!(inbox.try_recv(true), Some(Inbound::Delivery(_))));
    }
}
