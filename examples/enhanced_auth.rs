//! MQTT 5.0 enhanced authentication (section 4.12) on both sides: an
//! embedded broker whose [`AuthExchange`] challenges each client with a
//! nonce, and a `fulmar-client` [`Authenticator`] that answers it with a
//! digest of the nonce and a shared secret, then checks the broker's own
//! proof in the CONNACK. The client re-authenticates on the live connection
//! afterwards, and a client with the wrong secret is refused.
//!
//! The digest is a stand-in (std's `DefaultHasher`, not a cryptographic
//! hash): a real method would be SCRAM or an HMAC from a crypto crate. The
//! flow of packets is the same: CONNECT (method, user) -> AUTH 0x18 (nonce)
//! -> AUTH 0x18 (client proof) -> CONNACK (server proof).
//!
//! Run with `cargo run -p fulmar-examples --example enhanced_auth`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fulmar_broker::{AuthDecision, AuthExchange, AuthStep, Authenticator, Broker, ConnectInfo};
use fulmar_client::{AuthError, Client, ConnectOptions, ConnectReasonCode, Error, Reconnect};

const METHOD: &str = "DEMO-DIGEST";

/// The stand-in for an HMAC: a digest of `secret`, a label and `nonce`.
fn digest(secret: &str, label: &str, nonce: &[u8]) -> Bytes {
    let mut hasher = DefaultHasher::new();
    (secret, label, nonce).hash(&mut hasher);
    Bytes::copy_from_slice(&hasher.finish().to_be_bytes())
}

// ----------------------------------------------------------- broker side ---

/// Knows each user's secret; starts one exchange per CONNECT (and per
/// re-authentication) with the method.
struct Secrets {
    nonces: AtomicU64,
}

#[async_trait::async_trait]
impl Authenticator for Secrets {
    /// CONNECTs without an Authentication Method: refused here.
    async fn authenticate(&self, _connect: &ConnectInfo) -> AuthDecision {
        AuthDecision::Reject(ConnectReasonCode::NotAuthorized)
    }

    fn auth_method(&self, connect: &ConnectInfo, method: &str) -> Option<Box<dyn AuthExchange>> {
        (method == METHOD).then(|| {
            let nonce = self.nonces.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            Box::new(BrokerExchange {
                nonce: Bytes::copy_from_slice(&nonce),
                username: connect.username.clone(),
                user: None,
            }) as Box<dyn AuthExchange>
        })
    }
}

/// The broker's side of one exchange.
struct BrokerExchange {
    nonce: Bytes,
    /// The CONNECT's User Name, which the authorizer will know the client
    /// by: the exchange must prove that user, no other.
    username: Option<String>,
    /// Set once the client named itself.
    user: Option<String>,
}

fn secret_of(user: &str) -> Option<&'static str> {
    (user == "alice").then_some("correct horse battery staple")
}

#[async_trait::async_trait]
impl AuthExchange for BrokerExchange {
    async fn continue_auth(&mut self, data: Option<Bytes>) -> AuthStep {
        match self.user.take() {
            // First step: the client names itself; challenge it.
            None => {
                let user = data.map(|d| String::from_utf8_lossy(&d).into_owned());
                match user {
                    Some(user)
                        if secret_of(&user).is_some() && self.username == Some(user.clone()) =>
                    {
                        self.user = Some(user);
                        AuthStep::Continue(self.nonce.clone())
                    }
                    _ => AuthStep::Fail(ConnectReasonCode::NotAuthorized),
                }
            }
            // Second step: check the client's proof, send the broker's.
            Some(user) => {
                let secret = secret_of(&user).unwrap_or_default();
                if data == Some(digest(secret, "client", &self.nonce)) {
                    AuthStep::Success(Some(digest(secret, "server", &self.nonce)))
                } else {
                    AuthStep::Fail(ConnectReasonCode::NotAuthorized)
                }
            }
        }
    }
}

// ----------------------------------------------------------- client side ---

/// The client's side: its name first, then the proof for the nonce; the
/// broker's proof is checked at the end.
struct DigestClient {
    user: String,
    secret: String,
    /// The nonce of the running exchange.
    nonce: Option<Bytes>,
    exchanges: u32,
}

impl fulmar_client::Authenticator for DigestClient {
    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        self.exchanges += 1;
        self.nonce = None;
        Ok(Some(Bytes::copy_from_slice(self.user.as_bytes())))
    }

    fn challenge(&mut self, data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
        let nonce = data.ok_or("a challenge without a nonce")?;
        let proof = digest(&self.secret, "client", &nonce);
        self.nonce = Some(nonce);
        Ok(Some(proof))
    }

    fn finish(&mut self, data: Option<Bytes>) -> Result<(), AuthError> {
        let nonce = self
            .nonce
            .take()
            .ok_or("the broker skipped the challenge")?;
        if data == Some(digest(&self.secret, "server", &nonce)) {
            Ok(())
        } else {
            Err("the broker does not know our secret".into())
        }
    }
}

fn options(port: u16, secret: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port)
        .username("alice")
        .reconnect(Reconnect::disabled())
        .authentication(
            METHOD,
            DigestClient {
                user: "alice".into(),
                secret: secret.into(),
                nonce: None,
                exchanges: 0,
            },
        )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .authenticator(Secrets {
            nonces: AtomicU64::new(1),
        })
        .start()
        .await?;
    let port = broker.local_addrs()[0].port();

    let (client, connack) = Client::connect(options(port, "correct horse battery staple")).await?;
    println!(
        "connected with {:?}; the broker proved it knows the secret",
        connack.properties.authentication_method
    );
    client.reauthenticate().await?;
    println!("re-authenticated on the same connection (AUTH 0x19 ... AUTH 0x00)");
    client.publish("demo/authenticated", "hello").await?;
    client.disconnect().await?;

    match Client::connect(options(port, "wrong secret")).await {
        Err(Error::Refused { reason_code, .. }) => {
            println!("the wrong secret is refused: {reason_code}");
            assert_eq!(reason_code, ConnectReasonCode::NotAuthorized);
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    broker.shutdown().await;
    Ok(())
}
