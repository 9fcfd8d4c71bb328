//! Topic name / filter / shared filter parsing against the spec rules, and the subscription
//! trie and retained index against a naive model (see `fulmar_fuzz::topic_checks`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fulmar_fuzz::topic_checks::check_topic(data);
});
