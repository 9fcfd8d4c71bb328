//! MQTT bridges for the fulmar broker, as mosquitto has them: a broker
//! keeps client connections to other MQTT brokers (3.1.1 or 5.0, over TCP,
//! TLS or WebSocket, the last with `fulmar-client`'s `websocket` feature)
//! and carries the topics of each one's rules in, out or
//! both ways, with topic prefixes swapped on the way.
//!
//! - [`TopicRule`]: mosquitto's `topic pattern [in|out|both] qos
//!   local-prefix remote-prefix`.
//! - [`Remote`]: one remote broker, its [`ConnectOptions`](fulmar_client::ConnectOptions)
//!   and rules.
//! - [`MqttBridge`]: plugs into the broker through its
//!   [`Bridge`](fulmar_broker::Bridge) seam (so it sees what clients
//!   publish, and what it brings in is not handed back to it), one task per
//!   remote; reconnects with backoff, resumes the remote session, bounded
//!   queues, counters ([`RemoteStats`]).
//!
//! `fulmar broker` reads bridges from `[[bridge]]` tables of its
//! configuration file.
//!
//! # Example
//!
//! See [`MqttBridge`] for two brokers bridged in one process; the rules
//! alone:
//!
//! ```
//! use fulmar_bridge::{Direction, TopicRule};
//!
//! // Commands from the cloud under `cmd/` arrive here under `local/cmd/`.
//! let rule = TopicRule::new("cmd/#", Direction::In)?.prefixes("local/", "")?;
//! assert_eq!(rule.remote_filter(), "cmd/#");
//! assert_eq!(rule.to_local(&"cmd/reboot".parse()?).as_deref(), Some("local/cmd/reboot"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bridge;
mod rule;

pub use bridge::{BridgeError, MqttBridge, Remote, RemoteStats};
pub use rule::{Direction, RuleError, TopicRule};
