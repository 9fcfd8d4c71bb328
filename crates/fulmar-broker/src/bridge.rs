//! [`Bridge`]: the seam for routing beyond this broker (a cluster of brokers,
//! a bridge to another broker), and what a bridge hands back to the broker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, BufMut};
use fulmar_codec::{PacketId, Publish};
use fulmar_topic::{SubscriptionFilter, TopicName};

use crate::store::{
    StoreError, StoredMessage, StoredSession, decode_message, decode_session, encode_message,
    encode_session,
};

/// What [`Bridge::claim_session`] returns: a session brought from elsewhere,
/// `None` when there is none to bring, or [`SessionUnavailable`] when one
/// lives elsewhere but cannot be brought now.
pub type SessionClaim = Pin<
    Box<dyn Future<Output = Result<Option<SessionExport>, SessionUnavailable>> + Send + 'static>,
>;

/// A session lives elsewhere but cannot be brought now (for example, the
/// broker that held it is gone and what it kept cannot be read yet). The
/// broker refuses the CONNECT with Server unavailable (MQTT 5.0: 0x88;
/// 3.1.1: return code 3), so that the client connects again later, rather
/// than starting a session without the messages that were queued for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the session lives elsewhere and cannot be brought now")]
pub struct SessionUnavailable;

/// A session as it moves between brokers: its record (subscriptions,
/// expiry), its QoS 1/2 messages (in flight, with their packet identifiers,
/// then queued, in order) and the identifiers of its inbound QoS 2 messages
/// awaiting PUBREL. [`BrokerHandle::take_session`](crate::BrokerHandle::take_session)
/// gives one; [`Bridge::claim_session`] hands one to the broker.
///
/// A message with [`released`](StoredMessage::released) set stands for a
/// PUBREL awaiting PUBCOMP: only its packet identifier counts.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use fulmar_broker::{SessionExport, StoredSession};
///
/// let export = SessionExport {
///     session: StoredSession {
///         client_id: Arc::from("c1"),
///         expiry_interval: 60,
///         disconnected_at: None,
///         subscriptions: Vec::new(),
///         will: None,
///     },
///     messages: Vec::new(),
///     incoming: Vec::new(),
/// };
/// let bytes = export.encode();
/// assert_eq!(SessionExport::decode(&bytes).unwrap(), export);
/// assert!(SessionExport::decode(&bytes[..bytes.len() - 1]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionExport {
    /// The session record.
    pub session: StoredSession,
    /// Its outbound QoS 1/2 messages: in flight first (with
    /// [`packet_id`](StoredMessage::packet_id)), then queued.
    pub messages: Vec<StoredMessage>,
    /// Inbound QoS 2 identifiers awaiting PUBREL.
    pub incoming: Vec<PacketId>,
}

/// The version byte of [`SessionExport::encode`].
const EXPORT_VERSION: u8 = 1;

impl SessionExport {
    /// A compact binary form: a version byte, the client identifier (2-byte
    /// length), the session record and each message record (4-byte length
    /// each, counted), then the inbound identifiers (4-byte count, 2 bytes each).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64);
        buf.put_u8(EXPORT_VERSION);
        let id = self.session.client_id.as_bytes();
        let id = id.get(..usize::from(u16::MAX)).unwrap_or(id);
        buf.put_u16(u16::try_from(id.len()).unwrap_or(u16::MAX));
        buf.put_slice(id);
        put_record(&mut buf, &encode_session(&self.session));
        buf.put_u32(u32::try_from(self.messages.len()).unwrap_or(u32::MAX));
        for message in &self.messages {
            put_record(&mut buf, &encode_message(message));
        }
        buf.put_u32(u32::try_from(self.incoming.len()).unwrap_or(u32::MAX));
        for id in &self.incoming {
            buf.put_u16(id.get());
        }
        buf
    }

    /// Decodes [`encode`](Self::encode). Never panics: anything truncated,
    /// trailing or not understood is an error.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            table: "session export",
            reason: reason.to_owned(),
        };
        let mut b = bytes;
        if b.remaining() < 3 || b.get_u8() != EXPORT_VERSION {
            return Err(corrupt("unknown version or truncated"));
        }
        let len = usize::from(b.get_u16());
        let id = b.get(..len).ok_or_else(|| corrupt("truncated client id"))?;
        let client_id: Arc<str> =
            Arc::from(std::str::from_utf8(id).map_err(|_| corrupt("client id is not UTF-8"))?);
        b.advance(len);
        let record = get_record(&mut b).ok_or_else(|| corrupt("truncated session"))?;
        let session = decode_session(client_id, record)?;
        if b.remaining() < 4 {
            return Err(corrupt("truncated message count"));
        }
        let count = b.get_u32() as usize;
        // Each message takes 4 bytes at least: a forged count allocates nothing more.
        let mut messages = Vec::with_capacity(count.min(b.remaining() / 4));
        for _ in 0..count {
            let record = get_record(&mut b).ok_or_else(|| corrupt("truncated message"))?;
            messages.push(decode_message("session export", record)?);
        }
        if b.remaining() < 4 {
            return Err(corrupt("truncated identifier count"));
        }
        let count = b.get_u32() as usize;
        if b.remaining() != count.saturating_mul(2) {
            return Err(corrupt("identifier count does not match"));
        }
        let mut incoming = Vec::with_capacity(count);
        for _ in 0..count {
            incoming.push(PacketId::new(b.get_u16()).ok_or_else(|| corrupt("identifier 0"))?);
        }
        Ok(Self {
            session,
            messages,
            incoming,
        })
    }
}

fn put_record(buf: &mut Vec<u8>, record: &[u8]) {
    buf.put_u32(u32::try_from(record.len()).unwrap_or(u32::MAX));
    buf.put_slice(record);
}

fn get_record<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    if b.remaining() < 4 {
        return None;
    }
    let len = b.get_u32() as usize;
    let record = b.get(..len)?;
    b.advance(len);
    Some(record)
}

/// Routing beyond this broker: the broker tells a bridge which filters its
/// subscribers hold and which messages its clients publish; the bridge hands
/// messages from elsewhere back with [`BrokerHandle::inject`] and
/// [`BrokerHandle::deliver_shared`].
///
/// Every method but [`claim_session`](Self::claim_session) is called with
/// the broker's lock held, in the order the changes happen: it must return
/// quickly and never block (hand the work to a channel or a task). The
/// defaults do nothing.
///
/// Sessions: [`claim_session`](Self::claim_session) brings a session from
/// elsewhere when a client connects,
/// [`BrokerHandle::take_session`](crate::BrokerHandle::take_session) gives
/// one away, and [`session_online`](Self::session_online),
/// [`session_offline`](Self::session_offline) and
/// [`session_gone`](Self::session_gone) tell where each session is.
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

    /// A client with this (non-assigned) identifier is connecting: if its
    /// session lives elsewhere, the bridge may bring it here (closing the
    /// connection that holds it there, as a takeover does) and return it;
    /// with `clean_start` the broker discards what comes back, but the
    /// old connection must close all the same (MQTT-3.1.4-3). The
    /// broker waits for the future (at most 10 s) before it answers the
    /// CONNECT, with no lock held, and installs the session it gets as a
    /// restart recovers one (CONNACK with session present); on
    /// [`SessionUnavailable`] it refuses the CONNECT with Server
    /// unavailable. The default returns `Ok(None)` at once.
    fn claim_session(&self, client_id: &str, clean_start: bool) -> SessionClaim {
        let _ = (client_id, clean_start);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// A client's connection was accepted (CONNACK sent): its session
    /// lives on this broker now. `session` is its record (subscriptions
    /// when resumed, Session Expiry Interval; 0: it ends with the
    /// connection). Called again, with the new record, after each
    /// SUBSCRIBE and UNSUBSCRIBE of a session that outlives its connection.
    fn session_online(&self, client_id: &str, session: &StoredSession) {
        let _ = (client_id, session);
    }

    /// A client's connection ended and its session stays on this broker,
    /// as `session` says (its subscriptions and expiry, when it ended).
    fn session_offline(&self, client_id: &str, session: &StoredSession) {
        let _ = (client_id, session);
    }

    /// The session of `client_id` is no longer on this broker: it ended
    /// with its connection, expired, or was taken
    /// ([`BrokerHandle::take_session`](crate::BrokerHandle::take_session)).
    fn session_gone(&self, client_id: &str) {
        let _ = client_id;
    }

    /// Whether the bridge delivers to shared subscriptions itself, through
    /// [`BrokerHandle::deliver_shared`](crate::BrokerHandle::deliver_shared)
    /// (so that a group gets a message once across every broker). Then local
    /// routing leaves shared subscriptions alone. Read once, at start.
    fn routes_shared(&self) -> bool {
        false
    }

    /// Whether the bridge publishes the wills of this broker's clients when
    /// the broker goes away without handling them (a crash), as
    /// [`will_set`](Self::will_set) allows. Then the broker keeps no will in
    /// its [`Store`](crate::Store): after a crash, both would publish it. (A
    /// will found in the store at start was kept by a broker without such a
    /// bridge, which no bridge knows of: it is published.) Read once, at
    /// start.
    fn keeps_wills(&self) -> bool {
        false
    }
}

/// The broker's bridge: none, the one given, or several told in turn.
pub(crate) fn combine(mut bridges: Vec<Arc<dyn Bridge>>) -> Option<Arc<dyn Bridge>> {
    match bridges.len() {
        0 | 1 => bridges.pop(),
        _ => Some(Arc::new(Several(bridges.into()))),
    }
}

/// Several bridges (see [`BrokerBuilder::bridge`](crate::BrokerBuilder::bridge)):
/// each is told of every change, in order; a session is claimed from the
/// first that brings one.
struct Several(Arc<[Arc<dyn Bridge>]>);

impl Bridge for Several {
    fn filter_added(&self, filter: &SubscriptionFilter) {
        self.0.iter().for_each(|b| b.filter_added(filter));
    }

    fn filter_removed(&self, filter: &SubscriptionFilter) {
        self.0.iter().for_each(|b| b.filter_removed(filter));
    }

    fn message(&self, topic: &TopicName, publish: &Publish) {
        self.0.iter().for_each(|b| b.message(topic, publish));
    }

    fn will_set(&self, client_id: &str, will: &Publish, delay: u32) {
        self.0
            .iter()
            .for_each(|b| b.will_set(client_id, will, delay));
    }

    fn will_cleared(&self, client_id: &str) {
        self.0.iter().for_each(|b| b.will_cleared(client_id));
    }

    fn claim_session(&self, client_id: &str, clean_start: bool) -> SessionClaim {
        let bridges = self.0.clone();
        let client_id = client_id.to_owned();
        Box::pin(async move {
            for bridge in bridges.iter() {
                if let Some(export) = bridge.claim_session(&client_id, clean_start).await? {
                    return Ok(Some(export));
                }
            }
            Ok(None)
        })
    }

    fn session_online(&self, client_id: &str, session: &StoredSession) {
        self.0
            .iter()
            .for_each(|b| b.session_online(client_id, session));
    }

    fn session_offline(&self, client_id: &str, session: &StoredSession) {
        self.0
            .iter()
            .for_each(|b| b.session_offline(client_id, session));
    }

    fn session_gone(&self, client_id: &str) {
        self.0.iter().for_each(|b| b.session_gone(client_id));
    }

    fn routes_shared(&self) -> bool {
        self.0.iter().any(|b| b.routes_shared())
    }

    fn keeps_wills(&self) -> bool {
        self.0.iter().any(|b| b.keeps_wills())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use fulmar_codec::{MqttString, QoS};

    use super::*;
    use crate::store::StoredSubscription;

    fn export() -> SessionExport {
        let mut publish = Publish::new(MqttString::from("a/b"), bytes::Bytes::from_static(b"x"));
        publish.qos = QoS::ExactlyOnce;
        publish.properties.message_expiry_interval = Some(9);
        SessionExport {
            session: StoredSession {
                client_id: Arc::from("client/é"),
                expiry_interval: 120,
                disconnected_at: Some(1_700_000_000_000),
                subscriptions: vec![StoredSubscription {
                    filter: "$share/g/a/#".into(),
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: true,
                    id: NonZeroU32::new(3),
                }],
                will: None,
            },
            messages: vec![
                StoredMessage {
                    publish: publish.clone(),
                    stored_at: 5,
                    packet_id: PacketId::new(4),
                    released: true,
                },
                StoredMessage {
                    publish,
                    stored_at: 6,
                    packet_id: None,
                    released: false,
                },
            ],
            incoming: vec![PacketId::new(1).unwrap(), PacketId::new(65535).unwrap()],
        }
    }

    #[test]
    fn exports_round_trip_and_anything_else_is_an_error() {
        let export = export();
        let bytes = export.encode();
        assert_eq!(SessionExport::decode(&bytes).unwrap(), export);
        for cut in 0..bytes.len() {
            assert!(SessionExport::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SessionExport::decode(&longer).is_err());
        // Every single-byte change decodes or fails, never panics; a
        // forged count allocates nothing large.
        for i in 0..bytes.len() {
            for value in [0, 1, 0x7f, 0xff] {
                let mut changed = bytes.clone();
                changed[i] = value;
                let _ = SessionExport::decode(&changed);
            }
        }
        // A record with no message and no identifier ends with two zero
        // counts: a forged message count finds nothing behind it.
        let empty = SessionExport {
            messages: Vec::new(),
            incoming: Vec::new(),
            ..export
        };
        let mut huge = empty.encode();
        assert_eq!(SessionExport::decode(&huge).unwrap(), empty);
        huge.truncate(huge.len() - 8);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(SessionExport::decode(&huge).is_err());
    }
}
