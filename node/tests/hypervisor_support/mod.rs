//! The tiny domain both hypervisor tests define: 128 MiB, one vCPU, a raw disk, a CD-ROM, a
//! user-mode NIC and a serial console to a file, all under one directory. Shared by
//! `hypervisor.rs` (test driver) and `hypervisor_qemu.rs` (real QEMU).

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use vwnet_node::hypervisor::{DiskFormat, DiskSpec, DomainSpec, NicSpec};

/// The CD-ROM image's file name inside the domain's directory.
pub const CDROM: &str = "cdrom.iso";

/// The spec of domain `name` whose files (`disk.raw`, [`CDROM`], `console.log`) are in `dir`.
pub fn spec(name: &str, dir: &Path) -> DomainSpec {
    DomainSpec {
        name: name.to_owned(),
        memory_mib: 128,
        vcpus: 1,
        disks: vec![DiskSpec {
            path: dir.join("disk.raw"),
            format: DiskFormat::Raw,
            read_only: false,
        }],
        cdrom: Some(dir.join(CDROM)),
        nics: vec![NicSpec::User],
        serial_log: Some(dir.join("console.log")),
    }
}
