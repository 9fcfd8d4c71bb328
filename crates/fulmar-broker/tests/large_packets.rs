//! Large packets are read into a buffer of their final size while the
//! broker's read-ahead budget allows (`Limits::max_read_ahead_bytes`); the
//! budget is given back when the packet is complete or its connection
//! closes, and beyond it packets are still read, as their bytes arrive.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU32;

use bytes::{Bytes, BytesMut};
use common::{Peer, addr, start_with, wait_until};
use fulmar_broker::{Broker, BrokerHandle};
use fulmar_codec::{MqttString, Packet, ProtocolVersion, Publish, QoS};

const PAYLOAD: usize = 600_000;

/// A QoS 0 PUBLISH of `PAYLOAD` bytes on `topic`, encoded, and its payload.
fn large_publish(topic: &str, fill: u8) -> (Vec<u8>, Bytes) {
    let payload = Bytes::from(vec![fill; PAYLOAD]);
    let publish = Publish::new(MqttString::from(topic.to_owned()), payload.clone());
    let mut wire = BytesMut::new();
    Packet::from(publish)
        .encode(ProtocolVersion::V5, &mut wire)
        .unwrap();
    (wire.to_vec(), payload)
}

/// Sends `bytes` and waits until the broker has read all of them.
async fn send_and_wait_read(broker: &BrokerHandle, peer: &mut Peer, bytes: &[u8]) {
    let before = broker.stats().bytes_received;
    peer.send_raw(bytes).await;
    let want = before + bytes.len() as u64;
    wait_until("the broker reads the bytes", || {
        broker.stats().bytes_received >= want
    })
    .await;
}

async fn subscriber(broker: &BrokerHandle, filter: &str) -> Peer {
    let mut sub = Peer::connect(addr(broker), ProtocolVersion::V5, "sub").await;
    sub.sub(1, filter, QoS::AtMostOnce).await;
    sub
}

// (memory, no spec statement)
#[tokio::test]
async fn a_large_packet_holds_read_ahead_until_it_is_complete() {
    let broker = start_with(Broker::builder()).await;
    let mut sub = subscriber(&broker, "big").await;
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub").await;
    let (wire, payload) = large_publish("big", 7);
    let (head, rest) = wire.split_at(100_000);
    send_and_wait_read(&broker, &mut publisher, head).await;
    // Room for the rest was set aside once the header was read.
    let ahead = broker.stats().read_ahead_bytes;
    assert!(
        ahead > wire.len() - head.len() && ahead < wire.len(),
        "{ahead} bytes set aside for a {}-byte packet",
        wire.len()
    );
    send_and_wait_read(&broker, &mut publisher, rest).await;
    let got = sub.recv_publish().await;
    assert_eq!(got.payload, payload);
    assert_eq!(broker.stats().read_ahead_bytes, 0);
    broker.shutdown().await;
}

// (memory, no spec statement)
#[tokio::test]
async fn a_connection_closed_mid_packet_gives_its_read_ahead_back() {
    let broker = start_with(Broker::builder()).await;
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub").await;
    let (wire, _) = large_publish("big", 1);
    send_and_wait_read(&broker, &mut publisher, &wire[..100_000]).await;
    assert!(broker.stats().read_ahead_bytes > 0);
    drop(publisher);
    wait_until("read-ahead given back", || {
        broker.stats().read_ahead_bytes == 0
    })
    .await;
    broker.shutdown().await;
}

// (memory, no spec statement)
#[tokio::test]
async fn beyond_the_budget_large_packets_are_still_read() {
    // Room for one packet's rest, not two.
    let broker = start_with(Broker::builder().max_read_ahead_bytes(PAYLOAD)).await;
    let mut sub = subscriber(&broker, "big/#").await;
    let mut first = Peer::connect(addr(&broker), ProtocolVersion::V5, "first").await;
    let mut second = Peer::connect(addr(&broker), ProtocolVersion::V5, "second").await;
    let (wire1, payload1) = large_publish("big/1", 1);
    let (wire2, payload2) = large_publish("big/2", 2);
    send_and_wait_read(&broker, &mut first, &wire1[..100_000]).await;
    let one = broker.stats().read_ahead_bytes;
    assert!(one > 0);
    send_and_wait_read(&broker, &mut second, &wire2[..100_000]).await;
    // The second packet did not fit: nothing more is set aside for it.
    assert_eq!(broker.stats().read_ahead_bytes, one);
    send_and_wait_read(&broker, &mut second, &wire2[100_000..]).await;
    send_and_wait_read(&broker, &mut first, &wire1[100_000..]).await;
    let mut got = [sub.recv_publish().await, sub.recv_publish().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(got[0].payload, payload1);
    assert_eq!(got[1].payload, payload2);
    assert_eq!(broker.stats().read_ahead_bytes, 0);
    broker.shutdown().await;
}

// (memory, no spec statement) A packet over the maximum packet size is
// refused on its header: nothing is set aside for it.
#[tokio::test]
async fn no_read_ahead_for_a_packet_over_the_maximum_size() {
    let broker =
        start_with(Broker::builder().max_packet_size(NonZeroU32::new(500_000).unwrap())).await;
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub").await;
    let (wire, _) = large_publish("big", 1);
    publisher.send_raw(&wire[..100_000]).await;
    publisher
        .expect_disconnect(fulmar_codec::DisconnectReasonCode::PacketTooLarge)
        .await;
    assert_eq!(broker.stats().read_ahead_bytes, 0);
    broker.shutdown().await;
}
