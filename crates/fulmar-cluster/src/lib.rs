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
//!   and ignores its own. A message's Message Expiry Interval is reduced by
//!   the time it waited in the node's outbound queue (NATS slow or away),
//!   and one that expired there is not published; the time it then spends
//!   in NATS and its clients' buffers is not counted.
//! - **Shared subscriptions** (`$share/{group}/{filter}`): one NATS queue
//!   subscription per group and filter on every node with a member, in a
//!   queue group named after both, so NATS picks one node per message and
//!   that node one local member. The cluster routes shared groups for the
//!   local broker too, so a message reaches a group once in the cluster.
//!   A message published here that does not get to NATS (the outbound
//!   queue full, the publish refused by the NATS client, or NATS away: the
//!   client keeps it for later) goes to this node's groups directly, and,
//!   when it reaches NATS later, names those groups in a header so that
//!   their queue subscriptions drop it. One that NATS loses after taking it,
//!   or that this node crashes before getting back, is lost for the group.
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
//! - **Sessions** live on the node the client last connected to, in its
//!   broker, and, with a [`SessionStore`] as the broker's store
//!   ([`Cluster::session_store`]), in JetStream; the cluster keeps a
//!   registry of which node holds each one and moves a session to the node
//!   a client connects to (below).
//!
//! # Guarantees and limits
//!
//! - Between nodes messages travel over core NATS: at most once. A QoS 1
//!   or 2 message is acknowledged by the node that received it; a NATS
//!   reconnect or a slow consumer on the NATS connection can lose messages
//!   on the way to other nodes (counted by NATS, not by fulmar): a QoS 1/2
//!   message acknowledged by its publisher's node is lost for the
//!   subscribers of another node when that node dies before it queued the
//!   message. The QoS 1/2 messages queued for a session are kept by the
//!   node holding it, in JetStream with a [`SessionStore`] (else in the
//!   broker's own store, when it has one).
//! - A node routes what other nodes send with the flow control of a local
//!   PUBLISH ([`BrokerHandle::inject_paced`](fulmar_broker::BrokerHandle::inject_paced)),
//!   one message at a time for all its plain subscriptions: when a local
//!   subscriber's queue is full, the copy waits for room under
//!   [`OverloadPolicy::Backpressure`](fulmar_broker::OverloadPolicy::Backpressure)
//!   (else it is dropped and counted, as for a local publisher), and a
//!   queue past a quarter of its bound slows the reading of the NATS
//!   subscriptions down. Meanwhile NATS buffers the messages for the node,
//!   up to its slow-consumer limit (above). The messages of one topic keep
//!   their order, also when several subscriptions of the node bring them.
//!   A shared group's messages reach its local member with the same flow
//!   control ([`BrokerHandle::deliver_shared_paced`](fulmar_broker::BrokerHandle::deliver_shared_paced)),
//!   each group's NATS subscription read at the pace its member takes them.
//!   The price of that order: one slow subscriber slows down every message
//!   into its node (for up to [`Limits::backpressure_timeout`](fulmar_broker::Limits::backpressure_timeout)
//!   per message under back-pressure, [`Limits::pacing_timeout`](fulmar_broker::Limits::pacing_timeout)
//!   otherwise), and past NATS's slow-consumer limit NATS drops messages
//!   for the node, whatever their topic. No commit of the store is waited
//!   for (nothing is acknowledged to anyone).
//! - A subscription is in the cluster shortly after its SUBACK: a message
//!   published on another node in between is not delivered to it.
//! - When two nodes publish retained messages on one topic at the same
//!   time, the value a node keeps is the last it received from the routing
//!   subject, which may differ from the stream's order; a node attached
//!   later takes the stream's.
//! - The subject of a very long topic or filter (three bytes per escaped
//!   byte) may go past the NATS servers' `max_control_line`
//!   ([`ClusterConfig::max_control_line`], 4 KiB by default), beyond which
//!   a server closes the connection. Such a message is not published to
//!   NATS (nor kept in the retained stream): only the subscribers of its
//!   node get it ([`ClusterStats::topics_too_long`], also counted in
//!   [`ClusterStats::publish_errors`]). Such a filter is not subscribed to
//!   in NATS: its subscribers get only what their node's clients publish
//!   ([`ClusterStats::filters_too_long`]).
//! - A message larger, with its headers, than the NATS servers'
//!   `max_payload` (1 MiB by default) is not published to NATS: only the
//!   subscribers of its node get it ([`ClusterStats::messages_too_large`]).
//!   Limit the broker's packets to [`Cluster::max_packet_size`] (`fulmar
//!   broker` does) so that clients learn the limit and a larger PUBLISH is
//!   refused, or raise `max_payload`.
//! - NATS may come back without its JetStream data (a new disk, memory
//!   storage, a cluster of servers that lost its quorum's storage). A node
//!   notices at its next heartbeat (the heartbeat bucket is gone, or is not
//!   the one it knew) and makes every stream and bucket it uses again, then
//!   writes back what it holds: its heartbeat, the wills of its clients,
//!   its entries in the session registry and its retained messages (each
//!   node holds all of them; a copy is written only where the topic has
//!   none yet, marked `Fulmar-Restored` so that the nodes running then,
//!   which hold it, do not route it again; a node started later loads it).
//!   Not written back: the persistent sessions the state stream held
//!   ([`SessionStore`]); each is stored again when it next changes (a
//!   connection, a subscription, a queued message), and a node that dies
//!   before that loses its queued messages. The wills of nodes that were
//!   gone already are lost with the bucket.
//! - See the limits of sessions and wills below.
//!
//! # Sessions across nodes
//!
//! A client may connect to any node and resume its session there; a
//! second connection with the same client identifier on another node takes
//! the session over (MQTT-3.1.4-3: the old connection gets DISCONNECT 0x8E
//! Session taken over in MQTT 5.0).
//!
//! - **Registry.** The key-value bucket `{prefix}_sessions` maps each
//!   client identifier (escaped as node ids are: letters, digits, `-`, `_`
//!   as they are, other bytes `=XY`; when that is longer than 200 bytes,
//!   `==` and a hash of the identifier) to the node holding its session. A
//!   value is a version byte (1), the node id with a 2-byte length, then
//!   the session's last record (subscriptions and Session Expiry Interval,
//!   as [`SessionExport::encode`](fulmar_broker::SessionExport::encode)
//!   writes it without messages) when known.
//! - **Connect.** When a client connects (before its CONNACK, through
//!   [`Bridge::claim_session`](fulmar_broker::Bridge::claim_session)), its
//!   node reads the registry entry and writes itself as the holder with a
//!   compare-and-swap on the revision it read (retried, with growing
//!   pauses, while the holder writes its record or another node claims
//!   it), keeping the last record. If another node held the session, the
//!   node sends it a request on
//!   `{prefix}.session.{escaped node id}`: that node calls
//!   [`BrokerHandle::take_session`](fulmar_broker::BrokerHandle::take_session)
//!   (which closes a connection holding the session, as a takeover does,
//!   removes the session, from its store too, and drops its pending will)
//!   and replies with the session: its subscriptions, its in-flight QoS 1/2
//!   messages with their packet identifiers, the PUBRELs it awaited
//!   PUBCOMP for, its queued messages and the inbound QoS 2 identifiers
//!   awaiting PUBREL, in several messages when it is larger than NATS
//!   allows one to be. The connecting node installs it as a restart
//!   recovers a session and answers CONNACK with session present. With
//!   Clean Start the old connection closes all the same, but the state is
//!   not sent.
//! - **Bounded.** Each step (the registry, the request) waits at most
//!   [`ClusterConfig::session_timeout`]; a node that does not answer in
//!   time, or answers what is not a session export, gives the client a
//!   new session (counted: [`ClusterStats::sessions_unanswered`],
//!   [`ClusterStats::sessions_invalid`]) instead of holding up its CONNECT.
//! - **Records.** A node writes a session's record to its registry entry
//!   when the client connects, after each SUBSCRIBE and UNSUBSCRIBE of a
//!   session that outlives its connection, and when the client disconnects
//!   leaving its session, with a compare-and-swap on the revision it wrote
//!   last, so that it never overwrites another node's claim; it removes the
//!   entry (that revision only) when the session ends. One task writes them
//!   in order; when it is behind, only the latest record of a client is
//!   written. [`Cluster::session_owner`] and [`Cluster::session_record`]
//!   read an entry.
//! - **A node that is gone.** When nobody answers on the holder's subject
//!   (NATS reports no responders), the connecting node reads what the gone
//!   node kept of the session in JetStream (its [`SessionStore`]): the
//!   subscriptions, the queued and in-flight QoS 1/2 messages (QoS 2 ones
//!   with their packet identifiers and PUBREC state) and the inbound QoS 2
//!   identifiers awaiting PUBREL come back whole
//!   ([`ClusterStats::sessions_restored_whole`]), and the gone node's
//!   records of it are removed a [`ClusterConfig::session_timeout`] later.
//!   A gone node that kept no such state leaves the record in the registry:
//!   the subscriptions and expiry come back (session present), its queued
//!   messages do not. A session that ended with its connection (Session
//!   Expiry Interval 0) or had expired is not restored.
//! - **When JetStream cannot answer.** If the gone node's state cannot be
//!   read then (JetStream electing new leaders after losing a server, a
//!   timeout), or the registry cannot be read, a CONNECT with Clean Start 0
//!   is refused with Server unavailable (MQTT 5.0: 0x88; 3.1.1: return code
//!   3; [`fulmar_broker::SessionUnavailable`],
//!   [`ClusterStats::sessions_unavailable`]) instead of starting a session
//!   without its queued messages; the client connects again, and the state
//!   is read again, on whichever node: the refusing node gives the registry
//!   entry back to the gone node (compare-and-swap on its own claim), or,
//!   when it cannot, tells the node the client connects to next (which asks
//!   it for the session) to read the gone node's state. Clean Start 1
//!   connections are not refused.
//! - **Adoption.** A gone node's sessions do not wait for their clients:
//!   the first of its clients to connect elsewhere makes that node adopt
//!   all the others, and no connection of a client of the gone node gets
//!   its CONNACK on that node while a session of it is on its way into the
//!   broker (each waits at most [`ClusterConfig::session_timeout`]), so
//!   that what the client publishes next finds them; and
//!   every node looks each heartbeat interval for nodes with sessions in
//!   the state stream, no heartbeat and no commit for a heartbeat TTL.
//!   Adopting claims each session in the registry (compare-and-swap from
//!   the gone node, so one node adopts it) and installs it disconnected
//!   with its messages ([`BrokerHandle::adopt_session`](fulmar_broker::BrokerHandle::adopt_session)):
//!   it gets what is published from then on, expires by its Session Expiry
//!   Interval, and moves to wherever its client connects
//!   ([`ClusterStats::sessions_adopted`]). The gone node's will for the
//!   client is still published after its delay unless the client comes back
//!   first. The gone node's records of a session are removed once it is
//!   adopted, or ended or expired, or has no registry entry, or another
//!   node has held it in the registry (same holder, same revision) for four
//!   [`ClusterConfig::session_timeout`]s; once none is left waiting, its
//!   commit journal goes too, and no node looks at it again.
//! - **Durability.** With the broker's default
//!   [`Durability::Immediate`](fulmar_broker::Durability::Immediate), a
//!   node acknowledges a QoS 1/2 message (PUBACK, PUBREC) once its copies
//!   for the node's sessions and the publisher's inbound QoS 2 identifier
//!   are in JetStream: killing the node loses none of them (tested with
//!   SIGKILL in the middle of QoS 1 and 2 streams).
//!
//! Limits:
//! - Without a [`SessionStore`], the messages queued for a session on a
//!   node that died (or was cut off from NATS) are lost with it, and so are
//!   its in-flight QoS 1/2 flows. A QoS 1 message in flight when its node
//!   died is sent again with a new packet identifier (its identifier is not
//!   stored; QoS 2 ones keep theirs).
//! - A record written on a SUBSCRIBE may lag behind it (the write is
//!   asynchronous). A clean shutdown of a node does not hand its
//!   sessions over: its clients get them back when they connect elsewhere
//!   (whole, with a [`SessionStore`]) or when the node restarts with the
//!   same node id (if they did not resume elsewhere meanwhile: then the
//!   restarted node keeps a stale copy until it expires).
//! - Between a node's death and the adoption of its sessions (the first of
//!   its clients connecting elsewhere, or a heartbeat TTL), the sessions
//!   are on no node: messages published meanwhile by clients of other
//!   nodes are not kept for them. A node that was shut down cleanly, or
//!   stays away from NATS longer than the heartbeat TTL, has its sessions
//!   adopted too (a node coming back with the same id keeps stale copies
//!   of those until they expire). A node that was only frozen or cut off
//!   that long, and resumes, finds its heartbeat expired: it looks up the
//!   sessions it holds in the registry and gives up those that moved to
//!   another node meanwhile (their connections closed as by a takeover,
//!   5.0 DISCONNECT 0x8E), so that their clients connect again and are
//!   served in one place; it writes its clients' wills back into the
//!   bucket, but those that other nodes published meanwhile are out.
//! - A message routed to a session while it moves (between the old node
//!   removing it and the new node holding its NATS subscriptions) is lost.
//!   A session that fails to reach the new node after the old one removed
//!   it (the reply lost on the way) is lost.
//! - Two connections with one client identifier on two nodes at the same
//!   instant: the registry names one holder, but each node may keep a
//!   session for a while; the next connection resolves it.
//! - Each connection costs a registry read (and a write when the session
//!   comes from elsewhere or is new) before its CONNACK, and a write after
//!   it and at its end. Entries of sessions that expired on a node that
//!   died stay in the bucket. Client identifiers assigned by a broker
//!   (empty in the CONNECT) are unique per node only: they are registered
//!   but never taken from another node.
//! - Whoever may publish on `{prefix}.session.>` in NATS may take any
//!   session, with its messages: restrict it with NATS permissions, as the
//!   routing subjects.
//!
//! # Wills of a node that is gone
//!
//! The broker publishes the will of a client whose connection breaks; when
//! the whole node dies, another node publishes it:
//!
//! - Each node keeps the will of each connected client that has one in the
//!   key-value bucket `{prefix}_wills` (key: escaped node id `.` client
//!   id as the registry keys it; value: the Will Delay Interval in 4 bytes, then the will as
//!   an MQTT 5.0 PUBLISH packet), written when the broker reports it
//!   ([`Bridge::will_set`](fulmar_broker::Bridge::will_set)) and removed
//!   when the broker published or dropped it
//!   ([`Bridge::will_cleared`](fulmar_broker::Bridge::will_cleared)), by
//!   one task; when it is behind (NATS away), only the last change of a
//!   client is written. [`Cluster::wills`] lists them.
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
//! - A node that restarts (same node id) before any node saw its heartbeat
//!   gone first watches that heartbeat for one and a half heartbeat
//!   intervals: if it is written meanwhile, another live node has this id,
//!   and [`Cluster::claim_node_id`] (which [`Cluster::attach`] calls, and
//!   `fulmar broker` calls before it opens the store or accepts a client)
//!   fails with [`ClusterError::NodeIdInUse`]. Every heartbeat is then
//!   written with a compare-and-swap on the previous one, so that of two
//!   instances started at once with one id only one gets in, and one that
//!   finds another instance's heartbeat under its id later shuts its broker
//!   down. Else
//!   it finds its previous instance's wills in the bucket when it
//!   attaches (it writes none before) and handles them as a gone node's:
//!   each is published after its delay, counted from then, unless its
//!   client connects to this node first or resumes its session on another
//!   node (cancelled with the same compare-and-swap), or sets a new will
//!   (which replaces it). Limits: a client that connects to this node
//!   before it attached is not seen coming back; one that connects to
//!   this node again with Clean Start cancels it too.
//!
//! Limits: a will is published at most once; one claimed by a node that
//! dies before publishing it is lost. A node cut off from NATS longer than
//! the heartbeat TTL is taken for dead and its clients' wills published
//! while they may still be connected. A client whose session moves to
//! another node cancels its delayed will (the old node drops it); one that
//! resumes its session elsewhere after its node died cancels it too: the
//! node restoring the session removes the dead node's will from the bucket
//! with the same compare-and-swap the publishing node claims it with, so
//! the will is either published or cancelled, once
//! ([`ClusterStats::wills_cancelled`]). A client that connects elsewhere
//! with Clean Start does not cancel it (its session ends, and the will is
//! published after its delay). Each node lists the whole bucket every
//! heartbeat interval, which costs in proportion to the connected clients
//! with a will.

mod cluster;
mod error;
pub mod headers;
mod registry_queue;
mod sessions;
mod state;
pub mod subject;

pub use cluster::{Cluster, ClusterConfig, ClusterStats, Credentials, TlsOptions};
pub use error::ClusterError;
pub use state::SessionStore;
