//! Encode an MQTT 5.0 PUBLISH, feed the bytes to the streaming decoder in two
//! chunks as a socket would deliver them, and print what comes out.
//!
//! ```sh
//! cargo run -p fulmar-examples --example codec_roundtrip
//! ```

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    MqttString, Packet, PacketId, ProtocolVersion, Publish, PublishProperties, QoS,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let version = ProtocolVersion::V5;
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: MqttString::try_from_static("sensors/kitchen/temp")?,
        packet_id: PacketId::new(7),
        payload: Bytes::from_static(b"21.5"),
        properties: PublishProperties {
            content_type: Some(MqttString::try_from_static("text/plain")?),
            ..PublishProperties::default()
        },
    };
    let packet = Packet::from(publish);

    let mut wire = BytesMut::new();
    packet.encode(version, &mut wire)?;
    println!(
        "encoded {} bytes (encoded_len said {})",
        wire.len(),
        packet.encoded_len(version)?
    );

    // The first chunk holds only part of the packet: the decoder asks for more.
    let mut rx = BytesMut::new();
    let rest = wire.split_off(5);
    rx.extend_from_slice(&wire);
    assert!(fulmar_codec::decode(&mut rx, version, 1024)?.is_none());
    println!("after 5 bytes: need more");

    rx.extend_from_slice(&rest);
    let decoded = fulmar_codec::decode(&mut rx, version, 1024)?.ok_or("incomplete packet")?;
    assert_eq!(decoded, packet);
    if let Packet::Publish(p) = &decoded {
        println!(
            "decoded PUBLISH topic={} qos={:?} id={:?} payload={:?}",
            p.topic, p.qos, p.packet_id, p.payload
        );
    }
    Ok(())
}
