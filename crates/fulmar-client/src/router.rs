//! Routing inbound messages to subscription streams, and the stream types.
//!
//! MQTT 5.0: by the Subscription Identifiers the broker attaches to each
//! message (each `subscribe` call gets its own identifier). MQTT 3.1.1, or a
//! message without identifiers: by matching the topic against each stream's
//! filters with `fulmar-topic`. Every message also goes to each catch-all
//! stream.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use fulmar_codec::{MqttString, PacketId, Publish, SubAck, SubscriptionOptions};
use fulmar_topic::{SubscriptionFilter, TopicName};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::channel::{StreamRx, StreamTx};
use crate::error::Error;

/// Identifies an inbound QoS 1/2 message awaiting a manual acknowledgement:
/// its packet identifier and a number the client gives each such message
/// (the broker uses an identifier again once it is acknowledged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AckToken {
    pub(crate) packet_id: PacketId,
    pub(crate) seq: u64,
}

/// A stream the application dropped: its key, and its receiving end, so
/// that the connection task acknowledges what it held unread.
#[derive(Debug)]
pub(crate) struct Dropped {
    pub(crate) key: u64,
    pub(crate) rx: Option<StreamRx>,
    /// From [`Subscription::unsubscribe`]: told when the UNSUBACK came (or
    /// at once when no filter needed an UNSUBSCRIBE).
    pub(crate) reply: Option<oneshot::Sender<Result<(), Error>>>,
    /// Whether its filters that no other stream uses are unsubscribed
    /// (not after [`Subscription::detach`]).
    pub(crate) unsubscribe: bool,
}

/// An application message from the broker: the PUBLISH (topic, payload,
/// QoS, retain, properties; `Deref` gives direct access), and with manual
/// acknowledgements on, what [`Client::ack`](crate::Client::ack) needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    publish: Publish,
    pub(crate) ack: Option<AckToken>,
}

impl Message {
    pub(crate) fn new(publish: Publish, ack: Option<AckToken>) -> Self {
        Self { publish, ack }
    }

    /// The PUBLISH packet.
    #[must_use]
    pub fn publish(&self) -> &Publish {
        &self.publish
    }

    /// The PUBLISH packet, by value.
    #[must_use]
    pub fn into_publish(self) -> Publish {
        self.publish
    }

    /// Whether [`Client::ack`](crate::Client::ack) must be called for this
    /// message (manual acknowledgements on, QoS 1 or 2).
    #[must_use]
    pub fn needs_ack(&self) -> bool {
        self.ack.is_some()
    }
}

impl Deref for Message {
    type Target = Publish;

    fn deref(&self) -> &Publish {
        &self.publish
    }
}

/// A stream a message goes to: its key and its sending end.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) key: u64,
    pub(crate) tx: StreamTx,
}

/// One subscription stream's routing entry.
#[derive(Debug)]
pub(crate) struct Route {
    /// The filters as sent, with their options (re-sent after a session loss).
    pub(crate) filters: Vec<(MqttString, SubscriptionOptions)>,
    /// The parsed filters, for matching.
    matchers: Vec<SubscriptionFilter>,
    /// Subscription Identifier (MQTT 5.0), if one was sent.
    pub(crate) id: Option<NonZeroU32>,
    tx: StreamTx,
    /// Its SUBACK arrived (the stream was handed out). Until then nobody
    /// reads `tx`: with a leftovers stream, messages go there instead.
    acked: bool,
    /// Why the stream ended while the client went on, shared with the
    /// [`Subscription`].
    ended: Arc<OnceLock<Error>>,
    /// The filters the broker refused at the last SUBSCRIBE of them, shared
    /// with the [`Subscription`].
    pub(crate) refused: Arc<Refused>,
}

/// The filters of a stream the broker refused at the last SUBSCRIBE of
/// them, and whether that changed since the stream last looked.
#[derive(Debug, Default)]
pub(crate) struct Refused(Mutex<RefusedState>);

#[derive(Debug, Default)]
struct RefusedState {
    filters: Vec<String>,
    /// Bumped on each change.
    version: u64,
    waker: Option<Waker>,
}

impl Refused {
    fn lock(&self) -> std::sync::MutexGuard<'_, RefusedState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The broker refused `filters` (none: it granted every one).
    pub(crate) fn set(&self, filters: Vec<String>) {
        let mut state = self.lock();
        if state.filters == filters {
            return;
        }
        state.filters = filters;
        state.version = state.version.wrapping_add(1);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

/// Every live stream, by key.
#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: BTreeMap<u64, Route>,
    catch_all: BTreeMap<u64, StreamTx>,
    /// Catch-all streams that get only what no subscription stream takes
    /// ([`Client::connect_with_messages`](crate::Client::connect_with_messages)).
    leftovers: BTreeMap<u64, StreamTx>,
    next_key: u64,
    /// Identifiers of dropped streams whose filters another stream still
    /// uses: the broker keeps sending them for those filters.
    retired: HashMap<NonZeroU32, Vec<MqttString>>,
    /// A stream was added since the client was made.
    had_a_stream: bool,
}

impl Router {
    /// A key for a new stream.
    pub(crate) fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    pub(crate) fn add(
        &mut self,
        key: u64,
        filters: Vec<(MqttString, SubscriptionOptions)>,
        matchers: Vec<SubscriptionFilter>,
        id: Option<NonZeroU32>,
        tx: StreamTx,
    ) {
        self.had_a_stream = true;
        // A new SUBSCRIBE replaces the broker's identifier for these filters.
        self.retired
            .retain(|_, shared| !shared.iter().any(|f| filters.iter().any(|(g, _)| g == f)));
        self.routes.insert(
            key,
            Route {
                filters,
                matchers,
                id,
                tx,
                acked: false,
                ended: Arc::default(),
                refused: Arc::default(),
            },
        );
    }

    /// The SUBACK of stream `key` arrived: it is read from now on. Returns
    /// where the stream finds why it ended early, and which filters the
    /// broker refused.
    pub(crate) fn acked(&mut self, key: u64) -> (Arc<OnceLock<Error>>, Arc<Refused>) {
        match self.routes.get_mut(&key) {
            Some(route) => {
                route.acked = true;
                (route.ended.clone(), route.refused.clone())
            }
            None => (Arc::default(), Arc::default()),
        }
    }

    /// Ends stream `key` while the client goes on: its stream ends after
    /// what it holds, and tells `error`. Its filters are not unsubscribed
    /// (the broker refused them, or never had them).
    pub(crate) fn end(&mut self, key: u64, error: Error) {
        if let Some(route) = self.routes.get(&key) {
            let _first = route.ended.set(error);
        }
        let _unused = self.remove(key);
    }

    /// The streams whose SUBACK arrived (their broker subscriptions), by key.
    pub(crate) fn acked_keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.routes
            .iter()
            .filter(|(_, r)| r.acked)
            .map(|(key, _)| *key)
    }

    /// Whether stream `key` is a subscription stream whose SUBACK has not
    /// arrived: nobody reads it yet.
    pub(crate) fn waiting(&self, key: u64) -> bool {
        self.routes.get(&key).is_some_and(|r| !r.acked)
    }

    /// Stream `key`'s routing entry, while it is live.
    pub(crate) fn get(&self, key: u64) -> Option<&Route> {
        self.routes.get(&key)
    }

    /// Whether stream `key` subscribes to a filter that matches `topic`.
    pub(crate) fn wants(&self, key: u64, topic: &MqttString) -> bool {
        let Ok(topic) = TopicName::from_bytes(topic.as_bytes().clone()) else {
            return false;
        };
        self.routes
            .get(&key)
            .is_some_and(|r| r.matchers.iter().any(|m| m.filter().matches(&topic)))
    }

    /// Whether a live stream subscribes to `filter`.
    pub(crate) fn uses(&self, filter: &MqttString) -> bool {
        self.routes
            .values()
            .any(|r| r.filters.iter().any(|(f, _)| f == filter))
    }

    pub(crate) fn add_catch_all(&mut self, key: u64, tx: StreamTx) {
        self.had_a_stream = true;
        self.catch_all.insert(key, tx);
    }

    /// A catch-all stream for what no subscription stream takes.
    pub(crate) fn add_leftovers(&mut self, key: u64, tx: StreamTx) {
        self.had_a_stream = true;
        self.leftovers.insert(key, tx);
    }

    /// Whether no stream was ever added: the application has not asked
    /// for a message yet.
    pub(crate) fn never_had_a_stream(&self) -> bool {
        !self.had_a_stream
    }

    /// Removes a stream; returns its filters that no other stream uses.
    pub(crate) fn remove(&mut self, key: u64) -> Vec<MqttString> {
        if self.catch_all.remove(&key).is_some() || self.leftovers.remove(&key).is_some() {
            return Vec::new();
        }
        let Some(route) = self.routes.remove(&key) else {
            return Vec::new();
        };
        let (shared, unused): (Vec<MqttString>, Vec<MqttString>) =
            route.filters.into_iter().map(|(f, _)| f).partition(|f| {
                self.routes
                    .values()
                    .any(|r| r.filters.iter().any(|(g, _)| g == f))
            });
        if let Some(id) = route.id.filter(|_| !shared.is_empty()) {
            self.retired.insert(id, shared);
        }
        unused
    }

    /// The streams `message` goes to, in a stable order.
    ///
    /// By Subscription Identifier when the message carries identifiers of
    /// live streams; streams with an identical filter share the broker's one
    /// subscription (a later SUBSCRIBE replaced the earlier one's identifier,
    /// MQTT 5.0 section 3.8.4), so they receive it too. By filter matching
    /// otherwise.
    pub(crate) fn targets(&self, message: &Publish) -> Vec<Target> {
        // Sorted and without repeats, for a binary search per stream: a
        // broker may send any number of identifiers (4 MB of one repeated
        // identifier, searched linearly for each of 1000 streams, held the
        // connection for 33 s).
        let ids: std::borrow::Cow<'_, [NonZeroU32]> =
            match message.properties.subscription_identifiers.as_slice() {
                few @ ([] | [_]) => std::borrow::Cow::Borrowed(few),
                many => {
                    let mut ids = many.to_vec();
                    ids.sort_unstable();
                    ids.dedup();
                    std::borrow::Cow::Owned(ids)
                }
            };
        // Shares the topic's buffer: no copy per message.
        let topic = TopicName::from_bytes(message.topic.as_bytes().clone()).ok();
        // With a leftovers stream, a stream whose SUBACK has not arrived
        // gets nothing: nobody reads it yet, and the leftovers stream is
        // read (a resumed session's messages for an old subscription to the
        // same filters would otherwise fill it and stall the connection
        // before the SUBACK).
        let waiting = !self.leftovers.is_empty();
        let matches = |r: &Route| {
            (r.acked || !waiting)
                && topic
                    .as_ref()
                    .is_some_and(|t| r.matchers.iter().any(|m| m.filter().matches(t)))
        };
        // An identifier counts only for a stream whose filters match the
        // topic: a session resumed from an earlier client may carry
        // identifiers that this client gave to other streams.
        let by_id = |r: &Route| r.id.is_some_and(|id| ids.binary_search(&id).is_ok()) && matches(r);
        // The filters of the broker subscriptions this message was sent for:
        // of the streams it names, the filters that match its topic.
        let matches_filter = |filter: &MqttString| {
            topic.as_ref().is_some_and(|t| {
                filter
                    .parse::<SubscriptionFilter>()
                    .is_ok_and(|f| f.filter().matches(t))
            })
        };
        let mut shared: Vec<&MqttString> = self
            .routes
            .values()
            .filter(|r| by_id(r))
            .flat_map(|r| {
                r.filters
                    .iter()
                    .zip(&r.matchers)
                    .filter(|(_, m)| topic.as_ref().is_some_and(|t| m.filter().matches(t)))
                    .map(|((f, _), _)| f)
            })
            .collect();
        shared.extend(
            ids.iter()
                .filter_map(|id| self.retired.get(id))
                .flatten()
                .filter(|f| matches_filter(f)),
        );
        let target = |(key, tx): (&u64, &StreamTx)| Target {
            key: *key,
            tx: tx.clone(),
        };
        let mut out: Vec<Target> = if shared.is_empty() {
            self.routes
                .iter()
                .filter(|(_, r)| matches(r))
                .map(|(key, r)| target((key, &r.tx)))
                .collect()
        } else {
            self.routes
                .iter()
                .filter(|(_, r)| {
                    by_id(r)
                        || ((r.acked || !waiting)
                            && r.filters.iter().any(|(f, _)| shared.contains(&f)))
                })
                .map(|(key, r)| target((key, &r.tx)))
                .collect()
        };
        if out.is_empty() {
            out.extend(self.leftovers.iter().map(target));
        }
        out.extend(self.catch_all.iter().map(target));
        out
    }
}

/// The receiving end shared by [`Subscription`] and [`Messages`]: unsubscribes
/// (or deregisters) when dropped.
#[derive(Debug)]
struct Inbox {
    /// Always `Some` until dropped.
    rx: Option<StreamRx>,
    key: u64,
    dropped: mpsc::UnboundedSender<Dropped>,
}

impl Inbox {
    async fn recv(&mut self) -> Option<Message> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => None,
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match &mut self.rx {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }

    /// Sends `dropped` to the connection task instead of what `Drop` would
    /// send, which becomes a no-op.
    fn hand_over(&mut self, dropped: Dropped) -> Result<(), ()> {
        let (gone, _) = mpsc::unbounded_channel();
        let to = std::mem::replace(&mut self.dropped, gone);
        to.send(dropped).map_err(|_| ())
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Handed to the driver, the only sender: it closes the channel and
        // acknowledges what is left unread. The driver may already be
        // gone; then there is nothing to undo.
        let _sent = self.dropped.send(Dropped {
            key: self.key,
            rx: self.rx.take(),
            reply: None,
            unsubscribe: true,
        });
    }
}

/// The messages of one `subscribe` call, as a [`Stream`]. Dropping it
/// unsubscribes from the filters no other stream uses.
///
/// With a persistent session (a durable consumer), dropping the stream
/// while connected removes the subscription from the session too, and
/// what is published meanwhile is not kept for the client: end it with
/// [`detach`](Self::detach), or call
/// [`Client::disconnect`](crate::Client::disconnect) first, then drop the
/// stream (once the client is closed, dropping it sends nothing).
///
/// The stream ends when the client is closed. A consumer that does not keep
/// up applies backpressure (see the crate docs).
#[derive(Debug)]
pub struct Subscription {
    inbox: Inbox,
    suback: SubAck,
    ended: Arc<OnceLock<Error>>,
    refused: Arc<Refused>,
    /// The version of `refused` last seen by [`Subscription::poll_refused`].
    refused_seen: u64,
}

impl Subscription {
    pub(crate) fn new(
        rx: StreamRx,
        key: u64,
        dropped: mpsc::UnboundedSender<Dropped>,
        suback: SubAck,
        (ended, refused): (Arc<OnceLock<Error>>, Arc<Refused>),
    ) -> Self {
        let refused_seen = refused.lock().version;
        Self {
            inbox: Inbox {
                rx: Some(rx),
                key,
                dropped,
            },
            suback,
            ended,
            refused,
            refused_seen,
        }
    }

    /// The stream's filters the broker refused when the client subscribed
    /// them again after the broker lost the session, while it granted
    /// others (the stream goes on with those; when it refuses every one, the
    /// stream ends and [`error`](Self::error) tells why). Empty before any
    /// such SUBSCRIBE and once one granted every filter. What `subscribe`
    /// itself was refused is in [`suback`](Self::suback).
    #[must_use]
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().filters.clone()
    }

    /// Ready with [`refused`](Self::refused) once the answer to a new
    /// SUBSCRIBE of the stream's filters (after the broker lost the session)
    /// changed it since the last `Ready`; otherwise the task is woken then.
    pub fn poll_refused(&mut self, cx: &mut Context<'_>) -> Poll<Vec<String>> {
        let mut state = self.refused.lock();
        if state.version == self.refused_seen {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.refused_seen = state.version;
        Poll::Ready(state.filters.clone())
    }

    /// Waits until the filters the broker refuses change (see
    /// [`poll_refused`](Self::poll_refused)) and returns them.
    pub async fn refused_changed(&mut self) -> Vec<String> {
        std::future::poll_fn(|cx| self.poll_refused(cx)).await
    }

    /// Ends this stream and unsubscribes from its filters that no other
    /// stream uses; completes once the broker acknowledged the UNSUBSCRIBE
    /// (at once when every filter is still another stream's). Dropping the
    /// stream does the same without waiting. What the stream held unread is
    /// dropped (acknowledged to the broker).
    ///
    /// # Errors
    /// [`Error::UnsubscribeRejected`] when the broker refused every filter
    /// it was asked to remove (MQTT 5.0 failure reason codes; 0x11 No
    /// subscription existed is not a failure); [`Error::RequestLost`] when
    /// the connection dropped first, [`Error::NotConnected`] when it was
    /// down (either way the UNSUBSCRIBE is sent once it is back);
    /// [`Error::Session`] when the session refused the UNSUBSCRIBE, which
    /// is then given up (over the broker's Maximum Packet Size,
    /// [`LimitExceeded::PacketTooLarge`](crate::LimitExceeded::PacketTooLarge),
    /// or unencodable); [`Error::Closed`] when the client closed first.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        let (reply, done) = oneshot::channel();
        let dropped = Dropped {
            key: self.inbox.key,
            rx: self.inbox.rx.take(),
            reply: Some(reply),
            unsubscribe: true,
        };
        if self.inbox.hand_over(dropped).is_err() {
            return Err(Error::Closed);
        }
        done.await.unwrap_or(Err(Error::Closed))
    }

    /// Ends this stream and leaves its subscription with the broker: no
    /// UNSUBSCRIBE is sent, so a persistent session keeps it and the broker
    /// queues what matches it while the client is away (a durable consumer
    /// whose reading task ends before the client disconnects). Dropping the
    /// stream would unsubscribe.
    ///
    /// What the stream held unread is dropped (acknowledged to the broker),
    /// as when it is dropped. What the broker sends for its filters
    /// afterwards, while this client is connected, goes to the other
    /// streams it matches (a [`Client::messages`](crate::Client::messages)
    /// stream, another subscription to the same filter), or else waits, as a
    /// resumed session's queue does, for the next stream that wants it (see
    /// [`Client::connect`](crate::Client::connect)); it is acknowledged to
    /// the broker meanwhile, also under manual acknowledgements, so a
    /// consumer that is about to stop should
    /// [`disconnect`](crate::Client::disconnect) right after detaching and
    /// leave the rest queued with the broker. If the broker loses the
    /// session, the filters are not subscribed again.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), fulmar_client::Error> {
    /// use fulmar_client::{Client, ConnectOptions, QoS};
    ///
    /// let options = ConnectOptions::new("broker.local", 1883)
    ///     .client_id("orders-worker")
    ///     .clean_start(false)
    ///     .session_expiry_interval(3600);
    /// let (client, _) = Client::connect(options).await?;
    /// let mut orders = client.subscribe("orders/#", QoS::AtLeastOnce).await?;
    /// while let Some(order) = orders.recv().await {
    ///     if order.payload.as_ref() == b"stop" {
    ///         break;
    ///     }
    /// }
    /// // The broker keeps queueing orders for the next run.
    /// orders.detach();
    /// client.disconnect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn detach(mut self) {
        let dropped = Dropped {
            key: self.inbox.key,
            rx: self.inbox.rx.take(),
            reply: None,
            unsubscribe: false,
        };
        // The client may be closed already: nothing to keep then.
        let _closed = self.inbox.hand_over(dropped);
    }

    /// The broker's SUBACK: one reason code per filter (granted QoS or failure).
    #[must_use]
    pub fn suback(&self) -> &SubAck {
        &self.suback
    }

    /// Why the stream ended while the client went on: after the broker lost
    /// the session, it refused to subscribe the stream's filters again
    /// ([`Error::SubscribeRejected`]), or the SUBSCRIBE could not be sent
    /// again. `None` while the stream runs, and when it ended because the
    /// client closed.
    #[must_use]
    pub fn error(&self) -> Option<&Error> {
        self.ended.get()
    }

    /// The next message, or `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.inbox.recv().await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.inbox.poll_recv(cx)
    }
}

/// Every message the client receives, whatever the subscription, as a
/// [`Stream`] (see [`Client::messages`](crate::Client::messages)).
#[derive(Debug)]
pub struct Messages {
    inbox: Inbox,
}

impl Messages {
    pub(crate) fn new(rx: StreamRx, key: u64, dropped: mpsc::UnboundedSender<Dropped>) -> Self {
        Self {
            inbox: Inbox {
                rx: Some(rx),
                key,
                dropped,
            },
        }
    }

    /// The next message, or `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.inbox.recv().await
    }
}

impl Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.inbox.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn route(router: &mut Router, filter: &'static str, id: Option<u32>) -> StreamRx {
        let (tx, rx) = crate::channel::stream(4, u32::MAX);
        let key = router.next_key();
        router.add(
            key,
            vec![(MqttString::from(filter), SubscriptionOptions::default())],
            vec![filter.parse().unwrap()],
            id.and_then(NonZeroU32::new),
            tx,
        );
        rx
    }

    // A leftovers stream takes what no subscription stream takes, and what
    // a subscription stream whose SUBACK has not arrived would take (nobody
    // reads that stream yet); an identifier from an earlier client counts
    // only for a stream whose filter matches.
    #[test]
    fn leftovers_take_what_no_read_stream_takes() {
        let mut router = Router::default();
        let (tx, _leftovers) = crate::channel::stream(4, u32::MAX);
        let leftovers_key = router.next_key();
        router.add_leftovers(leftovers_key, tx);
        let _a = route(&mut router, "a/#", Some(1));
        let key = router.next_key() - 1;
        let mut m = Publish::new("a/b".into(), Bytes::new());
        m.properties.subscription_identifiers = vec![NonZeroU32::new(1).unwrap()];
        let to_leftovers = |router: &Router, m: &Publish| {
            let targets = router.targets(m);
            targets.len() == 1
                && targets[0]
                    .tx
                    .same_channel(router.leftovers.get(&leftovers_key).unwrap())
        };
        assert!(to_leftovers(&router, &m), "before the SUBACK");
        router.acked(key);
        assert!(!to_leftovers(&router, &m), "after the SUBACK");
        assert_eq!(router.targets(&m).len(), 1);
        let mut other = Publish::new("z/1".into(), Bytes::new());
        other.properties.subscription_identifiers = vec![NonZeroU32::new(1).unwrap()];
        assert!(
            to_leftovers(&router, &other),
            "identifier 1 of another client"
        );
    }

    // Streams that share a filter share the broker's subscription, but only
    // for a filter that matches the topic: a stream with a/# and b/# named
    // by the identifier does not pull in another stream's b/# for a/x.
    #[test]
    fn only_matching_shared_filters_count() {
        let mut router = Router::default();
        let (tx, _a) = crate::channel::stream(4, u32::MAX);
        let key = router.next_key();
        router.add(
            key,
            vec![
                (MqttString::from("a/#"), SubscriptionOptions::default()),
                (MqttString::from("b/#"), SubscriptionOptions::default()),
            ],
            vec!["a/#".parse().unwrap(), "b/#".parse().unwrap()],
            NonZeroU32::new(1),
            tx,
        );
        let _b = route(&mut router, "b/#", Some(2));
        let mut m = Publish::new("a/x".into(), Bytes::new());
        m.properties.subscription_identifiers = vec![NonZeroU32::new(1).unwrap()];
        assert_eq!(router.targets(&m).len(), 1);
        let mut m = Publish::new("b/x".into(), Bytes::new());
        m.properties.subscription_identifiers = vec![NonZeroU32::new(1).unwrap()];
        assert_eq!(router.targets(&m).len(), 2, "b/# is shared");
    }

    // Without identifiers a message goes to every stream whose filter matches.
    #[test]
    fn routes_by_filter_without_identifiers() {
        let mut router = Router::default();
        let _a = route(&mut router, "a/+", None);
        let _b = route(&mut router, "a/#", None);
        let _c = route(&mut router, "b/#", None);
        let _s = route(&mut router, "$share/g/a/b", None);
        let m = Publish::new("a/b".into(), Bytes::new());
        assert_eq!(router.targets(&m).len(), 3);
        // `$` topics are not matched by a leading wildcard (section 4.7.2).
        let _all = route(&mut router, "#", None);
        let sys = Publish::new("$SYS/x".into(), Bytes::new());
        assert_eq!(router.targets(&sys).len(), 0);
    }

    // The subscription identifiers the broker sends pick the streams.
    #[test]
    fn routes_by_subscription_identifier() {
        let mut router = Router::default();
        let _a = route(&mut router, "a/+", Some(1));
        let _b = route(&mut router, "a/#", Some(2));
        let mut m = Publish::new("a/b".into(), Bytes::new());
        m.properties.subscription_identifiers = vec![NonZeroU32::new(2).unwrap()];
        let targets = router.targets(&m);
        assert_eq!(targets.len(), 1);
        assert!(
            targets[0]
                .tx
                .same_channel(&router.routes.get(&2).unwrap().tx)
        );
    }

    #[test]
    fn identical_filters_share_the_brokers_subscription() {
        let mut router = Router::default();
        let _a = route(&mut router, "a/+", Some(1));
        let _b = route(&mut router, "a/+", Some(2));
        let _c = route(&mut router, "a/#", Some(3));
        // The broker only knows identifier 2 for a/+ now.
        let mut m = Publish::new("a/b".into(), Bytes::new());
        m.properties.subscription_identifiers = vec![NonZeroU32::new(2).unwrap()];
        assert_eq!(router.targets(&m).len(), 2);
        // Identifier 2's stream is gone; the broker still uses it for a/+.
        assert!(router.remove(2).is_empty());
        let targets = router.targets(&m);
        assert_eq!(targets.len(), 1);
        assert!(
            targets[0]
                .tx
                .same_channel(&router.routes.get(&1).unwrap().tx)
        );
        // A message with an identifier nobody knows is matched by filter.
        m.properties.subscription_identifiers = vec![NonZeroU32::new(9).unwrap()];
        assert_eq!(router.targets(&m).len(), 2);
    }

    #[test]
    fn remove_returns_only_unshared_filters() {
        let mut router = Router::default();
        let _a = route(&mut router, "a/+", None);
        let _b = route(&mut router, "a/+", None);
        let _c = route(&mut router, "c", None);
        assert!(router.remove(1).is_empty());
        assert_eq!(router.remove(2), vec![MqttString::from("a/+")]);
        assert_eq!(router.remove(3), vec![MqttString::from("c")]);
        assert!(router.remove(3).is_empty());
    }
}
