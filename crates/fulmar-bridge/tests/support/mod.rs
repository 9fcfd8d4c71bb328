//! What the bridge tests share: brokers, bridge options, rules.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use fulmar_bridge::{Direction, TopicRule};
use fulmar_broker::{Broker, BrokerHandle, Message, Subscription};
use fulmar_client::{ConnectOptions, ProtocolVersion, QoS};

use crate::common::guard;

pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V5, ProtocolVersion::V311];

/// A fulmar broker with a TCP listener on a free loopback port.
pub async fn broker() -> BrokerHandle {
    Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .start()
        .await
        .unwrap()
}

pub fn port(broker: &BrokerHandle) -> u16 {
    broker.local_addrs()[0].port()
}

/// Options for a bridge with a session the remote keeps.
pub fn options(port: u16, version: ProtocolVersion, id: &str) -> ConnectOptions {
    let options = ConnectOptions::new("127.0.0.1", port)
        .protocol_version(version)
        .client_id(id)
        .clean_start(false);
    match version {
        ProtocolVersion::V5 => options.session_expiry_interval(300),
        _ => options,
    }
}

/// A rule at QoS 1.
pub fn rule(pattern: &str, direction: Direction, local: &str, remote: &str) -> TopicRule {
    TopicRule::with_prefixes(pattern, direction, local, remote)
        .unwrap()
        .qos(QoS::AtLeastOnce)
}

/// The next message of an in-process subscription.
pub async fn next(sub: &mut Subscription) -> Message {
    guard(sub.recv()).await.expect("broker shut down")
}

pub fn pair(topic: &str, payload: &str) -> (String, String) {
    (topic.to_owned(), payload.to_owned())
}
