//! The libvirt backend of [`Hypervisor`], through the `virt` crate, for any connection URI.
//!
//! It holds ONE connection for its whole life. With `test:///default` that is what makes it
//! work at all: the test driver keeps its fake machine inside the client process, shared by
//! every connection of that process while one is open and reset when the last one closes; a
//! `virsh` or another process sees a fresh default machine of its own. (Two nodes in one test
//! process therefore share one fake machine: their domain names must differ.)
//!
//! Driver differences handled here, measured against libvirt 9.0:
//! - the test driver refuses replacement XML and flags on restore ("xml modification
//!   unsupported"), so there the rewritten XML only becomes the persistent definition and the
//!   requested paused/running state is reached with an explicit suspend/resume afterwards;
//! - QEMU restores with the rewritten XML, which is what makes a hot image portable: the
//!   saved XML names the saving host's disk paths.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use virt::connect::Connect;
use virt::domain::{Domain, DomainState as VirtState};
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};

use super::domain_xml::{self, RewriteError};
use super::{
    AfterRestore, ControlError, DefineError, DomainInfo, DomainKind, DomainSpec, DomainState,
    Hypervisor, OpenError, Operation, QueryError, RestoreError, SaveError, SavedState, SpecError,
    host_path,
};

/// A [`Hypervisor`] on one libvirt connection.
pub struct LibvirtHypervisor {
    conn: Connect,
    uri: String,
    kind: DomainKind,
}

impl std::fmt::Debug for LibvirtHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtHypervisor")
            .field("uri", &self.uri)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl LibvirtHypervisor {
    /// Opens `uri` (`test:///default`, `qemu:///system`, ...) and picks the domain type: `test`
    /// for the test driver, `kvm` for QEMU when the host offers KVM, else `qemu` (TCG).
    pub fn open(uri: &str) -> Result<Self, OpenError> {
        // libvirt's default error handler prints every error on stderr; errors are returned to
        // the caller instead, so silence it (process-wide, idempotent).
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| OpenError::Connect {
            uri: uri.to_owned(),
            message: e.message().to_owned(),
        })?;
        let fail = |e: VirtError| OpenError::Connect {
            uri: uri.to_owned(),
            message: e.message().to_owned(),
        };
        let driver = conn.driver_type().map_err(fail)?;
        // libvirt 9.0 reports "TEST" and "QEMU"; compared without case to be lenient.
        let kind = match driver.to_ascii_uppercase().as_str() {
            "TEST" => DomainKind::Test,
            "QEMU" => {
                // The daemon's capabilities, not a local /dev/kvm check: the daemon may run with
                // other permissions, or on another machine for remote URIs.
                let caps = conn.capabilities().map_err(fail)?;
                if caps.contains("<domain type='kvm'") {
                    DomainKind::Kvm
                } else {
                    DomainKind::Qemu
                }
            }
            _ => {
                return Err(OpenError::UnsupportedDriver {
                    uri: uri.to_owned(),
                    driver,
                });
            }
        };
        Ok(Self {
            conn,
            uri: uri.to_owned(),
            kind,
        })
    }

    /// The domain's XML as libvirt holds it: the persistent definition if `inactive`, else
    /// the live one (which the QEMU driver extends with addresses, aliases, ...). For logs,
    /// `vwnet inspect` and tests; the manager's decisions use [`Hypervisor`] methods.
    pub fn domain_xml(&self, name: &str, inactive: bool) -> Result<String, QueryError> {
        let map = |e: VirtError| query_error(name, &e);
        let dom = self.lookup(name).map_err(map)?;
        let flags = if inactive {
            virt::sys::VIR_DOMAIN_XML_INACTIVE
        } else {
            0
        };
        dom.xml_desc(flags).map_err(map)
    }

    fn lookup(&self, name: &str) -> Result<Domain, VirtError> {
        self.conn.lookup_domain_by_name(name)
    }

    /// Runs a lifecycle operation after checking the domain's state allows it: drivers disagree
    /// on how they report a wrong state (the test driver says "internal error"), the caller
    /// gets [`ControlError::InvalidState`] from all of them.
    fn control(
        &self,
        op: Operation,
        name: &str,
        act: impl FnOnce(&Domain) -> Result<(), VirtError>,
    ) -> Result<(), ControlError> {
        let map = |e: VirtError| control_error(op, name, &e);
        let dom = self.lookup(name).map_err(map)?;
        let (state, _) = dom.state().map_err(map)?;
        let state = map_state(state);
        let allowed = match op {
            Operation::Start | Operation::Undefine => state == DomainState::Shutoff,
            Operation::Suspend => matches!(state, DomainState::Running | DomainState::Blocked),
            Operation::Resume => state == DomainState::Paused,
            Operation::Shutdown | Operation::Destroy => state.is_active(),
        };
        if !allowed {
            return Err(ControlError::InvalidState {
                op,
                name: name.to_owned(),
                message: format!("domain is {state}"),
            });
        }
        act(&dom).map_err(map)
    }

    fn info(&self, dom: &Domain) -> Result<DomainInfo, VirtError> {
        let (state, _reason) = dom.state()?;
        Ok(DomainInfo {
            name: dom.name()?,
            uuid: dom.uuid_string()?,
            state: map_state(state),
            persistent: dom.is_persistent()?,
        })
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn domain_kind(&self) -> DomainKind {
        self.kind
    }

    fn define(&self, spec: &DomainSpec) -> Result<DomainInfo, DefineError> {
        let xml = domain_xml::render(spec, self.kind)?;
        // libvirt would treat a define of an existing name as "update its configuration"
        // (same UUID) or fail with a UUID clash; a deploy must never silently replace a domain.
        if self.lookup(&spec.name).is_ok() {
            return Err(DefineError::AlreadyExists {
                name: spec.name.clone(),
            });
        }
        let libvirt = |e: VirtError| match known(&e) {
            Some(ErrorNumber::DomExist) => DefineError::AlreadyExists {
                name: spec.name.clone(),
            },
            _ => DefineError::Libvirt {
                name: spec.name.clone(),
                message: e.message().to_owned(),
            },
        };
        let dom = self.conn.define_domain_xml(&xml).map_err(libvirt)?;
        self.info(&dom).map_err(libvirt)
    }

    fn start(&self, name: &str) -> Result<(), ControlError> {
        self.control(Operation::Start, name, Domain::create)
    }

    fn shutdown(&self, name: &str) -> Result<(), ControlError> {
        self.control(Operation::Shutdown, name, Domain::shutdown)
    }

    fn destroy(&self, name: &str) -> Result<(), ControlError> {
        self.control(Operation::Destroy, name, Domain::destroy)
    }

    fn suspend(&self, name: &str) -> Result<(), ControlError> {
        self.control(Operation::Suspend, name, Domain::suspend)
    }

    fn resume(&self, name: &str) -> Result<(), ControlError> {
        self.control(Operation::Resume, name, Domain::resume)
    }

    fn undefine(&self, name: &str) -> Result<(), ControlError> {
        // Only a shut-off domain (checked in `control`): libvirt would undefine a running one by
        // making it transient, leaving a VM that nothing has a definition for.
        self.control(Operation::Undefine, name, Domain::undefine)
    }

    fn save(&self, name: &str, state_path: &Path) -> Result<SavedState, SaveError> {
        let path = absolute(state_path).map_err(|source| SaveError::Path {
            name: name.to_owned(),
            source,
        })?;
        let path_text = host_path("state_path", &path).map_err(|source| SaveError::Path {
            name: name.to_owned(),
            source,
        })?;
        let libvirt = |e: VirtError| match known(&e) {
            Some(ErrorNumber::NoDomain) => SaveError::NoSuchDomain {
                name: name.to_owned(),
            },
            _ => SaveError::Libvirt {
                name: name.to_owned(),
                message: e.message().to_owned(),
            },
        };
        let dom = self.lookup(name).map_err(libvirt)?;
        let (state, _) = dom.state().map_err(libvirt)?;
        let was_running = match map_state(state) {
            DomainState::Paused => false,
            // Pausing first makes the image record "paused": a restore then leaves the guest
            // stopped until asked, matching the workspace description's state.
            DomainState::Running | DomainState::Blocked => {
                dom.suspend().map_err(libvirt)?;
                true
            }
            other => {
                return Err(SaveError::NotActive {
                    name: name.to_owned(),
                    state: other,
                });
            }
        };
        // Written next to the target and renamed into place: a crash or a failed save never
        // leaves a truncated image under the final name.
        let partial = format!("{path_text}.partial");
        // A leftover from an earlier crash would make QEMU refuse to write; it is garbage.
        let _ = std::fs::remove_file(&partial);
        if let Err(e) = save_domain(&dom, &partial) {
            // The guest keeps running as before; the save error is the one worth reporting.
            if was_running {
                let _ = dom.resume();
            }
            return Err(libvirt(e));
        }
        std::fs::rename(&partial, &path).map_err(|source| SaveError::Io {
            name: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        let bytes = std::fs::metadata(&path)
            .map_err(|source| SaveError::Io {
                name: name.to_owned(),
                path: path.clone(),
                source,
            })?
            .len();
        Ok(SavedState { path, bytes })
    }

    fn restore(
        &self,
        state_path: &Path,
        spec: &DomainSpec,
        after: AfterRestore,
    ) -> Result<DomainInfo, RestoreError> {
        spec.validate()?;
        let path = absolute(state_path)?;
        let path_text = host_path("state_path", &path)?;
        let saved_xml = self
            .conn
            .save_image_xml_desc(path_text, virt::sys::VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
            .map_err(|e| RestoreError::StateFile {
                path: path_text.to_owned(),
                message: e.message().to_owned(),
            })?;
        let xml = domain_xml::rewrite_for_host(&saved_xml, spec).map_err(|e| match e {
            RewriteError::Mismatch(reason) => RestoreError::Mismatch {
                path: path_text.to_owned(),
                reason,
            },
            RewriteError::Refused(reason) => RestoreError::Refused {
                path: path_text.to_owned(),
                reason,
            },
            RewriteError::Malformed(reason) => RestoreError::SavedXml {
                path: path_text.to_owned(),
                reason,
            },
            RewriteError::Spec(e) => RestoreError::Invalid(e),
        })?;
        let libvirt = |e: VirtError| RestoreError::Libvirt {
            name: spec.name.clone(),
            message: e.message().to_owned(),
        };

        // The definition this call replaces, if any, to put back should the restore fail.
        let previous = match self.lookup(&spec.name) {
            Ok(dom) => {
                // Checked before the define below, which would otherwise rewrite the
                // configuration of a live domain and then fail the restore.
                let (state, _) = dom.state().map_err(libvirt)?;
                let state = map_state(state);
                if state.is_active() {
                    return Err(RestoreError::DomainActive {
                        name: spec.name.clone(),
                        state,
                    });
                }
                let flags = virt::sys::VIR_DOMAIN_XML_INACTIVE | virt::sys::VIR_DOMAIN_XML_SECURE;
                Some(dom.xml_desc(flags).map_err(libvirt)?)
            }
            Err(_) => None,
        };
        // Define first: the restored domain is then persistent, like a cold-deployed one, so
        // stop/start/undefine behave the same afterwards. Same name and UUID as the image, so
        // libvirt attaches the restored run to this definition.
        self.conn.define_domain_xml(&xml).map_err(libvirt)?;
        let restored = match self.kind {
            DomainKind::Test => self.conn.restore_domain(path_text),
            DomainKind::Kvm | DomainKind::Qemu => {
                let flags = match after {
                    AfterRestore::Paused => virt::sys::VIR_DOMAIN_SAVE_PAUSED,
                    AfterRestore::Running => virt::sys::VIR_DOMAIN_SAVE_RUNNING,
                };
                self.conn.restore_domain_flags(path_text, Some(&xml), flags)
            }
        };
        if let Err(e) = restored {
            // Best effort: the restore error is the one worth reporting.
            match &previous {
                Some(xml) => {
                    let _ = self.conn.define_domain_xml(xml);
                }
                None => {
                    if let Ok(dom) = self.lookup(&spec.name) {
                        let _ = dom.undefine();
                    }
                }
            }
            return Err(libvirt(e));
        }

        let dom = self.lookup(&spec.name).map_err(libvirt)?;
        let (state, _) = dom.state().map_err(libvirt)?;
        match (after, map_state(state)) {
            (AfterRestore::Paused, DomainState::Running | DomainState::Blocked) => {
                dom.suspend().map_err(libvirt)?;
            }
            (AfterRestore::Running, DomainState::Paused) => dom.resume().map_err(libvirt)?,
            _ => {}
        }
        self.info(&dom).map_err(libvirt)
    }

    fn state(&self, name: &str) -> Result<DomainState, QueryError> {
        let map = |e: VirtError| query_error(name, &e);
        let dom = self.lookup(name).map_err(map)?;
        let (state, _) = dom.state().map_err(map)?;
        Ok(map_state(state))
    }

    fn list(&self) -> Result<Vec<DomainInfo>, QueryError> {
        let map = |e: VirtError| QueryError::Libvirt {
            message: e.message().to_owned(),
        };
        let doms = self.conn.list_all_domains(0).map_err(map)?;
        let mut out = Vec::with_capacity(doms.len());
        for dom in &doms {
            match self.info(dom) {
                Ok(info) => out.push(info),
                // Undefined between the listing and the query: it is simply gone.
                Err(e) if known(&e) == Some(ErrorNumber::NoDomain) => {}
                Err(e) => return Err(map(e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// `virDomainSaveFlags`, which `virt` 0.5 does not wrap.
#[allow(unsafe_code)]
fn save_domain(dom: &Domain, to: &str) -> Result<(), VirtError> {
    let to = CString::new(to)?;
    // SAFETY: `dom.as_ptr()` is the live domain handle owned by `dom`, which outlives the call;
    // `to` is a NUL-terminated string that outlives the call; a null `dxml` is documented as
    // "keep the current XML"; flags 0 is the plain save. libvirt does not retain any pointer.
    let rc =
        unsafe { virt::sys::virDomainSaveFlags(dom.as_ptr(), to.as_ptr(), std::ptr::null(), 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, SpecError> {
    std::path::absolute(path).map_err(|e| SpecError {
        field: "state_path",
        reason: format!("{}: {e}", path.display()),
    })
}

fn known(e: &VirtError) -> Option<ErrorNumber> {
    match e.code() {
        Enum::Known(code) => Some(code),
        Enum::Unknown(_) => None,
    }
}

fn control_error(op: Operation, name: &str, e: &VirtError) -> ControlError {
    let name = name.to_owned();
    let message = e.message().to_owned();
    match known(e) {
        Some(ErrorNumber::NoDomain) => ControlError::NoSuchDomain { op, name },
        Some(ErrorNumber::OperationInvalid) => ControlError::InvalidState { op, name, message },
        _ => ControlError::Libvirt { op, name, message },
    }
}

fn query_error(name: &str, e: &VirtError) -> QueryError {
    match known(e) {
        Some(ErrorNumber::NoDomain) => QueryError::NoSuchDomain {
            name: name.to_owned(),
        },
        _ => QueryError::Libvirt {
            message: e.message().to_owned(),
        },
    }
}

fn map_state(state: virt::domain::DomainStateEnum) -> DomainState {
    match state {
        Enum::Known(VirtState::Running) => DomainState::Running,
        Enum::Known(VirtState::Blocked) => DomainState::Blocked,
        Enum::Known(VirtState::Paused) => DomainState::Paused,
        Enum::Known(VirtState::Shutdown) => DomainState::ShuttingDown,
        Enum::Known(VirtState::Shutoff) => DomainState::Shutoff,
        Enum::Known(VirtState::Crashed) => DomainState::Crashed,
        Enum::Known(VirtState::PMSuspended) => DomainState::PmSuspended,
        Enum::Known(VirtState::NoState) | Enum::Unknown(_) => DomainState::Unknown,
    }
}
