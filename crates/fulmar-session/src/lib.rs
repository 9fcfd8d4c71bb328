//! Sans-IO MQTT 3.1.1 and 5.0 session: the protocol state of one connection,
//! for a client or a server.
//!
//! # Contract
//!
//! - No I/O, no clock, no global state, deterministic: packets
//!   ([`fulmar_codec::Packet`]) and `now: Instant` go in as method calls;
//!   packets to write, [`Event`]s and the next deadline come out of
//!   [`Session::poll_transmit`], [`Session::poll_event`] and
//!   [`Session::poll_timeout`]. The drain order is in the [`Session`] docs.
//! - The session owns packet identifiers, the QoS 1 and QoS 2 flows in both
//!   directions (QoS 2 delivered exactly once), Receive Maximum both ways with
//!   a bounded queue beyond it, retransmission with DUP on resume in the
//!   original order, keep-alive, topic aliases, the peer's Maximum Packet
//!   Size, and message expiry while queued.
//! - Everything that must outlive a network connection is a plain
//!   [`SessionState`] value (`serde` behind the feature of that name).
//! - A peer's protocol violation never panics: it closes the connection with
//!   the right reason code (a DISCONNECT under 5.0, a plain close under 3.1.1)
//!   and the error is sticky. Every queue of messages and requests is
//!   bounded by [`Config`]; the event queue is as long as what the inputs
//!   since the last [`Session::poll_event`] produced (drain it after each).
//! - Not here, by design: the Will Message, Session Expiry, retained messages,
//!   routing and authorization belong to the broker (or the client
//!   application). The session reports what they need ([`Event::Connect`]
//!   with the whole CONNECT, [`Event::Disconnected`] with the reason code and
//!   properties, [`Event::Subscribe`] to answer) and never decides for them.
//!
//! # Example
//!
//! A client and a server session wired back to back, one QoS 1 message:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use fulmar_codec::{ConnAckProperties, Connect, MqttString, ProtocolVersion, Publish, QoS};
//! use fulmar_session::{Config, Event, Session};
//!
//! let now = Instant::now();
//! let mut client = Session::client(Config::default());
//! let mut server = Session::server(Config::default(), now);
//!
//! client.connect(Connect::new(ProtocolVersion::V5, MqttString::from("c1")), now).unwrap();
//! let connect = client.poll_transmit().unwrap();
//! server.handle_packet(connect, now).unwrap();
//! assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
//! server.accept(ConnAckProperties::default(), None, now).unwrap();
//! client.handle_packet(server.poll_transmit().unwrap(), now).unwrap();
//! assert!(matches!(client.poll_event(), Some(Event::Connected(_))));
//!
//! let mut message = Publish::new(MqttString::from("sensors/1"), Bytes::from_static(b"21.5"));
//! message.qos = QoS::AtLeastOnce;
//! let id = client.publish(message, now).unwrap().unwrap();
//! server.handle_packet(client.poll_transmit().unwrap(), now).unwrap();
//! let Some(Event::Message(received)) = server.poll_event() else { panic!() };
//! assert_eq!(received.topic, "sensors/1");
//! client.handle_packet(server.poll_transmit().unwrap(), now).unwrap(); // PUBACK
//! assert!(matches!(
//!     client.poll_event(),
//!     Some(Event::PublishComplete { packet_id, .. }) if packet_id == id
//! ));
//! assert_eq!(client.inflight_len(), 0);
//! ```

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod alias;
mod client;
mod config;
mod deadlines;
mod dormant;
mod error;
mod event;
mod inbound;
mod lazy;
mod outbound;
mod packet_id;
mod server;
mod session;
mod state;
#[cfg(test)]
mod test_support;
mod timer;
mod transmit;

pub use config::Config;
pub use dormant::DormantSession;
pub use error::{ApiError, Error, Initiator, LimitExceeded, ProtocolViolation};
pub use event::{DropReason, Event};
pub use outbound::message_expiry_left;
pub use session::{Role, Session};
pub use state::{Outgoing, SessionState};

#[cfg(test)]
mod tests {
    #[test]
    fn session_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Session>();
        check::<crate::DormantSession>();
        check::<crate::SessionState>();
        check::<crate::Event>();
        check::<crate::Error>();
    }
}
