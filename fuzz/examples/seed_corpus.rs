//! Writes the hand-made seed corpus: valid encodings of every packet type for both
//! versions, streams of several packets, malformed packets, and topic strings.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//! ```
//!
//! Files are named `seed-<what>` and written into `fuzz/corpus/<target>/`; existing files
//! with the same name are overwritten, other files are left alone.

use std::fs;
use std::io;
use std::num::{NonZeroU16, NonZeroU32};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    Auth, AuthReasonCode, ConnAck, Connect, ConnectReasonCode, Disconnect, DisconnectReasonCode,
    Packet, PacketId, PayloadFormat, ProtocolVersion, PubAck, PubAckReasonCode, PubComp, PubRec,
    PubRecReasonCode, PubRel, Publish, QoS, RetainHandling, SubAck, SubAckReasonCode, Subscribe,
    SubscriptionOptions, UnsubAck, UnsubAckReasonCode, Unsubscribe, Will, decode,
};
use fulmar_fuzz::build::check_built;

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap_or(PacketId::ONE)
}

/// Every packet type `version` has, plain and (for 5.0) with properties.
fn packets(version: ProtocolVersion) -> Vec<(&'static str, Packet)> {
    let v5 = version == ProtocolVersion::V5;
    let mut connect = Connect::new(version, "client-1".into());
    connect.keep_alive = 30;
    let mut full = connect.clone();
    full.clean_start = false;
    let mut will = Will::new("last/will".into(), Bytes::from_static(b"gone"));
    will.qos = QoS::AtLeastOnce;
    will.retain = true;
    full.will = Some(will);
    full.username = Some("user".into());
    full.password = Some(Bytes::from_static(b"secret"));

    let mut publish0 = Publish::new("a/b/c".into(), Bytes::from_static(b"hello"));
    publish0.retain = true;
    let mut publish1 = Publish::new("sensors/temp".into(), Bytes::from_static(b"21.5"));
    publish1.qos = QoS::AtLeastOnce;
    publish1.packet_id = Some(id(1));
    let mut publish2 = Publish::new("$SYS/x".into(), Bytes::new());
    publish2.qos = QoS::ExactlyOnce;
    publish2.packet_id = Some(id(65535));
    publish2.dup = true;

    let mut subscribe = Subscribe::new(
        id(2),
        vec![
            ("a/+/c".into(), SubscriptionOptions::new(QoS::AtMostOnce)),
            ("#".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
    );
    let suback = SubAck::new(
        id(2),
        vec![
            SubAckReasonCode::GrantedQoS0,
            SubAckReasonCode::UnspecifiedError,
        ],
    );
    let unsubscribe = Unsubscribe::new(id(3), vec!["a/+/c".into(), "#".into()]);
    let unsuback = UnsubAck::new(
        id(3),
        if v5 {
            vec![
                UnsubAckReasonCode::Success,
                UnsubAckReasonCode::NoSubscriptionExisted,
            ]
        } else {
            Vec::new()
        },
    );

    let mut list: Vec<(&'static str, Packet)> = vec![
        ("connect", connect.into()),
        ("connect-full", full.clone().into()),
        (
            "connack",
            ConnAck::new(true, ConnectReasonCode::Success).into(),
        ),
        (
            "connack-refused",
            ConnAck::new(false, ConnectReasonCode::NotAuthorized).into(),
        ),
        ("publish-qos0", publish0.clone().into()),
        ("publish-qos1", publish1.clone().into()),
        ("publish-qos2", publish2.into()),
        ("puback", PubAck::new(id(1)).into()),
        ("pubrec", PubRec::new(id(4)).into()),
        ("pubrel", PubRel::new(id(4)).into()),
        ("pubcomp", PubComp::new(id(4)).into()),
        ("subscribe", subscribe.clone().into()),
        ("suback", suback.clone().into()),
        ("unsubscribe", unsubscribe.into()),
        ("unsuback", unsuback.clone().into()),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        ("disconnect", Disconnect::default().into()),
    ];
    if !v5 {
        return list;
    }

    let p = &mut full.properties;
    p.session_expiry_interval = Some(3600);
    p.receive_maximum = NonZeroU16::new(20);
    p.maximum_packet_size = NonZeroU32::new(65536);
    p.topic_alias_maximum = Some(10);
    p.request_response_information = Some(true);
    p.request_problem_information = Some(false);
    p.user_properties.push(("k".into(), "v".into()));
    p.authentication_method = Some("SCRAM-SHA-1".into());
    p.authentication_data = Some(Bytes::from_static(b"\x01\x02"));
    if let Some(w) = &mut full.will {
        let wp = &mut w.properties;
        wp.will_delay_interval = Some(5);
        wp.payload_format_indicator = Some(PayloadFormat::Utf8);
        wp.message_expiry_interval = Some(60);
        wp.content_type = Some("text/plain".into());
        wp.response_topic = Some("reply/here".into());
        wp.correlation_data = Some(Bytes::from_static(b"corr"));
        wp.user_properties.push(("a".into(), "b".into()));
    }

    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    let cp = &mut connack.properties;
    cp.session_expiry_interval = Some(0);
    cp.receive_maximum = NonZeroU16::new(100);
    cp.maximum_qos = Some(QoS::AtLeastOnce);
    cp.retain_available = Some(false);
    cp.maximum_packet_size = NonZeroU32::new(1024);
    cp.assigned_client_identifier = Some("auto-123".into());
    cp.topic_alias_maximum = Some(5);
    cp.reason_string = Some("welcome".into());
    cp.wildcard_subscription_available = Some(true);
    cp.subscription_identifiers_available = Some(true);
    cp.shared_subscription_available = Some(false);
    cp.server_keep_alive = Some(120);
    cp.response_information = Some("resp".into());
    cp.server_reference = Some("other:1883".into());
    cp.authentication_method = Some("SCRAM-SHA-1".into());

    let pp = &mut publish1.properties;
    pp.payload_format_indicator = Some(PayloadFormat::Utf8);
    pp.message_expiry_interval = Some(30);
    pp.topic_alias = NonZeroU16::new(3);
    pp.response_topic = Some("reply".into());
    pp.correlation_data = Some(Bytes::from_static(b"42"));
    pp.user_properties.push(("unit".into(), "C".into()));
    pp.subscription_identifiers.extend(NonZeroU32::new(1));
    pp.subscription_identifiers
        .extend(NonZeroU32::new(268_435_455));
    pp.content_type = Some("text/plain".into());
    let mut aliased = publish0;
    aliased.topic = fulmar_codec::MqttString::new();
    aliased.properties.topic_alias = NonZeroU16::new(3);

    subscribe.filters.push((
        "$share/group/x/#".into(),
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        },
    ));
    subscribe.filters.push((
        "own/+".into(),
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribeIfNew,
        },
    ));
    subscribe.properties.subscription_identifier = NonZeroU32::new(777);
    subscribe
        .properties
        .user_properties
        .push(("s".into(), "t".into()));
    let mut unsub_props = Unsubscribe::new(id(9), vec!["x".into()]);
    unsub_props
        .properties
        .user_properties
        .push(("u".into(), "v".into()));

    let mut puback = PubAck::new(id(7));
    puback.reason_code = PubAckReasonCode::NoMatchingSubscribers;
    let mut puback_props = PubAck::new(id(7));
    puback_props.reason_code = PubAckReasonCode::QuotaExceeded;
    puback_props.properties.reason_string = Some("slow down".into());
    puback_props
        .properties
        .user_properties
        .push(("x".into(), "y".into()));
    let mut pubrec = PubRec::new(id(8));
    pubrec.reason_code = PubRecReasonCode::PacketIdentifierInUse;
    let mut suback = suback;
    suback.reason_codes.push(SubAckReasonCode::GrantedQoS2);
    suback
        .reason_codes
        .push(SubAckReasonCode::SharedSubscriptionsNotSupported);
    suback.properties.reason_string = Some("partly".into());
    let mut unsuback = unsuback;
    unsuback
        .properties
        .user_properties
        .push(("n".into(), "m".into()));
    let mut disconnect = Disconnect::new(DisconnectReasonCode::ServerMoved);
    disconnect.properties.session_expiry_interval = Some(10);
    disconnect.properties.reason_string = Some("bye".into());
    disconnect.properties.server_reference = Some("elsewhere".into());
    disconnect
        .properties
        .user_properties
        .push(("d".into(), "e".into()));
    let mut auth = Auth {
        reason_code: AuthReasonCode::ContinueAuthentication,
        ..Auth::default()
    };
    auth.properties.authentication_method = Some("SCRAM-SHA-1".into());
    auth.properties.authentication_data = Some(Bytes::from_static(b"challenge"));
    auth.properties.reason_string = Some("more".into());

    list.extend([
        ("connect-properties", full.into()),
        ("connack-properties", connack.into()),
        ("publish-properties", publish1.into()),
        ("publish-alias", aliased.into()),
        ("puback-reason", puback.into()),
        ("puback-properties", puback_props.into()),
        ("pubrec-reason", pubrec.into()),
        ("subscribe-options", subscribe.into()),
        ("suback-properties", suback.into()),
        ("unsubscribe-properties", unsub_props.into()),
        ("unsuback-properties", unsuback.into()),
        (
            "disconnect-reason",
            Disconnect::new(DisconnectReasonCode::KeepAliveTimeout).into(),
        ),
        ("disconnect-properties", disconnect.into()),
        ("auth", Auth::default().into()),
        ("auth-properties", auth.into()),
    ]);
    list
}

/// Hand-made malformed inputs (and `edge-` cases that are not errors), as hex, for both
/// versions.
const MALFORMED: &[(&str, &str)] = &[
    ("empty-remaining-length-overflow", "30ffffffff7f"),
    ("remaining-length-too-large", "30ffffff7f"),
    ("reserved-type-0", "0000"),
    ("reserved-flags-puback", "41020001"),
    ("pubrel-wrong-flags", "60020001"),
    ("publish-qos3", "36050001740001"),
    ("publish-dup-qos0", "3803000174"),
    ("publish-wildcard-topic", "3003000123"),
    ("publish-empty-topic", "30020000"),
    ("publish-truncated-topic", "300300057478"),
    ("puback-id-zero", "40020000"),
    ("connect-bad-name", "100c00044d5154580402003c0000"),
    ("connect-level-3", "100c00044d5154540302003c0000"),
    ("connect-reserved-flag", "100c00044d5154540403003c0000"),
    ("connect-password-only", "100e00044d5154540442003c00000000"),
    (
        "edge-connect-non-minimal-length",
        "108c0000044d5154540402003c0000",
    ),
    ("subscribe-no-filters", "82020001"),
    ("subscribe-bad-options", "8206000100017803"),
    ("suback-no-codes", "90020001"),
    ("string-invalid-utf8", "30040002c3280000"),
    ("string-null", "3004000261006100"),
    ("trailing-bytes-pingreq", "c00100"),
    ("edge-incomplete-header", "30"),
    ("edge-incomplete-body", "300a0003612f62"),
];

/// Malformed 5.0-only inputs.
const MALFORMED_V5: &[(&str, &str)] = &[
    ("property-duplicate", "300e0001740a02000000010200000002"),
    ("property-unknown", "3006000174027f00"),
    ("property-wrong-packet", "3009000174051100000000"),
    ("property-length-past-end", "3005000174097f"),
    ("payload-format-2", "3006000174020102"),
    ("topic-alias-zero", "300700017403230000"),
    ("subscription-id-zero", "3006000174020b00"),
    ("auth-data-without-method", "f0050003160000"),
    ("non-minimal-remaining-length", "3084000000017400"),
    ("disconnect-bad-reason", "e00103"),
    ("subscribe-reserved-options", "8207000100000178c0"),
    (
        "subscribe-no-local-shared",
        "8212000100000c2473686172652f672f782f7904",
    ),
    ("publish-wildcard-topic-v5", "300400012300"),
    ("publish-empty-topic-v5", "3003000000"),
    ("subscribe-no-filters-v5", "8203000100"),
    ("subscribe-qos3-v5", "820700010000017803"),
    ("suback-no-codes-v5", "9003000100"),
];

/// Topic strings and trie scripts for `topic_parse`.
const TOPICS: &[(&str, &[u8])] = &[
    ("name", b"sport/tennis/player1"),
    ("name-dollar", b"$SYS/broker/uptime"),
    ("name-empty-levels", b"//a//"),
    ("name-utf8", "capteurs/température".as_bytes()),
    ("name-null", b"a\0b"),
    ("name-invalid-utf8", b"a/\xc3\x28"),
    ("filter-plus", b"sport/+/player1"),
    ("filter-hash", b"sport/#"),
    ("filter-hash-only", b"#"),
    ("filter-plus-only", b"+"),
    ("filter-hash-middle", b"a/#/b"),
    ("filter-plus-glued", b"a/b+/c"),
    ("filter-hash-glued", b"a/b#"),
    ("shared", b"$share/group/sport/#"),
    ("shared-empty-group", b"$share//x"),
    ("shared-no-filter", b"$share/group"),
    ("shared-bad-group", b"$share/g+/x"),
    ("shared-prefix-only", b"$share/"),
    ("match-plus", b"sport/+\nsport/tennis"),
    ("match-hash-parent", b"sport/#\nsport"),
    ("match-dollar", b"+/x\n$SYS/x"),
    ("match-dollar-hash", b"#\n$SYS"),
    ("match-empty-level", b"a/+/b\na//b"),
    // Trie scripts: header byte, then level bytes (see topic_checks::script).
    ("script-sub-pub", b"\x00\x00\x09\x02\x00\x09"),
    (
        "script-shared",
        b"\x10\x0e\x14\x0e\x30\x0e\x02\x00\x09\x02\x0c",
    ),
    (
        "script-unsub-remove",
        b"\x04\x06\x00\x0d\x05\x06\x00\x0d\x07\x02\x08",
    ),
    ("script-dollar", b"\x00\x0e\x00\x05\x08\x02\x04\x08\x02\x0c"),
];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| s.get(2 * i..2 * i + 2))
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

fn main() -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut count = 0;
    for (version, target, malformed) in [
        (ProtocolVersion::V311, "decode_v311", &[][..]),
        (ProtocolVersion::V5, "decode_v5", MALFORMED_V5),
    ] {
        let dir = root.join(target);
        let mut stream = BytesMut::new();
        for (name, packet) in packets(version) {
            assert!(check_built(&packet, version, true), "{name} must encode");
            let mut wire = BytesMut::new();
            packet
                .encode(version, &mut wire)
                .map_err(|e| io::Error::other(e.to_string()))?;
            write(&dir, name, &wire)?;
            // The roundtrip target reads a mode byte (bit 0: 5.0), then builds from the rest:
            // the encodings are as good a start as any bytes.
            let mut rt = vec![u8::from(version == ProtocolVersion::V5)];
            rt.extend_from_slice(&wire);
            write(&root.join("roundtrip"), &format!("{target}-{name}"), &rt)?;
            stream.extend_from_slice(&wire);
            count += 2;
        }
        write(&dir, "stream-all", &stream)?;
        for (name, h) in MALFORMED.iter().chain(malformed) {
            let bytes = hex(h);
            // Each is refused, but for the edge cases (incomplete, or accepted by 3.1.1).
            let mut buf = BytesMut::from(&bytes[..]);
            let result = decode(&mut buf, version, 1 << 20);
            assert!(
                result.is_err() || name.starts_with("edge-"),
                "{target} {name}: {result:?}"
            );
            write(&dir, name, &bytes)?;
            count += 1;
        }
    }
    for (name, bytes) in TOPICS {
        write(&root.join("topic_parse"), name, bytes)?;
        count += 1;
    }
    println!("wrote {count} seed files under {}", root.display());
    Ok(())
}
