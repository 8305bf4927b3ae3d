//! Group commit: one writer thread per database file per process.
//!
//! Request threads do not write to SQLite themselves. They queue their write
//! here and wait; the writer takes everything queued (up to
//! [`MAX_BATCH_WRITES`] and [`MAX_BATCH_BYTES`]), runs it as one `IMMEDIATE`
//! transaction with each write inside its own `SAVEPOINT`, commits once and
//! only then wakes each waiter with its own outcome. See the parent module's
//! docs for why; this file is the mechanism.
//!
//! **Who runs a batch.** A write that arrives while no batch is running is
//! not handed over: its caller runs the batch itself (its own write and
//! anything queued with it) on the shared write connection, so a lone writer
//! pays no thread switches. Writes that arrive while a batch runs queue up,
//! and the writer thread takes them as the next batch the moment the running
//! one ends. One flag under the queue's lock (`Queue::running`) makes sure a
//! single thread runs a batch at a time.
//!
//! **Updates.** [`Store::update`](super::Store::update) takes a closure that
//! may borrow from its caller and need not be `Send`, so it cannot travel to
//! the writer. Instead the writer, inside the batch's transaction, reads the
//! current row of every update in the batch and hands each to its waiting
//! caller; the callers compute their new rows in parallel on their own
//! threads while the writer runs the batch's other writes, and the writer
//! stores each result when it reaches that write. A row read this way stays
//! current until it is written because a batch never holds an update behind
//! an earlier write of the same booking: such an update waits for the next
//! batch.
//!
//! **Failures.** A write whose own statements fail (duplicate id, invalid
//! patch, missing row, reused key) is rolled back to its savepoint and gets
//! its own error; the batch goes on. A failure that ends the transaction
//! (the lock not granted within the busy timeout, a full disk, a failed
//! commit) answers every write of the batch with that error: none of them
//! was committed. A panic while running a batch is caught: every unanswered
//! write of that batch gets an error, the connection is rolled back (or
//! reopened) and the writer goes on with the next batch. If the thread ever
//! ends anyway, the writes still queued are answered and later writes are
//! refused at once. No waiter is left hanging.

use super::connection::BUSY_TIMEOUT;
use super::error::{Created, Error};
use super::rows::{booking_from_row, booking_params, insert_row, log_change, row_bytes, COLUMNS};
use crate::booking::{Booking, Invalid};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most writes in one batch.
///
/// A batch holds SQLite's write lock from its `BEGIN` to its `COMMIT`, so
/// other processes on the file wait for all of it, and every write in it is
/// answered only at its end. Beyond a few hundred writes the cost of the
/// commit (a few WAL page writes) is already spread thin, and a larger batch
/// only lengthens that wait.
pub const MAX_BATCH_WRITES: usize = 256;

/// Most bytes of booking data (estimated, see `Write::bytes`) in one batch.
///
/// Bounds the WAL growth of one transaction and the time the lock is held
/// when writes are large (long `special_requests`, idempotent creates that
/// also store their request body). One MiB is about 1,500 typical bookings,
/// so with ordinary rows [`MAX_BATCH_WRITES`] binds first. A single write
/// larger than this still goes alone in its own batch.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Longest a write waits in the queue for a batch to take it; then it is
/// answered [`Error::Busy`] (503) and was not written.
///
/// The queue is only long while the writer is stuck, which is when another
/// process holds the lock: the writer then waits up to [`BUSY_TIMEOUT`] in
/// SQLite's busy handler. Before group commit a write waited the same
/// [`BUSY_TIMEOUT`] for the lock, so a client sees the same patience. A write
/// already taken into a batch is never abandoned: it waits for the batch's
/// commit or failure, which the busy timeout bounds.
pub const MAX_WRITE_WAIT: Duration = BUSY_TIMEOUT;

/// What an update or delete counts towards [`MAX_BATCH_BYTES`]: a typical
/// booking row. An update's new row is not known when the batch is formed.
const ROW_BYTES_ESTIMATE: usize = 600;

/// One write as the writer runs it.
pub(super) enum Write {
    Create {
        booking: Box<Booking>,
        /// The idempotency key and the request body's exact bytes.
        key: Option<(String, Vec<u8>)>,
    },
    /// The new row is computed by the caller (see the module docs).
    Update {
        id: String,
    },
    Delete {
        id: String,
    },
}

impl Write {
    fn id(&self) -> &str {
        match self {
            Write::Create { booking, .. } => &booking.booking_id,
            Write::Update { id } | Write::Delete { id } => id,
        }
    }

    /// An estimate of the bytes this write adds to the database.
    fn bytes(&self) -> usize {
        match self {
            Write::Create { booking, key } => {
                let row = row_bytes(booking);
                // A keyed create also stores the key, the request and the answer.
                let keyed = key
                    .as_ref()
                    .map_or(0, |(k, body)| k.len() + body.len() + row);
                row + keyed
            }
            Write::Update { id } | Write::Delete { id } => id.len() + ROW_BYTES_ESTIMATE,
        }
    }
}

/// What a write did, when it succeeded.
#[derive(Debug)]
pub(super) enum Outcome {
    Created(Created),
    Updated(Box<Booking>),
    Deleted,
}

/// Counters of one writer, for a node's `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Writes the writer has run and answered, whatever their outcome.
    pub writes: u64,
    /// Batches committed (one transaction each).
    pub commits: u64,
    /// Most writes in one batch so far.
    pub largest_batch: u64,
}

/// Where one write stands; shared by its caller and the writer.
enum State {
    /// In the queue.
    Queued,
    /// The caller gave up waiting before a batch took it; never run.
    Abandoned,
    /// In a batch.
    Taken,
    /// An update's current row, for the caller to change.
    Row(Booking),
    /// The caller is computing the new row.
    Computing,
    /// The caller's new row; `None` if its closure panicked.
    Computed(Option<Result<Booking, Invalid>>),
    /// The outcome, sent only after the batch committed or failed.
    Done(Result<Outcome, Error>),
}

struct Slot {
    state: Mutex<State>,
    changed: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every state is valid on its own, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, state: State) {
        *self.lock() = state;
        self.changed.notify_all();
    }
}

struct Entry {
    slot: Arc<Slot>,
    write: Write,
}

struct Queue {
    entries: VecDeque<Entry>,
    /// The owning [`Writer`] is dropped: finish the queue, then end.
    closing: bool,
    /// The thread has ended; writes are refused.
    stopped: bool,
    /// A batch is being run, by the writer thread or by a caller leading it.
    running: bool,
    /// Test hook: take no batch while set.
    held: bool,
    /// Test hook: panic inside the next batch's transaction.
    panic_next_batch: bool,
}

pub(super) struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when the queue changes or a batch ends.
    arrived: Condvar,
    /// The write connection, used by whoever runs the batch (`Queue::running`
    /// makes that one thread at a time); `None` after a failure left it
    /// unusable, until [`Shared::connect`] replaces it.
    conn: Mutex<Option<Connection>>,
    connect: Mutex<Box<dyn Fn() -> Result<Connection, Error> + Send>>,
    writes: AtomicU64,
    commits: AtomicU64,
    largest_batch: AtomicU64,
    /// Batches run by a caller rather than the writer thread (tests only).
    #[cfg(test)]
    led: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Held by whoever runs a batch; dropped (even by a panic), it marks the
/// batch finished and wakes the writer thread for whatever queued meanwhile.
struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.arrived.notify_all();
    }
}

/// A caller running a batch that holds its own write, at `index`: its update
/// is computed right here by `change` (it has no one to hand the row to).
struct Leader<'a> {
    index: usize,
    change: &'a mut dyn FnMut(&Booking) -> Option<Result<Booking, Invalid>>,
}

/// The writer thread of one database file, shared by every
/// [`Store`](super::Store) this process opens on it. It ends when the last
/// of them is dropped, after running what is queued.
pub(super) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The live writers of this process, by canonical database path.
static WRITERS: Mutex<Vec<(PathBuf, Weak<Writer>)>> = Mutex::new(Vec::new());

impl Writer {
    /// The writer of `path`, started on `connect()`'s connection if this
    /// process has none yet.
    pub(super) fn for_file(
        path: PathBuf,
        connect: impl Fn() -> Result<Connection, Error> + Send + 'static,
    ) -> Result<Arc<Writer>, Error> {
        let mut writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
        writers.retain(|(_, writer)| writer.strong_count() > 0);
        if let Some(writer) = writers
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(writer);
        }
        let conn = connect()?;
        let writer = Arc::new(Writer::start(conn, connect)?);
        writers.push((path, Arc::downgrade(&writer)));
        Ok(writer)
    }

    fn start(
        conn: Connection,
        connect: impl Fn() -> Result<Connection, Error> + Send + 'static,
    ) -> Result<Writer, Error> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                closing: false,
                stopped: false,
                running: false,
                held: false,
                panic_next_batch: false,
            }),
            arrived: Condvar::new(),
            conn: Mutex::new(Some(conn)),
            connect: Mutex::new(Box::new(connect)),
            writes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            #[cfg(test)]
            led: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared)
            })
            .map_err(|e| Error::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    pub(super) fn stats(&self) -> WriteStats {
        WriteStats {
            writes: self.shared.writes.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
            largest_batch: self.shared.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// Queues `write`, waits for its batch to commit, and returns its outcome.
    /// For an update, `change` computes the new row from the current one, on
    /// this thread, when the writer hands the current row over.
    pub(super) fn run<F>(&self, write: Write, change: Option<F>) -> Result<Outcome, Error>
    where
        F: FnOnce(&Booking) -> Result<Booking, Invalid>,
    {
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Queued),
            changed: Condvar::new(),
        });
        let mut change = change;
        let led = {
            let mut queue = self.shared.lock();
            if queue.stopped || queue.closing {
                return Err(writer_gone());
            }
            queue.entries.push_back(Entry {
                slot: Arc::clone(&slot),
                write,
            });
            if queue.running || queue.held {
                self.shared.arrived.notify_all();
                None
            } else {
                // No batch is running: this caller runs one itself, its own
                // write and whatever else is queued, rather than hand it to
                // the writer thread and wait to be woken (two thread
                // switches per write when writes come one at a time).
                queue.running = true;
                Some(take_from(&mut queue))
            }
        };
        if let Some(mut batch) = led {
            let running = Running(&self.shared);
            #[cfg(test)]
            self.shared.led.fetch_add(1, Ordering::Relaxed);
            let own = batch.iter().position(|t| Arc::ptr_eq(&t.slot, &slot));
            let mut own_panic = None;
            {
                let mut inline = |current: &Booking| {
                    let change = change.take()?;
                    match catch_unwind(AssertUnwindSafe(|| change(current))) {
                        Ok(computed) => Some(computed),
                        Err(payload) => {
                            own_panic = Some(payload);
                            None
                        }
                    }
                };
                let mut leader = own.map(|index| Leader {
                    index,
                    change: &mut inline,
                });
                run_batch(&self.shared, &mut batch, leader.as_mut());
            }
            drop(batch);
            drop(running);
            if let Some(payload) = own_panic {
                // The caller's own panic reaches the caller, as when the
                // writer thread runs its change on this thread.
                std::panic::resume_unwind(payload);
            }
        }
        let deadline = Instant::now() + MAX_WRITE_WAIT;
        let mut state = slot.lock();
        loop {
            match &*state {
                State::Queued => {
                    let now = Instant::now();
                    if now >= deadline {
                        *state = State::Abandoned;
                        return Err(Error::Busy);
                    }
                    state = slot
                        .changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                State::Row(_) => {
                    let State::Row(current) = std::mem::replace(&mut *state, State::Computing)
                    else {
                        continue;
                    };
                    drop(state);
                    let mut answer = ComputedAnswer {
                        slot: &slot,
                        computed: None,
                    };
                    answer.computed = change.take().map(|change| change(&current));
                    drop(answer);
                    state = slot.lock();
                }
                State::Done(_) => {
                    let State::Done(outcome) = std::mem::replace(&mut *state, State::Taken) else {
                        continue;
                    };
                    return outcome;
                }
                State::Abandoned | State::Taken | State::Computing | State::Computed(_) => {
                    state = slot.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Test hook: while held, the writer takes no batch and writes queue up.
    #[cfg(test)]
    pub(super) fn hold(&self, held: bool) {
        self.shared.lock().held = held;
        self.shared.arrived.notify_all();
    }

    /// Test hook: returns once at least `n` writes are queued.
    #[cfg(test)]
    pub(super) fn wait_until_queued(&self, n: usize) {
        let mut queue = self.shared.lock();
        while queue.entries.len() < n {
            queue = self
                .shared
                .arrived
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Test hook: the state shared with the thread, which holds it until it ends.
    #[cfg(test)]
    pub(super) fn shared_for_test(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Test hook: how many batches callers ran themselves.
    #[cfg(test)]
    pub(super) fn led_batches(&self) -> u64 {
        self.shared.led.load(Ordering::Relaxed)
    }

    /// Test hook: the next batch panics inside its transaction.
    #[cfg(test)]
    pub(super) fn panic_in_next_batch(&self) {
        self.shared.lock().panic_next_batch = true;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.arrived.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic that escaped the thread has already answered its
            // waiters (`Stopped`); there is nothing more to do with it.
            let _ = thread.join();
        }
    }
}

fn writer_gone() -> Error {
    Error::Database("the store's writer thread has stopped; nothing was written".into())
}

/// Hands an update's computed row back to the writer when dropped, so a
/// closure that panics still answers (with `None`) and the writer never
/// waits for it in vain.
struct ComputedAnswer<'a> {
    slot: &'a Slot,
    computed: Option<Result<Booking, Invalid>>,
}

impl Drop for ComputedAnswer<'_> {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        // The batch may have failed (and answered) meanwhile; then the
        // answer is no longer wanted.
        if matches!(*state, State::Computing) {
            *state = State::Computed(self.computed.take());
            self.slot.changed.notify_all();
        }
    }
}

/// A write in a batch. Dropped unanswered (a panic), it answers with an error.
struct Taken {
    slot: Arc<Slot>,
    write: Write,
    /// This write's own outcome, kept until the batch commits.
    result: Option<Result<Outcome, Error>>,
    answered: bool,
}

impl Taken {
    fn answer(&mut self, outcome: Result<Outcome, Error>) {
        self.answered = true;
        self.slot.set(State::Done(outcome));
    }

    /// The caller's new row, once it has computed it.
    fn wait_computed(&self) -> Option<Result<Booking, Invalid>> {
        let mut state = self.slot.lock();
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Computed(computed) => return computed,
                other @ (State::Row(_) | State::Computing) => {
                    *state = other;
                    state = self
                        .slot
                        .changed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
                // No row was handed over; nothing will be computed.
                other => {
                    *state = other;
                    return None;
                }
            }
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.answered {
            self.slot.set(State::Done(Err(Error::Database(
                "the store's writer failed while running this write; it was not committed".into(),
            ))));
        }
    }
}

/// Ends the writer: everything still queued is answered, later writes refused.
struct Stopped<'a>(&'a Shared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.stopped = true;
        for entry in queue.entries.drain(..) {
            let mut state = entry.slot.lock();
            if matches!(*state, State::Queued) {
                *state = State::Done(Err(writer_gone()));
                entry.slot.changed.notify_all();
            }
        }
    }
}

/// The writer thread: runs the batches no caller leads, those that queue
/// while another batch runs.
fn run(shared: &Shared) {
    let _stopped = Stopped(shared);
    while let Some(mut batch) = wait_for_batch(shared) {
        let running = Running(shared);
        run_batch(shared, &mut batch, None);
        drop(batch);
        drop(running);
    }
}

/// Runs `batch` on the write connection and answers every write in it.
fn run_batch(shared: &Shared, batch: &mut [Taken], leader: Option<&mut Leader<'_>>) {
    let size = batch.len() as u64;
    let panic_now = std::mem::take(&mut shared.lock().panic_next_batch);
    let mut conn = shared.conn.lock().unwrap_or_else(|e| e.into_inner());
    if conn.is_none() {
        let connect = shared.connect.lock().unwrap_or_else(|e| e.into_inner());
        *conn = connect().ok();
    }
    let Some(c) = conn.as_ref() else {
        for taken in batch.iter_mut() {
            taken.answer(Err(Error::Database(
                "the store's writer could not reopen the database".into(),
            )));
        }
        return;
    };
    let ran = catch_unwind(AssertUnwindSafe(|| commit(c, batch, panic_now, leader)));
    // Counted before anyone is answered, so a caller that has its answer
    // also sees its write in the counters.
    shared.writes.fetch_add(size, Ordering::Relaxed);
    match ran {
        Ok(Ok(())) => {
            shared.commits.fetch_add(1, Ordering::Relaxed);
            shared.largest_batch.fetch_max(size, Ordering::Relaxed);
            for taken in batch.iter_mut() {
                let outcome = taken.result.take().unwrap_or_else(|| {
                    Err(Error::Database("a write of the batch was not run".into()))
                });
                taken.answer(outcome);
            }
        }
        Ok(Err(error)) => {
            // A connection left inside a transaction would fail every
            // later BEGIN: roll it back or replace it.
            if !c.is_autocommit() && c.execute_batch("ROLLBACK").is_err() {
                *conn = None;
            }
            for taken in batch.iter_mut() {
                taken.answer(Err(error.clone()));
            }
        }
        Err(_panic) => {
            // The batch's writes answer as they drop; the connection is
            // rolled back or, failing that, replaced.
            if !c.is_autocommit() && c.execute_batch("ROLLBACK").is_err() {
                *conn = None;
            }
        }
    }
}

/// Waits until writes are queued and no batch runs, and takes the next
/// batch; `None` once the writer is closing and the queue is empty.
fn wait_for_batch(shared: &Shared) -> Option<Vec<Taken>> {
    let mut queue = shared.lock();
    loop {
        while queue.entries.is_empty() || queue.running || (queue.held && !queue.closing) {
            if queue.closing && queue.entries.is_empty() && !queue.running {
                return None;
            }
            queue = shared
                .arrived
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
        let batch = take_from(&mut queue);
        // Every queued write was abandoned: wait again.
        if !batch.is_empty() {
            queue.running = true;
            return Some(batch);
        }
    }
}

/// The next batch from the front of the queue (empty if every queued write
/// was abandoned).
fn take_from(queue: &mut Queue) -> Vec<Taken> {
    let mut batch: Vec<Taken> = Vec::new();
    let mut bytes = 0;
    let mut ids: HashSet<String> = HashSet::new();
    while batch.len() < MAX_BATCH_WRITES {
        let Some(front) = queue.entries.front() else {
            break;
        };
        let mut state = front.slot.lock();
        if matches!(*state, State::Abandoned) {
            drop(state);
            queue.entries.pop_front();
            continue;
        }
        let size = front.write.bytes();
        let full = !batch.is_empty() && bytes + size > MAX_BATCH_BYTES;
        // An update's row is read at the start of the batch; an earlier
        // write of the same booking in the batch would make it stale.
        let stale = matches!(front.write, Write::Update { .. }) && ids.contains(front.write.id());
        if full || stale {
            break;
        }
        *state = State::Taken;
        drop(state);
        let Some(entry) = queue.entries.pop_front() else {
            break;
        };
        bytes += size;
        ids.insert(entry.write.id().to_string());
        batch.push(Taken {
            slot: entry.slot,
            write: entry.write,
            result: None,
            answered: false,
        });
    }
    batch
}

/// Runs one batch as one transaction. `Err` means the transaction failed as a
/// whole and nothing of it was committed; each write's own outcome is left
/// in its `result`.
fn commit(
    conn: &Connection,
    batch: &mut [Taken],
    panic_now: bool,
    mut leader: Option<&mut Leader<'_>>,
) -> Result<(), Error> {
    sql(conn, "BEGIN IMMEDIATE")?;
    if panic_now {
        panic!("test hook: the writer panics inside a batch");
    }
    // Hand every update its current row first, so callers compute in parallel.
    let leader_index = leader.as_ref().map(|l| l.index);
    let mut leader_row: Option<Booking> = None;
    for (i, taken) in batch.iter_mut().enumerate() {
        if let Write::Update { id } = &taken.write {
            match read_row(conn, id) {
                Ok(Some(current)) if Some(i) == leader_index => leader_row = Some(current),
                Ok(Some(current)) => taken.slot.set(State::Row(current)),
                Ok(None) => taken.result = Some(Err(Error::NotFound)),
                Err(error) => {
                    if conn.is_autocommit() {
                        return Err(error);
                    }
                    taken.result = Some(Err(error));
                }
            }
        }
    }
    for (i, taken) in batch.iter_mut().enumerate() {
        if taken.result.is_some() {
            continue;
        }
        // The leader's own change, computed here; everyone else's comes from
        // its own thread (see `Taken::wait_computed`).
        let computed = match &mut leader {
            Some(leader) if i == leader.index => leader_row.take().map(|row| (leader.change)(&row)),
            _ => None,
        };
        sql(conn, "SAVEPOINT one_write")?;
        match apply(conn, taken, computed) {
            Ok(outcome) => {
                sql(conn, "RELEASE one_write")?;
                taken.result = Some(Ok(outcome));
            }
            Err(error) => {
                // Some errors (a full disk, say) roll back the whole
                // transaction; then the batch has failed.
                if conn.is_autocommit() {
                    return Err(error);
                }
                sql(conn, "ROLLBACK TO one_write")?;
                sql(conn, "RELEASE one_write")?;
                taken.result = Some(Err(error));
            }
        }
    }
    sql(conn, "COMMIT")?;
    Ok(())
}

/// Runs one statement of transaction control, prepared once per connection:
/// a batch of one write runs four of them, and parsing each anew was a
/// measurable part of a lone write.
fn sql(conn: &Connection, statement: &str) -> Result<(), Error> {
    conn.prepare_cached(statement)?.execute([])?;
    Ok(())
}

fn read_row(conn: &Connection, id: &str) -> Result<Option<Booking>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM bookings WHERE booking_id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], booking_from_row)
        .optional()?)
}

/// One write's statements, inside its savepoint.
/// `computed`: an update's new row when the batch's leader computed it.
fn apply(
    conn: &Connection,
    taken: &Taken,
    computed: Option<Option<Result<Booking, Invalid>>>,
) -> Result<Outcome, Error> {
    match &taken.write {
        Write::Create { booking, key } => create(conn, booking, key.as_ref()),
        Write::Update { id } => {
            let computed = computed.unwrap_or_else(|| taken.wait_computed());
            let updated = match computed {
                Some(Ok(updated)) => updated,
                Some(Err(invalid)) => return Err(Error::Invalid(invalid)),
                None => {
                    return Err(Error::Database(format!(
                        "the change to booking '{id}' could not be computed"
                    )))
                }
            };
            let mut values = booking_params(&updated);
            // The row read is the row written, whatever the change returned.
            values[0] = id;
            conn.prepare_cached(
                "UPDATE bookings SET customer_id = ?2, customer_name = ?3, destination = ?4, \
                 departure_city = ?5, flight_number = ?6, hotel_name = ?7, room_type = ?8, \
                 payment_method = ?9, email = ?10, phone = ?11, booking_date = ?12, \
                 travel_date = ?13, return_date = ?14, total_price = ?15, payment_status = ?16, \
                 travel_agency = ?17, special_requests = ?18, loyalty_program_number = ?19 \
                 WHERE booking_id = ?1",
            )?
            .execute(values)?;
            log_change(conn, id)?;
            Ok(Outcome::Updated(Box::new(updated)))
        }
        Write::Delete { id } => {
            let deleted = conn
                .prepare_cached("DELETE FROM bookings WHERE booking_id = ?1")?
                .execute([id])?;
            if deleted == 0 {
                return Err(Error::NotFound);
            }
            log_change(conn, id)?;
            Ok(Outcome::Deleted)
        }
    }
}

/// A create: the idempotency key first, then the id, then the row, its
/// change-log entry and the key's stored answer.
fn create(
    conn: &Connection,
    booking: &Booking,
    key: Option<&(String, Vec<u8>)>,
) -> Result<Outcome, Error> {
    if let Some((key, request_body)) = key {
        let earlier: Option<(Vec<u8>, i64, String, String)> = conn
            .prepare_cached(
                "SELECT request_body, status, response_body, booking_id \
                 FROM idempotency_keys WHERE key = ?1",
            )?
            .query_row([key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        if let Some((earlier_body, status, body, booking_id)) = earlier {
            return if earlier_body == *request_body {
                Ok(Outcome::Created(Created::Replayed {
                    status: status as u16,
                    body,
                    booking_id,
                }))
            } else {
                Err(Error::KeyReused)
            };
        }
    }
    let exists = conn
        .prepare_cached("SELECT 1 FROM bookings WHERE booking_id = ?1")?
        .exists([&booking.booking_id])?;
    if exists {
        return Err(Error::Exists(booking.booking_id.clone()));
    }
    insert_row(conn, booking)?;
    log_change(conn, &booking.booking_id)?;
    let json = booking.to_json();
    if let Some((key, request_body)) = key {
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (key, request_body, status, response_body, booking_id) \
             VALUES (?1, ?2, 201, ?3, ?4)",
        )?
        .execute(params![key, request_body, json, booking.booking_id])?;
    }
    Ok(Outcome::Created(Created::New(json)))
}
