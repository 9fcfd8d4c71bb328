//! The client role: CONNECT/CONNACK, keep-alive PINGREQ, SUBSCRIBE/UNSUBSCRIBE.

use std::sync::Arc;
use std::time::Instant;

use fulmar_codec::{
    ConnAck, Connect, MqttString, Packet, PacketId, ProtocolVersion, SubAck, Subscribe,
    SubscribeProperties, SubscriptionOptions, UnsubAck, UnsubAckReasonCode, Unsubscribe,
    UnsubscribeProperties,
};

use crate::config::Config;
use crate::error::{ApiError, Error, Initiator, LimitExceeded, ProtocolViolation};
use crate::event::Event;
use crate::session::{Request, Role, Session, State, has_wildcard, secs, shared_filter};
use crate::state::SessionState;
use crate::timer::Timer;

impl Session {
    /// A client session with an empty session state, not connected.
    #[must_use]
    pub fn client(config: Config) -> Self {
        Self::with_role(Role::Client, Arc::new(config))
    }

    /// A client session that carries on from `state` (kept from an earlier
    /// session), not connected. Connect with Clean Start 0 to resume it
    /// (under MQTT 5.0 the server keeps a session only if the CONNECT that
    /// opened it had a Session Expiry Interval above 0). `now` is the time
    /// the state is loaded at: the queued messages' Message Expiry Intervals
    /// count on from it (age the state first with [`SessionState::age`] for
    /// the time it spent in storage).
    ///
    /// # Errors
    /// [`ApiError::InvalidSessionState`] if `state` is inconsistent.
    pub fn client_with_state(
        config: Config,
        state: SessionState,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut session = Self::client(config);
        session.now = Some(now);
        session.load_state(state, now)?;
        Ok(session)
    }

    /// Starts a connection: queues `connect` (the first packet, [MQTT-3.1.0-1]).
    /// Receive Maximum, Topic Alias Maximum and Maximum Packet Size are filled
    /// in from the [`Config`] (MQTT 5.0). With Clean Start the session state is
    /// discarded now ([MQTT-3.1.2-4]); queued messages that were never sent stay.
    ///
    /// Allowed before the first connection and after the previous one closed
    /// (a final packet not drained yet is dropped).
    ///
    /// # Errors
    /// [`ApiError::InvalidState`] while a connection is open,
    /// [`ApiError::EmptyClientIdNeedsCleanSession`] (3.1.1),
    /// [`ApiError::EmptyClientIdInV31`],
    /// [`ApiError::InvalidWillTopic`], [`ApiError::WrongRole`].
    pub fn connect(&mut self, mut connect: Connect, now: Instant) -> Result<(), Error> {
        if self.role != Role::Client {
            return Err(ApiError::WrongRole(self.role).into());
        }
        if !matches!(self.state, State::Idle | State::Closing | State::Closed) {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        let version = connect.protocol_version;
        if version == ProtocolVersion::V311 && connect.client_id.is_empty() && !connect.clean_start
        {
            return Err(ApiError::EmptyClientIdNeedsCleanSession.into());
        }
        if version == ProtocolVersion::V31 && connect.client_id.is_empty() {
            return Err(ApiError::EmptyClientIdInV31.into());
        }
        if connect
            .will
            .as_ref()
            .is_some_and(|w| w.topic.is_empty() || w.topic.contains(['+', '#']))
        {
            return Err(ApiError::InvalidWillTopic.into());
        }
        self.now = Some(now);
        self.reset_connection();
        self.error = None;
        self.version = version;
        if connect.clean_start {
            self.discard_session();
        }
        if version == ProtocolVersion::V5 {
            let props = &mut connect.properties;
            props.receive_maximum =
                Some(self.config.receive_maximum).filter(|r| r.get() != u16::MAX);
            props.topic_alias_maximum = Some(self.config.topic_alias_maximum).filter(|m| *m > 0);
            props.maximum_packet_size = self.config.maximum_packet_size;
            self.conn.set_in_aliases(self.config.topic_alias_maximum);
        }
        self.conn.keep_alive = connect.keep_alive;
        self.conn.clean_start = connect.clean_start;
        self.conn
            .set_auth_method(connect.properties.authentication_method.clone());
        self.conn.session_expiry_zero = connect
            .properties
            .session_expiry_interval
            .is_none_or(|s| s == 0);
        self.client_id = Some(connect.client_id.clone());
        self.state = State::AwaitConnAck;
        if let Some(timeout) = self.config.connect_timeout {
            self.timers.set(Timer::Connect, now, timeout);
        }
        self.transmit.push_back(Packet::Connect(Box::new(connect)));
        Ok(())
    }

    /// Sends a SUBSCRIBE. The answer is an [`Event::SubAck`]; granted
    /// subscriptions are remembered in [`subscriptions`](Self::subscriptions).
    ///
    /// # Errors
    /// Not connected, no filters, [`LimitExceeded::TooManyRequests`],
    /// [`LimitExceeded::NoPacketId`], [`LimitExceeded::PacketTooLarge`] (over
    /// the server's Maximum Packet Size).
    pub fn subscribe(
        &mut self,
        filters: Vec<(MqttString, SubscriptionOptions)>,
        properties: SubscribeProperties,
        now: Instant,
    ) -> Result<PacketId, Error> {
        if filters.is_empty() {
            return Err(ApiError::NoTopicFilters.into());
        }
        // What the server's CONNACK declared unavailable would be a Protocol
        // Error there (MQTT 5.0 sections 3.2.2.3.11 to 3.2.2.3.13): refused
        // here instead of losing the connection.
        let peer = &self.conn.peer;
        if !peer.subscription_identifiers && properties.subscription_identifier.is_some() {
            return Err(ApiError::SubscriptionIdentifiersNotSupported.into());
        }
        for (filter, _) in &filters {
            let shared = shared_filter(filter.as_str());
            if !peer.shared_subscriptions && shared.is_some() {
                return Err(ApiError::SharedSubscriptionsNotSupported.into());
            }
            if !peer.wildcard_subscriptions && has_wildcard(shared.unwrap_or(filter.as_str())) {
                return Err(ApiError::WildcardSubscriptionsNotSupported.into());
            }
        }
        let mut subscribe = Subscribe {
            packet_id: PacketId::ONE,
            filters,
            properties,
        };
        self.fits_peer(subscribe.encoded_len(self.version))?;
        let packet_id = self.start_request(now)?;
        subscribe.packet_id = packet_id;
        self.conn
            .extra_mut()
            .requests
            .insert(packet_id, Request::Subscribe(subscribe.filters.clone()));
        self.start_request_timer(packet_id, now);
        self.transmit.push_back(Packet::Subscribe(subscribe));
        Ok(packet_id)
    }

    /// Sends an UNSUBSCRIBE. The answer is an [`Event::UnsubAck`].
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub fn unsubscribe(
        &mut self,
        filters: Vec<MqttString>,
        properties: UnsubscribeProperties,
        now: Instant,
    ) -> Result<PacketId, Error> {
        if filters.is_empty() {
            return Err(ApiError::NoTopicFilters.into());
        }
        let mut unsubscribe = Unsubscribe {
            packet_id: PacketId::ONE,
            filters,
            properties,
        };
        self.fits_peer(unsubscribe.encoded_len(self.version))?;
        let packet_id = self.start_request(now)?;
        unsubscribe.packet_id = packet_id;
        self.conn
            .extra_mut()
            .requests
            .insert(packet_id, Request::Unsubscribe(unsubscribe.filters.clone()));
        self.start_request_timer(packet_id, now);
        self.transmit.push_back(Packet::Unsubscribe(unsubscribe));
        Ok(packet_id)
    }

    /// A SUBSCRIBE or UNSUBSCRIBE of `size` bytes (its packet identifier
    /// does not change it) must fit the server's Maximum Packet Size
    /// (v5:MQTT-3.2.2-15): refused here rather than sent.
    fn fits_peer(&self, size: Result<usize, fulmar_codec::EncodeError>) -> Result<(), Error> {
        let size = size.map_err(ApiError::Unencodable)?;
        let Some(max) = self.conn.peer.maximum_packet_size else {
            return Ok(());
        };
        if size > max as usize {
            return Err(LimitExceeded::PacketTooLarge { size, max }.into());
        }
        Ok(())
    }

    /// The request or flow `packet_id`, sent now, must be answered within
    /// [`Config::request_timeout`](crate::Config::request_timeout).
    pub(crate) fn start_request_timer(&mut self, packet_id: PacketId, now: Instant) {
        let Some(deadline) = self
            .config
            .request_timeout
            .and_then(|timeout| now.checked_add(timeout))
        else {
            return;
        };
        self.conn
            .extra_mut()
            .request_deadlines
            .start(packet_id, deadline);
    }

    /// The deadline of the oldest request waiting for its answer, or of
    /// the oldest QoS 1/2 flow while any is in flight, while connected
    /// ([`Config::request_timeout`](crate::Config::request_timeout)). Kept
    /// with the requests rather than as a timer: a session that sends none
    /// keeps no room for it.
    pub(crate) fn request_deadline(&self) -> Option<Instant> {
        if self.state != State::Connected {
            return None;
        }
        let extra = self.conn.extra();
        let flows = extra
            .oldest_flow_since
            .filter(|_| self.out.get().inflight_len() > 0)
            .zip(self.config.request_timeout)
            .and_then(|(since, timeout)| since.checked_add(timeout));
        match (extra.request_deadlines.first(), flows) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn start_request(&mut self, now: Instant) -> Result<PacketId, Error> {
        if self.role != Role::Client {
            return Err(ApiError::WrongRole(self.role).into());
        }
        if self.state != State::Connected {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        if self.conn.extra().requests.len() >= self.config.max_requests {
            return Err(LimitExceeded::TooManyRequests(self.config.max_requests).into());
        }
        self.now = Some(now);
        Ok(self
            .out
            .get_mut(self.out_cursor)
            .ids
            .allocate()
            .ok_or(LimitExceeded::NoPacketId)?)
    }

    pub(crate) fn client_packet(&mut self, packet: Packet, now: Instant) -> Result<(), Error> {
        if self.state == State::AwaitConnAck {
            return match packet {
                Packet::ConnAck(connack) => self.on_connack(connack, now),
                Packet::Auth(auth) => self.receive_auth(auth),
                // Not allowed before CONNACK (MQTT-3.14.0-1), but it ends the
                // connection either way: report the server's reason.
                Packet::Disconnect(disconnect) => {
                    self.on_disconnect(disconnect);
                    Ok(())
                }
                // MQTT-3.2.0-1: CONNACK comes first.
                other => Err(ProtocolViolation::NotConnAckFirst(other.packet_type()).into()),
            };
        }
        match packet {
            Packet::Publish(publish) => self.receive_publish(publish),
            Packet::PubAck(ack) => {
                self.receive_puback(ack);
                Ok(())
            }
            Packet::PubRec(rec) => {
                self.receive_pubrec(rec);
                Ok(())
            }
            Packet::PubRel(rel) => self.receive_pubrel(rel.packet_id),
            Packet::PubComp(comp) => {
                self.receive_pubcomp(comp);
                Ok(())
            }
            Packet::SubAck(ack) => self.on_suback(ack),
            Packet::UnsubAck(ack) => self.on_unsuback(ack),
            Packet::PingResp => {
                self.conn.ping_outstanding = false;
                self.timers.stop(Timer::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                self.on_disconnect(disconnect);
                Ok(())
            }
            Packet::Auth(auth) => self.receive_auth(auth),
            // MQTT-3.2.0-2 (v5): one CONNACK per connection.
            Packet::ConnAck(_) => Err(ProtocolViolation::SecondConnAck.into()),
            other @ (Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq) => {
                Err(ProtocolViolation::UnexpectedPacket(other.packet_type()).into())
            }
        }
    }

    fn on_connack(&mut self, connack: ConnAck, now: Instant) -> Result<(), Error> {
        self.timers.stop(Timer::Connect);
        if connack.reason_code.is_error() {
            // MQTT-3.2.2-7: the server closes after a failure code.
            self.error = Some(Box::new(Error::Refused(connack.reason_code)));
            self.transmit.clear();
            self.timers.stop_all();
            self.state = State::Closed;
            let properties = fulmar_codec::DisconnectProperties {
                reason_string: connack.properties.reason_string.clone(),
                user_properties: connack.properties.user_properties.clone(),
                server_reference: connack.properties.server_reference.clone(),
                ..Default::default()
            };
            self.report_close(Initiator::Remote, connack.reason_code.into(), properties);
            return Ok(());
        }
        if connack.session_present && self.conn.clean_start {
            return Err(ProtocolViolation::UnexpectedSessionPresent.into());
        }
        // The method of the CONNECT, or none if it had none (before anything
        // of the CONNACK is applied).
        match (
            self.conn.auth_method(),
            connack.properties.authentication_method.as_ref(),
        ) {
            (Some(ours), theirs) if theirs != Some(ours) => {
                return Err(ProtocolViolation::AuthMethodMismatch.into());
            }
            (None, Some(_)) => return Err(ProtocolViolation::UnexpectedAuthMethod.into()),
            _ => {}
        }
        // MQTT 3.1 has no Session Present flag: a session that was not
        // cleaned is taken to be there, as 3.1 clients did.
        let session_present = if self.version == ProtocolVersion::V31 {
            !self.conn.clean_start
        } else {
            connack.session_present
        };
        let mut lost = Vec::new();
        if !session_present {
            // v5 MQTT-3.2.2-5: no session on the server, discard ours; its
            // subscriptions go to the application to renew.
            lost = self.subscriptions.take();
            self.discard_session();
        }
        let server_keep_alive =
            self.version == ProtocolVersion::V5 && connack.properties.server_keep_alive.is_some();
        if self.version == ProtocolVersion::V5 {
            let props = &connack.properties;
            let peer = &mut self.conn.peer;
            peer.receive_maximum = props.receive_maximum.map_or(u16::MAX, |r| r.get());
            peer.maximum_qos = props.maximum_qos.unwrap_or(fulmar_codec::QoS::ExactlyOnce);
            peer.retain_available = props.retain_available.unwrap_or(true);
            peer.wildcard_subscriptions = props.wildcard_subscription_available.unwrap_or(true);
            peer.shared_subscriptions = props.shared_subscription_available.unwrap_or(true);
            peer.subscription_identifiers =
                props.subscription_identifiers_available.unwrap_or(true);
            peer.maximum_packet_size = props.maximum_packet_size.map(|m| m.get());
            peer.topic_alias_maximum = props.topic_alias_maximum.unwrap_or(0);
            let maximum = peer.topic_alias_maximum;
            self.conn.set_out_aliases(maximum);
            if let Some(keep_alive) = props.server_keep_alive {
                // MQTT-3.2.2-21: the server's value wins.
                self.conn.keep_alive = keep_alive;
            }
            if let Some(id) = &props.assigned_client_identifier {
                self.client_id = Some(id.clone());
            }
        }
        if let Some(cap) = self.config.peer_maximum_packet_size {
            let peer = &mut self.conn.peer;
            peer.maximum_packet_size = Some(
                peer.maximum_packet_size
                    .map_or(cap.get(), |m| m.min(cap.get())),
            );
        }
        self.state = State::Connected;
        if connack.session_present && self.version == ProtocolVersion::V5 {
            let carried = self.incoming_qos2.sorted();
            self.conn.carry_qos2(carried);
        }
        if session_present && let Some(out) = self.out.existing_mut() {
            out.resume(&mut self.transmit);
            if out.inflight_len() > 0 {
                // Sent again from now on: the oldest flow's wait starts
                // over with this connection.
                self.flows_start(now);
            }
        }
        if self.conn.keep_alive == 0 {
            self.timers.stop(Timer::KeepAlive);
        } else if server_keep_alive {
            // MQTT-3.2.2-21: the server's value, counted from here.
            self.timers
                .set(Timer::KeepAlive, now, secs(self.conn.keep_alive));
        } else if self.timers.get(Timer::KeepAlive).is_none() {
            // The period armed when the CONNECT was sent ran out before the
            // CONNACK came: a PINGREQ at once. Otherwise it stands
            // (MQTT-3.1.2-23: it counts from the last packet sent).
            self.timers
                .set(Timer::KeepAlive, now, std::time::Duration::ZERO);
        }
        self.events.push_back(Event::Connected(connack));
        if !lost.is_empty() {
            self.events.push_back(Event::SubscriptionsLost(lost));
        }
        Ok(())
    }

    fn on_suback(&mut self, ack: SubAck) -> Result<(), Error> {
        let Some(Request::Subscribe(filters)) = self.conn.extra().requests.get(&ack.packet_id)
        else {
            return Err(ProtocolViolation::UnknownPacketId(ack.packet_id.get()).into());
        };
        if filters.len() != ack.reason_codes.len() {
            return Err(ProtocolViolation::ReasonCodeCount {
                expected: filters.len(),
                got: ack.reason_codes.len(),
            }
            .into());
        }
        self.request_answered(ack.packet_id);
        if let Some(Request::Subscribe(filters)) =
            self.conn.extra_mut().requests.remove(&ack.packet_id)
        {
            for ((filter, mut options), code) in filters.into_iter().zip(&ack.reason_codes) {
                if let Some(granted) = code.granted_qos() {
                    options.qos = granted;
                    self.subscriptions.upsert(filter, options);
                }
            }
        }
        if let Some(out) = self.out.existing_mut() {
            out.ids.release(ack.packet_id);
        }
        self.events.push_back(Event::SubAck(ack));
        Ok(())
    }

    fn on_unsuback(&mut self, ack: UnsubAck) -> Result<(), Error> {
        let Some(Request::Unsubscribe(filters)) = self.conn.extra().requests.get(&ack.packet_id)
        else {
            return Err(ProtocolViolation::UnknownPacketId(ack.packet_id.get()).into());
        };
        if self.version == ProtocolVersion::V5 && filters.len() != ack.reason_codes.len() {
            return Err(ProtocolViolation::ReasonCodeCount {
                expected: filters.len(),
                got: ack.reason_codes.len(),
            }
            .into());
        }
        self.request_answered(ack.packet_id);
        if let Some(Request::Unsubscribe(filters)) =
            self.conn.extra_mut().requests.remove(&ack.packet_id)
        {
            for (i, filter) in filters.iter().enumerate() {
                let removed = ack
                    .reason_codes
                    .get(i)
                    .is_none_or(|c| *c == UnsubAckReasonCode::Success);
                if removed {
                    self.subscriptions.remove(filter);
                }
            }
        }
        if let Some(out) = self.out.existing_mut() {
            out.ids.release(ack.packet_id);
        }
        self.events.push_back(Event::UnsubAck(ack));
        Ok(())
    }
}
