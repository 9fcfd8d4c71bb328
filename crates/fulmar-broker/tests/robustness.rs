//! Garbage from peers never takes the broker down: every connection that
//! sent junk is closed cleanly (its task ends normally, which a panic would
//! prevent), and the broker keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{GUARD, Peer, addr, next, start};
use fulmar_codec::{ProtocolVersion::V5, ProtocolVersion::V311, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// xorshift64*: deterministic junk without a dependency.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

// MQTT-4.8.0-1 v5:MQTT-4.13.1-1 v3:MQTT-3.1.4-1 v5:MQTT-3.1.4-1
#[tokio::test]
async fn junk_after_connect_and_instead_of_connect_never_breaks_the_broker() {
    let broker = start().await;
    let mut watch = broker.subscribe("#").unwrap();
    let mut junk = Junk(0x9e37_79b9_7f4a_7c15);
    for round in 0..120u32 {
        let version = if round % 2 == 0 { V311 } else { V5 };
        let mut peer = if round % 3 == 0 {
            Peer::open(addr(&broker), version).await
        } else {
            Peer::connect(addr(&broker), version, &format!("junk-{round}")).await
        };
        let len = 1 + (junk.next() % 200) as usize;
        let mut bytes = junk.bytes(len);
        // Half the time, start with a plausible packet type and length.
        if round % 4 < 2 {
            bytes[0] = [0x30, 0x32, 0x82, 0xa2, 0xe0, 0x62][(junk.next() % 6) as usize];
            if let Some(b) = bytes.get_mut(1) {
                *b %= 0x80;
            }
        }
        let _ = peer.stream.write_all(&bytes).await;
        let _ = peer.stream.shutdown().await;
        // The broker closes the connection: read to EOF (errors count as closed).
        let mut sink = Vec::new();
        let read = tokio::time::timeout(GUARD, peer.stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "round {round}: connection not closed");
    }
    // Every connection task ended normally.
    tokio::time::timeout(GUARD, async {
        while broker.stats().connections != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a connection task did not finish");
    // And the broker still works.
    let mut p = Peer::connect(addr(&broker), V5, "after").await;
    p.send(common::publish("still/alive", "yes", QoS::AtLeastOnce))
        .await;
    assert!(matches!(p.recv().await, fulmar_codec::Packet::PubAck(_)));
    loop {
        // Junk may have published valid messages; skip them.
        if next(&mut watch).await.topic == "still/alive" {
            break;
        }
    }
    broker.shutdown().await;
}
