//! A durable consumer: a persistent session (Clean Start 0, Session Expiry
//! Interval), QoS 1 and QoS 2 subscriptions, each message acknowledged only
//! after it was processed (manual acknowledgements), reconnecting with
//! back-off. It survives a network cut, a broker restart and its own
//! restart without losing a message.
//!
//! ```text
//! cargo run -p fulmar-examples --example durable_consumer
//! ```
//!
//! Self-contained: it starts an embedded fulmar broker on 127.0.0.1 (its
//! sessions kept in a `MemoryStore`, so that a restarted broker recovers
//! them) and a TCP relay between the consumer and the broker, which it cuts
//! to simulate a network failure.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fulmar_broker::{Broker, BrokerHandle, MemoryStore};
use fulmar_client::{
    Client, ConnectOptions, Error, Message, Messages, QoS, Reconnect, SubscribeProperties,
    Subscription, SubscriptionOptions,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CONSUMER_ID: &str = "durable-consumer-1";
/// Messages published in each of the four phases, half at QoS 1, half at QoS 2.
const PER_PHASE: u32 = 50;

/// Starts the broker on `addr` (port 0: any) with `store`.
async fn start_broker(addr: &str, store: &Arc<MemoryStore>) -> Result<BrokerHandle, BoxError> {
    Ok(Broker::builder()
        .tcp_listener(addr)
        .store(store.clone())
        .start()
        .await?)
}

/// A TCP relay to `target`; `cut` ends every connection it carries.
struct Relay {
    port: u16,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Result<Self, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let tasks = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tasks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
            }
        });
        Ok(Self { port, connections })
    }

    /// Drops every connection at once, without a DISCONNECT: to both ends it
    /// looks like a network failure.
    fn cut(&self) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
    }
}

/// The consumer's options: the same on every start of the process.
fn consumer_options(port: u16) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port)
        .client_id(CONSUMER_ID)
        // Resume the session the broker kept, and have it keep the session
        // for an hour after a connection is lost.
        .clean_start(false)
        .session_expiry_interval(3600)
        // PUBACK / PUBREC only once `client.ack` says the message was dealt
        // with: a message taken but not processed comes again.
        .manual_acks(true)
        .keep_alive(Duration::from_secs(5))
        .reconnect(Reconnect::exponential(
            Duration::from_millis(50),
            Duration::from_secs(2),
        ))
}

/// One start of the consumer process: connects, subscribes (again: cheap,
/// and it keeps the subscriptions if the broker lost the session), and
/// returns the two streams to read.
async fn start_consumer(port: u16) -> Result<(Client, Messages, Subscription), Error> {
    // `connect_with_messages`: what the kept session queued while the
    // consumer was away arrives right after CONNACK, before any SUBSCRIBE of
    // this process is acknowledged; this stream takes it.
    let (client, connack, queued) = Client::connect_with_messages(consumer_options(port)).await?;
    println!(
        "consumer connected, session present: {}",
        connack.session_present
    );
    let orders = client
        .subscribe_with(
            vec![
                (
                    "orders/#".to_owned(),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                ),
                (
                    "payments/#".to_owned(),
                    SubscriptionOptions::new(QoS::ExactlyOnce),
                ),
            ],
            SubscribeProperties::default(),
        )
        .await?;
    Ok((client, queued, orders))
}

/// Processes one message, then acknowledges it. Returns its sequence number.
async fn process(client: &Client, message: &Message) -> Result<u32, BoxError> {
    let n: u32 = std::str::from_utf8(&message.payload)?.parse()?;
    // ... write it to a database, call a service ...
    client.ack(message).await?;
    Ok(n)
}

/// Reads both streams until `until` says stop; records each sequence number.
async fn consume(
    client: &Client,
    queued: &mut Messages,
    live: &mut Subscription,
    seen: &mut BTreeSet<u32>,
    until: u32,
) -> Result<(), BoxError> {
    while seen.len() < until as usize {
        let next = tokio::select! {
            m = queued.recv() => m,
            m = live.recv() => m,
        };
        let message = next.ok_or("client closed")?;
        let n = process(client, &message).await?;
        seen.insert(n);
    }
    Ok(())
}

/// Publishes `range`, even numbers at QoS 1 on `orders/`, odd at QoS 2 on
/// `payments/`, waiting for each flow to complete.
async fn produce(producer: &Client, range: std::ops::Range<u32>) -> Result<(), Error> {
    for n in range {
        let (topic, qos) = if n % 2 == 0 {
            (format!("orders/{n}"), QoS::AtLeastOnce)
        } else {
            (format!("payments/{n}"), QoS::ExactlyOnce)
        };
        producer.publish(topic, n.to_string()).qos(qos).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let store = Arc::new(MemoryStore::new());
    let mut broker = start_broker("127.0.0.1:0", &store).await?;
    let broker_addr = broker.local_addrs()[0];
    let relay = Relay::start(broker_addr).await?;
    // The producer connects to the broker directly; it too resumes its
    // session, so that what it has in flight survives the broker restart.
    let (producer, _) = Client::connect(
        ConnectOptions::new("127.0.0.1", broker_addr.port())
            .client_id("durable-producer-1")
            .clean_start(false)
            .session_expiry_interval(3600)
            .reconnect(Reconnect::exponential(
                Duration::from_millis(50),
                Duration::from_secs(2),
            )),
    )
    .await?;

    let (client, mut queued, mut live) = start_consumer(relay.port).await?;
    let mut seen = BTreeSet::new();
    let deadline = Duration::from_secs(30);

    // 1. Normal operation.
    produce(&producer, 0..PER_PHASE).await?;
    timeout(
        deadline,
        consume(&client, &mut queued, &mut live, &mut seen, PER_PHASE),
    )
    .await??;
    println!("phase 1: {} messages", seen.len());

    // 2. The network fails half way through a batch: messages taken but
    // not acknowledged yet come again after the client reconnects.
    produce(&producer, PER_PHASE..2 * PER_PHASE).await?;
    timeout(
        deadline,
        consume(
            &client,
            &mut queued,
            &mut live,
            &mut seen,
            PER_PHASE * 3 / 2,
        ),
    )
    .await??;
    relay.cut();
    timeout(
        deadline,
        consume(&client, &mut queued, &mut live, &mut seen, 2 * PER_PHASE),
    )
    .await??;
    println!(
        "phase 2 (network cut): {} messages, the connection ended with: {}",
        seen.len(),
        client
            .last_disconnection()
            .map_or("-".to_owned(), |d| d.error.to_string())
    );

    // 3. The broker restarts half way through a batch; both clients
    // reconnect and resume their sessions.
    produce(&producer, 2 * PER_PHASE..3 * PER_PHASE).await?;
    timeout(
        deadline,
        consume(
            &client,
            &mut queued,
            &mut live,
            &mut seen,
            PER_PHASE * 5 / 2,
        ),
    )
    .await??;
    broker.shutdown().await;
    broker = start_broker(&broker_addr.to_string(), &store).await?;
    timeout(
        deadline,
        consume(&client, &mut queued, &mut live, &mut seen, 3 * PER_PHASE),
    )
    .await??;
    println!("phase 3 (broker restart): {} messages", seen.len());

    // 4. The consumer process stops; messages wait in its session; it starts
    // again and gets them.
    // `detach`: the broker keeps the subscription (dropping the stream
    // would unsubscribe it, and what follows would not be queued).
    live.detach();
    client.disconnect().await?;
    drop(queued);
    produce(&producer, 3 * PER_PHASE..4 * PER_PHASE).await?;
    let (client, mut queued, mut live) = start_consumer(relay.port).await?;
    timeout(
        deadline,
        consume(&client, &mut queued, &mut live, &mut seen, 4 * PER_PHASE),
    )
    .await??;
    println!("phase 4 (consumer restart): {} messages", seen.len());

    assert_eq!(seen, (0..4 * PER_PHASE).collect::<BTreeSet<_>>());
    println!("all {} messages received, none lost", 4 * PER_PHASE);
    client.disconnect().await?;
    producer.disconnect().await?;
    broker.shutdown().await;
    Ok(())
}
