//! Ingest: chunk an image from a file or a stream into the store and record its manifest.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use vwnet_protocol::ids::ImageId;

use crate::chunking::{
    ChunkError, ChunkSlice, ChunkerConfig, ConfigError, chunk_file, chunk_reader,
};
use crate::manifest::{ChunkRef, Manifest, ManifestError};
use crate::store::{ChunkWriter, Store, StoreError};

/// Commit (fsync + index) after this many new bytes, so an interrupted multi-GiB ingest keeps
/// most of its work for the next attempt.
const COMMIT_EVERY_NEW_BYTES: u64 = 1 << 30;

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Chunk size parameters; every node must use the same ones for images to dedup.
    pub chunker: ChunkerConfig,
    /// Threads for chunking and hashing a file (stdin is chunked on one thread).
    pub threads: usize,
    /// Pin the image so gc keeps it.
    pub pin: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerConfig::default(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: true,
        }
    }
}

/// What an ingest stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    /// The image id (hash of the manifest).
    pub image: ImageId,
    /// Image size in bytes.
    pub size: u64,
    /// Chunks in the manifest.
    pub chunks: u64,
    /// Chunks written to the store by this ingest.
    pub new_chunks: u64,
    /// Bytes written to the store by this ingest.
    pub new_bytes: u64,
    /// Bytes of non-zero chunks that were already stored (or repeated within the image).
    pub existing_bytes: u64,
    /// Bytes in all-zero chunks (not stored; exported as holes).
    pub zero_bytes: u64,
    /// Whether the image is complete in the store (it is unless a chunk it reused was
    /// quarantined while the ingest ran).
    pub complete: bool,
}

/// Why an ingest failed; nothing is recorded as complete on failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The input could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The input path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading the input failed.
    #[error("reading the image: {0}")]
    Read(io::Error),
    /// The chunker parameters are unusable.
    #[error(transparent)]
    Config(ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chunk list does not form a valid manifest (e.g. too many chunks).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Why `qemu-img convert` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// `qemu-img` could not be started (not installed?).
    #[error("running qemu-img: {0}")]
    Spawn(io::Error),
    /// `qemu-img` exited with an error.
    #[error("qemu-img convert failed: {0}")]
    Failed(String),
    /// The temporary file could not be created.
    #[error("creating a temporary file in {path}: {source}")]
    Temp {
        /// The scratch directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Converts a qcow2 (or any `qemu-img`-readable) image to raw in a temporary file under
/// `tmp_dir`, which is deleted when the returned path is dropped.
pub fn convert_to_raw(src: &Path, tmp_dir: &Path) -> Result<tempfile::TempPath, ConvertError> {
    let tmp = tempfile::Builder::new()
        .prefix("raw-")
        .tempfile_in(tmp_dir)
        .map_err(|source| ConvertError::Temp {
            path: tmp_dir.to_path_buf(),
            source,
        })?
        .into_temp_path();
    let out = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(src)
        .arg(&tmp)
        .output()
        .map_err(ConvertError::Spawn)?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(ConvertError::Failed(
            msg.trim().lines().last().unwrap_or("").to_string(),
        ));
    }
    Ok(tmp)
}

/// Accumulates the manifest and the byte counts while chunks stream past.
struct Ingest<'a> {
    writer: ChunkWriter,
    chunks: Vec<ChunkRef>,
    new_chunks: u64,
    new_bytes: u64,
    uncommitted: u64,
    existing_bytes: u64,
    zero_bytes: u64,
    progress: &'a mut dyn FnMut(u64, Option<u64>),
    total: Option<u64>,
}

impl Ingest<'_> {
    fn take(&mut self, s: ChunkSlice<'_>) -> Result<(), StoreError> {
        let len = s.data.len() as u64;
        self.chunks.push(ChunkRef {
            hash: s.hash,
            len: s.data.len() as u32,
            zero: s.is_zero,
        });
        if s.is_zero {
            self.zero_bytes += len;
        } else if self.writer.put_verified(s.hash, s.data)? {
            self.new_chunks += 1;
            self.new_bytes += len;
            self.uncommitted += len;
            if self.uncommitted >= COMMIT_EVERY_NEW_BYTES {
                self.writer.commit()?;
                self.uncommitted = 0;
            }
        } else {
            self.existing_bytes += len;
        }
        (self.progress)(s.offset + len, self.total);
        Ok(())
    }
}

fn check_config(cfg: &ChunkerConfig) -> Result<(), IngestError> {
    cfg.validate().map_err(IngestError::Config)
}

fn chunk_err(e: ChunkError<StoreError>) -> IngestError {
    match e {
        ChunkError::Callback(e) => IngestError::Store(e),
        ChunkError::Io(e) => IngestError::Read(e),
        ChunkError::Config(e) => IngestError::Config(e),
    }
}

impl Store {
    /// Ingests the image file at `path` (chunked in parallel); `progress(done, total)` in bytes.
    pub fn ingest_file(
        &self,
        path: &Path,
        opts: &IngestOptions,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<IngestReport, IngestError> {
        check_config(&opts.chunker)?;
        let file = File::open(path).map_err(|source| IngestError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let total = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let mut ing = self.start(progress, total);
        chunk_file(&file, &opts.chunker, opts.threads.max(1), |s| ing.take(s))
            .map_err(chunk_err)?;
        self.finish(ing, opts)
    }

    /// Ingests an image from a stream (e.g. stdin), chunked on the calling thread.
    pub fn ingest_reader(
        &self,
        reader: impl Read,
        opts: &IngestOptions,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<IngestReport, IngestError> {
        check_config(&opts.chunker)?;
        let mut ing = self.start(progress, None);
        chunk_reader(reader, &opts.chunker, |s| ing.take(s)).map_err(chunk_err)?;
        self.finish(ing, opts)
    }

    fn start<'a>(
        &self,
        progress: &'a mut dyn FnMut(u64, Option<u64>),
        total: Option<u64>,
    ) -> Ingest<'a> {
        Ingest {
            writer: self.writer(),
            chunks: Vec::new(),
            new_chunks: 0,
            new_bytes: 0,
            uncommitted: 0,
            existing_bytes: 0,
            zero_bytes: 0,
            progress,
            total,
        }
    }

    fn finish(
        &self,
        mut ing: Ingest<'_>,
        opts: &IngestOptions,
    ) -> Result<IngestReport, IngestError> {
        let manifest = Manifest::new(std::mem::take(&mut ing.chunks))?;
        let info = ing.writer.commit_image(&manifest, opts.pin)?;
        Ok(IngestReport {
            image: info.id,
            size: manifest.size(),
            chunks: manifest.chunks().len() as u64,
            new_chunks: ing.new_chunks,
            new_bytes: ing.new_bytes,
            existing_bytes: ing.existing_bytes,
            zero_bytes: ing.zero_bytes,
            complete: info.complete,
        })
    }
}
