//! Semantic checks: a description that parses can still be wrong (an empty RAM range, a hot
//! workspace without its memory state). Every problem is reported, each with its field path.

use std::collections::BTreeSet;
use std::fmt;

use super::model::{AddressMode, Bounds, Category, Description, State, Vmm, is_plain_name};
use crate::limits::MAX_DESCRIPTION_LEN;

/// One problem with one field (serializes as `{"path": .., "reason": ..}` for `--json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `hardware.ram` or `network.nics[1].name`.
    pub path: String,
    /// What is wrong, as a sentence fragment.
    pub reason: String,
}

impl FieldError {
    /// An error about `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Why a description is not valid: every problem found, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// One or more fields are invalid.
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
}

impl ValidationError {
    /// The individual problems (the CLI prints one line per problem).
    pub fn errors(&self) -> &[FieldError] {
        match self {
            ValidationError::Invalid(errors) => errors,
        }
    }
}

pub(crate) fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn check_bounds(errors: &mut Vec<FieldError>, path: &str, bounds: &Bounds, unit: &str) {
    if bounds.min == 0 {
        errors.push(FieldError::new(
            path,
            format!("min must be at least 1{unit}"),
        ));
    }
    if bounds.min > bounds.max {
        errors.push(FieldError::new(
            path,
            format!("min {}{unit} is above max {}{unit}", bounds.min, bounds.max),
        ));
    }
}

fn check_text(errors: &mut Vec<FieldError>, path: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(FieldError::new(path, "must not be empty"));
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::new(path, "must not contain control characters"));
    }
}

pub(crate) fn validate(desc: &Description) -> Result<(), ValidationError> {
    let mut errors = Vec::new();
    let e = &mut errors;

    check_text(e, "name", &desc.name);
    if let Some(owner_name) = &desc.owner_name {
        check_text(e, "owner_name", owner_name);
    }
    if let Category::Vm {
        vmm: Vmm::Other(name),
    } = &desc.category
        && (!is_plain_name(name) || name.parse::<Vmm>().ok() != Some(Vmm::Other(name.clone())))
    {
        e.push(FieldError::new(
            "vmm",
            format!("{name:?} is not a valid monitor name"),
        ));
    }
    if desc.version == 0 {
        e.push(FieldError::new("version", "versions start at 1"));
    }
    match (desc.version, &desc.previous) {
        (1, Some(_)) => e.push(FieldError::new(
            "previous",
            "version 1 has no previous version",
        )),
        (v, None) if v > 1 => e.push(FieldError::new(
            "previous",
            format!("version {v} must name the hash of its previous version"),
        )),
        _ => {}
    }
    if desc.last_modified < desc.creation_time {
        e.push(FieldError::new(
            "last_modified",
            format!(
                "{} is before creation_time {}",
                desc.last_modified, desc.creation_time
            ),
        ));
    }
    if desc.life_cycle.is_some_and(|s| s.as_secs() == 0) {
        e.push(FieldError::new("life_cycle", "must be longer than zero"));
    }
    if let Some(lineage) = &desc.cloned_from {
        if lineage.workspace == desc.id {
            e.push(FieldError::new(
                "cloned_from.workspace",
                "a clone has a new id, not its source's",
            ));
        }
        if lineage.version == 0 {
            e.push(FieldError::new(
                "cloned_from.version",
                "versions start at 1",
            ));
        }
    }
    let mut authorities = BTreeSet::new();
    for (i, key) in desc.lock_authorities.iter().enumerate() {
        if !authorities.insert(key) {
            e.push(FieldError::new(
                format!("lock_authorities[{i}]"),
                format!("{} is listed twice", key.short()),
            ));
        }
    }

    let hw = &desc.hardware;
    let is_vm = matches!(desc.category, Category::Vm { .. });
    match &hw.ram {
        Some(ram) => check_bounds(e, "hardware.ram", ram, " MiB"),
        None if is_vm => e.push(FieldError::new(
            "hardware.ram",
            "a vm workspace needs a RAM range",
        )),
        None => {}
    }
    match &hw.vcpus {
        Some(vcpus) => check_bounds(e, "hardware.vcpus", vcpus, ""),
        None if is_vm => e.push(FieldError::new(
            "hardware.vcpus",
            "a vm workspace needs a vCPU range",
        )),
        None => {}
    }
    if let Some(disk) = &hw.disk
        && disk.size_mib == 0
    {
        e.push(FieldError::new(
            "hardware.disk.size_mib",
            "must be at least 1 MiB",
        ));
    }
    for device in &hw.devices {
        if !is_plain_name(device) {
            e.push(FieldError::new(
                "hardware.devices",
                format!(
                    "{device:?} is not a device name (lowercase letters, digits, '.', '_', '-')"
                ),
            ));
        }
    }

    let mut nic_names = BTreeSet::new();
    for (i, nic) in desc.network.nics.iter().enumerate() {
        let path = format!("network.nics[{i}]");
        check_text(e, &format!("{path}.name"), &nic.name);
        if !nic_names.insert(nic.name.as_str()) {
            e.push(FieldError::new(
                format!("{path}.name"),
                format!("{:?} is used by another NIC", nic.name),
            ));
        }
        match &nic.address {
            AddressMode::Pool(pool) => check_text(e, &format!("{path}.address"), pool),
            AddressMode::Static { address, prefix } => {
                let max = if address.is_ipv4() { 32 } else { 128 };
                if *prefix > max {
                    e.push(FieldError::new(
                        format!("{path}.address"),
                        format!("prefix /{prefix} is longer than {max} bits"),
                    ));
                }
            }
            AddressMode::Dhcp => {}
        }
    }

    let sw = &desc.software;
    for (path, value) in [
        ("software.kernel", &sw.kernel),
        ("software.distribution", &sw.distribution),
        ("software.library_signature", &sw.library_signature),
    ] {
        if let Some(value) = value {
            check_text(e, path, value);
        }
    }
    for (name, version) in &sw.programs {
        check_text(e, "software.programs", name);
        check_text(e, &format!("software.programs.{name}"), version);
    }

    let cap = &desc.capability;
    if let Some(startup) = &cap.startup {
        check_text(e, "capability.startup", startup);
    }
    let mut ports = BTreeSet::new();
    for (i, svc) in cap.services.iter().enumerate() {
        let path = format!("capability.services[{i}]");
        check_text(e, &format!("{path}.name"), &svc.name);
        if svc.port == 0 {
            e.push(FieldError::new(
                format!("{path}.port"),
                "port 0 is not a port",
            ));
        } else if !ports.insert((svc.port, svc.protocol)) {
            e.push(FieldError::new(
                format!("{path}.port"),
                format!("{}/{} is used by another service", svc.port, svc.protocol),
            ));
        }
    }

    let img = &desc.image;
    for (path, r) in [
        ("image.disk", &img.disk),
        ("image.memory_state", &img.memory_state),
    ] {
        if let Some(r) = r
            && r.size == 0
        {
            e.push(FieldError::new(
                format!("{path}.size"),
                "an image is at least 1 byte",
            ));
        }
    }
    if desc.state == State::Paused && img.memory_state.is_none() {
        e.push(FieldError::new(
            "image.memory_state",
            "a paused (hot) workspace needs its saved memory state",
        ));
    }
    if img.memory_state.is_some() && img.disk.is_none() {
        e.push(FieldError::new(
            "image.disk",
            "a memory state needs the disk image it was saved with",
        ));
    }
    if img.memory_state.is_some() && !is_vm {
        e.push(FieldError::new(
            "image.memory_state",
            "only a vm workspace has a memory state",
        ));
    }

    // Representability and size: what cannot be written or signed is not a valid description.
    if let Err(err) = super::human::to_toml_table(desc) {
        e.push(match err {
            super::TomlError::Unrepresentable { path, reason } => FieldError::new(path, reason),
            other => FieldError::new("description", other.to_string()),
        });
    } else {
        let len = desc.to_canonical_bytes().len();
        if len > MAX_DESCRIPTION_LEN {
            e.push(FieldError::new(
                "description",
                format!(
                    "canonical encoding is {len} bytes, above the {MAX_DESCRIPTION_LEN}-byte limit"
                ),
            ));
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::Invalid(errors))
    }
}
