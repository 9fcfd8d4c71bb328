//! fulmar-session benchmarks: QoS 1 and QoS 2 round trips through a client
//! session and a server session wired back to back in memory (MQTT 5.0, 16-byte
//! payload), in messages per second.
//!
//! Each iteration publishes a batch of 100 messages at the client and moves
//! packets between the two sessions until both are quiet: every message goes
//! through the client's queue and in-flight table, the server's inbound QoS
//! handling (and its QoS 2 identifier store) and back, with every event
//! drained. Receive Maximum is 100 on both sides, so the batch is never held
//! back by flow control.
//!
//! Ids are `session/{qos1|qos2}/{packets|wire}`:
//! - `packets` hands `Packet` values from one session to the other: the cost
//!   of the state machines alone;
//! - `wire` also encodes every packet into a reused buffer and decodes it at
//!   the other end with `fulmar_codec`, as a real connection would, to put the
//!   state machine's share next to the codec's.
//!
//! `cargo bench -p fulmar-benches --bench session` runs everything (about a minute).
#![allow(clippy::unwrap_used)] // fixtures are built here and always valid; a failure is a bench bug

use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fulmar_codec::{
    ConnAckProperties, Connect, MqttString, Packet, ProtocolVersion, Publish, QoS, decode,
};
use fulmar_session::{Config, Event, Session};

const BATCH: usize = 100;

fn config() -> Config {
    Config {
        receive_maximum: NonZeroU16::new(100).unwrap(),
        max_pending: BATCH,
        ..Config::default()
    }
}

/// A client and a server session after the CONNECT/CONNACK handshake.
fn pair(now: Instant) -> (Session, Session) {
    let mut client = Session::client(config());
    let mut server = Session::server(config(), now);
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("bench"));
    connect.keep_alive = 0;
    client.connect(connect, now).unwrap();
    server
        .handle_packet(client.poll_transmit().unwrap(), now)
        .unwrap();
    assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
    server
        .accept(ConnAckProperties::default(), None, now)
        .unwrap();
    client
        .handle_packet(server.poll_transmit().unwrap(), now)
        .unwrap();
    assert!(matches!(client.poll_event(), Some(Event::Connected(_))));
    (client, server)
}

/// Moves packets until both sessions are quiet; returns (delivered, completed).
fn drive(
    client: &mut Session,
    server: &mut Session,
    now: Instant,
    wire: Option<&mut BytesMut>,
) -> (usize, usize) {
    let (mut delivered, mut completed) = (0, 0);
    let mut buf = wire;
    loop {
        let mut moved = false;
        while let Some(p) = client.poll_transmit() {
            moved = true;
            server
                .handle_packet(carry(p, buf.as_deref_mut()), now)
                .unwrap();
        }
        while let Some(e) = server.poll_event() {
            delivered += usize::from(matches!(e, Event::Message(_)));
            black_box(e);
        }
        while let Some(p) = server.poll_transmit() {
            moved = true;
            client
                .handle_packet(carry(p, buf.as_deref_mut()), now)
                .unwrap();
        }
        while let Some(e) = client.poll_event() {
            completed += usize::from(matches!(e, Event::PublishComplete { .. }));
            black_box(e);
        }
        if !moved {
            return (delivered, completed);
        }
    }
}

/// Hands `p` over, through the codec when a buffer is given.
fn carry(p: Packet, buf: Option<&mut BytesMut>) -> Packet {
    match buf {
        None => p,
        Some(buf) => {
            buf.clear();
            p.encode(ProtocolVersion::V5, buf).unwrap();
            decode(buf, ProtocolVersion::V5, u32::MAX).unwrap().unwrap()
        }
    }
}

fn round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(5));
    let payload = Bytes::from_static(&[7; 16]);
    for (name, qos) in [("qos1", QoS::AtLeastOnce), ("qos2", QoS::ExactlyOnce)] {
        let mut message = Publish::new(
            MqttString::from("sensors/room-1/temperature"),
            payload.clone(),
        );
        message.qos = qos;
        for through_codec in [false, true] {
            let id = format!("{name}/{}", if through_codec { "wire" } else { "packets" });
            let now = Instant::now();
            let (mut client, mut server) = pair(now);
            let mut buf = BytesMut::with_capacity(256);
            group.bench_function(id, |b| {
                b.iter(|| {
                    for _ in 0..BATCH {
                        client.publish(message.clone(), now).unwrap();
                    }
                    let wire = through_codec.then_some(&mut buf);
                    let (delivered, completed) = drive(&mut client, &mut server, now, wire);
                    assert_eq!((delivered, completed), (BATCH, BATCH));
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
