//! The `fulmar` command's memory allocator (broker and bench alike): jemalloc,
//! with settings chosen for a broker.
//!
//! Why not the C library's `malloc` (glibc's on Linux):
//!
//! - **Idle connections.** A connect storm leaves each connection's
//!   long-lived blocks (its inbox, session entry and hibernated state)
//!   interleaved with the freed blocks of connection set-up. glibc cannot give
//!   such pages back, so they stay in the broker's RSS: 10 k idle connections
//!   cost 970–1040 bytes each, against 735–737 for mosquitto. jemalloc
//!   sorts blocks into slabs by size and, with the settings below, hands
//!   unused pages back to the kernel within a second: 697–725 bytes in five
//!   runs (`benches/README.md`, 2026-12-03 night).
//! - **Large messages.** Every PUBLISH is read into a buffer of its own. glibc
//!   serves 128 KiB or more with a fresh `mmap`, so a 1 MiB message paid page
//!   faults for each of its pages, about a third of the broker's CPU time.
//!   jemalloc reuses freed buffers while they are still dirty.
//!
//! The settings, read by jemalloc when it starts (before `main`):
//!
//! - `dirty_decay_ms:300`: freed pages are returned to the kernel after
//!   about 300 ms unused (jemalloc's default is 10 s), so a storm of
//!   connections or of large messages does not leave the RSS high;
//! - `muzzy_decay_ms:0`: returned at once with `MADV_DONTNEED`, so the RSS
//!   drops, rather than lazily with `MADV_FREE`;
//! - `background_thread:true` (Linux): a jemalloc thread does that purging, not
//!   the threads that serve connections.
//!
//! An operator can override any of them, or set others, with the environment
//! variable `_RJEM_MALLOC_CONF` (jemalloc's `MALLOC_CONF`, with the prefix of
//! the jemalloc that Rust programs link), for example
//! `_RJEM_MALLOC_CONF=dirty_decay_ms:10000`.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (see the module documentation), a C string that
/// jemalloc reads from this symbol when it starts.
#[cfg(all(not(target_env = "msvc"), target_os = "linux"))]
#[allow(unsafe_code)] // the symbol jemalloc looks for; nothing else reads it
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 59] = b"background_thread:true,dirty_decay_ms:300,muzzy_decay_ms:0\0";

/// jemalloc's settings where it has no background thread.
#[cfg(all(not(target_env = "msvc"), not(target_os = "linux")))]
#[allow(unsafe_code)] // the symbol jemalloc looks for; nothing else reads it
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 36] = b"dirty_decay_ms:300,muzzy_decay_ms:0\0";

#[cfg(all(test, not(target_env = "msvc")))]
mod tests {
    use tikv_jemalloc_ctl::raw;

    /// Reads one of jemalloc's `opt.*` values.
    #[allow(unsafe_code)]
    fn opt<T: Copy>(name: &[u8]) -> T {
        // SAFETY: each name below is a NUL-terminated jemalloc option whose
        // value has type `T` (`ssize_t` for the decay times, `bool` for
        // `background_thread`), as jemalloc's manual gives them.
        match unsafe { raw::read::<T>(name) } {
            Ok(value) => value,
            Err(e) => panic!("mallctl {}: {e}", String::from_utf8_lossy(name)),
        }
    }

    #[test]
    fn jemalloc_runs_with_the_brokers_settings() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return; // the operator's settings win, as documented
        }
        assert_eq!(opt::<isize>(b"opt.dirty_decay_ms\0"), 300);
        assert_eq!(opt::<isize>(b"opt.muzzy_decay_ms\0"), 0);
        #[cfg(target_os = "linux")]
        assert!(opt::<bool>(b"opt.background_thread\0"));
    }
}
