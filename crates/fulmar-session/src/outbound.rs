//! Outbound QoS machinery: the queue of messages not sent yet, the in-flight
//! table (PUBLISH awaiting PUBACK/PUBREC, PUBREL awaiting PUBCOMP) in send
//! order, the send quota (MQTT 5.0 section 4.9) and retransmission on resume.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::time::Instant;

use fulmar_codec::{
    AckProperties, MqttString, Packet, PacketId, PubAck, PubComp, PubRec, PubRecReasonCode,
    PubRelReasonCode, Publish, PublishProperties, QoS, ReasonCode,
};

use crate::error::LimitExceeded;
use crate::event::{DropReason, Event};
use crate::packet_id::PacketIds;
use crate::state::Outgoing;
use crate::transmit::TxQueue;

/// Room for messages (about 250 bytes each, stored inline) that the queue and
/// the in-flight table keep when they become empty, if they had grown beyond
/// [`SHRINK_ABOVE`]; below that the room is kept, so that a connection that
/// regularly has a few hundred messages in flight does not reallocate for
/// every burst.
const KEPT_CAPACITY: usize = 128;

/// See [`KEPT_CAPACITY`].
const SHRINK_ABOVE: usize = 4 * KEPT_CAPACITY;

/// Stage of an in-flight message.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // inline on purpose, see `Stage::Publish`
enum Stage {
    /// PUBLISH sent, awaiting PUBACK (QoS 1) or PUBREC (QoS 2). Stored
    /// inline, not boxed: a batch of messages in flight at once defeats the
    /// allocator's small per-thread cache, so a box cost a `malloc` and a
    /// `free` of some 170 instructions each per message, far more than the
    /// copies of the value into and out of the ring.
    Publish(Publish),
    /// PUBREL sent, awaiting PUBCOMP; with what the PUBREC said, which is
    /// the flow's outcome: its reason code (0x00, or 0x10 No matching
    /// subscribers) and its properties (boxed, when there are any).
    PubRel(PubRecReasonCode, Option<Box<AckProperties>>),
}

#[derive(Clone, Debug)]
struct Entry {
    id: PacketId,
    stage: Stage,
    /// The PUBLISH was sent on this connection and consumes send quota.
    live: bool,
    /// When the Message Expiry Interval of the stored PUBLISH was last
    /// reduced (first sent, or restored): a resend or a snapshot forwards
    /// the interval less the time since (v5 3.3.2.3.3).
    since: Instant,
    /// Its place in send order: when it was put in the table or, for a
    /// PUBREL, when its PUBREC came (see [`InFlight::values`]). 32 bits,
    /// which fit in the entry's padding (it stays 256 bytes, and every
    /// copy of it is a `memcpy` of its size); renumbered before they run out.
    order: u32,
}

/// What [`InFlight::remove_if`] removed.
#[derive(Clone, Copy, Debug)]
struct Removed {
    /// The PUBLISH was sent on this connection (it held send quota).
    live: bool,
    /// It was the front of the table (see [`InFlight`]).
    front: bool,
}

#[derive(Clone, Debug)]
struct Pending {
    /// Inline for the same reason as [`Stage::Publish`].
    publish: Publish,
    queued_at: Instant,
    /// Its number (see [`Outbound::published`]); 0 for a message restored
    /// from a stored state.
    number: u64,
}

/// The messages queued, not sent yet, and their bytes
/// ([`Publish::memory_size`]: a message changed in the queue only has its
/// Message Expiry Interval changed, which does not count).
#[derive(Clone, Debug, Default)]
struct PendingQueue {
    queue: VecDeque<Pending>,
    /// Sum of the queued messages' [`Publish::memory_size`].
    bytes: usize,
}

impl PendingQueue {
    const EMPTY: Self = Self {
        queue: VecDeque::new(),
        bytes: 0,
    };

    #[inline]
    fn push_back(&mut self, pending: Pending) {
        self.queue.push_back(pending);
        // Counted where it lies, once moved in.
        if let Some(last) = self.queue.back() {
            self.bytes += last.publish.memory_size();
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<Pending> {
        // Counted where it lies, before it moves out.
        let size = self.queue.front()?.publish.memory_size();
        self.bytes = self.bytes.saturating_sub(size);
        self.queue.pop_front()
    }

    /// The next message, to be checked and changed in place (its payload
    /// stays as it is).
    fn front_mut(&mut self) -> Option<&mut Pending> {
        self.queue.front_mut()
    }

    fn retain(&mut self, mut keep: impl FnMut(&Pending) -> bool) {
        let bytes = &mut self.bytes;
        self.queue.retain(|q| {
            let kept = keep(q);
            if !kept {
                *bytes = bytes.saturating_sub(q.publish.memory_size());
            }
            kept
        });
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.queue.iter()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// An empty queue that had room for more than [`SHRINK_ABOVE`] messages
    /// gives back all but [`KEPT_CAPACITY`]: they are stored inline, and a
    /// large burst should not stay allocated.
    fn shrink(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > SHRINK_ABOVE {
            self.queue.shrink_to(KEPT_CAPACITY);
        }
    }
}

impl IntoIterator for PendingQueue {
    type Item = Pending;
    type IntoIter = std::collections::vec_deque::IntoIter<Pending>;

    fn into_iter(self) -> Self::IntoIter {
        self.queue.into_iter()
    }
}

/// What `Outbound::prepare` did.
pub(crate) enum Next {
    /// A PUBLISH is ready for `Outbound::take`.
    Ready,
    /// This message was dropped instead: its packet identifier (QoS 1/2),
    /// its number (see [`Outbound::published`]; 0 for a message sent before,
    /// or restored), and why.
    Dropped(Option<PacketId>, u64, DropReason),
    /// Nothing to send (empty, or the quota is used up).
    Nothing,
}

/// The slots of the in-flight table: a ring of `Option<Entry>` (`None`: a
/// hole) over a buffer whose every place holds a value, `None` when unused.
/// Unlike a `VecDeque`, a slot is appended by writing `None` where it goes
/// (`VecDeque::push_back` copies a whole 256-byte value in), and holes at the
/// front are dropped by moving the start past them: they hold nothing.
#[derive(Clone, Debug, Default)]
struct Slots {
    /// `len` slots from `head` on, wrapping; every other place is `None`.
    buf: Vec<Option<Entry>>,
    head: usize,
    len: usize,
}

impl Slots {
    const EMPTY: Self = Self {
        buf: Vec::new(),
        head: 0,
        len: 0,
    };

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for slots (allocated).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The place in `buf` of slot `i` (`i` < `len` <= `buf.len()`).
    #[inline(always)]
    fn place(&self, i: usize) -> usize {
        let at = self.head + i;
        if at >= self.buf.len() {
            at - self.buf.len()
        } else {
            at
        }
    }

    #[inline]
    fn get(&self, i: usize) -> Option<&Option<Entry>> {
        if i >= self.len {
            return None;
        }
        self.buf.get(self.place(i))
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> Option<&mut Option<Entry>> {
        if i >= self.len {
            return None;
        }
        let at = self.place(i);
        self.buf.get_mut(at)
    }

    /// Appends a hole and returns it, to be filled.
    #[inline]
    fn push_hole(&mut self) -> Option<&mut Option<Entry>> {
        if self.len == self.buf.len() {
            self.grow();
        }
        self.len += 1;
        let at = self.place(self.len - 1);
        self.buf.get_mut(at)
    }

    /// Twice the room (at least 8), the slots first.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let room = (2 * self.buf.len()).max(8);
        let mut buf: Vec<Option<Entry>> = Vec::with_capacity(room);
        for i in 0..self.len {
            let at = self.place(i);
            buf.push(self.buf.get_mut(at).and_then(Option::take));
        }
        buf.resize_with(room, || None);
        self.buf = buf;
        self.head = 0;
    }

    /// Holes at the front.
    fn front_holes(&self) -> usize {
        (0..self.len)
            .take_while(|i| matches!(self.buf.get(self.place(*i)), Some(None)))
            .count()
    }

    /// Drops the first `n` slots, which must be holes (they hold nothing:
    /// only the start moves).
    fn drop_front_holes(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = self.place(n);
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Drops every slot, holes all (the table is empty): only the start
    /// moves. A buffer grown beyond `SHRINK_ABOVE` gives back all but
    /// `KEPT_CAPACITY` places.
    fn clear_holes(&mut self) {
        self.head = 0;
        self.len = 0;
        if self.buf.len() > SHRINK_ABOVE {
            self.buf.truncate(KEPT_CAPACITY);
            self.buf.shrink_to_fit();
        }
    }

    /// Drops the holes, keeping the entries in order at the front.
    fn compact(&mut self) {
        let mut kept = 0;
        for i in 0..self.len {
            let at = self.place(i);
            let Some(entry) = self.buf.get_mut(at).and_then(Option::take) else {
                continue;
            };
            let to = self.place(kept);
            if let Some(slot) = self.buf.get_mut(to) {
                *slot = Some(entry);
            }
            kept += 1;
        }
        self.len = kept;
    }

    fn iter(&self) -> impl Iterator<Item = &Option<Entry>> {
        (0..self.len).filter_map(|i| self.buf.get(self.place(i)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Option<Entry>> {
        let (head, len) = (self.head.min(self.buf.len()), self.len);
        let (before, from_head) = self.buf.split_at_mut(head);
        from_head.iter_mut().chain(before.iter_mut()).take(len)
    }
}

/// The in-flight table: entries in send order in a ring (a removed entry
/// leaves a hole until holes are the majority; then the holes at the front
/// are dropped at once, and the ring is compacted if that was not enough),
/// found by identifier through the identifier allocator's map
/// ([`PacketIds::seq`]: identifier to sequence number). Inserting and
/// removing cost a ring push, a hole, and a small-key hash lookup; an empty
/// table drops its holes at once.
///
/// It also keeps its front, the entry in the first slot that is not a
/// hole: the oldest flow in flight, in the order the PUBLISH packets were
/// first sent (a PUBREL keeps its PUBLISH's slot). A removal and a PUBREC
/// tell whether they were the front's: the request timeout of the
/// session's flows watches the front only
/// ([`Config::request_timeout`](crate::Config::request_timeout)).
#[derive(Clone, Debug, Default)]
struct InFlight {
    slots: Slots,
    /// Sequence number of `slots[0]`.
    first: u64,
    /// Where the front is, settled lazily: the sequence number of the front
    /// entry (the first slot that is not a hole), or of a hole before it
    /// with only holes in between, or the one the next entry pushed gets
    /// (`first` plus the number of slots) when there is none. When the
    /// front entry goes, it moves to the next slot without looking at it:
    /// acknowledgements in send order find the front where they look first.
    front: u64,
    /// `front` is the front entry itself, or there is none: an answer to
    /// another entry is not the front's, without looking at the slots.
    front_settled: bool,
    /// Entries in the table (slots that are not holes).
    count: usize,
    /// The `order` of the next entry put in the table or released.
    next_order: u32,
}

impl InFlight {
    const EMPTY: Self = Self {
        slots: Slots::EMPTY,
        first: 0,
        front: 0,
        front_settled: false,
        count: 0,
        next_order: 0,
    };

    fn len(&self) -> usize {
        self.count
    }

    fn index(&self, ids: &PacketIds, id: PacketId) -> Option<usize> {
        let seq = ids.seq(id)?;
        usize::try_from(seq.checked_sub(self.first)?).ok()
    }

    fn get(&self, ids: &PacketIds, id: PacketId) -> Option<&Entry> {
        self.slots.get(self.index(ids, id)?)?.as_ref()
    }

    fn get_mut(&mut self, ids: &PacketIds, id: PacketId) -> Option<&mut Entry> {
        let index = self.index(ids, id)?;
        self.slots.get_mut(index)?.as_mut()
    }

    /// Appends `entry` (its identifier must not be in the table) and marks
    /// its identifier in use and in flight.
    #[inline]
    fn push(&mut self, ids: &mut PacketIds, mut entry: Entry) {
        let seq = self.first + self.slots.len() as u64;
        ids.set_seq(entry.id, seq);
        self.count += 1;
        entry.order = self.take_order();
        if let Some(slot) = self.slots.push_hole() {
            *slot = Some(entry);
        }
    }

    /// The next place in send order.
    #[inline]
    fn take_order(&mut self) -> u32 {
        if self.next_order == u32::MAX {
            self.renumber();
        }
        let order = self.next_order;
        self.next_order += 1;
        order
    }

    /// Numbers the entries' places in send order from 0 again, keeping
    /// their order (once every four billion messages and releases).
    #[cold]
    fn renumber(&mut self) {
        let mut entries: Vec<&mut Entry> = self.slots.iter_mut().flatten().collect();
        entries.sort_unstable_by_key(|e| e.order);
        let mut next = 0;
        for entry in entries {
            entry.order = next;
            next += 1;
        }
        self.next_order = next;
    }

    /// Appends an empty slot for the entry of `id`, to be filled at once
    /// (its identifier must not be in the table), and marks its identifier
    /// in use and in flight. The entry is written where it stays: it holds
    /// a whole `Publish`, and every move is a copy.
    #[inline]
    fn push_slot(&mut self, ids: &mut PacketIds, id: PacketId) -> Option<&mut Option<Entry>> {
        let seq = self.first + self.slots.len() as u64;
        ids.set_seq(id, seq);
        self.count += 1;
        self.slots.push_hole()
    }

    /// Removes the entry for `id` if `pred` accepts it, and frees the
    /// identifier (one hash lookup); returns whether it was live and
    /// whether it was the front. The entry is dropped where it is rather
    /// than returned: it holds a whole `Publish`, and moving it out is a
    /// copy.
    fn remove_if(
        &mut self,
        ids: &mut PacketIds,
        id: PacketId,
        pred: impl FnOnce(&mut Entry) -> bool,
    ) -> Option<Removed> {
        let found = ids.find(id)?;
        let seq = ids.seq_at(found)?;
        let index = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        let slot = self.slots.get_mut(index)?;
        let live = match slot {
            Some(entry) if entry.id == id => {
                if !pred(entry) {
                    return None;
                }
                entry.live
            }
            _ => return None,
        };
        ids.remove_at(found);
        *slot = None;
        self.count -= 1;
        let front = self.is_front(seq);
        if front {
            // The slots up to the next entry, if any, are holes.
            self.front = seq + 1;
            self.front_settled = false;
        }
        self.trim(ids);
        Some(Removed { live, front })
    }

    /// Whether the entry with sequence number `seq` (in the table, or just
    /// removed from it) is the front.
    #[inline]
    fn is_front(&mut self, seq: u64) -> bool {
        if seq == self.front {
            return true;
        }
        if self.front_settled {
            return false;
        }
        self.settle_front(seq);
        seq == self.front
    }

    /// Moves the front past the holes it points to, up to `seq` at most
    /// (the entry there may have just been removed). Each hole is passed
    /// once: the front only moves forward but for a compaction, which
    /// leaves no hole.
    fn settle_front(&mut self, seq: u64) {
        // Settled either way: at an entry before `seq`, or at `seq`, which
        // `remove_if` moves past if it removed it.
        self.front_settled = true;
        while self.front < seq {
            let index = self
                .front
                .checked_sub(self.first)
                .and_then(|i| usize::try_from(i).ok());
            match index.and_then(|i| self.slots.get(i)) {
                Some(None) => self.front += 1,
                _ => return,
            }
        }
    }

    /// Makes the entry for `id` a PUBREL awaiting PUBCOMP (its PUBLISH is
    /// dropped) and moves it to the end of the send order, as if it had just
    /// been sent; returns whether there was one, and if so whether it is
    /// the front. It stays in its slot (only its `order` changes): moved to
    /// the back of the ring, it left a hole there and took a new 256-byte
    /// slot.
    fn requeue_released(
        &mut self,
        ids: &PacketIds,
        id: PacketId,
        code: PubRecReasonCode,
        properties: Option<Box<AckProperties>>,
    ) -> Option<bool> {
        let index = self.index(ids, id)?;
        if !matches!(self.slots.get(index), Some(Some(_))) {
            return None;
        }
        // (Renumbering changes no slot.)
        let order = self.take_order();
        let Some(Some(entry)) = self.slots.get_mut(index) else {
            return None;
        };
        entry.stage = Stage::PubRel(code, properties);
        entry.order = order;
        Some(self.is_front(self.first + index as u64))
    }

    /// Drops the holes once they are the majority: first those at the front
    /// (one `drain` for all of them), then, if that was not enough, every
    /// hole by compacting. Holes are left alone until then: dropping them one
    /// at a time cost more than the rest of the removal.
    #[inline]
    fn trim(&mut self, ids: &mut PacketIds) {
        if self.count != 0 && self.slots.len() <= 2 * self.count + 16 {
            return;
        }
        self.trim_now(ids);
    }

    /// [`trim`](Self::trim) past its quick check.
    #[inline(never)]
    fn trim_now(&mut self, ids: &mut PacketIds) {
        if self.count == 0 {
            self.first += self.slots.len() as u64;
            self.front = self.first;
            self.front_settled = true;
            // Entries are large (a whole `Publish`): an idle table does not
            // keep the room a large burst needed.
            self.slots.clear_holes();
            return;
        }
        if self.slots.len() <= 2 * self.count + 16 {
            return;
        }
        let holes = self.slots.front_holes();
        if holes > 0 {
            self.slots.drop_front_holes(holes);
            self.first += holes as u64;
            // It may have pointed to one of them; the front entry is first.
            self.front = self.first;
            self.front_settled = true;
        }
        if self.slots.len() > 2 * self.count + 16 {
            self.compact(ids);
        }
    }

    /// Drops the holes, renumbering the entries (the front is the first).
    fn compact(&mut self, ids: &mut PacketIds) {
        self.slots.compact();
        let first = self.first;
        self.front = first;
        self.front_settled = true;
        for (seq, entry) in (first..).zip(self.slots.iter().flatten()) {
            ids.set_seq(entry.id, seq);
        }
    }

    /// The entries in send order (see [`Entry::order`]): the order of the
    /// slots, unless a PUBREC moved an entry to the end. Only for what is
    /// rare (resuming, a snapshot, discarding the session): it sorts.
    fn values(&self) -> impl Iterator<Item = &Entry> {
        let mut entries: Vec<&Entry> = self.slots.iter().flatten().collect();
        if !entries.is_sorted_by_key(|e| e.order) {
            entries.sort_unstable_by_key(|e| e.order);
        }
        entries.into_iter()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.slots.iter_mut().flatten()
    }
}

/// The outbound half of the session.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outbound {
    pub(crate) ids: PacketIds,
    inflight: InFlight,
    pending: PendingQueue,
    resend: VecDeque<PacketId>,
    live: usize,
    /// Messages accepted by `enqueue`: the last one has this number. A QoS 0
    /// message has no packet identifier; its number tells it apart when it
    /// is dropped.
    pub(crate) published: u64,
    /// The numbers of the QoS 0 messages whose [`Event::PublishDropped`] is
    /// in the session's event queue, in the same order (0 for a restored
    /// message): one per such event, taken by `Session::poll_event`.
    pub(crate) dropped_qos0: VecDeque<u64>,
    /// The number of the QoS 0 message of the [`Event::PublishDropped`]
    /// `Session::poll_event` returned last; 0 after any other event.
    pub(crate) last_dropped_qos0: u64,
}

impl Outbound {
    /// Nothing in flight or queued, no identifier in use: what a session
    /// without an outbound half reads (see [`crate::lazy::LazyOutbound`]).
    pub(crate) const EMPTY: Self = Self {
        ids: PacketIds::EMPTY,
        inflight: InFlight::EMPTY,
        pending: PendingQueue::EMPTY,
        resend: VecDeque::new(),
        live: 0,
        published: 0,
        dropped_qos0: VecDeque::new(),
        last_dropped_qos0: 0,
    };

    /// An empty outbound half whose identifiers continue after `cursor`.
    pub(crate) fn starting_after(cursor: u16) -> Self {
        Self {
            ids: PacketIds::starting_after(cursor),
            ..Self::default()
        }
    }

    /// Whether it holds nothing but the identifier cursor: no identifier in
    /// use (in flight, queued, or a SUBSCRIBE/UNSUBSCRIBE awaiting its ack),
    /// nothing in flight, queued or due for resending, no dropped QoS 0
    /// message to report. Such a half can be replaced by
    /// `starting_after(self.ids.cursor())` without any change but for the
    /// message numbers, which start again from 1 (the in-flight sequence
    /// numbers only order the entries of the table).
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.inflight.count == 0
            && self.inflight.slots.is_empty()
            && self.pending.is_empty()
            && self.resend.is_empty()
            && self.live == 0
            && self.dropped_qos0.is_empty()
    }

    /// Messages in flight (sent, not completely acknowledged).
    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// QoS 1/2 PUBLISH packets sent on this connection and not acknowledged.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Messages queued, not sent yet.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Payload bytes of the messages queued, not sent yet.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending.bytes
    }

    /// Whether a message of `qos` queued now is the next PUBLISH that
    /// [`next`](Self::next) hands out on a connection with send window
    /// `limit`: nothing queued or to resend before it, and for QoS 1/2 a free
    /// slot in the in-flight table.
    pub(crate) fn sends_next(&self, qos: QoS, limit: usize) -> bool {
        self.pending.is_empty()
            && self.resend.is_empty()
            && (qos == QoS::AtMostOnce || self.inflight.len() < limit)
    }

    /// Queues `publish`; assigns its packet identifier for QoS 1/2.
    #[cfg(test)]
    pub(crate) fn enqueue(
        &mut self,
        mut publish: Publish,
        now: Instant,
        max_pending: usize,
    ) -> Result<Option<PacketId>, LimitExceeded> {
        let (id, number) = self.admit(publish.qos, max_pending)?;
        publish.dup = false;
        publish.packet_id = id;
        self.push_pending(publish, now, number);
        Ok(id)
    }

    /// Takes a message of `qos` into the queue: its packet identifier (QoS
    /// 1/2) and its number. The caller sets both on the message, with DUP
    /// off, and queues it with [`push_pending`](Self::push_pending) (in two
    /// steps so that the message is changed where it lies, then moved once).
    #[inline]
    pub(crate) fn admit(
        &mut self,
        qos: QoS,
        max_pending: usize,
    ) -> Result<(Option<PacketId>, u64), LimitExceeded> {
        if self.pending.len() >= max_pending {
            return Err(LimitExceeded::PendingQueueFull(max_pending));
        }
        let id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(self.ids.allocate().ok_or(LimitExceeded::NoPacketId)?),
        };
        self.published += 1;
        Ok((id, self.published))
    }

    /// Queues `publish`, admitted as message `number` by [`admit`](Self::admit).
    #[inline(always)]
    pub(crate) fn push_pending(&mut self, publish: Publish, now: Instant, number: u64) {
        self.pending.push_back(Pending {
            publish,
            queued_at: now,
            number,
        });
    }

    #[inline]
    fn insert(&mut self, id: PacketId, stage: Stage, live: bool, since: Instant) {
        self.inflight.push(
            &mut self.ids,
            Entry {
                id,
                stage,
                live,
                since,
                order: 0,
            },
        );
        if live {
            self.live += 1;
        }
    }

    /// Removes the entry for `id`; returns whether it was the front of the
    /// table (`None`: there was none).
    fn remove(&mut self, id: PacketId) -> Option<bool> {
        self.remove_if(id, |_| true)
    }

    /// Removes the entry for `id` if `pred` accepts it, and frees the
    /// identifier; returns whether it was the front of the table (`None`:
    /// there was none, or `pred` refused it).
    fn remove_if(&mut self, id: PacketId, pred: impl FnOnce(&mut Entry) -> bool) -> Option<bool> {
        let removed = self.inflight.remove_if(&mut self.ids, id, pred)?;
        if removed.live {
            self.live = self.live.saturating_sub(1);
        }
        Some(removed.front)
    }

    fn stage(&self, id: PacketId) -> Option<&Stage> {
        self.inflight.get(&self.ids, id).map(|e| &e.stage)
    }

    /// Gets the next PUBLISH to send ready for [`take`](Self::take):
    /// retransmissions first while fewer than `limit` QoS 1/2 messages are
    /// live, then the queue while fewer than `limit` are in flight at all (so
    /// the table never exceeds `limit`). `check` may veto a message (peer
    /// limits); expired queued messages are dropped. [`Next::Ready`]: `take`
    /// hands the message out next, and nothing else may change the
    /// outbound half in between.
    ///
    /// In two steps so that `take` builds the packet straight into its
    /// return value: a `Packet` is a large value, and every move is a copy.
    #[inline]
    pub(crate) fn prepare(
        &mut self,
        limit: usize,
        now: Instant,
        check: impl Fn(&Publish) -> Option<DropReason>,
    ) -> Next {
        if !self.resend.is_empty()
            && let Some(next) = self.prepare_resend(limit, now, &check)
        {
            return next;
        }
        let Some(front) = self.pending.front_mut() else {
            return Next::Nothing;
        };
        // A new QoS 1/2 message needs a free slot in the whole in-flight table,
        // not only in this connection's quota: PUBRELs resent after a resume
        // take no quota (spec 4.9) but still hold memory until PUBCOMP.
        if front.publish.qos != QoS::AtMostOnce && self.inflight.len() >= limit {
            return Next::Nothing;
        }
        // The message is checked and changed where it is, in the queue: it
        // is a large value, and every move is a copy.
        let publish = &mut front.publish;
        let mut dropped = None;
        if let Some(interval) = publish.properties.message_expiry_interval {
            let waited = now.saturating_duration_since(front.queued_at).as_secs();
            match message_expiry_left(interval, waited) {
                // v5 3.3.2.3.3: forward the interval minus the time waited.
                Some(left) => publish.properties.message_expiry_interval = Some(left),
                None => dropped = Some(DropReason::Expired),
            }
        }
        if dropped.is_none() {
            dropped = check(publish);
        }
        match dropped {
            None => Next::Ready,
            Some(reason) => self.drop_front(reason),
        }
    }

    /// Drops the queue's first message, for `reason`. Apart, cold: the
    /// message popped to be dropped would give every `prepare` a large
    /// frame.
    #[cold]
    #[inline(never)]
    fn drop_front(&mut self, reason: DropReason) -> Next {
        let Some(Pending {
            publish, number, ..
        }) = self.pending.pop_front()
        else {
            return Next::Nothing;
        };
        self.shrink_pending();
        self.drop_pending(publish.packet_id, number, reason)
    }

    /// The retransmission part of [`prepare`](Self::prepare), apart: it is
    /// rare, and its copy of a message would make every call set up a large
    /// frame. `None`: nothing left to resend.
    #[cold]
    #[inline(never)]
    fn prepare_resend(
        &mut self,
        limit: usize,
        now: Instant,
        check: &impl Fn(&Publish) -> Option<DropReason>,
    ) -> Option<Next> {
        while let Some(id) = self.resend.front().copied() {
            if self.live >= limit {
                return Some(Next::Nothing);
            }
            if let Some(Entry {
                stage: Stage::Publish(p),
                since,
                ..
            }) = self.inflight.get(&self.ids, id)
            {
                // The copy `take` will send (checked here, rebuilt there: a
                // resend is rare).
                let p = sent_copy(p, Resend::Dup(aged(p, *since, now)), SendAs::STORED, None);
                if let Some(reason) = check(&p) {
                    // The peer of this connection set lower limits (a smaller
                    // Maximum Packet Size, v5:MQTT-3.2.2-15 and
                    // v5:MQTT-3.1.2-24) than the one it was first sent to:
                    // dropped as a new message would be (MQTT-3.1.2-25: a
                    // server behaves as if it had been delivered).
                    self.resend.pop_front();
                    self.remove(id);
                    return Some(Next::Dropped(Some(id), 0, reason));
                }
                return Some(Next::Ready);
            }
            self.resend.pop_front();
        }
        None
    }

    /// The message [`prepare`](Self::prepare) made ready (`None` if there
    /// is none), as it is sent: `shape` says how, from the stored message.
    /// A QoS 1/2 message from the queue moves to the in-flight table and a
    /// copy is sent; a retransmission is a copy with DUP. `strip`: a prefix
    /// taken off the topic sent ([`stripped_topic`]); the stored message
    /// keeps it.
    #[inline]
    pub(crate) fn take(
        &mut self,
        now: Instant,
        strip: Option<&str>,
        shape: impl FnOnce(&Publish) -> SendAs,
    ) -> Option<Packet> {
        if let Some(id) = self.resend.pop_front() {
            let entry = self.inflight.get_mut(&self.ids, id)?;
            let Stage::Publish(p) = &entry.stage else {
                return None;
            };
            if !entry.live {
                entry.live = true;
                self.live += 1;
            }
            // MQTT-3.3.1-1: a re-delivery carries DUP; v5:MQTT-3.3.2-6: less
            // the time it has waited since.
            let expiry = aged(p, entry.since, now);
            let how = shape(p);
            return Some(Packet::Publish(sent_copy(
                p,
                Resend::Dup(expiry),
                how,
                strip,
            )));
        }
        let front = self.pending.front_mut()?;
        let how = shape(&front.publish);
        let Some(id) = front.publish.packet_id else {
            let Pending { publish, .. } = self.pending.pop_front()?;
            self.shrink_pending();
            return Some(Packet::Publish(sent_move(publish, how, strip)));
        };
        // Moved from the queue straight into a slot made for it in the
        // in-flight table, then the copy is made from where it lies.
        self.live += 1;
        let order = self.inflight.take_order();
        let slot = self.inflight.push_slot(&mut self.ids, id)?;
        *slot = self.pending.pop_front().map(|q| Entry {
            id,
            stage: Stage::Publish(q.publish),
            live: true,
            since: now,
            order,
        });
        self.pending.shrink();
        match slot {
            Some(Entry {
                stage: Stage::Publish(p),
                ..
            }) => Some(Packet::Publish(sent_copy(p, Resend::No, how, strip))),
            _ => None,
        }
    }

    /// Both steps at once, for tests.
    #[cfg(test)]
    fn next(
        &mut self,
        limit: usize,
        now: Instant,
        check: impl Fn(&Publish) -> Option<DropReason>,
        out: &mut Option<Packet>,
    ) -> Next {
        let next = self.prepare(limit, now, check);
        if let Next::Ready = next {
            *out = self.take(now, None, |_| SendAs::STORED);
        }
        next
    }

    fn shrink_pending(&mut self) {
        self.pending.shrink();
    }

    fn drop_pending(&mut self, id: Option<PacketId>, number: u64, reason: DropReason) -> Next {
        if let Some(id) = id {
            self.ids.release(id);
        }
        Next::Dropped(id, number, reason)
    }

    /// Reports a dropped message: its event, and for QoS 0 its number, which
    /// `Session::poll_event` takes with the event.
    pub(crate) fn report_dropped(
        &mut self,
        packet_id: Option<PacketId>,
        number: u64,
        reason: DropReason,
        events: &mut VecDeque<Event>,
    ) {
        if packet_id.is_none() {
            self.dropped_qos0.push_back(number);
        }
        events.push_back(Event::PublishDropped { packet_id, reason });
    }

    /// PUBACK received. Returns whether its flow was the table's front
    /// (see [`InFlight`]).
    pub(crate) fn on_puback(&mut self, ack: PubAck, events: &mut VecDeque<Event>) -> bool {
        let qos1 =
            |e: &mut Entry| matches!(&e.stage, Stage::Publish(p) if p.qos == QoS::AtLeastOnce);
        let Some(front) = self.remove_if(ack.packet_id, qos1) else {
            return false;
        };
        events.push_back(Event::PublishComplete {
            packet_id: ack.packet_id,
            qos: QoS::AtLeastOnce,
            reason_code: ack.reason_code.into(),
            properties: ack.properties,
        });
        front
    }

    /// PUBREC received: answer PUBREL, or complete on an error code.
    /// Returns whether its flow is the table's front (see [`InFlight`]).
    pub(crate) fn on_pubrec(
        &mut self,
        rec: PubRec,
        v5: bool,
        transmit: &mut TxQueue,
        events: &mut VecDeque<Event>,
    ) -> bool {
        let id = rec.packet_id;
        match self.stage(id) {
            Some(Stage::Publish(p)) if p.qos == QoS::ExactlyOnce => {
                if rec.reason_code.is_error() {
                    // MQTT-4.4.0-2: acknowledged, never retransmitted.
                    let front = self.remove(id);
                    events.push_back(complete(id, rec.reason_code.into(), rec.properties));
                    return front.unwrap_or(false);
                }
                // PUBRELs go out in PUBREC order (MQTT-4.6.0-4); the entry moves
                // to the back so that a resume resends them in that order too.
                let properties = (!rec.properties.is_empty()).then(|| Box::new(rec.properties));
                let front =
                    self.inflight
                        .requeue_released(&self.ids, id, rec.reason_code, properties);
                transmit.push_pubrel(id, PubRelReasonCode::Success);
                front.unwrap_or(false)
            }
            // A duplicate PUBREC: the PUBREL may have been lost. Not an
            // answer: the PUBREL's wait goes on from the first one.
            Some(Stage::PubRel(..)) => {
                transmit.push_pubrel(id, PubRelReasonCode::Success);
                false
            }
            _ => {
                let reason_code = if v5 {
                    PubRelReasonCode::PacketIdentifierNotFound
                } else {
                    PubRelReasonCode::Success
                };
                transmit.push_pubrel(id, reason_code);
                false
            }
        }
    }

    /// PUBCOMP received. The message was the server's from its PUBREC on
    /// (MQTT-4.3.3-8): the flow completes with the PUBREC's reason code (0x00,
    /// or 0x10 No matching subscribers) and properties (the PUBCOMP's when
    /// the PUBREC had none). A PUBCOMP with 0x92 Packet Identifier not found
    /// (a server that completed the flow before a reconnection and forgot
    /// the identifier; "not an error during recovery", MQTT 5.0 table 3-7)
    /// completes it as delivered too.
    ///
    /// Returns whether its flow was the table's front (see [`InFlight`]).
    pub(crate) fn on_pubcomp(&mut self, comp: PubComp, events: &mut VecDeque<Event>) -> bool {
        let mut received = None;
        // The PUBREC's properties are taken from the entry, which goes.
        let pubrel = |e: &mut Entry| match &mut e.stage {
            Stage::PubRel(code, properties) => {
                received = Some((*code, properties.take()));
                true
            }
            Stage::Publish(_) => false,
        };
        let Some(front) = self.remove_if(comp.packet_id, pubrel) else {
            return false;
        };
        let (code, properties) = received.unwrap_or_default();
        events.push_back(complete(
            comp.packet_id,
            code.into(),
            properties.map_or(comp.properties, |p| *p),
        ));
        front
    }

    /// The connection ended: nothing is live any more.
    pub(crate) fn reset_connection(&mut self) {
        self.live = 0;
        self.resend.clear();
        for entry in self.inflight.values_mut() {
            entry.live = false;
        }
    }

    /// Resuming a session: PUBRELs are queued now, PUBLISHes are resent with
    /// DUP through `next`, all in their original order (MQTT-4.4.0-1, MQTT-4.6.0-1).
    pub(crate) fn resume(&mut self, transmit: &mut TxQueue) {
        self.reset_connection();
        for entry in self.inflight.values() {
            match entry.stage {
                Stage::Publish(_) => self.resend.push_back(entry.id),
                Stage::PubRel(..) => transmit.push_pubrel(entry.id, PubRelReasonCode::Success),
            }
        }
    }

    /// Drops every in-flight message (the session was discarded).
    pub(crate) fn discard_inflight(&mut self, events: &mut VecDeque<Event>) {
        let ids: Vec<PacketId> = self.inflight.values().map(|e| e.id).collect();
        for id in ids {
            self.remove(id);
            events.push_back(Event::PublishDropped {
                packet_id: Some(id),
                reason: DropReason::SessionDiscarded,
            });
        }
        self.resend.clear();
    }

    /// The in-flight messages in send order, and the queue with each Message
    /// Expiry Interval reduced by the time waited (expired ones left out).
    pub(crate) fn snapshot(&self, now: Instant) -> (Vec<Outgoing>, Vec<Publish>) {
        let outgoing = self
            .inflight
            .values()
            .map(|e| match &e.stage {
                Stage::Publish(p) => {
                    let mut p = p.clone();
                    age_started(&mut p, now.saturating_duration_since(e.since));
                    Outgoing::Publish(Box::new(p))
                }
                Stage::PubRel(..) => Outgoing::PubRel(e.id),
            })
            .collect();
        let pending = self
            .pending
            .iter()
            .filter_map(|q| {
                let mut p = Publish::clone(&q.publish);
                if let Some(interval) = p.properties.message_expiry_interval {
                    let waited = now.saturating_duration_since(q.queued_at).as_secs();
                    p.properties.message_expiry_interval =
                        Some(message_expiry_left(interval, waited)?);
                }
                Some(p)
            })
            .collect();
        (outgoing, pending)
    }

    /// Rebuilds from a validated snapshot.
    pub(crate) fn restore(
        outgoing: Vec<Outgoing>,
        pending: Vec<Publish>,
        last_id: u16,
        now: Instant,
    ) -> Self {
        let mut out = Self::starting_after(last_id);
        for o in outgoing {
            match o {
                Outgoing::Publish(p) => {
                    if let Some(id) = p.packet_id {
                        out.ids.claim(id);
                        out.insert(id, Stage::Publish(*p), false, now);
                    }
                }
                Outgoing::PubRel(id) => {
                    out.ids.claim(id);
                    out.insert(
                        id,
                        Stage::PubRel(PubRecReasonCode::Success, None),
                        false,
                        now,
                    );
                }
            }
        }
        for p in pending {
            if let Some(id) = p.packet_id {
                out.ids.claim(id);
            }
            out.pending.push_back(Pending {
                publish: p,
                queued_at: now,
                number: 0,
            });
        }
        out
    }

    /// Appends the queue of `other` (messages queued before a stored session
    /// was loaded) behind this one's, up to `max_pending` messages in all;
    /// the rest are dropped and reported ([`DropReason::QueueFull`]).
    /// Identifiers are kept unless this session already uses them.
    pub(crate) fn absorb_pending(
        &mut self,
        other: Outbound,
        max_pending: usize,
        events: &mut VecDeque<Event>,
    ) {
        // The numbers go on after those of the absorbed messages, and the
        // numbers of QoS 0 drops not reported yet stay with their events.
        self.published = self.published.max(other.published);
        self.dropped_qos0.extend(other.dropped_qos0);
        self.last_dropped_qos0 = other.last_dropped_qos0;
        for mut q in other.pending {
            if self.pending.len() >= max_pending {
                self.report_dropped(q.publish.packet_id, q.number, DropReason::QueueFull, events);
                continue;
            }
            if let Some(id) = q.publish.packet_id
                && !self.ids.claim(id)
            {
                match self.ids.allocate() {
                    Some(fresh) => q.publish.packet_id = Some(fresh),
                    None => {
                        // Every identifier is in use by the stored flows.
                        self.report_dropped(Some(id), q.number, DropReason::QueueFull, events);
                        continue;
                    }
                }
            }
            self.pending.push_back(q);
        }
    }

    /// Drops expired queued messages, reporting each.
    pub(crate) fn expire(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        let ids = &mut self.ids;
        let dropped_qos0 = &mut self.dropped_qos0;
        self.pending.retain(|q| {
            let expired = q
                .publish
                .properties
                .message_expiry_interval
                .is_some_and(|interval| {
                    let waited = now.saturating_duration_since(q.queued_at).as_secs();
                    message_expiry_left(interval, waited).is_none()
                });
            if expired {
                match q.publish.packet_id {
                    Some(id) => ids.release(id),
                    None => dropped_qos0.push_back(q.number),
                }
                events.push_back(Event::PublishDropped {
                    packet_id: q.publish.packet_id,
                    reason: DropReason::Expired,
                });
            }
            !expired
        });
        self.shrink_pending();
    }
}

/// Counts `waited` against the Message Expiry Interval of a message whose
/// delivery has started (it is in flight, so it is sent again however long
/// it waited, MQTT-4.4.0-1): what is left, 0 once its lifetime has passed
/// (a lifetime that ends as it arrives, as an interval of 0 is: see
/// [`message_expiry_left`]; it was sent with 1, as if a second were left).
pub(crate) fn age_started(publish: &mut Publish, waited: std::time::Duration) {
    if let Some(interval) = &mut publish.properties.message_expiry_interval {
        *interval = interval.saturating_sub(whole_seconds(waited));
    }
}

/// The Message Expiry Interval left to a message that has waited `waited`
/// whole seconds, or `None` if its lifetime has passed and it must not be
/// sent (MQTT 5.0, 3.3.2.3.3: it is forwarded with the interval it received
/// minus the time it waited [v5:MQTT-3.3.2-6]).
///
/// An interval of 0 is a lifetime that ends as the message arrives: the
/// message still goes to the subscribers whose delivery starts within the
/// second it came (forwarded with 0), but is not kept for later ones. (It is
/// not "never expires", which is the property left out.)
///
/// # Example
///
/// ```
/// use fulmar_session::message_expiry_left;
///
/// assert_eq!(message_expiry_left(60, 15), Some(45));
/// assert_eq!(message_expiry_left(60, 60), None);
/// assert_eq!(message_expiry_left(0, 0), Some(0));
/// assert_eq!(message_expiry_left(0, 1), None);
/// ```
#[must_use]
pub fn message_expiry_left(interval: u32, waited: u64) -> Option<u32> {
    if waited >= u64::from(interval.max(1)) {
        return None;
    }
    // Less than `interval` (or 0): fits.
    Some(interval.saturating_sub(u32::try_from(waited).unwrap_or(u32::MAX)))
}

/// `d` rounded to the nearest second: time counted in steps (a snapshot,
/// then the time in storage, then a resend) loses no more than half a
/// second at each.
pub(crate) fn whole_seconds(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis().saturating_add(500) / 1000).unwrap_or(u32::MAX)
}

/// How a PUBLISH goes out, decided by the session from the stored message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendAs {
    /// Without properties (MQTT 3.1.1).
    pub(crate) no_properties: bool,
    /// The Topic Alias to send, and whether the topic name goes with it;
    /// `None`: both as stored.
    pub(crate) alias: Option<(Option<NonZeroU16>, bool)>,
}

impl SendAs {
    /// As the message is stored.
    pub(crate) const STORED: Self = Self {
        no_properties: false,
        alias: None,
    };
}

/// Whether a copy is sent again.
#[derive(Clone, Copy)]
enum Resend {
    /// First sent: as stored.
    No,
    /// Sent again: with DUP, and this Message Expiry Interval.
    Dup(Option<u32>),
}

/// The Message Expiry Interval of `publish`, in flight since `since`, as it
/// is sent again at `now` (see [`age_started`]).
fn aged(publish: &Publish, since: Instant, now: Instant) -> Option<u32> {
    let waited = whole_seconds(now.saturating_duration_since(since));
    publish
        .properties
        .message_expiry_interval
        .map(|interval| interval.saturating_sub(waited))
}

/// The copy of `publish` sent while the original stays in flight, shaped by
/// `how`, built field by field where it is returned (and inlined, so that is
/// where the caller returns it). The list properties (User Properties,
/// Subscription Identifiers) are usually empty; cloning an empty `Vec`
/// still costs a call, so those are made new; a topic sent as an alias only
/// is not cloned.
#[inline(always)]
fn sent_copy(publish: &Publish, resend: Resend, how: SendAs, strip: Option<&str>) -> Publish {
    let props = &publish.properties;
    let (topic_alias, keep_topic) = how.alias.unwrap_or((props.topic_alias, true));
    let (dup, message_expiry_interval) = match resend {
        Resend::No => (publish.dup, props.message_expiry_interval),
        Resend::Dup(expiry) => (true, expiry),
    };
    Publish {
        dup,
        qos: publish.qos,
        retain: publish.retain,
        topic: match (keep_topic, strip) {
            (false, _) => MqttString::new(),
            (true, None) => publish.topic.clone(),
            (true, Some(prefix)) => stripped_topic(&publish.topic, prefix),
        },
        packet_id: publish.packet_id,
        payload: publish.payload.clone(),
        // Field by field, each where it lies: a whole `PublishProperties`
        // made first would be copied in.
        properties: if how.no_properties {
            PublishProperties::default()
        } else {
            PublishProperties {
                payload_format_indicator: props.payload_format_indicator,
                message_expiry_interval,
                topic_alias,
                response_topic: props.response_topic.clone(),
                correlation_data: props.correlation_data.clone(),
                user_properties: clone_list(&props.user_properties),
                subscription_identifiers: clone_list(&props.subscription_identifiers),
                content_type: props.content_type.clone(),
            }
        },
    }
}

/// `topic` as sent without `prefix`
/// ([`Config::strip_topic_prefix`](crate::Config::strip_topic_prefix)):
/// what follows it, if it starts with it and is longer (a PUBLISH has a
/// topic name); as it is otherwise. Shares its bytes. Apart and cold: only
/// a server with a prefix to strip calls it.
#[cold]
#[inline(never)]
pub(crate) fn stripped_topic(topic: &MqttString, prefix: &str) -> MqttString {
    match topic.strip_prefix(prefix) {
        Some(rest) if !rest.is_empty() => rest,
        _ => topic.clone(),
    }
}

/// `list.clone()`, without a call for an empty list (the usual case).
#[inline(always)]
#[allow(clippy::ptr_arg)] // a `Vec` is cloned, with the capacity `Vec::clone` gives
fn clone_list<T: Clone>(list: &Vec<T>) -> Vec<T> {
    if list.is_empty() {
        Vec::new()
    } else {
        list.clone()
    }
}

/// `publish` itself (a QoS 0 message, not kept), shaped by `how`.
#[inline(always)]
fn sent_move(publish: Publish, how: SendAs, strip: Option<&str>) -> Publish {
    let Publish {
        dup,
        qos,
        retain,
        mut topic,
        packet_id,
        payload,
        mut properties,
    } = publish;
    if let Some(prefix) = strip {
        topic = stripped_topic(&topic, prefix);
    }
    if how.no_properties {
        properties = PublishProperties::default();
    } else if let Some((alias, keep_topic)) = how.alias {
        properties.topic_alias = alias;
        if !keep_topic {
            topic = MqttString::new();
        }
    }
    Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload,
        properties,
    }
}

fn complete(packet_id: PacketId, reason_code: ReasonCode, properties: AckProperties) -> Event {
    Event::PublishComplete {
        packet_id,
        qos: QoS::ExactlyOnce,
        reason_code,
        properties,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    /// A PUBREL stage for a plain PUBREC.
    fn released() -> Stage {
        Stage::PubRel(PubRecReasonCode::Success, None)
    }

    #[allow(clippy::disallowed_methods)] // a base instant for the test
    fn entry(n: u16) -> Entry {
        Entry {
            id: id(n),
            stage: released(),
            live: false,
            since: Instant::now(),
            order: 0,
        }
    }

    fn order(table: &InFlight) -> Vec<u16> {
        table.values().map(|e| e.id.get()).collect()
    }

    #[test]
    fn sent_copy_equals_clone() {
        let sent_copy = |p: &Publish| super::sent_copy(p, Resend::No, SendAs::STORED, None);
        let mut p = Publish::new("a/b".into(), bytes::Bytes::from_static(b"x"));
        p.qos = QoS::ExactlyOnce;
        p.retain = true;
        p.dup = true;
        p.packet_id = Some(id(9));
        p.properties.message_expiry_interval = Some(5);
        p.properties.content_type = Some("text/plain".into());
        p.properties.correlation_data = Some(bytes::Bytes::from_static(b"c"));
        assert_eq!(sent_copy(&p), p);
        p.properties.user_properties.push(("k".into(), "v".into()));
        assert_eq!(sent_copy(&p), p);
        p.properties.user_properties.clear();
        p.properties
            .subscription_identifiers
            .push(std::num::NonZeroU32::MIN);
        assert_eq!(sent_copy(&p), p);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant for the test
    fn a_burst_does_not_stay_allocated() {
        // Messages are stored inline: once the queue and the table are empty
        // again, the room for 1000 of them is given back.
        let now = Instant::now();
        let mut out = Outbound::default();
        for _ in 0..1000 {
            let mut p = Publish::new("t".into(), bytes::Bytes::new());
            p.qos = QoS::AtLeastOnce;
            out.enqueue(p, now, 1000).unwrap();
        }
        assert!(out.pending.capacity() >= 1000);
        let mut sent = Vec::new();
        let mut packet = None;
        while let Next::Ready = out.next(1000, now, |_| None, &mut packet) {
            if let Some(Packet::Publish(p)) = packet.take() {
                sent.extend(p.packet_id);
            }
        }
        assert_eq!(
            (sent.len(), out.pending_len(), out.inflight_len()),
            (1000, 0, 1000)
        );
        assert!(out.pending.capacity() <= KEPT_CAPACITY);
        assert!(out.inflight.slots.capacity() >= 1000);
        let mut events = VecDeque::new();
        for id in sent {
            out.on_puback(PubAck::new(id), &mut events);
        }
        assert_eq!((events.len(), out.inflight_len()), (1000, 0));
        assert!(out.inflight.slots.capacity() <= KEPT_CAPACITY);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant for the test
    fn pending_bytes_follow_every_way_out_of_the_queue() {
        let now = Instant::now();
        let message = |len: usize, expiry: Option<u32>| {
            let mut p = Publish::new("t".into(), bytes::Bytes::from(vec![0u8; len]));
            p.qos = QoS::AtLeastOnce;
            p.properties.message_expiry_interval = expiry;
            p
        };
        let mut out = Outbound::default();
        out.enqueue(message(100, None), now, 10).unwrap();
        out.enqueue(message(20, Some(1)), now, 10).unwrap();
        out.enqueue(message(3, None), now, 10).unwrap();
        // Payloads and the one-byte topic of each.
        assert_eq!((out.pending_len(), out.pending_bytes()), (3, 126));
        // Refused for a full queue: not counted.
        assert!(out.enqueue(message(1000, None), now, 3).is_err());
        assert_eq!(out.pending_bytes(), 126);
        // Sent.
        let mut packet = None;
        assert!(matches!(
            out.next(10, now, |_| None, &mut packet),
            Next::Ready
        ));
        assert_eq!(out.pending_bytes(), 25);
        // Expired while queued.
        let mut events = VecDeque::new();
        out.expire(now + std::time::Duration::from_secs(2), &mut events);
        assert_eq!((out.pending_len(), out.pending_bytes()), (1, 4));
        // Dropped when its turn came (too large for the peer, say).
        let next = out.next(10, now, |_| Some(DropReason::PacketTooLarge), &mut packet);
        assert!(matches!(next, Next::Dropped(..)));
        assert_eq!((out.pending_len(), out.pending_bytes()), (0, 0));
        // Taken over by a session with a queue of its own.
        let mut other = Outbound::default();
        other.enqueue(message(7, None), now, 10).unwrap();
        other.enqueue(message(9, None), now, 10).unwrap();
        out.enqueue(message(5, None), now, 10).unwrap();
        out.absorb_pending(other, 2, &mut events);
        assert_eq!((out.pending_len(), out.pending_bytes()), (2, 14));
    }

    #[test]
    fn slots_agree_with_a_vecdeque() {
        // Appends, holes anywhere, front holes dropped, compaction and
        // growth with the start anywhere, against a `VecDeque` model.
        let mut slots = Slots::default();
        let mut model: VecDeque<Option<u16>> = VecDeque::new();
        let mut random = crate::test_support::xorshift32(0x9E37_79B9u32);
        let ids = |slots: &Slots| -> Vec<Option<u16>> {
            slots
                .iter()
                .map(|s| s.as_ref().map(|e| e.id.get()))
                .collect()
        };
        for n in 1..3000u16 {
            match random(8) {
                0..=3 => {
                    *slots.push_hole().unwrap() = Some(entry(n));
                    model.push_back(Some(n));
                }
                4 | 5 if !model.is_empty() => {
                    let i = random(model.len() as u32) as usize;
                    *slots.get_mut(i).unwrap() = None;
                    model[i] = None;
                }
                6 => {
                    let holes = slots.front_holes();
                    assert_eq!(holes, model.iter().take_while(|s| s.is_none()).count());
                    slots.drop_front_holes(holes);
                    model.drain(..holes);
                }
                _ => {
                    slots.compact();
                    model.retain(Option::is_some);
                }
            }
            assert_eq!(slots.len(), model.len());
            assert_eq!(ids(&slots), Vec::from(model.clone()));
            assert_eq!(slots.iter_mut().count(), model.len());
            if let Some(i) = model.len().checked_sub(1) {
                assert_eq!(slots.get(i).unwrap().as_ref().map(|e| e.id.get()), model[i]);
            }
            assert!(slots.get(model.len()).is_none());
        }
        while !model.is_empty() {
            *slots.get_mut(0).unwrap() = None;
            model[0] = None;
            let holes = slots.front_holes();
            slots.drop_front_holes(holes);
            model.drain(..holes);
        }
        slots.clear_holes();
        assert!(slots.is_empty());
    }

    #[test]
    fn send_order_survives_renumbering() {
        let mut table = InFlight::default();
        let mut ids = PacketIds::default();
        table.next_order = u32::MAX - 3;
        for n in 1..=5 {
            table.push(&mut ids, entry(n));
        }
        let success = PubRecReasonCode::Success;
        assert!(table.requeue_released(&ids, id(2), success, None).is_some());
        assert!(table.requeue_released(&ids, id(1), success, None).is_some());
        table.push(&mut ids, entry(6));
        assert_eq!(order(&table), [3, 4, 5, 2, 1, 6]);
        assert!(table.next_order < 16);
    }

    #[test]
    fn inflight_knows_its_front_through_holes_trims_and_compaction() {
        // Removals and PUBRECs in any order, against a model of the entries
        // in slot order: each tells whether it was the front's. In every
        // other phase the front stays while others come and go behind it,
        // which compacts the ring.
        let mut table = InFlight::default();
        let mut ids = PacketIds::default();
        let mut model: VecDeque<u16> = VecDeque::new();
        let mut random = crate::test_support::xorshift32(0x2545_F491u32);
        let success = PubRecReasonCode::Success;
        let mut next = 1u16;
        for step in 0..40_000 {
            let stuck = step / 2000 % 2 == 1;
            match random(10) {
                0..=3 if model.len() < 300 => {
                    table.push(&mut ids, entry(next));
                    model.push_back(next);
                    next = next % 60_000 + 1;
                }
                _ if model.is_empty() => {}
                // In send order, the usual case.
                4 | 5 if !stuck => {
                    let first = model.pop_front().unwrap();
                    let removed = table.remove_if(&mut ids, id(first), |_| true).unwrap();
                    assert!(removed.front);
                }
                6 => {
                    let i = random(model.len() as u32) as usize;
                    let n = model[i];
                    let front = table.requeue_released(&ids, id(n), success, None);
                    assert_eq!(front, Some(i == 0));
                }
                _ if stuck && model.len() < 2 => {}
                _ => {
                    let i = random(model.len() as u32) as usize;
                    let i = if stuck { i.max(1) } else { i };
                    let n = model.remove(i).unwrap();
                    let removed = table.remove_if(&mut ids, id(n), |_| true).unwrap();
                    assert_eq!(removed.front, i == 0);
                }
            }
            assert_eq!(table.len(), model.len());
        }
    }

    #[test]
    fn inflight_keeps_send_order_through_holes_and_compaction() {
        let mut table = InFlight::default();
        let mut ids = PacketIds::default();
        for n in 1..=5 {
            table.push(&mut ids, entry(n));
        }
        assert!(table.remove_if(&mut ids, id(3), |_| true).is_some());
        assert!(table.remove_if(&mut ids, id(3), |_| true).is_none());
        assert!(table.remove_if(&mut ids, id(1), |_| true).is_some());
        table.push(&mut ids, entry(1));
        assert_eq!(order(&table), [2, 4, 5, 1]);
        assert_eq!(table.len(), 4);
        // One old entry stays while many come and go: the holes behind it are
        // compacted away instead of piling up.
        for n in 100..1100 {
            table.push(&mut ids, entry(n));
            assert!(table.remove_if(&mut ids, id(n), |_| true).is_some());
        }
        assert!(table.slots.len() <= 2 * table.len() + 17);
        assert_eq!(order(&table), [2, 4, 5, 1]);
        for n in [2, 4, 5, 1] {
            assert_eq!(table.get(&ids, id(n)).map(|e| e.id), Some(id(n)));
            assert!(table.get_mut(&ids, id(n)).is_some());
        }
        let success = PubRecReasonCode::Success;
        assert_eq!(
            table.requeue_released(&ids, id(2), success, None),
            Some(true)
        );
        assert!(table.requeue_released(&ids, id(9), success, None).is_none());
        assert_eq!(order(&table), [4, 5, 1, 2]);
        assert!(
            table
                .remove_if(&mut ids, id(4), |e| matches!(e.stage, Stage::Publish(_)))
                .is_none()
        );
        assert_eq!(table.len(), 4);
        for n in [5, 2, 1, 4] {
            assert!(table.remove_if(&mut ids, id(n), |_| true).is_some());
        }
        assert_eq!(table.len(), 0);
        assert!(table.slots.is_empty());
        assert_eq!(ids.len(), 0, "removing an entry frees its identifier");
    }
}
