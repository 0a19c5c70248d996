//! The chunk store: chunk bodies in append-only pack files, metadata in redb.
//!
//! Layout of the store directory (`<home>/store/`):
//! ```text
//! meta.redb              chunk index, packs, manifests, images, quarantine (see `meta`)
//! packs/<id:016x>.pack   concatenated chunk bodies; only the committed prefix is referenced
//! quarantine/<hash>.<unix>.bad   bytes of chunks that failed verification
//! tmp/                   scratch space (qcow2 → raw conversion); emptied on open
//! ```
//!
//! [`Store`] is a cheap-to-clone, `Send + Sync` handle with synchronous `&self` methods; callers
//! that run an async runtime wrap it in `spawn_blocking`. Writers go through a [`ChunkWriter`],
//! which is also the guard that keeps garbage collection away from what it is writing. Why packs
//! rather than one file per chunk, and the crash-safety argument, are in `chunker/DESIGN.md`.

mod gc;
mod meta;
mod pack;
mod verify;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use vwnet_protocol::ids::{ChunkHash, ImageId};
use vwnet_protocol::limits::MAX_CHUNK_LEN;
use vwnet_protocol::time::Timestamp;

use crate::manifest::{Manifest, ManifestError};
pub use gc::GcReport;
use meta::{CHUNKS, DbResultExt, IMAGES, ImageRecord, Loc, MANIFESTS, PACKS, QUARANTINE};
pub use pack::{ChunkWriter, PutError, SealedBatch, VerifiedChunk};
pub use verify::{CorruptChunk, ImageStatus, VerifyError, VerifyReport};

/// Page cache of the metadata database.
const DB_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A general store operation failed (open, metadata queries, pins, gc).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("store database: {0}")]
    Db(#[from] redb::Error),
    /// Another process has this store open.
    #[error("the store at {0} is in use by another process")]
    Locked(PathBuf),
    /// A stored record does not decode: the database was damaged or written by a newer build.
    #[error("corrupt store record for {what}: {detail}")]
    CorruptRecord {
        /// Which record.
        what: String,
        /// Why it does not decode.
        detail: String,
    },
    /// No image with this id is known.
    #[error("unknown image {0}")]
    UnknownImage(ImageId),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Why reading a chunk failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stored bytes do not match the chunk's hash; the chunk was quarantined and is now missing.
    #[error("chunk {hash} is corrupt on disk ({reason}); it was quarantined")]
    Corrupt {
        /// The chunk.
        hash: ChunkHash,
        /// What was wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One image as listed by [`Store::images`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    /// The image id (hash of its manifest).
    pub id: ImageId,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks in the manifest.
    pub chunks: u64,
    /// Every non-zero chunk is in the store, verified on entry.
    pub complete: bool,
    /// Garbage collection keeps the image's chunks.
    pub pinned: bool,
    /// When the image was first recorded (Unix seconds).
    pub added_unix: u64,
}

/// Totals reported by [`Store::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Known images.
    pub images: u64,
    /// Images whose chunks are all present.
    pub complete_images: u64,
    /// Pinned images.
    pub pinned_images: u64,
    /// Sum of the sizes of all known images.
    pub logical_bytes: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Bytes of distinct chunks stored.
    pub chunk_bytes: u64,
    /// Pack files.
    pub pack_files: u64,
    /// Committed bytes in pack files (chunk bytes plus space gc has not reclaimed yet).
    pub pack_bytes: u64,
    /// Chunks in quarantine.
    pub quarantined: u64,
}

/// Bookkeeping shared between writers and the garbage collector.
#[derive(Default)]
struct Registry {
    next_guard: u64,
    /// Chunks each live writer has written or relies on; gc treats them as roots.
    protected: HashMap<u64, HashSet<ChunkHash>>,
    /// Packs a live writer appends to; gc neither rewrites nor deletes them.
    active_packs: HashSet<u64>,
}

struct Inner {
    dir: PathBuf,
    db: Database,
    next_pack: AtomicU64,
    registry: Mutex<Registry>,
    /// Held shared while reading a chunk's location and bytes, exclusively while gc moves chunks
    /// and deletes pack files, so a reader never follows a location into a deleted pack.
    /// Lock order: this lock before a redb write transaction, never the other way.
    pack_lock: RwLock<()>,
}

/// Handle to an open chunk store; clones share the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        context,
        path,
        source,
    }
}

fn corrupt(what: impl std::fmt::Display, detail: impl std::fmt::Display) -> StoreError {
    StoreError::CorruptRecord {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

fn lock(m: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // The registry holds plain sets; a panic elsewhere cannot leave them half-updated in a way
    // that matters more than refusing to work, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and recovers from any interrupted write.
    ///
    /// Recovery: pack files without a committed row are deleted, bytes past a pack's committed
    /// length are truncated, and `tmp/` is emptied. Chunk rows only ever point into committed
    /// prefixes, so after this every indexed chunk names bytes that were fsync'd before the row
    /// was committed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["packs", "quarantine", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        let db_path = dir.join("meta.redb");
        // redb's default cache is 1 GiB; the index of a multi-GiB image is a few MiB, and the
        // ingest RSS target is 64 MiB.
        let db = match Database::builder()
            .set_cache_size(DB_CACHE_BYTES)
            .create(&db_path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(dir)),
            Err(e) => return Err(StoreError::Db(e.into())),
        };
        // Create every table so read transactions never meet a missing one.
        let txn = db.begin_write().db()?;
        {
            txn.open_table(CHUNKS).db()?;
            txn.open_table(PACKS).db()?;
            txn.open_table(MANIFESTS).db()?;
            txn.open_table(IMAGES).db()?;
            txn.open_table(QUARANTINE).db()?;
        }
        txn.commit().db()?;

        let store = Self {
            inner: Arc::new(Inner {
                dir,
                db,
                next_pack: AtomicU64::new(0),
                registry: Mutex::new(Registry::default()),
                pack_lock: RwLock::new(()),
            }),
        };
        let max_pack = store.recover()?;
        store.inner.next_pack.store(max_pack + 1, Ordering::SeqCst);
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Scratch directory on the store's file system (e.g. for qcow2 conversion).
    pub fn tmp_dir(&self) -> PathBuf {
        self.inner.dir.join("tmp")
    }

    fn packs_dir(&self) -> PathBuf {
        self.inner.dir.join("packs")
    }

    pub(crate) fn pack_path(&self, id: u64) -> PathBuf {
        self.packs_dir().join(format!("{id:016x}.pack"))
    }

    /// Truncates uncommitted pack tails, deletes unrecorded packs and scratch files; returns the
    /// largest pack id seen.
    fn recover(&self) -> Result<u64, StoreError> {
        let committed: HashMap<u64, u64> = {
            let txn = self.inner.db.begin_read().db()?;
            let t = txn.open_table(PACKS).db()?;
            let mut m = HashMap::new();
            for row in t.iter().db()? {
                let (k, v) = row.db()?;
                m.insert(k.value(), v.value());
            }
            m
        };
        let mut max_id = committed.keys().copied().max().unwrap_or(0);
        let packs = self.packs_dir();
        for entry in fs::read_dir(&packs).map_err(io_err("listing", &packs))? {
            let entry = entry.map_err(io_err("listing", &packs))?;
            let path = entry.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            match id.and_then(|id| committed.get(&id).map(|&len| (id, len))) {
                Some((id, len)) => {
                    max_id = max_id.max(id);
                    let meta = entry.metadata().map_err(io_err("inspecting", &path))?;
                    if meta.len() > len {
                        let f = fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err("opening", &path))?;
                        f.set_len(len).map_err(io_err("truncating", &path))?;
                        f.sync_all().map_err(io_err("syncing", &path))?;
                    }
                }
                None => {
                    if let Some(id) = id {
                        max_id = max_id.max(id);
                    }
                    fs::remove_file(&path).map_err(io_err("removing", &path))?;
                }
            }
        }
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(io_err("listing", &tmp))? {
            let path = entry.map_err(io_err("listing", &tmp))?.path();
            let res = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            res.map_err(io_err("removing", &path))?;
        }
        Ok(max_id)
    }

    /// Starts a write session: the returned writer is the guard that keeps gc off its chunks.
    pub fn writer(&self) -> ChunkWriter {
        let guard = {
            let mut reg = lock(&self.inner.registry);
            reg.next_guard += 1;
            let id = reg.next_guard;
            reg.protected.insert(id, HashSet::new());
            id
        };
        ChunkWriter::new(self.clone(), guard)
    }

    /// Verifies `bytes` against `hash` and stores them durably (one fsync); for single chunks
    /// arriving from the network. Use a [`ChunkWriter`] to store many chunks with one fsync.
    pub fn put_chunk(&self, hash: ChunkHash, bytes: &[u8]) -> Result<bool, PutError> {
        let mut w = self.writer();
        let new = w.put_chunk(hash, bytes)?;
        w.commit()?;
        Ok(new)
    }

    /// Whether the chunk is stored (verified on entry, committed durably).
    pub fn has_chunk(&self, hash: &ChunkHash) -> Result<bool, StoreError> {
        Ok(self.lookup(hash)?.is_some())
    }

    pub(crate) fn lookup(&self, hash: &ChunkHash) -> Result<Option<Loc>, StoreError> {
        let txn = self.inner.db.begin_read().db()?;
        let t = txn.open_table(CHUNKS).db()?;
        Ok(t.get(hash.as_bytes())
            .db()?
            .map(|v| Loc::from_bytes(v.value())))
    }

    /// The distinct non-zero chunks of `manifest` that this store lacks, in manifest order:
    /// what the network layer must fetch.
    pub fn missing(&self, manifest: &Manifest) -> Result<Vec<ChunkHash>, StoreError> {
        let txn = self.inner.db.begin_read().db()?;
        let t = txn.open_table(CHUNKS).db()?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in manifest.chunks().iter().filter(|c| !c.zero) {
            if seen.insert(c.hash) && t.get(c.hash.as_bytes()).db()?.is_none() {
                out.push(c.hash);
            }
        }
        Ok(out)
    }

    /// Reads a chunk and checks it against its hash; `None` if it is not stored.
    ///
    /// A chunk whose bytes do not match is quarantined (it becomes missing, and the images that
    /// use it incomplete) and reported as [`ReadError::Corrupt`].
    pub fn read_chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, ReadError> {
        let mut buf = Vec::new();
        let mut files = PackFiles::default();
        Ok(self
            .read_chunk_into(hash, &mut buf, &mut files)?
            .then_some(buf))
    }

    /// Reads several chunks (say, one network request's worth) with one index snapshot and one
    /// set of open pack files; each is checked against its hash. `None` for a chunk that is not
    /// stored or failed verification (it was quarantined and is now missing).
    pub fn read_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(hashes.len());
        let mut suspects = Vec::new();
        {
            let _shared = self
                .inner
                .pack_lock
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let txn = self.inner.db.begin_read().db()?;
            let t = txn.open_table(CHUNKS).db()?;
            let mut files = PackFiles::default();
            for hash in hashes {
                let Some(loc) = t
                    .get(hash.as_bytes())
                    .db()?
                    .map(|v| Loc::from_bytes(v.value()))
                else {
                    out.push(None);
                    continue;
                };
                let mut buf = Vec::new();
                match self.read_loc(loc, &mut buf, &mut files) {
                    Ok(()) if ChunkHash::of(&buf) == *hash => out.push(Some(buf)),
                    Ok(()) => {
                        suspects.push((
                            *hash,
                            loc,
                            Some(buf),
                            "bytes do not match the hash".into(),
                        ));
                        out.push(None);
                    }
                    Err(e) => {
                        suspects.push((*hash, loc, None, format!("unreadable: {e}")));
                        out.push(None);
                    }
                }
            }
        }
        // Quarantine outside the shared pack lock (lock order: pack lock before write txn).
        self.quarantine(&suspects)?;
        Ok(out)
    }

    /// Appends the bytes of `hashes`, in order, to `out`, each checked against its hash, with one
    /// index snapshot; chunks that lie back to back in a pack (as an ingest writes them) are
    /// read with one `pread`. Returns `false`, with `out` in an unspecified state, if a chunk is
    /// not stored. A chunk that fails verification is quarantined and reported as corrupt.
    pub(crate) fn read_many_into(
        &self,
        hashes: &[ChunkHash],
        out: &mut Vec<u8>,
        files: &mut PackFiles,
    ) -> Result<bool, ReadError> {
        let failure = {
            let _shared = self
                .inner
                .pack_lock
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let txn = self.inner.db.begin_read().db().map_err(StoreError::from)?;
            let t = txn.open_table(CHUNKS).db().map_err(StoreError::from)?;
            let mut locs = Vec::with_capacity(hashes.len());
            for hash in hashes {
                match t.get(hash.as_bytes()).db().map_err(StoreError::from)? {
                    Some(v) => locs.push(Loc::from_bytes(v.value())),
                    None => return Ok(false),
                }
            }
            let base = out.len();
            let mut i = 0;
            let mut failure = None;
            'spans: while i < locs.len() {
                // The longest run of chunks contiguous in one pack starting at i.
                let first = locs[i];
                let mut end = i + 1;
                let mut span_len = u64::from(first.len);
                while let Some(next) = locs.get(end)
                    && next.pack == first.pack
                    && next.offset == first.offset + span_len
                {
                    span_len += u64::from(next.len);
                    end += 1;
                }
                let start = out.len();
                let span = Loc {
                    pack: first.pack,
                    offset: first.offset,
                    len: u32::try_from(span_len).unwrap_or(u32::MAX),
                };
                if let Err(e) = self.read_span(span, span_len, out, files) {
                    // Find out which chunk is unreadable: read them one by one.
                    out.truncate(start);
                    for (hash, loc) in hashes[i..end].iter().zip(&locs[i..end]) {
                        let mut buf = Vec::new();
                        if let Err(e1) = self.read_loc(*loc, &mut buf, files) {
                            failure = Some((*hash, *loc, None, format!("unreadable: {e1}")));
                            break 'spans;
                        }
                    }
                    failure = Some((hashes[i], first, None, format!("unreadable: {e}")));
                    break;
                }
                let mut at = start;
                for (hash, loc) in hashes[i..end].iter().zip(&locs[i..end]) {
                    let bytes = &out[at..at + loc.len as usize];
                    if ChunkHash::of(bytes) != *hash {
                        failure = Some((
                            *hash,
                            *loc,
                            Some(bytes.to_vec()),
                            "bytes do not match the hash".to_string(),
                        ));
                        break 'spans;
                    }
                    at += loc.len as usize;
                }
                i = end;
            }
            if failure.is_none() {
                debug_assert_eq!(
                    out.len() - base,
                    locs.iter().map(|l| l.len as usize).sum::<usize>()
                );
                return Ok(true);
            }
            failure
        };
        // Quarantine outside the shared pack lock (lock order: pack lock before write txn).
        let Some((hash, loc, bytes, reason)) = failure else {
            return Ok(true);
        };
        self.quarantine(&[(hash, loc, bytes, reason.clone())])?;
        Err(ReadError::Corrupt { hash, reason })
    }

    /// Appends `len` bytes at `span.offset` of pack `span.pack` to `out`.
    fn read_span(
        &self,
        span: Loc,
        len: u64,
        out: &mut Vec<u8>,
        files: &mut PackFiles,
    ) -> io::Result<()> {
        let file = match files.0.entry(span.pack) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(File::open(self.pack_path(span.pack))?)
            }
        };
        let start = out.len();
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "span too long"))?;
        out.resize(start + len, 0);
        file.read_exact_at(&mut out[start..], span.offset)
    }

    /// [`Store::read_chunk`] into a reused buffer, with pack handles cached in `files`.
    pub(crate) fn read_chunk_into(
        &self,
        hash: &ChunkHash,
        buf: &mut Vec<u8>,
        files: &mut PackFiles,
    ) -> Result<bool, ReadError> {
        let failure = {
            let _shared = self
                .inner
                .pack_lock
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(loc) = self.lookup(hash)? else {
                return Ok(false);
            };
            match self.read_loc(loc, buf, files) {
                Ok(()) if ChunkHash::of(buf) == *hash => return Ok(true),
                Ok(()) => (
                    loc,
                    Some(std::mem::take(buf)),
                    "bytes do not match the hash".to_string(),
                ),
                Err(e) => (loc, None, format!("unreadable: {e}")),
            }
        };
        // Quarantine outside the shared pack lock (lock order: pack lock before write txn).
        let (loc, bytes, reason) = failure;
        self.quarantine(&[(*hash, loc, bytes, reason.clone())])?;
        Err(ReadError::Corrupt {
            hash: *hash,
            reason,
        })
    }

    pub(crate) fn read_loc(
        &self,
        loc: Loc,
        buf: &mut Vec<u8>,
        files: &mut PackFiles,
    ) -> io::Result<()> {
        if loc.len as usize > MAX_CHUNK_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "indexed length above limit",
            ));
        }
        let file = match files.0.entry(loc.pack) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(File::open(self.pack_path(loc.pack))?)
            }
        };
        buf.resize(loc.len as usize, 0);
        file.read_exact_at(buf, loc.offset)
    }

    /// Records a manifest (e.g. one fetched from a peer) and returns its id; the image is
    /// complete if every chunk is already present. Does not pin.
    pub fn add_manifest(&self, manifest: &Manifest) -> Result<ImageInfo, StoreError> {
        let txn = self.inner.db.begin_write().db()?;
        let info = record_image(&txn, manifest, false)?;
        txn.commit().db()?;
        Ok(info)
    }

    /// The manifest of a known image.
    pub fn manifest(&self, id: &ImageId) -> Result<Manifest, StoreError> {
        let txn = self.inner.db.begin_read().db()?;
        let t = txn.open_table(MANIFESTS).db()?;
        let bytes = t
            .get(id.as_bytes())
            .db()?
            .ok_or(StoreError::UnknownImage(*id))?;
        Manifest::from_bytes(bytes.value()).map_err(|e| corrupt(format!("manifest {id}"), e))
    }

    /// One image's status.
    pub fn image(&self, id: &ImageId) -> Result<ImageInfo, StoreError> {
        let txn = self.inner.db.begin_read().db()?;
        let t = txn.open_table(IMAGES).db()?;
        let rec = t
            .get(id.as_bytes())
            .db()?
            .ok_or(StoreError::UnknownImage(*id))?;
        let rec =
            ImageRecord::from_bytes(rec.value()).map_err(|e| corrupt(format!("image {id}"), e))?;
        Ok(info(*id, rec))
    }

    /// Every known image, ordered by id.
    pub fn images(&self) -> Result<Vec<ImageInfo>, StoreError> {
        let txn = self.inner.db.begin_read().db()?;
        let t = txn.open_table(IMAGES).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            let id = ImageId::from_bytes(k.value());
            let rec = ImageRecord::from_bytes(v.value())
                .map_err(|e| corrupt(format!("image {id}"), e))?;
            out.push(info(id, rec));
        }
        Ok(out)
    }

    /// Pins (`true`) or unpins an image: gc keeps exactly the chunks of pinned images.
    pub fn set_pinned(&self, id: &ImageId, pinned: bool) -> Result<(), StoreError> {
        let txn = self.inner.db.begin_write().db()?;
        {
            let mut t = txn.open_table(IMAGES).db()?;
            let mut rec = match t.get(id.as_bytes()).db()? {
                Some(v) => ImageRecord::from_bytes(v.value())
                    .map_err(|e| corrupt(format!("image {id}"), e))?,
                None => return Err(StoreError::UnknownImage(*id)),
            };
            rec.pinned = pinned;
            t.insert(id.as_bytes(), rec.to_bytes().as_slice()).db()?;
        }
        txn.commit().db()?;
        Ok(())
    }

    /// Counts of images, chunks and bytes.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        for img in self.images()? {
            s.images += 1;
            s.complete_images += u64::from(img.complete);
            s.pinned_images += u64::from(img.pinned);
            s.logical_bytes += img.size;
        }
        let txn = self.inner.db.begin_read().db()?;
        let chunks = txn.open_table(CHUNKS).db()?;
        for row in chunks.iter().db()? {
            let (_, v) = row.db()?;
            s.chunks += 1;
            s.chunk_bytes += u64::from(Loc::from_bytes(v.value()).len);
        }
        let packs = txn.open_table(PACKS).db()?;
        for row in packs.iter().db()? {
            let (_, v) = row.db()?;
            s.pack_files += 1;
            s.pack_bytes += v.value();
        }
        s.quarantined = txn.open_table(QUARANTINE).db()?.len().db()?;
        Ok(s)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.inner.registry)
    }
}

fn info(id: ImageId, rec: ImageRecord) -> ImageInfo {
    ImageInfo {
        id,
        size: rec.size,
        chunks: rec.chunks,
        complete: rec.complete,
        pinned: rec.pinned,
        added_unix: rec.added_unix,
    }
}

/// Pack file handles kept open across reads of one operation.
#[derive(Default)]
pub(crate) struct PackFiles(HashMap<u64, File>);

/// Whether every non-zero chunk of `manifest` has a row in `chunks`.
fn all_present(
    chunks: &impl ReadableTable<[u8; 32], [u8; 20]>,
    manifest: &Manifest,
) -> Result<bool, StoreError> {
    for c in manifest.chunks().iter().filter(|c| !c.zero) {
        if chunks.get(c.hash.as_bytes()).db()?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Inserts or updates an image inside `txn`, computing completeness from the chunk index as the
/// transaction sees it; `pin` only ever adds a pin.
fn record_image(
    txn: &redb::WriteTransaction,
    manifest: &Manifest,
    pin: bool,
) -> Result<ImageInfo, StoreError> {
    let id = manifest.id();
    let complete = {
        let chunks = txn.open_table(CHUNKS).db()?;
        all_present(&chunks, manifest)?
    };
    let mut manifests = txn.open_table(MANIFESTS).db()?;
    if manifests.get(id.as_bytes()).db()?.is_none() {
        manifests
            .insert(id.as_bytes(), manifest.to_bytes().as_slice())
            .db()?;
    }
    let mut images = txn.open_table(IMAGES).db()?;
    let old = match images.get(id.as_bytes()).db()? {
        Some(v) => Some(
            ImageRecord::from_bytes(v.value()).map_err(|e| corrupt(format!("image {id}"), e))?,
        ),
        None => None,
    };
    let rec = ImageRecord {
        size: manifest.size(),
        chunks: manifest.chunks().len() as u64,
        complete,
        pinned: pin || old.is_some_and(|o| o.pinned),
        added_unix: old.map_or_else(|| Timestamp::now().as_unix_secs(), |o| o.added_unix),
    };
    images
        .insert(id.as_bytes(), rec.to_bytes().as_slice())
        .db()?;
    Ok(info(id, rec))
}

/// Re-evaluates every image's `complete` flag inside `txn` (after chunks were added or removed);
/// returns the ids whose flag changed, with the new value.
fn refresh_completeness(
    txn: &redb::WriteTransaction,
    only_incomplete: bool,
) -> Result<Vec<(ImageId, bool)>, StoreError> {
    let mut changed = Vec::new();
    let chunks = txn.open_table(CHUNKS).db()?;
    let manifests = txn.open_table(MANIFESTS).db()?;
    let mut images = txn.open_table(IMAGES).db()?;
    let mut updates = Vec::new();
    for row in images.iter().db()? {
        let (k, v) = row.db()?;
        let id = ImageId::from_bytes(k.value());
        let rec =
            ImageRecord::from_bytes(v.value()).map_err(|e| corrupt(format!("image {id}"), e))?;
        if only_incomplete && rec.complete {
            continue;
        }
        let Some(mbytes) = manifests.get(id.as_bytes()).db()? else {
            return Err(corrupt(format!("image {id}"), "manifest row missing"));
        };
        let manifest = Manifest::from_bytes(mbytes.value())
            .map_err(|e| corrupt(format!("manifest {id}"), e))?;
        let complete = all_present(&chunks, &manifest)?;
        if complete != rec.complete {
            updates.push((id, ImageRecord { complete, ..rec }));
        }
    }
    for (id, rec) in updates {
        images
            .insert(id.as_bytes(), rec.to_bytes().as_slice())
            .db()?;
        changed.push((id, rec.complete));
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// Three chunks written back to back (one span for `read_many_into`), the middle one then
    /// damaged on disk: the batched readers must still name and quarantine exactly that chunk.
    #[test]
    fn batched_reads_verify_every_chunk_of_a_span() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chunks: Vec<Vec<u8>> = (0..3u8)
            .map(|k| {
                (0..3000u32)
                    .map(|i| (i as u8) ^ k.wrapping_mul(77))
                    .collect()
            })
            .collect();
        let hashes: Vec<ChunkHash> = chunks.iter().map(|c| ChunkHash::of(c)).collect();
        let mut w = store.writer();
        for (h, c) in hashes.iter().zip(&chunks) {
            w.put_chunk(*h, c).unwrap();
        }
        w.commit().unwrap();
        let mut out = Vec::new();
        let mut files = PackFiles::default();
        assert!(store.read_many_into(&hashes, &mut out, &mut files).unwrap());
        assert_eq!(out, chunks.concat());

        let loc = store.lookup(&hashes[1]).unwrap().unwrap();
        let pack = fs::OpenOptions::new()
            .write(true)
            .open(store.pack_path(loc.pack))
            .unwrap();
        pack.write_all_at(b"X", loc.offset + 5).unwrap();
        let mut out = Vec::new();
        let mut files = PackFiles::default();
        match store.read_many_into(&hashes, &mut out, &mut files) {
            Err(ReadError::Corrupt { hash, .. }) => assert_eq!(hash, hashes[1]),
            other => panic!("expected the middle chunk to be corrupt: {other:?}"),
        }
        // Quarantined: now missing, the others still read.
        let got = store.read_chunks(&hashes).unwrap();
        assert_eq!(got[0].as_deref(), Some(chunks[0].as_slice()));
        assert_eq!(got[1], None);
        assert_eq!(got[2].as_deref(), Some(chunks[2].as_slice()));
        assert!(
            !store
                .read_many_into(&hashes, &mut Vec::new(), &mut files)
                .unwrap()
        );
    }
}
