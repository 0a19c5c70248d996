//! `vwnet pull`: the driver that runs the sans-IO [`Downloader`] against the swarm.
//!
//! The downloader decides what to ask of whom and when to give up; this module only does the
//! I/O it asks for. Each request runs in its own task (rate-limited, then sent through the
//! network client, dropped when the downloader cancels it); its chunks are hashed on the
//! blocking pool and only those that match are appended to the pull's [`WriteSession`] before
//! the outcome is reported back, so nothing unverified is ever stored.
//!
//! **Durability is batched**: appended chunks are fsync'd and indexed together every
//! [`COMMIT_BYTES`] or [`COMMIT_EVERY`], whichever comes first, instead of once per response.
//! A chunk is *acknowledged* — counted in the summary, marked held, announced to peers, served
//! — only once its commit returned; a crash loses at most the unacknowledged tail, which the
//! next pull fetches again. Around that loop:
//!
//! - **Sources**: DHT providers (complete holders) and gossip provider announcements (partial
//!   holders with a bitmap, indexed by the downloader catalog's chunk order, which every node
//!   derives identically from the manifest).
//! - **Sites**: a node started with `--site` labels each source local or remote by the site in
//!   its announcements (unknown counts as remote) and gives the downloader its own id, which
//!   then fetches across sites only what no same-site peer holds, about once per site.
//! - **Swarming**: while pulling, the node announces its own bitmap when its committed chunks
//!   grew, at most every [`announce_interval`] (500 ms in a small swarm, longer in a big one),
//!   and it serves any chunk it holds, so pullers feed each other.
//! - **Resume**: a new pull starts from what the store holds (every committed batch).
//! - **Accounting**: `bytes_fetched` and `per_peer` count each stored chunk once, credited to
//!   the peer whose copy was stored; endgame duplicates and copies of chunks that were already
//!   stored count nowhere. All-zero chunks are never transferred or stored (export writes
//!   holes): they are reported as `bytes_zero`, not as fetched or local.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use vwnet_chunker::Manifest;
use vwnet_protocol::description::ImageRef;
use vwnet_protocol::ids::{ChunkHash, ImageId};
use vwnet_protocol::time::Timestamp;
use vwnet_protocol::wire::{
    self, ChunkReply, ChunkRequest, ChunkResponse, Holdings, ManifestRequest, ManifestResponse,
    Refusal as WireRefusal,
};

use crate::control::{PullOverhead, PullProgress, PullSummary, Response};
use crate::daemon::Services;
use crate::downloader::{
    Action, ChunkIdx, ChunkOutcome, ChunkTable as ChunkCatalog, Config as DlConfig, Downloader,
    Failure, Holds, Locality, RequestId,
};
use crate::metrics::Metrics;
use crate::network::{RequestError, behaviour::provider_key};
use crate::publish::{images_of, resolve};
use crate::store_actor::{ChunkVerdict, StoreActorError, WriteSession};

/// How often sources are refreshed, holdings announced and progress reported.
const TICK: Duration = Duration::from_millis(500);
/// Holdings announcements a node should receive per second from the pullers of one image,
/// whatever their number. Every gossip copy costs its receiver an ed25519 verification before
/// deduplication, so a fixed per-puller rate grows the swarm's gossip cost with the square of
/// its size: at 16 pullers and 500 ms it was an eighth of the machine's CPU.
const ANNOUNCEMENTS_PER_SEC: u32 = 8;
/// How often the DHT is asked for providers.
const PROVIDER_QUERY_EVERY: Duration = Duration::from_secs(3);
/// How long a pull waits with no peer holding the remaining chunks before it fails.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Received bytes after which a commit (fsync + index) starts. Large enough that the fsync and
/// the index transaction are a small share of the transfer, small enough that a crash loses
/// little.
pub const COMMIT_BYTES: u64 = 64 << 20;
/// A commit also starts this long after the last one, so that slow pulls still make progress
/// durable (and visible to peers) often.
pub const COMMIT_EVERY: Duration = Duration::from_millis(250);

/// What a pull remembers about each stored chunk until its commit: which chunk, which peer's
/// copy, how long.
type Tag = (ChunkIdx, PeerId, u32);

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// No peer could provide the manifest.
    #[error("image {0}: no reachable peer has its manifest")]
    NoManifest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreActorError),
    /// The manifest cannot be scheduled.
    #[error("image {image}: {reason}")]
    Schedule {
        /// The image.
        image: String,
        /// Why.
        reason: String,
    },
    /// Chunks stayed unavailable for too long.
    #[error("image {image}: {chunks} chunks are held by no reachable peer")]
    Stalled {
        /// The image.
        image: String,
        /// How many chunks are missing.
        chunks: usize,
    },
}

/// Running totals over the images of one pull.
#[derive(Debug, Default)]
struct Totals {
    fetched: u64,
    local: u64,
    zero: u64,
    per_peer: HashMap<PeerId, u64>,
    overhead: PullOverhead,
}

/// `Request::Pull`: fetch every image of a workspace; progress goes to `progress`.
pub async fn pull(
    services: &Arc<Services>,
    query: &str,
    version: Option<u64>,
    progress: mpsc::Sender<Response>,
) -> Response {
    let entry = match resolve(services, query).await {
        Ok(e) => e,
        Err(err) => return Response::Error(err),
    };
    let d = entry.description.record().clone();
    if let Some(v) = version
        && v != d.version
    {
        return Response::Error(format!(
            "workspace {}: version {v} is not available (this node accepted version {})",
            d.id.short(),
            d.version
        ));
    }
    if d.is_expired(Timestamp::now()) {
        return Response::Error(format!(
            "workspace {}: its lifeCycle has ended",
            d.id.short()
        ));
    }
    let started = Instant::now();
    let _gauge = Gauge::up(&services.metrics);
    let mut totals = Totals::default();
    for image in images_of(&d) {
        if let Err(err) = pull_image(services, image, &progress, &mut totals).await {
            warn!(%err, "pull failed");
            return Response::Error(err.to_string());
        }
    }
    let mut per_peer: Vec<(String, u64)> = totals
        .per_peer
        .iter()
        .map(|(p, b)| (p.to_string(), *b))
        .collect();
    per_peer.sort();
    info!(ws = %d.id.short(), fetched = totals.fetched, local = totals.local, "pull complete");
    Response::Pulled(PullSummary {
        workspace: d.id,
        version: d.version,
        bytes_fetched: totals.fetched,
        bytes_local: totals.local,
        bytes_zero: totals.zero,
        per_peer,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        overhead: totals.overhead,
    })
}

/// Keeps the pulls-in-progress gauge right even when a pull returns early.
struct Gauge<'a>(&'a Metrics);

impl<'a> Gauge<'a> {
    fn up(m: &'a Metrics) -> Self {
        Metrics::add(&m.pulls_in_progress, 1);
        Self(m)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.pulls_in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gets the manifest of `image`: from the store, or from the first peer that has it. The
/// bytes are checked against the id the signed description names before they are stored.
async fn fetch_manifest(services: &Services, image: ImageId) -> Result<Manifest, PullError> {
    if let Some(m) = services.store.manifest(image).await? {
        return Ok(m);
    }
    // Peers that announced the image and direct neighbours first: asking them costs one round
    // trip, while a DHT query may wait on unreachable entries of the routing table.
    let mut tried = HashSet::from([services.local_peer]);
    let mut candidates: Vec<PeerId> = services.holdings_of(&image).into_keys().collect();
    candidates.extend(services.connected());
    for round in 0..2 {
        if round == 1 {
            candidates = services
                .net
                .get_providers(provider_key(&image))
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
        }
        for peer in candidates.drain(..) {
            if !tried.insert(peer) {
                continue;
            }
            match services
                .net
                .request_manifest(peer, ManifestRequest { image })
                .await
            {
                Ok(ManifestResponse::Found(bytes)) => {
                    match services.store.add_manifest(image, bytes).await {
                        Ok(m) => return Ok(m),
                        Err(err) => warn!(%peer, %err, "peer sent a bad manifest"),
                    }
                }
                Ok(other) => debug!(%peer, ?other, "no manifest"),
                Err(err) => debug!(%peer, %err, "manifest request failed"),
            }
        }
    }
    Err(PullError::NoManifest(image.short()))
}

/// What one chunk request came back with.
enum Outcome {
    Answered {
        peer: PeerId,
        id: RequestId,
        outcomes: Vec<(ChunkIdx, ChunkOutcome)>,
    },
    Failed {
        peer: PeerId,
        id: RequestId,
        failure: Failure,
    },
    /// The downloader cancelled the request before its response arrived.
    Cancelled(RequestId),
    Fatal(PullError),
}

/// The downloader settings of every pull, with a random tie-break seed; public so that the
/// simulator (`simulations/`) schedules with exactly these.
pub fn downloader_config() -> Result<DlConfig, crate::downloader::ConfigError> {
    // Requests must fit the wire limits: the responder sends at most this many chunks and
    // bytes, and the rest of a larger request would come back as OverBudget.
    DlConfig::builder()
        .max_request_chunks(wire::MAX_CHUNKS_PER_REQUEST)
        .max_request_bytes(wire::MAX_CHUNK_RESPONSE_DATA as u64)
        // Enough in flight per peer to cover a round trip plus the responder's disk read and
        // our hash-and-commit of the previous batch.
        .max_requests_per_peer(8)
        .max_bytes_per_peer(32 << 20)
        .request_timeout(Duration::from_secs(20))
        .ban_duration(Duration::from_secs(600))
        .seed(rand_seed())
        .build()
}

/// A per-pull seed so that concurrent pullers start in different places (swarming).
fn rand_seed() -> u64 {
    let mut seed = [0u8; 8];
    // Time-based fallback if the OS source fails: the seed only spreads load.
    if getrandom::fill(&mut seed).is_err() {
        return Timestamp::now().as_unix_secs() ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(seed)
}

async fn pull_image(
    services: &Arc<Services>,
    image: ImageRef,
    progress: &mpsc::Sender<Response>,
    totals: &mut Totals,
) -> Result<(), PullError> {
    let schedule_err = |reason: String| PullError::Schedule {
        image: image.id.short(),
        reason,
    };
    let manifest = fetch_manifest(services, image.id).await?;
    let catalog = Arc::new(
        ChunkCatalog::new(
            manifest
                .chunks()
                .iter()
                .filter(|c| !c.zero)
                .map(|c| (c.hash, c.len)),
        )
        .map_err(|e| schedule_err(e.to_string()))?,
    );
    let hashes: Vec<ChunkHash> = (0..catalog.len() as u32)
        .filter_map(|i| catalog.hash(ChunkIdx(i)))
        .collect();
    let mut held = services.store.has_chunks(hashes).await?;
    let local: Vec<ChunkIdx> = held
        .iter()
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(i, _)| ChunkIdx(i as u32))
        .collect();
    let config = downloader_config().map_err(|e| schedule_err(e.to_string()))?;
    let mut dl: Downloader<PeerId> =
        Downloader::new(config, catalog.clone(), local).map_err(|e| schedule_err(e.to_string()))?;
    if services.config.site().is_some() {
        // Rank ourselves among our site's pullers for the chunks fetched across sites.
        dl.set_own_id(&services.local_peer);
    }
    totals.local += dl.stats().bytes_local;
    totals.zero += manifest.zero_bytes();
    info!(
        image = %image.id.short(),
        want = dl.stats().bytes_wanted,
        local = dl.stats().bytes_local,
        "pulling"
    );

    let clock = Instant::now();
    let now = || clock.elapsed();
    let (providers_tx, mut providers_rx) = mpsc::channel(4);
    let finder = tokio::spawn(find_providers(services.clone(), image.id, providers_tx));
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut ticker = tokio::time::interval(TICK);
    // Announce when the held set grew, not when verification did: chunks become held (and
    // servable) only at their commit, and same-site pullers wait for exactly those bits.
    let mut announced_held = usize::MAX;
    let mut announced_at: Option<Duration> = None;
    let mut last_holdings: HashMap<PeerId, Holdings> = HashMap::new();
    let mut stalled_since: Option<Duration> = None;
    let session: WriteSession<Tag> = services.store.write_session();
    let mut commits = Commits::default();
    let mut commit_ticker = tokio::time::interval(COMMIT_EVERY);
    let mut cancels: HashMap<RequestId, oneshot::Sender<()>> = HashMap::new();

    let result = loop {
        while let Some(action) = dl.poll(now()) {
            match action {
                Action::Request {
                    peer, id, chunks, ..
                } => {
                    stalled_since = None;
                    let services = services.clone();
                    let catalog = catalog.clone();
                    let session = session.clone();
                    let (cancel_tx, cancel_rx) = oneshot::channel();
                    cancels.insert(id, cancel_tx);
                    tasks.spawn(async move {
                        let request = Request { peer, id, chunks };
                        fetch(&services, &catalog, &session, request, cancel_rx).await
                    });
                }
                Action::Ban { peer, until } => {
                    ban(services, peer, until.saturating_sub(now())).await;
                }
                Action::Stalled { unavailable } => {
                    debug!(
                        chunks = unavailable.len(),
                        "pull stalled: waiting for sources"
                    );
                    stalled_since.get_or_insert(now());
                }
                // Timed out, or every chunk arrived from elsewhere (endgame): stop waiting for
                // it and do not verify or store what it would bring.
                Action::Cancel { peer, id } => {
                    debug!(%peer, request = id.0, "request given up");
                    if let Some(cancel) = cancels.remove(&id) {
                        let _ = cancel.send(());
                    }
                }
                Action::Complete => {}
            }
        }
        if dl.is_complete() {
            break Ok(());
        }
        if let Some(since) = stalled_since
            && now().saturating_sub(since) > STALL_LIMIT
        {
            break Err(PullError::Stalled {
                image: image.id.short(),
                chunks: dl.unavailable().len(),
            });
        }
        let sleep = dl
            .next_deadline()
            .map_or(Duration::from_secs(3600), |d| d.saturating_sub(now()));
        tokio::select! {
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                match joined {
                    Ok(Outcome::Answered { peer, id, outcomes }) => {
                        cancels.remove(&id);
                        dl.on_response(now(), &peer, id, outcomes);
                        if session.uncommitted_bytes() >= COMMIT_BYTES {
                            commits.start(&session);
                        }
                    }
                    Ok(Outcome::Failed { peer, id, failure }) => {
                        cancels.remove(&id);
                        dl.on_failure(now(), &peer, id, failure);
                    }
                    Ok(Outcome::Cancelled(id)) => {
                        cancels.remove(&id);
                    }
                    Ok(Outcome::Fatal(err)) => break Err(err),
                    Err(err) => warn!(%err, "chunk request task failed"),
                }
            }
            Some(done) = commits.next(), if commits.running() => {
                match done {
                    Ok(tags) => acknowledge(tags, &mut held, totals),
                    Err(err) => break Err(err.into()),
                }
            }
            _ = commit_ticker.tick() => {
                if session.uncommitted_bytes() > 0 {
                    commits.start(&session);
                }
            }
            _ = tokio::time::sleep(sleep) => dl.tick(now()),
            Some(found) = providers_rx.recv() => {
                for peer in found {
                    add_source(&mut dl, services, now(), peer, Holds::Everything);
                }
            }
            _ = ticker.tick() => {
                refresh_sources(&mut dl, services, image.id, &mut last_holdings, now());
                let stats = dl.stats();
                let held_now = held.iter().filter(|h| **h).count();
                let due = announced_at.is_none_or(|at| {
                    now().saturating_sub(at) >= announce_interval(dl.peer_count())
                });
                if held_now != announced_held && due {
                    announced_held = held_now;
                    announced_at = Some(now());
                    services.announce_holdings(image.id, bitmap(&held)).await;
                }
                let _ = progress.try_send(Response::Progress(PullProgress {
                    total: stats.bytes_wanted,
                    done: stats.bytes_done,
                    peers: dl.peer_count() as u64,
                }));
            }
        }
    };
    finder.abort();
    tasks.abort_all();
    // Whatever was verified is made durable, also when the pull failed: a later pull resumes
    // from it.
    let flushed = commits.finish(&session).await;
    match &flushed {
        Ok(tags) => acknowledge(tags.clone(), &mut held, totals),
        Err(err) => warn!(%err, "committing received chunks failed"),
    }
    let stats = dl.stats().clone();
    Metrics::add(&services.metrics.chunks_verified, stats.chunks_done);
    let o = &mut totals.overhead;
    o.bytes_duplicate += stats.duplicate_bytes;
    o.requests += stats.requests_sent;
    o.endgame_requests += stats.endgame_requests;
    o.cancels += stats.cancels;
    o.timeouts += stats.timeouts;
    o.busy += stats.busy;
    info!(
        image = %image.id.short(),
        wanted = stats.bytes_wanted,
        done = stats.bytes_done,
        duplicate = stats.duplicate_bytes,
        requests = stats.requests_sent,
        endgame = stats.endgame_requests,
        cancels = stats.cancels,
        timeouts = stats.timeouts,
        busy = stats.busy,
        "pull scheduling"
    );
    result?;
    flushed?;

    services.store.finish(image.id).await?;
    services
        .announce_holdings(image.id, Holdings::Complete)
        .await;
    if let Err(err) = services.net.start_providing(provider_key(&image.id)).await {
        debug!(%err, "provider record not stored");
    }
    Ok(())
}

fn add_source(
    dl: &mut Downloader<PeerId>,
    services: &Services,
    now: Duration,
    peer: PeerId,
    holds: Holds,
) {
    if peer == services.local_peer {
        return;
    }
    if let Err(err) = dl.add_peer(now, peer, holds) {
        debug!(%peer, %err, "not adding a source");
        return;
    }
    dl.set_peer_locality(now, &peer, locality(services, &peer));
}

/// Whether `peer` is on our site. A node without a site treats every peer alike (local); one
/// with a site counts a peer that announced no site, or none yet, as remote: guessing wrong
/// then costs waiting for a neighbour rather than bytes over the inter-site link.
fn locality(services: &Services, peer: &PeerId) -> Locality {
    match services.config.site() {
        None => Locality::Local,
        Some(ours) if services.site_of(peer).as_deref() == Some(ours) => Locality::Local,
        Some(_) => Locality::Remote,
    }
}

/// How long a puller waits between two announcements of its holdings when `peers` other
/// nodes serve the image: [`TICK`] while that keeps the swarm within
/// [`ANNOUNCEMENTS_PER_SEC`] per receiver, proportionally longer beyond.
pub fn announce_interval(peers: usize) -> Duration {
    let budget =
        Duration::from_secs(1) * u32::try_from(peers).unwrap_or(u32::MAX) / ANNOUNCEMENTS_PER_SEC;
    budget.max(TICK)
}

/// Feeds gossip holdings announcements for `image` into the downloader.
fn refresh_sources(
    dl: &mut Downloader<PeerId>,
    services: &Services,
    image: ImageId,
    last: &mut HashMap<PeerId, Holdings>,
    now: Duration,
) {
    for (peer, holdings) in services.holdings_of(&image) {
        if last.get(&peer) == Some(&holdings) {
            continue;
        }
        match &holdings {
            Holdings::Complete => add_source(dl, services, now, peer, Holds::Everything),
            Holdings::Bitmap { total, .. } => {
                add_source(dl, services, now, peer, Holds::Nothing);
                let has: Vec<ChunkIdx> = (0..*total)
                    .filter(|&i| holdings.holds(i) == Some(true))
                    .map(ChunkIdx)
                    .collect();
                dl.peer_has(now, &peer, has);
            }
            // A count says nothing about which chunks: not usable for scheduling.
            _ => {}
        }
        last.insert(peer, holdings);
    }
}

/// Our holdings of an image as a gossip bitmap (or a count when the bitmap would not fit).
fn bitmap(held: &[bool]) -> Holdings {
    let total = held.len() as u32;
    if held.len().div_ceil(8) > wire::MAX_PROVIDER_BITMAP_LEN {
        return Holdings::Count {
            held: held.iter().filter(|h| **h).count() as u32,
            total,
        };
    }
    let mut bits = vec![0u8; held.len().div_ceil(8)];
    for (i, _) in held.iter().enumerate().filter(|(_, h)| **h) {
        bits[i / 8] |= 1 << (i % 8);
    }
    Holdings::Bitmap { total, bits }
}

/// Asks the DHT for providers now and then, feeding them to the pull loop.
async fn find_providers(
    services: Arc<Services>,
    image: ImageId,
    out: mpsc::Sender<HashSet<PeerId>>,
) {
    loop {
        if let Ok(found) = services.net.get_providers(provider_key(&image)).await
            && !found.is_empty()
            && out.send(found).await.is_err()
        {
            return;
        }
        tokio::time::sleep(PROVIDER_QUERY_EVERY).await;
    }
}

async fn ban(services: &Arc<Services>, peer: PeerId, duration: Duration) {
    warn!(%peer, secs = duration.as_secs(), "banning peer: it sent a corrupt chunk");
    Metrics::add(&services.metrics.peers_banned, 1);
    if services.net.ban(peer).await.is_err() {
        return;
    }
    let services = services.clone();
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        let _ = services.net.unban(peer).await;
    });
}

/// Makes a commit's chunks count: held (so they are announced and served), fetched, and
/// credited to the peer whose copy was stored.
fn acknowledge(tags: Vec<Tag>, held: &mut [bool], totals: &mut Totals) {
    for (idx, peer, len) in tags {
        if let Some(h) = held.get_mut(idx.as_usize()) {
            *h = true;
        }
        totals.fetched += u64::from(len);
        *totals.per_peer.entry(peer).or_default() += u64::from(len);
    }
}

/// At most one commit of the pull's write session in flight (each fsyncs everything appended
/// before it, so a second one at the same time would only wait for the disk).
#[derive(Default)]
struct Commits {
    running: Option<JoinHandle<Result<Vec<Tag>, StoreActorError>>>,
}

impl Commits {
    fn running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts a commit unless one is running (the next one will take these bytes).
    fn start(&mut self, session: &WriteSession<Tag>) {
        if self.running.is_none() {
            let session = session.clone();
            self.running = Some(tokio::spawn(async move { session.commit().await }));
        }
    }

    /// The running commit's result; pending forever when none runs (guard with `running`).
    async fn next(&mut self) -> Option<Result<Vec<Tag>, StoreActorError>> {
        let handle = self.running.as_mut()?;
        let result = handle
            .await
            .unwrap_or_else(|e| Err(StoreActorError::Task(e.to_string())));
        self.running = None;
        Some(result)
    }

    /// Waits for the running commit, then commits the rest; returns every tag made durable.
    async fn finish(&mut self, session: &WriteSession<Tag>) -> Result<Vec<Tag>, StoreActorError> {
        let mut tags = match self.next().await {
            Some(r) => r?,
            None => Vec::new(),
        };
        tags.extend(session.commit().await?);
        Ok(tags)
    }
}

/// One request the downloader asked for.
struct Request {
    peer: PeerId,
    id: RequestId,
    chunks: Vec<ChunkIdx>,
}

/// Sends one chunk request and verifies and appends what comes back; gives up when `cancel`
/// fires before the response arrived.
async fn fetch(
    services: &Services,
    catalog: &ChunkCatalog,
    session: &WriteSession<Tag>,
    Request { peer, id, chunks }: Request,
    cancel: oneshot::Receiver<()>,
) -> Outcome {
    let wanted: Vec<(ChunkIdx, ChunkHash, u32)> = chunks
        .iter()
        .filter_map(|&c| Some((c, catalog.hash(c)?, catalog.chunk_len(c)?)))
        .collect();
    let bytes: u64 = wanted.iter().map(|(_, _, len)| u64::from(*len)).sum();
    let request = ChunkRequest {
        hashes: wanted.iter().map(|(_, h, _)| *h).collect(),
    };
    let exchange = async {
        services.download_rate.acquire(bytes).await;
        services.net.request_chunks(peer, request).await
    };
    // A dropped sender (the pull ended) is not a cancellation; the task is aborted then anyway.
    let cancelled = async {
        if cancel.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let response = tokio::select! {
        r = exchange => r,
        () = cancelled => return Outcome::Cancelled(id),
    };
    let replies = match response {
        Ok(ChunkResponse::Chunks(replies)) => replies,
        Ok(ChunkResponse::Refused(refusal)) => {
            let failure = match refusal {
                WireRefusal::Busy => Failure::Busy,
                _ => Failure::Other,
            };
            return Outcome::Failed { peer, id, failure };
        }
        Err(err) => {
            debug!(%peer, %err, "chunk request failed");
            let failure = match err {
                RequestError::Timeout => Failure::Timeout,
                _ => Failure::Other,
            };
            return Outcome::Failed { peer, id, failure };
        }
    };
    let mut outcomes = Vec::with_capacity(wanted.len());
    let mut to_store = Vec::with_capacity(wanted.len());
    let mut stored_idx = Vec::with_capacity(wanted.len());
    for ((idx, hash, len), reply) in wanted.iter().zip(replies) {
        match reply {
            ChunkReply::Found(data) => {
                stored_idx.push((*idx, data.len() as u64));
                to_store.push((*hash, data, (*idx, peer, *len)));
            }
            ChunkReply::Missing => outcomes.push((*idx, ChunkOutcome::Missing)),
            // Not listed: the downloader re-queues it.
            ChunkReply::OverBudget => {}
        }
    }
    let verdicts = match session.put(to_store).await {
        Ok(v) => v,
        Err(err) => return Outcome::Fatal(err.into()),
    };
    let mut verified_bytes = 0;
    for ((idx, len), verdict) in stored_idx.into_iter().zip(verdicts) {
        match verdict {
            ChunkVerdict::Stored => {
                verified_bytes += len;
                outcomes.push((idx, ChunkOutcome::Verified));
            }
            ChunkVerdict::Corrupt => {
                warn!(%peer, chunk = idx.0, "corrupt chunk received");
                Metrics::add(&services.metrics.chunks_rejected, 1);
                outcomes.push((idx, ChunkOutcome::Corrupt));
            }
        }
    }
    services.metrics.bytes_in(&peer.to_string(), verified_bytes);
    Outcome::Answered { peer, id, outcomes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloader_limits_fit_the_wire_limits() {
        let c = downloader_config().unwrap();
        assert!(c.max_request_chunks() <= wire::MAX_CHUNKS_PER_REQUEST);
        assert!(c.max_request_bytes() <= wire::MAX_CHUNK_RESPONSE_DATA as u64);
    }

    #[test]
    fn bitmap_matches_wire_holdings() {
        let held = [true, false, true, true, false, false, false, false, true];
        let h = bitmap(&held);
        for (i, want) in held.iter().enumerate() {
            assert_eq!(h.holds(i as u32), Some(*want), "chunk {i}");
        }
        assert_eq!(h.holds(9), Some(false));
        // The bitmap must pass the wire validation of a provider announcement.
        let msg = wire::GossipMessage::Provider(wire::ProviderAnnouncement {
            image: ImageId::from_bytes([1; 32]),
            provider: vwnet_protocol::ids::PeerIdentity::from_bytes([2; 32]),
            holdings: h,
            site: Some("a".into()),
        });
        use wire::WireMessage as _;
        assert!(wire::GossipMessage::decode(&msg.encode().unwrap()).is_ok());
    }
}
