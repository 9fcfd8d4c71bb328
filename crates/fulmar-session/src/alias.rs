//! Topic aliases (MQTT 5.0 section 3.3.2.3.4): the inbound table the peer
//! fills (bounded by the maximum we announced) and the outbound table we fill
//! (bounded by the peer's maximum). Both live for one network connection only
//! ([MQTT-3.3.2-7]).

use std::collections::HashMap;
use std::num::NonZeroU16;

use fulmar_codec::{MqttString, Publish};

use crate::error::ProtocolViolation;

/// Inbound aliases: alias -> topic name, indexed by alias (1..=maximum).
#[derive(Clone, Debug, Default)]
pub(crate) struct InboundAliases {
    maximum: u16,
    topics: Vec<Option<MqttString>>,
}

impl InboundAliases {
    pub(crate) fn new(maximum: u16) -> Self {
        Self {
            maximum,
            topics: Vec::new(),
        }
    }

    /// Resolves the alias of `publish` in place: sets the topic and removes
    /// the Topic Alias property.
    pub(crate) fn resolve(&mut self, publish: &mut Publish) -> Result<(), ProtocolViolation> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            return if publish.topic.is_empty() {
                Err(ProtocolViolation::EmptyTopic)
            } else {
                Ok(())
            };
        };
        let alias = alias.get();
        if alias > self.maximum {
            return Err(ProtocolViolation::TopicAliasInvalid(alias));
        }
        let index = usize::from(alias - 1);
        if publish.topic.is_empty() {
            let topic = self.topics.get(index).and_then(Option::as_ref);
            publish.topic = topic
                .ok_or(ProtocolViolation::TopicAliasUnknown(alias))?
                .clone();
        } else {
            // Grows to at most `maximum` slots.
            if self.topics.len() <= index {
                self.topics.resize(index + 1, None);
            }
            if let Some(slot) = self.topics.get_mut(index) {
                *slot = Some(publish.topic.clone());
            }
        }
        Ok(())
    }
}

/// Outbound aliases: topic name -> alias, first come first served, no eviction.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    map: HashMap<MqttString, NonZeroU16>,
}

impl OutboundAliases {
    pub(crate) fn new(maximum: u16) -> Self {
        Self {
            maximum,
            map: HashMap::new(),
        }
    }

    /// Rewrites `publish` for the wire: a known topic is replaced by its alias,
    /// a new one gets an alias while the table has room.
    pub(crate) fn apply(&mut self, publish: &mut Publish) {
        if self.maximum == 0 || publish.topic.is_empty() {
            return;
        }
        if let Some(alias) = self.map.get(&publish.topic) {
            publish.properties.topic_alias = Some(*alias);
            publish.topic = MqttString::new();
            return;
        }
        let next = u16::try_from(self.map.len())
            .ok()
            .and_then(|n| n.checked_add(1));
        if let Some(alias) = next
            .filter(|n| *n <= self.maximum)
            .and_then(NonZeroU16::new)
        {
            self.map.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn publish(topic: &'static str) -> Publish {
        Publish::new(MqttString::from(topic), Bytes::from_static(b"x"))
    }

    #[test]
    fn outbound_aliases_stay_within_the_peers_maximum() {
        // v5:MQTT-3.3.2-9 v5:MQTT-3.3.2-11 v5:MQTT-3.2.2-17 v5:MQTT-3.3.2-8
        let mut out = OutboundAliases::new(1);
        let mut a = publish("a");
        out.apply(&mut a);
        assert_eq!(a.topic, "a");
        assert_eq!(a.properties.topic_alias.map(NonZeroU16::get), Some(1));
        let mut a2 = publish("a");
        out.apply(&mut a2);
        assert!(a2.topic.is_empty());
        assert_eq!(a2.properties.topic_alias.map(NonZeroU16::get), Some(1));
        let mut b = publish("b");
        out.apply(&mut b);
        assert_eq!(b.topic, "b");
        assert_eq!(
            b.properties.topic_alias, None,
            "table full: no alias above the maximum"
        );
    }

    #[test]
    fn no_outbound_alias_when_peer_maximum_is_zero() {
        // v5:MQTT-3.2.2-18 v5:MQTT-3.1.2-27
        let mut out = OutboundAliases::new(0);
        let mut a = publish("a");
        out.apply(&mut a);
        assert_eq!(a.properties.topic_alias, None);
        assert_eq!(a.topic, "a");
    }

    #[test]
    fn inbound_aliases_resolve_and_reject_out_of_range() {
        // v5:MQTT-3.3.2-10 v5:MQTT-3.3.2-12
        let mut inb = InboundAliases::new(2);
        let mut p = publish("t");
        p.properties.topic_alias = NonZeroU16::new(2);
        inb.resolve(&mut p).unwrap();
        assert_eq!(p.properties.topic_alias, None);
        let mut q = publish("");
        q.properties.topic_alias = NonZeroU16::new(2);
        inb.resolve(&mut q).unwrap();
        assert_eq!(q.topic, "t");
        let mut r = publish("");
        r.properties.topic_alias = NonZeroU16::new(1);
        assert_eq!(
            inb.resolve(&mut r),
            Err(ProtocolViolation::TopicAliasUnknown(1))
        );
        let mut s = publish("x");
        s.properties.topic_alias = NonZeroU16::new(3);
        assert_eq!(
            inb.resolve(&mut s),
            Err(ProtocolViolation::TopicAliasInvalid(3))
        );
        let mut e = publish("");
        assert_eq!(inb.resolve(&mut e), Err(ProtocolViolation::EmptyTopic));
    }
}
