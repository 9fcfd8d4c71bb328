//! How a shared subscription group picks the member that receives a message.

use core::sync::atomic::{AtomicU64, Ordering};

/// Picks one member of a shared subscription group for each matching message.
///
/// The trie calls [`choose`](Self::choose) from [`SubscriptionTrie::matches`](crate::SubscriptionTrie::matches),
/// which takes `&self`, so that a broker can match under a read lock: per-group state lives in
/// the `cursor`, an atomic owned by the group, that the strategy may read and update. The
/// result is reduced modulo `members`, so any `usize` is safe to return.
pub trait ShareStrategy {
    /// Returns the index, in `0..members`, of the member that gets the message.
    ///
    /// `members` is at least 1. `publisher` identifies the sender when the caller knows it
    /// (e.g. its client identifier), for strategies that keep a publisher on one member.
    fn choose(&self, cursor: &AtomicU64, members: usize, publisher: Option<&[u8]>) -> usize;
}

/// Maps a 64-bit value uniformly onto `0..n` without a division.
fn reduce(x: u64, n: usize) -> usize {
    ((u128::from(x) * n as u128) >> 64) as usize
}

/// Each member in turn.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundRobin;

impl ShareStrategy for RoundRobin {
    fn choose(&self, cursor: &AtomicU64, members: usize, _publisher: Option<&[u8]>) -> usize {
        (cursor.fetch_add(1, Ordering::Relaxed) % members as u64) as usize
    }
}

/// A pseudo-random member (SplitMix64 over the group's cursor, which the trie seeds per group
/// from the process's random hasher keys).
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl ShareStrategy for Random {
    fn choose(&self, cursor: &AtomicU64, members: usize, _publisher: Option<&[u8]>) -> usize {
        let mut z = cursor
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        reduce(z ^ (z >> 31), members)
    }
}

/// The same member for the same publisher while the group's membership is unchanged
/// (FNV-1a hash of the publisher); round robin when the publisher is unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sticky;

impl ShareStrategy for Sticky {
    fn choose(&self, cursor: &AtomicU64, members: usize, publisher: Option<&[u8]>) -> usize {
        match publisher {
            Some(p) => {
                let hash = p.iter().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
                });
                (hash % members as u64) as usize
            }
            None => RoundRobin.choose(cursor, members, None),
        }
    }
}

impl<S: ShareStrategy + ?Sized> ShareStrategy for Box<S> {
    fn choose(&self, cursor: &AtomicU64, members: usize, publisher: Option<&[u8]>) -> usize {
        (**self).choose(cursor, members, publisher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_each_member_in_turn() {
        let cursor = AtomicU64::new(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| RoundRobin.choose(&cursor, 3, None))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_stays_in_range_and_spreads() {
        let cursor = AtomicU64::new(42);
        let mut seen = [0u32; 5];
        for _ in 0..1000 {
            seen[Random.choose(&cursor, 5, None)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 100), "{seen:?}");
    }

    #[test]
    fn sticky_keeps_a_publisher_on_one_member() {
        let cursor = AtomicU64::new(0);
        let first = Sticky.choose(&cursor, 7, Some(b"client-a"));
        for _ in 0..10 {
            assert_eq!(Sticky.choose(&cursor, 7, Some(b"client-a")), first);
        }
        assert!(Sticky.choose(&cursor, 7, None) < 7);
    }
}
