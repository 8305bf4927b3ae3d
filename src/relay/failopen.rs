//! Fail-open: when fewer than half of the nodes are fit (healthy by their
//! checks and not ejected), a request may go to every node that still
//! accepts connections, as Envoy's panic threshold does.
//!
//! Why: when most nodes fail their checks at once, the checks are more
//! likely wrong (a health path that changed, a dependency of `/health` that
//! requests do not need) than most nodes broken. Routing only to the few fit
//! ones would overload them, and with none fit every client would get a
//! 503 from nodes that might well have served it. So below the threshold
//! the relay trusts connections over checks: a node that refuses or resets
//! one is still marked down at once and left out ([`super::health`]), so
//! fail-open never sends requests into a dead socket twice.
//!
//! [`eligible`] is the rule, pure so its tests need no sockets;
//! [`FailOpen`] remembers the mode so that entering and leaving it are each
//! told once.

use std::sync::atomic::{AtomicBool, Ordering};

/// What the rule needs to know of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fitness {
    /// Up by its checks (and passive marks), and not removed.
    pub healthy: bool,
    /// Out of rotation for its 5xx answers ([`super::outlier`]).
    pub ejected: bool,
    /// Still accepts connections (it answered its last check, even badly).
    pub reachable: bool,
}

impl Fitness {
    fn is_fit(&self) -> bool {
        self.healthy && !self.ejected
    }
}

/// Which nodes a request may go to, and whether that is fail-open: fit
/// nodes normally; every fit or reachable node when fewer than half of the
/// nodes are fit.
pub fn eligible(nodes: &[Fitness]) -> (Vec<bool>, bool) {
    let fit = nodes.iter().filter(|n| n.is_fit()).count();
    let fail_open = fit * 2 < nodes.len();
    let chosen = nodes
        .iter()
        .map(|n| n.is_fit() || (fail_open && n.reachable))
        .collect();
    (chosen, fail_open)
}

/// Whether the relay is in fail-open mode now.
#[derive(Default)]
pub struct FailOpen {
    active: AtomicBool,
}

impl FailOpen {
    /// Records the mode a request found; true if it differs from the last.
    pub fn update(&self, active: bool) -> bool {
        self.active.swap(active, Ordering::SeqCst) != active
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIT: Fitness = Fitness {
        healthy: true,
        ejected: false,
        reachable: true,
    };
    /// Down by its checks (a 404 to the health path) but still serving.
    const SICK_CHECKS: Fitness = Fitness {
        healthy: false,
        ejected: false,
        reachable: true,
    };
    /// Refused a connection: down, and out even when failing open.
    const DEAD: Fitness = Fitness {
        healthy: false,
        ejected: false,
        reachable: false,
    };
    const EJECTED: Fitness = Fitness {
        healthy: true,
        ejected: true,
        reachable: true,
    };

    #[test]
    fn with_half_or_more_fit_only_fit_nodes_are_eligible() {
        assert_eq!(
            eligible(&[FIT, FIT, SICK_CHECKS]),
            (vec![true, true, false], false)
        );
        assert_eq!(
            eligible(&[FIT, SICK_CHECKS]),
            (vec![true, false], false),
            "exactly half is not fewer than half"
        );
        assert_eq!(
            eligible(&[FIT, EJECTED, FIT, DEAD]),
            (vec![true, false, true, false], false)
        );
    }

    #[test]
    fn with_fewer_than_half_fit_every_reachable_node_is_eligible() {
        assert_eq!(
            eligible(&[FIT, SICK_CHECKS, SICK_CHECKS]),
            (vec![true, true, true], true)
        );
        assert_eq!(
            eligible(&[SICK_CHECKS, DEAD, EJECTED]),
            (vec![true, false, true], true),
            "a node that refused a connection stays out"
        );
        assert_eq!(eligible(&[DEAD, DEAD]), (vec![false, false], true));
        assert_eq!(eligible(&[]), (vec![], false));
    }

    #[test]
    fn the_mode_is_told_once_on_entering_and_once_on_leaving() {
        let mode = FailOpen::default();
        assert!(!mode.update(false));
        assert!(mode.update(true));
        assert!(mode.is_active());
        assert!(!mode.update(true));
        assert!(mode.update(false));
        assert!(!mode.update(false));
    }
}
