//! A tiny deterministic network model that drives real `Downloader`s: nodes with a fixed
//! one-way latency and a serial upload link, misbehaving nodes, and a limit check after every
//! action. Shared by `downloader.rs` and `downloader_prop.rs`.

#![allow(dead_code, unreachable_pub)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use vwnet_node::downloader::{
    Action, ChunkIdx, ChunkOutcome, ChunkTable, Config, Downloader, Failure, Holds, RequestId,
};
use vwnet_protocol::ids::ChunkHash;

/// How a node answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Serves what it holds, reports the rest missing.
    Honest,
    /// Serves every chunk with a wrong hash.
    Corrupt,
    /// Never answers.
    Blackhole,
    /// Answers at once, delivering nothing (a peer whose upload slots are always busy).
    Empty,
    /// Serves honestly until this time, then disconnects from everyone.
    LeavesAt(Duration),
}

/// One node of the model.
pub struct Node {
    pub behaviour: Behaviour,
    pub latency: Duration,
    /// Upload rate in bytes per second; requests are served one after another.
    pub rate: u64,
    pub holds: Vec<bool>,
    /// Announced to its peers as holding everything (even if `holds` says otherwise).
    pub claims_all: bool,
    pub busy_until: Duration,
    pub uploaded: u64,
    pub gone: bool,
    pub downloader: Option<Downloader<u32>>,
    pub peers: Vec<u32>,
    pub completed_at: Option<Duration>,
    pub stalled: Option<Vec<ChunkIdx>>,
    pub banned: Vec<u32>,
    pub cancels: u64,
}

impl Node {
    pub fn server(n: usize, behaviour: Behaviour, latency_ms: u64, rate: u64) -> Self {
        Self {
            behaviour,
            latency: Duration::from_millis(latency_ms),
            rate,
            holds: vec![true; n],
            claims_all: true,
            busy_until: Duration::ZERO,
            uploaded: 0,
            gone: false,
            downloader: None,
            peers: Vec::new(),
            completed_at: None,
            stalled: None,
            banned: Vec::new(),
            cancels: 0,
        }
    }

    pub fn holding(mut self, holds: Vec<bool>) -> Self {
        self.holds = holds;
        self.claims_all = false;
        self
    }

    /// A liar: claims everything, holds only `holds`.
    pub fn claiming_all(mut self) -> Self {
        self.claims_all = true;
        self
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: u32,
        from: u32,
        id: RequestId,
        outcomes: Vec<(ChunkIdx, ChunkOutcome)>,
    },
    Fail {
        to: u32,
        from: u32,
        id: RequestId,
    },
    Leave {
        node: u32,
    },
}

/// The model's view of what is in flight, kept independently of the downloader's.
#[derive(Default)]
struct Flight {
    requests: HashMap<(u32, u64), (u32, u64)>,
}

pub struct Net {
    pub now: Duration,
    pub nodes: Vec<Node>,
    pub table: Arc<ChunkTable>,
    pub config: Config,
    events: BinaryHeap<Reverse<(Duration, u64, u32)>>,
    payloads: HashMap<u64, Event>,
    seq: u64,
    flight: Flight,
    pub steps: u64,
    /// Order in which each downloader asked for chunks (for rarity tests).
    pub first_asked: HashMap<u32, Vec<ChunkIdx>>,
    /// Every response handed to a downloader: (puller, peer, carried a corrupt chunk).
    pub delivered: Vec<(u32, u32, bool)>,
    /// Every request sent: (time, puller, peer, id, chunks).
    pub log: Vec<(Duration, u32, u32, RequestId, Vec<ChunkIdx>)>,
}

pub fn table(lens: &[u32]) -> Arc<ChunkTable> {
    let chunks = lens.iter().enumerate().map(|(i, &len)| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        (ChunkHash::from_bytes(b), len)
    });
    Arc::new(ChunkTable::new(chunks).expect("distinct hashes"))
}

impl Net {
    pub fn new(table: Arc<ChunkTable>, config: Config, nodes: Vec<Node>) -> Self {
        Self {
            now: Duration::ZERO,
            nodes,
            table,
            config,
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            seq: 0,
            flight: Flight::default(),
            steps: 0,
            first_asked: HashMap::new(),
            log: Vec::new(),
            delivered: Vec::new(),
        }
    }

    /// Makes node `id` pull, seeded with its id, connected to `peers`.
    pub fn start_pull(&mut self, id: u32, peers: &[u32], local: &[ChunkIdx]) {
        let n = self.table.len();
        let seeded = self.config.clone().with_seed(u64::from(id) * 7919);
        let mut dl =
            Downloader::new(seeded, self.table.clone(), local.iter().copied()).expect("downloader");
        let node = &mut self.nodes[id as usize];
        node.holds = vec![false; n];
        for c in local {
            node.holds[c.as_usize()] = true;
        }
        node.claims_all = false;
        for &p in peers {
            let peer = &self.nodes[p as usize];
            if peer.claims_all && peer.downloader.is_none() {
                dl.add_peer(self.now, p, Holds::Everything)
                    .expect("add peer");
            } else {
                dl.add_peer(self.now, p, Holds::Nothing).expect("add peer");
                let held: Vec<ChunkIdx> = (0..n)
                    .filter(|&c| peer.holds[c])
                    .map(|c| ChunkIdx(c as u32))
                    .collect();
                dl.peer_has(self.now, &p, held);
            }
        }
        let node = &mut self.nodes[id as usize];
        node.downloader = Some(dl);
        node.peers = peers.to_vec();
    }

    /// Schedules the departures of `LeavesAt` nodes.
    pub fn schedule_departures(&mut self) {
        for id in 0..self.nodes.len() as u32 {
            if let Behaviour::LeavesAt(t) = self.nodes[id as usize].behaviour {
                self.push(t, id, Event::Leave { node: id });
            }
        }
    }

    fn push(&mut self, at: Duration, to: u32, e: Event) {
        self.seq += 1;
        self.payloads.insert(self.seq, e);
        self.events.push(Reverse((at, self.seq, to)));
    }

    /// Runs until nothing is pending or `limit` of virtual time has passed.
    pub fn run(&mut self, limit: Duration) {
        loop {
            self.drain_actions();
            let next_event = self.events.peek().map(|Reverse((t, _, _))| *t);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.downloader.as_ref())
                .filter_map(|d| d.next_deadline())
                .min();
            let Some(next) = [next_event, next_timer].into_iter().flatten().min() else {
                return;
            };
            if next > limit {
                return;
            }
            assert!(next >= self.now, "time went backwards");
            self.now = next;
            while let Some(&Reverse((t, seq, _))) = self.events.peek() {
                if t > self.now {
                    break;
                }
                self.events.pop();
                let e = self.payloads.remove(&seq).expect("payload");
                self.handle(e);
            }
            let now = self.now;
            for n in &mut self.nodes {
                if let Some(d) = n.downloader.as_mut() {
                    d.tick(now);
                }
            }
        }
    }

    fn handle(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Deliver {
                to,
                from,
                id,
                outcomes,
            } => {
                if self.flight.requests.remove(&(to, id.0)).is_none() {
                    return; // cancelled or peer dropped: the driver forgot it
                }
                let verified: Vec<ChunkIdx> = outcomes
                    .iter()
                    .filter(|(_, o)| *o == ChunkOutcome::Verified)
                    .map(|(c, _)| *c)
                    .collect();
                let corrupt = outcomes.iter().any(|(_, o)| *o == ChunkOutcome::Corrupt);
                self.delivered.push((to, from, corrupt));
                let node = &mut self.nodes[to as usize];
                let dl = node.downloader.as_mut().expect("puller");
                dl.on_response(now, &from, id, outcomes);
                for c in &verified {
                    node.holds[c.as_usize()] = true;
                }
                self.announce(to, &verified);
            }
            Event::Fail { to, from, id } => {
                if self.flight.requests.remove(&(to, id.0)).is_none() {
                    return;
                }
                let dl = self.nodes[to as usize].downloader.as_mut().expect("puller");
                dl.on_failure(now, &from, id, Failure::Other);
            }
            Event::Leave { node } => {
                self.nodes[node as usize].gone = true;
                for i in 0..self.nodes.len() as u32 {
                    self.disconnect(i, node);
                }
            }
        }
    }

    /// `a` forgets peer `b` (leave or ban): drop the model's in-flight entries too.
    fn disconnect(&mut self, a: u32, b: u32) {
        let now = self.now;
        if let Some(dl) = self.nodes[a as usize].downloader.as_mut() {
            dl.remove_peer(now, &b);
            self.flight
                .requests
                .retain(|&(to, _), &mut (peer, _)| !(to == a && peer == b));
        }
    }

    fn announce(&mut self, from: u32, chunks: &[ChunkIdx]) {
        if chunks.is_empty() {
            return;
        }
        let now = self.now;
        for i in 0..self.nodes.len() {
            if i as u32 == from {
                continue;
            }
            let node = &mut self.nodes[i];
            if node.peers.contains(&from)
                && let Some(dl) = node.downloader.as_mut()
            {
                dl.peer_has(now, &from, chunks.iter().copied());
            }
        }
    }

    fn drain_actions(&mut self) {
        let now = self.now;
        for id in 0..self.nodes.len() as u32 {
            while let Some(action) = self.nodes[id as usize]
                .downloader
                .as_mut()
                .and_then(|dl| dl.poll(now))
            {
                self.steps += 1;
                self.act(id, action);
                self.check_limits(id, false);
            }
            if self.nodes[id as usize].downloader.is_some() {
                self.check_limits(id, true);
            }
        }
    }

    fn act(&mut self, me: u32, action: Action<u32>) {
        let now = self.now;
        match action {
            Action::Request {
                peer,
                id,
                chunks,
                bytes,
                deadline,
            } => {
                assert_eq!(deadline, now + self.config.request_timeout());
                let lens: u64 = chunks
                    .iter()
                    .map(|&c| u64::from(self.table.chunk_len(c).expect("in table")))
                    .sum();
                assert_eq!(lens, bytes);
                assert!(
                    bytes <= self.config.max_request_bytes(),
                    "request too large"
                );
                assert!(chunks.len() <= self.config.max_request_chunks());
                assert!(!chunks.is_empty());
                assert!(
                    chunks.windows(2).all(|w| w[0] < w[1]),
                    "unsorted or repeated chunks"
                );
                let me_node = &self.nodes[me as usize];
                for c in &chunks {
                    assert!(
                        !me_node.holds[c.as_usize()],
                        "asked for a chunk it already has"
                    );
                }
                self.first_asked
                    .entry(me)
                    .or_default()
                    .extend(chunks.iter().copied());
                self.log.push((now, me, peer, id, chunks.clone()));
                self.flight.requests.insert((me, id.0), (peer, bytes));
                self.serve(me, peer, id, chunks, bytes);
            }
            Action::Cancel { id, .. } => {
                self.nodes[me as usize].cancels += 1;
                self.flight.requests.remove(&(me, id.0));
            }
            Action::Ban { peer, until } => {
                assert_eq!(until, now + self.config.ban_duration());
                self.nodes[me as usize].banned.push(peer);
                self.flight
                    .requests
                    .retain(|&(to, _), &mut (p, _)| !(to == me && p == peer));
            }
            Action::Complete => {
                let node = &mut self.nodes[me as usize];
                assert!(node.completed_at.is_none(), "Complete twice");
                node.completed_at = Some(now);
            }
            Action::Stalled { unavailable } => {
                self.nodes[me as usize].stalled = Some(unavailable);
            }
            other => panic!("unexpected action {other:?}"),
        }
    }

    fn serve(&mut self, me: u32, peer: u32, id: RequestId, chunks: Vec<ChunkIdx>, bytes: u64) {
        let now = self.now;
        let server = &mut self.nodes[peer as usize];
        assert!(!server.gone, "request to a node that left");
        let arrive = now + server.latency;
        match server.behaviour {
            Behaviour::Blackhole => {}
            Behaviour::Empty => {
                let at = arrive + server.latency;
                let outcomes = Vec::new();
                self.push(
                    at,
                    me,
                    Event::Deliver {
                        to: me,
                        from: peer,
                        id,
                        outcomes,
                    },
                );
            }
            _ => {
                let start = arrive.max(server.busy_until);
                let busy =
                    Duration::from_nanos(bytes.saturating_mul(1_000_000_000) / server.rate.max(1));
                server.busy_until = start + busy;
                let done = server.busy_until + server.latency;
                let corrupt = server.behaviour == Behaviour::Corrupt;
                let outcomes: Vec<_> = chunks
                    .iter()
                    .map(|&c| {
                        let o = if !server.holds[c.as_usize()] {
                            ChunkOutcome::Missing
                        } else if corrupt {
                            ChunkOutcome::Corrupt
                        } else {
                            ChunkOutcome::Verified
                        };
                        (c, o)
                    })
                    .collect();
                server.uploaded += outcomes
                    .iter()
                    .filter(|(_, o)| *o == ChunkOutcome::Verified)
                    .map(|(c, _)| u64::from(self.table.chunk_len(*c).unwrap_or(0)))
                    .sum::<u64>();
                let leaves = matches!(server.behaviour, Behaviour::LeavesAt(t) if t <= done);
                if leaves {
                    // The response never makes it out; the leave event disconnects.
                } else {
                    self.push(
                        done,
                        me,
                        Event::Deliver {
                            to: me,
                            from: peer,
                            id,
                            outcomes,
                        },
                    );
                }
            }
        }
    }

    /// Limits hold after every action; once the downloader's actions are drained, the model's
    /// view of what is in flight agrees with the downloader's.
    fn check_limits(&self, me: u32, drained: bool) {
        let dl = self.nodes[me as usize].downloader.as_ref().expect("puller");
        let mut per_peer: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
        for (&(to, _), &(peer, bytes)) in &self.flight.requests {
            if to == me {
                let e = per_peer.entry(peer).or_default();
                e.0 += 1;
                e.1 += bytes;
            }
        }
        let mut total = 0;
        for (&peer, &(reqs, bytes)) in &per_peer {
            assert!(
                reqs <= self.config.max_requests_per_peer(),
                "requests in flight to {peer}"
            );
            assert!(
                bytes <= self.config.max_bytes_per_peer(),
                "bytes in flight to {peer}"
            );
            if drained {
                assert_eq!(
                    dl.in_flight(&peer),
                    Some((reqs, bytes)),
                    "model and downloader disagree"
                );
            }
            total += bytes;
        }
        assert!(total <= self.config.max_bytes_in_flight());
        if drained {
            assert_eq!(dl.total_in_flight().1, total);
        }
    }

    pub fn dl(&self, id: u32) -> &Downloader<u32> {
        self.nodes[id as usize].downloader.as_ref().expect("puller")
    }

    pub fn dl_mut(&mut self, id: u32) -> &mut Downloader<u32> {
        self.nodes[id as usize].downloader.as_mut().expect("puller")
    }

    /// Wanted chunks of node `id` held by some honest node that never leaves, or by a puller.
    pub fn honest_holders_cover(
        &self,
        chunks: impl Iterator<Item = ChunkIdx>,
    ) -> HashSet<ChunkIdx> {
        chunks
            .filter(|c| {
                self.nodes.iter().any(|n| {
                    n.behaviour == Behaviour::Honest
                        && n.downloader.is_none()
                        && n.holds[c.as_usize()]
                })
            })
            .collect()
    }
}
