//! Pieces shared by the scripts of the `broker` and `client` targets
//! (`broker_checks.rs`, `client_checks.rs`), which the replay tests of fulmar-broker and
//! fulmar-client include with `#[path]` next to this file.

use fulmar_codec::QoS;

/// The bytes of a script, read from the front; missing bytes read as 0.
pub struct Cursor<'a>(pub &'a [u8]);

impl Cursor<'_> {
    /// The next byte, 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes, fewer at the end.
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    /// Whether the script is played to its end.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Lets every other task of the single-threaded runtime run, `rounds` times.
pub async fn settle(rounds: usize) {
    for _ in 0..rounds {
        tokio::task::yield_now().await;
    }
}

/// The QoS of the two low bits of `bits` (3 reads as 0).
pub fn qos(bits: u8) -> QoS {
    match bits & 3 {
        0 | 3 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A current-thread tokio runtime with timers, as both targets play on.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("no tokio runtime: {e}"),
    }
}
