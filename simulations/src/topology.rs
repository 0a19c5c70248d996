//! Topology files: sites of hosts with access links, joined by WAN links.
//!
//! One TOML file describes a network for both the simulator and the netns testbed
//! (this module is the format; `vwnet-testbed` reads it too), so that a prediction and a
//! measurement are about the same thing. Rates are bits per second (`tc` units:
//! `kbit`, `mbit`, `gbit`), `None` meaning unlimited; delays are one-way.
//!
//! ```toml
//! name = "two-sites"
//! [defaults]
//! uplink = "100mbit"
//! downlink = "100mbit"
//! delay = "1ms"
//! [[site]]
//! name = "a"
//! hosts = 8
//! [[site]]
//! name = "b"
//! hosts = 4
//! [[wan]]
//! sites = ["a", "b"]
//! rate = "50mbit"
//! delay = "40ms"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The most hosts one site may hold; far above any simulated scale, low enough that
/// host names and indices stay small.
pub const MAX_HOSTS_PER_SITE: u32 = 1_000_000;

/// Why a topology file was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped field.
    #[error("invalid topology TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// A field has a value the model cannot use.
    #[error("invalid topology field `{field}`: {reason}")]
    Field {
        /// Dotted path of the field, e.g. `site[1].uplink`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two sites cannot reach each other over the WAN links.
    #[error("site `{a}` cannot reach site `{b}`: no WAN path")]
    Disconnected {
        /// One site.
        a: String,
        /// A site it cannot reach.
        b: String,
    },
}

/// The parameters of one host's access link (and disk).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Host to site switch, bits per second; `None` is unlimited.
    pub uplink_bps: Option<u64>,
    /// Site switch to host, bits per second; `None` is unlimited.
    pub downlink_bps: Option<u64>,
    /// One-way delay added on the host link.
    pub delay: Duration,
    /// Packet loss in percent (0..=100).
    pub loss_pct: f64,
    /// Disk write throughput in bits per second (simulator only); `None` is unlimited.
    pub disk_bps: Option<u64>,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            uplink_bps: None,
            downlink_bps: None,
            delay: Duration::ZERO,
            loss_pct: 0.0,
            disk_bps: None,
        }
    }
}

/// A site: a switch with `hosts` hosts, each on its own access link.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// `[a-z][a-z0-9]{0,7}`; hosts are `<name>1..=<name><hosts>`.
    pub name: String,
    /// Number of hosts (at least 1).
    pub hosts: u32,
    /// The access link of every host in this site.
    pub link: LinkSpec,
}

/// A symmetric WAN link between two sites (each direction gets `rate_bps`).
#[derive(Debug, Clone, PartialEq)]
pub struct Wan {
    /// One end (a site name).
    pub a: String,
    /// The other end (a site name).
    pub b: String,
    /// Rate per direction, bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// One-way delay.
    pub delay: Duration,
    /// Packet loss in percent (0..=100).
    pub loss_pct: f64,
}

/// A host, named `<site><index>` with the index starting at 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostRef {
    /// e.g. `a3`.
    pub name: String,
    /// The site name, e.g. `a`.
    pub site: String,
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Optional label.
    pub name: Option<String>,
    /// The host the image starts on (default: the first host of the first site).
    pub publisher: String,
    /// Sites in file order.
    pub sites: Vec<Site>,
    /// WAN links in file order.
    pub wans: Vec<Wan>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    uplink: Option<String>,
    downlink: Option<String>,
    delay: Option<String>,
    loss: Option<f64>,
    disk: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: String,
    hosts: u32,
    uplink: Option<String>,
    downlink: Option<String>,
    delay: Option<String>,
    loss: Option<f64>,
    disk: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWan {
    sites: [String; 2],
    rate: Option<String>,
    delay: Option<String>,
    loss: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    name: Option<String>,
    publisher: Option<String>,
    #[serde(default)]
    defaults: RawLink,
    #[serde(default, rename = "site")]
    sites: Vec<RawSite>,
    #[serde(default, rename = "wan")]
    wans: Vec<RawWan>,
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> TopologyError {
    TopologyError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses a network rate in `tc` units into bits per second; `"unlimited"` is `None`.
///
/// Accepts `bit`, `kbit`, `mbit`, `gbit`, `tbit` (decimal, bits) and, for disks,
/// byte rates `B/s`, `KB/s`, `MB/s`, `GB/s`, `KiB/s`, `MiB/s`, `GiB/s`.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{t}` has no unit (use e.g. 100mbit, 1gbit, 400MB/s)"))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{t}`: `{num}` is not a number"))?;
    let unit = unit.trim();
    let bits_per_unit: f64 = match unit.to_ascii_lowercase().as_str() {
        "bit" | "bps" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "b/s" => 8.0,
        "kb/s" => 8e3,
        "mb/s" => 8e6,
        "gb/s" => 8e9,
        "kib/s" => 8.0 * 1024.0,
        "mib/s" => 8.0 * 1024.0 * 1024.0,
        "gib/s" => 8.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("`{t}`: unknown rate unit `{unit}`")),
    };
    let bps = value * bits_per_unit;
    if !bps.is_finite() || !(1.0..=1e15).contains(&bps) {
        return Err(format!("`{t}` is out of range (1 bit/s .. 1 Pbit/s)"));
    }
    Ok(Some(bps.round() as u64))
}

/// Parses a delay such as `40ms`, `250us`, `1.5s` or `0`.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{t}` has no unit (use us, ms or s)"))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{t}`: `{num}` is not a number"))?;
    let secs_per_unit = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        other => return Err(format!("`{t}`: unknown delay unit `{other}`")),
    };
    let secs = value * secs_per_unit;
    if !secs.is_finite() || !(0.0..=3600.0).contains(&secs) {
        return Err(format!("`{t}` is out of range (0 .. 1h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn check_loss(field: &str, loss: f64) -> Result<f64, TopologyError> {
    if loss.is_finite() && (0.0..=100.0).contains(&loss) {
        Ok(loss)
    } else {
        Err(field_err(
            field,
            format!("{loss} is not a percentage in 0..=100"),
        ))
    }
}

fn valid_site_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 8
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl RawLink {
    /// Resolves these (possibly partial) settings on top of `base`.
    fn resolve(
        uplink: Option<&str>,
        downlink: Option<&str>,
        delay: Option<&str>,
        loss: Option<f64>,
        disk: Option<&str>,
        base: &LinkSpec,
        prefix: &str,
    ) -> Result<LinkSpec, TopologyError> {
        let rate = |v: Option<&str>, name: &str, dflt: Option<u64>| match v {
            Some(s) => parse_rate(s).map_err(|r| field_err(format!("{prefix}.{name}"), r)),
            None => Ok(dflt),
        };
        Ok(LinkSpec {
            uplink_bps: rate(uplink, "uplink", base.uplink_bps)?,
            downlink_bps: rate(downlink, "downlink", base.downlink_bps)?,
            delay: match delay {
                Some(s) => parse_delay(s).map_err(|r| field_err(format!("{prefix}.delay"), r))?,
                None => base.delay,
            },
            loss_pct: match loss {
                Some(l) => check_loss(&format!("{prefix}.loss"), l)?,
                None => base.loss_pct,
            },
            disk_bps: rate(disk, "disk", base.disk_bps)?,
        })
    }
}

impl Topology {
    /// Parses and validates a topology from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        let raw: RawTopology = toml::from_str(text)?;
        let d = &raw.defaults;
        let defaults = RawLink::resolve(
            d.uplink.as_deref(),
            d.downlink.as_deref(),
            d.delay.as_deref(),
            d.loss,
            d.disk.as_deref(),
            &LinkSpec::default(),
            "defaults",
        )?;
        if raw.sites.is_empty() {
            return Err(field_err("site", "at least one [[site]] is required"));
        }
        let mut sites = Vec::with_capacity(raw.sites.len());
        let mut names = BTreeSet::new();
        for (i, s) in raw.sites.iter().enumerate() {
            let prefix = format!("site[{i}]");
            if !valid_site_name(&s.name) {
                return Err(field_err(
                    format!("{prefix}.name"),
                    format!("`{}` does not match [a-z][a-z0-9]{{0,7}}", s.name),
                ));
            }
            if !names.insert(s.name.clone()) {
                return Err(field_err(
                    format!("{prefix}.name"),
                    format!("duplicate site `{}`", s.name),
                ));
            }
            if s.hosts == 0 || s.hosts > MAX_HOSTS_PER_SITE {
                return Err(field_err(
                    format!("{prefix}.hosts"),
                    format!("{} is not in 1..={MAX_HOSTS_PER_SITE}", s.hosts),
                ));
            }
            let link = RawLink::resolve(
                s.uplink.as_deref(),
                s.downlink.as_deref(),
                s.delay.as_deref(),
                s.loss,
                s.disk.as_deref(),
                &defaults,
                &prefix,
            )?;
            sites.push(Site {
                name: s.name.clone(),
                hosts: s.hosts,
                link,
            });
        }
        let mut wans = Vec::with_capacity(raw.wans.len());
        let mut pairs = BTreeSet::new();
        for (i, w) in raw.wans.iter().enumerate() {
            let prefix = format!("wan[{i}]");
            let [a, b] = &w.sites;
            for end in [a, b] {
                if !names.contains(end) {
                    return Err(field_err(
                        format!("{prefix}.sites"),
                        format!("unknown site `{end}`"),
                    ));
                }
            }
            if a == b {
                return Err(field_err(
                    format!("{prefix}.sites"),
                    format!("a WAN link joins two different sites, not `{a}` to itself"),
                ));
            }
            let key = if a < b { (a, b) } else { (b, a) };
            if !pairs.insert(key) {
                return Err(field_err(
                    format!("{prefix}.sites"),
                    format!("duplicate WAN link between `{a}` and `{b}`"),
                ));
            }
            wans.push(Wan {
                a: a.clone(),
                b: b.clone(),
                rate_bps: match &w.rate {
                    Some(r) => parse_rate(r).map_err(|e| field_err(format!("{prefix}.rate"), e))?,
                    None => None,
                },
                delay: match &w.delay {
                    Some(r) => {
                        parse_delay(r).map_err(|e| field_err(format!("{prefix}.delay"), e))?
                    }
                    None => Duration::ZERO,
                },
                loss_pct: check_loss(&format!("{prefix}.loss"), w.loss.unwrap_or(0.0))?,
            });
        }
        let mut topo = Topology {
            name: raw.name,
            publisher: String::new(),
            sites,
            wans,
        };
        // Host names are `<site><index>`, so site `a` host 11 and site `a1` host 1 collide.
        let mut seen = BTreeSet::new();
        for h in topo.hosts() {
            if !seen.insert(h.name.clone()) {
                return Err(field_err(
                    "site",
                    format!("host name `{}` occurs in two sites; rename a site", h.name),
                ));
            }
        }
        topo.publisher = match raw.publisher {
            Some(p) => {
                if !seen.contains(&p) {
                    return Err(field_err("publisher", format!("no host named `{p}`")));
                }
                p
            }
            None => format!("{}1", topo.sites[0].name),
        };
        for s in &topo.sites[1..] {
            if topo.route(&topo.sites[0].name, &s.name).is_none() {
                return Err(TopologyError::Disconnected {
                    a: topo.sites[0].name.clone(),
                    b: s.name.clone(),
                });
            }
        }
        Ok(topo)
    }

    /// Reads and parses a topology file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The label to show: `name`, or `"topology"` when unset.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("topology")
    }

    /// Every host, site by site, in index order.
    pub fn hosts(&self) -> Vec<HostRef> {
        self.sites
            .iter()
            .flat_map(|s| {
                (1..=s.hosts).map(move |i| HostRef {
                    name: format!("{}{i}", s.name),
                    site: s.name.clone(),
                })
            })
            .collect()
    }

    /// Total number of hosts.
    pub fn host_count(&self) -> u64 {
        self.sites.iter().map(|s| u64::from(s.hosts)).sum()
    }

    /// The index of a site by name.
    pub fn site_index(&self, name: &str) -> Option<usize> {
        self.sites.iter().position(|s| s.name == name)
    }

    /// The WAN links (indices into `wans`, in path order) from site `from` to site `to`:
    /// the path of least total delay, fewest hops on ties. `Some(vec![])` for the same
    /// site; `None` when unreachable or a name is unknown.
    pub fn route(&self, from: &str, to: &str) -> Option<Vec<usize>> {
        let src = self.site_index(from)?;
        let dst = self.site_index(to)?;
        if src == dst {
            return Some(Vec::new());
        }
        // Dijkstra over sites; the graph is tiny (tens of sites), so a BTreeMap queue is fine.
        let n = self.sites.len();
        let mut best: Vec<Option<(Duration, usize)>> = vec![None; n];
        let mut via: Vec<Option<(usize, usize)>> = vec![None; n]; // (prev site, wan)
        let mut queue = BTreeMap::new();
        best[src] = Some((Duration::ZERO, 0));
        queue.insert((Duration::ZERO, 0usize, src), ());
        while let Some(((d, hops, s), ())) = queue.pop_first() {
            if best[s] != Some((d, hops)) {
                continue;
            }
            if s == dst {
                break;
            }
            for (wi, w) in self.wans.iter().enumerate() {
                let other = if self.site_index(&w.a) == Some(s) {
                    self.site_index(&w.b)
                } else if self.site_index(&w.b) == Some(s) {
                    self.site_index(&w.a)
                } else {
                    None
                };
                let Some(o) = other else { continue };
                let cand = (d + w.delay, hops + 1);
                if best[o].is_none_or(|b| cand < b) {
                    best[o] = Some(cand);
                    via[o] = Some((s, wi));
                    queue.insert((cand.0, cand.1, o), ());
                }
            }
        }
        best[dst]?;
        let mut path = Vec::new();
        let mut at = dst;
        while at != src {
            let (prev, wi) = via[at]?;
            path.push(wi);
            at = prev;
        }
        path.reverse();
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SITES: &str = r#"
name = "two-sites"
[defaults]
uplink = "100mbit"
downlink = "100mbit"
delay = "1ms"
loss = 0.0
disk = "unlimited"

[[site]]
name = "a"
hosts = 3

[[site]]
name = "b"
hosts = 2
uplink = "10mbit"
disk = "400MB/s"

[[wan]]
sites = ["a", "b"]
rate = "50mbit"
delay = "40ms"
"#;

    #[test]
    fn parses_the_contract_example() {
        let t = Topology::from_toml(TWO_SITES).unwrap();
        assert_eq!(t.label(), "two-sites");
        assert_eq!(t.publisher, "a1");
        assert_eq!(t.sites.len(), 2);
        let a = &t.sites[0].link;
        assert_eq!(a.uplink_bps, Some(100_000_000));
        assert_eq!(a.downlink_bps, Some(100_000_000));
        assert_eq!(a.delay, Duration::from_millis(1));
        assert_eq!(a.disk_bps, None);
        let b = &t.sites[1].link;
        assert_eq!(b.uplink_bps, Some(10_000_000), "site override");
        assert_eq!(b.downlink_bps, Some(100_000_000), "inherited default");
        assert_eq!(b.disk_bps, Some(3_200_000_000));
        assert_eq!(t.wans[0].rate_bps, Some(50_000_000));
        assert_eq!(t.wans[0].delay, Duration::from_millis(40));
        let names: Vec<_> = t.hosts().into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["a1", "a2", "a3", "b1", "b2"]);
        assert_eq!(t.host_count(), 5);
        assert_eq!(t.hosts()[3].site, "b");
    }

    #[test]
    fn rate_units() {
        assert_eq!(parse_rate("1kbit"), Ok(Some(1_000)));
        assert_eq!(parse_rate("2.5Gbit"), Ok(Some(2_500_000_000)));
        assert_eq!(parse_rate("1MiB/s"), Ok(Some(8 * 1024 * 1024)));
        assert_eq!(parse_rate("unlimited"), Ok(None));
        assert!(parse_rate("100").is_err(), "unit required");
        assert!(parse_rate("100mbps").is_err(), "ambiguous unit refused");
        assert!(parse_rate("0mbit").is_err());
        assert!(parse_rate("x mbit").is_err());
    }

    #[test]
    fn delay_units() {
        assert_eq!(parse_delay("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_delay("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert!(parse_delay("5").is_err());
        assert!(parse_delay("5min").is_err());
    }

    fn err_of(text: &str) -> String {
        Topology::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err_of("[[site]]\nname = \"a\"\nhosts = 1\nuplnk = \"1mbit\"\n");
        assert!(e.contains("uplnk"), "{e}");
        let e = err_of("[[site]]\nname = \"a\"\nhosts = 1\nuplink = \"fast\"\n");
        assert!(e.contains("site[0].uplink"), "{e}");
        let e = err_of("[defaults]\nloss = 101.0\n[[site]]\nname = \"a\"\nhosts = 1\n");
        assert!(e.contains("defaults.loss"), "{e}");
        let e = err_of("[[site]]\nname = \"A\"\nhosts = 1\n");
        assert!(e.contains("site[0].name"), "{e}");
        let e = err_of("[[site]]\nname = \"a\"\nhosts = 0\n");
        assert!(e.contains("site[0].hosts"), "{e}");
        let e = err_of("publisher = \"z9\"\n[[site]]\nname = \"a\"\nhosts = 1\n");
        assert!(e.contains("publisher"), "{e}");
        let e = err_of("");
        assert!(e.contains("site"), "{e}");
    }

    #[test]
    fn rejects_bad_wans_and_disconnected_sites() {
        let base = "[[site]]\nname = \"a\"\nhosts = 1\n[[site]]\nname = \"b\"\nhosts = 1\n";
        let e = err_of(base);
        assert!(e.contains("cannot reach"), "{e}");
        let e = err_of(&format!("{base}[[wan]]\nsites = [\"a\", \"c\"]\n"));
        assert!(e.contains("unknown site `c`"), "{e}");
        let e = err_of(&format!("{base}[[wan]]\nsites = [\"a\", \"a\"]\n"));
        assert!(e.contains("itself"), "{e}");
        let e = err_of(&format!(
            "{base}[[wan]]\nsites = [\"a\", \"b\"]\n[[wan]]\nsites = [\"b\", \"a\"]\n"
        ));
        assert!(e.contains("duplicate WAN"), "{e}");
        let e = err_of("[[site]]\nname = \"a\"\nhosts = 1\n[[site]]\nname = \"a\"\nhosts = 1\n");
        assert!(e.contains("duplicate site"), "{e}");
    }

    #[test]
    fn colliding_host_names_are_refused() {
        let e = err_of(
            "[[site]]\nname = \"a\"\nhosts = 11\n[[site]]\nname = \"a1\"\nhosts = 1\n\
             [[wan]]\nsites = [\"a\", \"a1\"]\n",
        );
        assert!(e.contains("a11"), "{e}");
    }

    #[test]
    fn routes_take_the_least_delay_path() {
        let t = Topology::from_toml(
            r#"
[[site]]
name = "a"
hosts = 1
[[site]]
name = "b"
hosts = 1
[[site]]
name = "c"
hosts = 1
[[wan]]
sites = ["a", "b"]
delay = "10ms"
[[wan]]
sites = ["b", "c"]
delay = "10ms"
[[wan]]
sites = ["a", "c"]
delay = "50ms"
"#,
        )
        .unwrap();
        assert_eq!(t.route("a", "c"), Some(vec![0, 1]));
        assert_eq!(t.route("c", "a"), Some(vec![1, 0]));
        assert_eq!(t.route("a", "a"), Some(vec![]));
        assert_eq!(t.route("a", "zz"), None);
    }
}
