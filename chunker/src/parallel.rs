//! Chunking one file on several threads, with exactly the sequential chunk boundaries.
//!
//! A single FastCDC scan (~1.5 GB/s) is slower than the disk, so [`chunk_file`] cuts the file
//! into fixed segments and has worker threads chunk *and* hash each segment as if a chunk began
//! at the segment's first byte. The caller's thread then stitches: it carries the sequential
//! chain of boundaries into each segment and, as soon as the chain lands on a boundary the
//! segment's worker also found, takes the worker's chunks from there on. That is exact because a
//! cut depends only on the bytes from the chunk start to `start + max`: two chains that share one
//! boundary share every later one. Until they meet (usually within a chunk or two) the stitcher
//! cuts and hashes sequentially itself, so a segment whose chunker never meets the chain still
//! gives the right answer, only slower.
//!
//! Memory is bounded: each worker owns two segment buffers of `SEGMENT_LEN + max` bytes that
//! travel to the stitcher and back through bounded channels.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use vwnet_protocol::ids::ChunkHash;

use crate::chunking::{ChunkError, ChunkSlice, ChunkerConfig, Cutter, Hasher};

/// Bytes per segment. Each worker holds two buffers of this plus `max`; larger segments waste
/// less work on resynchronisation, smaller ones use less memory (see `BENCHMARKS.md`).
pub const SEGMENT_LEN: usize = 4 << 20;

/// Buffers each worker cycles through: one being filled while the stitcher consumes the other.
const BUFFERS_PER_WORKER: usize = 2;

/// One chunk a worker found and hashed.
#[derive(Debug, Clone, Copy)]
struct ChunkMeta {
    offset: u64,
    len: usize,
    hash: ChunkHash,
    is_zero: bool,
}

/// A segment's bytes and the chunks its worker found, starting at `start`.
#[derive(Debug, Default)]
struct Segment {
    /// Offset of `data[0]` in the file; also where the worker's first chunk starts.
    start: u64,
    /// First offset of the next segment; the worker's last chunk starts before it.
    end: u64,
    /// File bytes `start .. min(end + max, file_len)`; the vector may be longer (reused).
    data: Vec<u8>,
    /// Valid prefix of `data`.
    data_len: usize,
    /// The worker's chunks, in order, each starting in `start..end`.
    chunks: Vec<ChunkMeta>,
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        &self.data[..self.data_len]
    }
}

/// Chunks `file` on `threads` worker threads (at least one), calling `f` for each chunk in file
/// order on the caller's thread.
///
/// The chunks are exactly those [`chunk_reader`](crate::chunking::chunk_reader) yields for the
/// same bytes. The file's length is read once at the start; a file that shrinks while being
/// chunked gives an I/O error, bytes appended meanwhile are ignored. Memory: about
/// `threads * 2 * (SEGMENT_LEN + max)` bytes.
pub fn chunk_file<E>(
    file: &File,
    cfg: &ChunkerConfig,
    threads: usize,
    f: impl FnMut(ChunkSlice<'_>) -> Result<(), E>,
) -> Result<(), ChunkError<E>> {
    cfg.validate()?;
    // A segment shorter than a window would only add resynchronisation work.
    let segment_len = SEGMENT_LEN.max(cfg.max as usize);
    chunk_file_with(file, cfg, threads, segment_len, f)
}

/// [`chunk_file`] with an explicit segment length (any length ≥ 1 is correct; tests vary it).
pub(crate) fn chunk_file_with<E>(
    file: &File,
    cfg: &ChunkerConfig,
    threads: usize,
    segment_len: usize,
    mut f: impl FnMut(ChunkSlice<'_>) -> Result<(), E>,
) -> Result<(), ChunkError<E>> {
    cfg.validate()?;
    let file_len = file.metadata().map_err(ChunkError::Io)?.len();
    if file_len == 0 {
        return Ok(());
    }
    let segment_len = segment_len.max(1) as u64;
    let segments = file_len.div_ceil(segment_len);
    let threads = threads.clamp(1, usize::try_from(segments).unwrap_or(usize::MAX));
    let plan = Plan {
        file,
        file_len,
        segment_len,
        segments,
        threads,
        cfg: *cfg,
    };

    std::thread::scope(|scope| {
        let mut results = Vec::with_capacity(threads);
        let mut returns = Vec::with_capacity(threads);
        for worker in 0..threads {
            let (result_tx, result_rx) = sync_channel(1);
            let (return_tx, return_rx) = sync_channel(BUFFERS_PER_WORKER);
            for _ in 0..BUFFERS_PER_WORKER {
                // Cannot fail: the channel has room for exactly these and its receiver is alive.
                let _ = return_tx.send(Segment::default());
            }
            let plan = &plan;
            scope.spawn(move || plan.work(worker, &return_rx, &result_tx));
            results.push(result_rx);
            returns.push(return_tx);
        }
        // Dropping the channel ends when this returns (early, on error) stops every worker at
        // its next send or receive; the scope then joins them.
        plan.stitch(&results, &returns, &mut f)
    })
}

/// What every thread needs to know about the job.
struct Plan<'a> {
    file: &'a File,
    file_len: u64,
    segment_len: u64,
    segments: u64,
    threads: usize,
    cfg: ChunkerConfig,
}

impl Plan<'_> {
    /// Worker `worker` handles segments `worker, worker + threads, ...`, so the stitcher knows
    /// which channel holds the next segment and results stay in order without a reorder buffer.
    fn work(
        &self,
        worker: usize,
        buffers: &Receiver<Segment>,
        results: &SyncSender<io::Result<Segment>>,
    ) {
        let mut cutter = Cutter::new(&self.cfg);
        let mut hasher = Hasher::default();
        let max = cutter.max() as u64;
        let mut index = worker as u64;
        while index < self.segments {
            let Ok(mut seg) = buffers.recv() else { return };
            seg.start = index * self.segment_len;
            seg.end = (seg.start + self.segment_len).min(self.file_len);
            let data_end = (seg.end + max).min(self.file_len);
            let result = self.fill(&mut seg, data_end).map(|()| {
                seg.chunks.clear();
                let mut pos = seg.start;
                while pos < seg.end {
                    let from = (pos - seg.start) as usize;
                    let to = ((pos + max).min(self.file_len) - seg.start) as usize;
                    let len = cutter.cut(&seg.data[from..to]);
                    let (hash, is_zero) = hasher.hash(&seg.data[from..from + len]);
                    seg.chunks.push(ChunkMeta {
                        offset: pos,
                        len,
                        hash,
                        is_zero,
                    });
                    pos += len as u64;
                }
                seg
            });
            let failed = result.is_err();
            // A closed channel means the stitcher stopped; after an error there is nothing to add.
            if results.send(result).is_err() || failed {
                return;
            }
            index += self.threads as u64;
        }
    }

    /// Reads `seg.start .. data_end` into the segment's buffer.
    fn fill(&self, seg: &mut Segment, data_end: u64) -> io::Result<()> {
        let need = usize::try_from(data_end - seg.start).map_err(io::Error::other)?;
        if seg.data.len() < need {
            seg.data.resize(need, 0);
        }
        seg.data_len = need;
        self.file.read_exact_at(&mut seg.data[..need], seg.start)
    }

    /// Consumes segments in file order and emits the sequential chain of chunks.
    fn stitch<E>(
        &self,
        results: &[Receiver<io::Result<Segment>>],
        returns: &[SyncSender<Segment>],
        f: &mut impl FnMut(ChunkSlice<'_>) -> Result<(), E>,
    ) -> Result<(), ChunkError<E>> {
        let mut cutter = Cutter::new(&self.cfg);
        let mut hasher = Hasher::default();
        let max = cutter.max() as u64;
        // Every byte before `chain` has been emitted; `chain` is a sequential boundary.
        let mut chain = 0u64;
        for index in 0..self.segments {
            let worker = (index % self.threads as u64) as usize;
            let seg = match results[worker].recv() {
                Ok(Ok(seg)) => seg,
                Ok(Err(e)) => return Err(ChunkError::Io(e)),
                // Only a panicking worker drops its sender early; the scope re-raises the panic.
                Err(_) => return Err(ChunkError::Io(io::Error::other("chunking worker stopped"))),
            };
            // The previous segment left `chain >= seg.start`; a chunk longer than a (short)
            // segment may even have carried it past this one.
            while chain < seg.end {
                if let Ok(i) = seg.chunks.binary_search_by_key(&chain, |c| c.offset) {
                    for c in &seg.chunks[i..] {
                        let from = (c.offset - seg.start) as usize;
                        let data = &seg.bytes()[from..from + c.len];
                        let slice = ChunkSlice {
                            offset: c.offset,
                            data,
                            hash: c.hash,
                            is_zero: c.is_zero,
                        };
                        f(slice).map_err(ChunkError::Callback)?;
                        chain = c.offset + c.len as u64;
                    }
                    break;
                }
                // Not in step with the worker yet: cut this chunk here. `chain < seg.end`, so its
                // whole window lies in the segment's buffer.
                let from = (chain - seg.start) as usize;
                let to = ((chain + max).min(self.file_len) - seg.start) as usize;
                let len = cutter.cut(&seg.bytes()[from..to]);
                let data = &seg.bytes()[from..from + len];
                let (hash, is_zero) = hasher.hash(data);
                f(ChunkSlice {
                    offset: chain,
                    data,
                    hash,
                    is_zero,
                })
                .map_err(ChunkError::Callback)?;
                chain += len as u64;
            }
            // The worker may already have finished; a failed send only means it has no more work.
            let _ = returns[worker].send(seg);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::tests::{Record, SMALL, pseudo_random, reference, sequential};
    use proptest::prelude::*;
    use std::io::Write;

    fn temp_file(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(data).expect("write temp file");
        file
    }

    fn parallel(file: &File, cfg: &ChunkerConfig, threads: usize, segment: usize) -> Vec<Record> {
        let mut out = Vec::new();
        let res = chunk_file_with(file, cfg, threads, segment, |c| {
            assert_eq!(
                c.hash,
                ChunkHash::from_bytes(*blake3::hash(c.data).as_bytes())
            );
            out.push((c.offset, c.data.len(), c.hash, c.is_zero));
            Ok::<(), ()>(())
        });
        assert!(res.is_ok(), "chunk_file failed: {res:?}");
        out
    }

    #[test]
    fn boundary_sizes_match_sequential() {
        for cfg in [SMALL, ChunkerConfig::default()] {
            let (min, avg, max) = (cfg.min as usize, cfg.avg as usize, cfg.max as usize);
            for len in [
                0,
                1,
                min - 1,
                min,
                min + 1,
                avg,
                max - 1,
                max,
                max + 1,
                5 * max + 3,
            ] {
                for zero_runs in [false, true] {
                    let data = pseudo_random(len, len as u64 ^ 0x5eed, zero_runs);
                    let file = temp_file(&data);
                    let want = reference(&data, &cfg);
                    for (threads, segment) in [
                        (1, max),
                        (2, max),
                        (3, min + 1),
                        (2, max / 64 + 1),
                        (2, SEGMENT_LEN),
                    ] {
                        let got = parallel(&file, &cfg, threads, segment);
                        assert_eq!(got, want, "len {len} threads {threads} segment {segment}");
                    }
                }
            }
        }
    }

    #[test]
    fn public_entry_point_matches_sequential() {
        let cfg = ChunkerConfig::default();
        let data = pseudo_random(3 * SEGMENT_LEN + 12345, 42, true);
        let file = temp_file(&data);
        let mut got = Vec::new();
        chunk_file(&file, &cfg, 2, |c| {
            got.push((c.offset, c.data.len(), c.hash, c.is_zero));
            Ok::<(), ()>(())
        })
        .expect("chunk_file");
        assert_eq!(got, sequential(&data, &cfg));
    }

    #[test]
    fn zero_runs_longer_than_segments_stay_exact() {
        // In a zero run every chunk is `max` long, so a worker that starts out of phase with the
        // chain never meets it there: the stitcher must carry the chain through on its own.
        let mut data = pseudo_random(100_000, 5, false);
        data.extend(std::iter::repeat_n(0u8, 300_000));
        data.extend(pseudo_random(100_000, 6, false));
        let file = temp_file(&data);
        assert_eq!(parallel(&file, &SMALL, 2, 10_001), reference(&data, &SMALL));
    }

    #[test]
    fn callback_error_stops_all_threads() {
        let data = pseudo_random(2_000_000, 8, false);
        let file = temp_file(&data);
        let mut calls = 0;
        let res = chunk_file_with(&file, &SMALL, 2, 50_000, |_| {
            calls += 1;
            if calls == 100 { Err("stop") } else { Ok(()) }
        });
        assert!(matches!(res, Err(ChunkError::Callback("stop"))));
        assert_eq!(calls, 100);
    }

    #[test]
    fn invalid_config_is_rejected() {
        let file = temp_file(b"abc");
        let cfg = ChunkerConfig {
            min: 4096,
            avg: 1024,
            max: 8192,
        };
        let res = chunk_file(&file, &cfg, 2, |_| Ok::<(), ()>(()));
        assert!(matches!(res, Err(ChunkError::Config(_))));
    }

    #[test]
    fn unreadable_file_is_an_io_error() {
        // A write-only handle reports its length but cannot be read.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w");
        std::fs::write(&path, vec![1u8; 100_000]).expect("write");
        let file = File::options().write(true).open(&path).expect("open");
        let res = chunk_file(&file, &SMALL, 2, |_| Ok::<(), ()>(()));
        assert!(matches!(res, Err(ChunkError::Io(_))), "{res:?}");
    }

    /// Multi-GiB sparse file: opt in with `cargo test -p vwnet-chunker -- --ignored`.
    #[test]
    #[ignore = "reads 5 GiB; run with --ignored"]
    fn multi_gib_sparse_file_matches_sequential() {
        let cfg = ChunkerConfig::default();
        let len = 5u64 << 30;
        let file = tempfile::tempfile().expect("temp file");
        file.set_len(len).expect("set_len");
        // Some data inside the holes so boundaries are not all max-sized, one across 4 GiB.
        for (i, at) in [1u64 << 20, (4 << 30) - 777, len - 100_000]
            .into_iter()
            .enumerate()
        {
            file.write_all_at(
                &pseudo_random(150_000.min((len - at) as usize), i as u64, false),
                at,
            )
            .expect("write");
        }
        let mut seq = Vec::new();
        crate::chunking::chunk_reader(&file, &cfg, |c| {
            seq.push((c.offset, c.data.len(), c.hash, c.is_zero));
            Ok::<(), ()>(())
        })
        .expect("sequential");
        let par = parallel(&file, &cfg, 2, SEGMENT_LEN);
        assert_eq!(par.len(), seq.len());
        assert!(par == seq, "parallel and sequential chunks differ");
        assert_eq!(par.iter().map(|r| r.1 as u64).sum::<u64>(), len);
        assert!(par.iter().filter(|r| r.3).count() > 1000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn parallel_matches_sequential(
            len in 0usize..200_000,
            seed in any::<u64>(),
            zero_runs in any::<bool>(),
            threads in 1usize..5,
            segment in 1usize..40_000,
        ) {
            let data = pseudo_random(len, seed, zero_runs);
            let file = temp_file(&data);
            prop_assert_eq!(parallel(&file, &SMALL, threads, segment), sequential(&data, &SMALL));
        }
    }
}
