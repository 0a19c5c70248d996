//! The `vwnet` binary: parses arguments and hands them to the library crates.
fn main() {}
