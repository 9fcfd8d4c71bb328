//! Inbound QoS machinery, the same for both roles: PUBACK for QoS 1,
//! exactly-once delivery of QoS 2 (the identifier is stored from PUBLISH to
//! PUBREL), inbound topic aliases, our Receive Maximum.
//!
//! QoS 2 messages are delivered when the PUBLISH first arrives (the "store the
//! packet identifier, then deliver" method of MQTT 5.0 figure 4.3); a resent
//! PUBLISH with a stored identifier is acknowledged again but not delivered.

use fulmar_codec::{Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS};

use crate::error::{Error, ProtocolViolation};
use crate::event::Event;
use crate::outbound::{pubcomp, pubrec};
use crate::session::Session;

impl Session {
    /// A PUBLISH from the peer (role-specific checks are done by the caller).
    pub(crate) fn receive_publish(&mut self, mut publish: Publish) -> Result<(), Error> {
        if self.version == ProtocolVersion::V5 {
            self.conn.in_aliases.resolve(&mut publish)?;
        } else if publish.topic.is_empty() {
            return Err(ProtocolViolation::EmptyTopic.into());
        }
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, None) => self.events.push_back(Event::Message(publish)),
            (QoS::AtLeastOnce, Some(id)) => {
                self.check_receive_maximum()?;
                // MQTT-4.3.2-4: PUBACK with the same identifier, in order of receipt (MQTT-4.6.0-2).
                self.transmit.push_back(PubAck::new(id).into());
                self.events.push_back(Event::Message(publish));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                if !self.incoming_qos2.contains(&id) {
                    self.check_receive_maximum()?;
                    self.incoming_qos2.insert(id);
                    self.events.push_back(Event::Message(publish));
                }
                // MQTT-4.3.3-8 / MQTT-4.3.3-10: PUBREC, also for a duplicate.
                self.transmit.push_back(pubrec(id));
            }
            _ => return Err(ProtocolViolation::PacketIdMismatch.into()),
        }
        Ok(())
    }

    /// A PUBREL from the peer: forget the identifier, answer PUBCOMP.
    pub(crate) fn receive_pubrel(&mut self, id: PacketId) {
        let known = self.incoming_qos2.remove(&id);
        let v5 = self.version == ProtocolVersion::V5;
        // MQTT-4.3.3-11: PUBCOMP with the same identifier (0x92 if unknown, 5.0).
        let packet: Packet = pubcomp(id, known, v5);
        self.transmit.push_back(packet);
    }
}
