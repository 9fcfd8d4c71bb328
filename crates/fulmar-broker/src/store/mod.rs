//! What must outlive the broker process: persistent sessions (subscriptions,
//! expiry, QoS 1/2 messages queued or in flight, inbound QoS 2 identifiers
//! awaiting PUBREL, the will of the connected client or one waiting out its
//! Will Delay Interval) and retained messages. One [`Store`] trait; an in-memory
//! [`MemoryStore`] and, with feature `disk`, the on-disk [`DiskStore`].
//!
//! The broker writes through a journal: changes from every connection are
//! collected and committed in batches by one writer thread (group commit).
//! With [`Durability::Immediate`] (the default when a store is set), a QoS 1/2
//! message is acknowledged (PUBACK/PUBREC) only once the batch holding it is
//! committed, a SUBACK only once the subscription is, and a CONNACK only
//! once the session's record (with the client's will) is.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use fulmar_codec::{Packet, PacketId, ProtocolVersion, Publish, QoS};

#[cfg(feature = "disk")]
mod disk;
pub(crate) mod journal;
mod memory;
pub(crate) mod recover;

#[cfg(feature = "disk")]
pub use disk::DiskStore;
pub use memory::MemoryStore;

/// When a change is durable relative to the acknowledgement that depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Every acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
    /// UNSUBACK, CONNACK) waits until what it depends on is committed.
    /// Commits are shared by every connection (group commit).
    #[default]
    Immediate,
    /// Changes are committed at this interval (sooner once about 32 MiB
    /// of them wait); acknowledgements do not wait. A crash loses up to one
    /// interval of acknowledged messages. While commits fail, an
    /// acknowledgement that depends on a change is refused as under
    /// `Immediate` (the client's connection is closed). While the store
    /// falls behind (a slow disk: about 64 MiB or 50 000 changes waiting),
    /// the connections that add changes wait for their commit as under
    /// `Immediate`, which holds their publishers back.
    Periodic(Duration),
}

/// An error of a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the storage failed.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The store's own engine reported an error (corruption it detected, a
    /// database locked by another process, ...).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record cannot be read back.
    #[error("corrupted record in {table}: {reason}")]
    Corrupt {
        /// Which kind of record.
        table: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A subscription of a persistent session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter as subscribed (`$share/{group}/{filter}` for a shared one).
    pub filter: String,
    /// The granted QoS.
    pub qos: QoS,
    /// MQTT 5.0 No Local.
    pub no_local: bool,
    /// MQTT 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5.0 Subscription Identifier.
    pub id: Option<NonZeroU32>,
}

/// A persistent session, without its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSession {
    /// The client identifier.
    pub client_id: Arc<str>,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// When its last connection ended, in milliseconds since the Unix epoch;
    /// `None` while connected (recovery counts from the restart).
    pub disconnected_at: Option<u64>,
    /// Its subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// The will of the session when the record was written, if any: the
    /// will of its connected client ([`WillDue::AfterDisconnect`]), or one
    /// waiting out its Will Delay Interval (MQTT 5.0) after the connection
    /// ended ([`WillDue::At`]). After a restart it is published when it is
    /// due, or when the session ends if that comes first (MQTT-3.1.2-8,
    /// v5 3.1.3.2.2). The broker keeps it out of the records it hands a
    /// [`Bridge`](crate::Bridge) (a session that moves to another broker
    /// cancels its will, as a reconnect would) and ignores it in a session
    /// brought from elsewhere.
    pub will: Option<StoredWill>,
}

/// The will of a persistent session, kept in its [`StoredSession`] record so
/// that a crash does not lose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWill {
    /// The will message, as the broker publishes it.
    pub publish: Publish,
    /// When it is due.
    pub due: WillDue,
    /// The user name its client connected as (for the [`Authorizer`](crate::Authorizer)
    /// when the rules change meanwhile).
    pub username: Option<String>,
    /// The protocol version its client connected with.
    pub protocol_version: ProtocolVersion,
}

/// When a [`StoredWill`] is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WillDue {
    /// At this time, in milliseconds since the Unix epoch: its client's
    /// connection ended, and the will waits out its Will Delay Interval.
    At(u64),
    /// This many seconds after its client's connection ends (its Will Delay
    /// Interval; 0 without one, and always under MQTT 3.1.1): the client was
    /// connected when the record was written. After a crash its connection
    /// counts as ended at the restart, as [`StoredSession::disconnected_at`]
    /// `None` does.
    AfterDisconnect(u32),
}

/// A message kept for a session (queued or in flight) or as retained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message as it is to be sent (QoS already downgraded for its
    /// subscriber); its packet identifier is [`packet_id`](Self::packet_id).
    pub publish: Publish,
    /// When it was stored, in milliseconds since the Unix epoch (its Message
    /// Expiry Interval counts from there).
    pub stored_at: u64,
    /// QoS 2: the packet identifier it was (or is about to be) sent with, so
    /// that a resend after a restart is recognised as a duplicate.
    pub packet_id: Option<PacketId>,
    /// QoS 2: the PUBREC came back; only the PUBREL/PUBCOMP remain.
    pub released: bool,
}

impl StoredMessage {
    /// The record a store keeps: when it was stored, the packet identifier
    /// and the PUBREC flag, then the PUBLISH as an MQTT 5.0 packet (every
    /// property kept). For stores outside this crate.
    ///
    /// ```
    /// use fulmar_broker::StoredMessage;
    /// use fulmar_codec::{MqttString, Publish};
    ///
    /// let message = StoredMessage {
    ///     publish: Publish::new(MqttString::from("a/b"), "hi".into()),
    ///     stored_at: 1_700_000_000_000,
    ///     packet_id: None,
    ///     released: false,
    /// };
    /// let record = message.encode();
    /// assert_eq!(StoredMessage::decode(&record).unwrap(), message);
    /// assert!(StoredMessage::decode(&record[..5]).is_err());
    /// ```
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        encode_message(self)
    }

    /// Decodes [`encode`](Self::encode). Never panics.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the record is truncated or not a PUBLISH.
    pub fn decode(record: &[u8]) -> Result<Self, StoreError> {
        decode_message("message", record)
    }
}

/// One change, as the broker hands it to [`Store::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// Creates or replaces a session record.
    PutSession(StoredSession),
    /// Removes a session with its messages and inbound identifiers.
    DeleteSession(Arc<str>),
    /// Keeps a message for session `client` under `seq`: unique among the
    /// messages the store holds, and increasing in the order the messages
    /// were stored (after a restart, numbering goes on from the highest key
    /// still held, so the key of a message deleted before may come again).
    PutMessage {
        /// The session.
        client: Arc<str>,
        /// Its key.
        seq: u64,
        /// The message.
        message: StoredMessage,
    },
    /// Records the packet identifier a QoS 2 message of `client` is sent
    /// with, and whether its PUBREC came back.
    MarkSent {
        /// The session.
        client: Arc<str>,
        /// The message's key.
        seq: u64,
        /// Its packet identifier.
        packet_id: PacketId,
        /// PUBREC received.
        released: bool,
    },
    /// The message's flow completed (or it was dropped).
    DeleteMessage {
        /// The session.
        client: Arc<str>,
        /// The message's key.
        seq: u64,
    },
    /// An inbound QoS 2 message of `client` was received: its identifier
    /// awaits PUBREL.
    AddIncoming {
        /// The session.
        client: Arc<str>,
        /// The identifier.
        packet_id: PacketId,
    },
    /// The PUBREL of an inbound QoS 2 message came.
    RemoveIncoming {
        /// The session.
        client: Arc<str>,
        /// The identifier.
        packet_id: PacketId,
    },
    /// Stores (replaces) the retained message of a topic.
    PutRetained {
        /// The topic name.
        topic: Arc<str>,
        /// The message.
        message: StoredMessage,
    },
    /// Deletes the retained message of a topic.
    DeleteRetained {
        /// The topic name.
        topic: Arc<str>,
    },
}

/// Everything a store holds, read back at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The sessions.
    pub sessions: Vec<StoredSession>,
    /// Messages of sessions: client identifier, key, message; in key order
    /// per client.
    pub messages: Vec<(Arc<str>, u64, StoredMessage)>,
    /// Inbound QoS 2 identifiers awaiting PUBREL, per client.
    pub incoming: Vec<(Arc<str>, PacketId)>,
    /// Retained messages by topic.
    pub retained: Vec<(Arc<str>, StoredMessage)>,
    /// Records that could not be read back, skipped (each was logged).
    pub skipped: usize,
    /// The client identifiers of session records that could not be read
    /// (counted in `skipped` too; a corrupted record, or one a newer
    /// version wrote). Their messages and inbound identifiers are kept in
    /// the store rather than deleted as orphans.
    pub unreadable_sessions: Vec<Arc<str>>,
}

/// Storage for what must outlive the broker process.
///
/// The broker calls [`load`](Self::load) once at start and
/// [`commit`](Self::commit) from one writer thread, with the changes of many
/// connections in order; a commit must be atomic (all or nothing) and, for
/// a durable store, on stable storage when it returns. Both may block.
///
/// A commit that fails is tried again, with the changes that came after
/// it, until one succeeds (waiting up to 5 s between attempts), so that the
/// store always holds the changes in order, none missing in the middle.
/// Meanwhile the acknowledgements that depend on them are refused (under
/// [`Durability::Immediate`], the client's connection is closed and the
/// client sends its message again later). At shutdown, or with more than
/// 100 000 changes or about 256 MiB of messages waiting, the broker gives
/// up: nothing more is written. Under [`Durability::Periodic`], about
/// 32 MiB of changes are committed without waiting for the interval, and
/// with about 64 MiB or 50 000 changes waiting for a store that is slower
/// than its publishers, the connections that add more wait for their commit
/// (under [`Durability::Immediate`] they always do).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use fulmar_broker::{Broker, MemoryStore};
/// use fulmar_codec::QoS;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
/// let store = Arc::new(MemoryStore::new());
/// let broker = Broker::builder().store(store.clone()).start().await?;
/// broker.publish("config/site", "v1", QoS::AtLeastOnce, true)?;
/// broker.shutdown().await; // flushes the journal
///
/// // A new broker on the same store serves the retained message.
/// let broker = Broker::builder().store(store).start().await?;
/// let mut sub = broker.subscribe("config/#")?;
/// assert_eq!(sub.recv().await.unwrap().payload, "v1");
/// broker.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub trait Store: Send + Sync + 'static {
    /// Everything stored.
    ///
    /// # Errors
    /// When the storage cannot be read at all. Single records that cannot
    /// be decoded are skipped and counted in [`Snapshot::skipped`].
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Applies `ops` in order, atomically.
    ///
    /// # Errors
    /// When the changes could not be made durable; none of them counts then.
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError>;
}

/// Encodes a message record: stored_at, packet id, released, then the
/// PUBLISH as an MQTT 5.0 packet (every property kept).
pub(crate) fn encode_message(message: &StoredMessage) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(32 + message.publish.payload.len());
    buf.put_u64(message.stored_at);
    buf.put_u16(message.packet_id.map_or(0, PacketId::get));
    buf.put_u8(u8::from(message.released));
    put_publish(&mut buf, &message.publish);
    buf.to_vec()
}

/// Appends `publish` as an MQTT 5.0 packet (every property kept), without
/// its packet identifier and DUP flag (a record keeps its own).
fn put_publish(buf: &mut BytesMut, publish: &Publish) {
    let start = buf.len();
    let mut publish = publish.clone();
    // The codec wants an identifier for QoS 1/2; the record keeps its own.
    publish.packet_id = (publish.qos != QoS::AtMostOnce)
        .then(|| PacketId::new(1))
        .flatten();
    publish.dup = false;
    if Packet::Publish(publish)
        .encode(ProtocolVersion::V5, buf)
        .is_err()
    {
        // Only a message over 256 MiB fails, and none gets this far.
        buf.truncate(start);
    }
}

/// Decodes [`put_publish`] from the start of `bytes`.
fn get_publish(bytes: &[u8]) -> Result<Publish, String> {
    let mut packet = BytesMut::from(bytes);
    let packet = fulmar_codec::decode(&mut packet, ProtocolVersion::V5, u32::MAX)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "truncated packet".to_owned())?;
    let Packet::Publish(mut publish) = packet else {
        return Err("not a PUBLISH".to_owned());
    };
    publish.packet_id = None;
    Ok(publish)
}

/// Decodes [`encode_message`].
pub(crate) fn decode_message(
    table: &'static str,
    bytes: &[u8],
) -> Result<StoredMessage, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        table,
        reason: reason.to_owned(),
    };
    let mut b = bytes;
    if b.remaining() < 11 {
        return Err(corrupt("truncated header"));
    }
    let stored_at = b.get_u64();
    let packet_id = PacketId::new(b.get_u16());
    let released = b.get_u8() != 0;
    let publish = get_publish(b).map_err(|reason| corrupt(&reason))?;
    Ok(StoredMessage {
        publish,
        stored_at,
        packet_id,
        released,
    })
}

/// Encodes a session record, in the oldest version that holds it (older
/// broker versions read what they can represent, and set aside as
/// unreadable what they cannot, rather than misread it):
///
/// - version 1 without a will (as versions that know of no will wrote);
/// - version 2 with a will due at a time ([`WillDue::At`]): the same, then a
///   flag byte (1), the will's due time, its client's user name (a flag
///   byte, then the name) and protocol level, and its PUBLISH as
///   [`encode_message`] writes one;
/// - version 3 with the will of a connected client
///   ([`WillDue::AfterDisconnect`]): as version 2, with the flag byte 2 and
///   the Will Delay Interval (four bytes) in place of the due time.
pub(crate) fn encode_session(session: &StoredSession) -> Vec<u8> {
    let will_size = session
        .will
        .as_ref()
        .map_or(0, |w| 64 + w.publish.payload.len());
    let mut buf = BytesMut::with_capacity(32 + 16 * session.subscriptions.len() + will_size);
    let version = match session.will.as_ref().map(|w| w.due) {
        None => 1,
        Some(WillDue::At(_)) => 2,
        Some(WillDue::AfterDisconnect(_)) => 3,
    };
    buf.put_u8(version);
    buf.put_u32(session.expiry_interval);
    buf.put_u64(session.disconnected_at.map_or(0, |t| t.saturating_add(1)));
    buf.put_u32(u32::try_from(session.subscriptions.len()).unwrap_or(u32::MAX));
    for sub in &session.subscriptions {
        let flags = sub.qos as u8
            | (u8::from(sub.no_local) << 2)
            | (u8::from(sub.retain_as_published) << 3);
        buf.put_u8(flags);
        buf.put_u32(sub.id.map_or(0, NonZeroU32::get));
        put_str(&mut buf, &sub.filter);
    }
    if let Some(will) = &session.will {
        match will.due {
            WillDue::At(due) => {
                buf.put_u8(1);
                buf.put_u64(due);
            }
            WillDue::AfterDisconnect(delay) => {
                buf.put_u8(2);
                buf.put_u32(delay);
            }
        }
        buf.put_u8(u8::from(will.username.is_some()));
        put_str(&mut buf, will.username.as_deref().unwrap_or_default());
        buf.put_u8(will.protocol_version.level());
        put_publish(&mut buf, &will.publish);
    }
    buf.to_vec()
}

/// Decodes [`encode_session`] for `client_id`.
pub(crate) fn decode_session(
    client_id: Arc<str>,
    bytes: &[u8],
) -> Result<StoredSession, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        table: "sessions",
        reason: format!("{client_id}: {reason}"),
    };
    let mut b = bytes;
    if b.remaining() < 17 {
        return Err(corrupt("truncated"));
    }
    let version = b.get_u8();
    if !matches!(version, 1..=3) {
        return Err(corrupt("unknown record version"));
    }
    let expiry_interval = b.get_u32();
    let disconnected_at = b.get_u64().checked_sub(1);
    let count = b.get_u32() as usize;
    let mut subscriptions = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        if b.remaining() < 5 {
            return Err(corrupt("truncated subscription"));
        }
        let flags = b.get_u8();
        let id = NonZeroU32::new(b.get_u32());
        let filter = get_str(&mut b).ok_or_else(|| corrupt("bad filter"))?;
        let qos = QoS::try_from(flags & 0b11).map_err(|_| corrupt("bad QoS"))?;
        subscriptions.push(StoredSubscription {
            filter,
            qos,
            no_local: flags & 0b100 != 0,
            retain_as_published: flags & 0b1000 != 0,
            id,
        });
    }
    let will = if version >= 2 {
        get_will(&mut b, version).map_err(corrupt)?
    } else {
        None
    };
    Ok(StoredSession {
        client_id,
        expiry_interval,
        disconnected_at,
        subscriptions,
        will,
    })
}

/// Decodes the will part of a session record of `version` 2 or 3 (only 3
/// holds the will of a connected client).
fn get_will(b: &mut &[u8], version: u8) -> Result<Option<StoredWill>, &'static str> {
    if b.remaining() < 1 {
        return Err("truncated will");
    }
    let due = match b.get_u8() {
        0 => return Ok(None),
        1 => {
            if b.remaining() < 8 {
                return Err("truncated will");
            }
            WillDue::At(b.get_u64())
        }
        2 if version >= 3 => {
            if b.remaining() < 4 {
                return Err("truncated will");
            }
            WillDue::AfterDisconnect(b.get_u32())
        }
        _ => return Err("bad will flag"),
    };
    if b.remaining() < 1 {
        return Err("truncated will");
    }
    let has_username = b.get_u8();
    let username = get_str(b).ok_or("bad will user name")?;
    let username = match has_username {
        0 => None,
        1 => Some(username),
        _ => return Err("bad will user name flag"),
    };
    if b.remaining() < 1 {
        return Err("truncated will");
    }
    let protocol_version =
        ProtocolVersion::from_level(b.get_u8()).ok_or("bad will protocol level")?;
    let publish = get_publish(b).map_err(|_| "bad will PUBLISH")?;
    Ok(Some(StoredWill {
        publish,
        due,
        username,
        protocol_version,
    }))
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    buf.put_slice(s.as_bytes());
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 4 {
        return None;
    }
    let len = b.get_u32() as usize;
    let bytes = b.get(..len)?;
    let s = std::str::from_utf8(bytes).ok()?.to_owned();
    b.advance(len);
    Some(s)
}

/// The key of a session's message: client identifier, then the sequence
/// number big-endian, so that one client's messages are contiguous and in order.
#[cfg(feature = "disk")]
pub(crate) fn message_key(client: &str, seq: u64) -> Vec<u8> {
    let mut key = client_prefix(client);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key of an inbound QoS 2 identifier.
#[cfg(feature = "disk")]
pub(crate) fn incoming_key(client: &str, packet_id: PacketId) -> Vec<u8> {
    let mut key = client_prefix(client);
    key.extend_from_slice(&packet_id.get().to_be_bytes());
    key
}

/// The prefix shared by every key of `client` ([`message_key`], [`incoming_key`]):
/// the length of the identifier (big-endian, two bytes), then the identifier.
#[cfg(feature = "disk")]
pub(crate) fn client_prefix(client: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(client.len() + 10);
    key.extend_from_slice(
        &u16::try_from(client.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    key.extend_from_slice(client.as_bytes());
    key
}

/// Splits a key of [`message_key`] or [`incoming_key`] into client and suffix.
#[cfg(feature = "disk")]
pub(crate) fn split_key(key: &[u8]) -> Option<(Arc<str>, &[u8])> {
    let len = u16::from_be_bytes(key.get(..2)?.try_into().ok()?) as usize;
    let client = std::str::from_utf8(key.get(2..2 + len)?).ok()?;
    Some((Arc::from(client), key.get(2 + len..)?))
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulmar_codec::MqttString;

    fn payload(s: &'static str) -> bytes::Bytes {
        bytes::Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn records_round_trip() {
        let mut publish = Publish::new(MqttString::from("a/b"), payload("hello"));
        publish.qos = QoS::ExactlyOnce;
        publish.retain = true;
        publish.properties.message_expiry_interval = Some(30);
        publish.properties.subscription_identifiers = vec![NonZeroU32::new(5).unwrap()];
        let message = StoredMessage {
            publish,
            stored_at: 1_700_000_000_123,
            packet_id: PacketId::new(42),
            released: true,
        };
        let bytes = encode_message(&message);
        assert_eq!(decode_message("messages", &bytes).unwrap(), message);
        for cut in 0..bytes.len() {
            assert!(
                decode_message("messages", &bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }

        let session = StoredSession {
            client_id: Arc::from("c1"),
            expiry_interval: u32::MAX,
            disconnected_at: Some(0),
            subscriptions: vec![StoredSubscription {
                filter: "$share/g/a/+".into(),
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: true,
                id: NonZeroU32::new(9),
            }],
            will: None,
        };
        let bytes = encode_session(&session);
        assert_eq!(bytes[0], 1, "without a will: version 1");
        assert_eq!(decode_session(Arc::from("c1"), &bytes).unwrap(), session);
        for cut in 0..bytes.len() {
            assert!(decode_session(Arc::from("c1"), &bytes[..cut]).is_err());
        }
    }

    fn session_with_will(username: Option<&str>) -> StoredSession {
        let mut publish = Publish::new(MqttString::from("status/c1"), payload("offline"));
        publish.qos = QoS::AtLeastOnce;
        publish.retain = true;
        publish.properties.message_expiry_interval = Some(60);
        publish.properties.content_type = Some(MqttString::from("text/plain"));
        StoredSession {
            client_id: Arc::from("c1"),
            expiry_interval: 3,
            disconnected_at: Some(1_700_000_000_000),
            subscriptions: vec![StoredSubscription {
                filter: "a/#".into(),
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: false,
                id: None,
            }],
            will: Some(StoredWill {
                publish,
                due: WillDue::At(1_700_000_002_000),
                username: username.map(str::to_owned),
                protocol_version: ProtocolVersion::V5,
            }),
        }
    }

    // A session record with a will waiting out its delay is version 2 and
    // round-trips; every truncation of it is an error, never a panic.
    /// Every truncation of the session record `bytes` is a `Corrupt`
    /// error; every change of one byte to one of `values` decodes or fails,
    /// never panics.
    fn cuts_are_corrupt_and_changes_never_panic(bytes: &[u8], values: &[u8]) {
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode_session(Arc::from("c1"), &bytes[..cut]),
                    Err(StoreError::Corrupt { .. })
                ),
                "cut {cut}"
            );
        }
        for i in 0..bytes.len() {
            for &value in values {
                let mut changed = bytes.to_vec();
                changed[i] = value;
                let _ = decode_session(Arc::from("c1"), &changed);
            }
        }
    }

    // MQTT-3.1.2-8
    #[test]
    fn session_records_with_a_will_round_trip() {
        for username in [Some("alice"), Some(""), None] {
            let session = session_with_will(username);
            let bytes = encode_session(&session);
            assert_eq!(bytes[0], 2);
            assert_eq!(decode_session(Arc::from("c1"), &bytes).unwrap(), session);
            cuts_are_corrupt_and_changes_never_panic(&bytes, &[0, 1, 2, 0x7f, 0xff]);
        }
        // Version 2 with the will flag 0: no will.
        let mut session = session_with_will(None);
        session.will = None;
        let mut bytes = encode_session(&session);
        bytes[0] = 2;
        bytes.push(0);
        assert_eq!(decode_session(Arc::from("c1"), &bytes).unwrap(), session);
        // Any other version is not read.
        for version in [0, 4, 0xff] {
            bytes[0] = version;
            assert!(decode_session(Arc::from("c1"), &bytes).is_err());
        }
    }

    // The will of a client connected when the record was written: version
    // 3, its Will Delay Interval in place of a due time; round-trips, and
    // every truncation or byte change is an error or a record, never a
    // panic. A version 2 record cannot hold it (a broker that reads only
    // up to version 2 sets the record aside rather than take the delay for
    // a due time).
    // MQTT-3.1.2-8
    #[test]
    fn session_records_with_the_will_of_a_connected_client_round_trip() {
        for (username, delay, version) in [
            (Some("alice"), 0, ProtocolVersion::V311),
            (None, 3600, ProtocolVersion::V5),
            (Some(""), u32::MAX, ProtocolVersion::V5),
        ] {
            let mut session = session_with_will(username);
            session.disconnected_at = None;
            if let Some(will) = &mut session.will {
                will.due = WillDue::AfterDisconnect(delay);
                will.protocol_version = version;
            }
            let bytes = encode_session(&session);
            assert_eq!(bytes[0], 3);
            assert_eq!(decode_session(Arc::from("c1"), &bytes).unwrap(), session);
            cuts_are_corrupt_and_changes_never_panic(&bytes, &[0, 1, 2, 3, 0x7f, 0xff]);
            let mut as_version_2 = bytes.clone();
            as_version_2[0] = 2;
            assert!(matches!(
                decode_session(Arc::from("c1"), &as_version_2),
                Err(StoreError::Corrupt { .. })
            ));
        }
        // A will due at a time is still written as version 2, which broker
        // versions from before version 3 read.
        let session = session_with_will(Some("alice"));
        let mut bytes = encode_session(&session);
        assert_eq!(bytes[0], 2);
        // Version 3 reads it too.
        bytes[0] = 3;
        assert_eq!(decode_session(Arc::from("c1"), &bytes).unwrap(), session);
    }

    // A record written by a version that knew of no will (version 1, laid
    // out by hand) is still read, without a will.
    #[test]
    fn version_1_session_records_are_read() {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&60u32.to_be_bytes()); // expiry
        bytes.extend_from_slice(&1_001u64.to_be_bytes()); // disconnected at 1000, plus 1
        bytes.extend_from_slice(&1u32.to_be_bytes()); // one subscription
        bytes.push(1 | 0b1000); // QoS 1, Retain As Published
        bytes.extend_from_slice(&7u32.to_be_bytes()); // subscription identifier
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"a/+");
        let session = decode_session(Arc::from("old"), &bytes).unwrap();
        assert_eq!(
            session,
            StoredSession {
                client_id: Arc::from("old"),
                expiry_interval: 60,
                disconnected_at: Some(1_000),
                subscriptions: vec![StoredSubscription {
                    filter: "a/+".into(),
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: true,
                    id: NonZeroU32::new(7),
                }],
                will: None,
            }
        );
        assert_eq!(encode_session(&session), bytes);
    }

    #[cfg(feature = "disk")]
    #[test]
    fn keys_split_into_client_and_suffix() {
        let key = message_key("c1", 7);
        let (client, rest) = split_key(&key).unwrap();
        assert_eq!((&*client, rest), ("c1", &7u64.to_be_bytes()[..]));
        assert!(key.starts_with(&client_prefix("c1")));
        assert!(!key.starts_with(&client_prefix("c")));
        let key = incoming_key("c1", PacketId::new(3).unwrap());
        let (client, rest) = split_key(&key).unwrap();
        assert_eq!((&*client, rest), ("c1", &3u16.to_be_bytes()[..]));
    }
}
