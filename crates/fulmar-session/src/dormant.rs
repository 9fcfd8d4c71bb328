//! [`DormantSession`]: a session put away while its connection is idle, in
//! about half the room of a [`Session`].

use std::sync::Arc;
use std::time::Instant;

use fulmar_codec::{MqttString, ProtocolVersion};

use crate::config::Config;
use crate::lazy::InboundQos2;
use crate::session::{Conn, Role, Session, State};
use crate::timer::{Timer, Timers};

/// A [`Session`] with nothing to send, report or resend, reduced to what
/// such a session needs: its configuration, the connection's negotiated
/// state (keep alive, the peer's limits, topic aliases), the one running
/// deadline, the packet identifier cursor and the inbound QoS 2 identifiers
/// awaiting PUBREL. A broker keeps one per idle connection (MQTT 5.0 allows
/// a connection to stay idle for up to 1.5 times its keep alive), so it
/// takes no room for the queues, the outbound half or the other timers.
///
/// Made by [`Session::into_dormant`]; [`wake`](Self::wake) gives back the
/// session exactly as it was. In between, nothing happens to it: call
/// [`wake`](Self::wake) by [`poll_timeout`](Self::poll_timeout), or as soon as
/// there is a packet, a message or a command for it.
///
/// # Example
/// ```
/// use std::time::Instant;
/// use fulmar_codec::{ConnAckProperties, Connect, MqttString, ProtocolVersion};
/// use fulmar_session::{Config, Event, Session};
///
/// let now = Instant::now();
/// let mut client = Session::client(Config::default());
/// let mut server = Session::server(Config::default(), now);
/// client.connect(Connect::new(ProtocolVersion::V5, MqttString::from("c1")), now).unwrap();
/// server.handle_packet(client.poll_transmit().unwrap(), now).unwrap();
/// assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
/// server.accept(ConnAckProperties::default(), None, now).unwrap();
/// // The CONNACK is still to be sent: the session cannot sleep yet.
/// let server = server.into_dormant().unwrap_err();
/// let mut server = server;
/// client.handle_packet(server.poll_transmit().unwrap(), now).unwrap();
///
/// let deadline = server.poll_timeout();
/// let dormant = server.into_dormant().unwrap();
/// assert_eq!(dormant.poll_timeout(), deadline);
/// let server = dormant.wake();
/// assert!(server.is_connected());
/// assert_eq!(server.poll_timeout(), deadline);
/// ```
#[derive(Debug)]
pub struct DormantSession {
    config: Arc<Config>,
    now: Option<Instant>,
    /// The deadline of the one running timer ([`Self::timer`]), if any.
    deadline: Option<Instant>,
    conn: Conn,
    /// Shared with the caller's copy when it has one (see
    /// [`DormantSession::share_client_id`]).
    client_id: Option<Arc<str>>,
    incoming_qos2: InboundQos2,
    out_cursor: u16,
    /// The running timer, when there is a deadline.
    timer: Timer,
    role: Role,
    version: ProtocolVersion,
    state: State,
}

impl Session {
    /// The session in its [`DormantSession`] form, when it has nothing to
    /// send, report or resend: no packet waiting in
    /// [`poll_transmit`](Self::poll_transmit), no event in
    /// [`poll_event`](Self::poll_event), no outbound message in flight or
    /// queued, no request awaiting its acknowledgement, no error, at most
    /// one running deadline and (client) no subscription recorded. Otherwise
    /// the session itself comes back unchanged, but for its spare capacity
    /// ([`release_spare_capacity`](Self::release_spare_capacity)).
    ///
    /// # Errors
    /// The session, when it is not idle as above.
    // The session comes back whole: boxing it would allocate, which this is
    // meant to save.
    #[allow(clippy::result_large_err)]
    pub fn into_dormant(mut self) -> Result<DormantSession, Self> {
        if !self.can_be_dormant() {
            return Err(self);
        }
        self.release_spare_capacity();
        let Ok(timer) = self.timers.single() else {
            return Err(self);
        };
        let Self {
            role,
            config,
            version,
            state,
            now,
            conn,
            out_cursor,
            incoming_qos2,
            client_id,
            ..
        } = self;
        Ok(DormantSession {
            config,
            now,
            deadline: timer.map(|(_, at)| at),
            timer: timer.map_or(Timer::Idle, |(timer, _)| timer),
            conn,
            client_id: client_id.map(|id| Arc::from(id.as_str())),
            incoming_qos2,
            out_cursor,
            role,
            version,
            state,
        })
    }
}

impl Session {
    /// Whether [`into_dormant`](Self::into_dormant) would succeed.
    #[must_use]
    pub fn can_be_dormant(&self) -> bool {
        let extra = self.conn.extra();
        self.transmit.is_empty()
            && self.events.is_empty()
            && self.out.get().is_empty()
            && self.subscriptions.as_slice().is_empty()
            && self.error.is_none()
            && extra.requests.is_empty()
            && extra.request_deadlines.is_empty()
            && extra.early.is_empty()
            && extra.unacked.is_empty()
            && self.timers.single().is_ok()
    }
}

impl DormantSession {
    /// The session again, as it was put away.
    #[must_use]
    pub fn wake(self) -> Session {
        let Self {
            config,
            now,
            deadline,
            conn,
            client_id,
            incoming_qos2,
            out_cursor,
            timer,
            role,
            version,
            state,
        } = self;
        let mut session = Session::with_role(role, config);
        session.version = version;
        session.state = state;
        session.now = now;
        session.timers = Timers::with(deadline.map(|at| (timer, at)));
        session.conn = conn;
        // It was one before.
        session.client_id =
            client_id.and_then(|id| MqttString::try_from_string(id.to_string()).ok());
        session.incoming_qos2 = incoming_qos2;
        session.out_cursor = out_cursor;
        session
    }

    /// When the woken session's [`handle_timeout`](Session::handle_timeout)
    /// must be called next (as [`Session::poll_timeout`]).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The protocol version of the connection (as [`Session::protocol_version`]).
    #[must_use]
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.version
    }

    /// The client identifier (as [`Session::client_id`]).
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The client identifier as a shared value: the `id` given to
    /// [`share_client_id`](Self::share_client_id) when they were equal, so
    /// that a caller can keep the identifier only here while the session
    /// sleeps and clone it back when it wakes.
    #[must_use]
    pub fn shared_client_id(&self) -> Option<&Arc<str>> {
        self.client_id.as_ref()
    }

    /// Keeps `id` instead of the session's own copy of the client
    /// identifier when they are equal, so that a caller holding the
    /// identifier anyway does not keep it twice; true if they were.
    pub fn share_client_id(&mut self, id: &Arc<str>) -> bool {
        let same = self.client_id.as_deref() == Some(&**id);
        if same {
            self.client_id = Some(id.clone());
        }
        same
    }

    /// Whether the connection is open, the handshake done (as
    /// [`Session::is_connected`]).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use fulmar_codec::{
        ConnAckProperties, Connect, DisconnectReasonCode, MqttString, Packet, PacketId,
        ProtocolVersion, PubRel, QoS,
    };

    use crate::test_support::{message, pump};
    use crate::{Config, Event, Session};

    /// A connected client/server pair, keep alive 10 s.
    #[allow(clippy::disallowed_methods)] // a base instant; only differences matter
    fn pair(version: ProtocolVersion) -> (Session, Session, Instant) {
        let now = Instant::now();
        let mut client = Session::client(Config::default());
        let mut server = Session::server(Config::default(), now);
        let mut connect = Connect::new(version, MqttString::from("sleeper"));
        connect.keep_alive = 10;
        client.connect(connect, now).unwrap();
        server
            .handle_packet(client.poll_transmit().unwrap(), now)
            .unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
        server
            .accept(ConnAckProperties::default(), None, now)
            .unwrap();
        pump(&mut client, &mut server, now);
        assert!(client.is_connected() && server.is_connected());
        (client, server, now)
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_dormant_session_takes_at_most_128_bytes() {
        // (memory, no spec statement) Against 280 for a `Session`.
        let size = std::mem::size_of::<super::DormantSession>();
        assert!(size <= 128, "DormantSession is {size} bytes");
    }

    #[test]
    fn a_woken_session_keeps_its_keep_alive_deadline() {
        // v5: MQTT-3.1.2-22
        let (_client, server, now) = pair(ProtocolVersion::V5);
        let deadline = server.poll_timeout();
        assert_eq!(deadline, Some(now + Duration::from_secs(15)));
        let dormant = server.into_dormant().unwrap();
        assert_eq!(dormant.poll_timeout(), deadline);
        assert!(dormant.is_connected());
        assert_eq!(dormant.protocol_version(), ProtocolVersion::V5);
        assert_eq!(dormant.client_id(), Some("sleeper"));
        let mut dormant = dormant;
        let shared: Arc<str> = Arc::from("sleeper");
        assert!(!dormant.share_client_id(&Arc::from("other")));
        assert!(dormant.share_client_id(&shared));
        assert_eq!(Arc::strong_count(&shared), 2);
        let mut server = dormant.wake();
        assert_eq!(server.client_id().map(MqttString::as_str), Some("sleeper"));
        assert_eq!(Arc::strong_count(&shared), 1);
        assert!(server.is_connected());
        assert_eq!(server.poll_timeout(), deadline);
        assert_eq!(server.keep_alive(), 10);
        server.handle_timeout(now + Duration::from_secs(15));
        let Some(Packet::Disconnect(disconnect)) = server.poll_transmit() else {
            panic!("no DISCONNECT")
        };
        assert_eq!(
            disconnect.reason_code,
            DisconnectReasonCode::KeepAliveTimeout
        );
    }

    #[test]
    fn a_woken_session_answers_as_before() {
        // v3: MQTT-3.1.2-24
        // MQTT-4.3.3-10
        let (mut client, server, now) = pair(ProtocolVersion::V311);
        // A packet from the client pushes the deadline back, as before.
        let mut server = server.into_dormant().unwrap().wake();
        let later = now + Duration::from_secs(5);
        server.handle_packet(Packet::PingReq, later).unwrap();
        assert!(matches!(server.poll_transmit(), Some(Packet::PingResp)));
        assert_eq!(server.poll_timeout(), Some(later + Duration::from_secs(15)));

        // Packet identifiers go on where they were.
        server.publish(message(QoS::AtLeastOnce), later).unwrap();
        pump(&mut client, &mut server, later);
        let mut server = server.into_dormant().unwrap().wake();
        let next = server.publish(message(QoS::AtLeastOnce), later).unwrap();
        assert_eq!(next, PacketId::new(2));
        pump(&mut client, &mut server, later);

        // An inbound QoS 2 identifier awaiting its PUBREL stays: the same
        // PUBLISH again is acknowledged, not delivered again.
        let mut qos2 = message(QoS::ExactlyOnce);
        qos2.packet_id = PacketId::new(9);
        server
            .handle_packet(Packet::Publish(qos2.clone()), later)
            .unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Message(_))));
        assert!(matches!(server.poll_transmit(), Some(Packet::PubRec(_))));
        let mut server = server.into_dormant().unwrap().wake();
        assert_eq!(server.incoming_qos2_len(), 1);
        qos2.dup = true;
        server.handle_packet(Packet::Publish(qos2), later).unwrap();
        assert!(server.poll_event().is_none(), "delivered twice");
        assert!(matches!(server.poll_transmit(), Some(Packet::PubRec(_))));
        let id = PacketId::new(9).unwrap();
        server
            .handle_packet(Packet::PubRel(PubRel::new(id)), later)
            .unwrap();
        assert!(matches!(server.poll_transmit(), Some(Packet::PubComp(_))));
        assert_eq!(server.incoming_qos2_len(), 0);
    }

    #[test]
    fn a_busy_session_does_not_sleep() {
        // (memory, no spec statement) Anything to send, report or resend
        // keeps the whole session.
        let (mut client, mut server, now) = pair(ProtocolVersion::V5);
        server.publish(message(QoS::AtLeastOnce), now).unwrap();
        assert!(!server.can_be_dormant());
        let mut server = server.into_dormant().unwrap_err();
        // Sent, not acknowledged: in flight.
        let publish = server.poll_transmit().unwrap();
        let mut server = server.into_dormant().unwrap_err();
        assert_eq!(server.inflight_len(), 1);
        client.handle_packet(publish, now).unwrap();
        pump(&mut client, &mut server, now);
        assert!(server.can_be_dormant());
        let server = server.into_dormant().unwrap().wake();

        // An event not taken yet.
        let mut server = server;
        client.publish(message(QoS::AtMostOnce), now).unwrap();
        server
            .handle_packet(client.poll_transmit().unwrap(), now)
            .unwrap();
        let mut server = server.into_dormant().unwrap_err();
        assert!(matches!(server.poll_event(), Some(Event::Message(_))));
        assert!(server.into_dormant().is_ok());

        // A client with a recorded subscription keeps it in a `Session`.
        let (mut client, mut server, now) = pair(ProtocolVersion::V5);
        client
            .subscribe(
                vec![(
                    MqttString::from("a/#"),
                    fulmar_codec::SubscriptionOptions::default(),
                )],
                fulmar_codec::SubscribeProperties::default(),
                now,
            )
            .unwrap();
        server
            .handle_packet(client.poll_transmit().unwrap(), now)
            .unwrap();
        let Some(Event::Subscribe(subscribe)) = server.poll_event() else {
            panic!("no SUBSCRIBE")
        };
        server
            .suback(
                subscribe.packet_id,
                vec![fulmar_codec::SubAckReasonCode::GrantedQoS0],
                fulmar_codec::AckProperties::default(),
            )
            .unwrap();
        pump(&mut client, &mut server, now);
        assert_eq!(client.subscriptions().len(), 1);
        assert!(client.into_dormant().is_err());
    }
}
