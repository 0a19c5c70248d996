//! The chunk table: every chunk a pull is about, deduplicated, with a compact index per chunk.
//!
//! The scheduler names chunks by [`ChunkIdx`], a position in the table, rather than by their
//! 32-byte hash: per-chunk state then lives in flat arrays, and a simulator that runs thousands
//! of downloaders over the same image shares one table behind an `Arc` instead of one hash
//! table per host.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use vwnet_protocol::ids::ChunkHash;

/// Position of a chunk in a [`ChunkTable`]: the order in which it first appears in the manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkIdx(pub u32);

impl ChunkIdx {
    /// The index as a `usize`, for indexing flat per-chunk arrays.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// Why a list of chunks cannot become a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkTableError {
    /// The same hash appears twice with different lengths: one of the manifests is inconsistent.
    #[error("chunk {hash} listed with lengths {first} and {second}")]
    LengthConflict {
        /// The chunk's hash.
        hash: ChunkHash,
        /// Length at its first appearance.
        first: u32,
        /// The conflicting length.
        second: u32,
    },
    /// More distinct chunks than a `u32` index can name.
    #[error("more than {max} distinct chunks")]
    TooManyChunks {
        /// The largest number of distinct chunks.
        max: u32,
    },
}

/// The deduplicated, ordered chunks of one or more images: what a downloader may be asked for.
#[derive(Debug, Clone, Default)]
pub struct ChunkTable {
    hashes: Vec<ChunkHash>,
    lens: Vec<u32>,
    index: HashMap<ChunkHash, ChunkIdx>,
    total_bytes: u64,
    max_len: u32,
}

impl ChunkTable {
    /// Builds a table from `(hash, length)` pairs in manifest order; repeats are folded into
    /// their first appearance, so several images' manifests can simply be chained.
    pub fn new(
        chunks: impl IntoIterator<Item = (ChunkHash, u32)>,
    ) -> Result<Self, ChunkTableError> {
        let mut table = Self::default();
        for (hash, len) in chunks {
            table.push(hash, len)?;
        }
        Ok(table)
    }

    fn push(&mut self, hash: ChunkHash, len: u32) -> Result<ChunkIdx, ChunkTableError> {
        let next = u32::try_from(self.hashes.len())
            .ok()
            .filter(|&n| n < u32::MAX)
            .ok_or(ChunkTableError::TooManyChunks { max: u32::MAX - 1 })?;
        match self.index.entry(hash) {
            Entry::Occupied(e) => {
                let idx = *e.get();
                let first = self.lens[idx.as_usize()];
                if first != len {
                    return Err(ChunkTableError::LengthConflict {
                        hash,
                        first,
                        second: len,
                    });
                }
                Ok(idx)
            }
            Entry::Vacant(e) => {
                let idx = ChunkIdx(next);
                e.insert(idx);
                self.hashes.push(hash);
                self.lens.push(len);
                self.total_bytes += u64::from(len);
                self.max_len = self.max_len.max(len);
                Ok(idx)
            }
        }
    }

    /// Number of distinct chunks.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the table has no chunks.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Sum of the lengths of the distinct chunks.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Length of the longest chunk (0 for an empty table).
    pub fn max_chunk_len(&self) -> u32 {
        self.max_len
    }

    /// The hash of a chunk, or `None` for an index outside the table.
    pub fn hash(&self, idx: ChunkIdx) -> Option<ChunkHash> {
        self.hashes.get(idx.as_usize()).copied()
    }

    /// The length of a chunk, or `None` for an index outside the table.
    pub fn chunk_len(&self, idx: ChunkIdx) -> Option<u32> {
        self.lens.get(idx.as_usize()).copied()
    }

    /// Where a hash sits in the table, if it is there.
    pub fn index_of(&self, hash: &ChunkHash) -> Option<ChunkIdx> {
        self.index.get(hash).copied()
    }

    /// All chunk lengths, indexed by `ChunkIdx`.
    pub(crate) fn lens(&self) -> &[u32] {
        &self.lens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> ChunkHash {
        ChunkHash::from_bytes([b; 32])
    }

    #[test]
    fn repeats_fold_into_first_appearance() {
        let c = ChunkTable::new([(h(1), 10), (h(2), 20), (h(1), 10), (h(3), 5)]).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.total_bytes(), 35);
        assert_eq!(c.max_chunk_len(), 20);
        assert_eq!(c.index_of(&h(3)), Some(ChunkIdx(2)));
        assert_eq!(c.hash(ChunkIdx(1)), Some(h(2)));
        assert_eq!(c.chunk_len(ChunkIdx(3)), None);
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        let err = ChunkTable::new([(h(1), 10), (h(1), 11)]).unwrap_err();
        assert_eq!(
            err,
            ChunkTableError::LengthConflict {
                hash: h(1),
                first: 10,
                second: 11
            }
        );
    }
}
