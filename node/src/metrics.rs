//! Counters the node keeps, and the opt-in Prometheus text endpoint that shows them.
//!
//! Plain atomics and one mutex-guarded per-peer map: cheap enough to bump on every chunk, and no
//! dependency on a metrics crate for a handful of series. The endpoint answers any HTTP GET with
//! the text exposition format; it is meant for a scraper on the operator's network, so it reads
//! at most one small request per connection and never blocks the node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::shutdown::{Signal, signalled};

/// Bytes moved with one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerBytes {
    /// Chunk bytes received from the peer (verified).
    pub bytes_in: u64,
    /// Chunk bytes sent to the peer.
    pub bytes_out: u64,
}

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Chunks received and verified.
    pub chunks_verified: AtomicU64,
    /// Chunks received that failed verification.
    pub chunks_rejected: AtomicU64,
    /// Peers banned.
    pub peers_banned: AtomicU64,
    /// Pulls running now.
    pub pulls_in_progress: AtomicU64,
    /// Inbound chunk requests refused because every upload slot was busy.
    pub uploads_refused: AtomicU64,
    /// Gossip messages rejected by validation.
    pub gossip_rejected: AtomicU64,
    /// Descriptions (from gossip, catalog exchange or the CLI) the policy refused.
    pub descriptions_denied: AtomicU64,
    per_peer: Mutex<BTreeMap<String, PeerBytes>>,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records chunk bytes received from `peer`.
    pub fn bytes_in(&self, peer: &str, n: u64) {
        self.with_peer(peer, |p| p.bytes_in += n);
    }

    /// Records chunk bytes sent to `peer`.
    pub fn bytes_out(&self, peer: &str, n: u64) {
        self.with_peer(peer, |p| p.bytes_out += n);
    }

    fn with_peer(&self, peer: &str, f: impl FnOnce(&mut PeerBytes)) {
        let mut map = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(peer.to_owned()).or_default());
    }

    /// Bytes per peer so far.
    pub fn per_peer(&self) -> BTreeMap<String, PeerBytes> {
        self.per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Total chunk bytes sent to all peers.
    pub fn total_bytes_out(&self) -> u64 {
        self.per_peer().values().map(|p| p.bytes_out).sum()
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let scalar = |out: &mut String, name: &str, help: &str, kind: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        scalar(
            &mut out,
            "vwnet_chunks_verified_total",
            "Chunks received and verified.",
            "counter",
            &self.chunks_verified,
        );
        scalar(
            &mut out,
            "vwnet_chunks_rejected_total",
            "Chunks received that failed verification.",
            "counter",
            &self.chunks_rejected,
        );
        scalar(
            &mut out,
            "vwnet_peers_banned_total",
            "Peers banned for corrupt chunks.",
            "counter",
            &self.peers_banned,
        );
        scalar(
            &mut out,
            "vwnet_pulls_in_progress",
            "Pulls running now.",
            "gauge",
            &self.pulls_in_progress,
        );
        scalar(
            &mut out,
            "vwnet_uploads_refused_total",
            "Chunk requests refused for lack of upload slots.",
            "counter",
            &self.uploads_refused,
        );
        scalar(
            &mut out,
            "vwnet_gossip_rejected_total",
            "Gossip messages rejected by validation.",
            "counter",
            &self.gossip_rejected,
        );
        scalar(
            &mut out,
            "vwnet_descriptions_denied_total",
            "Descriptions whose publication the node's policy refused.",
            "counter",
            &self.descriptions_denied,
        );
        let peers = self.per_peer();
        for (name, help, pick) in [
            (
                "vwnet_peer_bytes_in_total",
                "Verified chunk bytes received per peer.",
                (|p: &PeerBytes| p.bytes_in) as fn(&PeerBytes) -> u64,
            ),
            (
                "vwnet_peer_bytes_out_total",
                "Chunk bytes sent per peer.",
                |p: &PeerBytes| p.bytes_out,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (peer, bytes) in &peers {
                let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {}", pick(bytes));
            }
        }
        out
    }
}

/// Serves `metrics` as Prometheus text on `addr` until shutdown.
pub async fn serve(
    addr: SocketAddr,
    metrics: std::sync::Arc<Metrics>,
    mut shutdown: Signal,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "metrics endpoint listening");
    loop {
        tokio::select! {
            _ = signalled(&mut shutdown) => return Ok(()),
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    // Read (and ignore) the request head; one read is enough for a GET.
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let body = metrics.render();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    if let Err(err) = async {
                        stream.write_all(head.as_bytes()).await?;
                        stream.write_all(body.as_bytes()).await?;
                        stream.shutdown().await
                    }
                    .await
                    {
                        debug!(%err, "metrics response failed");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_peers() {
        let m = Metrics::default();
        Metrics::add(&m.chunks_rejected, 3);
        m.bytes_out("peerA", 10);
        m.bytes_in("peerA", 5);
        let text = m.render();
        assert!(text.contains("vwnet_chunks_rejected_total 3"), "{text}");
        assert!(
            text.contains("vwnet_peer_bytes_out_total{peer=\"peerA\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("vwnet_peer_bytes_in_total{peer=\"peerA\"} 5"),
            "{text}"
        );
        assert_eq!(m.total_bytes_out(), 10);
    }
}
