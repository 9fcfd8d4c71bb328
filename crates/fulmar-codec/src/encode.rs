//! The encoding driver shared by every packet: size first (by running the
//! encoder against a counter), then one reservation, fixed header and body.
//!
//! The packets sent most (PUBLISH, SUBSCRIBE, CONNECT, acknowledgements
//! without properties) override [`Encode::encode_to`] and
//! [`Encode::wire_len`] with one pass that validates and sizes
//! arithmetically, then writes without a second check; the counting encoder
//! stays their reference (same bytes, same error, checked by
//! `src/tests/encode_paths.rs`).

use bytes::BytesMut;

use crate::error::EncodeError;
use crate::types::{PacketType, ProtocolVersion};
use crate::wire::{Counter, Sink, checked_var_int, put_with_var_int, var_int_len};

/// A packet body that can be encoded.
pub(crate) trait Encode {
    /// The packet type.
    const TYPE: PacketType;

    /// The low nibble of the fixed header.
    fn flags(&self) -> u8 {
        Self::TYPE.fixed_flags().unwrap_or(0)
    }

    /// Validates the packet for `version` and writes everything after the remaining length.
    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError>;

    /// Appends the whole packet to `buf`; on error nothing is appended. By
    /// default a counting pass of [`Encode::write_body`] (which validates),
    /// one reservation, then the writing pass.
    #[inline]
    fn encode_to(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_counted(self, version, buf)
    }

    /// Size of the whole packet; by default a counting pass.
    #[inline]
    fn wire_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        encoded_len_counted(self, version)
    }
}

/// [`Encode::encode_to`] by a counting pass, one reservation and a writing pass.
#[inline]
pub(crate) fn encode_counted<E: Encode + ?Sized>(
    p: &E,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let body = body_len(p, version)?;
    let remaining = checked_var_int(body)?;
    let start = buf.len();
    buf.reserve(1 + var_int_len(body) + body);
    put_fixed_header(buf, (E::TYPE.as_u8() << 4) | p.flags(), remaining);
    if let Err(e) = p.write_body(version, buf) {
        buf.truncate(start);
        return Err(e);
    }
    Ok(())
}

/// [`Encode::wire_len`] by a counting pass.
#[inline]
pub(crate) fn encoded_len_counted<E: Encode + ?Sized>(
    p: &E,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    let body = body_len(p, version)?;
    checked_var_int(body)?;
    Ok(1 + var_int_len(body) + body)
}

/// Appends the first byte of a fixed header and the remaining length (at
/// most [`crate::wire::MAX_VAR_INT`]) with one write.
#[inline]
pub(crate) fn put_fixed_header(buf: &mut BytesMut, first: u8, remaining: u32) {
    put_with_var_int(buf, &[first], remaining, &[]);
}

/// Length of the body (the remaining length).
pub(crate) fn body_len<E: Encode + ?Sized>(
    p: &E,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    let mut c = Counter::default();
    p.write_body(version, &mut c)?;
    Ok(c.0)
}

/// Size of the whole packet.
#[inline]
pub(crate) fn encoded_len<E: Encode>(
    p: &E,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    p.wire_len(version)
}

/// Appends the packet to `buf`, reserving space once.
#[inline]
pub(crate) fn encode<E: Encode>(
    p: &E,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    p.encode_to(version, buf)
}

/// Adds the public `encode` / `encoded_len` methods to packet structs.
macro_rules! public_encode {
    ($($t:ty),*) => {$(
        impl $t {
            /// Appends this packet, fixed header included, to `buf` for a peer
            /// speaking `version`. Reserves the exact size once; on error
            /// nothing is appended.
            ///
            /// # Errors
            /// [`EncodeError`](crate::EncodeError) if the packet cannot be expressed in `version`
            /// or breaks a rule of the packet format.
            pub fn encode(
                &self,
                version: crate::types::ProtocolVersion,
                buf: &mut bytes::BytesMut,
            ) -> Result<(), crate::error::EncodeError> {
                crate::encode::encode(self, version, buf)
            }

            /// Size in bytes of the encoded packet, fixed header included,
            /// without encoding it.
            ///
            /// # Errors
            /// As [`Self::encode`].
            pub fn encoded_len(
                &self,
                version: crate::types::ProtocolVersion,
            ) -> Result<usize, crate::error::EncodeError> {
                crate::encode::encoded_len(self, version)
            }
        }
    )*};
}

pub(crate) use public_encode;
