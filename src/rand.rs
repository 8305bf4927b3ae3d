//! Pseudo-random numbers and UUID v4 strings, without the `rand` crate.
//!
//! The relay needs randomness in three places — choosing nodes (the `random` and `p2c`
//! balancers), naming nodes and clients, and minting booking ids — and the project depends on
//! std alone. This module owns every random number the crate draws:
//!
//! - [`Rng`]: xoshiro256** seeded through SplitMix64, for a single owner (`&mut self`). Seedable,
//!   so tests and simulations replay exactly.
//! - [`AtomicRng`]: SplitMix64 over one atomic word, for balancers that draw through `&self`
//!   from many threads at once without a lock.
//! - [`uuid_v4`]: booking ids from a per-thread generator seeded from entropy.
//!
//! Nothing here is cryptographic: ids are unique, not secret, and seeds are guessable.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64's increment, 2^64 / φ rounded to odd: being odd, successive states visit every
/// `u64` before repeating.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function. It is a bijection, so distinct states give distinct outputs.
fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw from `0..n`, using Lemire's multiply-and-reject method on a source of
/// uniform `u64`s.
///
/// The high half of `x * n` lands in `0..n`; a plain `x % n` would favour small results
/// whenever `n` does not divide 2^64. Rejecting the few draws whose low half is below
/// `2^64 mod n` removes that bias, and the division computing the threshold only runs on the
/// rare draws that might need rejecting.
///
/// # Panics
/// If `n == 0`, because `0..0` has no values to draw.
fn below_with(n: u64, mut next: impl FnMut() -> u64) -> u64 {
    assert!(n > 0, "below(0): the range 0..0 is empty");
    let mut product = u128::from(next()) * u128::from(n);
    if (product as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (product as u64) < threshold {
            product = u128::from(next()) * u128::from(n);
        }
    }
    (product >> 64) as u64
}

/// A fast, seedable pseudo-random generator (xoshiro256**) for a single owner.
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

/// Counts [`Rng::from_entropy`] calls, so two calls in the same nanosecond still differ.
static ENTROPY_CALLS: AtomicU64 = AtomicU64::new(0);

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        // SplitMix64 spreads even tiny or similar seeds over the full state, and its bijective
        // output cannot produce the all-zero state on which xoshiro would be stuck.
        let mut splitmix = seed;
        let mut next = || {
            splitmix = splitmix.wrapping_add(GOLDEN_GAMMA);
            splitmix64_mix(splitmix)
        };
        Rng {
            state: [next(), next(), next(), next()],
        }
    }

    /// A generator seeded from what std offers as entropy: the clock, the process id, a
    /// per-process call counter and the randomly keyed SipHash behind `RandomState`.
    pub fn from_entropy() -> Rng {
        // Truncating to 64 bits keeps the fast-changing low bits, which are the useful ones.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since_epoch| since_epoch.as_nanos() as u64);
        let call = ENTROPY_CALLS.fetch_add(1, Ordering::Relaxed);
        // RandomState is keyed from OS randomness once per thread and perturbed on every
        // `new`, so its hash brings bits that the clock and pid (both guessable) do not.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(call);
        Rng::new(hasher.finish() ^ splitmix64_mix(nanos ^ call.wrapping_mul(GOLDEN_GAMMA)))
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform value in `0..n`, free of modulo bias.
    ///
    /// # Panics
    /// If `n == 0`, because `0..0` is empty. This is the only way it panics.
    pub fn below(&mut self, n: u64) -> u64 {
        below_with(n, || self.next_u64())
    }

    /// A uniform value in `lo..=hi_inclusive`; the full `0..=u64::MAX` is allowed.
    ///
    /// # Panics
    /// If `lo > hi_inclusive`, because the range is then empty.
    pub fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        assert!(
            lo <= hi_inclusive,
            "range({lo}, {hi_inclusive}): the range is empty"
        );
        match (hi_inclusive - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            // The span is all 2^64 values, which every draw already covers uniformly.
            None => self.next_u64(),
        }
    }

    /// A uniform value in `[0, 1)` with 53 bits of precision (all an `f64` mantissa holds).
    pub fn next_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }

    /// True with probability `p`: always for `p >= 1`, never for `p <= 0` or NaN.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A uniformly chosen element.
    ///
    /// # Panics
    /// If `items` is empty, because there is nothing to choose.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        assert!(!items.is_empty(), "pick from an empty slice");
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random (version 4) UUID, formatted lowercase as `xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx`
    /// where `V` is one of `8 9 a b` (the RFC 4122 variant, bits `10xx`).
    pub fn uuid_v4(&mut self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;

        let mut text = String::with_capacity(36);
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        text
    }
}

thread_local! {
    /// One generator per thread, so minting ids takes no lock.
    static THREAD_RNG: RefCell<Rng> = RefCell::new(Rng::from_entropy());
}

/// A UUID v4 from a thread-local generator seeded from entropy (for booking ids).
pub fn uuid_v4() -> String {
    THREAD_RNG.with_borrow_mut(Rng::uuid_v4)
}

/// A seedable generator that many threads can draw from through `&self`, without a lock.
///
/// It is SplitMix64 with its counter in an atomic: each draw claims a distinct counter value
/// with one `fetch_add`, so concurrent draws never repeat a value and never wait. The sequence
/// is deterministic per seed when drawn from one thread; across threads it is interleaved.
#[derive(Debug)]
pub struct AtomicRng(AtomicU64);

impl AtomicRng {
    /// A generator whose sequence is determined by `seed`.
    pub fn new(seed: u64) -> AtomicRng {
        AtomicRng(AtomicU64::new(seed))
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&self) -> u64 {
        // Relaxed suffices: the counter orders nothing else, and atomicity alone keeps every
        // claimed state distinct.
        let state = self
            .0
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        splitmix64_mix(state)
    }

    /// A uniform value in `0..n`, free of modulo bias.
    ///
    /// # Panics
    /// If `n == 0`, because `0..0` is empty. This is the only way it panics.
    pub fn below(&self, n: u64) -> u64 {
        below_with(n, || self.next_u64())
    }

    /// A uniform value in `[0, 1)` with 53 bits of precision, as [`Rng::next_f64`].
    pub fn next_f64(&self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    /// Draws `draws` values from `0..buckets` and asserts each bucket holds its fair share
    /// within ±5%. With 100,000 draws over 10 buckets a bucket's standard deviation is ~95
    /// around 10,000, so ±500 is over 5σ: a failure means bias, not bad luck.
    fn assert_even_buckets(mut draw: impl FnMut(u64) -> u64, buckets: u64, draws: u64) {
        let mut counts = vec![0u64; buckets as usize];
        for _ in 0..draws {
            let value = draw(buckets);
            assert!(value < buckets, "{value} out of 0..{buckets}");
            counts[value as usize] += 1;
        }
        let expected = draws / buckets;
        let tolerance = expected / 20;
        for (bucket, &count) in counts.iter().enumerate() {
            assert!(
                count.abs_diff(expected) <= tolerance,
                "bucket {bucket} got {count}, expected {expected} ± {tolerance}: {counts:?}"
            );
        }
    }

    fn assert_uuid_v4_shape(id: &str) {
        assert_eq!(id.len(), 36, "{id}");
        for (i, c) in id.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{id}");
            } else {
                assert!(matches!(c, '0'..='9' | 'a'..='f'), "{id}");
            }
        }
        assert_eq!(&id[14..15], "4", "version nibble in {id}");
        assert!(
            matches!(&id[19..20], "8" | "9" | "a" | "b"),
            "variant in {id}"
        );
    }

    #[test]
    fn same_seed_gives_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let a_draws: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let b_draws: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(a_draws, b_draws);
    }

    #[test]
    fn different_seeds_give_different_sequences() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(2);
        let a_draws: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let b_draws: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_ne!(a_draws, b_draws);
    }

    #[test]
    fn seeding_follows_reference_splitmix64() {
        // First outputs of the reference SplitMix64 for seed 0 (Vigna's splitmix64.c).
        assert_eq!(Rng::new(0).state[0], 0xe220_a839_7b1d_cdaf);
        assert_eq!(AtomicRng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn next_u64_follows_reference_xoshiro256starstar() {
        // From state [1, 2, 3, 4] the reference algorithm outputs rotl(2 * 5, 7) * 9 = 11520,
        // then 0, because the first update leaves s[1] = 2 ^ (3 ^ 1) = 0.
        let mut rng = Rng {
            state: [1, 2, 3, 4],
        };
        assert_eq!(rng.next_u64(), 11520);
        assert_eq!(rng.next_u64(), 0);
    }

    #[test]
    fn from_entropy_differs_between_calls() {
        let mut a = Rng::from_entropy();
        let mut b = Rng::from_entropy();
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn below_stays_in_bounds_and_is_even() {
        let mut rng = Rng::new(7);
        assert_even_buckets(|n| rng.below(n), 10, 100_000);
    }

    #[test]
    fn below_one_is_always_zero() {
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| rng.below(1) == 0));
    }

    #[test]
    fn below_handles_the_largest_bound() {
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| rng.below(u64::MAX) < u64::MAX));
    }

    #[test]
    #[should_panic(expected = "below(0)")]
    fn below_zero_panics() {
        Rng::new(7).below(0);
    }

    #[test]
    fn below_rejects_draws_that_would_bias_the_result() {
        // For n = 3, 2^64 mod 3 = 1, so only a draw whose low product half is 0 (the draw 0)
        // is rejected. A scripted source shows it is skipped, not folded into the result.
        let mut script = [0, u64::MAX].into_iter();
        let value = below_with(3, || script.next().expect("script has two draws"));
        assert_eq!(value, 2);
        assert_eq!(script.next(), None, "both draws were consumed");
    }

    #[test]
    fn range_is_inclusive_at_both_ends() {
        let mut rng = Rng::new(3);
        let draws: HashSet<u64> = (0..1000).map(|_| rng.range(5, 8)).collect();
        assert_eq!(draws, HashSet::from([5, 6, 7, 8]));
        assert_eq!(rng.range(9, 9), 9);
        rng.range(0, u64::MAX); // the full span must not overflow
    }

    #[test]
    #[should_panic(expected = "empty")]
    fn range_with_lo_above_hi_panics() {
        Rng::new(3).range(2, 1);
    }

    #[test]
    fn next_f64_is_in_unit_interval() {
        let mut rng = Rng::new(11);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.next_f64()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        // The mean of 10,000 uniforms has a standard deviation of ~0.003.
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn chance_honours_certainties_and_probability() {
        let mut rng = Rng::new(13);
        assert!((0..1000).all(|_| rng.chance(1.0)));
        assert!((0..1000).all(|_| !rng.chance(0.0)));
        assert!((0..1000).all(|_| !rng.chance(f64::NAN)));
        let hits = (0..100_000).filter(|_| rng.chance(0.3)).count();
        // Expected 30,000 with a standard deviation of ~145: ±1,500 (5%) is ample.
        assert!(hits.abs_diff(30_000) <= 1_500, "hits {hits}");
    }

    #[test]
    fn pick_returns_every_element_eventually() {
        let mut rng = Rng::new(17);
        let items = ["a", "b", "c"];
        let seen: HashSet<&str> = (0..1000).map(|_| *rng.pick(&items)).collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    #[should_panic(expected = "empty")]
    fn pick_from_empty_panics() {
        let empty: [u8; 0] = [];
        Rng::new(17).pick(&empty);
    }

    #[test]
    fn uuid_has_format_version_and_variant() {
        let mut rng = Rng::new(19);
        for _ in 0..1000 {
            assert_uuid_v4_shape(&rng.uuid_v4());
        }
    }

    #[test]
    fn uuids_are_unique() {
        let mut rng = Rng::new(23);
        let ids: HashSet<String> = (0..10_000).map(|_| rng.uuid_v4()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn thread_local_uuids_are_well_formed_and_unique() {
        let ids: HashSet<String> = (0..10_000).map(|_| uuid_v4()).collect();
        assert_eq!(ids.len(), 10_000);
        ids.iter().for_each(|id| assert_uuid_v4_shape(id));
    }

    #[test]
    fn atomic_rng_is_deterministic_per_seed() {
        let a = AtomicRng::new(5);
        let b = AtomicRng::new(5);
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        assert_ne!(AtomicRng::new(6).next_u64(), AtomicRng::new(5).next_u64());
    }

    #[test]
    fn atomic_rng_below_stays_in_bounds_and_is_even() {
        let rng = AtomicRng::new(29);
        assert_even_buckets(|n| rng.below(n), 10, 100_000);
    }

    #[test]
    fn atomic_rng_never_repeats_across_threads() {
        let rng = Arc::new(AtomicRng::new(31));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let rng = Arc::clone(&rng);
                std::thread::spawn(move || (0..1000).map(|_| rng.next_u64()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for handle in handles {
            for value in handle.join().expect("drawing thread panicked") {
                assert!(all.insert(value), "value {value} drawn twice");
            }
        }
        assert_eq!(all.len(), 4000);
    }
}
