//! Limits of a broker.

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use fulmar_codec::QoS;
use fulmar_session::Config;

/// The limits a broker enforces. Every queue it keeps is bounded by one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open network connections at once; a CONNECT beyond it is refused with
    /// 0x88 Server unavailable (3.1.1 return code 3). Up to 64 connections
    /// over it are accepted for that answer; more are closed at once.
    pub max_connections: usize,
    /// Largest packet accepted from a client, in bytes (fixed header
    /// included), announced as Maximum Packet Size (MQTT 5.0). A bigger packet
    /// closes the connection (5.0: DISCONNECT 0x95).
    pub max_packet_size: NonZeroU32,
    /// Bytes that all connections together may set aside, on the word of a
    /// fixed header, for the rest of packets over 64 KiB
    /// ([`fulmar_codec::MAX_RESERVE_AHEAD`]) before those bytes arrive.
    /// Within it, such a packet is read into a buffer of its final size
    /// (its bytes are copied once, by the kernel); beyond it, or for a packet
    /// over `max_packet_size`, its buffer grows as the bytes arrive (at most
    /// doubling, so copied about once more), and a peer that sends a header
    /// and stops makes the broker reserve no more than it sent. A packet
    /// holds its share until it is complete or its connection closes (also
    /// while its publisher is paced, or silent): at most this much, for all
    /// connections together. The amount in use is
    /// [`Stats::read_ahead_bytes`](crate::Stats::read_ahead_bytes). Over
    /// WebSocket the same holds for the MQTT bytes inside the frames: a
    /// frame header reserves nothing, whatever length it announces.
    pub max_read_ahead_bytes: usize,
    /// Subscriptions one client may hold; more are refused with SUBACK 0x97
    /// Quota exceeded (3.1.1: 0x80).
    pub max_subscriptions_per_client: usize,
    /// Memory the subscriptions of one client may take, counted as the
    /// filter's bytes (group included), 256 bytes per subscription and 48
    /// per topic level: a filter that does not fit is refused with SUBACK
    /// 0x97 Quota exceeded (3.1.1: 0x80). The default, 1 MiB, holds 1 024
    /// filters of 4 levels and 200 bytes; it keeps deep filters from
    /// making the subscription tree (and the routing of each message
    /// through it) large: 128-level filters take about 6.5 KB each, so
    /// about 160 fit.
    pub max_subscription_bytes_per_client: usize,
    /// Messages queued for one session: while it is offline (QoS 1/2 only),
    /// and not yet sent while it is connected (a connection queue and a
    /// session queue, each of this size). Beyond it messages are dropped and
    /// counted in [`Stats::dropped_messages`](crate::Stats::dropped_messages),
    /// or their publishers held back ([`OverloadPolicy::Backpressure`]).
    /// Once the connection queue holds more than a quarter of this (it fills
    /// once the session queue is full, or while the connection's task is
    /// busy), the publisher of a further QoS 1/2 message to it is paced as
    /// described under [`max_queued_bytes`](Self::max_queued_bytes), if
    /// every connection that message went to is over that quarter (a slow
    /// subscriber among others that keep up loses messages instead of
    /// slowing the others down; see also [`OverloadPolicy`]). Under
    /// [`OverloadPolicy::DropAndCount`] this is checked after each message,
    /// within a burst read at once too: many publishers to one slow
    /// subscriber take its queue about one message each past the quarter,
    /// not a burst each up to the bound (where the surplus is dropped).
    pub max_queued_messages: usize,
    /// Bytes queued for one session (each message counted as
    /// [`Publish::memory_size`](fulmar_codec::Publish::memory_size): topic,
    /// payload and properties), in each of its queues
    /// (deliveries not yet taken by its connection's task; messages its
    /// session has not sent yet; QoS 1/2 messages that arrived while it was
    /// offline). While the session queue holds this much, the task takes
    /// no more deliveries. A message that would take the connection queue
    /// or the offline queue beyond is dropped and counted, as for a full
    /// queue (or, QoS 1/2 under [`OverloadPolicy::Backpressure`], held with
    /// its publisher), so that a subscriber that stops reading holds at most
    /// this much whatever the size of the messages. Before that, once a
    /// QoS 1/2 message takes the connection queue over a quarter of this
    /// bound (but at most 256 KiB, whatever the bound: what waits in the queue
    /// adds to the latency of what follows, and the socket's buffers keep
    /// the connection busy anyway), its publisher's
    /// connection reads nothing more until the queue is back under that
    /// level; it is woken once the queue is down to half of it, or empty
    /// (pacing: TCP flow control slows the publisher down to what the
    /// subscriber takes, with little queued in between), for at most
    /// [`pacing_timeout`](Self::pacing_timeout) and half the publisher's
    /// keep alive. A queue that has not drained by then
    /// belongs to a subscriber that stopped reading: no publisher is paced on
    /// it again until it takes a message (meanwhile messages beyond its
    /// bounds are dropped and counted). A QoS 0 message
    /// paces its publisher the same way, but only when every connection it
    /// went to is over the quarter: a slow subscriber among others that keep
    /// up loses messages instead of slowing the others down. One message is
    /// always let through into an empty queue, whatever its size.
    pub max_queued_bytes: usize,
    /// Time a client has to send CONNECT after opening the connection; also
    /// the time the [`Authenticator`](crate::Authenticator) has to decide on
    /// it, and an enhanced authentication exchange to finish (CONNACK 0x88
    /// Server unavailable past it).
    pub connect_timeout: Duration,
    /// Receive Maximum announced to MQTT 5.0 clients and enforced for them
    /// (more QoS 1/2 messages unacknowledged at once: DISCONNECT 0x93). A
    /// 3.1.1 client is told no such limit and is not held to it; its
    /// unacknowledged QoS 2 messages are bounded by the packet identifiers
    /// (only the identifiers are kept, not the messages).
    pub receive_maximum: NonZeroU16,
    /// Topic Alias Maximum announced to MQTT 5.0 clients (0: none).
    pub topic_alias_maximum: u16,
    /// Maximum QoS granted to subscriptions and accepted on PUBLISH.
    pub maximum_qos: QoS,
    /// Whether clients may subscribe to filters with wildcards (`+`, `#`).
    /// Off: announced to MQTT 5.0 clients (CONNACK Wildcard Subscription
    /// Available 0), for which a wildcard filter is then a Protocol Error
    /// (DISCONNECT 0xA2); a 3.1.1 client gets SUBACK 0x80 for that filter.
    pub wildcard_subscription_available: bool,
    /// Whether clients may use shared subscriptions
    /// (`$share/{group}/{filter}`; 3.1.1 clients too, as with mosquitto).
    /// Off: announced in CONNACK (Shared Subscription Available 0); a
    /// shared filter is then a Protocol Error (DISCONNECT 0x9E); a 3.1.1
    /// client gets SUBACK 0x80 for that filter.
    pub shared_subscription_available: bool,
    /// Whether MQTT 5.0 clients may give their subscriptions a Subscription
    /// Identifier. Off: announced in CONNACK (Subscription Identifiers
    /// Available 0); a SUBSCRIBE with one is then a Protocol Error
    /// (DISCONNECT 0xA1).
    pub subscription_identifiers_available: bool,
    /// Longest Session Expiry Interval granted, in seconds (`u32::MAX`: never expires).
    pub max_session_expiry: u32,
    /// Sessions held at once, connected or not: without it, clients that
    /// connect once each under a new identifier with a Session Expiry
    /// Interval would leave sessions without bound. A CONNECT that would
    /// start a new session beyond it is refused with CONNACK 0x97 Quota
    /// exceeded (3.1.1 and 3.1: return code 3, Server unavailable); one
    /// that resumes a session, or replaces it, is not. Sessions loaded from
    /// the store or brought from another node of a cluster count without
    /// being refused. Default 100 000.
    pub max_sessions: usize,
    /// What happens to a QoS 1/2 message for a connected subscriber whose
    /// queues are full.
    pub overload_policy: OverloadPolicy,
    /// Under [`OverloadPolicy::Backpressure`], how long a publisher may wait
    /// for room before it is disconnected (MQTT 5.0: DISCONNECT 0x89 Server
    /// busy) with its message unacknowledged, so that it sends it again later.
    /// The subscribers with room got the message already: a QoS 1 resend
    /// reaches them again (QoS 1 allows it); a QoS 2 resend is acknowledged
    /// without being routed again, so that they get it exactly once, and
    /// the copies for the full queues are dropped and counted in
    /// [`Stats::dropped_messages`](crate::Stats::dropped_messages).
    pub backpressure_timeout: Duration,
    /// How long a paced publisher waits at most (see
    /// [`max_queued_bytes`](Self::max_queued_bytes)): its connection reads
    /// nothing meanwhile. A queue that has not drained by then belongs to a
    /// subscriber that stopped reading, and is not waited on again until it
    /// takes a message.
    pub pacing_timeout: Duration,
    /// Interval at which the `$SYS/broker/...` topics are published
    /// (retained, QoS 0, named as mosquitto names them: version, uptime,
    /// clients connected, disconnected, total, maximum (the most at once)
    /// and expired, open connections, packets, PUBLISH messages and bytes
    /// received and sent, dropped messages, subscriptions and shared
    /// subscriptions, retained messages, and the load averages
    /// `load/{messages,publish}/{received,sent}`, `load/publish/dropped`,
    /// `load/bytes/{received,sent}`, `load/connections` (CONNECT packets)
    /// and `load/sockets` (network connections), each over `1min`, `5min`
    /// and `15min`: an exponentially weighted moving average of the rate
    /// per minute, with two decimals): all of them at the first interval,
    /// then the ones whose value changed, the uptime always. `None` or
    /// zero: never (the default).
    pub sys_interval: Option<Duration>,
    /// Server Keep Alive (MQTT 5.0): the keep-alive the broker imposes on
    /// every 5.0 client instead of the one it asked for, announced in
    /// CONNACK (0 turns keep alive off). A 3.1.1 client cannot be told, so
    /// its own keep alive holds. `None`: the client's own.
    pub server_keep_alive: Option<u16>,
    /// The longest keep alive an MQTT 5.0 client may have (mosquitto's
    /// `max_keepalive`): one asking for more, or for none (0), gets this
    /// value as its Server Keep Alive in CONNACK and is held to it. A 3.1.1
    /// client cannot be told, so its own keep alive holds.
    /// [`server_keep_alive`](Self::server_keep_alive) takes precedence.
    /// `None` (the default): no maximum.
    pub max_keep_alive: Option<NonZeroU16>,
    /// QoS 1/2 messages sent to one client and not yet acknowledged, at
    /// most (mosquitto's `max_inflight_messages`): the client's Receive
    /// Maximum (MQTT 5.0) bounds them too; an MQTT 3.1.1 client has no such
    /// limit of its own. The rest wait in the session's queue. Default 256.
    pub max_outbound_inflight: NonZeroU16,
    /// Retained messages kept at once. A retained PUBLISH for a new topic
    /// beyond it is not routed: MQTT 5.0 PUBACK/PUBREC 0x97 Quota exceeded;
    /// QoS 0 and 3.1.1 messages are dropped and counted. The broker's own
    /// `$SYS` topics count neither here nor in
    /// [`max_retained_bytes`](Self::max_retained_bytes).
    pub max_retained_messages: usize,
    /// Bytes of all retained messages together (each counted as
    /// [`Publish::memory_size`](fulmar_codec::Publish::memory_size), plus
    /// 512 bytes for its entry in the retained index and 64 per level of its
    /// topic, what the index's tree takes at most), default 1 GiB. A
    /// retained PUBLISH that would take them beyond (a new topic, or a
    /// larger message for a stored one) is refused as for
    /// [`max_retained_messages`](Self::max_retained_messages); one message is
    /// always let into an empty store. Without it, the count alone allowed
    /// `max_retained_messages` times the largest packet.
    pub max_retained_bytes: usize,
    /// Bytes of the wills that may outlive their connection, all clients
    /// together: MQTT 5.0 wills with a Will Delay Interval, of clients
    /// whose session outlives the connection (a Session Expiry Interval),
    /// counted from the CONNECT until the will is published or dropped
    /// (while its client is connected, and while its session waits out the
    /// delay), each as [`Publish::memory_size`](fulmar_codec::Publish::memory_size)
    /// plus 256 bytes. A CONNECT whose will would take them beyond is
    /// refused with CONNACK 0x97 Quota exceeded. Other wills go when their
    /// connection ends, and are bounded by the connections. Default 256 MiB:
    /// without it, a client connecting under new identifiers, each time
    /// with a 960 KB will (mostly user properties) and the longest delay and
    /// expiry, then dropping the connection, left about 1 MB per session, up
    /// to [`max_sessions`](Self::max_sessions) of them (500 sessions: 979 MB
    /// of resident memory with the disk store). Wills loaded from the store
    /// count without being refused; 0 refuses every such will.
    pub max_delayed_will_bytes: usize,
    /// Bytes of the messages queued for sessions whose client is away, all
    /// sessions together (each message counted as
    /// [`Publish::memory_size`](fulmar_codec::Publish::memory_size) plus 256
    /// bytes for its entry in the queue). A message that would take them
    /// beyond is dropped for that session and counted in
    /// [`Stats::dropped_messages`](crate::Stats::dropped_messages), as for a
    /// full queue. Default 1 GiB: [`max_queued_messages`](Self::max_queued_messages)
    /// and [`max_queued_bytes`](Self::max_queued_bytes) bound each session,
    /// [`max_sessions`](Self::max_sessions) their number, and their product
    /// is no bound at all: 2 000 absent sessions subscribed to one topic, sent
    /// 1 000 one-byte QoS 1 messages (about 10 KB from the publisher), took
    /// 514 MB more. Messages loaded from the store count without being refused.
    pub max_offline_bytes: usize,
    /// Longest topic name or filter, in bytes. A longer PUBLISH topic gets
    /// MQTT 5.0 PUBACK/PUBREC 0x90 Topic Name invalid (QoS 0 and 3.1.1:
    /// dropped and counted); a longer filter SUBACK 0x8F (3.1.1: 0x80).
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter (`a/b/c` has 3), refused as for
    /// [`max_topic_length`](Self::max_topic_length).
    pub max_topic_levels: usize,
    /// Largest payload of a PUBLISH from a client, in bytes (mosquitto's
    /// `message_size_limit`). A larger one is acknowledged and not routed:
    /// MQTT 5.0 PUBACK/PUBREC 0x97 Quota exceeded (QoS 0 and 3.1.1: dropped
    /// and counted); the connection stays. A CONNECT whose will has a larger
    /// payload is refused: CONNACK 0x95 Packet too large (3.1.1: the
    /// connection is closed without CONNACK). Unlike
    /// [`max_packet_size`](Self::max_packet_size) it is not announced in
    /// CONNACK. `None` (the default): only the packet size bounds it.
    pub max_payload_size: Option<usize>,
    /// Whether a client that sends no Client Identifier is given one
    /// (default true; MQTT 5.0: in Assigned Client Identifier). Off (as
    /// mosquitto's `allow_zero_length_clientid false`), it is refused:
    /// CONNACK 0x85 Client Identifier not valid (3.1.1: 2 Identifier
    /// rejected), before it is authenticated.
    pub assign_client_ids: bool,
    /// How the identifiers given to clients without one begin (mosquitto's
    /// `auto_id_prefix`); a number unique in the broker follows. Default
    /// `fulmar-`.
    pub assigned_client_id_prefix: String,
    /// Whether a QoS 0 message for a kept session whose client is away is
    /// queued for it, as QoS 1 and 2 messages are (within
    /// [`max_queued_messages`](Self::max_queued_messages) and
    /// [`max_queued_bytes`](Self::max_queued_bytes); in memory only, not in
    /// the store), as mosquitto's `queue_qos0_messages true`. Default false:
    /// dropped (the session state of MQTT 3.1.1 and 5.0 section 4.1 holds
    /// them optionally).
    pub queue_qos0_offline: bool,
    /// Whether retained messages are accepted (default true). Off (as
    /// mosquitto's `retain_available false`): MQTT 5.0 clients are told
    /// (Retain Available 0 in CONNACK), a retained PUBLISH is a protocol
    /// error that closes the connection (5.0: DISCONNECT 0x9A Retain not
    /// supported), and a CONNECT with a retained will is refused (0x9A;
    /// 3.1.1: closed).
    pub retain_available: bool,
    /// When set, every CONNECT is refused with MQTT 5.0 CONNACK 0x9C Use
    /// another server (0x9D Server moved when permanent) and this Server
    /// Reference; 3.1.1 clients get return code 3 (Server unavailable).
    pub server_reference: Option<ServerReference>,
    /// How long a write to a client may wait for the client to read. A
    /// client that takes nothing for that long (while the broker has packets
    /// for it) is disconnected, so that a stalled peer does not hold a
    /// connection and its queues forever (its session is kept as usual).
    /// The connection is reset (TCP RST), not closed: the write it stopped
    /// may have sent part of a packet, and what the kernel still holds for
    /// the client is dropped at once. The same holds for the connection of a
    /// session taken over while a write to it is stuck.
    pub write_timeout: Duration,
    /// A plain TCP connection with nothing in flight that has been idle
    /// this long hibernates: its task ends and its socket is watched by one
    /// poller thread shared by all hibernating connections, until the
    /// client sends something, a message is routed to it, a deadline
    /// (keep-alive) is due or the broker shuts down. Nothing changes for the
    /// client; an idle connection then holds about half the memory. A new
    /// connection hibernates sooner, after 1/256 of this (at least 10 ms), and
    /// waits twice as long after each wake-up, this long from its ninth
    /// hibernation on: idle clients give memory back soon, busy ones stop
    /// paying for wake-ups. `None`:
    /// connections never hibernate. TLS and WebSocket connections do not
    /// hibernate. Unix only.
    pub hibernate_after: Option<Duration>,
    /// Events kept for each [`Events`](crate::Events) observer that has not
    /// read them yet; beyond it the observer loses the oldest.
    pub event_capacity: usize,
}

/// Another server for clients to use (MQTT 5.0 section 4.11), see
/// [`Limits::server_reference`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReference {
    /// The Server Reference sent to the client, e.g. `"other.example:1883"`.
    pub reference: String,
    /// Moved for good (0x9D Server moved) rather than for now (0x9C Use another server).
    pub permanent: bool,
}

/// How full a connection queue may get before the publishers of messages to
/// it are paced (QoS 0, and QoS 1/2 over the count only: when all their
/// subscribers are over it; QoS 0 only for its bytes): a quarter
/// of [`Limits::max_queued_bytes`] but at most [`PACE_ABOVE_BYTES`], and a
/// quarter of [`Limits::max_queued_messages`], so
/// that publishers are slowed down well before messages are dropped, and
/// little waits in the queue (1 MiB messages: one or two, where 16 doubled
/// their latency; 64 KiB messages to 10 subscribers: 4, where 16 made the
/// p99 half as long again; small messages: 250, where a
/// full queue of 1000 behind a full session queue of 1000 more made an
/// overloaded subscriber's messages wait twice as long and dropped most).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PaceAbove {
    /// Bytes queued.
    pub(crate) bytes: usize,
    /// Deliveries queued.
    pub(crate) messages: usize,
}

/// The most bytes a connection queue holds before the publishers of
/// messages to it are paced, whatever [`Limits::max_queued_bytes`]: the
/// socket's own buffers keep the connection busy beyond it, and what waits
/// in the queue only adds to the latency of what comes next.
pub(crate) const PACE_ABOVE_BYTES: usize = 256 * 1024;

impl PaceAbove {
    pub(crate) const fn new(max_queued_bytes: usize, max_queued_messages: usize) -> Self {
        let messages = max_queued_messages / 4;
        let bytes = max_queued_bytes / 4;
        Self {
            bytes: if bytes < PACE_ABOVE_BYTES {
                bytes
            } else {
                PACE_ABOVE_BYTES
            },
            messages: if messages == 0 { 1 } else { messages },
        }
    }

    /// Whether a delivery that took a queue from `before` to `bytes`
    /// bytes took it over: one delivery into an empty queue never
    /// does, whatever its size.
    pub(crate) const fn over_bytes(self, before: usize, bytes: usize) -> bool {
        before > 0 && bytes > self.bytes
    }

    /// Whether a queue holding `messages` deliveries is over.
    pub(crate) const fn over_count(self, messages: usize) -> bool {
        messages > self.messages
    }

    /// The level a queue must drain to before the publishers paced on it
    /// are woken: half of this, so that a wait ends with room for a burst
    /// from each of them rather than for one message.
    pub(crate) const fn resume(self) -> Self {
        Self {
            bytes: self.bytes / 2,
            messages: self.messages / 2,
        }
    }

    /// Whether a queue holding `bytes` and `messages` is still over (for the
    /// end of a wait).
    pub(crate) const fn still_over(self, bytes: usize, messages: usize) -> bool {
        bytes > self.bytes || self.over_count(messages)
    }
}

impl Limits {
    /// Whether a topic name or filter is within
    /// [`max_topic_length`](Self::max_topic_length) and
    /// [`max_topic_levels`](Self::max_topic_levels).
    pub(crate) fn topic_fits(&self, topic: &str) -> bool {
        topic.len() <= self.max_topic_length && topic.split('/').count() <= self.max_topic_levels
    }
}

/// What the broker does with a QoS 1/2 message for a connected subscriber
/// whose queues are full: its connection queue
/// ([`Limits::max_queued_messages`] deliveries not yet taken by its task)
/// and, behind it, its session queue (messages beyond the subscriber's
/// Receive Maximum, up to [`Limits::max_queued_messages`]).
///
/// QoS 0 messages for a full queue are always dropped and counted, and so
/// are messages for offline sessions beyond their queue bound. A slow
/// subscriber never stalls the delivery to the others under either policy:
/// routing never waits on a subscriber. Under either policy, a publisher
/// whose QoS 1/2 message takes a subscriber's queue over a quarter of
/// [`Limits::max_queued_bytes`] is paced, and so is one whose QoS 0 message
/// takes every queue it went to over that quarter (see there), and one
/// whose QoS 1/2 message takes every queue it went to over a quarter of
/// [`Limits::max_queued_messages`] (or finds them full). A publisher is never
/// paced on its own queue, nor on the queue of a connection that is paced
/// itself (which reads nothing, acknowledgements included, until then), so
/// clients that publish to each other cannot hold each other back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverloadPolicy {
    /// Drop the message for that subscriber and count it in
    /// [`Stats::dropped_messages`](crate::Stats::dropped_messages).
    #[default]
    DropAndCount,
    /// Keep the message: the publisher's connection waits until the queue
    /// has room before it acknowledges the message (PUBACK/PUBREC) and
    /// before it reads anything more, so TCP flow control slows the
    /// publisher down and no acknowledged message is dropped. Other
    /// publishers and subscribers are not affected. Bounded by
    /// [`Limits::backpressure_timeout`].
    Backpressure,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_packet_size: NonZeroU32::new(1024 * 1024).unwrap_or(NonZeroU32::MIN),
            max_subscriptions_per_client: 1024,
            max_subscription_bytes_per_client: 1 << 20,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_read_ahead_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            receive_maximum: NonZeroU16::new(64).unwrap_or(NonZeroU16::MIN),
            topic_alias_maximum: 16,
            maximum_qos: QoS::ExactlyOnce,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifiers_available: true,
            max_session_expiry: u32::MAX,
            max_sessions: 100_000,
            overload_policy: OverloadPolicy::DropAndCount,
            backpressure_timeout: Duration::from_secs(30),
            pacing_timeout: Duration::from_secs(2),
            sys_interval: None,
            event_capacity: 1024,
            server_keep_alive: None,
            max_keep_alive: None,
            max_outbound_inflight: NonZeroU16::new(256).unwrap_or(NonZeroU16::MAX),
            max_retained_messages: 100_000,
            max_retained_bytes: 1 << 30,
            max_delayed_will_bytes: 256 << 20,
            max_offline_bytes: 1 << 30,
            max_topic_length: 65_535,
            max_topic_levels: 128,
            max_payload_size: None,
            assign_client_ids: true,
            assigned_client_id_prefix: "fulmar-".to_owned(),
            queue_qos0_offline: false,
            retain_available: true,
            server_reference: None,
            write_timeout: Duration::from_secs(30),
            hibernate_after: Some(Duration::from_secs(5)),
        }
    }
}

impl Limits {
    /// The configuration of one server session under these limits.
    pub(crate) fn session_config(&self) -> Config {
        Config {
            receive_maximum: self.receive_maximum,
            max_pending: self.max_queued_messages,
            topic_alias_maximum: self.topic_alias_maximum,
            maximum_packet_size: Some(self.max_packet_size),
            connect_timeout: Some(self.connect_timeout),
            maximum_qos: self.maximum_qos,
            wildcard_subscription_available: self.wildcard_subscription_available,
            shared_subscription_available: self.shared_subscription_available,
            subscription_identifiers_available: self.subscription_identifiers_available,
            // Back-pressure acknowledges a message once every copy is queued.
            manual_acks: self.overload_policy == OverloadPolicy::Backpressure,
            server_keep_alive: self.server_keep_alive,
            max_keep_alive: self.max_keep_alive,
            max_inflight: self.max_outbound_inflight,
            retain_available: self.retain_available,
            ..Config::default()
        }
    }
}
