//! Writing chunks: [`ChunkWriter`] appends verified chunks to its own pack file and makes them
//! durable with one fsync per commit, before the redb transaction that indexes them.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;

use redb::ReadableTable;
use vwnet_protocol::ids::ChunkHash;
use vwnet_protocol::limits::MAX_CHUNK_LEN;

use super::meta::{CHUNKS, DbResultExt, Loc, PACKS};
use super::{ImageInfo, Store, StoreError, io_err, record_image, refresh_completeness};
use crate::manifest::Manifest;

/// A pack is closed and a new one started once it reaches this size, so that gc can reclaim
/// space by rewriting packs of bounded size.
const PACK_TARGET_LEN: u64 = 256 * 1024 * 1024;

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

struct OpenPack {
    id: u64,
    file: File,
    len: u64,
    /// Bytes written since the last fsync.
    dirty: bool,
}

/// A write session and the gc guard for it.
///
/// Chunks put through a writer become visible (`has_chunk`, `missing`) at the next
/// [`commit`](ChunkWriter::commit) or [`commit_image`](ChunkWriter::commit_image). Until the
/// writer is dropped, gc keeps every chunk it wrote or found already present, and never touches
/// its pack files. Dropping without committing discards the uncommitted chunks.
pub struct ChunkWriter {
    store: Store,
    guard: u64,
    pack: Option<OpenPack>,
    /// Packs closed by this writer but not yet fsync'd / recorded.
    sealed: Vec<OpenPack>,
    /// Chunks written since the last commit.
    pending: HashMap<ChunkHash, Loc>,
    /// Pack lengths to record at the next commit.
    pack_lens: BTreeMap<u64, u64>,
    /// Whether the packs directory must be fsync'd (a pack file was created) before commit.
    dir_dirty: bool,
    /// Every pack this writer created; unregistered from gc's view when it is dropped.
    owned: Vec<u64>,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("guard", &self.guard)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ChunkWriter {
    pub(super) fn new(store: Store, guard: u64) -> Self {
        Self {
            store,
            guard,
            pack: None,
            sealed: Vec::new(),
            pending: HashMap::new(),
            pack_lens: BTreeMap::new(),
            dir_dirty: false,
            owned: Vec::new(),
        }
    }

    /// Verifies `bytes` against `hash` and stores them unless already present; returns whether
    /// the chunk was new. On a mismatch nothing is stored.
    pub fn put_chunk(&mut self, hash: ChunkHash, bytes: &[u8]) -> Result<bool, PutError> {
        if bytes.is_empty() || bytes.len() > MAX_CHUNK_LEN {
            return Err(PutError::BadLength(bytes.len()));
        }
        let actual = ChunkHash::of(bytes);
        if actual != hash {
            return Err(PutError::HashMismatch {
                claimed: hash,
                actual,
            });
        }
        Ok(self.put_verified(hash, bytes)?)
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
        if self.pending.contains_key(&hash) || self.store.lookup(&hash)?.is_some() {
            return Ok(false);
        }
        let loc = self.append(bytes)?;
        self.pending.insert(hash, loc);
        Ok(true)
    }

    /// Keeps `hash` away from gc for the life of this writer.
    pub(crate) fn protect(&self, hash: ChunkHash) {
        if let Some(set) = self.store.registry().protected.get_mut(&self.guard) {
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
                let id = self
                    .store
                    .inner
                    .next_pack
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Registered before the file exists, so gc's sweep of unrecorded pack files
                // never sees it as an orphan.
                self.store.registry().active_packs.insert(id);
                self.owned.push(id);
                let path = self.store.pack_path(id);
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
            .map_err(io_err("writing", &self.store.pack_path(pack.id)))?;
        pack.len += len;
        pack.dirty = true;
        self.pack_lens.insert(pack.id, pack.len);
        Ok(loc)
    }

    /// Makes every chunk written so far durable and visible: fsync of the pack data (and of the
    /// packs directory if a pack was created), then one redb transaction indexing them.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.commit_inner(None).map(|_| ())
    }

    /// Commits, and in the same transaction records `manifest` as an image (complete if every
    /// chunk is present), pinning it if `pin`. Images that were incomplete are re-checked.
    pub fn commit_image(
        &mut self,
        manifest: &Manifest,
        pin: bool,
    ) -> Result<ImageInfo, StoreError> {
        self.commit_inner(Some((manifest, pin)))?
            .ok_or_else(|| StoreError::CorruptRecord {
                what: "image".into(),
                detail: "not recorded".into(),
            })
    }

    /// Fsyncs written pack data and the packs directory; returns the pack lengths written
    /// since the last call, which the caller records in its own transaction (gc's pack rewrite).
    pub(super) fn sync(&mut self) -> Result<BTreeMap<u64, u64>, StoreError> {
        for p in self.sealed.iter_mut().chain(self.pack.as_mut()) {
            if p.dirty {
                let path = self.store.pack_path(p.id);
                p.file.sync_data().map_err(io_err("syncing", &path))?;
                p.dirty = false;
            }
        }
        if self.dir_dirty {
            let dir = self.store.packs_dir();
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing", &dir))?;
            self.dir_dirty = false;
        }
        self.sealed.clear();
        Ok(std::mem::take(&mut self.pack_lens))
    }

    fn commit_inner(
        &mut self,
        image: Option<(&Manifest, bool)>,
    ) -> Result<Option<ImageInfo>, StoreError> {
        if self.pending.is_empty() && image.is_none() {
            return Ok(None);
        }
        // On error the lengths are put back by the next write; the chunks stay pending.
        let pack_lens = self.sync()?;
        self.pack_lens.clone_from(&pack_lens);
        let txn = self.store.inner.db.begin_write().db()?;
        {
            let mut chunks = txn.open_table(CHUNKS).db()?;
            for (hash, loc) in &self.pending {
                // Another writer may have committed the same chunk meanwhile; keep theirs.
                if chunks.get(hash.as_bytes()).db()?.is_none() {
                    chunks.insert(hash.as_bytes(), loc.to_bytes()).db()?;
                }
            }
            let mut packs = txn.open_table(PACKS).db()?;
            for (&id, &len) in &self.pack_lens {
                packs.insert(id, len).db()?;
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
        self.pending.clear();
        self.pack_lens.clear();
        Ok(info)
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        // Uncommitted bytes stay as a dead tail (or an unrecorded pack) until the next open
        // truncates them or gc removes the orphan file; deleting here could race a commit whose
        // outcome is unknown after an error.
        let mut reg = self.store.registry();
        reg.protected.remove(&self.guard);
        for id in &self.owned {
            reg.active_packs.remove(id);
        }
    }
}
