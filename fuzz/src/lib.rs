//! Support code of fulmar's cargo-fuzz targets (see `fuzz/README.md`).
//!
//! - [`checks`]: what `decode_v311` and `decode_v5` assert about every input; the
//!   fulmar-codec test `tests/fuzz_corpus.rs` includes the same file to replay the corpus
//!   on stable.
//! - [`build`]: structure-aware packets for `roundtrip`.
//! - [`topic_checks`]: what `topic_parse` asserts; replayed by fulmar-topic's
//!   `tests/fuzz_corpus.rs`.
//! - [`broker_checks`]: what `broker` asserts about a script of client connections and
//!   application calls played on an embedded `fulmar_broker` broker; replayed by
//!   fulmar-broker's `tests/fuzz_corpus.rs`.
//! - [`client_checks`]: what `client` asserts about a `fulmar_client::Client` facing a
//!   broker played by a script; replayed by fulmar-client's `tests/fuzz_corpus.rs`.
//! - [`script`]: the byte cursor and helpers the `broker` and `client` scripts share.
//! - [`session_checks`]: what `session` asserts about a script played on a
//!   `fulmar_session::Session`; replayed by fulmar-session's `tests/fuzz_corpus.rs`.
//! - [`ws_checks`]: what `ws_frames` asserts about the broker's WebSocket frame decoder
//!   (against a naive reading of RFC 6455); replayed by fulmar-broker's
//!   `tests/ws_fuzz_corpus.rs`.
//!
//! ```
//! use fulmar_codec::ProtocolVersion;
//! use fulmar_fuzz::checks::check_decode;
//!
//! // PINGREQ, then half a PUBACK: one packet, then "need more bytes".
//! let outcome = check_decode(&[0xC0, 0x00, 0x40, 0x02, 0x00], ProtocolVersion::V311);
//! assert_eq!(outcome.packets, 1);
//! assert!(!outcome.error);
//! ```

pub mod broker_checks;
pub mod build;
pub mod checks;
pub mod client_checks;
pub mod script;
pub mod session_checks;
pub mod topic_checks;
pub mod ws_checks;
