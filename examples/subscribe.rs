//! Subscribes to a filter and prints messages until ten arrived or none came
//! for ten seconds. Publish with `mosquitto_pub -t fulmar/hello -m hi` or the
//! `publish` example.
//!
//! ```text
//! cargo run -p fulmar-examples --example subscribe [HOST:PORT] [FILTER]
//! ```
//!
//! The broker address comes from the first argument, else `FULMAR_BROKER`,
//! else 127.0.0.1:1883.

use std::process::ExitCode;
use std::time::Duration;

use fulmar_client::{Client, ConnectOptions, QoS, Reconnect};

fn broker_address() -> (String, u16) {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("FULMAR_BROKER").ok())
        .unwrap_or_else(|| "127.0.0.1:1883".to_owned());
    match addr.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((host, Ok(port))) => (host.to_owned(), port),
        _ => (addr, 1883),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (host, port) = broker_address();
    let filter = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "fulmar/#".to_owned());
    let options = ConnectOptions::new(host.clone(), port)
        .connect_timeout(Duration::from_secs(5))
        // Keep going across broker restarts: back off from 100 ms to 5 s.
        .reconnect(Reconnect::exponential(
            Duration::from_millis(100),
            Duration::from_secs(5),
        ));
    let client = match Client::connect(options).await {
        Ok((client, _connack)) => client,
        Err(e) => {
            eprintln!("no MQTT broker at {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stream = match client.subscribe(&filter, QoS::ExactlyOnce).await {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("subscribe to {filter} failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("subscribed to {filter}: {:?}", stream.suback().reason_codes);
    let mut received = 0;
    while received < 10 {
        match tokio::time::timeout(Duration::from_secs(10), stream.recv()).await {
            Ok(Some(message)) => {
                received += 1;
                println!(
                    "{} (QoS {}{}): {}",
                    message.topic,
                    u8::from(message.qos),
                    if message.retain { ", retained" } else { "" },
                    String::from_utf8_lossy(&message.payload)
                );
            }
            Ok(None) => break,
            Err(_idle) => {
                println!("nothing for 10 s, done");
                break;
            }
        }
    }
    drop(stream); // unsubscribes
    if let Err(e) = client.disconnect().await {
        eprintln!("disconnect failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
