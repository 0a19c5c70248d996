//! The durable record of what this node has deployed, in `<home>/manager.redb`.
//!
//! A restarted node reads it back to know its domains (and, on the in-process test driver whose
//! machine is gone after a restart, to define them again). Workspaces whose image failed
//! verification here are recorded as corrupted, so they keep refusing to deploy until a new
//! version is published. Synchronous (redb commits fsync): async callers use `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use vwnet_protocol::codec;
use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::time::Timestamp;

use crate::hypervisor::{DiskFormat, DiskSpec, DomainSpec, NicSpec};

/// File name of the manager's database inside the home directory.
pub const MANAGER_DB: &str = "manager.redb";

/// workspace id → encoded [`Deployment`].
const DEPLOYMENTS: TableDefinition<'_, &[u8; WorkspaceId::LEN], &[u8]> =
    TableDefinition::new("deployments");
/// workspace id → encoded [`Corruption`].
const CORRUPTED: TableDefinition<'_, &[u8; WorkspaceId::LEN], &[u8]> =
    TableDefinition::new("corrupted");

/// Format version byte of stored records.
const RECORD_VERSION: u8 = 1;
/// Largest stored record accepted when reading back.
const MAX_RECORD: usize = 64 * 1024;

/// Why the deployment database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentsError {
    /// The database failed.
    #[error("manager database: {0}")]
    Db(#[from] redb::Error),
    /// Another process holds the database.
    #[error("{0}: in use by another node process")]
    Locked(String),
    /// A stored record does not decode.
    #[error("manager database: record of {workspace}: {reason}")]
    Corrupt {
        /// Which workspace.
        workspace: String,
        /// What is wrong.
        reason: String,
    },
}

fn db_err(e: impl Into<redb::Error>) -> DeploymentsError {
    DeploymentsError::Db(e.into())
}

/// One workspace deployed on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The deployed version.
    pub version: u64,
    /// The domain as defined.
    pub spec: StoredSpec,
    /// The hypervisor URI it was defined on.
    pub uri: String,
    /// The saved memory state, while the workspace is saved (hot).
    pub saved: Option<PathBuf>,
    /// The fencing token of the lease taken at deploy time.
    pub fencing_token: u64,
    /// When it was deployed.
    pub deployed_at: Timestamp,
}

/// A [`DomainSpec`] in storable form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSpec {
    /// Domain name.
    pub name: String,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Disks: path, qcow2?, read-only?
    pub disks: Vec<(PathBuf, bool, bool)>,
    /// CD-ROM medium.
    pub cdrom: Option<PathBuf>,
    /// NICs: `None` for user-mode, else a libvirt network name.
    pub nics: Vec<Option<String>>,
    /// Serial console log.
    pub serial_log: Option<PathBuf>,
}

impl From<&DomainSpec> for StoredSpec {
    fn from(s: &DomainSpec) -> Self {
        Self {
            name: s.name.clone(),
            memory_mib: s.memory_mib,
            vcpus: s.vcpus,
            disks: s
                .disks
                .iter()
                .map(|d| (d.path.clone(), d.format == DiskFormat::Qcow2, d.read_only))
                .collect(),
            cdrom: s.cdrom.clone(),
            nics: s
                .nics
                .iter()
                .map(|n| match n {
                    NicSpec::Network { name } => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            serial_log: s.serial_log.clone(),
        }
    }
}

impl StoredSpec {
    /// Back to a spec for the hypervisor.
    pub fn to_spec(&self) -> DomainSpec {
        DomainSpec {
            name: self.name.clone(),
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            disks: self
                .disks
                .iter()
                .map(|(path, qcow2, read_only)| DiskSpec {
                    path: path.clone(),
                    format: if *qcow2 {
                        DiskFormat::Qcow2
                    } else {
                        DiskFormat::Raw
                    },
                    read_only: *read_only,
                })
                .collect(),
            cdrom: self.cdrom.clone(),
            nics: self
                .nics
                .iter()
                .map(|n| match n {
                    Some(name) => NicSpec::Network { name: name.clone() },
                    None => NicSpec::User,
                })
                .collect(),
            serial_log: self.serial_log.clone(),
        }
    }
}

/// Why a workspace refuses to deploy here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    /// The version whose image failed verification.
    pub version: u64,
    /// What failed.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// The deployment database; clones share it.
#[derive(Debug, Clone)]
pub struct Deployments {
    db: Arc<Database>,
}

impl Deployments {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DeploymentsError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(DeploymentsError::Locked(path.display().to_string()));
            }
            Err(e) => return Err(db_err(e)),
        };
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(DEPLOYMENTS).map_err(db_err)?;
        txn.open_table(CORRUPTED).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The deployment of `workspace`, if any.
    pub fn get(&self, workspace: &WorkspaceId) -> Result<Option<Deployment>, DeploymentsError> {
        self.read(DEPLOYMENTS, workspace)
    }

    /// Every deployment.
    pub fn list(&self) -> Result<Vec<Deployment>, DeploymentsError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DEPLOYMENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let ws = WorkspaceId::from_bytes(*key.value());
            out.push(decode(&ws, value.value())?);
        }
        Ok(out)
    }

    /// Records (or replaces) a deployment; durable when this returns.
    pub fn put(&self, deployment: &Deployment) -> Result<(), DeploymentsError> {
        self.write(DEPLOYMENTS, &deployment.workspace, Some(deployment))
    }

    /// Forgets the deployment of `workspace`.
    pub fn remove(&self, workspace: &WorkspaceId) -> Result<(), DeploymentsError> {
        self.write::<Deployment>(DEPLOYMENTS, workspace, None)
    }

    /// Marks `workspace` corrupted on this node.
    pub fn mark_corrupted(
        &self,
        workspace: &WorkspaceId,
        corruption: &Corruption,
    ) -> Result<(), DeploymentsError> {
        self.write(CORRUPTED, workspace, Some(corruption))
    }

    /// Why `workspace` is corrupted here, if it is.
    pub fn corrupted(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Option<Corruption>, DeploymentsError> {
        self.read(CORRUPTED, workspace)
    }

    fn read<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        def: TableDefinition<'_, &[u8; WorkspaceId::LEN], &[u8]>,
        workspace: &WorkspaceId,
    ) -> Result<Option<T>, DeploymentsError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(def).map_err(db_err)?;
        let Some(v) = table.get(workspace.as_bytes()).map_err(db_err)? else {
            return Ok(None);
        };
        decode(workspace, v.value()).map(Some)
    }

    fn write<T: Serialize>(
        &self,
        def: TableDefinition<'_, &[u8; WorkspaceId::LEN], &[u8]>,
        workspace: &WorkspaceId,
        value: Option<&T>,
    ) -> Result<(), DeploymentsError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(def).map_err(db_err)?;
            match value {
                Some(v) => {
                    table
                        .insert(
                            workspace.as_bytes(),
                            codec::encode(RECORD_VERSION, v).as_slice(),
                        )
                        .map_err(db_err)?;
                }
                None => {
                    table.remove(workspace.as_bytes()).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)
    }
}

fn decode<T: Serialize + serde::de::DeserializeOwned>(
    workspace: &WorkspaceId,
    bytes: &[u8],
) -> Result<T, DeploymentsError> {
    codec::decode(bytes, RECORD_VERSION, MAX_RECORD).map_err(|e| DeploymentsError::Corrupt {
        workspace: workspace.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(ws: WorkspaceId) -> Deployment {
        let spec = DomainSpec {
            name: "vwnet-a-b".into(),
            memory_mib: 128,
            vcpus: 1,
            disks: vec![DiskSpec {
                path: "/h/images/x/disk.raw".into(),
                format: DiskFormat::Raw,
                read_only: false,
            }],
            cdrom: Some("/h/images/x/cdrom.iso".into()),
            nics: vec![NicSpec::User],
            serial_log: Some("/h/images/x/console.log".into()),
        };
        Deployment {
            workspace: ws,
            version: 3,
            spec: StoredSpec::from(&spec),
            uri: "test:///default".into(),
            saved: None,
            fencing_token: 7,
            deployed_at: Timestamp::from_unix_secs(1_800_000_000),
        }
    }

    #[test]
    fn deployments_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANAGER_DB);
        let ws = WorkspaceId::from_bytes([5; 16]);
        {
            let db = Deployments::open(&path).unwrap();
            db.put(&deployment(ws)).unwrap();
            db.mark_corrupted(
                &WorkspaceId::from_bytes([6; 16]),
                &Corruption {
                    version: 1,
                    reason: "chunk x is corrupt".into(),
                    at: Timestamp::from_unix_secs(1),
                },
            )
            .unwrap();
        }
        let db = Deployments::open(&path).unwrap();
        let back = db.get(&ws).unwrap().unwrap();
        assert_eq!(back, deployment(ws));
        assert_eq!(back.spec.to_spec().name, "vwnet-a-b");
        assert_eq!(StoredSpec::from(&back.spec.to_spec()), back.spec);
        assert_eq!(db.list().unwrap().len(), 1);
        assert!(
            db.corrupted(&WorkspaceId::from_bytes([6; 16]))
                .unwrap()
                .is_some()
        );
        assert!(db.corrupted(&ws).unwrap().is_none());
        db.remove(&ws).unwrap();
        assert!(db.get(&ws).unwrap().is_none());
    }
}
