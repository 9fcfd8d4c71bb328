//! An access control list as an [`Authorizer`]: rules per user name, each a
//! topic pattern (MQTT wildcards, `%u` for the user name, `%c` for the client
//! identifier) with read and/or write access, checked for every PUBLISH and
//! SUBSCRIBE. A subscription is allowed when a readable pattern covers the
//! whole filter (`sensors/alice/#` covers `sensors/alice/+/temp`, not
//! `sensors/#`). An authorizer can instead grant wider subscriptions and
//! check each message ([`Authorizer::checks_reads`] and
//! [`Authorizer::authorize_read`]), as `fulmar broker`'s ACL file does.
//!
//! Run with `cargo run -p fulmar-examples --example custom_acl`.

use std::collections::HashMap;

use fulmar_broker::{Authorizer, Broker, ClientInfo};
use fulmar_client::{Client, ConnectOptions, Error, QoS, ReasonCode};

/// Read (subscribe) and/or write (publish) access.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    fn allows(self, wanted: Access) -> bool {
        self == Access::ReadWrite || self == wanted
    }
}

/// Rules by user name; `"*"` applies to every user, anonymous ones included.
#[derive(Default)]
struct Acl {
    rules: HashMap<String, Vec<(String, Access)>>,
}

impl Acl {
    fn allow(mut self, user: &str, pattern: &str, access: Access) -> Self {
        self.rules
            .entry(user.to_owned())
            .or_default()
            .push((pattern.to_owned(), access));
        self
    }

    /// Whether `client` has `wanted` access to every topic `topic` can name.
    fn check(&self, client: &ClientInfo, topic: &str, wanted: Access) -> bool {
        let user = client.username.as_deref().unwrap_or("");
        let rules = [self.rules.get(user), self.rules.get("*")];
        rules
            .into_iter()
            .flatten()
            .flatten()
            .any(|(pattern, access)| {
                let pattern = pattern.replace("%u", user).replace("%c", &client.client_id);
                access.allows(wanted) && covers(&pattern, topic)
            })
    }
}

/// Does the pattern `rule` match every topic that `topic` (a name or a
/// filter) can match? Level by level: `#` covers the rest, `+` covers any
/// one level but not `#`, anything else must be equal.
fn covers(rule: &str, topic: &str) -> bool {
    let mut rule = rule.split('/');
    let mut topic = topic.split('/');
    loop {
        match (rule.next(), topic.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(r), Some(t)) if r == t && r != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[async_trait::async_trait]
impl Authorizer for Acl {
    async fn authorize_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        self.check(client, topic, Access::Write)
    }

    async fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        // `$share/{group}/{filter}`: the group is free, the filter is checked.
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
            None => filter,
        };
        self.check(client, filter, Access::Read)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    assert!(covers("sensors/%u/#", "sensors/%u/+/temp"));
    assert!(!covers("sensors/+/temp", "sensors/#"));

    let acl = Acl::default()
        // Every user writes under its own name and reads its commands.
        .allow("*", "sensors/%u/#", Access::Write)
        .allow("*", "commands/%u/+", Access::Read)
        // The operator reads all sensors and writes all commands.
        .allow("ops", "sensors/#", Access::Read)
        .allow("ops", "commands/#", Access::Write);
    let broker = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .authorizer(acl)
        .start()
        .await?;
    let port = broker.local_addrs()[0].port();
    let connect = |user: &str| {
        ConnectOptions::new("127.0.0.1", port)
            .client_id(format!("{user}-device"))
            .username(user)
    };

    let (ops, _) = Client::connect(connect("ops")).await?;
    let mut sensors = ops.subscribe("sensors/#", QoS::AtLeastOnce).await?;
    let (alice, _) = Client::connect(connect("alice")).await?;
    let mut commands = alice
        .subscribe("commands/alice/+", QoS::AtLeastOnce)
        .await?;

    // Alice writes under her own name: the operator reads it.
    alice
        .publish("sensors/alice/temp", "21.5")
        .qos(QoS::AtLeastOnce)
        .await?;
    let reading = sensors.recv().await.ok_or("broker stopped")?;
    println!("ops got {} = {:?}", reading.topic, reading.payload);
    assert_eq!(reading.topic, "sensors/alice/temp");

    // Not under her name: PUBACK 0x87 Not authorized.
    let denied = alice
        .publish("sensors/bob/temp", "-40")
        .qos(QoS::AtLeastOnce)
        .await;
    println!("alice -> sensors/bob/temp: {denied:?}");
    assert!(matches!(
        denied,
        Err(Error::PublishRejected {
            reason_code: ReasonCode::NotAuthorized,
            ..
        })
    ));

    // Reading everybody's sensors is for the operator only: SUBACK 0x87.
    let refused = alice.subscribe("sensors/#", QoS::AtMostOnce).await;
    println!("alice subscribes sensors/#: {:?}", refused.as_ref().err());
    assert!(matches!(refused, Err(Error::SubscribeRejected(_))));

    // The operator commands Alice.
    ops.publish("commands/alice/reboot", "now")
        .qos(QoS::AtLeastOnce)
        .await?;
    let command = commands.recv().await.ok_or("broker stopped")?;
    println!("alice got {} = {:?}", command.topic, command.payload);
    assert_eq!(command.payload, "now");

    alice.disconnect().await?;
    ops.disconnect().await?;
    broker.shutdown().await;
    Ok(())
}
