//! Topic aliases (MQTT 5.0 section 3.3.2.3.4): an inbound resolver and an
//! outbound allocator. Both are per connection: create new ones (or call
//! `clear`) when a connection starts [MQTT-3.3.2-7].

use std::collections::HashMap;

use core::num::NonZeroU16;

use crate::publish::Publish;
use crate::reason::ReasonCode;
use crate::string::MqttString;

/// Why an inbound Topic Alias cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AliasError {
    /// The alias is above the Topic Alias Maximum this side announced.
    #[error("[MQTT-3.3.2-10] topic alias {alias} exceeds the maximum {maximum}")]
    AboveMaximum {
        /// The alias received.
        alias: u16,
        /// The maximum announced.
        maximum: u16,
    },
    /// An empty topic name with an alias that has no mapping yet.
    #[error("topic alias {0} is not mapped to a topic name")]
    Unknown(u16),
    /// An empty topic name without a topic alias.
    #[error("empty topic name without a topic alias")]
    EmptyTopic,
}

impl AliasError {
    /// The reason code to send in the DISCONNECT: 0x94 Topic Alias invalid for
    /// an alias out of range, 0x82 Protocol Error otherwise.
    #[must_use]
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::AboveMaximum { .. } => ReasonCode::TopicAliasInvalid,
            Self::Unknown(_) | Self::EmptyTopic => ReasonCode::ProtocolError,
        }
    }
}

/// Inbound topic aliases: maps the aliases a peer sends to topic names.
///
/// Memory is bounded by the maximum: at most `maximum` topic names are kept.
///
/// ```
/// use core::num::NonZeroU16;
/// use bytes::Bytes;
/// use fulmar_codec::{Publish, TopicAliasResolver};
///
/// let mut resolver = TopicAliasResolver::new(10);
/// let mut first = Publish::new("sensors/temp".into(), Bytes::new());
/// first.properties.topic_alias = NonZeroU16::new(1);
/// resolver.resolve(&mut first).unwrap();
///
/// let mut next = Publish::new(Default::default(), Bytes::new());
/// next.properties.topic_alias = NonZeroU16::new(1);
/// resolver.resolve(&mut next).unwrap();
/// assert_eq!(next.topic, "sensors/temp");
/// assert_eq!(next.properties.topic_alias, None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TopicAliasResolver {
    maximum: u16,
    topics: Vec<Option<MqttString>>,
}

impl TopicAliasResolver {
    /// A resolver for the Topic Alias Maximum this side announced (in CONNECT
    /// for a client, in CONNACK for a server). 0 means aliases are refused.
    #[must_use]
    pub fn new(maximum: u16) -> Self {
        Self {
            maximum,
            topics: Vec::new(),
        }
    }

    /// The announced maximum.
    #[must_use]
    pub fn maximum(&self) -> u16 {
        self.maximum
    }

    /// Forgets every mapping (a new network connection).
    pub fn clear(&mut self) {
        self.topics.clear();
    }

    /// Resolves the Topic Alias of an inbound PUBLISH.
    ///
    /// With a topic name and an alias, records the mapping; with an empty topic
    /// name and an alias, fills in the mapped topic name. Afterwards
    /// `publish.topic` is the full topic name and `properties.topic_alias` is
    /// `None`, so the message can be forwarded as is.
    ///
    /// # Errors
    /// [`AliasError`]; the connection must then be closed with
    /// [`AliasError::reason_code`].
    pub fn resolve(&mut self, publish: &mut Publish) -> Result<(), AliasError> {
        let Some(alias) = publish.properties.topic_alias else {
            return if publish.topic.is_empty() {
                Err(AliasError::EmptyTopic)
            } else {
                Ok(())
            };
        };
        let a = alias.get();
        if a > self.maximum {
            return Err(AliasError::AboveMaximum {
                alias: a,
                maximum: self.maximum,
            });
        }
        let index = usize::from(a - 1);
        if publish.topic.is_empty() {
            let topic = self
                .topics
                .get(index)
                .and_then(Option::as_ref)
                .ok_or(AliasError::Unknown(a))?;
            publish.topic = topic.clone();
        } else {
            if self.topics.len() <= index {
                self.topics.resize(index + 1, None);
            }
            if let Some(slot) = self.topics.get_mut(index) {
                // A copy: the decoded name is a slice of the packet it came
                // in, which would stay in memory, payload and all, for as
                // long as the alias is mapped.
                *slot = Some(own_copy(&publish.topic));
            }
        }
        publish.properties.topic_alias = None;
        Ok(())
    }
}

const NIL: u16 = u16::MAX;

/// What [`TopicAliasAllocator::new`] lets the topic names it keeps take: 256
/// KiB, counting [`ALIAS_ENTRY_COST`] bytes per alias besides the name.
pub const DEFAULT_ALIAS_BUDGET: usize = 256 * 1024;

/// The bytes an outbound alias is counted for besides its topic name: its
/// slot and its entry in the lookup table.
pub const ALIAS_ENTRY_COST: usize = 64;

/// A topic name that owns its bytes (a zero-copy name shares the buffer of the
/// whole packet it was decoded from).
fn own_copy(topic: &MqttString) -> MqttString {
    MqttString::try_new(topic.as_str()).unwrap_or_else(|_| topic.clone())
}

#[derive(Clone, Debug)]
struct Slot {
    topic: MqttString,
    prev: u16,
    next: u16,
}

/// Outbound topic aliases: chooses an alias for each topic, bounded by the
/// peer's Topic Alias Maximum, replacing the least recently used one when all
/// are taken.
///
/// A topic gets an alias: the first PUBLISH to a topic carries the topic
/// name and the alias (establishing the mapping), later ones carry the alias
/// and an empty topic name. A hit costs a hash lookup and no allocation.
///
/// The peer chooses the maximum (up to 65 535), so the memory the names take
/// is bounded separately: by [`DEFAULT_ALIAS_BUDGET`], or the budget given to
/// [`with_budget`](Self::with_budget). A topic that fits neither a free slot
/// nor the least recently used one within the budget is sent with its name
/// and no alias. The allocator keeps its own copy of each name.
///
/// Apply it to the copy of the PUBLISH that goes on the wire, in the order
/// packets are sent ([`cancel`](Self::cancel) one that is not sent after
/// all); keep the original (full topic) for retransmission,
/// which after a reconnect uses a fresh allocator.
///
/// ```
/// use bytes::Bytes;
/// use fulmar_codec::{Publish, TopicAliasAllocator};
///
/// let mut aliases = TopicAliasAllocator::new(2);
/// let mut p = Publish::new("a/b".into(), Bytes::new());
/// aliases.apply(&mut p);
/// assert_eq!(p.topic, "a/b"); // establishes alias 1
/// let mut p = Publish::new("a/b".into(), Bytes::new());
/// aliases.apply(&mut p);
/// assert!(p.topic.is_empty());
/// assert_eq!(p.properties.topic_alias.map(|a| a.get()), Some(1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct TopicAliasAllocator {
    maximum: u16,
    /// Bytes the names may take, [`ALIAS_ENTRY_COST`] each included.
    budget: usize,
    /// Bytes they take.
    bytes: usize,
    by_topic: HashMap<MqttString, u16>,
    /// Slot `i` holds alias `i + 1`.
    slots: Vec<Slot>,
    /// Most recently used slot.
    head: u16,
    /// Least recently used slot.
    tail: u16,
}

impl TopicAliasAllocator {
    /// An allocator for the Topic Alias Maximum the peer announced (absent
    /// means 0: no aliases are sent [MQTT-3.1.2-27] [MQTT-3.2.2-18]).
    #[must_use]
    pub fn new(maximum: u16) -> Self {
        Self::with_budget(maximum, DEFAULT_ALIAS_BUDGET)
    }

    /// An allocator whose topic names take at most `budget` bytes, counting
    /// [`ALIAS_ENTRY_COST`] per alias besides its name.
    #[must_use]
    pub fn with_budget(maximum: u16, budget: usize) -> Self {
        // u16::MAX is the list terminator, so at most 65 534 aliases are used.
        Self {
            maximum: maximum.min(NIL - 1),
            budget,
            bytes: 0,
            by_topic: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// The peer's maximum.
    #[must_use]
    pub fn maximum(&self) -> u16 {
        self.maximum
    }

    /// Number of aliases in use.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no alias is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes the aliased topic names are counted for (see
    /// [`with_budget`](Self::with_budget)).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets every mapping (a new network connection).
    pub fn clear(&mut self) {
        self.bytes = 0;
        self.by_topic.clear();
        self.slots.clear();
        self.head = NIL;
        self.tail = NIL;
    }

    /// Sets the Topic Alias of an outbound PUBLISH, and empties its topic
    /// name when the alias is already established. Never sends an alias above
    /// the peer's maximum [MQTT-3.3.2-9] [MQTT-3.3.2-11], nor 0 [MQTT-3.3.2-8].
    /// A PUBLISH with an empty topic name is left alone.
    ///
    /// Returns the allocator's copy of the topic name the alias stands for,
    /// when an alias was set.
    pub fn apply(&mut self, publish: &mut Publish) -> Option<&MqttString> {
        if self.maximum == 0 {
            if !publish.topic.is_empty() {
                publish.properties.topic_alias = None;
            }
            return None;
        }
        if publish.topic.is_empty() {
            return None;
        }
        if let Some(&slot) = self.by_topic.get(publish.topic.as_str()) {
            self.touch(slot);
            publish.properties.topic_alias = NonZeroU16::new(slot + 1);
            publish.topic = MqttString::new();
            return self.slots.get(usize::from(slot)).map(|s| &s.topic);
        }
        let cost = ALIAS_ENTRY_COST + publish.topic.len();
        let fits_new = self.bytes.saturating_add(cost) <= self.budget;
        let replaced_cost = self
            .slots
            .get(usize::from(self.tail))
            .map_or(0, |s| ALIAS_ENTRY_COST + s.topic.len());
        let slot = if self.slots.len() < usize::from(self.maximum) && fits_new {
            let slot = u16::try_from(self.slots.len()).unwrap_or(NIL);
            self.slots.push(Slot {
                topic: own_copy(&publish.topic),
                prev: NIL,
                next: NIL,
            });
            self.push_front(slot);
            slot
        } else if !self.slots.is_empty()
            && (self.bytes - replaced_cost).saturating_add(cost) <= self.budget
        {
            let slot = self.tail;
            self.unlink(slot);
            if let Some(s) = self.slots.get_mut(usize::from(slot)) {
                let old = core::mem::replace(&mut s.topic, own_copy(&publish.topic));
                self.by_topic.remove(&old);
            }
            self.bytes -= replaced_cost;
            self.push_front(slot);
            slot
        } else {
            // Over the budget: sent with its name, no alias.
            publish.properties.topic_alias = None;
            return None;
        };
        self.bytes += cost;
        let stored = self.slots.get(usize::from(slot)).map(|s| &s.topic)?;
        self.by_topic.insert(stored.clone(), slot);
        publish.properties.topic_alias = NonZeroU16::new(slot + 1);
        stored.into()
    }

    /// Takes back what [`apply`](Self::apply) did to `publish` when that
    /// PUBLISH is not sent after all (too large for the peer, expired,
    /// dropped from a full queue): the mapping it was to establish is
    /// forgotten, so that the next PUBLISH to its topic carries the name
    /// again instead of an alias the peer never learnt (which it would
    /// refuse as a Protocol Error). Returns whether a
    /// mapping was forgotten: a PUBLISH that reused an established alias
    /// (an empty topic name) changed nothing the peer does not know.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use fulmar_codec::{Publish, TopicAliasAllocator};
    ///
    /// let mut aliases = TopicAliasAllocator::new(2);
    /// let mut dropped = Publish::new("a/b".into(), Bytes::new());
    /// aliases.apply(&mut dropped); // would establish alias 1, but is not sent
    /// assert!(aliases.cancel(&dropped));
    /// let mut p = Publish::new("a/b".into(), Bytes::new());
    /// aliases.apply(&mut p);
    /// assert_eq!(p.topic, "a/b"); // the name again, with an alias
    /// assert!(p.properties.topic_alias.is_some());
    /// ```
    pub fn cancel(&mut self, publish: &Publish) -> bool {
        let Some(alias) = publish.properties.topic_alias else {
            return false;
        };
        if publish.topic.is_empty() {
            return false;
        }
        let slot = alias.get() - 1;
        if self.by_topic.get(publish.topic.as_str()) != Some(&slot) {
            return false;
        }
        self.by_topic.remove(publish.topic.as_str());
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            // The slot stays (aliases are handed out in order), empty and
            // next to be reused.
            self.bytes -= s.topic.len();
            s.topic = MqttString::new();
        }
        self.unlink(slot);
        self.push_back(slot);
        true
    }

    fn push_back(&mut self, slot: u16) {
        let old_tail = self.tail;
        self.set_next(slot, NIL);
        self.set_prev(slot, old_tail);
        if old_tail == NIL {
            self.head = slot;
        } else {
            self.set_next(old_tail, slot);
        }
        self.tail = slot;
    }

    fn touch(&mut self, slot: u16) {
        if self.head != slot {
            self.unlink(slot);
            self.push_front(slot);
        }
    }

    fn set_prev(&mut self, slot: u16, prev: u16) {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            s.prev = prev;
        }
    }

    fn set_next(&mut self, slot: u16, next: u16) {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            s.next = next;
        }
    }

    fn unlink(&mut self, slot: u16) {
        let Some(s) = self.slots.get(usize::from(slot)) else {
            return;
        };
        let (prev, next) = (s.prev, s.next);
        if prev == NIL {
            self.head = next;
        } else {
            self.set_next(prev, next);
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.set_prev(next, prev);
        }
        self.set_prev(slot, NIL);
        self.set_next(slot, NIL);
    }

    fn push_front(&mut self, slot: u16) {
        let old_head = self.head;
        self.set_prev(slot, NIL);
        self.set_next(slot, old_head);
        if old_head == NIL {
            self.tail = slot;
        } else {
            self.set_prev(old_head, slot);
        }
        self.head = slot;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn publish(topic: &'static str, alias: u16) -> Publish {
        let mut p = Publish::new(MqttString::from(topic), Bytes::new());
        p.properties.topic_alias = NonZeroU16::new(alias);
        p
    }

    #[test]
    fn resolver_maps_and_fills_in() {
        // v5:MQTT-3.3.2-12 v5:MQTT-3.3.2-10: every alias 1..=maximum is accepted
        let mut r = TopicAliasResolver::new(3);
        for (alias, topic) in [(1, "a"), (3, "c")] {
            let mut p = publish(topic, alias);
            r.resolve(&mut p).unwrap();
            assert_eq!(p.properties.topic_alias, None);
        }
        let mut p = publish("", 3);
        r.resolve(&mut p).unwrap();
        assert_eq!(p.topic, "c");
        // A new topic for an existing alias replaces the mapping.
        r.resolve(&mut publish("c2", 3)).unwrap();
        let mut p = publish("", 3);
        r.resolve(&mut p).unwrap();
        assert_eq!(p.topic, "c2");
        // Plain publishes pass through.
        let mut p = publish("x", 0);
        r.resolve(&mut p).unwrap();
        assert_eq!(p.topic, "x");
    }

    #[test]
    fn resolver_errors() {
        let mut r = TopicAliasResolver::new(2);
        let err = r.resolve(&mut publish("a", 3)).unwrap_err();
        assert_eq!(
            err,
            AliasError::AboveMaximum {
                alias: 3,
                maximum: 2
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::TopicAliasInvalid);
        let err = r.resolve(&mut publish("", 2)).unwrap_err();
        assert_eq!(err, AliasError::Unknown(2));
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        assert_eq!(r.resolve(&mut publish("", 0)), Err(AliasError::EmptyTopic));
        // Maximum 0 refuses every alias.
        let mut r = TopicAliasResolver::new(0);
        assert!(matches!(
            r.resolve(&mut publish("a", 1)),
            Err(AliasError::AboveMaximum { .. })
        ));
    }

    #[test]
    fn resolver_clear_forgets() {
        // v5:MQTT-3.3.2-7
        let mut r = TopicAliasResolver::new(2);
        r.resolve(&mut publish("a", 1)).unwrap();
        r.clear();
        assert_eq!(r.resolve(&mut publish("", 1)), Err(AliasError::Unknown(1)));
    }

    fn apply(a: &mut TopicAliasAllocator, topic: &'static str) -> (String, Option<u16>) {
        let mut p = publish(topic, 0);
        a.apply(&mut p);
        (
            p.topic.to_string(),
            p.properties.topic_alias.map(NonZeroU16::get),
        )
    }

    #[test]
    fn cancel_forgets_what_an_unsent_publish_established() {
        let mut a = TopicAliasAllocator::new(2);
        let mut p = publish("x", 0);
        a.apply(&mut p);
        let before = a.bytes();
        assert!(a.cancel(&p));
        assert_eq!(a.bytes(), before - 1);
        assert!(!a.cancel(&p), "already forgotten");
        // The name again, with an alias.
        let (topic, alias) = apply(&mut a, "x");
        assert_eq!(topic, "x");
        assert!(alias.is_some());
        // A reuse (empty name) is known to the peer: nothing to take back.
        let mut reuse = publish("x", 0);
        a.apply(&mut reuse);
        assert!(reuse.topic.is_empty());
        assert!(!a.cancel(&reuse));
        assert_eq!(apply(&mut a, "x"), (String::new(), alias));
        // A PUBLISH without an alias, or one this allocator did not set.
        assert!(!a.cancel(&publish("x", 0)));
        assert!(!a.cancel(&publish("y", 2)));
        // A replacement that is not sent: neither the new name nor the one it
        // replaced keeps the alias.
        let mut one = TopicAliasAllocator::new(1);
        assert_eq!(apply(&mut one, "x"), ("x".into(), Some(1)));
        let mut y = publish("y", 0);
        one.apply(&mut y);
        assert!(one.cancel(&y));
        assert_eq!(apply(&mut one, "x"), ("x".into(), Some(1)));
        assert_eq!(apply(&mut one, "x"), ("".into(), Some(1)));
    }

    /// Random applies, some of the publishes cancelled instead of sent: the
    /// peer's resolver, which sees only what was sent, always knows the
    /// alias of an empty topic name and resolves every PUBLISH to its topic.
    // v5:MQTT-3.3.2-9 v5:MQTT-3.3.2-11
    #[test]
    fn a_peer_sees_only_aliases_it_was_sent() {
        const TOPICS: [&str; 6] = ["a", "b", "c/d", "e", "ff", "g/h/i"];
        let mut seed: u32 = 0x2545_f491;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for maximum in [1, 2, 3, 8] {
            let mut allocator = TopicAliasAllocator::with_budget(maximum, 64 * 4 + 8);
            let mut peer = TopicAliasResolver::new(maximum);
            for _ in 0..5000 {
                let topic = TOPICS[next() as usize % TOPICS.len()];
                let mut p = publish(topic, 0);
                allocator.apply(&mut p);
                if next() % 3 == 0 {
                    allocator.cancel(&p);
                    continue;
                }
                peer.resolve(&mut p).unwrap();
                assert_eq!(p.topic, topic);
            }
            assert!(allocator.len() <= usize::from(maximum));
            assert!(allocator.bytes() <= 64 * 4 + 8);
        }
    }

    #[test]
    fn allocator_establishes_then_reuses() {
        let mut a = TopicAliasAllocator::new(2);
        assert_eq!(apply(&mut a, "x"), ("x".into(), Some(1)));
        assert_eq!(apply(&mut a, "y"), ("y".into(), Some(2)));
        assert_eq!(apply(&mut a, "x"), ("".into(), Some(1)));
        assert_eq!(apply(&mut a, "y"), ("".into(), Some(2)));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn allocator_replaces_least_recently_used() {
        // v5:MQTT-3.3.2-9 v5:MQTT-3.3.2-11 v5:MQTT-3.2.2-17 v5:MQTT-3.1.2-26
        let mut a = TopicAliasAllocator::new(2);
        apply(&mut a, "x"); // 1
        apply(&mut a, "y"); // 2
        apply(&mut a, "x"); // x most recent; y is LRU
        assert_eq!(apply(&mut a, "z"), ("z".into(), Some(2)));
        assert_eq!(apply(&mut a, "y"), ("y".into(), Some(1)));
        assert_eq!(apply(&mut a, "z"), ("".into(), Some(2)));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn allocator_never_exceeds_maximum() {
        let mut a = TopicAliasAllocator::new(3);
        let topics: Vec<&'static str> = vec!["a", "b", "c", "d", "e", "f", "g"];
        let mut resolver = TopicAliasResolver::new(3);
        for i in 0..200 {
            let topic = topics[(i * 7 + i / 3) % topics.len()];
            let mut p = publish(topic, 0);
            a.apply(&mut p);
            let alias = p.properties.topic_alias.unwrap().get();
            assert!((1..=3).contains(&alias));
            // The peer's resolver always recovers the topic.
            resolver.resolve(&mut p).unwrap();
            assert_eq!(p.topic, topic);
        }
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn allocator_with_maximum_zero_sends_no_alias() {
        // v5:MQTT-3.1.2-27 v5:MQTT-3.2.2-18
        let mut a = TopicAliasAllocator::new(0);
        let mut p = publish("x", 5);
        a.apply(&mut p);
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(p.topic, "x");
        assert!(a.is_empty());
    }

    #[test]
    fn allocator_clear() {
        let mut a = TopicAliasAllocator::new(1);
        apply(&mut a, "x");
        a.clear();
        assert_eq!(a.bytes(), 0);
        assert_eq!(apply(&mut a, "x"), ("x".into(), Some(1)));
    }

    /// A PUBLISH decoded from `wire` (its topic a slice of it), and the
    /// address range of the buffer it was decoded from.
    fn decoded(topic: &str, payload: usize) -> (Publish, std::ops::Range<usize>) {
        let mut p = Publish::new(
            MqttString::try_new(topic).unwrap(),
            Bytes::from(vec![7; payload]),
        );
        p.properties.topic_alias = NonZeroU16::new(1);
        let mut wire = bytes::BytesMut::new();
        crate::Packet::from(p)
            .encode(crate::ProtocolVersion::V5, &mut wire)
            .unwrap();
        let start = wire.as_ptr() as usize;
        let range = start..start + wire.len();
        let Ok(Some(crate::Packet::Publish(p))) =
            crate::decode(&mut wire, crate::ProtocolVersion::V5, u32::MAX)
        else {
            panic!("not a PUBLISH")
        };
        assert!(range.contains(&(p.topic.as_str().as_ptr() as usize)));
        (p, range)
    }

    #[test]
    fn the_tables_keep_copies_not_the_packets_they_came_in() {
        // A decoded topic name is a slice of its packet: kept as it is, one
        // mapping would keep the whole packet (payload and all) in memory.
        let (mut p, packet) = decoded("big/topic", 100_000);
        let mut r = TopicAliasResolver::new(1);
        r.resolve(&mut p).unwrap();
        drop(p);
        let mut next = publish("", 1);
        r.resolve(&mut next).unwrap();
        assert_eq!(next.topic, "big/topic");
        assert!(!packet.contains(&(next.topic.as_str().as_ptr() as usize)));

        let (mut p, packet) = decoded("big/topic", 100_000);
        let mut a = TopicAliasAllocator::new(1);
        let stored = a.apply(&mut p).unwrap().clone();
        assert_eq!(stored, "big/topic");
        assert!(!packet.contains(&(stored.as_str().as_ptr() as usize)));
    }

    #[test]
    fn the_allocator_keeps_to_its_budget() {
        // The peer chooses the maximum (here 65 534 aliases): the names are
        // bounded in bytes all the same.
        let budget = 4 * (ALIAS_ENTRY_COST + 100);
        let mut a = TopicAliasAllocator::with_budget(u16::MAX, budget);
        let mut resolver = TopicAliasResolver::new(u16::MAX);
        let names: Vec<String> = (0..50).map(|i| format!("{i:0>100}")).collect();
        for (i, name) in names.iter().enumerate() {
            let mut p = Publish::new(MqttString::try_new(name).unwrap(), Bytes::new());
            a.apply(&mut p);
            assert!(a.bytes() <= budget, "{} > {budget}", a.bytes());
            // Four fit; every later one replaces the least recently used.
            assert_eq!(
                p.properties.topic_alias.map(NonZeroU16::get),
                Some(i as u16 % 4 + 1)
            );
            resolver.resolve(&mut p).unwrap();
            assert_eq!(p.topic, name.as_str());
        }
        assert_eq!(a.len(), 4);
        // A name longer than the whole budget goes without an alias.
        let long = "x".repeat(budget);
        let mut p = Publish::new(MqttString::try_new(&long).unwrap(), Bytes::new());
        assert!(a.apply(&mut p).is_none());
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(p.topic, long.as_str());
        assert!(a.bytes() <= budget);
        // Short names still get aliases by replacing old ones.
        assert_eq!(apply(&mut a, "s"), ("s".into(), Some(3)));
    }
}
