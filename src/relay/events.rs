//! The relay's recent history: nodes marked down and up, the admin's
//! changes, retries and the errors the relay answered itself, each one
//! [`Event`] with a sequence number, kept in a bounded ring.
//!
//! Why a ring of its own: the status document says how things *are*, the
//! counters how often something happened; neither tells a person *what
//! happened when* ("brave-owl went down at 12:03:04 because its connections
//! were refused, and these GETs were retried on calm-fox"). The ring keeps
//! the last [`CAPACITY`] events so `/_relay/events?after=SEQ` can hand a
//! poller (the dashboard, a test, a script) exactly what it has not seen,
//! and memory stays fixed however long the relay runs.
//!
//! Every event also goes to stderr as one readable line. Retries and errors
//! come by the thousand when a node fails under load, so those two kinds
//! are written at most once a second ([`RateLimitedLog`]); the ring always
//! records them.
//!
//! This module knows nothing of nodes or HTTP: callers hand it a kind, a
//! node name and a sentence.
//!
//! [`utc_timestamp`] writes an event's time for `/_relay/events`, and the
//! access log's.

use super::rate_limited_log::RateLimitedLog;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Events kept; older ones fall off the front.
pub const CAPACITY: usize = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A node was marked down (passively or by failed checks).
    Down,
    /// A node was marked up again.
    Up,
    /// A spawned node was killed from the admin API.
    Kill,
    /// A killed node was started again.
    Revive,
    /// A spawned node was made sick (500s to all but `/health`).
    Fail,
    /// A sick node was made well again.
    Heal,
    /// A node was ejected for answering 5xx too often in a row.
    Eject,
    /// An ejected node was let back in after its ejection time.
    Readmit,
    /// Fewer than half the nodes were fit: routing to every reachable node.
    FailOpen,
    /// Enough nodes were fit again: fail-open mode ended.
    FailOpenEnd,
    /// A node was added.
    Add,
    /// A node was removed.
    Remove,
    /// The balancer (or its weights) was switched.
    Balancer,
    /// A request that failed at a node was sent again.
    Retry,
    /// The relay answered a 502, 503 or 504 itself.
    Error,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Down => "down",
            EventKind::Up => "up",
            EventKind::Kill => "kill",
            EventKind::Revive => "revive",
            EventKind::Fail => "fail",
            EventKind::Heal => "heal",
            EventKind::Eject => "eject",
            EventKind::Readmit => "readmit",
            EventKind::FailOpen => "fail-open",
            EventKind::FailOpenEnd => "fail-open-end",
            EventKind::Add => "add",
            EventKind::Remove => "remove",
            EventKind::Balancer => "balancer",
            EventKind::Retry => "retry",
            EventKind::Error => "error",
        }
    }
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1 for the relay's first event, one more for each after.
    pub seq: u64,
    pub time: SystemTime,
    pub kind: EventKind,
    /// The node it concerns, if any.
    pub node: Option<String>,
    /// What happened, in a sentence.
    pub detail: String,
}

impl Event {
    /// `12:03:04 node brave-owl down: connection refused (2 checks failed)`
    /// (the time of day in UTC, as the access log's timestamps are).
    pub fn log_line(&self) -> String {
        let seconds = self
            .time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            % 86_400;
        let clock = format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds % 3600 / 60,
            seconds % 60
        );
        match &self.node {
            Some(node) => format!(
                "{clock} node {node} {}: {}",
                self.kind.as_str(),
                self.detail
            ),
            None => format!("{clock} {}: {}", self.kind.as_str(), self.detail),
        }
    }
}

/// The bounded ring, shared by every thread of the relay.
pub struct Events {
    capacity: usize,
    ring: Mutex<Ring>,
    retry_log: RateLimitedLog,
    error_log: RateLimitedLog,
}

struct Ring {
    next_seq: u64,
    events: VecDeque<Event>,
}

impl Default for Events {
    fn default() -> Events {
        Events::new(CAPACITY)
    }
}

impl Events {
    /// A ring keeping the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> Events {
        let capacity = capacity.max(1);
        Events {
            capacity,
            ring: Mutex::new(Ring {
                next_seq: 1,
                events: VecDeque::with_capacity(capacity.min(CAPACITY)),
            }),
            retry_log: RateLimitedLog::new(Duration::from_secs(1)),
            error_log: RateLimitedLog::new(Duration::from_secs(1)),
        }
    }

    /// Records an event and writes its stderr line (retries and errors at
    /// most once a second each).
    pub fn record(&self, kind: EventKind, node: Option<&str>, detail: impl Into<String>) {
        let event = self.push(kind, node, detail);
        match kind {
            EventKind::Retry => self.retry_log.write(|| event.log_line()),
            EventKind::Error => self.error_log.write(|| event.log_line()),
            _ => eprintln!("{}", event.log_line()),
        }
    }

    /// Records an event without writing it anywhere; returns it.
    pub fn push(&self, kind: EventKind, node: Option<&str>, detail: impl Into<String>) -> Event {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let event = Event {
            seq: ring.next_seq,
            time: SystemTime::now(),
            kind,
            node: node.map(str::to_string),
            detail: detail.into(),
        };
        ring.next_seq += 1;
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        event
    }

    /// The events kept with `seq > after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        // Sequence numbers are consecutive, so the first wanted one is at a
        // known offset from the front.
        let first = ring.events.front().map_or(0, |e| e.seq);
        let skip = after.saturating_add(1).saturating_sub(first);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        ring.events.iter().skip(skip).cloned().collect()
    }

    /// The sequence number of the latest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).next_seq - 1
    }
}

/// `2026-11-21T03:13:36.123Z`: UTC, millisecond precision, for the access log.
pub fn utc_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn sequence_numbers_start_at_one_and_rise_by_one_oldest_first() {
        let events = Events::new(10);
        assert_eq!(events.last_seq(), 0);
        assert!(events.after(0).is_empty());
        events.push(EventKind::Kill, Some("brave-owl"), "killed");
        events.push(EventKind::Down, Some("brave-owl"), "connection refused");
        events.push(EventKind::Balancer, None, "round-robin to random");
        let all = events.after(0);
        assert_eq!(seqs(&all), [1, 2, 3]);
        assert_eq!(all[0].kind, EventKind::Kill);
        assert_eq!(all[1].detail, "connection refused");
        assert_eq!(all[2].node, None);
        assert_eq!(events.last_seq(), 3);
    }

    #[test]
    fn after_returns_only_later_events() {
        let events = Events::new(10);
        for i in 0..5 {
            events.push(EventKind::Retry, Some("n"), format!("retry {i}"));
        }
        assert_eq!(seqs(&events.after(2)), [3, 4, 5]);
        assert_eq!(events.after(2)[0].detail, "retry 2");
        assert!(events.after(5).is_empty());
        assert!(events.after(99).is_empty());
        assert!(events.after(u64::MAX).is_empty());
    }

    #[test]
    fn the_ring_is_bounded_and_keeps_the_latest() {
        let events = Events::new(3);
        for _ in 0..7 {
            events.push(EventKind::Error, None, "502");
        }
        assert_eq!(seqs(&events.after(0)), [5, 6, 7], "the oldest fell off");
        assert_eq!(seqs(&events.after(5)), [6, 7]);
        assert_eq!(
            seqs(&events.after(1)),
            [5, 6, 7],
            "a poller that fell behind gets what is left"
        );
        assert_eq!(events.last_seq(), 7);
        let full = Events::default();
        for _ in 0..CAPACITY + 5 {
            full.push(EventKind::Retry, None, "x");
        }
        let kept = full.after(0);
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].seq, 6);
        assert_eq!(kept[CAPACITY - 1].seq, CAPACITY as u64 + 5);
    }

    #[test]
    fn log_lines_are_one_readable_sentence() {
        let event = Event {
            seq: 1,
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 3),
            kind: EventKind::Down,
            node: Some("brave-owl".into()),
            detail: "connection refused (2 checks failed)".into(),
        };
        assert_eq!(
            event.log_line(),
            "22:13:23 node brave-owl down: connection refused (2 checks failed)"
        );
        let switch = Event {
            node: None,
            kind: EventKind::Balancer,
            detail: "round-robin to random".into(),
            ..event
        };
        assert_eq!(
            switch.log_line(),
            "22:13:23 balancer: round-robin to random"
        );
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_millis(4_102_444_799_999)),
            "2099-12-31T23:59:59.999Z"
        );
    }
}
