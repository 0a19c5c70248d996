//! Images as the simulator sees them: chunk lists from real manifests, grouped into pieces.
//!
//! Sizes and version-to-version sharing come from chunker manifests: either a manifest file
//! (canonical bytes, as the chunker writes them) or image files generated here and chunked
//! with the chunker's own [`chunk_file`], so the dedup ratio of an update is what FastCDC
//! really finds, not an assumed percentage. Only the 4 GiB scale runs use a synthetic chunk
//! list (writing and chunking 4 GiB per run would dominate the run time).
//!
//! **Pieces.** At 10,000 hosts × 4 GiB / 64 KiB chunks the per-chunk scheduler state of every
//! host (~ 65,536 chunks × 10,000 downloaders, plus a bit per chunk per neighbour) and the
//! number of requests are too large, so the simulator schedules *pieces*: runs of consecutive
//! distinct manifest chunks of about `piece` bytes. Pieces go through the node's own
//! [`Downloader`](vwnet_node::downloader::Downloader) exactly as chunks do; a request carries
//! as many pieces as the node's request limits carry chunks (4 MiB). Zero chunks are never
//! transferred (the node writes holes), so they are left out of the table.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use vwnet_chunker::chunking::ChunkerConfig;
use vwnet_chunker::parallel::chunk_file;
use vwnet_chunker::{ChunkRef, Manifest};
use vwnet_node::downloader::{ChunkTable, ChunkTableError};
use vwnet_protocol::ids::ChunkHash;

use crate::rng::Rng;

/// Why an image model could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Reading or writing an image or manifest file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A manifest file is not a valid manifest.
    #[error("manifest {path}: {source}")]
    Manifest {
        /// The file.
        path: String,
        /// Why.
        source: vwnet_chunker::ManifestError,
    },
    /// Chunking a generated image failed.
    #[error("chunking {path}: {reason}")]
    Chunk {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The chunk table could not be built.
    #[error(transparent)]
    Table(#[from] ChunkTableError),
}

/// A chunk as the simulator needs it: name and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// BLAKE3 of the bytes.
    pub hash: ChunkHash,
    /// Length in bytes.
    pub len: u32,
}

/// The image to distribute and, optionally, the previous version hosts already hold.
#[derive(Debug, Clone)]
pub struct ImageModel {
    /// Chunks of the new image, manifest order, zero chunks removed.
    pub chunks: Vec<Chunk>,
    /// Chunks of the previous version (empty when there is none).
    pub base: Vec<Chunk>,
    /// Full image size including zero chunks (what a whole-image copy moves).
    pub size: u64,
    /// Where the numbers came from, for reports.
    pub source: String,
}

fn from_manifest(m: &Manifest) -> Vec<Chunk> {
    m.chunks()
        .iter()
        .filter(|c: &&ChunkRef| !c.zero)
        .map(|c| Chunk {
            hash: c.hash,
            len: c.len,
        })
        .collect()
}

/// Reads a manifest file (the chunker's canonical bytes).
pub fn read_manifest(path: &Path) -> Result<Manifest, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        what: "reading manifest",
        path: path.display().to_string(),
        source,
    })?;
    Manifest::from_bytes(&bytes).map_err(|source| ImageError::Manifest {
        path: path.display().to_string(),
        source,
    })
}

/// Chunks a file with the chunker's default parameters into a manifest.
pub fn chunk_to_manifest(path: &Path) -> Result<Manifest, ImageError> {
    let io = |source| ImageError::Io {
        what: "opening image",
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut refs = Vec::new();
    chunk_file::<std::convert::Infallible>(&file, &ChunkerConfig::default(), 2, |c| {
        refs.push(ChunkRef {
            hash: c.hash,
            len: c.data.len() as u32,
            zero: c.is_zero,
        });
        Ok(())
    })
    .map_err(|e| ImageError::Chunk {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Manifest::new(refs).map_err(|source| ImageError::Manifest {
        path: path.display().to_string(),
        source,
    })
}

/// How a v2 image is derived from v1 when images are generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateSpec {
    /// Image size in bytes.
    pub size: u64,
    /// Fraction of v1 rewritten in place in v2 (in 64 KiB extents at random offsets).
    pub rewrite: f64,
    /// Bytes inserted at random places in v2 (shifts content: tests content-defined chunking).
    pub insert: u64,
    /// Fraction of v1 that is zeros (sparse regions, never transferred).
    pub zero: f64,
    /// Seed of the content.
    pub seed: u64,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.display().to_string();
    move |source| ImageError::Io { what, path, source }
}

/// Writes v1 and v2 image files into `dir` (the same recipe as `tests/common/images.rs`:
/// random content, zero runs, in-place rewrites and insertions) and returns their paths.
pub fn generate_pair(
    dir: &Path,
    spec: &GenerateSpec,
) -> Result<(std::path::PathBuf, std::path::PathBuf), ImageError> {
    const EXTENT: usize = 64 * 1024;
    let v1 = dir.join("v1.img");
    let v2 = dir.join("v2.img");
    let mut rng = Rng::new(spec.seed);
    let extents = (spec.size as usize).div_ceil(EXTENT);
    // Decide per extent: zero or random, and in v2 rewritten or not.
    let mut w1 = BufWriter::new(File::create(&v1).map_err(io_err("creating", &v1))?);
    let mut w2 = BufWriter::new(File::create(&v2).map_err(io_err("creating", &v2))?);
    let insert_every = if spec.insert > 0 {
        (extents as u64 * EXTENT as u64 / spec.insert.max(1)).max(1) as usize
    } else {
        0
    };
    let mut inserted = 0u64;
    let mut buf = vec![0u8; EXTENT];
    let mut written = 0u64;
    for e in 0..extents {
        let len = (spec.size - written).min(EXTENT as u64) as usize;
        let zero = rng.unit() < spec.zero;
        if zero {
            buf[..len].fill(0);
        } else {
            rng.fill(&mut buf[..len]);
        }
        w1.write_all(&buf[..len]).map_err(io_err("writing", &v1))?;
        if !zero && rng.unit() < spec.rewrite {
            rng.fill(&mut buf[..len]);
        }
        w2.write_all(&buf[..len]).map_err(io_err("writing", &v2))?;
        // Insertions of ~1 KiB spread over the image until `insert` bytes are in.
        if insert_every > 0 && inserted < spec.insert && (e * EXTENT) % insert_every < EXTENT {
            let n = 1024.min((spec.insert - inserted) as usize);
            let mut ins = vec![0u8; n];
            rng.fill(&mut ins);
            w2.write_all(&ins).map_err(io_err("writing", &v2))?;
            inserted += n as u64;
        }
        written += len as u64;
    }
    w1.flush().map_err(io_err("writing", &v1))?;
    w2.flush().map_err(io_err("writing", &v2))?;
    Ok((v1, v2))
}

impl ImageModel {
    /// An image from manifests: `current`, and `base` as the version hosts already hold.
    pub fn from_manifests(current: &Manifest, base: Option<&Manifest>, source: String) -> Self {
        ImageModel {
            chunks: from_manifest(current),
            base: base.map(from_manifest).unwrap_or_default(),
            size: current.size(),
            source,
        }
    }

    /// A synthetic image of `size` bytes in chunks of about `avg` bytes (lengths vary ±50%
    /// like FastCDC's), of which a fraction `shared` is also in the synthetic base version.
    pub fn synthetic(size: u64, avg: u32, shared: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut chunks = Vec::new();
        let mut base = Vec::new();
        let mut left = size;
        let mut n = 0u64;
        while left > 0 {
            let jitter = 0.5 + rng.unit();
            let len = ((f64::from(avg) * jitter) as u64).clamp(1, left) as u32;
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&n.to_le_bytes());
            h[8..16].copy_from_slice(&seed.to_le_bytes());
            let c = Chunk {
                hash: ChunkHash::from_bytes(h),
                len,
            };
            chunks.push(c);
            if shared > 0.0 {
                if rng.unit() < shared {
                    base.push(c);
                } else {
                    h[16] = 1;
                    base.push(Chunk {
                        hash: ChunkHash::from_bytes(h),
                        len,
                    });
                }
            }
            left -= u64::from(len);
            n += 1;
        }
        ImageModel {
            chunks,
            base,
            size,
            source: format!("synthetic {size} B, ~{avg} B chunks, {shared} shared"),
        }
    }

    /// Distinct bytes of the new image (what a chunk swarm must move at least once).
    pub fn distinct_bytes(&self) -> u64 {
        let mut seen = HashSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.hash))
            .map(|c| u64::from(c.len))
            .sum()
    }

    /// Distinct bytes of the new image not in the base version: what an update moves.
    pub fn delta_bytes(&self) -> u64 {
        self.delta_chunks().iter().map(|c| u64::from(c.len)).sum()
    }

    /// Distinct chunks of the new image that the base version lacks, in manifest order.
    pub fn delta_chunks(&self) -> Vec<Chunk> {
        let base: HashSet<ChunkHash> = self.base.iter().map(|c| c.hash).collect();
        let mut seen = HashSet::new();
        self.chunks
            .iter()
            .filter(|c| !base.contains(&c.hash) && seen.insert(c.hash))
            .copied()
            .collect()
    }

    /// Distinct chunks of the new image in manifest order.
    pub fn distinct_chunks(&self) -> Vec<Chunk> {
        let mut seen = HashSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.hash))
            .copied()
            .collect()
    }
}

/// A scheduling table of pieces: runs of consecutive `chunks` of about `piece` bytes each
/// (`piece == 0`: one piece per chunk, i.e. the node's own table).
#[derive(Debug, Clone)]
pub struct Pieces {
    /// The table the downloaders share.
    pub table: Arc<ChunkTable>,
    /// Chunks per piece (for reports).
    pub chunks_per_piece: Vec<u32>,
}

/// Groups `chunks` into pieces of at least `piece` bytes (the last may be shorter).
pub fn pieces(chunks: &[Chunk], piece: u64) -> Result<Pieces, ImageError> {
    let mut entries: Vec<(ChunkHash, u32)> = Vec::new();
    let mut counts = Vec::new();
    if piece == 0 {
        for c in chunks {
            entries.push((c.hash, c.len));
            counts.push(1);
        }
    } else {
        let mut acc = 0u64;
        let mut n = 0u32;
        for c in chunks {
            acc += u64::from(c.len);
            n += 1;
            if acc >= piece {
                push_piece(&mut entries, &mut counts, acc, n);
                acc = 0;
                n = 0;
            }
        }
        if n > 0 {
            push_piece(&mut entries, &mut counts, acc, n);
        }
    }
    Ok(Pieces {
        table: Arc::new(ChunkTable::new(entries)?),
        chunks_per_piece: counts,
    })
}

fn push_piece(entries: &mut Vec<(ChunkHash, u32)>, counts: &mut Vec<u32>, bytes: u64, n: u32) {
    // Pieces are named by position: distinct by construction, so the table keeps them all.
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    h[31] = 0x9e; // keeps piece names apart from the synthetic chunk names
    entries.push((
        ChunkHash::from_bytes(h),
        bytes.min(u64::from(u32::MAX)) as u32,
    ));
    counts.push(n);
}
