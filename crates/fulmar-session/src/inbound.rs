//! Inbound QoS machinery, the same for both roles: PUBACK for QoS 1,
//! exactly-once delivery of QoS 2 (the identifier is stored from PUBLISH to
//! PUBREL), inbound topic aliases, our Receive Maximum.
//!
//! QoS 2 messages are delivered when the PUBLISH first arrives (the "store the
//! packet identifier, then deliver" method of MQTT 5.0 figure 4.3); a resent
//! PUBLISH with a stored identifier is acknowledged again but not delivered.

use std::time::Instant;

use fulmar_codec::{
    AliasError, PacketId, ProtocolVersion, PubAckReasonCode, PubCompReasonCode, Publish, QoS,
};

use crate::error::{ApiError, Error, ProtocolViolation};
use crate::event::Event;
use crate::session::{Session, State};

impl Session {
    /// A PUBLISH from the peer (role-specific checks are done by the caller).
    pub(crate) fn receive_publish(&mut self, mut publish: Publish) -> Result<(), Error> {
        if self.accept_publish(&mut publish)? {
            self.events.push_back(Event::Message(publish));
        }
        Ok(())
    }

    /// The same as [`receive_publish`](Self::receive_publish) but for the
    /// [`Event::Message`]: resolves the topic of `publish` in place, queues
    /// its acknowledgement, and returns whether it is to be reported (a
    /// message to deliver). The caller reports it from where it lies: a
    /// `Publish` is a large value, and every move is a copy.
    #[inline]
    pub(crate) fn accept_publish(&mut self, publish: &mut Publish) -> Result<bool, Error> {
        self.resolve_topic(publish)?;
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, None) => Ok(true),
            (QoS::AtLeastOnce, Some(id)) => {
                if self.config.manual_acks && self.conn.unacked(id, QoS::AtLeastOnce) {
                    // Its PUBACK has not been sent: the identifier is still in
                    // use (MQTT-2.2.1-3), so this is the same message again
                    // (only after the PUBACK is a PUBLISH with it new,
                    // v5:MQTT-4.3.2-5). It is neither delivered nor queued
                    // again: the PUBACK that `ack` releases answers both.
                    // Otherwise a 3.1.1 peer, which no Receive Maximum limits,
                    // could grow the queue without bound by resending it.
                    return Ok(false);
                }
                self.check_receive_maximum()?;
                // MQTT-4.3.2-4: PUBACK with the same identifier, in order of receipt (MQTT-4.6.0-2).
                if self.config.manual_acks {
                    self.conn
                        .extra_mut()
                        .unacked
                        .push_back((id, QoS::AtLeastOnce, false));
                } else {
                    self.transmit.push_puback(id);
                }
                Ok(true)
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // Stored first (one lookup for both), then checked against
                // our Receive Maximum as before it was stored.
                if self.incoming_qos2.insert(id) {
                    if let Err(e) = self.check_receive_maximum_after(1) {
                        self.incoming_qos2.remove(id);
                        return Err(e.into());
                    }
                    if self.config.manual_acks {
                        self.conn
                            .extra_mut()
                            .unacked
                            .push_back((id, QoS::ExactlyOnce, false));
                        return Ok(true);
                    }
                    // MQTT-4.3.3-8: PUBREC.
                    self.transmit.push_pubrec(id);
                    return Ok(true);
                }
                // Sent again on this connection: it counts against the
                // Receive Maximum again.
                self.conn.uncarry_qos2(id);
                if self.conn.unacked(id, QoS::ExactlyOnce) {
                    // Not acknowledged by the application yet: the PUBREC follows `ack`.
                    return Ok(false);
                }
                // MQTT-4.3.3-10: PUBREC for a duplicate too, not delivered again.
                self.transmit.push_pubrec(id);
                Ok(false)
            }
            _ => Err(ProtocolViolation::PacketIdMismatch.into()),
        }
    }

    /// Resolves the Topic Alias of an inbound PUBLISH now, in its order of
    /// receipt, for a caller that does not feed it to
    /// [`handle_packet`](Self::handle_packet) right away: one it holds back
    /// to feed later, or one it discards unfed (a client with no room for a
    /// QoS 0 message). A Topic Alias belongs to the network connection, not
    /// to the message: a PUBLISH that sets one sets it for the packets after
    /// it, whatever becomes of its message ([MQTT-3.3.2-10], [MQTT-3.3.2-12]).
    ///
    /// Under MQTT 5.0, `publish` gets the topic of its alias and loses the
    /// Topic Alias property, as `handle_packet` would do; fed later, it is a
    /// PUBLISH with its topic name and changes no alias. Call it for every
    /// PUBLISH received while an earlier one is held back, so that the
    /// aliases keep the order of receipt. Does nothing unless connected (and
    /// under 3.1.1 only checks that the topic name is not empty).
    ///
    /// # Errors
    /// [`ProtocolViolation::TopicAliasInvalid`],
    /// [`ProtocolViolation::TopicAliasUnknown`],
    /// [`ProtocolViolation::EmptyTopic`]: the connection is then closing, as
    /// after `handle_packet` (see the type docs).
    pub fn handle_topic_alias(&mut self, publish: &mut Publish, now: Instant) -> Result<(), Error> {
        self.now = Some(now);
        if self.state != State::Connected {
            return Ok(());
        }
        self.resolve_topic(publish).map_err(|e| self.fail(e))
    }

    /// The topic of an inbound PUBLISH: its Topic Alias resolved (MQTT 5.0),
    /// or its Topic Name, which must not be empty then.
    // Inlined into `receive_publish`: as a call, returning its large
    // `Result`, it cost 31 instructions per message there.
    #[inline(always)]
    fn resolve_topic(&mut self, publish: &mut Publish) -> Result<(), Error> {
        if self.version == ProtocolVersion::V5 {
            self.conn.resolve_in_alias(publish).map_err(|e| match e {
                AliasError::AboveMaximum { alias, .. } => {
                    ProtocolViolation::TopicAliasInvalid(alias)
                }
                AliasError::Unknown(alias) => ProtocolViolation::TopicAliasUnknown(alias),
                _ => ProtocolViolation::EmptyTopic,
            })?;
        } else if publish.topic.is_empty() {
            return Err(ProtocolViolation::EmptyTopic.into());
        }
        Ok(())
    }

    /// The application is done with the inbound message `packet_id`
    /// ([`Config::manual_acks`](crate::Config::manual_acks)). Its PUBACK or
    /// PUBREC is sent once every message received before it is acknowledged
    /// too, so acknowledgements keep the order of receipt (MQTT-4.6.0-2,
    /// MQTT-4.6.0-3).
    ///
    /// After a reconnection, identifiers from the previous connection are
    /// unknown: the peer resends QoS 1 messages (delivered again), and a
    /// resent QoS 2 message, already delivered, is acknowledged at once.
    ///
    /// # Errors
    /// [`ApiError::UnknownRequest`] if no unacknowledged message has this
    /// identifier; [`ApiError::InvalidState`] without manual acks.
    pub fn ack(&mut self, packet_id: PacketId) -> Result<(), Error> {
        if !self.config.manual_acks {
            return Err(ApiError::InvalidState("manual acks are off").into());
        }
        let entry = self
            .conn
            .extra_mut()
            .unacked
            .iter_mut()
            .find(|(id, _, done)| *id == packet_id && !*done);
        let Some(entry) = entry else {
            return Err(ApiError::UnknownRequest(packet_id.get()).into());
        };
        entry.2 = true;
        while let Some((id, qos, true)) = self.conn.extra().unacked.front().copied() {
            self.conn.extra_mut().unacked.pop_front();
            if self.state == State::Connected {
                match qos {
                    QoS::ExactlyOnce => self.transmit.push_pubrec(id),
                    _ => self.transmit.push_puback(id),
                }
            }
        }
        Ok(())
    }

    /// Gives the PUBACK (QoS 1) or PUBREC (QoS 2) queued for the inbound
    /// message `packet_id`, and not sent yet, the success code `reason_code`
    /// instead of 0x00 Success: for what the application learns only once
    /// it has handled the message, such as 0x10 No matching subscribers (a
    /// server that knows it may say so, MQTT 5.0 section 3.4.2.1). Returns
    /// whether the acknowledgement was found and changed: not under 3.1.1
    /// (its acknowledgements carry no reason code), and not for an error
    /// code (0x80 and above), since refusing a message also ends its flow.
    ///
    /// Call it after [`handle_packet`](Self::handle_packet) (or
    /// [`ack`](Self::ack), with manual acknowledgements) queued the
    /// acknowledgement and before [`poll_transmit`](Self::poll_transmit)
    /// hands it out.
    pub fn set_ack_reason(&mut self, packet_id: PacketId, reason_code: PubAckReasonCode) -> bool {
        self.version == ProtocolVersion::V5
            && !reason_code.is_error()
            && self.transmit.set_ack_code(packet_id, reason_code)
    }

    /// A PUBREL from the peer: forget the identifier, answer PUBCOMP.
    ///
    /// # Errors
    /// [`ProtocolViolation::PubRelBeforePubRec`] when the PUBREC of this
    /// identifier still waits for the application's `ack`: the peer cannot
    /// have received it. Taking the PUBREL would free the identifier while its
    /// acknowledgement stays queued, and a peer repeating PUBLISH and PUBREL
    /// could queue acknowledgements without bound.
    pub(crate) fn receive_pubrel(&mut self, id: PacketId) -> Result<(), Error> {
        if self.conn.unacked(id, QoS::ExactlyOnce) {
            return Err(ProtocolViolation::PubRelBeforePubRec(id.get()).into());
        }
        let known = self.incoming_qos2.remove(id);
        self.conn.uncarry_qos2(id);
        let v5 = self.version == ProtocolVersion::V5;
        // MQTT-4.3.3-11: PUBCOMP with the same identifier (0x92 if unknown, 5.0).
        let reason_code = if !known && v5 {
            PubCompReasonCode::PacketIdentifierNotFound
        } else {
            PubCompReasonCode::Success
        };
        self.transmit.push_pubcomp(id, reason_code);
        Ok(())
    }
}
