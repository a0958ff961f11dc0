//! [`Connection`]: a typed, two-way message channel to one peer, whatever carries it.
//!
//! Over a byte stream (TCP, TLS) a connection is two tasks:
//!
//! ```text
//!  Sender::send ──▶ unbounded queue ──▶ writer task ── one write per batch ──▶ socket
//!  Receiver::recv ◀── bounded queue ◀── reader task ◀── frames ◀──────────────── socket
//! ```
//!
//! The writer takes everything that is queued (up to a byte budget), encodes it into one
//! buffer, large payloads left where they are ([`Outgoing`]), and writes it with one
//! vectored call, then flushes once the queue is empty: many small messages cost one system
//! call, and a message sent to an idle connection leaves at once.
//! The reader decodes frames as they arrive and hands them over (a frame of 1 MiB or more is
//! read into a buffer of the transport's [`BufferPool`], used again once the payloads decoded
//! from it are dropped); the bounded queue between it and [`Receiver::recv`] makes a slow
//! receiver slow the peer down (through TCP) instead of buffering without end.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::frame::{self, FrameCodec, Limits};
use crate::outgoing::Outgoing;
use crate::pool::{BufferPool, PooledFrame, POOLED_FRAME_MIN};
use crate::TransportError;

/// How many bytes of encoded messages (payloads included) the writer gathers before it
/// writes them.
const WRITE_BUDGET: usize = 4 * 1024 * 1024;
/// The writer's buffer is given back to the allocator when a large message grew it past this
/// (large payloads are not copied into it; see [`Outgoing`]).
const WRITE_BUFFER_KEEP: usize = 2 * WRITE_BUDGET;
/// How much room the reader makes in its buffer before each read.
const READ_CHUNK: usize = 64 * 1024;
/// How many decoded messages may wait between the reader task and [`Receiver::recv`].
const RECEIVE_QUEUE: usize = 256;
/// How long a connection whose halves are both dropped keeps reading (and discarding) after
/// its last byte is written, waiting for the peer to close. Closing a socket with unread data
/// makes the kernel send a reset, which can destroy the tail of what we sent before the peer
/// read it.
const LINGER: Duration = Duration::from_secs(2);

/// Who is at the other end of a connection.
///
/// Its `Display` is what logs and errors show: `127.0.0.1:41234`, `127.0.0.1:41234 (tls)`,
/// or `in-memory peer #3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    kind: PeerKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PeerKind {
    Tcp(SocketAddr),
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls(SocketAddr),
    Memory(u64),
}

impl Peer {
    pub(crate) fn tcp(addr: SocketAddr) -> Self {
        Peer {
            kind: PeerKind::Tcp(addr),
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(addr: SocketAddr) -> Self {
        Peer {
            kind: PeerKind::Tls(addr),
        }
    }

    pub(crate) fn next_memory() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Peer {
            kind: PeerKind::Memory(NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// The peer's network address; `None` for an in-memory peer.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.kind {
            PeerKind::Tcp(addr) | PeerKind::Tls(addr) => Some(addr),
            PeerKind::Memory(_) => None,
        }
    }

    /// Whether the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, PeerKind::Tls(_))
    }

    /// Whether the peer lives in this process (an in-memory connection).
    pub fn is_memory(&self) -> bool {
        matches!(self.kind, PeerKind::Memory(_))
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PeerKind::Tcp(addr) => write!(f, "{addr}"),
            PeerKind::Tls(addr) => write!(f, "{addr} (tls)"),
            PeerKind::Memory(n) => write!(f, "in-memory peer #{n}"),
        }
    }
}

/// The sending half of a [`Connection`]: cheap to clone, never blocks.
///
/// Messages are queued without limit and leave in the order they were sent (per connection,
/// across all clones). The connection stays open for sending while any clone is alive;
/// when the last one is dropped, what is queued is still written, then the stream is shut
/// down for writing so that the peer's [`Receiver::recv`] returns `None`.
pub struct Sender<S> {
    tx: mpsc::UnboundedSender<S>,
    peer: Peer,
    max_message_size: usize,
}

impl<S> Clone for Sender<S> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            peer: self.peer,
            max_message_size: self.max_message_size,
        }
    }
}

impl<S> Sender<S> {
    /// Queues `msg` for the peer.
    ///
    /// Fails only when the connection is closed ([`TransportError::is_closed`]); the message
    /// is then dropped. Success means queued, not delivered: a connection that breaks later
    /// reports that on its [`Receiver`].
    pub fn send(&self, msg: S) -> Result<(), TransportError> {
        self.tx
            .send(msg)
            .map_err(|_| TransportError::closed().with_peer(self.peer.addr()))
    }

    /// Whether the connection is closed for sending.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the connection is closed for sending.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Who the messages go to.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The largest message, in encoded bytes, this connection can carry: a sender that
    /// might exceed it splits its message first (`usize::MAX` in memory, where nothing is
    /// encoded).
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }
}

impl<S> fmt::Debug for Sender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("peer", &self.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The receiving half of a [`Connection`].
pub struct Receiver<R> {
    inner: ReceiverInner<R>,
    peer: Peer,
}

enum ReceiverInner<R> {
    Memory(mpsc::UnboundedReceiver<R>),
    Stream(mpsc::Receiver<Result<R, TransportError>>),
}

impl<R> Receiver<R> {
    /// The next message from the peer.
    ///
    /// Returns `None` once the peer has closed the connection cleanly (after every message it
    /// sent). A broken connection yields one `Some(Err(_))`, then `None`: a frame too large
    /// ([`TransportError::is_frame_too_large`]), bytes that do not decode as `R` or a stream
    /// cut in the middle of a frame ([`TransportError::is_decode`]), or an I/O failure. The
    /// connection is closed in both directions after such an error.
    ///
    /// Cancel safe: a message is never lost when `recv` is dropped before it returns (for
    /// example in `tokio::select!`).
    pub async fn recv(&mut self) -> Option<Result<R, TransportError>> {
        match &mut self.inner {
            ReceiverInner::Memory(rx) => rx.recv().await.map(Ok),
            ReceiverInner::Stream(rx) => rx.recv().await,
        }
    }

    /// Who the messages come from.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl<R> fmt::Debug for Receiver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A two-way connection to one peer: it sends `S` and receives `R`.
///
/// Made by [`TcpTransport::dial`](crate::TcpTransport::dial),
/// [`TcpAcceptor::accept`](crate::TcpAcceptor::accept) or the [`memory`](crate::memory)
/// transport; the type is the same for all, so code written against it runs in-process in
/// tests and over the network in production. [`split`](Connection::split) it to send and
/// receive from different tasks.
///
/// Dropping both halves closes the connection gracefully: what is queued is written, the
/// peer's receiver sees the end of the stream after the last message, and the socket is closed
/// once the peer closes its side too (at most 2 seconds later), so that nothing the peer
/// has not read yet is lost to a TCP reset.
pub struct Connection<S, R> {
    sender: Sender<S>,
    receiver: Receiver<R>,
}

impl<S, R> Connection<S, R> {
    pub(crate) fn from_parts(sender: Sender<S>, receiver: Receiver<R>) -> Self {
        Connection { sender, receiver }
    }

    /// Queues `msg` for the peer; see [`Sender::send`].
    pub fn send(&self, msg: S) -> Result<(), TransportError> {
        self.sender.send(msg)
    }

    /// The next message from the peer; see [`Receiver::recv`].
    pub async fn recv(&mut self) -> Option<Result<R, TransportError>> {
        self.receiver.recv().await
    }

    /// Who is at the other end.
    pub fn peer(&self) -> &Peer {
        &self.sender.peer
    }

    /// The largest message this connection carries; see [`Sender::max_message_size`].
    pub fn max_message_size(&self) -> usize {
        self.sender.max_message_size
    }

    /// Another handle to the sending half.
    pub fn sender(&self) -> Sender<S> {
        self.sender.clone()
    }

    /// Splits the connection into its sending and receiving halves.
    pub fn split(self) -> (Sender<S>, Receiver<R>) {
        (self.sender, self.receiver)
    }
}

impl<S, R> fmt::Debug for Connection<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.sender.peer)
            .finish_non_exhaustive()
    }
}

/// The two ends of an in-memory connection: values move as they are, nothing is encoded.
pub(crate) fn memory_pair<A, B>() -> (Connection<A, B>, Connection<B, A>) {
    let (a_tx, a_rx) = mpsc::unbounded_channel();
    let (b_tx, b_rx) = mpsc::unbounded_channel();
    let (peer_of_first, peer_of_second) = (Peer::next_memory(), Peer::next_memory());
    let first = Connection::from_parts(
        Sender {
            tx: a_tx,
            peer: peer_of_first,
            max_message_size: usize::MAX,
        },
        Receiver {
            inner: ReceiverInner::Memory(b_rx),
            peer: peer_of_first,
        },
    );
    let second = Connection::from_parts(
        Sender {
            tx: b_tx,
            peer: peer_of_second,
            max_message_size: usize::MAX,
        },
        Receiver {
            inner: ReceiverInner::Memory(a_rx),
            peer: peer_of_second,
        },
    );
    (first, second)
}

/// State the reader and writer tasks of one stream connection share.
struct Shared {
    /// Cancelled when either task hits an error: the other one stops too.
    cancel: CancellationToken,
    /// Why the writer stopped, for the reader to deliver to the [`Receiver`].
    writer_error: Mutex<Option<TransportError>>,
    /// When the writer finished cleanly (every sender dropped, everything written).
    writer_done_at: OnceLock<Instant>,
    writer_done: CancellationToken,
    peer: Peer,
    /// Where the reader takes buffers for large frames (shared with the transport's other
    /// connections).
    pool: BufferPool,
}

/// Starts the reader and writer tasks of a connection over a byte stream whose handshake is
/// done. Must be called within a Tokio runtime.
pub(crate) fn spawn_stream<S, R, Rd, Wr>(
    rd: Rd,
    wr: Wr,
    peer: Peer,
    limits: Limits,
    pool: BufferPool,
) -> Connection<S, R>
where
    S: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
    Rd: AsyncRead + Unpin + Send + 'static,
    Wr: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(RECEIVE_QUEUE);
    let shared = Arc::new(Shared {
        cancel: CancellationToken::new(),
        writer_error: Mutex::new(None),
        writer_done_at: OnceLock::new(),
        writer_done: CancellationToken::new(),
        peer,
        pool,
    });
    tokio::spawn(write_loop(out_rx, wr, limits, shared.clone()));
    tokio::spawn(read_loop(rd, in_tx, limits, shared));
    Connection::from_parts(
        Sender {
            tx: out_tx,
            peer,
            max_message_size: limits.max_message_size,
        },
        Receiver {
            inner: ReceiverInner::Stream(in_rx),
            peer,
        },
    )
}

async fn write_loop<S, Wr>(
    queue: mpsc::UnboundedReceiver<S>,
    wr: Wr,
    limits: Limits,
    shared: Arc<Shared>,
) where
    S: Serialize,
    Wr: AsyncWrite + Unpin,
{
    let result = write_frames(queue, wr, limits, &shared).await;
    let _ = shared.writer_done_at.set(Instant::now());
    shared.writer_done.cancel();
    if let Err(e) = result {
        let e = e.with_peer(shared.peer.addr());
        tracing::warn!(peer = %shared.peer, error = %e, "closing the connection: sending failed");
        if let Ok(mut slot) = shared.writer_error.lock() {
            *slot = Some(e);
        }
        shared.cancel.cancel();
    }
}

async fn write_frames<S, Wr>(
    mut queue: mpsc::UnboundedReceiver<S>,
    mut wr: Wr,
    limits: Limits,
    shared: &Shared,
) -> Result<(), TransportError>
where
    S: Serialize,
    Wr: AsyncWrite + Unpin,
{
    let cancel = &shared.cancel;
    let codec = FrameCodec::<S>::with_limits(limits);
    let mut out = Outgoing::with_capacity(READ_CHUNK);
    let mut open = true;
    let mut failed = None;
    loop {
        // Gather everything queued, up to the budget.
        while open && failed.is_none() && out.len() < WRITE_BUDGET {
            match queue.try_recv() {
                Ok(msg) => failed = out.push(&codec, &msg).err(),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if !out.is_empty() {
            // Small messages and large payloads leave in one vectored write.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                written = wr.write_all_buf(&mut out) => written?,
            }
            out.reclaim(READ_CHUNK, WRITE_BUFFER_KEEP);
        }
        if let Some(e) = failed {
            // What was queued before the bad message has been written.
            return Err(e);
        }
        if !open {
            // Every sender is gone and everything is written: tell the peer we are done.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = wr.shutdown() => {}
            }
            return Ok(());
        }
        if !queue.is_empty() {
            continue;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            flushed = wr.flush() => flushed?,
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            msg = queue.recv() => match msg {
                Some(msg) => failed = out.push(&codec, &msg).err(),
                None => open = false,
            },
        }
    }
}

async fn read_loop<R, Rd>(
    mut rd: Rd,
    tx: mpsc::Sender<Result<R, TransportError>>,
    limits: Limits,
    shared: Arc<Shared>,
) where
    R: DeserializeOwned,
    Rd: AsyncRead + Unpin,
{
    let cancel = &shared.cancel;
    let peer = &shared.peer;
    let pool = &shared.pool;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut codec = FrameCodec::<R>::with_limits(limits);
    // A large frame being read into a buffer of the pool, then once it is all in.
    let mut large: Option<PooledFrame> = None;
    let mut complete: Option<Bytes> = None;
    // Once the receiver is gone, what arrives is read and thrown away (see LINGER).
    let mut discarding = false;
    loop {
        if discarding {
            buf.clear();
            large = None;
            complete = None;
        }
        // Hand over every complete frame that is buffered.
        while !discarding && large.is_none() {
            let decoded = match complete.take() {
                Some(frame) => codec.decode_frame(&frame).map(Some),
                None => codec.decode(&mut buf),
            };
            let decoded = match decoded {
                Ok(Some(msg)) => Ok(msg),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            match decoded {
                Ok(msg) => {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return deliver_writer_error(&tx, &shared).await,
                        sent = tx.send(Ok(msg)) => if sent.is_err() {
                            // The receiver is gone: nobody wants what we read.
                            discarding = true;
                        },
                    }
                }
                Err(e) => return fail(&tx, &shared, e, "received a bad frame").await,
            }
        }
        if large.is_none() && !discarding {
            // A large frame goes into a buffer of the pool, whose pages are already there.
            if let Some(len) = codec.unfinished_frame(&buf, POOLED_FRAME_MIN) {
                large = Some(PooledFrame::start(pool, &mut buf, len));
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return deliver_writer_error(&tx, &shared).await,
            _ = tx.closed(), if !discarding => discarding = true,
            _ = linger(&shared), if discarding => return,
            read = read_more(&mut rd, &mut buf, large.as_mut()) => match read {
                // Discarding: the peer closed or broke, nobody is told.
                Ok(0) | Err(_) if discarding => return,
                Ok(0) if large.is_some() => {
                    let received = large.as_ref().map_or(0, PooledFrame::received);
                    let e = TransportError::decode(format!(
                        "the stream ended in the middle of a frame ({received} bytes of it received)"
                    ));
                    fail(&tx, &shared, e, "the stream ended inside a frame").await;
                    return;
                }
                Ok(0) if codec.is_partial() => {
                    let e = TransportError::decode("the stream ended between the fragments of a message");
                    fail(&tx, &shared, e, "the stream ended inside a message").await;
                    return;
                }
                Ok(0) => {
                    match frame::check_eof(&buf) {
                        Ok(()) => tracing::debug!(peer = %peer, "the peer closed the connection"),
                        Err(e) => fail(&tx, &shared, e, "the stream ended inside a frame").await,
                    }
                    return;
                }
                Ok(_) => {
                    if large.as_ref().is_some_and(PooledFrame::is_complete) {
                        complete = large.take().map(|frame| frame.finish(pool));
                    }
                }
                Err(e) => return fail(&tx, &shared, TransportError::io(e), "receiving failed").await,
            }
        }
    }
}

/// Reads more of the large frame being read, or else into the buffer.
async fn read_more<Rd: AsyncRead + Unpin>(
    rd: &mut Rd,
    buf: &mut BytesMut,
    large: Option<&mut PooledFrame>,
) -> std::io::Result<usize> {
    match large {
        Some(frame) => frame.read_from(rd).await,
        None => rd.read_buf(buf).await,
    }
}

/// Resolves `LINGER` after the writer finished.
async fn linger(shared: &Shared) {
    shared.writer_done.cancelled().await;
    let done_at = shared
        .writer_done_at
        .get()
        .copied()
        .unwrap_or_else(Instant::now);
    tokio::time::sleep_until(done_at + LINGER).await;
}

/// Closes the connection because of `e` and tells the receiver why, once.
async fn fail<R>(
    tx: &mpsc::Sender<Result<R, TransportError>>,
    shared: &Shared,
    e: TransportError,
    what: &str,
) {
    let e = e.with_peer(shared.peer.addr());
    tracing::warn!(peer = %shared.peer, error = %e, "closing the connection: {what}");
    shared.cancel.cancel();
    let _ = tx.send(Err(e)).await;
}

async fn deliver_writer_error<R>(tx: &mpsc::Sender<Result<R, TransportError>>, shared: &Shared) {
    let e = shared
        .writer_error
        .lock()
        .ok()
        .and_then(|mut slot| slot.take());
    if let Some(e) = e {
        let _ = tx.send(Err(e)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u32),
        Text(String),
    }

    /// Counts the write calls that reach the underlying stream.
    struct CountingWriter<W> {
        inner: W,
        writes: Arc<AtomicUsize>,
    }

    impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
            if poll.is_ready() {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            poll
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    const TEST_LIMITS: Limits = Limits {
        max_frame_size: 1024 * 1024,
        max_message_size: 3 * 1024 * 1024,
    };

    fn duplex_pair(writes: Arc<AtomicUsize>) -> (Connection<Msg, Msg>, Connection<Msg, Msg>) {
        let (a, b) = tokio::io::duplex(16 * 1024 * 1024);
        let (a_rd, a_wr) = tokio::io::split(a);
        let (b_rd, b_wr) = tokio::io::split(b);
        let peer = Peer::next_memory();
        let a = spawn_stream(
            a_rd,
            CountingWriter {
                inner: a_wr,
                writes,
            },
            peer,
            TEST_LIMITS,
            BufferPool::new(TEST_LIMITS.max_message_size),
        );
        let b = spawn_stream(b_rd, b_wr, peer, TEST_LIMITS, BufferPool::new(0));
        (a, b)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queued_messages_are_coalesced_into_few_writes() {
        let writes = Arc::new(AtomicUsize::new(0));
        let (a, mut b) = duplex_pair(writes.clone());
        for i in 0..10_000 {
            a.send(Msg::Ping(i)).unwrap();
        }
        for i in 0..10_000 {
            assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Ping(i));
        }
        let writes = writes.load(Ordering::Relaxed);
        assert!(writes <= 2, "10,000 queued messages took {writes} writes");
    }

    #[tokio::test]
    async fn dropping_the_senders_ends_the_peers_stream_after_everything() {
        let (a, mut b) = duplex_pair(Arc::default());
        let extra = a.sender();
        extra.send(Msg::Text("one".into())).unwrap();
        let (tx, _rx) = a.split();
        tx.send(Msg::Text("two".into())).unwrap();
        drop((tx, extra));
        assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Text("one".into()));
        assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Text("two".into()));
        assert!(b.recv().await.is_none());
    }

    #[tokio::test]
    async fn messages_over_the_frame_size_arrive_whole_between_the_others() {
        let (a, mut b) = duplex_pair(Arc::default());
        let big = "large payload ".repeat(180_000); // 2.5 MB: three fragments
        a.send(Msg::Ping(1)).unwrap();
        a.send(Msg::Text(big.clone())).unwrap();
        a.send(Msg::Ping(2)).unwrap();
        assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Ping(1));
        assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Text(big));
        assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Ping(2));
    }

    #[tokio::test]
    async fn large_frames_are_read_into_one_pooled_buffer_used_again() {
        let limits = Limits {
            max_frame_size: 8 << 20,
            max_message_size: 8 << 20,
        };
        let (a, b) = tokio::io::duplex(1 << 20);
        let (a_rd, a_wr) = tokio::io::split(a);
        let (b_rd, b_wr) = tokio::io::split(b);
        let pool = BufferPool::new(64 << 20);
        let peer = Peer::next_memory();
        let a = spawn_stream::<Msg, Msg, _, _>(a_rd, a_wr, peer, limits, BufferPool::new(0));
        let mut b = spawn_stream::<Msg, Msg, _, _>(b_rd, b_wr, peer, limits, pool.clone());
        let big = "pooled ".repeat(500_000); // 3.5 MB: one frame
        for i in 0..3 {
            a.send(Msg::Ping(i)).unwrap();
            a.send(Msg::Text(big.clone())).unwrap();
        }
        a.send(Msg::Ping(3)).unwrap();
        for i in 0..3 {
            assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Ping(i));
            assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Text(big.clone()));
        }
        assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Ping(3));
        // Each frame's buffer was given back once the message was decoded (a `String` is
        // copied out), and the next frame was read into it: one buffer for three frames.
        assert_eq!(pool.kept(), 4 << 20);
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_large_frame_is_a_decode_error() {
        let limits = Limits {
            max_frame_size: 8 << 20,
            max_message_size: 8 << 20,
        };
        let (mut raw, b) = tokio::io::duplex(1 << 20);
        let (b_rd, b_wr) = tokio::io::split(b);
        let pool = BufferPool::new(64 << 20);
        let mut b = spawn_stream::<Msg, Msg, _, _>(b_rd, b_wr, Peer::next_memory(), limits, pool);
        raw.write_all(&(2_000_000u32).to_be_bytes()).await.unwrap();
        raw.write_all(&[0; 1_500_000]).await.unwrap();
        drop(raw);
        let err = b.recv().await.unwrap().unwrap_err();
        assert!(err.is_decode(), "{err}");
        assert!(
            err.to_string().contains("1500004 bytes of it received"),
            "{err}"
        );
        assert!(b.recv().await.is_none());
    }

    #[tokio::test]
    async fn an_unsendable_message_closes_the_connection_loudly() {
        let (a, mut b) = duplex_pair(Arc::default());
        let (tx, mut rx) = a.split();
        tx.send(Msg::Ping(1)).unwrap();
        tx.send(Msg::Text("x".repeat(4 * 1024 * 1024))).unwrap();
        // Everything before the bad message still arrives.
        assert_eq!(b.recv().await.unwrap().unwrap(), Msg::Ping(1));
        let err = rx.recv().await.unwrap().unwrap_err();
        assert!(err.is_frame_too_large(), "{err}");
        assert!(rx.recv().await.is_none());
        tx.closed().await;
        assert!(tx.send(Msg::Ping(2)).unwrap_err().is_closed());
        assert!(b.recv().await.is_none());
    }
}
