//! How every connection to a database file is opened (WAL, `synchronous = NORMAL`, a
//! statement cache) and how it waits while another process holds the write lock.

use super::error::Error;
use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a writer waits for another process's write lock before giving up.
/// Long enough to ride out bursts of hundreds of concurrent writers in other
/// processes (each process's own writers queue for its writer instead).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection set up as every connection to the file must be.
pub(super) fn connect(path: &Path) -> Result<Connection, Error> {
    let mut conn = Connection::open(path)?;
    conn.busy_handler(Some(busy_wait()))?;
    // journal_mode answers with a row, so it is queried rather than set.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Database(format!(
            "could not switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Longest single sleep of [`busy_wait`]: a batch holds the write lock for about a
/// millisecond, so a waiter that looks again this often takes the lock within a batch or so
/// of its release.
const BUSY_POLL_MAX: Duration = Duration::from_millis(1);

/// The busy handler of every connection: while another process holds the write lock, sleep
/// 50 µs, 100 µs, 200 µs … up to [`BUSY_POLL_MAX`] and try again, for up to [`BUSY_TIMEOUT`]
/// in all. SQLite's own handler (`busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
/// 50, 100 ms …, so after a few misses a writer slept tens of milliseconds for a lock held a
/// millisecond at a time: two node processes writing to one file saw p99s of 30–80 ms.
fn busy_wait() -> impl FnMut(i32) -> bool + Send + 'static {
    busy_wait_for(BUSY_TIMEOUT)
}

/// [`busy_wait`] giving up after `patience`.
fn busy_wait_for(patience: Duration) -> impl FnMut(i32) -> bool + Send + 'static {
    let mut since = Instant::now();
    move |count| {
        if count == 0 {
            since = Instant::now();
        }
        if since.elapsed() >= patience {
            return false;
        }
        let step = Duration::from_micros(50).saturating_mul(1 << count.clamp(0, 5) as u32);
        std::thread::sleep(step.min(BUSY_POLL_MAX));
        true
    }
}

/// Runs `attempt` again while SQLite answers busy, up to [`BUSY_TIMEOUT`].
/// For setting up connections only: statements wait in SQLite's own busy
/// handler, but the switch to WAL and the first schema read do not.
pub(super) fn retry_while_busy<T>(
    mut attempt: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let started = Instant::now();
    loop {
        match attempt() {
            Err(Error::Busy) if started.elapsed() < BUSY_TIMEOUT => {
                // The other side holds its lock for about a millisecond.
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_handler_looks_again_within_a_millisecond_and_gives_up_after_its_patience() {
        let mut wait = busy_wait_for(Duration::from_millis(30));
        let started = Instant::now();
        let mut count = 0;
        let mut longest = Duration::ZERO;
        loop {
            let before = Instant::now();
            if !wait(count) {
                break;
            }
            longest = longest.max(before.elapsed());
            count += 1;
        }
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(count >= 20, "it polled {count} times in 30 ms");
        // The sleep asked for is at most 1 ms; the scheduler may add to it.
        assert!(longest < Duration::from_millis(20), "{longest:?}");
        // A new locking event starts the patience again.
        assert!(wait(0));
    }
}
