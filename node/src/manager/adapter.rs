//! Description → [`DomainSpec`]: what a workspace becomes on this host.
//!
//! The host is described to `select()` as a [`HostProfile`] built from the machine (RAM, CPUs)
//! and the hypervisor kind; `select()` then gives RAM and vCPUs within the description's ranges
//! and the host's capacity, or lists every requirement the host fails. The spec's files live in
//! the workspace's directory under `<home>/images/<ws>/`.

use std::path::{Path, PathBuf};

use vwnet_protocol::description::{
    AccessMode, Description, DiskType, ExtValue, HostNetworks, HostProfile, Placement, Vmm,
};
use vwnet_protocol::ids::{PeerIdentity, WorkspaceId};

use crate::hypervisor::{DiskFormat, DiskSpec, DomainKind, DomainSpec, NicSpec};

/// Image extension key recording the RAM (MiB) a saved memory state was taken with: a memory
/// image only resumes on a domain of the same shape, whatever the host could give.
pub const SAVED_MEMORY_KEY: &str = "saved_memory_mib";
/// Image extension key recording the vCPUs a saved memory state was taken with.
pub const SAVED_VCPUS_KEY: &str = "saved_vcpus";
/// Image extension key recording the domain name a saved memory state was taken with: libvirt
/// restores a memory image only under its own name (and the workspace's lock makes sure no
/// other node runs a domain of that name meanwhile).
pub const SAVED_DOMAIN_KEY: &str = "saved_domain";

/// The machine a saved memory state was taken on, as far as a restore must reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedShape {
    /// The domain name.
    pub domain: String,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
}

/// RAM kept back for the host itself when offering the machine's RAM to workspaces.
const HOST_RESERVE_MIB: u64 = 512;

/// The libvirt domain name of `workspace` on the node `node`. The test driver's fake machine
/// is shared by every connection of a process, so the node's own id is part of the name.
pub fn domain_name(workspace: &WorkspaceId, node: &PeerIdentity) -> String {
    format!("vwnet-{}-{}", workspace.short(), node.short())
}

/// Where a deployed workspace's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The directory of `workspace` under `images` (`<home>/images`).
    pub fn new(images: &Path, workspace: &WorkspaceId) -> Self {
        Self {
            dir: images.join(workspace.to_string()),
        }
    }

    /// The workspace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The materialised disk image.
    pub fn disk(&self, format: DiskFormat) -> PathBuf {
        self.dir.join(format!("disk.{}", format.as_str()))
    }

    /// The saved memory state.
    pub fn memory_state(&self) -> PathBuf {
        self.dir.join("memory.state")
    }

    /// The guest's serial console log.
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The (empty) medium in the CD-ROM drive of a workspace that needs one.
    pub fn cdrom(&self) -> PathBuf {
        self.dir.join("cdrom.iso")
    }
}

/// What this host offers, for `select()`.
pub fn host_profile(kind: DomainKind) -> HostProfile {
    let ram_mib = total_ram_mib().saturating_sub(HOST_RESERVE_MIB).max(1);
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let hypervisors = match kind {
        // The test driver accepts any domain; QEMU with KVM also runs plain QEMU guests.
        DomainKind::Test | DomainKind::Kvm => [Vmm::Kvm, Vmm::Qemu].into(),
        DomainKind::Qemu => [Vmm::Qemu].into(),
    };
    HostProfile {
        ram_mib,
        vcpus,
        // Not measured (std has no statvfs and the node allows no unsafe code outside the
        // libvirt binding); a full disk fails the materialisation cleanly instead.
        disk_free_bytes: u64::MAX,
        hypervisors,
        dynamic_accounts: false,
        // Every NIC is QEMU user-mode networking, whose built-in server answers DHCP.
        networks: HostNetworks {
            dhcp: true,
            pools: Default::default(),
        },
        devices: ["cdrom".to_owned()].into(),
    }
}

/// MemTotal from `/proc/meminfo`, in MiB (a conservative 1 GiB if it cannot be read).
fn total_ram_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024)
        })
        .unwrap_or(1024)
}

/// The disk format a description's image is materialised as.
pub fn disk_format(d: &Description) -> DiskFormat {
    match d.hardware.disk.as_ref().map(|disk| disk.kind) {
        Some(DiskType::Qcow2) => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    }
}

/// The machine shape recorded with a saved memory state, if the description has one.
pub fn saved_shape(d: &Description) -> Option<SavedShape> {
    let value = |key: &str| d.image.extensions.get(key)?.value().ok();
    let int = |key: &str| -> Option<u64> { u64::try_from(value(key)?.as_integer()?).ok() };
    Some(SavedShape {
        domain: value(SAVED_DOMAIN_KEY)?.as_str()?.to_owned(),
        memory_mib: int(SAVED_MEMORY_KEY)?,
        vcpus: u32::try_from(int(SAVED_VCPUS_KEY)?).ok()?,
    })
}

/// Records the machine shape of a saved memory state in `d`'s image extensions (or removes it
/// when there is none).
pub fn set_saved_shape(d: &mut Description, shape: Option<&SavedShape>) {
    let ext = &mut d.image.extensions;
    match shape {
        Some(shape) => {
            let int =
                |v: u64| ExtValue::new(toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)));
            ext.insert(
                SAVED_DOMAIN_KEY.into(),
                ExtValue::new(toml::Value::String(shape.domain.clone())),
            );
            ext.insert(SAVED_MEMORY_KEY.into(), int(shape.memory_mib));
            ext.insert(SAVED_VCPUS_KEY.into(), int(u64::from(shape.vcpus)));
        }
        None => {
            ext.remove(SAVED_DOMAIN_KEY);
            ext.remove(SAVED_MEMORY_KEY);
            ext.remove(SAVED_VCPUS_KEY);
        }
    }
}

/// Fallback RAM for a description without a RAM requirement (only dynamic accounts lack one).
const DEFAULT_MEMORY_MIB: u64 = 256;

/// Builds the domain of `d` on this host: RAM and vCPUs from the placement (or, for a hot
/// image, the saved shape, which must fit the host, and the saved domain name), the
/// materialised disk, one user-mode NIC per described NIC, an empty CD-ROM if the workspace
/// needs one, serial console to a file.
pub fn domain_spec(
    d: &Description,
    placement: &Placement,
    host: &HostProfile,
    name: String,
    layout: &Layout,
) -> Result<DomainSpec, String> {
    let (name, memory_mib, vcpus) = match (d.image.memory_state, saved_shape(d)) {
        (Some(_), Some(shape)) => {
            let (memory, vcpus) = (shape.memory_mib, shape.vcpus);
            if memory > host.ram_mib || u64::from(vcpus) > host.vcpus {
                return Err(format!(
                    "the saved memory state needs {memory} MiB and {vcpus} vCPUs, host has {} MiB and {} vCPUs",
                    host.ram_mib, host.vcpus
                ));
            }
            // The name comes from a peer's description: it may only ever name a vwnet domain
            // of this workspace, never another VM on this host.
            let prefix = format!("vwnet-{}-", d.id.short());
            if !shape.domain.starts_with(&prefix) {
                return Err(format!(
                    "the saved memory state's domain {:?} is not named {prefix}...",
                    shape.domain
                ));
            }
            (shape.domain, memory, vcpus)
        }
        (Some(_), None) => {
            return Err(format!(
                "image.memory_state has no {SAVED_DOMAIN_KEY}/{SAVED_MEMORY_KEY}/{SAVED_VCPUS_KEY}: the machine it was saved on is unknown"
            ));
        }
        (None, _) => {
            let memory = placement.ram_mib.unwrap_or(DEFAULT_MEMORY_MIB);
            let vcpus = u32::try_from(placement.vcpus.unwrap_or(1)).unwrap_or(u32::MAX);
            (name, memory, vcpus)
        }
    };
    let format = disk_format(d);
    let disks = match d.image.disk {
        Some(_) => vec![DiskSpec {
            path: layout.disk(format),
            format,
            read_only: d
                .hardware
                .disk
                .as_ref()
                .is_some_and(|disk| disk.access == AccessMode::ReadOnly),
        }],
        None => Vec::new(),
    };
    let spec = DomainSpec {
        name,
        memory_mib,
        vcpus,
        disks,
        cdrom: d.hardware.devices.contains("cdrom").then(|| layout.cdrom()),
        nics: d.network.nics.iter().map(|_| NicSpec::User).collect(),
        serial_log: Some(layout.console()),
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use vwnet_protocol::description::{Bounds, select};

    use super::*;

    fn description() -> Description {
        let id = WorkspaceId::from_bytes([7; 16]);
        let owner = PeerIdentity::from_bytes([9; 32]);
        let text = vwnet_protocol::description::template_for(
            id,
            owner,
            vwnet_protocol::time::Timestamp::from_unix_secs(1_800_000_000),
        );
        let mut d = Description::from_toml_str(&text).unwrap();
        d.image.disk = Some(vwnet_protocol::description::ImageRef {
            id: vwnet_protocol::ids::ImageId::from_bytes([3; 32]),
            size: 1 << 20,
        });
        d
    }

    fn host(ram_mib: u64, vcpus: u64) -> HostProfile {
        HostProfile {
            ram_mib,
            vcpus,
            ..host_profile(DomainKind::Test)
        }
    }

    #[test]
    fn ram_and_vcpus_follow_the_ranges_and_the_host() {
        let d = description();
        let layout = Layout::new(Path::new("/h/images"), &d.id);
        // Template: RAM 512..=2048 MiB, vCPUs 1..=2.
        for (host_ram, host_cpus, want_ram, want_cpus) in
            [(1024, 1, 1024, 1), (65536, 16, 2048, 2), (512, 2, 512, 2)]
        {
            let h = host(host_ram, host_cpus);
            let p = select(&d, &h).unwrap();
            let spec = domain_spec(&d, &p, &h, "n".into(), &layout).unwrap();
            assert_eq!((spec.memory_mib, spec.vcpus), (want_ram, want_cpus));
        }
        let h = host(65536, 16);
        let spec = domain_spec(&d, &select(&d, &h).unwrap(), &h, "n".into(), &layout).unwrap();
        assert_eq!(
            spec.disks[0].path,
            Path::new("/h/images")
                .join(d.id.to_string())
                .join("disk.qcow2")
        );
        assert_eq!(spec.disks[0].format, DiskFormat::Qcow2);
        assert_eq!(spec.cdrom, Some(layout.cdrom()));
        assert_eq!(spec.nics, vec![NicSpec::User]);
        assert_eq!(spec.serial_log, Some(layout.console()));
    }

    #[test]
    fn a_host_mismatch_lists_every_failed_requirement() {
        let mut d = description();
        d.hardware.ram = Some(Bounds::new(4096, 8192));
        d.hardware.vcpus = Some(Bounds::new(8, 8));
        d.hardware.devices.insert("gpu".into());
        let err = select(&d, &host(1024, 2)).unwrap_err().to_string();
        for field in ["hardware.ram", "hardware.vcpus", "hardware.devices"] {
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn a_hot_image_keeps_its_saved_shape() {
        let mut d = description();
        d.image.memory_state = d.image.disk;
        let shape = SavedShape {
            domain: "vwnet-07070707-elsewhere".into(),
            memory_mib: 768,
            vcpus: 1,
        };
        set_saved_shape(&mut d, Some(&shape));
        assert_eq!(saved_shape(&d), Some(shape.clone()));
        let back = Description::from_canonical_bytes(&d.to_canonical_bytes()).unwrap();
        assert_eq!(saved_shape(&back), Some(shape.clone()));
        let layout = Layout::new(Path::new("/h/images"), &d.id);
        let h = host(65536, 16);
        let spec = domain_spec(&d, &select(&d, &h).unwrap(), &h, "n".into(), &layout).unwrap();
        assert_eq!((spec.memory_mib, spec.vcpus), (768, 1));
        assert_eq!(
            spec.name, shape.domain,
            "restored under the name it was saved with"
        );
        // A saved name that is not this workspace's vwnet domain is refused.
        let mut foreign = d.clone();
        let other = SavedShape {
            domain: "production-db".into(),
            ..shape.clone()
        };
        set_saved_shape(&mut foreign, Some(&other));
        let err =
            domain_spec(&foreign, &select(&d, &h).unwrap(), &h, "n".into(), &layout).unwrap_err();
        assert!(err.contains("production-db"), "{err}");
        // A host too small for the saved shape refuses, naming it.
        let small = host(700, 16);
        let err = domain_spec(
            &d,
            &select(&d, &small).unwrap(),
            &small,
            "n".into(),
            &layout,
        )
        .unwrap_err();
        assert!(err.contains("768 MiB"), "{err}");
        // Without the shape a memory state cannot be restored.
        set_saved_shape(&mut d, None);
        assert!(domain_spec(&d, &select(&d, &h).unwrap(), &h, "n".into(), &layout).is_err());
    }

    #[test]
    fn domain_names_differ_per_node() {
        let ws = WorkspaceId::from_bytes([1; 16]);
        let a = domain_name(&ws, &PeerIdentity::from_bytes([2; 32]));
        let b = domain_name(&ws, &PeerIdentity::from_bytes([3; 32]));
        assert_ne!(a, b);
        assert!(a.starts_with("vwnet-01010101-"), "{a}");
    }
}
