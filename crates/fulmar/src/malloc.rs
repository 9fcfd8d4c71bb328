//! glibc `malloc` settings for the `fulmar` process (broker and bench alike).
//!
//! Every PUBLISH is read into a buffer of its own, which lives until the last
//! subscriber has written it out. With glibc's defaults a buffer of 128 KiB or
//! more is a fresh `mmap` (the threshold only adapts to what was last freed),
//! and free memory above 128 KiB at the top of a heap goes back to the kernel:
//! so each large message pays page faults for all of its pages, and `munmap`
//! or trimming when it is freed. With 1 MiB messages that was about a third of
//! the broker's CPU time (`perf`: page faults, page clearing, unmapping).
//!
//! [`tune`] keeps such buffers on the heap (allocations below 32 MiB, the
//! largest glibc allows for this setting) and lets up to 32 MiB stay free at the
//! top of a heap before it is returned. Memory that is in use is unchanged.
//! The price: after a burst of large messages, freed buffers stay with the
//! process for reuse (up to 32 MiB at the top of each glibc arena, and any
//! free space below live allocations, as for small allocations) where glibc's
//! defaults would have unmapped them at once.
//!
//! An operator who sets glibc's own malloc settings (`GLIBC_TUNABLES` with a
//! `glibc.malloc.` entry, or `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`)
//! keeps them: [`tune`] then changes nothing. Other C libraries and allocators
//! are left alone too.

/// Allocations this large or larger are served by `mmap`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of a heap beyond this is returned to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 32 << 20;

/// True if the environment already sets glibc's malloc thresholds.
fn set_by_environment(var: impl Fn(&str) -> Option<String>) -> bool {
    var("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc."))
        || var("MALLOC_MMAP_THRESHOLD_").is_some()
        || var("MALLOC_TRIM_THRESHOLD_").is_some()
}

/// Applies the settings above, unless the environment sets its own; returns
/// whether they were applied.
pub(crate) fn tune() -> bool {
    if set_by_environment(|name| std::env::var(name).ok()) {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // two calls into the C library, see below
fn apply() -> bool {
    // SAFETY: `mallopt` only changes allocator parameters; it is called once,
    // before the runtime starts any thread, with values glibc documents as
    // valid (it returns 0 and changes nothing for an invalid one).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_operators_malloc_settings_win() {
        assert!(!set_by_environment(env(&[])));
        assert!(!set_by_environment(env(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0"
        )])));
        assert!(set_by_environment(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.trim_threshold=0"
        )])));
        assert!(set_by_environment(env(&[(
            "MALLOC_MMAP_THRESHOLD_",
            "131072"
        )])));
        assert!(set_by_environment(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_settings() {
        assert!(apply());
    }
}
