//! Chunking throughput and dedup between files, for the tables in `BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p vwnet-chunker --example cdc_stats -- \
//!     [--avg BYTES] [--threads N | --sequential] [--repeat N] FILE...
//! ```
//!
//! Chunks each FILE in turn with min = avg/4, max = avg*4 (default avg: the crate default) and
//! prints one tab-separated line per file: size, chunk count, zero bytes, the chunks not seen in
//! an earlier FILE of the same run, the bytes whose chunk was seen in an earlier FILE (dedup
//! against earlier versions; also as a share of the non-zero bytes, since a store keeps zero
//! chunks as holes anyway), and the chunking throughput (best of `--repeat` runs; the callback
//! only records hashes) per wall second and per CPU second of the whole process (robust when
//! other jobs share the cores).

use std::collections::HashSet;
use std::error::Error;
use std::fs::File;
use std::time::Instant;

use vwnet_chunker::chunking::{ChunkerConfig, chunk_file, chunk_reader};
use vwnet_protocol::ids::ChunkHash;

struct Args {
    cfg: ChunkerConfig,
    threads: usize,
    sequential: bool,
    repeat: usize,
    files: Vec<String>,
}

fn parse() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        cfg: ChunkerConfig::default(),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        sequential: false,
        repeat: 1,
        files: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--avg" => {
                let avg: u32 = it.next().ok_or("--avg needs a value")?.parse()?;
                args.cfg = ChunkerConfig {
                    min: avg / 4,
                    avg,
                    max: avg * 4,
                };
            }
            "--threads" => args.threads = it.next().ok_or("--threads needs a value")?.parse()?,
            "--repeat" => args.repeat = it.next().ok_or("--repeat needs a value")?.parse()?,
            "--sequential" => args.sequential = true,
            _ => args.files.push(a),
        }
    }
    args.cfg.validate()?;
    if args.files.is_empty() {
        return Err(
            "usage: cdc_stats [--avg B] [--threads N | --sequential] [--repeat N] FILE...".into(),
        );
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse()?;
    let mut seen: HashSet<ChunkHash> = HashSet::new();
    println!(
        "file\tavg\tmode\tsize\tchunks\tzero_bytes\tnew_chunks\tseen_bytes\tseen_pct\tseen_data_pct\tMB/s\tMB/cpu_s"
    );
    for path in &args.files {
        let file = File::open(path)?;
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        let mut chunks: Vec<(ChunkHash, usize, bool)> = Vec::new();
        for _ in 0..args.repeat.max(1) {
            chunks.clear();
            let started = Instant::now();
            let cpu_started = cpu_seconds();
            let record = |c: vwnet_chunker::chunking::ChunkSlice<'_>| {
                chunks.push((c.hash, c.data.len(), c.is_zero));
                Ok::<(), std::convert::Infallible>(())
            };
            if args.sequential {
                chunk_reader(&file, &args.cfg, record)?;
                // chunk_reader consumed the shared file position; rewind for the next repeat.
                std::io::Seek::rewind(&mut &file)?;
            } else {
                chunk_file(&file, &args.cfg, args.threads, record)?;
            }
            best = best.min(started.elapsed().as_secs_f64());
            best_cpu = best_cpu.min(cpu_seconds() - cpu_started);
        }
        let size: usize = chunks.iter().map(|c| c.1).sum();
        let zero: usize = chunks.iter().filter(|c| c.2).map(|c| c.1).sum();
        let mut seen_bytes = 0usize;
        let mut seen_data = 0usize;
        let mut new_chunks = 0usize;
        let mut this_file = HashSet::new();
        for (hash, len, is_zero) in &chunks {
            if seen.contains(hash) {
                seen_bytes += len;
                if !is_zero {
                    seen_data += len;
                }
            } else {
                new_chunks += 1;
            }
            this_file.insert(*hash);
        }
        seen.extend(this_file);
        let mode = if args.sequential {
            "seq".to_string()
        } else {
            format!("{}t", args.threads)
        };
        println!(
            "{path}\t{}\t{mode}\t{size}\t{}\t{zero}\t{new_chunks}\t{seen_bytes}\t{:.1}\t{:.1}\t{:.0}\t{:.0}",
            args.cfg.avg,
            chunks.len(),
            100.0 * seen_bytes as f64 / size.max(1) as f64,
            100.0 * seen_data as f64 / (size - zero).max(1) as f64,
            size as f64 / best / 1e6,
            size as f64 / best_cpu / 1e6,
        );
    }
    Ok(())
}

/// User + system CPU seconds of this process (all threads) from `/proc/self/stat`, so that
/// throughput can be judged on a machine that other jobs keep busy. 0 where unavailable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Linux reports these in USER_HZ, which is 100 on every architecture Rust supports there.
    (ticks(11) + ticks(12)) / 100.0
}
