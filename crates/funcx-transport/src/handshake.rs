//! The handshake both sides of a stream connection run before the first frame.
//!
//! The side that dialled (the client) speaks first:
//!
//! ```text
//! client ─▶ server   +-------+-------------+-----------------+-------------------+
//!                    | FUNCX | version u16 | token len u16   | token (len bytes) |
//!                    +-------+-------------+-----------------+-------------------+
//!                      5 B     2 B BE        2 B BE            0 ..= 65535 B
//!
//! server ─▶ client   +-------+-------------+-----------+
//!                    | FUNCX | version u16 | status u8 |   0 ok, 1 bad version, 2 bad token
//!                    +-------+-------------+-----------+
//! ```
//!
//! The server checks the version first, then the token (in constant time), and answers either
//! way, so that a refused client learns why instead of seeing a reset. After a refusal both
//! sides drop the connection.

use subtle::{Choice, ConstantTimeEq};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TransportError;

/// The first bytes of every funcx stream, both ways.
pub(crate) const MAGIC: &[u8; 5] = b"FUNCX";

const STATUS_OK: u8 = 0;
const STATUS_BAD_VERSION: u8 = 1;
const STATUS_BAD_TOKEN: u8 = 2;

/// Runs the client side: sends our preamble, reads the verdict.
pub(crate) async fn client<IO>(
    io: &mut IO,
    version: u16,
    token: &[u8],
) -> Result<(), TransportError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let token_len = u16::try_from(token.len()).map_err(|_| {
        TransportError::handshake(format!(
            "our token is {} bytes long; the most the handshake carries is {}",
            token.len(),
            u16::MAX
        ))
    })?;
    let mut preamble = Vec::with_capacity(MAGIC.len() + 4 + token.len());
    preamble.extend_from_slice(MAGIC);
    preamble.extend_from_slice(&version.to_be_bytes());
    preamble.extend_from_slice(&token_len.to_be_bytes());
    preamble.extend_from_slice(token);
    io.write_all(&preamble).await.map_err(write_failed)?;
    io.flush().await.map_err(write_failed)?;

    let mut reply = [0u8; 8];
    io.read_exact(&mut reply).await.map_err(read_failed)?;
    check_magic(&reply[..5])?;
    let theirs = u16::from_be_bytes([reply[5], reply[6]]);
    match reply[7] {
        STATUS_OK if theirs == version => Ok(()),
        STATUS_OK | STATUS_BAD_VERSION => Err(TransportError::version_mismatch(version, theirs)),
        STATUS_BAD_TOKEN => Err(TransportError::bad_token(false)),
        other => Err(TransportError::handshake(format!(
            "the peer answered with unknown status {other}"
        ))),
    }
}

/// Runs the server side: reads the client's preamble, checks it, answers.
pub(crate) async fn server<IO>(
    io: &mut IO,
    version: u16,
    token: &[u8],
) -> Result<(), TransportError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.map_err(read_failed)?;
    check_magic(&head[..5])?;
    let theirs = u16::from_be_bytes([head[5], head[6]]);
    let token_len = u16::from_be_bytes([head[7], head[8]]) as usize;
    // At most 64 KiB, bounded by the u16 length: no limit check needed.
    let mut presented = vec![0u8; token_len];
    io.read_exact(&mut presented).await.map_err(read_failed)?;

    let (status, result) = if theirs != version {
        (
            STATUS_BAD_VERSION,
            Err(TransportError::version_mismatch(version, theirs)),
        )
    } else if !bool::from(tokens_match(token, &presented)) {
        (STATUS_BAD_TOKEN, Err(TransportError::bad_token(true)))
    } else {
        (STATUS_OK, Ok(()))
    };
    let mut reply = [0u8; 8];
    reply[..5].copy_from_slice(MAGIC);
    reply[5..7].copy_from_slice(&version.to_be_bytes());
    reply[7] = status;
    let sent = async {
        io.write_all(&reply).await?;
        io.flush().await
    }
    .await;
    match (result, sent) {
        (Err(refusal), _) => {
            // Best effort: the peer may already be gone, and we close anyway.
            let _ = io.shutdown().await;
            Err(refusal)
        }
        (Ok(()), Err(e)) => Err(write_failed(e)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// A fresh secret for [`TcpTransportBuilder::token`](crate::TcpTransportBuilder::token): 32
/// random bytes from the operating system's CSPRNG, as 64 hex digits. Use it rather than
/// anything derived from a process id or a clock, which another user can guess.
pub fn new_token() -> std::io::Result<String> {
    use std::fmt::Write;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("no randomness for a token: {e}")))?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Compares the expected token with the presented one in time that depends only on the
/// expected token's length: every byte of `expected` is compared (against a zero where the
/// presented token is shorter), and the lengths are compared separately, without a branch.
fn tokens_match(expected: &[u8], presented: &[u8]) -> Choice {
    let same_len = (expected.len() as u64).ct_eq(&(presented.len() as u64));
    let mut same_bytes = Choice::from(1);
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        same_bytes &= e.ct_eq(&p);
    }
    same_len & same_bytes
}

fn check_magic(got: &[u8]) -> Result<(), TransportError> {
    if got == MAGIC {
        return Ok(());
    }
    let shown: String = got
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    Err(TransportError::handshake(format!(
        "the peer did not start with the funcx preamble (got {got:02x?}, {shown:?}); \
         is something other than funcx connected to this port?"
    )))
}

fn read_failed(e: std::io::Error) -> TransportError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        TransportError::handshake("the peer closed the connection during the handshake")
    } else {
        TransportError::io(e)
    }
}

fn write_failed(e: std::io::Error) -> TransportError {
    TransportError::io(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        client_version: u16,
        client_token: &[u8],
        server_token: &[u8],
    ) -> (Result<(), TransportError>, Result<(), TransportError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::join!(
            client(&mut a, client_version, client_token),
            server(&mut b, 1, server_token)
        )
    }

    #[tokio::test]
    async fn matching_sides_agree() {
        let (c, s) = run(1, b"tok", b"tok").await;
        c.unwrap();
        s.unwrap();
        let (c, s) = run(1, b"", b"").await;
        c.unwrap();
        s.unwrap();
    }

    #[tokio::test]
    async fn both_sides_see_a_version_mismatch() {
        let (c, s) = run(99, b"tok", b"tok").await;
        assert_eq!(c.unwrap_err().versions(), Some((99, 1)));
        assert_eq!(s.unwrap_err().versions(), Some((1, 99)));
    }

    #[tokio::test]
    async fn both_sides_see_a_bad_token() {
        for wrong in [&b"tik"[..], b"to", b"toke", b""] {
            let (c, s) = run(1, wrong, b"tok").await;
            let (c, s) = (c.unwrap_err(), s.unwrap_err());
            assert!(c.is_bad_token(), "{c}");
            assert!(s.is_bad_token(), "{s}");
            assert!(c.to_string().contains("refused our token"));
        }
    }

    #[tokio::test]
    async fn garbage_is_a_handshake_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = server(&mut b, 1, b"").await.unwrap_err();
        assert!(err.is_handshake(), "{err}");
        assert!(err.to_string().contains("GET /"), "{err}");
    }

    #[tokio::test]
    async fn eof_is_a_handshake_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"FUNC").await.unwrap();
        drop(a);
        let err = server(&mut b, 1, b"").await.unwrap_err();
        assert!(err.is_handshake(), "{err}");
    }

    #[test]
    fn new_tokens_are_long_hex_and_differ() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn token_comparison() {
        assert!(bool::from(tokens_match(b"abc", b"abc")));
        assert!(!bool::from(tokens_match(b"abc", b"abd")));
        assert!(!bool::from(tokens_match(b"abc", b"abc\0")));
        assert!(!bool::from(tokens_match(b"abc\0", b"abc")));
        assert!(!bool::from(tokens_match(b"", b"x")));
        assert!(bool::from(tokens_match(b"", b"")));
    }
}
