//! Ed25519 identities: the secret key a node or user signs with, and strict checks on public keys.
//!
//! A [`PeerIdentity`] is only 32 bytes; nothing about holding it says it is a usable key. Every
//! check of a signature in vwnet goes through [`PeerIdentity::verify`], which refuses bytes that are
//! not a curve point, refuses *weak* (small-order) points, and verifies with `verify_strict`.
//! Weak keys matter because with a small-order public key a signature can be made to verify
//! against many messages without knowing any secret; strict verification also refuses
//! non-canonical signature encodings, so one record has exactly one valid signature per key.
//!
//! ed25519-dalek 2.x is used (not 3.x) because `libp2p-identity` links 2.x: one implementation of
//! the curve in the node binary, and the same key bytes on both sides of the libp2p conversion.
//!
//! The key file is a small versioned TOML text (see [`Identity::to_key_file`]); reading and
//! writing the file itself (permissions, no overwrite) is the caller's job, since this crate does
//! no I/O.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::ids::PeerIdentity;

/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// The key file format version this build writes and reads.
pub const KEY_FILE_FORMAT: u32 = 1;

/// Why bytes are not a usable public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes do not encode a point on the curve.
    #[error("identity {0}: not a valid ed25519 public key")]
    Invalid(String),
    /// The point has small order: signatures under it prove nothing.
    #[error("identity {0}: weak (small-order) ed25519 public key")]
    Weak(String),
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureCheckError {
    /// The claimed signer is not a usable key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signature does not verify (strictly) for this key and message.
    #[error("bad signature by {0}")]
    BadSignature(String),
}

/// Why a key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The text is not valid TOML of the expected shape; the message is one line.
    #[error("{0}")]
    Syntax(String),
    /// The file declares a format version this build does not read.
    #[error("format: unsupported key file format {found} (this build reads {KEY_FILE_FORMAT})")]
    UnsupportedFormat {
        /// The version found in the file.
        found: u32,
    },
    /// The secret key is not 64 hex digits.
    #[error("secret: expected 64 hex digits")]
    BadSecret,
    /// The public key written in the file does not belong to the secret key.
    #[error("public: does not match the secret key (file corrupted or edited)")]
    PublicMismatch,
    /// The public key is not 64 hex digits.
    #[error("public: {0}")]
    BadPublic(String),
}

/// A secret ed25519 signing key: what a user or a node signs records with.
///
/// Deliberately neither `Clone` nor printable: `Debug` shows only the public half, and the secret
/// is wiped from memory when the value is dropped.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh identity from the operating system's random source.
    ///
    /// Panics only if the OS random source fails, which leaves no safe way to make a key.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())
            .unwrap_or_else(|err| panic!("OS random source failed: {err}"));
        Self::from_secret_bytes(&seed)
    }

    /// The identity with this 32-byte secret (seed). Deterministic: tests use fixed seeds.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret, e.g. to build the libp2p keypair of the same key. Handle with care.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public identity that verifies this key's signatures.
    pub fn public(&self) -> PeerIdentity {
        PeerIdentity::from_bytes(self.key.verifying_key().to_bytes())
    }

    /// Signs `message` as is. Crate-private so that every signature goes through `signed`,
    /// which prefixes the record kind's context: a raw signing API would let a caller produce
    /// a signature over bytes that happen to be some record kind's signed message.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// The key file text: a versioned TOML document with the secret and, for a consistency
    /// check on load, the public key.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let secret = Zeroizing::new(hex::encode(self.key.as_bytes()));
        Zeroizing::new(format!(
            "# vwnet identity: an ed25519 secret key. Anyone holding this file can sign as you.\n\
             format = {KEY_FILE_FORMAT}\n\
             public = \"{}\"\n\
             secret = \"{}\"\n",
            self.public(),
            secret.as_str(),
        ))
    }

    /// Reads the text written by [`Identity::to_key_file`].
    pub fn from_key_file(text: &str) -> Result<Self, KeyFileError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct KeyFile {
            format: u32,
            public: String,
            secret: String,
        }
        let file: KeyFile = toml::from_str(text)
            .map_err(|e| KeyFileError::Syntax(crate::acl::one_line_toml_error(text, &e)))?;
        let secret_hex = Zeroizing::new(file.secret);
        if file.format != KEY_FILE_FORMAT {
            return Err(KeyFileError::UnsupportedFormat { found: file.format });
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(secret_hex.as_bytes(), secret.as_mut())
            .map_err(|_| KeyFileError::BadSecret)?;
        let identity = Self::from_secret_bytes(&secret);
        let public: PeerIdentity = file
            .public
            .parse()
            .map_err(|e| KeyFileError::BadPublic(format!("{e}")))?;
        if public != identity.public() {
            return Err(KeyFileError::PublicMismatch);
        }
        Ok(identity)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl PeerIdentity {
    /// The verifying key for these bytes, refusing non-points and weak (small-order) points.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let key = VerifyingKey::from_bytes(self.as_bytes())
            .map_err(|_| KeyError::Invalid(self.short()))?;
        if key.is_weak() {
            return Err(KeyError::Weak(self.short()));
        }
        Ok(key)
    }

    /// Checks that `signature` is this key's strict ed25519 signature on `message`.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignatureCheckError> {
        let key = self.verifying_key()?;
        key.verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| SignatureCheckError::BadSignature(self.short()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_secret() {
        let id = Identity::from_secret_bytes(&[0xab; 32]);
        let shown = format!("{id:?}");
        assert!(!shown.contains(&"ab".repeat(8)), "{shown}");
        assert!(shown.contains(&id.public().short()), "{shown}");
    }

    #[test]
    fn key_file_round_trips() {
        let id = Identity::generate();
        let text = id.to_key_file();
        let back = Identity::from_key_file(&text).unwrap();
        assert_eq!(back.public(), id.public());
        assert_eq!(*back.secret_bytes(), *id.secret_bytes());
    }

    #[test]
    fn key_file_errors_name_the_field() {
        let id = Identity::from_secret_bytes(&[1; 32]);
        let text = id.to_key_file();
        let other = Identity::from_secret_bytes(&[2; 32]).public().to_string();
        let swapped = text.replace(&id.public().to_string(), &other);
        assert_eq!(
            Identity::from_key_file(&swapped).unwrap_err(),
            KeyFileError::PublicMismatch
        );
        let v2 = text.replace("format = 1", "format = 2");
        assert_eq!(
            Identity::from_key_file(&v2).unwrap_err(),
            KeyFileError::UnsupportedFormat { found: 2 }
        );
        let truncated = &text[..text.len() - 10];
        let err = Identity::from_key_file(truncated).unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn sign_and_verify() {
        let id = Identity::from_secret_bytes(&[3; 32]);
        let sig = id.sign(b"hello");
        id.public().verify(b"hello", &sig).unwrap();
        assert!(id.public().verify(b"hellp", &sig).is_err());
        let other = Identity::from_secret_bytes(&[4; 32]).public();
        assert!(other.verify(b"hello", &sig).is_err());
    }

    #[test]
    fn weak_key_is_refused_even_where_plain_verify_accepts() {
        // The identity point (y = 1) has order 1. With R = identity and s = 0, the plain
        // (cofactorless, non-strict) equation [s]B = R + [k]A holds for EVERY message.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let key = VerifyingKey::from_bytes(&weak).unwrap();
        assert!(
            ed25519_dalek::Verifier::verify(&key, b"anything", &Signature::from_bytes(&sig))
                .is_ok(),
            "premise: non-strict verification accepts the forgery"
        );
        let peer = PeerIdentity::from_bytes(weak);
        assert!(matches!(peer.verifying_key(), Err(KeyError::Weak(_))));
        assert!(matches!(
            peer.verify(b"anything", &sig),
            Err(SignatureCheckError::Key(KeyError::Weak(_)))
        ));
    }

    #[test]
    fn non_point_is_refused() {
        // Find a y coordinate that is not on the curve (about half of them are not).
        let invalid = (2u8..=255)
            .map(|b| {
                let mut bytes = [0u8; 32];
                bytes[0] = b;
                bytes
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        assert!(matches!(
            PeerIdentity::from_bytes(invalid).verifying_key(),
            Err(KeyError::Invalid(_))
        ));
    }
}
