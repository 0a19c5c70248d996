//! Chunks kept sorted by rarity in one flat array, so that the rarest chunk is found in O(1)
//! and a change of one chunk's holder count costs O(1).
//!
//! This is the bucketed layout of libtorrent's piece picker: `order` is a permutation of the
//! chunk indices, cut into contiguous buckets by `bounds`. Bucket 0 holds the *parked* chunks
//! (not wanted, in flight or done); bucket `a + 1` holds the queued chunks that `a` connected
//! peers hold. Moving a chunk to a neighbouring bucket swaps it with that bucket's edge element
//! and shifts one bound. Within a bucket the order comes from a seeded shuffle of runs of
//! consecutive chunks, which is the tie-break: different seeds start on different runs.
//!
//! Per chunk this costs 4 (order) + 4 (pos) + 2 (holder count) bytes plus one bit (queued).

/// The rarity-ordered chunk permutation.
#[derive(Debug, Clone)]
pub(crate) struct RarityOrder {
    /// Chunk indices, bucket by bucket.
    order: Vec<u32>,
    /// Where each chunk sits in `order`.
    pos: Vec<u32>,
    /// Connected peers known to hold each chunk.
    avail: Vec<u16>,
    /// Bucket `b` is `order[bounds[b]..bounds[b + 1]]`; the last bound is `order.len()`.
    bounds: Vec<u32>,
    /// One bit per chunk: queued, i.e. outside bucket 0.
    queued: Vec<u64>,
}

/// What a bounded scan of the rarity order found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The rarest available chunk that the predicate accepts.
    Found(u32),
    /// The whole available range was scanned: no chunk is accepted.
    None,
    /// The scan stopped at its cap; the answer must come from elsewhere.
    Capped,
}

/// SplitMix64: a tiny, well-mixed deterministic generator for the seeded shuffle.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RarityOrder {
    /// Lays out `n` chunks: the unwanted ones parked, the wanted ones queued with no holders, in
    /// runs of `run_len` consecutive chunks whose order is shuffled with `seed`.
    pub(crate) fn new(n: u32, wanted: &[bool], seed: u64, run_len: usize) -> Self {
        let len = n as usize;
        let mut order = Vec::with_capacity(len);
        order.extend((0..n).filter(|&c| !wanted[c as usize]));
        let parked = order.len() as u32;
        let wanted_list: Vec<u32> = (0..n).filter(|&c| wanted[c as usize]).collect();
        let mut runs: Vec<&[u32]> = wanted_list.chunks(run_len.max(1)).collect();
        let mut state = seed;
        for i in (1..runs.len()).rev() {
            let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
            runs.swap(i, j);
        }
        for run in runs {
            order.extend_from_slice(run);
        }
        let mut pos = vec![0u32; len];
        for (i, &c) in order.iter().enumerate() {
            pos[c as usize] = i as u32;
        }
        let mut queued = vec![0u64; len.div_ceil(64)];
        for &c in &wanted_list {
            queued[c as usize / 64] |= 1 << (c % 64);
        }
        Self {
            order,
            pos,
            avail: vec![0; len],
            bounds: vec![0, parked, n],
            queued,
        }
    }

    /// Number of chunks in the permutation.
    fn n(&self) -> u32 {
        self.order.len() as u32
    }

    /// Holders of chunk `c`.
    pub(crate) fn avail(&self, c: u32) -> u16 {
        self.avail[c as usize]
    }

    /// Whether `c` is queued (wanted, neither in flight nor done).
    pub(crate) fn is_queued(&self, c: u32) -> bool {
        self.queued[c as usize / 64] & (1 << (c % 64)) != 0
    }

    fn bucket_of(&self, c: u32) -> usize {
        if self.is_queued(c) {
            self.avail(c) as usize + 1
        } else {
            0
        }
    }

    fn ensure_bucket(&mut self, b: usize) {
        let n = self.n();
        while self.bounds.len() < b + 2 {
            self.bounds.push(n);
        }
    }

    fn swap_slots(&mut self, i: u32, j: u32) {
        let (ci, cj) = (self.order[i as usize], self.order[j as usize]);
        self.order.swap(i as usize, j as usize);
        self.pos[ci as usize] = j;
        self.pos[cj as usize] = i;
    }

    /// Moves `c` from bucket `b` to bucket `b + 1`.
    fn step_up(&mut self, c: u32, b: usize) {
        let last = self.bounds[b + 1] - 1;
        self.swap_slots(self.pos[c as usize], last);
        self.bounds[b + 1] -= 1;
    }

    /// Moves `c` from bucket `b` to bucket `b - 1`.
    fn step_down(&mut self, c: u32, b: usize) {
        let first = self.bounds[b];
        self.swap_slots(self.pos[c as usize], first);
        self.bounds[b] += 1;
    }

    fn move_to(&mut self, c: u32, from: usize, to: usize) {
        self.ensure_bucket(to);
        for b in from..to {
            self.step_up(c, b);
        }
        for b in (to + 1..=from).rev() {
            self.step_down(c, b);
        }
    }

    /// Takes `c` out of the queue (it was requested or is done). O(holders of `c`).
    pub(crate) fn park(&mut self, c: u32) {
        if self.is_queued(c) {
            let from = self.bucket_of(c);
            self.move_to(c, from, 0);
            self.queued[c as usize / 64] &= !(1 << (c % 64));
        }
    }

    /// Puts `c` back in the queue at its rarity. O(holders of `c`).
    pub(crate) fn unpark(&mut self, c: u32) {
        if !self.is_queued(c) {
            let to = self.avail(c) as usize + 1;
            self.move_to(c, 0, to);
            self.queued[c as usize / 64] |= 1 << (c % 64);
        }
    }

    /// One more connected peer holds `c`.
    pub(crate) fn inc(&mut self, c: u32) {
        let from = self.bucket_of(c);
        self.avail[c as usize] = self.avail[c as usize].saturating_add(1);
        if from > 0 {
            self.move_to(c, from, from + 1);
        }
    }

    /// One fewer connected peer holds `c`.
    pub(crate) fn dec(&mut self, c: u32) {
        let from = self.bucket_of(c);
        if self.avail[c as usize] == 0 {
            return;
        }
        self.avail[c as usize] -= 1;
        if from > 0 {
            self.move_to(c, from, from - 1);
        }
    }

    /// A peer holding every chunk joined: every count rises by one, so the buckets shift up as a
    /// whole and no chunk moves. O(chunks) for the counts, O(buckets) for the bounds.
    pub(crate) fn inc_all(&mut self) {
        for a in &mut self.avail {
            *a = a.saturating_add(1);
        }
        let b1 = self.bounds[1];
        self.bounds.insert(1, b1);
    }

    /// A peer holding every chunk left: the reverse of [`Self::inc_all`].
    pub(crate) fn dec_all(&mut self) {
        if self.bounds.len() > 2 && self.bounds[1] == self.bounds[2] {
            for a in &mut self.avail {
                *a = a.saturating_sub(1);
            }
            self.bounds.remove(1);
        } else {
            // Some queued chunk has no holder although a full holder is connected; the counts
            // were not built by `inc_all`, so fall back to moving every chunk.
            for c in 0..self.n() {
                self.dec(c);
            }
        }
    }

    /// Queued chunks with at least one holder.
    pub(crate) fn available_count(&self) -> u32 {
        self.n() - self.bounds.get(2).copied().unwrap_or(self.n())
    }

    /// Queued chunks that no connected peer holds, in no particular order.
    pub(crate) fn unavailable(&self) -> &[u32] {
        let start = self.bounds[1] as usize;
        let end = self.bounds.get(2).map_or(self.order.len(), |&b| b as usize);
        &self.order[start..end]
    }

    /// Scans at most `cap` queued chunks held by at least `min_holders` peers, rarest first,
    /// until `accept` returns true.
    pub(crate) fn scan(
        &self,
        min_holders: u16,
        cap: usize,
        mut accept: impl FnMut(u32) -> bool,
    ) -> Scan {
        let b = usize::from(min_holders) + 1;
        let Some(&start) = self.bounds.get(b) else {
            return Scan::None;
        };
        let range = &self.order[start as usize..];
        for &c in range.iter().take(cap) {
            if accept(c) {
                return Scan::Found(c);
            }
        }
        if range.len() > cap {
            Scan::Capped
        } else {
            Scan::None
        }
    }

    /// The first `k` available chunks, rarest first.
    pub(crate) fn first_available(&self, k: usize) -> Vec<u32> {
        let Some(&start) = self.bounds.get(2) else {
            return Vec::new();
        };
        self.order[start as usize..]
            .iter()
            .take(k)
            .copied()
            .collect()
    }

    /// The `k` rarest queued chunks among those set in `held` (a bitset over chunk indices),
    /// rarest first: a word-wise intersection, O(chunks / 64 + matches), for peers whose chunks
    /// the bounded scan did not reach.
    pub(crate) fn rarest_in(&self, held: &[u64], k: usize) -> Vec<u32> {
        let mut found: Vec<(u32, u32)> = Vec::new();
        for (w, (&h, &q)) in held.iter().zip(&self.queued).enumerate() {
            let mut bits = h & q;
            while bits != 0 {
                let c = (w * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                found.push((self.pos[c as usize], c));
            }
        }
        if found.len() > k && k > 0 {
            found.select_nth_unstable(k - 1);
            found.truncate(k);
        }
        found.sort_unstable();
        found.into_iter().map(|(_, c)| c).collect()
    }

    /// Heap bytes held, for memory budgeting.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.order.capacity() * 4
            + self.pos.capacity() * 4
            + self.avail.capacity() * 2
            + self.bounds.capacity() * 4
            + self.queued.capacity() * 8
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let n = self.n();
        assert_eq!(self.bounds[0], 0);
        assert_eq!(*self.bounds.last().unwrap(), n);
        assert!(self.bounds.windows(2).all(|w| w[0] <= w[1]));
        for (i, &c) in self.order.iter().enumerate() {
            assert_eq!(self.pos[c as usize], i as u32);
            let b = self.bounds.partition_point(|&s| s <= i as u32) - 1;
            assert_eq!(b, self.bucket_of(c), "chunk {c} at {i} in bucket {b}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_keep_buckets_sorted() {
        let wanted = vec![true; 200];
        let mut o = RarityOrder::new(200, &wanted, 7, 8);
        o.check();
        for c in 0..200 {
            for _ in 0..(c % 5) {
                o.inc(c);
            }
        }
        o.check();
        o.inc_all();
        o.check();
        for c in (0..200).step_by(3) {
            o.park(c);
        }
        o.check();
        o.dec_all();
        o.check();
        for c in 0..200 {
            if c % 5 == 0 {
                o.inc(c);
            }
            o.dec(c);
        }
        o.check();
        for c in (0..200).step_by(3) {
            o.unpark(c);
        }
        o.check();
        // Counts are now c % 5 + (c % 5 == 0) - 1: zero for c % 5 in {0, 1}.
        assert_eq!(o.unavailable().len(), 80);
        assert!(o.unavailable().iter().all(|c| c % 5 <= 1));
    }

    #[test]
    fn rarest_first_and_bitset_agree() {
        let wanted = vec![true; 300];
        let mut o = RarityOrder::new(300, &wanted, 1, 16);
        let mut held = vec![0u64; 5];
        for c in 0..300u32 {
            let k = 1 + (c * 7919) % 6;
            for _ in 0..k {
                o.inc(c);
            }
            if c % 3 == 0 {
                held[c as usize / 64] |= 1 << (c % 64);
            }
        }
        let is_held = |c: u32| held[c as usize / 64] & (1 << (c % 64)) != 0;
        let Scan::Found(a) = o.scan(1, usize::MAX, is_held) else {
            panic!("nothing found")
        };
        assert_eq!(o.rarest_in(&held, 1), vec![a]);
        let top = o.rarest_in(&held, 10);
        assert_eq!(top.len(), 10);
        assert!(
            top.windows(2)
                .all(|w| o.pos[w[0] as usize] < o.pos[w[1] as usize])
        );
        let min = (0..300)
            .filter(|&c| is_held(c))
            .map(|c| o.avail(c))
            .min()
            .unwrap();
        assert_eq!(o.avail(a), min);
        assert_eq!(o.scan(1, 2, |_| false), Scan::Capped);
    }

    #[test]
    fn seeds_change_the_first_pick() {
        let wanted = vec![true; 4096];
        let firsts: std::collections::HashSet<u32> = (0..8)
            .map(|seed| {
                let mut o = RarityOrder::new(4096, &wanted, seed, 64);
                o.inc_all();
                o.first_available(1)[0]
            })
            .collect();
        assert!(firsts.len() >= 6, "{firsts:?}");
    }
}
