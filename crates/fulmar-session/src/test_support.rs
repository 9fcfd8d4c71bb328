//! Helpers shared by the unit tests of this crate.

use std::time::Instant;

use bytes::Bytes;
use fulmar_codec::{MqttString, Publish, QoS};

use crate::Session;

/// Moves packets both ways and drops the events until both are quiet.
pub(crate) fn pump(client: &mut Session, server: &mut Session, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(p) = client.poll_transmit() {
            moved = true;
            server.handle_packet(p, now).unwrap();
        }
        while let Some(p) = server.poll_transmit() {
            moved = true;
            client.handle_packet(p, now).unwrap();
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
}

/// A one-byte message on `a/b` at `qos`.
pub(crate) fn message(qos: QoS) -> Publish {
    let mut p = Publish::new(MqttString::from("a/b"), Bytes::from_static(b"x"));
    p.qos = qos;
    p
}

/// A seeded xorshift32 generator: each call gives a number below `n`
/// (the model-checking tests' source of operations, repeatable by seed).
pub(crate) fn xorshift32(mut state: u32) -> impl FnMut(u32) -> u32 {
    move |n: u32| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state % n
    }
}
