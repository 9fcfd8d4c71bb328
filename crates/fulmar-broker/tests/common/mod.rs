//! Test support: a broker on 127.0.0.1 port 0 and a tiny MQTT peer that
//! writes hand-made or codec-encoded packets and reads raw bytes or packets.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use fulmar_broker::{Broker, BrokerBuilder, BrokerHandle, Message, Subscription};
use fulmar_codec::{
    ConnAck, Connect, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, SubAck,
    Subscribe, SubscriptionOptions, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Failure guard for every wait.
pub const GUARD: Duration = Duration::from_secs(10);

/// A broker with one listener on an ephemeral port.
pub async fn start() -> BrokerHandle {
    start_with(Broker::builder()).await
}

/// A broker from `builder` plus one listener on an ephemeral port.
pub async fn start_with(builder: BrokerBuilder) -> BrokerHandle {
    builder.tcp_listener("127.0.0.1:0").start().await.unwrap()
}

pub fn addr(broker: &BrokerHandle) -> SocketAddr {
    broker.local_addrs()[0]
}

/// The next message of an in-process subscription (fails after [`GUARD`]).
pub async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(GUARD, sub.recv())
        .await
        .expect("no message in time")
        .expect("subscription ended")
}

/// Waits until `done` holds (fails with `what` after [`GUARD`]).
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(GUARD, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// A raw MQTT peer.
pub struct Peer {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Peer {
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Opens a connection and completes CONNECT/CONNACK with `connect`.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut peer = Self::open(addr, connect.protocol_version).await;
        peer.send(connect).await;
        match peer.recv().await {
            Packet::ConnAck(ack) => (peer, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A clean connection with keep alive 0 and client id `id`.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, id: &str) -> Self {
        let mut connect = Connect::new(version, MqttString::from(id.to_owned()));
        connect.keep_alive = 0;
        let (peer, ack) = Self::connect_with(addr, connect).await;
        assert!(!ack.reason_code.is_error(), "refused: {ack:?}");
        peer
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, packet: impl Into<Packet>) {
        let mut wire = BytesMut::new();
        packet.into().encode(self.version, &mut wire).unwrap();
        self.send_raw(&wire).await;
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(GUARD, self.stream.read(&mut chunk))
            .await
            .expect("nothing received in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Exactly `n` bytes.
    pub async fn recv_raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill().await == 0 {
                panic!("connection closed after {:02x?}", &self.buf[..]);
            }
        }
        self.buf.split_to(n).to_vec()
    }

    /// Asserts the next bytes are exactly `expected`.
    pub async fn expect_raw(&mut self, expected: &[u8]) {
        let got = self.recv_raw(expected.len()).await;
        assert_eq!(got, expected, "got {got:02x?}, expected {expected:02x?}");
    }

    /// The next packet.
    pub async fn recv(&mut self) -> Packet {
        loop {
            if let Some(packet) = decode(&mut self.buf, self.version, u32::MAX).unwrap() {
                return packet;
            }
            if self.fill().await == 0 {
                panic!("connection closed, {} bytes left", self.buf.len());
            }
        }
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts the broker closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes {:02x?}",
            &self.buf[..]
        );
        let n = self.fill().await;
        assert_eq!(n, 0, "unexpected bytes {:02x?}", &self.buf[..]);
    }

    /// Subscribes to one filter and returns the SUBACK.
    pub async fn subscribe(
        &mut self,
        id: u16,
        filter: &str,
        options: SubscriptionOptions,
    ) -> SubAck {
        let subscribe = Subscribe::new(
            PacketId::new(id).unwrap(),
            vec![(MqttString::from(filter.to_owned()), options)],
        );
        self.send(subscribe).await;
        match self.recv().await {
            Packet::SubAck(ack) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes at `qos` with default options; asserts it was granted.
    pub async fn sub(&mut self, id: u16, filter: &str, qos: QoS) {
        let ack = self
            .subscribe(id, filter, SubscriptionOptions::new(qos))
            .await;
        assert_eq!(ack.reason_codes[0].granted_qos(), Some(qos), "{ack:?}");
    }

    /// Asserts the next packet is a DISCONNECT with `code`.
    pub async fn expect_disconnect(&mut self, code: fulmar_codec::DisconnectReasonCode) {
        match self.recv().await {
            Packet::Disconnect(d) => assert_eq!(d.reason_code, code),
            other => panic!("expected DISCONNECT, got {other:?}"),
        }
    }

    /// Sends a DISCONNECT (normal) and waits until the broker closed.
    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Default::default())).await;
        self.expect_closed().await;
    }
}

/// A PUBLISH at `qos` (packet id 1 for QoS 1/2).
pub fn publish(topic: &str, payload: &'static str, qos: QoS) -> Publish {
    let mut p = Publish::new(
        MqttString::from(topic.to_owned()),
        bytes::Bytes::from_static(payload.as_bytes()),
    );
    p.qos = qos;
    if qos != QoS::AtMostOnce {
        p.packet_id = PacketId::new(1);
    }
    p
}

/// The exchange of the enhanced authentication method "toy": the client
/// says "hi", is challenged, and answers with the challenge reversed.
#[derive(Default)]
pub struct ToyExchange {
    step: u8,
}

#[async_trait::async_trait]
impl fulmar_broker::AuthExchange for ToyExchange {
    async fn continue_auth(&mut self, data: Option<bytes::Bytes>) -> fulmar_broker::AuthStep {
        use bytes::Bytes;
        use fulmar_broker::AuthStep;
        self.step += 1;
        match (self.step, data.as_deref()) {
            (1, Some(b"hi")) => AuthStep::Continue(Bytes::from_static(b"challenge")),
            (2, Some(b"egnellahc")) => AuthStep::Success(Some(Bytes::from_static(b"welcome"))),
            _ => AuthStep::Fail(fulmar_codec::ConnectReasonCode::NotAuthorized),
        }
    }
}

/// Runs `phase` on a runtime of its own, then drops the runtime without
/// `BrokerHandle::shutdown`: a crash, as far as the store can tell (no
/// will is published on the way out; what was committed stays).
pub fn run_then_crash(phase: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(phase);
    drop(runtime);
}

/// Runs `phase` on a runtime of its own (the broker after a restart).
pub fn run(phase: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(phase);
}
