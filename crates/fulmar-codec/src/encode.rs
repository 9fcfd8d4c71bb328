//! The encoding driver shared by every packet: size first (by running the
//! encoder against a counter), then one reservation, fixed header and body.

use bytes::BytesMut;

use crate::error::EncodeError;
use crate::types::{PacketType, ProtocolVersion};
use crate::wire::{Counter, Sink, checked_var_int, put_var_int, var_int_len};

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
}

/// Length of the body (the remaining length).
pub(crate) fn body_len<E: Encode>(p: &E, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut c = Counter::default();
    p.write_body(version, &mut c)?;
    Ok(c.0)
}

/// Size of the whole packet.
pub(crate) fn encoded_len<E: Encode>(
    p: &E,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    let body = body_len(p, version)?;
    checked_var_int(body)?;
    Ok(1 + var_int_len(body) + body)
}

/// Appends the packet to `buf`, reserving space once.
pub(crate) fn encode<E: Encode>(
    p: &E,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let body = body_len(p, version)?;
    let remaining = checked_var_int(body)?;
    let start = buf.len();
    buf.reserve(1 + var_int_len(body) + body);
    Sink::put_u8(buf, (E::TYPE.as_u8() << 4) | p.flags());
    put_var_int(buf, remaining);
    if let Err(e) = p.write_body(version, buf) {
        buf.truncate(start);
        return Err(e);
    }
    Ok(())
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
