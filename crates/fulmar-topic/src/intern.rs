//! Interned level strings and the edge table shared by the trie and the retained index.
//!
//! Every distinct level string is stored once and named by a `u32`; a tree edge is one entry
//! `(parent node, level id) -> child node` in a single hash table, so nodes carry no per-node
//! map and no per-node `String`.

use core::hash::{BuildHasher, Hash, Hasher};

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

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

/// An edge key: parent node and level id, hashed as one `u64` (one multiply with foldhash),
/// stored in 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct EdgeKey(u32, u32);

impl Hash for EdgeKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((u64::from(self.0) << 32) | u64::from(self.1));
    }
}

/// The edges of a tree: `(parent, level id) -> child`.
#[derive(Default)]
pub(crate) struct Edges {
    map: HashMap<EdgeKey, u32>,
}

impl Edges {
    #[inline]
    pub(crate) fn get(&self, parent: u32, level: u32) -> Option<u32> {
        self.map.get(&EdgeKey(parent, level)).copied()
    }

    pub(crate) fn insert(&mut self, parent: u32, level: u32, child: u32) {
        self.map.insert(EdgeKey(parent, level), child);
    }

    pub(crate) fn remove(&mut self, parent: u32, level: u32) {
        self.map.remove(&EdgeKey(parent, level));
    }
}
