//! MQTT 5.0 request/response: a responder answers on the Response Topic of
//! each request, echoing its Correlation Data; a requester matches the
//! answer to its question.
//!
//! ```text
//! cargo run -p fulmar-examples --example request_response [HOST:PORT]
//! ```
//!
//! The broker address comes from the first argument, else `FULMAR_BROKER`,
//! else 127.0.0.1:1883. The broker must speak MQTT 5.0.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use fulmar_client::{Client, ConnectOptions, Error, PublishProperties, QoS, Reconnect};
use tokio::sync::oneshot;

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

/// Answers every request on `fulmar/rpc/square` with the square of its
/// number; says on `ready` when it is subscribed.
async fn responder(client: Client, ready: oneshot::Sender<()>) -> Result<(), Error> {
    let mut requests = client
        .subscribe("fulmar/rpc/square", QoS::AtLeastOnce)
        .await?;
    let _ = ready.send(());
    while let Some(request) = requests.recv().await {
        let Some(reply_to) = request.properties.response_topic.clone() else {
            continue;
        };
        let n: i64 = String::from_utf8_lossy(&request.payload)
            .trim()
            .parse()
            .unwrap_or(0);
        let properties = PublishProperties {
            correlation_data: request.properties.correlation_data.clone(),
            ..PublishProperties::default()
        };
        client
            .publish(reply_to.to_string(), (n * n).to_string())
            .qos(QoS::AtLeastOnce)
            .properties(properties)
            .await?;
    }
    Ok(())
}

async fn run(host: &str, port: u16) -> Result<(), Error> {
    let options = |id: &str| {
        ConnectOptions::new(host, port)
            .client_id(id)
            .connect_timeout(Duration::from_secs(5))
            .reconnect(Reconnect::disabled())
    };
    let (server, _) = Client::connect(options("fulmar-example-responder")).await?;
    let (client, _) = Client::connect(options("fulmar-example-requester")).await?;
    // Subscribe before the responder starts answering, then start it.
    let mut replies = client
        .subscribe("fulmar/rpc/replies/requester", QoS::AtLeastOnce)
        .await?;
    // The responder's subscription must exist before the first request: a
    // request published before it reaches nobody (a broker may answer it
    // with 0x10 No matching subscribers, but need not).
    let (ready, subscribed) = oneshot::channel();
    let responder_task = tokio::spawn(responder(server.clone(), ready));
    subscribed.await.map_err(|_| Error::Closed)?;
    for n in [3_i64, 12, 40] {
        let correlation = Bytes::from(format!("request-{n}"));
        let properties = PublishProperties {
            response_topic: Some("fulmar/rpc/replies/requester".into()),
            correlation_data: Some(correlation.clone()),
            ..PublishProperties::default()
        };
        client
            .publish("fulmar/rpc/square", n.to_string())
            .qos(QoS::AtLeastOnce)
            .properties(properties)
            .await?;
        let reply = replies.recv().await.ok_or(Error::Closed)?;
        assert_eq!(
            reply.properties.correlation_data.as_ref(),
            Some(&correlation)
        );
        println!("{n}^2 = {}", String::from_utf8_lossy(&reply.payload));
    }
    client.disconnect().await?;
    server.disconnect().await?;
    let _ = responder_task.await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (host, port) = broker_address();
    match run(&host, port).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (Error::Io(_) | Error::ConnectTimeout)) => {
            eprintln!("no MQTT broker at {host}:{port}: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("request/response failed: {e}");
            ExitCode::FAILURE
        }
    }
}
