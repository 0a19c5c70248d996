//! The netns testbed leaves nothing behind: not after a panic, not after SIGTERM, and after a
//! SIGKILL `vwnet-testbed cleanup` removes what the dead run left. Needs root (see
//! `netns_available`).

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use vwnet_sim::topology::Topology;
use vwnet_tests::testbed::{Options, Testbed, find_vwnet, netns_available, netns_list, wait_for};

/// One testbed at a time: the machine has few cores and the timings matter.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const TWO_SITES_16: &str = r#"
name = "two-sites-16"
[defaults]
uplink = "100mbit"
downlink = "100mbit"
delay = "1ms"
[[site]]
name = "a"
hosts = 8
[[site]]
name = "b"
hosts = 8
[[wan]]
sites = ["a", "b"]
rate = "50mbit"
delay = "40ms"
"#;

fn namespaces_of(run: &str) -> Vec<String> {
    let prefix = format!("{run}-");
    netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn root_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// What a test needs to check that a run is gone.
#[derive(Default, Clone)]
struct Seen {
    run: String,
    dir: PathBuf,
    pids: Vec<u32>,
}

#[test]
fn sixteen_host_two_site_topology_is_removed_after_a_deliberate_failure() {
    if !netns_available().unwrap() {
        return;
    }
    let _serial = serial();
    let topo = Topology::from_toml(TWO_SITES_16).unwrap();
    let links_before = root_links();
    let seen = Mutex::new(Seen::default());
    let result = std::panic::catch_unwind(|| {
        let mut options = Options::new(find_vwnet().unwrap());
        options.logs_on_panic = false;
        let mut tb = Testbed::create(&topo, options).unwrap();
        seen.lock().unwrap().run = tb.run_id().to_owned();
        seen.lock().unwrap().dir = tb.dir().to_owned();
        assert_eq!(namespaces_of(tb.run_id()).len(), 18, "16 hosts + 2 sites");
        tb.start_nodes(|_| Vec::new()).unwrap();
        let names = tb.host_names();
        seen.lock().unwrap().pids = names.iter().filter_map(|h| tb.node_pid(h)).collect();
        assert_eq!(seen.lock().unwrap().pids.len(), 16);
        // b8 bootstrapped to a1 across the WAN: the routing between sites works.
        wait_for(Duration::from_secs(30), "b8 to connect", || {
            (tb.peer_count("b8").ok()? > 0).then_some(())
        })
        .unwrap();
        // A byte counter moves on the shaped WAN link.
        assert!(tb.wan_counters("a", "b").unwrap().rx_bytes > 0);
        panic!("deliberate failure with the testbed up");
    });
    let err = result.expect_err("the closure fails on purpose");
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        msg.contains("deliberate failure"),
        "failed for another reason: {msg}"
    );
    let seen = seen.into_inner().unwrap();
    assert!(!seen.run.is_empty());
    assert_eq!(
        namespaces_of(&seen.run),
        Vec::<String>::new(),
        "namespaces left"
    );
    let left: Vec<u32> = seen.pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "node processes left: {left:?}");
    assert!(
        !seen.dir.exists(),
        "scratch dir left: {}",
        seen.dir.display()
    );
    let new_links: Vec<String> = root_links().difference(&links_before).cloned().collect();
    assert!(
        new_links.is_empty(),
        "links left in the root namespace: {new_links:?}"
    );
}

const SMALL: &str = r#"
[defaults]
uplink = "100mbit"
downlink = "100mbit"
[[site]]
name = "a"
hosts = 2
[[site]]
name = "b"
hosts = 1
[[wan]]
sites = ["a", "b"]
rate = "50mbit"
delay = "5ms"
"#;

/// Starts `vwnet-testbed up` with nodes and returns it with the run id and scratch dir.
fn up(topology: &Path) -> (std::process::Child, String, PathBuf) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vwnet-testbed"))
        .args(["--json", "up"])
        .arg(topology)
        .arg("--vwnet")
        .arg(find_vwnet().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("`up` printed no JSON ({e}): {line:?}"));
    let run = info["run"].as_str().unwrap().to_owned();
    let dir = PathBuf::from(info["dir"].as_str().unwrap());
    (child, run, dir)
}

fn pids_in(run: &str) -> Vec<u32> {
    namespaces_of(run)
        .iter()
        .flat_map(|ns| {
            let out = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[test]
fn sigterm_removes_the_run_and_cleanup_removes_a_sigkilled_one() {
    if !netns_available().unwrap() {
        return;
    }
    let _serial = serial();
    let scratch = tempfile::tempdir().unwrap();
    let topo = scratch.path().join("small.toml");
    std::fs::write(&topo, SMALL).unwrap();

    // SIGTERM: the handler removes everything and exits as the signal would have.
    let (mut child, run, dir) = up(&topo);
    assert_eq!(namespaces_of(&run).len(), 5);
    let pids = pids_in(&run);
    assert_eq!(pids.len(), 3, "one node per host");
    let kill = |sig: &str, pid: u32| {
        assert!(
            Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    kill("-TERM", child.id());
    let status = wait_for(Duration::from_secs(30), "up to exit", || {
        child.try_wait().unwrap()
    })
    .unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_eq!(namespaces_of(&run), Vec::<String>::new());
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "node processes survived SIGTERM"
    );
    assert!(!dir.exists());

    // SIGKILL: everything stays (nodes included) until `cleanup` finds the dead owner.
    let (mut child, run, dir) = up(&topo);
    let pids = pids_in(&run);
    assert_eq!(pids.len(), 3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        namespaces_of(&run).len(),
        5,
        "a SIGKILLed run cannot clean up"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vwnet-testbed"))
        .args(["--json", "cleanup"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == run.as_str()),
        "{report}"
    );
    assert_eq!(namespaces_of(&run), Vec::<String>::new());
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "node processes survived cleanup"
    );
    assert!(!dir.exists());
}
