//! The frame format: how one message is laid out on a byte stream.
//!
//! A message travels as one frame, or, when it is larger than the maximum frame size, as
//! several: each frame is a 4-byte big-endian header, then that many bytes of the message's
//! [postcard] encoding. The header's top bit says that more of the same message follows;
//! the other 31 bits are the length of this frame's body.
//!
//! ```text
//! one frame:
//! +-M-+------- len: 31 bits ---------+--------- body: len bytes ---------+
//! | 0 | 0x00 0x00 0x00 0x0B          | postcard(message)                 |
//! +---+------------------------------+-----------------------------------+
//!
//! a message over the frame size, in fragments (each body at most max_frame_size):
//! | 1 | max_frame_size | part 1 | 1 | max_frame_size | part 2 | 0 | rest | part 3 |
//! ```
//!
//! The length counts the body only, not the header. A receiver reads the header first and
//! refuses a frame whose length exceeds its maximum frame size *before* it allocates anything
//! for the body ([`TransportError::is_frame_too_large`]); it gathers fragments up to its
//! maximum message size and refuses a message that would pass it, again before the bytes
//! arrive. A stream that ends in the middle of a frame is a decode error, and so is a body that
//! is not exactly one message of the expected type (trailing bytes included).
//!
//! Fragments keep every frame small enough for a receiver to bound what it reserves per
//! read, while a single large payload (a 1 GiB array) still travels whole.
//!
//! [postcard]: https://docs.rs/postcard

use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::TransportError;

/// The length of a frame header: a `u32`, big-endian.
pub const HEADER_LEN: usize = 4;

/// The default maximum frame body size: 64 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024 * 1024;

/// The default maximum message size: 1 GiB for one task's payload (the default limit of
/// arguments and of results) plus 64 MiB for everything around it.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = (1 << 30) + DEFAULT_MAX_FRAME_SIZE;

/// The largest frame body the header can describe: 31 bits, the top one being the flag.
pub const MAX_FRAME_SIZE_LIMIT: usize = (1 << 31) - 1;

/// The header bit that says more fragments of the same message follow.
const MORE: u32 = 1 << 31;

/// The most a reader reserves at once while a large frame arrives, so that a peer that
/// announces a large frame and then sends nothing costs little memory.
const RESERVE_STEP: usize = 1024 * 1024;

/// How large frames and messages may be on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_frame_size: usize,
    pub(crate) max_message_size: usize,
}

/// What [`encode`] did with a message.
#[derive(Debug)]
pub(crate) enum Encoded {
    /// Appended to the buffer as one frame.
    Framed,
    /// Too large for one frame: here is its encoding, to be sent with [`fragment_header`]s
    /// (the buffer is left as it was).
    Oversized(BytesMut),
}

/// Appends `msg` to `dst` as one frame, or hands back its encoding when it needs fragments.
///
/// Fails, leaving `dst` as it was, when the message does not encode or is over the message
/// limit.
pub(crate) fn encode<S: Serialize>(
    msg: &S,
    dst: &mut BytesMut,
    limits: Limits,
) -> Result<Encoded, TransportError> {
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
    if len > limits.max_message_size {
        dst.truncate(start);
        return Err(TransportError::frame_too_large(
            len as u64,
            limits.max_message_size,
        ));
    }
    if len > limits.max_frame_size.min(MAX_FRAME_SIZE_LIMIT) {
        let body = dst.split_off(start + HEADER_LEN);
        dst.truncate(start);
        return Ok(Encoded::Oversized(body));
    }
    // `len` fits in 31 bits: checked just above.
    dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(Encoded::Framed)
}

/// The header of a fragment of `len` bytes; `last` for the final one.
pub(crate) fn fragment_header(len: usize, last: bool) -> [u8; HEADER_LEN] {
    let flag = if last { 0 } else { MORE };
    (len as u32 | flag).to_be_bytes()
}

/// One frame taken off a read buffer.
#[derive(Debug)]
pub(crate) struct Frame {
    /// More fragments of the same message follow.
    pub(crate) more: bool,
    /// This frame's part of the message.
    pub(crate) body: BytesMut,
}

/// Takes one complete frame body off the front of `src`, if `src` holds one.
///
/// Returns `Ok(None)` when more bytes are needed; in that case it has reserved room in `src`
/// for (a bounded part of) the rest of the frame. Refuses an oversized frame from its header
/// alone.
pub(crate) fn decode_frame(
    src: &mut BytesMut,
    max_frame_size: usize,
) -> Result<Option<Frame>, TransportError> {
    let Some(header) = src.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let word = u32::from_be_bytes(len_bytes);
    let more = word & MORE != 0;
    let len = (word & !MORE) as usize;
    if len > max_frame_size {
        return Err(TransportError::frame_too_large(len as u64, max_frame_size));
    }
    let needed = HEADER_LEN + len;
    if src.len() < needed {
        let missing = needed - src.len();
        src.reserve(missing.min(RESERVE_STEP));
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    Ok(Some(Frame {
        more,
        body: src.split_to(len),
    }))
}

/// Gathers the fragments of one message, refusing a message over the limit as soon as its
/// fragments announce it.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    parts: Option<BytesMut>,
}

impl Assembler {
    /// Takes in one frame; returns the whole message once its last fragment is in.
    pub(crate) fn push(
        &mut self,
        frame: Frame,
        max_message_size: usize,
    ) -> Result<Option<BytesMut>, TransportError> {
        let Frame { more, body } = frame;
        let whole = match self.parts.take() {
            None if !more => return Ok(Some(body)),
            None => body,
            Some(mut parts) => {
                let total = parts.len() + body.len();
                if total > max_message_size {
                    return Err(TransportError::frame_too_large(
                        total as u64,
                        max_message_size,
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

    /// Whether a message is half gathered.
    pub(crate) fn is_partial(&self) -> bool {
        self.parts.is_some()
    }
}

/// Decodes one message from a frame body: exactly one message, nothing after it.
pub(crate) fn decode_body<R: DeserializeOwned>(body: &[u8]) -> Result<R, TransportError> {
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

    #[test]
    fn round_trips_several_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        encode(&Msg::Ping(7), &mut buf, limits(1024)).unwrap();
        encode(&Msg::Text("hi".into()), &mut buf, limits(1024)).unwrap();
        assert_eq!(&buf[..HEADER_LEN], &[0, 0, 0, 2]); // variant 0, varint 7
        let a = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert!(!a.more);
        assert_eq!(decode_body::<Msg>(&a.body).unwrap(), Msg::Ping(7));
        let b = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode_body::<Msg>(&b.body).unwrap(), Msg::Text("hi".into()));
        assert!(decode_frame(&mut buf, 1024).unwrap().is_none());
        check_eof(&buf).unwrap();
    }

    #[test]
    fn oversized_header_is_refused_before_the_body_arrives() {
        let mut buf = BytesMut::from(&3_000_000u32.to_be_bytes()[..]);
        let err = decode_frame(&mut buf, 1_048_576).unwrap_err();
        assert_eq!(err.frame_size(), Some((3_000_000, 1_048_576)));
        assert!(buf.capacity() < 1_048_576);
    }

    fn limits(max_frame_size: usize) -> Limits {
        Limits {
            max_frame_size,
            max_message_size: max_frame_size,
        }
    }

    #[test]
    fn oversized_outgoing_message_is_refused_and_buffer_untouched() {
        let mut buf = BytesMut::new();
        encode(&Msg::Ping(1), &mut buf, limits(16)).unwrap();
        let before = buf.clone();
        let err = encode(&Msg::Text("x".repeat(100)), &mut buf, limits(16)).unwrap_err();
        assert!(err.is_frame_too_large());
        assert_eq!(buf, before);
    }

    #[test]
    fn a_message_over_the_frame_size_travels_in_fragments() {
        let limits = Limits {
            max_frame_size: 16,
            max_message_size: 1024,
        };
        let text = "fragmented ".repeat(9);
        let mut buf = BytesMut::new();
        encode(&Msg::Ping(1), &mut buf, limits).unwrap();
        let before = buf.clone();
        let Encoded::Oversized(body) = encode(&Msg::Text(text.clone()), &mut buf, limits).unwrap()
        else {
            panic!("a 100-byte message fits no 16-byte frame");
        };
        assert_eq!(buf, before, "an oversized message leaves the buffer alone");
        let chunks: Vec<&[u8]> = body.chunks(16).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            buf.put_slice(&fragment_header(chunk.len(), i + 1 == chunks.len()));
            buf.put_slice(chunk);
        }
        let mut assembler = Assembler::default();
        let first = decode_frame(&mut buf, 16).unwrap().unwrap();
        let ping = assembler.push(first, 1024).unwrap().unwrap();
        assert_eq!(decode_body::<Msg>(&ping).unwrap(), Msg::Ping(1));
        let mut whole = None;
        while let Some(frame) = decode_frame(&mut buf, 16).unwrap() {
            assert!(whole.is_none(), "nothing after the last fragment");
            whole = assembler.push(frame, 1024).unwrap();
            assert_eq!(assembler.is_partial(), whole.is_none());
        }
        assert_eq!(
            decode_body::<Msg>(&whole.unwrap()).unwrap(),
            Msg::Text(text)
        );
    }

    #[test]
    fn fragments_past_the_message_limit_are_refused() {
        let mut buf = BytesMut::new();
        for _ in 0..3 {
            buf.put_slice(&fragment_header(10, false));
            buf.put_slice(&[0; 10]);
        }
        let mut assembler = Assembler::default();
        let mut refused = None;
        while let Some(frame) = decode_frame(&mut buf, 16).unwrap() {
            if let Err(e) = assembler.push(frame, 25) {
                refused = Some(e);
                break;
            }
        }
        let refused = refused.expect("30 bytes announced against a 25-byte limit");
        assert_eq!(refused.frame_size(), Some((30, 25)));
    }

    #[test]
    fn partial_frames_wait_and_eof_inside_one_is_an_error() {
        let mut buf = BytesMut::new();
        buf.put_u32(100);
        buf.put_slice(&[0; 10]);
        assert!(decode_frame(&mut buf, 1024).unwrap().is_none());
        assert!(check_eof(&buf).unwrap_err().is_decode());
        assert!(check_eof(&BytesMut::from(&[0u8, 1][..]))
            .unwrap_err()
            .is_decode());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors() {
        assert!(decode_body::<Msg>(&[9, 9, 9]).unwrap_err().is_decode());
        assert!(decode_body::<Msg>(&[0, 7, 0]).unwrap_err().is_decode());
        assert!(decode_body::<Msg>(&[]).unwrap_err().is_decode());
    }
}
