//! Flow-level network: links with capacities, flows over paths of links, max–min fair rates.
//!
//! A flow is a transfer of a known number of bytes along a path of links. At any time every
//! flow gets its max–min fair rate (progressive filling: the most constrained link is
//! saturated first, its flows frozen at its fair share, and so on). Rates change only when a
//! flow starts or ends, so instead of stepping time the network keeps, per flow, the time its
//! last byte leaves at the current rate, and the caller asks for the earliest one
//! ([`Network::next_completion`]).
//!
//! Efficiency: a start or an end only marks the links of that flow dirty. [`Network::recompute`]
//! walks the connected component (links ↔ flows) of the dirty links and re-solves only it;
//! flows elsewhere keep their rates and their completion entries. Completions sit in a
//! time-bucketed queue (`crate::due`) with a version per flow, so a re-rated flow pushes a new
//! entry and the stale one is skipped (most never reach the queue's heap);
//! versions live with the flow *slot* and keep counting when the slot is reused, so an entry
//! left by a finished flow can never complete its successor early.
//! Unlimited links are left out of paths altogether: they never constrain anything.
//! A re-solve that leaves a flow's rate unchanged keeps its heap entry (no new entry), and
//! stale entries are swept out when they outnumber the live ones.
//!
//! Provisional mode (for the largest runs, where every start or end re-solving one giant
//! component costs O(flows)): the caller re-solves exactly only every so often and in between
//! calls [`Network::fill_local`], which gives a new flow the capacity its path has left and
//! hands a finished flow's rate to the other flows of its links, as far as their paths have room.
//! Rates then never exceed a link's capacity, and a link with waiting flows does not idle, but
//! the split between flows is max–min fair only as of the last exact solve.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::due::{Due, DueQueue};

/// Index of a link.
pub type LinkId = u32;
/// Index of a flow (slots are reused after a flow ends).
pub type FlowId = u32;

/// Bytes below which a flow counts as finished, absorbing floating-point drift.
const EPS_BYTES: f64 = 1e-6;

#[derive(Debug)]
struct Link {
    /// Bytes per second.
    cap: f64,
    /// Flows crossing the link; a flow knows its position in each of its links' lists.
    flows: Vec<FlowId>,
    /// Bytes carried so far (accounted when flows are settled).
    carried: f64,
    /// Sum of the rates of its flows (provisional mode keeps it ≤ `cap`).
    alloc: f64,
    stamp: u64,
    // Scratch for progressive filling.
    rem: f64,
    unfrozen: u32,
}

#[derive(Debug)]
struct Flow {
    links: Vec<LinkId>,
    /// Position of this flow in `links[i]`'s flow list.
    pos: Vec<u32>,
    remaining: f64,
    rate: f64,
    /// Time up to which `remaining` is accounted.
    since: f64,
    version: u32,
    /// Whether a heap entry with the current `version` is live.
    has_due: bool,
    stamp: u64,
    frozen: bool,
    tag: u64,
}

/// Min-heap entry of progressive filling: a link's fair share.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Share {
    share: f64,
    link: LinkId,
}
impl Eq for Share {}
impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .share
            .total_cmp(&self.share)
            .then_with(|| other.link.cmp(&self.link))
    }
}
impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Links, flows and their max–min fair rates.
#[derive(Debug, Default)]
pub struct Network {
    links: Vec<Link>,
    flows: Vec<Option<Flow>>,
    free: Vec<FlowId>,
    /// Next version of each flow slot (survives reuse of the slot).
    slot_version: Vec<u32>,
    dirty: Vec<LinkId>,
    /// Flows with no finite link: they complete at once.
    instant: Vec<FlowId>,
    due: DueQueue,
    stamp: u64,
    active: usize,
    recomputes: u64,
    solved_flows: u64,
    /// Provisional mode: flows started and links freed since the last [`Network::fill_local`].
    provisional: bool,
    new_flows: Vec<FlowId>,
    freed_links: Vec<LinkId>,
}

impl Network {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a link of `bytes_per_sec` capacity (must be finite and positive).
    pub fn add_link(&mut self, bytes_per_sec: f64) -> LinkId {
        self.links.push(Link {
            cap: bytes_per_sec,
            flows: Vec::new(),
            carried: 0.0,
            alloc: 0.0,
            stamp: 0,
            rem: 0.0,
            unfrozen: 0,
        });
        (self.links.len() - 1) as LinkId
    }

    /// Number of links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Starts a flow of `bytes` over `path` at time `now`; `tag` is the caller's label for it.
    /// Its rate is set by the next [`Self::recompute`].
    pub fn start(&mut self, now: f64, path: &[LinkId], bytes: f64, tag: u64) -> FlowId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.flows.push(None);
                self.slot_version.push(0);
                (self.flows.len() - 1) as FlowId
            }
        };
        let mut pos = Vec::with_capacity(path.len());
        for &l in path {
            let link = &mut self.links[l as usize];
            pos.push(link.flows.len() as u32);
            link.flows.push(id);
            self.dirty.push(l);
        }
        if path.is_empty() {
            self.instant.push(id);
        } else if self.provisional {
            self.new_flows.push(id);
        }
        self.flows[id as usize] = Some(Flow {
            links: path.to_vec(),
            pos,
            remaining: bytes.max(0.0),
            rate: 0.0,
            since: now,
            version: self.slot_version[id as usize],
            has_due: false,
            stamp: 0,
            frozen: false,
            tag,
        });
        self.active += 1;
        id
    }

    /// Removes a flow (finished or aborted) at `now`; returns its tag and the bytes it had left.
    pub fn remove(&mut self, now: f64, id: FlowId) -> Option<(u64, f64)> {
        self.settle(id, now);
        let flow = self.flows.get_mut(id as usize)?.take()?;
        // Entries of this flow still in the heap must not match the slot's next occupant.
        self.slot_version[id as usize] = flow.version.wrapping_add(1);
        for (&l, &p) in flow.links.iter().zip(&flow.pos) {
            let link = &mut self.links[l as usize];
            // Only a link that was full held its flows back: one with room to spare (a WAN
            // link under its hosts' rates, crossed by thousands of flows in the largest runs)
            // has nothing to hand on that its flows could not already have taken.
            let was_full = link.cap - link.alloc <= link.cap * 1e-9;
            link.alloc = (link.alloc - flow.rate).max(0.0);
            let list = &mut link.flows;
            list.swap_remove(p as usize);
            if let Some(&moved) = list.get(p as usize)
                && let Some(m) = self.flows[moved as usize].as_mut()
                && let Some(i) = m.links.iter().position(|&x| x == l)
            {
                m.pos[i] = p;
            }
            self.dirty.push(l);
            if self.provisional && flow.rate > 0.0 && was_full {
                self.freed_links.push(l);
            }
        }
        self.free.push(id);
        self.active -= 1;
        Some((flow.tag, flow.remaining))
    }

    /// Number of flows in progress.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The current rate of a flow in bytes per second.
    pub fn rate(&self, id: FlowId) -> Option<f64> {
        Some(self.flows.get(id as usize)?.as_ref()?.rate)
    }

    /// Bytes carried by a link so far (flows settled at their last re-rating or end).
    pub fn carried(&self, link: LinkId) -> f64 {
        self.links[link as usize].carried
    }

    /// (recomputations, flows re-solved in total): how much work the solver did.
    pub fn work(&self) -> (u64, u64) {
        (self.recomputes, self.solved_flows)
    }

    /// Whether flows started or ended since the last [`Self::recompute`].
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.instant.is_empty()
    }

    fn settle(&mut self, id: FlowId, now: f64) {
        let Some(f) = self.flows.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        let dt = now - f.since;
        if dt > 0.0 && f.rate > 0.0 {
            let moved = (f.rate * dt).min(f.remaining);
            f.remaining -= moved;
            for &l in &f.links {
                self.links[l as usize].carried += moved;
            }
        }
        f.since = now;
    }

    /// Re-solves max–min fair rates for the components touched since the last call and
    /// refreshes their completion times.
    pub fn recompute(&mut self, now: f64) {
        for id in std::mem::take(&mut self.instant) {
            if let Some(f) = self.flows[id as usize].as_mut() {
                f.rate = f64::INFINITY;
                f.has_due = true;
                f.version = f.version.wrapping_add(1);
                self.due.push(Due {
                    at: now,
                    flow: id,
                    version: f.version,
                });
            }
        }
        if self.dirty.is_empty() {
            return;
        }
        self.recomputes += 1;
        self.stamp += 1;
        let stamp = self.stamp;
        // Collect the component(s) of the dirty links.
        let mut comp_links: Vec<LinkId> = Vec::new();
        let mut comp_flows: Vec<FlowId> = Vec::new();
        let mut stack = std::mem::take(&mut self.dirty);
        while let Some(l) = stack.pop() {
            let link = &mut self.links[l as usize];
            if link.stamp == stamp {
                continue;
            }
            link.stamp = stamp;
            comp_links.push(l);
            for &f in &self.links[l as usize].flows {
                let Some(flow) = self.flows[f as usize].as_mut() else {
                    continue;
                };
                if flow.stamp == stamp {
                    continue;
                }
                flow.stamp = stamp;
                comp_flows.push(f);
                // Links already visited are skipped when popped.
                stack.extend(flow.links.iter().copied().filter(|&o| o != l));
            }
        }
        self.solved_flows += comp_flows.len() as u64;
        // Rates before the solve, to keep the heap entries of flows whose rate stays.
        let mut before = Vec::with_capacity(comp_flows.len());
        for &f in &comp_flows {
            self.settle(f, now);
            if let Some(flow) = self.flows[f as usize].as_mut() {
                flow.frozen = false;
                before.push(flow.rate);
            } else {
                before.push(f64::NAN);
            }
        }
        // Progressive filling.
        let mut heap = BinaryHeap::with_capacity(comp_links.len());
        for &l in &comp_links {
            let link = &mut self.links[l as usize];
            link.rem = link.cap;
            link.unfrozen = link.flows.len() as u32;
            if link.unfrozen > 0 {
                heap.push(Share {
                    share: link.rem / f64::from(link.unfrozen),
                    link: l,
                });
            }
        }
        while let Some(Share { share, link: l }) = heap.pop() {
            let link = &self.links[l as usize];
            if link.unfrozen == 0 {
                continue;
            }
            // Freezing a flow at the smallest share never lowers another link's share, so a
            // key is at most its link's share: re-queue a link whose share grew instead of
            // pushing a new key at every freeze (the heap then holds about one key per link).
            let current = link.rem.max(0.0) / f64::from(link.unfrozen);
            if current > share {
                heap.push(Share {
                    share: current,
                    link: l,
                });
                continue;
            }
            let share = current;
            // Index loops: neither list changes during the filling.
            for i in 0..self.links[l as usize].flows.len() {
                let f = self.links[l as usize].flows[i];
                let Some(flow) = self.flows[f as usize].as_mut() else {
                    continue;
                };
                if flow.frozen {
                    continue;
                }
                flow.frozen = true;
                flow.rate = share;
                for j in 0..flow.links.len() {
                    let Some(o) = self.flows[f as usize].as_ref().map(|fl| fl.links[j]) else {
                        break;
                    };
                    let ol = &mut self.links[o as usize];
                    ol.rem -= share;
                    ol.unfrozen -= 1;
                }
            }
        }
        for &l in &comp_links {
            let link = &mut self.links[l as usize];
            link.alloc = (link.cap - link.rem).clamp(0.0, link.cap);
        }
        for (&f, &old) in comp_flows.iter().zip(&before) {
            let Some(flow) = self.flows[f as usize].as_mut() else {
                continue;
            };
            if flow.has_due && flow.rate == old {
                continue; // same rate: its entry's time still holds
            }
            Self::reschedule(&mut self.due, f, flow, now);
        }
        self.sweep_due();
    }

    /// Gives `flow` a fresh heap entry for its current rate (none while it is starved).
    fn reschedule(due: &mut DueQueue, id: FlowId, flow: &mut Flow, now: f64) {
        flow.version = flow.version.wrapping_add(1);
        let at = if flow.remaining <= EPS_BYTES {
            now
        } else if flow.rate > 0.0 {
            now + flow.remaining / flow.rate
        } else {
            flow.has_due = false;
            return; // starved: no completion until re-rated
        };
        flow.has_due = true;
        due.push(Due {
            at,
            flow: id,
            version: flow.version,
        });
    }

    /// Drops stale heap entries once they outnumber live flows several times over.
    fn sweep_due(&mut self) {
        if self.due.len() > 4 * self.active + 1024 {
            let flows = &self.flows;
            self.due.retain(|d| {
                flows[d.flow as usize]
                    .as_ref()
                    .is_some_and(|f| f.version == d.version)
            });
        }
    }

    /// Turns provisional mode on or off (see the module docs); off by default.
    pub fn set_provisional(&mut self, on: bool) {
        self.provisional = on;
        self.new_flows.clear();
        self.freed_links.clear();
    }

    /// Provisional mode: rates for the flows started and the capacity freed since the last
    /// call, without a solve. A new flow gets the least capacity left on its path; then the
    /// flows of each link a finished flow freed take what their paths have left, in list
    /// order. Links stay dirty, so the next [`Self::recompute`] re-solves them exactly.
    pub fn fill_local(&mut self, now: f64) {
        for id in std::mem::take(&mut self.new_flows) {
            self.top_up(id, now);
        }
        let freed = std::mem::take(&mut self.freed_links);
        for l in freed {
            for i in 0..self.links[l as usize].flows.len() {
                let link = &self.links[l as usize];
                if link.cap - link.alloc <= link.cap * 1e-9 {
                    break; // the freed capacity is taken: a busy link's list can be long
                }
                let f = link.flows[i];
                self.top_up(f, now);
            }
        }
        self.sweep_due();
    }

    /// Raises a flow's rate by the least capacity its links have left, if any.
    fn top_up(&mut self, id: FlowId, now: f64) {
        let Some(flow) = self.flows.get(id as usize).and_then(Option::as_ref) else {
            return;
        };
        let room = flow
            .links
            .iter()
            .map(|&l| {
                let link = &self.links[l as usize];
                link.cap - link.alloc
            })
            .fold(f64::INFINITY, f64::min);
        // Ignore slivers left by rounding: they would only churn the heap.
        let floor = flow
            .links
            .first()
            .map_or(0.0, |&l| self.links[l as usize].cap * 1e-9);
        // (`room` is never NaN: capacities and rates are finite.)
        if room <= floor || !room.is_finite() {
            return;
        }
        self.settle(id, now);
        let Some(flow) = self.flows[id as usize].as_mut() else {
            return;
        };
        flow.rate += room;
        for &l in &flow.links {
            let link = &mut self.links[l as usize];
            link.alloc = (link.alloc + room).min(link.cap);
        }
        Self::reschedule(&mut self.due, id, flow, now);
    }

    /// The earliest completion, as (time, flow), without removing it.
    pub fn next_completion(&mut self) -> Option<(f64, FlowId)> {
        let flows = &self.flows;
        let d = self.due.peek(|d| {
            flows[d.flow as usize]
                .as_ref()
                .is_some_and(|f| f.version == d.version)
        })?;
        Some((d.at, d.flow))
    }

    /// Removes the flow due at `next_completion` and returns (flow, tag).
    pub fn pop_completion(&mut self) -> Option<(FlowId, u64)> {
        let (at, id) = self.next_completion()?;
        self.due.pop();
        let tag = self.flows[id as usize].as_ref()?.tag;
        // Its last byte leaves now: account what is left in full, whatever rounding said.
        if let Some(f) = self.flows[id as usize].as_mut() {
            let rem = f.remaining;
            for &l in &f.links {
                self.links[l as usize].carried += rem;
            }
            f.remaining = 0.0;
            f.since = at;
        }
        self.remove(at, id);
        Some((id, tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn single_flow_gets_the_bottleneck() {
        let mut n = Network::new();
        let a = n.add_link(100.0);
        let b = n.add_link(40.0);
        let f = n.start(0.0, &[a, b], 400.0, 7);
        n.recompute(0.0);
        assert!(close(n.rate(f).unwrap(), 40.0));
        let (t, id) = n.next_completion().unwrap();
        assert_eq!(id, f);
        assert!(close(t, 10.0));
        assert_eq!(n.pop_completion(), Some((f, 7)));
        assert!(close(n.carried(a), 400.0));
        assert_eq!(n.active(), 0);
    }

    #[test]
    fn a_reused_flow_slot_is_not_completed_by_its_predecessors_entries() {
        // Regression: versions restarted at 0 on slot reuse, so a finished flow's stale heap
        // entry completed the slot's next flow early and links carried more than capacity.
        let mut n = Network::new();
        let l = n.add_link(10.0);
        let a = n.start(0.0, &[l], 100.0, 1);
        n.recompute(0.0); // a due at 10
        let b = n.start(1.0, &[l], 100.0, 2);
        n.recompute(1.0); // a re-rated: its entry at 10 is stale
        n.remove(2.0, a);
        let c = n.start(2.0, &[l], 100.0, 3);
        assert_eq!(c, a, "the slot is reused");
        n.recompute(2.0);
        // b has 95 bytes left at t = 2 and c 100, both at 5/s: b ends at 21, c at 22.
        let (t, id) = n.next_completion().unwrap();
        assert_eq!(id, b);
        assert!(close(t, 21.0), "{t}");
        assert_eq!(n.pop_completion(), Some((b, 2)));
        n.recompute(21.0);
        let (t, id) = n.next_completion().unwrap();
        assert_eq!(id, c);
        assert!(close(t, 21.5), "{t}");
    }

    #[test]
    fn classic_max_min_example() {
        // Link x (cap 10) carries f1, f2, f3; link y (cap 4) carries f3 and f4.
        // y is the bottleneck: f3 = f4 = 2; then x gives f1 = f2 = (10 - 2) / 2 = 4.
        let mut n = Network::new();
        let x = n.add_link(10.0);
        let y = n.add_link(4.0);
        let f1 = n.start(0.0, &[x], 1e9, 1);
        let f2 = n.start(0.0, &[x], 1e9, 2);
        let f3 = n.start(0.0, &[x, y], 1e9, 3);
        let f4 = n.start(0.0, &[y], 1e9, 4);
        n.recompute(0.0);
        assert!(close(n.rate(f1).unwrap(), 4.0));
        assert!(close(n.rate(f2).unwrap(), 4.0));
        assert!(close(n.rate(f3).unwrap(), 2.0));
        assert!(close(n.rate(f4).unwrap(), 2.0));
        // f4 leaves: y now gives f3 up to 4, and x splits the rest fairly: all three at 10/3.
        n.remove(1.0, f4);
        n.recompute(1.0);
        for f in [f1, f2, f3] {
            assert!(close(n.rate(f).unwrap(), 10.0 / 3.0), "{:?}", n.rate(f));
        }
    }

    #[test]
    fn rates_never_exceed_capacity_and_every_flow_has_a_saturated_link() {
        // A pseudo-random mesh: the two max-min conditions must hold.
        let mut n = Network::new();
        let caps = [5.0, 7.0, 11.0, 3.0, 13.0, 2.0, 17.0, 19.0];
        let links: Vec<_> = caps.iter().map(|&c| n.add_link(c)).collect();
        let mut rng = crate::rng::Rng::new(12345);
        let mut next = || (rng.next_u64() >> 33) as usize;
        let mut flows = Vec::new();
        for i in 0..30 {
            let a = links[next() % links.len()];
            let b = links[next() % links.len()];
            let path: Vec<_> = if a == b { vec![a] } else { vec![a, b] };
            flows.push((n.start(0.0, &path, 1e9, i), path));
        }
        n.recompute(0.0);
        let mut load = vec![0.0; links.len()];
        for (f, path) in &flows {
            for &l in path {
                load[l as usize] += n.rate(*f).unwrap();
            }
        }
        for (l, &cap) in caps.iter().enumerate() {
            assert!(load[l] <= cap * (1.0 + 1e-9), "link {l} overloaded");
        }
        for (f, path) in &flows {
            let r = n.rate(*f).unwrap();
            // Bottleneck: some link on the path is full and no flow on it is faster.
            let has_bottleneck = path.iter().any(|&l| {
                let full = load[l as usize] >= caps[l as usize] * (1.0 - 1e-9);
                let max_on = flows
                    .iter()
                    .filter(|(_, p)| p.contains(&l))
                    .map(|(g, _)| n.rate(*g).unwrap())
                    .fold(0.0, f64::max);
                full && r >= max_on * (1.0 - 1e-9)
            });
            assert!(has_bottleneck, "flow {f} has no bottleneck");
        }
    }

    #[test]
    fn untouched_components_keep_their_schedule() {
        let mut n = Network::new();
        let a = n.add_link(10.0);
        let b = n.add_link(10.0);
        let fa = n.start(0.0, &[a], 100.0, 1);
        n.recompute(0.0);
        let (before, _) = n.next_completion().unwrap();
        let fb = n.start(1.0, &[b], 100.0, 2);
        n.recompute(1.0);
        assert!(close(n.rate(fa).unwrap(), 10.0));
        assert!(close(n.rate(fb).unwrap(), 10.0));
        assert_eq!(n.work().1, 2, "the second recompute touched only fb");
        assert_eq!(n.next_completion().unwrap(), (before, fa));
    }

    #[test]
    fn completion_times_follow_rate_changes() {
        // Two flows share a link of 10 B/s: 50 B and 100 B. The short one ends at t=10
        // (5 B/s each); the long one then has 50 B left at 10 B/s: ends at t=15.
        let mut n = Network::new();
        let l = n.add_link(10.0);
        n.start(0.0, &[l], 50.0, 1);
        n.start(0.0, &[l], 100.0, 2);
        n.recompute(0.0);
        let (t1, _) = n.next_completion().unwrap();
        assert!(close(t1, 10.0));
        assert_eq!(n.pop_completion().map(|x| x.1), Some(1));
        n.recompute(t1);
        let (t2, _) = n.next_completion().unwrap();
        assert!(close(t2, 15.0));
        assert_eq!(n.pop_completion().map(|x| x.1), Some(2));
        assert!(close(n.carried(l), 150.0));
    }

    /// Sum of the rates on each link.
    fn loads(n: &Network) -> Vec<f64> {
        let mut load = vec![0.0; n.link_count()];
        for f in n.flows.iter().flatten() {
            for &l in &f.links {
                load[l as usize] += f.rate;
            }
        }
        load
    }

    #[test]
    fn provisional_rates_never_exceed_capacity_and_a_solve_restores_max_min() {
        // Random starts and ends on a mesh, filled locally between solves: no link may carry
        // more than its capacity, and a solve must land on the exact rates of a fresh network.
        let caps = [5.0, 7.0, 11.0, 3.0, 13.0, 2.0, 17.0, 19.0];
        let mut n = Network::new();
        n.set_provisional(true);
        let links: Vec<_> = caps.iter().map(|&c| n.add_link(c)).collect();
        let mut rng = crate::rng::Rng::new(99);
        let mut next = || (rng.next_u64() >> 33) as usize;
        let mut live: Vec<(FlowId, Vec<LinkId>)> = Vec::new();
        let mut t = 0.0;
        for step in 0..400u64 {
            t += 0.01;
            if live.len() > 5 && next() % 3 == 0 {
                let (f, _) = live.swap_remove(next() % live.len());
                n.remove(t, f);
            } else {
                let a = links[next() % links.len()];
                let b = links[next() % links.len()];
                let path: Vec<_> = if a == b { vec![a] } else { vec![a, b] };
                live.push((n.start(t, &path, 1e9, step), path));
            }
            n.fill_local(t);
            for (l, (&load, &cap)) in loads(&n).iter().zip(&caps).enumerate() {
                assert!(
                    load <= cap * (1.0 + 1e-9),
                    "step {step}: link {l} at {load} > {cap}"
                );
            }
            if step % 50 == 49 {
                n.recompute(t);
                let mut exact = Network::new();
                for &c in &caps {
                    exact.add_link(c);
                }
                let ids: Vec<_> = live
                    .iter()
                    .map(|(_, p)| exact.start(t, p, 1e9, 0))
                    .collect();
                exact.recompute(t);
                for ((f, _), g) in live.iter().zip(ids) {
                    let (a, b) = (n.rate(*f).unwrap(), exact.rate(g).unwrap());
                    assert!(close(a, b), "step {step}: {a} vs exact {b}");
                }
            }
        }
    }

    #[test]
    fn provisional_fill_gives_a_new_flow_the_room_left_and_hands_on_freed_capacity() {
        let mut n = Network::new();
        n.set_provisional(true);
        let up = n.add_link(10.0);
        let down = n.add_link(4.0);
        let a = n.start(0.0, &[up], 1e9, 1);
        n.fill_local(0.0);
        assert!(close(n.rate(a).unwrap(), 10.0), "alone: the whole link");
        let b = n.start(0.0, &[up, down], 1e9, 2);
        n.fill_local(0.0);
        assert_eq!(n.rate(b), Some(0.0), "no room left until a solve");
        n.recompute(0.0);
        assert!(close(n.rate(a).unwrap(), 6.0));
        assert!(close(n.rate(b).unwrap(), 4.0));
        n.remove(1.0, a);
        n.fill_local(1.0);
        assert!(
            close(n.rate(b).unwrap(), 4.0),
            "b is held by its other link"
        );
        let c = n.start(1.0, &[up], 1e9, 3);
        n.fill_local(1.0);
        assert!(close(n.rate(c).unwrap(), 6.0), "c takes what a left");
    }

    #[test]
    fn pathless_flows_complete_at_once() {
        let mut n = Network::new();
        let f = n.start(3.0, &[], 1e12, 9);
        n.recompute(3.0);
        assert_eq!(n.next_completion(), Some((3.0, f)));
    }
}
