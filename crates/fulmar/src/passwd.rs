//! Password files in mosquitto_passwd's format, and the authenticator using one.
//!
//! Each line is `user:$7$ITERATIONS$SALT$HASH` (PBKDF2-HMAC-SHA512, what
//! mosquitto 2 writes) or `user:$6$SALT$HASH` (one SHA-512 of password and
//! salt, mosquitto 1.x); salt and hash in standard base64. Empty lines and
//! lines starting with `#` are ignored.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fulmar_broker::{AuthDecision, Authenticator, ConnectInfo};
use fulmar_codec::ConnectReasonCode;

/// A stored password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512 of the password followed by the salt.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
}

impl Hash {
    fn parse(text: &str) -> Result<Self, String> {
        let decode = |what: &str, b64: &str| {
            STANDARD
                .decode(b64)
                .map_err(|e| format!("{what} is not base64: {e}"))
        };
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations = iterations
                    .parse::<NonZeroU32>()
                    .map_err(|e| format!("iteration count {iterations:?}: {e}"))?;
                Ok(Self::Pbkdf2Sha512 {
                    iterations,
                    salt: decode("salt", salt)?,
                    hash: decode("hash", hash)?,
                })
            }
            ["", "6", salt, hash] => Ok(Self::Sha512 {
                salt: decode("salt", salt)?,
                hash: decode("hash", hash)?,
            }),
            _ => Err(
                "not a mosquitto_passwd hash ($7$ or $6$); plain-text passwords \
                 are not accepted (hash the file with `mosquitto_passwd -U`)"
                    .to_owned(),
            ),
        }
    }

    /// How much work a check takes, to pick the decoy.
    fn cost(&self) -> u32 {
        match self {
            Self::Pbkdf2Sha512 { iterations, .. } => iterations.get(),
            Self::Sha512 { .. } => 1,
        }
    }

    /// A hash of the same kind and cost that no password matches.
    fn decoy(&self) -> Self {
        match self {
            Self::Pbkdf2Sha512 { iterations, .. } => Self::Pbkdf2Sha512 {
                iterations: *iterations,
                salt: vec![0; 12],
                hash: vec![0; 64],
            },
            Self::Sha512 { .. } => Self::Sha512 {
                salt: vec![0; 12],
                hash: vec![0; 64],
            },
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => ring::pbkdf2::verify(
                ring::pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Self::Sha512 { salt, hash } => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                constant_time_eq(ctx.finish().as_ref(), hash)
            }
        }
    }
}

/// How `fulmar passwd` hashes a password (mosquitto_passwd's `-H`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashKind {
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations (mosquitto 2's
    /// default, 101).
    Pbkdf2Sha512(NonZeroU32),
    /// `$6$`: one SHA-512 of password and salt (mosquitto 1.x; weak).
    Sha512,
}

/// Salt bytes, as mosquitto_passwd (12).
const SALT_LEN: usize = 12;

/// `password` hashed as `kind` with a fresh random salt, in
/// mosquitto_passwd's text form (`$7$ITERATIONS$SALT$HASH` or
/// `$6$SALT$HASH`, base64): what follows `user:` in a password file.
pub(crate) fn hash_password(password: &[u8], kind: HashKind) -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random number generator failed".to_owned())?;
    Ok(match kind {
        HashKind::Pbkdf2Sha512(iterations) => {
            let mut hash = [0u8; 64];
            ring::pbkdf2::derive(
                ring::pbkdf2::PBKDF2_HMAC_SHA512,
                iterations,
                &salt,
                password,
                &mut hash,
            );
            format!(
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            )
        }
        HashKind::Sha512 => {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
            ctx.update(password);
            ctx.update(&salt);
            format!(
                "$6${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(ctx.finish().as_ref())
            )
        }
    })
}

/// Whether `text` (what follows `user:`) is a hash fulmar can check, as
/// opposed to a plain-text password (`fulmar passwd -U`).
pub(crate) fn is_hash(text: &str) -> bool {
    Hash::parse(text.trim_end()).is_ok()
}

/// Compares without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users of a password file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PasswordFile {
    users: HashMap<String, Hash>,
    /// Checked for a user not in the file, so that the answer costs the
    /// same as for a wrong password (the costliest hash of the file).
    decoy: Option<Hash>,
    /// Lines that were left out, each with why (as mosquitto, which removes
    /// such an entry and serves the other users).
    pub(crate) skipped: Vec<String>,
}

impl PasswordFile {
    /// Parses the text of a password file. A line that is not `user:hash`
    /// with a hash fulmar can check, or names a user a second time, is left
    /// out and named in [`skipped`](Self::skipped) (its user cannot log in),
    /// as mosquitto leaves it out, rather than refusing the whole file.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        let mut skipped = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // As mosquitto: trailing blanks (and CR) are not part of the hash,
            // and an indented `#` starts a comment too.
            let line = line.trim_end();
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let n = i + 1;
            let Some((user, hash)) = line.split_once(':') else {
                skipped.push(format!("line {n}: expected `user:hash`"));
                continue;
            };
            let hash = match Hash::parse(hash) {
                Ok(hash) => hash,
                Err(e) => {
                    skipped.push(format!("line {n} (user {user:?}): {e}"));
                    continue;
                }
            };
            if users.contains_key(user) {
                // The first stays, as the broker read it before.
                skipped.push(format!("line {n}: user {user:?} appears twice"));
                continue;
            }
            users.insert(user.to_owned(), hash);
        }
        let decoy = users.values().max_by_key(|h| h.cost()).map(Hash::decoy);
        Ok(Self {
            users,
            decoy,
            skipped,
        })
    }

    /// Reads and parses the file at `path`; each line left out is logged as
    /// a warning.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("auth.password_file = {}: {e}", path.display()))?;
        let file = Self::parse(&text)
            .map_err(|e| format!("auth.password_file = {}: {e}", path.display()))?;
        for line in &file.skipped {
            tracing::warn!(file = %path.display(), "password file: {line}: left out, that user cannot log in");
        }
        Ok(file)
    }

    /// Whether `user` exists and `password` is theirs. An unknown user costs
    /// as much as a wrong password. CPU-bound (PBKDF2): off the runtime
    /// threads, see [`FileAuthenticator`].
    pub(crate) fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = decoy.verify(password);
                }
                false
            }
        }
    }

    /// How many users the file holds.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// The users of this file that `newer` no longer has.
    pub(crate) fn removed_in(&self, newer: &Self) -> Vec<String> {
        self.users
            .keys()
            .filter(|user| !newer.users.contains_key(*user))
            .cloned()
            .collect()
    }
}

/// Accepts a CONNECT by the password file and the anonymous policy.
///
/// Passwords are checked on tokio's blocking threads, at most
/// [`HASHING_THREADS`] at a time: a PBKDF2 check of a file with many
/// iterations takes milliseconds, which on a runtime thread would stall
/// every connection sharing it.
#[derive(Debug)]
pub(crate) struct FileAuthenticator {
    /// The password file and the anonymous policy, replaced together when
    /// the configuration is read again (SIGHUP).
    pub(crate) settings: Arc<ArcSwap<AuthSettings>>,
    /// A client that presented a verified certificate is the certificate's
    /// common name, without a password (mosquitto's
    /// `use_identity_as_username`).
    pub(crate) identity_as_username: bool,
    /// Bounds the password checks running at once.
    pub(crate) hashing: Arc<tokio::sync::Semaphore>,
    /// How the identifier a client without one is given begins
    /// ([`fulmar_broker::Limits::assigned_client_id_prefix`]).
    pub(crate) assigned_prefix: String,
}

/// What [`FileAuthenticator`] decides by.
#[derive(Debug, Default)]
pub(crate) struct AuthSettings {
    /// The users, if a password file is configured.
    pub(crate) passwords: Option<Arc<PasswordFile>>,
    /// Whether a CONNECT without a user name is accepted.
    pub(crate) allow_anonymous: bool,
    /// Only clients whose identifier starts with this are accepted
    /// (mosquitto's `clientid_prefixes`); the others get CONNACK 0x87 Not
    /// authorized (3.1.1: 5).
    pub(crate) client_id_prefix: Option<String>,
}

impl AuthSettings {
    /// For a shared, replaceable [`FileAuthenticator::settings`].
    pub(crate) fn shared(
        passwords: Option<PasswordFile>,
        allow_anonymous: bool,
        client_id_prefix: Option<String>,
    ) -> Arc<ArcSwap<Self>> {
        Arc::new(ArcSwap::from_pointee(Self {
            passwords: passwords.map(Arc::new),
            allow_anonymous,
            client_id_prefix,
        }))
    }
}

/// How many password checks run at once, at most.
pub(crate) const HASHING_THREADS: usize = 4;

/// The permits of [`FileAuthenticator::hashing`].
pub(crate) fn hashing_permits() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(HASHING_THREADS))
}

/// The common name of the subject of a DER certificate.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

impl FileAuthenticator {
    async fn decide(&self, username: Option<&str>, password: Option<&[u8]>) -> AuthDecision {
        let settings = self.settings.load_full();
        // As mosquitto 2.0, which reads an empty string as none: an empty
        // user name is an anonymous client (the ACL's anonymous rules), and
        // an empty password is no password, which no user of the file logs
        // in with (not even one whose hash is of the empty password).
        let username = username.filter(|u| !u.is_empty());
        let password = password.filter(|p| !p.is_empty());
        match (username, &settings.passwords) {
            (None, _) if settings.allow_anonymous => AuthDecision::Allow,
            (None, _) => AuthDecision::Reject(ConnectReasonCode::NotAuthorized),
            // No password file: a user name proves nothing, so it is let
            // in only where anonymous clients are (as in mosquitto 2).
            (Some(_), None) if settings.allow_anonymous => AuthDecision::Allow,
            (Some(_), None) => AuthDecision::Reject(ConnectReasonCode::NotAuthorized),
            (Some(_), Some(_)) if password.is_none() => {
                AuthDecision::Reject(ConnectReasonCode::BadUserNameOrPassword)
            }
            (Some(user), Some(file)) => {
                let file = file.clone();
                let (user, password) = (user.to_owned(), password.unwrap_or_default().to_vec());
                // Closed never: the semaphore lives as long as `self`.
                let _permit = self.hashing.acquire().await;
                let verified =
                    tokio::task::spawn_blocking(move || file.verify(&user, &password)).await;
                if verified.unwrap_or(false) {
                    AuthDecision::Allow
                } else {
                    AuthDecision::Reject(ConnectReasonCode::BadUserNameOrPassword)
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Authenticator for FileAuthenticator {
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision {
        // Before any password is checked, as in mosquitto. A client
        // without an identifier is checked as the one it is given (which
        // begins with `assigned_prefix`, then a number), as in mosquitto.
        let prefix = self.settings.load().client_id_prefix.clone();
        let id = match connect.client_id.as_str() {
            "" => self.assigned_prefix.as_str(),
            id => id,
        };
        if let Some(prefix) = prefix
            && !id.starts_with(&prefix)
        {
            tracing::info!(
                client_id = %connect.client_id,
                prefix,
                remote = ?connect.remote_addr,
                "connection refused: the client identifier does not start with the prefix"
            );
            return AuthDecision::Reject(ConnectReasonCode::NotAuthorized);
        }
        let identity = connect
            .client_certificate
            .as_ref()
            .filter(|_| self.identity_as_username);
        let decision = match identity {
            // Verified against the listener's client CA already. Without a
            // common name there is no user name: mosquitto answers Bad User
            // Name or Password (3.1.1: return code 4), as here.
            Some(der) => common_name(der).map_or(
                AuthDecision::Reject(ConnectReasonCode::BadUserNameOrPassword),
                AuthDecision::AllowAs,
            ),
            None => {
                self.decide(connect.username.as_deref(), connect.password.as_deref())
                    .await
            }
        };
        if let AuthDecision::Reject(_) = decision {
            tracing::info!(
                client_id = %connect.client_id,
                username = ?connect.username,
                remote = ?connect.remote_addr,
                "connection refused: not authorized"
            );
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by mosquitto_passwd 2.0.11 for alice / secret.
    const ALICE: &str = "alice:$7$101$1Q1dew08D//GHKYI$rT986A/hzl9tWri62d4sk6HRwH258BtrEJMz+2PHsgFj9yz3KLjUSMQMIeM/AkoueiSjjnN/ZvKLX/zDmYzY7g==";

    // mosquitto reads these; fulmar refused to start (the trailing blanks
    // were taken for part of the base64 hash).
    #[test]
    fn trailing_blanks_and_indented_comments_are_read_as_mosquitto_does() {
        let file = PasswordFile::parse(&format!("  # users\n{ALICE}  \t\n\t# more\n")).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("alice", b"secret"));
    }

    #[test]
    fn mosquitto_pbkdf2_hashes_verify() {
        let file = PasswordFile::parse(&format!("# users\n\n{ALICE}\n")).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"Secret"));
        assert!(!file.verify("alice", b""));
        assert!(!file.verify("bob", b"secret"));
    }

    #[test]
    fn sha512_hashes_verify() {
        let salt = b"0123456789ab";
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
        ctx.update(b"pw");
        ctx.update(salt);
        let line = format!(
            "bob:$6${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(ctx.finish())
        );
        let file = PasswordFile::parse(&line).unwrap();
        assert!(file.verify("bob", b"pw"));
        assert!(!file.verify("bob", b"pW"));
    }

    /// A bad line is left out with its number, and the other users still
    /// log in (as mosquitto; found by an operator review: one bad line
    /// stopped the broker from starting).
    #[test]
    fn bad_lines_are_left_out_with_their_number() {
        let skipped = |text: &str| PasswordFile::parse(text).unwrap().skipped;
        let e = skipped(&format!("# c\nbob:secret\n{ALICE}\n"));
        assert!(e.len() == 1 && e[0].starts_with("line 2"), "{e:?}");
        let e = skipped("\nnocolon\n");
        assert!(e.len() == 1 && e[0].starts_with("line 2"), "{e:?}");
        let e = skipped("a:$7$0$AAAA$AAAA\n");
        assert!(e[0].contains("iteration"), "{e:?}");
        let e = skipped(&format!("{ALICE}\n{ALICE}\n"));
        assert!(e[0].contains("twice"), "{e:?}");
        let file = PasswordFile::parse(&format!("erin:\ndave:plainpw\n{ALICE}\n")).unwrap();
        assert_eq!((file.len(), file.skipped.len()), (1, 2));
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("erin", b""));
    }

    #[test]
    fn the_common_name_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("device-7"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let nameless = params.self_signed(&key).unwrap();
        assert_eq!(common_name(nameless.der()), None);
        assert_eq!(common_name(b"not a certificate"), None);
    }

    // v5:MQTT-3.1.4-2: the server may refuse a CONNECT that fails authentication
    #[tokio::test]
    async fn the_authenticator_checks_users_and_anonymous_clients() {
        let auth = FileAuthenticator {
            settings: AuthSettings::shared(Some(PasswordFile::parse(ALICE).unwrap()), false, None),
            identity_as_username: false,
            hashing: hashing_permits(),
            assigned_prefix: "fulmar-".to_owned(),
        };
        assert_eq!(
            auth.decide(Some("alice"), Some(b"secret")).await,
            AuthDecision::Allow
        );
        assert_eq!(
            auth.decide(Some("alice"), Some(b"nope")).await,
            AuthDecision::Reject(ConnectReasonCode::BadUserNameOrPassword)
        );
        assert_eq!(
            auth.decide(Some("alice"), None).await,
            AuthDecision::Reject(ConnectReasonCode::BadUserNameOrPassword)
        );
        assert_eq!(
            auth.decide(None, None).await,
            AuthDecision::Reject(ConnectReasonCode::NotAuthorized)
        );
        let open = FileAuthenticator {
            settings: AuthSettings::shared(None, true, None),
            identity_as_username: false,
            hashing: hashing_permits(),
            assigned_prefix: "fulmar-".to_owned(),
        };
        assert_eq!(open.decide(None, None).await, AuthDecision::Allow);
        assert_eq!(open.decide(Some("x"), None).await, AuthDecision::Allow);
    }

    /// Written by mosquitto_passwd 2.0.11 for e / (the empty password).
    const EMPTY: &str = "e:$7$101$+Miep5jenuiE9uxb$7eAVDZxPVT/QFk1Jo7b9rtfOUpkuAdJr9xMhUsYfxwRz3SoDPTQ5n2vK6ydc8exeaPtJwDUT5Ap2+nUxmy7dKw==";

    // Checked against mosquitto 2.0.11 with the same password file: a user
    // whose hash is of the empty password logs in neither without a
    // password nor with an empty one; an empty user name is an anonymous
    // client, let in only where those are. (config, no spec statement;
    // v5:MQTT-3.1.4-2 lets the server refuse)
    #[tokio::test]
    async fn empty_passwords_and_user_names_are_none_as_in_mosquitto() {
        let file = PasswordFile::parse(&format!("{ALICE}\n{EMPTY}\n")).unwrap();
        assert!(file.verify("e", b""));
        for allow_anonymous in [false, true] {
            let auth = FileAuthenticator {
                settings: AuthSettings::shared(Some(file.clone()), allow_anonymous, None),
                identity_as_username: false,
                hashing: hashing_permits(),
                assigned_prefix: "fulmar-".to_owned(),
            };
            let refused = AuthDecision::Reject(ConnectReasonCode::BadUserNameOrPassword);
            assert_eq!(auth.decide(Some("e"), None).await, refused);
            assert_eq!(auth.decide(Some("e"), Some(b"")).await, refused);
            assert_eq!(auth.decide(Some("alice"), Some(b"")).await, refused);
            let anonymous = if allow_anonymous {
                AuthDecision::Allow
            } else {
                AuthDecision::Reject(ConnectReasonCode::NotAuthorized)
            };
            assert_eq!(auth.decide(Some(""), Some(b"")).await, anonymous);
            assert_eq!(auth.decide(Some(""), None).await, anonymous);
        }
    }

    // v5:MQTT-3.1.4-2: without a password file a user name proves nothing;
    // with anonymous clients refused, it must not let a client in (as in
    // mosquitto 2), nor give it a name the ACL would trust.
    #[tokio::test]
    async fn no_password_file_and_no_anonymous_clients_refuses_user_names_too() {
        let closed = FileAuthenticator {
            settings: AuthSettings::shared(None, false, None),
            identity_as_username: true,
            hashing: hashing_permits(),
            assigned_prefix: "fulmar-".to_owned(),
        };
        assert_eq!(
            closed.decide(Some("admin"), Some(b"anything")).await,
            AuthDecision::Reject(ConnectReasonCode::NotAuthorized)
        );
        assert_eq!(
            closed.decide(None, None).await,
            AuthDecision::Reject(ConnectReasonCode::NotAuthorized)
        );
    }

    /// A password file with this many PBKDF2 iterations for `user` / `password`.
    fn costly_file(user: &str, password: &[u8], iterations: u32) -> PasswordFile {
        let iterations = NonZeroU32::new(iterations).unwrap();
        let salt = b"0123456789ab";
        let mut hash = [0u8; 64];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA512,
            iterations,
            salt,
            password,
            &mut hash,
        );
        PasswordFile::parse(&format!(
            "{user}:$7${iterations}${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        ))
        .unwrap()
    }

    // A password check does not hold the runtime thread: on a current-thread
    // runtime, other tasks run while a costly check is under way.
    #[test]
    fn password_checks_leave_the_runtime_thread_free() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let auth = Arc::new(FileAuthenticator {
                settings: AuthSettings::shared(
                    Some(costly_file("carol", b"pw", 300_000)),
                    false,
                    None,
                ),
                identity_as_username: false,
                hashing: hashing_permits(),
                assigned_prefix: "fulmar-".to_owned(),
            });
            let checking = {
                let auth = auth.clone();
                tokio::spawn(async move { auth.decide(Some("carol"), Some(b"pw")).await })
            };
            // The check has started (the task ran up to its first await)
            // and not finished: had it hashed on this thread, it would have
            // run to its end before this task was polled again.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            assert!(
                !checking.is_finished(),
                "the check ran on the runtime thread"
            );
            assert_eq!(checking.await.unwrap(), AuthDecision::Allow);
        });
    }

    #[test]
    fn an_unknown_user_is_checked_against_a_decoy() {
        let file = costly_file("dave", b"pw", 1000);
        assert_eq!(
            file.decoy.as_ref().map(Hash::cost),
            Some(1000),
            "as costly as the costliest hash"
        );
        assert!(!file.verify("eve", b"pw"));
        assert!(!file.decoy.as_ref().unwrap().verify(b""));
        assert!(file.verify("dave", b"pw"));
        assert_eq!(PasswordFile::parse("").unwrap().decoy, None);
    }
}
