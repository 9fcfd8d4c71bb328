//! Server features an operator turns off: Wildcard Subscription Available,
//! Shared Subscription Available and Subscription Identifiers Available
//! (MQTT 5.0 sections 3.2.2.3.11 to 3.2.2.3.13; MQTT 3.1.1 section 3.8.3).

#![allow(clippy::unwrap_used)]

mod common;

use std::num::NonZeroU32;

use common::*;
use fulmar_codec::{
    AckProperties, ConnAckProperties, Disconnect, DisconnectReasonCode, MqttString, Packet,
    ProtocolVersion, QoS, SubAck, SubAckReasonCode, Subscribe, SubscriptionOptions,
};
use fulmar_session::{Config, Error, Event, ProtocolViolation, Session};

/// MQTT 3.1 runs every flow of 3.1.1.
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn nothing_available() -> Config {
    Config {
        wildcard_subscription_available: false,
        shared_subscription_available: false,
        subscription_identifiers_available: false,
        ..Config::default()
    }
}

/// A 3.1.1 server session, connected, with wildcard subscriptions off.
fn v3_server_without_wildcards(now: std::time::Instant) -> Session {
    let config = Config {
        wildcard_subscription_available: false,
        ..Config::default()
    };
    connected_server(
        config,
        connect_packet(ProtocolVersion::V311, "c", true),
        now,
    )
}

fn subscribe(n: u16, filters: &[&'static str]) -> Subscribe {
    Subscribe::new(
        id(n),
        filters
            .iter()
            .map(|f| {
                (
                    MqttString::from(*f),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                )
            })
            .collect(),
    )
}

/// The CONNACK a server with `config` sends to a client of `version`.
fn connack_properties(config: Config, version: ProtocolVersion) -> ConnAckProperties {
    let (_, connack) = accepted(config, connect_packet(version, "c", true), t0());
    // Whatever the session sends survives the codec in the client's version.
    let Packet::ConnAck(connack) = wire(Packet::ConnAck(connack), version) else {
        panic!("not a CONNACK")
    };
    connack.properties
}

/// Feeds `packet` to a connected server and returns the error and what it sent.
fn refused(config: Config, version: ProtocolVersion, packet: Subscribe) -> (Error, Vec<Packet>) {
    let now = t0();
    let mut server = connected_server(config, connect_packet(version, "c", true), now);
    let error = server
        .handle_packet(Packet::Subscribe(packet), now)
        .unwrap_err();
    assert!(
        !events(&mut server)
            .iter()
            .any(|e| matches!(e, Event::Subscribe(_))),
        "a refused SUBSCRIBE must not reach the application"
    );
    let out = drain(&mut server);
    assert!(server.is_closed());
    (error, out)
}

fn disconnect(code: DisconnectReasonCode) -> Vec<Packet> {
    vec![Packet::Disconnect(Disconnect::new(code))]
}

/// A 5.0 server session with `config` refuses `packet` with `violation`,
/// answered by a DISCONNECT with `code` alone.
fn assert_refused(
    config: Config,
    packet: Subscribe,
    violation: ProtocolViolation,
    code: DisconnectReasonCode,
) {
    let context = format!("{:?}", packet.filters);
    let (error, out) = refused(config, ProtocolVersion::V5, packet);
    assert_eq!(error, Error::Protocol(violation), "{context}");
    assert_eq!(out, disconnect(code), "{context}");
}

#[test]
fn connack_announces_only_what_is_turned_off() {
    let props = connack_properties(Config::default(), ProtocolVersion::V5);
    assert_eq!(props.wildcard_subscription_available, None);
    assert_eq!(props.shared_subscription_available, None);
    assert_eq!(props.subscription_identifiers_available, None);

    let props = connack_properties(nothing_available(), ProtocolVersion::V5);
    assert_eq!(props.wildcard_subscription_available, Some(false));
    assert_eq!(props.shared_subscription_available, Some(false));
    assert_eq!(props.subscription_identifiers_available, Some(false));

    for (config, wildcard, shared, ids) in [
        (
            Config {
                wildcard_subscription_available: false,
                ..Config::default()
            },
            Some(false),
            None,
            None,
        ),
        (
            Config {
                shared_subscription_available: false,
                ..Config::default()
            },
            None,
            Some(false),
            None,
        ),
        (
            Config {
                subscription_identifiers_available: false,
                ..Config::default()
            },
            None,
            None,
            Some(false),
        ),
    ] {
        let props = connack_properties(config, ProtocolVersion::V5);
        assert_eq!(props.wildcard_subscription_available, wildcard);
        assert_eq!(props.shared_subscription_available, shared);
        assert_eq!(props.subscription_identifiers_available, ids);
    }

    // The application cannot announce what the session does not enforce.
    let now = t0();
    let mut server = connect_received(connect_packet(ProtocolVersion::V5, "c", true), now);
    let _ = events(&mut server);
    let asked = ConnAckProperties {
        wildcard_subscription_available: Some(false),
        shared_subscription_available: Some(false),
        subscription_identifiers_available: Some(false),
        ..ConnAckProperties::default()
    };
    server.accept(asked, None, now).unwrap();
    let out = drain(&mut server);
    let [Packet::ConnAck(connack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(connack.properties.wildcard_subscription_available, None);
    assert_eq!(connack.properties.shared_subscription_available, None);
    assert_eq!(connack.properties.subscription_identifiers_available, None);

    // 3.1.1 has no CONNACK properties.
    assert_eq!(
        connack_properties(nothing_available(), ProtocolVersion::V311),
        ConnAckProperties::default()
    );
}

#[test]
fn v5_wildcard_filter_when_wildcards_are_off_is_a_protocol_error_0xa2() {
    // v5:MQTT-4.13.1-1: a Protocol Error with a reason code of its own
    // (section 3.2.2.3.11): DISCONNECT 0xA2, then close.
    let config = Config {
        wildcard_subscription_available: false,
        ..Config::default()
    };
    for filters in [
        &["a/b", "a/+"][..],
        &["#"],
        &["a/#"],
        &["+/b"],
        &["$share/g/a/+"],
    ] {
        assert_refused(
            config.clone(),
            subscribe(1, filters),
            ProtocolViolation::WildcardSubscriptionsNotSupported,
            DisconnectReasonCode::WildcardSubscriptionsNotSupported,
        );
    }
}

#[test]
fn v5_shared_filter_when_shared_subscriptions_are_off_is_a_protocol_error_0x9e() {
    // v5:MQTT-4.13.1-1 (section 3.2.2.3.13); v5:MQTT-4.8.2-1: a filter
    // starting with $share/ is a shared subscription.
    let config = Config {
        shared_subscription_available: false,
        ..Config::default()
    };
    for filters in [&["a/b", "$share/g/a/b"][..], &["$share/g/#"]] {
        assert_refused(
            config.clone(),
            subscribe(1, filters),
            ProtocolViolation::SharedSubscriptionsNotSupported,
            DisconnectReasonCode::SharedSubscriptionsNotSupported,
        );
    }
}

#[test]
fn v5_subscription_identifier_when_identifiers_are_off_is_a_protocol_error_0xa1() {
    // v5:MQTT-4.13.1-1 (section 3.2.2.3.12).
    let config = Config {
        subscription_identifiers_available: false,
        ..Config::default()
    };
    let mut packet = subscribe(1, &["a/b"]);
    packet.properties.subscription_identifier = NonZeroU32::new(7);
    assert_refused(
        config,
        packet,
        ProtocolViolation::SubscriptionIdentifiersNotSupported,
        DisconnectReasonCode::SubscriptionIdentifiersNotSupported,
    );
}

#[test]
fn v5_what_stays_available_still_reaches_the_application() {
    // Each feature turned off refuses only itself: a plain filter, and the
    // features left on, go to the application as usual.
    let now = t0();
    for (config, filters, with_id) in [
        (nothing_available(), &["a/b", "c"][..], false),
        (
            Config {
                wildcard_subscription_available: false,
                ..Config::default()
            },
            &["$share/g/a/b"],
            true,
        ),
        (
            Config {
                shared_subscription_available: false,
                ..Config::default()
            },
            &["a/+", "$sharex/#"],
            true,
        ),
        (
            Config {
                subscription_identifiers_available: false,
                ..Config::default()
            },
            &["$share/g/a/+"],
            false,
        ),
    ] {
        let mut server =
            connected_server(config, connect_packet(ProtocolVersion::V5, "c", true), now);
        let mut packet = subscribe(3, filters);
        if with_id {
            packet.properties.subscription_identifier = NonZeroU32::new(1);
        }
        server
            .handle_packet(Packet::Subscribe(packet.clone()), now)
            .unwrap();
        let evs = events(&mut server);
        assert_eq!(evs, vec![Event::Subscribe(packet)]);
    }
}

#[test]
fn v5_a_subscribe_sent_before_the_connack_is_checked_too() {
    // The client sent it before it could read the CONNACK: still a Protocol
    // Error (MQTT 5.0 section 4.13.1), after the CONNACK that announced it.
    let now = t0();
    let mut server = Session::server(nothing_available(), now);
    server
        .handle_packet(
            Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, "c", true))),
            now,
        )
        .unwrap();
    server
        .handle_packet(Packet::Subscribe(subscribe(1, &["a/#"])), now)
        .unwrap();
    let _ = events(&mut server);
    server
        .accept(ConnAckProperties::default(), None, now)
        .unwrap();
    let out = drain(&mut server);
    let [Packet::ConnAck(connack), Packet::Disconnect(d)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        connack.properties.wildcard_subscription_available,
        Some(false)
    );
    assert_eq!(
        d.reason_code,
        DisconnectReasonCode::WildcardSubscriptionsNotSupported
    );
    assert!(server.is_closed());
}

#[test]
fn v3_wildcard_filters_get_failure_and_the_others_are_granted() {
    // v3:MQTT-3.8.3-2: a server without wildcard subscriptions rejects every
    // subscription whose filter has a wildcard;
    // v3:MQTT-3.8.4-4 v3:MQTT-3.8.4-5 v3:MQTT-3.9.3-1 v3:MQTT-3.9.3-2: the
    // other filters of the same SUBSCRIBE are handled as usual, one return
    // code per filter, in order, 0x80 for the refused ones.
    let mut pair = Pair::with_configs(
        ProtocolVersion::V311,
        Config::default(),
        Config {
            wildcard_subscription_available: false,
            ..Config::default()
        },
    );
    pair.connect(true);
    let _ = pair.take_client_events();
    let _ = pair.take_server_events();
    let filters = ["a/+", "a/b", "#", "c/d", "+/e/#", "$share/g/f"];
    let sub = pair
        .client
        .subscribe(subscribe(1, &filters).filters, Default::default(), pair.now)
        .unwrap();
    pair.drive();
    // The application saw the filters without a wildcard only (the filter
    // of `$share/g/f` is `f`).
    let server_events = pair.take_server_events();
    let [Event::Subscribe(seen)] = server_events.as_slice() else {
        panic!("{server_events:?}")
    };
    let seen: Vec<&str> = seen.filters.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(seen, ["a/b", "c/d", "$share/g/f"]);
    let client_events = pair.take_client_events();
    let [
        Event::SubAck(SubAck {
            packet_id,
            reason_codes,
            ..
        }),
    ] = client_events.as_slice()
    else {
        panic!("{client_events:?}")
    };
    assert_eq!(*packet_id, sub);
    let (granted, failure) = (
        SubAckReasonCode::GrantedQoS1,
        SubAckReasonCode::UnspecifiedError,
    );
    assert_eq!(
        reason_codes,
        &vec![failure, granted, failure, granted, failure, granted]
    );
    assert!(!pair.server.is_closed());
}

#[test]
fn v3_shared_filters_get_failure_when_shared_subscriptions_are_off() {
    // v3:MQTT-3.8.4-5 v3:MQTT-3.9.3-2: one return code per filter, 0x80 for
    // a shared one (`$share/` is shared under 3.1.1 too) when the server
    // has them off; a wildcard inside a shared filter counts as a wildcard.
    let now = t0();
    let config = Config {
        shared_subscription_available: false,
        ..Config::default()
    };
    let mut server = connected_server(
        config,
        connect_packet(ProtocolVersion::V311, "c", true),
        now,
    );
    server
        .handle_packet(
            Packet::Subscribe(subscribe(3, &["$share/g/f", "f", "$sharex/g"])),
            now,
        )
        .unwrap();
    let evs = events(&mut server);
    let [Event::Subscribe(seen)] = evs.as_slice() else {
        panic!("{evs:?}")
    };
    let seen: Vec<&str> = seen.filters.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(seen, ["f", "$sharex/g"]);
    let mut server = v3_server_without_wildcards(now);
    server
        .handle_packet(
            Packet::Subscribe(subscribe(4, &["$share/g/+", "$share/g/f"])),
            now,
        )
        .unwrap();
    let evs = events(&mut server);
    let [Event::Subscribe(seen)] = evs.as_slice() else {
        panic!("{evs:?}")
    };
    assert_eq!(seen.filters.len(), 1);
    assert_eq!(seen.filters[0].0.as_str(), "$share/g/f");
}

#[test]
fn v3_a_subscribe_of_wildcards_only_is_answered_by_the_session() {
    // v3:MQTT-3.8.3-2 v3:MQTT-3.8.4-1 v3:MQTT-3.8.4-2: the SUBACK comes at
    // once, with the SUBSCRIBE's packet identifier; the application has
    // nothing to answer and the connection stays open.
    let now = t0();
    let mut server = v3_server_without_wildcards(now);
    server
        .handle_packet(Packet::Subscribe(subscribe(9, &["#", "a/+"])), now)
        .unwrap();
    assert_eq!(events(&mut server), Vec::new());
    let out: Vec<Packet> = drain(&mut server)
        .into_iter()
        .map(|p| wire(p, ProtocolVersion::V311))
        .collect();
    assert_eq!(
        out,
        vec![Packet::SubAck(SubAck::new(
            id(9),
            vec![SubAckReasonCode::UnspecifiedError; 2]
        ))]
    );
    assert!(!server.is_closed());
    // The identifier is free again, and a plain filter goes to the application.
    server
        .handle_packet(Packet::Subscribe(subscribe(9, &["a"])), now)
        .unwrap();
    let evs = events(&mut server);
    assert!(matches!(evs.as_slice(), [Event::Subscribe(_)]), "{evs:?}");
    server
        .suback(
            id(9),
            vec![SubAckReasonCode::GrantedQoS0],
            AckProperties::default(),
        )
        .unwrap();
    assert_eq!(
        drain(&mut server),
        vec![Packet::SubAck(SubAck::new(
            id(9),
            vec![SubAckReasonCode::GrantedQoS0]
        ))]
    );
}

#[test]
fn v3_the_application_answers_only_the_filters_it_saw() {
    let now = t0();
    let mut server = v3_server_without_wildcards(now);
    server
        .handle_packet(Packet::Subscribe(subscribe(2, &["a", "b/#"])), now)
        .unwrap();
    let _ = events(&mut server);
    // Two codes for the one filter it saw is an API error, and changes nothing.
    assert!(
        server
            .suback(
                id(2),
                vec![SubAckReasonCode::GrantedQoS0; 2],
                AckProperties::default()
            )
            .is_err()
    );
    server
        .suback(
            id(2),
            vec![SubAckReasonCode::NotAuthorized],
            AckProperties::default(),
        )
        .unwrap();
    assert_eq!(
        drain(&mut server),
        vec![Packet::SubAck(SubAck::new(
            id(2),
            vec![
                SubAckReasonCode::NotAuthorized,
                SubAckReasonCode::UnspecifiedError
            ]
        ))]
    );
}

#[test]
fn by_default_every_filter_reaches_the_application() {
    // Nothing turned off: wildcard, shared and identified subscriptions are
    // the application's to answer, in both versions.
    let now = t0();
    for version in VERSIONS {
        let mut server =
            connected_server(Config::default(), connect_packet(version, "c", true), now);
        let mut packet = subscribe(1, &["a/+", "#", "$share/g/a/#"]);
        if version == ProtocolVersion::V5 {
            packet.properties.subscription_identifier = NonZeroU32::new(1);
        }
        server
            .handle_packet(Packet::Subscribe(packet.clone()), now)
            .unwrap();
        assert_eq!(events(&mut server), vec![Event::Subscribe(packet)]);
    }
}

/// A client told by the CONNACK that a feature is unavailable refuses to use
/// it (a typed error, nothing sent) instead of being disconnected for it;
/// what stays available is still sent. Under 3.1.1 the server cannot say so
/// and nothing is refused. (Sections 3.2.2.3.11 to 3.2.2.3.13 carry no
/// numbered statement for the client.)
#[test]
fn a_client_does_not_send_what_the_connack_declared_unavailable() {
    use fulmar_codec::SubscribeProperties;
    use fulmar_session::ApiError;

    let mut pair = Pair::with_configs(ProtocolVersion::V5, Config::default(), nothing_available());
    pair.connect(true);
    assert!(pair.client.is_connected());
    let filters = |f: &'static str| {
        vec![(
            MqttString::from(f),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )]
    };
    let now = pair.now;
    let cases = [
        (
            filters("a/+"),
            SubscribeProperties::default(),
            ApiError::WildcardSubscriptionsNotSupported,
        ),
        (
            filters("a/#"),
            SubscribeProperties::default(),
            ApiError::WildcardSubscriptionsNotSupported,
        ),
        (
            filters("$share/g/a"),
            SubscribeProperties::default(),
            ApiError::SharedSubscriptionsNotSupported,
        ),
        (
            filters("a/b"),
            SubscribeProperties {
                subscription_identifier: Some(NonZeroU32::new(7).unwrap()),
                ..SubscribeProperties::default()
            },
            ApiError::SubscriptionIdentifiersNotSupported,
        ),
    ];
    for (filters, properties, expected) in cases {
        let result = pair.client.subscribe(filters, properties, now);
        assert_eq!(result, Err(Error::Api(expected)));
        assert!(drain(&mut pair.client).is_empty(), "nothing sent");
    }
    // A filter without a wildcard (a `+` inside a level is no wildcard level).
    pair.client
        .subscribe(filters("a/b"), SubscribeProperties::default(), now)
        .unwrap();
    pair.drive();
    assert!(pair.client.is_connected());
    assert_eq!(pair.client.subscriptions().len(), 1);

    // MQTT 3.1.1: nothing to declare, nothing refused by the client.
    let mut pair = Pair::with_configs(ProtocolVersion::V311, Config::default(), Config::default());
    pair.connect(true);
    pair.client
        .subscribe(filters("a/+"), SubscribeProperties::default(), pair.now)
        .unwrap();
    pair.drive();
    assert_eq!(pair.client.subscriptions().len(), 1);
}
