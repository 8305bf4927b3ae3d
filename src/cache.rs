//! The only user of `lru`: one cache per node, for the node's whole life.
//!
//! The seed project built its LRU inside the request handler, so every request
//! got a new, empty cache and "all reads are from DB". Here a node creates one
//! [`Cache`] when it starts and every connection thread shares it.
//!
//! Entries are the finished JSON of a booking, so a hit costs a lookup and a
//! copy, no serialisation. An entry is served until it is evicted, ages past
//! the TTL, or is invalidated by a write.
//!
//! **The race this guards against.** A miss reads SQLite and then stores what
//! it read. If a write commits and is invalidated between that read and that
//! store, the store would plant the old value after its invalidation. So a miss
//! hands out a [`Ticket`] (the cache's invalidation epoch at the time of the
//! miss), and [`Cache::put`] refuses the value if any invalidation happened
//! since. Coarse (any invalidation, not just this key's) and therefore simple
//! to trust; it costs a few refused puts under heavy writes.

use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counters shown by `/stats` and the relay's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub evictions: u64,
    /// Entries dropped because their booking was written.
    pub invalidations: u64,
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(Arc<str>),
    /// Not cached (or expired): read the store, then [`Cache::put`] with this ticket.
    Miss(Ticket),
}

/// Proof of when a miss happened; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Entry {
    json: Arc<str>,
    stored_at: Instant,
}

struct Inner {
    /// `None` when the capacity is 0: caching is off, every lookup misses.
    lru: Option<LruCache<String, Entry>>,
    epoch: u64,
    stats: CacheStats,
}

/// An LRU of booking JSON with an optional time-to-live.
pub struct Cache {
    inner: Mutex<Inner>,
    ttl: Option<Duration>,
}

impl Cache {
    /// `capacity` entries (0 disables caching); `ttl` of `None` means entries never age out.
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Cache {
        Cache {
            inner: Mutex::new(Inner {
                lru: NonZeroUsize::new(capacity).map(LruCache::new),
                epoch: 0,
                stats: CacheStats::default(),
            }),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent even if a holder panicked: each method
        // leaves it whole between statements.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks `id` up as of `now`, counting a hit or a miss.
    pub fn lookup(&self, id: &str, now: Instant) -> Lookup {
        let mut inner = self.lock();
        let Inner {
            lru, epoch, stats, ..
        } = &mut *inner;
        if let Some(lru) = lru {
            let fresh = match lru.get(id) {
                Some(entry) if self.is_fresh(entry, now) => Some(Arc::clone(&entry.json)),
                Some(_) => {
                    lru.pop(id);
                    None
                }
                None => None,
            };
            if let Some(json) = fresh {
                stats.hits += 1;
                return Lookup::Hit(json);
            }
        }
        stats.misses += 1;
        Lookup::Miss(Ticket(*epoch))
    }

    fn is_fresh(&self, entry: &Entry, now: Instant) -> bool {
        match self.ttl {
            Some(ttl) => now.saturating_duration_since(entry.stored_at) < ttl,
            None => true,
        }
    }

    /// Stores what a miss read, unless an invalidation happened since the miss.
    /// Returns whether it was stored.
    pub fn put(&self, id: &str, json: Arc<str>, ticket: Ticket, now: Instant) -> bool {
        let mut inner = self.lock();
        if inner.epoch != ticket.0 {
            return false;
        }
        let Inner { lru, stats, .. } = &mut *inner;
        let Some(lru) = lru else {
            return false;
        };
        let entry = Entry {
            json,
            stored_at: now,
        };
        if let Some((old_key, _)) = lru.push(id.to_string(), entry) {
            if old_key != id {
                stats.evictions += 1;
            }
        }
        true
    }

    /// Drops `id` because it was written. Returns whether an entry was dropped.
    pub fn invalidate(&self, id: &str) -> bool {
        self.invalidate_all_of([id])
    }

    /// Drops several ids in one lock.
    pub fn invalidate_all_of<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> bool {
        let mut inner = self.lock();
        inner.epoch += 1;
        let Inner { lru, stats, .. } = &mut *inner;
        let mut dropped = false;
        if let Some(lru) = lru {
            for id in ids {
                if lru.pop(id).is_some() {
                    stats.invalidations += 1;
                    dropped = true;
                }
            }
        }
        dropped
    }

    /// Drops every entry (when the node cannot tell which ones changed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let Inner { lru, stats, .. } = &mut *inner;
        if let Some(lru) = lru {
            stats.invalidations += lru.len() as u64;
            lru.clear();
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.lru.as_ref().map_or(0, |l| l.len() as u64),
            ..inner.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn miss_ticket(lookup: Lookup) -> Ticket {
        match lookup {
            Lookup::Miss(ticket) => ticket,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    #[test]
    fn second_lookup_hits() {
        let cache = Cache::new(10, None);
        let now = Instant::now();
        let ticket = miss_ticket(cache.lookup("a", now));
        assert!(cache.put("a", json("{}"), ticket, now));
        assert_eq!(cache.lookup("a", now), Lookup::Hit(json("{}")));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = Cache::new(10, Some(Duration::from_secs(60)));
        let start = Instant::now();
        let ticket = miss_ticket(cache.lookup("a", start));
        cache.put("a", json("v"), ticket, start);
        assert!(matches!(
            cache.lookup("a", start + Duration::from_secs(59)),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            cache.lookup("a", start + Duration::from_secs(60)),
            Lookup::Miss(_)
        ));
        assert_eq!(cache.stats().entries, 0, "an expired entry is dropped");
    }

    #[test]
    fn no_ttl_means_entries_never_age_out() {
        let cache = Cache::new(10, None);
        let start = Instant::now();
        let ticket = miss_ticket(cache.lookup("a", start));
        cache.put("a", json("v"), ticket, start);
        let much_later = start + Duration::from_secs(365 * 24 * 3600);
        assert!(matches!(cache.lookup("a", much_later), Lookup::Hit(_)));
    }

    #[test]
    fn least_recently_used_entry_is_evicted_and_counted() {
        let cache = Cache::new(2, None);
        let now = Instant::now();
        for id in ["a", "b"] {
            let ticket = miss_ticket(cache.lookup(id, now));
            cache.put(id, json(id), ticket, now);
        }
        assert!(matches!(cache.lookup("a", now), Lookup::Hit(_))); // b is now least recent
        let ticket = miss_ticket(cache.lookup("c", now));
        cache.put("c", json("c"), ticket, now);
        assert!(matches!(cache.lookup("b", now), Lookup::Miss(_)));
        assert!(matches!(cache.lookup("a", now), Lookup::Hit(_)));
        assert_eq!(cache.stats().evictions, 1);
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn replacing_an_entry_is_not_an_eviction() {
        let cache = Cache::new(2, None);
        let now = Instant::now();
        let ticket = miss_ticket(cache.lookup("a", now));
        cache.put("a", json("1"), ticket, now);
        cache.put("a", json("2"), ticket, now);
        assert_eq!(cache.stats().evictions, 0);
        assert_eq!(cache.lookup("a", now), Lookup::Hit(json("2")));
    }

    #[test]
    fn invalidation_drops_the_entry_and_counts_it() {
        let cache = Cache::new(10, None);
        let now = Instant::now();
        let ticket = miss_ticket(cache.lookup("a", now));
        cache.put("a", json("old"), ticket, now);
        assert!(cache.invalidate("a"));
        assert!(!cache.invalidate("a"), "nothing left to drop");
        assert!(matches!(cache.lookup("a", now), Lookup::Miss(_)));
        assert_eq!(cache.stats().invalidations, 1);
    }

    #[test]
    fn a_put_after_an_invalidation_since_its_miss_is_refused() {
        let cache = Cache::new(10, None);
        let now = Instant::now();
        let ticket = miss_ticket(cache.lookup("a", now));
        // A write lands between the miss's read and its put.
        cache.invalidate("a");
        assert!(!cache.put("a", json("old"), ticket, now));
        assert!(matches!(cache.lookup("a", now), Lookup::Miss(_)));
    }

    #[test]
    fn clear_drops_everything_and_refuses_older_puts() {
        let cache = Cache::new(10, None);
        let now = Instant::now();
        for id in ["a", "b"] {
            let ticket = miss_ticket(cache.lookup(id, now));
            cache.put(id, json(id), ticket, now);
        }
        let ticket = miss_ticket(cache.lookup("c", now));
        cache.clear();
        assert!(!cache.put("c", json("c"), ticket, now));
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().invalidations, 2);
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let cache = Cache::new(0, None);
        let now = Instant::now();
        let ticket = miss_ticket(cache.lookup("a", now));
        assert!(!cache.put("a", json("v"), ticket, now));
        assert!(matches!(cache.lookup("a", now), Lookup::Miss(_)));
        assert_eq!(cache.stats().misses, 2);
    }
}
