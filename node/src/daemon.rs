//! `vwnet node run`: wires the swarm, the store, the catalog and the control socket together.
//!
//! Tasks, each owning its part (no god-struct): the network [`EventLoop`](crate::network::EventLoop)
//! owns the swarm; the store actor owns the chunk store; the control server owns the socket; the
//! services loop here consumes network events and control calls and hands every piece of work
//! to its own task, so that one slow pull, upload or disk commit never delays the next event.
//! What those tasks share is [`Services`]: handles and small maps, no sockets.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libp2p::gossipsub::MessageAcceptance;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};
use vwnet_chunker::Store;
use vwnet_protocol::identity::Identity;
use vwnet_protocol::ids::{ImageId, PeerIdentity};
use vwnet_protocol::time::Timestamp;
use vwnet_protocol::wire::{
    self, CatalogEntry, CatalogRequest, CatalogResponse, ChunkReply, ChunkResponse,
    DescriptionAnnouncement, GossipMessage, Holdings, ManifestResponse, Refusal as WireRefusal,
    WireMessage,
};

use crate::catalog::{Catalog, CatalogError, Offer, Origin, Refusal};
use crate::config::{NODE_KEY, NodeConfig};
use crate::control::server::{BindError, ControlCall, ControlServer};
use crate::control::{NodeStatus, PeerInfo, Request, Response};
use crate::metrics::Metrics;
use crate::network::{self, Client, Event, GossipTopic, InboundRequest, NetworkError};
use crate::policy::{NodePolicy, PolicyDenied};
use crate::ratelimit::RateLimiter;
use crate::shutdown::{self, Signal, Trigger, signalled};
use crate::store_actor::StoreHandle;

/// Control calls queued before the control server waits.
const CALL_BUFFER: usize = 64;
/// How long shutdown waits for the event loop to close connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The home directory or node key could not be set up.
    #[error("{path}: {reason}")]
    Setup {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The chunk store could not be opened.
    #[error(transparent)]
    Store(#[from] vwnet_chunker::StoreError),
    /// The catalog could not be opened.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The network could not start.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The control socket could not be bound.
    #[error(transparent)]
    Control(#[from] BindError),
}

/// What the node's tasks share.
#[derive(Debug)]
pub struct Services {
    /// The validated configuration.
    pub config: NodeConfig,
    /// Our peer id.
    pub local_peer: PeerId,
    /// Our protocol identity (the same key as the peer id).
    pub identity: PeerIdentity,
    /// The swarm handle.
    pub net: Client,
    /// The store actor.
    pub store: StoreHandle,
    /// The durable catalog of workspaces.
    pub catalog: Catalog,
    /// Who may create, publish, deploy and manage here, and resource limits.
    pub policy: NodePolicy,
    /// Workspace pins and gc with the catalog's live set.
    pub lifetime: Arc<crate::lifetime::Lifetime>,
    /// Deploy locks: leases held here, authority state, lock records seen.
    pub locks: crate::locks::Locks,
    /// The workspace manager: the node's one hypervisor connection and its deployments.
    pub manager: crate::manager::Manager,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Upload slots: chunk responses being read or sent at once.
    pub uploads: Arc<Semaphore>,
    /// Upload byte rate.
    pub upload_rate: RateLimiter,
    /// Download byte rate.
    pub download_rate: RateLimiter,
    /// Connected peers and an address of each.
    pub peers: Mutex<HashMap<PeerId, Multiaddr>>,
    /// What each peer announced it holds of each image.
    pub holdings: Mutex<HashMap<ImageId, HashMap<PeerId, Holdings>>>,
    /// The site each peer named in its latest provider announcement (`None`: it has none).
    pub sites: Mutex<HashMap<PeerId, Option<String>>>,
    /// Stops the node.
    pub shutdown: Trigger,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold plain data; a panicked writer leaves nothing worth refusing to read.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Services {
    /// Runs blocking catalog work off the runtime's workers.
    pub async fn with_catalog<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, CatalogError> {
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || f(&catalog))
            .await
            .unwrap_or_else(|e| {
                Err(CatalogError::Corrupt {
                    workspace: "-".into(),
                    reason: format!("catalog task failed: {e}"),
                })
            })
    }

    /// Records a peer's holdings of an image.
    pub fn set_holdings(&self, image: ImageId, peer: PeerId, holdings: Holdings) {
        lock(&self.holdings)
            .entry(image)
            .or_default()
            .insert(peer, holdings);
    }

    /// Records the site a peer announced with its holdings.
    pub fn set_site(&self, peer: PeerId, site: Option<String>) {
        lock(&self.sites).insert(peer, site);
    }

    /// The site a peer announced: `None` if it announced none or was never heard from.
    pub fn site_of(&self, peer: &PeerId) -> Option<String> {
        lock(&self.sites).get(peer).cloned().flatten()
    }

    /// What peers announced for `image`.
    pub fn holdings_of(&self, image: &ImageId) -> HashMap<PeerId, Holdings> {
        lock(&self.holdings).get(image).cloned().unwrap_or_default()
    }

    /// Connected peers.
    pub fn connected(&self) -> Vec<PeerId> {
        lock(&self.peers).keys().copied().collect()
    }

    /// Announces on gossip what we hold of `image`.
    pub async fn announce_holdings(&self, image: ImageId, holdings: Holdings) {
        let message = GossipMessage::Provider(wire::ProviderAnnouncement {
            image,
            provider: self.identity,
            holdings,
            site: self.config.site().map(str::to_owned),
        });
        self.gossip(GossipTopic::Providers, &message).await;
    }

    /// Publishes a gossip message, logging (not failing) when that is impossible.
    pub async fn gossip(&self, topic: GossipTopic, message: &GossipMessage) {
        match message.encode() {
            Ok(bytes) => {
                if let Err(err) = self.net.publish(topic, bytes).await {
                    debug!(%err, "gossip publish failed");
                }
            }
            Err(err) => warn!(%err, "cannot encode a gossip message"),
        }
    }
}

/// Reads the node key from `<home>/node.key`, creating it (mode 0600) on first start.
pub fn load_or_create_node_key(home: &Path) -> Result<Identity, DaemonError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join(NODE_KEY);
    let setup = |reason: String| DaemonError::Setup {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Identity::from_key_file(&text).map_err(|e| setup(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity::generate();
            // create_new: two nodes racing on one home never overwrite each other's key.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| setup(e.to_string()))?;
            file.write_all(identity.to_key_file().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| setup(e.to_string()))?;
            Ok(identity)
        }
        Err(e) => Err(setup(e.to_string())),
    }
}

fn create_home(home: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(|e| DaemonError::Setup {
            path: home.display().to_string(),
            reason: e.to_string(),
        })
}

/// Fires `trigger` on SIGINT or SIGTERM.
fn watch_signals(trigger: Trigger) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT: shutting down"),
            _ = term.recv() => info!("SIGTERM: shutting down"),
        }
        let _ = trigger.send(true);
    });
    Ok(())
}

/// Runs a node until SIGINT, SIGTERM or a control `Shutdown` request.
pub async fn run(config: NodeConfig) -> Result<(), DaemonError> {
    create_home(config.home())?;
    let identity = load_or_create_node_key(config.home())?;
    // Bind the socket first: a second node on the same home fails here, cleanly, before it
    // touches the store or the network.
    let control = ControlServer::bind(&config.control_socket()).await?;
    let store_dir = config.store_dir();
    let store = tokio::task::spawn_blocking(move || Store::open(store_dir))
        .await
        .map_err(|e| DaemonError::Setup {
            path: config.store_dir().display().to_string(),
            reason: e.to_string(),
        })??;
    let db = config.node_db();
    let catalog = tokio::task::spawn_blocking(move || Catalog::open(&db))
        .await
        .map_err(|e| DaemonError::Setup {
            path: config.node_db().display().to_string(),
            reason: e.to_string(),
        })??;

    let (home, file) = (
        config.home().to_owned(),
        config.policy_file().map(Path::to_owned),
    );
    let (node_key, resource_limits) = (identity.public(), config.resource_limits());
    let policy = tokio::task::spawn_blocking(move || {
        NodePolicy::load(&home, file.as_deref(), node_key, resource_limits)
    })
    .await
    .map_err(|e| DaemonError::Setup {
        path: "policy".into(),
        reason: e.to_string(),
    })?
    .map_err(|e| DaemonError::Setup {
        path: "policy".into(),
        reason: e.to_string(),
    })?;
    info!(%policy, "policy loaded");
    let (home, gc_store) = (config.home().to_owned(), store.clone());
    let lifetime = tokio::task::spawn_blocking(move || {
        crate::lifetime::Lifetime::open(&home, gc_store).map(Arc::new)
    })
    .await
    .map_err(|e| DaemonError::Setup {
        path: crate::lifetime::PINS_FILE.into(),
        reason: e.to_string(),
    })?
    .map_err(|e| DaemonError::Setup {
        path: crate::lifetime::PINS_FILE.into(),
        reason: e.to_string(),
    })?;

    // ONE hypervisor connection for the node's lifetime: the test driver's machine lives only
    // in the process (and while a connection is open). libvirt calls block: off the runtime.
    let (home, uri) = (config.home().to_owned(), config.hypervisor().to_owned());
    let manager = tokio::task::spawn_blocking(move || {
        let hv =
            crate::hypervisor::LibvirtHypervisor::open(&uri).map_err(|e| DaemonError::Setup {
                path: uri.clone(),
                reason: e.to_string(),
            })?;
        crate::manager::Manager::open(&home, Arc::new(hv)).map_err(|e| DaemonError::Setup {
            path: home.display().to_string(),
            reason: e.to_string(),
        })
    })
    .await
    .map_err(|e| DaemonError::Setup {
        path: "hypervisor".into(),
        reason: e.to_string(),
    })??;
    manager.reconcile().await;
    info!(hypervisor = %manager.uri(), "hypervisor connected");

    let (trigger, signal) = shutdown::channel();
    watch_signals(trigger.clone()).map_err(|e| DaemonError::Setup {
        path: "signals".into(),
        reason: e.to_string(),
    })?;
    let (net, mut events, event_loop) = network::new(&identity, &config, signal.clone())?;
    let net_task = tokio::spawn(event_loop.run());

    let (home, lock_catalog, lock_net) = (config.home().to_owned(), catalog.clone(), net.clone());
    let (lock_key, lease) = (
        Identity::from_secret_bytes(&identity.secret_bytes()),
        config.lock_lease(),
    );
    let locks = tokio::task::spawn_blocking(move || {
        crate::locks::Locks::open(&home, &lock_key, lock_catalog, lock_net, lease)
    })
    .await
    .map_err(|e| DaemonError::Setup {
        path: crate::locks::LOCKS_DB.into(),
        reason: e.to_string(),
    })?
    .map_err(|e| DaemonError::Setup {
        path: crate::locks::LOCKS_DB.into(),
        reason: e.to_string(),
    })?;
    if let Err(err) = locks.resume().await {
        warn!(%err, "cannot resume the leases held before the restart");
    }

    let limits = config.limits();
    let metrics = Arc::new(Metrics::default());
    let services = Arc::new(Services {
        local_peer: network::keypair(&identity).public().to_peer_id(),
        identity: identity.public(),
        net,
        lifetime,
        store: StoreHandle::spawn(store),
        catalog,
        policy,
        locks,
        manager,
        metrics: metrics.clone(),
        uploads: Arc::new(Semaphore::new(limits.max_concurrent_uploads)),
        upload_rate: RateLimiter::new(limits.upload_bytes_per_sec),
        download_rate: RateLimiter::new(limits.download_bytes_per_sec),
        peers: Mutex::new(HashMap::new()),
        holdings: Mutex::new(HashMap::new()),
        sites: Mutex::new(HashMap::new()),
        shutdown: trigger.clone(),
        config,
    });
    info!(peer = %services.local_peer, identity = %services.identity, "node started");

    let (call_tx, mut calls) = mpsc::channel(CALL_BUFFER);
    let control_task = tokio::spawn(control.serve(call_tx, signal.clone()));
    if let Some(addr) = services.config.metrics() {
        let shutdown = signal.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::metrics::serve(addr, metrics, shutdown).await {
                warn!(%addr, %err, "metrics endpoint failed");
            }
        });
    }
    // Images already complete in the store are announced once the mesh has formed.
    tokio::spawn(reannounce(services.clone(), signal.clone()));

    let mut stop = signal.clone();
    loop {
        tokio::select! {
            _ = signalled(&mut stop) => break,
            event = events.recv() => match event {
                Some(event) => handle_event(&services, event),
                None => break,
            },
            call = calls.recv() => match call {
                Some(call) => {
                    let services = services.clone();
                    tokio::spawn(async move { handle_call(services, call).await });
                }
                None => break,
            },
        }
    }
    let _ = trigger.send(true);
    // The event loop drops the swarm (closing connections) on the signal; give it a moment.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, net_task).await;
    // Awaiting the server drops it, which removes the socket file.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, control_task).await;
    info!("node stopped");
    Ok(())
}

/// Periodically re-announces complete images: peers that joined after the first announcement,
/// and gossip meshes that formed late, learn about them without asking.
async fn reannounce(services: Arc<Services>, mut stop: Signal) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut provided = std::collections::HashSet::new();
    let mut rounds = 0usize;
    loop {
        tokio::select! {
            _ = signalled(&mut stop) => return,
            _ = tick.tick() => {}
        }
        // Anti-entropy: gossip is fire-and-forget (a message dropped while a peer was
        // graylisted or briefly disconnected is never resent), so every other round the
        // catalog is compared with one connected peer, in turn.
        rounds += 1;
        if rounds.is_multiple_of(2) {
            let mut peers = services.connected();
            peers.sort();
            if !peers.is_empty() {
                let peer = peers[(rounds / 2) % peers.len()];
                let services = services.clone();
                tokio::spawn(async move { sync_catalog(&services, peer).await });
            }
        }
        let Ok(images) = services.store.images().await else {
            continue;
        };
        for image in images.into_iter().filter(|i| i.complete) {
            if provided.insert(image.id)
                && let Err(err) = services
                    .net
                    .start_providing(network::behaviour::provider_key(&image.id))
                    .await
            {
                debug!(%err, "start providing failed");
            }
            services
                .announce_holdings(image.id, Holdings::Complete)
                .await;
        }
    }
}

fn handle_event(services: &Arc<Services>, event: Event) {
    match event {
        Event::Listening { addr } => {
            info!(%addr, peer = %services.local_peer, "listening");
        }
        Event::PeerConnected { peer, addr } => {
            lock(&services.peers).insert(peer, addr);
            let services = services.clone();
            tokio::spawn(async move { sync_catalog(&services, peer).await });
        }
        Event::PeerDisconnected { peer } => {
            lock(&services.peers).remove(&peer);
            // What it announced is stale now; it announces again when it comes back.
            for holders in lock(&services.holdings).values_mut() {
                holders.remove(&peer);
            }
        }
        Event::Gossip {
            message_id,
            source,
            origin,
            data,
            ..
        } => {
            let services = services.clone();
            tokio::spawn(async move {
                let verdict = validate_gossip(&services, origin, &data).await;
                if verdict == MessageAcceptance::Reject {
                    Metrics::add(&services.metrics.gossip_rejected, 1);
                }
                let _ = services
                    .net
                    .report_validation(message_id, source, verdict)
                    .await;
            });
        }
        Event::Inbound(request) => {
            let services = services.clone();
            tokio::spawn(async move { serve_inbound(&services, request).await });
        }
    }
}

/// Checks a gossip message as the application: decode, verify, policy, catalog rules.
async fn validate_gossip(
    services: &Services,
    origin: Option<PeerId>,
    data: &[u8],
) -> MessageAcceptance {
    let message = match GossipMessage::decode(data) {
        Ok(m) => m,
        Err(err) => {
            debug!(%err, "rejecting malformed gossip");
            return MessageAcceptance::Reject;
        }
    };
    match message {
        GossipMessage::Description(announcement) => {
            match accept_description(services, &announcement, Origin::Remote).await {
                Ok(Offer::Accepted) => MessageAcceptance::Accept,
                // Already known, or an old version replayed: drop without blame (it may be
                // an honest late echo).
                Ok(Offer::Duplicate) | Ok(Offer::Refused(Refusal::Stale { .. })) => {
                    MessageAcceptance::Ignore
                }
                Ok(Offer::Refused(Refusal::Expired(_))) => MessageAcceptance::Ignore,
                Ok(Offer::Refused(refusal)) => {
                    warn!(%refusal, "rejecting a gossiped description");
                    MessageAcceptance::Reject
                }
                Err(AcceptError::Invalid(reason)) => {
                    warn!(%reason, "rejecting a gossiped description");
                    MessageAcceptance::Reject
                }
                // Not relayed, and the sender's score drops: it forwarded what we refuse.
                Err(AcceptError::Denied(denied)) => {
                    warn!(%denied, ?origin, "rejecting a gossiped description");
                    MessageAcceptance::Reject
                }
                Err(AcceptError::Catalog(err)) => {
                    warn!(%err, "catalog failed; ignoring a gossiped description");
                    MessageAcceptance::Ignore
                }
            }
        }
        GossipMessage::Lock(lock) => match services.locks.observe(&lock).await {
            crate::locks::Observation::Newer => MessageAcceptance::Accept,
            crate::locks::Observation::Invalid(reason) => {
                warn!(%reason, ?origin, "rejecting a gossiped lock record");
                MessageAcceptance::Reject
            }
            // Echoes, overtaken records and workspaces we cannot judge: not forwarded, no
            // blame (an honest peer may simply know more than we do).
            _ => MessageAcceptance::Ignore,
        },
        GossipMessage::Provider(announcement) => {
            // Only the provider itself may announce its holdings; gossipsub signed the
            // message with the origin's key, which is the provider's identity.
            let Some(origin) = origin else {
                return MessageAcceptance::Reject;
            };
            if network::peer_identity(&origin) != Some(announcement.provider) {
                return MessageAcceptance::Reject;
            }
            if origin != services.local_peer {
                services.set_site(origin, announcement.site);
                services.set_holdings(announcement.image, origin, announcement.holdings);
            }
            MessageAcceptance::Accept
        }
    }
}

/// Why a description was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Signature, delegation or content is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The node's policy does not allow its publication (by its signer).
    #[error(transparent)]
    Denied(#[from] PolicyDenied),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Verifies a description announcement and offers it to the catalog.
pub async fn accept_description(
    services: &Services,
    announcement: &DescriptionAnnouncement,
    origin: Origin,
) -> Result<Offer, AcceptError> {
    let now = Timestamp::now();
    let verified = announcement
        .description
        .verify(announcement.delegation.as_ref(), now)
        .map_err(|e| AcceptError::Invalid(e.to_string()))?;
    verified
        .record()
        .validate()
        .map_err(|e| AcceptError::Invalid(e.to_string()))?;
    // Gossip and catalog exchange carry no attribute certificates: only identity and
    // everyone rules can allow a remote publication.
    if let Err(denied) = services.policy.check(
        vwnet_protocol::acl::Action::Publish,
        verified.signer(),
        &[],
        verified.record(),
        now,
    ) {
        Metrics::add(&services.metrics.descriptions_denied, 1);
        return Err(denied.into());
    }
    let offer = services
        .with_catalog(move |c| c.offer(&verified, origin, now))
        .await?;
    Ok(offer)
}

/// Catalog exchange with a newly connected peer: fetch every description it holds in a
/// newer version than ours. This is how a node that joins late learns what was published
/// before it came (gossip only carries what is published while one listens).
async fn sync_catalog(services: &Services, peer: PeerId) {
    let mut after = None;
    loop {
        let response = match services
            .net
            .request_catalog(peer, CatalogRequest::List { after })
            .await
        {
            Ok(r) => r,
            Err(err) => {
                debug!(%peer, %err, "catalog exchange failed");
                return;
            }
        };
        let CatalogResponse::Entries { entries, more } = response else {
            return;
        };
        after = entries.last().map(|e| e.workspace);
        for entry in entries {
            let workspace = entry.workspace;
            let held = services
                .with_catalog(move |c| c.get(&workspace))
                .await
                .ok()
                .flatten()
                .map(|e| e.description.version);
            if held.is_some_and(|v| v >= entry.version) {
                continue;
            }
            match services
                .net
                .request_catalog(peer, CatalogRequest::Get { workspace })
                .await
            {
                Ok(CatalogResponse::Description(announcement)) => {
                    match accept_description(services, &announcement, Origin::Remote).await {
                        Ok(offer) => {
                            debug!(%peer, ws = %workspace.short(), ?offer, "catalog entry")
                        }
                        Err(err) => {
                            warn!(%peer, ws = %workspace.short(), %err, "peer's catalog entry refused")
                        }
                    }
                }
                Ok(other) => debug!(%peer, ?other, "unexpected catalog answer"),
                Err(err) => debug!(%peer, %err, "catalog get failed"),
            }
        }
        if !more || after.is_none() {
            return;
        }
    }
}

async fn serve_inbound(services: &Arc<Services>, request: InboundRequest) {
    match request {
        InboundRequest::Chunks {
            peer,
            request_id,
            request,
            channel,
        } => {
            // Refused cheaply when every upload slot is busy: the downloader asks elsewhere.
            // A slot is held until the response has been sent, so the slots bound the bytes
            // queued here for peers, not only the reads from the store.
            let Ok(slot) = Arc::clone(&services.uploads).try_acquire_owned() else {
                Metrics::add(&services.metrics.uploads_refused, 1);
                let busy = ChunkResponse::Refused(WireRefusal::Busy);
                let _ = services
                    .net
                    .respond_chunks(channel, request_id, busy, None)
                    .await;
                return;
            };
            let corrupt = services.config.fault_corrupt_uploads();
            let response = match services.store.read_chunks(request.hashes).await {
                Ok(found) => {
                    let mut budget = wire::MAX_CHUNK_RESPONSE_DATA;
                    let replies: Vec<ChunkReply> = found
                        .into_iter()
                        .map(|bytes| match bytes {
                            Some(mut b) if b.len() <= budget => {
                                budget -= b.len();
                                if corrupt && let Some(first) = b.first_mut() {
                                    *first ^= 0xff;
                                }
                                ChunkReply::Found(b)
                            }
                            Some(_) => ChunkReply::OverBudget,
                            None => ChunkReply::Missing,
                        })
                        .collect();
                    let sent: usize = replies
                        .iter()
                        .map(|r| match r {
                            ChunkReply::Found(b) => b.len(),
                            _ => 0,
                        })
                        .sum();
                    services.upload_rate.acquire(sent as u64).await;
                    services.metrics.bytes_out(&peer.to_string(), sent as u64);
                    ChunkResponse::Chunks(replies)
                }
                Err(err) => {
                    warn!(%err, "reading chunks for a peer failed");
                    ChunkResponse::Refused(WireRefusal::Busy)
                }
            };
            let _ = services
                .net
                .respond_chunks(channel, request_id, response, Some(slot))
                .await;
        }
        InboundRequest::Manifest {
            request, channel, ..
        } => {
            let response = match services.store.manifest(request.image).await {
                Ok(Some(m)) => ManifestResponse::Found(m.to_bytes()),
                Ok(None) => ManifestResponse::Missing,
                Err(err) => {
                    warn!(%err, "reading a manifest for a peer failed");
                    ManifestResponse::Refused(WireRefusal::Busy)
                }
            };
            let _ = services.net.respond_manifest(channel, response).await;
        }
        InboundRequest::Catalog {
            request, channel, ..
        } => {
            let response = catalog_answer(services, request).await;
            let _ = services.net.respond_catalog(channel, response).await;
        }
        InboundRequest::Lock {
            peer,
            request,
            channel,
        } => {
            // The requester is the noise-authenticated peer, never a field it chose.
            let response = match network::peer_identity(&peer) {
                Some(requester) => services.locks.serve(requester, request).await,
                None => wire::LockResponse::Refused(WireRefusal::Forbidden),
            };
            let _ = services.net.respond_lock(channel, response).await;
        }
        InboundRequest::Deploy {
            peer,
            request,
            channel,
        } => crate::manager::remote::serve(services, peer, *request, channel).await,
    }
}

async fn catalog_answer(services: &Services, request: CatalogRequest) -> CatalogResponse {
    let now = Timestamp::now();
    match request {
        CatalogRequest::List { after } => {
            let Ok(list) = services.with_catalog(move |c| c.list()).await else {
                return CatalogResponse::Refused(WireRefusal::Busy);
            };
            let mut entries: Vec<CatalogEntry> = list
                .iter()
                .filter(|e| after.is_none_or(|a| e.description.id > a))
                .filter(|e| !e.description.is_expired(now))
                .map(|e| CatalogEntry {
                    workspace: e.description.id,
                    version: e.description.version,
                    digest: e.description.digest(),
                })
                .collect();
            entries.sort_by_key(|e| e.workspace);
            let more = entries.len() > wire::MAX_CATALOG_ENTRIES;
            entries.truncate(wire::MAX_CATALOG_ENTRIES);
            CatalogResponse::Entries { entries, more }
        }
        CatalogRequest::Get { workspace } => {
            match services.with_catalog(move |c| c.get(&workspace)).await {
                Ok(Some(entry)) => {
                    CatalogResponse::Description(Box::new(DescriptionAnnouncement {
                        description: entry.description.signed().clone(),
                        delegation: entry.description.delegation().map(|d| d.signed().clone()),
                    }))
                }
                Ok(None) => CatalogResponse::Missing,
                Err(_) => CatalogResponse::Refused(WireRefusal::Busy),
            }
        }
    }
}

async fn handle_call(services: Arc<Services>, call: ControlCall) {
    let ControlCall { request, reply } = call;
    let response = match request {
        Request::Status => status(&services).await,
        Request::Shutdown => {
            let _ = services.shutdown.send(true);
            Response::Done
        }
        Request::Ingest { path } => crate::publish::ingest(&services, path).await,
        Request::Publish { signed } => crate::publish::publish(&services, &signed).await,
        Request::List { remote } => crate::publish::list(&services, remote).await,
        Request::Inspect { workspace } => crate::publish::inspect(&services, &workspace).await,
        Request::Pull { workspace, version } => {
            crate::pull::pull(&services, &workspace, version, reply.clone()).await
        }
        Request::Manage(request) => crate::manager::handle(&services, request, reply.clone()).await,
        Request::LockAcquire { workspace } => {
            crate::locks::control::acquire(&services, &workspace).await
        }
        Request::LockRelease { workspace } => {
            crate::locks::control::release(&services, &workspace).await
        }
        Request::LockShow { workspace } => crate::locks::control::show(&services, &workspace).await,
        Request::Create { signed, certs } => {
            crate::factory::create(&services, &signed, &certs).await
        }
        Request::Pin { workspace, pinned } => {
            crate::factory::pin(&services, &workspace, pinned).await
        }
        Request::Gc => crate::factory::gc(&services).await,
        Request::Extend {
            signed,
            delegation,
            certs,
        } => crate::factory::extend(&services, &signed, delegation.as_deref(), &certs).await,
        Request::Signed { workspace } => crate::factory::signed(&services, &workspace).await,
        Request::Export { image, path } => match services.store.export(image, path).await {
            Ok(_) => Response::Done,
            Err(err) => Response::Error(err.to_string()),
        },
    };
    let _ = reply.send(response).await;
}

async fn status(services: &Services) -> Response {
    let info = match services.net.info().await {
        Ok(info) => info,
        Err(err) => return Response::Error(err.to_string()),
    };
    let workspaces = services
        .with_catalog(move |c| c.list())
        .await
        .map_or(0, |l| l.len() as u64);
    let addrs = lock(&services.peers).clone();
    Response::Status(NodeStatus {
        peer_id: info.peer_id.to_string(),
        identity: services.identity.to_string(),
        listen: info.listen.iter().map(ToString::to_string).collect(),
        peers: info
            .peers
            .iter()
            .map(|p| PeerInfo {
                peer_id: p.to_string(),
                addr: addrs.get(p).map(ToString::to_string).unwrap_or_default(),
            })
            .collect(),
        workspaces,
        pulls_in_progress: services
            .metrics
            .pulls_in_progress
            .load(std::sync::atomic::Ordering::Relaxed),
    })
}
