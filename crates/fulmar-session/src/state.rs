//! The session state that outlives a network connection, as a plain value.

use fulmar_codec::{MqttString, PacketId, Publish, QoS, SubscriptionOptions};

/// An outbound QoS 1/2 message that was sent and is not completely acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outgoing {
    /// A PUBLISH awaiting PUBACK (QoS 1) or PUBREC (QoS 2); resent with DUP on resume.
    Publish(Box<Publish>),
    /// A QoS 2 message whose PUBREL awaits PUBCOMP; the PUBREL is resent on resume.
    PubRel(PacketId),
}

impl Outgoing {
    /// The packet identifier.
    #[must_use]
    pub fn packet_id(&self) -> Option<PacketId> {
        match self {
            Self::Publish(p) => p.packet_id,
            Self::PubRel(id) => Some(*id),
        }
    }
}

/// Everything a session must remember between network connections
/// (MQTT 5.0 section 4.1): in-flight outbound messages in the order they were
/// sent, messages queued but not sent yet, the identifiers of inbound QoS 2
/// messages awaiting PUBREL, and (client role) the subscriptions.
///
/// Get it with [`Session::session_state`](crate::Session::session_state), keep
/// it in memory or persist it (feature `serde`), and hand it back with
/// [`Session::client_with_state`](crate::Session::client_with_state) or
/// [`Session::accept`](crate::Session::accept): the new session carries on
/// exactly. The Message Expiry Interval of each message is the time left
/// when the snapshot was taken; time spent in storage is counted by
/// [`age`](Self::age).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionState {
    pub(crate) outgoing: Vec<Outgoing>,
    pub(crate) pending: Vec<Publish>,
    pub(crate) incoming_qos2: Vec<PacketId>,
    pub(crate) subscriptions: Vec<(MqttString, SubscriptionOptions)>,
    pub(crate) last_packet_id: u16,
}

impl SessionState {
    /// An empty session.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// In-flight outbound messages, in the order they were sent.
    #[must_use]
    pub fn outgoing(&self) -> &[Outgoing] {
        &self.outgoing
    }

    /// Messages accepted by `publish` and not sent yet, in order.
    #[must_use]
    pub fn pending(&self) -> &[Publish] {
        &self.pending
    }

    /// Packet identifiers of inbound QoS 2 messages awaiting PUBREL.
    #[must_use]
    pub fn incoming_qos2(&self) -> &[PacketId] {
        &self.incoming_qos2
    }

    /// Counts `waited`, the time this state spent in storage (between
    /// [`Session::session_state`](crate::Session::session_state) and the
    /// session that resumes it), against the Message Expiry Interval of its
    /// messages (MQTT 5.0 3.3.2.3.3). A queued message whose interval has
    /// passed is removed, as its delivery had not started
    /// [MQTT-3.3.2-5]; the removed messages are returned (their identifiers
    /// are free again). The other queued messages and the messages in flight
    /// forward what is left [MQTT-3.3.2-6]; a message in flight is sent again
    /// however long it waited (MQTT-4.4.0-1), with at least 1 second left
    /// (or 0 if it came with 0; see [`message_expiry_left`](crate::message_expiry_left)).
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use fulmar_codec::{MqttString, Publish};
    /// use fulmar_session::{Config, Session};
    /// # use std::time::Instant;
    /// # let now = Instant::now();
    ///
    /// let mut client = Session::client(Config::default());
    /// for interval in [10, 100] {
    ///     let mut message = Publish::new(MqttString::from("a/b"), "x".into());
    ///     message.properties.message_expiry_interval = Some(interval);
    ///     client.publish(message, now).unwrap();
    /// }
    /// let mut state = client.session_state(now);
    /// let expired = state.age(Duration::from_secs(30));
    /// assert_eq!(expired.len(), 1);
    /// assert_eq!(state.pending()[0].properties.message_expiry_interval, Some(70));
    /// ```
    #[must_use = "the messages removed are not delivered: count or report them"]
    pub fn age(&mut self, waited: std::time::Duration) -> Vec<Publish> {
        let secs = crate::outbound::whole_seconds(waited);
        let mut expired = Vec::new();
        let mut kept = Vec::with_capacity(self.pending.len());
        for mut p in std::mem::take(&mut self.pending) {
            match &mut p.properties.message_expiry_interval {
                Some(interval) => {
                    match crate::outbound::message_expiry_left(*interval, secs.into()) {
                        Some(left) => {
                            *interval = left;
                            kept.push(p);
                        }
                        None => expired.push(p),
                    }
                }
                None => kept.push(p),
            }
        }
        self.pending = kept;
        for o in &mut self.outgoing {
            if let Outgoing::Publish(p) = o {
                crate::outbound::age_started(p, waited);
            }
        }
        expired
    }

    /// Client role: the acknowledged subscriptions with their granted options.
    #[must_use]
    pub fn subscriptions(&self) -> &[(MqttString, SubscriptionOptions)] {
        &self.subscriptions
    }

    /// A server's session state rebuilt from its parts, for a broker that
    /// keeps them in its own store: the in-flight outbound messages in the
    /// order they were sent (resent on resume: a PUBLISH with DUP, a PUBREL as
    /// is), and the identifiers of inbound QoS 2 messages awaiting PUBREL
    /// (a PUBLISH with one of them is not delivered again). Messages not sent
    /// yet are not part of it: publish them after `accept`.
    ///
    /// # Errors
    /// The reason, when an identifier is missing or used twice, or a QoS 0
    /// message is in flight.
    ///
    /// # Example
    /// ```
    /// use fulmar_codec::{MqttString, PacketId, Publish, QoS};
    /// use fulmar_session::{Outgoing, SessionState};
    ///
    /// let mut sent = Publish::new(MqttString::from("a/b"), "x".into());
    /// sent.qos = QoS::AtLeastOnce;
    /// sent.packet_id = PacketId::new(7);
    /// let released = Outgoing::PubRel(PacketId::new(8).unwrap());
    /// let state = SessionState::from_parts(
    ///     vec![Outgoing::Publish(Box::new(sent)), released],
    ///     vec![PacketId::new(3).unwrap()],
    /// )
    /// .unwrap();
    /// assert_eq!(state.outgoing().len(), 2);
    /// assert!(SessionState::from_parts(vec![Outgoing::PubRel(PacketId::new(3).unwrap()); 2], vec![]).is_err());
    /// ```
    pub fn from_parts(
        outgoing: Vec<Outgoing>,
        incoming_qos2: Vec<PacketId>,
    ) -> Result<Self, &'static str> {
        let last_packet_id = outgoing
            .iter()
            .filter_map(Outgoing::packet_id)
            .map(PacketId::get)
            .max()
            .unwrap_or(0);
        let state = Self {
            outgoing,
            pending: Vec::new(),
            incoming_qos2,
            subscriptions: Vec::new(),
            last_packet_id,
        };
        state.validate()?;
        Ok(state)
    }

    /// Drops the outbound messages, in flight or queued, for which `keep`
    /// returns false, and returns them in order (a PUBREL waiting for its
    /// PUBCOMP has no message and stays). For a server that must not hand a
    /// resumed session's messages to a client no longer allowed to read them
    /// (the protocol would resend the in-flight ones, [MQTT-4.4.0-1]).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use fulmar_codec::{MqttString, PacketId, Publish, QoS};
    /// use fulmar_session::{Outgoing, SessionState};
    ///
    /// let message = |topic: &str, id| {
    ///     let mut p = Publish::new(MqttString::from(topic.to_owned()), Bytes::new());
    ///     p.qos = QoS::AtLeastOnce;
    ///     p.packet_id = PacketId::new(id);
    ///     Outgoing::Publish(Box::new(p))
    /// };
    /// let mut state = SessionState::from_parts(
    ///     vec![message("open/1", 1), message("secret/1", 2)],
    ///     vec![],
    /// )
    /// .unwrap();
    /// let dropped = state.retain_messages(|p| !p.topic.starts_with("secret/"));
    /// assert_eq!(dropped.len(), 1);
    /// assert_eq!(dropped[0].packet_id, PacketId::new(2));
    /// assert_eq!(state.outgoing().len(), 1);
    /// ```
    pub fn retain_messages(&mut self, mut keep: impl FnMut(&Publish) -> bool) -> Vec<Publish> {
        let mut dropped = Vec::new();
        let outgoing = std::mem::take(&mut self.outgoing);
        for out in outgoing {
            match out {
                Outgoing::Publish(p) if !keep(&p) => dropped.push(*p),
                out => self.outgoing.push(out),
            }
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if keep(&p) {
                self.pending.push(p);
            } else {
                dropped.push(p);
            }
        }
        dropped
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.outgoing.is_empty()
            && self.pending.is_empty()
            && self.incoming_qos2.is_empty()
            && self.subscriptions.is_empty()
    }

    /// Checks the invariants a session relies on: identifiers unique, QoS and
    /// identifier consistent.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        let mut seen = std::collections::HashSet::new();
        for out in &self.outgoing {
            if let Outgoing::Publish(p) = out
                && p.qos == QoS::AtMostOnce
            {
                return Err("QoS 0 message in flight");
            }
            let id = out
                .packet_id()
                .ok_or("in-flight message without packet identifier")?;
            if !seen.insert(id) {
                return Err("duplicate packet identifier");
            }
        }
        for p in &self.pending {
            match (p.qos, p.packet_id) {
                (QoS::AtMostOnce, None) => {}
                (QoS::AtMostOnce, Some(_)) | (_, None) => {
                    return Err("queued message QoS and identifier disagree");
                }
                (_, Some(id)) => {
                    if !seen.insert(id) {
                        return Err("duplicate packet identifier");
                    }
                }
            }
        }
        let mut incoming = std::collections::HashSet::new();
        if !self.incoming_qos2.iter().all(|id| incoming.insert(*id)) {
            return Err("duplicate inbound QoS 2 identifier");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn qos1(id: u16) -> Publish {
        let mut p = Publish::new(MqttString::from("t"), Bytes::new());
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(id);
        p
    }

    #[test]
    fn validation_catches_corrupted_state() {
        let ok = SessionState {
            outgoing: vec![Outgoing::Publish(Box::new(qos1(1)))],
            ..SessionState::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let dup = SessionState {
            outgoing: vec![
                Outgoing::Publish(Box::new(qos1(1))),
                Outgoing::PubRel(PacketId::ONE),
            ],
            ..SessionState::default()
        };
        assert!(dup.validate().is_err());
        let queued_dup = SessionState {
            pending: vec![qos1(2), qos1(2)],
            ..SessionState::default()
        };
        assert!(queued_dup.validate().is_err());
        let mut no_id = qos1(3);
        no_id.packet_id = None;
        assert!(
            SessionState {
                pending: vec![no_id],
                ..SessionState::default()
            }
            .validate()
            .is_err()
        );
        let incoming = SessionState {
            incoming_qos2: vec![PacketId::ONE, PacketId::ONE],
            ..SessionState::default()
        };
        assert!(incoming.validate().is_err());
        let restored = crate::Session::client_with_state(crate::Config::default(), incoming, t0());
        assert!(matches!(
            restored,
            Err(crate::Error::Api(crate::ApiError::InvalidSessionState(_)))
        ));
    }

    #[allow(clippy::disallowed_methods)] // a base instant for the test
    fn t0() -> std::time::Instant {
        std::time::Instant::now()
    }

    #[cfg(feature = "serde")]
    #[test]
    fn session_state_is_serde() {
        fn assert_serde<T: serde::Serialize + serde::de::DeserializeOwned>() {}
        assert_serde::<SessionState>();
        assert_serde::<Outgoing>();
    }
}
