//! The manager's part of the local control API: what `vwnet deploy`, `start`, `stop`, `pause`,
//! `unpause`, `save`, `undeploy`, `migrate` and `ws-state` ask, and what the node answers.
//!
//! Carried inside `Request::Manage` / `Response::Manage` so that the shared control enums grow
//! by one variant each, not ten.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vwnet_protocol::description::ImageRef;
use vwnet_protocol::ids::WorkspaceId;

use crate::control::PullSummary;

/// A workspace management request; `workspace` is an id, a unique id prefix or a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ManageRequest {
    /// Check policy, host match and expiry, take the lock, pull, materialise and define (or
    /// restore a hot image).
    Deploy {
        /// The workspace.
        workspace: String,
        /// A specific version; the newest accepted one if `None`.
        version: Option<u64>,
        /// The hypervisor URI the caller expects; refused if the node holds another.
        uri: Option<String>,
    },
    /// Boot (or resume a saved) deployed workspace; refused with a stale fencing token.
    Start {
        /// The workspace.
        workspace: String,
    },
    /// Power off: ACPI shutdown, then a hard stop if the guest does not go within the grace
    /// period (or at once with `force`).
    Stop {
        /// The workspace.
        workspace: String,
        /// Stop immediately.
        force: bool,
    },
    /// Pause the vCPUs.
    Pause {
        /// The workspace.
        workspace: String,
    },
    /// Unpause; refused with a stale fencing token.
    Unpause {
        /// The workspace.
        workspace: String,
    },
    /// Pause and save the memory state to the workspace directory (a hot image).
    Save {
        /// The workspace.
        workspace: String,
    },
    /// First half of `undeploy --publish`: ingest the disk (and the saved state) and return the
    /// next description version for the CLI to sign. Nothing is undeployed yet.
    PrepareUndeploy {
        /// The workspace.
        workspace: String,
        /// For a migration: the destination's peer id, named in the draft so that the owner's
        /// signature authorises the destination to deploy it.
        migrate_to: Option<String>,
    },
    /// Undefine the domain, delete its files and release the lock; with `signed` (the signed
    /// draft from `PrepareUndeploy`), publish it first, and undeploy only if that worked.
    Undeploy {
        /// The workspace.
        workspace: String,
        /// Canonical bytes of the signed next version.
        signed: Option<Vec<u8>>,
    },
    /// Ask `to` (a peer id) to deploy the workspace's newest version and resume it. The CLI has
    /// saved, published and undeployed it here first.
    Migrate {
        /// The workspace.
        workspace: String,
        /// The destination's libp2p peer id.
        to: String,
    },
    /// The live state of a workspace on this node.
    State {
        /// The workspace.
        workspace: String,
    },
}

/// The final answer to a [`ManageRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ManageResponse {
    /// Answer to `Deploy`.
    Deployed(Box<DeployReport>),
    /// Answer to `Start`, `Stop`, `Pause`, `Unpause` and `State`.
    State(WorkspaceState),
    /// Answer to `Save`.
    Saved(SaveReport),
    /// Answer to `PrepareUndeploy`.
    Draft(UndeployDraft),
    /// Answer to `Undeploy`.
    Undeployed(UndeployReport),
    /// Answer to `Migrate`.
    Migrated(MigrateReport),
}

/// An intermediate report of a long manager operation: a step that finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    /// What finished, e.g. `pull`, `materialise`, `define`.
    pub step: String,
    /// How long it took, in milliseconds.
    pub millis: u64,
}

/// What a workspace is doing on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceState {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Its name.
    pub name: String,
    /// The deployed version (or the newest known, when not deployed).
    pub version: u64,
    /// Whether it is deployed on this node.
    pub deployed: bool,
    /// The state in the description's vocabulary: `running`, `paused`, `shutdown`,
    /// `corrupted` — the live one when deployed here, else the described one.
    pub state: String,
    /// The libvirt domain, when deployed.
    pub domain: Option<String>,
    /// libvirt's own state of the domain (`running`, `paused`, `shutoff`...), when deployed.
    pub domain_state: Option<String>,
    /// Whether its memory state is saved to a file (a hot image waiting to be restored).
    pub saved: bool,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReport {
    /// The state after the deploy.
    pub state: WorkspaceState,
    /// Whether a saved memory state was restored instead of defining a cold domain.
    pub hot: bool,
    /// RAM given, in MiB.
    pub memory_mib: u64,
    /// vCPUs given.
    pub vcpus: u32,
    /// The fencing token of the lease taken.
    pub fencing_token: u64,
    /// What the pull fetched and found local.
    pub pull: PullSummary,
    /// Bytes written as data while materialising (holes excluded).
    pub materialised_bytes: u64,
    /// Milliseconds spent pulling.
    pub pull_millis: u64,
    /// Milliseconds spent materialising the image(s).
    pub materialise_millis: u64,
    /// Milliseconds spent defining or restoring the domain.
    pub define_millis: u64,
    /// Milliseconds for the whole deploy.
    pub total_millis: u64,
}

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveReport {
    /// The state after the save.
    pub state: WorkspaceState,
    /// The memory-state file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Milliseconds the save took.
    pub millis: u64,
}

/// The unsigned next version that `undeploy --publish` asks the CLI to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeployDraft {
    /// Canonical bytes of the next `Description`.
    pub description: Vec<u8>,
    /// The ingested disk image.
    pub disk: ImageRef,
    /// The ingested memory state, for a saved workspace.
    pub memory_state: Option<ImageRef>,
    /// Bytes of new chunks the ingest added to the store (what peers will have to fetch).
    pub new_bytes: u64,
    /// Milliseconds the ingest took.
    pub millis: u64,
}

/// What an undeploy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeployReport {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The version published first, if any.
    pub published: Option<u64>,
    /// Milliseconds the undeploy took.
    pub millis: u64,
}

/// What a migration's remote half did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateReport {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The version deployed at the destination.
    pub version: u64,
    /// The destination peer.
    pub to: String,
    /// Its state there.
    pub state: String,
    /// Bytes the destination fetched from peers.
    pub bytes_fetched: u64,
    /// Bytes the destination already held.
    pub bytes_local: u64,
    /// Milliseconds the destination spent deploying and resuming.
    pub deploy_millis: u64,
}
