//! An embeddable tokio MQTT 3.1.1 and 5.0 broker on the fulmar sans-IO crates.
//!
//! # Contract
//!
//! - **Thin over the sans-IO crates.** Each network connection is one tokio
//!   task that reads frames, feeds a server [`fulmar_session::Session`],
//!   writes what it yields and sleeps until its next deadline. Protocol rules
//!   (QoS flows, keep-alive, Receive Maximum, topic aliases, Maximum Packet
//!   Size) live in the session; the broker routes.
//! - **Routing** uses a [`fulmar_topic::SubscriptionTrie`] (one delivery per
//!   client even when several of its filters match, with every Subscription
//!   Identifier; shared subscriptions deliver to one member per group,
//!   preferring a connected member with room in its queues, and of those
//!   the least busy (the fewest messages in flight or waiting, so that a
//!   slow worker does not pile up jobs while another waits); the QoS 1
//!   messages a member had not acknowledged when its session ended go to
//!   another member, MQTT 5.0 section 4.8.2) and a
//!   [`fulmar_topic::RetainedIndex`], behind one lock that is never held
//!   across an `.await`. A payload is one `Bytes` shared by every receiver.
//! - **Sessions** live in memory, and with a [`Store`] also on disk: persistent sessions (3.1.1 Clean Session 0,
//!   5.0 Session Expiry Interval) keep their subscriptions and queue QoS 1/2
//!   messages while offline, up to [`Limits::max_queued_messages`] (the rest
//!   is dropped and counted in [`Stats`]). Wills are published on abnormal
//!   close, after the 5.0 Will Delay Interval unless the client reconnects.
//! - **Bounded**: connections, packet size, subscriptions per client and every
//!   queue have a limit ([`Limits`]).
//! - **Hooks**: an async [`Authenticator`] and [`Authorizer`]; the defaults
//!   allow everything. The authorizer is asked again about a session's
//!   subscriptions when it is resumed (the client may be another user) and
//!   on [`BrokerHandle::reauthorize`] (the rules changed); a TLS listener's
//!   certificate is replaced at run time with `BrokerHandle::reload_tls`.
//! - In-process clients: [`BrokerHandle::publish`] and
//!   [`BrokerHandle::subscribe`] need no socket;
//!   [`BrokerHandle::publish_paced`] publishes with a client's flow control
//!   (it waits for slow subscribers and for the store).
//! - **Listeners**, each on its own address: TCP, TLS (feature `tls`,
//!   rustls with ring, optional client certificates passed to the
//!   [`Authenticator`]), WebSocket and secure WebSocket on a path,
//!   subprotocol `mqtt` (feature `websocket`). TLS and WebSocket handshakes
//!   run in the connection's task, bounded by [`Limits::connect_timeout`].
//!   A [`Listener`] may have a connection limit, a Maximum QoS, a Topic
//!   Alias Maximum and kernel socket buffer sizes of its own.
//!   Any other byte stream the application opens itself (a Unix domain
//!   socket, an in-memory pipe, a QUIC stream) is served with
//!   [`BrokerHandle::serve_connection`].
//! - **Enhanced authentication** (MQTT 5.0 AUTH challenge/response, and
//!   re-authentication after CONNACK) through [`Authenticator::auth_method`]
//!   and [`AuthExchange`].
//! - **Observable**: [`BrokerHandle::stats`], [`BrokerHandle::events`],
//!   [`BrokerHandle::sessions`] (who is connected, which sessions are kept),
//!   and `$SYS/broker/...` topics ([`Limits::sys_interval`]).
//! - **Overload**: a slow subscriber never stalls the others; its surplus is
//!   dropped and counted or its publishers are held back ([`OverloadPolicy`]);
//!   its queues are bounded in bytes too ([`Limits::max_queued_bytes`]), and
//!   publishers of QoS 1/2 messages to a full one are paced rather than
//!   their messages dropped (for its count too, when no other subscriber of
//!   the message keeps up; at most [`Limits::pacing_timeout`] at a time); a
//!   peer that stops reading is disconnected after [`Limits::write_timeout`].
//! - **Idle connections hibernate** (Unix, plain TCP): after
//!   [`Limits::hibernate_after`] without traffic a connection gives up its
//!   task and its reactor registration, and one thread watches its socket,
//!   inbox and keep-alive deadline until it is needed again.
//!
//! - **Persistence** ([`BrokerBuilder::store`]): persistent sessions (subscriptions,
//!   queued and in-flight QoS 1/2 messages, inbound QoS 2 identifiers, the
//!   will of the connected client or one waiting out its Will Delay Interval) and
//!   retained messages are kept in a [`Store`] ([`DiskStore`] on disk, feature
//!   `disk`; [`MemoryStore`]) and recovered at start. With [`Durability::Immediate`]
//!   (the default) a PUBACK/PUBREC, SUBACK or CONNACK is sent only once what it
//!   promises is committed (a CONNACK: the session's record, with the will);
//!   commits are shared by all connections (group commit). After a crash,
//!   the will of a client that was connected is published as if its
//!   connection had ended at the restart (after its Will Delay Interval, no
//!   later than its session's end), once the authorizer allows it again
//!   (with a [`Bridge`] that publishes the wills of a broker that went away,
//!   [`Bridge::keeps_wills`], the store keeps none). A graceful
//!   [`BrokerHandle::shutdown`] keeps the wills with a Will Delay Interval of
//!   these sessions the same way, their delay counted from the
//!   disconnection, and publishes the others.
//!   Not kept: wills of clients connected at a crash whose sessions are not
//!   persistent (3.1.1 Clean Session 1, 5.0 Session Expiry Interval 0: their
//!   sessions have no record, and keeping one for the will would cost two
//!   writes per connection), and QoS 0 messages.
//! - **Beyond one broker**: a [`Bridge`] hears of filters and messages and
//!   injects messages from elsewhere (see the `fulmar-cluster` crate).
//!
//! # Example
//!
//! ```
//! use fulmar_broker::Broker;
//! use fulmar_codec::QoS;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fulmar_broker::BrokerError> {
//! let broker = Broker::builder().tcp_listener("127.0.0.1:0").start().await?;
//! assert_ne!(broker.local_addrs()[0].port(), 0);
//!
//! // An in-process subscriber and publisher: no socket needed.
//! broker.publish("greetings/retained", "hello", QoS::AtLeastOnce, true)?;
//! let mut sub = broker.subscribe("greetings/#")?;
//! broker.publish("greetings/live", "world", QoS::AtMostOnce, false)?;
//!
//! let first = sub.recv().await.unwrap();
//! assert_eq!((first.topic.as_str(), first.retain), ("greetings/retained", true));
//! let second = sub.recv().await.unwrap();
//! assert_eq!(second.payload, "world");
//!
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod auth;
mod bridge;
mod broker;
mod config;
mod connection;
mod error;
mod frames;
#[cfg(unix)]
mod hibernate;
mod listener;
mod message;
mod mount;
mod observe;
mod pacing;
mod state;
mod store;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "websocket")]
mod ws;

pub use auth::{
    AllowAll, AuthDecision, AuthExchange, AuthStep, Authenticator, Authorizer, ClientInfo,
    ConnectInfo,
};
pub use bridge::{Bridge, SessionClaim, SessionExport, SessionUnavailable};
pub use broker::{Broker, BrokerBuilder, BrokerHandle, ServedConnection, SessionInfo, Stats};
pub use config::{Limits, OverloadPolicy, ServerReference};
pub use error::BrokerError;
pub use fulmar_session::Initiator;
pub use listener::Listener;
pub use message::{Message, Subscription};
pub use observe::{BrokerEvent, Events};
pub use pacing::Pacing;
#[cfg(feature = "disk")]
pub use store::DiskStore;
pub use store::{
    Durability, MemoryStore, Snapshot, Store, StoreError, StoreOp, StoredMessage, StoredSession,
    StoredSubscription, StoredWill, WillDue,
};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
#[cfg(feature = "websocket")]
#[doc(hidden)]
pub use ws::WsFrameDecoder;

/// The repository's README, whose Rust code blocks are compiled (and run
/// unless marked `no_run`) as doc tests of this crate: its dependencies and
/// dev-dependencies cover every crate the README's examples use.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
