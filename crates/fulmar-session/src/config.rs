//! Limits and options of a session.

use core::num::{NonZeroU16, NonZeroU32};
use core::time::Duration;

use std::sync::Arc;

use fulmar_codec::QoS;

/// Limits and options of one session. Every queue the session keeps is bounded
/// by a field here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Receive Maximum we announce and enforce (MQTT 5.0): the number of QoS
    /// 1/2 PUBLISH packets from the peer that may be unacknowledged at once. It
    /// also bounds the stored inbound QoS 2 packet identifiers. A peer that
    /// exceeds it is disconnected (0x93). An MQTT 3.1.1 peer is told no such
    /// limit and is not held to it: there, both are bounded by the 65 535
    /// packet identifiers (each held at most once per QoS).
    pub receive_maximum: NonZeroU16,
    /// Upper bound of our own outbound in-flight QoS 1/2 messages, whatever the
    /// peer's Receive Maximum (MQTT 3.1.1 has none). Default 256.
    pub max_inflight: NonZeroU16,
    /// Outbound messages accepted by `publish` that wait to be sent (flow
    /// control, or no connection). `publish` fails with
    /// [`LimitExceeded::PendingQueueFull`](crate::LimitExceeded::PendingQueueFull)
    /// beyond it. A message the next `poll_transmit` sends does not wait and
    /// is accepted whatever the bound (see
    /// [`Session::publish`](crate::Session::publish)), so the queue holds at
    /// most `max(max_pending, 1)` messages; 0 accepts no message that waits.
    pub max_pending: usize,
    /// SUBSCRIBE/UNSUBSCRIBE requests awaiting their acknowledgement: ours
    /// (client; `subscribe` fails beyond it) or the peer's that the
    /// application has not answered yet (server; a client sending more is
    /// disconnected with 0x97 Quota exceeded).
    pub max_requests: usize,
    /// Topic Alias Maximum we announce (MQTT 5.0): aliases the peer may use towards us.
    pub topic_alias_maximum: u16,
    /// Maximum Packet Size we announce (MQTT 5.0). Enforcing it on input is the
    /// decoder's job; the session only tells the peer.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Server: time allowed between the network connection and CONNECT.
    /// Client: time allowed between CONNECT and CONNACK. `None`: no limit.
    pub connect_timeout: Option<Duration>,
    /// Client: time allowed between PINGREQ and PINGRESP.
    pub ping_timeout: Duration,
    /// Client: time allowed between a SUBSCRIBE or UNSUBSCRIBE and its
    /// SUBACK or UNSUBACK, and for the answer (PUBACK, PUBREC, PUBCOMP) to
    /// the oldest QoS 1/2 flow waiting (in send order), counted from when
    /// it became the oldest: it was sent while no other flow waited, or
    /// the flows sent before it all completed, or it got its PUBREC (for
    /// the PUBCOMP), or a new connection resent it. So no flow is taken as
    /// lost before it has itself waited that long since it was sent (or
    /// got its PUBREC); answers to the other flows do not keep it waiting
    /// for ever (a server that answers every flow but one is caught, once
    /// the flows sent before that one are answered); a message held back
    /// by the server's Receive Maximum waits for nothing until it is sent.
    /// One clock, for the oldest flow only: it costs a comparison per
    /// answer. A server that leaves them unanswered longer (while it may
    /// well answer PINGREQ) is taken as broken, as one that leaves a
    /// PINGREQ unanswered: the connection closes with
    /// [`Error::RequestTimeout`](crate::Error::RequestTimeout) (DISCONNECT
    /// 0x80 under 5.0), every request waiting is reported lost
    /// ([`Event::RequestLost`](crate::Event::RequestLost)), and the QoS 1/2
    /// flows are resent when the session is resumed (MQTT-4.4.0-1).
    /// Otherwise each would wait, holding its packet identifier (and a
    /// PUBLISH its slot of the server's Receive Maximum), for as long as
    /// the connection lasts. `None`: no limit. Default 30 s.
    pub request_timeout: Option<Duration>,
    /// Server: Maximum QoS announced in CONNACK and enforced on inbound PUBLISH.
    pub maximum_qos: QoS,
    /// Server: Retain Available announced in CONNACK and enforced on inbound PUBLISH.
    pub retain_available: bool,
    /// Server: Wildcard Subscription Available, announced in CONNACK (MQTT
    /// 5.0) when off. Off: a 5.0 SUBSCRIBE with a wildcard filter is a
    /// Protocol Error (DISCONNECT 0xA2); a 3.1.1 wildcard filter is refused
    /// with SUBACK 0x80 (Failure) while the other filters go to the
    /// application. Default on.
    pub wildcard_subscription_available: bool,
    /// Server: Shared Subscription Available, announced in CONNACK (MQTT
    /// 5.0) when off. Off: a 5.0 SUBSCRIBE with a `$share/` filter is a
    /// Protocol Error (DISCONNECT 0x9E). Under 3.1.1, which leaves `$`
    /// topics to the server, a `$share/` filter is shared too (as in
    /// mosquitto); off, it gets SUBACK 0x80 (Failure). Default on.
    pub shared_subscription_available: bool,
    /// Server: Subscription Identifiers Available, announced in CONNACK
    /// (MQTT 5.0) when off. Off: a SUBSCRIBE with a Subscription Identifier
    /// is a Protocol Error (DISCONNECT 0xA1). Default on.
    pub subscription_identifiers_available: bool,
    /// Server: a Server Keep Alive that overrides an MQTT 5.0 client's keep
    /// alive, announced in CONNACK (0 turns keep alive off). A 3.1.1 client
    /// cannot be told, so its own keep alive holds.
    pub server_keep_alive: Option<u16>,
    /// Server: the longest keep alive an MQTT 5.0 client may have (as
    /// mosquitto's `max_keepalive`): one that asks for more, or for none
    /// (0), gets this value as its Server Keep Alive in CONNACK
    /// (MQTT-3.2.2-21); one that asks for less keeps its own. A 3.1.1
    /// client cannot be told, so its own keep alive holds
    /// (MQTT-3.1.2-24). [`server_keep_alive`](Self::server_keep_alive),
    /// when set, takes precedence. `None` (the default): no maximum.
    pub max_keep_alive: Option<NonZeroU16>,
    /// Use outbound topic aliases when the peer allows them (MQTT 5.0).
    pub outbound_topic_aliases: bool,
    /// Client: the largest packet to send, whatever the server allows (the
    /// smaller of the two counts). MQTT 3.1.1 has no way for a server to
    /// announce its limit, and a broker closes the connection on a packet
    /// over it, so that a message sent again at each reconnection would
    /// never get through: with this set, `publish` refuses it with
    /// [`LimitExceeded::PacketTooLarge`](crate::LimitExceeded::PacketTooLarge)
    /// instead. `None` (default): the server's Maximum Packet Size alone.
    pub peer_maximum_packet_size: Option<NonZeroU32>,
    /// Server: a prefix taken off the topic of every outbound PUBLISH that
    /// starts with it and is longer (a broker's mount point, as mosquitto's
    /// `mount_point`); other topics go out as they are. The session keeps
    /// (and resends after a resume) the full topic; only what is sent is
    /// shortened, and the client's Maximum Packet Size is checked against
    /// what is sent. `None` (default): topics go out as they are.
    pub strip_topic_prefix: Option<Arc<str>>,
    /// Acknowledge inbound QoS 1/2 messages only when the application calls
    /// [`Session::ack`](crate::Session::ack) (backpressure): the PUBACK or
    /// PUBREC waits until then. Off: acknowledged on receipt.
    pub manual_acks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            receive_maximum: NonZeroU16::new(64).unwrap_or(NonZeroU16::MIN),
            max_inflight: NonZeroU16::new(256).unwrap_or(NonZeroU16::MAX),
            max_pending: 1024,
            max_requests: 64,
            topic_alias_maximum: 16,
            maximum_packet_size: None,
            connect_timeout: Some(Duration::from_secs(10)),
            ping_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(30)),
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifiers_available: true,
            server_keep_alive: None,
            max_keep_alive: None,
            outbound_topic_aliases: true,
            peer_maximum_packet_size: None,
            manual_acks: false,
            strip_topic_prefix: None,
        }
    }
}

/// Packets the application may feed before it answers an `Event::Connect`;
/// they are processed after `accept`. A client sending more is disconnected.
pub(crate) const MAX_EARLY_PACKETS: usize = 64;

/// The bytes those packets may hold in all, beyond the first one (which may
/// be as large as the Maximum Packet Size allows): during an enhanced
/// authentication exchange, a client that has not authenticated yet could
/// otherwise park 63 maximum-size packets.
pub(crate) const MAX_EARLY_BYTES: usize = 64 * 1024;
