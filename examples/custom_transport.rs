//! A client and an embedded broker joined by an in-memory pipe instead of a
//! socket: the client's `Transport::custom` opens a pipe for every connection
//! attempt, and the broker serves the other end with
//! `BrokerHandle::serve_connection`. The same two calls carry MQTT over a
//! Unix domain socket, a QUIC stream or any other byte stream.
//!
//! Run with `cargo run -p fulmar-examples --example custom_transport`.

use fulmar_broker::Broker;
use fulmar_client::{Client, ConnectOptions, QoS, Transport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // No listener at all: nothing is reachable from the network.
    let broker = Broker::builder().start().await?;

    let served = broker.clone();
    let transport = Transport::custom(move || {
        let (client_end, broker_end) = tokio::io::duplex(64 * 1024);
        // The address the broker's logs and authenticator see for this client.
        let _connection = served.serve_connection(broker_end, ([127, 0, 0, 1], 0).into());
        async move { Ok(client_end) }
    });
    let options = ConnectOptions::new("in-memory", 0)
        .client_id("worker")
        .transport(transport);
    let (client, _connack) = Client::connect(options).await?;

    let mut jobs = client.subscribe("jobs/+", QoS::AtLeastOnce).await?;
    broker.publish("jobs/1", "resize image.png", QoS::AtLeastOnce, false)?;
    let job = jobs.recv().await.ok_or("broker stopped")?;
    println!("worker got {} = {:?}", job.topic, job.payload);
    assert_eq!(job.payload, "resize image.png");

    let mut done = broker.subscribe("done/#")?;
    client.publish("done/1", "ok").qos(QoS::AtLeastOnce).await?;
    let reply = done.recv().await.ok_or("broker stopped")?;
    println!("application got {} = {:?}", reply.topic, reply.payload);

    println!("connections: {}", broker.stats().connections);
    client.disconnect().await?;
    broker.shutdown().await;
    Ok(())
}
