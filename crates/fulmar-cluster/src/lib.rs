//! fulmar brokers as one cluster over [NATS](https://nats.io) and JetStream.
//!
//! Each node is an ordinary [`fulmar_broker`] broker with a [`Cluster`] as
//! its [`Bridge`](fulmar_broker::Bridge). The broker knows nothing of NATS:
//! it tells the bridge which filters its clients hold and which messages
//! they publish, and the cluster brings messages from the other nodes back
//! with [`BrokerHandle::inject`](fulmar_broker::BrokerHandle::inject) and
//! [`BrokerHandle::deliver_shared`](fulmar_broker::BrokerHandle::deliver_shared).
//!
//! # Example
//!
//! Two lines around an ordinary broker (not run as a doc test: it needs a
//! NATS server with JetStream, `nats-server -js`):
//!
//! ```no_run
//! use fulmar_broker::Broker;
//! use fulmar_cluster::{Cluster, ClusterConfig};
//!
//! # async fn node() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::connect(ClusterConfig::new("nats://127.0.0.1:4222", "node-a")).await?;
//! let broker = Broker::builder()
//!     .tcp_listener("0.0.0.0:1883")
//!     .bridge(cluster.bridge())
//!     .start()
//!     .await?;
//! cluster.attach(&broker).await?;
//! // ... serve until asked to stop ...
//! broker.shutdown().await;
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # How messages travel
//!
//! - **Routing.** For every distinct filter the local broker holds, the
//!   node holds a NATS subscription on the filter's subjects ([`subject`]:
//!   `/` to `.`, `+` to `*`, `#` to `>`, escaping what a subject cannot
//!   carry), reference counted and dropped with the last local subscriber.
//!   A message accepted locally is routed to the local subscribers by the
//!   broker and published once to NATS, its MQTT metadata in [`headers`]
//!   (QoS, retain, v5 properties, origin node). A node injects each message
//!   of another node once, even when several of its subscriptions match it,
//!   and ignores its own.
//! - **Shared subscriptions** (`$share/{group}/{filter}`): one NATS queue
//!   subscription per group and filter on every node with a member, in a
//!   queue group named after both, so NATS picks one node per message and
//!   that node one local member. The cluster routes shared groups for the
//!   local broker too, so a message reaches a group once in the cluster.
//! - **Retained messages** are routed like any other message, and also
//!   kept in a JetStream stream holding the last message per subject
//!   (`{prefix}_retained`, subjects `{prefix}.ret.>`; an empty payload is
//!   kept as a tombstone that deletes). A node loads every retained message
//!   when it [attaches](Cluster::attach), then watches the stream and
//!   injects what other nodes publish unless it had it from the routing
//!   subject already (same message id) or a newer one on that topic came
//!   that way: so every node stores every retained message, its
//!   subscribers get each one once, and a late stream copy does not
//!   overwrite a newer value. A retained message's Message Expiry Interval
//!   is reduced by the time it spent in the stream.
//! - **Liveness.** Each node writes a heartbeat key in the key-value bucket
//!   `{prefix}_nodes`, whose max age is the heartbeat TTL; a node whose key
//!   expired is gone ([`Cluster::nodes`] lists the live ones), and its
//!   clients' wills are published by another node (below).
//!
//! # Guarantees and limits
//!
//! - Between nodes messages travel over core NATS: at most once. A QoS 1
//!   or 2 message is acknowledged by the node that received it; a NATS
//!   reconnect or a slow consumer on the NATS connection can lose messages
//!   on the way to other nodes (counted by NATS, not by fulmar). Queued
//!   QoS 1/2 messages of offline sessions held in JetStream are future
//!   work, with sessions.
//! - A subscription is in the cluster shortly after its SUBACK: a message
//!   published on another node in between is not delivered to it.
//! - When two nodes publish retained messages on one topic at the same
//!   time, the value a node keeps is the last it received from the routing
//!   subject, which may differ from the stream's order; a node attached
//!   later takes the stream's.
//! - The subject of a very long topic (three bytes per escaped byte) may go
//!   past the NATS server's `max_control_line` (4 KiB by default); such a
//!   publish fails and is counted ([`ClusterStats::publish_errors`]).
//! - Sessions live on one node: resuming a session on another node, and
//!   session takeover across nodes, wait for the broker's storage seam.
//!
//! # Wills of a node that is gone
//!
//! The broker publishes the will of a client whose connection breaks; when
//! the whole node dies, another node publishes it:
//!
//! - Each node keeps the will of each connected client that has one in the
//!   key-value bucket `{prefix}_wills` (key: escaped node id `.` escaped
//!   client id; value: the Will Delay Interval in 4 bytes, then the will as
//!   an MQTT 5.0 PUBLISH packet), written when the broker reports it
//!   ([`Bridge::will_set`](fulmar_broker::Bridge::will_set)) and removed
//!   when the broker published or dropped it
//!   ([`Bridge::will_cleared`](fulmar_broker::Bridge::will_cleared)), in
//!   that order, by one task. [`Cluster::wills`] lists them.
//! - A node writes its heartbeat before its first will. A clean
//!   [`Cluster::shutdown`] removes the node's wills, then its heartbeat.
//! - Every heartbeat interval each node lists the wills, then the live
//!   heartbeats: a will whose node has no heartbeat belongs to a node that
//!   died (its heartbeat expired). The node publishes it after its delay,
//!   counted from then, if it can still claim it: a compare-and-swap on the
//!   will's revision, so that exactly one node publishes each will, and
//!   none when the will's node wrote or removed it meanwhile. The will is
//!   published like a message a local client published: to the local
//!   subscribers, then to NATS (and the retained stream when retained).
//! - Wills of a node that restarts (same node id) before any node saw its
//!   heartbeat gone are left alone: its clients' new wills replace them.
//!
//! Limits: a will is published at most once; one claimed by a node that
//! dies before publishing it is lost. A node cut off from NATS longer than
//! the heartbeat TTL is taken for dead and its clients' wills published
//! while they may still be connected. A client that reconnects to another
//! node within the delay does not cancel the will (sessions live on one
//! node). Each node lists the whole bucket every heartbeat interval, which
//! costs in proportion to the connected clients with a will.

mod cluster;
mod error;
pub mod headers;
mod sessions;
pub mod subject;

pub use cluster::{Cluster, ClusterConfig, ClusterStats, Credentials, TlsOptions};
pub use error::ClusterError;
