//! The workspace manager: takes a signed description to a libvirt domain on this node and
//! back — deploy, start, stop, pause, unpause, save (hot images), undeploy (with publication
//! of the changed disk and memory state) and migration to another node.
//!
//! # Shape
//! - The node opens ONE hypervisor connection at start and holds it ([`Manager`]): the
//!   in-process test driver (`test:///default`) keeps its fake machine only in the process that
//!   opened it. Every libvirt call blocks, so each runs in `spawn_blocking`.
//! - [`adapter`] turns a description into a `DomainSpec` for this host (select(), RAM/vCPUs,
//!   disk, NICs, CD-ROM, serial log); [`deployments`] is the durable record of what is deployed
//!   here (`<home>/manager.redb`), so a restarted node knows (and, on the test driver, re-defines)
//!   its domains; [`lease`] is the one place that talks to the lock service and the policy;
//!   [`remote`] is the node-to-node request a migration ends with.
//! - One operation per workspace at a time (a deploy racing a start of the same workspace on
//!   one node would otherwise interleave libvirt calls); different workspaces run in parallel.
//!
//! # The state follows reality
//! The description's state (`running`, `paused`, `shutdown`) is what libvirt says about the
//! domain, read at the moment it is asked (`ws-state`, `ls`, `inspect`), never a cached copy.
//! A saved (hot) domain is shut off with its memory in a file: it is `paused` in the
//! description's words. When the workspace leaves this node with `undeploy --publish`, the next
//! version carries that state (`paused` with a memory-state image, or `shutdown`).
//!
//! # Safety
//! - Deploy refuses an expired workspace, a corrupted one (described as corrupted, or whose
//!   image failed verification here: recorded, so it keeps refusing), a host mismatch (listing
//!   every unmet requirement) and what the policy denies; it holds the workspace's lock from
//!   before the pull until undeploy.
//! - Start and unpause first check the lease's fencing token with the lock service: a node that
//!   lost its lease (expired while partitioned, another node took it) cannot run the workspace.

pub mod adapter;
pub mod api;
pub mod deployments;
pub mod lease;
pub mod remote;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};
use vwnet_protocol::acl::Action;
use vwnet_protocol::description::{Description, HostProfile, ImageRef, State, select};
use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::signed::SignedDescription;
use vwnet_protocol::time::Timestamp;

use crate::catalog::Entry;
use crate::control::{PullSummary, Response};
use crate::daemon::Services;
use crate::hypervisor::{
    AfterRestore, ControlError as HvControlError, DomainState, Hypervisor, QueryError,
};
use crate::policy::{NotDeployable, PolicyDenied, ensure_deployable};
use crate::store_actor::StoreActorError;
use adapter::Layout;
use api::{
    DeployReport, ManageRequest, ManageResponse, SaveReport, StepProgress, UndeployDraft,
    UndeployReport, WorkspaceState,
};
use deployments::{Corruption, Deployment, Deployments, DeploymentsError, StoredSpec};

/// Directory of materialised images (one sub-directory per workspace) inside the home.
pub const IMAGES_DIR: &str = "images";

/// How long `stop` waits for the guest to power off after an ACPI request before pulling the
/// plug.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How often `stop` looks at the domain while waiting.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Size of the blank medium in the CD-ROM drive of a workspace that needs one (16 ISO sectors:
/// QEMU refuses an empty file).
const BLANK_CDROM_BYTES: u64 = 16 * 2048;

/// Why a manager operation failed. `Display` is the one line the CLI shows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The workspace query did not resolve.
    #[error("{0}")]
    Resolve(String),
    /// A specific version was asked for that this node does not hold.
    #[error(
        "workspace {workspace}: version {wanted} is not available (this node holds version {held})"
    )]
    Version {
        /// The workspace's short id.
        workspace: String,
        /// The version asked for.
        wanted: u64,
        /// The version held.
        held: u64,
    },
    /// Expired or described as corrupted.
    #[error(transparent)]
    NotDeployable(#[from] NotDeployable),
    /// Its image failed verification on this node.
    #[error(
        "workspace {workspace} v{version} is corrupted on this node ({reason}); refusing to deploy it"
    )]
    Corrupted {
        /// The workspace's short id.
        workspace: String,
        /// The version whose image failed.
        version: u64,
        /// What failed.
        reason: String,
    },
    /// The node's policy refuses.
    #[error(transparent)]
    Denied(#[from] PolicyDenied),
    /// The host does not meet the description's requirements.
    #[error("workspace {workspace} does not fit this host: {reason}")]
    HostMismatch {
        /// The workspace's short id.
        workspace: String,
        /// Every unmet requirement.
        reason: String,
    },
    /// Not deployed on this node.
    #[error("workspace {0} is not deployed on this node")]
    NotDeployed(String),
    /// Already deployed on this node.
    #[error("workspace {workspace} is already deployed on this node as domain {domain}")]
    AlreadyDeployed {
        /// The workspace's short id.
        workspace: String,
        /// Its domain.
        domain: String,
    },
    /// Another operation on the workspace is running on this node.
    #[error("workspace {0}: another operation on it is in progress on this node")]
    Busy(String),
    /// The lock could not be taken.
    #[error("cannot lock workspace {workspace}: {reason}")]
    Lock {
        /// The workspace's short id.
        workspace: String,
        /// The lock service's answer.
        reason: String,
    },
    /// The lease is no longer ours: start/unpause refused.
    #[error("{op} of workspace {workspace} refused: {reason}")]
    Fenced {
        /// What was refused.
        op: &'static str,
        /// The workspace's short id.
        workspace: String,
        /// Why the lease is not valid.
        reason: String,
    },
    /// The domain is not in a state that allows the operation.
    #[error("cannot {op} workspace {workspace}: it is {state}; {hint}")]
    WrongState {
        /// What was attempted.
        op: &'static str,
        /// The workspace's short id.
        workspace: String,
        /// Its state.
        state: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// Pulling the images failed.
    #[error("pull: {0}")]
    Pull(String),
    /// Writing the images into the workspace directory failed.
    #[error("materialising workspace {workspace}: {reason}")]
    Materialise {
        /// The workspace's short id.
        workspace: String,
        /// What failed.
        reason: String,
    },
    /// The chunk store failed.
    #[error("store: {0}")]
    Store(String),
    /// The hypervisor failed.
    #[error("hypervisor: {0}")]
    Hypervisor(String),
    /// Publishing the next version failed; nothing was undeployed.
    #[error("publish: {0}; the workspace stays deployed")]
    Publish(String),
    /// The migration's remote half failed.
    #[error("migrate: {0}")]
    Migrate(String),
    /// The deployment database failed.
    #[error(transparent)]
    Db(#[from] DeploymentsError),
}

/// The node's workspace manager: the hypervisor connection and what is deployed on it.
pub struct Manager {
    hv: Arc<dyn Hypervisor>,
    /// What this host offers workspaces, read once at start (it reads `/proc`).
    host: HostProfile,
    db: Deployments,
    images: PathBuf,
    busy: Mutex<HashSet<WorkspaceId>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("hypervisor", &self.hv.uri())
            .field("images", &self.images)
            .finish_non_exhaustive()
    }
}

/// Marks a workspace busy on this node until dropped.
struct Claim<'a> {
    manager: &'a Manager,
    workspace: WorkspaceId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.manager.busy).remove(&self.workspace);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A plain set; a panicked holder leaves nothing worth refusing to read.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Manager {
    /// Opens the deployment database in `home` for the hypervisor `hv` (blocking: call it from
    /// `spawn_blocking` or before the runtime serves anything).
    pub fn open(home: &Path, hv: Arc<dyn Hypervisor>) -> Result<Self, DeploymentsError> {
        let db = Deployments::open(&home.join(deployments::MANAGER_DB))?;
        Ok(Self {
            host: adapter::host_profile(hv.domain_kind()),
            hv,
            db,
            images: home.join(IMAGES_DIR),
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// The hypervisor connection URI.
    pub fn uri(&self) -> &str {
        self.hv.uri()
    }

    /// Runs `f` on the hypervisor off the runtime's workers.
    async fn hv<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Hypervisor) -> T + Send + 'static,
    ) -> Result<T, ManageError> {
        let hv = self.hv.clone();
        tokio::task::spawn_blocking(move || f(hv.as_ref()))
            .await
            .map_err(|e| ManageError::Hypervisor(format!("hypervisor task failed: {e}")))
    }

    /// Runs `f` on the deployment database off the runtime's workers.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Deployments) -> Result<T, DeploymentsError> + Send + 'static,
    ) -> Result<T, ManageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| ManageError::Hypervisor(format!("database task failed: {e}")))?
            .map_err(Into::into)
    }

    fn claim(&self, workspace: WorkspaceId) -> Result<Claim<'_>, ManageError> {
        if !lock(&self.busy).insert(workspace) {
            return Err(ManageError::Busy(workspace.short()));
        }
        Ok(Claim {
            manager: self,
            workspace,
        })
    }

    /// Brings the hypervisor in line with the deployment records after a restart: a domain
    /// that is gone (the test driver forgets everything with its process) is defined again
    /// from its record, shut off; a saved one is restored on the next start.
    pub async fn reconcile(&self) {
        let deployments = match self.db(|db| db.list()).await {
            Ok(d) => d,
            Err(err) => {
                warn!(%err, "cannot read the deployment records");
                return;
            }
        };
        for dep in deployments {
            let spec = dep.spec.to_spec();
            let name = spec.name.clone();
            let redefined = self
                .hv(move |hv| match hv.state(&spec.name) {
                    Err(QueryError::NoSuchDomain { .. }) if dep.saved.is_none() => {
                        hv.define(&spec).map(|_| true).map_err(|e| e.to_string())
                    }
                    _ => Ok(false),
                })
                .await;
            match redefined {
                Ok(Ok(true)) => info!(domain = %name, "re-defined a deployed domain after restart"),
                Ok(Ok(false)) => {}
                Ok(Err(err)) | Err(ManageError::Hypervisor(err)) => {
                    warn!(domain = %name, %err, "cannot re-define a deployed domain")
                }
                Err(err) => warn!(domain = %name, %err, "cannot re-define a deployed domain"),
            }
        }
    }

    /// The live state of `workspace` here in the description's words, if it is deployed here.
    pub async fn live_state(&self, workspace: WorkspaceId) -> Option<String> {
        let dep = self.db(move |db| db.get(&workspace)).await.ok()??;
        let (state, _) = self.observe(&dep).await;
        Some(state)
    }

    /// What libvirt says about a deployment: (description state, libvirt state).
    async fn observe(&self, dep: &Deployment) -> (String, String) {
        let name = dep.spec.name.clone();
        let observed = self.hv(move |hv| hv.state(&name)).await;
        let state = match &observed {
            Ok(Ok(s)) => match s {
                DomainState::Paused => State::Paused,
                DomainState::Shutoff if dep.saved.is_some() => State::Paused,
                s if s.is_active() => State::Running,
                _ => State::Shutdown,
            },
            _ if dep.saved.is_some() => State::Paused,
            _ => State::Shutdown,
        };
        let domain_state = match observed {
            Ok(Ok(s)) => s.to_string(),
            Ok(Err(QueryError::NoSuchDomain { .. })) => "undefined".to_owned(),
            Ok(Err(e)) => format!("unknown ({e})"),
            Err(e) => format!("unknown ({e})"),
        };
        (state.as_str().to_owned(), domain_state)
    }

    async fn state_of(&self, d: &Description, dep: Option<&Deployment>) -> WorkspaceState {
        match dep {
            Some(dep) => {
                let (state, domain_state) = self.observe(dep).await;
                WorkspaceState {
                    workspace: d.id,
                    name: d.name.clone(),
                    version: dep.version,
                    deployed: true,
                    state,
                    domain: Some(dep.spec.name.clone()),
                    domain_state: Some(domain_state),
                    saved: dep.saved.is_some(),
                }
            }
            None => WorkspaceState {
                workspace: d.id,
                name: d.name.clone(),
                version: d.version,
                deployed: false,
                state: d.state.as_str().to_owned(),
                domain: None,
                domain_state: None,
                saved: false,
            },
        }
    }

    /// Resolves `query` and returns its catalog entry and its deployment here.
    async fn deployed(
        &self,
        services: &Services,
        query: &str,
    ) -> Result<(Entry, Deployment), ManageError> {
        let entry = crate::publish::resolve(services, query)
            .await
            .map_err(ManageError::Resolve)?;
        let id = entry.description.record().id;
        match self.db(move |db| db.get(&id)).await? {
            Some(dep) => Ok((entry, dep)),
            None => Err(ManageError::NotDeployed(id.short())),
        }
    }

    async fn put(&self, dep: &Deployment) -> Result<(), ManageError> {
        let dep = dep.clone();
        self.db(move |db| db.put(&dep)).await
    }
}

/// Serves one manager request from the control socket; progress records go to `progress`.
pub async fn handle(
    services: &Arc<Services>,
    request: ManageRequest,
    progress: mpsc::Sender<Response>,
) -> Response {
    let m = &services.manager;
    let result = match request {
        ManageRequest::Deploy {
            workspace,
            version,
            uri,
        } => match uri {
            Some(uri) if uri != m.uri() => Err(ManageError::Hypervisor(format!(
                "this node holds {}, not {uri} (start it with `vwnet node run --hypervisor {uri}`)",
                m.uri()
            ))),
            _ => m
                .deploy(services, &workspace, version, &progress)
                .await
                .map(|r| ManageResponse::Deployed(Box::new(r))),
        },
        ManageRequest::Start { workspace } => m.start(services, &workspace).await,
        ManageRequest::Stop { workspace, force } => m.stop(services, &workspace, force).await,
        ManageRequest::Pause { workspace } => m.pause(services, &workspace).await,
        ManageRequest::Unpause { workspace } => m.unpause(services, &workspace).await,
        ManageRequest::Save { workspace } => m.save(services, &workspace).await,
        ManageRequest::PrepareUndeploy {
            workspace,
            migrate_to,
        } => {
            m.prepare_undeploy(services, &workspace, migrate_to.as_deref())
                .await
        }
        ManageRequest::Undeploy { workspace, signed } => {
            m.undeploy(services, &workspace, signed).await
        }
        ManageRequest::Migrate { workspace, to } => {
            remote::migrate(services, &workspace, &to, &progress).await
        }
        ManageRequest::State { workspace } => m.ws_state(services, &workspace).await,
    };
    match result {
        Ok(r) => Response::Manage(r),
        Err(err) => {
            warn!(%err, "workspace operation failed");
            Response::Error(err.to_string())
        }
    }
}

fn step(progress: &mpsc::Sender<Response>, name: &str, since: Instant) -> u64 {
    let ms = millis(since);
    // Progress is best effort: a slow CLI does not slow the deploy.
    let _ = progress.try_send(Response::Step(StepProgress {
        step: name.to_owned(),
        millis: ms,
    }));
    ms
}

impl Manager {
    /// `deploy`: checks, lock, pull, materialise, define (or restore a hot image).
    pub async fn deploy(
        &self,
        services: &Arc<Services>,
        query: &str,
        version: Option<u64>,
        progress: &mpsc::Sender<Response>,
    ) -> Result<DeployReport, ManageError> {
        let entry = crate::publish::resolve(services, query)
            .await
            .map_err(ManageError::Resolve)?;
        self.deploy_entry(services, &entry, version, services.identity, progress)
            .await
    }

    /// Deploys a resolved catalog entry on behalf of `requester` (whom the policy judges).
    pub(crate) async fn deploy_entry(
        &self,
        services: &Arc<Services>,
        entry: &Entry,
        version: Option<u64>,
        requester: vwnet_protocol::ids::PeerIdentity,
        progress: &mpsc::Sender<Response>,
    ) -> Result<DeployReport, ManageError> {
        let started = Instant::now();
        let d = entry.description.record().clone();
        let short = d.id.short();
        if let Some(wanted) = version
            && wanted != d.version
        {
            return Err(ManageError::Version {
                workspace: short,
                wanted,
                held: d.version,
            });
        }
        let now = Timestamp::now();
        ensure_deployable(&d, now)?;
        let id = d.id;
        if let Some(c) = self.db(move |db| db.corrupted(&id)).await?
            && c.version >= d.version
        {
            return Err(ManageError::Corrupted {
                workspace: short,
                version: c.version,
                reason: c.reason,
            });
        }
        lease::authorize(services, Action::Deploy, requester, &d, now)?;
        let _claim = self.claim(d.id)?;
        if let Some(dep) = self.db(move |db| db.get(&id)).await? {
            return Err(ManageError::AlreadyDeployed {
                workspace: short,
                domain: dep.spec.name,
            });
        }
        let in_use = self.db(|db| db.list()).await?.len() as u64;
        services.policy.check_count(Action::Deploy, in_use)?;
        let host = &self.host;
        let placement = select(&d, host).map_err(|e| ManageError::HostMismatch {
            workspace: short.clone(),
            reason: e.to_string(),
        })?;
        let layout = Layout::new(&self.images, &d.id);
        let spec = adapter::domain_spec(
            &d,
            &placement,
            host,
            adapter::domain_name(&d.id, &services.identity),
            &layout,
        )
        .map_err(|reason| ManageError::HostMismatch {
            workspace: short.clone(),
            reason,
        })?;

        // Never take over a domain this node did not define for this deployment (a restore
        // would replace its definition).
        let name = spec.name.clone();
        if let Ok(existing) = self.hv(move |hv| hv.state(&name)).await? {
            return Err(ManageError::Hypervisor(format!(
                "a domain named {} already exists on this host ({existing}); undefine it first",
                spec.name
            )));
        }

        let token = lease::acquire(services, &d).await?;
        let t = Instant::now();
        step(progress, "lock", t);
        let done = self
            .deploy_locked(services, &d, spec, &layout, token, progress)
            .await;
        match done {
            Ok((pull, materialised, [pull_ms, mat_ms, def_ms], hot)) => {
                let dep = self.db(move |db| db.get(&id)).await?;
                let state = self.state_of(&d, dep.as_ref()).await;
                let (memory_mib, vcpus) = dep
                    .as_ref()
                    .map_or((0, 0), |dep| (dep.spec.memory_mib, dep.spec.vcpus));
                info!(ws = %short, version = d.version, hot, state = %state.state, "deployed");
                Ok(DeployReport {
                    state,
                    hot,
                    memory_mib,
                    vcpus,
                    fencing_token: token,
                    pull,
                    materialised_bytes: materialised,
                    pull_millis: pull_ms,
                    materialise_millis: mat_ms,
                    define_millis: def_ms,
                    total_millis: millis(started),
                })
            }
            Err(err) => {
                // Nothing of a failed deploy stays: the lock goes back, the files go away.
                lease::release(services, &d.id).await;
                remove_dir(layout.dir().to_owned()).await;
                Err(err)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn deploy_locked(
        &self,
        services: &Arc<Services>,
        d: &Description,
        spec: crate::hypervisor::DomainSpec,
        layout: &Layout,
        token: u64,
        progress: &mpsc::Sender<Response>,
    ) -> Result<(PullSummary, u64, [u64; 3], bool), ManageError> {
        let short = d.id.short();
        let t = Instant::now();
        let pull = match crate::pull::pull(
            services,
            &d.id.to_string(),
            Some(d.version),
            progress.clone(),
        )
        .await
        {
            Response::Pulled(summary) => summary,
            Response::Error(e) => return Err(ManageError::Pull(e)),
            other => return Err(ManageError::Pull(format!("unexpected answer {other:?}"))),
        };
        let pull_ms = step(progress, "pull", t);

        let t = Instant::now();
        let dir = layout.dir().to_owned();
        let cdrom = spec.cdrom.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            if let Some(cdrom) = cdrom {
                std::fs::File::create(&cdrom)?.set_len(BLANK_CDROM_BYTES)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ManageError::Materialise {
            workspace: short.clone(),
            reason: e.to_string(),
        })?
        .map_err(|e| ManageError::Materialise {
            workspace: short.clone(),
            reason: format!("{}: {e}", layout.dir().display()),
        })?;
        let mut materialised = 0;
        let disk_path = spec.disks.first().map(|disk| disk.path.clone());
        let mut exports: Vec<(ImageRef, PathBuf)> = Vec::new();
        if let (Some(disk), Some(path)) = (d.image.disk, disk_path) {
            exports.push((disk, path));
        }
        if let Some(state) = d.image.memory_state {
            exports.push((state, layout.memory_state()));
        }
        for (image, path) in exports {
            match services.store.export(image.id, path).await {
                Ok(report) => materialised += report.data_bytes,
                Err(StoreActorError::Export(vwnet_chunker::ExportError::Corrupt {
                    hash,
                    reason,
                })) => {
                    let reason = format!(
                        "image {} chunk {}: {reason}",
                        image.id.short(),
                        hash.short()
                    );
                    let corruption = Corruption {
                        version: d.version,
                        reason: reason.clone(),
                        at: Timestamp::now(),
                    };
                    let id = d.id;
                    self.db(move |db| db.mark_corrupted(&id, &corruption))
                        .await?;
                    warn!(ws = %short, %reason, "image failed verification: workspace marked corrupted");
                    return Err(ManageError::Corrupted {
                        workspace: short,
                        version: d.version,
                        reason,
                    });
                }
                Err(err) => {
                    return Err(ManageError::Materialise {
                        workspace: short,
                        reason: err.to_string(),
                    });
                }
            }
        }
        let mat_ms = step(progress, "materialise", t);

        let t = Instant::now();
        let hot = d.image.memory_state.is_some();
        let state_path = layout.memory_state();
        let define_spec = spec.clone();
        let defined = self
            .hv(move |hv| {
                if hot {
                    hv.restore(&state_path, &define_spec, AfterRestore::Paused)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                } else {
                    hv.define(&define_spec)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
        defined.map_err(ManageError::Hypervisor)?;
        if hot {
            // Restored: the memory image is consumed (the guest moves on from it).
            let _ = tokio::fs::remove_file(layout.memory_state()).await;
        }
        let dep = Deployment {
            workspace: d.id,
            version: d.version,
            spec: StoredSpec::from(&spec),
            uri: self.hv.uri().to_owned(),
            saved: None,
            fencing_token: token,
            deployed_at: Timestamp::now(),
        };
        if let Err(err) = self.put(&dep).await {
            // Without its record the domain would be an orphan nobody manages.
            let name = spec.name.clone();
            let _ = self
                .hv(move |hv| {
                    let _ = hv.destroy(&name);
                    hv.undefine(&name)
                })
                .await;
            return Err(err);
        }
        let def_ms = step(progress, if hot { "restore" } else { "define" }, t);
        Ok((pull, materialised, [pull_ms, mat_ms, def_ms], hot))
    }

    async fn ws_state(
        &self,
        services: &Services,
        query: &str,
    ) -> Result<ManageResponse, ManageError> {
        let entry = crate::publish::resolve(services, query)
            .await
            .map_err(ManageError::Resolve)?;
        let d = entry.description.record();
        let id = d.id;
        let dep = self.db(move |db| db.get(&id)).await?;
        Ok(ManageResponse::State(self.state_of(d, dep.as_ref()).await))
    }

    /// Runs a plain lifecycle call and answers with the new state.
    async fn control(
        &self,
        d: &Description,
        dep: &Deployment,
        op: &'static str,
        act: fn(&dyn Hypervisor, &str) -> Result<(), HvControlError>,
    ) -> Result<ManageResponse, ManageError> {
        let name = dep.spec.name.clone();
        let done = self.hv(move |hv| act(hv, &name)).await?;
        if let Err(err) = done {
            return Err(match err {
                HvControlError::InvalidState { .. } => {
                    let (state, _) = self.observe(dep).await;
                    ManageError::WrongState {
                        op,
                        workspace: d.id.short(),
                        state,
                        hint: match op {
                            "start" => "unpause a paused workspace, stop a running one",
                            "pause" => "only a running workspace can be paused",
                            "unpause" => "only a paused workspace can be unpaused",
                            _ => "see `vwnet ws-state`",
                        },
                    }
                }
                other => ManageError::Hypervisor(other.to_string()),
            });
        }
        info!(ws = %d.id.short(), op, "done");
        Ok(ManageResponse::State(self.state_of(d, Some(dep)).await))
    }

    /// Restores a saved deployment running (start/unpause of a hot workspace).
    async fn restore_saved(
        &self,
        d: &Description,
        dep: &mut Deployment,
        saved: PathBuf,
    ) -> Result<ManageResponse, ManageError> {
        let spec = dep.spec.to_spec();
        let path = saved.clone();
        self.hv(move |hv| hv.restore(&path, &spec, AfterRestore::Running))
            .await?
            .map_err(|e| ManageError::Hypervisor(e.to_string()))?;
        dep.saved = None;
        self.put(dep).await?;
        let _ = tokio::fs::remove_file(&saved).await;
        Ok(ManageResponse::State(self.state_of(d, Some(dep)).await))
    }

    async fn start(&self, services: &Services, query: &str) -> Result<ManageResponse, ManageError> {
        let (entry, mut dep) = self.deployed(services, query).await?;
        let d = entry.description.record();
        let _claim = self.claim(d.id)?;
        lease::check(services, d, "start").await?;
        match dep.saved.clone() {
            Some(saved) => self.restore_saved(d, &mut dep, saved).await,
            None => self.control(d, &dep, "start", |hv, n| hv.start(n)).await,
        }
    }

    async fn unpause(
        &self,
        services: &Services,
        query: &str,
    ) -> Result<ManageResponse, ManageError> {
        let (entry, mut dep) = self.deployed(services, query).await?;
        let d = entry.description.record();
        let _claim = self.claim(d.id)?;
        lease::check(services, d, "unpause").await?;
        match dep.saved.clone() {
            Some(saved) => self.restore_saved(d, &mut dep, saved).await,
            None => self.control(d, &dep, "unpause", |hv, n| hv.resume(n)).await,
        }
    }

    async fn pause(&self, services: &Services, query: &str) -> Result<ManageResponse, ManageError> {
        let (entry, dep) = self.deployed(services, query).await?;
        let d = entry.description.record();
        let _claim = self.claim(d.id)?;
        self.control(d, &dep, "pause", |hv, n| hv.suspend(n)).await
    }

    async fn stop(
        &self,
        services: &Services,
        query: &str,
        force: bool,
    ) -> Result<ManageResponse, ManageError> {
        let (entry, mut dep) = self.deployed(services, query).await?;
        let d = entry.description.record();
        let _claim = self.claim(d.id)?;
        if let Some(saved) = dep.saved.take() {
            // Stopping a saved workspace discards its memory: it becomes a cold one.
            self.put(&dep).await?;
            let _ = tokio::fs::remove_file(&saved).await;
        }
        let name = dep.spec.name.clone();
        let n = name.clone();
        let state = self
            .hv(move |hv| hv.state(&n))
            .await?
            .map_err(|e| ManageError::Hypervisor(e.to_string()))?;
        if state.is_active() {
            if force || state == DomainState::Paused {
                // A paused guest cannot react to an ACPI request.
                let n = name.clone();
                self.hv(move |hv| hv.destroy(&n))
                    .await?
                    .map_err(|e| ManageError::Hypervisor(e.to_string()))?;
            } else {
                let n = name.clone();
                self.hv(move |hv| hv.shutdown(&n))
                    .await?
                    .map_err(|e| ManageError::Hypervisor(e.to_string()))?;
                let deadline = Instant::now() + STOP_GRACE;
                loop {
                    let n = name.clone();
                    let now = self.hv(move |hv| hv.state(&n)).await?;
                    if !matches!(now, Ok(s) if s.is_active()) {
                        break;
                    }
                    if Instant::now() >= deadline {
                        warn!(domain = %name, "guest ignored the shutdown request; destroying it");
                        let n = name.clone();
                        self.hv(move |hv| hv.destroy(&n))
                            .await?
                            .map_err(|e| ManageError::Hypervisor(e.to_string()))?;
                        break;
                    }
                    tokio::time::sleep(STOP_POLL).await;
                }
            }
        }
        info!(ws = %d.id.short(), "stopped");
        Ok(ManageResponse::State(self.state_of(d, Some(&dep)).await))
    }

    async fn save(&self, services: &Services, query: &str) -> Result<ManageResponse, ManageError> {
        let started = Instant::now();
        let (entry, mut dep) = self.deployed(services, query).await?;
        let d = entry.description.record();
        let _claim = self.claim(d.id)?;
        let layout = Layout::new(&self.images, &d.id);
        let name = dep.spec.name.clone();
        let path = layout.memory_state();
        let saved = self.hv(move |hv| hv.save(&name, &path)).await?;
        let saved = match saved {
            Ok(s) => s,
            Err(crate::hypervisor::SaveError::NotActive { state, .. }) => {
                return Err(ManageError::WrongState {
                    op: "save",
                    workspace: d.id.short(),
                    state: state.to_string(),
                    hint: "only a running or paused workspace can be saved",
                });
            }
            Err(e) => return Err(ManageError::Hypervisor(e.to_string())),
        };
        dep.saved = Some(saved.path.clone());
        self.put(&dep).await?;
        info!(ws = %d.id.short(), bytes = saved.bytes, "saved");
        Ok(ManageResponse::Saved(SaveReport {
            state: self.state_of(d, Some(&dep)).await,
            path: saved.path,
            bytes: saved.bytes,
            millis: millis(started),
        }))
    }

    async fn prepare_undeploy(
        &self,
        services: &Services,
        query: &str,
        migrate_to: Option<&str>,
    ) -> Result<ManageResponse, ManageError> {
        let started = Instant::now();
        let destination = migrate_to
            .map(|to| remote::destination(to).map(|(_, identity)| identity))
            .transpose()?;
        let (entry, dep) = self.deployed(services, query).await?;
        let d = entry.description.record();
        let _claim = self.claim(d.id)?;
        self.ensure_inactive(d, &dep, "publish").await?;
        let Some((disk_path, _, _)) = dep.spec.disks.first().cloned() else {
            return Err(ManageError::Store(
                "the workspace has no disk to publish".into(),
            ));
        };
        let ingest = |path: PathBuf| async move {
            services
                .store
                .ingest(path.clone())
                .await
                .map_err(|e| ManageError::Store(format!("{}: {e}", path.display())))
        };
        let disk = ingest(disk_path).await?;
        let mut new_bytes = disk.new_bytes;
        let memory_state = match &dep.saved {
            Some(path) => {
                let r = ingest(path.clone()).await?;
                new_bytes += r.new_bytes;
                Some(ImageRef {
                    id: r.image,
                    size: r.size,
                })
            }
            None => None,
        };
        let mut next = d.next_version(Timestamp::now());
        next.state = if memory_state.is_some() {
            State::Paused
        } else {
            State::Shutdown
        };
        next.image.disk = Some(ImageRef {
            id: disk.image,
            size: disk.size,
        });
        next.image.memory_state = memory_state;
        remote::set_migrate_to(&mut next, destination);
        let shape = adapter::SavedShape {
            domain: dep.spec.name.clone(),
            memory_mib: dep.spec.memory_mib,
            vcpus: dep.spec.vcpus,
        };
        adapter::set_saved_shape(&mut next, memory_state.map(|_| &shape));
        next.validate()
            .map_err(|e| ManageError::Store(format!("the next version is invalid: {e}")))?;
        info!(ws = %d.id.short(), version = next.version, new_bytes, "prepared the next version");
        Ok(ManageResponse::Draft(UndeployDraft {
            description: next.to_canonical_bytes(),
            disk: ImageRef {
                id: disk.image,
                size: disk.size,
            },
            memory_state,
            new_bytes,
            millis: millis(started),
        }))
    }

    /// Refuses while the domain runs or is paused in memory: its disk is still changing.
    async fn ensure_inactive(
        &self,
        d: &Description,
        dep: &Deployment,
        op: &'static str,
    ) -> Result<(), ManageError> {
        let name = dep.spec.name.clone();
        if let Ok(s) = self.hv(move |hv| hv.state(&name)).await?
            && s.is_active()
        {
            return Err(ManageError::WrongState {
                op,
                workspace: d.id.short(),
                state: s.to_string(),
                hint: "stop or save it first",
            });
        }
        Ok(())
    }

    async fn undeploy(
        &self,
        services: &Services,
        query: &str,
        signed: Option<Vec<u8>>,
    ) -> Result<ManageResponse, ManageError> {
        let started = Instant::now();
        let (entry, dep) = self.deployed(services, query).await?;
        let d = entry.description.record();
        let _claim = self.claim(d.id)?;
        self.ensure_inactive(d, &dep, "undeploy").await?;
        let published = match signed {
            Some(bytes) => {
                let record = SignedDescription::from_bytes(&bytes)
                    .map_err(|e| ManageError::Publish(e.to_string()))?
                    .verify(None, Timestamp::now())
                    .map_err(|e| ManageError::Publish(e.to_string()))?;
                if record.record().id != d.id {
                    return Err(ManageError::Publish(format!(
                        "the signed description is of workspace {}, not {}",
                        record.record().id.short(),
                        d.id.short()
                    )));
                }
                match crate::publish::publish(services, &bytes).await {
                    Response::Published { version, .. } => Some(version),
                    Response::Error(e) => return Err(ManageError::Publish(e)),
                    other => return Err(ManageError::Publish(format!("{other:?}"))),
                }
            }
            None => None,
        };
        let name = dep.spec.name.clone();
        let undefined = self.hv(move |hv| hv.undefine(&name)).await?;
        match undefined {
            Ok(()) | Err(HvControlError::NoSuchDomain { .. }) => {}
            Err(e) => return Err(ManageError::Hypervisor(e.to_string())),
        }
        lease::release(services, &d.id).await;
        let id = d.id;
        self.db(move |db| db.remove(&id)).await?;
        remove_dir(Layout::new(&self.images, &d.id).dir().to_owned()).await;
        info!(ws = %d.id.short(), ?published, "undeployed");
        Ok(ManageResponse::Undeployed(UndeployReport {
            workspace: d.id,
            published,
            millis: millis(started),
        }))
    }
}

/// Deletes a workspace directory, logging (not failing) when that is impossible: the domain is
/// already gone, and a leftover directory is only wasted space.
async fn remove_dir(dir: PathBuf) {
    let shown = dir.display().to_string();
    match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => warn!(dir = %shown, %e, "cannot remove a workspace directory"),
        Err(e) => warn!(dir = %shown, %e, "cannot remove a workspace directory"),
    }
}
