//! A log line that is written at most once per interval, however often its
//! event happens: a relay out of file descriptors fails every request, and
//! one line per request would bury the log (and cost more descriptors'
//! worth of work) just when a person needs to read it. The lines skipped in
//! between are counted and told with the next one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of log line and when it was last written.
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    pub const fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval,
            state: Mutex::new(State {
                last: None,
                skipped: 0,
            }),
        }
    }

    /// Whether a line may be written at `now`; if so, how many were skipped
    /// since the last one written.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.last {
            Some(last) if now.duration_since(last) < self.interval => {
                state.skipped += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.skipped))
            }
        }
    }

    /// Writes `line()` to stderr unless one was written within the interval;
    /// the count of lines skipped meanwhile follows it.
    pub fn write(&self, line: impl FnOnce() -> String) {
        match self.allow(Instant::now()) {
            Some(0) => eprintln!("{}", line()),
            Some(skipped) => eprintln!("{} ({skipped} more like it since the last)", line()),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_skipped_ones_are_counted() {
        let log = RateLimitedLog::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(log.allow(start), Some(0));
        for ms in [1, 200, 999] {
            assert_eq!(log.allow(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.allow(start + Duration::from_millis(1000)), Some(3));
        assert_eq!(log.allow(start + Duration::from_millis(1500)), None);
        assert_eq!(log.allow(start + Duration::from_millis(2100)), Some(1));
    }
}
