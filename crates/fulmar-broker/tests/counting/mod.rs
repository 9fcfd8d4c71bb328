//! A counting global allocator for the memory tests (`idle_memory.rs`,
//! `websocket.rs`): the heap bytes and blocks allocated and not freed. A
//! test binary that includes this module (`#[path = "counting/mod.rs"] mod
//! counting;`) allocates through it. Needs `unsafe`: such a binary opts out
//! of the workspace's `unsafe_code = "deny"` for this alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

/// Counts the bytes allocated and not freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

fn size(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(size(layout), Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(size(layout), Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(size(layout), Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            isize::try_from(new_size).unwrap_or(isize::MAX) - size(layout),
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live heap bytes and blocks once the broker's tasks stopped changing them
/// (the same for 5 looks 10 ms apart, at most 5 s).
pub(crate) fn settled() -> (isize, isize) {
    let mut last = (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed));
    let mut same = 0;
    for _ in 0..500 {
        std::thread::sleep(Duration::from_millis(10));
        let now = (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed));
        if now == last {
            same += 1;
            if same == 5 {
                break;
            }
        } else {
            same = 0;
            last = now;
        }
    }
    last
}
