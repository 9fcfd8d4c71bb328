//! MQTT 5.0 request/response with many requests in flight at once: each
//! request carries a Response Topic, Correlation Data, a Message Expiry
//! Interval and User Properties; the requester matches answers to requests
//! by Correlation Data and gives up on each after a timeout.
//!
//! ```text
//! cargo run -p fulmar-examples --example request_timeout
//! ```
//!
//! Self-contained: it starts an embedded fulmar broker on 127.0.0.1. The
//! simpler `request_response` example asks one question at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use fulmar_broker::Broker;
use fulmar_client::{Client, ConnectOptions, Error, Message, QoS, Subscription};
use tokio::sync::oneshot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The answers awaited, by Correlation Data.
type Pending = Arc<Mutex<HashMap<Bytes, oneshot::Sender<Message>>>>;

/// The table of `pending` (a panic while it was held leaves it usable).
fn lock(pending: &Pending) -> MutexGuard<'_, HashMap<Bytes, oneshot::Sender<Message>>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The value of the first User Property named `key`.
fn user_property<'m>(message: &'m Message, key: &str) -> Option<&'m str> {
    message
        .properties
        .user_properties
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v.as_str())
}

/// Answers the requests of `requests` (`service/square/#`) with the square of their number,
/// echoing the Correlation Data and the `trace-id` User Property. Numbers
/// above 1000 take too long, to show the requester's timeout.
async fn responder(client: Client, mut requests: Subscription) {
    while let Some(request) = requests.recv().await {
        let Some(reply_to) = request.properties.response_topic.clone() else {
            continue; // not a request: nowhere to answer
        };
        let client = client.clone();
        tokio::spawn(async move {
            let text = String::from_utf8_lossy(&request.payload);
            let (status, body) = match text.trim().parse::<i64>() {
                Ok(n) if n > 1000 => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    ("ok", (n * n).to_string())
                }
                Ok(n) => ("ok", (n * n).to_string()),
                Err(e) => ("bad-request", e.to_string()),
            };
            // The answer goes to the Response Topic as received.
            let mut answer = client
                .publish(&reply_to, body)
                .qos(QoS::AtLeastOnce)
                .user_property("status", status);
            if let Some(correlation) = &request.properties.correlation_data {
                answer = answer.correlation_data(correlation.clone());
            }
            if let Some(trace) = user_property(&request, "trace-id") {
                answer = answer.user_property("trace-id", trace);
            }
            let sent = answer.await;
            if let Err(e) = sent {
                eprintln!("responder: answer lost: {e}");
            }
        });
    }
}

/// The requesting side: one reply topic for the whole client, and a task
/// that hands each answer to the request waiting for it.
#[derive(Clone)]
struct Requester {
    client: Client,
    reply_topic: String,
    pending: Pending,
}

impl Requester {
    async fn new(client: Client, reply_topic: String) -> Result<Self, Error> {
        let mut replies = client.subscribe(&reply_topic, QoS::AtLeastOnce).await?;
        let pending: Pending = Arc::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Some(reply) = replies.recv().await {
                let Some(correlation) = reply.properties.correlation_data.clone() else {
                    continue;
                };
                let waiter = lock(&waiting).remove(&correlation);
                match waiter {
                    // The requester may have given up meanwhile.
                    Some(waiter) => drop(waiter.send(reply)),
                    None => eprintln!("late or unknown answer {correlation:?} dropped"),
                }
            }
        });
        Ok(Self {
            client,
            reply_topic,
            pending,
        })
    }

    /// Sends `payload` to `topic` and waits up to `wait` for the answer.
    async fn request(
        &self,
        topic: &str,
        payload: String,
        trace_id: &str,
        wait: Duration,
    ) -> Result<Message, BoxError> {
        let correlation = Bytes::from(format!("{trace_id}:{payload}"));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(correlation.clone(), tx);
        let sent = self
            .client
            .publish(topic, payload)
            .qos(QoS::AtLeastOnce)
            .response_topic(&self.reply_topic)
            .correlation_data(correlation.clone())
            // A request nobody took within the timeout is of no use later.
            .message_expiry_interval(wait.as_secs().try_into().unwrap_or(u32::MAX))
            .user_property("trace-id", trace_id)
            .await;
        if let Err(e) = sent {
            lock(&self.pending).remove(&correlation);
            return Err(e.into());
        }
        let answer = tokio::time::timeout(wait, rx).await;
        lock(&self.pending).remove(&correlation);
        match answer {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err("client closed".into()),
            Err(_) => Err(format!("no answer within {wait:?}").into()),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let broker = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .start()
        .await?;
    let port = broker.local_addrs()[0].port();

    let (server, _) =
        Client::connect(ConnectOptions::new("127.0.0.1", port).client_id("square-service")).await?;
    // Subscribed before any request is sent: a request published before
    // reaches nobody (PUBACK 0x10 No matching subscribers).
    let requests = server
        .subscribe("service/square/#", QoS::AtLeastOnce)
        .await?;
    let responder_task = tokio::spawn(responder(server.clone(), requests));

    // The broker assigns the requester's identifier; the reply topic is
    // made from it, so that no other client shares it.
    let (client, connack) = Client::connect(ConnectOptions::new("127.0.0.1", port)).await?;
    let id = connack
        .properties
        .assigned_client_identifier
        .as_ref()
        .map_or("requester", |id| id.as_str());
    let requester = Requester::new(client.clone(), format!("replies/{id}")).await?;

    // Several requests at once; the last one times out.
    let asks = [3_i64, 12, 40, 5000].map(|n| {
        let requester = requester.clone();
        tokio::spawn(async move {
            let answer = requester
                .request(
                    "service/square/v1",
                    n.to_string(),
                    &format!("trace-{n}"),
                    Duration::from_secs(1),
                )
                .await;
            (n, answer)
        })
    });
    let mut answered = 0;
    for ask in asks {
        let (n, answer) = ask.await?;
        match answer {
            Ok(reply) => {
                answered += 1;
                println!(
                    "{n}^2 = {} (status {:?}, trace {:?})",
                    String::from_utf8_lossy(&reply.payload),
                    user_property(&reply, "status"),
                    user_property(&reply, "trace-id"),
                );
            }
            Err(e) => println!("{n}: {e}"),
        }
    }
    assert_eq!(answered, 3);

    client.disconnect().await?;
    server.disconnect().await?;
    responder_task.await?;
    broker.shutdown().await;
    Ok(())
}
