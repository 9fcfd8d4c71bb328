//! `Packet::trim_to_fit`: optional properties dropped to respect the
//! receiver's Maximum Packet Size.

use bytes::Bytes;

use super::*;
use crate::{
    AckProperties, Auth, AuthReasonCode, ConnAck, ConnectReasonCode, Disconnect,
    DisconnectReasonCode, PacketId, PubAck, PubComp, PubRec, PubRel, Publish, SubAck,
    SubAckReasonCode, UnsubAck, UnsubAckReasonCode,
};

fn props() -> AckProperties {
    AckProperties {
        reason_string: Some("a fairly long reason string".into()),
        user_properties: vec![("key".into(), "value".into())],
    }
}

fn id() -> PacketId {
    PacketId::new(1).unwrap()
}

fn packets() -> Vec<Packet> {
    let mut connack = ConnAck::new(false, ConnectReasonCode::NotAuthorized);
    connack.properties.reason_string = props().reason_string;
    connack.properties.user_properties = props().user_properties;
    let mut disconnect = Disconnect::new(DisconnectReasonCode::ServerBusy);
    disconnect.properties.reason_string = props().reason_string;
    disconnect.properties.user_properties = props().user_properties;
    let mut auth = Auth {
        reason_code: AuthReasonCode::ContinueAuthentication,
        ..Auth::default()
    };
    auth.properties.authentication_method = Some("m".into());
    auth.properties.reason_string = props().reason_string;
    auth.properties.user_properties = props().user_properties;
    vec![
        connack.into(),
        PubAck {
            properties: props(),
            ..PubAck::new(id())
        }
        .into(),
        PubRec {
            properties: props(),
            ..PubRec::new(id())
        }
        .into(),
        PubRel {
            properties: props(),
            ..PubRel::new(id())
        }
        .into(),
        PubComp {
            properties: props(),
            ..PubComp::new(id())
        }
        .into(),
        SubAck {
            properties: props(),
            ..SubAck::new(id(), vec![SubAckReasonCode::GrantedQoS1])
        }
        .into(),
        UnsubAck {
            properties: props(),
            ..UnsubAck::new(id(), vec![UnsubAckReasonCode::Success])
        }
        .into(),
        disconnect.into(),
        auth.into(),
    ]
}

#[test]
fn reason_string_is_dropped_first() {
    // v5:MQTT-3.2.2-19 v5:MQTT-3.4.2-2 v5:MQTT-3.5.2-2 v5:MQTT-3.6.2-2 v5:MQTT-3.7.2-2
    // v5:MQTT-3.9.2-1 v5:MQTT-3.11.2-1 v5:MQTT-3.14.2-3 v5:MQTT-3.15.2-2
    for mut p in packets() {
        let full = p.encoded_len(V5).unwrap();
        // Room for everything but the reason string (3 + 27 bytes).
        let max = (full - 30) as u32;
        assert!(p.trim_to_fit(V5, max).unwrap(), "{p:?}");
        assert!(p.encoded_len(V5).unwrap() <= max as usize);
        let mut again = p.clone();
        assert!(again.trim_to_fit(V5, max).unwrap());
        assert_eq!(again, p);
        // The user property survived.
        assert!(enc(&p, V5).windows(5).any(|w| w == b"value"), "{p:?}");
        assert!(!enc(&p, V5).windows(4).any(|w| w == b"long"));
    }
}

#[test]
fn user_properties_are_dropped_next() {
    // v5:MQTT-3.2.2-20 v5:MQTT-3.4.2-3 v5:MQTT-3.5.2-3 v5:MQTT-3.6.2-3 v5:MQTT-3.7.2-3
    // v5:MQTT-3.9.2-2 v5:MQTT-3.11.2-2 v5:MQTT-3.14.2-4 v5:MQTT-3.15.2-3
    for mut p in packets() {
        let full = p.encoded_len(V5).unwrap();
        let max = (full - 40) as u32;
        assert!(p.trim_to_fit(V5, max).unwrap(), "{p:?}");
        let bytes = enc(&p, V5);
        assert!(bytes.len() <= max as usize);
        assert!(!bytes.windows(5).any(|w| w == b"value"));
        round_trip(&p, V5);
    }
}

#[test]
fn packets_that_fit_are_unchanged_and_others_report_false() {
    for p in packets() {
        let mut q = p.clone();
        assert!(q.trim_to_fit(V5, u32::MAX).unwrap());
        assert_eq!(p, q);
        let mut q = p.clone();
        assert!(!q.trim_to_fit(V5, 2).unwrap(), "{q:?}");
    }
    // v5:MQTT-3.1.2-24: a PUBLISH is never trimmed; the caller discards it.
    let mut p = Packet::from(Publish::new("t".into(), Bytes::from_static(b"0123456789")));
    assert!(!p.trim_to_fit(V5, 5).unwrap());
    assert_eq!(
        p,
        Packet::from(Publish::new("t".into(), Bytes::from_static(b"0123456789")))
    );
}
