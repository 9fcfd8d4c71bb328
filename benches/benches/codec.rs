//! fulmar-codec benchmarks: decode and encode of PUBLISH (16 B, 1 KiB, 64 KiB payloads, MQTT
//! 3.1.1 and 5.0 with properties), PUBACK, CONNECT with 5.0 properties and SUBSCRIBE with ten
//! filters, side by side with rumqttc's `mqttbytes` (`rumqttc::mqttbytes::v4` and
//! `rumqttc::v5::mqttbytes::v5`).
//!
//! Benchmark ids are `{decode|encode}/{case}/{fulmar|rumqttc}`; `benches/pair.py` pairs them.
//! PUBLISH encodes have a third entry, `fulmar_vectored`: [`Publish::encode_header`] plus a
//! reference-counted clone of the payload, the zero-copy path for vectored writes (rumqttc has
//! no equivalent, so it is compared with rumqttc's full encode).
//!
//! Fairness rules:
//! - decode: both sides start each iteration from the same encoded bytes in a fresh `BytesMut`
//!   (built in the untimed `iter_batched` setup) and produce a fully parsed packet through their
//!   framing entry point (`fulmar_codec::decode` and rumqttc's `Packet::read`), with the same
//!   maximum packet size. The result is checked and handed to `black_box` by reference (an
//!   `unwrap` would add moves of the packet enum to the timing). The packet and the input buffer are dropped inside the timing, as by
//!   a receiver that handles each packet and lets it go: returning them to criterion instead
//!   would time the page faults of criterion's output vector, which grow with the size of the
//!   packet type rather than with the work of decoding;
//! - encode: both sides encode a prepared packet value into a reused, cleared `BytesMut`
//!   through the packet's own `encode` / `write`;
//! - before measuring, `check_case` asserts that each side decodes the other's bytes to the
//!   expected packet and that both encodings have the same length, so both do the same work.
//!
//! `cargo bench -p fulmar-benches --bench codec` runs everything (about 4 minutes on 2 cores).
#![allow(clippy::unwrap_used)] // fixtures are built here and always valid; a failure is a bench bug

use std::hint::black_box;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fulmar_codec::{
    Connect, ConnectProperties, Packet, PacketId, PayloadFormat, ProtocolVersion, PubAck, Publish,
    PublishProperties, QoS, RetainHandling, Subscribe, SubscribeProperties, SubscriptionOptions,
    Will, WillProperties, decode,
};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::{QoS as V5QoS, v5};

/// Maximum packet size given to both decoders.
const MAX_PACKET: u32 = 1 << 20;

const TOPIC: &str = "fleet/site-17/device-4242/telemetry";
const PACKET_ID: u16 = 4242;

/// The packet in both models, and the version it is sent in.
struct Case {
    name: String,
    version: ProtocolVersion,
    fulmar: Packet,
    peer: Peer,
}

/// rumqttc's model of the same packet.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // a handful of fixtures, built once
enum Peer {
    V4(v4::Packet),
    V5(v5::Packet),
}

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| b"0123456789abcdef"[i % 16])
        .collect::<Vec<u8>>()
        .into()
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A QoS 1 PUBLISH; under 5.0 with message expiry, content type, response topic, correlation
/// data and one user property.
fn publish_case(size_name: &str, len: usize, version: ProtocolVersion) -> Case {
    let body = payload(len);
    let mut p = Publish::new(TOPIC.into(), body.clone());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(PACKET_ID);
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            let peer = v4::Publish {
                dup: false,
                qos: rumqttc::QoS::AtLeastOnce,
                retain: false,
                topic: TOPIC.to_owned(),
                pkid: PACKET_ID,
                payload: body,
            };
            Case {
                name: format!("publish_{size_name}_v3"),
                version,
                fulmar: p.into(),
                peer: Peer::V4(v4::Packet::Publish(peer)),
            }
        }
        ProtocolVersion::V5 => {
            p.properties = PublishProperties {
                payload_format_indicator: Some(PayloadFormat::Utf8),
                message_expiry_interval: Some(3600),
                response_topic: Some("fleet/site-17/device-4242/reply".into()),
                correlation_data: Some(Bytes::from_static(b"req-0000000042")),
                user_properties: vec![("trace-id".into(), "4bf92f3577b34da6".into())],
                content_type: Some("application/json".into()),
                ..PublishProperties::default()
            };
            let peer = v5::Publish {
                dup: false,
                qos: V5QoS::AtLeastOnce,
                retain: false,
                topic: Bytes::from_static(TOPIC.as_bytes()),
                pkid: PACKET_ID,
                payload: body,
                properties: Some(v5::PublishProperties {
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(3600),
                    topic_alias: None,
                    response_topic: Some("fleet/site-17/device-4242/reply".to_owned()),
                    correlation_data: Some(Bytes::from_static(b"req-0000000042")),
                    user_properties: vec![("trace-id".to_owned(), "4bf92f3577b34da6".to_owned())],
                    subscription_identifiers: Vec::new(),
                    content_type: Some("application/json".to_owned()),
                }),
            };
            Case {
                name: format!("publish_{size_name}_v5"),
                version,
                fulmar: p.into(),
                peer: Peer::V5(v5::Packet::Publish(peer)),
            }
        }
    }
}

/// A successful PUBACK (packet identifier only, also under 5.0).
fn puback_case(version: ProtocolVersion) -> Case {
    let fulmar = PubAck::new(PacketId::new(PACKET_ID).unwrap()).into();
    let (name, peer) = match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => (
            "puback_v3",
            Peer::V4(v4::Packet::PubAck(v4::PubAck::new(PACKET_ID))),
        ),
        ProtocolVersion::V5 => (
            "puback_v5",
            Peer::V5(v5::Packet::PubAck(v5::PubAck::new(PACKET_ID, None))),
        ),
    };
    Case {
        name: name.to_owned(),
        version,
        fulmar,
        peer,
    }
}

/// A 5.0 CONNECT: six CONNECT properties with a user property, a will with properties,
/// user name and password.
fn connect_case() -> Case {
    let will_payload = Bytes::from_static(b"{\"state\":\"offline\"}");
    let mut c = Connect::new(ProtocolVersion::V5, "fulmar-bench-client-0001".into());
    c.keep_alive = 30;
    c.properties = ConnectProperties {
        session_expiry_interval: Some(3600),
        receive_maximum: NonZeroU16::new(100),
        maximum_packet_size: NonZeroU32::new(MAX_PACKET),
        topic_alias_maximum: Some(16),
        request_response_information: Some(true),
        request_problem_information: Some(true),
        user_properties: vec![("app".into(), "fleet-agent/2.3".into())],
        ..ConnectProperties::default()
    };
    c.will = Some(Will {
        topic: "fleet/site-17/device-4242/status".into(),
        payload: will_payload.clone(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(10),
            message_expiry_interval: Some(600),
            content_type: Some("application/json".into()),
            ..WillProperties::default()
        },
    });
    c.username = Some("device-4242".into());
    c.password = Some(Bytes::from_static(b"s3cr3t-t0k3n-0123456789"));

    let peer_connect = v5::Connect {
        keep_alive: 30,
        client_id: "fulmar-bench-client-0001".to_owned(),
        clean_start: true,
        properties: Some(v5::ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            max_packet_size: Some(MAX_PACKET),
            topic_alias_max: Some(16),
            request_response_info: Some(1),
            request_problem_info: Some(1),
            user_properties: vec![("app".to_owned(), "fleet-agent/2.3".to_owned())],
            authentication_method: None,
            authentication_data: None,
        }),
    };
    let peer_will = v5::LastWill {
        topic: Bytes::from_static(b"fleet/site-17/device-4242/status"),
        message: will_payload,
        qos: V5QoS::AtLeastOnce,
        retain: true,
        properties: Some(v5::LastWillProperties {
            delay_interval: Some(10),
            payload_format_indicator: None,
            message_expiry_interval: Some(600),
            content_type: Some("application/json".to_owned()),
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    };
    let peer_login = v5::Login {
        username: "device-4242".to_owned(),
        password: "s3cr3t-t0k3n-0123456789".to_owned(),
    };
    Case {
        name: "connect_v5".to_owned(),
        version: ProtocolVersion::V5,
        fulmar: c.into(),
        peer: Peer::V5(v5::Packet::Connect(
            peer_connect,
            Some(peer_will),
            Some(peer_login),
        )),
    }
}

fn filter(i: usize) -> String {
    match i % 3 {
        0 => format!("fleet/site-{i}/+/telemetry"),
        1 => format!("fleet/site-17/device-{i}/#"),
        _ => format!("commands/device-{i}/reboot"),
    }
}

/// A SUBSCRIBE with ten filters; under 5.0 with a subscription identifier and varied options.
fn subscribe_case(version: ProtocolVersion) -> Case {
    let id = PacketId::new(PACKET_ID).unwrap();
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            let filters = (0..10)
                .map(|i| (filter(i).into(), SubscriptionOptions::new(QoS::AtLeastOnce)))
                .collect();
            let peer = v4::Subscribe {
                pkid: PACKET_ID,
                filters: (0..10)
                    .map(|i| v4::SubscribeFilter::new(filter(i), rumqttc::QoS::AtLeastOnce))
                    .collect(),
            };
            Case {
                name: "subscribe_10_v3".to_owned(),
                version,
                fulmar: Subscribe::new(id, filters).into(),
                peer: Peer::V4(v4::Packet::Subscribe(peer)),
            }
        }
        ProtocolVersion::V5 => {
            let options = |i: usize| SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: i.is_multiple_of(2),
                retain_as_published: i.is_multiple_of(3),
                retain_handling: if i.is_multiple_of(4) {
                    RetainHandling::SendAtSubscribeIfNew
                } else {
                    RetainHandling::SendAtSubscribe
                },
            };
            let mut s = Subscribe::new(
                id,
                (0..10).map(|i| (filter(i).into(), options(i))).collect(),
            );
            s.properties = SubscribeProperties {
                subscription_identifier: NonZeroU32::new(7),
                user_properties: Vec::new(),
            };
            let peer = v5::Subscribe {
                pkid: PACKET_ID,
                filters: (0..10)
                    .map(|i| v5::Filter {
                        path: filter(i),
                        qos: V5QoS::AtLeastOnce,
                        nolocal: i % 2 == 0,
                        preserve_retain: i % 3 == 0,
                        retain_forward_rule: if i % 4 == 0 {
                            v5::RetainForwardRule::OnNewSubscribe
                        } else {
                            v5::RetainForwardRule::OnEverySubscribe
                        },
                    })
                    .collect(),
                properties: Some(v5::SubscribeProperties {
                    id: Some(7),
                    user_properties: Vec::new(),
                }),
            };
            Case {
                name: "subscribe_10_v5".to_owned(),
                version,
                fulmar: s.into(),
                peer: Peer::V5(v5::Packet::Subscribe(peer)),
            }
        }
    }
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for (size_name, len) in [("16", 16), ("1k", 1024), ("64k", 64 * 1024)] {
            cases.push(publish_case(size_name, len, version));
        }
        cases.push(puback_case(version));
    }
    cases.push(connect_case());
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        cases.push(subscribe_case(version));
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// The two sides' entry points
// ---------------------------------------------------------------------------------------------

fn fulmar_encode(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).unwrap();
    buf.freeze()
}

fn peer_encode(peer: &Peer) -> Bytes {
    let mut buf = BytesMut::new();
    match peer {
        Peer::V4(p) => p.write(&mut buf, MAX_PACKET as usize).unwrap(),
        Peer::V5(p) => p.write(&mut buf, Some(MAX_PACKET)).unwrap(),
    };
    buf.freeze()
}

fn peer_decode(peer: &Peer, wire: &[u8]) -> Peer {
    let mut buf = BytesMut::from(wire);
    let decoded = match peer {
        Peer::V4(_) => Peer::V4(v4::Packet::read(&mut buf, MAX_PACKET as usize).unwrap()),
        Peer::V5(_) => Peer::V5(v5::Packet::read(&mut buf, Some(MAX_PACKET)).unwrap()),
    };
    assert!(buf.is_empty());
    decoded
}

fn same_peer_packet(a: &Peer, b: &Peer) -> bool {
    match (a, b) {
        (Peer::V4(a), Peer::V4(b)) => a == b,
        (Peer::V5(a), Peer::V5(b)) => a == b,
        _ => false,
    }
}

/// Both sides parse both encodings to the expected packet, and the encodings have the same
/// length: the benchmarked work is the same on both sides.
fn check_case(case: &Case) -> Bytes {
    let wire = fulmar_encode(&case.fulmar, case.version);
    let peer_wire = peer_encode(&case.peer);
    assert_eq!(
        wire.len(),
        peer_wire.len(),
        "{}: encoded sizes differ",
        case.name
    );
    for bytes in [&wire, &peer_wire] {
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = decode(&mut buf, case.version, MAX_PACKET).unwrap();
        assert_eq!(
            decoded.as_ref(),
            Some(&case.fulmar),
            "{}: fulmar decode",
            case.name
        );
        assert!(buf.is_empty());
        let peer = peer_decode(&case.peer, bytes);
        assert!(
            same_peer_packet(&peer, &case.peer),
            "{}: rumqttc decode",
            case.name
        );
    }
    wire
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

fn batch_size(wire: &Bytes) -> BatchSize {
    if wire.len() > 4096 {
        BatchSize::LargeInput
    } else {
        BatchSize::SmallInput
    }
}

fn bench_decode(c: &mut Criterion, case: &Case, wire: &Bytes) {
    let mut group = c.benchmark_group(format!("decode/{}", case.name));
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let version = case.version;
    let fresh = || BytesMut::from(&wire[..]);
    group.bench_function("fulmar", |b| {
        b.iter_batched(
            fresh,
            |mut buf| {
                let packet = decode(black_box(&mut buf), version, MAX_PACKET);
                assert!(matches!(packet, Ok(Some(_))));
                black_box(&packet);
            },
            batch_size(wire),
        );
    });
    match &case.peer {
        Peer::V4(_) => {
            group.bench_function("rumqttc", |b| {
                b.iter_batched(
                    fresh,
                    |mut buf| {
                        let packet = v4::Packet::read(black_box(&mut buf), MAX_PACKET as usize);
                        assert!(packet.is_ok());
                        black_box(&packet);
                    },
                    batch_size(wire),
                );
            });
        }
        Peer::V5(_) => {
            group.bench_function("rumqttc", |b| {
                b.iter_batched(
                    fresh,
                    |mut buf| {
                        let packet = v5::Packet::read(black_box(&mut buf), Some(MAX_PACKET));
                        assert!(packet.is_ok());
                        black_box(&packet);
                    },
                    batch_size(wire),
                );
            });
        }
    };
    group.finish();
}

/// Runs `encode` into a cleared, reused buffer with enough capacity.
fn encode_loop(
    b: &mut criterion::Bencher<'_>,
    capacity: usize,
    mut encode: impl FnMut(&mut BytesMut),
) {
    let mut buf = BytesMut::with_capacity(capacity);
    b.iter(|| {
        buf.clear();
        encode(black_box(&mut buf));
        black_box(&buf);
    });
}

fn bench_encode(c: &mut Criterion, case: &Case, wire: &Bytes) {
    let mut group = c.benchmark_group(format!("encode/{}", case.name));
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let version = case.version;
    let cap = wire.len();
    // Each side encodes its own packet struct, not the enum around it.
    match &case.fulmar {
        Packet::Publish(p) => {
            group.bench_function("fulmar", |b| {
                encode_loop(b, cap, |buf| black_box(p).encode(version, buf).unwrap());
            });
            group.bench_function("fulmar_vectored", |b| {
                let mut buf = BytesMut::with_capacity(cap);
                b.iter(|| {
                    buf.clear();
                    let p = black_box(p);
                    p.encode_header(version, &mut buf).unwrap();
                    // What a vectored write sends after the header.
                    let payload = p.payload.clone();
                    black_box(&buf);
                    payload
                });
            });
        }
        Packet::PubAck(p) => {
            group.bench_function("fulmar", |b| {
                encode_loop(b, cap, |buf| black_box(p).encode(version, buf).unwrap());
            });
        }
        Packet::Connect(p) => {
            group.bench_function("fulmar", |b| {
                encode_loop(b, cap, |buf| black_box(p).encode(version, buf).unwrap());
            });
        }
        Packet::Subscribe(p) => {
            group.bench_function("fulmar", |b| {
                encode_loop(b, cap, |buf| black_box(p).encode(version, buf).unwrap());
            });
        }
        other => unreachable!("no encode bench for {:?}", other.packet_type()),
    };
    match &case.peer {
        Peer::V4(v4::Packet::Publish(p)) => {
            group.bench_function("rumqttc", |b| {
                encode_loop(b, cap, |buf| {
                    black_box(p).write(buf).unwrap();
                });
            });
        }
        Peer::V4(v4::Packet::PubAck(p)) => {
            group.bench_function("rumqttc", |b| {
                encode_loop(b, cap, |buf| {
                    black_box(p).write(buf).unwrap();
                });
            });
        }
        Peer::V4(v4::Packet::Subscribe(p)) => {
            group.bench_function("rumqttc", |b| {
                encode_loop(b, cap, |buf| {
                    black_box(p).write(buf).unwrap();
                });
            });
        }
        Peer::V5(v5::Packet::Publish(p)) => {
            group.bench_function("rumqttc", |b| {
                encode_loop(b, cap, |buf| {
                    black_box(p).write(buf).unwrap();
                });
            });
        }
        Peer::V5(v5::Packet::PubAck(p)) => {
            group.bench_function("rumqttc", |b| {
                encode_loop(b, cap, |buf| {
                    black_box(p).write(buf).unwrap();
                });
            });
        }
        Peer::V5(v5::Packet::Connect(p, will, login)) => {
            group.bench_function("rumqttc", |b| {
                encode_loop(b, cap, |buf| {
                    black_box(p).write(will, login, buf).unwrap();
                });
            });
        }
        Peer::V5(v5::Packet::Subscribe(p)) => {
            group.bench_function("rumqttc", |b| {
                encode_loop(b, cap, |buf| {
                    black_box(p).write(buf).unwrap();
                });
            });
        }
        _ => unreachable!("no rumqttc encode bench for {}", case.name),
    };
    group.finish();
}

fn codec(c: &mut Criterion) {
    for case in cases() {
        let wire = check_case(&case);
        bench_decode(c, &case, &wire);
        bench_encode(c, &case, &wire);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
