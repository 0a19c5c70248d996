//! The network plan of a testbed: namespace and interface names, addresses, routes and `tc`
//! shaping, computed from a topology without touching the system, then applied with `ip`/`tc`.
//!
//! Layout (routed, one /24 per site):
//! - site `i` (file order) is a namespace `<run>-site-<name>` with a bridge `br0` at
//!   `10.77.i.254/24`; it forwards IPv4 and is the gateway of its hosts;
//! - host `j` of site `i` is a namespace `<run>-<host>` with `eth0` at `10.77.i.j/24`, a veth
//!   whose peer `h-<j>` sits on the site's bridge. Its uplink is shaped on `eth0`'s egress, its
//!   downlink on `h-<j>`'s egress;
//! - WAN link `k` joins two site namespaces with a veth pair `wan-<other site>` at
//!   `10.78.k.1/24` and `10.78.k.2/24`, shaped on each end's egress; sites route to each other
//!   along the topology's least-delay WAN path.
//!
//! Routed rather than one flat L2: WAN links may form a cycle (no spanning tree needed), and
//! ARP and broadcast stay inside a site. Nothing is created in the root namespace.

use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::Duration;

use vwnet_sim::topology::{LinkSpec, Topology};

use super::TestbedError;
use super::sys;

/// Largest number of hosts per site: host `j` gets the address `10.77.i.j`, `.254` is the gateway.
pub const MAX_HOSTS_PER_SITE: u32 = 250;
/// Largest number of sites (`10.77.i.0/24`) and of WAN links (`10.78.k.0/24`).
pub const MAX_SITES: usize = 250;

/// The TCP port every node listens on (each host has its own namespace, so they never clash).
pub const NODE_PORT: u16 = 4001;

/// Rate, delay and loss on one direction of one link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// One-way delay.
    pub delay: Duration,
    /// Packet loss in percent.
    pub loss_pct: f64,
}

impl Shape {
    /// A link that drops everything (a partition).
    pub const CUT: Shape = Shape {
        rate_bps: None,
        delay: Duration::ZERO,
        loss_pct: 100.0,
    };

    /// Whether this shape leaves the link as it is.
    pub fn is_unshaped(&self) -> bool {
        self.rate_bps.is_none() && self.delay.is_zero() && self.loss_pct <= 0.0
    }

    /// The `tc` invocations (arguments after `tc`) that install this shape as the root qdisc
    /// of `dev` in namespace `ns` (which must have no root qdisc of ours yet). Delay needs
    /// `sch_netem`; without it (`netem == false`) the delay is left out.
    ///
    /// Loss does not need netem: a classic BPF filter (`ld rand`) sends that share of packets
    /// to a class whose queue holds nothing (`pfifo limit 0`), and a cut link is just such a
    /// queue at the root. HTB shapes the rest.
    pub fn tc_commands(&self, ns: &str, dev: &str, netem: bool) -> Vec<Vec<String>> {
        let base = |rest: &[&str]| -> Vec<String> {
            let mut v = sys::owned(&["-n", ns]);
            v.extend(rest.iter().map(|s| (*s).to_owned()));
            v
        };
        if self.loss_pct >= 100.0 {
            return vec![base(&[
                "qdisc", "add", "dev", dev, "root", "handle", "1:", "pfifo", "limit", "0",
            ])];
        }
        let delay = netem && !self.delay.is_zero();
        if self.rate_bps.is_none() && self.loss_pct <= 0.0 && !delay {
            return Vec::new();
        }
        // Unlimited still needs a classful root for the loss filter; far above what veths carry.
        let rate = self.rate_bps.unwrap_or(40_000_000_000);
        // A burst of ~5 ms at the rate (and at least two 64 KiB GSO segments) keeps the rate
        // accurate with large packets.
        let burst = (rate / 8 / 200).max(2 * 65_536).to_string();
        let rate = format!("{rate}bit");
        let class = |id: &str| {
            base(&[
                "class", "add", "dev", dev, "parent", "1:", "classid", id, "htb", "rate", &rate,
                "ceil", &rate, "burst", &burst, "cburst", &burst, "quantum", "60000",
            ])
        };
        let mut cmds = vec![
            base(&[
                "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
            ]),
            class("1:1"),
        ];
        if delay {
            // netem holds packets for the delay; its queue must cover the bandwidth-delay product.
            let us = format!("{}us", self.delay.as_micros());
            cmds.push(base(&[
                "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "netem", "limit",
                "100000", "delay", &us,
            ]));
        }
        if self.loss_pct > 0.0 {
            let threshold = (self.loss_pct / 100.0 * 4_294_967_296.0) as u64;
            // ld rand; if A >= threshold: return 0 (no match: default class 1:1);
            // else return 0x10002 (class 1:2, which drops).
            let bytecode = format!(
                "4,32 0 0 {ld_rand},53 1 0 {threshold},6 0 0 65538,6 0 0 0,",
                ld_rand = 0xFFFF_F000u32 + 56
            );
            cmds.push(class("1:2"));
            cmds.push(base(&[
                "qdisc", "add", "dev", dev, "parent", "1:2", "handle", "20:", "pfifo", "limit", "0",
            ]));
            cmds.push(base(&[
                "filter", "add", "dev", dev, "parent", "1:", "protocol", "all", "prio", "1", "bpf",
                "bytecode", &bytecode,
            ]));
        }
        cmds
    }

    /// Replaces whatever shaping `dev` in `ns` has with this one.
    pub(crate) fn apply(&self, ns: &str, dev: &str) -> Result<(), TestbedError> {
        // Deleting a default (noqueue) root fails; that is the unshaped state we want anyway.
        let _ = sys::output(
            "tc",
            &sys::owned(&["-n", ns, "qdisc", "del", "dev", dev, "root"]),
        )?;
        for args in self.tc_commands(ns, dev, netem_available()) {
            sys::tc(&args)?;
        }
        Ok(())
    }
}

/// Whether the kernel has `sch_netem` (link delay). Probed once, in a scratch namespace.
pub fn netem_available() -> bool {
    static NETEM: OnceLock<bool> = OnceLock::new();
    *NETEM.get_or_init(|| {
        // Sequence 0 is never a run, but `cleanup` still recognises the name as this process's.
        let ns = format!("{}{}-0-probe", super::cleanup::PREFIX, std::process::id());
        if sys::ip(&["netns", "add", &ns]).is_err() {
            return false;
        }
        let ok = sys::output(
            "tc",
            &sys::owned(&[
                "-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
            ]),
        )
        .is_ok_and(|o| o.status.success());
        let _ = sys::ip(&["netns", "del", &ns]);
        ok
    })
}

/// One host of the plan.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// Host name, e.g. `a3`.
    pub name: String,
    /// Its site's name.
    pub site: String,
    /// Its namespace.
    pub ns: String,
    /// Its address on `eth0`.
    pub addr: Ipv4Addr,
    /// Its site gateway.
    pub gateway: Ipv4Addr,
    /// The name of its veth peer inside the site namespace.
    pub site_dev: String,
    /// Host to site direction.
    pub up: Shape,
    /// Site to host direction.
    pub down: Shape,
}

impl HostPlan {
    /// The interface inside the host namespace.
    pub const DEV: &'static str = "eth0";

    /// The multiaddr the host's node listens on.
    pub fn listen_multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{NODE_PORT}", self.addr)
    }
}

/// One site of the plan.
#[derive(Debug, Clone)]
pub struct SitePlan {
    /// Site name.
    pub name: String,
    /// Its namespace (holds the bridge and the router).
    pub ns: String,
    /// The bridge address, gateway of its hosts.
    pub gateway: Ipv4Addr,
    /// Routes to other sites: (site index, next-hop address).
    pub routes: Vec<(usize, Ipv4Addr)>,
}

/// One WAN link of the plan.
#[derive(Debug, Clone)]
pub struct WanPlan {
    /// The two site names.
    pub sites: [String; 2],
    /// The two site namespaces.
    pub ns: [String; 2],
    /// The interface name at each end (`wan-<other site>`).
    pub dev: [String; 2],
    /// The address at each end.
    pub addr: [Ipv4Addr; 2],
    /// Each direction's shape (the same both ways).
    pub shape: Shape,
}

impl WanPlan {
    /// `a-b`, the label of this link in reports.
    pub fn label(&self) -> String {
        format!("{}-{}", self.sites[0], self.sites[1])
    }
}

/// Everything a testbed creates, by name.
#[derive(Debug, Clone)]
pub struct NetPlan {
    /// The run id: every namespace name starts with `<run>-`.
    pub run: String,
    /// Sites in topology order.
    pub sites: Vec<SitePlan>,
    /// Hosts, site by site.
    pub hosts: Vec<HostPlan>,
    /// WAN links in topology order.
    pub wans: Vec<WanPlan>,
}

fn site_addr(site: usize, host: u32) -> Ipv4Addr {
    // The limits checked in `NetPlan::new` keep both octets in range.
    Ipv4Addr::new(10, 77, site as u8, host as u8)
}

fn host_shapes(link: &LinkSpec) -> (Shape, Shape) {
    let shape = |rate| Shape {
        rate_bps: rate,
        delay: link.delay,
        loss_pct: link.loss_pct,
    };
    (shape(link.uplink_bps), shape(link.downlink_bps))
}

impl NetPlan {
    /// Plans `topology` for run `run`; refuses topologies beyond the address plan.
    pub fn new(run: &str, topology: &Topology) -> Result<Self, TestbedError> {
        if topology.sites.len() > MAX_SITES || topology.wans.len() > MAX_SITES {
            return Err(TestbedError::Unsupported(format!(
                "at most {MAX_SITES} sites and {MAX_SITES} WAN links"
            )));
        }
        let mut sites = Vec::new();
        let mut hosts = Vec::new();
        for (i, site) in topology.sites.iter().enumerate() {
            if site.hosts > MAX_HOSTS_PER_SITE {
                return Err(TestbedError::Unsupported(format!(
                    "site {} has {} hosts; the testbed takes at most {MAX_HOSTS_PER_SITE} per site",
                    site.name, site.hosts
                )));
            }
            let (up, down) = host_shapes(&site.link);
            for j in 1..=site.hosts {
                let name = format!("{}{j}", site.name);
                hosts.push(HostPlan {
                    ns: format!("{run}-{name}"),
                    name,
                    site: site.name.clone(),
                    addr: site_addr(i, j),
                    gateway: site_addr(i, 254),
                    site_dev: format!("h-{j}"),
                    up,
                    down,
                });
            }
            sites.push(SitePlan {
                name: site.name.clone(),
                ns: format!("{run}-site-{}", site.name),
                gateway: site_addr(i, 254),
                routes: Vec::new(),
            });
        }
        let index = |name: &str| {
            topology
                .site_index(name)
                .ok_or_else(|| TestbedError::Unsupported(format!("unknown site {name}")))
        };
        let mut wans = Vec::new();
        for (k, w) in topology.wans.iter().enumerate() {
            let (a, b) = (index(&w.a)?, index(&w.b)?);
            wans.push(WanPlan {
                sites: [w.a.clone(), w.b.clone()],
                ns: [sites[a].ns.clone(), sites[b].ns.clone()],
                dev: [format!("wan-{}", w.b), format!("wan-{}", w.a)],
                addr: [
                    Ipv4Addr::new(10, 78, k as u8, 1),
                    Ipv4Addr::new(10, 78, k as u8, 2),
                ],
                shape: Shape {
                    rate_bps: w.rate_bps,
                    delay: w.delay,
                    loss_pct: w.loss_pct,
                },
            });
        }
        for from in 0..sites.len() {
            for to in 0..sites.len() {
                if from == to {
                    continue;
                }
                let path = topology
                    .route(&sites[from].name, &sites[to].name)
                    .unwrap_or_default();
                let Some(&first) = path.first() else {
                    return Err(TestbedError::Unsupported(format!(
                        "no WAN path from {} to {}",
                        sites[from].name, sites[to].name
                    )));
                };
                let w = &wans[first];
                // The next hop is the far end of the first WAN link on the path.
                let far = usize::from(w.sites[0] == sites[from].name);
                sites[from].routes.push((to, w.addr[far]));
            }
        }
        Ok(NetPlan {
            run: run.to_owned(),
            sites,
            hosts,
            wans,
        })
    }

    /// Every namespace of the plan, sites first.
    pub fn namespaces(&self) -> Vec<String> {
        let sites = self.sites.iter().map(|s| s.ns.clone());
        sites
            .chain(self.hosts.iter().map(|h| h.ns.clone()))
            .collect()
    }

    /// The site plan named `name`.
    pub fn site(&self, name: &str) -> Option<&SitePlan> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// Creates the namespaces, bridges, links, addresses, routes and shaping. On error the
    /// caller removes what exists (every name starts with the run id).
    pub(crate) fn apply(&self) -> Result<(), TestbedError> {
        for site in &self.sites {
            new_netns(&site.ns)?;
            let ns = site.ns.as_str();
            sys::ip(&["-n", ns, "link", "add", "name", "br0", "type", "bridge"])?;
            let gw = format!("{}/24", site.gateway);
            sys::ip(&["-n", ns, "addr", "add", &gw, "dev", "br0"])?;
            sys::ip(&["-n", ns, "link", "set", "br0", "up"])?;
            sysctl(ns, "net.ipv4.ip_forward=1")?;
        }
        for host in &self.hosts {
            self.apply_host(host)?;
        }
        for wan in &self.wans {
            // Segmentation offload would turn one lost "packet" into ~40 lost segments.
            let segs = if wan.shape.loss_pct > 0.0 {
                "1"
            } else {
                "65535"
            };
            sys::ip(&[
                "-n",
                &wan.ns[0],
                "link",
                "add",
                "name",
                &wan.dev[0],
                "gso_max_segs",
                segs,
                "type",
                "veth",
                "peer",
                "name",
                &wan.dev[1],
                "netns",
                &wan.ns[1],
                "gso_max_segs",
                segs,
            ])?;
            for end in 0..2 {
                let (ns, dev) = (wan.ns[end].as_str(), wan.dev[end].as_str());
                let addr = format!("{}/24", wan.addr[end]);
                sys::ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
                sys::ip(&["-n", ns, "link", "set", dev, "up"])?;
                wan.shape.apply(ns, dev)?;
            }
        }
        for site in &self.sites {
            for (to, via) in &site.routes {
                let net = format!("10.77.{to}.0/24");
                let via = via.to_string();
                sys::ip(&["-n", &site.ns, "route", "add", &net, "via", &via])?;
            }
        }
        Ok(())
    }

    fn apply_host(&self, host: &HostPlan) -> Result<(), TestbedError> {
        let site = self
            .site(&host.site)
            .ok_or_else(|| TestbedError::Unsupported(format!("host {} has no site", host.name)))?;
        new_netns(&host.ns)?;
        let lossy = host.up.loss_pct > 0.0 || host.down.loss_pct > 0.0;
        let segs = if lossy { "1" } else { "65535" };
        sys::ip(&[
            "-n",
            &site.ns,
            "link",
            "add",
            "name",
            &host.site_dev,
            "gso_max_segs",
            segs,
            "type",
            "veth",
            "peer",
            "name",
            HostPlan::DEV,
            "netns",
            &host.ns,
            "gso_max_segs",
            segs,
        ])?;
        sys::ip(&[
            "-n",
            &site.ns,
            "link",
            "set",
            &host.site_dev,
            "master",
            "br0",
        ])?;
        sys::ip(&["-n", &site.ns, "link", "set", &host.site_dev, "up"])?;
        let addr = format!("{}/24", host.addr);
        sys::ip(&["-n", &host.ns, "addr", "add", &addr, "dev", HostPlan::DEV])?;
        sys::ip(&["-n", &host.ns, "link", "set", HostPlan::DEV, "up"])?;
        let gw = host.gateway.to_string();
        sys::ip(&["-n", &host.ns, "route", "add", "default", "via", &gw])?;
        host.up.apply(&host.ns, HostPlan::DEV)?;
        host.down.apply(&site.ns, &host.site_dev)?;
        Ok(())
    }
}

/// Creates namespace `ns` with loopback up and IPv6 off (no router solicitations or other
/// background chatter in the byte counters).
fn new_netns(ns: &str) -> Result<(), TestbedError> {
    sys::ip(&["netns", "add", ns])?;
    sys::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")?;
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")
}

fn sysctl(ns: &str, setting: &str) -> Result<(), TestbedError> {
    sys::ip(&["netns", "exec", ns, "sysctl", "-qw", setting]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_SITES: &str = r#"
[defaults]
uplink = "100mbit"
downlink = "50mbit"
delay = "2ms"
[[site]]
name = "a"
hosts = 2
[[site]]
name = "bb"
hosts = 1
loss = 2.0
[[site]]
name = "c"
hosts = 250
[[wan]]
sites = ["a", "bb"]
rate = "10mbit"
delay = "10ms"
[[wan]]
sites = ["bb", "c"]
delay = "10ms"
"#;

    #[test]
    fn plan_names_addresses_and_routes() {
        let topo = Topology::from_toml(THREE_SITES).unwrap();
        let plan = NetPlan::new("vwtb-7-1", &topo).unwrap();
        assert_eq!(plan.hosts.len(), 253);
        let a2 = &plan.hosts[1];
        assert_eq!(a2.ns, "vwtb-7-1-a2");
        assert_eq!(a2.addr, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(a2.gateway, Ipv4Addr::new(10, 77, 0, 254));
        assert_eq!(a2.listen_multiaddr(), "/ip4/10.77.0.2/tcp/4001");
        assert_eq!(a2.up.rate_bps, Some(100_000_000));
        assert_eq!(a2.down.rate_bps, Some(50_000_000));
        assert_eq!(plan.hosts[2].down.loss_pct, 2.0);
        let c250 = plan.hosts.last().unwrap();
        assert_eq!(c250.addr, Ipv4Addr::new(10, 77, 2, 250));
        assert_eq!(c250.site_dev, "h-250");
        // Interface names fit IFNAMSIZ (15 bytes) whatever the site and host names.
        for w in &plan.wans {
            assert!(w.dev.iter().all(|d| d.len() <= 15), "{:?}", w.dev);
        }
        assert_eq!(plan.wans[0].dev, ["wan-bb".to_owned(), "wan-a".to_owned()]);
        assert_eq!(plan.wans[0].label(), "a-bb");
        // a reaches c through bb: the next hop is bb's end of wan 0.
        let a = plan.site("a").unwrap();
        assert_eq!(
            a.routes,
            vec![
                (1, Ipv4Addr::new(10, 78, 0, 2)),
                (2, Ipv4Addr::new(10, 78, 0, 2))
            ]
        );
        let c = plan.site("c").unwrap();
        assert_eq!(
            c.routes,
            vec![
                (0, Ipv4Addr::new(10, 78, 1, 1)),
                (1, Ipv4Addr::new(10, 78, 1, 1))
            ]
        );
        assert_eq!(plan.namespaces().len(), 256);
        assert!(plan.namespaces().iter().all(|n| n.starts_with("vwtb-7-1-")));
    }

    #[test]
    fn too_many_hosts_per_site_is_refused() {
        let topo = Topology::from_toml("[[site]]\nname = \"a\"\nhosts = 251\n").unwrap();
        let err = NetPlan::new("r", &topo).unwrap_err().to_string();
        assert!(err.contains("at most 250"), "{err}");
    }

    #[test]
    fn shapes_become_htb_with_a_loss_filter_and_netem_when_there() {
        let shaped = Shape {
            rate_bps: Some(100_000_000),
            delay: Duration::from_millis(40),
            loss_pct: 2.0,
        };
        let show = |shape: &Shape, netem| -> Vec<String> {
            shape
                .tc_commands("ns", "eth0", netem)
                .iter()
                .map(|c| c.join(" "))
                .collect()
        };
        let class = |id: &str| {
            format!(
                "-n ns class add dev eth0 parent 1: classid {id} htb rate 100000000bit \
                 ceil 100000000bit burst 131072 cburst 131072 quantum 60000"
            )
        };
        let root = "-n ns qdisc add dev eth0 root handle 1: htb default 1".to_owned();
        let netem = "-n ns qdisc add dev eth0 parent 1:1 handle 10: netem limit 100000 \
                     delay 40000us"
            .to_owned();
        let loss = [
            class("1:2"),
            "-n ns qdisc add dev eth0 parent 1:2 handle 20: pfifo limit 0".to_owned(),
            // 2% of 2^32 = 85899345; 0xFFFFF038 is SKF_AD_OFF + SKF_AD_RANDOM.
            "-n ns filter add dev eth0 parent 1: protocol all prio 1 bpf bytecode \
             4,32 0 0 4294963256,53 1 0 85899345,6 0 0 65538,6 0 0 0,"
                .to_owned(),
        ];
        let mut want = vec![root.clone(), class("1:1"), netem];
        want.extend(loss.iter().cloned());
        assert_eq!(show(&shaped, true), want);
        let mut want = vec![root, class("1:1")];
        want.extend(loss.iter().cloned());
        assert_eq!(
            show(&shaped, false),
            want,
            "no netem: no delay, the rest stays"
        );

        assert_eq!(
            show(&Shape::CUT, true),
            ["-n ns qdisc add dev eth0 root handle 1: pfifo limit 0"]
        );
        let delay_only = Shape {
            rate_bps: None,
            delay: Duration::from_millis(1),
            loss_pct: 0.0,
        };
        assert!(delay_only.tc_commands("ns", "w", false).is_empty());
        assert_eq!(delay_only.tc_commands("ns", "w", true).len(), 3);
        let none = Shape {
            rate_bps: None,
            delay: Duration::ZERO,
            loss_pct: 0.0,
        };
        assert!(none.tc_commands("ns", "w", true).is_empty());
    }
}
