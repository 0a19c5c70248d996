//! Identifier newtypes shared by every crate.
//!
//! Each identifier prints as lowercase hex (`Display`), parses back (`FromStr`), has a short form
//! for logs (`short()`), and serializes as a hex string in human formats (TOML, JSON) and as raw
//! fixed-size bytes in the canonical binary encoding.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    /// The string has the wrong number of hex digits.
    #[error("{kind}: expected {expected} hex digits, got {got}")]
    Length {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// Number of hex digits required.
        expected: usize,
        /// Number of characters found.
        got: usize,
    },
    /// The string contains a character that is not a hex digit.
    #[error("{kind}: not a hex string")]
    NotHex {
        /// Which identifier was being parsed.
        kind: &'static str,
    },
}

/// Defines a fixed-size byte identifier with hex `Display`/`FromStr` and dual-format serde.
macro_rules! byte_id {
    ($(#[$meta:meta])* $name:ident, $len:expr, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the identifier in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The first 8 hex digits, for logs and tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; $len * 2];
                // Cannot fail: the buffer is exactly twice the byte length.
                let _ = hex::encode_to_slice(self.0, &mut buf);
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != $len * 2 {
                    return Err(IdParseError::Length { kind: $kind, expected: $len * 2, got: s.len() });
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError::NotHex { kind: $kind })?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    self.0.serialize(serializer)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    struct HexVisitor;
                    impl Visitor<'_> for HexVisitor {
                        type Value = $name;
                        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                            write!(f, "{} hex digits", $len * 2)
                        }
                        fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                            v.parse().map_err(E::custom)
                        }
                    }
                    deserializer.deserialize_str(HexVisitor)
                } else {
                    <[u8; $len]>::deserialize(deserializer).map(Self)
                }
            }
        }
    };
}

byte_id!(
    /// BLAKE3 hash of one chunk's bytes: the chunk's name in every store and on the wire.
    ChunkHash,
    32,
    "chunk hash"
);

byte_id!(
    /// BLAKE3 hash of an image's canonical manifest: the image id that a description names.
    ImageId,
    32,
    "image id"
);

byte_id!(
    /// A workspace's stable identity across versions; chosen at random when it is created or cloned.
    WorkspaceId,
    16,
    "workspace id"
);

byte_id!(
    /// An ed25519 public key: who owns a workspace, who signed a record, which node is a peer.
    ///
    /// Holding the bytes proves nothing; use `identity` to check that they are a valid, strong key.
    PeerIdentity,
    32,
    "identity"
);

byte_id!(
    /// BLAKE3 hash of a description's canonical bytes: names one version of a workspace.
    DescriptionHash,
    32,
    "description hash"
);

impl ChunkHash {
    /// Hashes `data` with BLAKE3.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl From<blake3::Hash> for ChunkHash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl From<blake3::Hash> for ImageId {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl WorkspaceId {
    /// A fresh random workspace id from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        // The OS random source failing is not recoverable in any useful way for an id.
        getrandom::fill(&mut bytes).unwrap_or_else(|err| panic!("OS random source failed: {err}"));
        Self(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parses_back() {
        let h = ChunkHash::of(b"hello");
        let s = h.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ChunkHash>().unwrap(), h);
        assert_eq!(h.short(), &s[..8]);
    }

    #[test]
    fn bad_strings_are_rejected() {
        assert!(matches!(
            "abc".parse::<WorkspaceId>(),
            Err(IdParseError::Length { .. })
        ));
        let not_hex = "zz".repeat(16);
        assert!(matches!(
            not_hex.parse::<WorkspaceId>(),
            Err(IdParseError::NotHex { .. })
        ));
    }

    #[test]
    fn binary_encoding_is_fixed_size_and_json_is_hex() {
        let id = WorkspaceId::from_bytes([7; 16]);
        assert_eq!(postcard::to_stdvec(&id).unwrap(), vec![7u8; 16]);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", "07".repeat(16))
        );
        let back: WorkspaceId = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
        assert_eq!(back, id);
    }
}
