//! The server role: CONNECT validation, `accept`/`reject`, SUBSCRIBE and
//! UNSUBSCRIBE answered by the application, keep-alive expiry at 1.5 times.

use std::sync::Arc;
use std::time::Instant;

use fulmar_codec::{
    AckProperties, Auth, ConnAck, ConnAckProperties, Connect, ConnectReasonCode, DecodeError,
    MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, SubAck, SubAckReasonCode,
    Subscribe, UnsubAck, UnsubAckReasonCode,
};

use crate::config::{Config, MAX_EARLY_BYTES, MAX_EARLY_PACKETS};
use crate::error::{ApiError, Error, Initiator, LimitExceeded, ProtocolViolation};
use crate::event::Event;
use crate::session::{Request, Role, Session, State};
use crate::session::{has_wildcard, shared_filter};
use crate::state::SessionState;
use crate::timer::Timer;

impl Session {
    /// A server session for a network connection that just opened: it waits
    /// for CONNECT (at most `connect_timeout`). `config` is a [`Config`] or
    /// an `Arc<Config>`: a server with many connections shares one.
    #[must_use]
    pub fn server(config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let mut session = Self::with_role(Role::Server, config.into());
        session.now = Some(now);
        session.state = State::AwaitConnect;
        if let Some(timeout) = session.config.connect_timeout {
            session.timers.set(Timer::Connect, now, timeout);
        }
        session
    }

    /// Accepts the CONNECT reported by [`Event::Connect`]: queues a successful
    /// CONNACK and resumes `session` unless the client asked for Clean Start
    /// ([MQTT-3.2.2-2], [MQTT-3.2.2-3]). In-flight messages of a resumed
    /// session are resent with DUP and their original identifiers, in order.
    ///
    /// `properties` are sent as given, except for the ones the session owns:
    /// Receive Maximum, Maximum QoS, Retain Available, Wildcard Subscription
    /// Available, Subscription Identifiers Available, Shared Subscription
    /// Available, Maximum Packet Size, Topic Alias Maximum and Server Keep
    /// Alive come from the [`Config`]; the Authentication Method is the
    /// CONNECT's ([MQTT-4.12.0-5]); Response Information is dropped unless
    /// the client asked for it ([MQTT-3.1.2-28]).
    /// A 5.0 client with an empty client identifier needs an Assigned Client
    /// Identifier in `properties`. Returns Session Present.
    ///
    /// # Errors
    /// [`ApiError::InvalidState`] unless a CONNECT is waiting for an answer;
    /// [`ApiError::MissingAssignedClientId`]; [`ApiError::InvalidSessionState`].
    pub fn accept(
        &mut self,
        mut properties: ConnAckProperties,
        session: Option<SessionState>,
        now: Instant,
    ) -> Result<bool, Error> {
        if self.state != State::ConnectReceived {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        self.now = Some(now);
        let v5 = self.version == ProtocolVersion::V5;
        let empty_id = self.client_id.as_ref().is_none_or(|id| id.is_empty());
        if v5 && empty_id && properties.assigned_client_identifier.is_none() {
            return Err(ApiError::MissingAssignedClientId.into());
        }
        let session_present = match session {
            Some(state) if !self.conn.clean_start => {
                self.load_state(state, now)?;
                if v5 {
                    let carried = self.incoming_qos2.sorted();
                    self.conn.carry_qos2(carried);
                }
                true
            }
            _ => false,
        };
        if let Some(id) = &properties.assigned_client_identifier {
            self.client_id = Some(id.clone());
        }
        // MQTT-3.2.2-21: a 5.0 client uses the Server Keep Alive instead of
        // its own. 3.1.1 has no way to tell the client, so its own value
        // holds (MQTT-3.1.2-24): holding it to a shorter one would close a
        // client that follows the rules, and to 0 would stop checking it.
        // A 5.0 client asking for more than `max_keep_alive`, or for none
        // (0), is given it as its Server Keep Alive.
        let server_keep_alive = self.config.server_keep_alive.or_else(|| {
            let max = self.config.max_keep_alive?.get();
            let asked = self.conn.keep_alive;
            (asked == 0 || asked > max).then_some(max)
        });
        if v5 && let Some(keep_alive) = server_keep_alive {
            self.conn.keep_alive = keep_alive;
        }
        let properties = if v5 {
            let c = &self.config;
            properties.receive_maximum = Some(c.receive_maximum).filter(|r| r.get() != u16::MAX);
            properties.maximum_qos = Some(c.maximum_qos).filter(|q| *q != QoS::ExactlyOnce);
            properties.retain_available = (!c.retain_available).then_some(false);
            properties.wildcard_subscription_available =
                (!c.wildcard_subscription_available).then_some(false);
            properties.subscription_identifiers_available =
                (!c.subscription_identifiers_available).then_some(false);
            properties.shared_subscription_available =
                (!c.shared_subscription_available).then_some(false);
            properties.maximum_packet_size = c.maximum_packet_size;
            properties.topic_alias_maximum = Some(c.topic_alias_maximum).filter(|m| *m > 0);
            properties.server_keep_alive = server_keep_alive;
            // MQTT-4.12.0-5 / MQTT-4.12.0-6: the CONNECT's Authentication
            // Method, or none at all.
            properties.authentication_method = self.conn.auth_method().cloned();
            if properties.authentication_method.is_none() {
                properties.authentication_data = None;
            }
            if !self.conn.response_information {
                // MQTT-3.1.2-28: not asked for.
                properties.response_information = None;
            }
            let maximum = c.topic_alias_maximum;
            self.conn.set_in_aliases(maximum);
            self.conn
                .set_out_aliases(self.conn.peer.topic_alias_maximum);
            properties
        } else {
            ConnAckProperties::default()
        };
        self.transmit.push_back(Packet::ConnAck(ConnAck {
            // MQTT 3.1 has no Session Present flag: the session is resumed
            // all the same.
            session_present: session_present && self.version != ProtocolVersion::V31,
            reason_code: ConnectReasonCode::Success,
            properties,
        }));
        self.state = State::Connected;
        self.arm_idle(now);
        if session_present && let Some(out) = self.out.existing_mut() {
            out.resume(&mut self.transmit);
        }
        for packet in self.conn.take_early() {
            // A violation here closes the connection after the CONNACK and is
            // reported as an event, like any other.
            if self.handle_packet(packet, now).is_err() {
                break;
            }
        }
        Ok(session_present)
    }

    /// Refuses the CONNECT reported by [`Event::Connect`]: a CONNACK with
    /// `reason_code`, then close. Under 3.1.1 a code without a 3.1.1 return
    /// code closes without CONNACK ([MQTT-3.2.2-6]).
    ///
    /// # Errors
    /// [`ApiError::InvalidState`] unless a CONNECT is waiting for an answer.
    pub fn reject(
        &mut self,
        reason_code: ConnectReasonCode,
        properties: ConnAckProperties,
        now: Instant,
    ) -> Result<(), Error> {
        if self.state != State::ConnectReceived {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        self.now = Some(now);
        drop(self.conn.take_early());
        self.refuse(reason_code, properties, Initiator::Local);
        Ok(())
    }

    fn refuse(
        &mut self,
        reason_code: ConnectReasonCode,
        properties: ConnAckProperties,
        initiator: Initiator,
    ) {
        // A refusing CONNACK never has Session Present (MQTT-3.2.2-6 v5, MQTT-3.2.2-4 v3).
        let connack = match self.version {
            ProtocolVersion::V5 => Some(ConnAck {
                session_present: false,
                reason_code,
                properties,
            }),
            ProtocolVersion::V31 | ProtocolVersion::V311 => reason_code
                .to_v311()
                .map(|_| ConnAck::new(false, reason_code)),
        };
        let code = if reason_code.is_error() {
            reason_code
        } else {
            ConnectReasonCode::UnspecifiedError
        };
        self.close(connack.map(Packet::ConnAck), initiator, code.into());
    }

    /// CONNECT could not be decoded: refuse it in the client's version if the
    /// decoder could tell it, else just close.
    pub(crate) fn refuse_undecodable_connect(&mut self, error: &DecodeError) {
        self.error = Some(Box::new(Error::Protocol(ProtocolViolation::Decode(
            error.to_string(),
        ))));
        let code = ConnectReasonCode::from_reason_code(error.reason_code());
        match (error.protocol_level(), code) {
            (Some(level), Some(code)) => {
                // The high bit marks a bridge (0x83: an MQTT 3.1 one).
                self.version = if level & 0x7F >= 5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V311
                };
                let code = match self.version {
                    ProtocolVersion::V5 => code,
                    // 3.1.1 MQTT-3.1.2-2: unacceptable protocol level is return code 1.
                    ProtocolVersion::V31 | ProtocolVersion::V311 => {
                        ConnectReasonCode::UnsupportedProtocolVersion
                    }
                };
                self.refuse(code, ConnAckProperties::default(), Initiator::Library);
            }
            _ => self.close(None, Initiator::Library, error.reason_code()),
        }
    }

    /// Answers the client's SUBSCRIBE (reported as [`Event::Subscribe`]) with
    /// one reason code per topic filter of the event, in order
    /// ([MQTT-3.9.3-1]). Filters the session refused itself are not in the
    /// event; their codes are put back in their places in the SUBACK.
    ///
    /// # Errors
    /// [`ApiError::UnknownRequest`], [`ApiError::ReasonCodeCount`];
    /// [`ApiError::InvalidState`] once the connection is closing or closed:
    /// nothing may follow its DISCONNECT ([MQTT-3.14.4-1]).
    pub fn suback(
        &mut self,
        packet_id: PacketId,
        reason_codes: Vec<SubAckReasonCode>,
        properties: AckProperties,
    ) -> Result<(), Error> {
        if self.state != State::Connected {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        let Some(Request::InboundSubscribe { answered, .. }) =
            self.conn.extra().requests.get(&packet_id)
        else {
            return Err(ApiError::UnknownRequest(packet_id.get()).into());
        };
        if reason_codes.len() != *answered {
            return Err(ApiError::ReasonCodeCount {
                expected: *answered,
                got: reason_codes.len(),
            }
            .into());
        }
        let refused = match self.conn.extra_mut().requests.remove(&packet_id) {
            Some(Request::InboundSubscribe { refused, .. }) => refused,
            _ => Vec::new(),
        };
        let mut reason_codes = merge_refused(reason_codes, refused);
        if self.version == ProtocolVersion::V31 {
            // MQTT 3.1 has no failure return code. A filter that is not
            // valid closes the connection; a refused subscription (not
            // authorized, quota) is answered with QoS 0 granted and no
            // subscription: both as mosquitto does.
            if reason_codes.contains(&SubAckReasonCode::TopicFilterInvalid) {
                self.fail(ProtocolViolation::TopicFilterInvalid.into());
                return Ok(());
            }
            for code in &mut reason_codes {
                if code.is_error() {
                    *code = SubAckReasonCode::GrantedQoS0;
                }
            }
        }
        let properties = if self.version == ProtocolVersion::V5 {
            properties
        } else {
            AckProperties::default()
        };
        self.transmit.push_back(Packet::SubAck(SubAck {
            packet_id,
            reason_codes,
            properties,
        }));
        Ok(())
    }

    /// Answers the client's UNSUBSCRIBE (reported as [`Event::Unsubscribe`]).
    /// Under 3.1.1 the reason codes are not sent.
    ///
    /// # Errors
    /// As [`suback`](Self::suback).
    pub fn unsuback(
        &mut self,
        packet_id: PacketId,
        reason_codes: Vec<UnsubAckReasonCode>,
        properties: AckProperties,
    ) -> Result<(), Error> {
        if self.state != State::Connected {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        let Some(Request::InboundUnsubscribe(expected)) =
            self.conn.extra().requests.get(&packet_id).cloned()
        else {
            return Err(ApiError::UnknownRequest(packet_id.get()).into());
        };
        if reason_codes.len() != expected {
            return Err(ApiError::ReasonCodeCount {
                expected,
                got: reason_codes.len(),
            }
            .into());
        }
        self.conn.extra_mut().requests.remove(&packet_id);
        let ack = match self.version {
            ProtocolVersion::V5 => UnsubAck {
                packet_id,
                reason_codes,
                properties,
            },
            ProtocolVersion::V31 | ProtocolVersion::V311 => UnsubAck::new(packet_id, Vec::new()),
        };
        self.transmit.push_back(Packet::UnsubAck(ack));
        Ok(())
    }

    /// Sends an AUTH packet (MQTT 5.0 enhanced authentication), for either
    /// role. Only allowed when the CONNECT carried an Authentication Method
    /// ([MQTT-4.12.0-6], [MQTT-4.12.0-7]); incoming AUTH packets are reported
    /// as [`Event::Auth`].
    ///
    /// Reason codes by sender (MQTT 5.0 section 3.15.2.1, 4.12): a client
    /// sends 0x19 Re-authenticate once connected, which starts a
    /// re-authentication (one at a time); either side sends 0x18 Continue
    /// authentication before CONNACK or during a re-authentication; a
    /// server sends 0x00 Success to end a re-authentication (the exchange
    /// before CONNACK ends with the CONNACK). A server that refuses a
    /// re-authentication ends the connection ([`disconnect`](Self::disconnect)).
    ///
    /// # Errors
    /// [`ApiError::InvalidState`] without an Authentication Method in CONNECT,
    /// under 3.1.1, without an open connection, or with a reason code its
    /// role may not send now.
    pub fn auth(&mut self, mut auth: Auth) -> Result<(), Error> {
        let Some(method) = self.conn.auth_method().cloned() else {
            return Err(ApiError::InvalidState("no authentication method").into());
        };
        if self.version != ProtocolVersion::V5 {
            return Err(ApiError::InvalidState("AUTH under MQTT 3.1.1").into());
        }
        // MQTT-4.12.0-5: the method of the CONNECT, in every AUTH.
        auth.properties.authentication_method = Some(method);
        if !matches!(
            self.state,
            State::AwaitConnAck | State::ConnectReceived | State::Connected
        ) {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        if !self.auth_turn(self.role, auth.reason_code) {
            return Err(ApiError::InvalidState("no AUTH with this reason code now").into());
        }
        self.transmit.push_back(Packet::Auth(auth));
        Ok(())
    }

    /// Restarts the keep-alive deadline (stops it with keep alive 0).
    #[inline]
    pub(crate) fn arm_idle(&mut self, now: Instant) {
        if self.conn.keep_alive > 0 {
            // MQTT-3.1.2-22 (v5) / MQTT-3.1.2-24 (3.1.1): one and a half times the keep alive.
            let ms = u64::from(self.conn.keep_alive) * 1500;
            self.timers
                .set(Timer::Idle, now, std::time::Duration::from_millis(ms));
        } else {
            // Keep alive 0 turns the mechanism off (3.1.2.10), also when a
            // Server Keep Alive of 0 replaced the client's value after the
            // CONNECT armed the timer.
            self.timers.stop(Timer::Idle);
        }
    }

    pub(crate) fn server_packet(&mut self, packet: Packet, now: Instant) -> Result<(), Error> {
        match self.state {
            State::AwaitConnect => {
                return match packet {
                    Packet::Connect(connect) => self.on_connect(connect, now),
                    // MQTT-3.1.0-1: the first packet must be CONNECT.
                    other => {
                        Err(ProtocolViolation::FirstPacketNotConnect(other.packet_type()).into())
                    }
                };
            }
            State::ConnectReceived => {
                // Whatever comes keeps the connection alive, AUTH of the
                // exchange before CONNACK included (MQTT-3.1.2-22).
                self.arm_idle(now);
                if matches!(packet, Packet::Connect(_)) {
                    return Err(ProtocolViolation::SecondConnect.into());
                }
                if let Packet::Auth(auth) = packet {
                    // The exchange before CONNACK: reported at once, for the
                    // application to answer with `auth`, `accept` or `reject`.
                    let result = self.receive_auth(auth);
                    if let Err(error) = &result {
                        // MQTT 5.0 section 4.13: a protocol error before
                        // CONNACK may be answered with a refusing CONNACK.
                        let code = ConnectReasonCode::from_reason_code(error.reason_code().into())
                            .unwrap_or(ConnectReasonCode::ProtocolError);
                        drop(self.conn.take_early());
                        self.refuse(code, ConnAckProperties::default(), Initiator::Library);
                    }
                    return result;
                }
                let early = &self.conn.extra().early;
                if early.len() >= MAX_EARLY_PACKETS {
                    return Err(LimitExceeded::EarlyPackets(MAX_EARLY_PACKETS).into());
                }
                if !early.is_empty() {
                    // The first packet is kept whatever its size.
                    let size = |p: &Packet| p.encoded_len(self.version).unwrap_or(usize::MAX);
                    let held = early
                        .iter()
                        .skip(1)
                        .map(size)
                        .fold(0, usize::saturating_add);
                    if held.saturating_add(size(&packet)) > MAX_EARLY_BYTES {
                        return Err(LimitExceeded::EarlyBytes(MAX_EARLY_BYTES).into());
                    }
                }
                self.conn.extra_mut().early.push(packet);
                return Ok(());
            }
            _ => {}
        }
        self.arm_idle(now);
        match packet {
            Packet::Publish(publish) => {
                self.check_client_publish(&publish)?;
                self.receive_publish(publish)
            }
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
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => {
                let request = Request::InboundUnsubscribe(unsubscribe.filters.len());
                self.claim_request(unsubscribe.packet_id, request)?;
                self.events.push_back(Event::Unsubscribe(unsubscribe));
                Ok(())
            }
            Packet::PingReq => {
                // MQTT-3.12.4-1.
                self.transmit.push_back(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                let sets_expiry = disconnect
                    .properties
                    .session_expiry_interval
                    .is_some_and(|s| s > 0);
                if self.conn.session_expiry_zero && sets_expiry {
                    return Err(ProtocolViolation::SessionExpiryOnDisconnect.into());
                }
                self.on_disconnect(disconnect);
                Ok(())
            }
            Packet::Auth(auth) => self.receive_auth(auth),
            // MQTT-3.1.0-2: a second CONNECT is a protocol error.
            Packet::Connect(_) => Err(ProtocolViolation::SecondConnect.into()),
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                Err(ProtocolViolation::UnexpectedPacket(other.packet_type()).into())
            }
        }
    }

    /// What a server checks in a client's PUBLISH before the rest.
    #[inline]
    pub(crate) fn check_client_publish(&self, publish: &Publish) -> Result<(), Error> {
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err(ProtocolViolation::SubscriptionIdentifierFromClient.into());
        }
        if publish.qos > self.config.maximum_qos {
            return Err(ProtocolViolation::QoSNotSupported(publish.qos).into());
        }
        if publish.retain && !self.config.retain_available {
            return Err(ProtocolViolation::RetainNotSupported.into());
        }
        Ok(())
    }

    /// A SUBSCRIBE from the client, checked against the features the
    /// [`Config`] turned off, then reported to the application.
    fn on_subscribe(&mut self, mut subscribe: Subscribe) -> Result<(), Error> {
        let c = &self.config;
        let mut refused = Vec::new();
        match self.version {
            ProtocolVersion::V5 => {
                // MQTT 5.0 sections 3.2.2.3.11 to 3.2.2.3.13: using a feature
                // the CONNACK declared unavailable is a Protocol Error, with
                // its own DISCONNECT reason code.
                if !c.subscription_identifiers_available
                    && subscribe.properties.subscription_identifier.is_some()
                {
                    return Err(ProtocolViolation::SubscriptionIdentifiersNotSupported.into());
                }
                for (filter, _) in &subscribe.filters {
                    let shared = shared_filter(filter.as_str());
                    if !c.shared_subscription_available && shared.is_some() {
                        return Err(ProtocolViolation::SharedSubscriptionsNotSupported.into());
                    }
                    let filter = shared.unwrap_or(filter.as_str());
                    if !c.wildcard_subscription_available && has_wildcard(filter) {
                        return Err(ProtocolViolation::WildcardSubscriptionsNotSupported.into());
                    }
                }
            }
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                // 3.1.1 MQTT-3.8.3-2: a server that does not support wildcard
                // filters rejects each subscription whose filter has one;
                // likewise a shared one (3.1.1 leaves `$` topics to the
                // server: `$share/` is shared there too, as in mosquitto),
                // with no DISCONNECT reason codes to do otherwise.
                if !c.wildcard_subscription_available || !c.shared_subscription_available {
                    let mut position = 0;
                    subscribe.filters.retain(|(filter, _)| {
                        let shared = shared_filter(filter.as_str());
                        let inner = shared.unwrap_or(filter.as_str());
                        let refuse = (!c.wildcard_subscription_available && has_wildcard(inner))
                            || (!c.shared_subscription_available && shared.is_some());
                        if refuse {
                            refused.push((position, SubAckReasonCode::UnspecifiedError));
                        }
                        position += 1;
                        !refuse
                    });
                }
            }
        }
        let packet_id = subscribe.packet_id;
        let answered = subscribe.filters.len();
        self.claim_request(packet_id, Request::InboundSubscribe { answered, refused })?;
        if answered == 0 {
            // Every filter was refused: nothing for the application to answer.
            return self.suback(packet_id, Vec::new(), AckProperties::default());
        }
        self.events.push_back(Event::Subscribe(subscribe));
        Ok(())
    }

    fn claim_request(&mut self, packet_id: PacketId, request: Request) -> Result<(), Error> {
        if self.conn.extra().requests.contains_key(&packet_id) {
            return Err(ProtocolViolation::PacketIdInUse(packet_id.get()).into());
        }
        if self.conn.extra().requests.len() >= self.config.max_requests {
            return Err(LimitExceeded::TooManyRequests(self.config.max_requests).into());
        }
        self.conn.extra_mut().requests.insert(packet_id, request);
        Ok(())
    }

    fn on_connect(&mut self, connect: Box<Connect>, now: Instant) -> Result<(), Error> {
        self.timers.stop(Timer::Connect);
        self.version = connect.protocol_version;
        self.state = State::ConnectReceived;
        // A copy: a slice would keep the whole buffer the CONNECT was read
        // into alive for as long as the connection lasts.
        self.client_id = Some(
            MqttString::try_new(connect.client_id.as_str())
                .unwrap_or_else(|_| connect.client_id.clone()),
        );
        self.conn.keep_alive = connect.keep_alive;
        self.conn.clean_start = connect.clean_start;
        let props = &connect.properties;
        self.conn
            .set_auth_method(props.authentication_method.clone());
        self.conn.no_problem_information = props.request_problem_information == Some(false);
        self.conn.response_information = props.request_response_information == Some(true);
        self.conn.session_expiry_zero = props.session_expiry_interval.is_none_or(|s| s == 0);
        if self.version == ProtocolVersion::V5 {
            let peer = &mut self.conn.peer;
            peer.receive_maximum = props.receive_maximum.map_or(u16::MAX, |r| r.get());
            peer.maximum_packet_size = props.maximum_packet_size.map(|m| m.get());
            peer.topic_alias_maximum = props.topic_alias_maximum.unwrap_or(0);
        }
        self.arm_idle(now);
        let will_topic_invalid = connect
            .will
            .as_ref()
            .is_some_and(|w| w.topic.is_empty() || w.topic.contains(['+', '#']));
        let refusal = if (self.version == ProtocolVersion::V311 && !connect.clean_start
            || self.version == ProtocolVersion::V31)
            && connect.client_id.is_empty()
        {
            // 3.1.1 MQTT-3.1.3-8: identifier rejected. MQTT 3.1 requires a
            // client identifier of 1 to 23 characters, and refuses an empty
            // one with the same return code (the length is not enforced,
            // as in mosquitto: 3.1.1 allows longer ones anyway).
            Some(ConnectReasonCode::ClientIdentifierNotValid)
        } else if will_topic_invalid {
            // MQTT-4.7.0-1, MQTT-4.7.3-1: the will has no topic name to go
            // to. 5.0: CONNACK 0x90; 3.1.1 has no return code for it, the
            // connection is closed without CONNACK.
            self.error = Some(Box::new(ProtocolViolation::WillTopicInvalid.into()));
            Some(ConnectReasonCode::TopicNameInvalid)
        } else if let Some(will) = connect
            .will
            .as_ref()
            .filter(|_| self.version == ProtocolVersion::V5)
        {
            if will.qos > self.config.maximum_qos {
                // MQTT-3.2.2-12.
                Some(ConnectReasonCode::QoSNotSupported)
            } else if will.retain && !self.config.retain_available {
                // MQTT-3.2.2-13.
                Some(ConnectReasonCode::RetainNotSupported)
            } else {
                None
            }
        } else {
            None
        };
        match refusal {
            Some(code) => self.refuse(code, ConnAckProperties::default(), Initiator::Library),
            None => self.events.push_back(Event::Connect(connect)),
        }
        Ok(())
    }
}

/// The application's reason codes with the session's refusals put back at
/// their positions in the SUBSCRIBE.
fn merge_refused(
    answered: Vec<SubAckReasonCode>,
    refused: Vec<(usize, SubAckReasonCode)>,
) -> Vec<SubAckReasonCode> {
    if refused.is_empty() {
        return answered;
    }
    let mut codes = Vec::with_capacity(answered.len() + refused.len());
    let mut answered = answered.into_iter();
    let mut refused = refused.into_iter().peekable();
    loop {
        let next = match refused.next_if(|(position, _)| *position == codes.len()) {
            Some((_, code)) => Some(code),
            None => answered
                .next()
                .or_else(|| refused.next().map(|(_, code)| code)),
        };
        match next {
            Some(code) => codes.push(code),
            None => return codes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_go_back_to_their_positions() {
        use SubAckReasonCode::{GrantedQoS0 as G, UnspecifiedError as F};
        assert_eq!(merge_refused(vec![G, G], Vec::new()), vec![G, G]);
        assert_eq!(merge_refused(vec![G, G], vec![(1, F)]), vec![G, F, G]);
        assert_eq!(
            merge_refused(vec![G], vec![(0, F), (2, F), (3, F)]),
            vec![F, G, F, F]
        );
        assert_eq!(merge_refused(Vec::new(), vec![(0, F), (1, F)]), vec![F, F]);
    }

    #[test]
    fn wildcard_and_shared_filters() {
        assert!(has_wildcard("+"));
        assert!(has_wildcard("a/#"));
        assert!(has_wildcard("a/+/b"));
        assert!(!has_wildcard("a/b+"));
        assert!(!has_wildcard("a/b"));
        assert_eq!(shared_filter("$share/g/a/+"), Some("a/+"));
        assert_eq!(shared_filter("$share/g"), Some(""));
        assert_eq!(shared_filter("$shared/g/a"), None);
        assert_eq!(shared_filter("a/b"), None);
    }
}
