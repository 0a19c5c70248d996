//! The manager's one call site for the lock service (`crate::locks`) and the node policy
//! (`crate::policy`): take the workspace's lease at deploy, check its fencing token before a
//! guest runs, give it back at undeploy, and ask the policy whether a requester may deploy.

use vwnet_protocol::acl::Action;
use vwnet_protocol::description::Description;
use vwnet_protocol::ids::{PeerIdentity, WorkspaceId};
use vwnet_protocol::time::Timestamp;

use super::ManageError;
use crate::daemon::Services;

/// May `who` do `action` on `d` here? (Access rules, then the resource limits for deploy.)
pub(crate) fn authorize(
    services: &Services,
    action: Action,
    who: PeerIdentity,
    d: &Description,
    now: Timestamp,
) -> Result<(), ManageError> {
    services.policy.check(action, who, &[], d, now)?;
    Ok(())
}

/// Takes the workspace's lease; returns its fencing token.
pub(crate) async fn acquire(services: &Services, d: &Description) -> Result<u64, ManageError> {
    services
        .locks
        .acquire(d)
        .await
        .map(|lease| lease.token)
        .map_err(|e| ManageError::Lock {
            workspace: d.id.short(),
            reason: e.to_string(),
        })
}

/// Checks that this node still holds a valid lease on `d` (unexpired, token not superseded)
/// before a guest is allowed to run.
pub(crate) async fn check(
    services: &Services,
    d: &Description,
    op: &'static str,
) -> Result<(), ManageError> {
    services
        .locks
        .check_fence(d.id)
        .map(|_| ())
        .map_err(|e| ManageError::Fenced {
            op,
            workspace: d.id.short(),
            reason: e.to_string(),
        })
}

/// Gives the lease back (best effort: an unreleased lease simply expires).
pub(crate) async fn release(services: &Services, workspace: &WorkspaceId) {
    if let Err(err) = services.locks.release(*workspace).await {
        tracing::warn!(ws = %workspace.short(), %err, "lock release failed; it will expire");
    }
}
