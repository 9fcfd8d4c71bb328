//! The flow control of a message a bridge brought in
//! ([`BrokerHandle::inject_paced`](crate::BrokerHandle::inject_paced)).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::broker::Shared;
use crate::config::PaceAbove;
use crate::error::BrokerError;
use crate::state::{Blocked, ControlInbox};
use crate::store::StoreOp;

/// What is left to do for a message routed by
/// [`BrokerHandle::inject_paced`](crate::BrokerHandle::inject_paced) before
/// it may be acknowledged to where it came from: [`wait`](Self::wait) for
/// it. Dropped without waiting, the copies still waiting for room are
/// dropped (and counted).
#[must_use = "the message may be acknowledged once `wait` returns"]
pub struct Pacing {
    pub(crate) shared: Arc<Shared>,
    /// Copies for connections whose queue was full (back-pressure).
    pub(crate) blocked: Vec<Blocked>,
    /// Queues this message took over a quarter of their bound.
    pub(crate) paced: Vec<Arc<ControlInbox>>,
    /// The journal's sequence number of what the message left in the store.
    pub(crate) durable_at: Option<u64>,
    /// The copy being handed over by [`wait`](Self::wait) (its client and
    /// store key): given up by [`Drop`] if the wait is dropped meanwhile.
    pub(crate) in_hand: Option<(Arc<str>, Option<u64>)>,
}

/// Counts a waiting [`Pacing`] in [`Stats::blocked_publishers`](crate::Stats)
/// while it lives, also when the wait is dropped half-way.
struct Blocking<'a>(&'a Shared);

impl<'a> Blocking<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared
            .counters
            .blocked_publishers
            .fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for Blocking<'_> {
    fn drop(&mut self) {
        self.0
            .counters
            .blocked_publishers
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Pacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacing")
            .field("blocked", &self.blocked.len())
            .field("paced", &self.paced.len())
            .field("durable_at", &self.durable_at)
            .finish()
    }
}

impl Pacing {
    /// Whether there is nothing to wait for: every copy was handed over, no
    /// queue is over its pacing threshold, and nothing waits for the store.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.blocked.is_empty() && self.paced.is_empty() && self.durable_at.is_none()
    }

    /// Waits until the message may be acknowledged (see
    /// [`BrokerHandle::inject_paced`](crate::BrokerHandle::inject_paced)).
    ///
    /// # Errors
    /// [`BrokerError::Store`] when the store failed to commit the message:
    /// it must not be acknowledged.
    pub async fn wait(mut self) -> Result<(), BrokerError> {
        self.wait_for_room().await;
        let shared = self.shared.clone();
        if let (Some(seq), Some(journal)) = (self.durable_at.take(), &shared.journal)
            && (journal.immediate() || journal.backlogged())
            && journal.wait(seq).await.is_err()
        {
            return Err(BrokerError::Store(crate::StoreError::Engine(
                "the store failed: the message is not stored".to_owned(),
            )));
        }
        Ok(())
    }

    /// The flow control of [`wait`](Self::wait) without waiting for each
    /// commit: for a caller that acknowledges nothing (a cluster node routing
    /// what another node published and acknowledged), for which one commit
    /// per message would only slow the routing down. It still waits for the
    /// commit of what the message left in the store when the store has
    /// fallen behind (a slow disk), as a client's connection does, so that
    /// the changes waiting for it stay bounded.
    pub async fn wait_for_subscribers(mut self) {
        self.wait_for_room().await;
        let shared = self.shared.clone();
        if let (Some(seq), Some(journal)) = (self.durable_at.take(), &shared.journal)
            && journal.backlogged()
        {
            // A failing store is reported by the connections that depend on
            // it; this caller acknowledges nothing.
            let _ = journal.wait(seq).await;
        }
    }

    async fn wait_for_room(&mut self) {
        let shared = self.shared.clone();
        let limits = &shared.limits;
        if !self.blocked.is_empty() || !self.paced.is_empty() {
            let _blocking = Blocking::new(&shared);
            self.hand_over_blocked().await;
            if !self.paced.is_empty() {
                let limit = PaceAbove::new(limits.max_queued_bytes, limits.max_queued_messages);
                let paced = std::mem::take(&mut self.paced);
                let drained = async {
                    for queue in &paced {
                        queue.drained(limit).await;
                    }
                };
                let until = crate::connection::later_by(limits.pacing_timeout);
                if tokio::time::timeout_at(until, drained).await.is_err() {
                    for queue in &paced {
                        queue.stalled_over(limit);
                    }
                }
            }
        }
    }

    /// Back-pressure: hands each copy to its connection once it has room,
    /// for at most [`Limits::backpressure_timeout`](crate::Limits); what is
    /// left then is dropped (see [`Drop`]).
    async fn hand_over_blocked(&mut self) {
        let shared = self.shared.clone();
        let limits = &shared.limits;
        let deadline = crate::connection::later_by(limits.backpressure_timeout);
        while !self.blocked.is_empty() {
            let Blocked {
                client,
                queue,
                delivery,
            } = self.blocked.remove(0);
            let seq = delivery.seq;
            // Dropped at this await, the copy is given up (see `Drop`).
            self.in_hand = Some((client.clone(), seq));
            let send = queue.deliver(
                delivery,
                limits.max_queued_messages,
                limits.max_queued_bytes,
            );
            let sent = tokio::time::timeout_at(deadline, send).await;
            self.in_hand = None;
            match sent {
                Ok(Ok(())) => {}
                // That connection ended meanwhile: its session keeps the copy.
                Ok(Err(delivery)) => shared.lock().redeliver(
                    &client,
                    *delivery,
                    limits.max_queued_messages,
                    &shared.counters,
                    Instant::now(),
                ),
                Err(_) => {
                    tracing::debug!("back-pressure timeout of an injected message");
                    give_up(&shared, client, seq);
                    break;
                }
            }
        }
        for Blocked {
            client, delivery, ..
        } in std::mem::take(&mut self.blocked)
        {
            give_up(&shared, client, delivery.seq);
        }
    }
}

impl Drop for Pacing {
    fn drop(&mut self) {
        if let Some((client, seq)) = self.in_hand.take() {
            give_up(&self.shared, client, seq);
        }
        for Blocked {
            client, delivery, ..
        } in std::mem::take(&mut self.blocked)
        {
            give_up(&self.shared, client, delivery.seq);
        }
    }
}

/// A copy that got no room: dropped and counted, and so is its store record
/// (which would bring it back after a restart).
fn give_up(shared: &Shared, client: Arc<str>, seq: Option<u64>) {
    shared.counters.drop_one();
    if let (Some(journal), Some(seq)) = (&shared.journal, seq) {
        journal.push(StoreOp::DeleteMessage { client, seq });
    }
}
