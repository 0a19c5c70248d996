//! Comparing two images by their manifests: how many bytes they share.

use std::collections::HashSet;

use vwnet_protocol::ids::{ChunkHash, ImageId};

use crate::manifest::Manifest;
use crate::store::{Store, StoreError};

/// Shared and differing bytes between image `a` and image `b`.
///
/// A byte of one image is "shared" when the chunk containing it also occurs in the other image;
/// this is exactly what a node holding one image does not need to fetch for the other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffReport {
    /// First image.
    pub a: ImageId,
    /// Second image.
    pub b: ImageId,
    /// Size of `a`.
    pub size_a: u64,
    /// Size of `b`.
    pub size_b: u64,
    /// Bytes of `b` in chunks that `a` also has.
    pub shared_bytes: u64,
    /// Bytes of `a` in chunks that `b` lacks.
    pub only_a_bytes: u64,
    /// Bytes of `b` in chunks that `a` lacks (what fetching `b` costs a holder of `a`).
    pub only_b_bytes: u64,
    /// Distinct chunks in both.
    pub shared_chunks: u64,
    /// Distinct chunks only in `a`.
    pub only_a_chunks: u64,
    /// Distinct chunks only in `b`.
    pub only_b_chunks: u64,
}

/// Compares two manifests.
pub fn diff(a: &Manifest, b: &Manifest) -> DiffReport {
    let set_a: HashSet<ChunkHash> = a.chunks().iter().map(|c| c.hash).collect();
    let set_b: HashSet<ChunkHash> = b.chunks().iter().map(|c| c.hash).collect();
    let bytes_not_in = |m: &Manifest, other: &HashSet<ChunkHash>| -> u64 {
        m.chunks()
            .iter()
            .filter(|c| !other.contains(&c.hash))
            .map(|c| u64::from(c.len))
            .sum()
    };
    let only_a_bytes = bytes_not_in(a, &set_b);
    let only_b_bytes = bytes_not_in(b, &set_a);
    let shared_chunks = set_a.intersection(&set_b).count() as u64;
    DiffReport {
        a: a.id(),
        b: b.id(),
        size_a: a.size(),
        size_b: b.size(),
        shared_bytes: b.size() - only_b_bytes,
        only_a_bytes,
        only_b_bytes,
        shared_chunks,
        only_a_chunks: set_a.len() as u64 - shared_chunks,
        only_b_chunks: set_b.len() as u64 - shared_chunks,
    }
}

impl Store {
    /// Compares two known images.
    pub fn diff(&self, a: &ImageId, b: &ImageId) -> Result<DiffReport, StoreError> {
        Ok(diff(&self.manifest(a)?, &self.manifest(b)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ChunkRef;

    fn m(parts: &[&[u8]]) -> Manifest {
        Manifest::new(
            parts
                .iter()
                .map(|p| ChunkRef {
                    hash: ChunkHash::of(p),
                    len: p.len() as u32,
                    zero: false,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn counts_shared_and_differing_bytes() {
        let a = m(&[b"aaaa", b"bb", b"c"]);
        let b = m(&[b"aaaa", b"dddddd", b"c", b"c"]);
        let d = diff(&a, &b);
        assert_eq!((d.size_a, d.size_b), (7, 12));
        assert_eq!(d.shared_bytes, 6);
        assert_eq!(d.only_a_bytes, 2);
        assert_eq!(d.only_b_bytes, 6);
        assert_eq!(
            (d.shared_chunks, d.only_a_chunks, d.only_b_chunks),
            (2, 1, 1)
        );
        let same = diff(&a, &a);
        assert_eq!(
            (same.shared_bytes, same.only_a_bytes, same.only_b_bytes),
            (7, 0, 0)
        );
    }
}
