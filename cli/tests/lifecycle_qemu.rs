//! A hot workspace moving between two nodes on real QEMU/KVM (`qemu:///system`), through real
//! `vwnet node run` processes with two homes on this machine: deploy a small workspace on A,
//! start it, save it (hot), `undeploy --publish`, deploy the new version on B — which restores
//! the saved memory instead of booting — and B fetched only the chunks it lacked.
//!
//! Opt-in, because it needs root and a running libvirtd (`scripts/setup-libvirtd.sh`):
//!   VWNET_QEMU_TESTS=1 cargo test -p vwnet --test lifecycle_qemu -- --nocapture
//! Without it the test prints why it skipped and passes.

#[path = "swarm_common/mod.rs"]
mod swarm_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use swarm_common::{Node, make_description, publish, random_file, wait_for};

const URI: &str = "qemu:///system";
const SOCKET: &str = "/run/libvirt/libvirt-sock";
const MIB: u64 = 1 << 20;

fn skip_reason() -> Option<String> {
    if std::env::var("VWNET_QEMU_TESTS").as_deref() != Ok("1") {
        return Some("set VWNET_QEMU_TESTS=1 (after scripts/setup-libvirtd.sh) to run it".into());
    }
    if !Path::new(SOCKET).exists() {
        return Some(format!(
            "{SOCKET} is missing: run scripts/setup-libvirtd.sh"
        ));
    }
    None
}

/// Destroys and undefines every domain of the workspace when the test ends, pass or fail, so
/// no QEMU outlives it (the nodes are killed first by their own guards).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(out) = Command::new("virsh")
            .args(["-c", URI, "list", "--all", "--name"])
            .output()
        else {
            return;
        };
        for name in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.starts_with(&self.0))
        {
            let _ = Command::new("virsh")
                .args(["-c", URI, "destroy", name])
                .output();
            let _ = Command::new("virsh")
                .args(["-c", URI, "undefine", name])
                .output();
        }
    }
}

fn knows(node: &Node, ws: &str, version: u64) -> bool {
    let list = node.json(&["ls", "--remote"]);
    list.as_array().is_some_and(|l| {
        l.iter()
            .any(|e| e["workspace"].as_str() == Some(ws) && e["version"].as_u64() >= Some(version))
    })
}

#[test]
fn hot_workspace_moves_to_a_second_node_and_only_missing_chunks_travel() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hv = ["--hypervisor", URI];
    let a = Node::start(dir.path(), "qa", &hv);
    let b = Node::start(
        dir.path(),
        "qb",
        &["--hypervisor", URI, "--bootstrap", &a.addr()],
    );

    // A tiny machine: 128 MiB, one vCPU, a raw 16 MiB disk (4 MiB of data), empty CD-ROM.
    let desc = make_description(&a.home, "tiny");
    let text = std::fs::read_to_string(&desc)
        .unwrap()
        .replace("min = 512\nmax = 2048", "min = 128\nmax = 128")
        .replace("min = 1\nmax = 2", "min = 1\nmax = 1")
        .replace("type = \"qcow2\"", "type = \"raw\"")
        .replace("access = \"copy-on-write\"", "access = \"read-write\"");
    std::fs::write(&desc, text).unwrap();
    let image = dir.path().join("tiny.raw");
    random_file(&image, 4 * MIB as usize, 21);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let (ws, _) = publish(&a, &desc, &image);
    let _cleanup = Cleanup(format!("vwnet-{}-", &ws[..8]));
    wait_for(Duration::from_secs(30), "B to learn the workspace", || {
        knows(&b, &ws, 1).then_some(())
    });
    // B already holds version 1 (e.g. it ran the workspace before).
    b.json(&["pull", &ws]);

    let d = a.json(&["deploy", &ws, "--uri", URI]);
    assert_eq!(
        (d["hot"].as_bool(), d["memory_mib"].as_u64()),
        (Some(false), Some(128)),
        "{d}"
    );
    assert_eq!(a.json(&["start", &ws])["state"], "running");
    let saved = a.json(&["save", &ws]);
    assert_eq!(saved["state"]["state"], "paused", "{saved}");
    assert_eq!(saved["state"]["domain_state"], "shutoff", "{saved}");
    let state_bytes = saved["bytes"].as_u64().unwrap();
    assert!(state_bytes > 0 && state_bytes < 128 * MIB, "{saved}");
    let u = a.json(&["undeploy", &ws, "--publish"]);
    assert_eq!(
        (u["published"].as_u64(), u["state"].as_str()),
        (Some(2), Some("paused")),
        "{u}"
    );
    let new_bytes = u["new_bytes"].as_u64().unwrap();

    wait_for(Duration::from_secs(30), "B to learn version 2", || {
        knows(&b, &ws, 2).then_some(())
    });
    let d = b.json(&["deploy", &ws, "--uri", URI]);
    assert_eq!(d["hot"], true, "B restores the saved memory: {d}");
    assert_eq!(d["state"]["state"], "paused", "{d}");
    let fetched = d["pull"]["bytes_fetched"].as_u64().unwrap();
    assert!(fetched > 0, "the memory state is new to B: {d}");
    assert!(
        fetched <= new_bytes,
        "B fetched {fetched} bytes, more than the {new_bytes} new ones: {d}"
    );
    assert!(
        d["pull"]["bytes_local"].as_u64().unwrap() >= 4 * MIB,
        "the unchanged disk came from B's own store: {d}"
    );
    eprintln!(
        "memory state {state_bytes} B; new chunks {new_bytes} B; B fetched {fetched} B; restore {} ms",
        d["define_millis"]
    );
    assert_eq!(b.json(&["unpause", &ws])["state"], "running");
    let s = b.json(&["ws-state", &ws]);
    assert_eq!(s["domain_state"], "running", "{s}");
    b.json(&["stop", &ws, "--force"]);
    b.json(&["undeploy", &ws]);
}
