//! Workspace lifetime on a node: expiry, durable pins, and garbage collection of the chunks of
//! expired workspaces.
//!
//! A workspace whose lifeCycle has passed stays in the catalog (so that `ls` can say it expired
//! and an older version can never be replayed), but it cannot be deployed
//! ([`crate::policy::ensure_deployable`]) and its images stop being part of the node's live set:
//!
//! - images named by an unexpired workspace, or by a workspace pinned with `vwnet pin`, are
//!   kept (pinned in the chunk store, whatever their pin was);
//! - images named only by expired, unpinned workspaces are unpinned, so the store's gc deletes
//!   the chunks no kept image shares (a clone keeps its source's shared chunks alive);
//! - images no workspace names (ingested by hand, older versions) keep their store pin.
//!
//! A renewed workspace (`vwnet extend`) is live again; its images are pinned by the next gc,
//! and chunks already collected come back with `vwnet pull`.
//!
//! Pins live in `<home>/pins`, one workspace id per line, replaced atomically (write, fsync,
//! rename), because they must survive restarts. The plan ([`plan`]) is pure; [`collect`] runs it
//! against a store and is shared by the node (`Request::Gc`) and by `vwnet store gc` when no node
//! is running (a running node holds the store, and only it knows the live set).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use vwnet_chunker::Store;
use vwnet_chunker::store::ImageInfo;
use vwnet_protocol::description::Description;
use vwnet_protocol::ids::{ImageId, WorkspaceId};
use vwnet_protocol::time::Timestamp;

use crate::catalog::{Catalog, CatalogError};
use crate::publish::images_of;

/// File name of the workspace pins inside the home directory.
pub const PINS_FILE: &str = "pins";

/// Why a lifetime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifetimeError {
    /// The pins file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the pins file is not a workspace id.
    #[error("{path}: line {line}: not a workspace id")]
    BadPin {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The chunk store failed.
    #[error(transparent)]
    Store(#[from] vwnet_chunker::StoreError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The durable set of pinned workspaces.
#[derive(Debug)]
pub struct Pins {
    path: PathBuf,
    set: Mutex<BTreeSet<WorkspaceId>>,
}

impl Pins {
    /// Loads `<home>/pins` (an absent file is an empty set). Blocking.
    pub fn load(home: &Path) -> Result<Self, LifetimeError> {
        let path = home.join(PINS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(LifetimeError::Io { path, source }),
        };
        let mut set = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let id = line.parse().map_err(|_| LifetimeError::BadPin {
                path: path.clone(),
                line: i + 1,
            })?;
            set.insert(id);
        }
        Ok(Self {
            path,
            set: Mutex::new(set),
        })
    }

    /// Whether `workspace` is pinned.
    pub fn contains(&self, workspace: &WorkspaceId) -> bool {
        self.guard().contains(workspace)
    }

    /// Every pinned workspace.
    pub fn all(&self) -> BTreeSet<WorkspaceId> {
        self.guard().clone()
    }

    /// Pins or unpins `workspace`, durably before returning; returns whether anything changed.
    /// Blocking (fsync).
    pub fn set(&self, workspace: WorkspaceId, pinned: bool) -> Result<bool, LifetimeError> {
        // Held across the write so that two updates cannot interleave their files.
        let mut set = self.guard();
        let mut next = set.clone();
        let changed = if pinned {
            next.insert(workspace)
        } else {
            next.remove(&workspace)
        };
        if changed {
            self.write(&next)?;
            *set = next;
        }
        Ok(changed)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, BTreeSet<WorkspaceId>> {
        // A plain set: a panicked writer left either the old or the new one.
        self.set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, set: &BTreeSet<WorkspaceId>) -> Result<(), LifetimeError> {
        let io = |source| LifetimeError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for id in set {
            text.push_str(&id.to_string());
            text.push('\n');
        }
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            // The rename is durable only once the directory is.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

/// The node's lifetime service: its pins, and gc of its store with the catalog's live set.
///
/// It holds its own handle on the chunk store rather than going through the store actor:
/// gc is one long blocking call that must see the whole store at once, and the store
/// coordinates it with in-flight writers itself (a writer's chunks are gc roots).
#[derive(Debug)]
pub struct Lifetime {
    pins: Pins,
    store: Store,
}

impl Lifetime {
    /// Loads the pins of `home` for the node that owns `store`. Blocking.
    pub fn open(home: &Path, store: Store) -> Result<Self, LifetimeError> {
        Ok(Self {
            pins: Pins::load(home)?,
            store,
        })
    }

    /// The pinned workspaces.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Pins or unpins `workspace` durably, off the runtime's workers.
    pub async fn set_pin(
        self: &std::sync::Arc<Self>,
        workspace: WorkspaceId,
        pinned: bool,
    ) -> Result<bool, LifetimeError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.pins.set(workspace, pinned))
            .await
            .unwrap_or_else(|e| {
                Err(LifetimeError::Io {
                    path: PINS_FILE.into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// Runs [`collect`] off the runtime's workers.
    pub async fn gc(
        self: &std::sync::Arc<Self>,
        catalog: Catalog,
        now: Timestamp,
    ) -> Result<GcSummary, LifetimeError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || collect(&this.store, &catalog, &this.pins.all(), now))
            .await
            .unwrap_or_else(|e| {
                Err(LifetimeError::Io {
                    path: "gc".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }
}

/// What a gc decides about the store's image pins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Images to pin (named by a live or pinned workspace, not pinned yet).
    pub pin: BTreeSet<ImageId>,
    /// Images to unpin (named only by expired, unpinned workspaces, pinned now).
    pub unpin: BTreeSet<ImageId>,
    /// The expired, unpinned workspaces whose images are released.
    pub expired: BTreeSet<WorkspaceId>,
}

/// Decides pins from the catalog's descriptions, the workspace pins and the store's images.
pub fn plan(
    descriptions: &[Description],
    pins: &BTreeSet<WorkspaceId>,
    images: &[ImageInfo],
    now: Timestamp,
) -> GcPlan {
    let mut keep = BTreeSet::new();
    let mut released = BTreeSet::new();
    let mut expired = BTreeSet::new();
    for d in descriptions {
        let ids = images_of(d).into_iter().map(|i| i.id);
        if d.is_expired(now) && !pins.contains(&d.id) {
            expired.insert(d.id);
            released.extend(ids);
        } else {
            keep.extend(ids);
        }
    }
    let mut plan = GcPlan {
        expired,
        ..GcPlan::default()
    };
    for image in images {
        if keep.contains(&image.id) {
            if !image.pinned {
                plan.pin.insert(image.id);
            }
        } else if released.contains(&image.id) && image.pinned {
            plan.unpin.insert(image.id);
        }
    }
    plan
}

/// What a node-aware gc did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcSummary {
    /// Expired, unpinned workspaces whose images were released.
    pub expired_workspaces: Vec<WorkspaceId>,
    /// Images unpinned because only expired workspaces named them.
    pub released_images: Vec<ImageId>,
    /// Images pinned again because a live or pinned workspace names them.
    pub repinned_images: Vec<ImageId>,
    /// Chunks deleted.
    pub deleted_chunks: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Chunks kept.
    pub kept_chunks: u64,
    /// Pack bytes freed on disk.
    pub reclaimed_bytes: u64,
}

/// Applies [`plan`] to `store` and runs its gc. Blocking.
pub fn collect(
    store: &Store,
    catalog: &Catalog,
    pins: &BTreeSet<WorkspaceId>,
    now: Timestamp,
) -> Result<GcSummary, LifetimeError> {
    let descriptions: Vec<Description> = catalog
        .list()?
        .into_iter()
        .map(|e| e.description.record().clone())
        .collect();
    let images = store.images()?;
    let plan = plan(&descriptions, pins, &images, now);
    for id in &plan.pin {
        store.set_pinned(id, true)?;
    }
    for id in &plan.unpin {
        store.set_pinned(id, false)?;
    }
    let report = store.gc()?;
    Ok(GcSummary {
        expired_workspaces: plan.expired.into_iter().collect(),
        released_images: plan.unpin.into_iter().collect(),
        repinned_images: plan.pin.into_iter().collect(),
        deleted_chunks: report.deleted_chunks,
        deleted_bytes: report.deleted_bytes,
        kept_chunks: report.kept_chunks,
        reclaimed_bytes: report.reclaimed_bytes,
    })
}

#[cfg(test)]
mod tests {
    use vwnet_protocol::description::{ImageRef, template_for};
    use vwnet_protocol::ids::PeerIdentity;
    use vwnet_protocol::time::Span;

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

    fn ws(n: u8, image: u8, life: Option<u64>) -> Description {
        let id = WorkspaceId::from_bytes([n; WorkspaceId::LEN]);
        let created = Timestamp::from_unix_secs(NOW.as_unix_secs() - 1000);
        let mut d = Description::from_toml_str(&template_for(
            id,
            PeerIdentity::from_bytes([1; 32]),
            created,
        ))
        .unwrap();
        d.life_cycle = life.map(Span::from_secs);
        d.image.disk = Some(ImageRef {
            id: ImageId::from_bytes([image; 32]),
            size: 1,
        });
        d
    }

    fn img(n: u8, pinned: bool) -> ImageInfo {
        ImageInfo {
            id: ImageId::from_bytes([n; 32]),
            size: 1,
            chunks: 1,
            complete: true,
            pinned,
            added_unix: 0,
        }
    }

    #[test]
    fn expired_unpinned_images_are_released_unless_a_live_workspace_shares_them() {
        let live = ws(1, 10, None);
        let expired = ws(2, 20, Some(10));
        let expired_shared = ws(3, 10, Some(10));
        let expired_pinned = ws(4, 40, Some(10));
        let descs = [live, expired, expired_shared, expired_pinned];
        let pins = [WorkspaceId::from_bytes([4; WorkspaceId::LEN])].into();
        let images = [img(10, true), img(20, true), img(40, false), img(99, true)];
        let p = plan(&descs, &pins, &images, NOW);
        assert_eq!(p.unpin, [ImageId::from_bytes([20; 32])].into());
        // The pinned (expired) workspace's image is pinned again; 99 (no workspace) untouched.
        assert_eq!(p.pin, [ImageId::from_bytes([40; 32])].into());
        assert_eq!(
            p.expired,
            [
                WorkspaceId::from_bytes([2; WorkspaceId::LEN]),
                WorkspaceId::from_bytes([3; WorkspaceId::LEN])
            ]
            .into()
        );
        // Before expiry nothing is released.
        let early = Timestamp::from_unix_secs(NOW.as_unix_secs() - 995);
        assert!(plan(&descs, &pins, &images, early).unpin.is_empty());
    }

    #[test]
    fn pins_are_durable_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = WorkspaceId::from_bytes([7; WorkspaceId::LEN]);
        let pins = Pins::load(dir.path()).unwrap();
        assert!(pins.set(a, true).unwrap());
        assert!(!pins.set(a, true).unwrap());
        let again = Pins::load(dir.path()).unwrap();
        assert!(again.contains(&a));
        assert!(again.set(a, false).unwrap());
        assert!(!Pins::load(dir.path()).unwrap().contains(&a));
        std::fs::write(dir.path().join(PINS_FILE), "zz\n").unwrap();
        assert!(matches!(
            Pins::load(dir.path()),
            Err(LifetimeError::BadPin { line: 1, .. })
        ));
    }

    #[test]
    fn collect_deletes_only_chunks_of_expired_unpinned_workspaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let catalog = Catalog::open(&dir.path().join("node.redb")).unwrap();
        let owner = vwnet_protocol::identity::Identity::from_secret_bytes(&[3; 32]);
        let mut ids = Vec::new();
        for (seed, life) in [(1u8, 100u64), (2, 100_000)] {
            let file = dir.path().join(format!("img{seed}"));
            let data: Vec<u8> = (0..300_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
                .collect();
            std::fs::write(&file, data).unwrap();
            let report = store
                .ingest_file(
                    &file,
                    &vwnet_chunker::IngestOptions::default(),
                    &mut |_, _| {},
                )
                .unwrap();
            let id = WorkspaceId::from_bytes([seed; WorkspaceId::LEN]);
            let mut d = Description::from_toml_str(&template_for(id, owner.public(), NOW)).unwrap();
            d.life_cycle = Some(Span::from_secs(life));
            d.image.disk = Some(ImageRef {
                id: report.image,
                size: report.size,
            });
            let v = vwnet_protocol::signed::SignedDescription::sign(&owner, &d)
                .unwrap()
                .verify(None, NOW)
                .unwrap();
            catalog
                .offer(&v, crate::catalog::Origin::Local, NOW)
                .unwrap();
            ids.push((id, report.image));
        }
        let later = NOW.saturating_add(Span::from_secs(1000));
        let before = store.stats().unwrap();
        // Pinned: nothing goes.
        let s = collect(&store, &catalog, &[ids[0].0].into(), later).unwrap();
        assert_eq!(s.deleted_chunks, 0);
        assert_eq!(store.stats().unwrap().chunks, before.chunks);
        // Unpinned and expired: its chunks go, the live workspace's stay complete.
        let s = collect(&store, &catalog, &BTreeSet::new(), later).unwrap();
        assert_eq!(s.expired_workspaces, vec![ids[0].0]);
        assert_eq!(s.released_images, vec![ids[0].1]);
        assert!(s.deleted_chunks > 0);
        assert!(store.image(&ids[1].1).unwrap().complete);
        assert!(!store.image(&ids[0].1).unwrap().complete);
    }
}
