//! The naive reference matcher the proptests compare against.

#![allow(dead_code, unreachable_pub)]

use proptest::prelude::*;

/// Straightforward MQTT matching on strings: split both on `/` and compare level by level.
pub fn naive_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        if i >= n.len() {
            return false;
        }
        if *level != "+" && *level != n[i] {
            return false;
        }
    }
    f.len() == n.len()
}

/// A small alphabet, so that random names and filters collide often; includes the empty
/// level, `$` levels and non-ASCII text.
const LEVELS: &[&str] = &["a", "b", "c", "", "$x", "$SYS", "é"];

fn level() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(LEVELS).prop_map(str::to_owned)
}

/// A random valid topic name of 1 to 4 levels.
pub fn name() -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(level(), 1..=4)
        .prop_map(|l| l.join("/"))
        .prop_filter("names are not empty", |n| !n.is_empty())
}

/// A random valid topic filter: literal levels and `+`, optionally ending in `#`.
pub fn filter() -> impl Strategy<Value = String> + Clone {
    let lvl = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (prop::collection::vec(lvl, 0..=4), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("filters are not empty", |f| !f.is_empty())
}
