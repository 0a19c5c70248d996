//! The libvirt backend on `test:///default`: the whole lifecycle with a state check after each
//! step, and the error cases the manager relies on.
//!
//! Every connection to `test:///default` inside one process shares one fake machine (libvirt
//! keeps a process-wide default driver while any connection is open), and the test harness runs
//! these tests in parallel threads of one process: each test uses its own domain names and
//! never assumes it sees only its own domains.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vwnet_node::hypervisor::{
    AfterRestore, ControlError, DefineError, DomainKind, DomainState, Hypervisor,
    LibvirtHypervisor, Operation, QueryError, RestoreError, SaveError,
};

mod hypervisor_support;
use hypervisor_support::spec;

const URI: &str = "test:///default";

/// A lifecycle call on a named domain.
type Control = fn(&LibvirtHypervisor, &str) -> Result<(), ControlError>;

fn hypervisor() -> LibvirtHypervisor {
    match LibvirtHypervisor::open(URI) {
        Ok(hv) => hv,
        Err(e) => panic!("open {URI}: {e}"),
    }
}

/// Asserts that `result` is the refusal of `op` because the domain is in the wrong state.
#[track_caller]
fn assert_wrong_state(result: Result<(), ControlError>, op: Operation) {
    match result {
        Err(ControlError::InvalidState { op: refused, .. }) if refused == op => {}
        other => panic!("{op:?}: expected an invalid-state refusal, got {other:?}"),
    }
}

fn state(hv: &impl Hypervisor, name: &str) -> DomainState {
    match hv.state(name) {
        Ok(s) => s,
        Err(e) => panic!("state of {name}: {e}"),
    }
}

#[test]
fn open_picks_the_test_domain_type() {
    let hv = hypervisor();
    assert_eq!(hv.uri(), URI);
    assert_eq!(hv.domain_kind(), DomainKind::Test);
}

#[test]
fn full_lifecycle_with_state_after_each_step() -> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "lifecycle-1";
    let spec = spec(name, dir.path());

    let info = hv.define(&spec)?;
    assert_eq!(
        (info.name.as_str(), info.state, info.persistent),
        (name, DomainState::Shutoff, true)
    );
    assert!(
        hv.list()?
            .iter()
            .any(|d| d.name == name && d.uuid == info.uuid)
    );

    hv.start(name)?;
    assert_eq!(state(&hv, name), DomainState::Running);
    hv.suspend(name)?;
    assert_eq!(state(&hv, name), DomainState::Paused);
    hv.resume(name)?;
    assert_eq!(state(&hv, name), DomainState::Running);

    let state_path = dir.path().join("hot.state");
    let saved = hv.save(name, &state_path)?;
    assert_eq!(saved.path, state_path);
    assert!(saved.bytes > 0, "state file is empty");
    assert_eq!(std::fs::metadata(&state_path)?.len(), saved.bytes);
    assert!(!dir.path().join("hot.state.partial").exists());
    // A save stops the domain but keeps its definition.
    assert_eq!(state(&hv, name), DomainState::Shutoff);

    // Restore "on another host": the same machine with its files elsewhere.
    hv.undefine(name)?;
    assert!(matches!(
        hv.state(name),
        Err(QueryError::NoSuchDomain { .. })
    ));
    let elsewhere = dir.path().join("host-b");
    let moved = self::spec(name, &elsewhere);
    let restored = hv.restore(&state_path, &moved, AfterRestore::Paused)?;
    assert_eq!(
        restored.uuid, info.uuid,
        "restore must keep the saved identity"
    );
    assert_eq!(
        (restored.state, restored.persistent),
        (DomainState::Paused, true)
    );
    let definition = hv.domain_xml(name, true)?;
    assert!(
        definition.contains(&format!("'{}'", elsewhere.join("disk.raw").display())),
        "{definition}"
    );
    assert!(
        definition.contains(&format!("'{}'", elsewhere.join("console.log").display())),
        "{definition}"
    );
    assert!(
        !definition.contains(&format!("'{}'", dir.path().join("disk.raw").display())),
        "{definition}"
    );
    assert!(state_path.exists(), "restore must leave the state file");

    hv.resume(name)?;
    assert_eq!(state(&hv, name), DomainState::Running);
    hv.destroy(name)?;
    assert_eq!(state(&hv, name), DomainState::Shutoff);
    hv.undefine(name)?;
    assert!(matches!(
        hv.state(name),
        Err(QueryError::NoSuchDomain { .. })
    ));
    assert!(!hv.list()?.iter().any(|d| d.name == name));
    Ok(())
}

#[test]
fn restore_can_leave_the_domain_running() -> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "restore-running";
    let spec = spec(name, dir.path());
    hv.define(&spec)?;
    hv.start(name)?;
    let state_path = dir.path().join("s");
    hv.save(name, &state_path)?;
    // Restore onto the still-defined domain (same host, same identity).
    let info = hv.restore(&state_path, &spec, AfterRestore::Running)?;
    assert_eq!(info.state, DomainState::Running);
    // A second restore onto the now running domain must not touch it.
    let mut other_paths = spec.clone();
    other_paths.disks[0].path = dir.path().join("elsewhere.raw");
    let err = hv
        .restore(&state_path, &other_paths, AfterRestore::Paused)
        .expect_err("restore over a live domain");
    assert!(
        matches!(
            err,
            RestoreError::DomainActive {
                state: DomainState::Running,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(state(&hv, name), DomainState::Running);
    assert!(!hv.domain_xml(name, true)?.contains("elsewhere.raw"));
    // The test driver powers off at once on a shutdown request (QEMU waits for the guest).
    hv.shutdown(name)?;
    assert_eq!(state(&hv, name), DomainState::Shutoff);
    assert_wrong_state(hv.shutdown(name), Operation::Shutdown);
    hv.undefine(name)?;
    Ok(())
}

#[test]
fn save_of_a_paused_domain_and_relative_state_path() -> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "save-paused";
    hv.define(&spec(name, dir.path()))?;
    hv.start(name)?;
    hv.suspend(name)?;
    // A relative path is resolved against our working directory, not libvirtd's.
    let relative = PathBuf::from(format!("target-hv-test-{}.state", std::process::id()));
    let saved = hv.save(name, &relative);
    let _ = std::fs::remove_file(&relative);
    let saved = saved?;
    assert!(saved.path.is_absolute());
    assert!(saved.path.ends_with(&relative));
    assert_eq!(state(&hv, name), DomainState::Shutoff);
    hv.undefine(name)?;
    Ok(())
}

#[test]
fn unknown_domains_are_reported_per_operation() {
    let hv = hypervisor();
    let name = "no-such-domain";
    let ops: [(Operation, Control); 6] = [
        (Operation::Start, |h, n| h.start(n)),
        (Operation::Shutdown, |h, n| h.shutdown(n)),
        (Operation::Destroy, |h, n| h.destroy(n)),
        (Operation::Suspend, |h, n| h.suspend(n)),
        (Operation::Resume, |h, n| h.resume(n)),
        (Operation::Undefine, |h, n| h.undefine(n)),
    ];
    for (op, call) in ops {
        let err = call(&hv, name).expect_err("operation on an unknown domain succeeded");
        assert_eq!(
            err,
            ControlError::NoSuchDomain {
                op,
                name: name.into()
            }
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    assert!(matches!(
        hv.state(name),
        Err(QueryError::NoSuchDomain { .. })
    ));
    assert!(matches!(
        hv.save(name, Path::new("/tmp/unused.state")),
        Err(SaveError::NoSuchDomain { .. })
    ));
}

#[test]
fn double_define_is_refused_and_keeps_the_first() -> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "double-define";
    let first = hv.define(&spec(name, dir.path()))?;
    let mut other = spec(name, dir.path());
    other.memory_mib = 256;
    let err = hv.define(&other).expect_err("second define succeeded");
    assert_eq!(err, DefineError::AlreadyExists { name: name.into() });
    let xml = hv.domain_xml(name, true)?;
    assert!(xml.contains("<memory unit='KiB'>131072</memory>"), "{xml}");
    assert_eq!(
        hv.list()?
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.uuid.clone()),
        Some(first.uuid)
    );
    hv.undefine(name)?;
    Ok(())
}

#[test]
fn invalid_specs_never_reach_libvirt() {
    let hv = hypervisor();
    let mut bad = spec("bad/name", Path::new("/tmp"));
    assert!(matches!(hv.define(&bad), Err(DefineError::Invalid(e)) if e.field == "name"));
    bad.name = "relative-disk".into();
    bad.disks[0].path = "disk.raw".into();
    assert!(matches!(hv.define(&bad), Err(DefineError::Invalid(e)) if e.field == "disks.path"));
    assert!(matches!(
        hv.state("relative-disk"),
        Err(QueryError::NoSuchDomain { .. })
    ));
}

#[test]
fn operations_in_the_wrong_state_say_so() -> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "wrong-state";
    hv.define(&spec(name, dir.path()))?;

    // Shut off: nothing to pause, resume, destroy or save.
    assert_wrong_state(hv.suspend(name), Operation::Suspend);
    assert_wrong_state(hv.resume(name), Operation::Resume);
    assert_wrong_state(hv.destroy(name), Operation::Destroy);
    assert!(matches!(
        hv.save(name, &dir.path().join("s")),
        Err(SaveError::NotActive {
            state: DomainState::Shutoff,
            ..
        })
    ));
    assert!(!dir.path().join("s").exists());

    hv.start(name)?;
    assert_wrong_state(hv.start(name), Operation::Start);
    assert_wrong_state(hv.resume(name), Operation::Resume);
    // Undefining a running domain would orphan it as a transient VM.
    assert_wrong_state(hv.undefine(name), Operation::Undefine);
    assert_eq!(state(&hv, name), DomainState::Running);

    hv.destroy(name)?;
    hv.undefine(name)?;
    Ok(())
}

#[test]
fn restore_refuses_a_spec_that_does_not_fit_the_image() -> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "restore-mismatch";
    let spec = spec(name, dir.path());
    hv.define(&spec)?;
    hv.start(name)?;
    let state_path = dir.path().join("s");
    hv.save(name, &state_path)?;
    hv.undefine(name)?;

    let mut wrong_ram = spec.clone();
    wrong_ram.memory_mib = 256;
    let mut wrong_name = spec.clone();
    wrong_name.name = "someone-else".into();
    let mut no_cdrom = spec.clone();
    no_cdrom.cdrom = None;
    let mut extra_disk = spec.clone();
    extra_disk.disks.push(extra_disk.disks[0].clone());
    let mut no_log = spec.clone();
    no_log.serial_log = None;
    for wrong in [wrong_ram, wrong_name, no_cdrom, extra_disk, no_log] {
        let err = hv
            .restore(&state_path, &wrong, AfterRestore::Paused)
            .expect_err("mismatching restore succeeded");
        assert!(matches!(err, RestoreError::Mismatch { .. }), "{err}");
        assert!(
            matches!(hv.state(&wrong.name), Err(QueryError::NoSuchDomain { .. })),
            "left a domain behind"
        );
    }

    let missing = hv.restore(&dir.path().join("missing"), &spec, AfterRestore::Paused);
    assert!(
        matches!(missing, Err(RestoreError::StateFile { .. })),
        "{missing:?}"
    );
    std::fs::write(dir.path().join("garbage"), b"not a libvirt image")?;
    let garbage = hv.restore(&dir.path().join("garbage"), &spec, AfterRestore::Paused);
    assert!(
        matches!(garbage, Err(RestoreError::StateFile { .. })),
        "{garbage:?}"
    );

    // The image itself is still good.
    hv.restore(&state_path, &spec, AfterRestore::Paused)?;
    hv.destroy(name)?;
    hv.undefine(name)?;
    Ok(())
}

#[test]
fn restore_does_not_replace_another_domain_of_the_same_name()
-> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "restore-clash";
    let spec = spec(name, dir.path());
    hv.define(&spec)?;
    hv.start(name)?;
    let state_path = dir.path().join("s");
    hv.save(name, &state_path)?;
    hv.undefine(name)?;
    // Another domain (new UUID) now holds the name.
    let squatter = hv.define(&spec)?;
    let err = hv
        .restore(&state_path, &spec, AfterRestore::Paused)
        .expect_err("restore over another domain");
    assert!(matches!(err, RestoreError::Libvirt { .. }), "{err}");
    let still = hv.list()?.into_iter().find(|d| d.name == name);
    assert_eq!(
        still.map(|d| (d.uuid, d.state)),
        Some((squatter.uuid, DomainState::Shutoff))
    );
    hv.undefine(name)?;
    Ok(())
}

#[test]
fn one_hypervisor_serves_many_threads() -> Result<(), Box<dyn std::error::Error>> {
    let hv = Arc::new(hypervisor());
    let dir = tempfile::tempdir()?;
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let hv = Arc::clone(&hv);
            let spec = spec(&format!("threaded-{i}"), &dir.path().join(i.to_string()));
            std::thread::spawn(move || -> Result<(), String> {
                let name = spec.name.clone();
                hv.define(&spec).map_err(|e| e.to_string())?;
                for _ in 0..20 {
                    hv.start(&name).map_err(|e| e.to_string())?;
                    hv.suspend(&name).map_err(|e| e.to_string())?;
                    hv.resume(&name).map_err(|e| e.to_string())?;
                    hv.destroy(&name).map_err(|e| e.to_string())?;
                }
                hv.undefine(&name).map_err(|e| e.to_string())
            })
        })
        .collect();
    for t in threads {
        match t.join() {
            Ok(result) => result?,
            Err(_) => return Err("worker thread panicked".into()),
        }
    }
    assert!(!hv.list()?.iter().any(|d| d.name.starts_with("threaded-")));
    Ok(())
}

/// Not our code but an assumption the node must not get wrong: two backends opened on
/// `test:///default` in ONE process see the same fake machine (two in-process nodes would
/// clash on domain names), while another process sees its own.
#[test]
fn test_default_is_shared_within_a_process() -> Result<(), Box<dyn std::error::Error>> {
    let a = hypervisor();
    let b = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "shared-between-connections";
    a.define(&spec(name, dir.path()))?;
    a.start(name)?;
    assert_eq!(state(&b, name), DomainState::Running);
    b.destroy(name)?;
    b.undefine(name)?;
    assert!(matches!(
        a.state(name),
        Err(QueryError::NoSuchDomain { .. })
    ));
    Ok(())
}

#[test]
fn a_failed_save_leaves_the_guest_running() -> Result<(), Box<dyn std::error::Error>> {
    let hv = hypervisor();
    let dir = tempfile::tempdir()?;
    let name = "failed-save";
    hv.define(&spec(name, dir.path()))?;
    hv.start(name)?;
    let unwritable = dir.path().join("no-such-dir").join("s");
    let err = hv
        .save(name, &unwritable)
        .expect_err("save into a missing directory");
    assert!(matches!(err, SaveError::Libvirt { .. }), "{err}");
    assert_eq!(state(&hv, name), DomainState::Running);
    assert!(!unwritable.exists());
    hv.destroy(name)?;
    hv.undefine(name)?;
    Ok(())
}
