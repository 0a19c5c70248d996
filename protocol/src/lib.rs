//! The vwnet protocol: what a virtual workspace *is* and how nodes talk about it.
//!
//! # Goals
//! - One definition of every record that crosses a trust boundary: workspace descriptions, signed
//!   envelopes, lock records, attribute certificates, delegations and wire messages.
//! - Canonical bytes: every record has exactly one binary encoding (postcard behind a leading
//!   format-version byte), which is what gets hashed and signed.
//! - Untrusted input is bounded: decoders refuse oversize input before allocating.
//!
//! # Non-goals
//! - No I/O, no async runtime, no networking: `tokio` and `libp2p` live in `vwnet-node`.
//! - No storage: chunk bodies and manifests on disk belong to `vwnet-chunker`.
//!
//! # Modules
//! - [`ids`]: identifier newtypes (`ChunkHash`, `ImageId`, `WorkspaceId`, `PeerIdentity`).
//! - [`limits`]: size caps shared by encoders and decoders.
//! - [`codec`]: the canonical, versioned binary encoding and its strict decoder.
//! - [`time`]: timestamps and spans as records carry them.
pub mod codec;
pub mod ids;
pub mod limits;
pub mod time;
