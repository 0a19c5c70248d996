//! Content-defined chunking of workspace images (FastCDC), BLAKE3 manifests and the chunk store.
//!
//! An image (a VM disk, or the saved memory of a hot workspace) is cut into FastCDC chunks, each
//! named by its BLAKE3 hash. The ordered list of chunks is the image's [`Manifest`]; the hash of
//! the manifest's canonical bytes is the [`ImageId`](vwnet_protocol::ids::ImageId) that a
//! workspace description names. Two versions of an image share most chunks, and a store keeps
//! each chunk once.
//!
//! # Modules
//! - [`chunking`]: FastCDC over a stream, with BLAKE3 names and zero detection.
//! - [`parallel`]: the same chunk boundaries computed on several threads for a file.
//! - [`manifest`]: the manifest, its canonical encoding and the image id.
//! - [`store`]: the crash-safe chunk store (pack files + redb index), verify, quarantine, gc.
//! - [`ingest`]: chunk a file or stream into the store (optionally converting qcow2 to raw).
//! - [`export`]: write an image back to a file, with holes for zero chunks.
//! - [`diff`]: shared and differing bytes of two images.
//!
//! The store is synchronous and thread-safe; the node wraps it in an actor. Design decisions
//! and measurements are in `chunker/DESIGN.md`.

pub mod chunking;
pub mod diff;
pub mod export;
pub mod ingest;
pub mod manifest;
pub mod parallel;
pub mod store;

pub use diff::DiffReport;
pub use export::{ExportError, ExportReport};
pub use ingest::{IngestError, IngestOptions, IngestReport};
pub use manifest::{ChunkRef, Manifest, ManifestError};
pub use store::{Store, StoreError};
