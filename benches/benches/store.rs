//! Embedded store candidates for broker persistence, side by side: redb (B-tree,
//! copy-on-write, one file) and fjall (LSM tree, journal plus sorted tables).
//!
//! The workload is the broker's group commit: one writer thread commits a batch
//! of operations at a time, durably (redb `Durability::Immediate`, which ends in
//! `fdatasync`; fjall `PersistMode::SyncAll`, which ends in `fsync`). A batch is
//! a mix of, per 16 operations, 15 alternating message puts (key = 20-byte
//! client id + big-endian u64 sequence, value = 64-byte header + payload) and
//! deletes of the oldest live message, plus one session metadata put (200
//! bytes, 100 clients). The store is prefilled with 10 000 live messages, so the live set
//! stays at about 10 000 keys, like a broker whose messages are acknowledged
//! soon after they are queued.
//!
//! Criterion groups (ids `store_commit_{100B,1KiB}/{redb,fjall}/{1,16,256}`,
//! the last part being operations per commit; throughput is in operations,
//! commits/s = ops/s / batch size):
//! - `store_commit_100B`: payload 100 bytes;
//! - `store_commit_1KiB`: payload 1 KiB.
//!
//! After the criterion groups, with `--bench` and no filter (or a filter
//! matching `store_size` / `store_recovery`), two printed measurements:
//! - `store_size`: on-disk size after 200 000 put+delete pairs (256 operations
//!   per commit), after close and reopen, and after an explicit compaction;
//! - `store_recovery`: open plus full iteration of a store holding 1 000 000
//!   keys with 100-byte values, after a clean close (three reopens).
//!
//! Stores live in a fresh directory under `std::env::temp_dir()` (set `TMPDIR`
//! to measure another disk), removed afterwards.
//!
//! `cargo bench -p fulmar-benches --bench store` runs everything (a few minutes).
#![allow(clippy::unwrap_used)] // a store error is a bench failure

use std::collections::VecDeque;
use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use fjall::{KeyspaceCreateOptions, PersistMode};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");

/// Live messages kept in the store in steady state.
const LIVE: usize = 10_000;
/// Number of distinct client ids.
const CLIENTS: usize = 100;
const HEADER: usize = 64;
const SESSION_META: usize = 200;

/// One operation of a group commit.
enum Op {
    PutMessage(Vec<u8>, Vec<u8>),
    DeleteMessage(Vec<u8>),
    PutSession(Vec<u8>, Vec<u8>),
}

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "fulmar-store-bench-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes allocated on disk under `path` (sum of allocated blocks: fjall
/// preallocates its journal, so file lengths would overstate it).
fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

trait Store {
    /// Applies `ops` in one durable commit.
    fn commit(&mut self, ops: &[Op]);
    /// Number of (messages, sessions) found by iterating everything.
    fn scan(&self) -> (usize, usize);
    /// Explicit space reclamation (redb `compact`, fjall `major_compact`).
    fn compact(&mut self);
}

struct Redb {
    db: redb::Database,
}

impl Redb {
    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("store.redb")).unwrap();
        // Create the tables so that a scan of a fresh store finds them.
        let tx = db.begin_write().unwrap();
        tx.open_table(MESSAGES).unwrap();
        tx.open_table(SESSIONS).unwrap();
        tx.commit().unwrap();
        Self { db }
    }
}

impl Store for Redb {
    fn commit(&mut self, ops: &[Op]) {
        let mut tx = self.db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap();
        {
            let mut messages = tx.open_table(MESSAGES).unwrap();
            let mut sessions = tx.open_table(SESSIONS).unwrap();
            for op in ops {
                match op {
                    Op::PutMessage(k, v) => {
                        messages.insert(k.as_slice(), v.as_slice()).unwrap();
                    }
                    Op::DeleteMessage(k) => {
                        messages.remove(k.as_slice()).unwrap();
                    }
                    Op::PutSession(k, v) => {
                        sessions.insert(k.as_slice(), v.as_slice()).unwrap();
                    }
                }
            }
        }
        tx.commit().unwrap();
    }

    fn scan(&self) -> (usize, usize) {
        let tx = self.db.begin_read().unwrap();
        let mut counts = [0, 0];
        for (count, table) in counts.iter_mut().zip([MESSAGES, SESSIONS]) {
            for entry in tx.open_table(table).unwrap().iter().unwrap() {
                let (k, v) = entry.unwrap();
                black_box((k.value().len(), v.value().len()));
                *count += 1;
            }
        }
        (counts[0], counts[1])
    }

    fn compact(&mut self) {
        while self.db.compact().unwrap() {}
    }
}

struct Fjall {
    db: fjall::Database,
    messages: fjall::Keyspace,
    sessions: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir.join("store.fjall"))
            .open()
            .unwrap();
        let messages = db
            .keyspace("messages", KeyspaceCreateOptions::default)
            .unwrap();
        let sessions = db
            .keyspace("sessions", KeyspaceCreateOptions::default)
            .unwrap();
        Self {
            db,
            messages,
            sessions,
        }
    }
}

impl Store for Fjall {
    fn commit(&mut self, ops: &[Op]) {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for op in ops {
            match op {
                Op::PutMessage(k, v) => batch.insert(&self.messages, k.as_slice(), v.as_slice()),
                Op::DeleteMessage(k) => batch.remove(&self.messages, k.as_slice()),
                Op::PutSession(k, v) => batch.insert(&self.sessions, k.as_slice(), v.as_slice()),
            }
        }
        batch.commit().unwrap();
    }

    fn scan(&self) -> (usize, usize) {
        let mut counts = [0, 0];
        for (count, keyspace) in counts.iter_mut().zip([&self.messages, &self.sessions]) {
            for guard in keyspace.iter() {
                let (k, v) = guard.into_inner().unwrap();
                black_box((k.len(), v.len()));
                *count += 1;
            }
        }
        (counts[0], counts[1])
    }

    fn compact(&mut self) {
        self.messages.major_compact().unwrap();
        self.sessions.major_compact().unwrap();
    }
}

/// Generates the broker's operations: message puts, deletes of the oldest live
/// message, and session metadata puts.
struct Workload {
    payload: usize,
    clients: Vec<Vec<u8>>,
    next_seq: u64,
    live: VecDeque<Vec<u8>>,
    op_count: u64,
    ops: Vec<Op>,
}

impl Workload {
    fn new(payload: usize) -> Self {
        let clients = (0..CLIENTS)
            .map(|i| format!("client-{i:013}").into_bytes())
            .collect();
        Self {
            payload,
            clients,
            next_seq: 0,
            live: VecDeque::with_capacity(LIVE + 512),
            op_count: 0,
            ops: Vec::new(),
        }
    }

    fn client(&self, n: u64) -> &[u8] {
        let i = usize::try_from(n % CLIENTS as u64).unwrap();
        self.clients.get(i).unwrap()
    }

    fn put_message(&mut self) -> Op {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut key = self.client(seq).to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        // Header then payload, not all zero (lz4 would make zeros free for fjall).
        let value: Vec<u8> = (0..HEADER + self.payload)
            .map(|i| {
                (seq as usize)
                    .wrapping_mul(31)
                    .wrapping_add(i.wrapping_mul(7)) as u8
            })
            .collect();
        self.live.push_back(key.clone());
        Op::PutMessage(key, value)
    }

    fn next_op(&mut self) -> Op {
        let n = self.op_count;
        self.op_count += 1;
        if n % 16 == 15 {
            let mut key = self.client(n / 16).to_vec();
            key.extend_from_slice(b"/session");
            return Op::PutSession(key, vec![n as u8; SESSION_META]);
        }
        // At the steady state, puts and deletes of the oldest message alternate.
        if self.live.len() >= LIVE
            && let Some(key) = self.live.pop_front()
        {
            return Op::DeleteMessage(key);
        }
        self.put_message()
    }

    /// Fills `self.ops` with the next `n` operations.
    fn batch(&mut self, n: usize) -> &[Op] {
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        ops.extend((0..n).map(|_| self.next_op()));
        self.ops = ops;
        &self.ops
    }

    /// Brings `store` to the steady state: `LIVE` messages, committed 1000 per commit.
    fn prefill(&mut self, store: &mut dyn Store) {
        while self.live.len() < LIVE {
            let ops: Vec<Op> = (0..1000).map(|_| self.put_message()).collect();
            store.commit(&ops);
        }
    }
}

fn open_store(name: &str, dir: &Path) -> Box<dyn Store> {
    match name {
        "redb" => Box::new(Redb::open(dir)),
        _ => Box::new(Fjall::open(dir)),
    }
}

const STORES: [&str; 2] = ["redb", "fjall"];

fn commit_group(c: &mut Criterion, group_name: &str, payload: usize) {
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for batch in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        for name in STORES {
            let dir = TempDir::new(name);
            let mut store = open_store(name, &dir.0);
            let mut workload = Workload::new(payload);
            workload.prefill(store.as_mut());
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| {
                    let ops = workload.batch(batch);
                    store.commit(ops);
                });
            });
            drop(store);
        }
    }
    group.finish();
}

fn store_commit(c: &mut Criterion) {
    commit_group(c, "store_commit_100B", 100);
    commit_group(c, "store_commit_1KiB", 1024);
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// On-disk size after 200 000 put+delete pairs.
fn store_size(payload: usize) {
    const PAIRS: u64 = 200_000;
    const BATCH: usize = 256;
    for name in STORES {
        let dir = TempDir::new(name);
        let mut store = open_store(name, &dir.0);
        let mut workload = Workload::new(payload);
        workload.prefill(store.as_mut());
        let prefilled = disk_usage(&dir.0);
        let start = Instant::now();
        let mut commits = 0u64;
        // Each batch of 256 holds 16 session puts and 120 message puts + 120 deletes.
        while workload.next_seq < PAIRS + LIVE as u64 {
            store.commit(workload.batch(BATCH));
            commits += 1;
        }
        let elapsed = start.elapsed();
        let after = disk_usage(&dir.0);
        drop(store);
        let mut store = open_store(name, &dir.0);
        let reopened = disk_usage(&dir.0);
        let (messages, sessions) = store.scan();
        store.compact();
        let compacted = disk_usage(&dir.0);
        drop(store);
        let closed = disk_usage(&dir.0);
        let live_bytes = messages as u64 * (28 + (HEADER + payload) as u64) + sessions as u64 * 228;
        println!(
            "store_size/{payload}B/{name}: live {messages} messages + {sessions} sessions \
             ({:.2} MiB of keys+values); prefilled {:.2} MiB; after {} pairs \
             ({commits} commits, {:.1} s) {:.2} MiB; reopened {:.2} MiB; \
             compacted {:.2} MiB; closed {:.2} MiB",
            mib(live_bytes),
            mib(prefilled),
            workload.next_seq - LIVE as u64,
            elapsed.as_secs_f64(),
            mib(after),
            mib(reopened),
            mib(compacted),
            mib(closed),
        );
    }
}

/// Open plus full iteration of a store holding 1 000 000 keys with 100-byte values.
fn store_recovery() {
    const KEYS: u64 = 1_000_000;
    const PER_COMMIT: u64 = 10_000;
    for name in STORES {
        let dir = TempDir::new(name);
        let mut store = open_store(name, &dir.0);
        let start = Instant::now();
        for chunk in 0..KEYS / PER_COMMIT {
            let ops: Vec<Op> = (chunk * PER_COMMIT..(chunk + 1) * PER_COMMIT)
                .map(|seq| {
                    let mut key = format!("client-{:013}", seq % CLIENTS as u64).into_bytes();
                    key.extend_from_slice(&seq.to_be_bytes());
                    let value = (0..100u64).map(|i| (seq * 31 + i * 7) as u8).collect();
                    Op::PutMessage(key, value)
                })
                .collect();
            store.commit(&ops);
        }
        let load = start.elapsed();
        drop(store);
        let size = disk_usage(&dir.0);
        let mut runs = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let store = open_store(name, &dir.0);
            let opened = start.elapsed();
            let (messages, _) = store.scan();
            let total = start.elapsed();
            assert_eq!(messages as u64, KEYS);
            drop(store);
            runs.push(format!(
                "open {:.1} ms + iterate {:.1} ms = {:.1} ms",
                opened.as_secs_f64() * 1e3,
                (total - opened).as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3
            ));
        }
        println!(
            "store_recovery/{name}: load {:.1} s, {:.1} MiB on disk; reopen+scan: {}",
            load.as_secs_f64(),
            mib(size),
            runs.join("; ")
        );
    }
}

/// Runs `f` when this is a `--bench` run and no filter excludes `name`.
fn printed(name: &str, f: impl FnOnce()) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
        f();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    store_commit(&mut c);
    c.final_summary();
    printed("store_size", || {
        store_size(100);
        store_size(1024);
    });
    printed("store_recovery", store_recovery);
}
