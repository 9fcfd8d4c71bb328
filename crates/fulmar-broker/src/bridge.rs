//! [`Bridge`]: the seam for routing beyond this broker (a cluster of brokers,
//! a bridge to another broker), and what a bridge hands back to the broker.

use fulmar_codec::Publish;
use fulmar_topic::{SubscriptionFilter, TopicName};

/// Routing beyond this broker: the broker tells a bridge which filters its
/// subscribers hold and which messages its clients publish; the bridge hands
/// messages from elsewhere back with [`BrokerHandle::inject`] and
/// [`BrokerHandle::deliver_shared`].
///
/// Every method is called with the broker's lock held, in the order the
/// changes happen: it must return quickly and never block (hand the work to
/// a channel or a task). The defaults do nothing.
///
/// [`BrokerHandle::inject`]: crate::BrokerHandle::inject
/// [`BrokerHandle::deliver_shared`]: crate::BrokerHandle::deliver_shared
///
/// # Example
///
/// ```
/// use std::sync::Mutex;
/// use fulmar_broker::{Bridge, Broker};
/// use fulmar_codec::{Publish, QoS};
/// use fulmar_topic::{SubscriptionFilter, TopicName};
///
/// /// Remembers which filters this node holds and what it published.
/// #[derive(Default)]
/// struct Log(Mutex<Vec<String>>);
///
/// impl Bridge for Log {
///     fn filter_added(&self, filter: &SubscriptionFilter) {
///         self.0.lock().unwrap().push(format!("+{filter}"));
///     }
///     fn message(&self, topic: &TopicName, _publish: &Publish) {
///         self.0.lock().unwrap().push(format!("msg {topic}"));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
/// let log = std::sync::Arc::new(Log::default());
/// let broker = Broker::builder().bridge(log.clone()).start().await?;
/// let _sub = broker.subscribe("a/+")?;
/// broker.publish("a/b", "x", QoS::AtMostOnce, false)?;
/// assert_eq!(*log.0.lock().unwrap(), ["+a/+", "msg a/b"]);
/// broker.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub trait Bridge: Send + Sync + 'static {
    /// The first subscription to `filter` on this broker appeared (a shared
    /// filter counts per ShareName and filter).
    fn filter_added(&self, filter: &SubscriptionFilter) {
        let _ = filter;
    }

    /// The last subscription to `filter` on this broker went away.
    fn filter_removed(&self, filter: &SubscriptionFilter) {
        let _ = filter;
    }

    /// A client of this broker (or the application, through
    /// [`BrokerHandle::publish`](crate::BrokerHandle::publish), or a will)
    /// published an application message, after it was authorized and routed
    /// to the local subscribers. `$SYS` messages and messages the bridge
    /// injected are not reported.
    fn message(&self, topic: &TopicName, publish: &Publish) {
        let _ = (topic, publish);
    }

    /// A client connected with a will: if this broker goes away without
    /// handling it (a crash), the bridge may publish it elsewhere, after
    /// `delay` seconds (the MQTT 5.0 Will Delay Interval, 0 without).
    fn will_set(&self, client_id: &str, will: &Publish, delay: u32) {
        let _ = (client_id, will, delay);
    }

    /// The will of `client_id` needs nobody else any more: this broker
    /// published it, or dropped it (a normal DISCONNECT, a reconnect within
    /// the Will Delay Interval, a shutdown).
    fn will_cleared(&self, client_id: &str) {
        let _ = client_id;
    }

    /// Whether the bridge delivers to shared subscriptions itself, through
    /// [`BrokerHandle::deliver_shared`](crate::BrokerHandle::deliver_shared)
    /// (so that a group gets a message once across every broker). Then local
    /// routing leaves shared subscriptions alone. Read once, at start.
    fn routes_shared(&self) -> bool {
        false
    }
}
