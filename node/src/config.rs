//! The node's configuration: where it keeps data, where it listens, whom it bootstraps from.
//!
//! Built with [`NodeConfigBuilder`], whose [`build`](NodeConfigBuilder::build) checks everything
//! that can be checked before the node starts (so a bad flag fails with one clear line instead
//! of a half-started daemon). The CLI turns flags and an optional TOML file into a builder; the
//! library never sees flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;

/// File name of the control socket inside the home directory.
pub const CONTROL_SOCKET: &str = "node.sock";
/// File name of the node's own durable state (catalog) inside the home directory.
pub const NODE_DB: &str = "node.redb";
/// File name of the node's key inside the home directory.
pub const NODE_KEY: &str = "node.key";
/// File name of the user's signing key inside the home directory.
pub const USER_KEY: &str = "user.key";
/// Directory of the chunk store inside the home directory.
pub const STORE_DIR: &str = "store";
/// The hypervisor connection a node opens unless told otherwise: libvirt's in-process test
/// driver, which needs no daemon.
pub const DEFAULT_HYPERVISOR: &str = "test:///default";

/// Why a configuration is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No home directory was given.
    #[error("no home directory given")]
    NoHome,
    /// A listen or bootstrap address is not a multiaddr.
    #[error("{field}: {value:?} is not a multiaddr ({reason})")]
    BadAddr {
        /// Which setting held the address.
        field: &'static str,
        /// The text given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A numeric limit is out of range.
    #[error("{field}: {reason}")]
    BadLimit {
        /// Which setting.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The config file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The config file.
        path: PathBuf,
        /// One line saying what is wrong.
        reason: String,
    },
}

/// Upload/download limits an operator sets so that the node shares a host politely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Upload rate cap in bytes per second; `None` is unlimited.
    pub upload_bytes_per_sec: Option<u64>,
    /// Download rate cap in bytes per second; `None` is unlimited.
    pub download_bytes_per_sec: Option<u64>,
    /// Chunk responses being read or sent at the same time (a slot is held until the response
    /// has left); a request beyond them is refused as busy and asked again elsewhere or later.
    pub max_concurrent_uploads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            upload_bytes_per_sec: None,
            download_bytes_per_sec: None,
            // 16 held until sent cost a 1 Gbit/s seed with 16 pullers at 100 Mbit/s 27% in the
            // simulator (a few pipelining peers took every slot); 64 cost 5% and still keep a
            // 1,000-puller seed's queue short of the request timeout (BENCHMARKS.md).
            max_concurrent_uploads: 64,
        }
    }
}

/// Default lease of a workspace deploy lock; the holder renews it every third of this.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(30);

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    home: PathBuf,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    site: Option<String>,
    mdns: bool,
    metrics: Option<SocketAddr>,
    limits: Limits,
    request_timeout: Duration,
    idle_connection_timeout: Duration,
    fault_corrupt_uploads: bool,
    lock_lease: Duration,
    hypervisor: String,
    policy_file: Option<PathBuf>,
    resource_limits: crate::policy::ResourceLimits,
}

impl NodeConfig {
    /// A builder for a node whose data lives in `home`.
    pub fn builder(home: impl Into<PathBuf>) -> NodeConfigBuilder {
        NodeConfigBuilder {
            home: home.into(),
            ..NodeConfigBuilder::default()
        }
    }

    /// The data directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Path of the control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.home.join(CONTROL_SOCKET)
    }

    /// Path of the node's durable state database.
    pub fn node_db(&self) -> PathBuf {
        self.home.join(NODE_DB)
    }

    /// Path of the chunk store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.home.join(STORE_DIR)
    }

    /// Addresses to listen on.
    pub fn listen(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// Addresses dialled at start to join the network.
    pub fn bootstrap(&self) -> &[Multiaddr] {
        &self.bootstrap
    }

    /// The site name, announced to peers (identify, provider announcements): pullers prefer
    /// same-site sources and fetch each chunk across sites about once per site.
    pub fn site(&self) -> Option<&str> {
        self.site.as_deref()
    }

    /// Whether mDNS discovery runs.
    pub fn mdns(&self) -> bool {
        self.mdns
    }

    /// Where the Prometheus text endpoint listens, if enabled.
    pub fn metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Rate and concurrency limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How long an outbound request may take before it fails.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How long an idle connection is kept open.
    pub fn idle_connection_timeout(&self) -> Duration {
        self.idle_connection_timeout
    }

    /// Fault injection for tests: serve every chunk with one byte flipped.
    pub fn fault_corrupt_uploads(&self) -> bool {
        self.fault_corrupt_uploads
    }

    /// The lease this node asks for when it takes a deploy lock (whole seconds).
    pub fn lock_lease(&self) -> Duration {
        self.lock_lease
    }

    /// The libvirt connection URI the node opens once and holds for its lifetime.
    pub fn hypervisor(&self) -> &str {
        &self.hypervisor
    }

    /// The access policy file; `None` means the default policy (see [`crate::policy`]).
    pub fn policy_file(&self) -> Option<&Path> {
        self.policy_file.as_deref()
    }

    /// How big a workspace this node agrees to host.
    pub fn resource_limits(&self) -> crate::policy::ResourceLimits {
        self.resource_limits
    }
}

/// The optional TOML config file (`--config FILE`); flags given on the command line win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Listen multiaddrs.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Bootstrap multiaddrs.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Site name.
    pub site: Option<String>,
    /// Whether mDNS runs (default true).
    pub mdns: Option<bool>,
    /// Metrics endpoint address, e.g. `127.0.0.1:9464`.
    pub metrics: Option<SocketAddr>,
    /// Upload cap in bytes per second.
    pub upload_bytes_per_sec: Option<u64>,
    /// Download cap in bytes per second.
    pub download_bytes_per_sec: Option<u64>,
    /// Concurrent inbound chunk requests served.
    pub max_concurrent_uploads: Option<usize>,
    /// Lease of deploy locks this node takes, e.g. `"30s"`.
    pub lock_lease: Option<vwnet_protocol::time::Span>,
    /// Hypervisor connection URI, e.g. `qemu:///system`.
    pub hypervisor: Option<String>,
    /// Access policy file (TOML, see `vwnet_protocol::acl`).
    pub policy: Option<PathBuf>,
    /// Largest minimum RAM (MiB) of a workspace created or deployed here.
    pub max_ram_mib: Option<u64>,
    /// Largest disk footprint (bytes) of a workspace created or deployed here.
    pub max_disk_bytes: Option<u64>,
    /// Most workspaces created (or deployed) here at once.
    pub max_workspaces: Option<u64>,
}

impl ConfigFile {
    /// Parses the config file text; `path` is only used in the error.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.message().replace('\n', " "),
        })
    }
}

/// Collects settings as text and checks them in [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct NodeConfigBuilder {
    home: PathBuf,
    listen: Vec<String>,
    bootstrap: Vec<String>,
    site: Option<String>,
    mdns: bool,
    metrics: Option<SocketAddr>,
    limits: Limits,
    request_timeout: Duration,
    fault_corrupt_uploads: bool,
    lock_lease: Duration,
    hypervisor: Option<String>,
    policy_file: Option<PathBuf>,
    resource_limits: crate::policy::ResourceLimits,
}

impl Default for NodeConfigBuilder {
    fn default() -> Self {
        Self {
            home: PathBuf::new(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            site: None,
            mdns: true,
            metrics: None,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(30),
            fault_corrupt_uploads: false,
            lock_lease: DEFAULT_LOCK_LEASE,
            hypervisor: None,
            policy_file: None,
            resource_limits: crate::policy::ResourceLimits::default(),
        }
    }
}

impl NodeConfigBuilder {
    /// Adds a listen address (text form, checked in `build`).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen.push(addr.into());
        self
    }

    /// Adds a bootstrap address (text form, checked in `build`).
    pub fn bootstrap(mut self, addr: impl Into<String>) -> Self {
        self.bootstrap.push(addr.into());
        self
    }

    /// Sets the site name.
    pub fn site(mut self, site: Option<String>) -> Self {
        self.site = site;
        self
    }

    /// Turns mDNS discovery on or off (on by default).
    pub fn mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Enables the metrics endpoint on `addr`.
    pub fn metrics(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics = addr;
        self
    }

    /// Sets rate and concurrency limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the outbound request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Fault injection for tests: makes this node a malicious peer that corrupts every chunk
    /// it serves. Never set in production.
    pub fn fault_corrupt_uploads(mut self, on: bool) -> Self {
        self.fault_corrupt_uploads = on;
        self
    }

    /// Sets the access policy file (default: the built-in policy, see [`crate::policy`]).
    pub fn policy_file(mut self, path: Option<PathBuf>) -> Self {
        self.policy_file = path;
        self
    }

    /// Sets the resource limits of workspaces created or deployed here.
    pub fn resource_limits(mut self, limits: crate::policy::ResourceLimits) -> Self {
        self.resource_limits = limits;
        self
    }

    /// Sets the hypervisor connection URI (default [`DEFAULT_HYPERVISOR`]).
    pub fn hypervisor(mut self, uri: Option<String>) -> Self {
        self.hypervisor = uri;
        self
    }

    /// Sets the lease of deploy locks this node takes (whole seconds, 2 s to 1 h).
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.lock_lease = lease;
        self
    }

    /// Applies a config file underneath what was already set: lists are appended, and scalar
    /// settings from the file apply only where the builder still holds the default.
    pub fn apply_file(mut self, file: ConfigFile) -> Self {
        self.listen.extend(file.listen);
        self.bootstrap.extend(file.bootstrap);
        if self.site.is_none() {
            self.site = file.site;
        }
        if let Some(on) = file.mdns {
            self.mdns = self.mdns && on;
        }
        if self.metrics.is_none() {
            self.metrics = file.metrics;
        }
        if self.lock_lease == DEFAULT_LOCK_LEASE
            && let Some(lease) = file.lock_lease
        {
            self.lock_lease = lease.into();
        }
        if self.hypervisor.is_none() {
            self.hypervisor = file.hypervisor;
        }
        if self.policy_file.is_none() {
            self.policy_file = file.policy;
        }
        let r = &mut self.resource_limits;
        r.max_ram_mib = r.max_ram_mib.or(file.max_ram_mib);
        r.max_disk_bytes = r.max_disk_bytes.or(file.max_disk_bytes);
        r.max_workspaces = r.max_workspaces.or(file.max_workspaces);
        let d = Limits::default();
        if self.limits.upload_bytes_per_sec.is_none() {
            self.limits.upload_bytes_per_sec = file.upload_bytes_per_sec;
        }
        if self.limits.download_bytes_per_sec.is_none() {
            self.limits.download_bytes_per_sec = file.download_bytes_per_sec;
        }
        if self.limits.max_concurrent_uploads == d.max_concurrent_uploads
            && let Some(n) = file.max_concurrent_uploads
        {
            self.limits.max_concurrent_uploads = n;
        }
        self
    }

    /// Checks the settings; with no listen address, listens on all interfaces on a random port
    /// over TCP and QUIC.
    pub fn build(self) -> Result<NodeConfig, ConfigError> {
        if self.home.as_os_str().is_empty() {
            return Err(ConfigError::NoHome);
        }
        let parse = |field: &'static str, list: Vec<String>| {
            list.into_iter()
                .map(|value| {
                    value
                        .parse::<Multiaddr>()
                        .map_err(|e| ConfigError::BadAddr {
                            field,
                            reason: e.to_string(),
                            value,
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut listen = parse("listen", self.listen)?;
        let bootstrap = parse("bootstrap", self.bootstrap)?;
        if listen.is_empty() {
            for default in ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"] {
                listen.push(default.parse().map_err(|e: libp2p::multiaddr::Error| {
                    ConfigError::BadAddr {
                        field: "listen",
                        value: default.to_owned(),
                        reason: e.to_string(),
                    }
                })?);
            }
        }
        if self.limits.max_concurrent_uploads == 0 {
            return Err(ConfigError::BadLimit {
                field: "max_concurrent_uploads",
                reason: "must be at least 1",
            });
        }
        for (field, rate) in [
            ("upload_bytes_per_sec", self.limits.upload_bytes_per_sec),
            ("download_bytes_per_sec", self.limits.download_bytes_per_sec),
        ] {
            // Below one chunk per second a single request could never finish within a timeout.
            if rate.is_some_and(|r| r < 64 * 1024) {
                return Err(ConfigError::BadLimit {
                    field,
                    reason: "must be at least 65536 bytes per second",
                });
            }
        }
        let hypervisor = self
            .hypervisor
            .unwrap_or_else(|| DEFAULT_HYPERVISOR.to_owned());
        if hypervisor.is_empty() || hypervisor.chars().any(char::is_control) {
            return Err(ConfigError::BadLimit {
                field: "hypervisor",
                reason: "must be a libvirt connection URI such as qemu:///system",
            });
        }
        // Whole seconds because lock records carry seconds; at least 2 s because the holder
        // counts a second less than granted (the authority rounds to whole seconds).
        if self.lock_lease.subsec_nanos() != 0
            || !(2..=vwnet_protocol::wire::MAX_LOCK_LEASE_SECS).contains(&self.lock_lease.as_secs())
        {
            return Err(ConfigError::BadLimit {
                field: "lock_lease",
                reason: "must be whole seconds between 2 s and 1 h",
            });
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::BadLimit {
                field: "request_timeout",
                reason: "must be positive",
            });
        }
        // Carried in provider announcements, whose decoders refuse anything else.
        if let Some(site) = &self.site
            && (site.is_empty()
                || site.len() > vwnet_protocol::wire::MAX_SITE_LEN
                || site.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(ConfigError::BadLimit {
                field: "site",
                reason: "must be 1 to 64 bytes without spaces or control characters",
            });
        }
        Ok(NodeConfig {
            home: self.home,
            listen,
            bootstrap,
            site: self.site,
            mdns: self.mdns,
            metrics: self.metrics,
            limits: self.limits,
            request_timeout: self.request_timeout,
            idle_connection_timeout: Duration::from_secs(60),
            fault_corrupt_uploads: self.fault_corrupt_uploads,
            lock_lease: self.lock_lease,
            hypervisor,
            policy_file: self.policy_file,
            resource_limits: self.resource_limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_tcp_and_quic() {
        let cfg = NodeConfig::builder("/tmp/h").build().unwrap();
        assert_eq!(cfg.listen().len(), 2);
        assert!(cfg.mdns());
        assert_eq!(cfg.control_socket(), Path::new("/tmp/h/node.sock"));
    }

    #[test]
    fn bad_addresses_name_the_field() {
        let err = NodeConfig::builder("/tmp/h")
            .bootstrap("not-an-addr")
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bootstrap: \"not-an-addr\""), "{err}");
    }

    #[test]
    fn limits_are_checked() {
        let err = NodeConfig::builder("/tmp/h")
            .limits(Limits {
                max_concurrent_uploads: 0,
                ..Limits::default()
            })
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::BadLimit { .. }));
        assert!(matches!(
            NodeConfig::builder("").build(),
            Err(ConfigError::NoHome)
        ));
    }

    #[test]
    fn site_names_must_fit_a_provider_announcement() {
        let with = |site: &str| {
            NodeConfig::builder("/tmp/h")
                .site(Some(site.into()))
                .build()
        };
        assert!(with("eu-west").is_ok());
        assert!(with(&"s".repeat(vwnet_protocol::wire::MAX_SITE_LEN)).is_ok());
        for bad in ["", "two words", "tab\t", &"s".repeat(65)] {
            assert!(
                matches!(with(bad), Err(ConfigError::BadLimit { field: "site", .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn file_fills_in_and_flags_win() {
        let file = ConfigFile::parse(
            Path::new("c.toml"),
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nsite = \"a\"\nmdns = false\n",
        )
        .unwrap();
        let cfg = NodeConfig::builder("/tmp/h")
            .site(Some("flag".into()))
            .apply_file(file)
            .build()
            .unwrap();
        assert_eq!(cfg.site(), Some("flag"));
        assert!(!cfg.mdns());
        assert_eq!(cfg.listen().len(), 1);
        let err = ConfigFile::parse(Path::new("c.toml"), "lisen = []").unwrap_err();
        assert!(err.to_string().starts_with("c.toml: "), "{err}");
    }
}
