//! `vwnet image` / `vwnet store` as a user runs them: real processes, a temporary home.

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const MIB: usize = 1024 * 1024;

fn vwnet(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vwnet"));
    c.arg("--home").arg(home);
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    vwnet(home).args(args).output().unwrap()
}

fn json(home: &Path, args: &[&str]) -> Value {
    let out = vwnet(home).arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift; fast enough in debug builds).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn image(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p
}

#[test]
fn add_ls_export_diff_verify_gc_stats() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let base = pseudo_random(1, 4 * MIB);
    let mut v2 = base.clone();
    v2.splice(MIB..MIB, pseudo_random(2, 1000));
    let a = image(dir.path(), "a.img", &base);
    let b = image(dir.path(), "b.img", &v2);

    let ra = json(&home, &["image", "add", a.to_str().unwrap()]);
    let id_a = ra["image"].as_str().unwrap().to_string();
    assert_eq!(ra["size"], 4 * MIB as u64);
    assert_eq!(ra["new_bytes"], 4 * MIB as u64);
    // Through stdin: same id, nothing new stored.
    let mut child = vwnet(&home)
        .args(["--json", "image", "add", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&base).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let rs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rs["image"].as_str(), Some(id_a.as_str()));
    assert_eq!(rs["new_bytes"], 0);

    let rb = json(&home, &["image", "add", b.to_str().unwrap()]);
    let id_b = rb["image"].as_str().unwrap().to_string();
    assert!(rb["new_chunks"].as_u64().unwrap() <= 3);

    let ls = json(&home, &["image", "ls"]);
    assert_eq!(ls.as_array().unwrap().len(), 2);
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .all(|i| i["complete"] == true && i["pinned"] == true)
    );

    let d = json(&home, &["image", "diff", &id_a, &id_b]);
    assert!(d["shared_bytes"].as_u64().unwrap() > 3 * MIB as u64);

    let out = dir.path().join("out.img");
    json(
        &home,
        &["image", "export", &id_b[..10], "-o", out.to_str().unwrap()],
    );
    assert_eq!(fs::read(&out).unwrap(), v2);
    // Refuses to overwrite without --force; replaces with it.
    let again = run(
        &home,
        &["image", "export", &id_a, "-o", out.to_str().unwrap()],
    );
    assert!(!again.status.success());
    json(
        &home,
        &[
            "image",
            "export",
            &id_a,
            "-o",
            out.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(fs::read(&out).unwrap(), base);

    let v = json(&home, &["image", "verify"]);
    assert!(v["corrupt"].as_array().unwrap().is_empty());
    let g = json(&home, &["store", "gc"]);
    assert_eq!(g["deleted_chunks"], 0);
    let s = json(&home, &["store", "stats"]);
    assert_eq!(s["images"], 2);
    assert_eq!(s["complete_images"], 2);
}

#[test]
fn errors_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out.img");
    let unknown = "ab".repeat(32);
    let r = run(
        &home,
        &["image", "export", &unknown, "-o", out.to_str().unwrap()],
    );
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("unknown image"), "{err}");
    assert!(!out.exists());
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".vwnet-export")
    }));

    let r = vwnet(&home)
        .args(["--json", "image", "add", "/nonexistent.img"])
        .output()
        .unwrap();
    assert!(!r.status.success());
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("/nonexistent.img"));

    let r = run(&home, &["image", "add", "-", "--raw"]);
    assert!(!r.status.success());
    let r = run(&home, &["image", "verify", "zz"]);
    assert!(!r.status.success());
}

#[test]
fn raw_conversion_of_qcow2_gives_the_raw_image_id() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        eprintln!("qemu-img not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut data = pseudo_random(3, 2 * MIB);
    data.resize(6 * MIB, 0);
    let raw = image(dir.path(), "disk.raw", &data);
    let qcow = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());
    let r_raw = json(&home, &["image", "add", raw.to_str().unwrap()]);
    let r_conv = json(&home, &["image", "add", qcow.to_str().unwrap(), "--raw"]);
    assert_eq!(r_conv["image"], r_raw["image"]);
    assert_eq!(r_conv["new_bytes"], 0);
    assert!(
        fs::read_dir(home.join("store/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "temp raw file removed"
    );
}

/// `kill -9` of `vwnet image add` at several points: the store must open, verify clean, and every
/// image it reports complete must export byte-identical to the file it came from.
#[test]
fn kill_9_during_image_add_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let base = pseudo_random(100, 6 * MIB);
    let base_path = image(dir.path(), "base.img", &base);
    let base_id = json(&home, &["image", "add", base_path.to_str().unwrap()])["image"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sources = vec![base_path];
    // How long one uninterrupted add of a round-sized image takes here, to spread kill points
    // over the whole add, including just after it committed.
    let mut probe = base.clone();
    probe.extend(pseudo_random(99, 12 * MIB));
    let probe_path = image(dir.path(), "probe.img", &probe);
    let started = std::time::Instant::now();
    json(&home, &["image", "add", probe_path.to_str().unwrap()]);
    let full = started.elapsed().as_millis() as u64 + 1;
    sources.push(probe_path);

    // Kill points spread over the add's lifetime (open, chunking, fsync, commit), shuffled by
    // the clock so that repeated runs probe different instants; the seed is printed on failure.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("kill-9 seed {seed}");
    let mut x = seed | 1;
    let mut killed = 0u32;
    for round in 0..8u64 {
        // Each image shares the base and adds new data, so kills land in dedup and in writes.
        let mut data = base.clone();
        data.extend(pseudo_random(200 + round, 12 * MIB));
        let path = image(dir.path(), &format!("v{round}.img"), &data);
        sources.push(path.clone());
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(x % (full * 5 / 4));
        let mut child = vwnet(&home)
            .args(["image", "add", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Deliberately racing: where the process is when it dies is the thing under test.
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        killed += u32::from(status.signal() == Some(9));

        let verify = vwnet(&home)
            .args(["--json", "image", "verify"])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert!(
            verify.status.success(),
            "round {round} (delay {delay:?}, seed {seed}): verify not clean: {report}"
        );
        for img in json(&home, &["image", "ls"]).as_array().unwrap() {
            assert_eq!(img["complete"], true, "round {round}: {img}");
            let id = img["image"].as_str().or(img["id"].as_str()).unwrap();
            let out = dir.path().join("check.img");
            let _ = fs::remove_file(&out);
            json(&home, &["image", "export", id, "-o", out.to_str().unwrap()]);
            let got = fs::read(&out).unwrap();
            assert!(
                sources.iter().any(|s| fs::read(s).unwrap() == got),
                "round {round}: image {id} exports bytes that match no source"
            );
        }
    }
    eprintln!("{killed} of 8 adds were killed before finishing");
    assert!(
        killed >= 1,
        "no add was interrupted, nothing was tested (seed {seed})"
    );
    let out = dir.path().join("base.out");
    json(
        &home,
        &["image", "export", &base_id, "-o", out.to_str().unwrap()],
    );
    assert_eq!(fs::read(&out).unwrap(), base);
}
