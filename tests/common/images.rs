//! Test images that nobody hand-tuned, for chunking, dedup and store tests and the benchmarks.
//!
//! - **Realistic**: two versions of an ext4 disk image built with `mkfs.ext4 -d` from the files
//!   of Debian packages installed on this machine (`/var/lib/dpkg/info/*.list`). Version 2 drops
//!   every tenth package of version 1 and installs more packages, as an upgrade would; the
//!   allocator therefore lays most files out at different offsets. Both are deterministic on a
//!   given machine: fixed UUID and hash seed, `E2FSPROGS_FAKE_TIME`, fixed file times, and the
//!   inode change times (which `mkfs -d` copies from the source files) reset with `debugfs`.
//! - **Synthetic**: seeded random bytes, zeros, a sparse file, a copy with a fraction of its bytes
//!   changed in place, and a copy with bytes inserted at an offset (shifting all later bytes).
//!
//! Every generator writes into the directory of a [`TestImages`] (a temporary directory unless
//! made with [`TestImages::in_dir`]) and returns the path. Memory stays bounded: images are
//! streamed in 1 MiB blocks.

use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

/// Fixed time for every file and for `mkfs.ext4` (`E2FSPROGS_FAKE_TIME`): 2023-11-14 22:13:20 UTC.
const FIXED_TIME: u64 = 1_700_000_000;
/// Fixed filesystem UUID, also used as the directory hash seed.
const FIXED_UUID: &str = "6d3c2a1e-0b5f-4c7e-9a8d-5657776e6574";
/// Block size for streaming generators.
const BLOCK: usize = 1 << 20;

/// How much package data goes into each ext4 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext4Scale {
    /// About 24 MiB of files in a 48 MiB image: fast enough for `cargo test`.
    Test,
    /// About 600 MiB of files in a 1 GiB image: for the benchmarks.
    Bench,
}

impl Ext4Scale {
    /// Bytes of package files copied into version 1.
    fn content(self) -> u64 {
        match self {
            Self::Test => 24 << 20,
            Self::Bench => 600 << 20,
        }
    }

    /// Size of each image.
    fn image(self) -> u64 {
        match self {
            Self::Test => 48 << 20,
            Self::Bench => 1 << 30,
        }
    }
}

/// Two versions of one ext4 disk image and what went into them.
#[derive(Debug, Clone)]
pub struct Ext4Pair {
    /// Version 1.
    pub v1: PathBuf,
    /// Version 2: some of v1's packages removed, more added.
    pub v2: PathBuf,
    /// Packages whose files are in v1.
    pub v1_packages: Vec<String>,
    /// Packages whose files are in v2.
    pub v2_packages: Vec<String>,
}

/// A directory of generated images.
#[derive(Debug)]
pub struct TestImages {
    root: PathBuf,
    /// Deletes the directory on drop, when it is temporary.
    _temp: Option<TempDir>,
}

impl TestImages {
    /// Images in a fresh temporary directory, deleted on drop.
    pub fn new() -> io::Result<Self> {
        let temp = tempfile::Builder::new().prefix("vwnet-images-").tempdir()?;
        Ok(Self {
            root: temp.path().to_path_buf(),
            _temp: Some(temp),
        })
    }

    /// Images in `dir` (created if missing), kept after drop: for benchmarks.
    pub fn in_dir(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let root = dir.into();
        fs::create_dir_all(&root)?;
        Ok(Self { root, _temp: None })
    }

    /// The directory holding the images.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `len` seeded pseudo-random bytes (xorshift64*: incompressible, reproducible).
    pub fn random(&self, name: &str, len: u64, seed: u64) -> io::Result<PathBuf> {
        let path = self.root.join(name);
        let mut out = BufWriter::with_capacity(BLOCK, File::create(&path)?);
        let mut rng = Rng::new(seed);
        let mut block = vec![0u8; BLOCK];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(BLOCK as u64)).map_err(io::Error::other)?;
            rng.fill(&mut block[..n]);
            out.write_all(&block[..n])?;
            left -= n as u64;
        }
        finish(out)?;
        Ok(path)
    }

    /// `len` zero bytes, written out (not a hole): what a zeroed disk looks like to a reader.
    pub fn zeros(&self, name: &str, len: u64) -> io::Result<PathBuf> {
        let path = self.root.join(name);
        let mut out = BufWriter::with_capacity(BLOCK, File::create(&path)?);
        let block = vec![0u8; BLOCK];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(BLOCK as u64)).map_err(io::Error::other)?;
            out.write_all(&block[..n])?;
            left -= n as u64;
        }
        finish(out)?;
        Ok(path)
    }

    /// A sparse file of `len` bytes: holes, with a 64 KiB island of random data every 64 MiB
    /// (and one at the very end), like a freshly provisioned thin disk. Creating it is cheap
    /// whatever `len` is; reading it is not.
    pub fn sparse(&self, name: &str, len: u64, seed: u64) -> io::Result<PathBuf> {
        let path = self.root.join(name);
        let file = File::create(&path)?;
        file.set_len(len)?;
        let mut rng = Rng::new(seed);
        let mut island = vec![0u8; 64 << 10];
        let mut at = 0u64;
        while at < len {
            write_island(&file, &mut rng, &mut island, at, len)?;
            at += 64 << 20;
        }
        let last = len.saturating_sub(island.len() as u64);
        write_island(&file, &mut rng, &mut island, last, len)?;
        file.sync_all()?;
        Ok(path)
    }

    /// A copy of `src` in which runs of `run` bytes, `fraction` of the file in total (rounded up
    /// to whole runs), are overwritten in place with random bytes at seeded random offsets (non-overlapping,
    /// `run`-aligned, like a guest rewriting filesystem blocks).
    pub fn modified_in_place(
        &self,
        src: &Path,
        name: &str,
        fraction: f64,
        run: u64,
        seed: u64,
    ) -> io::Result<PathBuf> {
        let path = self.root.join(name);
        fs::copy(src, &path)?;
        let file = File::options().write(true).open(&path)?;
        let len = file.metadata()?.len();
        let run = run.max(1);
        let slots = len / run;
        // At least one run, so that a small image is never left unchanged by a small fraction.
        let wanted = ((len as f64 * fraction) / run as f64).ceil().max(1.0) as u64;
        let mut rng = Rng::new(seed);
        let mut chosen = BTreeSet::new();
        // Rejection sampling stays quick while wanted is a small fraction of slots.
        while (chosen.len() as u64) < wanted.min(slots) {
            chosen.insert(rng.next() % slots);
        }
        let mut block = vec![0u8; usize::try_from(run).map_err(io::Error::other)?];
        for slot in chosen {
            rng.fill(&mut block);
            file.write_all_at(&block, slot * run)?;
        }
        file.sync_all()?;
        Ok(path)
    }

    /// A copy of `src` with `len` random bytes inserted at `at`, shifting every later byte.
    pub fn with_insertion(
        &self,
        src: &Path,
        name: &str,
        at: u64,
        len: usize,
        seed: u64,
    ) -> io::Result<PathBuf> {
        let path = self.root.join(name);
        let mut input = BufReader::with_capacity(BLOCK, File::open(src)?);
        let mut out = BufWriter::with_capacity(BLOCK, File::create(&path)?);
        let copied = io::copy(&mut (&mut input).take(at), &mut out)?;
        if copied != at {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("insertion offset {at} is past the end of {}", src.display()),
            ));
        }
        let mut inserted = vec![0u8; len];
        Rng::new(seed).fill(&mut inserted);
        out.write_all(&inserted)?;
        io::copy(&mut input, &mut out)?;
        finish(out)?;
        Ok(path)
    }

    /// `src` converted to qcow2 with `qemu-img convert -O qcow2`; `None` (with the reason
    /// printed) when `qemu-img` is not installed.
    pub fn qcow2(&self, src: &Path, name: &str) -> io::Result<Option<PathBuf>> {
        if !have_tool("qemu-img") {
            eprintln!("skipping qcow2 image: qemu-img is not installed");
            return Ok(None);
        }
        let path = self.root.join(name);
        run(Command::new("qemu-img")
            .args(["convert", "-q", "-O", "qcow2"])
            .arg(src)
            .arg(&path))?;
        Ok(Some(path))
    }

    /// Two ext4 images from real package files; `None` (with the reason printed) when
    /// `mkfs.ext4` is not installed. Needs `debugfs` too (same package, e2fsprogs).
    pub fn ext4_pair(&self, scale: Ext4Scale) -> io::Result<Option<Ext4Pair>> {
        for tool in ["mkfs.ext4", "debugfs"] {
            if !have_tool(tool) {
                eprintln!("skipping ext4 images: {tool} (e2fsprogs) is not installed");
                return Ok(None);
            }
        }
        let installed = installed_packages()?;
        let (v1_packages, v2_packages) = choose_versions(&installed, scale.content())?;
        let suffix = match scale {
            Ext4Scale::Test => "test",
            Ext4Scale::Bench => "bench",
        };
        let v1 = self.ext4_image(
            &format!("ext4-{suffix}-v1.img"),
            &v1_packages,
            scale.image(),
        )?;
        let v2 = self.ext4_image(
            &format!("ext4-{suffix}-v2.img"),
            &v2_packages,
            scale.image(),
        )?;
        Ok(Some(Ext4Pair {
            v1,
            v2,
            v1_packages: v1_packages.iter().map(|p| p.name.clone()).collect(),
            v2_packages: v2_packages.iter().map(|p| p.name.clone()).collect(),
        }))
    }

    /// Builds one ext4 image of `size` bytes holding the files of `packages`.
    fn ext4_image(&self, name: &str, packages: &[Package], size: u64) -> io::Result<PathBuf> {
        // Staging thousands of small files is metadata-bound: tmpfs is much faster than a disk
        // mounted with `discard` (as this machine's is), and the tree is deleted in one go.
        let staging = ["/dev/shm".as_ref(), self.root.as_path()]
            .into_iter()
            .find_map(|dir| {
                tempfile::Builder::new()
                    .prefix("vwnet-ext4-root-")
                    .tempdir_in(dir)
                    .ok()
            })
            .ok_or_else(|| io::Error::other("cannot create a staging directory"))?;
        let root = staging.path();
        let mut created = Vec::new();
        for package in packages {
            for path in &package.files {
                copy_entry(path, root, &mut created)?;
            }
        }
        // Pin every time last: directory times changed as files were added.
        created.sort();
        created.dedup();
        pin_times(root, &created)?;

        let image = self.root.join(name);
        // mkfs refuses to overwrite a non-empty file only when asked; -F keeps reruns working.
        let _ = fs::remove_file(&image);
        run(Command::new("mkfs.ext4")
            .env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
            .args(["-q", "-F", "-b", "4096", "-U", FIXED_UUID, "-E"])
            .arg(format!("hash_seed={FIXED_UUID},root_owner=0:0"))
            .arg("-d")
            .arg(root)
            .arg(&image)
            .arg(format!("{}k", size / 1024)))?;
        // `mkfs -d` copies each source file's ctime, which no one can set; reset it in the image.
        let mut script = String::new();
        let stamp = format!("@{FIXED_TIME}");
        script.push_str(&format!("sif / ctime {stamp}\n"));
        for rel in &created {
            let Some(rel) = rel.to_str() else { continue };
            if rel.contains('"') || rel.contains('\n') {
                continue;
            }
            script.push_str(&format!("sif \"/{rel}\" ctime {stamp}\n"));
        }
        let script_path = self.root.join(format!("{name}.debugfs"));
        fs::write(&script_path, script)?;
        let result = run(Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
            .env("TZ", "UTC")
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(&image));
        let _ = fs::remove_file(&script_path);
        result?;
        Ok(image)
    }
}

/// One installed Debian package and the regular files and symlinks it owns.
#[derive(Debug, Clone)]
struct Package {
    name: String,
    files: Vec<PathBuf>,
    bytes: u64,
}

/// Installed packages in name order with their installed size in bytes (dpkg's estimate).
fn installed_packages() -> io::Result<Vec<(String, u64)>> {
    let out = Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${binary:Package}\t${Installed-Size}\n",
        ])
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(
            "dpkg-query failed: is this a Debian system?",
        ));
    }
    let mut packages: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut fields = l.split('\t');
            let (status, name, kib) = (fields.next()?, fields.next()?, fields.next()?);
            (status.trim() == "ii").then(|| (name.to_string(), kib.parse().unwrap_or(0) * 1024))
        })
        .collect();
    packages.sort();
    Ok(packages)
}

/// The regular files and symlinks of one installed package that are present on disk.
fn load_package(name: &str) -> io::Result<Option<Package>> {
    let info = Path::new("/var/lib/dpkg/info");
    let mut list = info.join(format!("{name}.list"));
    if !list.exists() {
        // Only `Multi-Arch: same` packages have an architecture in their list file's name.
        list = info.join(format!("{}.list", name.split(':').next().unwrap_or(name)));
    }
    let Ok(file) = File::open(&list) else {
        return Ok(None);
    };
    let mut files = Vec::new();
    let mut bytes = 0;
    for line in BufReader::new(file).lines() {
        let path = PathBuf::from(line?);
        // Package files may have been removed by hand or diverted: take what is there.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            bytes += meta.len();
            files.push(path);
        } else if meta.file_type().is_symlink() {
            files.push(path);
        }
    }
    Ok((!files.is_empty()).then(|| Package {
        name: name.to_string(),
        files,
        bytes,
    }))
}

/// Version 1: packages in name order (skipping any bigger than an eighth of the budget) until
/// `budget` bytes. Version 2: version 1 without every tenth package, plus the next packages
/// until it holds 10% more than version 1. Packages are read lazily: only those used are.
fn choose_versions(
    installed: &[(String, u64)],
    budget: u64,
) -> io::Result<(Vec<Package>, Vec<Package>)> {
    let mut candidates = installed.iter().filter(|(_, size)| *size <= budget / 8);
    let mut next = || -> io::Result<Option<Package>> {
        for (name, _) in candidates.by_ref() {
            if let Some(p) = load_package(name)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    };
    let mut v1 = Vec::new();
    let mut total = 0;
    while total < budget {
        let Some(p) = next()? else { break };
        total += p.bytes;
        v1.push(p);
    }
    let mut v2: Vec<Package> = v1
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 9)
        .map(|(_, p)| p.clone())
        .collect();
    let mut total2: u64 = v2.iter().map(|p| p.bytes).sum();
    while total2 < total + total / 10 {
        let Some(p) = next()? else { break };
        total2 += p.bytes;
        v2.push(p);
    }
    Ok((v1, v2))
}

/// Copies one package file or symlink under `root`, recording every path it creates.
fn copy_entry(src: &Path, root: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    let Ok(rel) = src.strip_prefix("/") else {
        return Ok(());
    };
    let dest = root.join(rel);
    if fs::symlink_metadata(&dest).is_ok() {
        // Two packages ship the same path (diversions, shared docs): keep the first.
        return Ok(());
    }
    if let Some(parent) = rel.parent() {
        let mut dir = PathBuf::new();
        for part in parent.components() {
            dir.push(part);
            match fs::symlink_metadata(root.join(&dir)) {
                Ok(meta) if meta.is_dir() => {}
                // A package symlink sits where this path needs a directory. Writing through it
                // could leave the staging tree (absolute targets point into the host), so the
                // entry is skipped, as dpkg would refuse the conflict too.
                Ok(_) => return Ok(()),
                Err(_) => {
                    fs::create_dir(root.join(&dir))?;
                    created.push(dir.clone());
                }
            }
        }
    }
    let meta = fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, &dest)?;
    } else {
        match fs::copy(src, &dest) {
            Ok(_) => {}
            // Unreadable files (rare, e.g. removed mid-run) are skipped, not fatal.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    created.push(rel.to_path_buf());
    Ok(())
}

/// Sets the access and modification time of `root` and every path under it in `created` to
/// [`FIXED_TIME`], without following symlinks (whose own times `mkfs -d` copies too).
fn pin_times(root: &Path, created: &[PathBuf]) -> io::Result<()> {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_TIME);
    let times = FileTimes::new().set_accessed(t).set_modified(t);
    let mut links = Vec::new();
    for rel in created.iter().rev() {
        let path = root.join(rel);
        if fs::symlink_metadata(&path)?.file_type().is_symlink() {
            links.push(path);
        } else {
            File::open(&path)?.set_times(times)?;
        }
    }
    File::open(root)?.set_times(times)?;
    // std cannot set a symlink's own times without libc; `touch -h` can, many at a time.
    for batch in links.chunks(500) {
        run(Command::new("touch")
            .arg("-h")
            .arg("-d")
            .arg(format!("@{FIXED_TIME}"))
            .args(batch))?;
    }
    Ok(())
}

/// Runs a command, turning a failure into an error that carries its stderr.
fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// True when `tool` is on the PATH (or in /sbin, /usr/sbin, where e2fsprogs lives).
pub fn have_tool(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/sbin"), PathBuf::from("/usr/sbin")])
        .any(|dir| dir.join(tool).is_file())
}

fn write_island(
    file: &File,
    rng: &mut Rng,
    island: &mut [u8],
    at: u64,
    len: u64,
) -> io::Result<()> {
    let n = usize::try_from((len - at).min(island.len() as u64)).map_err(io::Error::other)?;
    rng.fill(&mut island[..n]);
    file.write_all_at(&island[..n], at)
}

fn finish(out: BufWriter<File>) -> io::Result<()> {
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// xorshift64*: fast, seeded, good enough to be incompressible and chunk like real data.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // A zero state would stay zero forever.
        Self(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let (words, rest) = buf.as_chunks_mut::<8>();
        for w in words {
            *w = self.next().to_le_bytes();
        }
        let last = self.next().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// True when two files hold the same bytes (streamed: bounded memory for large images).
pub fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_images_have_the_promised_shape() -> io::Result<()> {
        let images = TestImages::new()?;
        let a = images.random("a", 3 * BLOCK as u64 + 5, 1)?;
        let a2 = images.random("a2", 3 * BLOCK as u64 + 5, 1)?;
        assert!(same_bytes(&a, &a2)?, "same seed, same bytes");
        let b = images.random("b", 3 * BLOCK as u64 + 5, 2)?;
        assert!(!same_bytes(&a, &b)?);

        let z = fs::read(images.zeros("z", 100_000)?)?;
        assert!(z.len() == 100_000 && z.iter().all(|&x| x == 0));

        let ins = fs::read(images.with_insertion(&a, "ins", 1000, 1024, 9)?)?;
        let orig = fs::read(&a)?;
        assert_eq!(ins.len(), orig.len() + 1024);
        assert_eq!(ins[..1000], orig[..1000]);
        assert_eq!(ins[1000 + 1024..], orig[1000..]);
        assert!(
            images
                .with_insertion(&a, "bad", orig.len() as u64 + 1, 1, 0)
                .is_err()
        );

        let m = fs::read(images.modified_in_place(&a, "m", 0.01, 4096, 3)?)?;
        let changed = m.iter().zip(&orig).filter(|(x, y)| x != y).count();
        let target = orig.len() / 100;
        assert!(
            changed > target * 9 / 10 && changed <= target + 4096,
            "{changed} vs {target}"
        );

        let s = images.sparse("s", 200 << 20, 4)?;
        let meta = fs::metadata(&s)?;
        assert_eq!(meta.len(), 200 << 20);
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 10 << 20,
            "not sparse"
        );
        Ok(())
    }
}
