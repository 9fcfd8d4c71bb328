//! [`MemoryStore`]: a [`Store`] in memory, for tests and for embedding
//! applications that keep a broker's state across broker restarts within
//! one process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use fulmar_codec::PacketId;

use super::{Snapshot, Store, StoreError, StoreOp, StoredMessage, StoredSession};

#[derive(Default)]
struct Tables {
    sessions: BTreeMap<Arc<str>, StoredSession>,
    messages: BTreeMap<(Arc<str>, u64), StoredMessage>,
    incoming: BTreeMap<(Arc<str>, u16), PacketId>,
    retained: BTreeMap<Arc<str>, StoredMessage>,
    commits: u64,
}

/// A [`Store`] in memory: nothing survives the process, but a broker
/// started again on the same `MemoryStore` recovers everything.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MemoryStore")
            .field("sessions", &t.sessions.len())
            .field("messages", &t.messages.len())
            .field("retained", &t.retained.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many commits were made (a commit holds the changes of many
    /// connections under group commit).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .commits
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Snapshot {
            sessions: t.sessions.values().cloned().collect(),
            messages: t
                .messages
                .iter()
                .map(|((c, s), m)| (c.clone(), *s, m.clone()))
                .collect(),
            incoming: t
                .incoming
                .iter()
                .map(|((c, _), id)| (c.clone(), *id))
                .collect(),
            retained: t
                .retained
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            skipped: 0,
            unreadable_sessions: Vec::new(),
        })
    }

    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        t.commits += 1;
        for op in ops {
            match op {
                StoreOp::PutSession(s) => {
                    t.sessions.insert(s.client_id.clone(), s.clone());
                }
                StoreOp::DeleteSession(c) => {
                    t.sessions.remove(c);
                    t.messages.retain(|(k, _), _| k != c);
                    t.incoming.retain(|(k, _), _| k != c);
                }
                StoreOp::PutMessage {
                    client,
                    seq,
                    message,
                } => {
                    t.messages.insert((client.clone(), *seq), message.clone());
                }
                StoreOp::MarkSent {
                    client,
                    seq,
                    packet_id,
                    released,
                } => {
                    if let Some(m) = t.messages.get_mut(&(client.clone(), *seq)) {
                        m.packet_id = Some(*packet_id);
                        m.released = *released;
                    }
                }
                StoreOp::DeleteMessage { client, seq } => {
                    t.messages.remove(&(client.clone(), *seq));
                }
                StoreOp::AddIncoming { client, packet_id } => {
                    t.incoming
                        .insert((client.clone(), packet_id.get()), *packet_id);
                }
                StoreOp::RemoveIncoming { client, packet_id } => {
                    t.incoming.remove(&(client.clone(), packet_id.get()));
                }
                StoreOp::PutRetained { topic, message } => {
                    t.retained.insert(topic.clone(), message.clone());
                }
                StoreOp::DeleteRetained { topic } => {
                    t.retained.remove(topic);
                }
            }
        }
        Ok(())
    }
}
