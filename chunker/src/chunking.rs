//! Content-defined chunking (FastCDC v2020) with BLAKE3 chunk names, over a streaming reader.
//!
//! The chunk boundaries of a byte stream are a pure function of its bytes and the
//! [`ChunkerConfig`]: the chunk that starts at offset `p` ends at
//! `p + cut(data[p .. min(p + max, len)])`, with `cut` the FastCDC 2020 cut-point search
//! (normalization level 1, the `fastcdc` crate's default gear table). [`chunk_reader`] walks that
//! chain sequentially; [`chunk_file`](crate::parallel::chunk_file) computes the very same chain on
//! several threads. Every chunk is named by its BLAKE3 hash and flagged when it is all zeros, so a
//! store can record a hole instead of the bytes.
//!
//! The default sizes (16/64/256 KiB) were chosen by measurement on real ext4 images; the table and
//! the command that produced it are in `BENCHMARKS.md` at the repository root.

use std::io::{self, Read};

use fastcdc::v2020;
use vwnet_protocol::ids::ChunkHash;
use vwnet_protocol::limits::MAX_CHUNK_LEN;

pub use crate::parallel::chunk_file;

/// Minimum, average and maximum chunk sizes in bytes for FastCDC.
///
/// Changing any of them changes every chunk boundary, hence every manifest: all nodes that want
/// to share chunks must use the same configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// No chunk is shorter than this, except the last chunk of an image.
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// No chunk is longer than this.
    pub max: u32,
}

impl Default for ChunkerConfig {
    /// 16/64/256 KiB: the measurements and the reasons are in `BENCHMARKS.md`.
    fn default() -> Self {
        Self {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        }
    }
}

/// Why a [`ChunkerConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A size is outside the range FastCDC v2020 (or the protocol's chunk cap) allows.
    #[error("chunker {field} size {value} is outside {lo}..={hi}")]
    OutOfRange {
        /// Which size: `min`, `avg` or `max`.
        field: &'static str,
        /// The configured value.
        value: u32,
        /// Smallest allowed value.
        lo: u32,
        /// Largest allowed value.
        hi: u32,
    },
    /// A size is odd; FastCDC's two-bytes-at-a-time scan would silently shift it by one.
    #[error("chunker {field} size {value} must be even")]
    Odd {
        /// Which size: `min`, `avg` or `max`.
        field: &'static str,
        /// The configured value.
        value: u32,
    },
    /// The sizes are not ordered `min <= avg <= max`.
    #[error("chunker sizes must satisfy min <= avg <= max, got {min}/{avg}/{max}")]
    Order {
        /// Configured minimum.
        min: u32,
        /// Configured average.
        avg: u32,
        /// Configured maximum.
        max: u32,
    },
}

/// Clamps a `usize` bound into `u32` for error reports (all bounds here are far below `u32::MAX`).
fn bound(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl ChunkerConfig {
    /// Checks the sizes against FastCDC v2020's bounds and [`MAX_CHUNK_LEN`].
    ///
    /// The `fastcdc` crate only checks these with `debug_assert!`, so an unchecked configuration
    /// would silently produce different boundaries in release builds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ranges = [
            ("min", self.min, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX),
            ("avg", self.avg, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX),
            (
                "max",
                self.max,
                v2020::MAXIMUM_MIN,
                v2020::MAXIMUM_MAX.min(MAX_CHUNK_LEN),
            ),
        ];
        for (field, value, lo, hi) in ranges {
            let (lo, hi) = (bound(lo), bound(hi));
            if value < lo || value > hi {
                return Err(ConfigError::OutOfRange {
                    field,
                    value,
                    lo,
                    hi,
                });
            }
            if value % 2 != 0 {
                return Err(ConfigError::Odd { field, value });
            }
        }
        if self.min > self.avg || self.avg > self.max {
            return Err(ConfigError::Order {
                min: self.min,
                avg: self.avg,
                max: self.max,
            });
        }
        Ok(())
    }
}

/// One chunk handed to the consumer of [`chunk_reader`] or [`chunk_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSlice<'a> {
    /// Offset of the chunk's first byte in the image.
    pub offset: u64,
    /// The chunk's bytes; valid only during the callback.
    pub data: &'a [u8],
    /// BLAKE3 hash of `data`.
    pub hash: ChunkHash,
    /// True when every byte of `data` is zero (export may write a hole).
    pub is_zero: bool,
}

/// Why chunking stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError<E> {
    /// Reading the input failed.
    #[error("reading the image failed")]
    Io(#[source] io::Error),
    /// The consumer's callback returned an error; chunking stopped at that chunk.
    #[error("the chunk consumer failed")]
    Callback(#[source] E),
    /// The configuration is invalid; nothing was read.
    #[error("invalid chunker configuration")]
    Config(#[source] ConfigError),
}

impl<E> From<ConfigError> for ChunkError<E> {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Finds cut points; one per thread, because it memoizes the cut of an all-zero window.
#[derive(Debug, Clone)]
pub(crate) struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    /// Cut of an all-zero window of exactly `max` bytes, once computed. Disk images hold long
    /// zero runs; remembering this makes them cost a zero scan instead of a gear-hash scan.
    zero_cut: Option<usize>,
}

impl Cutter {
    /// A cutter for a configuration that passed [`ChunkerConfig::validate`].
    pub(crate) fn new(cfg: &ChunkerConfig) -> Self {
        // Level 1 is what `v2020::FastCDC::new` and `StreamCDC::new` use; the tests compare
        // against `FastCDC::new`, so a mismatch here would be caught.
        let (mask_s, mask_l) = v2020::select_masks(cfg.avg as usize, v2020::Normalization::Level1);
        Self {
            min: cfg.min as usize,
            avg: cfg.avg as usize,
            max: cfg.max as usize,
            mask_s,
            mask_l,
            zero_cut: None,
        }
    }

    /// Largest window a cut looks at.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Length of the chunk that starts at `window[0]`.
    ///
    /// `window` must be the image's bytes from the chunk start to `min(start + max, image end)`:
    /// FastCDC's result depends on the window length near the end of the image, so passing a
    /// shorter window anywhere else would change the boundaries.
    pub(crate) fn cut(&mut self, window: &[u8]) -> usize {
        debug_assert!(window.len() <= self.max);
        if window.len() <= self.min {
            return window.len();
        }
        if window.len() == self.max && is_all_zero(window) {
            if let Some(len) = self.zero_cut {
                return len;
            }
            let len = self.cut_scan(window);
            self.zero_cut = Some(len);
            return len;
        }
        self.cut_scan(window)
    }

    fn cut_scan(&self, window: &[u8]) -> usize {
        let (_gear, len) = v2020::cut(
            window,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }
}

/// Names chunks; one per thread, because it memoizes the hash of the last all-zero chunk.
#[derive(Debug, Default, Clone)]
pub(crate) struct Hasher {
    /// (length, hash) of the last all-zero chunk: zero runs repeat one max-size chunk.
    zero: Option<(usize, ChunkHash)>,
}

impl Hasher {
    /// BLAKE3 hash of `data` and whether it is all zeros.
    pub(crate) fn hash(&mut self, data: &[u8]) -> (ChunkHash, bool) {
        if !is_all_zero(data) {
            return (ChunkHash::from_bytes(*blake3::hash(data).as_bytes()), false);
        }
        if let Some((len, hash)) = self.zero
            && len == data.len()
        {
            return (hash, true);
        }
        let hash = ChunkHash::from_bytes(*blake3::hash(data).as_bytes());
        self.zero = Some((data.len(), hash));
        (hash, true)
    }
}

/// True when every byte is zero; exits at the first non-zero 64-byte block.
pub(crate) fn is_all_zero(data: &[u8]) -> bool {
    // OR-folding a fixed-size block vectorizes; a plain `iter().all()` does not.
    let (blocks, rest) = data.as_chunks::<64>();
    blocks
        .iter()
        .all(|b| b.iter().fold(0u8, |acc, x| acc | x) == 0)
        && rest.iter().all(|&x| x == 0)
}

/// Buffer length for [`chunk_reader`]: at least a few windows so compaction copies stay rare.
fn reader_buffer_len(max: usize) -> usize {
    (4 * max).max(1 << 20)
}

/// Chunks everything `reader` yields, calling `f` for each chunk in order.
///
/// Memory stays bounded (one buffer of `max(4 * max, 1 MiB)` bytes) whatever the input size.
/// An empty input yields no chunks. Single-threaded: use [`chunk_file`] for files, which gives
/// the same chunks faster.
pub fn chunk_reader<R: Read, E>(
    mut reader: R,
    cfg: &ChunkerConfig,
    mut f: impl FnMut(ChunkSlice<'_>) -> Result<(), E>,
) -> Result<(), ChunkError<E>> {
    cfg.validate()?;
    let mut cutter = Cutter::new(cfg);
    let mut hasher = Hasher::default();
    let max = cutter.max();
    let cap = reader_buffer_len(max);
    let mut buf = vec![0u8; cap];
    // Unconsumed bytes are buf[start..end]; `offset` is the image offset of buf[start].
    let (mut start, mut end) = (0usize, 0usize);
    let mut eof = false;
    let mut offset = 0u64;
    loop {
        if !eof && end - start < max {
            // A cut needs a full window unless the input ends first: refill before cutting.
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            while end < cap {
                match reader.read(&mut buf[end..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ChunkError::Io(e)),
                }
            }
        }
        if start == end {
            return Ok(());
        }
        let window = &buf[start..end.min(start + max)];
        let len = cutter.cut(window);
        let data = &window[..len];
        let (hash, is_zero) = hasher.hash(data);
        f(ChunkSlice {
            offset,
            data,
            hash,
            is_zero,
        })
        .map_err(ChunkError::Callback)?;
        start += len;
        offset += len as u64;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A chunk as the tests compare it: offset, length, hash, zero flag.
    pub(crate) type Record = (u64, usize, ChunkHash, bool);

    /// Collects the chunks of `data` with [`chunk_reader`].
    pub(crate) fn sequential(data: &[u8], cfg: &ChunkerConfig) -> Vec<Record> {
        let mut out = Vec::new();
        let res = chunk_reader(data, cfg, |c| {
            out.push((c.offset, c.data.len(), c.hash, c.is_zero));
            Ok::<(), std::convert::Infallible>(())
        });
        assert!(res.is_ok(), "chunk_reader failed: {res:?}");
        out
    }

    /// The reference: the `fastcdc` crate's own in-memory chunker over the whole input.
    pub(crate) fn reference(data: &[u8], cfg: &ChunkerConfig) -> Vec<Record> {
        v2020::FastCDC::new(data, cfg.min as usize, cfg.avg as usize, cfg.max as usize)
            .map(|c| {
                let bytes = &data[c.offset..c.offset + c.length];
                let hash = ChunkHash::from_bytes(*blake3::hash(bytes).as_bytes());
                (
                    c.offset as u64,
                    c.length,
                    hash,
                    bytes.iter().all(|&b| b == 0),
                )
            })
            .collect()
    }

    /// Small sizes so that short test inputs contain many chunks.
    pub(crate) const SMALL: ChunkerConfig = ChunkerConfig {
        min: 256,
        avg: 1024,
        max: 4096,
    };

    /// Deterministic pseudo-random bytes (xorshift), mixed with zero runs when `zero_runs`.
    pub(crate) fn pseudo_random(len: usize, seed: u64, zero_runs: bool) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if zero_runs && x.is_multiple_of(7) {
                let run = (x >> 20) as usize % 20_000;
                out.extend(std::iter::repeat_n(0u8, run.min(len - out.len())));
            } else {
                let take = 8.min(len - out.len());
                out.extend_from_slice(&x.to_le_bytes()[..take]);
            }
        }
        out
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(ChunkerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let ok = ChunkerConfig::default();
        let cases = [
            (ChunkerConfig { min: 62, ..ok }, "min"),
            (
                ChunkerConfig {
                    avg: 254,
                    min: 64,
                    ..ok
                },
                "avg",
            ),
            (
                ChunkerConfig {
                    max: 1022,
                    min: 64,
                    avg: 256,
                },
                "max",
            ),
            (
                ChunkerConfig {
                    max: (MAX_CHUNK_LEN + 2) as u32,
                    ..ok
                },
                "max",
            ),
        ];
        for (cfg, field) in cases {
            assert!(
                matches!(cfg.validate(), Err(ConfigError::OutOfRange { field: f, .. }) if f == field),
                "{cfg:?}"
            );
        }
        assert!(matches!(
            ChunkerConfig { min: 16385, ..ok }.validate(),
            Err(ConfigError::Odd { field: "min", .. })
        ));
        assert!(matches!(
            ChunkerConfig {
                min: 128 * 1024,
                ..ok
            }
            .validate(),
            Err(ConfigError::Order { .. })
        ));
        assert!(matches!(
            ChunkerConfig {
                avg: 512 * 1024,
                ..ok
            }
            .validate(),
            Err(ConfigError::Order { .. })
        ));
        // The protocol cap itself is allowed.
        let at_cap = ChunkerConfig {
            min: 64,
            avg: 256 * 1024,
            max: MAX_CHUNK_LEN as u32,
        };
        assert_eq!(at_cap.validate(), Ok(()));
    }

    #[test]
    fn invalid_config_reads_nothing() {
        let cfg = ChunkerConfig {
            min: 3,
            avg: 4,
            max: 5,
        };
        let res = chunk_reader(&[1u8; 10][..], &cfg, |_| Ok::<(), ()>(()));
        assert!(matches!(res, Err(ChunkError::Config(_))));
    }

    #[test]
    fn boundary_sizes_match_reference() {
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
                3 * max + 17,
            ] {
                for zero_runs in [false, true] {
                    let data = pseudo_random(len, len as u64 + 7, zero_runs);
                    let got = sequential(&data, &cfg);
                    assert_eq!(got, reference(&data, &cfg), "len {len} cfg {cfg:?}");
                    let total: usize = got.iter().map(|r| r.1).sum();
                    assert_eq!(total, len);
                    assert!(got.iter().all(|r| r.1 <= max && r.1 > 0));
                }
                let zeros = vec![0u8; len];
                let got = sequential(&zeros, &cfg);
                assert_eq!(got, reference(&zeros, &cfg), "zeros len {len}");
                assert!(got.iter().all(|r| r.3));
            }
        }
    }

    #[test]
    fn callback_error_stops_chunking() {
        let data = pseudo_random(100_000, 3, false);
        let mut calls = 0;
        let res = chunk_reader(&data[..], &SMALL, |_| {
            calls += 1;
            if calls == 3 { Err("full") } else { Ok(()) }
        });
        assert!(matches!(res, Err(ChunkError::Callback("full"))));
        assert_eq!(calls, 3);
    }

    #[test]
    fn read_error_is_reported() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk gone"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let res = chunk_reader(Failing(50_000), &SMALL, |_| Ok::<(), ()>(()));
        assert!(matches!(res, Err(ChunkError::Io(e)) if e.to_string() == "disk gone"));
    }

    /// A reader that returns at most `step` bytes per call, as pipes do.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn insertion_changes_only_nearby_chunks() {
        let cfg = ChunkerConfig::default();
        let a = pseudo_random(8 << 20, 11, false);
        let mut b = a.clone();
        let at = 3 << 20;
        b.splice(at..at, pseudo_random(1024, 99, false));
        let ha: std::collections::HashSet<_> = sequential(&a, &cfg).iter().map(|r| r.2).collect();
        let new = sequential(&b, &cfg)
            .iter()
            .filter(|r| !ha.contains(&r.2))
            .count();
        assert!(new <= 3, "{new} new chunks after a 1 KiB insertion");
    }

    proptest! {
        #[test]
        fn reader_matches_reference(
            len in 0usize..60_000,
            seed in any::<u64>(),
            zero_runs in any::<bool>(),
            step in 1usize..10_000,
        ) {
            let data = pseudo_random(len, seed, zero_runs);
            let mut got = Vec::new();
            chunk_reader(Trickle(&data, step), &SMALL, |c| {
                got.push((c.offset, c.data.len(), c.hash, c.is_zero));
                Ok::<(), ()>(())
            }).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(got, reference(&data, &SMALL));
        }
    }
}
