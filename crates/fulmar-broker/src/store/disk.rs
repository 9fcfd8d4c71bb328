//! [`DiskStore`]: the on-disk [`Store`], one redb file in a data directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use fulmar_codec::PacketId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    Snapshot, Store, StoreError, StoreOp, client_prefix, decode_message, decode_session,
    encode_message, encode_session, incoming_key, message_key, split_key,
};

/// Client identifier -> session record.
const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");
/// Client + sequence number -> message record.
const MESSAGES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("messages");
/// Client + packet identifier -> nothing.
const INCOMING: TableDefinition<'_, &[u8], ()> = TableDefinition::new("incoming");
/// Topic name -> message record.
const RETAINED: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("retained");

/// The file in the data directory.
const FILE: &str = "fulmar.redb";

/// The on-disk [`Store`]: a [redb](https://docs.rs/redb) database (a
/// copy-on-write B-tree with checksums, crash safe) in one file of a data
/// directory. Every commit is fsync'd; the broker batches the changes of
/// every connection into one commit (group commit). Space of deleted records
/// is reused by later commits, and the file is compacted when it is opened.
/// A commit that fails (the disk full, an I/O error) closes the database; the
/// next commit opens it again (recovering it as after a crash) and carries
/// on, so that a broker whose disk had no room for a moment heals once it
/// has.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use fulmar_broker::{Broker, DiskStore};
/// use fulmar_codec::QoS;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("fulmar-doc-{}", std::process::id()));
/// let broker = Broker::builder()
///     .store(Arc::new(DiskStore::open(&dir)?))
///     .start()
///     .await?;
/// broker.publish("status", "up", QoS::AtLeastOnce, true)?;
/// broker.shutdown().await;
///
/// // The retained message is on disk: a new broker serves it.
/// let broker = Broker::builder().store(Arc::new(DiskStore::open(&dir)?)).start().await?;
/// assert_eq!(broker.stats().retained, 1);
/// broker.shutdown().await;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct DiskStore {
    /// `None` after a failed transaction, until it is opened again.
    db: Mutex<Option<Database>>,
    path: PathBuf,
    /// Opens the database again (the file at `path`; tests use another
    /// backend).
    reopen: Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// Opens (creating it if needed) the database at `path`, checking every page
/// first. redb trusts a file that was closed cleanly, and reading a page
/// damaged since (a disk error, another program writing to it) panicked the
/// broker as it loaded; checked, such a file is an error. The check reads
/// the whole file once per start.
fn open_checked(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_check_integrity_on_open(true)
        .create(path)
}

impl DiskStore {
    /// Opens (creating it if needed) the store in directory `dir`.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created;
    /// [`StoreError::Engine`] when the file is not a store, is corrupted
    /// beyond repair, or is open in another process.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            // What a crash while the file was first created leaves, but
            // also a store emptied by something else: said, not silent.
            tracing::warn!(
                path = %path.display(),
                "the store file is empty: starting with an empty store"
            );
        }
        let mut db = open_checked(&path)
            .map_err(|e| StoreError::Engine(format!("{}: {e}", path.display())))?;
        // Give back the space of what was deleted before the last stop (freed
        // pages are reused while running; compaction also shrinks the file).
        db.compact().map_err(engine)?;
        // Create the tables, so that a fresh store loads as empty.
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(SESSIONS).map_err(engine)?;
        txn.open_table(MESSAGES).map_err(engine)?;
        txn.open_table(INCOMING).map_err(engine)?;
        txn.open_table(RETAINED).map_err(engine)?;
        txn.commit().map_err(engine)?;
        let file = path.clone();
        Ok(Self {
            db: Mutex::new(Some(db)),
            path,
            reopen: Box::new(move || open_checked(&file)),
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the database, opening it again first if an earlier
    /// transaction failed. redb refuses every transaction after an I/O
    /// error until the database is closed and opened again, which recovers
    /// it to its last commit: a failure closes it here.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let mut db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        if db.is_none() {
            let reopened = (self.reopen)().map_err(|e| {
                StoreError::Engine(format!("{}: opening again: {e}", self.path.display()))
            })?;
            tracing::warn!(path = %self.path.display(), "store opened again after an error");
            *db = Some(reopened);
        }
        let Some(open) = db.as_ref() else {
            return Err(StoreError::Engine("store not open".into()));
        };
        f(open).map_err(|e| {
            // Closed now (dropped), opened at the next use.
            *db = None;
            engine(e)
        })
    }

    fn apply(db: &Database, ops: &[StoreOp]) -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut incoming = txn.open_table(INCOMING)?;
            let mut retained = txn.open_table(RETAINED)?;
            for op in ops {
                match op {
                    StoreOp::PutSession(s) => {
                        sessions.insert(&*s.client_id, encode_session(s).as_slice())?;
                    }
                    StoreOp::DeleteSession(client) => {
                        sessions.remove(&**client)?;
                        let from = client_prefix(client);
                        let mut to = from.clone();
                        to.extend_from_slice(&[0xff; 8]);
                        messages.retain_in(from.as_slice()..=to.as_slice(), |_, _| false)?;
                        incoming.retain_in(from.as_slice()..=to.as_slice(), |_, ()| false)?;
                    }
                    StoreOp::PutMessage {
                        client,
                        seq,
                        message,
                    } => {
                        let key = message_key(client, *seq);
                        messages.insert(key.as_slice(), encode_message(message).as_slice())?;
                    }
                    StoreOp::MarkSent {
                        client,
                        seq,
                        packet_id,
                        released,
                    } => {
                        let key = message_key(client, *seq);
                        let old = messages.get(key.as_slice())?.map(|v| v.value().to_vec());
                        if let Some(mut record) = old {
                            // stored_at (8 bytes), packet id (2), released (1): patched in place.
                            if let Some(header) = record.get_mut(8..11) {
                                header[..2].copy_from_slice(&packet_id.get().to_be_bytes());
                                header[2] = u8::from(*released);
                            }
                            messages.insert(key.as_slice(), record.as_slice())?;
                        }
                    }
                    StoreOp::DeleteMessage { client, seq } => {
                        messages.remove(message_key(client, *seq).as_slice())?;
                    }
                    StoreOp::AddIncoming { client, packet_id } => {
                        incoming.insert(incoming_key(client, *packet_id).as_slice(), ())?;
                    }
                    StoreOp::RemoveIncoming { client, packet_id } => {
                        incoming.remove(incoming_key(client, *packet_id).as_slice())?;
                    }
                    StoreOp::PutRetained { topic, message } => {
                        retained.insert(&**topic, encode_message(message).as_slice())?;
                    }
                    StoreOp::DeleteRetained { topic } => {
                        retained.remove(&**topic)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn read(db: &Database) -> Result<Snapshot, redb::Error> {
        let txn = db.begin_read()?;
        let mut snapshot = Snapshot::default();
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (k, v) = entry?;
            match decode_session(Arc::from(k.value()), v.value()) {
                Ok(s) => snapshot.sessions.push(s),
                Err(error) => {
                    skip(&mut snapshot, &error);
                    snapshot.unreadable_sessions.push(Arc::from(k.value()));
                }
            }
        }
        for entry in txn.open_table(MESSAGES)?.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            let parsed = split_key(key).and_then(|(client, rest)| {
                let seq = u64::from_be_bytes(rest.try_into().ok()?);
                Some((client, seq))
            });
            let Some((client, seq)) = parsed else {
                skip(&mut snapshot, &corrupt_key("messages"));
                continue;
            };
            match decode_message("messages", v.value()) {
                Ok(m) => snapshot.messages.push((client, seq, m)),
                Err(error) => skip(&mut snapshot, &error),
            }
        }
        for entry in txn.open_table(INCOMING)?.iter()? {
            let (k, _) = entry?;
            let parsed = split_key(k.value()).and_then(|(client, rest)| {
                let id = PacketId::new(u16::from_be_bytes(rest.try_into().ok()?))?;
                Some((client, id))
            });
            match parsed {
                Some(pair) => snapshot.incoming.push(pair),
                None => skip(&mut snapshot, &corrupt_key("incoming")),
            }
        }
        for entry in txn.open_table(RETAINED)?.iter()? {
            let (k, v) = entry?;
            match decode_message("retained", v.value()) {
                Ok(m) => snapshot.retained.push((Arc::from(k.value()), m)),
                Err(error) => skip(&mut snapshot, &error),
            }
        }
        Ok(snapshot)
    }
}

fn corrupt_key(table: &'static str) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: "malformed key".into(),
    }
}

fn skip(snapshot: &mut Snapshot, error: &StoreError) {
    tracing::warn!(%error, "skipping a stored record that cannot be read");
    snapshot.skipped += 1;
}

impl Store for DiskStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.with_db(Self::read)
    }

    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.with_db(|db| Self::apply(db, ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    /// A disk that keeps its bytes across reopens and fails every write
    /// while `full` is set.
    #[derive(Debug)]
    struct Flaky {
        disk: Arc<InMemoryBackend>,
        full: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(Ordering::Relaxed) {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left",
                ))
            } else {
                Ok(())
            }
        }
    }

    impl StorageBackend for Flaky {
        fn len(&self) -> std::io::Result<u64> {
            self.disk.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.disk.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.disk.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.disk.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.disk.write(offset, data)
        }
    }

    fn retained(topic: &'static str) -> StoreOp {
        let mut publish = fulmar_codec::Publish::new(topic.into(), bytes::Bytes::from_static(b"v"));
        publish.retain = true;
        StoreOp::PutRetained {
            topic: Arc::from(topic),
            message: super::super::StoredMessage {
                publish,
                stored_at: 0,
                packet_id: None,
                released: false,
            },
        }
    }

    /// A disk full for a moment: the commits fail while it is, and succeed
    /// again once there is room (redb alone refuses every transaction after
    /// an I/O error until the database is opened again).
    #[test]
    fn the_store_heals_after_a_failed_commit() {
        let disk = Arc::new(InMemoryBackend::new());
        let full = Arc::new(AtomicBool::new(false));
        let open = {
            let (disk, full) = (disk.clone(), full.clone());
            move || {
                redb::Builder::new().create_with_backend(Flaky {
                    disk: disk.clone(),
                    full: full.clone(),
                })
            }
        };
        let db = open().unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(RETAINED).unwrap();
        txn.open_table(SESSIONS).unwrap();
        txn.open_table(MESSAGES).unwrap();
        txn.open_table(INCOMING).unwrap();
        txn.commit().unwrap();
        let store = DiskStore {
            db: Mutex::new(Some(db)),
            path: PathBuf::from("(memory)"),
            reopen: Box::new(open),
        };
        store.commit(&[retained("before")]).unwrap();
        full.store(true, Ordering::Relaxed);
        assert!(store.commit(&[retained("during")]).is_err());
        assert!(store.commit(&[retained("during")]).is_err());
        full.store(false, Ordering::Relaxed);
        store
            .commit(&[retained("during"), retained("after")])
            .unwrap();
        let topics: Vec<_> = store
            .load()
            .unwrap()
            .retained
            .iter()
            .map(|(topic, _)| topic.to_string())
            .collect();
        assert_eq!(topics, ["after", "before", "during"]);
    }

    #[test]
    fn a_session_record_that_cannot_be_read_is_skipped_and_named() {
        let dir =
            std::env::temp_dir().join(format!("fulmar-disk-unreadable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DiskStore::open(&dir).unwrap();
        {
            let db = store.db.lock().unwrap();
            let txn = db.as_ref().unwrap().begin_write().unwrap();
            txn.open_table(SESSIONS)
                .unwrap()
                .insert("broken", &[0xff_u8, 0xff, 0xff][..])
                .unwrap();
            txn.commit().unwrap();
        }
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.skipped, 1);
        assert_eq!(
            snapshot.unreadable_sessions,
            vec![Arc::<str>::from("broken")]
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
