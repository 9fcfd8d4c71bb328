//! Inbound application messages of one connection: authorization, limits,
//! routing, back-pressure, and the acknowledgement that follows.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fulmar_codec::{
    DisconnectReasonCode, Packet, PacketId, PubAckReasonCode, PubRecReasonCode, PubRel, Publish,
    QoS,
};
use fulmar_topic::TopicName;

use super::Connection;

use crate::broker::Shared;

use crate::config::OverloadPolicy;
use crate::state::{Blocked, Control, ControlInbox, Held, Inbound, Origin};
use crate::store::StoreOp;
use crate::store::journal::Journal;

impl<S: super::Stream> Connection<S> {
    pub(super) async fn on_message(&mut self, mut publish: Publish) {
        if self.client.is_none() {
            return;
        }
        if let Some(prefix) = self.transport.mount_point() {
            // The listener's mount point goes before the topic (the session
            // resolved a Topic Alias already): routing, the authorizer, the
            // retained messages and the events see the full topic.
            match crate::mount::topic(prefix, &publish.topic) {
                Some(topic) => publish.topic = topic,
                None => {
                    self.ack_inbound(publish.packet_id);
                    return self.refuse(&publish, Refusal::TopicNameInvalid);
                }
            }
        }
        let Some(client) = &self.client else { return };
        let Ok(topic) = publish.topic.parse::<TopicName>() else {
            self.disconnect(DisconnectReasonCode::TopicNameInvalid);
            return;
        };
        if !self.shared.limits.topic_fits(topic.as_str()) {
            self.ack_inbound(publish.packet_id);
            return self.refuse(&publish, Refusal::TopicNameInvalid);
        }
        if self
            .shared
            .limits
            .max_payload_size
            .is_some_and(|most| publish.payload.len() > most)
        {
            self.ack_inbound(publish.packet_id);
            return self.refuse(&publish, Refusal::PayloadTooLarge);
        }
        let allowed = (client.bridge || !is_sys(topic.as_str()))
            && self
                .shared
                .authorizer
                .authorize_publish(&client.info, publish.topic.as_str())
                .await;
        if !allowed {
            self.ack_inbound(publish.packet_id);
            return self.refuse(&publish, Refusal::NotAuthorized);
        }
        let key = client.key();
        let persistent = client.persistent;
        let client_id = client.id.clone();
        let limits = &self.shared.limits;
        let mut held = Held {
            backpressure: limits.overload_policy == OverloadPolicy::Backpressure,
            own: self.control.inbox_addr(),
            ..Held::default()
        };
        let subscribed;
        {
            let mut state = self.shared.lock();
            if !state.retained_fits(&topic, &publish, Instant::now()) {
                drop(state);
                self.ack_inbound(publish.packet_id);
                return self.refuse(&publish, Refusal::QuotaExceeded);
            }
            let journaled = state.journal.as_ref().map(|j| j.issued());
            // The identifier and the copies for the subscribers commit together:
            // a restart must not find the identifier (a resend is then taken
            // for a duplicate) without the copies.
            let journal = state.journal.clone();
            let _group = journal.as_deref().map(Journal::group);
            if let Some(journal) = &state.journal
                && let (true, QoS::ExactlyOnce, Some(packet_id)) =
                    (persistent, publish.qos, publish.packet_id)
            {
                // An inbound QoS 2 identifier of a kept session outlives a
                // restart, so that a resent PUBLISH is not routed twice. It is
                // journaled before the message is routed: a subscriber's
                // connection may send the message as soon as what it
                // journaled is committed, and this must be committed by then.
                journal.push(StoreOp::AddIncoming {
                    client: client_id,
                    packet_id,
                });
            }
            subscribed = state.route(
                &topic,
                &publish,
                Origin::Client(&key),
                limits.max_queued_messages,
                &self.shared.counters,
                Instant::now(),
                Some(&mut held),
            );
            if !held.paced.is_empty() {
                // Still under the lock: from now on no publisher is paced
                // on this connection's queue (see `ControlInbox::paced`).
                self.control.set_paced(true);
            }
            if let Some(journal) = &state.journal
                && journaled != Some(journal.issued())
            {
                self.durable_at = self.durable_at.max(journal.issued());
            }
        }
        let (missed, interrupted) = if held.blocked.is_empty() {
            (0, None)
        } else {
            self.wait_for_room(held.blocked).await
        };
        if missed > 0 {
            // Not paced after all: the connection ends.
            if self.paced.is_none() {
                self.control.set_paced(false);
            }
            // Not acknowledged: the publisher sends it again after
            // reconnecting. A QoS 1 resend is routed again (the others get
            // it twice, as QoS 1 allows). A QoS 2 message went to the others
            // already and its session keeps the identifier, so the resend is
            // acknowledged without being routed again (exactly once for
            // them), and the copies that had no room are lost.
            if publish.qos == QoS::ExactlyOnce {
                let missed = u64::try_from(missed).unwrap_or(u64::MAX);
                self.shared
                    .counters
                    .dropped
                    .fetch_add(missed, Ordering::Relaxed);
            }
            match interrupted {
                // A take-over or the shutdown ended the wait: it closes the connection.
                Some(control) => {
                    self.on_control(control);
                }
                None if !self.shared.shutdown.is_cancelled() => {
                    self.disconnect(DisconnectReasonCode::ServerBusy);
                }
                None => {}
            }
            return;
        }
        self.ack_inbound(publish.packet_id);
        if !subscribed && let Some(id) = publish.packet_id {
            // MQTT 5.0 3.4.2.1: a server that knows may say so (as
            // mosquitto does). Not known with a bridge or a cluster
            // attached: it may have subscribers elsewhere.
            self.session
                .set_ack_reason(id, PubAckReasonCode::NoMatchingSubscribers);
        }
        if !held.paced.is_empty() {
            self.pace(held.paced);
        }
    }

    /// With back-pressure (manual acks), acknowledges an inbound QoS 1/2 message.
    fn ack_inbound(&mut self, packet_id: Option<PacketId>) {
        if self.shared.limits.overload_policy == OverloadPolicy::Backpressure
            && let Some(id) = packet_id
        {
            let _ = self.session.ack(id);
        }
    }

    /// Back-pressure: waits until every full subscriber queue took its copy,
    /// without reading from the network meanwhile. Deliveries to this
    /// connection keep flowing into its session queue while there is room, so
    /// two publishers feeding each other do not wait on each other. After
    /// [`Limits::backpressure_timeout`](crate::Limits), at shutdown or when
    /// another connection takes the session over, it gives up: the number of
    /// copies not handed over (0: all were), and the control message that
    /// ended the wait.
    async fn wait_for_room(&mut self, blocked: Vec<Blocked>) -> (usize, Option<Control>) {
        let counters = &self.shared.counters;
        counters.blocked_publishers.fetch_add(1, Ordering::Relaxed);
        let deadline = if self.backpressure_expired {
            tokio::time::Instant::now()
        } else {
            super::later_by(self.shared.limits.backpressure_timeout)
        };
        let max_pending = self.shared.limits.max_queued_messages;
        let mut missed = blocked.len();
        let mut interrupted = None;
        let mut blocked = blocked.into_iter();
        // The copy being handed over: its client and store key.
        let mut current = None;
        'targets: for Blocked {
            client,
            queue,
            delivery,
        } in blocked.by_ref()
        {
            current = Some((client.clone(), delivery.seq));
            let send = queue.deliver(delivery, max_pending, self.shared.limits.max_queued_bytes);
            tokio::pin!(send);
            loop {
                let room = self.session.pending_len() < max_pending;
                tokio::select! {
                    sent = &mut send => {
                        if let Err(delivery) = sent {
                            // That connection ended meanwhile: the session keeps the copy.
                            let limits = &self.shared.limits;
                            self.shared.lock().redeliver(
                                &client,
                                *delivery,
                                limits.max_queued_messages,
                                &self.shared.counters,
                                Instant::now(),
                            );
                        }
                        missed -= 1;
                        current = None;
                        break;
                    }
                    own = self.control.recv_delivery(), if room => {
                        self.deliver_at(own, Instant::now());
                    }
                    () = self.shared.shutdown.cancelled() => break 'targets,
                    inbound = self.control.recv(false) => match inbound {
                        // Done once the wait is over.
                        Inbound::Control(Control::Reauthorize(round)) => {
                            self.reauthorize.push(round);
                        }
                        // Not for this client: nothing changes for it.
                        Inbound::Control(Control::DisconnectIf(which, _))
                            if !self.client.as_ref().is_some_and(|c| (which.0)(&c.info)) => {}
                        Inbound::Control(control) => {
                            // The connection ends: the messages still to route
                            // from it do not wait either.
                            interrupted = Some(control);
                            self.backpressure_expired = true;
                            break 'targets;
                        }
                        // Not asked for (`false`), but not to be lost.
                        Inbound::Delivery(delivery) => self.deliver_at(delivery, Instant::now()),
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::debug!(peer = %self.peer.addr, "back-pressure timeout");
                        self.backpressure_expired = true;
                        break 'targets;
                    }
                }
            }
        }
        // The copies not handed over are dropped (their publisher is not
        // acknowledged): so are their store records, which would bring them
        // back after a restart, next to the publisher's resend.
        if let Some(journal) = &self.shared.journal {
            let left = current
                .into_iter()
                .chain(blocked.map(|b| (b.client, b.delivery.seq)));
            for (client, seq) in left {
                if let Some(seq) = seq {
                    journal.push(StoreOp::DeleteMessage { client, seq });
                }
            }
        }
        self.shared
            .counters
            .blocked_publishers
            .fetch_sub(1, Ordering::Relaxed);
        (missed, interrupted)
    }

    /// Pacing: the connection reads nothing more from the network until
    /// every connection queue that this message took over a quarter of
    /// [`Limits::max_queued_bytes`](crate::Limits) or of
    /// [`Limits::max_queued_messages`](crate::Limits) is back under it (see
    /// [`Paced`]; it is woken at half that), so that TCP flow control slows
    /// the publisher down to what those subscribers take; for at most
    /// [`Limits::pacing_timeout`](crate::Limits), and half the keep alive.
    /// The message is queued already.
    fn pace(&mut self, queues: Vec<Arc<ControlInbox>>) {
        match &mut self.paced {
            Some(paced) => paced.queues.extend(queues),
            None => {
                self.shared
                    .counters
                    .blocked_publishers
                    .fetch_add(1, Ordering::Relaxed);
                // Bounded by the keep alive too: nothing is read meanwhile,
                // PINGREQ included.
                let mut wait = self.shared.limits.pacing_timeout;
                let keep_alive = self.session.keep_alive();
                if keep_alive > 0 {
                    wait = wait.min(Duration::from_secs(u64::from(keep_alive)) / 2);
                }
                self.paced = Some(Box::new(Paced {
                    queues,
                    until: super::later_by(wait),
                    shared: self.shared.clone(),
                    own: self.control.inbox(),
                }));
            }
        }
    }

    /// A PUBLISH that is not routed: denied by the authorizer, over the
    /// retained quota, or a topic over the limits. MQTT 5.0: its PUBACK or
    /// PUBREC carries the reason; 3.1.1 acknowledges normally
    /// ([MQTT-3.3.5-2]). Over a limit, it counts as dropped.
    fn refuse(&mut self, publish: &Publish, refusal: Refusal) {
        tracing::debug!(topic = %publish.topic, ?refusal, "publish refused");
        if refusal != Refusal::NotAuthorized {
            self.shared.counters.drop_one();
        }
        let (true, Some(id)) = (self.v5(), publish.packet_id) else {
            return;
        };
        let refusals = self.refusals.get_or_insert_with(Box::default);
        refusals.deny_ack.insert(id, refusal);
        if publish.qos == QoS::ExactlyOnce {
            // An error PUBREC ends the QoS 2 flow: the client sends no PUBREL
            // and may reuse the identifier, so the session must forget it now.
            refusals.drop_pubcomp.insert(id);
            let _ = self
                .session
                .handle_packet(Packet::PubRel(PubRel::new(id)), Instant::now());
        }
    }
}

/// Why an inbound PUBLISH was not routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The authorizer denied it (0x87).
    NotAuthorized,
    /// A new retained topic beyond [`Limits::max_retained_messages`](crate::Limits) (0x97).
    QuotaExceeded,
    /// The topic is longer or deeper than the limits (0x90).
    TopicNameInvalid,
    /// The payload is larger than [`Limits::max_payload_size`](crate::Limits)
    /// (0x97: a PUBACK or PUBREC has no Packet too large).
    PayloadTooLarge,
}

impl Refusal {
    pub(super) fn puback(self) -> PubAckReasonCode {
        match self {
            Self::NotAuthorized => PubAckReasonCode::NotAuthorized,
            Self::QuotaExceeded | Self::PayloadTooLarge => PubAckReasonCode::QuotaExceeded,
            Self::TopicNameInvalid => PubAckReasonCode::TopicNameInvalid,
        }
    }

    pub(super) fn pubrec(self) -> PubRecReasonCode {
        match self {
            Self::NotAuthorized => PubRecReasonCode::NotAuthorized,
            Self::QuotaExceeded | Self::PayloadTooLarge => PubRecReasonCode::QuotaExceeded,
            Self::TopicNameInvalid => PubRecReasonCode::TopicNameInvalid,
        }
    }
}

/// A publisher held back by pacing: the connection queues its last messages
/// took over a quarter of their bound ([`PaceAbove`](crate::config::PaceAbove)).
/// Meanwhile its connection does everything but read from the network: it
/// takes its own deliveries and writes its packets. It reads no
/// acknowledgements either, so its own queue may not drain: no publisher is
/// paced on it meanwhile (see `ControlInbox::paced`), and two clients that
/// publish to each other do not wait on each other. Counted in
/// [`Stats::blocked_publishers`](crate::Stats) while it exists (until the
/// wait is over, or the connection ends).
pub(super) struct Paced {
    queues: Vec<Arc<ControlInbox>>,
    /// The paced connection's own inbox, marked paced while this lives.
    own: Arc<ControlInbox>,
    /// The wait ends here at the latest ([`Limits::pacing_timeout`](crate::Limits)).
    until: tokio::time::Instant,
    shared: Arc<Shared>,
}

impl Paced {
    /// Ready once every queue is back under `limit` (or its connection is
    /// ending), or at the deadline; it counts as a blocked publisher until
    /// then. The connection's transport waits on it (see
    /// [`Transport::pause`](super::transport::Transport::pause)), so that
    /// the connection stays free meanwhile.
    pub(super) fn into_wait(
        self: Box<Self>,
        limit: crate::config::PaceAbove,
    ) -> super::transport::Pause {
        Box::pin(async move {
            let paced = self;
            let drained = async {
                for queue in &paced.queues {
                    queue.drained(limit).await;
                }
            };
            if tokio::time::timeout_at(paced.until, drained).await.is_err() {
                tracing::debug!("pacing timeout");
                for queue in &paced.queues {
                    queue.stalled_over(limit);
                }
            }
        })
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        self.own.paced.store(false, Ordering::Relaxed);
        self.shared
            .counters
            .blocked_publishers
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `topic` is one of the broker's own `$SYS` topics, which clients
/// may read but not publish to (MQTT-4.7.2-1: the Server SHOULD keep clients
/// from exchanging messages on `$` topics). As in mosquitto, a bridge's
/// status, `$SYS/broker/connection/{name}/state` (its will and its
/// notifications), is the exception; and a bridge that says it is one
/// (protocol level bit 0x80) may pass another broker's `$SYS` along.
pub(super) fn is_sys(topic: &str) -> bool {
    let Some(rest) = topic.strip_prefix("$SYS") else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return false;
    }
    let bridge_state = rest
        .strip_prefix("/broker/connection/")
        .and_then(|r| r.strip_suffix("/state"))
        .is_some_and(|name| !name.contains('/'));
    !bridge_state
}
