//! The description's data model: one Rust type per element of the paper's schema.
//!
//! These types derive serde in the shape postcard needs for the canonical binary form (externally
//! tagged enums, no `flatten`, no `skip_serializing_if`): postcard encodes them field by field in
//! declaration order and enum variants by index, so field and variant names (kebab-case, as in
//! TOML) only matter to self-describing formats such as JSON. The TOML form is read and written by
//! hand in `human`, which is where its friendlier shapes (`category = "vm"` + `vmm = "kvm"`,
//! `address = "pool:grid"`) live.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::extensions::Extensions;
use crate::ids::{DescriptionHash, ImageId, PeerIdentity, WorkspaceId};
use crate::time::{Span, Timestamp};

/// A virtual workspace: what it is, what it needs from a host, and which image implements it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The workspace's stable identity across versions.
    pub id: WorkspaceId,
    /// Human name of the workspace.
    pub name: String,
    /// The owner's ed25519 public key (where the paper has a distinguished name).
    pub owner: PeerIdentity,
    /// Optional human name of the owner, such as `/O=Grid/CN=Alice`.
    pub owner_name: Option<String>,
    /// How the workspace is implemented.
    pub category: Category,
    /// The workspace's state.
    pub state: State,
    /// When the workspace was first created (or cloned).
    pub creation_time: Timestamp,
    /// How long after `creation_time` the workspace is available; `None` means without limit.
    pub life_cycle: Option<Span>,
    /// When any property of the workspace last changed.
    pub last_modified: Timestamp,
    /// Version number, starting at 1, incremented by every change that is published.
    pub version: u64,
    /// Digest of the previous version's canonical bytes; `None` exactly for version 1.
    pub previous: Option<DescriptionHash>,
    /// Which workspace version this one was cloned from, if any.
    pub cloned_from: Option<Lineage>,
    /// Nodes that grant this workspace's locks; empty means the publishing node decides.
    pub lock_authorities: Vec<PeerIdentity>,
    /// Hardware requirements.
    pub hardware: Hardware,
    /// Network configuration.
    pub network: Network,
    /// Installed software.
    pub software: Software,
    /// What the workspace can do once started.
    pub capability: Capability,
    /// The content-addressed images that implement the workspace.
    pub image: Image,
    /// Unknown top-level fields, kept verbatim.
    pub extensions: Extensions,
}

/// How a workspace is implemented (the paper's category type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// A virtual machine run by the named monitor.
    Vm {
        /// The virtual machine monitor type that can run the image.
        vmm: Vmm,
    },
    /// A dynamically created user account.
    DynamicAccount,
}

impl Category {
    /// The category's name in the human format: `vm` or `dynamic-account`.
    pub fn name(&self) -> &'static str {
        match self {
            Category::Vm { .. } => "vm",
            Category::DynamicAccount => "dynamic-account",
        }
    }
}

/// A virtual machine monitor type.
///
/// Serialized as its name in every format, so `Other("kvm")` and `Kvm` encode identically and
/// decoding always yields the named variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Vmm {
    /// Linux KVM.
    Kvm,
    /// QEMU without hardware acceleration.
    Qemu,
    /// Xen.
    Xen,
    /// VMware.
    Vmware,
    /// VirtualBox.
    Virtualbox,
    /// Any other monitor, by a lowercase name such as `bhyve`.
    Other(String),
}

impl Vmm {
    /// The monitor's name.
    pub fn as_str(&self) -> &str {
        match self {
            Vmm::Kvm => "kvm",
            Vmm::Qemu => "qemu",
            Vmm::Xen => "xen",
            Vmm::Vmware => "vmware",
            Vmm::Virtualbox => "virtualbox",
            Vmm::Other(name) => name,
        }
    }
}

/// Why a string is not a valid value of a description field type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldParseError(pub(crate) String);

/// True for the names that `Vmm::Other` and device names may use: `[a-z0-9][a-z0-9._-]*`.
pub(crate) fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

impl FromStr for Vmm {
    type Err = FieldParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "kvm" => Vmm::Kvm,
            "qemu" => Vmm::Qemu,
            "xen" => Vmm::Xen,
            "vmware" => Vmm::Vmware,
            "virtualbox" => Vmm::Virtualbox,
            other if is_plain_name(other) => Vmm::Other(other.to_string()),
            other => {
                return Err(FieldParseError(format!(
                    "{other:?} is not a monitor name (lowercase letters, digits, '.', '_', '-')"
                )));
            }
        })
    }
}

impl fmt::Display for Vmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Vmm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Vmm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(de::Error::custom)
    }
}

/// Defines a fieldless enum with kebab-case names for `Display`/`FromStr`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's name in the human format.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = FieldParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(FieldParseError(format!(
                        concat!("{:?} is not a ", $what, " (expected one of: {})"),
                        other,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

named_enum!(
    /// A workspace's state (the paper's stateType).
    State, "state" {
        /// A cold image with no running processes.
        Shutdown = "shutdown",
        /// A hot image: its memory state is saved and it resumes where it stopped.
        Paused = "paused",
        /// Deployed and running on a resource.
        Running = "running",
        /// Cannot be deployed because of internal inconsistencies.
        Corrupted = "corrupted",
    }
);

named_enum!(
    /// On-disk format of the virtual disk.
    DiskType, "disk type" {
        /// A raw disk image.
        Raw = "raw",
        /// A QEMU copy-on-write v2 image.
        Qcow2 = "qcow2",
    }
);

named_enum!(
    /// How the workspace may access its disk.
    AccessMode, "access mode" {
        /// Reads only.
        ReadOnly = "read-only",
        /// Reads and writes to the image itself.
        ReadWrite = "read-write",
        /// Writes go to a private overlay; the image stays unchanged.
        CopyOnWrite = "copy-on-write",
    }
);

named_enum!(
    /// Transport protocol of a service port.
    Transport, "transport" {
        /// TCP.
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
    }
);

/// An inclusive range `min..=max`, as the paper describes requirements ("a set of possible values").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bounds {
    /// Smallest acceptable value.
    pub min: u64,
    /// Largest useful value.
    pub max: u64,
}

impl Bounds {
    /// The range `min..=max`.
    pub const fn new(min: u64, max: u64) -> Self {
        Self { min, max }
    }

    /// Whether `other` lies entirely within this range.
    pub fn contains_range(&self, other: &Bounds) -> bool {
        self.min <= other.min && other.max <= self.max
    }
}

/// Hardware requirements: the "virtual resource" of the paper.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    /// RAM in MiB; required for a `vm` workspace.
    pub ram: Option<Bounds>,
    /// Virtual CPUs; required for a `vm` workspace.
    pub vcpus: Option<Bounds>,
    /// The virtual disk.
    pub disk: Option<Disk>,
    /// Devices the workspace needs, such as `cdrom`.
    pub devices: BTreeSet<String>,
    /// Unknown fields of `[hardware]`, kept verbatim.
    pub extensions: Extensions,
}

/// The virtual disk a workspace needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Size of the virtual disk in MiB.
    pub size_mib: u64,
    /// On-disk format (`type` in TOML and JSON).
    #[serde(rename = "type")]
    pub kind: DiskType,
    /// How the workspace accesses it.
    pub access: AccessMode,
    /// Unknown fields of `[hardware.disk]`, kept verbatim.
    pub extensions: Extensions,
}

/// Network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Network interfaces, in order.
    pub nics: Vec<Nic>,
    /// Unknown fields of `[network]`, kept verbatim.
    pub extensions: Extensions,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name, unique within the workspace (e.g. `eth0`).
    pub name: String,
    /// How the interface gets its address.
    pub address: AddressMode,
    /// Unknown fields of this NIC, kept verbatim.
    pub extensions: Extensions,
}

/// How a network interface obtains its IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressMode {
    /// From a DHCP server on the host's network.
    Dhcp,
    /// From a named pool of pre-reserved addresses that the host manages.
    Pool(String),
    /// A fixed address with its prefix length.
    Static {
        /// The address.
        address: IpAddr,
        /// Network prefix length in bits.
        prefix: u8,
    },
}

impl fmt::Display for AddressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressMode::Dhcp => f.write_str("dhcp"),
            AddressMode::Pool(name) => write!(f, "pool:{name}"),
            AddressMode::Static { address, prefix } => write!(f, "static:{address}/{prefix}"),
        }
    }
}

impl FromStr for AddressMode {
    type Err = FieldParseError;

    /// Parses `dhcp`, `pool:NAME` or `static:ADDRESS/PREFIX`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "dhcp" {
            return Ok(AddressMode::Dhcp);
        }
        if let Some(name) = s.strip_prefix("pool:") {
            return Ok(AddressMode::Pool(name.to_string()));
        }
        if let Some(rest) = s.strip_prefix("static:") {
            let (addr, prefix) = rest.split_once('/').ok_or_else(|| {
                FieldParseError(format!(
                    "{s:?}: a static address needs a prefix, e.g. static:10.0.0.5/24"
                ))
            })?;
            let address: IpAddr = addr
                .parse()
                .map_err(|_| FieldParseError(format!("{addr:?} is not an IP address")))?;
            let prefix: u8 = prefix
                .parse()
                .map_err(|_| FieldParseError(format!("{prefix:?} is not a prefix length")))?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(FieldParseError(format!(
                    "prefix /{prefix} is longer than {max} bits"
                )));
            }
            return Ok(AddressMode::Static { address, prefix });
        }
        Err(FieldParseError(format!(
            "{s:?} is not an address mode (expected dhcp, pool:NAME or static:ADDRESS/PREFIX)"
        )))
    }
}

/// Installed software.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    /// Kernel version, e.g. `6.1`.
    pub kernel: Option<String>,
    /// Distribution, e.g. `debian-12`.
    pub distribution: Option<String>,
    /// Library signature, e.g. `glibc-2.36`.
    pub library_signature: Option<String>,
    /// Installed programs: name to version.
    pub programs: BTreeMap<String, String>,
    /// Unknown fields of `[software]`, kept verbatim.
    pub extensions: Extensions,
}

/// What the workspace can do: a startup program and the services it offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Program run when the workspace starts.
    pub startup: Option<String>,
    /// Services listening on ports once the workspace runs.
    pub services: Vec<Service>,
    /// Unknown fields of `[capability]`, kept verbatim.
    pub extensions: Extensions,
}

/// A service listening on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Service name, e.g. `gram`.
    pub name: String,
    /// Port number (never 0).
    pub port: u16,
    /// Transport protocol.
    pub protocol: Transport,
    /// Unknown fields of this service, kept verbatim.
    pub extensions: Extensions,
}

/// The images that implement the workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The disk image.
    pub disk: Option<ImageRef>,
    /// The saved memory state of a hot (paused) workspace.
    pub memory_state: Option<ImageRef>,
    /// Unknown fields of `[image]`, kept verbatim.
    pub extensions: Extensions,
}

/// A reference to a content-addressed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// BLAKE3 hash of the image's canonical manifest.
    pub id: ImageId,
    /// Size of the image in bytes.
    pub size: u64,
}

/// Where a cloned workspace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lineage {
    /// The source workspace.
    pub workspace: WorkspaceId,
    /// The source workspace's version that was cloned.
    pub version: u64,
    /// Digest of the source description that was cloned.
    pub description: DescriptionHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_modes_round_trip_as_text() {
        for text in [
            "dhcp",
            "pool:grid",
            "static:10.0.0.5/24",
            "static:fe80::1/64",
        ] {
            let mode: AddressMode = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
        }
        assert!("static:10.0.0.5".parse::<AddressMode>().is_err());
        assert!("static:10.0.0.5/33".parse::<AddressMode>().is_err());
        assert!("bootp".parse::<AddressMode>().is_err());
    }

    #[test]
    fn vmm_names_parse_to_named_variants() {
        assert_eq!("kvm".parse::<Vmm>().unwrap(), Vmm::Kvm);
        assert_eq!("bhyve".parse::<Vmm>().unwrap(), Vmm::Other("bhyve".into()));
        assert!("Bad Name".parse::<Vmm>().is_err());
        assert!("".parse::<Vmm>().is_err());
        // `Other("kvm")` encodes as the name, so it decodes to the named variant.
        let bytes = postcard::to_stdvec(&Vmm::Other("kvm".into())).unwrap();
        assert_eq!(postcard::from_bytes::<Vmm>(&bytes).unwrap(), Vmm::Kvm);
    }

    #[test]
    fn named_enums_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), *s);
        }
        for a in AccessMode::ALL {
            assert_eq!(a.as_str().parse::<AccessMode>().unwrap(), *a);
        }
        assert!("frozen".parse::<State>().is_err());
    }
}
