//! In-process subscriptions: [`Message`] and the [`Subscription`] stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use fulmar_codec::{MqttString, Publish, PublishProperties, QoS};
use fulmar_topic::SubscriptionFilter;
use futures::Stream;
use tokio::sync::mpsc;

use crate::broker::Shared;
use crate::state::Subscriber;

/// An application message delivered to an in-process [`Subscription`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The topic name it was published to.
    pub topic: MqttString,
    /// The payload; the same buffer every receiver of the message shares.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag: set for a retained message sent when the
    /// subscription was made, and for a live message published with RETAIN
    /// (local subscriptions keep it, as MQTT 5.0's Retain As Published).
    pub retain: bool,
    /// The MQTT 5.0 properties as published (user properties, content type,
    /// response topic, correlation data, ...).
    pub properties: PublishProperties,
}

impl From<Publish> for Message {
    fn from(p: Publish) -> Self {
        Self {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
        }
    }
}

/// A subscription made with [`BrokerHandle::subscribe`](crate::BrokerHandle::subscribe):
/// a stream of the messages matching its filter. Retained messages come first.
/// Dropping it unsubscribes.
///
/// The stream buffers up to [`Limits::max_queued_messages`](crate::Limits::max_queued_messages)
/// messages; beyond that messages are dropped and counted.
pub struct Subscription {
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) id: u64,
    pub(crate) filter: SubscriptionFilter,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter.to_string())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next message; `None` once the broker is shut down.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The filter of this subscription.
    #[must_use]
    pub fn filter(&self) -> &SubscriptionFilter {
        &self.filter
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.remove_subscription(&self.filter, &Subscriber::Local(self.id));
        state.locals.remove(&self.id);
    }
}
