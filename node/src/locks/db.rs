//! `<home>/locks.redb`: what must survive a restart of the node, for both of its lock roles.
//!
//! - `authority`: per workspace, the last token this node granted and the current grant. The
//!   next state is committed (redb commits are durable) before the authority answers, so a
//!   restarted authority never issues a token it issued before, nor a lower one.
//! - `seen`: per workspace, the highest verified lock record this node has seen (gossip or
//!   its own grants); what `inspect` shows and what fencing checks compare against.
//! - `held`: the leases this node holds, so it can renew them after a restart.
//!
//! Every value is `vwnet_protocol::codec` with a version byte. The API is synchronous;
//! async callers use `spawn_blocking`.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vwnet_protocol::codec;
use vwnet_protocol::ids::{PeerIdentity, WorkspaceId};
use vwnet_protocol::limits::MAX_SIGNED_RECORD_LEN;
use vwnet_protocol::lock::LockRecord;
use vwnet_protocol::signed::SignedLockRecord;
use vwnet_protocol::time::Timestamp;

use super::authority::AuthorityEntry;

type Table = TableDefinition<'static, &'static [u8; WorkspaceId::LEN], &'static [u8]>;

/// workspace → [`AuthorityEntry`].
const AUTHORITY: Table = TableDefinition::new("authority");
/// workspace → [`SeenEntry`].
const SEEN: Table = TableDefinition::new("seen");
/// workspace → [`HeldEntry`].
const HELD: Table = TableDefinition::new("held");

/// Format version byte of every value in this database.
const VALUE_VERSION: u8 = 1;
/// Largest value: a signed lock record and a few fields, or a list of authorities.
const MAX_VALUE_LEN: usize = MAX_SIGNED_RECORD_LEN;

/// Why the lock database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockDbError {
    /// The database failed.
    #[error("lock database: {0}")]
    Db(#[from] redb::Error),
    /// Another process holds the database.
    #[error("{0}: in use by another node process")]
    Locked(String),
    /// A stored value does not decode.
    #[error("lock database entry {workspace}: {reason}")]
    Corrupt {
        /// Which workspace.
        workspace: String,
        /// What is wrong.
        reason: String,
    },
}

fn db_err(e: impl Into<redb::Error>) -> LockDbError {
    LockDbError::Db(e.into())
}

/// The highest lock record seen for a workspace, as its exact signed bytes.
#[derive(Serialize, Deserialize)]
struct SeenEntry {
    signed: Vec<u8>,
}

/// A lease this node holds, enough to renew it after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldEntry {
    pub(crate) workspace: WorkspaceId,
    pub(crate) description_version: u64,
    pub(crate) token: u64,
    pub(crate) authorities: Vec<PeerIdentity>,
    /// The authorities' (earliest) expiry as last granted.
    pub(crate) expires_at: Timestamp,
}

/// Which of two records about one workspace is newer: higher token; at the same token a
/// release beats a grant, and a later expiry (a renewal) beats an earlier one.
pub(crate) fn order_key(r: &LockRecord) -> (u64, bool, Timestamp) {
    (
        r.fencing_token,
        r.state == vwnet_protocol::lock::LockState::Released,
        r.expires_at,
    )
}

/// The lock database; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct LockDb {
    db: Arc<Database>,
}

fn decode<T: Serialize + DeserializeOwned>(
    ws: &WorkspaceId,
    bytes: &[u8],
) -> Result<T, LockDbError> {
    codec::decode(bytes, VALUE_VERSION, MAX_VALUE_LEN).map_err(|e| LockDbError::Corrupt {
        workspace: ws.short(),
        reason: e.to_string(),
    })
}

impl LockDb {
    /// Opens (creating if needed) the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, LockDbError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(LockDbError::Locked(path.display().to_string()));
            }
            Err(e) => return Err(db_err(e)),
        };
        let txn = db.begin_write().map_err(db_err)?;
        for table in [AUTHORITY, SEEN, HELD] {
            txn.open_table(table).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs one authority transition for `workspace` atomically: `f` sees the stored entry
    /// and returns its answer and the next entry, which is committed before this returns.
    pub(crate) fn authority_step<T>(
        &self,
        workspace: &WorkspaceId,
        f: impl FnOnce(&AuthorityEntry) -> (T, Option<AuthorityEntry>),
    ) -> Result<T, LockDbError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let (answer, next) = {
            let mut table = txn.open_table(AUTHORITY).map_err(db_err)?;
            let entry: AuthorityEntry = match table.get(workspace.as_bytes()).map_err(db_err)? {
                Some(v) => decode(workspace, v.value())?,
                None => AuthorityEntry::default(),
            };
            let (answer, next) = f(&entry);
            if let Some(next) = &next {
                table
                    .insert(
                        workspace.as_bytes(),
                        codec::encode(VALUE_VERSION, next).as_slice(),
                    )
                    .map_err(db_err)?;
            }
            (answer, next)
        };
        if next.is_some() {
            txn.commit().map_err(db_err)?;
        }
        Ok(answer)
    }

    /// The authority entry of `workspace` (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn authority_entry(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<AuthorityEntry, LockDbError> {
        self.authority_step(workspace, |e| (e.clone(), None))
    }

    /// Stores `signed` (already verified as `record`) if it is newer than the stored record of
    /// its workspace; whether it was.
    pub(crate) fn offer_seen(
        &self,
        record: &LockRecord,
        signed: &SignedLockRecord,
    ) -> Result<bool, LockDbError> {
        let ws = record.workspace;
        let txn = self.db.begin_write().map_err(db_err)?;
        let newer = {
            let mut table = txn.open_table(SEEN).map_err(db_err)?;
            let held = match table.get(ws.as_bytes()).map_err(db_err)? {
                Some(v) => Some(open_seen(&ws, v.value())?),
                None => None,
            };
            let newer = held.is_none_or(|h| order_key(record) > order_key(&h));
            if newer {
                let entry = SeenEntry {
                    signed: signed.to_bytes(),
                };
                table
                    .insert(
                        ws.as_bytes(),
                        codec::encode(VALUE_VERSION, &entry).as_slice(),
                    )
                    .map_err(db_err)?;
            }
            newer
        };
        if newer {
            txn.commit().map_err(db_err)?;
        }
        Ok(newer)
    }

    /// Every stored highest record, re-verified on the way out; damaged ones are skipped.
    pub(crate) fn seen_all(&self) -> Result<Vec<LockRecord>, LockDbError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(SEEN).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let ws = WorkspaceId::from_bytes(*k.value());
            match open_seen(&ws, v.value()) {
                Ok(r) => out.push(r),
                Err(err) => tracing::warn!(%err, "skipping a stored lock record"),
            }
        }
        Ok(out)
    }

    /// Remembers a lease this node holds.
    pub(crate) fn put_held(&self, entry: &HeldEntry) -> Result<(), LockDbError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(HELD).map_err(db_err)?;
            table
                .insert(
                    entry.workspace.as_bytes(),
                    codec::encode(VALUE_VERSION, entry).as_slice(),
                )
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Forgets a lease this node held.
    pub(crate) fn remove_held(&self, workspace: &WorkspaceId) -> Result<(), LockDbError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(HELD).map_err(db_err)?;
            table.remove(workspace.as_bytes()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Every lease this node held when it last ran.
    pub(crate) fn held_all(&self) -> Result<Vec<HeldEntry>, LockDbError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(HELD).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let ws = WorkspaceId::from_bytes(*k.value());
            match decode::<HeldEntry>(&ws, v.value()) {
                Ok(e) => out.push(e),
                Err(err) => tracing::warn!(%err, "skipping a stored lease"),
            }
        }
        Ok(out)
    }
}

fn open_seen(ws: &WorkspaceId, bytes: &[u8]) -> Result<LockRecord, LockDbError> {
    let corrupt = |reason: String| LockDbError::Corrupt {
        workspace: ws.short(),
        reason,
    };
    let entry: SeenEntry = decode(ws, bytes)?;
    let signed = SignedLockRecord::from_bytes(&entry.signed).map_err(|e| corrupt(e.to_string()))?;
    // Only verified records leave the database, also our own.
    let verified = signed.verify().map_err(|e| corrupt(e.to_string()))?;
    Ok(verified.into_record())
}

#[cfg(test)]
mod tests {
    use vwnet_protocol::identity::Identity;
    use vwnet_protocol::lock::LockState;
    use vwnet_protocol::time::Span;
    use vwnet_protocol::wire::LockRequest;

    use super::super::authority::{Decision, decide};
    use super::*;

    const WS: WorkspaceId = WorkspaceId::from_bytes([3; 16]);

    #[test]
    fn a_reopened_authority_never_reissues_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.redb");
        let auth = PeerIdentity::from_bytes([9; 32]);
        let a = PeerIdentity::from_bytes([0xa; 32]);
        let acquire = |token| LockRequest::Acquire {
            workspace: WS,
            description_version: 1,
            token,
            lease: Span::from_secs(5),
        };
        let now = Timestamp::from_unix_secs(1000);
        {
            let db = LockDb::open(&path).unwrap();
            let d = db
                .authority_step(&WS, |e| decide(e, auth, WS, a, &acquire(7), now))
                .unwrap();
            assert!(matches!(d, Decision::Record(_)));
            // A second open of a live database is refused (one node per home).
            assert!(matches!(LockDb::open(&path), Err(LockDbError::Locked(_))));
        }
        let db = LockDb::open(&path).unwrap();
        assert_eq!(db.authority_entry(&WS).unwrap().last_token, 7);
        // Long after expiry, token 7 (or lower) is still refused after the restart.
        let later = Timestamp::from_unix_secs(5000);
        for token in [1, 7] {
            let d = db
                .authority_step(&WS, |e| decide(e, auth, WS, a, &acquire(token), later))
                .unwrap();
            assert!(
                matches!(
                    d,
                    Decision::Deny(vwnet_protocol::wire::LockDenial::TokenTooLow { last: 7 })
                ),
                "{d:?}"
            );
        }
    }

    #[test]
    fn seen_keeps_only_the_newest_record_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.redb");
        let auth = Identity::from_secret_bytes(&[4; 32]);
        let record = |token, state, exp| LockRecord {
            workspace: WS,
            description_version: 1,
            holder: PeerIdentity::from_bytes([5; 32]),
            fencing_token: token,
            granted_at: Timestamp::from_unix_secs(10),
            expires_at: Timestamp::from_unix_secs(exp),
            authority: auth.public(),
            state,
        };
        let offer = |db: &LockDb, r: LockRecord| {
            let signed = SignedLockRecord::sign(&auth, &r).unwrap();
            db.offer_seen(&r, &signed).unwrap()
        };
        {
            let db = LockDb::open(&path).unwrap();
            assert!(offer(&db, record(2, LockState::Held, 20)));
            assert!(
                offer(&db, record(2, LockState::Held, 30)),
                "a renewal is newer"
            );
            assert!(!offer(&db, record(2, LockState::Held, 25)));
            assert!(!offer(&db, record(1, LockState::Released, 90)));
            assert!(
                offer(&db, record(2, LockState::Released, 15)),
                "release wins"
            );
        }
        let db = LockDb::open(&path).unwrap();
        let all = db.seen_all().unwrap();
        assert_eq!(all, vec![record(2, LockState::Released, 15)]);
        assert!(offer(&db, record(3, LockState::Held, 40)));

        let held = HeldEntry {
            workspace: WS,
            description_version: 1,
            token: 3,
            authorities: vec![auth.public()],
            expires_at: Timestamp::from_unix_secs(40),
        };
        db.put_held(&held).unwrap();
        assert_eq!(db.held_all().unwrap(), vec![held]);
        db.remove_held(&WS).unwrap();
        assert!(db.held_all().unwrap().is_empty());
    }
}
