//! Errors of the broker API.

use std::io;

use fulmar_topic::TopicError;

/// An error of the broker API (starting, publishing and subscribing in process).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A listener could not be bound (address in use, permission denied, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as given to the builder.
        addr: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The TLS configuration of a listener is unusable (unreadable PEM, key
    /// not matching the certificate, ...).
    #[error("TLS configuration of {addr}: {reason}")]
    Tls {
        /// The address as given to the builder.
        addr: String,
        /// What is wrong.
        reason: String,
    },
    /// A topic name given to [`BrokerHandle::publish`](crate::BrokerHandle::publish) is invalid.
    #[error("invalid topic name: {0}")]
    InvalidTopic(#[source] TopicError),
    /// A topic filter given to [`BrokerHandle::subscribe`](crate::BrokerHandle::subscribe) is invalid.
    #[error("invalid topic filter: {0}")]
    InvalidFilter(#[source] TopicError),
    /// A limit of [`Limits`](crate::Limits) refused an in-process publish.
    #[error("limit exceeded: {0}")]
    LimitExceeded(&'static str),
    /// The store could not be read at start, or (from
    /// [`Pacing::wait`](crate::Pacing::wait)) failed
    /// to commit a message.
    #[error("store: {0}")]
    Store(#[source] crate::StoreError),
    /// The [mount point](crate::Listener::mount_point) of a listener is not
    /// a valid start of a topic name.
    #[error("mount point {prefix:?} of {addr}: {reason}")]
    MountPoint {
        /// The address of the listener as given to the builder.
        addr: String,
        /// The mount point as given.
        prefix: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The broker was shut down.
    #[error("the broker is shut down")]
    Shutdown,
}
