//! A tokio MQTT 3.1.1 and 5.0 client, driven by the sans-IO `fulmar-session`.
//!
//! # Contract
//!
//! - [`Client::connect`] spawns one task that owns the connection: it reads
//!   packets into the session, writes what the session hands out, sleeps
//!   until the session's next deadline (keep-alive) and serves the
//!   [`Client`] handles over a bounded channel. Nothing needs polling; the
//!   protocol rules (QoS flows, packet identifiers, Receive Maximum,
//!   keep-alive, resend on resume) live in the session, not here.
//! - [`Client`] is a cheap, cloneable handle for any number of tasks.
//! - [`Client::publish`] completes when the QoS flow completes: QoS 0 once
//!   written, QoS 1 at PUBACK, QoS 2 at PUBCOMP, with the reason code and
//!   properties ([`PublishOutcome`]). Failures are typed ([`Error`]).
//! - [`Client::subscribe`] completes at the SUBACK with a [`Subscription`]
//!   stream ([`Subscription::suback`] has the broker's answer);
//!   messages are routed by Subscription Identifier (5.0) or by filter
//!   matching (3.1.1); [`Subscription::unsubscribe`] ends it and waits for
//!   the UNSUBACK, and dropping the stream unsubscribes without waiting
//!   ([`Subscription::detach`] ends it and leaves the subscription with
//!   the broker, for a persistent session).
//!   [`Client::messages`] is a catch-all stream.
//! - **Backpressure**: streams are bounded, in messages
//!   ([`ConnectOptions::stream_capacity`]) and in bytes
//!   ([`ConnectOptions::stream_capacity_bytes`]). When one is full, the client stops
//!   feeding PUBLISH packets to the session, so they are not acknowledged and
//!   the broker's send quota (our Receive Maximum) runs out; once more than
//!   Receive Maximum packets wait in the client and they hold over 4 MiB, it
//!   stops reading the socket. (A 5.0 broker that keeps to our Receive
//!   Maximum never sends more; a 3.1.1 broker, which knows none, may, and
//!   the acknowledgements and PINGRESPs behind those messages are still
//!   read.) Memory stays bounded whatever the consumer's speed. A slow stream holds
//!   up the others (messages keep their order). QoS 0 messages have no
//!   quota: past one stream's capacity of them waiting, the client stops
//!   reading the socket, and if that outlasts the keep-alive (or, while a
//!   SUBSCRIBE or QoS 1/2 publish of the client waits for its answer, the
//!   request timeout) the connection is dropped and re-established. A client that publishes to a topic it
//!   subscribes to without consuming may see the broker hold back its own
//!   acknowledgements. Messages a broker sends for a new subscription before
//!   its SUBACK wait in the new stream, which nobody reads yet. QoS 0 ones
//!   that do not fit are dropped for that stream (the other streams still
//!   get their copies). QoS 1/2 ones that do not fit wait unacknowledged as
//!   above, and so do the messages behind them, for every stream (messages
//!   keep their order), while the client goes on reading for the SUBACK:
//!   meanwhile, past one stream's capacity of QoS 0 messages waiting, any
//!   further QoS 0 message is dropped, whatever its topic, also one for a
//!   stream the application reads. Both drops are counted in a warning
//!   logged with the next SUBACK.
//! - **Reconnect** with exponential backoff and jitter ([`Reconnect`]): the
//!   session resumes (Clean Start 0 under 5.0) and what was in flight is
//!   re-sent with DUP; publishes made while disconnected wait in a bounded
//!   queue ([`Error::QueueFull`] beyond it); if the broker lost the session,
//!   the live streams are subscribed again (as many at a time as the
//!   session lets wait; a stream whose filters the broker then refuses ends,
//!   and [`Subscription::error`] tells why; one whose filters it refuses
//!   only in part goes on with the others, and [`Subscription::refused`]
//!   tells which, [`Subscription::refused_changed`] when). Resuming needs a session the
//!   broker keeps: a Session Expiry Interval above 0 under 5.0, CleanSession
//!   0 under 3.1.1. Otherwise in-flight QoS 1/2 publishes fail with
//!   [`Error::PublishDropped`]`(`[`DropReason::SessionDiscarded`]`)` on
//!   reconnect, and the application decides whether to publish them again.
//! - **Unanswered requests**: a SUBSCRIBE, UNSUBSCRIBE or QoS 1/2 flow step
//!   the broker leaves unanswered for [`ConnectOptions::request_timeout`]
//!   (30 s by default) ends the connection as broken (as a PINGREQ left
//!   unanswered does): a `subscribe` fails with [`Error::RequestLost`], a
//!   publish is sent again on the resumed session. A broker that answers
//!   PINGREQ and nothing else cannot hold a connection for ever.
//! - **Stalled writes**: a write to the broker that makes no progress for
//!   [`ConnectOptions::write_timeout`] (30 s by default) ends the connection
//!   as lost, so a broker that stops reading cannot hold the client.
//! - **Messages the client refuses**: a PUBLISH from the broker that the
//!   client cannot take (one that breaks the protocol, such as a Response
//!   Topic with a wildcard that the broker forwarded from another client;
//!   under 3.1.1 one over [`ConnectOptions::maximum_packet_size`]) ends the
//!   connection, as MQTT asks, but is acknowledged first (with 0x80 under
//!   5.0) unless earlier messages wait for a manual acknowledgement: the
//!   message is lost, and the broker does not send it again on every
//!   reconnection, ahead of everything behind it.
//! - **Manual acknowledgements** ([`ConnectOptions::manual_acks`]): PUBACK /
//!   PUBREC wait for [`Client::ack`], in the order of receipt.
//! - **Enhanced authentication** (MQTT 5.0, section 4.12): an
//!   [`Authenticator`] set with [`ConnectOptions::authentication`] answers
//!   the broker's AUTH challenges on every connection, and
//!   [`Client::reauthenticate`] runs the exchange again on a live one.
//! - Transports: TCP, TLS (feature `tls`, on by default: rustls with ring;
//!   system roots, custom CA, client certificates, SNI, TLS 1.3 only if
//!   asked), WebSocket and secure WebSocket (feature `websocket`, subprotocol
//!   `mqtt`), or any stream the application opens itself
//!   ([`Transport::custom`]: a Unix domain socket, an in-memory pipe to an
//!   embedded broker). The socket can be bound to a local address first
//!   ([`ConnectOptions::local_address`]).
//! - tracing: a `mqtt_client` span per client with events for connect,
//!   reconnect, and errors.
//!
//! # Recipes
//!
//! Runnable versions, each with an embedded broker, are in the repository's
//! `examples/` (`cargo run -p fulmar-examples --example NAME`):
//!
//! - **Durable consumer** (`durable_consumer`): a fixed
//!   [`client_id`](ConnectOptions::client_id),
//!   [`clean_start(false)`](ConnectOptions::clean_start),
//!   [`session_expiry_interval`](ConnectOptions::session_expiry_interval)
//!   above 0, [`manual_acks(true)`](ConnectOptions::manual_acks) and
//!   [`Client::ack`] once a message is processed; connect with
//!   [`Client::connect_with_messages`] so that what the session queued
//!   while the process was away is not dropped, and read that stream as
//!   well as the subscription's. Messages taken but not acknowledged come
//!   again after a reconnection. To stop, end the stream with
//!   [`Subscription::detach`] (dropping it would unsubscribe) and
//!   [`Client::disconnect`]: the broker queues what follows for the next
//!   run.
//! - **A service that may start before its broker**:
//!   [`retry_initial_connect(true)`](ConnectOptions::retry_initial_connect),
//!   with a timeout around [`Client::connect`] if it should give up.
//! - **Large messages**: a slow stream holds at most
//!   [`stream_capacity`](ConnectOptions::stream_capacity) messages and
//!   [`stream_capacity_bytes`](ConnectOptions::stream_capacity_bytes);
//!   [`maximum_packet_size`](ConnectOptions::maximum_packet_size) bounds
//!   what one message may be.
//! - **Request/response** (`request_response`, `request_timeout`):
//!   [`PublishRequest::response_topic`] and
//!   [`PublishRequest::correlation_data`] on the request; the responder
//!   publishes to the received Response Topic as it is
//!   (`client.publish(&topic, ...)`), and the requester applies its own
//!   timeout (`tokio::time::timeout`).
//! - **Many publishes** (`publish_many`): keep a bounded window of publish
//!   futures awaited at once (`futures`' `buffer_unordered`); each completes
//!   at its PUBACK, so when the window drains every message was
//!   acknowledged. Raise [`ConnectOptions::max_inflight`] (default 20) for
//!   throughput. While connected, publishes beyond what the session may
//!   queue wait for room (see [`Client::publish`]); while disconnected,
//!   beyond [`max_buffered_publishes`](ConnectOptions::max_buffered_publishes)
//!   they fail with [`Error::QueueFull`].
//!
//! # Example
//!
//! A subscriber and a publisher on a broker at 127.0.0.1:1883 (not run as a
//! doc test: it needs a broker; `examples/` has runnable versions):
//!
//! ```no_run
//! use fulmar_client::{Client, ConnectOptions, QoS};
//! use futures::StreamExt;
//!
//! # async fn demo() -> Result<(), fulmar_client::Error> {
//! let (client, _connack) = Client::connect(ConnectOptions::new("127.0.0.1", 1883)).await?;
//! let mut stream = client.subscribe("sensors/+/temp", QoS::AtLeastOnce).await?;
//! let done = client.publish("sensors/kitchen/temp", "21.5").qos(QoS::ExactlyOnce).await?;
//! assert!(!done.reason_code.is_error());
//! let message = stream.next().await.expect("subscribed");
//! assert_eq!(message.payload, "21.5");
//! client.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The options builder is pure and runs anywhere:
//!
//! ```
//! use std::time::Duration;
//! use fulmar_client::{ConnectOptions, ProtocolVersion, Reconnect};
//!
//! let reconnect = Reconnect::exponential(Duration::from_millis(100), Duration::from_secs(5));
//! assert_eq!(reconnect.delay(0, 0.0), Duration::from_millis(100));
//! assert_eq!(reconnect.delay(10, 0.0), Duration::from_secs(5));
//! let options = ConnectOptions::new("broker.local", 1883)
//!     .protocol_version(ProtocolVersion::V311)
//!     .client_id("dev-1")
//!     .reconnect(reconnect);
//! assert_eq!(options.address(), ("broker.local", 1883));
//! ```

mod auth;
mod channel;
mod client;
mod completion;
mod driver;
mod error;
mod options;
mod router;
#[cfg(feature = "tls")]
mod tls;
mod transport;
#[cfg(feature = "websocket")]
mod ws;

pub use auth::{AuthError, Authenticator};
pub use client::{
    Client, Disconnection, PublishFuture, PublishOutcome, PublishRequest, PublishTopic,
};
pub use error::Error;
pub use options::{ConnectOptions, Connector, Reconnect, Transport};
pub use router::{Message, Messages, Subscription};
#[cfg(feature = "tls")]
pub use tls::TlsOptions;
/// The stream [`TlsOptions::connect`] returns (tokio-rustls's client stream).
#[cfg(feature = "tls")]
pub use tokio_rustls::client::TlsStream;

pub use fulmar_codec::{
    AckProperties, ConnAck, ConnectReasonCode, DisconnectProperties, DisconnectReasonCode,
    MqttString, PayloadFormat, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode,
    RetainHandling, SubAck, SubAckReasonCode, SubscribeProperties, SubscriptionOptions, Will,
    WillProperties,
};
pub use fulmar_session::DropReason;
/// The errors of the protocol state machine, as carried by
/// [`Error::Session`]: match on them without depending on `fulmar-session`.
pub use fulmar_session::{ApiError, Error as SessionError, LimitExceeded, ProtocolViolation};
pub use fulmar_topic::TopicName;
