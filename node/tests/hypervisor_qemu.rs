//! The libvirt backend on real QEMU (`qemu:///system`): a tiny domain (128 MiB, blank raw disk,
//! empty CD-ROM, user NIC, serial console to a file, no graphics) is defined, started, paused,
//! saved, restored as a fresh definition whose files moved, and torn down; a restore that
//! fails (disk missing) leaves the definitions as they were.
//!
//! Opt-in, because it needs root and a running libvirtd (`scripts/setup-libvirtd.sh`):
//!   VWNET_QEMU_TESTS=1 cargo test -p vwnet-node --test hypervisor_qemu -- --nocapture
//! Without it the test prints why it skipped and passes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vwnet_node::hypervisor::{
    AfterRestore, DomainKind, DomainState, Hypervisor, LibvirtHypervisor, RestoreError,
};

mod hypervisor_support;
use hypervisor_support::spec;

const URI: &str = "qemu:///system";
const SOCKET: &str = "/run/libvirt/libvirt-sock";

/// Why the test cannot run here, if it cannot.
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

/// Destroys and undefines the domain when the test ends, pass or fail, so no QEMU outlives it.
struct Cleanup<'a> {
    hv: &'a LibvirtHypervisor,
    name: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.hv.destroy(self.name);
        let _ = self.hv.undefine(self.name);
    }
}

fn make_files(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(dir.join("disk.raw"))
        .arg("16M")
        .output()?;
    if !out.status.success() {
        return Err(format!("qemu-img: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    std::fs::write(dir.join(hypervisor_support::CDROM), vec![0u8; 2048 * 16])?;
    Ok(())
}

/// Polls `hv` until `name` reaches `want` (QEMU may report a state change a moment after the
/// call returned), failing after `limit`.
fn wait_state(
    hv: &impl Hypervisor,
    name: &str,
    want: DomainState,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let now = hv.state(name).map_err(|e| e.to_string())?;
        if now == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{name} is {now}, expected {want} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn timed<T, E>(label: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let start = Instant::now();
    let out = f();
    println!(
        "qemu timing: {label:<8} {:>8.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    out
}

#[test]
fn tiny_domain_lifecycle_with_save_and_restore_elsewhere() -> Result<(), Box<dyn std::error::Error>>
{
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return Ok(());
    }
    let hv = LibvirtHypervisor::open(URI)?;
    println!("qemu: domain type {:?}", hv.domain_kind());
    if hv.domain_kind() == DomainKind::Qemu {
        println!("qemu: no KVM on this host, running under TCG");
    }
    let root = tempfile::tempdir()?;
    let host_a = root.path().join("host-a");
    let host_b = root.path().join("host-b");
    make_files(&host_a)?;
    let name = format!("vwnet-qemu-test-{}", std::process::id());
    let _cleanup = Cleanup {
        hv: &hv,
        name: &name,
    };

    timed("define", || hv.define(&spec(&name, &host_a)))?;
    timed("start", || hv.start(&name))?;
    assert_eq!(hv.state(&name)?, DomainState::Running);
    timed("suspend", || hv.suspend(&name))?;
    assert_eq!(hv.state(&name)?, DomainState::Paused);
    timed("resume", || hv.resume(&name))?;
    assert_eq!(hv.state(&name)?, DomainState::Running);

    let state_path = root.path().join("hot.state");
    let saved = timed("save", || hv.save(&name, &state_path))?;
    println!(
        "qemu: state file {} bytes ({:.2} MiB)",
        saved.bytes,
        saved.bytes as f64 / 1048576.0
    );
    assert!(saved.bytes > 0);
    assert!(
        saved.bytes < 128 * 1024 * 1024,
        "state larger than the guest RAM"
    );
    wait_state(&hv, &name, DomainState::Shutoff, Duration::from_secs(10))?;

    // A restore whose disk is missing fails in QEMU after the definition was written: the
    // definition must be put back as it was (here: the saving host's paths) ...
    let moved = spec(&name, &host_b);
    let err = hv
        .restore(&state_path, &moved, AfterRestore::Paused)
        .expect_err("restore without its disk");
    println!("qemu: restore without disk: {err}");
    assert!(matches!(err, RestoreError::Libvirt { .. }), "{err}");
    let kept = hv.domain_xml(&name, true)?;
    assert!(
        kept.contains(&host_a.join("disk.raw").display().to_string()),
        "{kept}"
    );
    // ... or removed when there was none.
    hv.undefine(&name)?;
    let err = hv
        .restore(&state_path, &moved, AfterRestore::Paused)
        .expect_err("restore without its disk");
    assert!(matches!(err, RestoreError::Libvirt { .. }), "{err}");
    assert!(
        hv.state(&name).is_err(),
        "a failed restore left a definition behind"
    );

    // Another host: no definition, the disk and ISO under other paths.
    std::fs::create_dir_all(&host_b)?;
    std::fs::rename(host_a.join("disk.raw"), host_b.join("disk.raw"))?;
    std::fs::rename(
        host_a.join(hypervisor_support::CDROM),
        host_b.join(hypervisor_support::CDROM),
    )?;
    let info = timed("restore", || {
        hv.restore(&state_path, &moved, AfterRestore::Paused)
    })?;
    assert_eq!((info.state, info.persistent), (DomainState::Paused, true));
    let live = hv.domain_xml(&name, false)?;
    assert!(
        live.contains(&format!("'{}'", host_b.join("disk.raw").display())),
        "{live}"
    );
    assert!(
        !live.contains(&host_a.display().to_string()),
        "old host path left in {live}"
    );

    timed("resume", || hv.resume(&name))?;
    assert_eq!(hv.state(&name)?, DomainState::Running);
    timed("destroy", || hv.destroy(&name))?;
    assert_eq!(hv.state(&name)?, DomainState::Shutoff);
    timed("undefine", || hv.undefine(&name))?;
    assert!(hv.state(&name).is_err());
    assert!(
        host_b.join("console.log").exists(),
        "serial log not written at the new path"
    );
    Ok(())
}
