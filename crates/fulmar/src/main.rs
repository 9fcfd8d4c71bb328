//! The `fulmar` command (work in progress).

fn main() {}
