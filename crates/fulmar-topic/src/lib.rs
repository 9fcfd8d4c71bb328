//! MQTT topic names and filters, a subscription trie with shared subscriptions, and a
//! retained-message index, for MQTT 3.1.1 and 5.0.
//!
//! # Contract
//!
//! - **Validated types.** [`TopicName`] and [`TopicFilter`] can only hold what the specs allow
//!   (MQTT 5.0 and 3.1.1 section 4.7): 1 to 65 535 bytes of UTF-8 without U+0000, no wildcard
//!   in a name, `+` and `#` only as whole levels and `#` only last in a filter. Every refusal is
//!   a typed [`TopicError`] whose message quotes the spec statement. [`SharedFilter`] and
//!   [`SubscriptionFilter`] add the `$share/{ShareName}/{filter}` rules of MQTT 5.0 section 4.8.2.
//! - **Matching follows section 4.7 exactly**: byte-for-byte levels, no normalisation, `+` one
//!   level, `#` the parent and any children, and no filter starting with a wildcard matches a
//!   name starting with `$`.
//! - **[`SubscriptionTrie`]** maps filters to subscriber keys and their options. A match costs
//!   time in the topic's depth times the filters still matching at each level (live branches:
//!   `+` at many levels can keep many alive), plus the number of matches; not in the number of
//!   subscriptions. It allocates nothing up to 16 live branches. Shared groups deliver each
//!   message to one member, chosen by a [`ShareStrategy`]; a router can rank members (connected,
//!   with room) so that a group passes over one that cannot take the message
//!   ([`SubscriptionTrie::matches_ranked`]).
//! - **[`RetainedIndex`]** keeps the last retained message per name and finds every name a new
//!   subscription's filter matches, without scanning the store.
//! - **Sans-IO**: no IO, no clock, no threads, no `unsafe`; no panic on any input.
//!
//! # Example
//!
//! ```
//! use fulmar_topic::{group_matches, RetainedIndex, SubscriptionFilter, SubscriptionTrie, TopicName};
//!
//! # fn main() -> Result<(), fulmar_topic::TopicError> {
//! // Subscriber keys are client ids; the options here are (QoS, subscription identifier).
//! let mut subs: SubscriptionTrie<&str, (u8, Option<u32>)> = SubscriptionTrie::new();
//! subs.subscribe(&"sensors/+/temp".parse()?, "alice", (1, Some(7)));
//! subs.subscribe(&"sensors/#".parse()?, "alice", (0, Some(9)));
//! subs.subscribe(&"$share/workers/sensors/#".parse()?, "worker-1", (1, None));
//! subs.subscribe(&"$share/workers/sensors/#".parse()?, "worker-2", (1, None));
//! subs.subscribe(&"#".parse::<SubscriptionFilter>()?, "logger", (0, None));
//! assert_eq!(subs.len(), 5);
//!
//! let topic: TopicName = "sensors/kitchen/temp".parse()?;
//! let mut found = Vec::new();
//! // Whether a key may be there twice: then the matches are sorted to group them.
//! let overlap = subs.collect_matches(&topic, &mut found);
//! let deliveries: Vec<(&str, Vec<Option<u32>>)> = group_matches(&mut found, overlap)
//!     .map(|group| (*group[0].key, group.iter().map(|m| m.options.1).collect()))
//!     .collect();
//! // alice once, with both subscription identifiers; one worker of the group; the logger.
//! assert_eq!(deliveries.len(), 3);
//! assert!(deliveries.iter().any(|(k, ids)| *k == "alice" && ids.len() == 2));
//! assert!(deliveries.iter().any(|(k, _)| k.starts_with("worker-")));
//!
//! // `$` topics are not matched by filters starting with a wildcard.
//! let mut n = 0;
//! subs.matches(&"$SYS/uptime".parse()?, |_| n += 1);
//! assert_eq!(n, 0);
//!
//! let mut retained = RetainedIndex::new();
//! retained.publish(topic.clone(), bytes::Bytes::from_static(b"21.5"));
//! let mut hits = 0;
//! retained.matches(&"sensors/+/temp".parse()?, |_, _| hits += 1);
//! assert_eq!(hits, 1);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod error;
mod filter;
mod intern;
mod name;
mod retained;
#[cfg(feature = "serde")]
mod serde_impls;
mod share;
mod strategy;
mod trie;
mod validate;

pub use error::TopicError;
pub use filter::TopicFilter;
pub use name::TopicName;
pub use retained::{RetainedIndex, RetainedPayload};
pub use share::{SharedFilter, SubscriptionFilter};
pub use strategy::{Random, RoundRobin, ShareStrategy, Sticky};
pub use trie::{Match, SubscriptionTrie, group_by_key, group_matches};
