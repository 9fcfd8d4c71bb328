//! Embeds a broker in an application: the application publishes and
//! subscribes in process (no socket), a device connects over TCP with the
//! fulmar client, and an authorizer keeps devices from writing to `admin/`.
//!
//! Run with `cargo run -p fulmar-examples --example embedded_broker`.

use fulmar_broker::{Authorizer, Broker, ClientInfo};
use fulmar_client::{Client, ConnectOptions, Error, QoS, ReasonCode};

/// Devices may subscribe to anything but not publish under `admin/`.
struct NoAdminWrites;

#[async_trait::async_trait]
impl Authorizer for NoAdminWrites {
    async fn authorize_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        !topic.starts_with("admin/")
    }

    async fn authorize_subscribe(&self, _client: &ClientInfo, _filter: &str) -> bool {
        true
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .max_queued_messages(100)
        .authorizer(NoAdminWrites)
        .start()
        .await?;
    let addr = broker.local_addrs()[0];
    println!("broker listening on {addr}");

    // The application: watches sensor readings and retains a setting.
    let mut readings = broker.subscribe("sensors/#")?;
    broker.publish("config/interval", "5", QoS::AtLeastOnce, true)?;

    // A device over TCP: gets the retained setting, reports a reading.
    let options = ConnectOptions::new("127.0.0.1", addr.port()).client_id("device-1");
    let (device, _connack) = Client::connect(options).await?;
    let mut config = device.subscribe("config/#", QoS::AtLeastOnce).await?;
    let setting = config.recv().await.ok_or("no retained setting")?;
    println!(
        "device got {} = {:?} (retained: {})",
        setting.topic, setting.payload, setting.retain
    );

    device
        .publish("sensors/device-1/temp", "21.5")
        .qos(QoS::AtLeastOnce)
        .await?;
    let reading = readings.recv().await.ok_or("broker stopped")?;
    println!("application got {} = {:?}", reading.topic, reading.payload);
    assert_eq!(reading.payload, "21.5");

    // Not allowed: the broker answers PUBACK 0x87 and drops the message.
    let denied = device
        .publish("admin/reboot", "now")
        .qos(QoS::AtLeastOnce)
        .await;
    println!("publish to admin/reboot: {denied:?}");
    assert!(matches!(
        denied,
        Err(Error::PublishRejected {
            reason_code: ReasonCode::NotAuthorized,
            ..
        })
    ));

    device.disconnect().await?;
    broker.shutdown().await;
    println!("stats after shutdown: {:?}", broker.stats());
    Ok(())
}
