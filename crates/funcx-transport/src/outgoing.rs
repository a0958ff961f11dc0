//! [`Outgoing`]: frames encoded for a connection's writer, large payloads kept by reference.
//!
//! A connection's writer encodes every queued message before writing. Copying a 16 MiB
//! argument into the write buffer costs as much as sending it (and the buffer's fresh pages
//! fault in one by one), so a large [`Payload`] is not copied: its encoding stops where the
//! payload's bytes begin, the shared [`Bytes`] of the payload take their place, and the
//! encoding goes on in the buffer after them. The writer then hands the kernel the list of
//! parts in one vectored write ([`Buf::chunks_vectored`]):
//!
//! ```text
//!  buffer:  | header | message 1 | header | message 2 up to its payload |  | rest of message 2 | header | ...
//!  parts:   [ ───────────── one slice of the buffer ──────────────── ] [payload] [ ───── the buffer ──── ]
//! ```
//!
//! The bytes on the wire are the same as [`FrameCodec`]'s [`Encoder`](tokio_util::codec::Encoder)
//! writes. The buffer is reused from one batch to the next: once the parts that point into it
//! are written and dropped, it is unshared again and [`BytesMut::reserve`] reclaims it.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use funcx_core::Payload;
use serde::Serialize;

use crate::frame::{fragment_header, FrameCodec, HEADER_LEN};
use crate::TransportError;

/// Encoded frames waiting to be written: slices of one buffer and payloads shared with
/// their messages, in order. A [`Buf`] over all of it.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// Parts before the buffer's content, in order.
    parts: VecDeque<Bytes>,
    /// The bytes in `parts`.
    parts_len: usize,
    /// The encoding of everything after the last part.
    buf: BytesMut,
    /// The large payloads of the message being encoded and where they go in `buf`.
    lent: Vec<(usize, Bytes)>,
}

impl Outgoing {
    /// Nothing to write, with room for `capacity` bytes of encoded messages.
    pub(crate) fn with_capacity(capacity: usize) -> Outgoing {
        Outgoing {
            buf: BytesMut::with_capacity(capacity),
            ..Outgoing::default()
        }
    }

    /// The bytes waiting to be written, payloads included.
    pub(crate) fn len(&self) -> usize {
        self.parts_len + self.buf.len()
    }

    /// Whether nothing waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity of the buffer small parts are encoded into.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// After everything was written: makes the buffer's whole allocation available again
    /// (the parts that pointed into it are gone), or starts a buffer of `initial` bytes when a
    /// large message grew it past `keep`.
    pub(crate) fn reclaim(&mut self, initial: usize, keep: usize) {
        self.parts.clear();
        self.parts_len = 0;
        self.buf.clear();
        self.buf.reserve(initial);
        if self.buf.capacity() > keep {
            self.buf = BytesMut::with_capacity(initial);
        }
    }

    /// Appends `msg` as one frame, or as fragments when it is over `codec`'s frame size.
    /// Fails, leaving what is queued as it was, when the message does not encode or is over
    /// the message limit (without fragments: the frame size).
    pub(crate) fn push<T, S: Serialize + ?Sized>(
        &mut self,
        codec: &FrameCodec<T>,
        msg: &S,
    ) -> Result<(), TransportError> {
        let start = self.buf.len();
        self.buf.put_u32(0);
        let encoded = Payload::with_lent_payloads(|| {
            postcard::serialize_with_flavor(
                msg,
                Parts {
                    buf: &mut self.buf,
                    lent: &mut self.lent,
                },
            )
        });
        let lent_len: usize = self.lent.iter().map(|(_, bytes)| bytes.len()).sum();
        let len = self.buf.len() - start - HEADER_LEN + lent_len;
        let refused = match encoded {
            Err(e) => Some(TransportError::decode(format!(
                "could not encode the message: {e}"
            ))),
            Ok(()) if len > codec.message_limit() => Some(TransportError::frame_too_large(
                len as u64,
                codec.message_limit(),
            )),
            Ok(()) => None,
        };
        if let Some(e) = refused {
            self.buf.truncate(start);
            self.lent.clear();
            return Err(e);
        }
        if len <= codec.frame_size() {
            // `len` fits the header: at most the frame size, itself at most its limit.
            self.buf[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
            self.splice_lent(0);
        } else {
            self.push_fragments(codec, start, len);
        }
        Ok(())
    }

    /// Moves the buffer up to each lent payload into `parts`, then the payload; `base` is
    /// the offset in the buffer the payloads' positions count from.
    fn splice_lent(&mut self, base: usize) {
        let mut taken = base;
        for (at, bytes) in std::mem::take(&mut self.lent) {
            let before = self.buf.split_to(at - taken).freeze();
            self.push_part(before);
            self.push_part(bytes);
            taken = at;
        }
    }

    /// Writes the message encoded from `start` on (a placeholder header, then `len` bytes of
    /// body, some lent) as fragments of at most the frame size.
    fn push_fragments<T>(&mut self, codec: &FrameCodec<T>, start: usize, len: usize) {
        let before = self.buf.split_to(start).freeze();
        self.push_part(before);
        self.buf.advance(HEADER_LEN);
        // The body as a list of pieces; positions of the payloads move with the header.
        let mut body = VecDeque::new();
        let mut taken = start + HEADER_LEN;
        for (at, bytes) in std::mem::take(&mut self.lent) {
            body.push_back(self.buf.split_to(at - taken).freeze());
            body.push_back(bytes);
            taken = at;
        }
        body.push_back(self.buf.split().freeze());
        let mut left = len;
        while left > 0 {
            let size = left.min(codec.frame_size());
            left -= size;
            self.push_part(Bytes::copy_from_slice(&fragment_header(size, left > 0)));
            let mut need = size;
            while need > 0 {
                let Some(mut piece) = body.pop_front() else {
                    break;
                };
                if piece.len() > need {
                    body.push_front(piece.split_off(need));
                }
                need -= piece.len();
                self.push_part(piece);
            }
        }
    }

    fn push_part(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.parts_len += part.len();
            self.parts.push_back(part);
        }
    }
}

impl Buf for Outgoing {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.parts.front() {
            Some(part) => part,
            None => &self.buf,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(part) = self.parts.front_mut() else {
                break;
            };
            if part.len() > cnt {
                part.advance(cnt);
                self.parts_len -= cnt;
                return;
            }
            cnt -= part.len();
            self.parts_len -= part.len();
            self.parts.pop_front();
        }
        self.buf.advance(cnt);
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let chunks = self
            .parts
            .iter()
            .map(|part| &part[..])
            .chain(Some(&self.buf[..]))
            .filter(|chunk| !chunk.is_empty());
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(chunks) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

/// Postcard output into the buffer, except for the bytes of a lent payload, which are noted
/// with their position instead.
struct Parts<'a> {
    buf: &'a mut BytesMut,
    lent: &'a mut Vec<(usize, Bytes)>,
}

impl postcard::ser_flavors::Flavor for Parts<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.buf.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match Payload::lent(data) {
            Some(bytes) => self.lent.push((self.buf.len(), bytes)),
            None => self.buf.extend_from_slice(data),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use tokio_util::codec::{Decoder, Encoder};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u32),
        Data(Vec<Payload>),
    }

    fn payload(byte: u8, len: usize) -> Payload {
        Payload::from_pickled(vec![byte; len])
    }

    /// Everything `out` holds, as one write would send it.
    fn drain(mut out: Outgoing) -> Vec<u8> {
        let mut wire = Vec::new();
        while out.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = out.chunks_vectored(&mut slices);
            let taken: usize = slices[..n].iter().map(|s| s.len()).sum();
            for slice in &slices[..n] {
                wire.extend_from_slice(slice);
            }
            out.advance(taken);
        }
        wire
    }

    fn messages() -> Vec<Msg> {
        vec![
            Msg::Ping(1),
            Msg::Data(vec![payload(1, 100), payload(2, 200 * 1024)]),
            Msg::Ping(2),
            Msg::Data(vec![
                payload(3, 300 * 1024),
                payload(4, 10),
                payload(5, 70_000),
            ]),
            Msg::Ping(3),
        ]
    }

    #[test]
    fn large_payloads_are_parts_of_their_own_and_the_bytes_are_the_encoders() {
        for frame_size in [usize::MAX, 64 * 1024, 1000] {
            let codec = FrameCodec::<Msg>::new().max_frame_size(frame_size);
            let mut out = Outgoing::with_capacity(1024);
            let mut expected = BytesMut::new();
            for msg in messages() {
                out.push(&codec, &msg).unwrap();
                codec.clone().encode(&msg, &mut expected).unwrap();
            }
            if frame_size == usize::MAX {
                // Each of the three large payloads is written from its own memory.
                assert!(out.buf.len() < 1024, "{} bytes copied", out.buf.len());
            }
            assert_eq!(out.len(), expected.len());
            let mut wire = BytesMut::from(&drain(out)[..]);
            assert!(
                wire == expected,
                "frame size {frame_size}: not the encoder's bytes"
            );
            let mut decoder = codec.clone();
            for msg in messages() {
                assert_eq!(decoder.decode(&mut wire).unwrap(), Some(msg));
            }
            assert!(wire.is_empty());
        }
    }

    #[test]
    fn a_refused_message_leaves_the_queue_as_it_was() {
        let codec = FrameCodec::<Msg>::new()
            .max_frame_size(100 * 1024)
            .max_message_size(100 * 1024);
        let mut out = Outgoing::with_capacity(64);
        out.push(&codec, &Msg::Ping(7)).unwrap();
        let before = out.len();
        let err = out
            .push(&codec, &Msg::Data(vec![payload(9, 200 * 1024)]))
            .unwrap_err();
        assert!(err.is_frame_too_large(), "{err}");
        assert_eq!(out.len(), before);
        out.push(&codec, &Msg::Ping(8)).unwrap();
        let mut wire = BytesMut::from(&drain(out)[..]);
        let mut decoder = codec.clone();
        assert_eq!(decoder.decode(&mut wire).unwrap(), Some(Msg::Ping(7)));
        assert_eq!(decoder.decode(&mut wire).unwrap(), Some(Msg::Ping(8)));
        assert!(wire.is_empty());
    }

    #[test]
    fn the_buffer_is_reused_once_its_parts_are_written() {
        let codec = FrameCodec::<Msg>::new();
        let mut out = Outgoing::with_capacity(4096);
        let mut starts = Vec::new();
        for round in 0..3 {
            out.push(&codec, &Msg::Ping(round)).unwrap();
            out.push(&codec, &Msg::Data(vec![payload(1, 100 * 1024)]))
                .unwrap();
            out.push(&codec, &Msg::Ping(round)).unwrap();
            assert!(out.parts.len() >= 2, "the payload is a part of its own");
            let len = out.len();
            out.advance(len);
            out.reclaim(4096, 1 << 20);
            starts.push(out.buf.as_ptr());
        }
        // The same allocation serves one batch after another.
        assert!(starts.iter().all(|start| *start == starts[0]), "{starts:?}");
        // One grown past what is kept is given back.
        out.push(&codec, &Msg::Data(vec![payload(1, 10); 300_000]))
            .unwrap();
        let len = out.len();
        out.advance(len);
        out.reclaim(4096, 1 << 20);
        assert!(out.capacity() < 1 << 20);
    }
}
