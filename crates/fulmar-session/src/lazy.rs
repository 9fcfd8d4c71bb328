//! Parts of a [`Session`](crate::Session) that take no room until they are
//! used: each is a pointer, with its state boxed on first use and dropped
//! again by `Session::release_spare_capacity` once it holds nothing. A broker
//! keeps one session per connection, mostly idle: those carry none of it.

use std::collections::HashSet;

use fulmar_codec::{MqttString, PacketId, SubscriptionOptions};

use crate::outbound::Outbound;
use crate::packet_id::IdHash;

/// The outbound half ([`Outbound`]), created on first use.
///
/// The one piece of its state that must outlive it is the packet identifier
/// allocator's cursor (where the next allocation starts, also reported as
/// `SessionState::last_packet_id`): it is handed back when the empty half is
/// dropped and handed in when it is created again, so identifiers are
/// allocated exactly as if it had stayed. It is kept by the caller (in the
/// session's padding) rather than here, where it would take a word of its own.
/// Nothing else is lost: the half is only dropped when no identifier is in
/// use, nothing is in flight, queued or due for resending.
#[derive(Debug, Default)]
pub(crate) struct LazyOutbound(Option<Box<Outbound>>);

impl LazyOutbound {
    /// For reading: the outbound half, or an empty one.
    #[inline]
    pub(crate) fn get(&self) -> &Outbound {
        self.0.as_deref().unwrap_or(&NO_OUTBOUND)
    }

    /// For changing: the outbound half, created (continuing after `cursor`)
    /// if there is none.
    #[inline]
    pub(crate) fn get_mut(&mut self, cursor: u16) -> &mut Outbound {
        self.0.get_or_insert_with(|| Self::create(cursor))
    }

    #[cold]
    #[inline(never)]
    fn create(cursor: u16) -> Box<Outbound> {
        Box::new(Outbound::starting_after(cursor))
    }

    /// The outbound half if there is one: there is nothing to do on an empty
    /// one.
    #[inline]
    pub(crate) fn existing_mut(&mut self) -> Option<&mut Outbound> {
        self.0.as_deref_mut()
    }

    /// Replaces the outbound half with `out`; returns the one it had.
    pub(crate) fn replace(&mut self, out: Outbound) -> Option<Box<Outbound>> {
        self.0.replace(Box::new(out))
    }

    /// The identifier allocator's cursor: the outbound half's, or `kept`
    /// without one.
    pub(crate) fn cursor(&self, kept: u16) -> u16 {
        self.0.as_ref().map_or(kept, |out| out.ids.cursor())
    }

    /// Drops the outbound half if it holds nothing, saving its cursor in `kept`.
    pub(crate) fn release_if_empty(&mut self, kept: &mut u16) {
        if let Some(out) = &self.0
            && out.is_empty()
        {
            *kept = out.ids.cursor();
            self.0 = None;
        }
    }

    /// Whether there is an outbound half (allocated).
    #[cfg(test)]
    pub(crate) fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

/// What [`LazyOutbound::get`] reads when there is none.
static NO_OUTBOUND: Outbound = Outbound::EMPTY;

/// Inbound QoS 2 packet identifiers awaiting PUBREL, in a set created on
/// first use.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // one word inline instead of four, see the module docs
pub(crate) struct InboundQos2(Option<Box<HashSet<PacketId, IdHash>>>);

impl InboundQos2 {
    /// Stores `id`; `false` if it already was.
    #[inline]
    pub(crate) fn insert(&mut self, id: PacketId) -> bool {
        self.0.get_or_insert_with(Box::default).insert(id)
    }

    /// Removes `id`; `false` if it was not stored.
    #[inline]
    pub(crate) fn remove(&mut self, id: PacketId) -> bool {
        self.0.as_mut().is_some_and(|set| set.remove(&id))
    }

    /// Identifiers stored.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    /// The identifiers, sorted.
    pub(crate) fn sorted(&self) -> Vec<PacketId> {
        let mut ids: Vec<PacketId> = self.0.iter().flat_map(|set| set.iter().copied()).collect();
        ids.sort_unstable();
        ids
    }

    /// Replaces the identifiers with `ids`.
    pub(crate) fn set(&mut self, ids: Vec<PacketId>) {
        self.0 = (!ids.is_empty()).then(|| Box::new(ids.into_iter().collect()));
    }

    /// Forgets every identifier.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Drops the set if it is empty.
    pub(crate) fn release_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|set| set.is_empty()) {
            self.0 = None;
        }
    }

    /// Whether there is a set (allocated).
    #[cfg(test)]
    pub(crate) fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

/// Client: the subscriptions acknowledged by the server, in a list created on
/// first use (a server session never has one).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // one word inline instead of three, see the module docs
pub(crate) struct Subscriptions(Option<Box<Vec<(MqttString, SubscriptionOptions)>>>);

impl Subscriptions {
    /// The subscriptions.
    pub(crate) fn as_slice(&self) -> &[(MqttString, SubscriptionOptions)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Records `filter` with `options`, replacing its options if it is there.
    pub(crate) fn upsert(&mut self, filter: MqttString, options: SubscriptionOptions) {
        let list = self.0.get_or_insert_with(Box::default);
        match list.iter_mut().find(|(f, _)| *f == filter) {
            Some(existing) => existing.1 = options,
            None => list.push((filter, options)),
        }
    }

    /// Forgets `filter`.
    pub(crate) fn remove(&mut self, filter: &MqttString) {
        if let Some(list) = &mut self.0 {
            list.retain(|(f, _)| f != filter);
        }
    }

    /// Replaces the subscriptions with `list`.
    pub(crate) fn set(&mut self, list: Vec<(MqttString, SubscriptionOptions)>) {
        self.0 = (!list.is_empty()).then(|| Box::new(list));
    }

    /// Forgets every subscription.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Takes every subscription out.
    pub(crate) fn take(&mut self) -> Vec<(MqttString, SubscriptionOptions)> {
        self.0.take().map(|list| *list).unwrap_or_default()
    }

    /// Drops the list if it is empty.
    pub(crate) fn release_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|list| list.is_empty()) {
            self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use fulmar_codec::{
        AckProperties, ConnAckProperties, Connect, MqttString, PacketId, ProtocolVersion, QoS,
        SubAckReasonCode, SubscribeProperties, SubscriptionOptions, UnsubAckReasonCode,
        UnsubscribeProperties,
    };

    use crate::test_support::{message, pump};
    use crate::{Config, Event, Session};

    /// A connected client/server pair that never uses topic aliases (an
    /// alias table is connection state that has to stay).
    #[allow(clippy::disallowed_methods)] // a base instant; only differences matter
    fn pair() -> (Session, Session, Instant) {
        let now = Instant::now();
        let config = Config {
            topic_alias_maximum: 0,
            ..Config::default()
        };
        let mut client = Session::client(config.clone());
        let mut server = Session::server(config, now);
        let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("idle"));
        connect.keep_alive = 0;
        client.connect(connect, now).unwrap();
        server
            .handle_packet(client.poll_transmit().unwrap(), now)
            .unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
        server
            .accept(ConnAckProperties::default(), None, now)
            .unwrap();
        pump(&mut client, &mut server, now);
        assert!(client.is_connected() && server.is_connected());
        (client, server, now)
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_session_takes_at_most_280_bytes_inline() {
        // (memory, no spec statement) A broker keeps one session per
        // connection: 528 bytes before the outbound half, the inbound QoS 2
        // store, the subscriptions, the error and the inbound alias table
        // were boxed on first use.
        assert!(
            std::mem::size_of::<Session>() <= 280,
            "Session is {} bytes",
            std::mem::size_of::<Session>()
        );
    }

    #[test]
    fn an_idle_server_session_holds_nothing_on_the_heap_but_its_client_id() {
        // (memory, no spec statement) After messages both ways at QoS 1 and
        // 2, `release_spare_capacity` leaves no outbound half, no inbound
        // QoS 2 store, no spare queue; packet identifiers go on where they
        // were.
        let (mut client, mut server, now) = pair();
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            client.publish(message(qos), now).unwrap();
            server.publish(message(qos), now).unwrap();
        }
        pump(&mut client, &mut server, now);
        assert!(server.out.is_allocated() && server.incoming_qos2.is_allocated());
        let last = server.session_state(now).last_packet_id;
        assert_eq!(last, 2);

        server.release_spare_capacity();
        assert!(!server.out.is_allocated());
        assert!(!server.incoming_qos2.is_allocated());
        assert!(server.conn.extra.is_none() && server.error.is_none());
        assert!(server.conn.in_aliases.is_none() && !server.conn.out_aliases.is_allocated());
        assert_eq!(
            (server.events.capacity(), server.transmit.capacity()),
            (0, 0)
        );
        assert!(server.subscriptions.0.is_none());
        assert_eq!(server.session_state(now).last_packet_id, last);
        assert_eq!((server.inflight_len(), server.pending_len()), (0, 0));

        // The next message takes the next identifier, as without the release.
        let next = server.publish(message(QoS::AtLeastOnce), now).unwrap();
        assert_eq!(next, PacketId::new(last + 1));
        // In flight: the outbound half stays.
        server.release_spare_capacity();
        assert!(server.out.is_allocated());
        pump(&mut client, &mut server, now);
        server.release_spare_capacity();
        assert!(!server.out.is_allocated());

        // An inbound QoS 2 identifier awaiting its PUBREL stays too.
        client.publish(message(QoS::ExactlyOnce), now).unwrap();
        let publish = client.poll_transmit().unwrap();
        server.handle_packet(publish, now).unwrap();
        server.release_spare_capacity();
        assert_eq!(server.incoming_qos2_len(), 1);
        pump(&mut client, &mut server, now);
        assert_eq!(server.incoming_qos2_len(), 0);
        server.release_spare_capacity();
        assert!(!server.incoming_qos2.is_allocated());
    }

    #[test]
    fn a_client_keeps_its_requests_and_subscriptions_across_a_release() {
        // (memory, no spec statement) A SUBSCRIBE awaiting its SUBACK keeps
        // its identifier (and so the outbound half); the subscription list
        // stays while it has an entry; identifiers go on where they were.
        let (mut client, mut server, now) = pair();
        let filter = MqttString::from("a/+");
        let sub = client
            .subscribe(
                vec![(filter.clone(), SubscriptionOptions::default())],
                SubscribeProperties::default(),
                now,
            )
            .unwrap();
        client.release_spare_capacity();
        assert!(
            client.out.is_allocated(),
            "the SUBSCRIBE's identifier is in use"
        );
        server
            .handle_packet(client.poll_transmit().unwrap(), now)
            .unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Subscribe(_))));
        let granted = vec![SubAckReasonCode::GrantedQoS1];
        server
            .suback(sub, granted, AckProperties::default())
            .unwrap();
        client
            .handle_packet(server.poll_transmit().unwrap(), now)
            .unwrap();
        client.release_spare_capacity();
        assert!(!client.out.is_allocated());
        assert_eq!(client.subscriptions().len(), 1);

        let unsub = client
            .unsubscribe(vec![filter], UnsubscribeProperties::default(), now)
            .unwrap();
        assert_eq!(unsub.get(), sub.get() + 1);
        server
            .handle_packet(client.poll_transmit().unwrap(), now)
            .unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Unsubscribe(_))));
        let removed = vec![UnsubAckReasonCode::Success];
        server
            .unsuback(unsub, removed, AckProperties::default())
            .unwrap();
        client
            .handle_packet(server.poll_transmit().unwrap(), now)
            .unwrap();
        client.release_spare_capacity();
        assert!(client.subscriptions().is_empty() && client.subscriptions.0.is_none());
        assert!(!client.out.is_allocated());

        // A request lost with the connection frees its identifier.
        let lost = client
            .subscribe(
                vec![(MqttString::from("b"), SubscriptionOptions::default())],
                SubscribeProperties::default(),
                now,
            )
            .unwrap();
        assert_eq!(lost.get(), unsub.get() + 1);
        client.connection_lost(now);
        let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::RequestLost { packet_id } if *packet_id == lost))
        );
        client.release_spare_capacity();
        assert!(!client.out.is_allocated());
        assert_eq!(client.session_state(now).last_packet_id, lost.get());
    }
}
