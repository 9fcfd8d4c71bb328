//! Route messages with the subscription trie: wildcards, a shared group and
//! the `$` rule, then answer a new subscription from the retained index.
//!
//! ```sh
//! cargo run -p fulmar-examples --example topic_routing
//! ```

use bytes::Bytes;
use fulmar_topic::{RetainedIndex, SubscriptionFilter, SubscriptionTrie, TopicFilter, TopicName};

fn main() -> Result<(), fulmar_topic::TopicError> {
    // Keys are client ids; options are the granted QoS.
    let mut trie: SubscriptionTrie<String, u8> = SubscriptionTrie::new();
    for (filter, client, qos) in [
        ("site/+/device/+/temp", "dashboard", 0),
        ("site/1/#", "site-1-logger", 1),
        ("$share/workers/site/+/device/+/temp", "worker-a", 1),
        ("$share/workers/site/+/device/+/temp", "worker-b", 1),
        ("#", "audit", 0),
    ] {
        trie.subscribe(
            &filter.parse::<SubscriptionFilter>()?,
            client.to_string(),
            qos,
        );
    }

    for topic in [
        "site/1/device/42/temp",
        "site/2/device/7/temp",
        "$SYS/broker/uptime",
    ] {
        let topic: TopicName = topic.parse()?;
        let mut receivers = Vec::new();
        trie.matches(&topic, |m| {
            receivers.push(format!("{} (qos {})", m.key, m.options))
        });
        println!("{topic} -> {}", receivers.join(", "));
    }

    let mut retained = RetainedIndex::new();
    for (topic, value) in [
        ("site/1/device/42/temp", "21.5"),
        ("site/2/device/7/temp", "19.0"),
    ] {
        retained.publish(topic.parse()?, Bytes::from_static(value.as_bytes()));
    }
    let filter: TopicFilter = "site/+/device/+/temp".parse()?;
    retained.matches(&filter, |topic, value| {
        println!("retained {topic} = {value:?}")
    });
    Ok(())
}
