//! The discrete-event engine: hosts, strategies, and the node's downloader driving the swarm.
//!
//! Time is virtual seconds (`f64`). Events (a request reaching its server, a response or a
//! Busy refusal reaching its puller, a downloader deadline, a pull-loop tick, a host joining or
//! leaving) sit in one queue; flow completions come from the [`Network`]. After all events of
//! one instant are handled, the network re-solves the rates of the components that changed (or,
//! with a `rate_quantum`, exactly at most once per quantum and provisionally in between, see
//! [`Network::fill_local`] — an approximation for the largest runs, measured in the README).
//!
//! A swarm host runs `vwnet_node::downloader::Downloader<u32>` (peers are host indices) and
//! does exactly what `node/src/pull.rs` does with its actions: a `Request` becomes a request
//! message (one-way latency + a per-request server delay) and a flow of the requested bytes;
//! the response is reported with `on_response` one latency after the last byte (plus the
//! verify time); on `Cancel` the puller stops waiting and ignores the response, but its bytes
//! still flow (the responder cannot be stopped).
//!
//! Servers have the node's upload slots: a chunk request takes one when it reaches its server
//! and keeps it until the response's last byte is out (the node releases it at libp2p's
//! `ResponseSent`); a request finding every slot taken is answered at once with a `Busy`
//! refusal, reported one latency later with `on_failure(.., Failure::Busy)`.
//!
//! Holdings move as in pull.rs's loop: every `announce_every` (the node's `TICK`) a puller
//! takes in what its neighbours announced since its last tick, announces its own holdings if
//! they grew and its per-receiver budget allows (`announce_interval`), and is then scheduled
//! once for all of it; `Complete` is announced as soon as the pull ends.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vwnet_node::downloader::{
    Action, ChunkIdx, ChunkOutcome, ChunkState, ChunkTable, Config, ConfigError, Downloader,
    Failure, Holds, Locality, RequestId, site_key,
};

use crate::network::{FlowId, LinkId, Network};
use crate::rng::Rng;
use crate::topology::Topology;

/// A way of getting the image onto the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// No image: every host installs the software itself (a fixed time, no network).
    Install,
    /// The paper: the image is staged whole to one repository server per site (the site's
    /// first host), then every host copies it whole from its site's repository.
    Central,
    /// Every host copies the whole image from the publisher.
    Single,
    /// vwnet: a chunk swarm scheduled by the node's downloader.
    Swarm,
    /// The swarm when every host already holds the previous version: only new chunks move.
    SwarmWarm,
}

impl Strategy {
    /// The name used in scenario files and outputs.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Install => "install",
            Strategy::Central => "central",
            Strategy::Single => "single",
            Strategy::Swarm => "swarm",
            Strategy::SwarmWarm => "swarm-warm",
        }
    }

    /// Parses a scenario name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "install" => Strategy::Install,
            "central" => Strategy::Central,
            "single" => Strategy::Single,
            "swarm" => Strategy::Swarm,
            "swarm-warm" => Strategy::SwarmWarm,
            _ => return None,
        })
    }
}

/// Scenario overrides of the node's downloader settings (`None`: the node's value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitOverrides {
    /// Requests in flight per peer.
    pub max_requests_per_peer: Option<u32>,
    /// Request timeout, seconds.
    pub request_timeout: Option<f64>,
    /// Bytes per request (the node: the wire limit, 4 MiB).
    pub max_request_bytes: Option<u64>,
    /// Bytes in flight per peer.
    pub max_bytes_per_peer: Option<u64>,
    /// Endgame copies (1: no endgame duplicates).
    pub endgame_copies: Option<u8>,
    /// Back-off base, seconds: the first back-off after a failure and the pause after a
    /// `Busy` refusal.
    pub backoff_base: Option<f64>,
}

/// The downloader configuration of a simulated host: the node's own
/// (`vwnet_node::pull::downloader_config`), so that a change there shows here, adapted only
/// where pieces replace chunks: a request carries as many pieces as fit in the node's request
/// bytes, and a shuffle run spans about as many bytes as the node's does.
pub fn swarm_config(
    piece: u64,
    max_piece: u64,
    avg_chunk: u64,
    overrides: &LimitOverrides,
    neighbours: usize,
    seed: u64,
) -> Result<Config, ConfigError> {
    let node = vwnet_node::pull::downloader_config()?;
    let exact = piece == 0 && *overrides == LimitOverrides::default() && neighbours + 2 <= 4096;
    if exact {
        return Ok(node.with_seed(seed));
    }
    let req_bytes = overrides
        .max_request_bytes
        .unwrap_or(node.max_request_bytes())
        .max(max_piece);
    let (per_request, run_len) = if piece == 0 {
        (node.max_request_chunks(), NODE_RUN_LEN)
    } else {
        let unit = piece.max(1);
        (
            (req_bytes / unit).max(1) as usize,
            (NODE_RUN_LEN as u64 * avg_chunk.max(1) / unit).max(1) as usize,
        )
    };
    let per_peer = overrides
        .max_bytes_per_peer
        .unwrap_or(node.max_bytes_per_peer())
        .max(req_bytes);
    let timeout = overrides
        .request_timeout
        .map_or(node.request_timeout(), Duration::from_secs_f64);
    let (node_base, backoff_max) = node.backoff();
    let backoff_base = overrides
        .backoff_base
        .map_or(node_base, Duration::from_secs_f64)
        .min(backoff_max);
    Config::builder()
        .max_request_bytes(req_bytes)
        .max_request_chunks(per_request)
        .max_requests_per_peer(
            overrides
                .max_requests_per_peer
                .unwrap_or(node.max_requests_per_peer()),
        )
        .max_bytes_per_peer(per_peer)
        .max_bytes_in_flight(node.max_bytes_in_flight().max(per_peer))
        .request_timeout(timeout)
        .backoff(backoff_base, backoff_max)
        .ban_duration(node.ban_duration())
        .endgame_copies(overrides.endgame_copies.unwrap_or(node.endgame_copies()))
        .max_peers(4096usize.max(neighbours + 2))
        .run_len(run_len)
        .seed(seed)
        .build()
}

/// `Host::seen` of a neighbour whose `Holdings::Complete` was taken in.
const SEEN_COMPLETE: u32 = u32::MAX;

/// How long a puller waits between two holdings announcements when its downloader knows
/// `peers` peers: the node's own `vwnet_node::pull::announce_interval` (`budget` `None`), or
/// the same rule with a scenario's budget: the tick while `budget` announcements per second
/// per receiver suffice, proportionally longer beyond; a budget of 0: every tick.
fn announce_interval(tick: f64, budget: Option<f64>, peers: usize) -> f64 {
    match budget {
        None => tick.max(vwnet_node::pull::announce_interval(peers).as_secs_f64()),
        Some(b) if b > 0.0 => tick.max(peers as f64 / b),
        Some(_) => tick,
    }
}

/// Mutable references to two distinct hosts.
fn pair_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    debug_assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

/// The downloader's default shuffle run in chunks (`Config` has no getter for it; the node
/// keeps the default).
const NODE_RUN_LEN: usize = 64;

/// Swarm model parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmParams {
    /// Piece size in bytes (0: schedule single chunks, as the node does).
    pub piece: u64,
    /// Peers each host learns about besides the publisher (the node learns every announcer
    /// up to 4096; bounded here to keep 10,000-host runs in memory).
    pub neighbours: usize,
    /// Seconds between two ticks of a puller's loop (the node's `TICK`, 0.5 s): it takes in
    /// its neighbours' holdings announcements and announces its own at ticks only.
    pub announce_every: f64,
    /// Holdings announcements per second a receiver should get: a puller knowing `p` peers
    /// announces at most every `max(tick, p / budget)` seconds; 0: at every tick. `None`: the
    /// node's `vwnet_node::pull::announce_interval` (8 per second, at least every 500 ms).
    pub announce_budget: Option<f64>,
    /// Seconds a server spends per request before the first byte (store read, framing).
    pub request_overhead: f64,
    /// Receiver verify-and-commit throughput in bytes/s (`None`: instantaneous).
    pub verify_rate: Option<f64>,
    /// Scenario overrides of the node's downloader settings.
    pub limits: LimitOverrides,
    /// Label peers local or remote by site, as a node with a configured site does (the
    /// testbed configures sites); `false`: the site-blind policy.
    pub site_aware: bool,
    /// Chunk responses a host serves at once (the node's `max_concurrent_uploads`); a request
    /// beyond them is refused with `Busy`. 0: unlimited (the model before upload slots).
    pub upload_slots: usize,
    /// Seconds between a puller's commits (the node's `pull::COMMIT_EVERY`, 0.25 s, on the
    /// tick's grid): a received chunk is announced only once a commit made it durable. 0: at
    /// once.
    pub commit_every: f64,
    /// Seconds from a puller's start to its downloader's first poll: the node's fixed cost
    /// before the scheduling loop (`vwnet pull` starting, resolving the description, fetching
    /// the manifest). 0: none (the scenarios' default).
    pub pull_setup: f64,
    /// Seconds from the downloader's `Complete` to the host's completion: the node's fixed
    /// cost after the loop (the last commit, the store's `finish`, the reply). 0: none.
    pub pull_finish: f64,
}

impl Default for SwarmParams {
    fn default() -> Self {
        SwarmParams {
            piece: 4 << 20,
            neighbours: 32,
            announce_every: 0.5,
            announce_budget: None,
            request_overhead: 0.0,
            verify_rate: None,
            limits: LimitOverrides::default(),
            site_aware: true,
            upload_slots: vwnet_node::config::Limits::default().max_concurrent_uploads,
            commit_every: vwnet_node::pull::COMMIT_EVERY.as_secs_f64(),
            pull_setup: 0.0,
            pull_finish: 0.0,
        }
    }
}

/// When pullers start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// All at t = 0 (a flash crowd).
    Together,
    /// A Poisson process of this many hosts per second.
    Poisson(f64),
}

/// Hosts leaving and coming back (swarm strategies only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// Mean seconds a host stays online.
    pub mean_online: f64,
    /// Mean seconds it stays away.
    pub mean_offline: f64,
}

/// What is being done to which hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Pull on this many hosts (round-robin over sites, publisher excluded); `None`: all.
    pub pullers: Option<usize>,
    /// When they start.
    pub arrivals: Arrivals,
    /// Optional churn.
    pub churn: Option<Churn>,
    /// Seconds added after the image arrives (VM start) to give "ready" time.
    pub start_overhead: f64,
    /// Seconds an install takes ([`Strategy::Install`]).
    pub install_time: f64,
    /// Seconds between recomputations of rates (0: exact, after every instant).
    pub rate_quantum: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            pullers: None,
            arrivals: Arrivals::Together,
            churn: None,
            start_overhead: 0.0,
            install_time: 0.0,
            rate_quantum: 0.0,
        }
    }
}

/// The image as transfers see it.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Bytes a whole-image copy moves.
    pub whole_bytes: u64,
    /// The swarm's table (pieces of the distinct chunks).
    pub table: Arc<ChunkTable>,
    /// The warm swarm's table (pieces of the chunks the previous version lacks).
    pub delta_table: Arc<ChunkTable>,
    /// Mean length of the image's distinct chunks (what a piece aggregates).
    pub avg_chunk: u64,
}

/// Why a run could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The downloader rejected the limits.
    #[error("downloader config: {0}")]
    Config(#[from] ConfigError),
    /// The downloader rejected the table.
    #[error("downloader: {0}")]
    Downloader(#[from] vwnet_node::downloader::NewDownloaderError),
}

/// One host's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct HostResult {
    /// Host name.
    pub host: String,
    /// Its site.
    pub site: String,
    /// When it started pulling (seconds).
    pub started: f64,
    /// When it had the image (seconds), `start_overhead` included; `None` if never.
    pub completed: Option<f64>,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
}

/// The outcome of one strategy.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The strategy.
    pub strategy: Strategy,
    /// Pullers, in host order.
    pub hosts: Vec<HostResult>,
    /// (link name, bytes carried) for every finite link.
    pub links: Vec<(String, u64)>,
    /// Bytes over WAN links, both directions.
    pub wan_bytes: u64,
    /// Wall-clock time of the simulation.
    pub wall: Duration,
    /// Events handled.
    pub events: u64,
    /// Flows started.
    pub flows: u64,
    /// Most flows in progress at once.
    pub peak_flows: usize,
    /// Rate recomputations and flows re-solved.
    pub solver_work: (u64, u64),
    /// Swarm: downloader totals summed over pullers (requests, endgame requests, cancels,
    /// timeouts, duplicate bytes).
    pub downloader: DownloaderTotals,
    /// Bytes of responses that arrived for cancelled requests (moved, then ignored).
    pub cancelled_bytes: u64,
}

/// Downloader counters summed over all pullers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloaderTotals {
    /// Requests sent.
    pub requests: u64,
    /// Of which endgame duplicates.
    pub endgame_requests: u64,
    /// Requests cancelled.
    pub cancels: u64,
    /// Requests timed out.
    pub timeouts: u64,
    /// Requests refused because every upload slot of the server was taken.
    pub busy: u64,
    /// Verified bytes that were already held.
    pub duplicate_bytes: u64,
}

impl RunResult {
    /// Completion times of the pullers that completed, ascending.
    pub fn sorted_completions(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.hosts.iter().filter_map(|h| h.completed).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// When the last puller completed (`None` if one never did).
    pub fn makespan(&self) -> Option<f64> {
        self.hosts
            .iter()
            .map(|h| h.completed)
            .try_fold(0.0f64, |m, c| c.map(|c| m.max(c)))
    }
}

// ----- the network built from a topology -----------------------------------------------------

struct Fabric {
    site_of: Vec<u32>,
    up: Vec<Option<LinkId>>,
    down: Vec<Option<LinkId>>,
    disk: Vec<Option<LinkId>>,
    delay: Vec<f64>,
    /// [from site][to site] -> (directed WAN links, one-way delay).
    routes: Vec<Vec<(Vec<LinkId>, f64)>>,
    link_names: Vec<String>,
    wan: Vec<bool>,
}

fn bytes_per_sec(bps: Option<u64>) -> Option<f64> {
    bps.map(|b| b as f64 / 8.0)
}

impl Fabric {
    fn build(topo: &Topology, names: &[String], net: &mut Network) -> Self {
        let mut f = Fabric {
            site_of: Vec::new(),
            up: Vec::new(),
            down: Vec::new(),
            disk: Vec::new(),
            delay: Vec::new(),
            routes: Vec::new(),
            link_names: Vec::new(),
            wan: Vec::new(),
        };
        let add = |f: &mut Fabric, net: &mut Network, cap: Option<f64>, name: String, wan| {
            cap.map(|c| {
                f.link_names.push(name);
                f.wan.push(wan);
                net.add_link(c)
            })
        };
        let mut h = 0usize;
        for (si, site) in topo.sites.iter().enumerate() {
            for _ in 0..site.hosts {
                let name = &names[h];
                f.site_of.push(si as u32);
                let up = add(
                    &mut f,
                    net,
                    bytes_per_sec(site.link.uplink_bps),
                    format!("{name}:up"),
                    false,
                );
                f.up.push(up);
                let down = add(
                    &mut f,
                    net,
                    bytes_per_sec(site.link.downlink_bps),
                    format!("{name}:down"),
                    false,
                );
                f.down.push(down);
                let disk = add(
                    &mut f,
                    net,
                    bytes_per_sec(site.link.disk_bps),
                    format!("{name}:disk"),
                    false,
                );
                f.disk.push(disk);
                f.delay.push(site.link.delay.as_secs_f64());
                h += 1;
            }
        }
        // Directed WAN links: index 2w is a->b, 2w+1 is b->a.
        let mut dir = Vec::new();
        for w in &topo.wans {
            let ab = add(
                &mut f,
                net,
                bytes_per_sec(w.rate_bps),
                format!("{}->{}", w.a, w.b),
                true,
            );
            let ba = add(
                &mut f,
                net,
                bytes_per_sec(w.rate_bps),
                format!("{}->{}", w.b, w.a),
                true,
            );
            dir.push((ab, ba));
        }
        let n = topo.sites.len();
        for a in 0..n {
            let mut row = Vec::with_capacity(n);
            for b in 0..n {
                let mut links = Vec::new();
                let mut delay = 0.0;
                let mut at = a;
                for wi in topo
                    .route(&topo.sites[a].name, &topo.sites[b].name)
                    .unwrap_or_default()
                {
                    let w = &topo.wans[wi];
                    let forward = topo.site_index(&w.a) == Some(at);
                    let l = if forward { dir[wi].0 } else { dir[wi].1 };
                    links.extend(l);
                    delay += w.delay.as_secs_f64();
                    at = if forward {
                        topo.site_index(&w.b).unwrap_or(at)
                    } else {
                        topo.site_index(&w.a).unwrap_or(at)
                    };
                }
                row.push((links, delay));
            }
            f.routes.push(row);
        }
        f
    }

    /// Links and one-way latency of data going from host `s` to host `r`.
    fn path(&self, s: usize, r: usize) -> (Vec<LinkId>, f64) {
        let (wan, wan_delay) = &self.routes[self.site_of[s] as usize][self.site_of[r] as usize];
        let mut links = Vec::with_capacity(wan.len() + 3);
        links.extend(self.up[s]);
        links.extend(wan.iter().copied());
        links.extend(self.down[r]);
        links.extend(self.disk[r]);
        (links, self.delay[s] + wan_delay + self.delay[r])
    }

    fn latency(&self, s: usize, r: usize) -> f64 {
        let (_, wan_delay) = &self.routes[self.site_of[s] as usize][self.site_of[r] as usize];
        self.delay[s] + wan_delay + self.delay[r]
    }
}

fn locality(same_site: bool) -> Locality {
    if same_site {
        Locality::Local
    } else {
        Locality::Remote
    }
}

// ----- events --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A puller starts.
    Arrive(u32),
    /// A swarm puller's setup is over (valid for the given incarnation): start its downloader.
    StartPull(u32, u32),
    /// Transfer `t`'s request reaches its server: start the flow.
    Send(u32),
    /// Transfer `t`'s last byte reached the puller.
    Deliver(u32),
    /// Transfer `t`'s server refused it for want of an upload slot; the refusal reached the
    /// puller.
    Busy(u32),
    /// Downloader deadline of a host (valid if it matches the host's `tick_at`).
    Tick(u32, f64),
    /// The pull loop's periodic tick of a host (valid for the given incarnation): take in the
    /// neighbours' announcements, announce its own holdings when due, schedule.
    Ticker(u32, u32),
    /// Churn.
    Leave(u32),
    /// Churn.
    Join(u32),
    /// Deferred rate recomputation.
    Recompute,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    at: f64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.total_cmp(&self.at).then_with(|| o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole-image copy (single source, or central staging / site copy).
    Whole,
    /// A downloader request.
    Request(RequestId),
}

#[derive(Debug)]
struct Transfer {
    kind: Kind,
    from: u32,
    to: u32,
    bytes: u64,
    /// The puller's incarnation when the request was made (churn invalidates it).
    incarnation: u32,
    chunks: Vec<ChunkIdx>,
    flow: Option<FlowId>,
    live: bool,
    /// The downloader cancelled it: the bytes still flow (request-response has no way to stop
    /// the responder) but the node neither verifies nor reports them.
    cancelled: bool,
    /// It holds one of its server's upload slots (from acceptance until its last byte left).
    slot: bool,
}

struct Host {
    dl: Option<Downloader<u32>>,
    neighbours: Vec<u32>,
    puller: bool,
    started: Option<f64>,
    done: Option<f64>,
    online: bool,
    incarnation: u32,
    tick_at: Option<f64>,
    /// Chunks received, in order of arrival (kept across churn: a returning host resumes).
    held: Vec<ChunkIdx>,
    /// How many of `held` its last holdings announcement carried (what neighbours can see).
    published: u32,
    /// How many of `held` its last commit made durable (what it may announce).
    committed: u32,
    /// When `committed` was last brought up to date (`held` has not changed since).
    commit_synced: f64,
    /// An instant of its pull loop's tick grid (commits run on it every `commit_every`).
    grid_origin: f64,
    /// From when its `Holdings::Complete` announcement is out: the pull's fixed finish after
    /// the downloader completed, as pull.rs announces once the store has the whole image.
    complete_from: Option<f64>,
    /// When it last announced its holdings.
    announced_at: Option<f64>,
    /// Per neighbour (same order as `neighbours`): how many of the neighbour's `held` this
    /// host's downloader was told, or [`SEEN_COMPLETE`].
    seen: Vec<u32>,
    bytes_in: u64,
    bytes_out: u64,
    /// Upload slots held by responses this host is sending.
    uploads: u32,
    /// Central strategy: this host is its site's repository and has the image.
    repo_ready: bool,
    /// When it arrives (pullers; set when the run starts).
    arrives: Option<f64>,
    /// The version of its site's roster its downloader was given (0: none).
    roster_seen: u32,
}

impl Host {
    /// Whether its `Holdings::Complete` announcement is out at `now`.
    fn announced_complete(&self, now: f64) -> bool {
        self.complete_from.is_some_and(|t| t <= now)
    }
}

/// The pulling members of a site too large for a host's neighbour view. The node learns every
/// announcer of its site and ranks itself among them for the units fetched across sites; a
/// simulated host sees a few neighbours, and ranking among those alone would have each unit
/// fetched across by every neighbourhood (about members / view times). So the simulator gives
/// each downloader the site's roster, rebuilt when pullers start or leave, at most once per
/// announcement interval (what a node needs to hear a newcomer). Unlike the node's members,
/// the roster keeps pullers that finished: a node sees a finished owner as a local holder of
/// its units, while a simulated host that is not its neighbour would take them over and fetch
/// them across sites again, although they are on the site already.
#[derive(Debug, Default)]
struct SiteRoster {
    /// The site's pullers.
    pullers: Vec<u32>,
    /// Rendezvous keys of those that arrived and are online.
    keys: Arc<[u64]>,
    /// Bumped at every rebuild (0: never built).
    version: u32,
    /// A puller started or left since the last rebuild.
    stale: bool,
    built_at: f64,
}

/// A simulation of one strategy over one topology.
pub struct Sim<'a> {
    topo: &'a Topology,
    strategy: Strategy,
    workload: &'a Workload,
    swarm: &'a SwarmParams,
    net: Network,
    fabric: Fabric,
    names: Vec<String>,
    hosts: Vec<Host>,
    publisher: u32,
    transfers: Vec<Transfer>,
    free_transfers: Vec<u32>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    now: f64,
    rng: Rng,
    config: Config,
    table: Arc<ChunkTable>,
    whole_bytes: u64,
    recompute_pending: bool,
    events: u64,
    flows: u64,
    peak_flows: usize,
    completed: u64,
    /// Central: repository host of each site.
    repo_of_site: Vec<u32>,
    /// Live downloader requests: (puller, request) -> transfer.
    request_transfer: HashMap<(u32, RequestId), u32>,
    cancelled_bytes: u64,
    /// Per site: the roster of a site larger than the view (`None`: the view covers it).
    rosters: Vec<Option<SiteRoster>>,
}

impl<'a> Sim<'a> {
    /// Sets up a run.
    pub fn new(
        topo: &'a Topology,
        strategy: Strategy,
        payload: &Payload,
        workload: &'a Workload,
        swarm: &'a SwarmParams,
        seed: u64,
    ) -> Result<Self, RunError> {
        let names: Vec<String> = topo.hosts().into_iter().map(|h| h.name).collect();
        let mut net = Network::new();
        net.set_provisional(workload.rate_quantum > 0.0);
        let fabric = Fabric::build(topo, &names, &mut net);
        let publisher = names.iter().position(|n| *n == topo.publisher).unwrap_or(0) as u32;
        let table = if strategy == Strategy::SwarmWarm {
            payload.delta_table.clone()
        } else {
            payload.table.clone()
        };
        let config = swarm_config(
            swarm.piece,
            u64::from(table.max_chunk_len()),
            payload.avg_chunk,
            &swarm.limits,
            swarm.neighbours,
            seed,
        )?;
        let hosts = (0..names.len())
            .map(|_| Host {
                dl: None,
                neighbours: Vec::new(),
                puller: false,
                started: None,
                done: None,
                online: true,
                incarnation: 0,
                tick_at: None,
                held: Vec::new(),
                published: 0,
                committed: 0,
                commit_synced: 0.0,
                grid_origin: 0.0,
                complete_from: None,
                announced_at: None,
                seen: Vec::new(),
                bytes_in: 0,
                bytes_out: 0,
                uploads: 0,
                repo_ready: false,
                arrives: None,
                roster_seen: 0,
            })
            .collect();
        let mut repo_of_site = Vec::new();
        let mut first = 0u32;
        for s in &topo.sites {
            repo_of_site.push(first);
            first += s.hosts;
        }
        let pub_site = fabric.site_of[publisher as usize] as usize;
        repo_of_site[pub_site] = publisher;
        Ok(Sim {
            topo,
            strategy,
            workload,
            swarm,
            net,
            fabric,
            names,
            hosts,
            publisher,
            transfers: Vec::new(),
            free_transfers: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0.0,
            rng: Rng::new(seed),
            config,
            table,
            whole_bytes: payload.whole_bytes,
            recompute_pending: false,
            events: 0,
            flows: 0,
            peak_flows: 0,
            completed: 0,
            repo_of_site,
            request_transfer: HashMap::new(),
            cancelled_bytes: 0,
            rosters: topo.sites.iter().map(|_| None).collect(),
        })
    }

    fn push(&mut self, at: f64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// The pullers: `workload.pullers` hosts taken round-robin over sites, publisher excluded.
    fn choose_pullers(&self) -> Vec<u32> {
        let mut per_site: Vec<Vec<u32>> = vec![Vec::new(); self.topo.sites.len()];
        for h in 0..self.names.len() as u32 {
            if h != self.publisher {
                per_site[self.fabric.site_of[h as usize] as usize].push(h);
            }
        }
        let total: usize = per_site.iter().map(Vec::len).sum();
        let want = self.workload.pullers.unwrap_or(total).min(total);
        let mut out = Vec::with_capacity(want);
        let mut i = 0;
        while out.len() < want {
            for s in &per_site {
                if let Some(&h) = s.get(i)
                    && out.len() < want
                {
                    out.push(h);
                }
            }
            i += 1;
        }
        out.sort_unstable();
        out
    }

    /// Runs to the end; `progress` gets the number of completed pullers now and then.
    pub fn run(mut self, progress: &mut dyn FnMut(u64)) -> RunResult {
        let wall = Instant::now();
        let pullers = self.choose_pullers();
        for &h in &pullers {
            self.hosts[h as usize].puller = true;
        }
        self.wire_neighbours(&pullers);
        let mut t = 0.0;
        for &h in &pullers {
            if let Arrivals::Poisson(rate) = self.workload.arrivals {
                t += self.rng.exp(1.0 / rate.max(1e-9));
            }
            self.hosts[h as usize].arrives = Some(t);
            self.push(t, Ev::Arrive(h));
            if let (Some(c), true) = (self.workload.churn, self.is_swarm()) {
                let leave = t + self.rng.exp(c.mean_online);
                self.push(leave, Ev::Leave(h));
            }
        }
        if self.strategy == Strategy::Central {
            self.stage_repositories(&pullers);
        }
        let mut last_report = 0u64;
        loop {
            let next_ev = self.queue.peek().map(|q| q.at);
            let next_flow = self.net.next_completion().map(|(t, _)| t);
            let take_flow = match (next_ev, next_flow) {
                (None, None) => break,
                (Some(e), Some(f)) => f <= e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if take_flow {
                if let Some((at, _)) = self.net.next_completion() {
                    self.now = self.now.max(at);
                }
                if let Some((_, tag)) = self.net.pop_completion() {
                    self.flow_done(tag as u32);
                }
            } else if let Some(q) = self.queue.pop() {
                self.now = self.now.max(q.at);
                self.events += 1;
                self.handle(q.ev);
            }
            // Re-solve rates once everything at this instant is handled.
            let later = self.queue.peek().is_none_or(|q| q.at > self.now)
                && self.net.next_completion().is_none_or(|(t, _)| t > self.now);
            if later && self.net.is_dirty() {
                if self.workload.rate_quantum > 0.0 {
                    // Until the next exact solve, new flows take the room left on their
                    // paths and freed capacity goes to the flows that shared it.
                    self.net.fill_local(self.now);
                    if !self.recompute_pending {
                        self.recompute_pending = true;
                        let at = self.now + self.workload.rate_quantum;
                        self.push(at, Ev::Recompute);
                    }
                } else {
                    self.net.recompute(self.now);
                }
            }
            self.peak_flows = self.peak_flows.max(self.net.active());
            if self.completed != last_report {
                last_report = self.completed;
                progress(self.completed);
            }
            if self.all_done(&pullers) {
                break;
            }
        }
        self.finish(&pullers, wall.elapsed())
    }

    fn is_swarm(&self) -> bool {
        matches!(self.strategy, Strategy::Swarm | Strategy::SwarmWarm)
    }

    fn all_done(&self, pullers: &[u32]) -> bool {
        self.completed as usize >= pullers.len()
    }

    fn wire_neighbours(&mut self, pullers: &[u32]) {
        if !self.is_swarm() || pullers.len() < 2 {
            return;
        }
        let k = self.swarm.neighbours;
        if k + 1 >= pullers.len() {
            for &h in pullers {
                self.hosts[h as usize].neighbours =
                    pullers.iter().copied().filter(|&o| o != h).collect();
            }
            return;
        }
        if !self.swarm.site_aware || self.topo.sites.len() < 2 {
            self.random_links(pullers, k, false);
            return;
        }
        // A site-aware node splits the fetching of remote-only chunks among the site members
        // it knows; the node learns every announcer (up to 4096), so it knows its site. With
        // the bounded view of a large run, mostly-remote random neighbours would leave each
        // host one or two local members and every unit fetched across the WAN by most of the
        // site. So: most neighbours from the own site, a few elsewhere.
        let remote = (k / 8).max(1);
        let mut per_site: Vec<Vec<u32>> = vec![Vec::new(); self.topo.sites.len()];
        for &h in pullers {
            per_site[self.fabric.site_of[h as usize] as usize].push(h);
        }
        for (s, group) in per_site.iter().enumerate() {
            if k - remote + 1 >= group.len() {
                for &h in group {
                    let others = group.iter().copied().filter(|&o| o != h);
                    self.hosts[h as usize].neighbours.extend(others);
                }
            } else {
                // The view does not cover the site: its roster stands in for the rest.
                self.rosters[s] = Some(SiteRoster {
                    pullers: group.clone(),
                    ..SiteRoster::default()
                });
                self.random_links(group, k - remote, false);
            }
        }
        self.random_links(pullers, k, true);
    }

    /// Adds random symmetric links among `nodes`: each tries `cap / 2` random others, keeping
    /// degrees at most `cap` (so about `cap`); `across` links only hosts of different sites.
    fn random_links(&mut self, nodes: &[u32], cap: usize, across: bool) {
        let n = nodes.len() as u64;
        for (i, &h) in nodes.iter().enumerate() {
            for _ in 0..cap.div_ceil(2) {
                let j = self.rng.below(n) as usize;
                if j == i {
                    continue;
                }
                let o = nodes[j];
                if (across && self.same_site(h, o))
                    || self.hosts[h as usize].neighbours.len() >= cap
                    || self.hosts[o as usize].neighbours.len() >= cap
                    || self.hosts[h as usize].neighbours.contains(&o)
                {
                    continue;
                }
                self.hosts[h as usize].neighbours.push(o);
                self.hosts[o as usize].neighbours.push(h);
            }
        }
    }

    fn new_transfer(&mut self, t: Transfer) -> u32 {
        match self.free_transfers.pop() {
            Some(i) => {
                self.transfers[i as usize] = t;
                i
            }
            None => {
                self.transfers.push(t);
                (self.transfers.len() - 1) as u32
            }
        }
    }

    fn free_transfer(&mut self, i: u32) {
        let t = &self.transfers[i as usize];
        if let Kind::Request(id) = t.kind
            && self.request_transfer.get(&(t.to, id)) == Some(&i)
        {
            self.request_transfer.remove(&(t.to, id));
        }
        let t = &mut self.transfers[i as usize];
        t.live = false;
        t.chunks = Vec::new();
        self.free_transfers.push(i);
    }

    /// Starts a whole-image copy from `from` to `to`: request latency, then the flow.
    fn whole_copy(&mut self, from: u32, to: u32) {
        let incarnation = self.hosts[to as usize].incarnation;
        let t = self.new_transfer(Transfer {
            kind: Kind::Whole,
            from,
            to,
            bytes: self.whole_bytes,
            incarnation,
            chunks: Vec::new(),
            flow: None,
            live: true,
            cancelled: false,
            slot: false,
        });
        let at = self.now + self.fabric.latency(to as usize, from as usize);
        self.push(at, Ev::Send(t));
    }

    fn stage_repositories(&mut self, pullers: &[u32]) {
        let mut sites_needed = vec![false; self.topo.sites.len()];
        for &h in pullers {
            sites_needed[self.fabric.site_of[h as usize] as usize] = true;
        }
        self.hosts[self.publisher as usize].repo_ready = true;
        for (s, needed) in sites_needed.into_iter().enumerate() {
            let repo = self.repo_of_site[s];
            if needed && repo != self.publisher {
                self.whole_copy(self.publisher, repo);
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(h) => self.arrive(h),
            Ev::StartPull(h, incarnation) => {
                let host = &self.hosts[h as usize];
                if host.online && host.incarnation == incarnation && host.dl.is_none() {
                    self.start_downloader(h);
                }
            }
            Ev::Send(t) => self.send(t),
            Ev::Deliver(t) => self.deliver(t),
            Ev::Busy(t) => self.refused(t),
            Ev::Tick(h, at) => {
                let host = &mut self.hosts[h as usize];
                if host.tick_at == Some(at) {
                    host.tick_at = None;
                    if let Some(dl) = host.dl.as_mut() {
                        dl.tick(Duration::from_secs_f64(self.now));
                    }
                    self.drive(h);
                }
            }
            Ev::Ticker(h, incarnation) => self.ticker(h, incarnation),
            Ev::Leave(h) => self.leave(h),
            Ev::Join(h) => self.join(h),
            Ev::Recompute => {
                self.recompute_pending = false;
                self.net.recompute(self.now);
            }
        }
    }

    fn complete(&mut self, h: u32) {
        // The node's fixed cost after its pull loop ends (the simulator's downloader is done).
        let finish = if self.is_swarm() {
            self.swarm.pull_finish
        } else {
            0.0
        };
        let host = &mut self.hosts[h as usize];
        if host.done.is_none() && host.puller {
            host.done = Some(self.now + finish);
            self.completed += 1;
        }
    }

    fn arrive(&mut self, h: u32) {
        self.hosts[h as usize].started = Some(self.now);
        match self.strategy {
            Strategy::Install => {
                self.hosts[h as usize].done = Some(self.now + self.workload.install_time);
                self.completed += 1;
            }
            Strategy::Single => self.whole_copy(self.publisher, h),
            Strategy::Central => {
                let repo = self.repo_of_site[self.fabric.site_of[h as usize] as usize];
                if repo == h {
                    // The repository host itself completes when staged.
                } else if self.hosts[repo as usize].repo_ready {
                    self.whole_copy(repo, h);
                }
            }
            Strategy::Swarm | Strategy::SwarmWarm => {
                self.roster_changed(h);
                self.begin_pull(h);
            }
        }
    }

    /// Starts `h`'s downloader after the pull's fixed setup time (at once without one).
    fn begin_pull(&mut self, h: u32) {
        if self.swarm.pull_setup > 0.0 {
            let incarnation = self.hosts[h as usize].incarnation;
            self.push(
                self.now + self.swarm.pull_setup,
                Ev::StartPull(h, incarnation),
            );
        } else {
            self.start_downloader(h);
        }
    }

    fn start_downloader(&mut self, h: u32) {
        let now = Duration::from_secs_f64(self.now);
        let local = self.hosts[h as usize].held.clone();
        let config = self
            .config
            .clone()
            .with_seed(self.config.seed() ^ u64::from(h).wrapping_mul(0x9E37_79B9));
        let Ok(mut dl) = Downloader::new(config, self.table.clone(), local) else {
            return; // limits were checked against the table in `new`
        };
        if self.swarm.site_aware {
            // As pull.rs on a node with a configured site: rank ourselves among the site's
            // pullers for the chunks fetched across sites.
            dl.set_own_id(&h);
        }
        let _ = dl.add_peer(now, self.publisher, Holds::Everything);
        self.label(&mut dl, now, h, self.publisher);
        // The pull loop's first tick is immediate: it takes in what the neighbours announced
        // and announces what we hold (what we held before leaving, after churn).
        let host = &mut self.hosts[h as usize];
        host.published = host.held.len() as u32;
        host.committed = host.published;
        host.commit_synced = self.now;
        host.grid_origin = self.now;
        host.announced_at = Some(self.now);
        let neighbours = host.neighbours.clone();
        let mut seen = vec![0u32; neighbours.len()];
        for (i, &n) in neighbours.iter().enumerate() {
            let other = &self.hosts[n as usize];
            if !other.online || other.started.is_none() {
                continue;
            }
            if other.announced_complete(self.now) {
                let _ = dl.add_peer(now, n, Holds::Everything);
                self.label(&mut dl, now, h, n);
                seen[i] = SEEN_COMPLETE;
            } else {
                let _ = dl.add_peer(now, n, Holds::Nothing);
                self.label(&mut dl, now, h, n);
                let upto = other.published;
                dl.peer_has(now, &n, other.held[..upto as usize].iter().copied());
                seen[i] = upto;
            }
            // The neighbour learns of us too.
            let mine = self.hosts[h as usize].published;
            let local = self.same_site(n, h);
            let (me, other) = pair_mut(&mut self.hosts, h as usize, n as usize);
            if let Some(odl) = other.dl.as_mut() {
                let _ = odl.add_peer(now, h, Holds::Nothing);
                if self.swarm.site_aware {
                    odl.set_peer_locality(now, &h, locality(local));
                }
                odl.peer_has(now, &h, me.held[..mine as usize].iter().copied());
                if let Some(j) = other.neighbours.iter().position(|&x| x == h) {
                    other.seen[j] = mine;
                }
            }
        }
        self.hosts[h as usize].seen = seen;
        let complete = dl.is_complete();
        self.hosts[h as usize].dl = Some(dl);
        if complete {
            self.complete(h);
        }
        self.hosts[h as usize].roster_seen = 0;
        let peers = self.hosts[h as usize]
            .dl
            .as_ref()
            .map_or(0, Downloader::peer_count);
        let interval =
            announce_interval(self.swarm.announce_every, self.swarm.announce_budget, peers);
        self.update_roster(h, interval);
        self.drive(h);
        let phase = self.rng.unit() * self.swarm.announce_every;
        self.hosts[h as usize].grid_origin = self.now + phase;
        let incarnation = self.hosts[h as usize].incarnation;
        self.push(self.now + phase, Ev::Ticker(h, incarnation));
    }

    /// `h` started or left: its site's roster is stale.
    fn roster_changed(&mut self, h: u32) {
        let site = self.fabric.site_of[h as usize] as usize;
        if let Some(r) = self.rosters[site].as_mut() {
            r.stale = true;
        }
    }

    /// Rebuilds `h`'s site roster if it is stale and `interval` passed since the last
    /// rebuild, and gives `h`'s downloader the current one.
    fn update_roster(&mut self, h: u32, interval: f64) {
        let site = self.fabric.site_of[h as usize] as usize;
        let Some(r) = self.rosters[site].as_mut() else {
            return;
        };
        let now = self.now;
        if r.stale && (r.version == 0 || now - r.built_at >= interval - 1e-9) {
            let hosts = &self.hosts;
            let keys: Arc<[u64]> = r
                .pullers
                .iter()
                .filter(|&&p| {
                    let host = &hosts[p as usize];
                    host.online && host.arrives.is_some_and(|t| t <= now)
                })
                .map(site_key)
                .collect();
            if keys != r.keys || r.version == 0 {
                r.keys = keys;
                r.version += 1;
                r.built_at = now;
            }
            r.stale = false;
        }
        let host = &mut self.hosts[h as usize];
        if host.roster_seen != r.version
            && let Some(dl) = host.dl.as_mut()
        {
            dl.set_site_roster(Some(r.keys.clone()));
            host.roster_seen = r.version;
        }
    }

    fn same_site(&self, a: u32, b: u32) -> bool {
        self.fabric.site_of[a as usize] == self.fabric.site_of[b as usize]
    }

    /// Tells `me`'s downloader whether `peer` is on its site, as pull.rs does for a node with
    /// a configured site (a no-op when the swarm is site-blind).
    fn label(&self, dl: &mut Downloader<u32>, now: Duration, me: u32, peer: u32) {
        if self.swarm.site_aware {
            dl.set_peer_locality(now, &peer, locality(self.same_site(me, peer)));
        }
    }

    /// Performs the downloader's actions the way `node/src/pull.rs` does.
    fn drive(&mut self, h: u32) {
        let now = Duration::from_secs_f64(self.now);
        let Some(mut dl) = self.hosts[h as usize].dl.take() else {
            return;
        };
        let incarnation = self.hosts[h as usize].incarnation;
        let mut completed = false;
        while let Some(action) = dl.poll(now) {
            match action {
                Action::Request {
                    peer,
                    id,
                    chunks,
                    bytes,
                    ..
                } => {
                    let t = self.new_transfer(Transfer {
                        kind: Kind::Request(id),
                        from: peer,
                        to: h,
                        bytes,
                        incarnation,
                        chunks,
                        flow: None,
                        live: true,
                        cancelled: false,
                        slot: false,
                    });
                    self.request_transfer.insert((h, id), t);
                    let at = self.now
                        + self.fabric.latency(h as usize, peer as usize)
                        + self.swarm.request_overhead;
                    self.push(at, Ev::Send(t));
                }
                Action::Complete => completed = true,
                // As pull.rs: stop waiting for it and ignore what it brings.
                Action::Cancel { id, .. } => {
                    if let Some(t) = self.request_transfer.remove(&(h, id)) {
                        self.transfers[t as usize].cancelled = true;
                    }
                }
                // Every simulated peer is honest: no bans; a stall waits for sources.
                _ => {}
            }
        }
        let deadline = dl.next_deadline().map(|d| d.as_secs_f64());
        self.hosts[h as usize].dl = Some(dl);
        if completed {
            self.complete(h);
            // pull.rs announces `Holdings::Complete` once the pull has finished (its fixed
            // finish after the loop); neighbours take it in at their next tick after that.
            let host = &mut self.hosts[h as usize];
            if host.complete_from.is_none() {
                host.complete_from = Some(self.now + self.swarm.pull_finish);
            }
        }
        if let Some(d) = deadline {
            let host = &mut self.hosts[h as usize];
            if host.tick_at.is_none_or(|t| d < t) {
                host.tick_at = Some(d);
                self.push(d.max(self.now), Ev::Tick(h, d));
            }
        }
    }

    fn send(&mut self, t: u32) {
        let tr = &self.transfers[t as usize];
        if !tr.live {
            return;
        }
        let (from, to, bytes, kind) = (tr.from, tr.to, tr.bytes, tr.kind);
        let stale = self.hosts[to as usize].incarnation != tr.incarnation
            || !self.hosts[to as usize].online;
        if stale {
            self.free_transfer(t);
            return;
        }
        if !self.hosts[from as usize].online {
            // The server is gone: the puller's transport reports a failure.
            if let Kind::Request(id) = kind {
                if let Some(dl) = self.hosts[to as usize].dl.as_mut() {
                    dl.on_failure(Duration::from_secs_f64(self.now), &from, id, Failure::Other);
                }
                self.drive(to);
            }
            self.free_transfer(t);
            return;
        }
        if let Kind::Request(_) = kind {
            // As the node: a chunk request takes an upload slot when accepted and keeps it
            // until the response's last byte is out; with every slot taken the answer is an
            // immediate, small Busy refusal.
            let limit = self.swarm.upload_slots;
            let server = &mut self.hosts[from as usize];
            if limit > 0 && server.uploads as usize >= limit {
                let at = self.now + self.fabric.latency(from as usize, to as usize);
                self.push(at, Ev::Busy(t));
                return;
            }
            server.uploads += 1;
            self.transfers[t as usize].slot = true;
        }
        let (path, _) = self.fabric.path(from as usize, to as usize);
        let flow = self.net.start(self.now, &path, bytes as f64, u64::from(t));
        self.transfers[t as usize].flow = Some(flow);
        self.flows += 1;
    }

    fn flow_done(&mut self, t: u32) {
        self.release_slot(t);
        let tr = &mut self.transfers[t as usize];
        tr.flow = None;
        if tr.cancelled {
            self.cancelled_bytes += tr.bytes;
        }
        let (from, to, bytes) = (tr.from as usize, tr.to as usize, tr.bytes);
        self.hosts[from].bytes_out += bytes;
        self.hosts[to].bytes_in += bytes;
        let mut at = self.now + self.fabric.latency(from, to);
        if let Some(rate) = self.swarm.verify_rate
            && self.is_swarm()
        {
            at += bytes as f64 / rate;
        }
        self.push(at, Ev::Deliver(t));
    }

    /// Brings `h`'s committed count up to now, as pull.rs commits: everything received is made
    /// durable (and announceable) at the next commit tick of the pull loop's grid. Called
    /// before every change of `held`; a commit at this very instant runs after the events of
    /// the instant (the node acknowledges a commit only once its fsync returned).
    fn sync_commit(&mut self, h: u32) {
        let every = self.swarm.commit_every;
        let now = self.now;
        let host = &mut self.hosts[h as usize];
        if every <= 0.0 {
            host.committed = host.held.len() as u32;
            return;
        }
        let mut last = host.grid_origin + ((now - host.grid_origin) / every).floor() * every;
        if last >= now - 1e-12 {
            last -= every;
        }
        if last >= host.commit_synced - 1e-12 {
            host.committed = host.held.len() as u32;
        }
        host.commit_synced = now;
    }

    /// Frees the upload slot transfer `t` holds at its server, if any.
    fn release_slot(&mut self, t: u32) {
        let tr = &mut self.transfers[t as usize];
        if std::mem::take(&mut tr.slot) {
            let server = &mut self.hosts[tr.from as usize];
            server.uploads = server.uploads.saturating_sub(1);
        }
    }

    /// The Busy refusal of transfer `t` reached its puller: as pull.rs, report it unless the
    /// request was given up meanwhile.
    fn refused(&mut self, t: u32) {
        let Some((from, to, kind, _)) = self.take_answer(t) else {
            return;
        };
        if let Kind::Request(id) = kind {
            if let Some(dl) = self.hosts[to as usize].dl.as_mut() {
                dl.on_failure(Duration::from_secs_f64(self.now), &from, id, Failure::Busy);
            }
            self.drive(to);
        }
    }

    /// Frees transfer `t`, whose answer reached its puller; returns what the puller should
    /// act on: nothing if the transfer was already gone, its puller left since it was asked,
    /// or it was given up.
    fn take_answer(&mut self, t: u32) -> Option<(u32, u32, Kind, Vec<ChunkIdx>)> {
        let tr = &mut self.transfers[t as usize];
        if !tr.live {
            return None;
        }
        let (from, to, kind) = (tr.from, tr.to, tr.kind);
        let chunks = std::mem::take(&mut tr.chunks);
        let stale = self.hosts[to as usize].incarnation != tr.incarnation || tr.cancelled;
        self.free_transfer(t);
        (!stale).then_some((from, to, kind, chunks))
    }

    fn deliver(&mut self, t: u32) {
        let Some((from, to, kind, chunks)) = self.take_answer(t) else {
            return;
        };
        match kind {
            Kind::Whole => {
                let repo_site = self.fabric.site_of[to as usize] as usize;
                if self.strategy == Strategy::Central && self.repo_of_site[repo_site] == to {
                    self.hosts[to as usize].repo_ready = true;
                    self.complete(to);
                    let waiting: Vec<u32> = (0..self.hosts.len() as u32)
                        .filter(|&o| {
                            o != to
                                && self.fabric.site_of[o as usize] as usize == repo_site
                                && self.hosts[o as usize].puller
                                && self.hosts[o as usize].started.is_some()
                                && self.hosts[o as usize].done.is_none()
                        })
                        .collect();
                    for o in waiting {
                        self.whole_copy(to, o);
                    }
                } else {
                    self.complete(to);
                }
            }
            Kind::Request(id) => {
                let now = Duration::from_secs_f64(self.now);
                self.sync_commit(to);
                let host = &mut self.hosts[to as usize];
                let Some(dl) = host.dl.as_mut() else { return };
                for &c in &chunks {
                    if dl.chunk_state(c) != Some(ChunkState::Done) {
                        host.held.push(c);
                    }
                }
                dl.on_response(
                    now,
                    &from,
                    id,
                    chunks.into_iter().map(|c| (c, ChunkOutcome::Verified)),
                );
                self.drive(to);
            }
        }
    }

    /// One tick of `h`'s pull loop, as pull.rs runs it every `TICK`: take in the holdings the
    /// neighbours announced since the last tick, announce our own when they grew and the
    /// per-receiver budget allows, then schedule once for all of it.
    fn ticker(&mut self, h: u32, incarnation: u32) {
        let host = &self.hosts[h as usize];
        if !host.online || host.incarnation != incarnation || host.done.is_some() {
            return; // the pull ended (or this is a tick of an earlier incarnation)
        }
        let Some(mut dl) = self.hosts[h as usize].dl.take() else {
            return;
        };
        let now = Duration::from_secs_f64(self.now);
        let neighbours = std::mem::take(&mut self.hosts[h as usize].neighbours);
        let mut seen = std::mem::take(&mut self.hosts[h as usize].seen);
        for (i, &n) in neighbours.iter().enumerate() {
            let other = &self.hosts[n as usize];
            if seen[i] == SEEN_COMPLETE || !other.online || other.started.is_none() {
                continue;
            }
            if other.announced_complete(self.now) {
                let _ = dl.add_peer(now, n, Holds::Everything);
                self.label(&mut dl, now, h, n);
                seen[i] = SEEN_COMPLETE;
            } else if other.published > seen[i] {
                let new = &other.held[seen[i] as usize..other.published as usize];
                dl.peer_has(now, &n, new.iter().copied());
                seen[i] = other.published;
            }
        }
        let peers = dl.peer_count();
        let host = &mut self.hosts[h as usize];
        host.neighbours = neighbours;
        host.seen = seen;
        host.dl = Some(dl);
        let interval =
            announce_interval(self.swarm.announce_every, self.swarm.announce_budget, peers);
        let due = host
            .announced_at
            .is_none_or(|at| self.now - at >= interval - 1e-9);
        self.sync_commit(h);
        let host = &mut self.hosts[h as usize];
        let held = host.committed;
        if held != host.published && due {
            host.published = held;
            host.announced_at = Some(self.now);
        }
        self.update_roster(h, interval);
        self.drive(h);
        let at = self.now + self.swarm.announce_every;
        self.push(at, Ev::Ticker(h, incarnation));
    }

    fn leave(&mut self, h: u32) {
        let Some(churn) = self.workload.churn else {
            return;
        };
        if !self.hosts[h as usize].online {
            return;
        }
        let now = Duration::from_secs_f64(self.now);
        self.roster_changed(h);
        let host = &mut self.hosts[h as usize];
        host.online = false;
        host.incarnation += 1;
        host.dl = None;
        host.tick_at = None;
        // Abort every flow to or from h; pullers served by h see a failure.
        for t in 0..self.transfers.len() as u32 {
            let tr = &self.transfers[t as usize];
            if !tr.live || (tr.from != h && tr.to != h) {
                continue;
            }
            if let Some(f) = tr.flow {
                self.net.remove(self.now, f);
            }
            let (from, to, kind) = (tr.from, tr.to, tr.kind);
            self.release_slot(t);
            self.free_transfer(t);
            if from == h
                && to != h
                && let Kind::Request(id) = kind
            {
                if let Some(dl) = self.hosts[to as usize].dl.as_mut() {
                    dl.on_failure(now, &h, id, Failure::Other);
                }
                self.drive(to);
            }
        }
        for n in self.hosts[h as usize].neighbours.clone() {
            let other = &mut self.hosts[n as usize];
            if let Some(dl) = other.dl.as_mut() {
                dl.remove_peer(now, &h);
            }
            if let Some(j) = other.neighbours.iter().position(|&x| x == h) {
                other.seen[j] = 0; // it forgot us; we are announced afresh when we return
            }
            self.drive(n);
        }
        let back = self.now + self.rng.exp(churn.mean_offline);
        self.push(back, Ev::Join(h));
    }

    fn join(&mut self, h: u32) {
        let Some(churn) = self.workload.churn else {
            return;
        };
        let host = &mut self.hosts[h as usize];
        host.online = true;
        if host.started.is_some() {
            self.roster_changed(h);
            self.begin_pull(h);
        }
        let leave = self.now + self.rng.exp(churn.mean_online);
        self.push(leave, Ev::Leave(h));
    }

    fn finish(self, pullers: &[u32], wall: Duration) -> RunResult {
        let extra = self.workload.start_overhead;
        let hosts = pullers
            .iter()
            .map(|&h| {
                let host = &self.hosts[h as usize];
                HostResult {
                    host: self.names[h as usize].clone(),
                    site: self.topo.sites[self.fabric.site_of[h as usize] as usize]
                        .name
                        .clone(),
                    started: host.started.unwrap_or(0.0),
                    completed: host.done.map(|d| {
                        if self.strategy == Strategy::Install {
                            d
                        } else {
                            d + extra
                        }
                    }),
                    bytes_in: host.bytes_in,
                    bytes_out: host.bytes_out,
                }
            })
            .collect();
        let mut links = Vec::new();
        let mut wan_bytes = 0u64;
        for (i, name) in self.fabric.link_names.iter().enumerate() {
            let b = self.net.carried(i as LinkId).round() as u64;
            if self.fabric.wan[i] {
                wan_bytes += b;
            }
            links.push((name.clone(), b));
        }
        let mut downloader = DownloaderTotals::default();
        for &h in pullers {
            if let Some(dl) = &self.hosts[h as usize].dl {
                let s = dl.stats();
                downloader.requests += s.requests_sent;
                downloader.endgame_requests += s.endgame_requests;
                downloader.cancels += s.cancels;
                downloader.timeouts += s.timeouts;
                downloader.busy += s.busy;
                downloader.duplicate_bytes += s.duplicate_bytes;
            }
        }
        RunResult {
            downloader,
            cancelled_bytes: self.cancelled_bytes,
            strategy: self.strategy,
            hosts,
            links,
            wan_bytes,
            wall,
            events: self.events,
            flows: self.flows,
            peak_flows: self.peak_flows,
            solver_work: self.net.work(),
        }
    }
}
