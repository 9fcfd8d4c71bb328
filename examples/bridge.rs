//! Bridges two brokers, as an edge site and a cloud broker would be: the
//! edge forwards its `sensors/#` readings to the cloud under `site-7/`, and
//! takes the cloud's commands for it (`site-7/cmd/#`) as `cmd/#`. Both
//! brokers run in this process; in production the cloud side would be any
//! MQTT broker (mosquitto, another fulmar) reached over TCP or TLS.
//!
//! Run with `cargo run -p fulmar-examples --example bridge`.

use fulmar_bridge::{Direction, MqttBridge, Remote, TopicRule};
use fulmar_broker::Broker;
use fulmar_client::{ConnectOptions, QoS};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cloud = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .start()
        .await?;
    let cloud_addr = cloud.local_addrs()[0];

    // The edge keeps a session on the cloud broker, so that nothing is lost
    // while the link is down: Clean Start 0 and a Session Expiry Interval.
    let options = ConnectOptions::new(cloud_addr.ip().to_string(), cloud_addr.port())
        .client_id("site-7")
        .clean_start(false)
        .session_expiry_interval(3600);
    let remote = Remote::new("cloud", options)
        .rule(
            TopicRule::new("sensors/#", Direction::Out)?
                .qos(QoS::AtLeastOnce)
                .prefixes("", "site-7/")?,
        )
        .rule(
            TopicRule::new("cmd/#", Direction::In)?
                .qos(QoS::AtLeastOnce)
                .prefixes("", "site-7/")?,
        );
    let bridge = MqttBridge::new([remote])?;
    let edge = Broker::builder().bridge(bridge.bridge()).start().await?;
    bridge.attach(&edge);
    bridge.wait_connected().await;
    println!("edge bridged to the cloud broker at {cloud_addr}");

    let mut readings = cloud.subscribe("site-7/sensors/#")?;
    let mut commands = edge.subscribe("cmd/#")?;

    edge.publish("sensors/hall/temp", "21.5", QoS::AtLeastOnce, false)?;
    let reading = readings.recv().await.ok_or("cloud stopped")?;
    println!(
        "cloud got {} = {}",
        reading.topic,
        String::from_utf8_lossy(&reading.payload)
    );

    cloud.publish("site-7/cmd/fan", "on", QoS::AtLeastOnce, false)?;
    let command = commands.recv().await.ok_or("edge stopped")?;
    println!(
        "edge got {} = {}",
        command.topic,
        String::from_utf8_lossy(&command.payload)
    );

    for remote in bridge.stats() {
        println!(
            "bridge {}: connected {}, sent {}, received {}, dropped {}",
            remote.name, remote.connected, remote.sent, remote.received, remote.dropped
        );
    }
    bridge.shutdown().await;
    edge.shutdown().await;
    cloud.shutdown().await;
    Ok(())
}
