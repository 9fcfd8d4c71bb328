//! A blocking MQTT 5.0 client built on the sans-IO crates alone: the
//! program owns a plain `std::net::TcpStream` and the clock, `fulmar-codec`
//! turns packets into bytes and back, and `fulmar-session` keeps the protocol
//! state (packet identifiers, the QoS 1 flow, keep-alive pings, the
//! peer's limits). No async runtime on the client side: the same loop fits a
//! thread, an event loop of your own or a device's main loop.
//!
//! It connects, subscribes to `demo/#`, publishes a QoS 1 message to
//! `demo/hello`, waits both for its PUBACK and for the message to come back
//! through the subscription, and disconnects.
//!
//! Run with `cargo run -p fulmar-examples --example sans_io_client [HOST:PORT]`;
//! without an address it first starts an embedded fulmar broker on
//! 127.0.0.1 (on a thread of its own, with a tokio runtime) and uses that.

use std::error::Error;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    Connect, DisconnectProperties, DisconnectReasonCode, MqttString, ProtocolVersion, Publish, QoS,
    SubscribeProperties, SubscriptionOptions, decode,
};
use fulmar_session::{Config, Event, Session};

/// The largest packet this client accepts.
const MAX_PACKET: u32 = 1024 * 1024;

/// One network connection and the session that drives it.
struct Connection {
    stream: TcpStream,
    session: Session,
    /// Bytes read and not decoded yet.
    read: BytesMut,
    /// Bytes encoded and not written yet.
    write: BytesMut,
}

impl Connection {
    /// Writes every packet the session has to send.
    fn flush(&mut self) -> Result<(), Box<dyn Error>> {
        while self.session.poll_transmit_into(&mut self.write)? {}
        if !self.write.is_empty() {
            self.stream.write_all(&self.write)?;
            self.write.clear();
        }
        Ok(())
    }

    /// Blocks until the session has an event: writes what it has to send,
    /// reads and decodes what arrives, and fires its timers (keep-alive
    /// PINGREQ, the PINGRESP deadline) when `poll_timeout` says so.
    fn next_event(&mut self) -> Result<Event, Box<dyn Error>> {
        loop {
            if let Some(event) = self.session.poll_event() {
                return Ok(event);
            }
            self.flush()?;
            if self.session.is_closed() {
                let why = self.session.error().map(ToString::to_string);
                return Err(why.unwrap_or_else(|| "connection closed".into()).into());
            }
            // Wait for bytes, at most until the session's next deadline.
            let now = Instant::now();
            let wait = self
                .session
                .poll_timeout()
                .map(|deadline| deadline.saturating_duration_since(now));
            if wait == Some(Duration::ZERO) {
                self.session.handle_timeout(now);
                continue;
            }
            self.stream.set_read_timeout(wait)?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.session.connection_lost(Instant::now());
                    return Err("the server closed the connection".into());
                }
                Ok(n) => {
                    self.read
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    self.decode_all()?;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.session.handle_timeout(Instant::now());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Feeds every whole packet in the read buffer to the session. A
    /// malformed one closes the connection with the reason code the
    /// decoder chose (the session queues the DISCONNECT).
    fn decode_all(&mut self) -> Result<(), Box<dyn Error>> {
        let version = self.session.protocol_version();
        loop {
            match decode(&mut self.read, version, MAX_PACKET) {
                Ok(Some(packet)) => {
                    if let Err(error) = self.session.handle_packet(packet, Instant::now()) {
                        // The session queued its DISCONNECT with the reason
                        // code: send it before giving up.
                        self.flush()?;
                        return Err(error.into());
                    }
                }
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.session.handle_decode_error(&error, Instant::now());
                    self.flush()?;
                    return Err(error.into());
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = match std::env::args().nth(1) {
        Some(addr) => addr,
        None => embedded_broker()?.to_string(),
    };
    let stream = TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_nodelay(true)?;
    let mut conn = Connection {
        stream,
        // Announce the limit the decoder enforces (MQTT 5.0 Maximum Packet
        // Size), so that the broker never sends what we would refuse.
        session: Session::client(Config {
            maximum_packet_size: std::num::NonZeroU32::new(MAX_PACKET),
            ..Config::default()
        }),
        read: BytesMut::new(),
        write: BytesMut::new(),
    };

    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("sans-io-client"));
    connect.keep_alive = 5;
    conn.session.connect(connect, Instant::now())?;
    match conn.next_event()? {
        Event::Connected(connack) => println!("connected to {addr}: {:?}", connack.reason_code),
        other => return Err(format!("expected CONNACK, got {other:?}").into()),
    }

    let filter = (
        MqttString::from("demo/#"),
        SubscriptionOptions::new(QoS::AtLeastOnce),
    );
    let sub_id =
        conn.session
            .subscribe(vec![filter], SubscribeProperties::default(), Instant::now())?;
    match conn.next_event()? {
        Event::SubAck(ack) if ack.packet_id == sub_id => {
            println!("subscribed to demo/#: {:?}", ack.reason_codes);
        }
        other => return Err(format!("expected SUBACK, got {other:?}").into()),
    }

    let mut message = Publish::new(MqttString::from("demo/hello"), Bytes::from_static(b"hi"));
    message.qos = QoS::AtLeastOnce;
    let publish_id = conn.session.publish(message, Instant::now())?;
    // The PUBACK and the message coming back may arrive in either order.
    let (mut acknowledged, mut received) = (false, false);
    while !(acknowledged && received) {
        match conn.next_event()? {
            Event::PublishComplete {
                packet_id,
                reason_code,
                ..
            } if Some(packet_id) == publish_id => {
                println!("published demo/hello at QoS 1: PUBACK {reason_code:?}");
                acknowledged = true;
            }
            // The session sent its PUBACK already: acknowledging is its job.
            Event::Message(publish) => {
                println!("received {} = {:?}", publish.topic, publish.payload);
                received = true;
            }
            other => println!("event: {other:?}"),
        }
    }

    conn.session.disconnect(
        DisconnectReasonCode::NormalDisconnection,
        DisconnectProperties::default(),
        Instant::now(),
    )?;
    conn.flush()?;
    println!("disconnected");
    Ok(())
}

/// Starts a fulmar broker on 127.0.0.1 and an ephemeral port, on a thread
/// that runs until the process exits; returns its address.
fn embedded_broker() -> Result<SocketAddr, Box<dyn Error>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return drop(tx.send(Err(e.to_string()))),
        };
        runtime.block_on(async {
            let started = fulmar_broker::Broker::builder()
                .tcp_listener("127.0.0.1:0")
                .start()
                .await;
            let broker = match started {
                Ok(broker) => broker,
                Err(e) => return drop(tx.send(Err(e.to_string()))),
            };
            let addr = broker.local_addrs().first().copied();
            drop(tx.send(addr.ok_or_else(|| "no listener".to_owned())));
            std::future::pending::<()>().await;
        });
    });
    let addr = rx.recv()??;
    println!("embedded broker on {addr}");
    Ok(addr)
}
