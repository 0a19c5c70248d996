//! The small signed records: delegations and attribute certificates.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::{RECORD_VERSION, Record, RecordKind, sealed};
use crate::codec;
use crate::ids::{PeerIdentity, WorkspaceId};
use crate::limits::MAX_SIGNED_RECORD_LEN;
use crate::time::Timestamp;

/// What a [`Delegation`] lets the delegate do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DelegationScope {
    /// Publish (sign) descriptions of every workspace the delegator owns.
    PublishAll,
    /// Publish (sign) descriptions of this one workspace.
    PublishWorkspace(WorkspaceId),
}

impl DelegationScope {
    /// Whether this scope covers publishing a description of `workspace`.
    pub fn allows_publish(&self, workspace: WorkspaceId) -> bool {
        match self {
            DelegationScope::PublishAll => true,
            DelegationScope::PublishWorkspace(id) => *id == workspace,
        }
    }
}

/// An owner (delegator) lets another key (delegate) sign on their behalf, within a scope and a
/// time window. Signed by the delegator. Delegations do not chain: a delegate cannot delegate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The owner granting the right; must be the signer.
    pub delegator: PeerIdentity,
    /// The key that may sign on the delegator's behalf.
    pub delegate: PeerIdentity,
    /// What the delegate may sign.
    pub scope: DelegationScope,
    /// Start of validity (inclusive).
    pub not_before: Timestamp,
    /// End of validity (inclusive).
    pub not_after: Timestamp,
}

impl sealed::Sealed for Delegation {}

impl Record for Delegation {
    const KIND: RecordKind = RecordKind::Delegation;

    fn to_payload(&self) -> Vec<u8> {
        codec::encode(RECORD_VERSION, self)
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, String> {
        codec::decode(bytes, RECORD_VERSION, MAX_SIGNED_RECORD_LEN).map_err(|e| e.to_string())
    }
}

/// Most attributes one certificate may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 64;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 256;

/// Why a string is not a valid `name=value` attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    /// There is no `=`.
    #[error("attribute {0:?}: expected name=value")]
    NoEquals(String),
    /// The name is empty, too long, or has characters outside `a-z 0-9 _ . -`.
    #[error(
        "attribute {0:?}: name must be 1-{MAX_ATTRIBUTE_NAME_LEN} characters of a-z, 0-9, '_', '.', '-'"
    )]
    BadName(String),
    /// The value is empty, too long, or has whitespace or control characters.
    #[error(
        "attribute {0:?}: value must be 1-{MAX_ATTRIBUTE_VALUE_LEN} bytes without spaces or control characters"
    )]
    BadValue(String),
}

/// One asserted attribute, written `name=value` (e.g. `vo=biology`, `role=admin`), compared
/// exactly. Always valid: it can only be built by parsing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attribute {
    name: String,
    value: String,
}

impl Attribute {
    /// The attribute's name (before `=`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attribute's value (after the first `=`).
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for Attribute {
    type Err = AttributeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| AttributeError::NoEquals(s.to_owned()))?;
        let name_ok = !name.is_empty()
            && name.len() <= MAX_ATTRIBUTE_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !name_ok {
            return Err(AttributeError::BadName(s.to_owned()));
        }
        let value_ok = !value.is_empty()
            && value.len() <= MAX_ATTRIBUTE_VALUE_LEN
            && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if !value_ok {
            return Err(AttributeError::BadValue(s.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

// One string in every format, so that decoding re-validates and there is one canonical form.
impl Serialize for Attribute {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A VO (issuer) asserts attributes of a subject for a time window. Signed by the issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeCertificate {
    /// The VO key that asserts the attributes; must be the signer.
    pub issuer: PeerIdentity,
    /// Whom the attributes are about.
    pub subject: PeerIdentity,
    /// What is asserted (at most [`MAX_ATTRIBUTES`], no duplicates).
    pub attributes: Vec<Attribute>,
    /// Start of validity (inclusive).
    pub not_before: Timestamp,
    /// End of validity (inclusive).
    pub not_after: Timestamp,
}

impl AttributeCertificate {
    fn check_shape(&self) -> Result<(), String> {
        if self.attributes.is_empty() || self.attributes.len() > MAX_ATTRIBUTES {
            return Err(format!(
                "a certificate carries 1-{MAX_ATTRIBUTES} attributes, this one {}",
                self.attributes.len()
            ));
        }
        let mut sorted: Vec<&Attribute> = self.attributes.iter().collect();
        sorted.sort();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err("duplicate attribute".to_owned());
        }
        Ok(())
    }
}

impl sealed::Sealed for AttributeCertificate {}

impl Record for AttributeCertificate {
    const KIND: RecordKind = RecordKind::AttributeCertificate;

    fn to_payload(&self) -> Vec<u8> {
        codec::encode(RECORD_VERSION, self)
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, String> {
        let cert: Self = codec::decode(bytes, RECORD_VERSION, MAX_SIGNED_RECORD_LEN)
            .map_err(|e| e.to_string())?;
        cert.check_shape()?;
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_print() {
        let a: Attribute = "vo=biology".parse().unwrap();
        assert_eq!((a.name(), a.value()), ("vo", "biology"));
        assert_eq!(a.to_string(), "vo=biology");
        let fqan: Attribute = "fqan=/biology/Role=admin".parse().unwrap();
        assert_eq!(fqan.value(), "/biology/Role=admin");
        for bad in ["vo", "=x", "vo=", "VO=x", "vo=a b", "v o=x"] {
            assert!(bad.parse::<Attribute>().is_err(), "{bad}");
        }
    }
}
