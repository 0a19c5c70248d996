//! Request-response framing: one length-prefixed record per stream direction, capped before
//! allocating.
//!
//! The message types and their canonical bytes belong to `vwnet_protocol::wire`; this module only
//! moves those bytes over a libp2p stream. Frame: a 4-byte big-endian length, then the record.
//! The length is checked against the message type's `MAX_LEN` *before* the buffer is allocated,
//! so a hostile peer announcing 4 GiB costs us four bytes of reading, not memory (the shape of
//! rust-libp2p's `request_response::cbor` codec, with the limit applied to the prefix).

use std::io;
use std::marker::PhantomData;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response;
use vwnet_protocol::wire::{Pieces, WireMessage};

/// A request-response codec for one protocol: requests `Req`, responses `Resp`.
pub struct CappedCodec<Req, Resp> {
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> Default for CappedCodec<Req, Resp> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for CappedCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Reads one frame of at most `max` bytes.
pub(crate) async fn read_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {max}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one frame whose body is `pieces`, written in order without joining them first (a
/// chunk response lends its bodies; see `vwnet_protocol::wire::Pieces`).
pub(crate) async fn write_frame<T: AsyncWrite + Unpin>(
    io: &mut T,
    pieces: &Pieces<'_>,
) -> io::Result<()> {
    let len = u32::try_from(pieces.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))?;
    io.write_all(&len.to_be_bytes()).await?;
    for piece in pieces.iter() {
        io.write_all(piece).await?;
    }
    io.close().await
}

fn decode<M: WireMessage>(bytes: &[u8]) -> io::Result<M> {
    M::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn encode<M: WireMessage>(msg: &M) -> io::Result<Pieces<'_>> {
    // Never send what the peer is bound to refuse: fail locally with a clear error instead.
    msg.encode_pieces()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl<Req, Resp> request_response::Codec for CappedCodec<Req, Resp>
where
    Req: WireMessage + Send + 'static,
    Resp: WireMessage + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, Req::MAX_LEN).await?)
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, Resp::MAX_LEN).await?)
    }

    async fn write_request<T>(&mut self, _: &Self::Protocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&req)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&res)?).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Small(Vec<u8>);

    impl WireMessage for Small {
        const NAME: &'static str = "small";
        // Version byte + length varint + up to 6 bytes.
        const MAX_LEN: usize = 8;
    }

    fn proto() -> StreamProtocol {
        StreamProtocol::new("/test/1")
    }

    #[test]
    fn round_trip() {
        futures::executor::block_on(async {
            let mut codec = CappedCodec::<Small, Small>::default();
            let mut buf = Cursor::new(Vec::new());
            codec
                .write_request(&proto(), &mut buf, Small(vec![1, 2, 3]))
                .await
                .unwrap();
            // Length prefix 5, then the version byte, the vec length and the bytes.
            assert_eq!(buf.get_ref(), &[0, 0, 0, 5, 1, 3, 1, 2, 3]);
            buf.set_position(0);
            let back = codec.read_request(&proto(), &mut buf).await.unwrap();
            assert_eq!(back, Small(vec![1, 2, 3]));
        });
    }

    #[test]
    fn oversize_prefix_is_refused_before_reading_the_body() {
        futures::executor::block_on(async {
            let mut codec = CappedCodec::<Small, Small>::default();
            // Claims 4 GiB but carries nothing: must fail on the prefix, not try to allocate.
            let mut buf = Cursor::new(vec![0xff, 0xff, 0xff, 0xff]);
            let err = codec.read_response(&proto(), &mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let mut nine = Cursor::new([&[0, 0, 0, 9][..], &[0; 9]].concat());
            assert!(codec.read_request(&proto(), &mut nine).await.is_err());
        });
    }

    #[test]
    fn oversize_and_invalid_messages_are_errors() {
        futures::executor::block_on(async {
            let mut codec = CappedCodec::<Small, Small>::default();
            let mut buf = Cursor::new(Vec::new());
            let err = codec
                .write_request(&proto(), &mut buf, Small(vec![0; 9]))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let mut bad = Cursor::new(vec![0, 0, 0, 1, 0xff]);
            assert!(codec.read_request(&proto(), &mut bad).await.is_err());
            let mut short = Cursor::new(vec![0, 0, 0, 4, 1]);
            assert!(codec.read_request(&proto(), &mut short).await.is_err());
        });
    }
}
