//! Micro-benchmark of the chunk downloader: how many chunk picks per second it makes on a 4 GiB
//! image of 64 KiB chunks (65,536 chunks), and how much state it keeps.
//!
//! Run: `cargo run --release -p vwnet-node --example downloader_bench`
//!
//! Responses are instantaneous, so the figures measure the scheduler alone: every requested
//! chunk is reported verified at once, and partial peers gain chunks as the pull proceeds.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use vwnet_node::downloader::{
    Action, ChunkIdx, ChunkOutcome, ChunkTable, Config, Downloader, Holds,
};
use vwnet_protocol::ids::ChunkHash;

const CHUNKS: u32 = 65_536;
const CHUNK_LEN: u32 = 64 * 1024;

fn table() -> Arc<ChunkTable> {
    let chunks = (0..CHUNKS).map(|i| {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        (ChunkHash::from_bytes(b), CHUNK_LEN)
    });
    Arc::new(ChunkTable::new(chunks).expect("distinct hashes"))
}

/// A cheap deterministic generator for peer holdings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

struct Outcome {
    picks: u64,
    requests: u64,
    elapsed: Duration,
    heap_bytes: usize,
}

/// Pulls the whole table from `full` complete peers and `partial` peers that each start with
/// a random `share` of the chunks and gain `gain` more after every response.
fn run(cat: &Arc<ChunkTable>, full: u32, partial: u32, share: f64, gain: u32) -> Outcome {
    let config = Config::builder().seed(42).build().expect("default config");
    let mut dl: Downloader<u32> = Downloader::new(config, cat.clone(), []).expect("downloader");
    let mut rng = Rng(7);
    let now = Duration::ZERO;
    for p in 0..full {
        dl.add_peer(now, p, Holds::Everything).expect("peer");
    }
    for p in full..full + partial {
        dl.add_peer(now, p, Holds::Nothing).expect("peer");
        let threshold = (share * u64::MAX as f64) as u64;
        let held: Vec<ChunkIdx> = (0..CHUNKS)
            .filter(|_| rng.next() < threshold)
            .map(ChunkIdx)
            .collect();
        dl.peer_has(now, &p, held);
    }
    let heap_bytes = dl.heap_bytes();
    let (mut picks, mut requests) = (0u64, 0u64);
    let mut pending = Vec::new();
    let start = Instant::now();
    loop {
        while let Some(action) = dl.poll(now) {
            match action {
                Action::Request {
                    peer, id, chunks, ..
                } => {
                    picks += chunks.len() as u64;
                    requests += 1;
                    pending.push((peer, id, chunks));
                }
                Action::Complete => {
                    return Outcome {
                        picks,
                        requests,
                        elapsed: start.elapsed(),
                        heap_bytes,
                    };
                }
                Action::Cancel { id, .. } => pending.retain(|(_, i, _)| *i != id),
                Action::Stalled { unavailable } => {
                    // Nobody holds these yet: let one partial peer acquire them.
                    dl.peer_has(now, &full, unavailable);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if pending.is_empty() {
            panic!("stuck with {} chunks done", dl.stats().chunks_done);
        }
        for (peer, id, chunks) in pending.drain(..) {
            dl.on_response(
                now,
                &peer,
                id,
                chunks.into_iter().map(|c| (c, ChunkOutcome::Verified)),
            );
            if partial > 0 && gain > 0 {
                let p = full + (rng.next() % u64::from(partial)) as u32;
                let gained: Vec<ChunkIdx> = (0..gain)
                    .map(|_| ChunkIdx((rng.next() % u64::from(CHUNKS)) as u32))
                    .collect();
                dl.peer_has(now, &p, gained);
            }
        }
    }
}

fn main() {
    let cat = table();
    println!(
        "downloader micro-benchmark: {} chunks of {} KiB ({} GiB), default config",
        CHUNKS,
        CHUNK_LEN / 1024,
        (u64::from(CHUNKS) * u64::from(CHUNK_LEN)) >> 30
    );
    println!(
        "{:<44} {:>10} {:>9} {:>14} {:>12}",
        "scenario", "picks", "requests", "picks/s", "state"
    );
    let cases: [(&str, u32, u32, f64, u32); 4] = [
        ("8 full seeds", 8, 0, 0.0, 0),
        ("1 seed + 49 partial peers (50% each)", 1, 49, 0.5, 0),
        (
            "1 seed + 49 partial peers (5%, +64/response)",
            1,
            49,
            0.05,
            64,
        ),
        ("50 partial peers (20% each, +64/response)", 0, 50, 0.2, 64),
    ];
    for (name, full, partial, share, gain) in cases {
        let o = run(&cat, full, partial, share, gain);
        let rate = o.picks as f64 / o.elapsed.as_secs_f64();
        println!(
            "{:<44} {:>10} {:>9} {:>14.0} {:>9} KiB",
            name,
            o.picks,
            o.requests,
            rate,
            o.heap_bytes / 1024
        );
    }
}
