//! Lock records: a signed statement that one node holds (or released) the deploy lock of a
//! workspace version.
//!
//! This is the plain record and its verification only; leases, renewal and conflict
//! resolution are built on it in `vwnet-node`'s `locks` module (see `node/LOCKS.md`), over the
//! `LockRequest`/`LockResponse` messages of `wire`. The `fencing_token` increases with every grant by an
//! authority, so a consumer that remembers the highest token it has seen can refuse a stale
//! holder even when clocks disagree. A release carries the token of the grant it ends.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::ids::{PeerIdentity, WorkspaceId};
use crate::limits::MAX_SIGNED_RECORD_LEN;
use crate::signed::{RECORD_VERSION, Record, RecordKind};
use crate::time::Timestamp;

/// Whether a lock record grants the lock or gives it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LockState {
    /// The holder holds the lock until `expires_at`.
    Held,
    /// The grant with this fencing token has ended early.
    Released,
}

/// Who holds the deploy lock of a workspace version, granted by an authority that signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The workspace the lock is about.
    pub workspace: WorkspaceId,
    /// The description version the holder deploys.
    pub description_version: u64,
    /// The node that holds the lock.
    pub holder: PeerIdentity,
    /// Increases with every grant by this authority for this workspace.
    pub fencing_token: u64,
    /// When the lock was granted.
    pub granted_at: Timestamp,
    /// When the grant ends unless renewed (must not be before `granted_at`).
    pub expires_at: Timestamp,
    /// The key that grants locks and signs this record.
    pub authority: PeerIdentity,
    /// A grant or a release.
    pub state: LockState,
}

impl LockRecord {
    /// Whether this record says the lock is held at `now` (granted, not released, not expired).
    pub fn is_held_at(&self, now: Timestamp) -> bool {
        self.state == LockState::Held && self.granted_at <= now && now < self.expires_at
    }
}

impl crate::signed::sealed::Sealed for LockRecord {}

impl Record for LockRecord {
    const KIND: RecordKind = RecordKind::LockRecord;

    fn to_payload(&self) -> Vec<u8> {
        codec::encode(RECORD_VERSION, self)
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, String> {
        let record: Self = codec::decode(bytes, RECORD_VERSION, MAX_SIGNED_RECORD_LEN)
            .map_err(|e| e.to_string())?;
        if record.expires_at < record.granted_at {
            return Err(format!(
                "expires_at {} is before granted_at {}",
                record.expires_at, record.granted_at
            ));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_only_inside_its_window_and_not_released() {
        let mut lock = LockRecord {
            workspace: WorkspaceId::from_bytes([1; 16]),
            description_version: 3,
            holder: PeerIdentity::from_bytes([2; 32]),
            fencing_token: 7,
            granted_at: Timestamp::from_unix_secs(100),
            expires_at: Timestamp::from_unix_secs(200),
            authority: PeerIdentity::from_bytes([3; 32]),
            state: LockState::Held,
        };
        assert!(!lock.is_held_at(Timestamp::from_unix_secs(99)));
        assert!(lock.is_held_at(Timestamp::from_unix_secs(100)));
        assert!(lock.is_held_at(Timestamp::from_unix_secs(199)));
        assert!(!lock.is_held_at(Timestamp::from_unix_secs(200)));
        lock.state = LockState::Released;
        assert!(!lock.is_held_at(Timestamp::from_unix_secs(150)));
    }
}
