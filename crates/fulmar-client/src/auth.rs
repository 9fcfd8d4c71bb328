//! MQTT 5.0 enhanced authentication, the client's side (section 4.12).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Why an [`Authenticator`] cannot go on: any error type converts into it
/// with `?`.
pub type AuthError = Box<dyn std::error::Error + Send + Sync>;

/// The client's half of an MQTT 5.0 enhanced authentication exchange
/// (challenge/response, section 4.12): SCRAM, Kerberos, a signed token
/// with a server nonce, ...
///
/// Set with [`ConnectOptions::authentication`](crate::ConnectOptions::authentication),
/// together with the Authentication Method it implements. Every connection
/// (the first and each reconnection) starts an exchange: the CONNECT carries
/// the method and what [`start`](Self::start) returns; each AUTH 0x18
/// Continue authentication from the broker goes to
/// [`challenge`](Self::challenge), whose answer the client sends in an AUTH
/// 0x18 of its own; the CONNACK that accepts the connection goes to
/// [`finish`](Self::finish) before the client takes it (a broker whose last
/// word, its proof in SCRAM, does not check out changes nothing of the
/// session). [`Client::reauthenticate`](crate::Client::reauthenticate)
/// starts the same exchange on a live connection (AUTH 0x19), which ends
/// with the broker's AUTH 0x00 Success. The exchange starts once the
/// transport is up: an attempt that never reaches the broker spends none.
///
/// The calls of one exchange come in order, from the client's connection
/// task, so state kept between them (a nonce) belongs to that exchange;
/// `start` begins a new one. They run on that task: a call that blocks
/// holds up the connection (keep it to computation; fetch a token
/// beforehand). [`ConnectOptions::connect_timeout`](crate::ConnectOptions::connect_timeout)
/// bounds the exchange from the CONNECT to the CONNACK, and a
/// re-authentication from its AUTH 0x19 to the broker's AUTH 0x00.
///
/// An error from any of them ends the attempt: before the CONNACK, the
/// client closes the connection with a DISCONNECT 0x80 Unspecified error
/// and the connect (or reconnection) fails with
/// [`Error::Authentication`](crate::Error::Authentication); after it, the
/// same DISCONNECT ends the connection ([MQTT-4.12.1-2]), and a reconnection
/// follows as after any lost connection. A panic counts as an error. The
/// client itself checks what the protocol fixes: the broker's AUTH and
/// CONNACK carry the CONNECT's method, and only the client starts a
/// re-authentication (otherwise DISCONNECT 0x82 Protocol Error).
///
/// ```
/// use bytes::Bytes;
/// use fulmar_client::{AuthError, Authenticator, ConnectOptions};
///
/// /// Answers the broker's challenge with it reversed (a toy method).
/// struct Reverse;
///
/// impl Authenticator for Reverse {
///     fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
///         Ok(Some(Bytes::from_static(b"hello")))
///     }
///
///     fn challenge(&mut self, data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
///         let challenge = data.ok_or("a challenge without data")?;
///         Ok(Some(challenge.iter().rev().copied().collect::<Vec<u8>>().into()))
///     }
/// }
///
/// let options = ConnectOptions::new("127.0.0.1", 1883).authentication("REVERSE", Reverse);
/// assert_eq!(options.authentication_method(), Some("REVERSE"));
/// ```
pub trait Authenticator: Send + 'static {
    /// Begins an exchange: the Authentication Data of the CONNECT, or of the
    /// AUTH 0x19 Re-authenticate.
    ///
    /// # Errors
    /// Whatever keeps the exchange from starting; the attempt ends.
    fn start(&mut self) -> Result<Option<Bytes>, AuthError>;

    /// The broker's challenge (the Authentication Data of its AUTH 0x18):
    /// returns the Authentication Data of the answer.
    ///
    /// # Errors
    /// A challenge it cannot answer; the attempt ends.
    fn challenge(&mut self, data: Option<Bytes>) -> Result<Option<Bytes>, AuthError>;

    /// The broker accepted (CONNACK 0x00, or AUTH 0x00 Success after a
    /// re-authentication), with the Authentication Data it sent, if any.
    /// The default accepts whatever came.
    ///
    /// # Errors
    /// The broker's data does not prove what it should: the connection
    /// ends.
    fn finish(&mut self, data: Option<Bytes>) -> Result<(), AuthError> {
        let _ = data;
        Ok(())
    }
}

/// The options' Authentication Method with its authenticator. Clones of the
/// options share the authenticator.
#[derive(Clone)]
pub(crate) struct Authentication {
    pub(crate) method: String,
    authenticator: Arc<Mutex<dyn Authenticator>>,
}

impl fmt::Debug for Authentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authentication")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Authentication {
    pub(crate) fn new(method: String, authenticator: impl Authenticator) -> Self {
        Self {
            method,
            authenticator: Arc::new(Mutex::new(authenticator)),
        }
    }

    /// Runs `step` on the authenticator; a panic in it is an error (the
    /// connection task goes on).
    fn call<T>(
        &self,
        step: impl FnOnce(&mut dyn Authenticator) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let mut authenticator = self
            .authenticator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        catch_unwind(AssertUnwindSafe(|| step(&mut *authenticator)))
            .unwrap_or_else(|_| Err("the authenticator panicked".into()))
    }

    pub(crate) fn start(&self) -> Result<Option<Bytes>, AuthError> {
        self.call(|a| a.start())
    }

    pub(crate) fn challenge(&self, data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
        self.call(|a| a.challenge(data))
    }

    pub(crate) fn finish(&self, data: Option<Bytes>) -> Result<(), AuthError> {
        self.call(|a| a.finish(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panics;

    impl Authenticator for Panics {
        fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
            panic!("a bug in the application's authenticator")
        }

        fn challenge(&mut self, _data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
            Ok(None)
        }
    }

    // A panic is an error, and the authenticator stays usable after it.
    #[test]
    fn a_panic_is_an_error() {
        let auth = Authentication::new("m".into(), Panics);
        assert!(auth.start().is_err());
        assert!(auth.challenge(None).unwrap().is_none());
        assert!(auth.finish(None).is_ok());
        assert_eq!(format!("{auth:?}"), r#"Authentication { method: "m", .. }"#);
    }
}
