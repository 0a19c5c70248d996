//! Image manifests: the ordered list of chunks that make up an image, and the image id.
//!
//! The canonical bytes are `protocol::codec::encode(MANIFEST_VERSION, ..)`; the image id is the
//! BLAKE3 hash of those bytes, so two nodes that chunk the same image with the same parameters
//! name it identically, and a manifest fetched from a peer is checked against the id that a
//! signed description names.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use vwnet_protocol::codec::{self, DecodeError};
use vwnet_protocol::ids::{ChunkHash, ImageId};
use vwnet_protocol::limits::{MAX_CHUNK_LEN, MAX_MANIFEST_LEN};

/// Format-version byte of the canonical manifest encoding.
pub const MANIFEST_VERSION: u8 = 1;

/// One chunk of an image, in image order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's bytes.
    pub hash: ChunkHash,
    /// Length of the chunk in bytes (1..=`MAX_CHUNK_LEN`).
    pub len: u32,
    /// The chunk is all zero bytes: it is not stored, and export writes a hole.
    pub zero: bool,
}

/// The ordered chunks of an image and its total size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    size: u64,
    chunks: Vec<ChunkRef>,
}

/// Why a manifest is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes are not a canonical manifest encoding.
    #[error("manifest encoding: {0}")]
    Decode(#[from] DecodeError),
    /// A chunk length is zero or above the protocol limit.
    #[error("chunk {index} has length {len}, outside 1..={MAX_CHUNK_LEN}")]
    ChunkLen {
        /// Position of the chunk in the manifest.
        index: usize,
        /// Its declared length.
        len: u32,
    },
    /// The chunk lengths do not add up to the declared size.
    #[error("chunk lengths add up to {sum} bytes but the manifest declares {size}")]
    SizeMismatch {
        /// Sum of the chunk lengths.
        sum: u64,
        /// Declared total size.
        size: u64,
    },
    /// A chunk flagged as zero does not carry the hash of that many zero bytes.
    #[error("chunk {index} is flagged zero but its hash is not that of {len} zero bytes")]
    BadZeroHash {
        /// Position of the chunk in the manifest.
        index: usize,
        /// Its declared length.
        len: u32,
    },
    /// The encoding would exceed `MAX_MANIFEST_LEN`.
    #[error("manifest would be {len} bytes, more than the {MAX_MANIFEST_LEN}-byte limit")]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
}

/// BLAKE3 of `len` zero bytes (`len` ≤ `MAX_CHUNK_LEN`).
pub fn zero_hash(len: u32) -> ChunkHash {
    static ZEROS: [u8; MAX_CHUNK_LEN] = [0; MAX_CHUNK_LEN];
    let len = (len as usize).min(MAX_CHUNK_LEN);
    ChunkHash::of(&ZEROS[..len])
}

impl Manifest {
    /// Builds a manifest from chunks, checking lengths and zero-chunk hashes.
    pub fn new(chunks: Vec<ChunkRef>) -> Result<Self, ManifestError> {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        let manifest = Self { size, chunks };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Decodes and validates canonical manifest bytes (at most `MAX_MANIFEST_LEN`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Self = codec::decode(bytes, MANIFEST_VERSION, MAX_MANIFEST_LEN)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The canonical encoding (what [`Manifest::id`] hashes).
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(MANIFEST_VERSION, self)
    }

    /// The image id: BLAKE3 of the canonical bytes.
    pub fn id(&self) -> ImageId {
        ImageId::from(blake3::hash(&self.to_bytes()))
    }

    /// Total image size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunks in image order.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// Each chunk with its byte offset in the image.
    pub fn with_offsets(&self) -> impl Iterator<Item = (u64, &ChunkRef)> {
        self.chunks.iter().scan(0u64, |off, c| {
            let at = *off;
            *off += u64::from(c.len);
            Some((at, c))
        })
    }

    /// Bytes held by zero chunks (written as holes on export).
    pub fn zero_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|c| c.zero)
            .map(|c| u64::from(c.len))
            .sum()
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let mut sum = 0u64;
        // Zero chunks of a FastCDC image come in very few distinct lengths (mostly `max`);
        // caching avoids hashing a zero buffer per chunk of a mostly-empty disk.
        let mut zero_hashes: HashMap<u32, ChunkHash> = HashMap::new();
        for (index, c) in self.chunks.iter().enumerate() {
            if c.len == 0 || c.len as usize > MAX_CHUNK_LEN {
                return Err(ManifestError::ChunkLen { index, len: c.len });
            }
            if c.zero && *zero_hashes.entry(c.len).or_insert_with(|| zero_hash(c.len)) != c.hash {
                return Err(ManifestError::BadZeroHash { index, len: c.len });
            }
            sum += u64::from(c.len);
        }
        if sum != self.size {
            return Err(ManifestError::SizeMismatch {
                sum,
                size: self.size,
            });
        }
        // Each entry encodes to at most 32 + 5 + 1 bytes; check the bound without encoding.
        let bound = self.chunks.len() * 38 + 32;
        if bound > MAX_MANIFEST_LEN {
            let len = self.to_bytes().len();
            if len > MAX_MANIFEST_LEN {
                return Err(ManifestError::TooLarge { len });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(data: &[u8]) -> ChunkRef {
        ChunkRef {
            hash: ChunkHash::of(data),
            len: data.len() as u32,
            zero: data.iter().all(|&b| b == 0),
        }
    }

    #[test]
    fn round_trip_and_id_is_hash_of_bytes() {
        let m = Manifest::new(vec![chunk(b"abc"), chunk(&[0; 10]), chunk(b"x")]).unwrap();
        assert_eq!(m.size(), 14);
        assert_eq!(m.zero_bytes(), 10);
        let bytes = m.to_bytes();
        assert_eq!(bytes[0], MANIFEST_VERSION);
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
        assert_eq!(m.id(), ImageId::from(blake3::hash(&bytes)));
        let offsets: Vec<u64> = m.with_offsets().map(|(o, _)| o).collect();
        assert_eq!(offsets, [0, 3, 13]);
    }

    #[test]
    fn empty_manifest_is_valid() {
        let m = Manifest::new(Vec::new()).unwrap();
        assert_eq!(Manifest::from_bytes(&m.to_bytes()).unwrap().size(), 0);
    }

    #[test]
    fn rejects_bad_lengths_sizes_and_zero_flags() {
        let mut c = chunk(b"abc");
        c.len = 0;
        assert!(matches!(
            Manifest::new(vec![c]),
            Err(ManifestError::ChunkLen { .. })
        ));
        c.len = MAX_CHUNK_LEN as u32 + 1;
        assert!(matches!(
            Manifest::new(vec![c]),
            Err(ManifestError::ChunkLen { .. })
        ));
        let mut z = chunk(b"abc");
        z.zero = true;
        assert!(matches!(
            Manifest::new(vec![z]),
            Err(ManifestError::BadZeroHash { .. })
        ));
        // A size that disagrees with the chunks, smuggled in through the encoding.
        let forged = Manifest {
            size: 99,
            chunks: vec![chunk(b"abc")],
        };
        assert!(matches!(
            Manifest::from_bytes(&forged.to_bytes()),
            Err(ManifestError::SizeMismatch { sum: 3, size: 99 })
        ));
    }

    #[test]
    fn rejects_oversize_and_wrong_version() {
        let huge = vec![0u8; MAX_MANIFEST_LEN + 1];
        assert!(matches!(
            Manifest::from_bytes(&huge),
            Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
        ));
        let mut bytes = Manifest::new(vec![chunk(b"a")]).unwrap().to_bytes();
        bytes[0] = 9;
        assert!(matches!(
            Manifest::from_bytes(&bytes),
            Err(ManifestError::Decode(
                DecodeError::UnsupportedVersion { .. }
            ))
        ));
    }

    proptest! {
        #[test]
        fn encoding_round_trips(lens in proptest::collection::vec(1u32..5000, 0..50), zero_mask in any::<u64>()) {
            let chunks: Vec<ChunkRef> = lens.iter().enumerate().map(|(i, &len)| {
                if zero_mask >> (i % 64) & 1 == 1 {
                    ChunkRef { hash: zero_hash(len), len, zero: true }
                } else {
                    ChunkRef { hash: ChunkHash::of(&len.to_le_bytes()), len, zero: false }
                }
            }).collect();
            let m = Manifest::new(chunks).unwrap();
            let back = Manifest::from_bytes(&m.to_bytes()).unwrap();
            prop_assert_eq!(back.id(), m.id());
            prop_assert_eq!(back, m);
        }
    }
}
