//! Publishes awaited concurrently reach the broker in the order of their
//! futures' first poll, also beyond the 64 the client's queue to its
//! connection task holds (the others wait in line for room), against a real
//! mosquitto broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::IntoFuture;
use std::pin::Pin;

use common::{Listener, Mosquitto, guard};
use fulmar_client::{Client, ConnectOptions, PublishFuture, QoS, Reconnect};
use futures::StreamExt;
use futures::future::join_all;

/// Far more than the client's queue to its connection task holds (64).
const COUNT: u32 = 1000;

/// mosquitto keeps every message for a slow subscriber (its default drops
/// those past 1000 queued).
fn broker() -> Mosquitto {
    Mosquitto::with_extra(Listener::Tcp, true, "max_queued_messages 0\n")
}

async fn connect(broker: &Mosquitto, id: &str) -> Client {
    let options = ConnectOptions::new("127.0.0.1", broker.port)
        .client_id(id)
        .reconnect(Reconnect::disabled());
    guard(Client::connect(options)).await.unwrap().0
}

/// Subscribes to `topic` and collects the payloads (decimal numbers) of
/// the next `count` messages, in the order they arrive.
async fn collect(
    subscriber: &Client,
    topic: &str,
    count: usize,
) -> tokio::task::JoinHandle<Vec<u32>> {
    let mut stream = guard(subscriber.subscribe(topic, QoS::ExactlyOnce))
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut received = Vec::with_capacity(count);
        while received.len() < count {
            let message = guard(stream.next()).await.expect("stream ended");
            let text = std::str::from_utf8(&message.payload).unwrap();
            received.push(text.parse().unwrap());
        }
        received
    })
}

/// The first place where `received` differs from `expected`, for the
/// failure message.
fn first_difference(received: &[u32], expected: &[u32]) -> Option<usize> {
    received
        .iter()
        .zip(expected)
        .position(|(r, e)| r != e)
        .or_else(|| {
            (received.len() != expected.len()).then_some(received.len().min(expected.len()))
        })
}

fn assert_in_order(qos: QoS, received: &[u32], expected: &[u32]) {
    if let Some(at) = first_difference(received, expected) {
        let from = at.saturating_sub(3);
        panic!(
            "{qos:?}: {} of {} received; first out of order at {at}: received {:?}, expected {:?}",
            received.len(),
            expected.len(),
            &received[from..(at + 4).min(received.len())],
            &expected[from..(at + 4).min(expected.len())],
        );
    }
}

/// Publishes [`COUNT`] messages at `qos`, all awaited at once with
/// `join_all` (which polls them first in the order they are made); a
/// subscriber must receive them in that order.
async fn publish_concurrently(qos: QoS) {
    let broker = broker();
    let subscriber = connect(&broker, "order-sub").await;
    let publisher = connect(&broker, "order-pub").await;
    let topic = "order/concurrent";
    let received = collect(&subscriber, topic, COUNT as usize).await;
    let publishes: Vec<_> = (0..COUNT)
        .map(|n| {
            publisher
                .publish(topic, n.to_string())
                .qos(qos)
                .into_future()
        })
        .collect();
    for outcome in guard(join_all(publishes)).await {
        outcome.unwrap();
    }
    let received = guard(received).await.unwrap();
    assert_in_order(qos, &received, &(0..COUNT).collect::<Vec<_>>());
    guard(publisher.disconnect()).await.unwrap();
    guard(subscriber.disconnect()).await.unwrap();
}

// On several worker threads the connection task takes the queue while the
// publishers are being polled: the case that reordered publishes waiting
// for room when any of them could take the room made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_qos0_publishes_arrive_in_the_order_of_their_first_poll() {
    publish_concurrently(QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_qos1_publishes_arrive_in_the_order_of_their_first_poll() {
    publish_concurrently(QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_qos2_publishes_arrive_in_the_order_of_their_first_poll() {
    publish_concurrently(QoS::ExactlyOnce).await;
}

// A publish waiting for room that is dropped gives its place in line back:
// the ones behind it are not held up (and its message is not sent).
#[tokio::test]
async fn dropped_publishes_waiting_for_room_do_not_hold_up_the_others() {
    let broker = broker();
    let subscriber = connect(&broker, "drop-sub").await;
    let publisher = connect(&broker, "drop-pub").await;
    let topic = "order/dropped";
    let full = 64;
    let count = full + 4;
    let received = collect(&subscriber, topic, count - 2).await;
    let mut publishes: Vec<Option<Pin<Box<PublishFuture<'_>>>>> = (0..count)
        .map(|n| {
            let publish = publisher
                .publish(topic, n.to_string())
                .qos(QoS::AtLeastOnce);
            Some(Box::pin(publish.into_future()))
        })
        .collect();
    // Polled once each, without yielding to the connection task (one
    // thread): the queue fills, and the last four wait in line for room.
    for publish in publishes.iter_mut().flatten() {
        assert!(futures::poll!(publish.as_mut()).is_pending());
    }
    for publish in publishes[full..].iter().flatten() {
        assert!(format!("{publish:?}").contains("Full"), "{publish:?}");
    }
    // The front of the line and one in the middle go.
    publishes[full] = None;
    publishes[full + 2] = None;
    for outcome in guard(join_all(publishes.into_iter().flatten())).await {
        outcome.unwrap();
    }
    let expected: Vec<u32> = (0..count)
        .filter(|n| *n != full && *n != full + 2)
        .map(|n| u32::try_from(n).unwrap())
        .collect();
    let received = guard(received).await.unwrap();
    assert_in_order(QoS::AtLeastOnce, &received, &expected);
    guard(publisher.disconnect()).await.unwrap();
    guard(subscriber.disconnect()).await.unwrap();
}
