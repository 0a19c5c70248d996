//! The workspace description: every element of the paper's schema, its two formats, and the
//! paper's operations on it (select, clone, refine).
//!
//! # One model, two formats
//! [`Description`] is a plain struct tree (`model`). It has two encodings:
//! - **TOML** for humans ([`Description::from_toml_str`], [`Description::to_toml_string`]),
//!   read and written by hand in `human` so that errors name the field (`hardware.ram.min:
//!   expected an integer, found string`) and unknown keys can be kept.
//! - **Canonical binary** ([`Description::to_canonical_bytes`]): the format-version byte
//!   [`DESCRIPTION_FORMAT_VERSION`] followed by postcard of the model, through
//!   [`codec`]. This is what is hashed ([`Description::digest`]) and signed. The model
//!   has no floats, no hash maps (sets and maps are `BTree*`), no recursive types and no serde
//!   features that postcard cannot round-trip (`flatten`, `untagged`, `skip_serializing_if`), so one
//!   description has exactly one encoding, and a hostile input cannot nest deeply enough to
//!   exhaust the stack.
//!
//! # Extensions
//! The paper's schema is extensible; so is this one. Unknown keys at the top level and inside
//! each section (`[hardware]`, `[hardware.disk]`, `[network]`, each NIC, `[software]`,
//! `[capability]`, each service, `[image]`) are kept in that section's `extensions` map as their
//! canonical TOML text ([`ExtValue`]). They survive TOML → model → canonical → model → TOML.
//! Small fixed records (`ram`/`vcpus` ranges, image references, `cloned_from`) reject unknown keys:
//! there, an unknown key is far more likely a typo than an extension.
//!
//! # Validity
//! Decoding and parsing only check structure. [`Description::validate`] checks meaning (ranges,
//! names, ports, a hot workspace's memory state, ...) and reports every problem with its path.
//!
//! # Operations
//! [`select()`] matches a description against a [`HostProfile`]; [`clone_as`] makes a new
//! workspace from an existing one; [`refine`] narrows requirements into a new version
//! ([`Refinement`] documents the `KEY=VALUE` grammar). All take the time as an argument.

mod clone;
mod extensions;
mod human;
mod model;
mod refine;
mod select;
mod template;
mod validate;

pub use clone::clone_as;
pub use extensions::{ExtValue, ExtValueError, Extensions};
pub use human::TomlError;
pub use model::{
    AccessMode, AddressMode, Bounds, Capability, Category, Description, Disk, DiskType,
    FieldParseError, Hardware, Image, ImageRef, Lineage, Network, Nic, Service, Software, State,
    Transport, Vmm,
};
pub use refine::{RangeEdit, RefineError, Refinement, RefinementParseError, refine};
pub use select::{HostNetworks, HostProfile, HostProfileError, Placement, SelectError, select};
pub use template::{TEMPLATE, template_for};
pub use validate::{FieldError, ValidationError};

use crate::codec::{self, DecodeError};
use crate::ids::DescriptionHash;
use crate::limits::MAX_DESCRIPTION_LEN;
use crate::time::Timestamp;

/// Format-version byte that starts every canonical description encoding.
pub const DESCRIPTION_FORMAT_VERSION: u8 = 1;

/// Why bytes are not a canonical description.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalDecodeError {
    /// The bytes are not a canonical encoding of the model (size, version, structure).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The bytes decode, but a value has no human form or an extension is not canonical.
    #[error("description {0}")]
    Unrepresentable(TomlError),
}

impl Description {
    /// Parses the human (TOML) form. Structure only: call [`validate`](Self::validate) too.
    pub fn from_toml_str(input: &str) -> Result<Self, TomlError> {
        human::from_toml_str(input)
    }

    /// Writes the human (TOML) form; fails only for values TOML cannot hold (see [`TomlError`]).
    pub fn to_toml_string(&self) -> Result<String, TomlError> {
        human::to_toml_string(self)
    }

    /// The TOML table [`to_toml_string`](Self::to_toml_string) writes; serialize it with
    /// `serde_json` for a JSON view with the same keys and value forms as the TOML.
    pub fn to_toml_table(&self) -> Result<toml::Table, TomlError> {
        human::to_toml_table(self)
    }

    /// Dotted paths of every kept unknown key (e.g. `hardware.gpu`, `network.nics[0].mtu`), so a
    /// tool can point out what may be a typo: unknown keys are kept, never rejected.
    pub fn extension_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        let mut add = |prefix: &str, ext: &Extensions| {
            for key in ext.keys() {
                paths.push(if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                });
            }
        };
        add("", &self.extensions);
        add("hardware", &self.hardware.extensions);
        if let Some(disk) = &self.hardware.disk {
            add("hardware.disk", &disk.extensions);
        }
        add("network", &self.network.extensions);
        for (i, nic) in self.network.nics.iter().enumerate() {
            add(&format!("network.nics[{i}]"), &nic.extensions);
        }
        add("software", &self.software.extensions);
        add("capability", &self.capability.extensions);
        for (i, svc) in self.capability.services.iter().enumerate() {
            add(&format!("capability.services[{i}]"), &svc.extensions);
        }
        add("image", &self.image.extensions);
        paths
    }

    /// The canonical bytes: what is hashed and signed.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        codec::encode(DESCRIPTION_FORMAT_VERSION, self)
    }

    /// Decodes canonical bytes. Total: any input gives `Ok` or `Err`, never a panic.
    ///
    /// Beyond the codec's checks (size limit, version, canonical postcard), every extension must
    /// be canonical TOML text and every value must have a TOML form, so that whatever decodes can
    /// be shown and has exactly one encoding.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, CanonicalDecodeError> {
        let desc: Description =
            codec::decode(bytes, DESCRIPTION_FORMAT_VERSION, MAX_DESCRIPTION_LEN)?;
        human::to_toml_table(&desc).map_err(CanonicalDecodeError::Unrepresentable)?;
        Ok(desc)
    }

    /// BLAKE3 of the canonical bytes.
    pub fn digest(&self) -> DescriptionHash {
        DescriptionHash::from_bytes(*blake3::hash(&self.to_canonical_bytes()).as_bytes())
    }

    /// Checks the description's meaning; the error lists every problem with its field path.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::validate(self)
    }

    /// When the workspace stops being available: `creation_time + life_cycle`, if it has one.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.life_cycle
            .map(|span| self.creation_time.saturating_add(span))
    }

    /// Whether the life cycle has run out at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at().is_some_and(|end| now >= end)
    }

    /// The next version of this description: `version + 1`, `previous` = this one's digest,
    /// `last_modified` = `now` (never moving backwards). The caller then changes what changed,
    /// e.g. the image references when the node publishes a new image.
    pub fn next_version(&self, now: Timestamp) -> Description {
        let mut next = self.clone();
        next.version = self.version.saturating_add(1);
        next.previous = Some(self.digest());
        next.last_modified = now.max(self.last_modified);
        next
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A small valid description shared by the unit tests.

    use super::*;
    use crate::ids::{ImageId, PeerIdentity, WorkspaceId};
    use crate::time::Span;

    pub(crate) fn sample() -> Description {
        Description {
            id: WorkspaceId::from_bytes([1; 16]),
            name: "bio-env".into(),
            owner: PeerIdentity::from_bytes([2; 32]),
            owner_name: Some("/O=Grid/CN=Alice".into()),
            category: Category::Vm { vmm: Vmm::Kvm },
            state: State::Shutdown,
            creation_time: Timestamp::from_unix_secs(1_795_000_000),
            life_cycle: Some(Span::from_secs(30 * 86_400)),
            last_modified: Timestamp::from_unix_secs(1_795_000_000),
            version: 1,
            previous: None,
            cloned_from: None,
            lock_authorities: Vec::new(),
            hardware: Hardware {
                ram: Some(Bounds::new(512, 2048)),
                vcpus: Some(Bounds::new(1, 4)),
                disk: Some(Disk {
                    size_mib: 4096,
                    kind: DiskType::Qcow2,
                    access: AccessMode::CopyOnWrite,
                    extensions: Extensions::new(),
                }),
                devices: ["cdrom".to_string()].into(),
                extensions: Extensions::new(),
            },
            network: Network {
                nics: vec![Nic {
                    name: "eth0".into(),
                    address: AddressMode::Dhcp,
                    extensions: Extensions::new(),
                }],
                extensions: Extensions::new(),
            },
            software: Software {
                kernel: Some("6.1".into()),
                distribution: Some("debian-12".into()),
                library_signature: None,
                programs: [("blast".to_string(), "2.2".to_string())].into(),
                extensions: Extensions::new(),
            },
            capability: Capability::default(),
            image: Image {
                disk: Some(ImageRef {
                    id: ImageId::from_bytes([3; 32]),
                    size: 1 << 30,
                }),
                memory_state: None,
                extensions: Extensions::new(),
            },
            extensions: Extensions::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::sample;
    use super::*;
    use crate::time::Span;

    #[test]
    fn sample_is_valid_and_round_trips() {
        let d = sample();
        d.validate().unwrap();
        let text = d.to_toml_string().unwrap();
        assert_eq!(Description::from_toml_str(&text).unwrap(), d);
        let bytes = d.to_canonical_bytes();
        assert_eq!(bytes[0], DESCRIPTION_FORMAT_VERSION);
        assert_eq!(Description::from_canonical_bytes(&bytes).unwrap(), d);
    }

    #[test]
    fn expiry_follows_life_cycle() {
        let mut d = sample();
        let end = d.creation_time.saturating_add(Span::from_secs(30 * 86_400));
        assert_eq!(d.expires_at(), Some(end));
        assert!(!d.is_expired(Timestamp::from_unix_secs(end.as_unix_secs() - 1)));
        assert!(d.is_expired(end));
        d.life_cycle = None;
        assert!(!d.is_expired(Timestamp::from_unix_secs(u64::MAX)));
    }

    #[test]
    fn next_version_chains() {
        let d = sample();
        let now = Timestamp::from_unix_secs(1_796_000_000);
        let n = d.next_version(now);
        assert_eq!(n.version, 2);
        assert_eq!(n.previous, Some(d.digest()));
        assert_eq!(n.last_modified, now);
        assert_eq!(n.id, d.id);
        n.validate().unwrap();
        // A clock behind the last change does not move last_modified backwards.
        let old = n.next_version(Timestamp::EPOCH);
        assert_eq!(old.last_modified, now);
    }

    #[test]
    fn digest_changes_with_any_field() {
        let d = sample();
        let mut e = d.clone();
        e.hardware.ram = Some(Bounds::new(512, 2049));
        assert_ne!(d.digest(), e.digest());
        assert_eq!(d.digest(), d.clone().digest());
    }

    #[test]
    fn unrepresentable_values_do_not_decode() {
        let mut d = sample();
        d.version = u64::MAX;
        let bytes = d.to_canonical_bytes();
        assert!(matches!(
            Description::from_canonical_bytes(&bytes),
            Err(CanonicalDecodeError::Unrepresentable(_))
        ));
        assert!(d.to_toml_string().is_err());
    }

    #[test]
    fn colliding_or_non_canonical_extensions_do_not_decode() {
        let mut d = sample();
        d.hardware
            .extensions
            .insert("ram".into(), ExtValue::new(toml::Value::Integer(1)));
        assert!(Description::from_canonical_bytes(&d.to_canonical_bytes()).is_err());
        assert!(d.validate().is_err());
    }
}
