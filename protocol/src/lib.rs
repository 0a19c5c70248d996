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
//! - [`identity`]: ed25519 secret keys, the key file, strict verification refusing weak keys.
//! - [`signed`]: the one signed envelope, per-kind signature contexts, `Signed<T>` → `Verified<T>`,
//!   delegations and attribute certificates.
//! - [`lock`]: lock records (who holds a workspace version's deploy lock, fencing tokens).
//! - [`acl`]: the access policy (TOML) and its deny-overrides, default-deny decision.
//! - [`wire`]: protocol names, gossip topics and every message nodes exchange, size-capped.
//! - [`description`]: the workspace description, its TOML and canonical forms, select/clone/refine.
pub mod acl;
pub mod codec;
pub mod description;
pub mod identity;
pub mod ids;
pub mod limits;
pub mod lock;
pub mod signed;
pub mod time;
pub mod wire;
