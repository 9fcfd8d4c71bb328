//! Packet identifier allocation: never hand out an identifier that is in use.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};

use fulmar_codec::PacketId;

/// Hasher for packet identifiers: a multiplicative hash of the 16-bit value.
/// The keys are at most 65 535 distinct small integers, so flooding a table
/// with collisions is bounded; SipHash would cost more than the table itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u8(*b);
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `HashMap`/`HashSet` hasher for packet identifier keys.
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

/// The value of an identifier in use that is not in the in-flight table.
const NOT_IN_FLIGHT: u64 = u64::MAX;

/// Outbound packet identifiers in use (in-flight and queued QoS 1/2 messages,
/// SUBSCRIBE/UNSUBSCRIBE awaiting their ack), and the next one to try.
///
/// The same map is the in-flight table's index: an identifier of a message in
/// flight maps to its sequence number in the table, any other to
/// `NOT_IN_FLIGHT`. One map instead of a set and a map saves a hash
/// operation per message (removing an in-flight entry frees its identifier).
#[derive(Clone, Debug, Default)]
pub(crate) struct PacketIds {
    in_use: HashMap<PacketId, u64, IdHash>,
    next: u16,
}

impl PacketIds {
    /// No identifier in use, starting at 1.
    pub(crate) const EMPTY: Self = Self {
        in_use: HashMap::with_hasher(BuildHasherDefault::new()),
        next: 0,
    };

    /// Continues after `last` (the highest recently used identifier).
    pub(crate) fn starting_after(last: u16) -> Self {
        Self {
            in_use: HashMap::default(),
            next: last,
        }
    }

    /// The identifier the next allocation starts from.
    pub(crate) fn cursor(&self) -> u16 {
        self.next
    }

    /// An unused identifier, marked in use; `None` when all 65 535 are taken.
    pub(crate) fn allocate(&mut self) -> Option<PacketId> {
        if self.in_use.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.next = self.next.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(self.next)
                && let Entry::Vacant(slot) = self.in_use.entry(id)
            {
                slot.insert(NOT_IN_FLIGHT);
                return Some(id);
            }
        }
    }

    /// Marks `id` in use; `false` if it already was.
    pub(crate) fn claim(&mut self, id: PacketId) -> bool {
        match self.in_use.entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(NOT_IN_FLIGHT);
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// The in-flight sequence number of `id`, if it is in flight.
    pub(crate) fn seq(&self, id: PacketId) -> Option<u64> {
        self.in_use
            .get(&id)
            .copied()
            .filter(|s| *s != NOT_IN_FLIGHT)
    }

    /// The in-flight sequence number of `id`, to change, if it is in flight.
    pub(crate) fn seq_mut(&mut self, id: PacketId) -> Option<&mut u64> {
        self.in_use.get_mut(&id).filter(|s| **s != NOT_IN_FLIGHT)
    }

    /// Marks `id` in use and in flight with sequence number `seq`.
    #[inline]
    pub(crate) fn set_seq(&mut self, id: PacketId, seq: u64) {
        // Usually in use already (allocated when its message was queued): a
        // lookup costs less than an insertion.
        match self.in_use.get_mut(&id) {
            Some(slot) => *slot = seq,
            None => {
                self.in_use.insert(id, seq);
            }
        }
    }

    /// The map entry of `id`, whose value is its in-flight sequence number
    /// (or not in flight); removing it frees the identifier.
    pub(crate) fn entry(&mut self, id: PacketId) -> Entry<'_, PacketId, u64> {
        self.in_use.entry(id)
    }

    /// Makes `id` available again.
    pub(crate) fn release(&mut self, id: PacketId) {
        self.in_use.remove(&id);
    }

    /// Whether no identifier is in use.
    pub(crate) fn is_empty(&self) -> bool {
        self.in_use.is_empty()
    }

    /// Whether `id` is in use.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: PacketId) -> bool {
        self.in_use.contains_key(&id)
    }

    /// Number of identifiers in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_skips_identifiers_in_use_and_never_returns_zero() {
        // MQTT-4.3.2-1 MQTT-4.3.3-1 v5:MQTT-2.2.1-3
        let mut ids = PacketIds::starting_after(65534);
        let a = ids.allocate().unwrap();
        assert_eq!(a.get(), 65535);
        let b = ids.allocate().unwrap();
        assert_eq!(b.get(), 1, "wraps to 1, never 0");
        assert!(ids.claim(PacketId::new(2).unwrap()));
        assert_eq!(ids.allocate().unwrap().get(), 3);
        ids.release(b);
        assert!(!ids.contains(b));
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut ids = PacketIds::default();
        for _ in 0..65535 {
            assert!(ids.allocate().is_some());
        }
        assert_eq!(ids.allocate(), None);
        ids.release(PacketId::new(4242).unwrap());
        assert_eq!(ids.allocate().unwrap().get(), 4242);
    }
}
