//! mDNS discovery on a site LAN: nodes on one link find each other with no addresses given,
//! and a node started with `--no-mdns` neither finds nor is found.
//!
//! mDNS sends multicast, so the test never runs it on the machine's own interfaces: it builds a
//! private link (three network namespaces joined by a bridge in a fourth) and removes it again,
//! also when an assertion fails. It needs root (CI runs as root); elsewhere it fails with a
//! clear message unless `VWNET_SKIP_NETNS=1` is set.

mod swarm_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use swarm_common::{json, vwnet_bin, wait_for};

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and links made by this test; dropping it removes them (deleting a namespace
/// deletes the veth ends inside it and their peers).
struct Lan {
    prefix: String,
    hosts: usize,
}

impl Lan {
    /// Builds `hosts` namespaces `<prefix>-hN` with address 10.213.0.N/24, bridged in
    /// `<prefix>-sw`.
    fn new(hosts: usize) -> Lan {
        let lan = Lan {
            prefix: format!("vwmd{}", std::process::id()),
            hosts,
        };
        let sw = lan.switch();
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for n in 1..=hosts {
            let ns = lan.host(n);
            let (inner, outer) = (format!("{}h{n}", lan.prefix), format!("{}p{n}", lan.prefix));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns, "name", "eth0"]);
            ip(&["link", "set", &outer, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &outer, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.213.0.{n}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn host(&self, n: usize) -> String {
        format!("{}-h{n}", self.prefix)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in 1..=self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.host(n)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch()])
            .status();
    }
}

/// A node process inside a namespace; killed on drop.
struct NsNode {
    home: PathBuf,
    child: Child,
}

impl NsNode {
    fn start(lan: &Lan, n: usize, dir: &Path, extra: &[&str]) -> NsNode {
        let home = dir.join(format!("h{n}"));
        fs::create_dir_all(&home).unwrap();
        let log = fs::File::create(dir.join(format!("h{n}.log"))).unwrap();
        let listen = format!("/ip4/10.213.0.{n}/tcp/0");
        let child = Command::new("ip")
            .args(["netns", "exec", &lan.host(n), vwnet_bin()])
            .arg("--home")
            .arg(&home)
            .args(["node", "run", "--listen", &listen])
            .args(extra)
            .env("RUST_LOG", "info,libp2p_mdns=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vwnet node run in a namespace");
        let node = NsNode { home, child };
        // The control socket is a file: it answers from outside the namespace.
        wait_for(Duration::from_secs(30), "the node to answer", || {
            swarm_common::run(&node.home, &["node", "status"])
                .status
                .success()
                .then_some(())
        });
        node
    }

    fn peers(&self) -> Vec<String> {
        json(&self.home, &["node", "status"])["peers"]
            .as_array()
            .map(|peers| {
                peers
                    .iter()
                    .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn peer_id(&self) -> String {
        json(&self.home, &["node", "status"])["peer_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn nodes_on_one_lan_find_each_other_by_mdns_unless_it_is_off() {
    if !is_root() {
        assert!(
            std::env::var_os("VWNET_SKIP_NETNS").is_some(),
            "this test builds network namespaces and needs root; set VWNET_SKIP_NETNS=1 to skip it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(3);
    let a = NsNode::start(&lan, 1, dir.path(), &[]);
    let b = NsNode::start(&lan, 2, dir.path(), &[]);
    let quiet = NsNode::start(&lan, 3, dir.path(), &["--no-mdns"]);

    let (a_id, b_id, quiet_id) = (a.peer_id(), b.peer_id(), quiet.peer_id());
    wait_for(
        Duration::from_secs(30),
        "a and b to find each other",
        || (a.peers().contains(&b_id) && b.peers().contains(&a_id)).then_some(()),
    );

    // a and b have exchanged several mDNS rounds by now; give the silent node the same time
    // again, in which it must stay unknown and alone.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !a.peers().contains(&quiet_id) && !b.peers().contains(&quiet_id),
        "a node with mDNS off was discovered"
    );
    assert!(
        quiet.peers().is_empty(),
        "a node with mDNS off found peers: {:?}",
        quiet.peers()
    );
}
