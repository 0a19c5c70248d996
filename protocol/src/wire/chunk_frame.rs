//! The bulk path of [`ChunkResponse`]: encoding that lends the chunk bodies instead of copying
//! them into one buffer, and a decoder that checks canonical form while it parses.
//!
//! The bytes are exactly those of the generic codec (a [`WIRE_VERSION`] byte, then postcard),
//! so peers cannot tell which path produced them; `tests` compares both paths on random values
//! and on mutated bytes. What this saves, per 4 MiB response: on the sender, a 4 MiB buffer
//! grown by doubling and one copy of every body; on the receiver, the re-encoding and the
//! byte-for-byte comparison that the generic decoder uses to prove canonical form.
//!
//! Postcard layout of the message: `ChunkResponse` variant index (varint), then for `Chunks` the
//! reply count (varint) and per reply its variant index (varint) and, for `Found`, the body
//! length (varint) and the body. Varints are LEB128; postcard would accept over-long ones, which
//! the decoder here refuses, as the generic path's comparison does.

use std::ops::Range;

use super::{
    ChunkReply, ChunkResponse, MAX_CHUNK_RESPONSE_DATA, MAX_CHUNKS_PER_REQUEST, WIRE_VERSION,
    WireDecodeError, WireEncodeError, WireMessage,
};
use crate::codec::{self, DecodeError};

/// A message's encoding as a sequence of byte strings to send in order: small runs of framing
/// it owns, and bodies it borrows from the message.
#[derive(Debug, Default)]
pub struct Pieces<'a> {
    framing: Vec<u8>,
    parts: Vec<Part<'a>>,
    len: usize,
}

#[derive(Debug)]
enum Part<'a> {
    Framing(Range<usize>),
    Borrowed(&'a [u8]),
}

impl<'a> Pieces<'a> {
    /// One owned buffer (what messages without bulk data encode to).
    pub fn owned(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Self {
            parts: vec![Part::Framing(0..len)],
            framing: bytes,
            len,
        }
    }

    fn push_framing(&mut self, bytes: &[u8]) {
        let start = self.framing.len();
        self.framing.extend_from_slice(bytes);
        match self.parts.last_mut() {
            // Adjacent framing runs share one piece, so a writer sees few small writes.
            Some(Part::Framing(range)) if range.end == start => range.end += bytes.len(),
            _ => self.parts.push(Part::Framing(start..start + bytes.len())),
        }
        self.len += bytes.len();
    }

    fn push_varint(&mut self, value: usize) {
        let mut buf = [0u8; 10];
        let n = write_varint(value, &mut buf);
        self.push_framing(&buf[..n]);
    }

    fn push_borrowed(&mut self, bytes: &'a [u8]) {
        self.parts.push(Part::Borrowed(bytes));
        self.len += bytes.len();
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The byte strings, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.parts.iter().map(|part| match part {
            Part::Framing(range) => &self.framing[range.clone()],
            Part::Borrowed(bytes) => *bytes,
        })
    }

    /// The bytes joined into one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for piece in self.iter() {
            out.extend_from_slice(piece);
        }
        out
    }
}

/// Encodes a validated `response` as pieces (see the module docs).
pub(super) fn encode_pieces(response: &ChunkResponse) -> Result<Pieces<'_>, WireEncodeError> {
    response
        .validate()
        .map_err(|cause| WireEncodeError::Invalid {
            message: ChunkResponse::NAME,
            cause,
        })?;
    let ChunkResponse::Chunks(replies) = response else {
        return Ok(Pieces::owned(codec::encode(WIRE_VERSION, response)));
    };
    let mut pieces = Pieces::default();
    pieces.push_framing(&[WIRE_VERSION]);
    pieces.push_varint(0);
    pieces.push_varint(replies.len());
    for reply in replies {
        match reply {
            ChunkReply::Found(body) => {
                pieces.push_varint(0);
                pieces.push_varint(body.len());
                pieces.push_borrowed(body);
            }
            ChunkReply::Missing => pieces.push_varint(1),
            ChunkReply::OverBudget => pieces.push_varint(2),
        }
    }
    if pieces.len() > ChunkResponse::MAX_LEN {
        return Err(WireEncodeError::TooLarge {
            message: ChunkResponse::NAME,
            len: pieces.len(),
            max: ChunkResponse::MAX_LEN,
        });
    }
    Ok(pieces)
}

/// Decodes a chunk response, refusing exactly what the generic decoder refuses.
pub(super) fn decode(bytes: &[u8]) -> Result<ChunkResponse, WireDecodeError> {
    let response = parse(bytes).map_err(|cause| WireDecodeError::Decode {
        message: ChunkResponse::NAME,
        cause,
    })?;
    response
        .validate()
        .map_err(|cause| WireDecodeError::Invalid {
            message: ChunkResponse::NAME,
            cause,
        })?;
    Ok(response)
}

fn parse(bytes: &[u8]) -> Result<ChunkResponse, DecodeError> {
    if bytes.len() > ChunkResponse::MAX_LEN {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: ChunkResponse::MAX_LEN,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: WIRE_VERSION,
        });
    }
    let mut input = Reader { rest: body };
    if input.varint()? != 0 {
        // `Refused` and anything newer: small, so the generic path decodes it.
        return codec::decode(bytes, WIRE_VERSION, ChunkResponse::MAX_LEN);
    }
    let count = input.varint()?;
    // Each reply takes at least one byte: a count past the input is malformed, and checking it
    // first keeps a hostile count from sizing the allocation.
    if count > input.rest.len() {
        return Err(DecodeError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd,
        ));
    }
    let mut replies = Vec::with_capacity(count.min(MAX_CHUNKS_PER_REQUEST));
    for _ in 0..count {
        let reply = match input.varint()? {
            0 => {
                let len = input.varint()?;
                ChunkReply::Found(input.take(len)?.to_vec())
            }
            1 => ChunkReply::Missing,
            2 => ChunkReply::OverBudget,
            _ => return Err(DecodeError::Malformed(postcard::Error::DeserializeBadEnum)),
        };
        replies.push(reply);
    }
    if !input.rest.is_empty() {
        return Err(DecodeError::TrailingBytes(input.rest.len()));
    }
    Ok(ChunkResponse::Chunks(replies))
}

/// A cursor over the input.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A canonical (shortest-form) LEB128 varint of at most 32 bits, as postcard writes `u32`,
    /// `usize` on 32-bit targets, enum indices and lengths up to 4 GiB.
    fn varint(&mut self) -> Result<usize, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..5 {
            let (&byte, rest) = self.rest.split_first().ok_or(DecodeError::Malformed(
                postcard::Error::DeserializeUnexpectedEnd,
            ))?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // A zero last byte after the first adds nothing: an over-long encoding.
                if i > 0 && byte == 0 {
                    return Err(DecodeError::NotCanonical);
                }
                if value > u64::from(u32::MAX) {
                    return Err(DecodeError::Malformed(
                        postcard::Error::DeserializeBadVarint,
                    ));
                }
                return usize::try_from(value)
                    .map_err(|_| DecodeError::Malformed(postcard::Error::DeserializeBadVarint));
            }
        }
        Err(DecodeError::Malformed(
            postcard::Error::DeserializeBadVarint,
        ))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.rest.len() {
            return Err(DecodeError::Malformed(
                postcard::Error::DeserializeUnexpectedEnd,
            ));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }
}

/// Writes `value` as LEB128 into `buf`, returning the length.
fn write_varint(mut value: usize, buf: &mut [u8; 10]) -> usize {
    let mut i = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buf[i] = byte;
            return i + 1;
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
}

// The body budget is what bounds a response; the frame cap above it covers the framing.
const _: () = assert!(ChunkResponse::MAX_LEN > MAX_CHUNK_RESPONSE_DATA);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn reply() -> impl Strategy<Value = ChunkReply> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..300).prop_map(ChunkReply::Found),
            Just(ChunkReply::Missing),
            Just(ChunkReply::OverBudget),
        ]
    }

    fn response() -> impl Strategy<Value = ChunkResponse> {
        prop_oneof![
            proptest::collection::vec(reply(), 0..70).prop_map(ChunkResponse::Chunks),
            Just(ChunkResponse::Refused(super::super::Refusal::Busy)),
            Just(ChunkResponse::Refused(super::super::Refusal::Forbidden)),
        ]
    }

    fn generic_decode(bytes: &[u8]) -> Result<ChunkResponse, DecodeError> {
        codec::decode(bytes, WIRE_VERSION, ChunkResponse::MAX_LEN)
    }

    proptest! {
        #[test]
        fn pieces_are_the_generic_encoding(r in response()) {
            let generic = codec::encode(WIRE_VERSION, &r);
            match encode_pieces(&r) {
                Ok(pieces) => {
                    prop_assert_eq!(pieces.len(), generic.len());
                    prop_assert_eq!(pieces.to_vec(), generic.clone());
                    prop_assert_eq!(parse(&generic).unwrap(), r);
                }
                // More than 64 replies: both paths refuse to encode it.
                Err(_) => prop_assert!(r.encode().is_err()),
            }
        }

        #[test]
        fn mutated_bytes_are_judged_like_the_generic_decoder(
            r in response(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = codec::encode(WIRE_VERSION, &r);
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let fast = parse(&bytes);
            let slow = generic_decode(&bytes);
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "fast {:?} vs generic {:?} on {:02x?}", fast, slow, bytes),
            }
        }
    }

    #[test]
    fn overlong_varints_are_not_canonical() {
        // One `Missing` reply, with the count written as 0x81 0x00 instead of 0x01.
        let bytes = [WIRE_VERSION, 0, 0x81, 0x00, 1];
        assert!(matches!(parse(&bytes), Err(DecodeError::NotCanonical)));
        assert!(generic_decode(&bytes).is_err());
        assert_eq!(
            parse(&[WIRE_VERSION, 0, 1, 1]).unwrap(),
            ChunkResponse::Chunks(vec![ChunkReply::Missing])
        );
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused_without_allocating() {
        // 2^32 - 1 replies announced in a 7-byte input.
        let bytes = [WIRE_VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(parse(&bytes).is_err());
        // A 1 GiB body announced, 1 byte present.
        let bytes = [WIRE_VERSION, 0, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x04, 7];
        assert!(parse(&bytes).is_err());
    }

    #[test]
    fn owned_pieces_round_trip() {
        let p = Pieces::owned(vec![1, 2, 3]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![&[1u8, 2, 3][..]]);
        assert!(Pieces::default().is_empty());
    }
}
