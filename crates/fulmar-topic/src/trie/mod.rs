//! [`SubscriptionTrie`]: topic filters to subscribers, matched by topic name.

mod set;

use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::mem;
use core::sync::atomic::AtomicU64;
use std::hash::RandomState;

use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use smallvec::SmallVec;

use self::set::{Group, Subscribers};
use crate::intern::{Edges, Interner, NONE};
use crate::validate::levels;
use crate::{RoundRobin, ShareStrategy, SharedFilter, SubscriptionFilter, TopicFilter, TopicName};

/// The root node; never freed.
const ROOT: u32 = 0;
/// Level id of a `+` child (interned ids never reach it).
const PLUS: u32 = NONE - 1;
/// Level id of a `#` child.
const HASH: u32 = NONE - 2;
/// How many members of a shared group are asked, at most, for one that is
/// available (see [`SubscriptionTrie::matches_available`]).
const MAX_PROBES: usize = 16;

/// A yes/no availability as a rank: available members rank highest.
fn ranked<K>(available: impl Fn(&K) -> bool) -> impl Fn(&K) -> u8 {
    move |key| if available(key) { u8::MAX } else { 0 }
}

/// One level of a filter. 24 bytes; children by literal level live in [`Edges`].
#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    /// Interned level of the edge from the parent, or [`PLUS`] / [`HASH`].
    level: u32,
    /// The `+` child.
    plus: u32,
    /// The `#` child: its subscribers match this level and everything below.
    hash: u32,
    /// Index in `sets` of the subscribers of the filter ending here.
    subs: u32,
    /// Number of literal children.
    children: u32,
}

impl Node {
    const VACANT: Self = Self {
        parent: NONE,
        level: NONE,
        plus: NONE,
        hash: NONE,
        subs: NONE,
        children: 0,
    };

    fn is_unused(&self) -> bool {
        self.plus == NONE && self.hash == NONE && self.subs == NONE && self.children == 0
    }
}

/// Where one subscription of a key lives: the filter's node and the shared group, if any.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Loc {
    node: u32,
    /// [`Group::id`], or [`NONE`] for a non-shared subscription.
    group: u32,
}

/// The subscriptions of one key (most keys in a big trie hold one). Boxed so that the index
/// entry of a key is 24 bytes rather than 40.
#[allow(clippy::box_collection)]
enum Locs {
    One(Loc),
    Many(Box<Vec<Loc>>),
    /// From [`LOCS_HASHED_FROM`] subscriptions on: leaving one of them
    /// costs one step, not a scan (a key with N filters that unsubscribes
    /// from each would cost the square of N).
    Set(Box<hashbrown::HashSet<Loc>>),
}

/// The number of subscriptions from which a key's index is a hash set.
const LOCS_HASHED_FROM: usize = 32;

/// A hashed index shrinks back to a vector at this size (not at
/// [`LOCS_HASHED_FROM`], so that a key going back and forth around it does
/// not rebuild its index each time).
const LOCS_LISTED_AT: usize = LOCS_HASHED_FROM / 4;

/// One subscriber matched by [`SubscriptionTrie::matches`].
#[derive(Debug)]
pub struct Match<'a, K, O> {
    /// The subscriber.
    pub key: &'a K,
    /// The options of the matching subscription (one filter of `key`).
    pub options: &'a O,
    /// The ShareName when the subscription is shared: the group chose `key` for this message.
    pub share_group: Option<&'a str>,
}

impl<K, O> Clone for Match<'_, K, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, O> Copy for Match<'_, K, O> {}

/// Sorts `matches` by key and yields them grouped per delivery.
///
/// Each non-shared group holds every matching subscription of one key, so the caller can send
/// one message carrying all their subscription identifiers and the highest QoS (MQTT-3.3.4-2,
/// MQTT-3.3.4-4). Each shared match is its own group: a shared subscription delivers its own
/// copy even to a client that also has a non-shared match.
pub fn group_by_key<'m, 'a, K: Ord, O>(
    matches: &'m mut [Match<'a, K, O>],
) -> impl Iterator<Item = &'m [Match<'a, K, O>]> {
    group_matches(matches, true)
}

/// [`group_by_key`] for matches collected by
/// [`SubscriptionTrie::collect_matches`] (or its variants), given what it returned: when
/// they do not `overlap`, no key is there twice, and each match is its own group, in the
/// order found, without sorting.
pub fn group_matches<'m, 'a, K: Ord, O>(
    matches: &'m mut [Match<'a, K, O>],
    overlap: bool,
) -> impl Iterator<Item = &'m [Match<'a, K, O>]> {
    if overlap {
        matches.sort_unstable_by(|a, b| {
            a.key
                .cmp(b.key)
                .then(a.share_group.is_some().cmp(&b.share_group.is_some()))
        });
    }
    matches.chunk_by(move |a, b| {
        overlap && a.key == b.key && a.share_group.is_none() && b.share_group.is_none()
    })
}

/// A subscription index: topic filters, each with subscribers `K` and their options `O`,
/// matched against topic names.
///
/// - `K` is the subscriber key (a session id, a client identifier, a channel index).
/// - `O` are the per-subscription options the caller needs at delivery time (QoS, no-local,
///   retain-as-published, retain handling, subscription identifier, ...); the trie only stores
///   them.
/// - `S` picks the member of a shared group that gets each message ([`RoundRobin`] by default).
///
/// One key has at most one subscription per filter: inserting again replaces the options
/// (MQTT-3.8.4-3). A key may be in several shared groups and have non-shared subscriptions too.
///
/// Cost: matching a topic of `d` levels does at most one level lookup and, per live branch, one
/// edge lookup per level, then one call per match; it does not depend on the number of
/// subscriptions and allocates only when more than 16 branches are alive at once. Levels are
/// interned: each distinct level string is stored once for the whole trie.
///
/// The trie is not synchronised. A broker keeps it behind a lock: [`matches`](Self::matches)
/// takes `&self` (shared groups advance an atomic cursor), changes take `&mut self`.
pub struct SubscriptionTrie<K, O, S = RoundRobin> {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    sets: Vec<Subscribers<K, O>>,
    free_sets: Vec<u32>,
    edges: Edges,
    levels: Interner,
    keys: HashMap<K, Locs>,
    len: usize,
    /// Shared group memberships, of `len`.
    shared_len: usize,
    next_group: u32,
    seeds: RandomState,
    strategy: S,
}

impl<K: Eq + Hash + Clone, O, S: ShareStrategy + Default> Default for SubscriptionTrie<K, O, S> {
    fn default() -> Self {
        Self::with_strategy(S::default())
    }
}

impl<K, O, S> fmt::Debug for SubscriptionTrie<K, O, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("nodes", &(self.nodes.len() - self.free_nodes.len()))
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, O> SubscriptionTrie<K, O> {
    /// An empty trie whose shared groups deliver round robin.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K: Eq + Hash + Clone, O, S: ShareStrategy> SubscriptionTrie<K, O, S> {
    /// An empty trie whose shared groups pick members with `strategy`.
    pub fn with_strategy(strategy: S) -> Self {
        Self {
            nodes: vec![Node::VACANT],
            free_nodes: Vec::new(),
            sets: Vec::new(),
            free_sets: Vec::new(),
            edges: Edges::default(),
            levels: Interner::default(),
            keys: HashMap::default(),
            len: 0,
            shared_len: 0,
            next_group: 0,
            seeds: RandomState::new(),
            strategy,
        }
    }

    /// The number of subscriptions (non-shared ones plus shared group memberships).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The number of shared group memberships (`$share/{group}/{filter}`
    /// subscriptions), of [`len`](Self::len).
    #[must_use]
    pub fn shared_len(&self) -> usize {
        self.shared_len
    }

    /// Whether the trie holds no subscription.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shared-group strategy.
    pub fn strategy(&self) -> &S {
        &self.strategy
    }

    /// Subscribes `key` to `filter`, shared or not; returns the options it replaced.
    pub fn subscribe(&mut self, filter: &SubscriptionFilter, key: K, options: O) -> Option<O> {
        match filter {
            SubscriptionFilter::Plain(f) => self.insert(f, key, options),
            SubscriptionFilter::Shared(s) => self.insert_shared(s, key, options),
        }
    }

    /// Removes the subscription of `key` to `filter`, shared or not; returns its options.
    pub fn unsubscribe(&mut self, filter: &SubscriptionFilter, key: &K) -> Option<O> {
        match filter {
            SubscriptionFilter::Plain(f) => self.remove(f, key),
            SubscriptionFilter::Shared(s) => self.remove_shared(s, key),
        }
    }

    /// Adds (or replaces) the non-shared subscription of `key` to `filter`; returns the options
    /// it replaced.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, options: O) -> Option<O> {
        let node = self.node_for(filter);
        let set = self.set_for(node);
        let old = self.sets.get_mut(set)?.direct.insert(key.clone(), options);
        if old.is_none() {
            self.len += 1;
            self.index_add(key, Loc { node, group: NONE });
        }
        old
    }

    /// Adds `key` to the shared group of `filter` (or replaces its options there); returns the
    /// options it replaced. The group is created by its first member.
    pub fn insert_shared(&mut self, filter: &SharedFilter, key: K, options: O) -> Option<O> {
        let node = self.node_for(filter.filter());
        let set = self.set_for(node);
        let subs = self.sets.get_mut(set)?;
        let groups = subs.groups.get_or_insert_with(Box::default);
        let group = match groups.iter().position(|g| &*g.name == filter.group()) {
            Some(pos) => groups.get_mut(pos)?,
            None => {
                // Ids only tell apart the groups of one node. Once the counter wrapped (after
                // 2^32 groups made), an id still used here, or NONE, is skipped.
                let mut next_id = self.next_group;
                while next_id == NONE || groups.iter().any(|g| g.id == next_id) {
                    next_id = next_id.wrapping_add(1);
                }
                self.next_group = next_id.wrapping_add(1);
                let seed = self.seeds.hash_one(next_id);
                groups.push(Group {
                    id: next_id,
                    name: filter.group().into(),
                    members: Vec::new(),
                    cursor: AtomicU64::new(seed),
                    index: None,
                });
                groups.last_mut()?
            }
        };
        let loc = Loc {
            node,
            group: group.id,
        };
        // Membership is answered by the key's own index (a few entries), so that joining a
        // large group does not scan its members.
        let member = match self.keys.get(&key) {
            Some(Locs::One(l)) => *l == loc,
            Some(Locs::Many(v)) => v.contains(&loc),
            Some(Locs::Set(set)) => set.contains(&loc),
            None => false,
        };
        if member
            && let Some(pos) = group.position(&key)
            && let Some((_, o)) = group.members.get_mut(pos)
        {
            return Some(mem::replace(o, options));
        }
        group.push(key.clone(), options);
        self.len += 1;
        self.shared_len += 1;
        self.index_add(key, loc);
        None
    }

    /// Removes the non-shared subscription of `key` to `filter`; returns its options.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<O> {
        let node = self.find_node(filter)?;
        let set = self.node(node).subs;
        let old = self.sets.get_mut(set as usize)?.direct.remove(key)?;
        self.len -= 1;
        self.index_remove(key, Loc { node, group: NONE });
        self.cleanup(node);
        Some(old)
    }

    /// Removes `key` from the shared group of `filter`; returns its options. The group ends
    /// with its last member.
    pub fn remove_shared(&mut self, filter: &SharedFilter, key: &K) -> Option<O> {
        let node = self.find_node(filter.filter())?;
        let set = self.node(node).subs;
        let subs = self.sets.get_mut(set as usize)?;
        let groups = subs.groups.as_mut()?;
        let gpos = groups.iter().position(|g| &*g.name == filter.group())?;
        let (gid, old) = {
            let group = groups.get_mut(gpos)?;
            let pos = group.position(key)?;
            (group.id, group.remove_at(pos)?.1)
        };
        self.finish_group_removal(set, gpos);
        self.len -= 1;
        self.shared_len -= 1;
        self.index_remove(key, Loc { node, group: gid });
        self.cleanup(node);
        Some(old)
    }

    /// Removes every subscription of `key` (a session ended); returns how many there were.
    ///
    /// Costs one step per subscription of `key`, not per subscription in the trie.
    pub fn remove_key(&mut self, key: &K) -> usize {
        let Some(locs) = self.keys.remove(key) else {
            return 0;
        };
        let locs = match locs {
            Locs::One(l) => SmallVec::<[Loc; 4]>::from_elem(l, 1),
            Locs::Many(v) => SmallVec::from_vec(*v),
            Locs::Set(set) => set.into_iter().collect(),
        };
        let (mut removed, mut shared) = (0, 0);
        for loc in locs {
            let set = self.node(loc.node).subs;
            let Some(subs) = self.sets.get_mut(set as usize) else {
                continue;
            };
            if loc.group == NONE {
                if subs.direct.remove(key).is_some() {
                    removed += 1;
                }
            } else {
                let gpos = subs.groups.as_mut().and_then(|groups| {
                    let gpos = groups.iter().position(|g| g.id == loc.group)?;
                    let group = groups.get_mut(gpos)?;
                    let pos = group.position(key)?;
                    group.remove_at(pos)?;
                    removed += 1;
                    shared += 1;
                    Some(gpos)
                });
                if let Some(gpos) = gpos {
                    self.finish_group_removal(set, gpos);
                }
            }
            self.cleanup(loc.node);
        }
        self.len -= removed;
        self.shared_len -= shared;
        removed
    }

    /// One member of the shared group `filter` (`$share/{group}/{filter}`), chosen by the
    /// strategy as [`matches`](Self::matches) would choose it for a message; `None` when the
    /// group has no member. For a router that decided elsewhere that this group gets a message
    /// (a cluster delivering once per group across nodes).
    #[must_use]
    pub fn pick_shared(&self, filter: &SharedFilter, publisher: Option<&[u8]>) -> Option<(&K, &O)> {
        self.pick_shared_available(filter, publisher, |_| true)
    }

    /// [`pick_shared`](Self::pick_shared), preferring a member for which `available` holds
    /// (see [`matches_available`](Self::matches_available)).
    #[must_use]
    pub fn pick_shared_available(
        &self,
        filter: &SharedFilter,
        publisher: Option<&[u8]>,
        available: impl Fn(&K) -> bool,
    ) -> Option<(&K, &O)> {
        self.pick_shared_ranked(filter, publisher, ranked(available))
    }

    /// [`pick_shared`](Self::pick_shared), preferring the member `rank` ranks highest (see
    /// [`matches_ranked`](Self::matches_ranked)).
    #[must_use]
    pub fn pick_shared_ranked(
        &self,
        filter: &SharedFilter,
        publisher: Option<&[u8]>,
        rank: impl Fn(&K) -> u8,
    ) -> Option<(&K, &O)> {
        let node = self.find_node(filter.filter())?;
        let subs = self.sets.get(self.node(node).subs as usize)?;
        let group = subs
            .groups
            .as_ref()?
            .iter()
            .find(|g| &*g.name == filter.group())?;
        self.pick(group, publisher, &rank).map(|(k, o)| (k, o))
    }

    /// The member of `group` that gets the next message: the strategy's choice, unless one of
    /// the next members (in order, up to [`MAX_PROBES`] of them) ranks higher; then the first
    /// that ranks highest. A member ranked `u8::MAX` ends the search.
    fn pick<'a>(
        &self,
        group: &'a Group<K, O>,
        publisher: Option<&[u8]>,
        rank: &impl Fn(&K) -> u8,
    ) -> Option<&'a (K, O)> {
        let members = group.members.len();
        if members == 0 {
            return None;
        }
        let pick = self.strategy.choose(&group.cursor, members, publisher) % members;
        let mut best = group.members.get(pick)?;
        let mut best_rank = rank(&best.0);
        for step in 1..members.min(MAX_PROBES) {
            if best_rank == u8::MAX {
                break;
            }
            if let Some(member) = group.members.get((pick + step) % members) {
                let r = rank(&member.0);
                if r > best_rank {
                    (best, best_rank) = (member, r);
                }
            }
        }
        Some(best)
    }

    /// The options of the subscription of `key` to `filter`, shared or not.
    #[must_use]
    pub fn get(&self, filter: &SubscriptionFilter, key: &K) -> Option<&O> {
        let node = self.find_node(filter.filter())?;
        let subs = self.sets.get(self.node(node).subs as usize)?;
        match filter.group() {
            None => subs.direct.get(key),
            Some(name) => {
                // The group's index, not a scan: a broker asks this for every filter of a
                // session each time it stores the session.
                let group = subs.group(name)?;
                group.members.get(group.position(key)?).map(|(_, o)| o)
            }
        }
    }

    /// Calls `f` once for each subscription matching `topic`: every non-shared subscription
    /// whose filter matches, and one chosen member of every matching shared group.
    ///
    /// A key with several matching filters is visited once per filter; collect the matches and
    /// use [`group_by_key`] to deliver once per key. Filters starting with `+` or `#` do not
    /// match names starting with `$` (MQTT-4.7.2-1).
    pub fn matches<'a>(&'a self, topic: &TopicName, f: impl FnMut(Match<'a, K, O>)) {
        self.matches_from(topic, None, f);
    }

    /// [`matches`](Self::matches), telling the shared-group strategy who published (e.g. the
    /// client identifier), for [`Sticky`](crate::Sticky) delivery.
    pub fn matches_from<'a>(
        &'a self,
        topic: &TopicName,
        publisher: Option<&[u8]>,
        f: impl FnMut(Match<'a, K, O>),
    ) {
        self.matches_available(topic, publisher, |_| true, f);
    }

    /// [`matches_from`](Self::matches_from), where a shared group whose chosen member is
    /// not `available` (its client is offline, say) gives the message to the next member
    /// that is, if one of the next few is (MQTT 5.0 section 4.8.2: a message should not wait
    /// for a disconnected member while others are there). `available` is asked about the
    /// chosen members only.
    pub fn matches_available<'a>(
        &'a self,
        topic: &TopicName,
        publisher: Option<&[u8]>,
        available: impl Fn(&K) -> bool,
        f: impl FnMut(Match<'a, K, O>),
    ) {
        self.matches_ranked(topic, publisher, ranked(available), f);
    }

    /// [`matches_from`](Self::matches_from), where a shared group gives the message to the
    /// member `rank` ranks highest among its strategy's choice and the next few members (in
    /// order), the choice on a tie; `u8::MAX` is taken at once. For a broker: a connected
    /// member with room in its queue over a connected one whose queue is full, over one whose
    /// client is offline. `rank` is asked about those members only.
    ///
    /// ```
    /// use fulmar_topic::{SubscriptionFilter, SubscriptionTrie, TopicName};
    ///
    /// let mut trie = SubscriptionTrie::<&str, ()>::new();
    /// let shared: SubscriptionFilter = "$share/workers/jobs".parse().unwrap();
    /// for member in ["offline", "busy", "idle"] {
    ///     trie.subscribe(&shared, member, ());
    /// }
    /// let rank = |m: &&str| match *m { "idle" => u8::MAX, "busy" => 1, _ => 0 };
    /// let topic: TopicName = "jobs".parse().unwrap();
    /// for _ in 0..3 {
    ///     let mut got = Vec::new();
    ///     trie.matches_ranked(&topic, None, rank, |m| got.push(*m.key));
    ///     assert_eq!(got, ["idle"]);
    /// }
    /// ```
    pub fn matches_ranked<'a>(
        &'a self,
        topic: &TopicName,
        publisher: Option<&[u8]>,
        rank: impl Fn(&K) -> u8,
        f: impl FnMut(Match<'a, K, O>),
    ) {
        self.walk(topic, publisher, Some(&rank), f);
    }

    /// Collects the non-shared subscriptions matching `topic` into `out` (cleared first),
    /// without choosing a member of any shared group (which would move its strategy on),
    /// for a router that delivers to shared groups elsewhere.
    ///
    /// Returns whether they may overlap, as [`collect_matches`](Self::collect_matches) does.
    pub fn collect_plain_matches<'a>(
        &'a self,
        topic: &TopicName,
        out: &mut Vec<Match<'a, K, O>>,
    ) -> bool {
        out.clear();
        self.walk(topic, None, None::<&fn(&K) -> u8>, |m| out.push(m))
    }

    /// The matches of `topic`; shared groups only with `rank`. Returns whether
    /// non-shared subscriptions of more than one filter matched (only then can
    /// a key be visited twice).
    fn walk<'a, A: Fn(&K) -> u8>(
        &'a self,
        topic: &TopicName,
        publisher: Option<&[u8]>,
        available: Option<&A>,
        mut f: impl FnMut(Match<'a, K, O>),
    ) -> bool {
        // Filters whose non-shared subscriptions matched.
        let mut filters = 0u32;
        let dollar = topic.is_dollar();
        // Two frontiers used in turn (swapping them would copy 2 x 72 bytes per level).
        let mut even: SmallVec<[u32; 16]> = SmallVec::new();
        let mut odd: SmallVec<[u32; 16]> = SmallVec::new();
        even.push(ROOT);
        let mut flip = false;
        let mut first = true;
        for level in levels(topic.as_str()) {
            let wildcards = !(first && dollar);
            first = false;
            let id = self.levels.get(level);
            let (frontier, next) = if flip {
                (&odd, &mut even)
            } else {
                (&even, &mut odd)
            };
            next.clear();
            for &n in frontier {
                let node = self.node(n);
                if wildcards {
                    if node.hash != NONE {
                        filters += u32::from(self.emit(node.hash, publisher, available, &mut f));
                    }
                    if node.plus != NONE {
                        next.push(node.plus);
                    }
                }
                if node.children > 0
                    && let Some(child) = id.and_then(|id| self.edges.get(n, id))
                {
                    next.push(child);
                }
            }
            if next.is_empty() {
                return filters > 1;
            }
            flip = !flip;
        }
        let frontier = if flip { &odd } else { &even };
        for &n in frontier {
            filters += u32::from(self.emit(n, publisher, available, &mut f));
            let hash = self.node(n).hash;
            if hash != NONE {
                filters += u32::from(self.emit(hash, publisher, available, &mut f));
            }
        }
        filters > 1
    }

    /// Collects [`matches`](Self::matches) into `out` (cleared first), for [`group_by_key`].
    ///
    /// Returns whether the matches may overlap: true when non-shared subscriptions of more
    /// than one filter matched, so that a key may be in `out` more than once. Without overlap
    /// [`group_matches`] need not sort them.
    ///
    /// ```
    /// use fulmar_topic::{SubscriptionFilter, SubscriptionTrie, TopicName, group_matches};
    ///
    /// let mut trie = SubscriptionTrie::<&str, u8>::new();
    /// let filter = |f: &str| f.parse::<SubscriptionFilter>().unwrap();
    /// trie.subscribe(&filter("sensors/+"), "alice", 1);
    /// trie.subscribe(&filter("sensors/+"), "bob", 1);
    /// let topic: TopicName = "sensors/t1".parse().unwrap();
    /// {
    ///     let mut found = Vec::new();
    ///     // One filter matched: each key is there once.
    ///     assert!(!trie.collect_matches(&topic, &mut found));
    ///     assert_eq!(group_matches(&mut found, false).count(), 2);
    /// }
    ///
    /// // Two filters of alice's match: one delivery, with both subscriptions.
    /// trie.subscribe(&filter("sensors/#"), "alice", 2);
    /// let mut found = Vec::new();
    /// let overlapping = trie.collect_matches(&topic, &mut found);
    /// assert!(overlapping);
    /// let groups: Vec<usize> = group_matches(&mut found, overlapping).map(<[_]>::len).collect();
    /// assert_eq!(groups, [2, 1]);
    /// ```
    pub fn collect_matches<'a>(
        &'a self,
        topic: &TopicName,
        out: &mut Vec<Match<'a, K, O>>,
    ) -> bool {
        self.collect_matches_available(topic, None, |_| true, out)
    }

    /// Collects [`matches_available`](Self::matches_available) into `out` (cleared first).
    /// Returns whether they may overlap, as [`collect_matches`](Self::collect_matches) does.
    pub fn collect_matches_available<'a>(
        &'a self,
        topic: &TopicName,
        publisher: Option<&[u8]>,
        available: impl Fn(&K) -> bool,
        out: &mut Vec<Match<'a, K, O>>,
    ) -> bool {
        self.collect_matches_ranked(topic, publisher, ranked(available), out)
    }

    /// Collects [`matches_ranked`](Self::matches_ranked) into `out` (cleared first).
    /// Returns whether they may overlap, as [`collect_matches`](Self::collect_matches) does.
    pub fn collect_matches_ranked<'a>(
        &'a self,
        topic: &TopicName,
        publisher: Option<&[u8]>,
        rank: impl Fn(&K) -> u8,
        out: &mut Vec<Match<'a, K, O>>,
    ) -> bool {
        out.clear();
        self.walk(topic, publisher, Some(&rank), |m| out.push(m))
    }

    /// Visits the subscriptions of node `n`; true when it has non-shared ones.
    fn emit<'a, A: Fn(&K) -> u8>(
        &'a self,
        n: u32,
        publisher: Option<&[u8]>,
        available: Option<&A>,
        f: &mut impl FnMut(Match<'a, K, O>),
    ) -> bool {
        let Some(subs) = self.sets.get(self.node(n).subs as usize) else {
            return false;
        };
        subs.direct.for_each(&mut |key, options| {
            f(Match {
                key,
                options,
                share_group: None,
            });
        });
        let direct = !subs.direct.is_empty();
        let Some(available) = available else {
            return direct;
        };
        for group in subs.groups.iter().flat_map(|g| g.iter()) {
            if let Some((key, options)) = self.pick(group, publisher, available) {
                f(Match {
                    key,
                    options,
                    share_group: Some(&group.name),
                });
            }
        }
        direct
    }

    fn node(&self, n: u32) -> Node {
        self.nodes.get(n as usize).copied().unwrap_or(Node::VACANT)
    }

    fn node_mut(&mut self, n: u32) -> Option<&mut Node> {
        self.nodes.get_mut(n as usize)
    }

    /// The node of `filter`, if it exists.
    fn find_node(&self, filter: &TopicFilter) -> Option<u32> {
        let mut n = ROOT;
        for level in levels(filter.as_str()) {
            let node = self.node(n);
            n = match level {
                b"+" => node.plus,
                b"#" => node.hash,
                lit => self.edges.get(n, self.levels.get(lit)?)?,
            };
            if n == NONE {
                return None;
            }
        }
        Some(n)
    }

    /// The node of `filter`, created if needed.
    fn node_for(&mut self, filter: &TopicFilter) -> u32 {
        let mut n = ROOT;
        for level in levels(filter.as_str()) {
            let node = self.node(n);
            n = match level {
                b"+" if node.plus != NONE => node.plus,
                b"+" => {
                    let child = self.alloc_node(n, PLUS);
                    if let Some(p) = self.node_mut(n) {
                        p.plus = child;
                    }
                    child
                }
                b"#" if node.hash != NONE => node.hash,
                b"#" => {
                    let child = self.alloc_node(n, HASH);
                    if let Some(p) = self.node_mut(n) {
                        p.hash = child;
                    }
                    child
                }
                lit => match self.levels.get(lit).and_then(|id| self.edges.get(n, id)) {
                    Some(child) => child,
                    None => {
                        let id = self.levels.acquire(lit);
                        let child = self.alloc_node(n, id);
                        self.edges.insert(n, id, child);
                        if let Some(p) = self.node_mut(n) {
                            p.children += 1;
                        }
                        child
                    }
                },
            };
        }
        n
    }

    fn alloc_node(&mut self, parent: u32, level: u32) -> u32 {
        let node = Node {
            parent,
            level,
            ..Node::VACANT
        };
        match self.free_nodes.pop() {
            Some(n) => {
                if let Some(slot) = self.node_mut(n) {
                    *slot = node;
                }
                n
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// The index in `sets` of the subscribers of node `n`, created if needed.
    fn set_for(&mut self, n: u32) -> usize {
        let subs = self.node(n).subs;
        if subs != NONE {
            return subs as usize;
        }
        let set = match self.free_sets.pop() {
            Some(s) => s,
            None => {
                self.sets.push(Subscribers::EMPTY);
                (self.sets.len() - 1) as u32
            }
        };
        if let Some(node) = self.node_mut(n) {
            node.subs = set;
        }
        set as usize
    }

    /// Drops group `gpos` of set `set` if it has no member left.
    fn finish_group_removal(&mut self, set: u32, gpos: usize) {
        let Some(subs) = self.sets.get_mut(set as usize) else {
            return;
        };
        let Some(groups) = subs.groups.as_mut() else {
            return;
        };
        if groups.get(gpos).is_some_and(|g| g.members.is_empty()) {
            groups.swap_remove(gpos);
        }
        if groups.is_empty() {
            subs.groups = None;
        }
    }

    /// Frees the subscribers of `n` if empty, then prunes `n` and its ancestors while unused.
    fn cleanup(&mut self, mut n: u32) {
        let set = self.node(n).subs;
        if set != NONE
            && self
                .sets
                .get(set as usize)
                .is_none_or(Subscribers::is_empty)
        {
            if let Some(s) = self.sets.get_mut(set as usize) {
                *s = Subscribers::EMPTY;
            }
            self.free_sets.push(set);
            if let Some(node) = self.node_mut(n) {
                node.subs = NONE;
            }
        }
        while n != ROOT {
            let node = self.node(n);
            if !node.is_unused() {
                return;
            }
            let parent = node.parent;
            match node.level {
                PLUS => {
                    if let Some(p) = self.node_mut(parent) {
                        p.plus = NONE;
                    }
                }
                HASH => {
                    if let Some(p) = self.node_mut(parent) {
                        p.hash = NONE;
                    }
                }
                level => {
                    self.edges.remove(parent, level);
                    self.levels.release(level);
                    if let Some(p) = self.node_mut(parent) {
                        p.children -= 1;
                    }
                }
            }
            if let Some(slot) = self.node_mut(n) {
                *slot = Node::VACANT;
            }
            self.free_nodes.push(n);
            n = parent;
        }
    }

    fn index_add(&mut self, key: K, loc: Loc) {
        match self.keys.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Locs::One(loc));
            }
            Entry::Occupied(mut o) => {
                let locs = o.get_mut();
                match locs {
                    Locs::One(first) => *locs = Locs::Many(Box::new(vec![*first, loc])),
                    Locs::Many(v) => {
                        v.push(loc);
                        if v.len() >= LOCS_HASHED_FROM {
                            *locs = Locs::Set(Box::new(v.drain(..).collect()));
                        }
                    }
                    Locs::Set(set) => {
                        set.insert(loc);
                    }
                }
            }
        }
    }

    fn index_remove(&mut self, key: &K, loc: Loc) {
        let Some(locs) = self.keys.get_mut(key) else {
            return;
        };
        match locs {
            Locs::One(l) if *l == loc => {
                self.keys.remove(key);
            }
            Locs::One(_) => {}
            Locs::Many(v) => {
                if let Some(pos) = v.iter().position(|l| *l == loc) {
                    v.swap_remove(pos);
                }
                if let [only] = v.as_slice() {
                    *locs = Locs::One(*only);
                }
            }
            Locs::Set(set) => {
                set.remove(&loc);
                if set.len() <= LOCS_LISTED_AT {
                    *locs = Locs::Many(Box::new(set.drain().collect()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn shared(s: &str) -> SharedFilter {
        match s.parse::<SubscriptionFilter>().unwrap() {
            SubscriptionFilter::Shared(s) => s,
            SubscriptionFilter::Plain(_) => unreachable!("{s} is not shared"),
        }
    }

    /// Group ids were a wrapping `u32`, and `remove_key` finds a key's group by id. After 2^32
    /// groups made (a SUBSCRIBE/UNSUBSCRIBE of a new `$share/gN/x` each), a new group could get
    /// the id of a long-lived group of the same filter; `remove_key` then looked in the wrong
    /// group and left the key a member of its own (found by a review). The wrap is simulated.
    // v5:MQTT-4.8.2-2
    #[test]
    fn group_ids_stay_unique_per_filter_after_the_counter_wraps() {
        let mut t = SubscriptionTrie::<u32, u32>::new();
        t.insert_shared(&shared("$share/a/x"), 1, 0);
        t.next_group = 0; // as after 2^32 more groups were made and ended
        t.insert_shared(&shared("$share/b/x"), 2, 0);
        t.next_group = NONE; // NONE marks a plain subscription: never a group's id
        t.insert_shared(&shared("$share/c/x"), 3, 0);
        assert_eq!(t.remove_key(&2), 1);
        assert_eq!(t.remove_key(&3), 1);
        assert_eq!(t.len(), 1);
        let mut found = Vec::new();
        t.matches(&"x".parse().unwrap(), |m| {
            found.push((*m.key, m.share_group.map(str::to_owned)));
        });
        assert_eq!(found, [(1, Some("a".to_owned()))]);
    }

    /// A key with many subscriptions keeps them in a hash set (leaving one was a scan of the
    /// key's list): the index goes from a vector to a set and back as the key subscribes and
    /// unsubscribes, and every answer stays that of the trie.
    // MQTT-3.8.4-3 MQTT-3.10.4-1
    #[test]
    fn a_key_with_many_subscriptions_is_indexed_by_a_set_and_back() {
        let mut t = SubscriptionTrie::<u32, u32>::new();
        let plain = |i: u32| format!("k/{i}").parse::<TopicFilter>().unwrap();
        let group = |i: u32| shared(&format!("$share/g/k/{i}"));
        let n = 3 * LOCS_HASHED_FROM as u32;
        for i in 0..n {
            assert_eq!(t.insert(&plain(i), 7, i), None);
            assert_eq!(t.insert_shared(&group(i), 7, i), None);
            // Another key on the same filters.
            t.insert(&plain(i), 8, 0);
        }
        assert!(matches!(t.keys.get(&7), Some(Locs::Set(_))));
        // Subscribing again replaces (membership answered by the set).
        assert_eq!(t.insert(&plain(0), 7, 100), Some(0));
        assert_eq!(t.insert_shared(&group(0), 7, 100), Some(0));
        assert_eq!(t.len(), 3 * n as usize);
        // Leave all but two: back to a vector on the way down, the rest intact.
        for i in 2..n {
            assert_eq!(t.remove(&plain(i), &7), Some(i));
            assert_eq!(t.remove_shared(&group(i), &7), Some(i));
            assert_eq!(t.remove(&plain(i), &7), None);
        }
        assert!(matches!(t.keys.get(&7), Some(Locs::Many(_))));
        assert_eq!(t.len(), 4 + n as usize);
        assert_eq!(t.get(&SubscriptionFilter::Plain(plain(1)), &7), Some(&1));
        assert_eq!(t.get(&SubscriptionFilter::Shared(group(0)), &7), Some(&100));
        // Up again past the threshold, then every subscription at once.
        for i in 2..n {
            t.insert(&plain(i), 7, i);
        }
        assert!(matches!(t.keys.get(&7), Some(Locs::Set(_))));
        assert_eq!(t.remove_key(&7), n as usize + 2);
        assert!(!t.keys.contains_key(&7));
        assert_eq!(t.len(), n as usize);
        let mut found = Vec::new();
        t.matches(&"k/5".parse().unwrap(), |m| found.push(*m.key));
        assert_eq!(found, [8]);
    }
}
