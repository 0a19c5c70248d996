//! The hypervisor boundary: the few VM lifecycle operations the workspace manager needs, behind
//! the [`Hypervisor`] trait, with one implementation on libvirt ([`LibvirtHypervisor`]) that
//! serves any connection URI — `test:///default` (in-process, no daemon) and `qemu:///system`
//! (real QEMU/KVM through libvirtd).
//!
//! The trait is synchronous because every libvirt call blocks (a save writes hundreds of MiB):
//! the node calls it from `spawn_blocking` or a dedicated thread, never from the swarm loop.
//!
//! A VM is described by a [`DomainSpec`]: plain fields (name, RAM, vCPUs, disks, CD-ROM, NICs,
//! serial log) that the manager fills from a workspace description and a host placement; this
//! module knows nothing about descriptions. [`domain_xml`] turns a spec into libvirt XML and
//! rewrites the host-specific paths of a saved image's XML for a restore elsewhere.
//!
//! Hot images: [`Hypervisor::save`] pauses the VM and writes its memory state to a file;
//! [`Hypervisor::restore`] brings it back, possibly on another host whose disk and log paths
//! differ, from the same kind of spec that [`Hypervisor::define`] takes.

pub mod domain_xml;
mod libvirt;

use std::fmt;
use std::path::{Path, PathBuf};

pub use libvirt::LibvirtHypervisor;

/// The most disks a [`DomainSpec`] may carry: one virtio target letter each (`vda`..`vdt`),
/// far more than a workspace uses, small enough that targets stay single letters.
pub const MAX_DISKS: usize = 20;

/// The most NICs a [`DomainSpec`] may carry.
pub const MAX_NICS: usize = 8;

/// The longest domain name accepted; libvirt itself has no small limit, but names show up in
/// file names (logs, sockets) where 255 bytes is the usual ceiling.
pub const MAX_NAME_LEN: usize = 200;

/// Everything needed to define one VM on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// The libvirt domain name (unique per host); `[A-Za-z0-9._-]`, 1..=[`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// Guest RAM in MiB (current and maximum: no ballooning).
    pub memory_mib: u64,
    /// Number of virtual CPUs.
    pub vcpus: u32,
    /// Disks in guest order: the first is `vda`, the second `vdb`, ... (see [`disk_target`]).
    pub disks: Vec<DiskSpec>,
    /// An ISO image attached as a read-only CD-ROM (`sda` on the SATA bus).
    pub cdrom: Option<PathBuf>,
    /// Network interfaces, in guest order.
    pub nics: Vec<NicSpec>,
    /// File that receives the guest's first serial port (its console), if any.
    pub serial_log: Option<PathBuf>,
}

/// One disk image attached to a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Absolute path of the image on this host.
    pub path: PathBuf,
    /// On-disk format of the image.
    pub format: DiskFormat,
    /// Attach read-only (shared base images, data the guest must not change).
    pub read_only: bool,
}

/// Disk image formats the node materialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiskFormat {
    /// A plain (sparse) image: what the chunker reassembles.
    Raw,
    /// QEMU copy-on-write image.
    Qcow2,
}

impl DiskFormat {
    /// The libvirt/QEMU name of the format (`raw`, `qcow2`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NicSpec {
    /// QEMU user-mode networking (slirp): needs no host setup, works under `qemu:///system`.
    User,
    /// A port on a libvirt virtual network such as `default` (must exist on the host).
    Network {
        /// The libvirt network name.
        name: String,
    },
}

/// The `<domain type=...>` a backend asks for: which accelerator runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DomainKind {
    /// libvirt's built-in test driver (`test:///...`): nothing really runs.
    Test,
    /// QEMU with KVM acceleration (`/dev/kvm` present).
    Kvm,
    /// QEMU with TCG software emulation (no KVM on the host).
    Qemu,
}

impl DomainKind {
    /// The value of `<domain type=...>`.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKind::Test => "test",
            DomainKind::Kvm => "kvm",
            DomainKind::Qemu => "qemu",
        }
    }
}

/// What a domain is doing, as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DomainState {
    /// The guest runs (or is runnable).
    Running,
    /// The guest is blocked on a resource (still a running domain).
    Blocked,
    /// Suspended: vCPUs stopped, memory kept.
    Paused,
    /// A guest shutdown is in progress.
    ShuttingDown,
    /// Defined but not running (never started, stopped, or saved to a state file).
    Shutoff,
    /// The guest crashed.
    Crashed,
    /// Suspended by guest power management.
    PmSuspended,
    /// libvirt reported no state, or one this code does not know.
    Unknown,
}

impl DomainState {
    /// Whether the domain has a live process (anything but shut off / unknown).
    pub fn is_active(self) -> bool {
        !matches!(self, DomainState::Shutoff | DomainState::Unknown)
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DomainState::Running => "running",
            DomainState::Blocked => "blocked",
            DomainState::Paused => "paused",
            DomainState::ShuttingDown => "shutting-down",
            DomainState::Shutoff => "shutoff",
            DomainState::Crashed => "crashed",
            DomainState::PmSuspended => "pm-suspended",
            DomainState::Unknown => "unknown",
        })
    }
}

/// A domain as the hypervisor knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// The domain name.
    pub name: String,
    /// The libvirt UUID (generated at define time, kept by save/restore).
    pub uuid: String,
    /// Its current state.
    pub state: DomainState,
    /// Whether it has a persistent definition (survives a stop) or is transient.
    pub persistent: bool,
}

/// A memory-state file written by [`Hypervisor::save`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    /// Absolute path of the state file.
    pub path: PathBuf,
    /// Its size in bytes (QEMU writes only touched pages, so it is far smaller than the RAM).
    pub bytes: u64,
}

/// The state a restored domain is left in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AfterRestore {
    /// Restored with vCPUs stopped (a hot workspace deploys paused; `resume` runs it).
    Paused,
    /// Restored and running.
    Running,
}

/// The lifecycle operations on an existing domain, named in [`ControlError`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Boot a defined domain.
    Start,
    /// Ask the guest to power off (ACPI).
    Shutdown,
    /// Stop immediately (pull the plug).
    Destroy,
    /// Pause the vCPUs.
    Suspend,
    /// Unpause the vCPUs.
    Resume,
    /// Remove the persistent definition.
    Undefine,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Start => "start",
            Operation::Shutdown => "shutdown",
            Operation::Destroy => "destroy",
            Operation::Suspend => "suspend",
            Operation::Resume => "resume",
            Operation::Undefine => "undefine",
        })
    }
}

/// A VM hypervisor as the workspace manager sees it. Implementations are thread-safe; every
/// method blocks until the hypervisor has done the work.
pub trait Hypervisor: Send + Sync {
    /// The connection URI this hypervisor talks to (`test:///default`, `qemu:///system`).
    fn uri(&self) -> &str;

    /// The `<domain type>` this hypervisor defines domains with.
    fn domain_kind(&self) -> DomainKind;

    /// Defines (persistently) a new, shut-off domain. Fails if the name is taken.
    fn define(&self, spec: &DomainSpec) -> Result<DomainInfo, DefineError>;

    /// Boots a defined, shut-off domain.
    fn start(&self, name: &str) -> Result<(), ControlError>;

    /// Asks the guest to power off (ACPI); returns once the request is sent, not when it is off.
    fn shutdown(&self, name: &str) -> Result<(), ControlError>;

    /// Stops a running or paused domain immediately; the definition stays.
    fn destroy(&self, name: &str) -> Result<(), ControlError>;

    /// Pauses a running domain.
    fn suspend(&self, name: &str) -> Result<(), ControlError>;

    /// Unpauses a paused domain.
    fn resume(&self, name: &str) -> Result<(), ControlError>;

    /// Removes a shut-off domain's definition.
    fn undefine(&self, name: &str) -> Result<(), ControlError>;

    /// Pauses the domain (if running) and writes its memory state to `state_path`, replacing
    /// any file there only once the state is complete; the domain is shut off afterwards but
    /// stays defined. The image records "paused", so a restore does not run the guest unless
    /// asked to.
    fn save(&self, name: &str, state_path: &Path) -> Result<SavedState, SaveError>;

    /// Brings back a domain saved by [`Hypervisor::save`] — on this or another host. `spec`
    /// describes the domain on THIS host: its name, RAM and vCPUs must match the saved ones
    /// (a memory image only resumes on the machine shape it was taken on), and its disk,
    /// CD-ROM and serial-log paths replace the saved ones. The domain ends up persistently
    /// defined and in the `after` state; the state file is left in place.
    fn restore(
        &self,
        state_path: &Path,
        spec: &DomainSpec,
        after: AfterRestore,
    ) -> Result<DomainInfo, RestoreError>;

    /// The current state of one domain.
    fn state(&self, name: &str) -> Result<DomainState, QueryError>;

    /// All domains this hypervisor knows, running or not, sorted by name.
    fn list(&self) -> Result<Vec<DomainInfo>, QueryError>;
}

/// The libvirt guest target device of the disk at `index` in [`DomainSpec::disks`]
/// (`vda`, `vdb`, ...), or `None` past [`MAX_DISKS`].
pub fn disk_target(index: usize) -> Option<String> {
    if index >= MAX_DISKS {
        return None;
    }
    let letter = char::from(b'a' + u8::try_from(index).ok()?);
    Some(format!("vd{letter}"))
}

/// The libvirt guest target device of the CD-ROM.
pub const CDROM_TARGET: &str = "sda";

impl DomainSpec {
    /// Checks everything libvirt would otherwise reject with a less precise message, and what
    /// XML cannot carry at all (control characters).
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.memory_mib == 0 {
            return Err(SpecError::new("memory_mib", "must be at least 1 MiB"));
        }
        // libvirt stores memory in KiB in an unsigned long long; keep the product representable.
        if self.memory_mib > u64::MAX / 1024 {
            return Err(SpecError::new("memory_mib", "too large"));
        }
        if self.vcpus == 0 {
            return Err(SpecError::new("vcpus", "must be at least 1"));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(SpecError::new(
                "disks",
                format!("{} disks, at most {MAX_DISKS}", self.disks.len()),
            ));
        }
        for disk in &self.disks {
            host_path("disks.path", &disk.path)?;
        }
        if let Some(cdrom) = &self.cdrom {
            host_path("cdrom", cdrom)?;
        }
        if self.nics.len() > MAX_NICS {
            return Err(SpecError::new(
                "nics",
                format!("{} NICs, at most {MAX_NICS}", self.nics.len()),
            ));
        }
        for nic in &self.nics {
            if let NicSpec::Network { name } = nic {
                if name.is_empty() {
                    return Err(SpecError::new("nics.network", "empty network name"));
                }
                xml_text("nics.network", name)?;
            }
        }
        if let Some(log) = &self.serial_log {
            host_path("serial_log", log)?;
        }
        Ok(())
    }
}

/// Domain names become file names under libvirt's state directories and appear in logs, so
/// they are restricted to a portable character set.
fn validate_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(SpecError::new("name", "empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(SpecError::new(
            "name",
            format!("{} bytes, at most {MAX_NAME_LEN}", name.len()),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(SpecError::new(
            "name",
            format!("character {bad:?} not allowed (use A-Z a-z 0-9 . _ -)"),
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(SpecError::new("name", "must not start with '.' or '-'"));
    }
    Ok(())
}

/// A path handed to libvirt: absolute (libvirtd's working directory is not ours), UTF-8 (the
/// bindings take `&str`) and free of characters XML cannot carry.
pub(crate) fn host_path<'a>(field: &'static str, path: &'a Path) -> Result<&'a str, SpecError> {
    let Some(text) = path.to_str() else {
        return Err(SpecError::new(
            field,
            format!("{} is not UTF-8", path.display()),
        ));
    };
    if !path.is_absolute() {
        return Err(SpecError::new(
            field,
            format!("{text:?} is not an absolute path"),
        ));
    }
    xml_text(field, text)?;
    Ok(text)
}

/// XML 1.0 cannot represent most control characters even escaped; NUL would also cut the C
/// string libvirt receives.
fn xml_text(field: &'static str, text: &str) -> Result<(), SpecError> {
    if text.chars().any(|c| c.is_control()) {
        return Err(SpecError::new(
            field,
            format!("{text:?} contains a control character"),
        ));
    }
    Ok(())
}

/// A [`DomainSpec`] field that cannot be turned into a domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid domain spec: {field}: {reason}")]
pub struct SpecError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Opening a hypervisor connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// libvirt could not open the URI (daemon not running, unknown driver, permissions).
    #[error("cannot connect to hypervisor {uri}: {message}")]
    Connect {
        /// The URI that was opened.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// The connection works but its driver is not one this backend can generate XML for.
    #[error("hypervisor {uri} uses driver {driver:?}; supported: test, QEMU")]
    UnsupportedDriver {
        /// The URI that was opened.
        uri: String,
        /// The driver name libvirt reported.
        driver: String,
    },
}

/// [`Hypervisor::define`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefineError {
    /// The spec was rejected before reaching libvirt.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// A domain with this name is already defined.
    #[error("domain {name:?} is already defined")]
    AlreadyExists {
        /// The domain name.
        name: String,
    },
    /// libvirt refused the definition.
    #[error("defining domain {name:?} failed: {message}")]
    Libvirt {
        /// The domain name.
        name: String,
        /// libvirt's message.
        message: String,
    },
}

/// A lifecycle operation ([`Operation`]) on an existing domain failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No domain has this name.
    #[error("{op} {name:?}: no such domain")]
    NoSuchDomain {
        /// What was attempted.
        op: Operation,
        /// The domain name.
        name: String,
    },
    /// The domain is not in a state that allows the operation (resume of a running domain,
    /// undefine of a transient one...).
    #[error("{op} {name:?}: not possible in its current state: {message}")]
    InvalidState {
        /// What was attempted.
        op: Operation,
        /// The domain name.
        name: String,
        /// libvirt's message.
        message: String,
    },
    /// Any other libvirt failure.
    #[error("{op} {name:?} failed: {message}")]
    Libvirt {
        /// What was attempted.
        op: Operation,
        /// The domain name.
        name: String,
        /// libvirt's message.
        message: String,
    },
}

/// [`Hypervisor::save`] failed. When libvirt fails the domain is left as it was (running or
/// paused); only when the final rename fails is it already shut off, with its complete state in
/// `<state_path>.partial`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// No domain has this name.
    #[error("save {name:?}: no such domain")]
    NoSuchDomain {
        /// The domain name.
        name: String,
    },
    /// The domain is not running or paused.
    #[error("save {name:?}: domain is {state}, only a running or paused domain can be saved")]
    NotActive {
        /// The domain name.
        name: String,
        /// Its state.
        state: DomainState,
    },
    /// The state path cannot be handed to libvirt.
    #[error("save {name:?}: {source}")]
    Path {
        /// The domain name.
        name: String,
        /// What is wrong with the path.
        source: SpecError,
    },
    /// Moving the finished state file into place failed.
    #[error("save {name:?}: cannot move state file into {}: {source}", path.display())]
    Io {
        /// The domain name.
        name: String,
        /// The final state path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// libvirt failed to pause or save the domain.
    #[error("save {name:?} failed: {message}")]
    Libvirt {
        /// The domain name.
        name: String,
        /// libvirt's message.
        message: String,
    },
}

/// [`Hypervisor::restore`] failed; a domain this call defined is undefined again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The spec (or the state path) was rejected before reaching libvirt.
    #[error("restore: {0}")]
    Invalid(#[from] SpecError),
    /// The state file is missing or is not a libvirt saved-state image.
    #[error("restore: cannot read saved state {path}: {message}")]
    StateFile {
        /// The state file.
        path: String,
        /// libvirt's message.
        message: String,
    },
    /// The saved domain does not fit the spec (other name, RAM, vCPUs or disks).
    #[error("restore: saved state {path} does not match the spec: {reason}")]
    Mismatch {
        /// The state file.
        path: String,
        /// Which property differs.
        reason: String,
    },
    /// The XML embedded in the state file asks for host resources vwnet never defines
    /// (an extra device, a kernel file, a network script...): a hot image is data from
    /// another peer, and libvirtd would act on it as root.
    #[error("restore: saved state {path} refused: {reason}")]
    Refused {
        /// The state file.
        path: String,
        /// What was refused.
        reason: String,
    },
    /// The XML embedded in the state file could not be parsed or rewritten.
    #[error("restore: saved state {path} holds unusable domain XML: {reason}")]
    SavedXml {
        /// The state file.
        path: String,
        /// The parse problem.
        reason: String,
    },
    /// A domain of that name is running or paused on this host.
    #[error("restore {name:?}: a domain of that name is {state}; destroy it first")]
    DomainActive {
        /// The domain name.
        name: String,
        /// Its state.
        state: DomainState,
    },
    /// libvirt failed to define or restore the domain.
    #[error("restore {name:?} failed: {message}")]
    Libvirt {
        /// The domain name.
        name: String,
        /// libvirt's message.
        message: String,
    },
}

/// Reading domain state failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No domain has this name.
    #[error("no such domain {name:?}")]
    NoSuchDomain {
        /// The domain name.
        name: String,
    },
    /// libvirt failed to answer.
    #[error("querying hypervisor failed: {message}")]
    Libvirt {
        /// libvirt's message.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One way to spoil a valid spec.
    type Mutation = Box<dyn Fn(&mut DomainSpec)>;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "ws-1".into(),
            memory_mib: 128,
            vcpus: 1,
            disks: vec![DiskSpec {
                path: "/var/lib/vwnet/images/ws-1.raw".into(),
                format: DiskFormat::Raw,
                read_only: false,
            }],
            cdrom: None,
            nics: vec![NicSpec::User],
            serial_log: Some("/var/log/vwnet/ws-1.log".into()),
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("name", Box::new(|s| s.name.clear())),
            ("name", Box::new(|s| s.name = "a/b".into())),
            ("name", Box::new(|s| s.name = "<x>".into())),
            ("name", Box::new(|s| s.name = "-x".into())),
            ("name", Box::new(|s| s.name = "x".repeat(MAX_NAME_LEN + 1))),
            ("memory_mib", Box::new(|s| s.memory_mib = 0)),
            ("memory_mib", Box::new(|s| s.memory_mib = u64::MAX)),
            ("vcpus", Box::new(|s| s.vcpus = 0)),
            (
                "disks.path",
                Box::new(|s| s.disks[0].path = "rel/disk.raw".into()),
            ),
            (
                "disks.path",
                Box::new(|s| s.disks[0].path = "/a\u{1}b".into()),
            ),
            ("disks.path", Box::new(|s| s.disks[0].path = "/a\0b".into())),
            (
                "disks",
                Box::new(|s| s.disks = vec![s.disks[0].clone(); MAX_DISKS + 1]),
            ),
            ("cdrom", Box::new(|s| s.cdrom = Some("x.iso".into()))),
            (
                "serial_log",
                Box::new(|s| s.serial_log = Some("log".into())),
            ),
            (
                "nics",
                Box::new(|s| s.nics = vec![NicSpec::User; MAX_NICS + 1]),
            ),
            (
                "nics.network",
                Box::new(|s| {
                    s.nics = vec![NicSpec::Network {
                        name: String::new(),
                    }]
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn boundary_sizes_are_accepted() {
        let mut s = spec();
        s.name = "x".repeat(MAX_NAME_LEN);
        s.disks = vec![s.disks[0].clone(); MAX_DISKS];
        s.nics = vec![NicSpec::User; MAX_NICS];
        s.memory_mib = 1;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn paths_with_xml_metacharacters_are_valid() {
        let mut s = spec();
        s.disks[0].path = r#"/img/<a&b>"'.raw"#.into();
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn disk_targets_are_virtio_letters() {
        assert_eq!(disk_target(0).as_deref(), Some("vda"));
        assert_eq!(disk_target(MAX_DISKS - 1).as_deref(), Some("vdt"));
        assert_eq!(disk_target(MAX_DISKS), None);
    }
}
