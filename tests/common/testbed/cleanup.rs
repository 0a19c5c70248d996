//! Removing testbeds: by run id, every run whose owner died (what a crashed or SIGKILLed run
//! left), and on SIGINT/SIGTERM for the runs of this process.
//!
//! A run id is `vwtb-<owner pid>-<sequence>`; every namespace of the run is named
//! `<run id>-...` and its scratch directory is `$TMPDIR/<run id>-...`. So a run is stale exactly
//! when its owner pid is gone, and anything it left can be found by name alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::TestbedError;
use super::sys;

/// Every namespace and scratch directory of the testbed starts with this.
pub const PREFIX: &str = "vwtb-";

/// The runs of this process that are up, with their scratch directories.
static ACTIVE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// Records a run so that the signal handler can remove it.
pub(crate) fn register(run: &str, dir: &Path) {
    if let Ok(mut active) = ACTIVE.lock() {
        active.insert(run.to_owned(), dir.to_owned());
    }
}

/// Forgets a run after it was removed.
pub(crate) fn unregister(run: &str) {
    if let Ok(mut active) = ACTIVE.lock() {
        active.remove(run);
    }
}

/// The owner pid of a run id or of a name that starts with one (`vwtb-<pid>-<seq>...`).
pub fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// The run id (`vwtb-<pid>-<seq>`) a namespace or directory name belongs to.
pub fn run_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid: u32 = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    Some(format!("{PREFIX}{pid}-{seq}"))
}

/// Kills every process in the run's namespaces and deletes them (sites last, so that host
/// veths go with their own namespace first). Returns how many namespaces were removed.
pub fn remove_run(run: &str) -> Result<usize, TestbedError> {
    let prefix = format!("{run}-");
    let mut names: Vec<String> = sys::netns_list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    // Hosts before sites; any order works, this one just deletes each veth once.
    names.sort_by_key(|n| n.contains("-site-"));
    // Kill everything first, all at once, then delete: a namespace whose processes live on
    // would survive `ip netns del` unseen.
    let mut pids = Vec::new();
    for ns in &names {
        pids.extend(sys::netns_pids(ns)?);
    }
    sys::kill_and_wait(&pids)?;
    let mut first_err = None;
    for ns in &names {
        if let Err(e) = sys::remove_netns(ns) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(names.len()),
    }
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct CleanupReport {
    /// Run ids removed.
    pub runs: Vec<String>,
    /// Namespaces deleted.
    pub namespaces: usize,
    /// Scratch directories deleted.
    pub dirs: Vec<PathBuf>,
}

/// Removes every run whose owner process is gone, or every run at all with `all` (which also
/// breaks runs that are in progress).
pub fn cleanup(all: bool) -> Result<CleanupReport, TestbedError> {
    let stale = |name: &str| all || owner_pid(name).is_some_and(|p| !sys::alive(p));
    let mut report = CleanupReport::default();
    let mut runs: Vec<String> = sys::netns_list()?
        .iter()
        .filter(|n| stale(n))
        .filter_map(|n| run_of(n))
        .collect();
    runs.sort();
    runs.dedup();
    for run in &runs {
        report.namespaces += remove_run(run)?;
        unregister(run);
    }
    report.runs = runs;
    let tmp = std::env::temp_dir();
    let entries = std::fs::read_dir(&tmp).map_err(|source| TestbedError::Io {
        context: format!("list {}", tmp.display()),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if run_of(&name).is_some() && stale(&name) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|source| TestbedError::Io {
                context: format!("remove {}", path.display()),
                source,
            })?;
            report.dirs.push(path);
        }
    }
    Ok(report)
}

/// Installs (once per process) a SIGINT/SIGTERM handler that removes this process's runs and
/// then exits with 128 + the signal number, as the default action would have.
pub fn install_signal_handler() -> Result<(), TestbedError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| spawn_signal_thread().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| TestbedError::Io {
            context: "install the signal handler".into(),
            source: std::io::Error::other(e),
        })
}

fn spawn_signal_thread() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, before returning, so that a signal right after this call is caught.
    let (mut int, mut term) = {
        let _guard = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("vwtb-signals".into())
        .spawn(move || {
            let code = runtime.block_on(async {
                tokio::select! {
                    _ = int.recv() => 130,
                    _ = term.recv() => 143,
                }
            });
            let active: Vec<(String, PathBuf)> = ACTIVE
                .lock()
                .map(|a| a.iter().map(|(r, d)| (r.clone(), d.clone())).collect())
                .unwrap_or_default();
            for (run, dir) in active {
                if let Err(e) = remove_run(&run) {
                    eprintln!("vwnet-testbed: removing {run}: {e}");
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            std::process::exit(code);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_parse_from_names() {
        assert_eq!(owner_pid("vwtb-123-4-a1"), Some(123));
        assert_eq!(run_of("vwtb-123-4-site-a").as_deref(), Some("vwtb-123-4"));
        assert_eq!(run_of("vwtb-123-4").as_deref(), Some("vwtb-123-4"));
        assert_eq!(run_of("vwtb-123-4-abcdEF").as_deref(), Some("vwtb-123-4"));
        assert_eq!(run_of("vwtb-x-4-a1"), None);
        assert_eq!(run_of("other-1-2-a1"), None);
        assert_eq!(owner_pid("vwtb-"), None);
    }
}
