//! MQTT 5.0 enhanced authentication (section 4.12) before CONNACK: the
//! broker relays AUTH packets between the client and an [`AuthExchange`].

use bytes::Bytes;
use fulmar_codec::{
    Auth, AuthReasonCode, Connect, ConnectReasonCode, DisconnectReasonCode, MqttString,
};

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

/// The enhanced authentication state of a connection.
#[derive(Default)]
pub(super) struct AuthState {
    /// What the CONNECT presented, kept for re-authentication.
    pub(super) info: Option<ConnectInfo>,
    /// A re-authentication in progress (AUTH 0x19 after CONNACK).
    pub(super) reauth: Option<Box<dyn AuthExchange>>,
}

impl<S: super::Stream> Connection<S> {
    /// The enhanced authentication state, created if needed.
    pub(super) fn auth_state(&mut self) -> &mut AuthState {
        self.auth.get_or_insert_with(Box::default)
    }

    /// Runs the first step with the CONNECT's Authentication Data.
    pub(super) async fn start_auth(
        &mut self,
        connect: Connect,
        info: ConnectInfo,
        exchange: Box<dyn AuthExchange>,
        data: Option<Bytes>,
    ) {
        let deadline = super::later_by(self.shared.limits.connect_timeout);
        let pending = PendingAuth {
            connect,
            info,
            exchange,
            deadline,
        };
        self.auth_step(pending, data).await;
    }

    /// An AUTH from the client during the exchange. The session let only
    /// 0x18 Continue authentication with the CONNECT's method through
    /// ([MQTT-4.12.0-3], [MQTT-4.12.0-5]); it refused anything else with
    /// a CONNACK.
    pub(super) async fn on_auth(&mut self, auth: Auth) {
        let Some(pending) = self.pending_auth.take() else {
            return;
        };
        self.auth_step(*pending, auth.properties.authentication_data)
            .await;
    }

    async fn auth_step(&mut self, mut pending: PendingAuth, data: Option<Bytes>) {
        let step = tokio::time::timeout_at(pending.deadline, pending.exchange.continue_auth(data));
        let Ok(step) = step.await else {
            tracing::warn!(
                client_id = %pending.info.client_id,
                "the authentication exchange did not finish within connect_timeout: connection refused"
            );
            return self.reject(ConnectReasonCode::ServerUnavailable);
        };
        match step {
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
                    self.pending_auth = Some(Box::new(pending));
                } else {
                    self.reject(ConnectReasonCode::UnspecifiedError);
                }
            }
            AuthStep::Fail(code) => self.reject(code),
        }
    }

    /// An AUTH after CONNACK: re-authentication ([MQTT-4.12.1-1]), with the
    /// method of the CONNECT. A failure ends the connection with DISCONNECT
    /// ([MQTT-4.12.1-2]).
    pub(super) async fn on_reauth(&mut self, auth: Auth) {
        let Some(info) = self.auth.as_ref().and_then(|a| a.info.clone()) else {
            self.disconnect(DisconnectReasonCode::ProtocolError);
            return;
        };
        let Some(method) = auth.properties.authentication_method.clone() else {
            self.disconnect(DisconnectReasonCode::ProtocolError);
            return;
        };
        let reauth = self.auth.as_mut().and_then(|a| a.reauth.take());
        let exchange = match (auth.reason_code, reauth) {
            (AuthReasonCode::ReAuthenticate, None) => {
                match self
                    .shared
                    .authenticator
                    .auth_method(&info, method.as_str())
                {
                    Some(exchange) => exchange,
                    None => {
                        self.disconnect(DisconnectReasonCode::BadAuthenticationMethod);
                        return;
                    }
                }
            }
            (AuthReasonCode::ContinueAuthentication, Some(exchange)) => exchange,
            _ => {
                self.disconnect(DisconnectReasonCode::ProtocolError);
                return;
            }
        };
        self.reauth_step(exchange, method, auth.properties.authentication_data)
            .await;
    }

    async fn reauth_step(
        &mut self,
        mut exchange: Box<dyn AuthExchange>,
        method: MqttString,
        data: Option<Bytes>,
    ) {
        let timeout = self.shared.limits.connect_timeout;
        let Ok(step) = tokio::time::timeout(timeout, exchange.continue_auth(data)).await else {
            tracing::warn!("the re-authentication step did not finish within connect_timeout");
            self.disconnect(DisconnectReasonCode::ServerBusy);
            return;
        };
        let (code, data) = match step {
            AuthStep::Success(data) => (AuthReasonCode::Success, data),
            AuthStep::Continue(data) => {
                self.auth_state().reauth = Some(exchange);
                (AuthReasonCode::ContinueAuthentication, Some(data))
            }
            AuthStep::Fail(code) => {
                let code = match code {
                    ConnectReasonCode::BadAuthenticationMethod => {
                        DisconnectReasonCode::BadAuthenticationMethod
                    }
                    _ => DisconnectReasonCode::NotAuthorized,
                };
                self.disconnect(code);
                return;
            }
        };
        let mut auth = Auth {
            reason_code: code,
            ..Auth::default()
        };
        auth.properties.authentication_method = Some(method);
        auth.properties.authentication_data = data;
        if self.session.auth(auth).is_err() {
            self.disconnect(DisconnectReasonCode::UnspecifiedError);
        }
    }
}
