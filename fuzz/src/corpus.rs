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
