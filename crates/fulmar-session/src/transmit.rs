//! The queue of packets waiting for `poll_transmit`. Acknowledgements and
//! pings, the bulk of the traffic, are stored as a few bytes instead of a
//! whole `Packet` (256 bytes); the rest is boxed.

use std::collections::VecDeque;

use fulmar_codec::{
    Packet, PacketId, PubAck, PubAckReasonCode, PubComp, PubCompReasonCode, PubRec,
    PubRecReasonCode, PubRel, PubRelReasonCode,
};

#[derive(Debug)]
enum Queued {
    PubAck(PacketId, PubAckReasonCode),
    PubRec(PacketId, PubRecReasonCode),
    PubRel(PacketId, PubRelReasonCode),
    PubComp(PacketId, PubCompReasonCode),
    PingReq,
    PingResp,
    Other(Box<Packet>),
}

/// Packets to send, in order.
#[derive(Debug, Default)]
pub(crate) struct TxQueue(VecDeque<Queued>);

impl TxQueue {
    pub(crate) fn push_back(&mut self, packet: Packet) {
        let queued = match packet {
            Packet::PubAck(a) if a.properties.is_empty() => {
                Queued::PubAck(a.packet_id, a.reason_code)
            }
            Packet::PubRec(a) if a.properties.is_empty() => {
                Queued::PubRec(a.packet_id, a.reason_code)
            }
            Packet::PubRel(a) if a.properties.is_empty() => {
                Queued::PubRel(a.packet_id, a.reason_code)
            }
            Packet::PubComp(a) if a.properties.is_empty() => {
                Queued::PubComp(a.packet_id, a.reason_code)
            }
            Packet::PingReq => Queued::PingReq,
            Packet::PingResp => Queued::PingResp,
            other => Queued::Other(Box::new(other)),
        };
        self.0.push_back(queued);
    }

    /// Queues a PUBACK with reason Success and no properties, the same as
    /// `push_back(PubAck::new(id).into())` without building the `Packet`.
    pub(crate) fn push_puback(&mut self, id: PacketId) {
        self.0
            .push_back(Queued::PubAck(id, PubAckReasonCode::Success));
    }

    /// Queues a PUBREC with reason Success and no properties.
    pub(crate) fn push_pubrec(&mut self, id: PacketId) {
        self.0
            .push_back(Queued::PubRec(id, PubRecReasonCode::Success));
    }

    /// Queues a PUBREL without properties.
    pub(crate) fn push_pubrel(&mut self, id: PacketId, reason_code: PubRelReasonCode) {
        self.0.push_back(Queued::PubRel(id, reason_code));
    }

    /// Queues a PUBCOMP without properties.
    pub(crate) fn push_pubcomp(&mut self, id: PacketId, reason_code: PubCompReasonCode) {
        self.0.push_back(Queued::PubComp(id, reason_code));
    }

    /// Sets the reason code of the PUBACK or PUBREC queued for `id`, if it
    /// is still queued (searched from the back: it was queued last, or
    /// nearly); false if there is none, or `code` has no PUBREC equivalent.
    pub(crate) fn set_ack_code(&mut self, id: PacketId, code: PubAckReasonCode) -> bool {
        for queued in self.0.iter_mut().rev() {
            match queued {
                Queued::PubAck(i, c) if *i == id => {
                    *c = code;
                    return true;
                }
                Queued::PubRec(i, c) if *i == id => {
                    return PubRecReasonCode::try_from(code.as_u8())
                        .map(|code| *c = code)
                        .is_ok();
                }
                Queued::Other(packet) => match packet.as_mut() {
                    Packet::PubAck(ack) if ack.packet_id == id => {
                        ack.reason_code = code;
                        return true;
                    }
                    Packet::PubRec(rec) if rec.packet_id == id => {
                        return PubRecReasonCode::try_from(code.as_u8())
                            .map(|code| rec.reason_code = code)
                            .is_ok();
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        false
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Packet> {
        // Each arm builds its `Option<Packet>` in place (a `Packet` is a
        // large value, and wrapping a finished one in `Some` is a copy).
        match self.0.pop_front()? {
            Queued::PubAck(id, reason_code) => Some(Packet::PubAck(PubAck {
                reason_code,
                ..PubAck::new(id)
            })),
            Queued::PubRec(id, reason_code) => Some(Packet::PubRec(PubRec {
                reason_code,
                ..PubRec::new(id)
            })),
            Queued::PubRel(id, reason_code) => Some(Packet::PubRel(PubRel {
                reason_code,
                ..PubRel::new(id)
            })),
            Queued::PubComp(id, reason_code) => Some(Packet::PubComp(PubComp {
                reason_code,
                ..PubComp::new(id)
            })),
            Queued::PingReq => Some(Packet::PingReq),
            Queued::PingResp => Some(Packet::PingResp),
            Queued::Other(packet) => Some(*packet),
        }
    }

    /// The largest packet a small entry stands for (a PUBREL with a reason
    /// code is 5 bytes): a peer's Maximum Packet Size of at least this takes
    /// any of them as it is.
    pub(crate) const SMALL_MAX: u32 = 16;

    /// Whether the next packet is stored small (an acknowledgement without
    /// properties, or a ping), and if so whether it is a PINGREQ.
    #[inline]
    pub(crate) fn front_small(&self) -> Option<bool> {
        match self.0.front()? {
            Queued::Other(_) => None,
            Queued::PingReq => Some(true),
            _ => Some(false),
        }
    }

    /// Packets queued.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Room for packets (allocated).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Frees the buffer of an empty queue.
    pub(crate) fn release_if_empty(&mut self) {
        if self.0.is_empty() {
            self.0 = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulmar_codec::{ConnAck, ConnectReasonCode};

    #[test]
    fn packets_come_out_as_they_went_in() {
        let id = PacketId::ONE;
        let mut rel = PubRel::new(id);
        rel.reason_code = PubRelReasonCode::PacketIdentifierNotFound;
        let mut ack = PubAck::new(id);
        ack.properties.reason_string = Some("why".into());
        let packets = vec![
            Packet::PubAck(PubAck::new(id)),
            Packet::PubRec(PubRec::new(id)),
            Packet::PubRel(rel),
            Packet::PubComp(PubComp::new(id)),
            Packet::PingReq,
            Packet::PingResp,
            Packet::PubAck(ack),
            Packet::ConnAck(ConnAck::new(false, ConnectReasonCode::Success)),
        ];
        let mut q = TxQueue::default();
        for p in packets.clone() {
            q.push_back(p);
        }
        let out: Vec<Packet> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(out, packets);
        assert!(q.is_empty());
    }
}

#[cfg(test)]
mod direct_tests {
    use super::*;

    #[test]
    fn direct_pushes_equal_the_packets_they_stand_for() {
        let id = PacketId::ONE;
        let mut direct = TxQueue::default();
        direct.push_puback(id);
        direct.push_pubrec(id);
        direct.push_pubrel(id, PubRelReasonCode::PacketIdentifierNotFound);
        direct.push_pubcomp(id, PubCompReasonCode::Success);
        let mut rel = PubRel::new(id);
        rel.reason_code = PubRelReasonCode::PacketIdentifierNotFound;
        let expected = vec![
            Packet::PubAck(PubAck::new(id)),
            Packet::PubRec(PubRec::new(id)),
            Packet::PubRel(rel),
            Packet::PubComp(PubComp::new(id)),
        ];
        let out: Vec<Packet> = std::iter::from_fn(|| direct.pop_front()).collect();
        assert_eq!(out, expected);
    }
}
