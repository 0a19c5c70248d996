//! Running the system tools (`ip`, `tc`, `kill`) that build, inspect and tear down a testbed.
//!
//! Every call captures stderr so that a failure names the exact command and the tool's own
//! words; nothing here touches the root namespace's links or addresses.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::TestbedError;

/// The command line as one string, for error messages.
pub(crate) fn show(program: &str, args: &[String]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args`, returning stdout, or an error naming the command and its stderr.
pub(crate) fn run(program: &str, args: &[String]) -> Result<String, TestbedError> {
    let out = output(program, args)?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            command: show(program, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` and returns its output whatever the exit status.
pub(crate) fn output(program: &str, args: &[String]) -> Result<Output, TestbedError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestbedError::Spawn {
            command: show(program, args),
            source,
        })
}

/// `ip ARGS`.
pub(crate) fn ip(args: &[&str]) -> Result<String, TestbedError> {
    run("ip", &owned(args))
}

/// `tc ARGS`.
pub(crate) fn tc(args: &[String]) -> Result<String, TestbedError> {
    run("tc", args)
}

/// Turns borrowed arguments into owned ones.
pub(crate) fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether this process runs as root (the testbed needs CAP_NET_ADMIN and CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the effective uid of the reading process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether process `pid` still exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends SIGKILL to each pid and waits (up to 10 s) until none of them is alive.
pub(crate) fn kill_and_wait(pids: &[u32]) -> Result<(), TestbedError> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["-KILL".to_owned()];
    args.extend(pids.iter().map(u32::to_string));
    // A pid may exit between listing and killing: that is success, so the status is ignored.
    let _ = output("kill", &args)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TestbedError::Timeout {
                what: format!("processes {left:?} to die after SIGKILL"),
                secs: 10,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every network namespace name (`ip netns list`).
pub fn netns_list() -> Result<Vec<String>, TestbedError> {
    let out = ip(&["netns", "list"])?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The pids of the processes inside namespace `ns`.
pub(crate) fn netns_pids(ns: &str) -> Result<Vec<u32>, TestbedError> {
    let out = ip(&["netns", "pids", ns])?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills everything inside `ns` and deletes it; a namespace already gone is fine.
pub(crate) fn remove_netns(ns: &str) -> Result<(), TestbedError> {
    if !Path::new("/run/netns").join(ns).exists() {
        return Ok(());
    }
    // A namespace whose processes live on survives `ip netns del` unseen: kill them first.
    kill_and_wait(&netns_pids(ns)?)?;
    ip(&["netns", "del", ns]).map(drop)
}

/// Receive and transmit byte counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkCounters {
    /// Bytes received by the interface.
    pub rx_bytes: u64,
    /// Bytes sent by the interface.
    pub tx_bytes: u64,
}

impl LinkCounters {
    /// The counts accumulated since `earlier`.
    pub fn since(self, earlier: LinkCounters) -> LinkCounters {
        LinkCounters {
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
        }
    }
}

/// The byte counters of `dev` in namespace `ns` (`ip -s -j link show`).
pub(crate) fn counters(ns: &str, dev: &str) -> Result<LinkCounters, TestbedError> {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", dev])?;
    let bad = |why: &str| TestbedError::Command {
        command: format!("ip -n {ns} -s -j link show dev {dev}"),
        status: "exit status: 0".into(),
        stderr: format!("unexpected output ({why}): {out}"),
    };
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| bad(&e.to_string()))?;
    let stats = &v[0]["stats64"];
    let get = |dir: &str| stats[dir]["bytes"].as_u64().ok_or_else(|| bad(dir));
    Ok(LinkCounters {
        rx_bytes: get("rx")?,
        tx_bytes: get("tx")?,
    })
}
