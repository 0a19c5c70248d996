//! The network's completion entries, earliest first, for a caller whose entries mostly go
//! stale before they come up.
//!
//! A flow re-rated by a solve gets a new entry and its old one goes stale; in the largest runs
//! every flow is re-rated about every 50 ms, so the stale entries outnumber the live ones and a
//! binary heap over all of them spends its time sifting entries nobody will take. Here only
//! the entries of the current time bucket ([`BUCKET`] seconds) sit in a heap; later ones wait
//! in plain vectors, one per bucket, and are moved into the heap when their bucket comes up,
//! minus those gone stale by then (checked with the caller's `live`). A calendar queue, in
//! effect, with the heap keeping the order within a bucket exact.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// Width of a time bucket in seconds.
const BUCKET: f64 = 0.01;
/// Buckets kept as vectors after the current one; entries beyond wait in one unsorted vector.
const RING: usize = 4096;

/// A completion entry: a flow (at one version of its schedule) finishing at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Due {
    pub(crate) at: f64,
    pub(crate) flow: u32,
    pub(crate) version: u32,
}

impl Eq for Due {}
impl Ord for Due {
    /// Reversed, for a min-heap: earliest first, then lowest flow id.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.flow.cmp(&self.flow))
    }
}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Completion entries ordered by time (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct DueQueue {
    /// Entries of buckets up to `cur`.
    near: BinaryHeap<Due>,
    /// The current bucket.
    cur: i64,
    /// Entries of buckets `cur + 1 ..= cur + later.len()`, one vector per bucket.
    later: VecDeque<Vec<Due>>,
    /// Entries that were past `later` when pushed, and the earliest bucket among them.
    far: Vec<Due>,
    far_first: Option<i64>,
    len: usize,
}

fn bucket(at: f64) -> i64 {
    (at / BUCKET).floor() as i64
}

impl DueQueue {
    /// Entries held, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds an entry.
    pub(crate) fn push(&mut self, d: Due) {
        debug_assert!(!d.at.is_nan(), "a completion time is NaN");
        self.len += 1;
        let b = bucket(d.at);
        if b <= self.cur {
            self.near.push(d);
            return;
        }
        let k = (b - self.cur - 1) as usize;
        if k < RING {
            if self.later.len() <= k {
                self.later.resize_with(k + 1, Vec::new);
            }
            self.later[k].push(d);
        } else {
            self.far.push(d);
            self.far_first = Some(self.far_first.map_or(b, |f| f.min(b)));
        }
    }

    /// The earliest entry for which `live` holds; the stale ones before it are dropped.
    pub(crate) fn peek(&mut self, live: impl Fn(&Due) -> bool) -> Option<Due> {
        loop {
            while let Some(&d) = self.near.peek() {
                if live(&d) {
                    return Some(d);
                }
                self.near.pop();
                self.len -= 1;
            }
            if let Some(first) = self.far_first
                && (first <= self.cur + RING as i64 || self.later.is_empty())
            {
                // The far entries' earliest bucket is in reach (or nothing comes before it):
                // file them into the buckets before the next one is loaded.
                if self.later.is_empty() {
                    self.cur = self.cur.max(first - 1);
                }
                self.far_first = None;
                for d in std::mem::take(&mut self.far) {
                    self.len -= 1;
                    if live(&d) {
                        self.push(d);
                    }
                }
            }
            let next = self.later.pop_front()?;
            self.cur += 1;
            for d in next {
                if live(&d) {
                    self.near.push(d);
                } else {
                    self.len -= 1;
                }
            }
        }
    }

    /// Removes the entry [`Self::peek`] returned.
    pub(crate) fn pop(&mut self) {
        if self.near.pop().is_some() {
            self.len -= 1;
        }
    }

    /// Drops every entry for which `live` does not hold.
    pub(crate) fn retain(&mut self, live: impl Fn(&Due) -> bool) {
        self.near.retain(&live);
        for b in &mut self.later {
            b.retain(&live);
        }
        self.far.retain(&live);
        self.far_first = self.far.iter().map(|d| bucket(d.at)).min();
        self.len =
            self.near.len() + self.later.iter().map(Vec::len).sum::<usize>() + self.far.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn due(at: f64, flow: u32) -> Due {
        Due {
            at,
            flow,
            version: 0,
        }
    }

    /// Against a sorted list: random times from now to far beyond the ring, pushes between
    /// pops (never before the last popped time, as in a simulation), a stale set skipped.
    #[test]
    fn pops_in_time_order_and_skips_stale_entries() {
        let mut rng = Rng::new(5);
        let mut q = DueQueue::default();
        let mut reference: Vec<Due> = Vec::new();
        let stale = |d: &Due| d.flow % 7 == 3;
        let mut now = 0.0;
        let mut flow = 0;
        for round in 0..200 {
            for _ in 0..50 {
                let ahead = match rng.below(4) {
                    0 => 0.0,
                    1 => rng.unit() * 0.02,
                    2 => rng.unit() * 5.0,
                    _ => rng.unit() * 100.0,
                };
                let d = due(now + ahead, flow);
                flow += 1;
                q.push(d);
                reference.push(d);
            }
            reference.retain(|d| !stale(d));
            reference.sort_by(|a, b| b.cmp(a));
            for _ in 0..(if round == 199 { usize::MAX } else { 30 }) {
                let want = reference.first().copied();
                let got = q.peek(|d| !stale(d));
                assert_eq!(got, want, "round {round}");
                let Some(d) = got else { break };
                assert!(d.at >= now);
                now = d.at;
                q.pop();
                reference.remove(0);
            }
        }
        assert_eq!(q.len(), 0);
        assert_eq!(q.peek(|_| true), None);
    }

    #[test]
    fn retain_drops_entries_everywhere_and_keeps_the_count() {
        let mut q = DueQueue::default();
        for (i, at) in [0.0, 0.5, 30.0, 500.0].into_iter().enumerate() {
            q.push(due(at, i as u32));
        }
        assert_eq!(q.len(), 4);
        q.retain(|d| d.flow % 2 == 1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.peek(|_| true).map(|d| d.flow), Some(1));
        q.pop();
        assert_eq!(q.peek(|_| true).map(|d| d.flow), Some(3));
    }
}
