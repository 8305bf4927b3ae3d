//! How many client connections this process can hold, from its limit on
//! open file descriptors.
//!
//! Every client connection costs a descriptor, and one being forwarded a
//! second for its node connection (a third when the node is a thread of this
//! same process: its end of that connection). A relay that accepts more
//! connections than it has descriptors for fails at the worst moment, on the
//! connect to a node, so the default `--max-connections` is what the limit
//! allows after a reserve, and the relay says so at start when the limit is
//! what bounds it.
//!
//! Raising the soft limit to the hard one needs `setrlimit`, which std does
//! not offer and this project does not call through FFI; the start-up line
//! tells the user how (`ulimit -n`). The limit is read from
//! `/proc/self/limits` (Linux); elsewhere it is unknown and the default stays.

use std::fs;

/// Descriptors kept aside for everything that is not a client connection:
/// listeners, SQLite files, health checks, idle pooled connections beyond
/// the clients', standard streams.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The soft and hard limits on open files, `None` where unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFilesLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// This process's limit on open files, if the system tells it.
pub fn open_files_limit() -> Option<OpenFilesLimit> {
    parse_limits(&fs::read_to_string("/proc/self/limits").ok()?)
}

/// Reads the "Max open files" line of a `/proc/PID/limits` text.
pub fn parse_limits(text: &str) -> Option<OpenFilesLimit> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let value = |field: Option<&str>| -> Option<Option<u64>> {
        match field? {
            "unlimited" => Some(None),
            number => number.parse().ok().map(Some),
        }
    };
    Some(OpenFilesLimit {
        soft: value(fields.next())?,
        hard: value(fields.next())?,
    })
}

/// Client connections that `descriptors` can carry at
/// `per_connection` descriptors each after [`RESERVED_DESCRIPTORS`], at
/// least 1 and at most `ceiling`.
pub fn connections_allowed(descriptors: u64, per_connection: u64, ceiling: usize) -> usize {
    let usable = descriptors.saturating_sub(RESERVED_DESCRIPTORS);
    let allowed = usable / per_connection.max(1);
    (allowed.min(ceiling as u64) as usize).max(1)
}

/// The default connection limit at `per_connection` descriptors each: what
/// this process's soft limit allows, at most `ceiling`. The limit comes
/// along when it is what bounds the figure (to be told at start).
pub fn default_connections(per_connection: u64, ceiling: usize) -> (usize, Option<OpenFilesLimit>) {
    let Some(limit) = open_files_limit() else {
        return (ceiling, None);
    };
    let Some(soft) = limit.soft else {
        return (ceiling, None);
    };
    let allowed = connections_allowed(soft, per_connection, ceiling);
    (allowed, (allowed < ceiling).then_some(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
";

    #[test]
    fn the_open_files_line_is_read_soft_then_hard() {
        assert_eq!(
            parse_limits(SAMPLE),
            Some(OpenFilesLimit {
                soft: Some(1024),
                hard: Some(524288)
            })
        );
        let unlimited = SAMPLE.replace("1024                 524288", "unlimited unlimited");
        assert_eq!(
            parse_limits(&unlimited),
            Some(OpenFilesLimit {
                soft: None,
                hard: None
            })
        );
        assert_eq!(
            parse_limits("Max cpu time unlimited unlimited seconds"),
            None
        );
        assert_eq!(parse_limits("Max open files lots 10 files"), None);
    }

    #[test]
    fn the_limit_allows_what_is_left_after_the_reserve_within_the_ceiling() {
        // 1024 descriptors, 3 per connection (thread nodes): (1024 - 64) / 3.
        assert_eq!(connections_allowed(1024, 3, 4096), 320);
        assert_eq!(connections_allowed(1024, 2, 4096), 480);
        assert_eq!(connections_allowed(1_048_576, 2, 4096), 4096);
        // A limit below the reserve still lets one client in.
        assert_eq!(connections_allowed(10, 2, 4096), 1);
    }

    #[test]
    fn this_process_has_a_readable_limit_on_linux() {
        if cfg!(target_os = "linux") {
            let limit = open_files_limit().expect("/proc/self/limits");
            assert!(limit.soft.is_none_or(|soft| soft >= 3), "{limit:?}");
        }
    }
}
