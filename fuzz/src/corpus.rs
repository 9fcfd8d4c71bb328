//! The committed corpus of a fuzz target, for the tests of the workspace
//! crates that replay it on stable (they include this file with `#[path]`).

use std::fs;
use std::path::{Path, PathBuf};

/// Every file of `fuzz/corpus/<target>` (`manifest_dir` is the replaying
/// crate's, two levels below the repository root), sorted; a missing
/// directory is an empty list.
pub fn files(manifest_dir: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(manifest_dir)
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Panics anywhere in the process since [`replay`] installed its hook.
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Plays every file of `files` (there must be at least `min_files`) through `check` and
/// returns the outcomes. Fails, naming the file, when a check fails or when anything
/// panicked meanwhile: a panic inside a task that the check's runtime caught (so that the
/// check itself did not see it) counts too, through a panic hook installed once.
pub fn replay<T>(files: &[PathBuf], min_files: usize, check: impl Fn(&[u8]) -> T) -> Vec<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            default_hook(info);
        }));
    });
    assert!(
        files.len() >= min_files,
        "only {} corpus files, the corpus went missing",
        files.len()
    );
    let mut outcomes = Vec::with_capacity(files.len());
    for path in files {
        let data = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus input {}: {e}", path.display()));
        let before = PANICS.load(std::sync::atomic::Ordering::SeqCst);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)))
            .unwrap_or_else(|_| panic!("corpus input {} fails the checks", path.display()));
        assert_eq!(
            PANICS.load(std::sync::atomic::Ordering::SeqCst),
            before,
            "corpus input {} panicked inside a task",
            path.display()
        );
        outcomes.push(outcome);
    }
    outcomes
}
