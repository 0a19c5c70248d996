//! *Select*: does a description fit a host? Ranges are matched against what the host has, and a
//! refusal lists every requirement that failed, not only the first.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::extensions::one_line;
use super::model::{AddressMode, Bounds, Category, Description, State, Vmm};
use super::validate::{FieldError, join};

const MIB: u64 = 1024 * 1024;

/// What a host offers to workspaces, as the node's operator describes it (TOML).
///
/// ```toml
/// ram_mib = 8192
/// vcpus = 4
/// disk_free_bytes = 107374182400
/// hypervisors = ["kvm", "qemu"]
/// dynamic_accounts = false
/// devices = ["cdrom"]
///
/// [networks]
/// dhcp = true
/// pools = ["grid-pool"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostProfile {
    /// RAM the host can give to workspaces, in MiB.
    pub ram_mib: u64,
    /// Virtual CPUs the host can give.
    pub vcpus: u64,
    /// Free disk space for images and disks, in bytes.
    pub disk_free_bytes: u64,
    /// Virtual machine monitors installed on the host.
    #[serde(default)]
    pub hypervisors: BTreeSet<Vmm>,
    /// Whether the host can create dynamic accounts.
    #[serde(default)]
    pub dynamic_accounts: bool,
    /// Networks workspaces can join.
    #[serde(default)]
    pub networks: HostNetworks,
    /// Devices the host can attach, such as `cdrom`.
    #[serde(default)]
    pub devices: BTreeSet<String>,
}

/// How workspaces on a host can get network addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostNetworks {
    /// A DHCP server serves the workspaces' network.
    #[serde(default)]
    pub dhcp: bool,
    /// Named pools of reserved addresses the host hands out.
    #[serde(default)]
    pub pools: BTreeSet<String>,
}

/// Why a host profile could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostProfileError {
    /// The TOML is malformed or a field is wrong; the message is one line.
    #[error("{0}")]
    Toml(String),
}

impl HostProfile {
    /// Parses a host profile from TOML.
    pub fn from_toml_str(input: &str) -> Result<Self, HostProfileError> {
        toml::from_str(input).map_err(|e: toml::de::Error| {
            let mut msg = String::new();
            if let Some(span) = e.span() {
                let before = input.get(..span.start).unwrap_or(input);
                let _ = write!(msg, "line {}: ", before.matches('\n').count() + 1);
            }
            msg.push_str(&one_line(e.message()));
            HostProfileError::Toml(msg)
        })
    }
}

/// What a host gives a workspace that fits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// RAM to give, in MiB: as much of the range as the host has (`None`: no requirement).
    pub ram_mib: Option<u64>,
    /// vCPUs to give: as many of the range as the host has (`None`: no requirement).
    pub vcpus: Option<u64>,
    /// Disk space the workspace takes on the host, in bytes.
    pub disk_bytes: u64,
    /// The monitor that will run it (`None` for a dynamic account).
    pub vmm: Option<Vmm>,
}

/// Why a description does not fit a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// These requirements are not met, each naming its field.
    #[error("{}", join(.0))]
    Unmet(Vec<FieldError>),
}

impl SelectError {
    /// Every requirement that failed.
    pub fn failures(&self) -> &[FieldError] {
        match self {
            SelectError::Unmet(failures) => failures,
        }
    }
}

/// Gives `wanted.min..=wanted.max` from what the host has: as much as possible, at most `max`.
fn fit(
    failures: &mut Vec<FieldError>,
    path: &str,
    wanted: Option<&Bounds>,
    host: u64,
    unit: &str,
) -> Option<u64> {
    let wanted = wanted?;
    if wanted.min > wanted.max {
        failures.push(FieldError::new(
            path,
            format!("min {}{unit} is above max {}{unit}", wanted.min, wanted.max),
        ));
        return None;
    }
    if host < wanted.min {
        failures.push(FieldError::new(
            path,
            format!("needs at least {}{unit}, host has {host}{unit}", wanted.min),
        ));
        return None;
    }
    Some(host.min(wanted.max))
}

fn list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    let names: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Matches `desc` against `host`. On success, says what the host gives; otherwise lists every
/// requirement that failed.
///
/// Disk need: the virtual disk size (`hardware.disk.size_mib`) or the disk image's size, whichever
/// is larger, plus the memory state's size for a hot workspace. Expiry is not checked here (it
/// needs the time); see [`Description::is_expired`].
pub fn select(desc: &Description, host: &HostProfile) -> Result<Placement, SelectError> {
    let mut failures = Vec::new();
    let f = &mut failures;

    let vmm = match &desc.category {
        Category::Vm { vmm } => {
            if !host.hypervisors.contains(vmm) {
                f.push(FieldError::new(
                    "vmm",
                    format!("needs {vmm}, host has {}", list(&host.hypervisors)),
                ));
            }
            Some(vmm.clone())
        }
        Category::DynamicAccount => {
            if !host.dynamic_accounts {
                f.push(FieldError::new(
                    "category",
                    "needs dynamic accounts, host does not create them",
                ));
            }
            None
        }
    };
    if desc.state == State::Corrupted {
        f.push(FieldError::new(
            "state",
            "a corrupted workspace cannot be deployed",
        ));
    }

    let hw = &desc.hardware;
    let ram_mib = fit(f, "hardware.ram", hw.ram.as_ref(), host.ram_mib, " MiB");
    let vcpus = fit(f, "hardware.vcpus", hw.vcpus.as_ref(), host.vcpus, "");

    let virtual_disk = hw
        .disk
        .as_ref()
        .map_or(0, |d| d.size_mib.saturating_mul(MIB));
    let image = desc.image.disk.map_or(0, |r| r.size);
    let memory = desc.image.memory_state.map_or(0, |r| r.size);
    let disk_bytes = virtual_disk.max(image).saturating_add(memory);
    if disk_bytes > host.disk_free_bytes {
        f.push(FieldError::new(
            "hardware.disk",
            format!(
                "needs {disk_bytes} bytes of disk, host has {} free",
                host.disk_free_bytes
            ),
        ));
    }
    let missing: Vec<&String> = hw
        .devices
        .iter()
        .filter(|d| !host.devices.contains(*d))
        .collect();
    if !missing.is_empty() {
        f.push(FieldError::new(
            "hardware.devices",
            format!("needs {}, host has {}", list(missing), list(&host.devices)),
        ));
    }

    for (i, nic) in desc.network.nics.iter().enumerate() {
        let path = format!("network.nics[{i}]");
        match &nic.address {
            AddressMode::Dhcp if !host.networks.dhcp => f.push(FieldError::new(
                path,
                format!("{} needs DHCP, host offers none", nic.name),
            )),
            AddressMode::Pool(pool) if !host.networks.pools.contains(pool) => {
                f.push(FieldError::new(
                    path,
                    format!(
                        "{} needs address pool {pool:?}, host has {}",
                        nic.name,
                        list(&host.networks.pools)
                    ),
                ));
            }
            _ => {}
        }
    }

    if failures.is_empty() {
        Ok(Placement {
            ram_mib,
            vcpus,
            disk_bytes,
            vmm,
        })
    } else {
        Err(SelectError::Unmet(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::sample;
    use super::*;

    fn host(ram_mib: u64) -> HostProfile {
        HostProfile {
            ram_mib,
            vcpus: 2,
            disk_free_bytes: 100 << 30,
            hypervisors: [Vmm::Kvm].into(),
            dynamic_accounts: false,
            networks: HostNetworks {
                dhcp: true,
                pools: BTreeSet::new(),
            },
            devices: ["cdrom".to_string()].into(),
        }
    }

    #[test]
    fn range_is_capped_by_host() {
        let p = select(&sample(), &host(1024)).unwrap();
        assert_eq!(p.ram_mib, Some(1024));
        assert_eq!(p.vcpus, Some(2));
        assert_eq!(p.vmm, Some(Vmm::Kvm));
        // A bigger host gives at most the range's max.
        assert_eq!(select(&sample(), &host(65536)).unwrap().ram_mib, Some(2048));
    }

    #[test]
    fn every_failure_is_listed() {
        let mut d = sample();
        d.hardware.ram = Some(Bounds::new(4096, 8192));
        d.category = Category::Vm { vmm: Vmm::Xen };
        let err = select(&d, &host(1024)).unwrap_err();
        let paths: Vec<&str> = err.failures().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["vmm", "hardware.ram"]);
        assert_eq!(
            err.failures()[1].to_string(),
            "hardware.ram: needs at least 4096 MiB, host has 1024 MiB"
        );
    }

    #[test]
    fn host_profile_parses_and_rejects_typos() {
        let h = HostProfile::from_toml_str(
            "ram_mib = 8192\nvcpus = 4\ndisk_free_bytes = 1000\nhypervisors = [\"kvm\"]\n[networks]\ndhcp = true\npools = [\"grid\"]\n",
        )
        .unwrap();
        assert!(h.hypervisors.contains(&Vmm::Kvm));
        assert!(h.networks.pools.contains("grid"));
        let err =
            HostProfile::from_toml_str("ram_mib = 1\nvcpus = 1\ndisk_free_bytes = 1\nram = 5\n")
                .unwrap_err();
        assert!(err.to_string().starts_with("line 4: "), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}
