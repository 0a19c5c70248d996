//! Counters a downloader keeps for progress bars, `--json` summaries and metrics.

/// Totals over one download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Distinct chunks in the table that were not held locally at the start.
    pub chunks_wanted: u64,
    /// Their total length.
    pub bytes_wanted: u64,
    /// Distinct chunks already held locally at the start.
    pub chunks_local: u64,
    /// Their total length.
    pub bytes_local: u64,
    /// Wanted chunks received and verified.
    pub chunks_done: u64,
    /// Their total length.
    pub bytes_done: u64,
    /// Chunks that failed hash verification.
    pub chunks_rejected: u64,
    /// Chunks a peer reported missing although it had been counted as a holder.
    pub chunks_missing: u64,
    /// Verified chunks that arrived after another copy had completed (endgame or late replies).
    pub duplicate_chunks: u64,
    /// Their total length: bytes wasted.
    pub duplicate_bytes: u64,
    /// Chunks in responses that were not asked for or lie outside the table.
    pub unexpected_chunks: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Of those, endgame duplicates.
    pub endgame_requests: u64,
    /// Requests abandoned with [`Action::Cancel`](super::Action::Cancel).
    pub cancels: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests that failed otherwise.
    pub failures: u64,
    /// Requests refused because every upload slot of the peer was taken.
    pub busy: u64,
    /// Peers banned for corrupt chunks.
    pub bans: u64,
}

impl Stats {
    /// Fraction of the wanted bytes received, in `0.0..=1.0` (1.0 when nothing was wanted).
    pub fn progress(&self) -> f64 {
        if self.bytes_wanted == 0 {
            1.0
        } else {
            self.bytes_done as f64 / self.bytes_wanted as f64
        }
    }
}

/// Counters for one peer; kept after the peer leaves so that a summary covers every peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Bytes of verified chunks received from the peer, duplicates included.
    pub bytes_received: u64,
    /// Verified chunks received from the peer, duplicates included.
    pub chunks_received: u64,
    /// Chunks from the peer that failed verification.
    pub chunks_rejected: u64,
    /// Chunks the peer reported missing.
    pub chunks_missing: u64,
    /// Requests sent to the peer.
    pub requests: u64,
    /// Requests to the peer that timed out.
    pub timeouts: u64,
    /// Requests to the peer that failed otherwise.
    pub failures: u64,
    /// Requests the peer refused because all its upload slots were taken.
    pub busy: u64,
}
