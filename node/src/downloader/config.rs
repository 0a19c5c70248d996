//! Downloader limits and timings, built and checked by [`ConfigBuilder`].

use std::time::Duration;

/// Largest number of peers one downloader tracks: holder counts are kept in a `u16` per chunk.
pub const MAX_PEERS_LIMIT: usize = u16::MAX as usize - 1;

/// Why a downloader configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// One limit is larger than a limit that should contain it.
    #[error("{inner} ({inner_value}) must not exceed {outer} ({outer_value})")]
    Order {
        /// The smaller limit's name.
        inner: &'static str,
        /// Its value.
        inner_value: u64,
        /// The enclosing limit's name.
        outer: &'static str,
        /// Its value.
        outer_value: u64,
    },
    /// More peers than holder counts can represent.
    #[error("max_peers {0} exceeds {MAX_PEERS_LIMIT}")]
    TooManyPeers(usize),
    /// Endgame copies outside 1..=8.
    #[error("endgame_copies {0} must be in 1..=8")]
    EndgameCopies(u8),
}

/// Checked downloader configuration; make one with [`Config::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) max_request_bytes: u64,
    pub(crate) max_request_chunks: usize,
    pub(crate) max_requests_per_peer: u32,
    pub(crate) max_bytes_per_peer: u64,
    pub(crate) max_bytes_in_flight: u64,
    pub(crate) request_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) ban_duration: Duration,
    pub(crate) endgame_copies: u8,
    pub(crate) max_peers: usize,
    pub(crate) run_len: usize,
    pub(crate) seed: u64,
    pub(crate) site_patience: Duration,
    pub(crate) pipeline_window: Duration,
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Largest sum of chunk lengths in one request.
    pub fn max_request_bytes(&self) -> u64 {
        self.max_request_bytes
    }

    /// Largest number of chunks in one request.
    pub fn max_request_chunks(&self) -> usize {
        self.max_request_chunks
    }

    /// Largest number of requests in flight to one peer.
    pub fn max_requests_per_peer(&self) -> u32 {
        self.max_requests_per_peer
    }

    /// Largest number of requested bytes in flight to one peer.
    pub fn max_bytes_per_peer(&self) -> u64 {
        self.max_bytes_per_peer
    }

    /// Largest number of requested bytes in flight over all peers.
    pub fn max_bytes_in_flight(&self) -> u64 {
        self.max_bytes_in_flight
    }

    /// Time a request may take before it counts as timed out.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How long a peer that sent a corrupt chunk stays banned.
    pub fn ban_duration(&self) -> Duration {
        self.ban_duration
    }

    /// First and largest back-off after timeouts.
    pub fn backoff(&self) -> (Duration, Duration) {
        (self.backoff_base, self.backoff_max)
    }

    /// How many peers may be asked for the same chunk at once in the endgame.
    pub fn endgame_copies(&self) -> u8 {
        self.endgame_copies
    }

    /// How long a same-site puller may go without announcing a new chunk before the chunks
    /// it was to fetch across sites fall to the others, and a failing local peer without
    /// delivering before it stops counting as a holder.
    pub fn site_patience(&self) -> Duration {
        self.site_patience
    }

    /// How many seconds of a peer's measured rate may be in flight to it (see
    /// [`ConfigBuilder::pipeline_window`]).
    pub fn pipeline_window(&self) -> Duration {
        self.pipeline_window
    }

    /// The tie-break seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The same configuration with another tie-break seed (any seed is valid), so that a
    /// simulator can give each host its own from one checked configuration.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_request_bytes: 4 << 20,
            max_request_chunks: 512,
            max_requests_per_peer: 4,
            max_bytes_per_peer: 8 << 20,
            max_bytes_in_flight: 64 << 20,
            request_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ban_duration: Duration::from_secs(3600),
            endgame_copies: 2,
            max_peers: 4096,
            run_len: 64,
            seed: 0,
            site_patience: Duration::from_secs(30),
            pipeline_window: Duration::from_secs(1),
        }
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] checks that the limits fit together.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Largest sum of chunk lengths in one request (default 4 MiB).
    pub fn max_request_bytes(mut self, bytes: u64) -> Self {
        self.config.max_request_bytes = bytes;
        self
    }

    /// Largest number of chunks in one request (default 512).
    pub fn max_request_chunks(mut self, chunks: usize) -> Self {
        self.config.max_request_chunks = chunks;
        self
    }

    /// Largest number of requests in flight to one peer (default 4).
    pub fn max_requests_per_peer(mut self, requests: u32) -> Self {
        self.config.max_requests_per_peer = requests;
        self
    }

    /// Largest number of requested bytes in flight to one peer (default 8 MiB).
    pub fn max_bytes_per_peer(mut self, bytes: u64) -> Self {
        self.config.max_bytes_per_peer = bytes;
        self
    }

    /// Largest number of requested bytes in flight over all peers (default 64 MiB); this bounds
    /// the memory a pull holds for chunks on their way to the store.
    pub fn max_bytes_in_flight(mut self, bytes: u64) -> Self {
        self.config.max_bytes_in_flight = bytes;
        self
    }

    /// Time a request may take before it counts as timed out (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// First back-off after a timeout, doubled per consecutive timeout up to `max`
    /// (defaults 1 s and 60 s).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff_base = base;
        self.config.backoff_max = max;
        self
    }

    /// How long a peer that sent a corrupt chunk stays banned (default 1 h).
    pub fn ban_duration(mut self, duration: Duration) -> Self {
        self.config.ban_duration = duration;
        self
    }

    /// How many peers may be asked for the same chunk at once in the endgame (default 2;
    /// 1 turns the endgame off).
    pub fn endgame_copies(mut self, copies: u8) -> Self {
        self.config.endgame_copies = copies;
        self
    }

    /// Largest number of peers tracked at once (default 4096).
    pub fn max_peers(mut self, peers: usize) -> Self {
        self.config.max_peers = peers;
        self
    }

    /// Length of the runs of consecutive chunks that the seeded shuffle keeps together
    /// (default 64), so that requests cover contiguous ranges where rarity allows.
    pub fn run_len(mut self, chunks: usize) -> Self {
        self.config.run_len = chunks;
        self
    }

    /// Seed of the tie-break between equally rare chunks; give each downloader its own so
    /// that pullers start on different chunks and can serve each other.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// How long a same-site puller may go without announcing a new chunk before it stops
    /// counting as the site's fetcher of its share of remote-only chunks, and a failing local
    /// peer without delivering before it stops counting as a holder (default 30 s). A live
    /// puller announces every few seconds; longer means fewer chunks fetched twice across
    /// sites when a neighbour is briefly slow (a CPU-starved host can stall for many seconds),
    /// shorter means less waiting on one that died.
    pub fn site_patience(mut self, patience: Duration) -> Self {
        self.config.site_patience = patience;
        self
    }

    /// How much of a peer's measured rate may be in flight to it, as time (default 1 s; at
    /// most `max_bytes_per_peer`, at least one chunk), and requests are half of that, so
    /// one stays queued behind the one being served. Enough to cover a round trip and the
    /// responder's disk read many times over; more only queues bytes at a shared uplink,
    /// where they are not yet of use to anyone else and come too late for the endgame.
    pub fn pipeline_window(mut self, window: Duration) -> Self {
        self.config.pipeline_window = window;
        self
    }

    /// Checks the limits and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        let positive: [(&'static str, bool); 10] = [
            ("max_request_bytes", c.max_request_bytes > 0),
            ("max_request_chunks", c.max_request_chunks > 0),
            ("max_requests_per_peer", c.max_requests_per_peer > 0),
            ("request_timeout", !c.request_timeout.is_zero()),
            ("backoff base", !c.backoff_base.is_zero()),
            ("ban_duration", !c.ban_duration.is_zero()),
            ("max_peers", c.max_peers > 0),
            ("run_len", c.run_len > 0),
            ("site_patience", !c.site_patience.is_zero()),
            ("pipeline_window", !c.pipeline_window.is_zero()),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err(ConfigError::Zero(name));
        }
        let nested = [
            (
                "max_request_bytes",
                c.max_request_bytes,
                "max_bytes_per_peer",
                c.max_bytes_per_peer,
            ),
            (
                "max_bytes_per_peer",
                c.max_bytes_per_peer,
                "max_bytes_in_flight",
                c.max_bytes_in_flight,
            ),
            (
                "backoff base (ms)",
                duration_ms(c.backoff_base),
                "backoff max (ms)",
                duration_ms(c.backoff_max),
            ),
        ];
        for (inner, inner_value, outer, outer_value) in nested {
            if inner_value > outer_value {
                return Err(ConfigError::Order {
                    inner,
                    inner_value,
                    outer,
                    outer_value,
                });
            }
        }
        if c.max_peers > MAX_PEERS_LIMIT {
            return Err(ConfigError::TooManyPeers(c.max_peers));
        }
        if !(1..=8).contains(&c.endgame_copies) {
            return Err(ConfigError::EndgameCopies(c.endgame_copies));
        }
        Ok(c)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        assert_eq!(Config::builder().build(), Ok(Config::default()));
    }

    #[test]
    fn inconsistent_limits_are_refused() {
        let err = Config::builder()
            .max_request_bytes(16 << 20)
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Order {
                inner: "max_request_bytes",
                ..
            }
        ));
        let err = Config::builder()
            .max_requests_per_peer(0)
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::Zero("max_requests_per_peer"));
        let err = Config::builder()
            .backoff(Duration::from_secs(5), Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Order { .. }));
        let err = Config::builder().endgame_copies(0).build().unwrap_err();
        assert_eq!(err, ConfigError::EndgameCopies(0));
        let err = Config::builder().max_peers(1 << 20).build().unwrap_err();
        assert_eq!(err, ConfigError::TooManyPeers(1 << 20));
    }
}
