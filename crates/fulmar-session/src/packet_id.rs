//! Packet identifier allocation: never hand out an identifier that is in use.

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
/// `NOT_IN_FLIGHT`. One map instead of a set and a map saves a lookup per
/// message (removing an in-flight entry frees its identifier).
///
/// An open-addressing table of its own rather than a `HashMap`: identifiers
/// are 16-bit, never 0 (which marks an empty slot), and mostly consecutive
/// (they are handed out in turn), so a multiplicative (Fibonacci) hash
/// spreads them evenly, linear probing in a table at most half full finds
/// them in a step or two, and a removal shifts the entries after it back
/// instead of leaving a tombstone. Each operation is a few instructions,
/// where the `HashMap` (entry, insertion and removal, three per message)
/// cost some 170 instructions per QoS 1 message. The identifiers are ours
/// (the peer can only choose which to leave unacknowledged, up to our send
/// window), as they were with the fixed `IdHasher` before.
#[derive(Clone, Debug, Default)]
pub(crate) struct PacketIds {
    /// A power of two long, or empty; a slot with `id` 0 is free.
    slots: Vec<Slot>,
    /// Identifiers in use (slots taken).
    len: usize,
    /// 32 less the number of bits of `slots.len()`.
    shift: u32,
    next: u16,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// 0: free.
    id: u16,
    /// Sequence number in the in-flight table, or `NOT_IN_FLIGHT`.
    seq: u64,
}

/// Where `PacketIds::find` found an identifier: valid until the table
/// changes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found(usize);

/// A table emptied from more slots than this gives its room back.
const KEPT_SLOTS: usize = 1024;

impl PacketIds {
    /// No identifier in use, starting at 1.
    pub(crate) const EMPTY: Self = Self {
        slots: Vec::new(),
        len: 0,
        shift: 0,
        next: 0,
    };

    /// Continues after `last` (the highest recently used identifier).
    pub(crate) fn starting_after(last: u16) -> Self {
        Self {
            next: last,
            ..Self::EMPTY
        }
    }

    /// The identifier the next allocation starts from.
    pub(crate) fn cursor(&self) -> u16 {
        self.next
    }

    /// The home slot of `id` (the table is not empty).
    #[inline(always)]
    fn home(&self, id: u16) -> usize {
        // Fibonacci hashing: the top bits of the product, as many as the
        // table has slots (`shift` is 32 less that number of bits).
        (u32::from(id).wrapping_mul(0x9E37_79B9) >> (self.shift & 31)) as usize
    }

    /// The slot of `id`, or `Err` with the free slot where it would go
    /// (`Err(None)`: the table has no room at all).
    #[inline(always)]
    fn probe(&self, id: u16) -> Result<usize, Option<usize>> {
        if self.slots.is_empty() {
            return Err(None);
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(id);
        // At most half full: a free slot ends every probe.
        loop {
            match self.slots.get(at) {
                Some(slot) if slot.id == id => return Ok(at),
                Some(slot) if slot.id == 0 => return Err(Some(at)),
                Some(_) => at = (at + 1) & mask,
                None => return Err(None),
            }
        }
    }

    /// Makes room for one more identifier (at most half full).
    #[inline(always)]
    fn reserve_one(&mut self) {
        if 2 * (self.len + 1) > self.slots.len() {
            self.grow();
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let size = (2 * self.slots.len()).max(8);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        self.shift = 32 - size.trailing_zeros();
        for slot in old.into_iter().filter(|s| s.id != 0) {
            if let Err(Some(at)) = self.probe(slot.id)
                && let Some(free) = self.slots.get_mut(at)
            {
                *free = slot;
            }
        }
    }

    /// Puts `id` with `seq` at the free slot `at` (after `reserve_one`).
    #[inline(always)]
    fn fill(&mut self, at: usize, id: u16, seq: u64) {
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Slot { id, seq };
            self.len += 1;
        }
    }

    /// An unused identifier, marked in use; `None` when all 65 535 are taken.
    pub(crate) fn allocate(&mut self) -> Option<PacketId> {
        if self.len >= usize::from(u16::MAX) {
            return None;
        }
        self.reserve_one();
        loop {
            self.next = self.next.checked_add(1).unwrap_or(1);
            if let Err(Some(at)) = self.probe(self.next) {
                self.fill(at, self.next, NOT_IN_FLIGHT);
                return PacketId::new(self.next);
            }
        }
    }

    /// Marks `id` in use; `false` if it already was.
    pub(crate) fn claim(&mut self, id: PacketId) -> bool {
        self.reserve_one();
        match self.probe(id.get()) {
            Err(Some(at)) => {
                self.fill(at, id.get(), NOT_IN_FLIGHT);
                true
            }
            _ => false,
        }
    }

    /// Where `id` is, if it is in use.
    #[inline]
    pub(crate) fn find(&self, id: PacketId) -> Option<Found> {
        self.probe(id.get()).ok().map(Found)
    }

    /// The value found: the in-flight sequence number, if in flight.
    #[inline]
    pub(crate) fn seq_at(&self, found: Found) -> Option<u64> {
        self.slots
            .get(found.0)
            .map(|s| s.seq)
            .filter(|s| *s != NOT_IN_FLIGHT)
    }

    /// The in-flight sequence number of `id`, if it is in flight.
    #[inline]
    pub(crate) fn seq(&self, id: PacketId) -> Option<u64> {
        self.seq_at(self.find(id)?)
    }

    /// Marks `id` in use and in flight with sequence number `seq`.
    #[inline]
    pub(crate) fn set_seq(&mut self, id: PacketId, seq: u64) {
        // Usually in use already (allocated when its message was queued).
        match self.probe(id.get()) {
            Ok(at) => {
                if let Some(slot) = self.slots.get_mut(at) {
                    slot.seq = seq;
                }
            }
            Err(_) => {
                self.reserve_one();
                if let Err(Some(at)) = self.probe(id.get()) {
                    self.fill(at, id.get(), seq);
                }
            }
        }
    }

    /// Frees the identifier found (`found` is then stale).
    #[inline(always)]
    pub(crate) fn remove_at(&mut self, found: Found) {
        let mask = self.slots.len().wrapping_sub(1);
        let mut hole = found.0;
        match self.slots.get_mut(hole) {
            Some(slot) if slot.id != 0 => slot.id = 0,
            _ => return,
        }
        self.len -= 1;
        // Backward shift: an entry after the hole, up to the next free
        // slot, moves into it if the hole is on its probe path.
        let mut at = (hole + 1) & mask;
        loop {
            let Some(&slot) = self.slots.get(at) else {
                return;
            };
            if slot.id == 0 {
                break;
            }
            let home = self.home(slot.id);
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                if let Some(free) = self.slots.get_mut(hole) {
                    *free = slot;
                }
                if let Some(moved) = self.slots.get_mut(at) {
                    moved.id = 0;
                }
                hole = at;
            }
            at = (at + 1) & mask;
        }
        if self.len == 0 && self.slots.len() > KEPT_SLOTS {
            self.slots = Vec::new();
            self.shift = 0;
        }
    }

    /// Makes `id` available again.
    pub(crate) fn release(&mut self, id: PacketId) {
        if let Some(found) = self.find(id) {
            self.remove_at(found);
        }
    }

    /// Whether no identifier is in use.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is in use.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: PacketId) -> bool {
        self.find(id).is_some()
    }

    /// Number of identifiers in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
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
    fn the_table_agrees_with_a_map() {
        // Random operations against a `HashMap` model, with few and with
        // many identifiers in use (growth, wrapping, backward shifts).
        use std::collections::HashMap;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for &(start, spread) in &[(0u16, 64u64), (65_000, 3000), (100, 65_535)] {
            let mut ids = PacketIds::starting_after(start);
            let mut model: HashMap<u16, u64> = HashMap::new();
            let mut cursor = start;
            for step in 0..20_000u64 {
                let id = PacketId::new(u16::try_from(1 + random(spread)).unwrap()).unwrap();
                match random(6) {
                    0 | 1 => {
                        let got = ids.allocate().unwrap();
                        loop {
                            cursor = cursor.checked_add(1).unwrap_or(1);
                            if !model.contains_key(&cursor) {
                                break;
                            }
                        }
                        assert_eq!(got.get(), cursor);
                        model.insert(cursor, NOT_IN_FLIGHT);
                    }
                    2 => {
                        let fresh = !model.contains_key(&id.get());
                        model.entry(id.get()).or_insert(NOT_IN_FLIGHT);
                        assert_eq!(ids.claim(id), fresh);
                    }
                    3 => {
                        ids.set_seq(id, step);
                        model.insert(id.get(), step);
                    }
                    _ => {
                        ids.release(id);
                        model.remove(&id.get());
                    }
                }
                assert_eq!(ids.len(), model.len());
                for probe in [id, PacketId::new(cursor.max(1)).unwrap()] {
                    let expected = model.get(&probe.get()).copied();
                    assert_eq!(ids.contains(probe), expected.is_some());
                    assert_eq!(ids.seq(probe), expected.filter(|s| *s != NOT_IN_FLIGHT));
                }
            }
            for (&id, &seq) in &model {
                let id = PacketId::new(id).unwrap();
                assert_eq!(ids.seq(id), Some(seq).filter(|s| *s != NOT_IN_FLIGHT));
                ids.release(id);
            }
            assert!(ids.is_empty());
        }
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
