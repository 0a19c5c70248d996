//! The durable catalog: the highest version of each workspace this node has accepted.
//!
//! Lives in `<home>/node.redb`. The rule that stops rollback and replay: an offered description
//! is accepted only if it is verified, not expired, and its version is strictly higher than the
//! one held (or none is held). Because the record is committed before the offer returns, a
//! restart cannot forget a version and be talked back into an older one. An offer of the same
//! version with different bytes is an owner equivocating; the first one seen is kept.
//!
//! The API is synchronous (redb commits fsync); async callers use `spawn_blocking`.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use vwnet_protocol::codec;
use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::limits::MAX_SIGNED_RECORD_LEN;
use vwnet_protocol::signed::{
    SignedDelegation, SignedDescription, VerifiedDescription, VerifyError,
};
use vwnet_protocol::time::Timestamp;

/// workspace id → encoded [`StoredEntry`].
const WORKSPACES: TableDefinition<'_, &[u8; WorkspaceId::LEN], &[u8]> =
    TableDefinition::new("workspaces");

/// Format version byte of a stored entry.
const ENTRY_VERSION: u8 = 1;

/// Why the catalog failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The database failed.
    #[error("node database: {0}")]
    Db(#[from] redb::Error),
    /// Another process holds the database.
    #[error("{0}: in use by another node process")]
    Locked(String),
    /// A stored entry does not decode or no longer verifies.
    #[error("catalog entry {workspace}: {reason}")]
    Corrupt {
        /// Which workspace.
        workspace: String,
        /// What is wrong.
        reason: String,
    },
}

fn db_err(e: impl Into<redb::Error>) -> CatalogError {
    CatalogError::Db(e.into())
}

/// Why an offered description was not accepted (not an error of the node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Its lifeCycle ended.
    #[error("expired at {0}")]
    Expired(Timestamp),
    /// A newer (or equal) version is already held.
    #[error("version {offered} is not newer than the held version {held}")]
    Stale {
        /// The offered version.
        offered: u64,
        /// The held version.
        held: u64,
    },
    /// The same version with different content: the owner equivocated.
    #[error("a different description with version {0} is already held")]
    Conflict(u64),
}

/// What an offer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Stored as the new highest version.
    Accepted,
    /// Exactly this description is already held (e.g. gossip echo).
    Duplicate,
    /// Not stored, and why.
    Refused(Refusal),
}

/// Where a catalog entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Published by this node.
    Local,
    /// Learned from a peer (gossip or catalog exchange).
    Remote,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    version: u64,
    origin: Origin,
    accepted_at: Timestamp,
    signed: Vec<u8>,
    /// The owner's delegation, when a delegate signed.
    delegation: Option<Vec<u8>>,
}

/// One workspace as held by the catalog.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The description, re-verified when read back.
    pub description: VerifiedDescription,
    /// Where it came from.
    pub origin: Origin,
    /// When this node accepted it.
    pub accepted_at: Timestamp,
}

/// The catalog; clones share the database.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Arc<Database>,
}

impl Catalog {
    /// Opens (creating if needed) the catalog database at `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(CatalogError::Locked(path.display().to_string()));
            }
            Err(e) => return Err(db_err(e)),
        };
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(WORKSPACES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Offers a verified description; stores it if it is the newest unexpired version.
    pub fn offer(
        &self,
        description: &VerifiedDescription,
        origin: Origin,
        now: Timestamp,
    ) -> Result<Offer, CatalogError> {
        let d = description.record();
        if let Some(end) = d.expires_at()
            && now >= end
        {
            return Ok(Offer::Refused(Refusal::Expired(end)));
        }
        let bytes = description.signed().to_bytes();
        let txn = self.db.begin_write().map_err(db_err)?;
        let verdict = {
            let mut table = txn.open_table(WORKSPACES).map_err(db_err)?;
            let held = table
                .get(d.id.as_bytes())
                .map_err(db_err)?
                .map(|v| decode_entry(&d.id, v.value()))
                .transpose()?;
            let verdict = match held {
                Some(h) if h.version > d.version => Offer::Refused(Refusal::Stale {
                    offered: d.version,
                    held: h.version,
                }),
                Some(h) if h.version == d.version && h.signed == bytes => Offer::Duplicate,
                Some(h) if h.version == d.version => Offer::Refused(Refusal::Conflict(h.version)),
                _ => Offer::Accepted,
            };
            if verdict == Offer::Accepted {
                let entry = StoredEntry {
                    version: d.version,
                    origin,
                    accepted_at: now,
                    signed: bytes,
                    delegation: description.delegation().map(|d| d.signed().to_bytes()),
                };
                table
                    .insert(
                        d.id.as_bytes(),
                        codec::encode(ENTRY_VERSION, &entry).as_slice(),
                    )
                    .map_err(db_err)?;
            }
            verdict
        };
        if verdict == Offer::Accepted {
            txn.commit().map_err(db_err)?;
        }
        Ok(verdict)
    }

    /// The held entry of `workspace`.
    pub fn get(&self, workspace: &WorkspaceId) -> Result<Option<Entry>, CatalogError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(WORKSPACES).map_err(db_err)?;
        let Some(v) = table.get(workspace.as_bytes()).map_err(db_err)? else {
            return Ok(None);
        };
        let stored = decode_entry(workspace, v.value())?;
        to_entry(workspace, stored).map(Some)
    }

    /// Every held entry, ordered by workspace id.
    pub fn list(&self) -> Result<Vec<Entry>, CatalogError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(WORKSPACES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let id = WorkspaceId::from_bytes(*k.value());
            // One damaged entry must not hide the others: report it and go on.
            match decode_entry(&id, v.value()).and_then(|stored| to_entry(&id, stored)) {
                Ok(entry) => out.push(entry),
                Err(err) => tracing::warn!(%err, "skipping a catalog entry"),
            }
        }
        Ok(out)
    }
}

fn decode_entry(id: &WorkspaceId, bytes: &[u8]) -> Result<StoredEntry, CatalogError> {
    codec::decode(bytes, ENTRY_VERSION, MAX_SIGNED_RECORD_LEN + 64).map_err(|e| {
        CatalogError::Corrupt {
            workspace: id.short(),
            reason: e.to_string(),
        }
    })
}

fn to_entry(id: &WorkspaceId, stored: StoredEntry) -> Result<Entry, CatalogError> {
    let corrupt = |reason: String| CatalogError::Corrupt {
        workspace: id.short(),
        reason,
    };
    let signed =
        SignedDescription::from_bytes(&stored.signed).map_err(|e| corrupt(e.to_string()))?;
    let delegation = stored
        .delegation
        .as_deref()
        .map(SignedDelegation::from_bytes)
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    // Our own database is re-verified on the way out: only verified values leave the catalog.
    // It is checked as of when it was accepted, so that a delegation that has since run out
    // does not make an accepted version vanish (its replacement must still be newer).
    let description = signed
        .verify(delegation.as_ref(), stored.accepted_at)
        .map_err(|e: VerifyError| corrupt(e.to_string()))?;
    Ok(Entry {
        description,
        origin: stored.origin,
        accepted_at: stored.accepted_at,
    })
}

#[cfg(test)]
mod tests {
    use vwnet_protocol::description::{Description, template_for};
    use vwnet_protocol::identity::Identity;
    use vwnet_protocol::time::Span;

    use super::*;

    fn signed(owner: &Identity, ws: WorkspaceId, version: u64, tweak: &str) -> VerifiedDescription {
        let now = Timestamp::from_unix_secs(1_800_000_000);
        let mut d = Description::from_toml_str(&template_for(ws, owner.public(), now)).unwrap();
        d.version = version;
        d.name = format!("ws{tweak}");
        SignedDescription::sign(owner, &d)
            .unwrap()
            .verify(None, now)
            .unwrap()
    }

    const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_100);

    #[test]
    fn accepts_only_strictly_newer_versions_also_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let owner = Identity::from_secret_bytes(&[1; 32]);
        let ws = WorkspaceId::from_bytes([9; WorkspaceId::LEN]);
        {
            let c = Catalog::open(&path).unwrap();
            let v2 = signed(&owner, ws, 2, "");
            assert_eq!(c.offer(&v2, Origin::Remote, NOW).unwrap(), Offer::Accepted);
            assert_eq!(c.offer(&v2, Origin::Remote, NOW).unwrap(), Offer::Duplicate);
            let v1 = signed(&owner, ws, 1, "");
            assert_eq!(
                c.offer(&v1, Origin::Remote, NOW).unwrap(),
                Offer::Refused(Refusal::Stale {
                    offered: 1,
                    held: 2
                })
            );
        }
        // A restart must not forget v2 and take v1 back (no rollback, no replay).
        let c = Catalog::open(&path).unwrap();
        let v1 = signed(&owner, ws, 1, "");
        assert!(matches!(
            c.offer(&v1, Origin::Remote, NOW).unwrap(),
            Offer::Refused(Refusal::Stale { .. })
        ));
        let held = c.get(&ws).unwrap().unwrap();
        assert_eq!(held.description.version, 2);
        assert_eq!(held.origin, Origin::Remote);
        let v3 = signed(&owner, ws, 3, "");
        assert_eq!(c.offer(&v3, Origin::Local, NOW).unwrap(), Offer::Accepted);
        assert_eq!(c.list().unwrap().len(), 1);
        assert_eq!(c.get(&ws).unwrap().unwrap().description.version, 3);
    }

    #[test]
    fn refuses_expired_and_equivocating_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("node.redb")).unwrap();
        let owner = Identity::from_secret_bytes(&[2; 32]);
        let ws = WorkspaceId::from_bytes([7; WorkspaceId::LEN]);
        let d = signed(&owner, ws, 1, "");
        let end = d.expires_at().expect("the template has a lifeCycle");
        let later = end.saturating_add(Span::from_secs(1));
        assert_eq!(
            c.offer(&d, Origin::Remote, later).unwrap(),
            Offer::Refused(Refusal::Expired(end))
        );
        assert!(c.get(&ws).unwrap().is_none());

        assert_eq!(c.offer(&d, Origin::Remote, NOW).unwrap(), Offer::Accepted);
        let other = signed(&owner, ws, 1, "-other");
        assert_eq!(
            c.offer(&other, Origin::Remote, NOW).unwrap(),
            Offer::Refused(Refusal::Conflict(1))
        );
        assert_eq!(c.get(&ws).unwrap().unwrap().description.name, "ws");
    }

    #[test]
    fn second_open_of_the_same_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let _first = Catalog::open(&path).unwrap();
        assert!(matches!(Catalog::open(&path), Err(CatalogError::Locked(_))));
    }
}
