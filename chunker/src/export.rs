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

/// Chunk buffers in flight between the reading and the writing thread.
const PIPELINE_DEPTH: usize = 16;

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
                for c in chunks {
                    let piece = if c.zero {
                        Ok(Piece::Hole(u64::from(c.len)))
                    } else {
                        let mut buf = recycle_rx.try_recv().unwrap_or_default();
                        match self.read_chunk_into(&c.hash, &mut buf, &mut files) {
                            Ok(true) => Ok(Piece::Data(buf)),
                            // Removed since the missing() check (gc or quarantine elsewhere).
                            Ok(false) => Err(ExportError::Incomplete {
                                image: *id,
                                missing: 1,
                            }),
                            Err(e) => Err(e.into()),
                        }
                    };
                    let failed = piece.is_err();
                    // The receiver hangs up only after an error of its own; stop then too.
                    if tx.send(piece).is_err() || failed {
                        return;
                    }
                }
            });
            let file = tmp.as_file_mut();
            let path = dest;
            let mut done = 0u64;
            for piece in rx {
                match piece? {
                    Piece::Data(buf) => {
                        file.write_all(&buf).map_err(io("writing", path))?;
                        done += buf.len() as u64;
                        report.data_bytes += buf.len() as u64;
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
            // Trailing holes: seeking alone does not extend the file.
            file.set_len(total).map_err(io("sizing", path))?;
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
