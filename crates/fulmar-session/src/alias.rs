//! Topic aliases. Outbound: `fulmar_codec::TopicAliasAllocator` behind a
//! one-entry memo of the last topic it aliased; inbound:
//! `fulmar_codec::TopicAliasResolver`. Both are created on first use.
//!
//! Looking a topic up in the allocator hashes it (SipHash), which cost about
//! a tenth of a QoS 1 round trip through both sessions. A connection often
//! sends the same topic again and again; the topic the allocator aliased last
//! is its most recently used slot, so aliasing it again changes nothing in the
//! allocator and gives the same alias: the memo answers that case with a
//! string comparison and leaves the allocator alone.

use std::num::NonZeroU16;

use fulmar_codec::{AliasError, MqttString, Publish, TopicAliasAllocator, TopicAliasResolver};

use crate::session::Conn;

/// The allocator for one network connection, with the memo. Both are
/// created by the first PUBLISH that can carry an alias: a connection that
/// sends nothing keeps only a null pointer. The peer's Topic Alias Maximum is
/// kept by the caller (in the padding of the connection state, where a field
/// here would take a word of its own) and handed to [`apply`](Self::apply).
#[derive(Clone, Debug, Default)]
pub(crate) struct OutAliases {
    tables: Option<Box<Tables>>,
}

#[derive(Clone, Debug)]
struct Tables {
    allocator: TopicAliasAllocator,
    /// The topic of the last `apply` that set an alias, and that alias.
    last: Option<(MqttString, NonZeroU16)>,
}

impl OutAliases {
    /// The same as [`TopicAliasAllocator::apply`] on an allocator created
    /// with `TopicAliasAllocator::new(maximum)` (`maximum`, the peer's Topic
    /// Alias Maximum, is the same at every call until [`Default`] starts over).
    pub(crate) fn apply(&mut self, maximum: u16, publish: &mut Publish) {
        if maximum == 0 || publish.topic.is_empty() {
            // What the allocator does here, without creating it: no alias
            // without a maximum; an empty topic name is left as it is.
            if maximum == 0 && !publish.topic.is_empty() {
                publish.properties.topic_alias = None;
            }
            return;
        }
        let tables = self.tables.get_or_insert_with(|| {
            Box::new(Tables {
                allocator: TopicAliasAllocator::new(maximum),
                last: None,
            })
        });
        if let Some((topic, alias)) = &tables.last
            && *topic == publish.topic
        {
            // The allocator would find the topic in its most recently used
            // slot, leave its order as it is, and do exactly this.
            publish.properties.topic_alias = Some(*alias);
            publish.topic = MqttString::new();
            return;
        }
        // The allocator's own copy of the name: the memo must not keep the
        // packet the name was decoded from.
        let stored = tables.allocator.apply(publish).cloned();
        tables.last = stored.zip(publish.properties.topic_alias);
    }

    /// What [`apply`](Self::apply) would do to a PUBLISH to `topic`, done
    /// to the allocator but not to a packet: the Topic Alias to set and
    /// whether the topic name stays, or `None` if the packet would be left
    /// as it is. The sender builds the packet accordingly, and does not
    /// clone a topic that an alias replaces.
    #[inline]
    pub(crate) fn decide(
        &mut self,
        maximum: u16,
        topic: &MqttString,
    ) -> Option<(Option<NonZeroU16>, bool)> {
        if topic.is_empty() {
            return None;
        }
        if maximum != 0
            && let Some(tables) = &self.tables
            && let Some((last, alias)) = &tables.last
            && last == topic
        {
            // The memo of `apply`, without a packet.
            return Some((Some(*alias), false));
        }
        self.decide_slow(maximum, topic)
    }

    /// [`decide`](Self::decide) through `apply` on a stand-in packet.
    #[cold]
    fn decide_slow(
        &mut self,
        maximum: u16,
        topic: &MqttString,
    ) -> Option<(Option<NonZeroU16>, bool)> {
        let mut publish = Publish::new(topic.clone(), bytes::Bytes::new());
        self.apply(maximum, &mut publish);
        Some((publish.properties.topic_alias, !publish.topic.is_empty()))
    }

    /// Whether the allocator exists (allocated).
    #[cfg(test)]
    pub(crate) fn is_allocated(&self) -> bool {
        self.tables.is_some()
    }
}

/// The topic aliases of a connection, both ways. Each maximum is kept in
/// [`Conn`] (in padding) and each table is created on first use.
impl Conn {
    /// Inbound topic aliases up to `maximum`, none recorded yet (a new
    /// connection).
    pub(crate) fn set_in_aliases(&mut self, maximum: u16) {
        self.in_alias_maximum = maximum;
        self.in_aliases = None;
    }

    /// The same as [`TopicAliasResolver::resolve`] on the resolver of this
    /// connection; the resolver is only created for a PUBLISH that carries
    /// an alias (without one, `resolve` records nothing). Inlined in both
    /// of its callers: a call costs 14 instructions per inbound PUBLISH.
    #[inline(always)]
    pub(crate) fn resolve_in_alias(&mut self, publish: &mut Publish) -> Result<(), AliasError> {
        match &mut self.in_aliases {
            Some(resolver) => resolver.resolve(publish),
            None if publish.properties.topic_alias.is_none() => {
                TopicAliasResolver::new(self.in_alias_maximum).resolve(publish)
            }
            None => self
                .in_aliases
                .insert(Box::new(TopicAliasResolver::new(self.in_alias_maximum)))
                .resolve(publish),
        }
    }

    /// Outbound topic aliases up to the peer's `maximum`, none assigned yet
    /// (a new connection).
    pub(crate) fn set_out_aliases(&mut self, maximum: u16) {
        self.out_alias_maximum = maximum;
        self.out_aliases = OutAliases::default();
    }

    /// [`OutAliases::decide`] for a PUBLISH to `topic`.
    #[inline]
    pub(crate) fn decide_out_alias(
        &mut self,
        topic: &MqttString,
    ) -> Option<(Option<NonZeroU16>, bool)> {
        self.out_aliases.decide(self.out_alias_maximum, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        /// The memo never changes what is sent: the same topics through the
        /// bare allocator and through `OutAliases` give the same packets.
        #[test]
        fn memo_changes_nothing(
            maximum in 0u16..4,
            topics in proptest::collection::vec(0usize..6, 0..64),
        ) {
            let names = ["a", "b", "c/d", "e", "", "a"];
            let mut bare = TopicAliasAllocator::new(maximum);
            let mut memo = OutAliases::default();
            let mut twin = OutAliases::default();
            for t in topics {
                let name = names.get(t).copied().unwrap_or("a");
                let publish = Publish::new(MqttString::from(name), Bytes::new());
                let (mut a, mut b) = (publish.clone(), publish);
                bare.apply(&mut a);
                memo.apply(maximum, &mut b);
                prop_assert_eq!(&a, &b);
                // `decide` on a twin gives the same packet.
                let mut c = Publish::new(MqttString::from(name), Bytes::new());
                if let Some((alias, keep)) = twin.decide(maximum, &c.topic) {
                    c.properties.topic_alias = alias;
                    if !keep {
                        c.topic = MqttString::new();
                    }
                }
                prop_assert_eq!(&c, &b);
            }
        }
    }
}
