//! The request-response codecs of the wire protocols, over the message types of
//! `vwnet_protocol::wire` (which owns the names, the messages and their size caps).

pub use vwnet_protocol::wire::{
    CatalogRequest, CatalogResponse, ChunkRequest, ChunkResponse, DeployRequest, DeployResponse,
    LockRequest, LockResponse, ManifestRequest, ManifestResponse,
};

use super::codec::CappedCodec;

/// Protocol and topic names, re-exported from the wire module.
pub mod names {
    pub use vwnet_protocol::wire::{
        CATALOG_PROTOCOL, CHUNK_PROTOCOL, DEPLOY_PROTOCOL, DESCRIPTIONS_TOPIC, LOCK_PROTOCOL,
        LOCKS_TOPIC, MANIFEST_PROTOCOL, PROVIDERS_TOPIC,
    };
}

/// Codec of `/vwnet/chunk/1`.
pub type ChunkCodec = CappedCodec<ChunkRequest, ChunkResponse>;
/// Codec of `/vwnet/manifest/1`.
pub type ManifestCodec = CappedCodec<ManifestRequest, ManifestResponse>;
/// Codec of `/vwnet/catalog/1`.
pub type CatalogCodec = CappedCodec<CatalogRequest, CatalogResponse>;
/// Codec of `/vwnet/lock/1`.
pub type LockCodec = CappedCodec<LockRequest, LockResponse>;
/// Codec of `/vwnet/deploy/1`.
pub type DeployCodec = CappedCodec<DeployRequest, DeployResponse>;
