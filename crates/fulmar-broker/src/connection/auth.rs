//! MQTT 5.0 enhanced authentication (section 4.12) before CONNACK: the
//! broker relays AUTH packets between the client and an [`AuthExchange`].

use bytes::Bytes;
use fulmar_codec::{Auth, AuthReasonCode, Connect, ConnectReasonCode};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Connection;
use crate::auth::{AuthExchange, AuthStep, ConnectInfo};

/// A CONNECT whose authentication exchange waits for the client's next AUTH.
pub(super) struct PendingAuth {
    connect: Connect,
    info: ConnectInfo,
    exchange: Box<dyn AuthExchange>,
    deadline: tokio::time::Instant,
}

impl PendingAuth {
    /// When the exchange runs out of time.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }
}

/// Completes at `deadline`; never without one.
pub(super) async fn expiry(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<'_, S> {
    /// Runs the first step with the CONNECT's Authentication Data.
    pub(super) async fn start_auth(
        &mut self,
        connect: Connect,
        info: ConnectInfo,
        exchange: Box<dyn AuthExchange>,
        data: Option<Bytes>,
    ) {
        let deadline = tokio::time::Instant::now() + self.shared.limits.connect_timeout;
        let pending = PendingAuth {
            connect,
            info,
            exchange,
            deadline,
        };
        self.auth_step(pending, data).await;
    }

    /// An AUTH from the client during the exchange: it must continue the
    /// exchange (0x18) with the same method ([MQTT-4.12.0-5]); anything else
    /// is a protocol error (CONNACK 0x82).
    pub(super) async fn on_auth(&mut self, auth: Auth) {
        let Some(pending) = self.pending_auth.take() else {
            return;
        };
        let method = auth.properties.authentication_method.as_ref();
        if auth.reason_code != AuthReasonCode::ContinueAuthentication
            || method != pending.connect.properties.authentication_method.as_ref()
        {
            return self.reject(ConnectReasonCode::ProtocolError);
        }
        self.auth_step(pending, auth.properties.authentication_data)
            .await;
    }

    async fn auth_step(&mut self, mut pending: PendingAuth, data: Option<Bytes>) {
        match pending.exchange.continue_auth(data).await {
            AuthStep::Success(data) => {
                self.complete_connect(pending.connect, pending.info, data)
                    .await;
            }
            AuthStep::Continue(data) => {
                let mut auth = Auth {
                    reason_code: AuthReasonCode::ContinueAuthentication,
                    ..Auth::default()
                };
                auth.properties.authentication_data = Some(data);
                if self.session.auth(auth).is_ok() {
                    self.pending_auth = Some(pending);
                } else {
                    self.reject(ConnectReasonCode::UnspecifiedError);
                }
            }
            AuthStep::Fail(code) => self.reject(code),
        }
    }
}
