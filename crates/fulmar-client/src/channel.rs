//! The channel behind each message stream: bounded in messages
//! ([`ConnectOptions::stream_capacity`](crate::ConnectOptions::stream_capacity))
//! and in the bytes the messages in it hold
//! ([`ConnectOptions::stream_capacity_bytes`](crate::ConnectOptions::stream_capacity_bytes)).
//!
//! A message takes its bytes from the stream's budget when it goes in and
//! gives them back when the application takes it out. One larger than the
//! whole budget takes all of it: it goes in once the stream is empty, so a
//! stream never stalls for good on a large message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::router::Message;

/// A message in a stream, with the bytes it holds of the stream's budget.
#[derive(Debug)]
struct Held {
    message: Message,
    /// Given back when the message is taken out (or dropped unread).
    _bytes: OwnedSemaphorePermit,
}

/// A stream's sending end. Clones share the channel and the budget.
#[derive(Clone, Debug)]
pub(crate) struct StreamTx {
    tx: mpsc::Sender<Held>,
    bytes: Arc<Semaphore>,
    /// The budget, in bytes: what one message takes at most.
    max: u32,
}

/// A stream's receiving end.
#[derive(Debug)]
pub(crate) struct StreamRx {
    rx: mpsc::Receiver<Held>,
}

/// Room for one message in a stream: a slot and its bytes.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    slot: OwnedPermit<Held>,
    bytes: OwnedSemaphorePermit,
}

/// A stream for up to `capacity` messages (at least one) holding up to
/// `max_bytes` bytes.
pub(crate) fn stream(capacity: usize, max_bytes: u32) -> (StreamTx, StreamRx) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let max = max_bytes.max(1);
    let bytes = Arc::new(Semaphore::new(max as usize));
    (StreamTx { tx, bytes, max }, StreamRx { rx })
}

/// What a message counts against a stream's byte budget: its topic,
/// payload and properties ([`Publish::memory_size`](fulmar_codec::Publish::memory_size))
/// and the value that holds them, so that empty messages count too.
pub(crate) fn message_size(message: &Message) -> usize {
    std::mem::size_of::<Held>() + message.publish().memory_size()
}

impl StreamTx {
    /// The permits `message` takes: its size, at most the whole budget.
    fn cost(&self, message: &Message) -> u32 {
        u32::try_from(message_size(message)).map_or(self.max, |n| n.min(self.max))
    }

    /// Whether both send into the same stream.
    #[cfg(test)]
    pub(crate) fn same_channel(&self, other: &Self) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// Puts `message` in the stream if it has a free slot and the bytes.
    /// Gives the message back as `mpsc::Sender::try_send` does.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_send(&self, message: Message) -> Result<(), TrySendError<Message>> {
        let slot = match self.tx.try_reserve() {
            Ok(slot) => slot,
            Err(TrySendError::Full(_)) => return Err(TrySendError::Full(message)),
            Err(TrySendError::Closed(_)) => return Err(TrySendError::Closed(message)),
        };
        match self
            .bytes
            .clone()
            .try_acquire_many_owned(self.cost(&message))
        {
            Ok(bytes) => {
                slot.send(Held {
                    message,
                    _bytes: bytes,
                });
                Ok(())
            }
            // The semaphore is never closed: only out of bytes.
            Err(_) => Err(TrySendError::Full(message)),
        }
    }

    /// Waits for room for `message` (its bytes, then a slot); `None` once
    /// the stream is dropped.
    /// The future does not borrow `message`.
    pub(crate) fn reserve(
        self,
        message: &Message,
    ) -> impl Future<Output = Option<StreamPermit>> + use<> {
        let cost = self.cost(message);
        async move {
            let bytes = self.bytes.acquire_many_owned(cost).await.ok()?;
            let slot = self.tx.reserve_owned().await.ok()?;
            Some(StreamPermit { slot, bytes })
        }
    }
}

impl StreamPermit {
    /// Puts `message` in the room this permit holds.
    ///
    /// The bytes were counted for the message the permit was reserved for;
    /// `message` is that one (a copy of it).
    pub(crate) fn send(self, message: Message) {
        let _tx = self.slot.send(Held {
            message,
            _bytes: self.bytes,
        });
    }
}

impl StreamRx {
    pub(crate) async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await.map(|held| held.message)
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx
            .poll_recv(cx)
            .map(|held| held.map(|held| held.message))
    }

    pub(crate) fn try_recv(&mut self) -> Result<Message, TryRecvError> {
        self.rx.try_recv().map(|held| held.message)
    }

    /// No more messages go in; those in it can still be taken out.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }
}

/// Messages that arrived while no stream wanted them, kept for the next
/// stream that does, with the bytes they hold ([`message_size`]).
#[derive(Debug, Default)]
pub(crate) struct Unclaimed {
    messages: VecDeque<Message>,
    bytes: usize,
}

impl Unclaimed {
    /// Whether `message` fits in a stream's worth: `capacity` messages and
    /// `max_bytes` bytes (one message always fits in an empty buffer).
    pub(crate) fn has_room(&self, message: &Message, capacity: usize, max_bytes: u32) -> bool {
        self.messages.is_empty()
            || (self.messages.len() < capacity
                && self.bytes.saturating_add(message_size(message)) <= max_bytes as usize)
    }

    pub(crate) fn push_back(&mut self, message: Message) {
        self.bytes = self.bytes.saturating_add(message_size(&message));
        self.messages.push_back(message);
    }

    pub(crate) fn push_front(&mut self, message: Message) {
        self.bytes = self.bytes.saturating_add(message_size(&message));
        self.messages.push_front(message);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Message> {
        let message = self.messages.pop_front()?;
        self.bytes = self.bytes.saturating_sub(message_size(&message));
        Some(message)
    }

    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use fulmar_codec::{MqttString, Publish};

    use super::*;

    fn message(payload: usize) -> Message {
        Message::new(
            Publish::new(MqttString::from("t"), Bytes::from(vec![0u8; payload])),
            None,
        )
    }

    #[test]
    fn a_stream_is_full_at_its_byte_budget_before_its_message_count() {
        let one = message_size(&message(1000)) as u32;
        let (tx, mut rx) = stream(100, 3 * one);
        for _ in 0..3 {
            tx.try_send(message(1000)).unwrap();
        }
        assert!(matches!(
            tx.try_send(message(1000)),
            Err(TrySendError::Full(_))
        ));
        // Taking one out gives its bytes back.
        assert_eq!(rx.try_recv().unwrap().payload.len(), 1000);
        tx.try_send(message(1000)).unwrap();
        assert!(matches!(
            tx.try_send(message(0)),
            Err(TrySendError::Full(_))
        ));
    }

    #[test]
    fn a_message_over_the_whole_budget_goes_into_an_empty_stream() {
        let (tx, mut rx) = stream(100, 4096);
        tx.try_send(message(10)).unwrap();
        // Takes the whole budget: waits for the stream to empty.
        assert!(matches!(
            tx.try_send(message(1 << 20)),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(rx.try_recv().unwrap().payload.len(), 10);
        tx.try_send(message(1 << 20)).unwrap();
        assert!(matches!(
            tx.try_send(message(0)),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(rx.try_recv().unwrap().payload.len(), 1 << 20);
        tx.try_send(message(0)).unwrap();
    }

    #[test]
    fn the_message_count_still_bounds_small_messages() {
        let (tx, _rx) = stream(2, u32::MAX);
        tx.try_send(message(0)).unwrap();
        tx.try_send(message(0)).unwrap();
        assert!(matches!(
            tx.try_send(message(0)),
            Err(TrySendError::Full(_))
        ));
    }

    #[tokio::test]
    async fn a_reservation_waits_for_the_bytes() {
        let one = message_size(&message(100)) as u32;
        let (tx, mut rx) = stream(10, one);
        tx.try_send(message(100)).unwrap();
        let next = message(100);
        let mut reserve = Box::pin(tx.clone().reserve(&next));
        assert!(futures::poll!(&mut reserve).is_pending());
        drop(rx.try_recv().unwrap());
        let permit = reserve.await.unwrap();
        permit.send(next);
        assert_eq!(rx.try_recv().unwrap().payload.len(), 100);
        // A closed stream gives no permit.
        drop(rx);
        assert!(tx.reserve(&message(1)).await.is_none());
    }

    #[test]
    fn unclaimed_messages_are_bounded_in_bytes_and_count() {
        let one = message_size(&message(1000));
        let mut kept = Unclaimed::default();
        // One message always fits in an empty buffer.
        assert!(kept.has_room(&message(1 << 20), 4, 10));
        for _ in 0..2 {
            assert!(kept.has_room(&message(1000), 4, 2 * one as u32));
            kept.push_back(message(1000));
        }
        assert_eq!(kept.bytes(), 2 * one);
        assert!(!kept.has_room(&message(1000), 4, 2 * one as u32));
        assert!(kept.has_room(&message(1000), 4, 3 * one as u32));
        assert!(!kept.has_room(&message(0), 2, u32::MAX));
        kept.pop_front().unwrap();
        kept.push_front(message(1000));
        kept.pop_front().unwrap();
        kept.pop_front().unwrap();
        assert!(kept.is_empty());
        assert_eq!(kept.bytes(), 0);
    }

    #[test]
    fn a_dropped_receiver_closes_the_stream() {
        let (tx, rx) = stream(4, 1 << 20);
        drop(rx);
        assert!(matches!(
            tx.try_send(message(1)),
            Err(TrySendError::Closed(_))
        ));
    }
}
