//! Interned level strings and the edge table shared by the trie and the retained index.
//!
//! Every distinct level string is stored once and named by a `u32`; a tree edge is one entry
//! `(parent node, level id) -> child node` in a single hash table, so nodes carry no per-node
//! map and no per-node `String`.

use core::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// "No node" / "no entry" in the `u32` links.
pub(crate) const NONE: u32 = u32::MAX;

/// Byte equality without a `memcmp` call for the short strings levels usually are.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 16 {
        return a == b;
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// A table of level strings with reference counts.
#[derive(Default)]
pub(crate) struct Interner {
    /// Ids, hashed by the string they name.
    table: HashTable<u32>,
    /// `strings[id]`: the level, empty when the id is free.
    strings: Vec<Box<[u8]>>,
    /// `refs[id]`: how many edges use the id.
    refs: Vec<u32>,
    /// Ids free for reuse.
    free: Vec<u32>,
    hasher: DefaultHashBuilder,
}

impl Interner {
    #[inline]
    fn hash(&self, level: &[u8]) -> u64 {
        self.hasher.hash_one(level)
    }

    /// The id of `level`, if some edge uses it.
    #[inline]
    pub(crate) fn get(&self, level: &[u8]) -> Option<u32> {
        let strings = &self.strings;
        self.table
            .find(self.hash(level), |id| {
                strings.get(*id as usize).is_some_and(|s| same(s, level))
            })
            .copied()
    }

    /// The id of `level`, created if needed, with its reference count incremented.
    pub(crate) fn acquire(&mut self, level: &[u8]) -> u32 {
        let hash = self.hash(level);
        let strings = &self.strings;
        let found = self
            .table
            .find(hash, |id| {
                strings.get(*id as usize).map(|s| &**s) == Some(level)
            })
            .copied();
        let id = match found {
            Some(id) => id,
            None => {
                let id = match self.free.pop() {
                    Some(id) => {
                        if let Some(slot) = self.strings.get_mut(id as usize) {
                            *slot = level.into();
                        }
                        id
                    }
                    None => {
                        self.strings.push(level.into());
                        self.refs.push(0);
                        u32::try_from(self.strings.len() - 1).unwrap_or(NONE)
                    }
                };
                let (strings, hasher) = (&self.strings, &self.hasher);
                self.table.insert_unique(hash, id, |id| {
                    hasher.hash_one(strings.get(*id as usize).map_or(&[][..], |s| &**s))
                });
                id
            }
        };
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r += 1;
        }
        id
    }

    /// Drops one reference to `id`, freeing the string with the last one.
    pub(crate) fn release(&mut self, id: u32) {
        let Some(r) = self.refs.get_mut(id as usize) else {
            return;
        };
        *r = r.saturating_sub(1);
        if *r > 0 {
            return;
        }
        let Some(slot) = self.strings.get_mut(id as usize) else {
            return;
        };
        let level = core::mem::take(slot);
        let hash = self.hasher.hash_one(&*level);
        if let Ok(entry) = self.table.find_entry(hash, |x| *x == id) {
            entry.remove();
        }
        self.free.push(id);
    }

    /// The string of `id`.
    pub(crate) fn resolve(&self, id: u32) -> &[u8] {
        self.strings.get(id as usize).map_or(&[], |s| s)
    }
}

/// The edges of a tree: `(parent, level id) -> child`, in one open-addressing table.
///
/// Linear probing over 12-byte slots `[parent, level, child]` (child [`NONE`] = empty): a
/// lookup usually touches one cache line, where a general-purpose table touches two (control
/// bytes and buckets live apart). The hash is a seeded multiply-fold of the two ids; ids are
/// assigned by the tree, and the seed comes from the process's random hasher keys.
pub(crate) struct Edges {
    slots: Vec<[u32; 3]>,
    len: usize,
    seed: u64,
}

const EMPTY_SLOT: [u32; 3] = [NONE, NONE, NONE];

impl Default for Edges {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            seed: std::hash::RandomState::new().hash_one(0x5EED_u64) | 1,
        }
    }
}

impl Edges {
    #[inline]
    fn home(&self, parent: u32, level: u32) -> usize {
        let key = ((u64::from(parent) << 32) | u64::from(level)) ^ self.seed;
        let wide = u128::from(key) * 0x9E37_79B9_7F4A_7C15_u128;
        let folded = (wide as u64) ^ ((wide >> 64) as u64);
        (folded as usize) & (self.slots.len().wrapping_sub(1))
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `(parent, level)`, or the empty slot where it would go.
    #[inline]
    fn probe(&self, parent: u32, level: u32) -> Option<(usize, bool)> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(parent, level);
        loop {
            let slot = self.slots.get(i)?;
            if slot[2] == NONE {
                return Some((i, false));
            }
            if slot[0] == parent && slot[1] == level {
                return Some((i, true));
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub(crate) fn get(&self, parent: u32, level: u32) -> Option<u32> {
        match self.probe(parent, level)? {
            (i, true) => self.slots.get(i).map(|s| s[2]),
            (_, false) => None,
        }
    }

    pub(crate) fn insert(&mut self, parent: u32, level: u32, child: u32) {
        // Keep the load at most 0.7, so that probe runs stay short.
        if (self.len + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        if let Some((i, found)) = self.probe(parent, level)
            && let Some(slot) = self.slots.get_mut(i)
        {
            *slot = [parent, level, child];
            if !found {
                self.len += 1;
            }
        }
    }

    pub(crate) fn remove(&mut self, parent: u32, level: u32) {
        let Some((mut hole, true)) = self.probe(parent, level) else {
            return;
        };
        self.len -= 1;
        // Backward-shift deletion: move later entries of the run into the hole when their home
        // position allows it, so that no tombstones are needed.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(&slot) = self.slots.get(j) else {
                break;
            };
            if slot[2] == NONE {
                break;
            }
            let home = self.home(slot[0], slot[1]);
            let movable = if hole <= j {
                home <= hole || home > j
            } else {
                home <= hole && home > j
            };
            if movable {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = slot;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = EMPTY_SLOT;
        }
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let old = core::mem::replace(&mut self.slots, vec![EMPTY_SLOT; capacity]);
        self.len = 0;
        for [parent, level, child] in old {
            if child != NONE {
                self.insert(parent, level, child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn edges_agree_with_a_hash_map_under_churn() {
        let mut edges = Edges::default();
        let mut model = HashMap::new();
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (parent, level) = ((x % 300) as u32, ((x >> 20) % 50) as u32);
            if x >> 60 < 9 {
                edges.insert(parent, level, step);
                model.insert((parent, level), step);
            } else {
                edges.remove(parent, level);
                model.remove(&(parent, level));
            }
            if step % 5000 == 0 {
                assert_eq!(edges.len, model.len());
                for p in 0..300 {
                    for l in 0..50 {
                        assert_eq!(edges.get(p, l), model.get(&(p, l)).copied());
                    }
                }
            }
        }
    }

    #[test]
    fn interner_reuses_ids_and_forgets_released_levels() {
        let mut interner = Interner::default();
        let a = interner.acquire(b"a");
        assert_eq!(interner.acquire(b"a"), a);
        let b = interner.acquire(b"b");
        assert_ne!(a, b);
        interner.release(a);
        assert_eq!(interner.get(b"a"), Some(a));
        interner.release(a);
        assert_eq!(interner.get(b"a"), None);
        let c = interner.acquire(b"c");
        assert_eq!(c, a, "freed id reused");
        assert_eq!(interner.resolve(c), b"c");
        assert_eq!(interner.get(b"b"), Some(b));
    }
}
