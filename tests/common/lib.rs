//! Helpers shared by the cross-crate tests in `tests/tests/`, and the netns testbed.
//!
//! - [`images`]: reproducible test images (random, sparse, modified copies, ext4 pairs).
//! - [`testbed`]: hosts in Linux network namespaces, joined by shaped links, each running a
//!   `vwnet node run`; used by the fault tests and the `vwnet-testbed` binary (benchmarks).
pub mod images;
pub mod testbed;
