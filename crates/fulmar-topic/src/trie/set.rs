//! The subscribers stored at one trie node: direct subscriptions and shared groups.

use core::hash::Hash;
use core::mem;
use core::sync::atomic::AtomicU64;

use hashbrown::HashMap;

/// Up to this many subscribers a set is a vector searched linearly; above, a hash map.
const SMALL: usize = 8;

/// The non-shared subscribers of one filter, keyed by subscriber.
///
/// One subscriber is stored inline (the common case: 1 M filters with one subscriber each
/// allocate nothing here), a few in a vector, many in a hash map.
pub(crate) enum SubSet<K, O> {
    Empty,
    One(K, O),
    Few(Vec<(K, O)>),
    Many(Box<HashMap<K, O>>),
}

impl<K: Eq + Hash, O> SubSet<K, O> {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    pub(crate) fn get(&self, key: &K) -> Option<&O> {
        match self {
            Self::Empty => None,
            Self::One(k, o) => (k == key).then_some(o),
            Self::Few(v) => v.iter().find(|(k, _)| k == key).map(|(_, o)| o),
            Self::Many(m) => m.get(key),
        }
    }

    /// Inserts or replaces; returns the replaced options.
    pub(crate) fn insert(&mut self, key: K, options: O) -> Option<O> {
        match self {
            Self::Empty => {
                *self = Self::One(key, options);
                None
            }
            Self::One(k, o) if *k == key => Some(mem::replace(o, options)),
            Self::One(..) => {
                if let Self::One(k, o) = mem::replace(self, Self::Empty) {
                    *self = Self::Few(vec![(k, o), (key, options)]);
                }
                None
            }
            Self::Few(v) => {
                if let Some((_, o)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(mem::replace(o, options));
                }
                if v.len() < SMALL {
                    v.push((key, options));
                } else {
                    let mut map: HashMap<K, O> = v.drain(..).collect();
                    map.insert(key, options);
                    *self = Self::Many(Box::new(map));
                }
                None
            }
            Self::Many(m) => m.insert(key, options),
        }
    }

    /// Removes `key`; returns its options.
    pub(crate) fn remove(&mut self, key: &K) -> Option<O> {
        match self {
            Self::Empty => None,
            Self::One(k, _) if k == key => match mem::replace(self, Self::Empty) {
                Self::One(_, o) => Some(o),
                _ => None,
            },
            Self::One(..) => None,
            Self::Few(v) => {
                let pos = v.iter().position(|(k, _)| k == key)?;
                let (_, o) = v.swap_remove(pos);
                if v.len() == 1
                    && let Some((k, o)) = v.pop()
                {
                    *self = Self::One(k, o);
                }
                Some(o)
            }
            Self::Many(m) => {
                let o = m.remove(key)?;
                if m.len() <= SMALL / 2 {
                    *self = Self::Few(m.drain().collect());
                }
                Some(o)
            }
        }
    }

    pub(crate) fn for_each<'a>(&'a self, f: &mut impl FnMut(&'a K, &'a O)) {
        match self {
            Self::Empty => {}
            Self::One(k, o) => f(k, o),
            Self::Few(v) => v.iter().for_each(|(k, o)| f(k, o)),
            Self::Many(m) => m.iter().for_each(|(k, o)| f(k, o)),
        }
    }
}

/// One shared subscription group `$share/{name}/{filter}` at the node of `{filter}`.
pub(crate) struct Group<K, O> {
    /// Unique among the groups of its node (ids are reused once the counter wraps); names the
    /// group in the per-key index.
    pub(crate) id: u32,
    pub(crate) name: Box<str>,
    /// Members in arrival order; a message goes to one of them.
    pub(crate) members: Vec<(K, O)>,
    /// Strategy state (round-robin position, random state).
    pub(crate) cursor: AtomicU64,
    /// Each member's position in `members`, once the group has
    /// [`INDEXED_FROM`] of them: leaving a large group then costs one step,
    /// not a scan (a mass disconnection would cost the square of its size).
    #[allow(clippy::box_collection)]
    pub(crate) index: Option<Box<HashMap<K, usize>>>,
}

/// The size from which a group keeps an index of its members.
pub(crate) const INDEXED_FROM: usize = 64;

impl<K: Eq + Hash + Clone, O> Group<K, O> {
    /// The position of `key` among the members.
    pub(crate) fn position(&self, key: &K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.members.iter().position(|(k, _)| k == key),
        }
    }

    /// Adds a member (not one already there).
    pub(crate) fn push(&mut self, key: K, options: O) {
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.members.len());
        }
        self.members.push((key, options));
        if self.index.is_none() && self.members.len() >= INDEXED_FROM {
            let index = self
                .members
                .iter()
                .enumerate()
                .map(|(at, (k, _))| (k.clone(), at))
                .collect();
            self.index = Some(Box::new(index));
        }
    }

    /// Removes the member at `pos`: keeping the others in order while the
    /// group is small, by moving the last one into its place once indexed.
    pub(crate) fn remove_at(&mut self, pos: usize) -> Option<(K, O)> {
        if pos >= self.members.len() {
            return None;
        }
        let Some(index) = &mut self.index else {
            return Some(self.members.remove(pos));
        };
        let removed = self.members.swap_remove(pos);
        index.remove(&removed.0);
        if let Some((moved, _)) = self.members.get(pos) {
            index.insert(moved.clone(), pos);
        }
        Some(removed)
    }
}

/// Everything subscribed to one filter.
pub(crate) struct Subscribers<K, O> {
    pub(crate) direct: SubSet<K, O>,
    /// Shared groups on this filter, boxed: most filters have none, and an empty `Option<Box>`
    /// is 8 bytes where an empty `Vec` is 24 (times a million filters).
    #[allow(clippy::box_collection)]
    pub(crate) groups: Option<Box<Vec<Group<K, O>>>>,
}

impl<K: Eq + Hash, O> Subscribers<K, O> {
    pub(crate) const EMPTY: Self = Self {
        direct: SubSet::Empty,
        groups: None,
    };

    pub(crate) fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.groups.is_none()
    }

    pub(crate) fn group(&self, name: &str) -> Option<&Group<K, O>> {
        self.groups.as_ref()?.iter().find(|g| &*g.name == name)
    }
}
