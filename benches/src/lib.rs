//! Shared helpers for fulmar's criterion benchmarks.
