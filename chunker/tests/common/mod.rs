//! Test images and helpers shared by the chunker's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use vwnet_chunker::{IngestOptions, IngestReport, Store};

pub const MIB: usize = 1024 * 1024;

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode keyed by `seed`).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut out = vec![0u8; len];
    blake3::Hasher::new_keyed(&key)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// BLAKE3 of a file's contents, streamed.
pub fn file_hash(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize()
}

/// Allocated bytes of a file (holes excluded).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p
}

/// Ingests a file with default options and no progress output.
pub fn ingest(store: &Store, path: &Path) -> IngestReport {
    store
        .ingest_file(path, &IngestOptions::default(), &mut |_, _| {})
        .unwrap()
}

/// Exports `report.image` and asserts the result is byte-identical to `original`.
pub fn assert_round_trip(store: &Store, report: &IngestReport, original: &Path, out: &Path) {
    store.export(&report.image, out, &mut |_, _| {}).unwrap();
    assert_eq!(
        fs::metadata(out).unwrap().len(),
        fs::metadata(original).unwrap().len()
    );
    assert_eq!(
        file_hash(out),
        file_hash(original),
        "export differs from {}",
        original.display()
    );
}

/// An ext4 image of `size_mib` MiB built by `mkfs.ext4 -d` from copies of the given directories
/// (real files shipped with the OS, so nobody tuned their content for the chunker).
pub fn ext4_image(work: &Path, name: &str, sources: &[&str], size_mib: u64) -> PathBuf {
    let root = work.join(format!("{name}.root"));
    fs::create_dir_all(&root).unwrap();
    for src in sources {
        let status = Command::new("cp")
            .args(["-a", src])
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success(), "cp {src}");
    }
    let img = work.join(format!("{name}.ext4"));
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-E", "root_owner=0:0", "-d"])
        .arg(&root)
        .arg(&img)
        .arg(format!("{size_mib}M"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// A new version of an ext4 image: a copy of `base` with `files` written into it by
/// `debugfs -w`, the way an upgrade changes a disk (existing blocks stay where they are).
pub fn ext4_add_files(base: &Path, new: &Path, files: &[PathBuf]) {
    fs::copy(base, new).unwrap();
    let mut script = String::from("mkdir /added\n");
    for (i, f) in files.iter().enumerate() {
        script.push_str(&format!("write {} /added/f{i}\n", f.display()));
    }
    let cmds = new.with_extension("debugfs");
    fs::write(&cmds, script).unwrap();
    let out = Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&cmds)
        .arg(new)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
