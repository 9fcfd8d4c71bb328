//! Test support: packet builders, a wire round trip through the codec, and a
//! client/server pair on an in-memory link with a virtual clock.

// Test helpers panic on misuse, like the tests that call them.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    AckProperties, ConnAckProperties, Connect, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, QoS, SubAckReasonCode,
};
use fulmar_session::{Config, Event, Session, SessionState};

/// A base instant; tests only use offsets from it.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

pub fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

pub fn publish(topic: &str, qos: QoS, payload: &[u8]) -> Publish {
    let mut p = Publish::new(
        MqttString::try_new(topic).unwrap(),
        Bytes::copy_from_slice(payload),
    );
    p.qos = qos;
    p
}

/// A PUBLISH as the peer would send it, with its packet identifier.
pub fn incoming(topic: &str, qos: QoS, packet_id: Option<u16>, payload: &[u8]) -> Packet {
    let mut p = publish(topic, qos, payload);
    p.packet_id = packet_id.map(id);
    Packet::Publish(p)
}

/// Encodes and decodes `packet` as the peer would: everything the session
/// emits must survive the codec.
pub fn wire(packet: Packet, version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::new();
    packet
        .encode(version, &mut buf)
        .unwrap_or_else(|e| panic!("cannot encode {packet:?}: {e}"));
    let decoded = fulmar_codec::decode(&mut buf, version, u32::MAX)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    decoded
}

pub fn drain(session: &mut Session) -> Vec<Packet> {
    std::iter::from_fn(|| session.poll_transmit()).collect()
}

pub fn events(session: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    let mut c = Connect::new(version, MqttString::try_new(client_id).unwrap());
    c.clean_start = clean_start;
    c
}

/// A server session that has accepted a CONNECT; its CONNACK is drained.
/// A server session (default configuration) that received `connect` and
/// has not answered it yet.
pub fn connect_received(connect: Connect, now: Instant) -> Session {
    let mut server = Session::server(Config::default(), now);
    server
        .handle_packet(Packet::Connect(Box::new(connect)), now)
        .unwrap();
    server
}

pub fn connected_server(config: Config, connect: Connect, now: Instant) -> Session {
    accepted(config, connect, now).0
}

/// A server session with `config` that accepted `connect`, and the CONNACK
/// it sent.
pub fn accepted(
    config: Config,
    connect: Connect,
    now: Instant,
) -> (Session, fulmar_codec::ConnAck) {
    let mut server = Session::server(config, now);
    server
        .handle_packet(Packet::Connect(Box::new(connect)), now)
        .unwrap();
    assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
    server
        .accept(ConnAckProperties::default(), None, now)
        .unwrap();
    let out = drain(&mut server);
    let [Packet::ConnAck(connack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    let connack = connack.clone();
    (server, connack)
}

/// A client session connected to a (mock) server that answered `connack`.
pub fn connected_client(
    config: Config,
    connect: Connect,
    connack: fulmar_codec::ConnAck,
    now: Instant,
) -> Session {
    let mut client = Session::client(config);
    client.connect(connect, now).unwrap();
    let out = drain(&mut client);
    assert!(matches!(out.as_slice(), [Packet::Connect(_)]), "{out:?}");
    client.handle_packet(Packet::ConnAck(connack), now).unwrap();
    assert!(matches!(client.poll_event(), Some(Event::Connected(_))));
    client
}

/// A client and a server session on an in-memory link. `drive` moves packets
/// (through the codec) until both are quiet; the server side answers CONNECT
/// with `accept` (resuming `stored`) and SUBSCRIBE by granting what was asked.
pub struct Pair {
    pub client: Session,
    pub server: Session,
    pub now: Instant,
    pub version: ProtocolVersion,
    pub server_config: Config,
    pub stored: Option<SessionState>,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
    pub accept_properties: ConnAckProperties,
    pub connected_once: bool,
}

impl Pair {
    pub fn new(version: ProtocolVersion) -> Self {
        Self::with_configs(version, Config::default(), Config::default())
    }

    pub fn with_configs(version: ProtocolVersion, client: Config, server: Config) -> Self {
        let now = t0();
        Self {
            client: Session::client(client),
            server: Session::server(server.clone(), now),
            now,
            version,
            server_config: server,
            stored: None,
            client_events: Vec::new(),
            server_events: Vec::new(),
            accept_properties: ConnAckProperties::default(),
            connected_once: false,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Connects (a fresh server session for each connection).
    pub fn connect(&mut self, clean_start: bool) {
        self.connect_with(connect_packet(self.version, "pair", clean_start));
    }

    pub fn connect_with(&mut self, connect: Connect) {
        self.server.connection_lost(self.now);
        if self.connected_once && self.stored.is_none() {
            self.stored = Some(self.server.session_state(self.now));
        }
        self.collect();
        self.server = Session::server(self.server_config.clone(), self.now);
        self.client.connect(connect, self.now).unwrap();
        self.drive();
    }

    /// Breaks the link: both sides see the connection lost; the server's
    /// session state is kept for the next connection.
    pub fn break_link(&mut self) {
        self.client.connection_lost(self.now);
        self.server.connection_lost(self.now);
        self.stored = Some(self.server.session_state(self.now));
        self.collect();
    }

    fn collect(&mut self) {
        self.client_events.extend(events(&mut self.client));
        for event in events(&mut self.server) {
            self.answer(&event);
            self.server_events.push(event);
        }
    }

    fn answer(&mut self, event: &Event) {
        match event {
            Event::Connect(_) => {
                let stored = self.stored.take();
                self.connected_once = true;
                self.server
                    .accept(self.accept_properties.clone(), stored, self.now)
                    .unwrap();
            }
            Event::Subscribe(s) => {
                let codes = s
                    .filters
                    .iter()
                    .map(|(_, o)| SubAckReasonCode::granted(o.qos))
                    .collect();
                self.server
                    .suback(s.packet_id, codes, AckProperties::default())
                    .unwrap();
            }
            Event::Unsubscribe(u) => {
                let codes = u
                    .filters
                    .iter()
                    .map(|_| fulmar_codec::UnsubAckReasonCode::Success)
                    .collect();
                self.server
                    .unsuback(u.packet_id, codes, AckProperties::default())
                    .unwrap();
            }
            _ => {}
        }
    }

    /// Moves packets both ways until nothing is left to send.
    pub fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(p) = self.client.poll_transmit() {
                moved = true;
                let p = wire(p, self.version);
                let _ = self.server.handle_packet(p, self.now);
            }
            self.collect();
            while let Some(p) = self.server.poll_transmit() {
                moved = true;
                let p = wire(p, self.version);
                let _ = self.client.handle_packet(p, self.now);
            }
            self.collect();
            if !moved {
                break;
            }
        }
    }

    pub fn take_client_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.client_events)
    }

    pub fn take_server_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.server_events)
    }
}

pub fn messages(events: &[Event]) -> Vec<Publish> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

pub fn completed(events: &[Event]) -> Vec<PacketId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PublishComplete { packet_id, .. } => Some(*packet_id),
            _ => None,
        })
        .collect()
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
