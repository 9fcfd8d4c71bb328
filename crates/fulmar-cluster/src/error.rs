//! [`ClusterError`].

/// What can go wrong when a node joins or runs in a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is not usable (node id, subject prefix, URLs).
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[source] async_nats::ConnectError),
    /// Reading a credentials file failed.
    #[error("cannot read NATS credentials: {0}")]
    Credentials(#[source] std::io::Error),
    /// A JetStream stream or key-value bucket could not be created or read.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// [`Cluster::attach`](crate::Cluster::attach) was called twice.
    #[error("the cluster is already attached to a broker")]
    AlreadyAttached,
    /// Another live node writes the heartbeat of this node id: two nodes
    /// were given the same [`ClusterConfig::node_id`](crate::ClusterConfig::node_id).
    /// (Taken for this node's previous instance, its clients' wills would
    /// have been published while they were connected.)
    #[error("node id {0:?} is in use by another live node")]
    NodeIdInUse(String),
    /// The broker stopped while the cluster was loading into it.
    #[error("broker: {0}")]
    Broker(#[from] fulmar_broker::BrokerError),
}

impl ClusterError {
    pub(crate) fn jetstream(context: &str, err: impl std::fmt::Display) -> Self {
        Self::JetStream(format!("{context}: {err}"))
    }
}
