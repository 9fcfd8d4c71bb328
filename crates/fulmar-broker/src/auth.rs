//! Authentication and authorization hooks.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use fulmar_codec::{ConnectReasonCode, ProtocolVersion};
use futures::FutureExt;

/// What a client presented in CONNECT, for an [`Authenticator`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectInfo {
    /// The client identifier as sent (may be empty: the broker assigns one later).
    pub client_id: String,
    /// User Name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<Bytes>,
    /// The protocol version of the CONNECT.
    pub protocol_version: ProtocolVersion,
    /// The peer's address (`None` for in-process clients).
    pub remote_addr: Option<SocketAddr>,
    /// The DER of the certificate the client presented on a TLS listener
    /// with a client CA ([`TlsConfig::client_ca_pem`](crate::TlsConfig)),
    /// already verified against that CA; `None` otherwise.
    pub client_certificate: Option<Bytes>,
}

/// The decision of an [`Authenticator`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthDecision {
    /// Accept the connection.
    Allow,
    /// Accept the connection as this user: the [`Authorizer`] and the
    /// events see this name instead of the CONNECT's User Name (for
    /// example the common name of the client's certificate, see
    /// [`ConnectInfo::client_certificate`]).
    AllowAs(String),
    /// Refuse it with this CONNACK reason code (an error code, 0x80 or above).
    /// A 3.1.1 client gets the matching return code (e.g. 0x86 becomes 4,
    /// 0x87 becomes 5); a code without a 3.1.1 equivalent closes the
    /// connection without CONNACK ([MQTT-3.2.2-6] of 3.1.1).
    Reject(ConnectReasonCode),
}

/// A connected client, for an [`Authorizer`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client identifier (assigned by the broker when the client sent none).
    pub client_id: String,
    /// User Name from CONNECT, if any, or the name the [`Authenticator`]
    /// gave ([`AuthDecision::AllowAs`]).
    pub username: Option<String>,
    /// The protocol version of the connection.
    pub protocol_version: ProtocolVersion,
}

/// Decides whether a CONNECT is accepted. Called once per connection, before
/// the CONNACK; the default ([`AllowAll`]) accepts everybody. A panic in it
/// (or in an [`AuthExchange`]) is logged and refuses the connection (0x80).
/// It must decide within [`Limits::connect_timeout`](crate::Limits), as must
/// an enhanced authentication exchange as a whole: past it the connection
/// is refused with 0x88 Server unavailable (3.1.1: return code 3).
///
/// MQTT 5.0 enhanced authentication (section 4.12): a CONNECT with an
/// Authentication Method goes to [`auth_method`](Self::auth_method) instead
/// of [`authenticate`](Self::authenticate). Without an [`AuthExchange`] for
/// the method (the default), it is refused with CONNACK 0x8C Bad
/// authentication method.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Accept or refuse `connect` (no Authentication Method).
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision;

    /// Starts an enhanced authentication exchange for `method` (the CONNECT's
    /// Authentication Method), or `None` when the method is not supported.
    fn auth_method(&self, _connect: &ConnectInfo, _method: &str) -> Option<Box<dyn AuthExchange>> {
        None
    }
}

/// One enhanced authentication exchange (challenge/response), with whatever
/// state it needs between steps. The broker calls
/// [`continue_auth`](Self::continue_auth) with the CONNECT's Authentication
/// Data, then with the data of each AUTH 0x18 the client answers, until it
/// returns [`AuthStep::Success`] or [`AuthStep::Fail`]. The exchange must
/// finish within [`Limits::connect_timeout`](crate::Limits::connect_timeout).
///
/// The [`Authorizer`] then knows the client by the CONNECT's User Name
/// ([`ConnectInfo::username`]), which the broker does not check against the
/// exchange: a method that proves another identity (a user named in its
/// Authentication Data) must fail unless it is that User Name, or a client
/// could authenticate as one user and be authorized as another.
#[async_trait::async_trait]
pub trait AuthExchange: Send + Sync + 'static {
    /// The next step, given the client's Authentication Data.
    async fn continue_auth(&mut self, data: Option<Bytes>) -> AuthStep;
}

/// The outcome of one [`AuthExchange`] step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Authenticated: CONNACK 0x00, with this Authentication Data if any.
    Success(Option<Bytes>),
    /// Send AUTH 0x18 Continue authentication with this Authentication Data
    /// and wait for the client's answer.
    Continue(Bytes),
    /// Refuse: CONNACK with this reason code (0x80 or above, e.g. 0x87).
    Fail(ConnectReasonCode),
}

/// Decides per topic whether a client may publish or subscribe; the default
/// ([`AllowAll`]) allows everything. A panic in one of its methods is logged
/// and taken as a denial.
///
/// A denied PUBLISH is not routed: an MQTT 5.0 client gets PUBACK/PUBREC
/// 0x87 (Not authorized); a 3.1.1 client gets a normal acknowledgement, as
/// 3.1.1 requires ([MQTT-3.3.5-2]). A denied subscription gets SUBACK 0x87
/// (5.0) or 0x80 (3.1.1).
///
/// Subscriptions are asked about again when a session is resumed, since the
/// client may connect as another user than the one who subscribed: those
/// denied now are withdrawn, with the messages queued for them. Call
/// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize) when the
/// rules change, to do the same for the clients connected.
///
/// A subscription may also be granted for more than its client may read (a
/// filter `sensors/#` while `sensors/secret` is denied, say), as mosquitto's
/// ACL file does: an authorizer whose [`checks_reads`](Self::checks_reads)
/// is true is asked [`authorize_read`](Self::authorize_read) for each message
/// before it goes to a client (queued for an offline session, sent as a
/// retained message at SUBSCRIBE, or chosen for a shared subscription), and
/// a message denied is not delivered to that client.
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// May `client` publish to `topic`? Also asked for the will topic at
    /// CONNECT, and again for a will recovered from the [`Store`](crate::Store)
    /// when the broker starts, and on
    /// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize).
    async fn authorize_publish(&self, client: &ClientInfo, topic: &str) -> bool;
    /// May `client` subscribe to `filter` (as sent, `$share/...` included,
    /// with the [mount point](crate::Listener::mount_point) of the client's
    /// listener)? Topics given to the other checks have the mount point too.
    async fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool;

    /// Whether [`authorize_read`](Self::authorize_read) is asked for each
    /// delivery. Read once, when the broker starts; false by default, and
    /// then reading costs nothing.
    fn checks_reads(&self) -> bool {
        false
    }

    /// May `client` receive a message published to `topic`, through one of
    /// its subscriptions? Asked only when [`checks_reads`](Self::checks_reads)
    /// is true, for every message to every such client, while the broker
    /// routes it and holds its lock: it must be quick, must not block, and
    /// must not call the broker. The default allows.
    ///
    /// A session kept while its client is away is checked as its last
    /// client; a session restored from the store is checked when its client
    /// connects (the messages queued meanwhile that it may not read are
    /// dropped then).
    fn authorize_read(&self, _client: &ClientInfo, _topic: &str) -> bool {
        true
    }
}

/// The default hooks: every client is accepted and may do everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

#[async_trait::async_trait]
impl Authenticator for AllowAll {
    async fn authenticate(&self, _connect: &ConnectInfo) -> AuthDecision {
        AuthDecision::Allow
    }
}

#[async_trait::async_trait]
impl Authorizer for AllowAll {
    async fn authorize_publish(&self, _client: &ClientInfo, _topic: &str) -> bool {
        true
    }

    async fn authorize_subscribe(&self, _client: &ClientInfo, _filter: &str) -> bool {
        true
    }
}

/// An application's hook, kept from tearing a connection down half way: a
/// panic in it is logged and taken as a refusal. Unguarded, it unwound the
/// connection's task past its clean-up (a client left counted as connected
/// for ever, its will never published), or poisoned the broker's lock from
/// [`Authorizer::authorize_read`].
pub(crate) struct Guarded<T>(pub(crate) T);

/// Logs a hook's panic; the refusal the caller returns instead is `outcome`.
fn panicked(hook: &str, client_id: &str, outcome: &str) {
    tracing::error!(client_id, "the {hook} hook panicked: {outcome}");
}

#[async_trait::async_trait]
impl<A: Authenticator> Authenticator for Guarded<A> {
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision {
        AssertUnwindSafe(self.0.authenticate(connect))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                panicked(
                    "authenticate",
                    &connect.client_id,
                    "connection refused (0x80)",
                );
                AuthDecision::Reject(ConnectReasonCode::UnspecifiedError)
            })
    }

    fn auth_method(&self, connect: &ConnectInfo, method: &str) -> Option<Box<dyn AuthExchange>> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.auth_method(connect, method))) {
            Ok(exchange) => exchange.map(|e| Box::new(Guarded(e)) as Box<dyn AuthExchange>),
            Err(_) => {
                panicked("auth_method", &connect.client_id, "method refused (0x8C)");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl AuthExchange for Guarded<Box<dyn AuthExchange>> {
    async fn continue_auth(&mut self, data: Option<Bytes>) -> AuthStep {
        AssertUnwindSafe(self.0.continue_auth(data))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                panicked("continue_auth", "", "authentication failed (0x80)");
                AuthStep::Fail(ConnectReasonCode::UnspecifiedError)
            })
    }
}

#[async_trait::async_trait]
impl<A: Authorizer> Authorizer for Guarded<A> {
    async fn authorize_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        AssertUnwindSafe(self.0.authorize_publish(client, topic))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                panicked("authorize_publish", &client.client_id, "denied");
                false
            })
    }

    async fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        AssertUnwindSafe(self.0.authorize_subscribe(client, filter))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                panicked("authorize_subscribe", &client.client_id, "denied");
                false
            })
    }

    fn checks_reads(&self) -> bool {
        // Read once at start: a panic there is the application's to see.
        self.0.checks_reads()
    }

    fn authorize_read(&self, client: &ClientInfo, topic: &str) -> bool {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.0.authorize_read(client, topic)))
            .unwrap_or_else(|_| {
                panicked("authorize_read", &client.client_id, "denied");
                false
            })
    }
}
