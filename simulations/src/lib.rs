//! A flow-level simulator of vwnet transfer, deployment and migration costs.
//!
//! - [`topology`]: the topology file format shared with the netns testbed.
//! - [`network`]: links, flows and max–min fair rates, re-solved per affected component.
//! - [`image`]: chunk lists from real chunker manifests, grouped into scheduling pieces.
//! - [`sim`]: the discrete-event engine; swarm hosts run the node's own `Downloader`.
//! - [`scenario`]: scenario files (TOML) naming a topology, an image, strategies, a workload.
//! - [`report`]: runs a scenario and writes CSV and SVG plots.
//! - [`validate`]: predictions for the testbed's validation cases.
//! - [`rng`]: a seeded generator so that runs are reproducible.

mod due;
pub mod image;
pub mod network;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod topology;
pub mod validate;
