//! The [`Client`] handle and its commands.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fulmar_codec::{
    AckProperties, ConnAck, DisconnectProperties, DisconnectReasonCode, MqttString, Publish,
    PublishProperties, QoS, ReasonCode, SubscribeProperties, SubscriptionOptions,
};
use fulmar_topic::{SubscriptionFilter, TopicName};
use tokio::sync::{mpsc, oneshot, watch};

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
    Publish {
        publish: Publish,
        reply: Reply<PublishOutcome>,
    },
    Subscribe {
        filters: Vec<(MqttString, SubscriptionOptions)>,
        matchers: Vec<SubscriptionFilter>,
        properties: SubscribeProperties,
        reply: Reply<Subscription>,
    },
    Messages {
        reply: oneshot::Sender<Messages>,
    },
    Ack(AckToken),
    Disconnect {
        reason_code: DisconnectReasonCode,
        properties: DisconnectProperties,
        reply: Reply<()>,
    },
}

/// A handle to one MQTT connection, driven by a task the client spawned.
///
/// Cheap to clone (a channel sender); every clone talks to the same
/// connection and may be used from any task. The connection task lives until
/// [`disconnect`](Self::disconnect) is called, every handle is dropped (a
/// normal DISCONNECT is then sent), or the connection is lost with
/// reconnecting off.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    connected: watch::Receiver<bool>,
}

impl Client {
    /// Connects to the broker and returns once the CONNACK accepted the
    /// connection. The connection (keep-alive, acknowledgements, reconnects)
    /// is then driven by a spawned tokio task: nothing needs polling.
    ///
    /// # Errors
    /// Invalid options, the transport failing, [`Error::Refused`] (with the
    /// CONNACK reason code), [`Error::ConnectTimeout`]. The first connection
    /// is not retried.
    pub async fn connect(options: ConnectOptions) -> Result<(Self, ConnAck), Error> {
        let (commands, rx) = mpsc::channel(64);
        let (connack, connected) = driver::spawn(options, rx).await?;
        Ok((
            Self {
                commands,
                connected,
            },
            connack,
        ))
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
    /// failure code). While disconnected the message waits in a bounded queue
    /// and is sent after reconnecting; a full queue fails with
    /// [`Error::QueueFull`].
    pub fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> PublishRequest<'_> {
        PublishRequest {
            client: self,
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
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
        self.request(|reply| Command::Publish { publish, reply })
            .await?
    }

    /// Subscribes to one filter with `qos` and returns the stream of its
    /// messages.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`], [`Error::NotConnected`],
    /// [`Error::SubscribeRejected`] when the broker refused the filter,
    /// [`Error::RequestLost`] when the connection dropped first.
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
    /// As [`subscribe`](Self::subscribe); refused only if every filter was refused.
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
        self.request(|reply| Command::Subscribe {
            filters: wire,
            matchers,
            properties,
            reply,
        })
        .await?
    }

    /// A stream of every message this client receives, whatever the
    /// subscription (including subscriptions the broker kept from an earlier
    /// session). It counts for backpressure like any other stream.
    ///
    /// Messages that arrived while no stream wanted them (typically the
    /// queue of a resumed session, sent right after CONNACK) are kept, up to
    /// [`ConnectOptions::stream_capacity`](crate::ConnectOptions::stream_capacity),
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
    /// Acknowledge each message once, from any stream that received it. A
    /// message from an earlier connection needs no acknowledgement (the
    /// broker sends it again); QoS 0 messages need none either.
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
    /// [`Error::Closed`] if the client was already closed.
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
    /// [`Error::Closed`] if the client was already closed.
    pub async fn disconnect_with(
        &self,
        reason_code: DisconnectReasonCode,
        properties: DisconnectProperties,
    ) -> Result<(), Error> {
        self.request(|reply| Command::Disconnect {
            reason_code,
            properties,
            reply,
        })
        .await?
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

/// A publish being built: set QoS, retain and properties, then `.await` it
/// (see [`Client::publish`]).
#[derive(Debug)]
#[must_use = "a publish request does nothing until awaited"]
pub struct PublishRequest<'a> {
    client: &'a Client,
    topic: String,
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
    pub fn properties(mut self, properties: PublishProperties) -> Self {
        self.properties = Some(Box::new(properties));
        self
    }
}

impl<'a> IntoFuture for PublishRequest<'a> {
    type Output = Result<PublishOutcome, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(PublishFuture::Start(self))
    }
}

/// Where a publish is: a small hand-written state machine, so the boxed
/// future holds the request, or the reply receiver, and little else.
enum PublishFuture<'a> {
    /// Not polled yet: nothing is validated or sent before the first poll.
    Start(PublishRequest<'a>),
    /// The command channel was full: waiting for room.
    Queueing {
        send: Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>,
        reply: oneshot::Receiver<Result<PublishOutcome, Error>>,
    },
    /// Handed to the connection task: waiting for the outcome.
    Waiting(oneshot::Receiver<Result<PublishOutcome, Error>>),
    Done,
}

impl PublishRequest<'_> {
    fn into_publish(self) -> Result<Publish, Error> {
        Ok(Publish {
            qos: self.qos,
            retain: self.retain,
            topic: topic_name(self.topic)?,
            payload: self.payload,
            properties: self.properties.map(|p| *p).unwrap_or_default(),
            ..Publish::default()
        })
    }
}

impl Future for PublishFuture<'_> {
    type Output = Result<PublishOutcome, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match std::mem::replace(&mut *self, Self::Done) {
                Self::Start(request) => {
                    let commands = &request.client.commands;
                    let publish = match request.into_publish() {
                        Ok(publish) => publish,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    let (tx, rx) = oneshot::channel();
                    let command = Command::Publish { publish, reply: tx };
                    *self = match commands.try_send(command) {
                        Ok(()) => Self::Waiting(rx),
                        Err(mpsc::error::TrySendError::Full(command)) => Self::Queueing {
                            send: Box::pin(async move {
                                commands.send(command).await.map_err(|_| Error::Closed)
                            }),
                            reply: rx,
                        },
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            return Poll::Ready(Err(Error::Closed));
                        }
                    };
                }
                Self::Queueing { mut send, reply } => match send.as_mut().poll(cx) {
                    Poll::Pending => {
                        *self = Self::Queueing { send, reply };
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => *self = Self::Waiting(reply),
                },
                Self::Waiting(mut reply) => match Pin::new(&mut reply).poll(cx) {
                    Poll::Pending => {
                        *self = Self::Waiting(reply);
                        return Poll::Pending;
                    }
                    Poll::Ready(outcome) => {
                        return Poll::Ready(outcome.unwrap_or(Err(Error::Closed)));
                    }
                },
                // Polled after completion.
                Self::Done => return Poll::Pending,
            }
        }
    }
}

/// Validates a Topic Name. The common topic (not empty, no wildcard, no
/// U+0000, not too long) takes one scan and no copy; anything else goes
/// through [`TopicName`] for the typed error.
fn topic_name(topic: String) -> Result<MqttString, Error> {
    if topic.is_empty()
        || topic.len() > TopicName::MAX_LEN
        || topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
    {
        let topic: TopicName = topic.parse()?;
        return MqttString::try_from(topic.into_bytes())
            .map_err(|e| Error::InvalidOptions(format!("topic: {e}")));
    }
    MqttString::try_from_string(topic).map_err(|e| Error::InvalidOptions(format!("topic: {e}")))
}
