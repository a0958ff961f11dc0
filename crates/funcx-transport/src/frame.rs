//! The frame format: how one message is laid out on a byte stream, and [`FrameCodec`], the one
//! encoder and decoder of it.
//!
//! Every length-prefixed postcard stream in funcx goes through [`FrameCodec`]: the manager
//! protocol's connections (with fragments, protocol version 2) and the gateway's binary result
//! stream (without). See [`FrameCodec`] for the layout.

use std::fmt;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use funcx_core::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::TransportError;

/// The length of a frame header: a `u32`, big-endian.
pub const HEADER_LEN: usize = 4;

/// The default maximum frame body size: 64 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024 * 1024;

/// The default maximum message size: 1 GiB for one task's payload (the default limit of
/// arguments and of results) plus 64 MiB for everything around it.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = (1 << 30) + DEFAULT_MAX_FRAME_SIZE;

/// The largest frame body the header can describe when it carries the fragment flag: 31 bits,
/// the top one being the flag.
pub const MAX_FRAME_SIZE_LIMIT: usize = (1 << 31) - 1;

/// The largest frame body a header without the fragment flag can describe: 32 bits.
const MAX_UNFRAGMENTED_LIMIT: usize = u32::MAX as usize;

/// The header bit that says more fragments of the same message follow.
const MORE: u32 = 1 << 31;

/// The most a reader reserves for a large frame before this much of it has arrived, so that
/// a peer that announces a large frame and then sends nothing costs little memory.
const RESERVE_STEP: usize = 1024 * 1024;

/// How large frames and messages may be on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_frame_size: usize,
    pub(crate) max_message_size: usize,
}

/// Length-prefixed [postcard] messages on a byte stream: a [`tokio_util::codec`] encoder of
/// any serializable message and decoder of `T`.
///
/// Each frame is a 4-byte big-endian header, then that many bytes of the message's postcard
/// encoding. The length counts the body only, not the header.
///
/// With fragments (the default; the manager protocol since version 2), the header's top bit
/// says that more of the same message follows and the other 31 bits are the length of this
/// frame's body, so that a message larger than the maximum frame size travels as several
/// frames:
///
/// ```text
/// one frame:
/// +-M-+------- len: 31 bits ---------+--------- body: len bytes ---------+
/// | 0 | 0x00 0x00 0x00 0x0B          | postcard(message)                 |
/// +---+------------------------------+-----------------------------------+
///
/// a message over the frame size, in fragments (each body at most max_frame_size):
/// | 1 | max_frame_size | part 1 | 1 | max_frame_size | part 2 | 0 | rest | part 3 |
/// ```
///
/// [`without_fragments`](Self::without_fragments) (the gateway's binary result stream) is the
/// plain form: the whole header is the length, up to `u32::MAX`, and every message is one
/// frame:
///
/// ```text
/// +----------- len: 32 bits ----------+--------- body: len bytes ---------+
/// | 0x00 0x00 0x00 0x0B               | postcard(message)                 |
/// +-----------------------------------+-----------------------------------+
/// ```
///
/// A decoder reads the header first and refuses a frame whose length exceeds its maximum frame
/// size *before* it allocates anything for the body ([`TransportError::is_frame_too_large`]);
/// it gathers fragments up to its maximum message size and refuses a message that would pass
/// it, again before the bytes arrive. A stream that ends in the middle of a frame or between
/// fragments is a decode error ([`Decoder::decode_eof`]), and so is a body that is not exactly
/// one message of the expected type (trailing bytes included); the frame is then already off
/// the buffer, so a reader that can live without one message may go on with the next.
///
/// Fragments keep every frame small enough for a receiver to bound what it reserves per
/// read, while a single large payload (a 1 GiB array) still travels whole.
///
/// ```
/// use bytes::BytesMut;
/// use funcx_transport::frame::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::<String>::new().max_frame_size(4);
/// let mut wire = BytesMut::new();
/// codec.encode("hello", &mut wire)?; // 6 bytes of postcard: two fragments
/// assert_eq!(&wire[..4], &[0x80, 0, 0, 4]);
/// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some("hello"));
/// assert!(wire.is_empty());
/// # Ok::<(), funcx_transport::TransportError>(())
/// ```
///
/// [postcard]: https://docs.rs/postcard
pub struct FrameCodec<T> {
    max_frame_size: usize,
    max_message_size: usize,
    fragments: bool,
    /// The fragments of a message gathered so far.
    parts: Option<BytesMut>,
    _message: PhantomData<fn() -> T>,
}

impl<T> FrameCodec<T> {
    /// A codec with fragments, [`DEFAULT_MAX_FRAME_SIZE`] and [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn new() -> FrameCodec<T> {
        FrameCodec {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            fragments: true,
            parts: None,
            _message: PhantomData,
        }
    }

    /// A codec with fragments and the limits of one connection.
    pub(crate) fn with_limits(limits: Limits) -> FrameCodec<T> {
        FrameCodec::new()
            .max_frame_size(limits.max_frame_size)
            .max_message_size(limits.max_message_size)
    }

    /// The largest frame body written or accepted (at least 1; at most
    /// [`MAX_FRAME_SIZE_LIMIT`] with fragments, `u32::MAX` without).
    pub fn max_frame_size(mut self, bytes: usize) -> FrameCodec<T> {
        self.max_frame_size = bytes;
        self
    }

    /// The largest message written or accepted, all its fragments together. Without
    /// fragments a message is one frame, so the frame size bounds it as well.
    pub fn max_message_size(mut self, bytes: usize) -> FrameCodec<T> {
        self.max_message_size = bytes.max(1);
        self
    }

    /// The plain form: the header is all length, and a message larger than the maximum frame
    /// size is refused instead of sent in fragments.
    pub fn without_fragments(mut self) -> FrameCodec<T> {
        self.fragments = false;
        self
    }

    /// The largest frame body, within what the header can describe.
    pub(crate) fn frame_size(&self) -> usize {
        let limit = if self.fragments {
            MAX_FRAME_SIZE_LIMIT
        } else {
            MAX_UNFRAGMENTED_LIMIT
        };
        self.max_frame_size.clamp(1, limit)
    }

    /// The largest message this codec takes: without fragments, one frame.
    pub(crate) fn message_limit(&self) -> usize {
        if self.fragments {
            self.max_message_size
        } else {
            self.max_message_size.min(self.frame_size())
        }
    }

    /// Appends `msg` to `dst` as one frame, or, when it is too large for one frame, hands back
    /// its encoding to be written with [`fragments`](Self::fragments) (leaving `dst` as it
    /// was): a writer can then send a large message straight from its encoding instead of
    /// copying it into its buffer. [`Encoder::encode`] does both in one call.
    ///
    /// Fails, leaving `dst` as it was, when the message does not encode or is over the message
    /// limit (without fragments: the frame size).
    pub fn encode_frame<S: Serialize + ?Sized>(
        &self,
        msg: &S,
        dst: &mut BytesMut,
    ) -> Result<Option<BytesMut>, TransportError> {
        let start = dst.len();
        dst.put_u32(0);
        let mut writer = dst.writer();
        if let Err(e) = postcard::to_io(msg, &mut writer) {
            let dst = writer.into_inner();
            dst.truncate(start);
            return Err(TransportError::decode(format!(
                "could not encode the message: {e}"
            )));
        }
        let dst = writer.into_inner();
        let len = dst.len() - start - HEADER_LEN;
        let limit = self.message_limit();
        if len > limit {
            dst.truncate(start);
            return Err(TransportError::frame_too_large(len as u64, limit));
        }
        if len > self.frame_size() {
            let body = dst.split_off(start + HEADER_LEN);
            dst.truncate(start);
            return Ok(Some(body));
        }
        // `len` fits the header: at most the frame size, itself at most the header's limit.
        dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(None)
    }

    /// The frames of a message's encoding that [`encode_frame`](Self::encode_frame) handed
    /// back: each a header and a part of at most the maximum frame size, the last one without
    /// the flag.
    pub fn fragments<'a>(
        &self,
        body: &'a [u8],
    ) -> impl Iterator<Item = ([u8; HEADER_LEN], &'a [u8])> + 'a {
        let mut parts = body.chunks(self.frame_size()).peekable();
        std::iter::from_fn(move || {
            let part = parts.next()?;
            Some((fragment_header(part.len(), parts.peek().is_some()), part))
        })
    }

    /// Whether a message is half gathered: some of its fragments are in, not the last.
    pub fn is_partial(&self) -> bool {
        self.parts.is_some()
    }

    /// Takes one complete frame off the front of `src`, if `src` holds one: whether more
    /// fragments follow, and the body.
    ///
    /// Returns `Ok(None)` when more bytes are needed; in that case it has reserved room in
    /// `src` for (a bounded part of) the rest of the frame. Refuses an oversized frame from
    /// its header alone.
    fn take_frame(&self, src: &mut BytesMut) -> Result<Option<(bool, BytesMut)>, TransportError> {
        let Some((more, len)) = self.header(src) else {
            return Ok(None);
        };
        let max_frame_size = self.frame_size();
        if len > max_frame_size {
            return Err(TransportError::frame_too_large(len as u64, max_frame_size));
        }
        let needed = HEADER_LEN + len;
        if src.len() < needed {
            let missing = needed - src.len();
            // Once a step's worth of the frame is in, the peer is sending it: room for the
            // rest at once, so that the frame is read into one allocation instead of one
            // that doubles, copying what it holds each time.
            let room = if src.len() >= RESERVE_STEP {
                missing
            } else {
                missing.min(RESERVE_STEP)
            };
            src.reserve(room);
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some((more, src.split_to(len))))
    }

    /// The header at the start of `src`, if it is all there: whether more fragments follow,
    /// and the length of the body.
    fn header(&self, src: &[u8]) -> Option<(bool, usize)> {
        let mut word = [0u8; HEADER_LEN];
        word.copy_from_slice(src.get(..HEADER_LEN)?);
        let word = u32::from_be_bytes(word);
        Some(if self.fragments {
            (word & MORE != 0, (word & !MORE) as usize)
        } else {
            (false, word as usize)
        })
    }

    /// The length, header included, of the frame that has started arriving at the front of
    /// `src`, when it is at least `min` bytes, within the limits, not all there yet, and a
    /// whole message (not a fragment). A reader may then read the rest of it into a buffer
    /// of its own (see [`BufferPool`](crate::pool::BufferPool)) and decode it with
    /// [`decode_frame`](Self::decode_frame), instead of growing `src` to hold it.
    pub fn unfinished_frame(&self, src: &[u8], min: usize) -> Option<usize> {
        let (more, len) = self.header(src)?;
        let whole = HEADER_LEN + len;
        let wanted = !more
            && !self.is_partial()
            && len <= self.frame_size()
            && len <= self.message_limit()
            && whole >= min
            && src.len() < whole;
        wanted.then_some(whole)
    }

    /// Decodes the message of one whole frame, header included, that
    /// [`unfinished_frame`](Self::unfinished_frame) announced: its large payloads share
    /// `frame`'s memory.
    pub fn decode_frame(&self, frame: &Bytes) -> Result<T, TransportError>
    where
        T: DeserializeOwned,
    {
        let body = frame.slice(HEADER_LEN.min(frame.len())..);
        Payload::with_shared_source(&body, decode_body)
    }

    /// Takes in one frame; returns the whole message once its last fragment is in. Refuses a
    /// message over the limit as soon as its fragments announce it.
    fn gather(&mut self, more: bool, body: BytesMut) -> Result<Option<BytesMut>, TransportError> {
        let whole = match self.parts.take() {
            None if !more => return Ok(Some(body)),
            None => body,
            Some(mut parts) => {
                let total = parts.len() + body.len();
                if total > self.max_message_size {
                    return Err(TransportError::frame_too_large(
                        total as u64,
                        self.max_message_size,
                    ));
                }
                parts.unsplit(body);
                parts
            }
        };
        if more {
            self.parts = Some(whole);
            Ok(None)
        } else {
            Ok(Some(whole))
        }
    }
}

impl<T> Default for FrameCodec<T> {
    fn default() -> FrameCodec<T> {
        FrameCodec::new()
    }
}

impl<T> Clone for FrameCodec<T> {
    /// A codec with the same settings and nothing gathered.
    fn clone(&self) -> FrameCodec<T> {
        FrameCodec {
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size,
            fragments: self.fragments,
            parts: None,
            _message: PhantomData,
        }
    }
}

impl<T> fmt::Debug for FrameCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("max_frame_size", &self.frame_size())
            .field("max_message_size", &self.max_message_size)
            .field("fragments", &self.fragments)
            .field("gathered", &self.parts.as_ref().map(BytesMut::len))
            .finish()
    }
}

impl<T: DeserializeOwned> Decoder for FrameCodec<T> {
    type Item = T;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>, TransportError> {
        while let Some((more, body)) = self.take_frame(src)? {
            if let Some(whole) = self.gather(more, body)? {
                // Large payloads keep pointing into the received bytes: no copy.
                return Payload::with_shared_source(&whole.freeze(), decode_body).map(Some);
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<T>, TransportError> {
        if let Some(msg) = self.decode(src)? {
            return Ok(Some(msg));
        }
        check_eof(src)?;
        if self.is_partial() {
            self.parts = None;
            return Err(TransportError::decode(
                "the stream ended between the fragments of a message",
            ));
        }
        Ok(None)
    }
}

impl<T, S: Serialize + ?Sized> Encoder<&S> for FrameCodec<T> {
    type Error = TransportError;

    fn encode(&mut self, msg: &S, dst: &mut BytesMut) -> Result<(), TransportError> {
        if let Some(body) = self.encode_frame(msg, dst)? {
            dst.reserve(body.len() + body.len().div_ceil(self.frame_size()) * HEADER_LEN);
            for (header, part) in self.fragments(&body) {
                dst.put_slice(&header);
                dst.put_slice(part);
            }
        }
        Ok(())
    }
}

/// The header of a fragment of `len` bytes (at most the frame size of a codec with
/// fragments), after which more fragments of the same message follow or not.
pub(crate) fn fragment_header(len: usize, more: bool) -> [u8; HEADER_LEN] {
    let flag = if more { MORE } else { 0 };
    // A part is at most the frame size, itself at most 31 bits with fragments.
    (len as u32 | flag).to_be_bytes()
}

/// Decodes one message from a frame body: exactly one message, nothing after it.
fn decode_body<R: DeserializeOwned>(body: &[u8]) -> Result<R, TransportError> {
    match postcard::take_from_bytes::<R>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(TransportError::decode(format!(
            "{} unexpected bytes after the message in a {}-byte frame",
            rest.len(),
            body.len()
        ))),
        Err(e) => Err(TransportError::decode(format!(
            "{e} (frame of {} bytes)",
            body.len()
        ))),
    }
}

/// What is left in a read buffer when the stream ends: nothing, or a partial frame.
pub(crate) fn check_eof(src: &BytesMut) -> Result<(), TransportError> {
    if src.is_empty() {
        return Ok(());
    }
    let announced = src
        .get(..HEADER_LEN)
        .map(|h| {
            let mut b = [0u8; HEADER_LEN];
            b.copy_from_slice(h);
            format!("{} bytes", u32::from_be_bytes(b))
        })
        .unwrap_or_else(|| "an incomplete header".to_owned());
    Err(TransportError::decode(format!(
        "the stream ended in the middle of a frame ({} bytes received of a frame announcing {announced})",
        src.len().saturating_sub(HEADER_LEN)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Text(String),
    }

    fn codec(max_frame_size: usize) -> FrameCodec<Msg> {
        FrameCodec::new()
            .max_frame_size(max_frame_size)
            .max_message_size(max_frame_size)
    }

    #[test]
    fn round_trips_several_frames_in_one_buffer() {
        let mut codec = codec(1024);
        let mut buf = BytesMut::new();
        codec.encode(&Msg::Ping(7), &mut buf).unwrap();
        codec.encode(&Msg::Text("hi".into()), &mut buf).unwrap();
        assert_eq!(&buf[..HEADER_LEN], &[0, 0, 0, 2]); // variant 0, varint 7
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Msg::Ping(7)));
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Msg::Text("hi".into()))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversized_header_is_refused_before_the_body_arrives() {
        let mut buf = BytesMut::from(&3_000_000u32.to_be_bytes()[..]);
        let err = codec(1_048_576).decode(&mut buf).unwrap_err();
        assert_eq!(err.frame_size(), Some((3_000_000, 1_048_576)));
        assert!(buf.capacity() < 1_048_576);
    }

    #[test]
    fn oversized_outgoing_message_is_refused_and_buffer_untouched() {
        let mut codec = codec(16);
        let mut buf = BytesMut::new();
        codec.encode(&Msg::Ping(1), &mut buf).unwrap();
        let before = buf.clone();
        let err = codec
            .encode(&Msg::Text("x".repeat(100)), &mut buf)
            .unwrap_err();
        assert!(err.is_frame_too_large());
        assert_eq!(buf, before);
    }

    #[test]
    fn a_message_over_the_frame_size_travels_in_fragments() {
        let mut codec = codec(16).max_message_size(1024);
        let text = "fragmented ".repeat(9);
        let mut buf = BytesMut::new();
        codec.encode(&Msg::Ping(1), &mut buf).unwrap();
        let before = buf.clone();
        let body = codec
            .encode_frame(&Msg::Text(text.clone()), &mut buf)
            .unwrap()
            .expect("a 100-byte message fits no 16-byte frame");
        assert_eq!(buf, before, "an oversized message leaves the buffer alone");
        let frames: Vec<_> = codec.fragments(&body).collect();
        assert_eq!(frames.len(), body.len().div_ceil(16));
        for (header, part) in &frames {
            buf.put_slice(header);
            buf.put_slice(part);
        }
        // The same bytes as the encoder writes in one call.
        let mut direct = before.clone();
        codec.encode(&Msg::Text(text.clone()), &mut direct).unwrap();
        assert_eq!(buf, direct);
        let first = before.len();
        assert_eq!(&buf[first..first + HEADER_LEN], &[0x80, 0, 0, 16]);

        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Msg::Ping(1)));
        // Fragment by fragment, as they arrive.
        let mut pending = buf.split_off(0);
        let mut whole = None;
        while !pending.is_empty() {
            let take = (HEADER_LEN + 16).min(pending.len());
            buf.unsplit(pending.split_to(take));
            assert!(whole.is_none(), "nothing after the last fragment");
            whole = codec.decode(&mut buf).unwrap();
            assert_eq!(codec.is_partial(), whole.is_none());
        }
        assert_eq!(whole, Some(Msg::Text(text)));
    }

    #[test]
    fn fragments_past_the_message_limit_are_refused() {
        let mut codec = codec(16).max_message_size(25);
        let mut buf = BytesMut::new();
        for _ in 0..3 {
            buf.put_u32(MORE | 10);
            buf.put_slice(&[0; 10]);
        }
        let refused = codec.decode(&mut buf).unwrap_err();
        assert_eq!(refused.frame_size(), Some((30, 25)));
    }

    #[test]
    fn partial_frames_wait_and_eof_inside_one_is_an_error() {
        let mut codec = codec(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(100);
        buf.put_slice(&[0; 10]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.decode_eof(&mut buf).unwrap_err().is_decode());
        assert!(codec
            .decode_eof(&mut BytesMut::from(&[0u8, 1][..]))
            .unwrap_err()
            .is_decode());
        // Between two fragments of one message.
        let mut buf = BytesMut::new();
        buf.put_u32(MORE | 1);
        buf.put_u8(1);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.is_partial());
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(
            err.is_decode() && err.to_string().contains("fragments"),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors_and_the_next_frame_still_reads() {
        let mut codec = codec(1024);
        for body in [&[9u8, 9, 9][..], &[0, 7, 0], &[]] {
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.put_slice(body);
            codec.encode(&Msg::Ping(3), &mut buf).unwrap();
            assert!(codec.decode(&mut buf).unwrap_err().is_decode());
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(Msg::Ping(3)));
        }
    }

    #[test]
    fn without_fragments_the_header_is_all_length() {
        // The top bit is length, not a flag: a 2^31-byte frame is announced as such, not as
        // the first fragment of an empty message.
        let plain = FrameCodec::<Msg>::new().without_fragments();
        let mut buf = BytesMut::new();
        buf.put_u32(MORE);
        let err = plain.clone().decode(&mut buf).unwrap_err();
        assert_eq!(err.frame_size(), Some((1 << 31, DEFAULT_MAX_FRAME_SIZE)));
        // Up to u32::MAX may be allowed, whatever the order of the settings.
        let wide = FrameCodec::<Msg>::new()
            .max_frame_size(usize::MAX)
            .without_fragments();
        assert_eq!(wide.frame_size(), u32::MAX as usize);
        let fragmented = FrameCodec::<Msg>::new().max_frame_size(usize::MAX);
        assert_eq!(fragmented.frame_size(), MAX_FRAME_SIZE_LIMIT);
        // A message over the frame size is refused, not fragmented.
        let mut small = FrameCodec::<Msg>::new()
            .max_frame_size(8)
            .without_fragments();
        let mut buf = BytesMut::new();
        assert!(small
            .encode(&Msg::Text("x".repeat(20)), &mut buf)
            .unwrap_err()
            .is_frame_too_large());
        assert!(buf.is_empty());
        small.encode(&Msg::Ping(5), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 2, 0, 5]);
        assert_eq!(small.decode(&mut buf).unwrap(), Some(Msg::Ping(5)));
    }
}
