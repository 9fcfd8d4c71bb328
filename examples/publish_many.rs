//! Publishes many QoS 1 messages as fast as the broker takes them, with
//! memory bounded by a window of publishes awaited at once, and knows when
//! every one was acknowledged.
//!
//! ```text
//! cargo run --release -p fulmar-examples --example publish_many [COUNT] [WINDOW]
//! ```
//!
//! Self-contained: it starts an embedded fulmar broker on 127.0.0.1 and a
//! subscriber that counts what arrives. COUNT defaults to 100 000, WINDOW
//! to 1024.

use std::time::{Duration, Instant};

use fulmar_broker::Broker;
use fulmar_client::{Client, ConnectOptions, QoS, TopicName};
use futures::StreamExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    // Publishes beyond the broker's send quota wait in the client's queue,
    // bounded by `max_buffered_publishes` (1024 by default), and beyond it,
    // while connected, for room: the window bounds what is in memory.
    let window: usize = args.next().map_or(Ok(1024), |a| a.parse())?;

    let broker = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .start()
        .await?;
    let port = broker.local_addrs()[0].port();

    // A subscriber that counts what arrives, to check that nothing was lost.
    let (subscriber, _) = Client::connect(ConnectOptions::new("127.0.0.1", port)).await?;
    let mut stream = subscriber.subscribe("load/#", QoS::AtLeastOnce).await?;
    let counter = tokio::spawn(async move {
        let mut received = 0;
        while received < count {
            match tokio::time::timeout(Duration::from_secs(10), stream.recv()).await {
                Ok(Some(_)) => received += 1,
                _ => break,
            }
        }
        received
    });

    let (client, connack) = Client::connect(
        ConnectOptions::new("127.0.0.1", port)
            .client_id("publish-many")
            // The most QoS 1/2 messages sent without acknowledgement (20 by
            // default); the broker's Receive Maximum bounds it too.
            .max_inflight(1000),
    )
    .await?;
    println!(
        "broker Receive Maximum: {}",
        connack
            .properties
            .receive_maximum
            .map_or(65_535, |m| m.get())
    );
    // Checked once, shared by every publish (no copy, no check again).
    let topic: TopicName = "load/test".parse()?;
    let start = Instant::now();
    // At most `window` publishes awaited at once; each completes at its
    // PUBACK (or fails), so once the stream is drained every message was
    // acknowledged.
    let mut outcomes = futures::stream::iter(0..count)
        .map(|i| {
            client
                .publish(&topic, i.to_string())
                .qos(QoS::AtLeastOnce)
                .into_future()
        })
        .buffer_unordered(window);
    let mut failed = 0usize;
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            // Under MQTT 5.0 a PUBACK may say 0x10 No matching subscribers:
            // acknowledged all the same.
            Ok(_acknowledged) => {}
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("publish failed: {e}");
                }
            }
        }
    }
    drop(outcomes);
    let elapsed = start.elapsed();
    println!(
        "{} acknowledged, {failed} failed, in {elapsed:.2?} ({:.0} messages/s)",
        count - failed,
        count as f64 / elapsed.as_secs_f64()
    );
    let received = counter.await?;
    println!("the subscriber received {received}");
    client.disconnect().await?;
    subscriber.disconnect().await?;
    broker.shutdown().await;
    if failed > 0 || received < count {
        return Err("messages lost".into());
    }
    Ok(())
}
