//! Serde for byte strings: hex for humans, a length-prefixed byte string in binary.
//!
//! `Vec<u8>` derives as a sequence of single bytes, which postcard encodes identically to a byte
//! string but decodes one visitor call per byte; payloads and chunk bodies are large enough for
//! that to matter, and JSON output is more useful as hex than as an array of numbers.

/// `#[serde(with = "hex_or_bytes")]` for `Vec<u8>` fields.
pub(crate) mod hex_or_bytes {
    use std::fmt;

    use serde::Serializer;
    use serde::de::{self, Deserializer, Visitor};

    /// Serializes bytes as hex (human formats) or a byte string (binary formats).
    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(bytes))
        } else {
            serializer.serialize_bytes(bytes)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string or hex")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            hex::decode(v).map_err(|_| E::custom("not a hex string"))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Never trust a length hint for the allocation.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                out.push(byte);
            }
            Ok(out)
        }
    }

    /// Deserializes what [`serialize`] writes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(BytesVisitor)
        } else {
            deserializer.deserialize_byte_buf(BytesVisitor)
        }
    }
}
