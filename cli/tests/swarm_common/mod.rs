//! Helpers for swarm tests over real `vwnet node run` processes on 127.0.0.1.
//!
//! Every wait polls a condition with a deadline (no fixed sleeps); mDNS is always off (it would
//! send multicast off the loopback interface).

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn vwnet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vwnet")
}

/// Polls `cond` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `vwnet --home HOME ARGS`.
pub fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(vwnet_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vwnet")
}

/// Runs `vwnet --home HOME --json ARGS`, asserting success, and parses stdout.
pub fn json(home: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(home, &all);
    assert!(
        out.status.success(),
        "vwnet {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vwnet {args:?}: bad JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A running node process with its own home directory.
pub struct Node {
    /// Its home directory.
    pub home: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Node {
    /// Starts a node in `dir/name` with `extra` flags and waits until it answers.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Node {
        let home = dir.join(name);
        fs::create_dir_all(&home).unwrap();
        let mut node = Node {
            log: dir.join(format!("{name}.log")),
            home,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.restart();
        node
    }

    /// Starts the process again (after [`Node::kill9`] or [`Node::stop`]).
    pub fn restart(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(vwnet_bin())
            .arg("--home")
            .arg(&self.home)
            .args([
                "node",
                "run",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
            ])
            .args(&self.extra)
            .env("RUST_LOG", "info,vwnet_node=debug,libp2p=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vwnet node run");
        self.child = Some(child);
        let home = self.home.clone();
        wait_for(Duration::from_secs(30), "the node to answer", || {
            let out = run(&home, &["--json", "node", "status"]);
            out.status.success().then_some(())
        });
    }

    /// `vwnet node status` as JSON.
    pub fn status(&self) -> Value {
        json(&self.home, &["node", "status"])
    }

    /// A dialable address of this node: `/ip4/127.0.0.1/tcp/PORT/p2p/PEERID`.
    pub fn addr(&self) -> String {
        let s = self.status();
        let listen = s["listen"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find_map(|a| a.as_str().filter(|a| a.contains("/tcp/")))
            })
            .expect("a TCP listen address")
            .to_owned();
        format!("{listen}/p2p/{}", s["peer_id"].as_str().unwrap())
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> String {
        self.status()["peer_id"].as_str().unwrap().to_owned()
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.status()["peers"].as_array().map_or(0, Vec::len)
    }

    /// Runs a CLI command against this node's home, asserting success, parsing JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        json(&self.home, args)
    }

    /// Runs a CLI command against this node's home.
    pub fn run(&self, args: &[&str]) -> Output {
        run(&self.home, args)
    }

    /// Kills the process with SIGKILL (no cleanup at all).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("node running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        wait_for(Duration::from_secs(20), "the node to exit", || {
            c.try_wait().ok().flatten()
        })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Makes a user key and a v1 description in `home`; returns the description path.
pub fn make_description(home: &Path, name: &str) -> PathBuf {
    fs::create_dir_all(home).unwrap();
    let out = run(home, &["key", "new"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let desc = home.join(format!("{name}.toml"));
    let out = run(home, &["desc", "new", "-o", desc.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&desc).unwrap();
    fs::write(
        &desc,
        text.replace("\"my-workspace\"", &format!("\"{name}\"")),
    )
    .unwrap();
    desc
}

/// Writes `len` pseudo-random bytes (deterministic per `seed`) to `path`.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        // xorshift64*: fast, and incompressible enough that no chunk repeats.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    data.truncate(len);
    fs::write(path, data).unwrap();
}

/// Publishes `image` with `desc` on `node`; returns (workspace id, disk image id).
pub fn publish(node: &Node, desc: &Path, image: &Path) -> (String, String) {
    let v = node.json(&[
        "publish",
        "--desc",
        desc.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ]);
    (
        v["workspace"].as_str().unwrap().to_owned(),
        v["disk"].as_str().unwrap().to_owned(),
    )
}

/// Exports `image` from `node` and asserts it equals `original`.
pub fn assert_export_identical(node: &Node, image: &str, original: &Path, scratch: &Path) {
    let out = scratch.join(format!(
        "export-{}.raw",
        node.home.file_name().unwrap().to_string_lossy()
    ));
    node.json(&["node", "export", image, "--out", out.to_str().unwrap()]);
    assert!(
        same_contents(original, &out),
        "export from {} differs from the original",
        node.home.display()
    );
    let _ = fs::remove_file(&out);
}

/// Whether two files hold the same bytes, compared in blocks (images are hundreds of MiB).
pub fn same_contents(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The body of `GET /metrics` from `addr` (a plain HTTP/1.1 exchange).
pub fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out)
}
