//! The control-socket side of locks: `vwnet lock acquire|release|show` and the lock shown by
//! `vwnet inspect`.

use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::lock::{LockRecord, LockState};
use vwnet_protocol::time::Timestamp;

use super::{LockError, Locks};
use crate::control::{LockInfo, Response};
use crate::daemon::Services;
use crate::publish::resolve;

/// What is known about the lock of `workspace`: the highest record, and whether this node's
/// own lease passes the fencing check. `None` when nothing is known at all.
pub fn info(locks: &Locks, workspace: WorkspaceId) -> Option<LockInfo> {
    let record = locks.current(workspace);
    let here = match locks.check_fence(workspace) {
        Ok(_) => Some("valid".to_owned()),
        Err(LockError::NotHeld) => None,
        Err(err) => Some(err.to_string()),
    };
    record.map(|r| from_record(&r, here, Timestamp::now()))
}

fn from_record(r: &LockRecord, this_node: Option<String>, now: Timestamp) -> LockInfo {
    let state = match r.state {
        LockState::Released => "released",
        _ if r.is_held_at(now) => "held",
        _ => "expired",
    };
    LockInfo {
        workspace: r.workspace,
        holder: r.holder.to_string(),
        token: r.fencing_token,
        description_version: r.description_version,
        granted_at: r.granted_at,
        expires_at: r.expires_at,
        authority: r.authority.to_string(),
        state: state.to_owned(),
        this_node,
    }
}

/// `Request::LockAcquire`.
pub async fn acquire(services: &Services, query: &str) -> Response {
    let entry = match resolve(services, query).await {
        Ok(e) => e,
        Err(err) => return Response::Error(err),
    };
    let desc = entry.description.record();
    match services.locks.acquire(desc).await {
        Ok(lease) => Response::Lock(Some(info(&services.locks, lease.workspace).unwrap_or(
            LockInfo {
                workspace: lease.workspace,
                holder: lease.holder.to_string(),
                token: lease.token,
                description_version: lease.version,
                granted_at: Timestamp::now(),
                expires_at: lease.expires_at,
                authority: String::new(),
                state: "held".to_owned(),
                this_node: Some("valid".to_owned()),
            },
        ))),
        Err(err) => Response::Error(err.to_string()),
    }
}

/// `Request::LockRelease`.
pub async fn release(services: &Services, query: &str) -> Response {
    let entry = match resolve(services, query).await {
        Ok(e) => e,
        Err(err) => return Response::Error(err),
    };
    match services.locks.release(entry.description.record().id).await {
        Ok(()) => Response::Done,
        Err(err) => Response::Error(err.to_string()),
    }
}

/// `Request::LockShow`.
pub async fn show(services: &Services, query: &str) -> Response {
    match resolve(services, query).await {
        Ok(e) => Response::Lock(info(&services.locks, e.description.record().id)),
        Err(err) => Response::Error(err),
    }
}
