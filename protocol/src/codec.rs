//! The one canonical binary encoding: a format-version byte followed by postcard.
//!
//! Every record that is hashed, signed, stored or sent is encoded here. Decoding is strict so that
//! bytes and values correspond one to one: oversize input is refused before any parsing, the
//! version byte must be the expected one, trailing bytes are refused, and the input must be exactly
//! what encoding the decoded value produces (postcard would otherwise accept over-long varints,
//! which would let two byte strings carry the same value and the same signature).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be decoded as a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than this record type may ever be.
    #[error("record is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit for this record type.
        max: usize,
    },
    /// The input is empty, so it has no version byte.
    #[error("record is empty")]
    Empty,
    /// The leading format-version byte is not one this build understands.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The body is not a valid postcard encoding of the record.
    // Not `#[source]`: the message already includes it, and error reporters that walk the
    // source chain would print it twice.
    #[error("malformed record: {0}")]
    Malformed(postcard::Error),
    /// Bytes remain after the record.
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error("record is not in canonical form")]
    NotCanonical,
}

/// Encodes `value` as `version` followed by its postcard encoding.
pub fn encode<T: Serialize + ?Sized>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Serializing plain data to a Vec cannot fail: postcard only errors on types it does not
    // support (e.g. unknown-length sequences), which our records never contain.
    out = postcard::to_extend(value, out)
        .unwrap_or_else(|err| panic!("record type not supported by postcard: {err}"));
    out
}

/// Decodes bytes produced by [`encode`], enforcing `max_len`, the version and canonical form.
pub fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    version: u8,
    max_len: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let (&found, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if found != version {
        return Err(DecodeError::UnsupportedVersion {
            found,
            supported: version,
        });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    if encode(version, &value) != bytes {
        return Err(DecodeError::NotCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode(3, &(7u32, "x".to_string()));
        assert_eq!(bytes, [3, 7, 1, b'x']);
        let back: (u32, String) = decode(&bytes, 3, 64).unwrap();
        assert_eq!(back, (7, "x".to_string()));
    }

    #[test]
    fn rejects_oversize_before_parsing() {
        let err = decode::<u8>(&[1; 10], 1, 4).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { len: 10, max: 4 }));
    }

    #[test]
    fn rejects_wrong_version_empty_and_trailing() {
        assert!(matches!(decode::<u8>(&[], 1, 4), Err(DecodeError::Empty)));
        assert!(matches!(
            decode::<u8>(&[2, 0], 1, 4),
            Err(DecodeError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        ));
        assert!(matches!(
            decode::<u8>(&[1, 0, 0], 1, 4),
            Err(DecodeError::TrailingBytes(1))
        ));
    }

    #[test]
    fn rejects_overlong_varint() {
        // 5 encoded as a two-byte varint (0x85 0x00) decodes to 5 but is not canonical.
        assert!(matches!(
            decode::<u32>(&[1, 0x85, 0x00], 1, 8),
            Err(DecodeError::NotCanonical)
        ));
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate() {
        // A Vec<u8> claiming u32::MAX bytes in a 6-byte input must fail, not allocate 4 GiB.
        let err = decode::<Vec<u8>>(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f], 1, 64).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)));
    }
}
