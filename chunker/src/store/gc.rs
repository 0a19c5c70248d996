//! Garbage collection: drop index rows of chunks no pinned image references, then reclaim pack
//! space by deleting empty packs and rewriting mostly-dead ones.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::PoisonError;

use redb::{ReadableDatabase, ReadableTable};
use vwnet_protocol::ids::{ChunkHash, ImageId};

use super::meta::{CHUNKS, DbResultExt, IMAGES, ImageRecord, Loc, MANIFESTS, PACKS};
use super::{PackFiles, Store, StoreError, corrupt, io_err, refresh_completeness};
use crate::manifest::Manifest;

/// A pack whose live bytes are below this fraction of its length is rewritten.
const REWRITE_BELOW_LIVE_FRACTION: f64 = 0.5;

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Chunks removed from the index.
    pub deleted_chunks: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Chunks kept (referenced by a pinned image or an in-progress write).
    pub kept_chunks: u64,
    /// Pack files deleted because nothing in them was live.
    pub packs_deleted: u64,
    /// Pack files rewritten to drop dead bytes.
    pub packs_rewritten: u64,
    /// Pack bytes freed on disk.
    pub reclaimed_bytes: u64,
    /// Unpinned images that lost chunks and are now incomplete.
    pub now_incomplete: Vec<ImageId>,
}

impl Store {
    /// Deletes every chunk that no pinned image references and that no live [`ChunkWriter`]
    /// (ingest or pull) has written or relies on, then reclaims the pack space.
    ///
    /// [`ChunkWriter`]: super::ChunkWriter
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        self.sweep_index(&mut report)?;
        self.compact_packs(&mut report)?;
        Ok(report)
    }

    fn sweep_index(&self, report: &mut GcReport) -> Result<(), StoreError> {
        // The registry stays locked until the deletions are committed: a writer that protects a
        // chunk after we collected the roots blocks until then, and then sees it missing.
        let reg = self.registry();
        let txn = self.inner.db.begin_write().db()?;
        let mut live: HashSet<ChunkHash> = HashSet::new();
        {
            let images = txn.open_table(IMAGES).db()?;
            let manifests = txn.open_table(MANIFESTS).db()?;
            for row in images.iter().db()? {
                let (k, v) = row.db()?;
                let id = ImageId::from_bytes(k.value());
                let rec = ImageRecord::from_bytes(v.value())
                    .map_err(|e| corrupt(format!("image {id}"), e))?;
                if !rec.pinned {
                    continue;
                }
                let m = manifests
                    .get(id.as_bytes())
                    .db()?
                    .ok_or_else(|| corrupt(format!("image {id}"), "manifest row missing"))?;
                let m = Manifest::from_bytes(m.value())
                    .map_err(|e| corrupt(format!("manifest {id}"), e))?;
                live.extend(m.chunks().iter().filter(|c| !c.zero).map(|c| c.hash));
            }
        }
        for set in reg.protected.values() {
            live.extend(set.iter().copied());
        }
        {
            let mut chunks = txn.open_table(CHUNKS).db()?;
            let mut dead = Vec::new();
            for row in chunks.iter().db()? {
                let (k, v) = row.db()?;
                if live.contains(&ChunkHash::from_bytes(k.value())) {
                    report.kept_chunks += 1;
                } else {
                    dead.push((k.value(), Loc::from_bytes(v.value()).len));
                }
            }
            for (k, len) in dead {
                chunks.remove(&k).db()?;
                report.deleted_chunks += 1;
                report.deleted_bytes += u64::from(len);
            }
        }
        report.now_incomplete = refresh_completeness(&txn, false)?
            .into_iter()
            .filter(|(_, complete)| !complete)
            .map(|(id, _)| id)
            .collect();
        txn.commit().db()?;

        // Pack files with no committed row that no live writer owns are leftovers of writers
        // that were dropped without committing.
        let recorded: HashSet<u64> = {
            let rtxn = self.inner.db.begin_read().db()?;
            let packs = rtxn.open_table(PACKS).db()?;
            let mut s = HashSet::new();
            for row in packs.iter().db()? {
                s.insert(row.db()?.0.value());
            }
            s
        };
        let dir = self.packs_dir();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            if !recorded.contains(&id) && !reg.active_packs.contains(&id) {
                let len = entry.metadata().map_or(0, |m| m.len());
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                report.reclaimed_bytes += len;
            }
        }
        drop(reg);
        Ok(())
    }

    fn compact_packs(&self, report: &mut GcReport) -> Result<(), StoreError> {
        // Read the active packs before the snapshot: a pack that is not active now never gets
        // another byte, so the snapshot below describes it completely.
        let active = self.registry().active_packs.clone();
        let (lens, mut by_pack) = {
            let txn = self.inner.db.begin_read().db()?;
            let mut lens = HashMap::new();
            for row in txn.open_table(PACKS).db()?.iter().db()? {
                let (k, v) = row.db()?;
                lens.insert(k.value(), v.value());
            }
            let mut by_pack: HashMap<u64, Vec<(ChunkHash, Loc)>> = HashMap::new();
            for row in txn.open_table(CHUNKS).db()?.iter().db()? {
                let (k, v) = row.db()?;
                let loc = Loc::from_bytes(v.value());
                by_pack
                    .entry(loc.pack)
                    .or_default()
                    .push((ChunkHash::from_bytes(k.value()), loc));
            }
            (lens, by_pack)
        };
        let mut ids: Vec<u64> = lens
            .keys()
            .copied()
            .filter(|id| !active.contains(id))
            .collect();
        ids.sort_unstable();
        for id in ids {
            let len = lens.get(&id).copied().unwrap_or(0);
            let rows = by_pack.remove(&id).unwrap_or_default();
            let live: u64 = rows.iter().map(|(_, l)| u64::from(l.len)).sum();
            if rows.is_empty() {
                let _exclusive = self
                    .inner
                    .pack_lock
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                let txn = self.inner.db.begin_write().db()?;
                {
                    let mut packs = txn.open_table(PACKS).db()?;
                    if packs.get(&id).db()?.map(|v| v.value()) != Some(len) {
                        // Changed since the snapshot (cannot happen for an inactive pack, but a
                        // stale decision must never delete data): leave it for the next gc.
                        continue;
                    }
                    packs.remove(&id).db()?;
                }
                txn.commit().db()?;
                let path = self.pack_path(id);
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                report.packs_deleted += 1;
                report.reclaimed_bytes += len;
            } else if (live as f64) < (len as f64) * REWRITE_BELOW_LIVE_FRACTION
                && self.rewrite_pack(id, len, &rows)?
            {
                report.packs_rewritten += 1;
                report.reclaimed_bytes += len.saturating_sub(live);
            }
        }
        Ok(())
    }

    /// Copies the live chunks of pack `id` into a fresh pack, fsyncs it, repoints the rows in one
    /// transaction and only then deletes the old pack. A chunk that fails verification on the
    /// way is quarantined instead of copied.
    /// Returns false (and changes nothing) if the pack changed since `len` was read.
    fn rewrite_pack(
        &self,
        id: u64,
        len: u64,
        rows: &[(ChunkHash, Loc)],
    ) -> Result<bool, StoreError> {
        let mut writer = self.writer();
        let mut files = PackFiles::default();
        let mut buf = Vec::new();
        let mut moved = Vec::with_capacity(rows.len());
        let mut bad = Vec::new();
        for &(hash, loc) in rows {
            match self.read_loc(loc, &mut buf, &mut files) {
                Ok(()) if ChunkHash::of(&buf) == hash => {
                    let new = writer.append(&buf)?;
                    moved.push((hash, loc, new));
                }
                Ok(()) => bad.push((
                    hash,
                    loc,
                    Some(buf.clone()),
                    "bytes do not match the hash".to_string(),
                )),
                Err(e) => bad.push((hash, loc, None, format!("unreadable: {e}"))),
            }
        }
        if !bad.is_empty() {
            self.quarantine(&bad)?;
        }
        let new_lens = writer.sync()?;
        drop(files);
        let _exclusive = self
            .inner
            .pack_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let txn = self.inner.db.begin_write().db()?;
        {
            let mut packs = txn.open_table(PACKS).db()?;
            if packs.get(&id).db()?.map(|v| v.value()) != Some(len) {
                // The copy is an unrecorded pack: the writer's drop leaves it to gc and open.
                return Ok(false);
            }
            for (&pid, &plen) in &new_lens {
                packs.insert(pid, plen).db()?;
            }
            packs.remove(&id).db()?;
        }
        {
            let mut chunks = txn.open_table(CHUNKS).db()?;
            for (hash, old, new) in &moved {
                let current = chunks
                    .get(hash.as_bytes())
                    .db()?
                    .map(|v| Loc::from_bytes(v.value()));
                if current == Some(*old) {
                    chunks.insert(hash.as_bytes(), new.to_bytes()).db()?;
                }
            }
        }
        txn.commit().db()?;
        let path = self.pack_path(id);
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
        Ok(true)
    }
}
