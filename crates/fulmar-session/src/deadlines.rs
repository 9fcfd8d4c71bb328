//! Client: the deadlines of the requests and QoS 1/2 flow steps waiting for
//! the server's answer ([`Config::request_timeout`](crate::Config::request_timeout)).
//!
//! In the order they were set (each is the time it was set plus the same
//! timeout, so the first is the earliest), with a map of the live ones: an
//! answer removes its deadline in constant time, whichever it is (a hostile
//! server's acknowledgements for identifiers never used cost no scan), and
//! entries that went stale are dropped as they reach the front, or all at
//! once when they outnumber the live ones.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use fulmar_codec::PacketId;

use crate::packet_id::IdHash;

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    order: VecDeque<(Instant, PacketId)>,
    live: HashMap<PacketId, Instant, IdHash>,
}

impl Deadlines {
    pub(crate) const fn new() -> Self {
        Self {
            order: VecDeque::new(),
            live: HashMap::with_hasher(std::hash::BuildHasherDefault::new()),
        }
    }

    /// `id` must be answered by `deadline` (replacing an earlier deadline).
    pub(crate) fn start(&mut self, id: PacketId, deadline: Instant) {
        if self.live.insert(id, deadline) == Some(deadline) {
            return;
        }
        self.order.push_back((deadline, id));
        self.clean();
    }

    /// `id` was answered.
    pub(crate) fn end(&mut self, id: PacketId) {
        if self.live.remove(&id).is_some() {
            self.clean();
        }
    }

    /// The earliest live deadline.
    pub(crate) fn first(&self) -> Option<Instant> {
        self.order.front().map(|(deadline, _)| *deadline)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The front is live (or there is none), and at most half the entries
    /// (plus a few) are stale.
    fn clean(&mut self) {
        let live = &self.live;
        while let Some((deadline, id)) = self.order.front() {
            if live.get(id) == Some(deadline) {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * live.len() + 16 {
            self.order
                .retain(|(deadline, id)| live.get(id) == Some(deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant; only differences matter
    fn the_first_live_deadline_and_bounded_stale_entries() {
        let t = Instant::now();
        let id = |n: u16| PacketId::new(n).unwrap_or(PacketId::ONE);
        let mut d = Deadlines::new();
        assert_eq!(d.first(), None);
        d.start(id(1), t);
        d.start(id(2), t + Duration::from_secs(1));
        d.start(id(3), t + Duration::from_secs(2));
        assert_eq!(d.first(), Some(t));
        // Answered out of order: the middle one goes, the front stays.
        d.end(id(2));
        assert_eq!(d.first(), Some(t));
        d.end(id(1));
        assert_eq!(d.first(), Some(t + Duration::from_secs(2)));
        // A new deadline for a live id replaces its old one.
        d.start(id(3), t + Duration::from_secs(5));
        assert_eq!(d.first(), Some(t + Duration::from_secs(5)));
        // Unknown ids cost nothing; answers for every id but a stuck one
        // leave a bounded number of entries behind it.
        d.end(id(9));
        for n in 10..10_000u16 {
            d.start(id(n), t + Duration::from_secs(6));
            d.end(id(n));
        }
        assert!(d.order.len() <= 2 * d.live.len() + 16, "{}", d.order.len());
        assert_eq!(d.first(), Some(t + Duration::from_secs(5)));
        d.end(id(3));
        assert!(d.is_empty());
        assert_eq!(d.first(), None);
    }
}
