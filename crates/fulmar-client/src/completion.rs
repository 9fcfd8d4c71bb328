//! Where publishes learn their outcome: one table of slots per client
//! instead of a channel per publish.
//!
//! A [`PublishFuture`](crate::PublishFuture) takes a slot before it hands its
//! message to the connection task; the connection task writes the outcome
//! into the slot and wakes the future. A slot is used by one publish at a
//! time and goes back to the free list when both sides are finished with it:
//!
//! - the future read the outcome (`Done` → free), or
//! - the future was dropped first (`Waiting` → `Abandoned`) and the outcome
//!   came later (`Abandoned` → free).
//!
//! The connection task completes every slot it was handed exactly once (with
//! [`Error::Closed`] when it stops), so no future waits forever.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::client::PublishOutcome;
use crate::error::Error;

/// How a publish ended.
pub(crate) type Outcome = Result<PublishOutcome, Error>;

/// The index of a slot, handed from the future to the connection task.
pub(crate) type Key = usize;

enum Slot {
    /// On the free list.
    Free,
    /// The outcome is not known yet; the waker of the last poll.
    Waiting(Option<Waker>),
    /// The outcome, not read yet.
    Done(Outcome),
    /// The future was dropped; the slot is freed with the outcome.
    Abandoned,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<Key>,
}

impl Slots {
    fn release(&mut self, key: Key) {
        if let Some(slot) = self.slots.get_mut(key) {
            *slot = Slot::Free;
            self.free.push(key);
        }
    }
}

/// The slots of one client, shared by its handles and its connection task.
#[derive(Default)]
pub(crate) struct Completions {
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for Completions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completions").finish_non_exhaustive()
    }
}

impl Completions {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // The table stays consistent if a waker panicked: keep going.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a publish about to be handed to the connection task.
    pub(crate) fn take(&self) -> Key {
        let mut slots = self.lock();
        if let Some(key) = slots.free.pop()
            && let Some(slot) = slots.slots.get_mut(key)
        {
            *slot = Slot::Waiting(None);
            return key;
        }
        slots.slots.push(Slot::Waiting(None));
        slots.slots.len() - 1
    }

    /// Gives back a slot whose publish never reached the connection task.
    pub(crate) fn release(&self, key: Key) {
        self.lock().release(key);
    }

    /// The outcome, once the connection task wrote it (which frees the slot).
    pub(crate) fn poll(&self, key: Key, cx: &Context<'_>) -> Poll<Outcome> {
        let mut slots = self.lock();
        let Some(slot) = slots.slots.get_mut(key) else {
            return Poll::Ready(Err(Error::Closed));
        };
        match slot {
            Slot::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Slot::Done(_) => {
                let Slot::Done(outcome) = std::mem::replace(slot, Slot::Free) else {
                    return Poll::Ready(Err(Error::Closed));
                };
                slots.free.push(key);
                Poll::Ready(outcome)
            }
            // Not a state a live future sees.
            Slot::Free | Slot::Abandoned => Poll::Ready(Err(Error::Closed)),
        }
    }

    /// The future of `key` was dropped before reading its outcome.
    pub(crate) fn abandon(&self, key: Key) {
        let mut slots = self.lock();
        match slots.slots.get_mut(key) {
            Some(slot @ Slot::Waiting(_)) => *slot = Slot::Abandoned,
            Some(Slot::Done(_)) => slots.release(key),
            _ => {}
        }
    }

    /// Writes the outcome of `key` and wakes its future (connection task).
    pub(crate) fn complete(&self, key: Key, outcome: Outcome) {
        let waker = {
            let mut slots = self.lock();
            match slots.slots.get_mut(key) {
                Some(slot @ Slot::Waiting(_)) => {
                    match std::mem::replace(slot, Slot::Done(outcome)) {
                        Slot::Waiting(waker) => waker,
                        _ => None,
                    }
                }
                Some(Slot::Abandoned) => {
                    slots.release(key);
                    None
                }
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn outcome() -> Outcome {
        Ok(PublishOutcome {
            qos: fulmar_codec::QoS::AtLeastOnce,
            reason_code: fulmar_codec::ReasonCode::Success,
            properties: Default::default(),
        })
    }

    #[test]
    fn completed_slot_wakes_the_future_and_is_reused() {
        let completions = Completions::default();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let cx = Context::from_waker(&waker);
        let key = completions.take();
        assert!(completions.poll(key, &cx).is_pending());
        completions.complete(key, outcome());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(matches!(
            completions.poll(key, &cx),
            Poll::Ready(Ok(PublishOutcome {
                qos: fulmar_codec::QoS::AtLeastOnce,
                ..
            }))
        ));
        // Read: the slot is free again.
        assert_eq!(completions.take(), key);
    }

    #[test]
    fn abandoned_slot_is_freed_by_its_outcome_only() {
        let completions = Completions::default();
        let first = completions.take();
        completions.abandon(first);
        // Still owned by the connection task: a new publish gets another slot.
        let second = completions.take();
        assert_ne!(first, second);
        completions.complete(first, Err(Error::Closed));
        assert_eq!(completions.take(), first);
    }

    #[test]
    fn outcome_not_read_is_freed_when_the_future_goes() {
        let completions = Completions::default();
        let key = completions.take();
        completions.complete(key, outcome());
        completions.abandon(key);
        assert_eq!(completions.take(), key);
    }
}
