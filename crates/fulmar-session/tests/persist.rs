//! A session state persisted through serde (feature `serde`) and rebuilt in
//! a new process carries on exactly (spec 4.1, 4.4).
#![cfg(feature = "serde")]

mod common;

use common::*;
use fulmar_codec::{MqttString, Packet, ProtocolVersion, PubRec, QoS, SubscriptionOptions};
use fulmar_session::{Config, Session, SessionState};

#[test]
fn a_persisted_session_resumes_in_a_new_session_object() {
    // v5:MQTT-3.1.2-23 MQTT-4.4.0-1 MQTT-4.6.0-1 v3:MQTT-4.1.0-1
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut pair = Pair::new(version);
        pair.connect(false);
        pair.client
            .subscribe(
                vec![(
                    MqttString::from("in/#"),
                    SubscriptionOptions::new(QoS::ExactlyOnce),
                )],
                Default::default(),
                pair.now,
            )
            .unwrap();
        pair.drive();
        let a = pair
            .client
            .publish(publish("t", QoS::ExactlyOnce, b"a"), pair.now)
            .unwrap()
            .unwrap();
        let b = pair
            .client
            .publish(publish("t", QoS::AtLeastOnce, b"b"), pair.now)
            .unwrap()
            .unwrap();
        // Both PUBLISHes reach the server; only a's PUBREC comes back.
        for p in drain(&mut pair.client) {
            pair.server
                .handle_packet(wire(p, version), pair.now)
                .unwrap();
        }
        let _ = drain(&mut pair.server);
        pair.client
            .handle_packet(Packet::PubRec(PubRec::new(a)), pair.now)
            .unwrap();
        let _ = drain(&mut pair.client);
        let c = pair
            .client
            .publish(publish("t", QoS::AtLeastOnce, b"c"), pair.now)
            .unwrap()
            .unwrap();
        pair.break_link();

        // The process exits; the state goes to disk as JSON and comes back.
        let json = serde_json::to_string(&pair.client.session_state(pair.now)).unwrap();
        let state: SessionState = serde_json::from_str(&json).unwrap();
        assert_eq!(state, pair.client.session_state(pair.now));
        assert_eq!(state.subscriptions().len(), 1);
        pair.client = Session::client_with_state(Config::default(), state, pair.now).unwrap();
        let _ = pair.take_server_events();
        let _ = pair.take_client_events();

        pair.connect(false);
        // b is resent (the server delivers it again: QoS 1), a's PUBREL completes
        // it without a second delivery, c goes out for the first time.
        let delivered: Vec<_> = messages(&pair.take_server_events())
            .iter()
            .map(|m| m.payload.clone())
            .collect();
        assert_eq!(
            delivered,
            vec![
                bytes::Bytes::from_static(b"b"),
                bytes::Bytes::from_static(b"c")
            ]
        );
        let mut done = completed(&pair.take_client_events());
        done.sort();
        let mut expected = vec![a, b, c];
        expected.sort();
        assert_eq!(done, expected);
        assert_eq!(pair.client.inflight_len(), 0);
        assert_eq!(pair.client.subscriptions().len(), 1);
    }
}
