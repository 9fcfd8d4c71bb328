//! What the session reports to the application, drained with `poll_event`.

use fulmar_codec::{
    AckProperties, Auth, ConnAck, Connect, DisconnectProperties, MqttString, PacketId, Publish,
    QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};

use crate::error::Initiator;

/// Why an outbound message was dropped without completing its QoS flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Its Message Expiry Interval passed while it was queued (MQTT 5.0).
    Expired,
    /// It is larger than the peer's Maximum Packet Size (also a message in
    /// flight, to be resent on a resumed session, when the peer's new Maximum
    /// Packet Size is smaller). A server behaves as if it had been delivered
    /// ([MQTT-3.1.2-25]: nothing is sent, the flow is over) and reports it
    /// here too, so that what was kept for it (a store record) can go.
    PacketTooLarge,
    /// The peer's Maximum QoS is below the message's QoS (client role).
    QoSNotSupported,
    /// The peer does not support retained messages (client role).
    RetainNotSupported,
    /// The session state was discarded: Clean Start, or the server had no
    /// session (Session Present 0).
    SessionDiscarded,
    /// It was queued before a stored session state was loaded
    /// ([`Session::accept`](crate::Session::accept) with a state), and the
    /// state's own queued messages left no room for it within
    /// [`Config::max_pending`](crate::Config::max_pending).
    QueueFull,
}

/// An event for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Server: a client sent CONNECT. Answer with `accept` or `reject`.
    Connect(Box<Connect>),
    /// Client: the server accepted the connection. With Session Present 0
    /// after a Clean Start 0 CONNECT, the server kept no session:
    /// [`Event::SubscriptionsLost`] follows.
    Connected(ConnAck),
    /// Client, right after [`Event::Connected`]: the server kept no session
    /// (Session Present 0 although the session had subscriptions), so these
    /// subscriptions, with the options they were granted, are gone; subscribe
    /// again to go on receiving their messages.
    /// [`Session::subscriptions`](crate::Session::subscriptions) no longer
    /// lists them.
    SubscriptionsLost(Vec<(MqttString, SubscriptionOptions)>),
    /// An application message from the peer. Client: deliver it. Server: route
    /// it. Its topic alias is already resolved (the topic is always set).
    /// QoS 2 messages are reported once, when the PUBLISH first arrives.
    Message(Publish),
    /// An outbound QoS 1/2 message completed its flow (PUBACK, PUBCOMP, or
    /// PUBREC with an error code).
    PublishComplete {
        /// The identifier `publish` returned.
        packet_id: PacketId,
        /// QoS of the message.
        qos: QoS,
        /// The peer's reason code (Success under MQTT 3.1.1).
        reason_code: ReasonCode,
        /// Reason string and user properties of the acknowledgement.
        properties: AckProperties,
    },
    /// An outbound message accepted by `publish` was dropped unsent (or, for
    /// `SessionDiscarded`, unacknowledged).
    PublishDropped {
        /// Its identifier, for QoS 1/2. A QoS 0 message has none: right
        /// after this event, [`Session::dropped_number`](crate::Session::dropped_number)
        /// tells which one it was.
        packet_id: Option<PacketId>,
        /// Why.
        reason: DropReason,
    },
    /// Server: a SUBSCRIBE to authorize; answer with `suback`. Filters the
    /// session refused itself (3.1.1 wildcard filters when
    /// [`Config::wildcard_subscription_available`](crate::Config::wildcard_subscription_available)
    /// is off) are not in it; a SUBSCRIBE with no filter left is answered
    /// without this event.
    Subscribe(Subscribe),
    /// Server: an UNSUBSCRIBE; answer with `unsuback`.
    Unsubscribe(Unsubscribe),
    /// Client: the server acknowledged a SUBSCRIBE, one reason code per filter.
    SubAck(SubAck),
    /// Client: the server acknowledged an UNSUBSCRIBE.
    UnsubAck(UnsubAck),
    /// Client: a SUBSCRIBE/UNSUBSCRIBE will never be acknowledged, because its
    /// connection ended.
    RequestLost {
        /// The identifier `subscribe`/`unsubscribe` returned.
        packet_id: PacketId,
    },
    /// An AUTH packet (enhanced authentication, MQTT 5.0), with the
    /// CONNECT's Authentication Method and a reason code its sender may use
    /// at this point (the session closes the connection on any other). A
    /// server gets the client's answers during the exchange before CONNACK
    /// as they come, and goes on with [`Session::auth`](crate::Session::auth),
    /// [`accept`](crate::Session::accept) or [`reject`](crate::Session::reject);
    /// after CONNACK, a re-authentication (0x19, then 0x18).
    Auth(Auth),
    /// The connection ended. Reported once per connection.
    Disconnected {
        /// Who ended it.
        initiator: Initiator,
        /// The DISCONNECT (or refusing CONNACK) reason code, sent or
        /// received; 0x80 Unspecified error when the network connection
        /// ended without one ([`Initiator::Network`]).
        reason_code: ReasonCode,
        /// DISCONNECT properties received from the peer.
        properties: DisconnectProperties,
    },
}
