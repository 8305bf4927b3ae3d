//! The only user of `rusqlite` (with its `writer` submodule): schema,
//! booking CRUD, keyset paging, idempotency keys, and the change log that
//! keeps node caches coherent.
//!
//! One SQLite file is shared by every node, whether node threads in one relay
//! process or separate `bookrelay node` processes. That works because:
//!
//! - **WAL journal**: readers never block the single writer, nor it them.
//! - **busy timeout**: a writer that finds the database locked by another
//!   process waits (up to [`BUSY_TIMEOUT`]) instead of failing; every write
//!   transaction starts `IMMEDIATE` so it takes the write lock up front and
//!   cannot deadlock upgrading from a read.
//! - **`synchronous = NORMAL`** in WAL mode: a commit survives the death of any
//!   process at any moment (SPEC §2's promise); only an OS crash or power loss
//!   could lose the last commits, which `FULL` would cost an fsync per write to
//!   prevent.
//! - **change log**: every write appends the changed `booking_id` to `changes`
//!   in the same transaction. A [`ChangeFeed`] asks SQLite whether anyone
//!   committed since it last looked (`PRAGMA data_version`, answered from shared
//!   memory without touching the file) and, only if so, reads the ids logged
//!   since its position. Nodes drop exactly those ids from their caches. The
//!   "did anyone commit" test itself is one `pread` of the WAL-index header
//!   (`WalIndexWatch`), with the PRAGMA as its fallback.
//!
//! # Group commit
//!
//! SQLite has one write lock per file. When every request thread ran its own
//! transaction on its own pooled connection, concurrent writers collided on
//! that lock, and the losers slept in SQLite's busy handler, whose steps (1,
//! 2, 5, 10 ms and up) have nothing to do with how soon the lock frees: a
//! write that needed 50 µs could wait 10 ms, and those waits set the p99.
//!
//! So writes (create, with or without an idempotency key, update, delete) go
//! to one **writer thread** per database file per process (`writer`), which
//! owns the one connection that writes. Request threads queue their write and
//! wait. The writer takes everything queued (at most [`MAX_BATCH_WRITES`]
//! writes and [`MAX_BATCH_BYTES`] bytes), runs it as **one `IMMEDIATE`
//! transaction**, commits once, and then wakes each waiter with its outcome.
//! While one batch commits the next one queues, so batches grow with the
//! load by themselves; nothing waits on purpose for company, and a lone
//! write is committed at once.
//!
//! - **Savepoints**: each write runs inside its own `SAVEPOINT`. A write that
//!   fails (a duplicate id, an invalid patch, a reused idempotency key, a
//!   missing booking) is rolled back to its savepoint and answered with its
//!   own error, so its client gets its own 4xx while the rest of the batch
//!   commits. Idempotency keys are checked inside the savepoint against
//!   everything before it, including earlier writes of the same batch, so
//!   two creates with one key in one batch are a first write and a replay
//!   (or [`Error::KeyReused`]), as they would be one after the other.
//! - **Durability**: no write is answered before the commit of its batch
//!   returns; a 2xx still means committed, in WAL with `synchronous = NORMAL`
//!   as before. If the transaction fails as a whole (the lock not granted
//!   within [`BUSY_TIMEOUT`], a failed commit) every write in it is answered
//!   with that error, and none of them was written.
//! - **Coherence** is unchanged: each write's change-log row is written in its
//!   savepoint, so it commits exactly when the write does.
//! - **Other processes** on the same file still meet on the lock; the writer's
//!   connection keeps the busy timeout for them, and each process's writes
//!   take the lock once per batch instead of once per write.
//! - **Bounded waiting**: a write not taken into a batch within
//!   [`MAX_WRITE_WAIT`] is answered [`Error::Busy`] and never written.
//!
//! The writer is shared by every [`Store`] this process opens on the same file
//! (the relay's node threads each open one) and ends when the last of them is
//! dropped, after running what was queued. [`Store::write_stats`] counts its
//! writes, commits and largest batch.
//!
//! Reads do not queue: connections are pooled (a node serves many client
//! threads), a read takes one, runs cached prepared statements, and puts it
//! back.
//!
//! Beside this file: `store/connection.rs` (how a connection is opened and how
//! it waits for another process's lock), `store/rows.rs` (a booking as SQL and
//! the change-log entry), `store/error.rs` (what an operation can answer) and
//! `store/writer.rs` (group commit). They depend on one another in that order
//! and none on this file.

mod connection;
mod error;
mod rows;
mod writer;

pub use connection::BUSY_TIMEOUT;
pub use error::{Created, Error};
pub use rows::CHANGE_LOG_KEEP;
pub use writer::{WriteStats, MAX_BATCH_BYTES, MAX_BATCH_WRITES, MAX_WRITE_WAIT};

use crate::booking::{Booking, Invalid};
use crate::rand::Rng;
use crate::sample::sample_booking;
use connection::{connect, retry_while_busy};
use rows::{booking_from_row, insert_row, COLUMNS};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use writer::{Outcome, Write, Writer};

/// Pooled connections kept open per store; more are opened under load and
/// closed again when returned to a full pool.
const MAX_IDLE_CONNECTIONS: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bookings (
    booking_id TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    destination TEXT NOT NULL,
    departure_city TEXT NOT NULL,
    flight_number TEXT NOT NULL,
    hotel_name TEXT NOT NULL,
    room_type TEXT NOT NULL,
    payment_method TEXT NOT NULL,
    email TEXT NOT NULL,
    phone TEXT NOT NULL,
    booking_date TEXT NOT NULL,
    travel_date TEXT NOT NULL,
    return_date TEXT,
    total_price REAL NOT NULL,
    payment_status TEXT NOT NULL,
    travel_agency TEXT,
    special_requests TEXT,
    loyalty_program_number TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    booking_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY NOT NULL,
    request_body BLOB NOT NULL,
    status INTEGER NOT NULL,
    response_body TEXT NOT NULL,
    booking_id TEXT NOT NULL
) WITHOUT ROWID;
";

/// Where ids changed by other writers are learnt; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Nobody committed since the last poll.
    None,
    /// These ids were written since the last poll.
    Ids(Vec<String>),
    /// The log no longer reaches back to our position: forget everything.
    All,
}

/// A handle on one SQLite database file.
pub struct Store {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    writer: Arc<Writer>,
}

impl Store {
    /// Opens (creating if missing) the database and its schema.
    ///
    /// Several processes may do this at once on a new file (three `bookrelay
    /// node`s started together). Switching a file to WAL takes an exclusive
    /// lock that SQLite's busy handler does not wait for, so a busy answer
    /// here is retried until [`BUSY_TIMEOUT`].
    pub fn open(path: &Path) -> Result<Store, Error> {
        let conn = retry_while_busy(|| {
            let conn = connect(path)?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        })?;
        // The file exists now; its canonical path names it for sharing the writer.
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let owned = path.to_path_buf();
        let writer = Writer::for_file(canonical, move || retry_while_busy(|| connect(&owned)))?;
        let store = Store {
            path: path.to_path_buf(),
            pool: Mutex::new(Vec::new()),
            writer,
        };
        store.give_back(conn);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of this file's writer in this process (shared by every
    /// [`Store`] of the process on the file; see the module docs).
    pub fn write_stats(&self) -> WriteStats {
        self.writer.stats()
    }

    fn pool(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A panic elsewhere while holding the lock leaves a valid Vec behind.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Result<Connection, Error> {
        if let Some(conn) = self.pool().pop() {
            return Ok(conn);
        }
        connect(&self.path)
    }

    fn give_back(&self, conn: Connection) {
        let mut pool = self.pool();
        if pool.len() < MAX_IDLE_CONNECTIONS {
            pool.push(conn);
        }
    }

    /// Runs `work` on a pooled connection.
    fn with_conn<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.take()?;
        let result = work(&mut conn);
        self.give_back(conn);
        result
    }

    pub fn count(&self) -> Result<u64, Error> {
        self.with_conn(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM bookings")?
                .query_row([], |row| row.get(0))?;
            Ok(n as u64)
        })
    }

    /// Inserts `n` generated sample bookings if the table is empty; returns how
    /// many were inserted. Concurrent callers insert once between them.
    pub fn seed_if_empty(&self, n: usize, rng: &mut Rng) -> Result<usize, Error> {
        if n == 0 {
            return Ok(0);
        }
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: i64 =
                tx.query_row("SELECT COUNT(*) FROM bookings", [], |row| row.get(0))?;
            if existing > 0 {
                return Ok(0);
            }
            for _ in 0..n {
                insert_row(&tx, &sample_booking(rng))?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<Booking>, Error> {
        self.with_conn(|conn| {
            let sql = format!("SELECT {COLUMNS} FROM bookings WHERE booking_id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], booking_from_row)
                .optional()?)
        })
    }

    /// Up to `limit` bookings with ids after `after`, in byte order of id
    /// (SQLite's default BINARY collation), using the primary key: keyset
    /// paging costs the same on page 1 and page 1000.
    pub fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<Booking>, Error> {
        self.with_conn(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM bookings WHERE booking_id > ?1 ORDER BY booking_id LIMIT ?2"
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement
                .query_map(params![after.unwrap_or(""), limit as i64], booking_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Creates a booking. With an idempotency key (`key`, the request body's
    /// exact bytes), a repeat with the same key and body returns the first
    /// answer and writes nothing; the same key with another body is
    /// [`Error::KeyReused`]. The key check and the insert share one savepoint
    /// of the writer's transaction, so concurrent repeats are serialised.
    /// Returns once the write is committed (or has failed).
    pub fn create(&self, booking: &Booking, key: Option<(&str, &[u8])>) -> Result<Created, Error> {
        let write = Write::Create {
            booking: Box::new(booking.clone()),
            key: key.map(|(key, body)| (key.to_string(), body.to_vec())),
        };
        match self.writer.run(write, NO_CHANGE)? {
            Outcome::Created(created) => Ok(created),
            other => Err(unexpected("create", &other)),
        }
    }

    /// Reads, changes and writes one booking in one savepoint of the writer's
    /// transaction, so two concurrent PATCHes of different fields cannot lose
    /// each other. `change` runs on the calling thread, on the row as it is
    /// inside that transaction; it is not called if the booking is missing.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&Booking) -> Result<Booking, Invalid>,
    ) -> Result<Booking, Error> {
        let write = Write::Update { id: id.to_string() };
        match self.writer.run(write, Some(change))? {
            Outcome::Updated(booking) => Ok(*booking),
            other => Err(unexpected("update", &other)),
        }
    }

    /// Deletes a booking; [`Error::NotFound`] if there was none.
    pub fn delete(&self, id: &str) -> Result<(), Error> {
        let write = Write::Delete { id: id.to_string() };
        match self.writer.run(write, NO_CHANGE)? {
            Outcome::Deleted => Ok(()),
            other => Err(unexpected("delete", &other)),
        }
    }

    /// A feed of changes committed from now on, on its own connection.
    pub fn change_feed(&self) -> Result<ChangeFeed, Error> {
        let conn = retry_while_busy(|| connect(&self.path))?;
        // Header first, then version and position: a commit in between is
        // seen by the next poll, never missed.
        let wal_index = WalIndexWatch::open(&self.path);
        let data_version = data_version(&conn)?;
        let last_seq = max_seq(&conn)?;
        Ok(ChangeFeed {
            conn,
            data_version,
            last_seq,
            wal_index,
        })
    }
}

/// What an update does to the current row.
type Change = fn(&Booking) -> Result<Booking, Invalid>;

/// The `change` of a write that is not an update.
const NO_CHANGE: Option<Change> = None;

/// The writer answered with another kind of outcome: a bug, not input.
fn unexpected(what: &str, outcome: &Outcome) -> Error {
    Error::Database(format!("the writer answered a {what} with {outcome:?}"))
}

/// Follows the change log from one position; see the module docs.
pub struct ChangeFeed {
    conn: Connection,
    data_version: i64,
    last_seq: i64,
    wal_index: Option<WalIndexWatch>,
}

/// Bytes at the start of the `-shm` file that hold the WAL-index header:
/// two 48-byte copies (SQLite's documented WAL file format).
const WAL_INDEX_HEADER_BYTES: usize = 96;

/// The version number SQLite writes first in the WAL-index header.
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// The cheap "did anyone commit?" test.
///
/// `PRAGMA data_version` changes exactly when the WAL-index header in the
/// `-shm` file changes: every commit, from any connection in any process,
/// rewrites that header before it returns. Reading the header with one
/// `pread` and comparing it with the last one seen answers the question
/// without starting a read transaction, which in WAL mode costs two `fcntl`
/// locks and SQLite's statement machinery (about 1.7 µs per cache hit). Only
/// when the header differs does the feed run the real poll. A header caught
/// mid-update differs from the last one seen, so it errs toward polling.
/// If the file cannot be read or is not in the expected format, every poll
/// takes the real path.
struct WalIndexWatch {
    shm: File,
    last: [u8; WAL_INDEX_HEADER_BYTES],
}

impl WalIndexWatch {
    fn open(db: &Path) -> Option<WalIndexWatch> {
        let mut path = db.as_os_str().to_owned();
        path.push("-shm");
        let shm = File::open(path).ok()?;
        let mut watch = WalIndexWatch {
            shm,
            last: [0; WAL_INDEX_HEADER_BYTES],
        };
        watch.last = watch.read()?;
        Some(watch)
    }

    /// The header now, if it reads whole and looks like one.
    fn read(&self) -> Option<[u8; WAL_INDEX_HEADER_BYTES]> {
        let mut header = [0u8; WAL_INDEX_HEADER_BYTES];
        self.shm.read_exact_at(&mut header, 0).ok()?;
        let version = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
        (version == WAL_INDEX_VERSION).then_some(header)
    }
}

impl ChangeFeed {
    /// What was committed since the last poll. When nothing was, this costs
    /// one `pread` of the WAL-index header (`WalIndexWatch`).
    pub fn poll(&mut self) -> Result<Changes, Error> {
        let header = self.wal_index.as_ref().and_then(WalIndexWatch::read);
        if let (Some(header), Some(watch)) = (&header, &self.wal_index) {
            if *header == watch.last {
                return Ok(Changes::None);
            }
        }
        let changes = self.poll_database()?;
        // Remember the header read before the real poll: anything committed
        // since changes it again, so the next poll looks again.
        if let (Some(header), Some(watch)) = (header, self.wal_index.as_mut()) {
            watch.last = header;
        }
        Ok(changes)
    }

    /// The real poll: `PRAGMA data_version`, then the change log.
    fn poll_database(&mut self) -> Result<Changes, Error> {
        let version = data_version(&self.conn)?;
        if version == self.data_version {
            return Ok(Changes::None);
        }
        // Read the version before the log: a commit landing between the two
        // reads shows up in the log now and moves the version again, so it is
        // at worst seen twice, never missed.
        self.data_version = version;
        let oldest: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(seq) FROM changes")?
            .query_row([], |row| row.get(0))?;
        if let Some(oldest) = oldest {
            if oldest > self.last_seq + 1 {
                self.last_seq = max_seq(&self.conn)?;
                return Ok(Changes::All);
            }
        }
        let mut statement = self
            .conn
            .prepare_cached("SELECT seq, booking_id FROM changes WHERE seq > ?1 ORDER BY seq")?;
        let mut ids = Vec::new();
        let mut rows = statement.query([self.last_seq])?;
        while let Some(row) = rows.next()? {
            self.last_seq = row.get(0)?;
            ids.push(row.get(1)?);
        }
        Ok(if ids.is_empty() {
            Changes::None
        } else {
            Changes::Ids(ids)
        })
    }
}

fn data_version(conn: &Connection) -> Result<i64, Error> {
    Ok(conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))?)
}

fn max_seq(conn: &Connection) -> Result<i64, Error> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")?
        .query_row([], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir::TempDir;

    fn store() -> (TempDir, Store) {
        let dir = TempDir::new("store");
        let store = Store::open(&dir.path().join("b.db")).expect("open");
        (dir, store)
    }

    fn sample(id: &str) -> Booking {
        let mut booking = sample_booking(&mut Rng::new(7));
        booking.booking_id = id.to_string();
        booking
    }

    #[test]
    fn created_booking_reads_back_equal() {
        let (_dir, store) = store();
        let booking = sample("abc");
        assert_eq!(
            store.create(&booking, None),
            Ok(Created::New(booking.to_json()))
        );
        assert_eq!(store.get("abc"), Ok(Some(booking)));
        assert_eq!(store.get("nope"), Ok(None));
    }

    #[test]
    fn duplicate_id_is_exists() {
        let (_dir, store) = store();
        store.create(&sample("dup"), None).expect("first");
        assert_eq!(
            store.create(&sample("dup"), None),
            Err(Error::Exists("dup".into()))
        );
    }

    #[test]
    fn idempotency_key_replays_and_detects_other_bodies() {
        let (_dir, store) = store();
        let first = store
            .create(&sample("k1"), Some(("key-1", b"body")))
            .expect("first");
        let json = sample("k1").to_json();
        assert_eq!(first, Created::New(json.clone()));
        // Same key and bytes: the stored answer, even though the id now exists.
        assert_eq!(
            store.create(&sample("k1"), Some(("key-1", b"body"))),
            Ok(Created::Replayed {
                status: 201,
                body: json,
                booking_id: "k1".into()
            })
        );
        assert_eq!(
            store.create(&sample("k2"), Some(("key-1", b"other"))),
            Err(Error::KeyReused)
        );
        assert_eq!(store.count(), Ok(1));
    }

    #[test]
    fn keys_of_failed_creates_are_not_remembered() {
        let (_dir, store) = store();
        store.create(&sample("taken"), None).expect("first");
        assert!(matches!(
            store.create(&sample("taken"), Some(("k", b"x"))),
            Err(Error::Exists(_))
        ));
        let mut other = sample("free");
        other.customer_name = "Other".into();
        assert!(matches!(
            store.create(&other, Some(("k", b"x"))),
            Ok(Created::New(_))
        ));
    }

    #[test]
    fn list_pages_in_byte_order() {
        let (_dir, store) = store();
        for id in ["b", "a", "C", "c", "_"] {
            store.create(&sample(id), None).expect("create");
        }
        let ids = |v: Vec<Booking>| v.into_iter().map(|b| b.booking_id).collect::<Vec<_>>();
        assert_eq!(ids(store.list(None, 3).expect("page 1")), ["C", "_", "a"]);
        assert_eq!(ids(store.list(Some("a"), 3).expect("page 2")), ["b", "c"]);
        assert!(store.list(Some("c"), 3).expect("page 3").is_empty());
    }

    #[test]
    fn update_applies_the_change_and_rejections_write_nothing() {
        let (_dir, store) = store();
        store.create(&sample("u"), None).expect("create");
        let updated = store
            .update("u", |b| {
                let mut b = b.clone();
                b.customer_name = "New Name".into();
                Ok(b)
            })
            .expect("update");
        assert_eq!(updated.customer_name, "New Name");
        assert_eq!(
            store.get("u").expect("get").expect("row").customer_name,
            "New Name"
        );
        let rejected = store.update("u", |_| Err(Invalid("nope".into())));
        assert_eq!(rejected, Err(Error::Invalid(Invalid("nope".into()))));
        assert_eq!(
            store.update("missing", |b| Ok(b.clone())),
            Err(Error::NotFound)
        );
    }

    #[test]
    fn delete_removes_and_reports_missing() {
        let (_dir, store) = store();
        store.create(&sample("d"), None).expect("create");
        assert_eq!(store.delete("d"), Ok(()));
        assert_eq!(store.delete("d"), Err(Error::NotFound));
        assert_eq!(store.get("d"), Ok(None));
    }

    #[test]
    fn many_openers_of_one_new_file_all_succeed() {
        let dir = TempDir::new("store-race");
        let path = dir.path().join("race.db");
        let opened = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| Store::open(&path).map(|store| store.count())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect::<Vec<_>>()
        });
        for result in opened {
            assert_eq!(result.map(|count| count.ok()), Ok(Some(0)));
        }
    }

    #[test]
    fn seeding_happens_once() {
        let (_dir, store) = store();
        assert_eq!(store.seed_if_empty(25, &mut Rng::new(1)), Ok(25));
        assert_eq!(store.seed_if_empty(25, &mut Rng::new(2)), Ok(0));
        assert_eq!(store.count(), Ok(25));
    }

    #[test]
    fn change_feed_sees_writes_from_another_connection_exactly() {
        let (dir, store) = store();
        let mut feed = store.change_feed().expect("feed");
        assert_eq!(feed.poll(), Ok(Changes::None));
        // A second Store stands for another process on the same file.
        let other = Store::open(&dir.path().join("b.db")).expect("open again");
        other.create(&sample("x"), None).expect("create");
        other.update("x", |b| Ok(b.clone())).expect("update");
        assert_eq!(feed.poll(), Ok(Changes::Ids(vec!["x".into(), "x".into()])));
        assert_eq!(feed.poll(), Ok(Changes::None));
        other.delete("x").expect("delete");
        assert_eq!(feed.poll(), Ok(Changes::Ids(vec!["x".into()])));
    }

    #[test]
    fn the_feed_watches_the_wal_index_header_and_still_sees_every_commit() {
        let (dir, store) = store();
        let mut feed = store.change_feed().expect("feed");
        assert!(
            feed.wal_index.is_some(),
            "the -shm header is readable in WAL mode"
        );
        let other = Store::open(&dir.path().join("b.db")).expect("open again");
        for round in 0..50 {
            let id = format!("w{round}");
            other.create(&sample(&id), None).expect("create");
            assert_eq!(feed.poll(), Ok(Changes::Ids(vec![id])), "round {round}");
            assert_eq!(feed.poll(), Ok(Changes::None), "round {round}");
        }
    }

    #[test]
    fn a_feed_without_the_header_falls_back_to_the_pragma() {
        let (dir, store) = store();
        let mut feed = store.change_feed().expect("feed");
        feed.wal_index = None;
        let other = Store::open(&dir.path().join("b.db")).expect("open again");
        other.create(&sample("p1"), None).expect("create");
        assert_eq!(feed.poll(), Ok(Changes::Ids(vec!["p1".into()])));
        assert_eq!(feed.poll(), Ok(Changes::None));
    }

    #[test]
    fn a_feed_behind_the_pruned_log_is_told_to_forget_everything() {
        let (_dir, store) = store();
        let mut feed = store.change_feed().expect("feed");
        store.create(&sample("p"), None).expect("create");
        // Prune past the feed's position, as a long-running node would see.
        store
            .with_conn(|c| Ok(c.execute("DELETE FROM changes", [])?))
            .expect("prune");
        store.update("p", |b| Ok(b.clone())).expect("update");
        assert_eq!(feed.poll(), Ok(Changes::All));
        assert_eq!(feed.poll(), Ok(Changes::None));
    }

    type BatchWrite<'a, T> = Box<dyn FnOnce(&Store) -> T + Send + 'a>;

    /// Runs `writes` (each on its own thread, queued in the given order while
    /// the writer is held), then lets the writer take them all as one batch.
    /// Returns each write's result in order.
    fn in_one_batch<T: Send>(store: &Store, writes: Vec<BatchWrite<'_, T>>) -> Vec<T> {
        let before = store.write_stats();
        store.writer.hold(true);
        let n = writes.len();
        let results = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, write) in writes.into_iter().enumerate() {
                handles.push(scope.spawn(move || write(store)));
                // Queued strictly in order: the next thread starts only once
                // this one's write is in the queue.
                store.writer.wait_until_queued(i + 1);
            }
            store.writer.hold(false);
            handles
                .into_iter()
                .map(|h| h.join().expect("writer thread"))
                .collect::<Vec<_>>()
        });
        let after = store.write_stats();
        assert_eq!(
            after.commits - before.commits,
            1,
            "one commit for the batch"
        );
        assert_eq!(after.writes - before.writes, n as u64);
        assert!(after.largest_batch >= n as u64);
        results
    }

    #[test]
    fn one_batch_answers_each_write_with_its_own_outcome() {
        let (_dir, store) = store();
        for id in ["taken", "keep", "gone"] {
            store.create(&sample(id), None).expect("setup");
        }
        let mut feed = store.change_feed().expect("feed");
        let mut fresh = sample("fresh");
        fresh.customer_name = "Fresh Person".into();
        let mut duplicate = sample("taken");
        duplicate.customer_name = "Not Stored".into();
        let (fresh_copy, duplicate_copy) = (fresh.clone(), duplicate.clone());
        #[derive(Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        enum Answer {
            Created(Result<Created, Error>),
            Updated(Result<Booking, Error>),
            Deleted(Result<(), Error>),
        }
        let answers = in_one_batch(
            &store,
            vec![
                Box::new(move |s: &Store| Answer::Created(s.create(&fresh_copy, None))),
                Box::new(move |s: &Store| Answer::Created(s.create(&duplicate_copy, None))),
                Box::new(|s: &Store| {
                    Answer::Updated(s.update("keep", |_| {
                        Err(Invalid("total_price must be a number".into()))
                    }))
                }),
                Box::new(|s: &Store| Answer::Deleted(s.delete("gone"))),
            ],
        );
        assert_eq!(
            answers,
            [
                Answer::Created(Ok(Created::New(fresh.to_json()))),
                Answer::Created(Err(Error::Exists("taken".into()))),
                Answer::Updated(Err(Error::Invalid(Invalid(
                    "total_price must be a number".into()
                )))),
                Answer::Deleted(Ok(())),
            ]
        );
        assert_eq!(store.write_stats().largest_batch, 4);
        assert_eq!(store.get("fresh"), Ok(Some(fresh)));
        assert_eq!(store.get("taken"), Ok(Some(sample("taken"))));
        assert_eq!(store.get("keep"), Ok(Some(sample("keep"))));
        assert_eq!(store.get("gone"), Ok(None));
        // Only the writes that succeeded reached the change log.
        assert_eq!(
            feed.poll(),
            Ok(Changes::Ids(vec!["fresh".into(), "gone".into()]))
        );
    }

    #[test]
    fn updates_in_one_batch_each_change_their_own_row_and_a_repeat_waits_for_the_next() {
        let (_dir, store) = store();
        for id in ["a", "b"] {
            store.create(&sample(id), None).expect("setup");
        }
        let rename = |id: &'static str, suffix: &'static str| {
            Box::new(move |s: &Store| {
                s.update(id, |current| {
                    let mut b = current.clone();
                    b.customer_name.push_str(suffix);
                    Ok(b)
                })
                .map(|b| b.customer_name)
            }) as Box<dyn FnOnce(&Store) -> Result<String, Error> + Send>
        };
        let before = store.write_stats();
        store.writer.hold(true);
        let results = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, write) in [
                rename("a", " 1"),
                rename("b", " 1"),
                rename("a", " 2"),
                rename("missing", " 1"),
            ]
            .into_iter()
            .enumerate()
            {
                let store = &store;
                handles.push(scope.spawn(move || write(store)));
                store.writer.wait_until_queued(i + 1);
            }
            store.writer.hold(false);
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect::<Vec<_>>()
        });
        let name = sample("a").customer_name;
        assert_eq!(
            results,
            [
                Ok(format!("{name} 1")),
                Ok(format!("{name} 1")),
                Ok(format!("{name} 1 2")),
                Err(Error::NotFound),
            ]
        );
        // The second update of "a" saw the first: it went in a second batch.
        let after = store.write_stats();
        assert_eq!(after.commits - before.commits, 2);
        assert_eq!(after.largest_batch, 2);
    }

    #[test]
    fn one_idempotency_key_twice_in_one_batch_is_a_write_and_a_replay() {
        let (_dir, store) = store();
        let booking = sample("i1");
        let (first, second) = (booking.clone(), booking.clone());
        let mut other = sample("i2");
        other.customer_name = "Someone Else".into();
        let answers = in_one_batch(
            &store,
            vec![
                Box::new(move |s: &Store| s.create(&first, Some(("key", b"body")))),
                Box::new(move |s: &Store| s.create(&second, Some(("key", b"body")))),
                Box::new(move |s: &Store| s.create(&other, Some(("key", b"other body")))),
            ],
        );
        assert_eq!(
            answers,
            [
                Ok(Created::New(booking.to_json())),
                Ok(Created::Replayed {
                    status: 201,
                    body: booking.to_json(),
                    booking_id: "i1".into()
                }),
                Err(Error::KeyReused),
            ]
        );
        assert_eq!(store.count(), Ok(1));
    }

    #[test]
    fn a_lone_write_is_run_by_its_own_caller_and_queued_ones_by_the_writer_thread() {
        let (_dir, store) = store();
        let led = store.writer.led_batches();
        store.create(&sample("alone"), None).expect("create");
        assert_eq!(
            store.update("alone", |b| Ok(Booking {
                special_requests: Some("window".into()),
                ..b.clone()
            })),
            Ok(Booking {
                special_requests: Some("window".into()),
                ..sample("alone")
            }),
            "the leader computes its own change"
        );
        assert_eq!(store.delete("alone"), Ok(()));
        assert_eq!(
            store.writer.led_batches() - led,
            3,
            "one at a time, each caller ran its own batch"
        );
        let led = store.writer.led_batches();
        let writes: Vec<BatchWrite<'_, Result<Created, Error>>> = ["q1", "q2"]
            .into_iter()
            .map(|id| -> BatchWrite<'_, _> {
                Box::new(move |s: &Store| s.create(&sample(id), None))
            })
            .collect();
        for result in in_one_batch(&store, writes) {
            assert!(result.is_ok(), "{result:?}");
        }
        assert_eq!(
            store.writer.led_batches(),
            led,
            "writes queued while the writer was held went to the writer thread"
        );
    }

    #[test]
    fn a_panic_in_the_writer_answers_its_batch_with_an_error_and_the_writer_goes_on() {
        let (_dir, store) = store();
        store.writer.panic_in_next_batch();
        assert!(matches!(
            store.create(&sample("lost"), None),
            Err(Error::Database(_))
        ));
        assert_eq!(
            store.get("lost"),
            Ok(None),
            "the panicked batch was rolled back"
        );
        assert!(matches!(
            store.create(&sample("kept"), None),
            Ok(Created::New(_))
        ));
        assert_eq!(store.count(), Ok(1));
    }

    #[test]
    fn stores_of_one_file_share_a_writer_that_ends_with_the_last_of_them() {
        let (dir, first) = store();
        let second = Store::open(&dir.path().join("b.db")).expect("open again");
        assert!(Arc::ptr_eq(&first.writer, &second.writer));
        let writer = Arc::downgrade(&first.writer);
        drop(first);
        second
            .create(&sample("still"), None)
            .expect("the writer lives on");
        let shared = Arc::downgrade(&second.writer.shared_for_test());
        drop(second);
        // The writer is gone and so is its thread, which held the shared state.
        assert!(writer.upgrade().is_none());
        assert!(shared.upgrade().is_none());
    }

    #[test]
    fn an_update_whose_change_panics_fails_alone_and_the_writer_goes_on() {
        let (_dir, store) = store();
        store.create(&sample("p"), None).expect("setup");
        let panicked = std::thread::scope(|scope| {
            scope
                .spawn(|| store.update("p", |_| panic!("test: the change panics")))
                .join()
        });
        assert!(
            panicked.is_err(),
            "the caller's own panic reaches the caller"
        );
        assert_eq!(store.get("p"), Ok(Some(sample("p"))));
        assert_eq!(store.delete("p"), Ok(()));
    }
}
