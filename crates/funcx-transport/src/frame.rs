//! The frame format: how one message is laid out on a byte stream.
//!
//! Every message travels as one frame: a 4-byte big-endian length, then that many bytes of
//! [postcard]-encoded body.
//!
//! ```text
//! +---------- len: u32 BE ----------+--------- body: len bytes ---------+
//! | 0x00 | 0x00 | 0x00 | 0x0B       | postcard(message)                 |
//! +---------------------------------+-----------------------------------+
//!   4 bytes                            0 ..= max_frame_size bytes
//! ```
//!
//! The length counts the body only, not the header. A receiver reads the header first and
//! refuses a frame whose length exceeds its maximum frame size *before* it allocates anything
//! for the body ([`TransportError::is_frame_too_large`]); a stream that ends in the middle of a
//! frame is a decode error, and so is a body that is not exactly one message of the expected
//! type (trailing bytes included).
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

/// The most a reader reserves at once while a large frame arrives, so that a peer that
/// announces a large frame and then sends nothing costs little memory.
const RESERVE_STEP: usize = 1024 * 1024;

/// Appends `msg` to `dst` as one frame.
///
/// On error `dst` is left as it was.
pub(crate) fn encode<S: Serialize>(
    msg: &S,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), TransportError> {
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
    if len > max_frame_size || u32::try_from(len).is_err() {
        dst.truncate(start);
        return Err(TransportError::frame_too_large(len as u64, max_frame_size));
    }
    // `len` fits in a u32: checked just above.
    dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Takes one complete frame body off the front of `src`, if `src` holds one.
///
/// Returns `Ok(None)` when more bytes are needed; in that case it has reserved room in `src`
/// for (a bounded part of) the rest of the frame. Refuses an oversized frame from its header
/// alone.
pub(crate) fn decode_frame(
    src: &mut BytesMut,
    max_frame_size: usize,
) -> Result<Option<BytesMut>, TransportError> {
    let Some(header) = src.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
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
    Ok(Some(src.split_to(len)))
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
        encode(&Msg::Ping(7), &mut buf, 1024).unwrap();
        encode(&Msg::Text("hi".into()), &mut buf, 1024).unwrap();
        assert_eq!(&buf[..HEADER_LEN], &[0, 0, 0, 2]); // variant 0, varint 7
        let a = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode_body::<Msg>(&a).unwrap(), Msg::Ping(7));
        let b = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode_body::<Msg>(&b).unwrap(), Msg::Text("hi".into()));
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

    #[test]
    fn oversized_outgoing_message_is_refused_and_buffer_untouched() {
        let mut buf = BytesMut::new();
        encode(&Msg::Ping(1), &mut buf, 16).unwrap();
        let before = buf.clone();
        let err = encode(&Msg::Text("x".repeat(100)), &mut buf, 16).unwrap_err();
        assert!(err.is_frame_too_large());
        assert_eq!(buf, before);
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
