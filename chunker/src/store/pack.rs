//! Writing chunks: [`ChunkWriter`] appends verified chunks to its own pack file and makes them
//! durable with one fsync per commit, before the redb transaction that indexes them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use redb::ReadableTable;
use vwnet_protocol::ids::ChunkHash;
use vwnet_protocol::limits::MAX_CHUNK_LEN;

use super::meta::{CHUNKS, DbResultExt, Loc, PACKS};
use super::{ImageInfo, Store, StoreError, io_err, record_image, refresh_completeness};
use crate::manifest::Manifest;

/// A pack is closed and a new one started once it reaches this size, so that gc can reclaim
/// space by rewriting packs of bounded size.
const PACK_TARGET_LEN: u64 = 256 * 1024 * 1024;

/// After this many bytes appended to a pack, a background thread starts flushing them
/// (`fdatasync` of the pack), so the disk writes while the caller keeps chunking and hashing
/// and the commit's own fsync finds little left to do. With 24 GiB of RAM the kernel would
/// otherwise start writeback only at the commit. This changes when bytes reach the disk, never
/// what is indexed: rows are still written only after the commit's fsync.
const FLUSH_EVERY: u64 = 32 * 1024 * 1024;

/// Why a chunk could not be stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PutError {
    /// The bytes do not hash to the claimed name; nothing was stored.
    #[error("chunk bytes hash to {actual}, not the claimed {claimed}")]
    HashMismatch {
        /// The name the chunk was offered under.
        claimed: ChunkHash,
        /// What the bytes hash to.
        actual: ChunkHash,
    },
    /// The chunk is empty or larger than `MAX_CHUNK_LEN`.
    #[error("chunk of {0} bytes is outside 1..={MAX_CHUNK_LEN}")]
    BadLength(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Chunk bytes that were hashed and found to match their name: the form in which chunks from
/// outside (the network) reach [`ChunkWriter::put`]. Verifying is the expensive part and needs
/// no store, so callers can do it on any thread, in parallel, before handing chunks to the one
/// thread that writes.
#[derive(Debug, Clone)]
pub struct VerifiedChunk<B = Vec<u8>> {
    hash: ChunkHash,
    bytes: B,
}

impl<B: AsRef<[u8]>> VerifiedChunk<B> {
    /// Hashes `bytes` and checks them against `hash` and the length limits.
    pub fn verify(hash: ChunkHash, bytes: B) -> Result<Self, PutError> {
        let b = bytes.as_ref();
        if b.is_empty() || b.len() > MAX_CHUNK_LEN {
            return Err(PutError::BadLength(b.len()));
        }
        let actual = ChunkHash::of(b);
        if actual != hash {
            return Err(PutError::HashMismatch {
                claimed: hash,
                actual,
            });
        }
        Ok(Self { hash, bytes })
    }

    /// The chunk's name.
    pub fn hash(&self) -> ChunkHash {
        self.hash
    }

    /// The chunk's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.as_ref().len()
    }

    /// Always false: a verified chunk has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.bytes.as_ref().is_empty()
    }
}

struct OpenPack {
    id: u64,
    file: File,
    len: u64,
    /// Bytes written since the last fsync.
    dirty: bool,
    /// Pack length when the last background flush was started.
    flush_requested: u64,
}

/// A background `fdatasync` of a pack, started by [`ChunkWriter::append`].
struct Flush {
    pack: u64,
    thread: JoinHandle<io::Result<()>>,
}

/// The first fsync failure of a writer: (pack, kind, message).
type Failure = (u64, io::ErrorKind, String);

/// What a writer and the batches it sealed share: the gc registration (dropped with the last
/// of them, so gc keeps off packs whose rows a batch is still about to commit) and the sticky
/// fsync failure.
struct Shared {
    store: Store,
    guard: u64,
    /// Every pack this writer created; unregistered from gc's view on drop.
    owned: Mutex<Vec<u64>>,
    /// Set by the first failed fsync of any of them. A failed fsync reports its error once per
    /// file description, and the kernel may have dropped the dirty pages: a later fsync could
    /// "succeed" over lost bytes, so every later commit must fail.
    failed: OnceLock<Failure>,
}

impl Shared {
    fn check(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some((pack, kind, msg)) => {
                let path = self.store.pack_path(*pack);
                Err(io_err("syncing", &path)(io::Error::new(*kind, msg.clone())))
            }
            None => Ok(()),
        }
    }

    /// Records a failed fsync of `pack` and returns it as an error.
    fn fail(&self, pack: u64, e: io::Error) -> StoreError {
        let _ = self.failed.set((pack, e.kind(), e.to_string()));
        io_err("syncing", &self.store.pack_path(pack))(e)
    }

    /// Fsyncs `file` (a handle on pack `pack`), remembering a failure.
    fn sync(&self, pack: u64, file: &File) -> Result<(), StoreError> {
        file.sync_data().map_err(|e| self.fail(pack, e))
    }

    /// Waits for a background flush, remembering a failure.
    fn reap(&self, flush: Flush) -> Result<(), StoreError> {
        let result = flush
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the flushing thread panicked")));
        result.map_err(|e| self.fail(flush.pack, e))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Uncommitted bytes stay as a dead tail (or an unrecorded pack) until the next open
        // truncates them or gc removes the orphan file; deleting here could race a commit whose
        // outcome is unknown after an error.
        let owned = std::mem::take(self.owned.get_mut().unwrap_or_else(PoisonError::into_inner));
        let mut reg = self.store.registry();
        reg.protected.remove(&self.guard);
        for id in &owned {
            reg.active_packs.remove(id);
        }
    }
}

/// A write session and the gc guard for it.
///
/// Chunks put through a writer become visible (`has_chunk`, `missing`) at the next
/// [`commit`](ChunkWriter::commit) or [`commit_image`](ChunkWriter::commit_image), or when a
/// batch taken with [`seal`](ChunkWriter::seal) is committed. Until the writer and its sealed
/// batches are dropped, gc keeps every chunk it wrote or found already present, and never
/// touches its pack files. Dropping without committing discards the uncommitted chunks.
pub struct ChunkWriter {
    shared: Arc<Shared>,
    pack: Option<OpenPack>,
    /// Packs closed by this writer but not yet fsync'd / recorded.
    sealed: Vec<OpenPack>,
    /// Chunks written since the last commit or seal.
    pending: HashMap<ChunkHash, Loc>,
    /// Their total length.
    pending_bytes: u64,
    /// Chunks handed to sealed batches: not in `pending` any more, perhaps not yet indexed, but
    /// written, so a second copy is not new.
    handed_over: HashSet<ChunkHash>,
    /// Pack lengths to record at the next commit.
    pack_lens: BTreeMap<u64, u64>,
    /// Whether the packs directory must be fsync'd (a pack file was created) before commit.
    dir_dirty: bool,
    /// The background flush in progress, if any (at most one per writer).
    flush: Option<Flush>,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("guard", &self.shared.guard)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Chunks a writer appended, taken out of it by [`ChunkWriter::seal`] so that their fsync and
/// index transaction ([`SealedBatch::commit`]) can run on another thread while the writer keeps
/// appending. Dropping a batch without committing discards its chunks (they were never indexed).
pub struct SealedBatch {
    shared: Arc<Shared>,
    chunks: Vec<(ChunkHash, Loc)>,
    bytes: u64,
    pack_lens: BTreeMap<u64, u64>,
    /// Handles on the packs with unsynced bytes.
    files: Vec<(u64, File)>,
    sync_dir: bool,
    flush: Option<Flush>,
}

impl std::fmt::Debug for SealedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBatch")
            .field("chunks", &self.chunks.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl SealedBatch {
    /// Chunks in the batch.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Their total length.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes the batch durable and visible: fsync of its pack data (and of the packs directory
    /// if a pack was created), then one redb transaction indexing its chunks. Batches of one
    /// writer may commit in any order: a pack's recorded length only ever grows.
    pub fn commit(self) -> Result<(), StoreError> {
        self.commit_inner(None).map(|_| ())
    }

    fn commit_inner(
        mut self,
        image: Option<(&Manifest, bool)>,
    ) -> Result<Option<ImageInfo>, StoreError> {
        if self.chunks.is_empty() && image.is_none() {
            return Ok(None);
        }
        let shared = &self.shared;
        if let Some(flush) = self.flush.take() {
            shared.reap(flush)?;
        }
        shared.check()?;
        for (id, file) in &self.files {
            shared.sync(*id, file)?;
        }
        if self.sync_dir {
            let dir = shared.store.packs_dir();
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing", &dir))?;
        }
        let txn = shared.store.inner.db.begin_write().db()?;
        {
            let mut chunks = txn.open_table(CHUNKS).db()?;
            for (hash, loc) in &self.chunks {
                // Another writer may have committed the same chunk meanwhile; keep theirs.
                if chunks.get(hash.as_bytes()).db()?.is_none() {
                    chunks.insert(hash.as_bytes(), loc.to_bytes()).db()?;
                }
            }
            let mut packs = txn.open_table(PACKS).db()?;
            for (&id, &len) in &self.pack_lens {
                let old = packs.get(id).db()?.map_or(0, |v| v.value());
                if len > old {
                    packs.insert(id, len).db()?;
                }
            }
        }
        let info = match image {
            Some((manifest, pin)) => {
                let info = record_image(&txn, manifest, pin)?;
                refresh_completeness(&txn, true)?;
                Some(info)
            }
            None => None,
        };
        txn.commit().db()?;
        Ok(info)
    }
}

impl Drop for SealedBatch {
    fn drop(&mut self) {
        if let Some(flush) = self.flush.take() {
            let _ = self.shared.reap(flush);
        }
    }
}

impl ChunkWriter {
    pub(super) fn new(store: Store, guard: u64) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                guard,
                owned: Mutex::new(Vec::new()),
                failed: OnceLock::new(),
            }),
            pack: None,
            sealed: Vec::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
            handed_over: HashSet::new(),
            pack_lens: BTreeMap::new(),
            dir_dirty: false,
            flush: None,
        }
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Verifies `bytes` against `hash` and stores them unless already present; returns whether
    /// the chunk was new. On a mismatch nothing is stored.
    pub fn put_chunk(&mut self, hash: ChunkHash, bytes: &[u8]) -> Result<bool, PutError> {
        let chunk = VerifiedChunk::verify(hash, bytes)?;
        Ok(self.put(&chunk)?)
    }

    /// Stores a chunk verified earlier (possibly on another thread) unless already present;
    /// returns whether the chunk was new.
    pub fn put<B: AsRef<[u8]>>(&mut self, chunk: &VerifiedChunk<B>) -> Result<bool, StoreError> {
        self.put_verified(chunk.hash, chunk.bytes.as_ref())
    }

    /// Bytes appended since the last commit or seal (what a crash now would lose).
    pub fn uncommitted_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Stores bytes whose hash the caller computed itself from these very bytes (the chunker).
    pub(crate) fn put_verified(
        &mut self,
        hash: ChunkHash,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        // Protect before looking: gc either ran before this (and we will see the chunk missing
        // and write it) or runs after and keeps it.
        self.protect(hash);
        if self.pending.contains_key(&hash)
            || self.handed_over.contains(&hash)
            || self.store().lookup(&hash)?.is_some()
        {
            return Ok(false);
        }
        let loc = self.append(bytes)?;
        self.pending.insert(hash, loc);
        self.pending_bytes += u64::from(loc.len);
        Ok(true)
    }

    /// Keeps `hash` away from gc for the life of this writer.
    pub(crate) fn protect(&self, hash: ChunkHash) {
        if let Some(set) = self
            .store()
            .registry()
            .protected
            .get_mut(&self.shared.guard)
        {
            set.insert(hash);
        }
    }

    pub(super) fn append(&mut self, bytes: &[u8]) -> Result<Loc, StoreError> {
        let len = bytes.len() as u64;
        if let Some(full) = self.pack.take_if(|p| p.len + len > PACK_TARGET_LEN) {
            self.sealed.push(full);
        }
        let pack = match &mut self.pack {
            Some(p) => p,
            None => {
                let store = &self.shared.store;
                let id = store
                    .inner
                    .next_pack
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Registered before the file exists, so gc's sweep of unrecorded pack files
                // never sees it as an orphan.
                store.registry().active_packs.insert(id);
                self.shared
                    .owned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(id);
                let path = store.pack_path(id);
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err("creating", &path))?;
                self.dir_dirty = true;
                self.pack.insert(OpenPack {
                    id,
                    file,
                    len: 0,
                    dirty: false,
                    flush_requested: 0,
                })
            }
        };
        let loc = Loc {
            pack: pack.id,
            offset: pack.len,
            len: bytes.len() as u32,
        };
        pack.file
            .write_all(bytes)
            .map_err(io_err("writing", &self.shared.store.pack_path(pack.id)))?;
        pack.len += len;
        pack.dirty = true;
        self.pack_lens.insert(pack.id, pack.len);
        if pack.len - pack.flush_requested >= FLUSH_EVERY {
            self.start_flush()?;
        }
        Ok(loc)
    }

    /// Starts a background flush of the open pack unless one is still running.
    fn start_flush(&mut self) -> Result<(), StoreError> {
        if self.flush.as_ref().is_some_and(|f| !f.thread.is_finished()) {
            return Ok(());
        }
        if let Some(done) = self.flush.take() {
            self.shared.reap(done)?;
        }
        let Some(pack) = self.pack.as_mut() else {
            return Ok(());
        };
        // Without a second handle or a thread the flush simply happens at commit.
        let Ok(file) = pack.file.try_clone() else {
            return Ok(());
        };
        pack.flush_requested = pack.len;
        let id = pack.id;
        let spawned = std::thread::Builder::new()
            .name("pack-flush".into())
            .spawn(move || file.sync_data());
        if let Ok(thread) = spawned {
            self.flush = Some(Flush { pack: id, thread });
        }
        Ok(())
    }

    /// Takes every chunk appended since the last commit or seal into a batch to commit,
    /// possibly on another thread while this writer keeps appending.
    pub fn seal(&mut self) -> Result<SealedBatch, StoreError> {
        self.shared.check()?;
        let mut files = Vec::new();
        for p in self.sealed.drain(..) {
            if p.dirty {
                files.push((p.id, p.file));
            }
        }
        if let Some(p) = self.pack.as_mut().filter(|p| p.dirty) {
            let path = self.shared.store.pack_path(p.id);
            files.push((p.id, p.file.try_clone().map_err(io_err("opening", &path))?));
            p.dirty = false;
        }
        let chunks: Vec<(ChunkHash, Loc)> = self.pending.drain().collect();
        self.handed_over.extend(chunks.iter().map(|(h, _)| *h));
        Ok(SealedBatch {
            shared: self.shared.clone(),
            chunks,
            bytes: std::mem::take(&mut self.pending_bytes),
            pack_lens: std::mem::take(&mut self.pack_lens),
            files,
            sync_dir: std::mem::take(&mut self.dir_dirty),
            flush: self.flush.take(),
        })
    }

    /// Makes every chunk written so far durable and visible: fsync of the pack data (and of the
    /// packs directory if a pack was created), then one redb transaction indexing them.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.seal()?.commit()
    }

    /// Commits, and in the same transaction records `manifest` as an image (complete if every
    /// chunk is present), pinning it if `pin`. Images that were incomplete are re-checked.
    pub fn commit_image(
        &mut self,
        manifest: &Manifest,
        pin: bool,
    ) -> Result<ImageInfo, StoreError> {
        self.seal()?
            .commit_inner(Some((manifest, pin)))?
            .ok_or_else(|| StoreError::CorruptRecord {
                what: "image".into(),
                detail: "not recorded".into(),
            })
    }

    /// Fsyncs written pack data and the packs directory; returns the pack lengths written
    /// since the last call, which the caller records in its own transaction (gc's pack rewrite).
    pub(super) fn sync(&mut self) -> Result<BTreeMap<u64, u64>, StoreError> {
        if let Some(flush) = self.flush.take() {
            self.shared.reap(flush)?;
        }
        self.shared.check()?;
        for p in self.sealed.iter_mut().chain(self.pack.as_mut()) {
            if p.dirty {
                self.shared.sync(p.id, &p.file)?;
                p.dirty = false;
            }
        }
        if self.dir_dirty {
            let dir = self.shared.store.packs_dir();
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing", &dir))?;
            self.dir_dirty = false;
        }
        self.sealed.clear();
        Ok(std::mem::take(&mut self.pack_lens))
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        // The flushing thread holds its own handle; waiting keeps it from outliving the writer.
        if let Some(flush) = self.flush.take() {
            let _ = self.shared.reap(flush);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seed: u8, len: usize) -> (ChunkHash, Vec<u8>) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        (ChunkHash::of(&bytes), bytes)
    }

    #[test]
    fn verified_chunk_checks_hash_and_length() {
        let (h, b) = chunk(1, 100);
        assert!(VerifiedChunk::verify(h, b.clone()).is_ok());
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert!(matches!(
            VerifiedChunk::verify(h, bad),
            Err(PutError::HashMismatch { .. })
        ));
        assert!(matches!(
            VerifiedChunk::verify(h, Vec::new()),
            Err(PutError::BadLength(0))
        ));
    }

    /// Batches sealed in one order and committed in the other must not shrink a pack's
    /// recorded length: reopening truncates packs to it, which would cut off the later batch.
    #[test]
    fn sealed_batches_commit_in_any_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_bytes) = chunk(1, 5000);
        let (b, b_bytes) = chunk(2, 7000);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut w = store.writer();
            assert!(
                w.put(&VerifiedChunk::verify(a, a_bytes.as_slice()).unwrap())
                    .unwrap()
            );
            assert_eq!(w.uncommitted_bytes(), 5000);
            let first = w.seal().unwrap();
            assert_eq!(w.uncommitted_bytes(), 0);
            // Sealed but not committed: written, so not new again, yet not visible.
            assert!(!w.put_chunk(a, &a_bytes).unwrap());
            assert!(!store.has_chunk(&a).unwrap());
            assert!(w.put_chunk(b, &b_bytes).unwrap());
            let second = w.seal().unwrap();
            assert_eq!((second.chunks(), second.bytes()), (1, 7000));
            second.commit().unwrap();
            assert!(store.has_chunk(&b).unwrap() && !store.has_chunk(&a).unwrap());
            first.commit().unwrap();
            assert!(store.has_chunk(&a).unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read_chunk(&a).unwrap(), Some(a_bytes));
        assert_eq!(store.read_chunk(&b).unwrap(), Some(b_bytes));
    }

    #[test]
    fn dropped_batch_leaves_nothing_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_bytes) = chunk(3, 3000);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut w = store.writer();
            w.put_chunk(a, &a_bytes).unwrap();
            drop(w.seal().unwrap());
            drop(w);
            assert!(!store.has_chunk(&a).unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.has_chunk(&a).unwrap());
        assert_eq!(store.stats().unwrap().pack_bytes, 0);
    }

    /// Enough data to start a background flush, which the commit must then join.
    #[test]
    fn background_flushes_then_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.writer();
        let mut hashes = Vec::new();
        for i in 0..(FLUSH_EVERY / 200_000 + 2) {
            let bytes: Vec<u8> = (0..200_000u32)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8)
                .collect();
            let h = ChunkHash::of(&bytes);
            w.put_chunk(h, &bytes).unwrap();
            hashes.push(h);
        }
        w.commit().unwrap();
        for h in &hashes {
            assert!(store.has_chunk(h).unwrap());
        }
        assert_eq!(
            store.read_chunks(&hashes).unwrap().iter().flatten().count(),
            hashes.len()
        );
    }
}
