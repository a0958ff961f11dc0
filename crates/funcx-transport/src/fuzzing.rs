//! Entry points for the fuzz targets of `crates/funcx-fuzz` that reach private parts of the
//! transport: the handshake, both sides. (Frames are fuzzed through the public
//! [`FrameCodec`](crate::frame::FrameCodec).)
//!
//! Not a stable API; compiled with the `fuzzing` feature.

use crate::handshake;

/// The token the fuzzed handshakes expect; an input that presents it gets past the check.
pub const TOKEN: &[u8] = b"fuzz-token";

/// The version the fuzzed handshakes speak.
pub const VERSION: u16 = 1;

/// Runs the server side of the handshake on `data` as what the client sent, then the client
/// side on `data` as what the server answered; writes go nowhere.
pub fn handshake(data: &[u8]) {
    let mut io = tokio::io::join(data, tokio::io::sink());
    let _ = futures::executor::block_on(handshake::server(&mut io, VERSION, TOKEN));
    let mut io = tokio::io::join(data, tokio::io::sink());
    let _ = futures::executor::block_on(handshake::client(&mut io, VERSION, TOKEN));
}
