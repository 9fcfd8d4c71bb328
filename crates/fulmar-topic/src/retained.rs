//! [`RetainedIndex`]: the last retained message per topic name, looked up by filter.

use core::fmt;
use core::ops::ControlFlow;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::intern::{Edges, Interner, NONE};
use crate::validate::levels;
use crate::{TopicFilter, TopicName};

const ROOT: u32 = 0;

/// A value whose payload may be empty: an empty payload deletes the retained message
/// (MQTT-3.3.1-6 and MQTT-3.3.1-7 in 5.0, MQTT-3.3.1-10 and MQTT-3.3.1-11 in 3.1.1).
pub trait RetainedPayload {
    /// Whether the application payload is zero bytes long.
    fn is_empty_payload(&self) -> bool;
}

impl RetainedPayload for Bytes {
    fn is_empty_payload(&self) -> bool {
        self.is_empty()
    }
}

impl RetainedPayload for Vec<u8> {
    fn is_empty_payload(&self) -> bool {
        self.is_empty()
    }
}

impl RetainedPayload for String {
    fn is_empty_payload(&self) -> bool {
        self.is_empty()
    }
}

impl RetainedPayload for &[u8] {
    fn is_empty_payload(&self) -> bool {
        self.is_empty()
    }
}

impl RetainedPayload for &str {
    fn is_empty_payload(&self) -> bool {
        self.is_empty()
    }
}

/// One level of a stored topic name; children form a doubly linked list for wildcard walks.
#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    level: u32,
    first_child: u32,
    next_sibling: u32,
    prev_sibling: u32,
    /// Index in `values`, or [`NONE`].
    value: u32,
}

impl Node {
    const VACANT: Self = Self {
        parent: NONE,
        level: NONE,
        first_child: NONE,
        next_sibling: NONE,
        prev_sibling: NONE,
        value: NONE,
    };
}

/// The retained messages of a server: at most one value `V` per topic name, found by filter.
///
/// [`matches`](Self::matches) visits every stored name matching a filter in time proportional
/// to the filter's length and the number of names it reaches (a `+` level walks the children
/// of the nodes it is at, a `#` walks the subtree), not to the size of the store. Filters
/// starting with `+` or `#` skip names starting with `$` (MQTT-4.7.2-1).
///
/// ```
/// use fulmar_topic::{RetainedIndex, TopicError};
///
/// let mut retained = RetainedIndex::new();
/// retained.publish("home/kitchen/temp".parse()?, "21.5".to_string());
/// retained.publish("home/garage/temp".parse()?, "14.0".to_string());
/// retained.publish("home/garage/temp".parse()?, String::new()); // empty payload: deleted
/// let mut found = Vec::new();
/// retained.matches(&"home/+/temp".parse()?, |topic, value| found.push((topic.as_str(), value.as_str())));
/// assert_eq!(found, [("home/kitchen/temp", "21.5")]);
/// # Ok::<(), TopicError>(())
/// ```
pub struct RetainedIndex<V> {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    values: Vec<Option<(TopicName, V)>>,
    free_values: Vec<u32>,
    edges: Edges,
    levels: Interner,
    len: usize,
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self {
            nodes: vec![Node::VACANT],
            free_nodes: Vec::new(),
            values: Vec::new(),
            free_values: Vec::new(),
            edges: Edges::default(),
            levels: Interner::default(),
            len: 0,
        }
    }
}

impl<V> fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> RetainedIndex<V> {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of retained messages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no message is retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Handles a PUBLISH with the RETAIN flag: stores `value` as the retained message of
    /// `topic`, replacing the previous one, or deletes it when the payload is empty. Returns the
    /// message it replaced or deleted.
    pub fn publish(&mut self, topic: TopicName, value: V) -> Option<V>
    where
        V: RetainedPayload,
    {
        if value.is_empty_payload() {
            self.remove(&topic)
        } else {
            self.insert(topic, value)
        }
    }

    /// Stores `value` for `topic`; returns the value it replaced.
    pub fn insert(&mut self, topic: TopicName, value: V) -> Option<V> {
        let mut n = ROOT;
        for level in levels(topic.as_str()) {
            n = match self.levels.get(level).and_then(|id| self.edges.get(n, id)) {
                Some(child) => child,
                None => self.add_child(n, level),
            };
        }
        let slot = self.node(n).value;
        if slot != NONE {
            let old = self.values.get_mut(slot as usize)?.replace((topic, value));
            return old.map(|(_, v)| v);
        }
        let slot = match self.free_values.pop() {
            Some(s) => {
                if let Some(v) = self.values.get_mut(s as usize) {
                    *v = Some((topic, value));
                }
                s
            }
            None => {
                self.values.push(Some((topic, value)));
                (self.values.len() - 1) as u32
            }
        };
        if let Some(node) = self.nodes.get_mut(n as usize) {
            node.value = slot;
        }
        self.len += 1;
        None
    }

    /// Deletes the retained message of `topic`; returns it.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        let mut n = self.find(topic)?;
        let slot = self.node(n).value;
        let (_, old) = self.values.get_mut(slot as usize)?.take()?;
        self.free_values.push(slot);
        if let Some(node) = self.nodes.get_mut(n as usize) {
            node.value = NONE;
        }
        self.len -= 1;
        while n != ROOT {
            let node = self.node(n);
            if node.value != NONE || node.first_child != NONE {
                break;
            }
            self.unlink(n, node);
            n = node.parent;
        }
        Some(old)
    }

    /// The retained message of `topic`.
    #[must_use]
    pub fn get(&self, topic: &TopicName) -> Option<&V> {
        let n = self.find(topic)?;
        self.entry(n).map(|(_, v)| v)
    }

    /// Calls `f` with every retained message whose topic name matches `filter`.
    ///
    /// The order of the calls is unspecified.
    pub fn matches<'a>(&'a self, filter: &TopicFilter, mut f: impl FnMut(&'a TopicName, &'a V)) {
        // Never breaks.
        let _: ControlFlow<()> = self.try_matches(filter, |t, v| {
            f(t, v);
            ControlFlow::Continue(())
        });
    }

    /// As [`matches`](Self::matches), stopping at the first call of `f`
    /// that returns [`ControlFlow::Break`] (whose value is returned): a
    /// caller that wants the first `n` matches walks no further.
    ///
    /// ```
    /// use core::ops::ControlFlow;
    /// use fulmar_topic::RetainedIndex;
    ///
    /// let mut index = RetainedIndex::new();
    /// for t in ["a/1", "a/2", "a/3"] {
    ///     index.insert(t.parse().unwrap(), ());
    /// }
    /// let mut seen = 0;
    /// let stopped = index.try_matches(&"a/+".parse().unwrap(), |_, _| {
    ///     seen += 1;
    ///     if seen == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    /// });
    /// assert_eq!((stopped, seen), (ControlFlow::Break(()), 2));
    /// ```
    pub fn try_matches<'a, B>(
        &'a self,
        filter: &TopicFilter,
        mut f: impl FnMut(&'a TopicName, &'a V) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        if filter.as_bytes() == b"#" && self.free_values.len() <= self.values.len() / 2 {
            // Everything but `$` names: a scan of the value slab beats a walk of the tree,
            // unless most of the slab is free slots (it keeps the size of the store's peak).
            for (t, v) in self.values.iter().flatten() {
                if !t.is_dollar() {
                    f(t, v)?;
                }
            }
            return ControlFlow::Continue(());
        }
        let filter_levels: SmallVec<[&[u8]; 16]> = levels(filter.as_str()).collect();
        let mut stack: SmallVec<[(u32, usize); 32]> = SmallVec::new();
        stack.push((ROOT, 0));
        while let Some((n, depth)) = stack.pop() {
            let Some(level) = filter_levels.get(depth) else {
                self.emit(n, &mut f)?;
                continue;
            };
            match *level {
                b"#" => {
                    if n == ROOT {
                        for child in self.children(ROOT) {
                            if !self.is_dollar(child) {
                                self.walk(child, &mut f)?;
                            }
                        }
                    } else {
                        self.walk(n, &mut f)?;
                    }
                }
                b"+" => {
                    for child in self.children(n) {
                        if n != ROOT || !self.is_dollar(child) {
                            stack.push((child, depth + 1));
                        }
                    }
                }
                lit => {
                    if let Some(child) = self.levels.get(lit).and_then(|id| self.edges.get(n, id)) {
                        stack.push((child, depth + 1));
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Calls `f` with every retained message.
    pub fn for_each<'a>(&'a self, mut f: impl FnMut(&'a TopicName, &'a V)) {
        self.values.iter().flatten().for_each(|(t, v)| f(t, v));
    }

    fn node(&self, n: u32) -> Node {
        self.nodes.get(n as usize).copied().unwrap_or(Node::VACANT)
    }

    fn entry(&self, n: u32) -> Option<&(TopicName, V)> {
        self.values.get(self.node(n).value as usize)?.as_ref()
    }

    fn emit<'a, B>(
        &'a self,
        n: u32,
        f: &mut impl FnMut(&'a TopicName, &'a V) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        match self.entry(n) {
            Some((t, v)) => f(t, v),
            None => ControlFlow::Continue(()),
        }
    }

    fn is_dollar(&self, n: u32) -> bool {
        self.levels.resolve(self.node(n).level).first() == Some(&b'$')
    }

    fn children(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.node(n).first_child;
        core::iter::from_fn(move || {
            let cur = next;
            (cur != NONE).then(|| {
                next = self.node(cur).next_sibling;
                cur
            })
        })
    }

    /// Emits `top` and every node below it, in pre-order, without recursion.
    fn walk<'a, B>(
        &'a self,
        top: u32,
        f: &mut impl FnMut(&'a TopicName, &'a V) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        self.emit(top, f)?;
        let mut n = self.node(top).first_child;
        while n != NONE {
            self.emit(n, f)?;
            let node = self.node(n);
            if node.first_child != NONE {
                n = node.first_child;
                continue;
            }
            let mut m = n;
            n = NONE;
            while m != top && m != NONE {
                let up = self.node(m);
                if up.next_sibling != NONE {
                    n = up.next_sibling;
                    break;
                }
                m = up.parent;
            }
        }
        ControlFlow::Continue(())
    }

    fn find(&self, topic: &TopicName) -> Option<u32> {
        let mut n = ROOT;
        for level in levels(topic.as_str()) {
            n = self.edges.get(n, self.levels.get(level)?)?;
        }
        Some(n)
    }

    fn add_child(&mut self, parent: u32, level: &[u8]) -> u32 {
        let id = self.levels.acquire(level);
        let first = self.node(parent).first_child;
        let node = Node {
            parent,
            level: id,
            next_sibling: first,
            ..Node::VACANT
        };
        let child = match self.free_nodes.pop() {
            Some(c) => {
                if let Some(slot) = self.nodes.get_mut(c as usize) {
                    *slot = node;
                }
                c
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if let Some(old_first) = self.nodes.get_mut(first as usize) {
            old_first.prev_sibling = child;
        }
        if let Some(p) = self.nodes.get_mut(parent as usize) {
            p.first_child = child;
        }
        self.edges.insert(parent, id, child);
        child
    }

    /// Detaches leaf `n` from its parent and frees it.
    fn unlink(&mut self, n: u32, node: Node) {
        if node.prev_sibling == NONE {
            if let Some(p) = self.nodes.get_mut(node.parent as usize) {
                p.first_child = node.next_sibling;
            }
        } else if let Some(prev) = self.nodes.get_mut(node.prev_sibling as usize) {
            prev.next_sibling = node.next_sibling;
        }
        if let Some(next) = self.nodes.get_mut(node.next_sibling as usize) {
            next.prev_sibling = node.prev_sibling;
        }
        self.edges.remove(node.parent, node.level);
        self.levels.release(node.level);
        if let Some(slot) = self.nodes.get_mut(n as usize) {
            *slot = Node::VACANT;
        }
        self.free_nodes.push(n);
    }
}
