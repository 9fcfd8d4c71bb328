//! Publishes one message at each QoS and prints how each flow completed.
//!
//! ```text
//! cargo run -p fulmar-examples --example publish [HOST:PORT] [TOPIC]
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
    let topic = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "fulmar/example".to_owned());
    let options = ConnectOptions::new(host.clone(), port)
        .client_id("fulmar-example-publish")
        .connect_timeout(Duration::from_secs(5))
        .reconnect(Reconnect::disabled());
    let client = match Client::connect(options).await {
        Ok((client, _connack)) => client,
        Err(e) => {
            eprintln!("no MQTT broker at {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("hello at QoS {}", u8::from(qos));
        match client.publish(topic.clone(), payload).qos(qos).await {
            Ok(outcome) => println!(
                "{topic}: QoS {} done: {}",
                u8::from(qos),
                outcome.reason_code
            ),
            Err(e) => {
                eprintln!("publish failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = client.disconnect().await {
        eprintln!("disconnect failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
