//! Verification and quarantine: re-hash stored chunks, move corrupt ones aside, and mark the
//! images that use them incomplete so that a later pull fetches them again.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use redb::{ReadableDatabase, ReadableTable};
use vwnet_protocol::ids::{ChunkHash, ImageId};
use vwnet_protocol::time::Timestamp;

use super::meta::{
    CHUNKS, DbResultExt, IMAGES, ImageRecord, Loc, MANIFESTS, QUARANTINE, QuarantineRecord,
};
use super::{PackFiles, Store, StoreError, corrupt, io_err, refresh_completeness};
use crate::manifest::Manifest;

/// Why verification could not run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A chunk that failed verification and was quarantined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CorruptChunk {
    /// The chunk's name.
    pub hash: ChunkHash,
    /// What was wrong with it.
    pub reason: String,
    /// Images that reference it (now incomplete).
    pub images: Vec<ImageId>,
    /// Where its bytes were moved, if they could be read.
    pub quarantined_as: Option<PathBuf>,
}

/// Completeness of one image after verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageStatus {
    /// The image.
    pub id: ImageId,
    /// Whether every chunk is present.
    pub complete: bool,
    /// Number of distinct chunks missing.
    pub missing_chunks: u64,
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Chunks re-hashed.
    pub checked_chunks: u64,
    /// Their bytes.
    pub checked_bytes: u64,
    /// Chunks that failed and were quarantined.
    pub corrupt: Vec<CorruptChunk>,
    /// Status of the verified images.
    pub images: Vec<ImageStatus>,
}

impl VerifyReport {
    /// No corrupt chunk was found and every verified image is complete.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.images.iter().all(|i| i.complete)
    }
}

/// A chunk to quarantine: name, where it was, its bytes if readable, and why.
pub(crate) type Suspect = (ChunkHash, Loc, Option<Vec<u8>>, String);

impl Store {
    /// Re-hashes every stored chunk (or only those of `image`), quarantines the corrupt ones and
    /// reports them with the images that use them. `progress(done, total)` counts bytes.
    pub fn verify(
        &self,
        image: Option<&ImageId>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifyReport, VerifyError> {
        let mut report = VerifyReport::default();
        // Collect the rows to check, sorted by position for sequential reads.
        let mut rows: Vec<(ChunkHash, Loc)> = {
            let txn = self.inner.db.begin_read().db().map_err(StoreError::from)?;
            let chunks = txn.open_table(CHUNKS).db().map_err(StoreError::from)?;
            match image {
                Some(id) => {
                    let manifest = self.manifest(id)?;
                    let mut seen = HashSet::new();
                    let mut rows = Vec::new();
                    for c in manifest.chunks().iter().filter(|c| !c.zero) {
                        if !seen.insert(c.hash) {
                            continue;
                        }
                        if let Some(v) = chunks
                            .get(c.hash.as_bytes())
                            .db()
                            .map_err(StoreError::from)?
                        {
                            rows.push((c.hash, Loc::from_bytes(v.value())));
                        }
                    }
                    rows
                }
                None => {
                    let mut rows = Vec::new();
                    for row in chunks.iter().db().map_err(StoreError::from)? {
                        let (k, v) = row.db().map_err(StoreError::from)?;
                        rows.push((ChunkHash::from_bytes(k.value()), Loc::from_bytes(v.value())));
                    }
                    rows
                }
            }
        };
        rows.sort_by_key(|(_, l)| (l.pack, l.offset));
        let total: u64 = rows.iter().map(|(_, l)| u64::from(l.len)).sum();
        let mut files = PackFiles::default();
        let mut buf = Vec::new();
        let mut suspects = Vec::new();
        for (hash, loc) in rows {
            let outcome = {
                let _shared = self
                    .inner
                    .pack_lock
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // gc may have moved the chunk since the snapshot: follow the current row.
                self.lookup(&hash)?
                    .map(|cur| (cur, self.read_loc(cur, &mut buf, &mut files)))
            };
            let Some((cur, read)) = outcome else { continue };
            match read {
                Ok(()) if ChunkHash::of(&buf) == hash => {}
                Ok(()) => suspects.push((
                    hash,
                    cur,
                    Some(buf.clone()),
                    "bytes do not match the hash".to_string(),
                )),
                Err(e) => suspects.push((hash, cur, None, format!("unreadable: {e}"))),
            }
            report.checked_chunks += 1;
            report.checked_bytes += u64::from(loc.len);
            progress(report.checked_bytes, total);
        }
        report.corrupt = self.quarantine(&suspects)?;
        report.images = self.image_statuses(image)?;
        Ok(report)
    }

    fn image_statuses(&self, only: Option<&ImageId>) -> Result<Vec<ImageStatus>, StoreError> {
        let ids: Vec<ImageId> = match only {
            Some(id) => vec![*id],
            None => self.images()?.into_iter().map(|i| i.id).collect(),
        };
        let mut out = Vec::new();
        for id in ids {
            let manifest = self.manifest(&id)?;
            let missing = self.missing(&manifest)?.len() as u64;
            out.push(ImageStatus {
                id,
                complete: missing == 0,
                missing_chunks: missing,
            });
        }
        Ok(out)
    }

    /// Moves suspect chunks' bytes to `quarantine/`, removes their index rows (if they still
    /// point where the bytes were read), records why, and marks images using them incomplete.
    pub(crate) fn quarantine(&self, suspects: &[Suspect]) -> Result<Vec<CorruptChunk>, StoreError> {
        if suspects.is_empty() {
            return Ok(Vec::new());
        }
        let now = Timestamp::now().as_unix_secs();
        let qdir = self.inner.dir.join("quarantine");
        let mut files: HashMap<ChunkHash, PathBuf> = HashMap::new();
        for (hash, _, bytes, _) in suspects {
            if let Some(bytes) = bytes {
                let path = qdir.join(format!("{hash}.{now}.bad"));
                let tmp = qdir.join(format!("{hash}.{now}.tmp"));
                fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
                fs::rename(&tmp, &path).map_err(io_err("renaming", &tmp))?;
                files.insert(*hash, path);
            }
        }
        let txn = self.inner.db.begin_write().db()?;
        let mut removed: HashSet<ChunkHash> = HashSet::new();
        {
            let mut chunks = txn.open_table(CHUNKS).db()?;
            let mut quarantine = txn.open_table(QUARANTINE).db()?;
            for (hash, loc, _, reason) in suspects {
                let current = chunks
                    .get(hash.as_bytes())
                    .db()?
                    .map(|v| Loc::from_bytes(v.value()));
                if current == Some(*loc) {
                    chunks.remove(hash.as_bytes()).db()?;
                    removed.insert(*hash);
                    let rec = QuarantineRecord {
                        when_unix: now,
                        file: files.get(hash).map(|p| p.display().to_string()),
                        reason: reason.clone(),
                    };
                    quarantine
                        .insert(hash.as_bytes(), rec.to_bytes().as_slice())
                        .db()?;
                }
            }
        }
        // Which images use each removed chunk.
        let mut users: HashMap<ChunkHash, Vec<ImageId>> = HashMap::new();
        {
            let images = txn.open_table(IMAGES).db()?;
            let manifests = txn.open_table(MANIFESTS).db()?;
            for row in images.iter().db()? {
                let (k, v) = row.db()?;
                let id = ImageId::from_bytes(k.value());
                ImageRecord::from_bytes(v.value())
                    .map_err(|e| corrupt(format!("image {id}"), e))?;
                let Some(m) = manifests.get(id.as_bytes()).db()? else {
                    continue;
                };
                let m = Manifest::from_bytes(m.value())
                    .map_err(|e| corrupt(format!("manifest {id}"), e))?;
                let mut hit = HashSet::new();
                for c in m.chunks() {
                    if removed.contains(&c.hash) && hit.insert(c.hash) {
                        users.entry(c.hash).or_default().push(id);
                    }
                }
            }
        }
        refresh_completeness(&txn, false)?;
        txn.commit().db()?;
        Ok(suspects
            .iter()
            .filter(|(h, ..)| removed.contains(h))
            .map(|(hash, _, _, reason)| CorruptChunk {
                hash: *hash,
                reason: reason.clone(),
                images: users.remove(hash).unwrap_or_default(),
                quarantined_as: files.get(hash).cloned(),
            })
            .collect())
    }
}
