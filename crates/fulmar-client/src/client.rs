//! The [`Client`] handle and its commands.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::task::{Context, Poll};

use bytes::Bytes;
use fulmar_codec::{
    AckProperties, ConnAck, DisconnectProperties, DisconnectReasonCode, MqttString, Publish,
    PublishProperties, QoS, ReasonCode, SubscribeProperties, SubscriptionOptions,
};
use fulmar_topic::{SubscriptionFilter, TopicName};
use tokio::sync::{mpsc, oneshot, watch};

use crate::completion::{Key, PublishQueue, Pushed, Ticket};
use crate::driver;
use crate::error::Error;
use crate::options::ConnectOptions;
use crate::router::{AckToken, Message, Messages, Subscription};

/// How a publish completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishOutcome {
    /// QoS of the message.
    pub qos: QoS,
    /// The broker's PUBACK / PUBREC reason code: `Success` at QoS 0 (written)
    /// and under MQTT 3.1.1, `NoMatchingSubscribers` (0x10) possible under 5.0.
    pub reason_code: ReasonCode,
    /// Reason String and User Properties of the acknowledgement (MQTT 5.0).
    pub properties: AckProperties,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What a [`Client`] handle asks of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Subscribe(Box<SubscribeCommand>),
    Messages { reply: oneshot::Sender<Messages> },
    Ack(AckToken),
    Disconnect(Box<DisconnectCommand>),
    Reauthenticate(Reply<()>),
}

/// A publish on its way to the connection task: the parts the application
/// sets, kept small because the command is moved through the channel.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) topic: MqttString,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) properties: Option<Box<PublishProperties>>,
    /// Where the outcome goes (set when queued).
    pub(crate) key: Key,
}

impl Outgoing {
    /// The PUBLISH packet for the session.
    pub(crate) fn into_publish(self) -> (Publish, Key) {
        // Every field spelled out: no default topic and payload built and
        // dropped again.
        let publish = Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic,
            packet_id: None,
            payload: self.payload,
            properties: match self.properties {
                Some(properties) => *properties,
                None => PublishProperties::default(),
            },
        };
        (publish, self.key)
    }
}

#[derive(Debug)]
pub(crate) struct SubscribeCommand {
    pub(crate) filters: Vec<(MqttString, SubscriptionOptions)>,
    pub(crate) matchers: Vec<SubscriptionFilter>,
    pub(crate) properties: SubscribeProperties,
    pub(crate) reply: Reply<Subscription>,
}

#[derive(Debug)]
pub(crate) struct DisconnectCommand {
    pub(crate) reason_code: DisconnectReasonCode,
    pub(crate) properties: DisconnectProperties,
    pub(crate) reply: Reply<()>,
}

/// A handle to one MQTT connection, driven by a task the client spawned.
///
/// Cheap to clone (a channel sender and a shared publish queue); every
/// clone talks to the same connection and may be used from any task. The
/// connection task lives until
/// [`disconnect`](Self::disconnect) is called, every handle is dropped (a
/// normal DISCONNECT is then sent), or the connection is lost with
/// reconnecting off.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    connected: watch::Receiver<bool>,
    publishes: Arc<PublishQueue>,
    disconnections: Arc<LastDisconnection>,
    connack: Arc<LastConnAck>,
    last_topic: LastTopic,
}

/// Why a connection of the client ended, or why connecting again failed
/// ([`Client::last_disconnection`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Disconnection {
    /// What ended it: the broker's DISCONNECT
    /// ([`Error::DisconnectedByBroker`]), the broker refusing the CONNECT of
    /// a reconnection ([`Error::Refused`]), the network ([`Error::Io`]), no
    /// PINGRESP in time or a protocol error of the broker
    /// ([`Error::Session`]), ...
    pub error: Arc<Error>,
    /// The reason code and properties (Reason String, Server Reference, User
    /// Properties) of the broker's DISCONNECT, when it sent one (MQTT 5.0).
    pub by_broker: Option<(ReasonCode, DisconnectProperties)>,
    /// Reconnection attempts that had failed in a row before this one. A
    /// connection counts as a success (the count starts again at 0) only
    /// once it stayed up for [`Reconnect`](crate::Reconnect)'s stable
    /// period; one that the broker accepted and then closed at once counts
    /// as a failed attempt.
    pub failed_attempts: u32,
}

/// The last [`Disconnection`], shared by the handles and the connection task.
#[derive(Debug, Default)]
pub(crate) struct LastDisconnection(Mutex<Option<Disconnection>>);

impl LastDisconnection {
    pub(crate) fn set(&self, disconnection: Disconnection) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(disconnection);
    }

    fn get(&self) -> Option<Disconnection> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The CONNACK of the current connection (or of the last one), shared by
/// the handles and the connection task ([`Client::connack`]).
#[derive(Debug, Default)]
pub(crate) struct LastConnAck(Mutex<Option<ConnAck>>);

impl LastConnAck {
    pub(crate) fn set(&self, connack: ConnAck) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(connack);
    }

    fn get(&self) -> Option<ConnAck> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The last topic this handle published to, validated: publishing to the
/// same `&str` again reuses it instead of checking and copying the text.
/// One per handle (a clone starts empty), so tasks with their own handles
/// do not share the lock.
#[derive(Debug, Default)]
struct LastTopic(Mutex<Option<MqttString>>);

impl Clone for LastTopic {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl LastTopic {
    /// The remembered topic if it is `topic`. Never waits for the lock.
    fn get(&self, topic: &str) -> Option<MqttString> {
        match self.0.try_lock() {
            Ok(last) => last.as_ref().filter(|t| t.as_str() == topic).cloned(),
            Err(TryLockError::Poisoned(_) | TryLockError::WouldBlock) => None,
        }
    }

    fn set(&self, topic: &MqttString) {
        if let Ok(mut last) = self.0.try_lock() {
            *last = Some(topic.clone());
        }
    }
}

impl Client {
    /// Connects to the broker and returns once the CONNACK accepted the
    /// connection. The connection (keep-alive, acknowledgements, reconnects)
    /// is then driven by a spawned tokio task: nothing needs polling.
    ///
    /// A message that no stream takes (the queue of a resumed session, sent
    /// right after CONNACK, before the SUBACK of a new `subscribe`; one of a
    /// subscription kept from an earlier session) waits, up to
    /// a stream's capacity of them ([`stream_capacity`](ConnectOptions::stream_capacity)
    /// messages, [`stream_capacity_bytes`](ConnectOptions::stream_capacity_bytes)), for the
    /// first [`subscribe`](Self::subscribe) stream whose filter matches it or
    /// the first [`messages`](Self::messages) stream; beyond, it is
    /// acknowledged and dropped (with a warning in the log). Under
    /// [`manual_acks`](ConnectOptions::manual_acks), what arrives before the
    /// first stream waits for it unacknowledged, all of it (see there). An
    /// application that resumes a session and must not lose what waited for
    /// it connects with [`connect_with_messages`](Self::connect_with_messages)
    /// or uses manual acknowledgements.
    ///
    /// # Errors
    /// Invalid options, the transport failing, [`Error::Refused`] (with the
    /// CONNACK reason code), [`Error::ConnectTimeout`]. The first connection
    /// is not retried unless
    /// [`retry_initial_connect`](ConnectOptions::retry_initial_connect) is on.
    pub async fn connect(options: ConnectOptions) -> Result<(Self, ConnAck), Error> {
        let (client, connack, _) = Self::start(options, false).await?;
        Ok((client, connack))
    }

    /// As [`connect`](Self::connect), with a stream that exists before the
    /// CONNECT is sent and receives every message that no subscription
    /// stream takes (unlike [`messages`](Self::messages), which sees them
    /// all): the queue a resumed session sends right after CONNACK, messages
    /// of subscriptions the session kept from an earlier connection. It has
    /// the usual backpressure, where a stream made later by
    /// [`messages`](Self::messages) gets at most
    /// a stream's capacity ([`stream_capacity`](ConnectOptions::stream_capacity),
    /// [`stream_capacity_bytes`](ConnectOptions::stream_capacity_bytes)) of what came
    /// before it. For applications that resume sessions and must not lose
    /// what waited for them (a bridge, a persistent consumer).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with_messages(
        options: ConnectOptions,
    ) -> Result<(Self, ConnAck, Messages), Error> {
        match Self::start(options, true).await? {
            (client, connack, Some(messages)) => Ok((client, connack, messages)),
            (_, _, None) => Err(Error::Closed),
        }
    }

    async fn start(
        options: ConnectOptions,
        with_messages: bool,
    ) -> Result<(Self, ConnAck, Option<Messages>), Error> {
        let (commands, rx) = mpsc::channel(64);
        let publishes = Arc::new(PublishQueue::default());
        let disconnections = Arc::new(LastDisconnection::default());
        let last_connack = Arc::new(LastConnAck::default());
        let (connack, connected, messages) = driver::spawn(
            options,
            rx,
            publishes.clone(),
            (disconnections.clone(), last_connack.clone()),
            with_messages,
        )
        .await?;
        let client = Self {
            commands,
            connected,
            publishes,
            disconnections,
            connack: last_connack,
            last_topic: LastTopic::default(),
        };
        Ok((client, connack, messages))
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Queues `command` for the connection task: without the `send` future's
    /// waiter bookkeeping while the channel has room.
    async fn send(&self, command: Command) -> Result<(), Error> {
        match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(command)) => {
                self.commands.send(command).await.map_err(|_| Error::Closed)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }

    /// Publishes `payload` to `topic`; set QoS, retain and properties on the
    /// returned request, then `.await` it.
    ///
    /// The future completes when the QoS flow completes: QoS 0 once written
    /// to the transport, QoS 1 at PUBACK, QoS 2 at PUBCOMP (or a PUBREC with a
    /// failure code). Messages beyond the broker's send quota (its Receive
    /// Maximum), and every message while disconnected, wait in a bounded
    /// queue ([`ConnectOptions::max_buffered_publishes`], 1024 by default)
    /// and are sent as quota comes back or after reconnecting. While
    /// connected, a publish that finds that queue full waits in line for
    /// room (back-pressure: its future stays pending until acknowledgements
    /// make room); while disconnected it fails with [`Error::QueueFull`].
    /// A bounded window of publishes awaited at once, as with `futures`'
    /// `buffer_unordered`, keeps memory bounded:
    ///
    /// ```no_run
    /// # async fn demo(client: fulmar_client::Client) -> Result<(), fulmar_client::Error> {
    /// use fulmar_client::QoS;
    /// use futures::StreamExt;
    ///
    /// let window = 1024; // max_buffered_publishes, the default
    /// let mut outcomes = futures::stream::iter(0..100_000)
    ///     .map(|i| client.publish("load/test", format!("{i}")).qos(QoS::AtLeastOnce).into_future())
    ///     .buffer_unordered(window);
    /// while let Some(outcome) = outcomes.next().await {
    ///     outcome?; // PUBACK received (or the reason it failed)
    /// }
    /// // Every message was acknowledged.
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// `topic` is a `&str`, a `String`, an [`MqttString`](crate::MqttString)
    /// (such as the Response Topic of a request, answered as is) or a
    /// [`TopicName`] checked beforehand. Publishing to the same `&str` as the last publish of this
    /// handle reuses the checked copy; a [`TopicName`] (for example one made
    /// once with [`TopicName::from_bytes`] from static bytes) is never copied.
    ///
    /// Order: publishes go to the connection, and are sent, in the order of
    /// the first poll of their futures, however many are awaited
    /// concurrently (with `join_all`, say, which polls them first in the
    /// order given). The queue to the connection task holds 64; a publish
    /// that finds it full, or finds earlier ones still waiting for room,
    /// waits in line behind them, first come, first served. A publish
    /// waiting in line holds up those behind it until it is polled again
    /// (when woken) or dropped (which gives up its place: that message is
    /// not sent).
    ///
    /// # Errors
    /// Awaiting the request fails with:
    /// - [`Error::InvalidTopic`]: `topic` is not a valid Topic Name (empty,
    ///   a wildcard, U+0000, too long); nothing is sent.
    /// - [`Error::QueueFull`]: disconnected, and the bounded queue
    ///   ([`ConnectOptions::max_buffered_publishes`]) is full.
    /// - [`Error::Session`]: the session refused the message, which is not
    ///   sent: [`ApiError::PayloadFormatInvalid`](crate::ApiError::PayloadFormatInvalid)
    ///   (MQTT 5.0, a payload marked UTF-8 with
    ///   [`PayloadFormat::Utf8`](crate::PayloadFormat::Utf8) that is not
    ///   well-formed UTF-8);
    ///   [`ApiError::QoSNotSupported`](crate::ApiError::QoSNotSupported) or
    ///   [`ApiError::RetainNotSupported`](crate::ApiError::RetainNotSupported)
    ///   (above the broker's Maximum QoS, or retained while the broker has no
    ///   retained messages, as its CONNACK said);
    ///   [`LimitExceeded::PacketTooLarge`](crate::LimitExceeded::PacketTooLarge)
    ///   (over the broker's Maximum Packet Size);
    ///   [`ApiError::SubscriptionIdentifier`](crate::ApiError::SubscriptionIdentifier)
    ///   (Subscription Identifiers in the properties);
    ///   [`ApiError::Unencodable`](crate::ApiError::Unencodable);
    ///   [`LimitExceeded::NoPacketId`](crate::LimitExceeded::NoPacketId).
    /// - [`Error::PublishRejected`]: the broker answered with a failure
    ///   reason code (0x80 or above) in its PUBACK (QoS 1) or PUBREC (QoS 2).
    /// - [`Error::PublishDropped`]: the session dropped the message before
    ///   its flow completed (its Message Expiry Interval passed, it became
    ///   larger than the broker's Maximum Packet Size or above its Maximum
    ///   QoS after a reconnection, or the broker did not keep the session:
    ///   see [`DropReason`](crate::DropReason)).
    /// - [`Error::RequestLost`]: a QoS 0 message taken for sending was not
    ///   written before the connection dropped.
    /// - [`Error::Closed`]: the client was closed (by
    ///   [`disconnect`](Self::disconnect), or because the connection was lost
    ///   with reconnecting off) before the flow completed.
    pub fn publish<'t>(
        &self,
        topic: impl Into<PublishTopic<'t>>,
        payload: impl Into<Bytes>,
    ) -> PublishRequest<'_> {
        PublishRequest {
            client: self,
            topic: self.topic(topic.into()).map_err(Box::new),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        }
    }

    /// Checks a topic of [`publish`](Self::publish).
    fn topic(&self, topic: PublishTopic<'_>) -> Result<MqttString, Error> {
        match topic.0 {
            TopicArg::Str(s) => {
                if let Some(known) = self.last_topic.get(s) {
                    return Ok(known);
                }
                let topic = topic_name(s, MqttString::try_new)?;
                self.last_topic.set(&topic);
                Ok(topic)
            }
            TopicArg::String(s) => {
                if let Some(known) = self.last_topic.get(&s) {
                    return Ok(known);
                }
                let topic = topic_name(s, MqttString::try_from_string)?;
                self.last_topic.set(&topic);
                Ok(topic)
            }
            TopicArg::Name(name) => MqttString::try_from(name.into_bytes())
                .map_err(|e| Error::InvalidOptions(format!("topic: {e}"))),
            TopicArg::Mqtt(topic) => topic_name(topic, Ok),
        }
    }

    /// Publishes a ready-made message (packet identifier, DUP and topic alias
    /// are the session's business and are ignored).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_message(&self, publish: Publish) -> Result<PublishOutcome, Error> {
        if publish.topic.contains(['+', '#']) {
            // Validated here so that the error is typed, not a closed connection.
            let _name: TopicName = publish.topic.parse()?;
        }
        let properties = (publish.properties != PublishProperties::default())
            .then(|| Box::new(publish.properties));
        PublishRequest {
            client: self,
            topic: Ok(publish.topic),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
        }
        .await
    }

    /// Subscribes to one filter with `qos` and returns the stream of its
    /// messages. Messages the broker sends before the SUBACK are in the
    /// stream (QoS 0 ones only as far as its capacity goes; while a QoS 1/2
    /// one waits for room in it, QoS 0 messages for the other streams may be
    /// dropped too: see the crate docs on backpressure). When the session
    /// already has its most SUBSCRIBE and UNSUBSCRIBE packets in flight (64),
    /// the request waits for one to be answered.
    ///
    /// The broker keeps one subscription per filter: subscribing again to a
    /// filter that a live stream of this client already has replaces that
    /// subscription's QoS and options for both streams (MQTT-3.8.4-3), and
    /// they stay so after the later stream is dropped. Subscribe to a filter
    /// once, with the highest QoS any of its readers needs. Without
    /// Subscription Identifiers (MQTT 3.1.1, or a broker that does not
    /// support them) messages are given to the streams by matching their
    /// filters: a broker that sends one copy per matching subscription
    /// (overlapping filters, or a filter and a shared subscription to it)
    /// then gives each of those streams every copy.
    ///
    /// # Errors
    /// - [`Error::InvalidTopic`]: `filter` is not a valid Topic Filter.
    /// - [`Error::NotConnected`]: the client is not connected when the
    ///   request reaches the connection task.
    /// - [`Error::SubscribeRejected`]: the broker refused the filter (SUBACK
    ///   failure code).
    /// - [`Error::RequestLost`]: the connection dropped before the SUBACK.
    /// - [`Error::Session`]: the session refused the SUBSCRIBE, which is
    ///   not sent:
    ///   [`TooManyRequests`](crate::LimitExceeded::TooManyRequests) when
    ///   over 1 024 requests already wait for a slot;
    ///   [`ApiError::WildcardSubscriptionsNotSupported`](crate::ApiError::WildcardSubscriptionsNotSupported),
    ///   [`ApiError::SharedSubscriptionsNotSupported`](crate::ApiError::SharedSubscriptionsNotSupported)
    ///   or
    ///   [`ApiError::SubscriptionIdentifiersNotSupported`](crate::ApiError::SubscriptionIdentifiersNotSupported)
    ///   when the broker's CONNACK said it has no such subscriptions;
    ///   [`PacketTooLarge`](crate::LimitExceeded::PacketTooLarge) over the
    ///   broker's Maximum Packet Size;
    ///   [`ApiError::Unencodable`](crate::ApiError::Unencodable).
    /// - [`Error::Closed`]: the client was closed before the SUBACK.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, Error> {
        self.subscribe_with(
            vec![(filter.to_owned(), SubscriptionOptions::new(qos))],
            SubscribeProperties::default(),
        )
        .await
    }

    /// Subscribes to several filters with their options (MQTT 5.0: No Local,
    /// Retain As Published, Retain Handling) and SUBSCRIBE properties, in one
    /// SUBSCRIBE. One stream receives the messages of all of them; its
    /// [`Subscription::suback`] has one reason code per filter. Under 5.0 the
    /// client sets a Subscription Identifier of its own unless one is given
    /// (or the broker said it does not support them).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe); [`Error::SubscribeRejected`] only
    /// if every filter was refused. Also [`Error::InvalidOptions`] when
    /// `filters` is empty, or under MQTT 3.1.1 (and 3.1) when `properties`
    /// or an option other than QoS is set.
    pub async fn subscribe_with(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
        properties: SubscribeProperties,
    ) -> Result<Subscription, Error> {
        let mut wire = Vec::with_capacity(filters.len());
        let mut matchers = Vec::with_capacity(filters.len());
        for (filter, options) in filters {
            matchers.push(filter.parse::<SubscriptionFilter>()?);
            let filter = MqttString::try_from_string(filter)
                .map_err(|e| Error::InvalidOptions(format!("topic filter: {e}")))?;
            wire.push((filter, options));
        }
        if wire.is_empty() {
            return Err(Error::InvalidOptions(
                "[MQTT-3.8.3-3] no topic filter".into(),
            ));
        }
        self.request(|reply| {
            Command::Subscribe(Box::new(SubscribeCommand {
                filters: wire,
                matchers,
                properties,
                reply,
            }))
        })
        .await?
    }

    /// A stream of every message this client receives, whatever the
    /// subscription (including subscriptions the broker kept from an earlier
    /// session). It counts for backpressure like any other stream.
    ///
    /// Messages that arrived while no stream wanted them (typically the
    /// queue of a resumed session, sent right after CONNACK) are kept, up to
    /// a stream's capacity ([`ConnectOptions::stream_capacity`](crate::ConnectOptions::stream_capacity),
    /// [`ConnectOptions::stream_capacity_bytes`](crate::ConnectOptions::stream_capacity_bytes)),
    /// and come first on the first such stream.
    ///
    /// # Errors
    /// [`Error::Closed`] once the client is closed.
    pub async fn messages(&self) -> Result<Messages, Error> {
        self.request(|reply| Command::Messages { reply }).await
    }

    /// Acknowledges an inbound QoS 1/2 message when manual acknowledgements
    /// are on ([`ConnectOptions::manual_acks`]): its PUBACK or PUBREC is sent
    /// once every message received before it is acknowledged too (the order
    /// of receipt, [MQTT-4.6.0-2]). Until then the message counts against the
    /// Receive Maximum, so the broker stops sending when too many wait.
    ///
    /// Acknowledge each message once, from any stream that received it (a
    /// second acknowledgement does nothing). A message from an earlier
    /// connection needs no acknowledgement (the broker sends it again); QoS
    /// 0 messages need none either. A message that every stream it went to
    /// dropped unread is acknowledged by the client.
    ///
    /// # Errors
    /// [`Error::Closed`] once the client is closed.
    pub async fn ack(&self, message: &Message) -> Result<(), Error> {
        let Some(token) = message.ack else {
            return Ok(());
        };
        self.send(Command::Ack(token)).await
    }

    /// Disconnects normally (reason code 0x00: the broker discards the will)
    /// and stops the connection task. Publishes not completed fail with
    /// [`Error::Closed`]; subscription streams end.
    ///
    /// # Errors
    /// [`Error::Closed`] if the client was already closed; [`Error::Io`] if
    /// the transport failed while the DISCONNECT was being written (the
    /// broker may not have received it, and then publishes the will). The
    /// client is closed either way.
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.disconnect_with(
            DisconnectReasonCode::NormalDisconnection,
            DisconnectProperties::default(),
        )
        .await
    }

    /// Disconnects with a reason code and properties (MQTT 5.0; 3.1.1 sends a
    /// bare DISCONNECT). [`DisconnectReasonCode::DisconnectWithWillMessage`]
    /// asks the broker to publish the will anyway; a Session Expiry Interval
    /// in `properties` changes how long the broker keeps the session.
    ///
    /// # Errors
    /// [`Error::Closed`] if the client was already closed; [`Error::Io`] as
    /// for [`disconnect`](Self::disconnect);
    /// [`Error::Session`]`(`[`ApiError::SessionExpiryAfterZero`](fulmar_session::ApiError::SessionExpiryAfterZero)`)`
    /// for a Session Expiry Interval above 0 when the session was opened with
    /// 0 (a Protocol Error in MQTT 5.0, section 3.14.2.2.2): nothing is sent and the client
    /// stays connected.
    pub async fn disconnect_with(
        &self,
        reason_code: DisconnectReasonCode,
        properties: DisconnectProperties,
    ) -> Result<(), Error> {
        self.request(|reply| {
            Command::Disconnect(Box::new(DisconnectCommand {
                reason_code,
                properties,
                reply,
            }))
        })
        .await?
    }

    /// Re-authenticates on the live connection (MQTT 5.0 enhanced
    /// authentication, section 4.12.1): sends AUTH 0x19 Re-authenticate with
    /// the Authentication Method of the CONNECT and the data of
    /// [`Authenticator::start`](crate::Authenticator::start), answers the
    /// broker's challenges, and completes at its AUTH 0x00 Success (after
    /// [`Authenticator::finish`](crate::Authenticator::finish) accepted it).
    /// Messages flow on meanwhile. A call made while one runs waits for it,
    /// then starts an exchange of its own (with what `start` returns then:
    /// new credentials, a rotated token), which the calls made meanwhile
    /// share. A broker that has not completed it within
    /// [`ConnectOptions::connect_timeout`](crate::ConnectOptions::connect_timeout)
    /// has failed it: the client ends the connection as for any failure.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] without
    /// [`ConnectOptions::authentication`](crate::ConnectOptions::authentication);
    /// [`Error::NotConnected`] while disconnected;
    /// [`Error::Authentication`] if the authenticator gave up (before
    /// anything was sent, the connection stays; after, it ends) or the
    /// broker did not answer in time;
    /// [`Error::DisconnectedByBroker`] (0x87 Not authorized, say) if the
    /// broker refused, which ends the connection ([MQTT-4.12.1-2]);
    /// [`Error::Session`] if the broker broke the protocol (another
    /// Authentication Method); another error if the connection was lost
    /// before the exchange completed.
    pub async fn reauthenticate(&self) -> Result<(), Error> {
        self.request(Command::Reauthenticate).await?
    }

    /// Why the last connection ended, or why the last attempt to connect
    /// again failed; `None` while the first connection lasts. With
    /// reconnect on, the client keeps trying whatever the reason (a broker
    /// that refuses the CONNECT, with [`Error::Refused`], included): an
    /// application that should give up then calls
    /// [`disconnect`](Self::disconnect). The broker's Server Reference
    /// (MQTT 5.0, in a DISCONNECT 0x9C / 0x9D) is in
    /// [`by_broker`](Disconnection::by_broker).
    #[must_use]
    pub fn last_disconnection(&self) -> Option<Disconnection> {
        self.disconnections.get()
    }

    /// The CONNACK of the current connection, or of the last one while
    /// the client is reconnecting: what the broker said of this connection
    /// (MQTT 5.0 Maximum QoS, Retain Available, Receive Maximum, Maximum
    /// Packet Size, Wildcard and Shared Subscription Available, Session
    /// Present, ...). Each reconnection the client makes by itself brings a
    /// new one, whose limits may differ from the first connection's (the one
    /// [`connect`](Self::connect) returned); it is here by the time
    /// [`is_connected`](Self::is_connected) says `true` for that connection.
    /// `None` only before the first CONNACK (never, from a handle that
    /// `connect` returned).
    #[must_use]
    pub fn connack(&self) -> Option<ConnAck> {
        self.connack.get()
    }

    /// Whether the connection is up (CONNACK received, not lost since).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until the connection is up (`true`) or down (`false`).
    ///
    /// # Errors
    /// [`Error::Closed`] if the client closes first (waiting for `true`).
    pub async fn wait_connected(&self, connected: bool) -> Result<(), Error> {
        let mut state = self.connected.clone();
        match state.wait_for(|c| *c == connected).await {
            Ok(_) => Ok(()),
            Err(_) if !connected => Ok(()),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Whether the connection task has stopped (every call then fails with
    /// [`Error::Closed`]).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// The topic argument of [`Client::publish`]: a `&str`, a `String` or an
/// [`MqttString`](crate::MqttString) (neither copied) or a [`TopicName`] validated beforehand (neither copied nor
/// checked again for wildcards).
#[derive(Debug)]
pub struct PublishTopic<'a>(TopicArg<'a>);

#[derive(Debug)]
enum TopicArg<'a> {
    Str(&'a str),
    String(String),
    Name(TopicName),
    /// Already a valid MQTT string (a received Response Topic, say): only
    /// the Topic Name rules are left to check.
    Mqtt(MqttString),
}

impl<'a> From<&'a str> for PublishTopic<'a> {
    fn from(topic: &'a str) -> Self {
        Self(TopicArg::Str(topic))
    }
}

impl<'a> From<&'a String> for PublishTopic<'a> {
    fn from(topic: &'a String) -> Self {
        Self(TopicArg::Str(topic))
    }
}

impl From<String> for PublishTopic<'_> {
    fn from(topic: String) -> Self {
        Self(TopicArg::String(topic))
    }
}

impl From<Box<str>> for PublishTopic<'_> {
    fn from(topic: Box<str>) -> Self {
        Self(TopicArg::String(topic.into()))
    }
}

impl<'a> From<Cow<'a, str>> for PublishTopic<'a> {
    fn from(topic: Cow<'a, str>) -> Self {
        match topic {
            Cow::Borrowed(s) => Self(TopicArg::Str(s)),
            Cow::Owned(s) => Self(TopicArg::String(s)),
        }
    }
}

impl From<MqttString> for PublishTopic<'_> {
    /// Shares the string's buffer (a reference count, no copy); it is still
    /// checked as a Topic Name (not empty, no wildcard). The Response Topic
    /// of a request ([`PublishProperties::response_topic`]) is one.
    fn from(topic: MqttString) -> Self {
        Self(TopicArg::Mqtt(topic))
    }
}

impl From<&MqttString> for PublishTopic<'_> {
    /// As `From<MqttString>`: shares the buffer.
    fn from(topic: &MqttString) -> Self {
        Self(TopicArg::Mqtt(topic.clone()))
    }
}

impl From<TopicName> for PublishTopic<'_> {
    fn from(topic: TopicName) -> Self {
        Self(TopicArg::Name(topic))
    }
}

impl From<&TopicName> for PublishTopic<'_> {
    /// Shares the name's buffer (a reference count, no copy).
    fn from(topic: &TopicName) -> Self {
        Self(TopicArg::Name(topic.clone()))
    }
}

/// A publish being built: set QoS, retain and properties, then `.await` it
/// (see [`Client::publish`]).
#[derive(Debug)]
#[must_use = "a publish request does nothing until awaited"]
pub struct PublishRequest<'a> {
    client: &'a Client,
    /// Checked when the request was made; the error (of the topic, or of
    /// the first invalid property set) is reported when awaited.
    topic: Result<MqttString, Box<Error>>,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    /// Boxed: most publishes have none, and the request is moved around.
    properties: Option<Box<PublishProperties>>,
}

impl PublishRequest<'_> {
    /// The QoS (default 0).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// The RETAIN flag (default off).
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// PUBLISH properties (MQTT 5.0; ignored under 3.1.1): message expiry,
    /// content type, response topic, correlation data, user properties,
    /// payload format. Topic alias and subscription identifiers are not
    /// for the application to set.
    ///
    /// Replaces the properties set so far, also those of
    /// [`user_property`](Self::user_property),
    /// [`response_topic`](Self::response_topic),
    /// [`correlation_data`](Self::correlation_data) and
    /// [`message_expiry_interval`](Self::message_expiry_interval), which set
    /// one property each and can follow it.
    pub fn properties(mut self, properties: PublishProperties) -> Self {
        self.properties = Some(Box::new(properties));
        self
    }

    /// Adds a User Property (MQTT 5.0; ignored under 3.1.1). A key or value
    /// that is not a valid MQTT string (U+0000, over 65 535 bytes) makes
    /// the publish fail with [`Error::InvalidOptions`] when awaited;
    /// nothing is sent.
    ///
    /// ```no_run
    /// # async fn demo(client: fulmar_client::Client) -> Result<(), fulmar_client::Error> {
    /// use fulmar_client::QoS;
    ///
    /// let trace_id = format!("trace-{}", 17);
    /// client
    ///     .publish("orders/new", "{}")
    ///     .qos(QoS::AtLeastOnce)
    ///     .user_property("trace-id", trace_id)
    ///     .user_property("source", "checkout")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match (
            MqttString::try_from_string(key),
            MqttString::try_from_string(value),
        ) {
            (Ok(key), Ok(value)) => self.properties_mut().user_properties.push((key, value)),
            (Err(e), _) | (_, Err(e)) => {
                self.fail(Error::InvalidOptions(format!("user property: {e}")));
            }
        }
        self
    }

    /// The Response Topic (MQTT 5.0): where the receiver of a request
    /// should publish its answer. It must be a valid Topic Name (no
    /// wildcard), or the publish fails with [`Error::InvalidTopic`] when
    /// awaited. See [`correlation_data`](Self::correlation_data) for an
    /// example.
    pub fn response_topic(mut self, topic: impl Into<String>) -> Self {
        match topic_name(topic.into(), MqttString::try_from_string) {
            Ok(topic) => self.properties_mut().response_topic = Some(topic),
            Err(e) => self.fail(e),
        }
        self
    }

    /// The Correlation Data (MQTT 5.0): what the answer to a request
    /// carries back so that the requester knows which request it answers.
    ///
    /// ```no_run
    /// # async fn demo(client: fulmar_client::Client) -> Result<(), fulmar_client::Error> {
    /// use fulmar_client::QoS;
    ///
    /// // The requester:
    /// client
    ///     .publish("service/square", "12")
    ///     .qos(QoS::AtLeastOnce)
    ///     .response_topic("replies/client-7")
    ///     .correlation_data("request-1")
    ///     .message_expiry_interval(5)
    ///     .await?;
    ///
    /// // The responder, for each request it receives:
    /// # let mut requests = client.subscribe("service/square", QoS::AtLeastOnce).await?;
    /// let request = requests.recv().await.expect("client open");
    /// if let Some(reply_to) = &request.properties.response_topic {
    ///     let mut answer = client.publish(reply_to, "144").qos(QoS::AtLeastOnce);
    ///     if let Some(correlation) = &request.properties.correlation_data {
    ///         answer = answer.correlation_data(correlation.clone());
    ///     }
    ///     answer.await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn correlation_data(mut self, data: impl Into<Bytes>) -> Self {
        self.properties_mut().correlation_data = Some(data.into());
        self
    }

    /// The Message Expiry Interval in seconds (MQTT 5.0): the broker drops
    /// the message if it could not deliver it to a subscriber within that
    /// time, and the client drops it if it could not send it
    /// ([`DropReason`](crate::DropReason)).
    pub fn message_expiry_interval(mut self, seconds: u32) -> Self {
        self.properties_mut().message_expiry_interval = Some(seconds);
        self
    }

    /// The properties, made empty if none were set.
    fn properties_mut(&mut self) -> &mut PublishProperties {
        self.properties.get_or_insert_with(Box::default)
    }

    /// Makes the request fail with `error` when awaited, unless an earlier
    /// argument already failed it.
    fn fail(&mut self, error: Error) {
        if self.topic.is_ok() {
            self.topic = Err(Box::new(error));
        }
    }
}

impl<'a> IntoFuture for PublishRequest<'a> {
    type Output = Result<PublishOutcome, Error>;
    type IntoFuture = PublishFuture<'a>;

    fn into_future(self) -> Self::IntoFuture {
        PublishFuture {
            state: State::Start(self),
        }
    }
}

/// The future of a [`PublishRequest`]: resolves to the publish's outcome
/// (see [`Client::publish`]).
///
/// Nothing is sent before its first poll, which sets its place in the order
/// of publishes (see [`Client::publish`]). Dropped while it waits in line
/// for room in the queue to the connection task, it gives up its place and
/// the message is not sent. Dropping it once the message is queued does not
/// take the message back: the connection task still sends it, and nobody
/// hears the outcome.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct PublishFuture<'a> {
    state: State<'a>,
}

/// Where a publish is. The message goes through the client's
/// [`PublishQueue`] and its outcome comes back in a slot of it.
enum State<'a> {
    /// Not polled yet.
    Start(PublishRequest<'a>),
    /// The queue to the connection task was full, or earlier publishes
    /// waited for room: waiting in line for room with a ticket.
    Full(&'a Client, Outgoing, Ticket),
    /// Handed to the connection task: waiting for the outcome.
    Waiting {
        queue: &'a PublishQueue,
        key: Key,
    },
    Done,
}

impl std::fmt::Debug for State<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(request) => f.debug_tuple("Start").field(request).finish(),
            Self::Full(_, outgoing, ticket) => {
                f.debug_tuple("Full").field(outgoing).field(ticket).finish()
            }
            Self::Waiting { key, .. } => f.debug_struct("Waiting").field("key", key).finish(),
            Self::Done => f.write_str("Done"),
        }
    }
}

impl Future for PublishFuture<'_> {
    type Output = Result<PublishOutcome, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (client, outgoing, ticket) = match std::mem::replace(&mut self.state, State::Done) {
            State::Start(request) => {
                let topic = match request.topic {
                    Ok(topic) => topic,
                    Err(e) => return Poll::Ready(Err(*e)),
                };
                let outgoing = Outgoing {
                    topic,
                    payload: request.payload,
                    qos: request.qos,
                    retain: request.retain,
                    properties: request.properties,
                    key: Key::MAX,
                };
                (request.client, outgoing, None)
            }
            State::Full(client, outgoing, ticket) => (client, outgoing, Some(ticket)),
            State::Waiting { queue, key } => {
                let outcome = queue.poll(key, cx);
                if outcome.is_pending() {
                    self.state = State::Waiting { queue, key };
                }
                return outcome;
            }
            // Polled after completion.
            State::Done => return Poll::Pending,
        };
        let queue = &*client.publishes;
        match queue.push(outgoing, ticket, cx) {
            // The outcome cannot be there yet; the slot holds our waker.
            Pushed::Queued(key) => self.state = State::Waiting { queue, key },
            Pushed::Full(outgoing, ticket) => self.state = State::Full(client, outgoing, ticket),
            Pushed::Closed => return Poll::Ready(Err(Error::Closed)),
        }
        Poll::Pending
    }
}

impl Drop for PublishFuture<'_> {
    fn drop(&mut self) {
        match self.state {
            State::Waiting { queue, key } => queue.abandon(key),
            // Out of the line for room, or the publishes behind would wait
            // forever.
            State::Full(client, _, ticket) => client.publishes.cancel(ticket),
            State::Start(_) | State::Done => {}
        }
    }
}

/// Validates a Topic Name. The common topic (not empty, no wildcard, no
/// U+0000, not too long) takes one scan and, from a `String`, no copy;
/// anything else goes through [`TopicName`] for the typed error.
fn topic_name<T: AsRef<str>>(
    topic: T,
    make: impl FnOnce(T) -> Result<MqttString, fulmar_codec::StringError>,
) -> Result<MqttString, Error> {
    let text = topic.as_ref();
    if text.is_empty()
        || text.len() > TopicName::MAX_LEN
        || text.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
    {
        let name: TopicName = text.parse()?;
        return MqttString::try_from(name.into_bytes())
            .map_err(|e| Error::InvalidOptions(format!("topic: {e}")));
    }
    make(topic).map_err(|e| Error::InvalidOptions(format!("topic: {e}")))
}
