//! Friendly names like `serene-falcon` for nodes and clients.
//!
//! Logs, dashboards and error messages are read by people, and `serene-falcon` is easier to
//! say, remember and grep than `node 3` or a port number. This module owns the word lists and
//! the rule that names handed out in one run never repeat ([`NameGenerator`]).

use crate::rand::Rng;
use std::collections::HashSet;

/// First halves of names: friendly, inoffensive, lowercase ASCII letters only.
pub const ADJECTIVES: &[&str] = &[
    "agile", "amber", "ample", "autumn", "bold", "brave", "breezy", "bright", "brisk", "calm",
    "candid", "cheerful", "clever", "cosmic", "crisp", "curious", "dapper", "daring", "dazzling",
    "eager", "earnest", "elegant", "fancy", "fearless", "festive", "gentle", "gleaming", "golden",
    "graceful", "happy", "hearty", "honest", "humble", "jolly", "jovial", "joyful", "keen", "kind",
    "lively", "lucky", "lunar", "mellow", "merry", "mighty", "misty", "modest", "nimble", "noble",
    "patient", "peaceful", "plucky", "polite", "proud", "quick", "quiet", "radiant", "rapid",
    "serene", "shiny", "silent", "silver", "sincere", "snowy", "steady", "sturdy", "sunny",
    "swift", "tidy", "tranquil", "trusty", "vivid", "warm", "wise", "witty", "zesty",
];

/// Second halves of names: animals and landscape, lowercase ASCII letters only.
pub const NOUNS: &[&str] = &[
    "aspen", "badger", "beacon", "bison", "brook", "canyon", "cedar", "comet", "condor", "coral",
    "cougar", "crane", "dolphin", "eagle", "ember", "falcon", "fern", "finch", "fjord", "fox",
    "gazelle", "glacier", "harbor", "hawk", "heron", "horizon", "ibis", "island", "jaguar",
    "kestrel", "koala", "lagoon", "lark", "lemur", "lynx", "maple", "marmot", "meadow", "meteor",
    "moose", "nebula", "newt", "oak", "ocean", "orca", "osprey", "otter", "owl", "panda", "pebble",
    "pelican", "penguin", "pine", "plover", "prairie", "puffin", "quail", "raven", "reef", "river",
    "robin", "sparrow", "spruce", "summit", "swan", "tiger", "tundra", "walrus", "willow", "wren",
    "yak", "zebra",
];

/// A random `adjective-noun` name. Names may repeat; use [`NameGenerator`] when they must not.
pub fn random_name(rng: &mut Rng) -> String {
    format!("{}-{}", rng.pick(ADJECTIVES), rng.pick(NOUNS))
}

/// Hands out names that are unique for its lifetime (one run of the relay).
///
/// Names come in random order as `adjective-noun` until every combination has been used or
/// reserved, then as `adjective-noun-2`, then `-3`, and so on, so it never runs out.
#[derive(Clone, Debug)]
pub struct NameGenerator {
    rng: Rng,
    /// Every combination index (`adjective * NOUNS.len() + noun`), shuffled lazily: the slots
    /// before `cursor` are this round's draws so far, the rest are still to be drawn.
    order: Vec<usize>,
    cursor: usize,
    /// The suffix this round appends: 1 means none, then 2, 3, ...
    round: u64,
    /// Names returned or reserved, which must never be returned again.
    taken: HashSet<String>,
}

impl NameGenerator {
    /// A generator drawing its order from `rng`; the same seed gives the same names.
    pub fn new(rng: Rng) -> Self {
        NameGenerator {
            rng,
            order: (0..ADJECTIVES.len() * NOUNS.len()).collect(),
            cursor: 0,
            round: 1,
            taken: HashSet::new(),
        }
    }

    /// A name not returned or reserved before.
    pub fn next_name(&mut self) -> String {
        // Terminates: each round offers every combination once, and `taken` is finite, so some
        // round soon has a combination left over.
        loop {
            if self.cursor == self.order.len() {
                self.round += 1;
                self.cursor = 0;
            }
            // One Fisher–Yates step at a time: a run needing ten names shuffles ten slots, and
            // each round's order is a fresh uniform permutation.
            let remaining = (self.order.len() - self.cursor) as u64;
            let drawn = self.cursor + self.rng.below(remaining) as usize;
            self.order.swap(self.cursor, drawn);
            let name = self.compose(self.order[self.cursor]);
            self.cursor += 1;
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    /// Marks `name` as in use (say, configured by hand) so it is never generated.
    pub fn reserve(&mut self, name: &str) {
        self.taken.insert(name.to_owned());
    }

    fn compose(&self, combination: usize) -> String {
        let adjective = ADJECTIVES[combination / NOUNS.len()];
        let noun = NOUNS[combination % NOUNS.len()];
        match self.round {
            1 => format!("{adjective}-{noun}"),
            round => format!("{adjective}-{noun}-{round}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMBINATIONS: usize = ADJECTIVES.len() * NOUNS.len();

    /// Splits a bare name into its words, asserting both come from the lists.
    fn assert_bare_name(name: &str) {
        let (adjective, noun) = name
            .split_once('-')
            .unwrap_or_else(|| panic!("no hyphen in {name}"));
        assert!(ADJECTIVES.contains(&adjective), "{name}");
        assert!(NOUNS.contains(&noun), "{name}");
    }

    fn assert_word_list(words: &[&str]) {
        assert!(words.len() >= 64, "only {} words", words.len());
        for word in words {
            assert!(
                !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase()),
                "{word}"
            );
        }
        let distinct: HashSet<&&str> = words.iter().collect();
        assert_eq!(distinct.len(), words.len(), "duplicate words");
    }

    #[test]
    fn word_lists_are_long_distinct_lowercase_words() {
        assert_word_list(ADJECTIVES);
        assert_word_list(NOUNS);
    }

    #[test]
    fn random_name_is_adjective_hyphen_noun() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            assert_bare_name(&random_name(&mut rng));
        }
    }

    #[test]
    fn random_name_is_deterministic_per_seed() {
        assert_eq!(random_name(&mut Rng::new(9)), random_name(&mut Rng::new(9)));
    }

    #[test]
    fn generator_never_repeats_over_ten_thousand_names() {
        let mut names = NameGenerator::new(Rng::new(2));
        let all: HashSet<String> = (0..10_000).map(|_| names.next_name()).collect();
        assert_eq!(all.len(), 10_000);
    }

    #[test]
    fn generator_uses_every_bare_name_before_suffixing() {
        let mut names = NameGenerator::new(Rng::new(3));
        let first_round: HashSet<String> = (0..COMBINATIONS).map(|_| names.next_name()).collect();
        assert_eq!(first_round.len(), COMBINATIONS);
        first_round.iter().for_each(|name| assert_bare_name(name));

        for _ in 0..COMBINATIONS {
            let name = names.next_name();
            let bare = name
                .strip_suffix("-2")
                .unwrap_or_else(|| panic!("{name} lacks -2"));
            assert!(first_round.contains(bare), "{name}");
        }
        assert!(names.next_name().ends_with("-3"));
    }

    #[test]
    fn generator_never_returns_reserved_names() {
        let mut names = NameGenerator::new(Rng::new(4));
        names.reserve("serene-falcon");
        names.reserve("serene-falcon-2");
        let generated: Vec<String> = (0..3 * COMBINATIONS).map(|_| names.next_name()).collect();
        assert!(!generated.iter().any(|name| name == "serene-falcon"));
        assert!(!generated.iter().any(|name| name == "serene-falcon-2"));
        assert!(generated.iter().any(|name| name == "serene-falcon-3"));
    }

    #[test]
    fn generator_is_deterministic_per_seed() {
        let mut a = NameGenerator::new(Rng::new(5));
        let mut b = NameGenerator::new(Rng::new(5));
        assert!((0..100).all(|_| a.next_name() == b.next_name()));
    }
}
