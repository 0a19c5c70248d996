//! Export: write an image back to a file, byte-identical, with holes for zero chunks.
//!
//! Reading and verifying chunks runs on a second thread, feeding the writer through a small
//! bounded channel (memory stays at a few chunk buffers whatever the image size). The output is
//! written to a temporary file next to the destination and renamed into place only when
//! complete, so a failed export leaves nothing behind.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use vwnet_protocol::ids::{ChunkHash, ImageId};

use crate::store::{ReadError, Store, StoreError};

/// Buffers in flight between the reading and the writing thread.
const PIPELINE_DEPTH: usize = 4;
/// Bytes of consecutive data chunks read, verified and written as one buffer: few system
/// calls, while memory stays at `(PIPELINE_DEPTH + 2) * BATCH_BYTES` whatever the image size.
const BATCH_BYTES: u64 = 2 * 1024 * 1024;
/// Output bytes after which a background `fdatasync` starts, so the disk writes while chunks
/// are still being read and verified, instead of all at the final sync.
const FLUSH_EVERY: u64 = 32 * 1024 * 1024;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportReport {
    /// The image.
    pub image: ImageId,
    /// Size of the written file.
    pub size: u64,
    /// Bytes written as data.
    pub data_bytes: u64,
    /// Bytes left as holes (zero chunks).
    pub hole_bytes: u64,
}

/// Why an export failed; the destination is left untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The image is unknown.
    #[error("unknown image {0}")]
    UnknownImage(ImageId),
    /// Some chunks are missing from the store.
    #[error("image {image} is incomplete: {missing} chunks missing")]
    Incomplete {
        /// The image.
        image: ImageId,
        /// Number of distinct missing chunks.
        missing: u64,
    },
    /// A chunk failed verification while reading; it was quarantined.
    #[error("chunk {hash} is corrupt ({reason}); it was quarantined, the image is now incomplete")]
    Corrupt {
        /// The chunk.
        hash: ChunkHash,
        /// What was wrong.
        reason: String,
    },
    /// Writing the output failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownImage(id) => Self::UnknownImage(id),
            other => Self::Store(other),
        }
    }
}

impl From<ReadError> for ExportError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Corrupt { hash, reason } => Self::Corrupt { hash, reason },
            ReadError::Store(s) => s.into(),
        }
    }
}

/// Background flushing of the output file (see [`FLUSH_EVERY`]).
#[derive(Default)]
struct Flusher {
    unflushed: u64,
    running: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Flusher {
    /// Notes `len` more bytes written to `file`; starts a flush when enough accumulated and the
    /// previous one finished.
    fn wrote(&mut self, file: &File, len: u64) {
        self.unflushed += len;
        if self.unflushed < FLUSH_EVERY || self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // A failure of the previous flush resurfaces at the final `sync_data`, which the
        // export needs to succeed anyway.
        let _ = self.finish();
        if let Ok(handle) = file.try_clone() {
            self.unflushed = 0;
            self.running = std::thread::Builder::new()
                .name("export-flush".into())
                .spawn(move || handle.sync_data())
                .ok();
        }
    }

    /// Waits for the running flush.
    fn finish(&mut self) -> io::Result<()> {
        match self.running.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the flushing thread panicked"))),
            None => Ok(()),
        }
    }
}

enum Piece {
    Data(Vec<u8>),
    Hole(u64),
}

impl Store {
    /// Writes image `id` to `dest` (replacing it), preserving holes; `progress(done, total)`.
    pub fn export(
        &self,
        id: &ImageId,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportReport, ExportError> {
        let manifest = self.manifest(id)?;
        let missing = self.missing(&manifest)?.len() as u64;
        if missing > 0 {
            return Err(ExportError::Incomplete {
                image: *id,
                missing,
            });
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io = |context: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ExportError::Io {
                context,
                path,
                source,
            }
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".vwnet-export-")
            .tempfile_in(&dir)
            .map_err(io("creating a temporary file in", &dir))?;
        let mut report = ExportReport {
            image: *id,
            size: manifest.size(),
            data_bytes: 0,
            hole_bytes: 0,
        };
        let total = manifest.size();

        std::thread::scope(|scope| -> Result<(), ExportError> {
            let (tx, rx) = mpsc::sync_channel::<Result<Piece, ExportError>>(PIPELINE_DEPTH);
            let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
            let chunks = manifest.chunks();
            scope.spawn(move || {
                let mut files = Default::default();
                let mut i = 0;
                while i < chunks.len() {
                    // A run of zero chunks becomes one hole; a run of data chunks up to
                    // BATCH_BYTES becomes one buffer, read with as few `pread`s as the pack
                    // layout allows and written with one `write`.
                    let zero = chunks[i].zero;
                    let mut end = i;
                    let mut bytes = 0u64;
                    while let Some(c) = chunks.get(end)
                        && c.zero == zero
                        && (zero || end == i || bytes + u64::from(c.len) <= BATCH_BYTES)
                    {
                        bytes += u64::from(c.len);
                        end += 1;
                    }
                    let piece = if zero {
                        Ok(Piece::Hole(bytes))
                    } else {
                        let mut buf = recycle_rx.try_recv().unwrap_or_default();
                        buf.clear();
                        let hashes: Vec<ChunkHash> =
                            chunks[i..end].iter().map(|c| c.hash).collect();
                        match self.read_many_into(&hashes, &mut buf, &mut files) {
                            Ok(true) => Ok(Piece::Data(buf)),
                            // Removed since the missing() check (gc or quarantine elsewhere).
                            Ok(false) => Err(ExportError::Incomplete {
                                image: *id,
                                missing: 1,
                            }),
                            Err(e) => Err(e.into()),
                        }
                    };
                    i = end;
                    let failed = piece.is_err();
                    // The receiver hangs up only after an error of its own; stop then too.
                    if tx.send(piece).is_err() || failed {
                        return;
                    }
                }
            });
            let path = dest;
            let mut flusher = Flusher::default();
            let mut done = 0u64;
            for piece in rx {
                let file = tmp.as_file_mut();
                match piece? {
                    Piece::Data(buf) => {
                        file.write_all(&buf).map_err(io("writing", path))?;
                        done += buf.len() as u64;
                        report.data_bytes += buf.len() as u64;
                        flusher.wrote(file, buf.len() as u64);
                        let _ = recycle_tx.send(buf);
                    }
                    Piece::Hole(len) => {
                        file.seek(SeekFrom::Current(len as i64))
                            .map_err(io("seeking in", path))?;
                        done += len;
                        report.hole_bytes += len;
                    }
                }
                progress(done, total);
            }
            if done != total {
                return Err(ExportError::Incomplete {
                    image: *id,
                    missing: 1,
                });
            }
            let file = tmp.as_file_mut();
            // Trailing holes: seeking alone does not extend the file.
            file.set_len(total).map_err(io("sizing", path))?;
            // Durable before it is renamed into place, so a crash never leaves a destination
            // that exists but is short or zero-filled.
            flusher.finish().map_err(io("syncing", path))?;
            file.sync_data().map_err(io("syncing", path))?;
            Ok(())
        })?;
        tmp.persist(dest).map_err(|e| ExportError::Io {
            context: "renaming the export to",
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        Ok(report)
    }
}

/// Allocated bytes of a file (from `st_blocks`): how tests and tools see holes.
pub fn allocated_bytes(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.blocks() * 512)
}
