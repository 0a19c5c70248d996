//! Site-aware fetching: which chunks may come over the slow link between sites, and which host
//! of a site fetches them.
//!
//! Hosts of one site share a fast LAN; sites are joined by slower, often paid-for links. A
//! downloader that treats every holder alike pulls each chunk across the WAN once per host. With
//! peers labelled [`Locality::Local`] or [`Locality::Remote`], the downloader instead:
//!
//! - fetches a chunk that some *healthy* local peer holds only from local peers (healthy: no
//!   failed request pending a retry, so a dead neighbour's stale bitmap does not hold chunks
//!   hostage; and not pausing after a `Busy` refusal, so a publisher whose upload slots are
//!   all taken by other sites does not starve its own: for that pause, the back-off base, the
//!   unit's owner may fetch across sites);
//! - fetches a chunk that no local peer holds (*remote-only*) over the WAN only if it *owns* the
//!   chunk's unit of [`OWNER_UNIT`] consecutive chunks. Owners are chosen per unit by
//!   rendezvous (highest random weight) hashing over the site's *members*: this downloader and
//!   the local peers that are pulling too (partial holders) and announced new chunks within
//!   `site_patience`. Every member computes the same owner from the same view without talking
//!   to the others, and when a member comes or goes only its own units move. The others wait
//!   for the owner's copy to appear in its announcements and then fetch it over the LAN;
//! - falls back by itself: a member that announces nothing new for `site_patience` (killed,
//!   cut off, or simply done with everything it could get) drops out, and its units fall to
//!   the remaining members; with no local member left, this downloader owns everything;
//! - sends endgame duplicates to remote peers only when it has no local peer at all.
//!
//! Peer ids are hashed with a fixed function ([`stable_hash`]), not the process-random
//! `RandomState`, so that all members agree; hosts whose builds hash an id differently only
//! fetch some units twice. Nothing changes for a downloader that is never told about
//! localities: every peer is then local.

use std::hash::{Hash, Hasher};

use super::order::splitmix64;

/// Where a peer sits relative to this downloader's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locality {
    /// The same site: a cheap, fast link. Every peer is local until said otherwise.
    #[default]
    Local,
    /// Another site, across a slow or costly link; also the safe guess for a peer whose site
    /// is unknown.
    Remote,
}

/// Consecutive chunks owned as one: requests then still cover contiguous ranges, and 16 ×
/// 64 KiB is small enough that a few hundred units spread evenly over a site's hosts.
pub(crate) const OWNER_UNIT: u32 = 16;

/// A hash of `id` that is the same in every process (FNV-1a, then mixed), unlike `RandomState`.
pub(crate) fn stable_hash<P: Hash>(id: &P) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    id.hash(&mut h);
    let mut state = h.0;
    splitmix64(&mut state)
}

/// A peer id's rendezvous key among its site's members, the same in every process: what
/// [`super::Downloader::set_site_roster`] takes.
pub fn site_key<P: Hash>(id: &P) -> u64 {
    stable_hash(id)
}

/// The FNV-1a hasher: tiny, deterministic, good enough to seed the rendezvous weights.
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Rendezvous weight of member `key` for unit `unit`.
fn weight(key: u64, unit: u32) -> u64 {
    let mut state = key ^ u64::from(unit).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    splitmix64(&mut state)
}

/// The chunks (of `n`) in units that `me` wins against every key in `others`, as a bitset.
pub(crate) fn owned_chunks(n: u32, me: u64, others: &[u64]) -> Vec<u64> {
    let mut bits = vec![0u64; (n as usize).div_ceil(64)];
    for unit in 0..n.div_ceil(OWNER_UNIT) {
        let mine = weight(me, unit);
        // Ties (equal keys: a peer with our own id) go to the larger key, then to us.
        if others
            .iter()
            .all(|&k| (weight(k, unit), k) < (mine, me) || k == me)
        {
            let start = unit * OWNER_UNIT;
            for c in start..(start + OWNER_UNIT).min(n) {
                bits[c as usize / 64] |= 1 << (c % 64);
            }
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(bits: &[u64]) -> u32 {
        bits.iter().map(|w| w.count_ones()).sum()
    }

    #[test]
    fn members_split_the_units_and_a_departure_moves_only_its_own() {
        let n = 4096;
        let keys: Vec<u64> = (0..8u32).map(|i| stable_hash(&i)).collect();
        let owned: Vec<Vec<u64>> = keys.iter().map(|&me| owned_chunks(n, me, &keys)).collect();
        // Every chunk has exactly one owner.
        for c in 0..n {
            let owners = owned
                .iter()
                .filter(|b| b[c as usize / 64] & (1 << (c % 64)) != 0)
                .count();
            assert_eq!(owners, 1, "chunk {c}");
        }
        // Roughly evenly: 256 units over 8 members.
        for b in &owned {
            let share = count(b);
            assert!((256..=1024).contains(&share), "{share}");
        }
        // Member 7 leaves: the others keep what they had and split its units.
        let rest = &keys[..7];
        for (i, &me) in rest.iter().enumerate() {
            let now = owned_chunks(n, me, rest);
            for (w, (&before, &after)) in owned[i].iter().zip(&now).enumerate() {
                assert_eq!(before & !after, 0, "member {i} lost chunks in word {w}");
                assert_eq!(
                    after & !before & !owned[7][w],
                    0,
                    "member {i} took a non-7 chunk"
                );
            }
        }
    }

    #[test]
    fn alone_owns_everything_and_hash_is_stable() {
        let me = stable_hash(&42u32);
        assert_eq!(count(&owned_chunks(100, me, &[])), 100);
        assert_eq!(count(&owned_chunks(100, me, &[me])), 100);
        assert_eq!(stable_hash(&42u32), me);
        assert_ne!(stable_hash(&43u32), me);
    }
}
