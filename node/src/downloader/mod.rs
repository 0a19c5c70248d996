//! The chunk downloader: which chunk to ask of which peer, when to give up on a peer, the endgame.
//!
//! A sans-IO state machine (STYLE.md item 8): the driver feeds it events — peers joining and
//! leaving, what they hold, responses, failures — together with the current time, and polls
//! [`Action`]s: requests to send, requests to drop, peers to ban, completion. It owns no socket,
//! no task and no clock, so the node, the tests and the simulator drive exactly the same code;
//! time is a [`Duration`] since any origin the driver likes, virtual or real.
//!
//! Policy:
//! - **Rarest first**: among the chunks a peer holds, ask for those the fewest connected peers
//!   hold, so that copies spread and pullers can serve each other instead of all draining the
//!   seed. Ties are broken by a seeded shuffle of runs of consecutive chunks (see `order`), so
//!   two downloaders start in different places and a request covers a contiguous range where
//!   rarity allows.
//! - **Batching and limits**: a request carries many chunks up to a byte and a count limit; each
//!   peer has a bounded number of requests and bytes in flight, and so has the whole download.
//!   Faster peers free their slots sooner and so get more requests.
//! - **Timeouts**: a request past its deadline is dropped and its chunks re-queued; the peer
//!   backs off exponentially and then gets one request at a time until it delivers again. A
//!   deadline measures silence, not total time: every delivery from a peer pushes the deadlines
//!   of its other requests to at least `request_timeout` from then, since a peer that serves
//!   requests one after the other (say, behind an upload rate limit) is slow, not dead.
//! - **Sizing to the rate**: each peer's delivery rate is estimated from the bytes it delivers
//!   over spans of at least the pipeline window (responses interleaved on one connection finish
//!   together, so one response's time says little); its
//!   bytes in flight are capped at what it delivers in the `pipeline_window` (1 s, plus less
//!   than one chunk: a request is sent while the peer is below the cap), and a
//!   request at half that: a slow peer is never asked for more than it can send well
//!   before the deadline, and a shared uplink is not filled with seconds of queued responses
//!   (the simulator measured 4 MiB requests with 32 MiB queued per peer at +48% over S/B on a
//!   16-host swarm).
//!   Until a peer first delivers, it gets at most [`INITIAL_REQUESTS`] requests.
//! - **Corruption**: a chunk that fails verification bans its sender for a while; the chunk is
//!   re-queued and fetched elsewhere. A peer that reports a chunk missing stops counting as its
//!   holder.
//! - **Endgame**: once every remaining chunk is in flight, idle peers get duplicates of the
//!   chunks of *late* requests only — those outstanding for more than [`LATE_FACTOR`] times
//!   what their peer's measured rate predicts — and when a chunk arrives, requests that became
//!   useless are cancelled. Duplicating every outstanding chunk at once (the classic endgame)
//!   doubled the bytes of small pulls such as a 2% update, where everything is in flight from
//!   the first round, and wasted shaped links on copies that were about to arrive anyway.
//! - **Sites**: peers labelled [`Locality::Remote`] with [`Downloader::set_peer_locality`] sit
//!   behind a slow inter-site link. A chunk a healthy local peer holds is fetched only locally;
//!   a chunk no local peer holds is fetched remotely by one host of the site, chosen per unit of
//!   chunks among the site's pulling hosts, while the others wait for it to appear locally
//!   (see `locality`). Unlabelled peers are local, so a driver that never labels keeps the
//!   site-blind policy.
//!
//! Driving it: build a [`ChunkTable`] from the manifests (shared by `Arc`; chunks are then named
//! by [`ChunkIdx`]), create a [`Downloader`] minus the locally held chunks, report peers with
//! [`Downloader::add_peer`] / [`Downloader::peer_has`] / [`Downloader::remove_peer`], and loop:
//! drain [`Downloader::poll`], perform each [`Action`], feed back [`Downloader::on_response`] or
//! [`Downloader::on_failure`], and wake at [`Downloader::next_deadline`] to call
//! [`Downloader::tick`]. Chunks must be hash-checked by the driver before they are reported
//! [`ChunkOutcome::Verified`].
//!
//! Cost: about 12 bytes of state per chunk of the table plus one bit per chunk per partial peer; a
//! pick is O(1) for a peer that holds everything and a bounded scan (falling back to a word-wise
//! bitset intersection) for a partial one — never a sort of all chunks.

mod config;
mod locality;
mod order;
mod stats;
mod table;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, ConfigBuilder, ConfigError, MAX_PEERS_LIMIT};
pub use locality::{Locality, site_key};
pub use stats::{PeerStats, Stats};
pub use table::{ChunkIdx, ChunkTable, ChunkTableError};

use locality::{owned_chunks, stable_hash};
use order::{RarityOrder, Scan};

/// Per-chunk state byte: queued (wanted, not in flight, not done).
const QUEUED: u8 = 0;
/// Per-chunk state byte: not part of this download (held locally at the start).
const NOT_WANTED: u8 = 254;
/// Per-chunk state byte: received and verified.
const DONE: u8 = 255;
// Any other value is the number of requests in flight that carry the chunk (at most 8).

/// How far down the rarity order a partial peer's chunks are looked for before switching to a
/// bitset intersection; large enough that a peer holding a fair share is found at once.
const SCAN_CAP: usize = 2048;

/// Requests a peer gets before its first delivery gives an estimate of its rate.
pub const INITIAL_REQUESTS: u32 = 2;

/// Bytes a peer may have in flight before its first delivery gives an estimate of its rate
/// (slow start). A peer whose uplink many pullers share serves each of them slowly: full-size
/// first requests from all of them queue up past the request timeout, time out, and are asked
/// again while the cancelled bytes still flow (the simulator showed this taking most of a
/// shared link). Small first requests finish quickly and measure the rate that sizes the rest.
pub const INITIAL_BYTE_CAP: u64 = 2 << 20;

/// Weight of a new sample in a peer's rate estimate (exponential moving average).
const RATE_SAMPLE_WEIGHT: f64 = 0.3;
/// A request is late, and its chunks may be duplicated in the endgame, once it has been out
/// this many times longer than its peer's rate predicts for it and the bytes queued before it.
pub const LATE_FACTOR: f64 = 2.0;
/// A request is never late sooner than this after it was sent: a round trip and a verify.
pub const LATE_FLOOR: Duration = Duration::from_millis(200);

/// Identifies one request from this downloader; the driver maps it to its transport's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What a newly known peer holds to begin with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Nothing yet: a peer that is itself pulling and announces chunks with
    /// [`Downloader::peer_has`] as it gets them.
    Nothing,
    /// Every chunk in the table: a provider of the complete images.
    Everything,
}

/// What happened to one chunk of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// The chunk arrived and its hash matched.
    Verified,
    /// The peer answered that it does not have the chunk.
    Missing,
    /// The chunk arrived but its hash did not match: the peer gets banned.
    Corrupt,
}

/// Why a request ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The transport gave up waiting.
    Timeout,
    /// Any other failure: stream reset, protocol not supported, dial failure.
    Other,
    /// The peer refused because every upload slot it has was taken. Not the peer's fault: it
    /// is paused for the back-off base without a strike, so a busy seed is asked again soon.
    Busy,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action<P> {
    /// Send a request for these chunks (ascending table order) to `peer`.
    Request {
        /// The peer to ask.
        peer: P,
        /// This request's id, to quote in the response.
        id: RequestId,
        /// The chunks asked for.
        chunks: Vec<ChunkIdx>,
        /// Their total length.
        bytes: u64,
        /// When the downloader will consider the request timed out, unless the peer delivers
        /// something meanwhile (which extends it).
        deadline: Duration,
    },
    /// The downloader gave up on this request (timed out, or every chunk in it arrived from
    /// elsewhere): drop it; a late response is still accepted. Not emitted for requests the
    /// driver itself reported finished or for peers it removed.
    Cancel {
        /// The peer the request went to.
        peer: P,
        /// The request.
        id: RequestId,
    },
    /// The peer sent a corrupt chunk: disconnect it and refuse it until `until`.
    Ban {
        /// The peer.
        peer: P,
        /// End of the ban, on the driver's clock.
        until: Duration,
    },
    /// Every wanted chunk is verified. Emitted once.
    Complete,
    /// Nothing is in flight and no connected peer holds any remaining chunk: these chunks are
    /// unavailable. Emitted once each time the download gets stuck.
    Stalled {
        /// The chunks no connected peer holds.
        unavailable: Vec<ChunkIdx>,
    },
}

/// Where one chunk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Held locally from the start: not part of this download.
    NotWanted,
    /// Wanted and waiting for a request.
    Queued,
    /// In flight in this many requests (more than one only in the endgame).
    InFlight(u8),
    /// Received and verified.
    Done,
}

/// Why a downloader cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NewDownloaderError {
    /// A chunk does not fit in one request.
    #[error("a {len}-byte chunk exceeds max_request_bytes ({max_request_bytes})")]
    ChunkTooLarge {
        /// Length of the largest chunk.
        len: u32,
        /// The configured request size.
        max_request_bytes: u64,
    },
    /// A chunk marked as held locally is not in the table.
    #[error("local chunk {0:?} is outside the table")]
    LocalOutOfRange(ChunkIdx),
}

/// Why a peer cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// The peer is banned for sending a corrupt chunk.
    #[error("peer is banned until {until:?}")]
    Banned {
        /// End of the ban.
        until: Duration,
    },
    /// The configured number of peers is reached.
    #[error("already tracking the maximum of {max} peers")]
    TooManyPeers {
        /// The configured maximum.
        max: usize,
    },
}

/// Which chunks a peer holds.
#[derive(Debug, Clone)]
enum Holdings {
    All,
    Some(Vec<u64>),
}

impl Holdings {
    fn has(&self, c: u32) -> bool {
        match self {
            Self::All => true,
            Self::Some(bits) => bits_has(bits, c),
        }
    }
}

fn bits_has(bits: &[u64], c: u32) -> bool {
    bits.get(c as usize / 64)
        .is_some_and(|w| w & (1 << (c % 64)) != 0)
}

#[derive(Debug)]
struct Peer<P> {
    id: P,
    epoch: u32,
    holds: Holdings,
    requests: u32,
    bytes: u64,
    /// Consecutive timeouts or failures; while non-zero the peer gets one request at a time.
    strikes: u32,
    backoff_until: Option<Duration>,
    /// The current back-off is a `Busy` pause: the peer is fine but has no upload slot free.
    busy_pause: bool,
    in_ready: bool,
    /// Set when a pick found nothing for this peer in this requeue generation: skip it until it
    /// announces new chunks or chunks are re-queued.
    dull_gen: Option<u64>,
    /// Estimated delivery rate in bytes per second; `None` until the first delivery.
    rate: Option<f64>,
    /// Start of the current rate sample and the bytes delivered since (see `on_delivery`).
    rate_since: Option<Duration>,
    rate_bytes: u64,
    /// Same site or another one.
    locality: Locality,
    /// [`stable_hash`] of the id: the peer's rendezvous key among the site's members.
    key: u64,
    /// When the peer was added or last announced a chunk it did not hold before: a local
    /// partial holder counts as a pulling site member for `site_patience` after that.
    last_progress: Duration,
    /// When the peer was added or last delivered.
    last_alive: Duration,
}

impl<P> Peer<P> {
    /// Whether the peer is not failing: a local peer whose requests keep failing does not count
    /// as a holder or a site member, so its chunks are fetched elsewhere. It takes two failed
    /// attempts (the retry after a back-off failed too) and `patience` without a delivery: a
    /// CPU-starved neighbour fails or times out now and then but delivers in between, and
    /// fetching its chunks across sites instead would cost far more than waiting. (A peer
    /// that refuses `Busy` is healthy too, but stops being a local source for its pause: see
    /// `busy_pause`.)
    fn healthy(&self, now: Duration, patience: Duration) -> bool {
        self.strikes < 2 || now < self.last_alive + patience
    }
}

#[derive(Debug)]
struct Req {
    slot: u32,
    epoch: u32,
    /// Ascending, so that responses find their chunk by binary search.
    chunks: Vec<u32>,
    bytes: u64,
    sent: Duration,
    deadline: Duration,
    /// From when the endgame may duplicate its chunks.
    late_at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Request(u64),
    /// Request `id` becomes late: in the endgame, idle peers may now duplicate it.
    Late(u64),
    Backoff {
        slot: u32,
        epoch: u32,
    },
    /// A site member may have gone quiet for `site_patience`: recompute the members.
    Site,
}

/// Site-aware state (see `locality`); idle while every peer is local.
#[derive(Debug)]
struct SiteState {
    /// This downloader's rendezvous key, once [`Downloader::set_own_id`] gave its id.
    me: Option<u64>,
    /// Peers labelled local and remote.
    local_peers: usize,
    remote_peers: usize,
    /// Chunks some healthy local peer holds, and whether that must be recomputed.
    local_has: Vec<u64>,
    local_dirty: bool,
    /// Keys of the other members (sorted), `None` until computed; and the chunks we own
    /// among them.
    members: Option<Vec<u64>>,
    mine: Vec<u64>,
    /// Members given by [`Downloader::set_site_roster`] instead of derived from the peers,
    /// and whether `mine` was computed from them (with the current own id).
    roster: Option<Arc<[u64]>>,
    roster_applied: bool,
    /// When the pending [`Timer::Site`] fires.
    timer: Option<Duration>,
}

/// The sans-IO chunk scheduler for one pull; see the module docs for the policy.
#[derive(Debug)]
pub struct Downloader<P> {
    config: Config,
    table: Arc<ChunkTable>,
    order: RarityOrder,
    state: Vec<u8>,
    peers: Vec<Option<Peer<P>>>,
    /// Bumped each time a slot is freed, so that stale ready entries and timers are ignored.
    epochs: Vec<u32>,
    free_slots: Vec<u32>,
    slot_of: HashMap<P, u32>,
    /// Peers with `Holdings::All`: every chunk has at least this many holders.
    full_peers: u16,
    ready: VecDeque<(u32, u32)>,
    requests: BTreeMap<u64, Req>,
    timers: BinaryHeap<Reverse<(Duration, Timer)>>,
    banned: HashMap<P, Duration>,
    actions: VecDeque<Action<P>>,
    stats: Stats,
    peer_stats: HashMap<P, PeerStats>,
    next_id: u64,
    bytes_in_flight: u64,
    now: Duration,
    requeue_gen: u64,
    wanted: u64,
    done: u64,
    complete_sent: bool,
    stalled_sent: bool,
    dirty: bool,
    site: SiteState,
}

impl<P: Clone + Eq + Hash + Ord + Debug> Downloader<P> {
    /// A downloader for every chunk of `table` except those in `local` (already held).
    pub fn new(
        config: Config,
        table: Arc<ChunkTable>,
        local: impl IntoIterator<Item = ChunkIdx>,
    ) -> Result<Self, NewDownloaderError> {
        let max_len = table.max_chunk_len();
        if u64::from(max_len) > config.max_request_bytes {
            return Err(NewDownloaderError::ChunkTooLarge {
                len: max_len,
                max_request_bytes: config.max_request_bytes,
            });
        }
        let n = table.len();
        let mut wanted = vec![true; n];
        for idx in local {
            let slot = wanted
                .get_mut(idx.as_usize())
                .ok_or(NewDownloaderError::LocalOutOfRange(idx))?;
            *slot = false;
        }
        // ChunkTable indices fit in u32 by construction.
        let order = RarityOrder::new(n as u32, &wanted, config.seed, config.run_len);
        let mut stats = Stats::default();
        let words = n.div_ceil(64);
        let site = SiteState {
            me: None,
            local_peers: 0,
            remote_peers: 0,
            local_has: vec![0; words],
            local_dirty: false,
            members: None,
            mine: vec![u64::MAX; words],
            roster: None,
            roster_applied: false,
            timer: None,
        };
        let state: Vec<u8> = wanted
            .iter()
            .map(|&w| if w { QUEUED } else { NOT_WANTED })
            .collect();
        for (&w, &len) in wanted.iter().zip(table.lens()) {
            if w {
                stats.chunks_wanted += 1;
                stats.bytes_wanted += u64::from(len);
            } else {
                stats.chunks_local += 1;
                stats.bytes_local += u64::from(len);
            }
        }
        Ok(Self {
            config,
            table,
            order,
            state,
            peers: Vec::new(),
            epochs: Vec::new(),
            free_slots: Vec::new(),
            slot_of: HashMap::new(),
            full_peers: 0,
            ready: VecDeque::new(),
            requests: BTreeMap::new(),
            timers: BinaryHeap::new(),
            banned: HashMap::new(),
            actions: VecDeque::new(),
            wanted: stats.chunks_wanted,
            stats,
            peer_stats: HashMap::new(),
            next_id: 0,
            bytes_in_flight: 0,
            now: Duration::ZERO,
            requeue_gen: 0,
            done: 0,
            complete_sent: false,
            stalled_sent: false,
            dirty: true,
            site,
        })
    }

    // ----- events -------------------------------------------------------------------------

    /// A peer became reachable. Adding a known peer again only upgrades it to [`Holds::Everything`].
    pub fn add_peer(&mut self, now: Duration, peer: P, holds: Holds) -> Result<(), AddPeerError> {
        self.advance(now);
        if let Some(&until) = self.banned.get(&peer) {
            if until > self.now {
                return Err(AddPeerError::Banned { until });
            }
            self.banned.remove(&peer);
        }
        if let Some(&slot) = self.slot_of.get(&peer) {
            if holds == Holds::Everything {
                self.upgrade_to_full(slot);
            }
            return Ok(());
        }
        if self.slot_of.len() >= self.config.max_peers {
            return Err(AddPeerError::TooManyPeers {
                max: self.config.max_peers,
            });
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.peers.push(None);
                self.epochs.push(0);
                (self.peers.len() - 1) as u32
            }
        };
        let holdings = match holds {
            Holds::Everything => {
                self.order.inc_all();
                self.full_peers += 1;
                self.site.local_dirty = true;
                Holdings::All
            }
            Holds::Nothing => Holdings::Some(vec![0; self.state.len().div_ceil(64)]),
        };
        self.peers[slot as usize] = Some(Peer {
            id: peer.clone(),
            epoch: self.epochs[slot as usize],
            holds: holdings,
            requests: 0,
            bytes: 0,
            strikes: 0,
            backoff_until: None,
            busy_pause: false,
            in_ready: false,
            dull_gen: None,
            rate: None,
            rate_since: None,
            rate_bytes: 0,
            locality: Locality::Local,
            key: stable_hash(&peer),
            last_progress: self.now,
            last_alive: self.now,
        });
        self.site.local_peers += 1;
        self.slot_of.insert(peer.clone(), slot);
        self.peer_stats.entry(peer).or_default();
        self.wake(slot);
        self.finish_event();
        Ok(())
    }

    /// A peer is gone (disconnected, or no longer a provider). Its requests are forgotten and
    /// their chunks re-queued; no [`Action::Cancel`] is emitted for them. Returns whether the
    /// peer was known.
    pub fn remove_peer(&mut self, now: Duration, peer: &P) -> bool {
        self.advance(now);
        let Some(&slot) = self.slot_of.get(peer) else {
            return false;
        };
        self.drop_slot(slot);
        self.finish_event();
        true
    }

    /// A peer announced that it now holds these chunks. Unknown peers and indices outside the
    /// table are ignored.
    pub fn peer_has(
        &mut self,
        now: Duration,
        peer: &P,
        chunks: impl IntoIterator<Item = ChunkIdx>,
    ) {
        self.advance(now);
        let Some(&slot) = self.slot_of.get(peer) else {
            return;
        };
        let n = self.state.len();
        let Some(p) = self.peers[slot as usize].as_mut() else {
            return;
        };
        let Holdings::Some(bits) = &mut p.holds else {
            return;
        };
        let mut new = false;
        for ChunkIdx(c) in chunks {
            if (c as usize) < n && !bits_has(bits, c) {
                bits[c as usize / 64] |= 1 << (c % 64);
                self.order.inc(c);
                new = true;
            }
        }
        if new {
            p.dull_gen = None;
            p.last_progress = self.now;
            if p.locality == Locality::Local {
                self.site.local_dirty = true;
            }
            self.wake(slot);
        }
        self.finish_event();
    }

    /// Gives this downloader its own peer id, which turns on the split of remote-only chunks
    /// among the site's pulling hosts (see the module docs): the id is ranked against theirs.
    /// Without it, each downloader fetches remote-only chunks by itself.
    pub fn set_own_id(&mut self, me: &P) {
        self.site.me = Some(stable_hash(me));
        self.site.members = None;
        self.site.roster_applied = false;
        self.dirty = true;
    }

    /// Gives the site's pulling members as a roster of rendezvous keys ([`site_key`] of each
    /// member's id; this host's own key may be among them), instead of deriving them from the
    /// local peers' announcements; `None` returns to that. For a caller that knows who pulls
    /// on its site without holding each one as a peer: the simulator, whose hosts see a few
    /// neighbours, stands for nodes that hear every announcer this way. The caller keeps the
    /// roster current: a member that never fetches its units holds the others up.
    pub fn set_site_roster(&mut self, roster: Option<Arc<[u64]>>) {
        self.site.roster = roster;
        self.site.roster_applied = false;
        self.site.members = None;
        self.dirty = true;
    }

    /// Labels a known peer as on this host's site or another one (peers start
    /// [`Locality::Local`]). Returns whether the peer is known.
    pub fn set_peer_locality(&mut self, now: Duration, peer: &P, locality: Locality) -> bool {
        self.advance(now);
        let Some(&slot) = self.slot_of.get(peer) else {
            return false;
        };
        let Some(p) = self.peers[slot as usize].as_mut() else {
            return false;
        };
        if p.locality != locality {
            p.locality = locality;
            p.dull_gen = None;
            match locality {
                Locality::Local => {
                    self.site.local_peers += 1;
                    self.site.remote_peers -= 1;
                }
                Locality::Remote => {
                    self.site.local_peers -= 1;
                    self.site.remote_peers += 1;
                }
            }
            self.site.local_dirty = true;
            self.site.members = None;
            self.wake(slot);
        }
        self.finish_event();
        true
    }

    /// A peer's locality, or `None` for an unknown peer.
    pub fn peer_locality(&self, peer: &P) -> Option<Locality> {
        Some(
            self.peers[*self.slot_of.get(peer)? as usize]
                .as_ref()?
                .locality,
        )
    }

    /// The response to request `id` from `peer`: the outcome of each chunk it carried. Chunks of
    /// the request that are not listed were not delivered and go back to the queue (a response
    /// that delivers none of them backs the peer off like a failure). A verified chunk is
    /// accepted even from a request that already timed out or was cancelled.
    pub fn on_response(
        &mut self,
        now: Duration,
        peer: &P,
        id: RequestId,
        outcomes: impl IntoIterator<Item = (ChunkIdx, ChunkOutcome)>,
    ) {
        self.advance(now);
        let slot = self.slot_of.get(peer).copied();
        let req = self.take_request_of(id, slot);
        let mut handled = vec![false; req.as_ref().map_or(0, |r| r.chunks.len())];
        let mut corrupt = false;
        let mut delivered = false;
        let mut delivered_bytes = 0u64;
        for (ChunkIdx(c), outcome) in outcomes {
            if c as usize >= self.state.len() {
                self.stats.unexpected_chunks += 1;
                continue;
            }
            let mut in_request = false;
            if let Some(r) = &req
                && let Ok(i) = r.chunks.binary_search(&c)
            {
                if handled[i] {
                    continue;
                }
                handled[i] = true;
                in_request = true;
            }
            match outcome {
                ChunkOutcome::Verified => {
                    delivered = true;
                    delivered_bytes += u64::from(self.table.lens()[c as usize]);
                    self.chunk_verified(peer, c, in_request);
                }
                ChunkOutcome::Missing => {
                    self.stats.chunks_missing += 1;
                    self.peer_stat(peer).chunks_missing += 1;
                    if let Some(slot) = slot {
                        self.peer_lacks(slot, c);
                    }
                    if in_request {
                        self.release_chunk(c);
                    }
                }
                ChunkOutcome::Corrupt => {
                    corrupt = true;
                    self.stats.chunks_rejected += 1;
                    self.peer_stat(peer).chunks_rejected += 1;
                    if in_request {
                        self.release_chunk(c);
                    }
                }
            }
        }
        if let Some(r) = &req {
            let mut withheld = false;
            for (i, &c) in r.chunks.iter().enumerate() {
                if !handled[i] {
                    withheld = true;
                    self.release_chunk(c);
                }
            }
            if withheld && !delivered {
                // An answer that delivers nothing of what was asked (say, a busy peer) would
                // otherwise be asked again at once, forever: treat it as a failure.
                self.stats.failures += 1;
                if let Some(id) = self.back_off(r.slot, r.epoch, true) {
                    self.peer_stat(&id).failures += 1;
                }
            }
        }
        if delivered && let Some(slot) = slot {
            let sent = req.as_ref().map(|r| r.sent);
            self.on_delivery(slot, sent, delivered_bytes);
        }
        if corrupt {
            self.ban(peer.clone());
        }
        self.finish_event();
    }

    /// Request `id` to `peer` ended without a response. Its chunks are re-queued and the peer
    /// backs off. Unknown or already finished requests are ignored.
    pub fn on_failure(&mut self, now: Duration, peer: &P, id: RequestId, failure: Failure) {
        self.advance(now);
        let slot = self.slot_of.get(peer).copied();
        if let Some(req) = self.take_request_of(id, slot) {
            self.punish(req, failure);
        }
        self.finish_event();
    }

    /// Advances time: requests past their deadline time out (each yields an
    /// [`Action::Cancel`]) and peers whose back-off ended become usable again.
    pub fn tick(&mut self, now: Duration) {
        self.advance(now);
        self.finish_event();
    }

    /// The next action for the driver, after advancing time to `now`; `None` when there is
    /// nothing to do until the next event or [`Self::next_deadline`].
    pub fn poll(&mut self, now: Duration) -> Option<Action<P>> {
        self.advance(now);
        if self.dirty {
            self.dirty = false;
            self.schedule();
        }
        self.prune_timers();
        self.actions.pop_front()
    }

    // ----- observations -------------------------------------------------------------------

    /// The earliest time at which [`Self::tick`] has something to do: a request deadline or the
    /// end of a back-off.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Whether every wanted chunk is verified.
    pub fn is_complete(&self) -> bool {
        self.done == self.wanted
    }

    /// The table this downloader works on.
    pub fn table(&self) -> &Arc<ChunkTable> {
        &self.table
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Totals so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counters of every peer ever added, sorted by peer.
    pub fn peer_stats(&self) -> Vec<(P, PeerStats)> {
        let mut all: Vec<_> = self
            .peer_stats
            .iter()
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Where a chunk stands, or `None` outside the table.
    pub fn chunk_state(&self, idx: ChunkIdx) -> Option<ChunkState> {
        Some(match *self.state.get(idx.as_usize())? {
            QUEUED => ChunkState::Queued,
            NOT_WANTED => ChunkState::NotWanted,
            DONE => ChunkState::Done,
            k => ChunkState::InFlight(k),
        })
    }

    /// How many connected peers are known to hold a chunk.
    pub fn holders(&self, idx: ChunkIdx) -> u16 {
        if idx.as_usize() < self.state.len() {
            self.order.avail(idx.0)
        } else {
            0
        }
    }

    /// Queued chunks that no connected peer holds, ascending.
    pub fn unavailable(&self) -> Vec<ChunkIdx> {
        let mut v: Vec<ChunkIdx> = self
            .order
            .unavailable()
            .iter()
            .map(|&c| ChunkIdx(c))
            .collect();
        v.sort_unstable();
        v
    }

    /// Requests and bytes in flight to a peer, or `None` for an unknown peer.
    pub fn in_flight(&self, peer: &P) -> Option<(u32, u64)> {
        let p = self.peers[*self.slot_of.get(peer)? as usize].as_ref()?;
        Some((p.requests, p.bytes))
    }

    /// Requests and bytes in flight over all peers.
    pub fn total_in_flight(&self) -> (usize, u64) {
        (self.requests.len(), self.bytes_in_flight)
    }

    /// The end of a peer's ban, if it is banned at `now`.
    pub fn banned_until(&self, peer: &P, now: Duration) -> Option<Duration> {
        self.banned.get(peer).copied().filter(|&until| until > now)
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.slot_of.len()
    }

    /// Approximate heap bytes of this downloader's state (the shared table excluded), for
    /// memory budgets such as the simulator's.
    pub fn heap_bytes(&self) -> usize {
        let peer_bits: usize = self
            .peers
            .iter()
            .flatten()
            .map(|p| match &p.holds {
                Holdings::All => 0,
                Holdings::Some(bits) => bits.capacity() * 8,
            })
            .sum();
        let request_chunks: usize = self
            .requests
            .values()
            .map(|r| r.chunks.capacity() * 4)
            .sum();
        self.order.heap_bytes()
            + self.state.capacity()
            + peer_bits
            + request_chunks
            + self.peers.capacity() * size_of::<Option<Peer<P>>>()
    }

    // ----- internals ----------------------------------------------------------------------

    fn finish_event(&mut self) {
        self.dirty = true;
        self.prune_timers();
    }

    fn peer_stat(&mut self, peer: &P) -> &mut PeerStats {
        self.peer_stats.entry(peer.clone()).or_default()
    }

    fn peer_ref(&self, slot: u32) -> Option<&Peer<P>> {
        self.peers.get(slot as usize)?.as_ref()
    }

    fn wake(&mut self, slot: u32) {
        if let Some(p) = self.peers.get_mut(slot as usize).and_then(Option::as_mut)
            && !p.in_ready
        {
            p.in_ready = true;
            self.ready.push_back((slot, p.epoch));
        }
        self.dirty = true;
    }

    fn wake_all(&mut self) {
        for slot in 0..self.peers.len() as u32 {
            self.wake(slot);
        }
    }

    /// Moves the clock forward (never back) and fires due timers.
    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
        while let Some(&Reverse((t, timer))) = self.timers.peek() {
            if t > self.now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Request(id) => {
                    if self.requests.get(&id).is_some_and(|r| r.deadline == t)
                        && let Some(req) = self.requests.remove(&id)
                    {
                        self.release_request_capacity(&req);
                        if let Some(p) = self.peer_ref(req.slot).filter(|p| p.epoch == req.epoch) {
                            let peer = p.id.clone();
                            self.actions.push_back(Action::Cancel {
                                peer,
                                id: RequestId(id),
                            });
                            self.stats.cancels += 1;
                        }
                        self.punish(req, Failure::Timeout);
                    }
                }
                Timer::Backoff { slot, epoch } => {
                    let due = self
                        .peers
                        .get_mut(slot as usize)
                        .and_then(Option::as_mut)
                        .filter(|p| p.epoch == epoch && p.backoff_until == Some(t));
                    if let Some(p) = due {
                        p.backoff_until = None;
                        if std::mem::take(&mut p.busy_pause) && p.locality == Locality::Local {
                            self.site.local_dirty = true;
                        }
                        self.wake(slot);
                    }
                }
                Timer::Late(id) => {
                    if self.requests.get(&id).is_some_and(|r| r.late_at == t)
                        && self.order.available_count() == 0
                    {
                        self.wake_all();
                    }
                }
                Timer::Site => {
                    if self.site.timer == Some(t) {
                        self.site.timer = None;
                        self.site.members = None;
                        self.site.local_dirty = true;
                        self.dirty = true;
                    }
                }
            }
        }
    }

    /// Drops timers at the top of the heap that no longer refer to anything, so that
    /// `next_deadline` is exact.
    fn prune_timers(&mut self) {
        while let Some(&Reverse((t, timer))) = self.timers.peek() {
            let live = match timer {
                Timer::Request(id) => self.requests.get(&id).is_some_and(|r| r.deadline == t),
                Timer::Late(id) => self.requests.get(&id).is_some_and(|r| r.late_at == t),
                Timer::Backoff { slot, epoch } => self
                    .peer_ref(slot)
                    .is_some_and(|p| p.epoch == epoch && p.backoff_until == Some(t)),
                Timer::Site => self.site.timer == Some(t),
            };
            if live {
                break;
            }
            self.timers.pop();
        }
    }

    /// Removes request `id` if it belongs to the peer in `slot`, freeing its capacity.
    fn take_request_of(&mut self, id: RequestId, slot: Option<u32>) -> Option<Req> {
        let slot = slot?;
        let epoch = self.peer_ref(slot)?.epoch;
        let r = self.requests.get(&id.0)?;
        if r.slot != slot || r.epoch != epoch {
            return None;
        }
        let req = self.requests.remove(&id.0)?;
        self.release_request_capacity(&req);
        Some(req)
    }

    fn release_request_capacity(&mut self, req: &Req) {
        self.bytes_in_flight -= req.bytes;
        if let Some(p) = self
            .peers
            .get_mut(req.slot as usize)
            .and_then(Option::as_mut)
            .filter(|p| p.epoch == req.epoch)
        {
            p.requests -= 1;
            p.bytes -= req.bytes;
            self.wake(req.slot);
        }
        if self.order.available_count() == 0 {
            // Endgame: a freed slot anywhere may let an idle peer duplicate a chunk.
            self.wake_all();
        }
    }

    /// A request ended without a response: re-queue its chunks, back the peer off.
    fn punish(&mut self, req: Req, failure: Failure) {
        for &c in &req.chunks {
            self.release_chunk(c);
        }
        match failure {
            Failure::Timeout => self.stats.timeouts += 1,
            Failure::Other => self.stats.failures += 1,
            Failure::Busy => {
                self.stats.busy += 1;
                if let Some(id) = self.back_off(req.slot, req.epoch, false) {
                    self.peer_stat(&id).busy += 1;
                }
                return;
            }
        }
        if let Some(id) = self.back_off(req.slot, req.epoch, true) {
            let s = self.peer_stat(&id);
            match failure {
                Failure::Timeout => s.timeouts += 1,
                Failure::Other => s.failures += 1,
                Failure::Busy => {}
            }
        }
    }

    /// Backs the peer off unless it already waits; returns its id if it is still connected.
    /// A strike (a failure) doubles the back-off each time and counts against the peer's
    /// health and request limit; a busy peer is only paused for the back-off base.
    fn back_off(&mut self, slot: u32, epoch: u32, strike: bool) -> Option<P> {
        let now = self.now;
        let (base, max) = (self.config.backoff_base, self.config.backoff_max);
        let p = self
            .peers
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .filter(|p| p.epoch == epoch)?;
        // Requests that were in flight together and fail together are one incident: escalate
        // only when the peer is not already backing off.
        if p.backoff_until.is_none() {
            if p.locality == Locality::Local {
                self.site.local_dirty = true;
            }
            let backoff = if strike {
                p.strikes = p.strikes.saturating_add(1);
                let factor = 1u32.checked_shl(p.strikes - 1).unwrap_or(u32::MAX);
                base.checked_mul(factor).map_or(max, |b| b.min(max))
            } else {
                p.busy_pause = true;
                base
            };
            let until = now + backoff;
            p.backoff_until = Some(until);
            self.timers
                .push(Reverse((until, Timer::Backoff { slot, epoch })));
        }
        Some(p.id.clone())
    }

    /// One request carrying `c` ended without delivering it.
    fn release_chunk(&mut self, c: u32) {
        let s = &mut self.state[c as usize];
        if matches!(*s, QUEUED | NOT_WANTED | DONE) {
            return;
        }
        *s -= 1;
        if *s == QUEUED {
            self.order.unpark(c);
            self.requeue_gen += 1;
            self.wake_all();
        }
    }

    fn chunk_verified(&mut self, peer: &P, c: u32, in_request: bool) {
        let len = u64::from(self.table.lens()[c as usize]);
        let s = self.peer_stat(peer);
        s.bytes_received += len;
        s.chunks_received += 1;
        let others = match self.state[c as usize] {
            NOT_WANTED => {
                self.stats.unexpected_chunks += 1;
                return;
            }
            DONE => {
                self.stats.duplicate_chunks += 1;
                self.stats.duplicate_bytes += len;
                return;
            }
            QUEUED => {
                self.order.park(c);
                0
            }
            k => k - u8::from(in_request),
        };
        self.state[c as usize] = DONE;
        self.done += 1;
        self.stats.chunks_done += 1;
        self.stats.bytes_done += len;
        if others > 0 {
            self.cancel_losers();
        }
    }

    /// Cancels the requests whose every chunk has arrived from elsewhere.
    fn cancel_losers(&mut self) {
        let losers: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.chunks.iter().all(|&c| self.state[c as usize] == DONE))
            .map(|(&id, _)| id)
            .collect();
        for id in losers {
            if let Some(req) = self.requests.remove(&id) {
                self.release_request_capacity(&req);
                if let Some(p) = self.peer_ref(req.slot).filter(|p| p.epoch == req.epoch) {
                    let peer = p.id.clone();
                    self.actions.push_back(Action::Cancel {
                        peer,
                        id: RequestId(id),
                    });
                    self.stats.cancels += 1;
                }
            }
        }
    }

    /// The peer in `slot` said it does not hold `c`.
    fn peer_lacks(&mut self, slot: u32, c: u32) {
        let n = self.state.len();
        let Some(p) = self.peers[slot as usize].as_mut() else {
            return;
        };
        if let Holdings::All = p.holds {
            // A full holder turned out partial: give it a bitset. Counts do not change.
            let mut bits = vec![u64::MAX; n.div_ceil(64)];
            if !n.is_multiple_of(64)
                && let Some(last) = bits.last_mut()
            {
                *last = (1u64 << (n % 64)) - 1;
            }
            p.holds = Holdings::Some(bits);
            self.full_peers -= 1;
        }
        if let Holdings::Some(bits) = &mut p.holds
            && bits_has(bits, c)
        {
            bits[c as usize / 64] &= !(1 << (c % 64));
            self.order.dec(c);
        }
        if p.locality == Locality::Local {
            self.site.local_dirty = true;
        }
    }

    fn upgrade_to_full(&mut self, slot: u32) {
        let Some(p) = self.peers[slot as usize].as_mut() else {
            return;
        };
        let Holdings::Some(bits) = std::mem::replace(&mut p.holds, Holdings::All) else {
            return;
        };
        p.dull_gen = None;
        self.full_peers += 1;
        if p.locality == Locality::Local {
            self.site.local_dirty = true;
        }
        for c in 0..self.state.len() as u32 {
            if !bits_has(&bits, c) {
                self.order.inc(c);
            }
        }
        self.wake(slot);
    }

    fn ban(&mut self, peer: P) {
        if self.banned_until(&peer, self.now).is_some() {
            return; // late corrupt data from a peer already banned
        }
        let until = self.now + self.config.ban_duration;
        if let Some(&slot) = self.slot_of.get(&peer) {
            self.drop_slot(slot);
        }
        self.banned.insert(peer.clone(), until);
        self.stats.bans += 1;
        self.actions.push_back(Action::Ban { peer, until });
    }

    /// Forgets the peer in `slot`: its requests end and its chunks stop counting.
    fn drop_slot(&mut self, slot: u32) {
        let mine: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.slot == slot)
            .map(|(&id, _)| id)
            .collect();
        for id in mine {
            if let Some(req) = self.requests.remove(&id) {
                self.release_request_capacity(&req);
                for &c in &req.chunks {
                    self.release_chunk(c);
                }
            }
        }
        let Some(p) = self.peers[slot as usize].take() else {
            return;
        };
        self.slot_of.remove(&p.id);
        match p.locality {
            Locality::Local => {
                self.site.local_peers -= 1;
                self.site.local_dirty = true;
            }
            Locality::Remote => self.site.remote_peers -= 1,
        }
        self.epochs[slot as usize] = self.epochs[slot as usize].wrapping_add(1);
        self.free_slots.push(slot);
        match p.holds {
            Holdings::All => {
                self.full_peers -= 1;
                self.order.dec_all();
            }
            Holdings::Some(bits) => {
                for (w, &word) in bits.iter().enumerate() {
                    let mut word = word;
                    while word != 0 {
                        self.order.dec((w * 64) as u32 + word.trailing_zeros());
                        word &= word - 1;
                    }
                }
            }
        }
        self.dirty = true;
    }

    /// The peer in `slot` delivered `bytes` (of a request sent at `sent`, if it was still
    /// live): clear its strikes, update its rate, and extend its other requests' deadlines.
    fn on_delivery(&mut self, slot: u32, sent: Option<Duration>, bytes: u64) {
        let now = self.now;
        let Some(p) = self.peers[slot as usize].as_mut() else {
            return;
        };
        if p.strikes > 0 && p.locality == Locality::Local {
            // Healthy again: its chunks count as held locally.
            self.site.local_dirty = true;
        }
        p.strikes = 0;
        if let Some(sent) = sent {
            // A peer's responses share its link and are interleaved on one connection, so
            // requests pipelined together finish together: the second of two responses that
            // completed a millisecond apart did not move at bytes per millisecond. A sample
            // therefore spans at least a pipeline window of busy time, and counts every byte
            // delivered in it. Only the first estimate comes from one response: it can only
            // err low (other responses were moving too), which keeps the first caps small.
            match p.rate {
                None => {
                    let secs = now.saturating_sub(sent).as_secs_f64();
                    // Delivered in no measurable time: as fast as it gets.
                    p.rate = Some(if secs > 0.0 {
                        bytes as f64 / secs
                    } else {
                        f64::INFINITY
                    });
                    p.rate_since = Some(now);
                    p.rate_bytes = 0;
                }
                Some(rate) => {
                    let since = *p.rate_since.get_or_insert(sent);
                    p.rate_bytes += bytes;
                    let span = now.saturating_sub(since);
                    if span >= self.config.pipeline_window {
                        let sample = p.rate_bytes as f64 / span.as_secs_f64();
                        p.rate = Some(if rate.is_finite() {
                            rate + RATE_SAMPLE_WEIGHT * (sample - rate)
                        } else {
                            sample
                        });
                        p.rate_since = Some(now);
                        p.rate_bytes = 0;
                    }
                }
            }
        }
        p.last_alive = now;
        let epoch = p.epoch;
        let until = now + self.config.request_timeout;
        for (&id, r) in self.requests.iter_mut() {
            if r.slot == slot && r.epoch == epoch && r.deadline < until {
                r.deadline = until;
                self.timers.push(Reverse((until, Timer::Request(id))));
            }
        }
    }

    /// The most bytes the peer may have in flight: what it delivers in the pipeline window
    /// (at least one chunk), within the configured limit.
    fn byte_cap(&self, p: &Peer<P>) -> u64 {
        let max = self.config.max_bytes_per_peer;
        match p.rate {
            Some(rate) => {
                let cap = rate * self.config.pipeline_window.as_secs_f64();
                let floor = u64::from(self.table.max_chunk_len());
                if cap >= max as f64 {
                    max
                } else {
                    (cap as u64).clamp(floor.min(max), max)
                }
            }
            None => INITIAL_BYTE_CAP
                .max(u64::from(self.table.max_chunk_len()))
                .min(max),
        }
    }

    /// Whether the peer may get another request now.
    fn can_send(&self, p: &Peer<P>) -> bool {
        let max_requests = if p.strikes > 0 {
            1
        } else if p.rate.is_none() {
            self.config.max_requests_per_peer.min(INITIAL_REQUESTS)
        } else {
            self.config.max_requests_per_peer
        };
        // Below the cap, not "room for one more chunk": a cap of 2.9 requests must not leave
        // two requests in lock-step, finishing together and idling the link for a round trip.
        // The hard per-peer limit still needs room for a whole chunk, or the pick would come
        // back empty and leave the peer idle.
        let max_chunk = u64::from(self.table.max_chunk_len());
        p.backoff_until.is_none()
            && p.requests < max_requests
            && (p.requests == 0
                || (p.bytes < self.byte_cap(p)
                    && p.bytes + max_chunk <= self.config.max_bytes_per_peer))
    }

    fn global_room(&self) -> bool {
        self.bytes_in_flight + u64::from(self.table.max_chunk_len())
            <= self.config.max_bytes_in_flight
    }

    /// Brings the site state up to date before scheduling: which chunks healthy local peers
    /// hold, who the site's pulling members are, which chunks we own among them. Remote peers
    /// are woken when their share of eligible chunks may have grown.
    fn refresh_site(&mut self) {
        if self.site.remote_peers == 0 {
            return;
        }
        let patience = self.config.site_patience;
        let now = self.now;
        // The next time the members or the healthy holders may change without an event.
        let mut wake_at: Option<Duration> = None;
        let mut at = |t: Duration| wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
        for p in self.peers.iter().flatten() {
            if p.locality == Locality::Local && p.strikes >= 2 && p.healthy(now, patience) {
                at(p.last_alive + patience);
            }
        }
        let mut grew = false;
        if self.site.local_dirty {
            self.site.local_dirty = false;
            let mut now_has = vec![0u64; self.site.local_has.len()];
            for p in self.peers.iter().flatten() {
                if p.locality != Locality::Local || !p.healthy(now, patience) || p.busy_pause {
                    continue;
                }
                match &p.holds {
                    Holdings::All => now_has.fill(u64::MAX),
                    Holdings::Some(bits) => {
                        for (w, b) in now_has.iter_mut().zip(bits) {
                            *w |= b;
                        }
                    }
                }
            }
            grew |= self
                .site
                .local_has
                .iter()
                .zip(&now_has)
                .any(|(old, new)| old & !new != 0);
            self.site.local_has = now_has;
        }
        if let (Some(me), Some(roster)) = (self.site.me, &self.site.roster) {
            if !self.site.roster_applied {
                let mine = owned_chunks(self.state.len() as u32, me, roster);
                grew |= mine
                    .iter()
                    .zip(&self.site.mine)
                    .any(|(new, old)| new & !old != 0);
                self.site.mine = mine;
                self.site.roster_applied = true;
            }
        } else if let Some(me) = self.site.me {
            let mut members = Vec::new();
            for p in self.peers.iter().flatten() {
                let until = p.last_progress + patience;
                if p.locality == Locality::Local
                    && matches!(p.holds, Holdings::Some(_))
                    && p.healthy(now, patience)
                    && until > now
                {
                    members.push(p.key);
                    at(until);
                }
            }
            members.sort_unstable();
            if self.site.members.as_ref() != Some(&members) {
                let mine = owned_chunks(self.state.len() as u32, me, &members);
                grew |= mine
                    .iter()
                    .zip(&self.site.mine)
                    .any(|(new, old)| new & !old != 0);
                self.site.mine = mine;
                self.site.members = Some(members);
            }
        }
        if let Some(t) = wake_at
            && self.site.timer.is_none_or(|pending| t < pending)
        {
            self.site.timer = Some(t);
            self.timers.push(Reverse((t, Timer::Site)));
        }
        if grew {
            self.requeue_gen += 1;
            for slot in 0..self.peers.len() as u32 {
                if self
                    .peer_ref(slot)
                    .is_some_and(|p| p.locality == Locality::Remote)
                {
                    self.wake(slot);
                }
            }
        }
    }

    /// The chunks a remote peer holding `holds` may be asked for: those no healthy local peer
    /// holds and (once this downloader knows its own id) that fall in units we own.
    fn remote_mask(&self, holds: &Holdings) -> Vec<u64> {
        let owned = self.site.me.is_some();
        self.site
            .local_has
            .iter()
            .zip(&self.site.mine)
            .enumerate()
            .map(|(w, (&local, &mine))| {
                let held = match holds {
                    Holdings::All => u64::MAX,
                    Holdings::Some(bits) => bits.get(w).copied().unwrap_or(0),
                };
                held & !local & if owned { mine } else { u64::MAX }
            })
            .collect()
    }

    /// Hands out requests to ready peers until limits or chunks run out.
    fn schedule(&mut self) {
        self.refresh_site();
        while self.global_room() {
            let Some((slot, epoch)) = self.ready.pop_front() else {
                break;
            };
            let Some(p) = self.peers[slot as usize]
                .as_mut()
                .filter(|p| p.epoch == epoch)
            else {
                continue;
            };
            p.in_ready = false;
            let Some(p) = self.peer_ref(slot) else {
                continue;
            };
            if !self.can_send(p) {
                continue;
            }
            let endgame = self.order.available_count() == 0;
            if !endgame && p.dull_gen == Some(self.requeue_gen) {
                continue;
            }
            let cap = self.byte_cap(p);
            // A request of half the cap keeps a second one queued behind it at the peer.
            let max_chunk = u64::from(self.table.max_chunk_len());
            let budget = self
                .config
                .max_request_bytes
                .min((cap / 2).max(max_chunk))
                .min(cap.saturating_sub(p.bytes).max(max_chunk))
                .min(self.config.max_bytes_per_peer - p.bytes)
                .min(self.config.max_bytes_in_flight - self.bytes_in_flight);
            let batch = if endgame {
                self.pick_endgame(slot, budget)
            } else {
                self.pick(slot, budget)
            };
            if batch.is_empty() {
                if !endgame && let Some(p) = self.peers[slot as usize].as_mut() {
                    p.dull_gen = Some(self.requeue_gen);
                }
                continue;
            }
            self.send(slot, batch, endgame);
            if self.peer_ref(slot).is_some_and(|p| self.can_send(p)) {
                self.wake(slot);
            }
        }
        if self.done == self.wanted {
            if !self.complete_sent {
                self.complete_sent = true;
                self.actions.push_back(Action::Complete);
            }
        } else if self.requests.is_empty() && self.order.available_count() == 0 {
            if !self.stalled_sent {
                self.stalled_sent = true;
                self.actions.push_back(Action::Stalled {
                    unavailable: self.unavailable(),
                });
            }
        } else {
            self.stalled_sent = false;
        }
    }

    /// Takes the rarest queued chunks the peer holds, extended into contiguous runs of equally
    /// rare chunks, up to `budget` bytes. The taken chunks are marked in flight.
    fn pick(&mut self, slot: u32, budget: u64) -> Vec<u32> {
        let max_chunks = self.config.max_request_chunks;
        let Some(p) = self.peers[slot as usize].as_ref() else {
            return Vec::new();
        };
        // A remote peer is asked only for chunks this host should fetch across sites.
        let mask = (p.locality == Locality::Remote).then(|| self.remote_mask(&p.holds));
        let mask = mask.as_deref();
        let holds = &p.holds;
        let full_peers = self.full_peers;
        let order = &mut self.order;
        let state = &mut self.state;
        let lens = self.table.lens();
        let n = state.len() as u32;
        let avg_len = (self.table.total_bytes() / u64::from(n.max(1))).max(1);
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        'rounds: while batch.len() < max_chunks {
            // Enough candidates to fill the request in one round if none extends into a run.
            let need = (max_chunks - batch.len()).min(((budget - bytes) / avg_len + 1) as usize);
            let candidates: Vec<u32> = match (mask, holds) {
                (Some(mask), _) => order.rarest_in(mask, need),
                (None, Holdings::All) => order.first_available(need),
                (None, Holdings::Some(bits)) => {
                    let mut hits = Vec::new();
                    // Every full holder holds every chunk, so a chunk this partial peer holds
                    // has more holders than there are full holders: skip the rarer buckets
                    // (typically the large "only the seed has it" one) without looking.
                    let scan = order.scan(full_peers.saturating_add(1), SCAN_CAP, |c| {
                        if bits_has(bits, c) {
                            hits.push(c);
                        }
                        hits.len() >= need
                    });
                    // Hits from the scan are the rarest held chunks whatever the scan's end;
                    // only an empty capped scan needs the full intersection.
                    if hits.is_empty() && scan == Scan::Capped {
                        order.rarest_in(bits, need)
                    } else {
                        hits
                    }
                }
            };
            if candidates.is_empty() {
                break;
            }
            for first in candidates {
                if batch.len() >= max_chunks {
                    break 'rounds;
                }
                if !order.is_queued(first) {
                    continue;
                }
                let len = u64::from(lens[first as usize]);
                if bytes + len > budget {
                    break 'rounds;
                }
                let rarity = order.avail(first);
                bytes += len;
                order.park(first);
                state[first as usize] = 1;
                batch.push(first);
                // Extend into neighbours that are no more common, forwards then backwards.
                for step in [1i64, -1] {
                    let mut c = i64::from(first) + step;
                    while c >= 0 && c < i64::from(n) && batch.len() < max_chunks {
                        let cu = c as u32;
                        let len = u64::from(lens[cu as usize]);
                        if !order.is_queued(cu)
                            || !mask.map_or_else(|| holds.has(cu), |m| bits_has(m, cu))
                            || order.avail(cu) > rarity
                            || bytes + len > budget
                        {
                            break;
                        }
                        bytes += len;
                        order.park(cu);
                        state[cu as usize] = 1;
                        batch.push(cu);
                        c += step;
                    }
                }
            }
        }
        batch
    }

    /// Endgame: duplicates of the chunks of late requests (see [`LATE_FACTOR`]) that the peer
    /// holds and has not been asked for, up to the configured number of copies.
    fn pick_endgame(&mut self, slot: u32, budget: u64) -> Vec<u32> {
        if self.config.endgame_copies < 2 {
            return Vec::new();
        }
        let Some(p) = self.peers[slot as usize].as_ref() else {
            return Vec::new();
        };
        // Duplicates across sites would load the slow link most when it is the bottleneck.
        if p.locality == Locality::Remote && self.site.local_peers > 0 {
            return Vec::new();
        }
        let mut seen: HashSet<u32> = self
            .requests
            .values()
            .filter(|r| r.slot == slot)
            .flat_map(|r| r.chunks.iter().copied())
            .collect();
        let lens = self.table.lens();
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let now = self.now;
        'requests: for r in self.requests.values() {
            if r.slot == slot || r.late_at > now {
                continue;
            }
            for &c in &r.chunks {
                if batch.len() >= self.config.max_request_chunks {
                    break 'requests;
                }
                let s = self.state[c as usize];
                if matches!(s, QUEUED | NOT_WANTED | DONE)
                    || s >= self.config.endgame_copies
                    || !p.holds.has(c)
                    || seen.contains(&c)
                {
                    continue;
                }
                let len = u64::from(lens[c as usize]);
                if bytes + len > budget {
                    break 'requests;
                }
                bytes += len;
                seen.insert(c);
                batch.push(c);
            }
        }
        for &c in &batch {
            self.state[c as usize] += 1;
        }
        batch
    }

    fn send(&mut self, slot: u32, mut chunks: Vec<u32>, endgame: bool) {
        chunks.sort_unstable();
        let lens = self.table.lens();
        let bytes: u64 = chunks.iter().map(|&c| u64::from(lens[c as usize])).sum();
        let id = self.next_id;
        self.next_id += 1;
        let deadline = self.now + self.config.request_timeout;
        let Some(p) = self.peers[slot as usize].as_mut() else {
            return;
        };
        if p.requests == 0 {
            // Busy again: time spent idle is not delivery time.
            p.rate_since = Some(self.now);
            p.rate_bytes = 0;
        }
        p.requests += 1;
        p.bytes += bytes;
        // Pipelined: this request is served after everything already queued at the peer.
        let expected = match p.rate {
            Some(rate) if rate > 0.0 && rate.is_finite() => {
                Duration::try_from_secs_f64(LATE_FACTOR * p.bytes as f64 / rate)
                    .unwrap_or(self.config.request_timeout)
            }
            Some(_) => Duration::ZERO,
            None => self.config.pipeline_window,
        };
        let late_at = self.now + expected.max(LATE_FLOOR);
        let (peer, epoch) = (p.id.clone(), p.epoch);
        self.bytes_in_flight += bytes;
        self.timers.push(Reverse((deadline, Timer::Request(id))));
        self.timers.push(Reverse((late_at, Timer::Late(id))));
        let idxs = chunks.iter().map(|&c| ChunkIdx(c)).collect();
        self.requests.insert(
            id,
            Req {
                slot,
                epoch,
                chunks,
                bytes,
                sent: self.now,
                deadline,
                late_at,
            },
        );
        self.stats.requests_sent += 1;
        if endgame {
            self.stats.endgame_requests += 1;
        }
        self.peer_stat(&peer).requests += 1;
        self.actions.push_back(Action::Request {
            peer,
            id: RequestId(id),
            chunks: idxs,
            bytes,
            deadline,
        });
    }

    /// Checks internal invariants; for tests.
    #[cfg(test)]
    fn check(&self) {
        self.order.check();
        let mut copies = vec![0u8; self.state.len()];
        let mut bytes = 0;
        for r in self.requests.values() {
            bytes += r.bytes;
            for &c in &r.chunks {
                copies[c as usize] += 1;
            }
        }
        assert_eq!(bytes, self.bytes_in_flight);
        for (c, &s) in self.state.iter().enumerate() {
            match s {
                QUEUED => assert!(self.order.is_queued(c as u32)),
                NOT_WANTED => assert!(!self.order.is_queued(c as u32)),
                DONE => assert!(!self.order.is_queued(c as u32)),
                k => {
                    assert!(!self.order.is_queued(c as u32));
                    assert_eq!(k, copies[c], "copies of chunk {c}");
                }
            }
        }
        let full = self
            .peers
            .iter()
            .flatten()
            .filter(|p| matches!(p.holds, Holdings::All))
            .count();
        assert_eq!(full, usize::from(self.full_peers));
        for c in 0..self.state.len() as u32 {
            let holders = self
                .peers
                .iter()
                .flatten()
                .filter(|p| p.holds.has(c))
                .count();
            assert_eq!(
                holders,
                usize::from(self.order.avail(c)),
                "holders of chunk {c}"
            );
        }
    }
}

#[cfg(test)]
mod tests;
