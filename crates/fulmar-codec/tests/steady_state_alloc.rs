//! The hot path does not allocate: decoding PUBLISH and acknowledgements from
//! a shared buffer, and encoding them into a buffer with room.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; this test
//! binary opts out of the workspace `unsafe_code = "deny"` for that alone.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{Packet, PacketId, ProtocolVersion, PubAck, PubRec, Publish, QoS, decode};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed)
}

// One test function only: the counter is global to the binary.
#[test]
fn publish_and_acks_decode_and_encode_without_allocating() {
    // The counter works.
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(8);
    assert_eq!(allocations() - before, 1);
    drop(v);

    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut publish = Publish::new("sensors/room-1/temp".into(), Bytes::from_static(b"21.5"));
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = PacketId::new(42);
        if version == ProtocolVersion::V5 {
            publish.properties.message_expiry_interval = Some(30);
        }
        let publish = Packet::from(publish);
        let puback = Packet::from(PubAck::new(PacketId::new(42).unwrap()));
        let pubrec = Packet::from(PubRec::new(PacketId::new(43).unwrap()));

        let mut wire = BytesMut::with_capacity(64 * 1024);
        for _ in 0..100 {
            for p in [&publish, &puback, &pubrec] {
                p.encode(version, &mut wire).unwrap();
            }
        }
        // The first decode promotes the buffer to a shared one (one allocation).
        let first = decode(&mut wire, version, 1 << 20).unwrap().unwrap();
        assert_eq!(first, publish);
        drop(first);

        let before = allocations();
        let mut decoded = 1;
        while let Some(p) = decode(&mut wire, version, 1 << 20).unwrap() {
            assert_eq!(
                p.packet_type(),
                [&publish, &puback, &pubrec][decoded % 3].packet_type()
            );
            decoded += 1;
        }
        assert_eq!(decoded, 300);
        assert_eq!(allocations() - before, 0, "decode allocated ({version})");

        let mut out = BytesMut::with_capacity(4096);
        let before = allocations();
        for p in [&publish, &puback, &pubrec] {
            p.encode(version, &mut out).unwrap();
            assert!(p.encoded_len(version).unwrap() > 0);
        }
        assert_eq!(allocations() - before, 0, "encode allocated ({version})");
    }
}
