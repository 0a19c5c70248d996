//! The redb schema of the chunk store and the records kept in it.
//!
//! Tables (keys are raw 32-byte hashes):
//! - `chunks`: chunk hash → [`Loc`] (pack id, offset, length). A row exists only after the bytes
//!   it points to were fsync'd, so every row names bytes that are durably on disk.
//! - `packs`: pack id → committed length. Bytes past it are an interrupted write; opening the
//!   store truncates them, and pack files without a row are deleted.
//! - `manifests`: image id → canonical manifest bytes.
//! - `images`: image id → [`ImageRecord`] (size, complete, pinned, when added).
//! - `quarantine`: chunk hash → [`QuarantineRecord`].

use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use vwnet_protocol::codec::{self, DecodeError};

pub(crate) const CHUNKS: TableDefinition<'_, [u8; 32], [u8; 20]> = TableDefinition::new("chunks");
pub(crate) const PACKS: TableDefinition<'_, u64, u64> = TableDefinition::new("packs");
pub(crate) const MANIFESTS: TableDefinition<'_, [u8; 32], &[u8]> =
    TableDefinition::new("manifests");
pub(crate) const IMAGES: TableDefinition<'_, [u8; 32], &[u8]> = TableDefinition::new("images");
pub(crate) const QUARANTINE: TableDefinition<'_, [u8; 32], &[u8]> =
    TableDefinition::new("quarantine");

/// Version byte of [`ImageRecord`] and [`QuarantineRecord`] encodings.
const RECORD_VERSION: u8 = 1;
/// Generous cap for the small fixed records below.
const MAX_RECORD_LEN: usize = 4096;

/// Where a chunk's bytes live: `len` bytes at `offset` in pack `pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) pack: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

impl Loc {
    pub(crate) fn to_bytes(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..8].copy_from_slice(&self.pack.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    pub(crate) fn from_bytes(b: [u8; 20]) -> Self {
        let mut pack = [0u8; 8];
        let mut offset = [0u8; 8];
        let mut len = [0u8; 4];
        pack.copy_from_slice(&b[..8]);
        offset.copy_from_slice(&b[8..16]);
        len.copy_from_slice(&b[16..]);
        Self {
            pack: u64::from_le_bytes(pack),
            offset: u64::from_le_bytes(offset),
            len: u32::from_le_bytes(len),
        }
    }
}

/// What the store knows about one image besides its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub(crate) size: u64,
    pub(crate) chunks: u64,
    pub(crate) complete: bool,
    pub(crate) pinned: bool,
    pub(crate) added_unix: u64,
}

impl ImageRecord {
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        codec::encode(RECORD_VERSION, &self)
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(b, RECORD_VERSION, MAX_RECORD_LEN)
    }
}

/// Why and when a chunk was quarantined, and the file its bytes were moved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QuarantineRecord {
    pub(crate) when_unix: u64,
    pub(crate) file: Option<String>,
    pub(crate) reason: String,
}

impl QuarantineRecord {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        codec::encode(RECORD_VERSION, self)
    }
}

/// Converts any redb error into [`redb::Error`] so that operation errors need one variant.
pub(crate) trait DbResultExt<T> {
    fn db(self) -> Result<T, redb::Error>;
}

impl<T, E: Into<redb::Error>> DbResultExt<T> for Result<T, E> {
    fn db(self) -> Result<T, redb::Error> {
        self.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_round_trips() {
        let loc = Loc {
            pack: 7,
            offset: 1 << 40,
            len: 65536,
        };
        assert_eq!(Loc::from_bytes(loc.to_bytes()), loc);
    }

    #[test]
    fn image_record_round_trips() {
        let r = ImageRecord {
            size: 1,
            chunks: 2,
            complete: true,
            pinned: false,
            added_unix: 3,
        };
        assert_eq!(ImageRecord::from_bytes(&r.to_bytes()).unwrap(), r);
    }
}
