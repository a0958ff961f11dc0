//! [`BufferPool`]: receive buffers for large frames, used again instead of allocated afresh.
//!
//! A reader that gets a 16 MiB frame (a large argument or result) reads it into one
//! allocation, and the payloads decoded from it share that memory instead of being copied
//! out. A fresh allocation of that size is new pages, which the kernel maps and zeroes one
//! by one as the frame is read into them: 4,096 page faults per 16 MiB, a few milliseconds
//! of a core for every large frame on every hop. A pool keeps the buffers of frames that are
//! done with (every payload shared out of them dropped) and reads the next large frame into
//! one of them, whose pages are already there.
//!
//! ```text
//!  reader ── take(len) ──▶ Vec<u8> ── frame read into it ── share ──▶ Bytes (payloads point into it)
//!    ▲                                                                  │ last one dropped
//!    └──────────────────────────── kept (up to the pool's bound) ◀──────┘
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Frames of at least this many bytes are read into a pooled buffer; smaller ones go
/// through a reader's ordinary buffer, where many of them share one allocation.
pub const POOLED_FRAME_MIN: usize = 1024 * 1024;

/// Buffers are allocated in multiples of this, so that frames whose sizes differ by a few
/// bytes (a result's header, a task number) fit each other's buffers.
const SIZE_STEP: usize = 1024 * 1024;

/// Buffers for large frames, given back when the last [`Bytes`] shared out of them is
/// dropped, and kept up to a bound for the next ones. Cheap to clone (the clones share the
/// buffers); safe to use from any thread.
#[derive(Clone)]
pub struct BufferPool {
    free: Arc<Mutex<Free>>,
}

/// The buffers waiting to be used again.
struct Free {
    buffers: Vec<Vec<u8>>,
    /// The capacity of `buffers`, together.
    bytes: usize,
    /// The most `bytes` may be: a buffer given back past it is freed.
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` bytes of buffers between frames (the buffers in use
    /// are not counted: a reader is never refused one).
    pub fn new(keep: usize) -> BufferPool {
        BufferPool {
            free: Arc::new(Mutex::new(Free {
                buffers: Vec::new(),
                bytes: 0,
                keep,
            })),
        }
    }

    /// An empty buffer with room for at least `len` bytes: the smallest kept one that has
    /// it, or a new one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let best = free
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, buffer)| buffer.capacity() >= len)
            .min_by_key(|(_, buffer)| buffer.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let buffer = free.buffers.swap_remove(i);
            free.bytes -= buffer.capacity();
            return buffer;
        }
        drop(free);
        Vec::with_capacity(len.div_ceil(SIZE_STEP).saturating_mul(SIZE_STEP).max(len))
    }

    /// `buffer`'s bytes, shared: the buffer comes back to this pool when the last clone or
    /// slice of them is dropped (or is freed, when the pool is gone or full).
    pub fn share(&self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buffer,
            pool: Arc::downgrade(&self.free),
        })
    }

    /// The bytes of buffers kept for use again.
    pub fn kept(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    /// Reads the rest of a frame of `len` bytes, whose first bytes are in `start` (they
    /// are moved out of it), into a buffer of this pool, and shares it; `Ok(None)` when the
    /// stream ends before the frame does.
    ///
    /// Not cancel safe: a read dropped half way loses what it read. Readers that must stay
    /// cancel safe use [`PooledFrame`] instead.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        start: &mut BytesMut,
        len: usize,
    ) -> std::io::Result<Option<Bytes>> {
        let mut frame = PooledFrame::start(self, start, len);
        loop {
            if frame.read_from(rd).await? == 0 {
                return Ok(None);
            }
            if frame.is_complete() {
                return Ok(Some(frame.finish(self)));
            }
        }
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("BufferPool")
            .field("buffers", &free.buffers.len())
            .field("bytes", &free.bytes)
            .field("keep", &free.keep)
            .finish()
    }
}

/// A pooled buffer while it is shared: gives it back on drop.
struct Lent {
    buffer: Vec<u8>,
    pool: Weak<Mutex<Free>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut free = pool.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = self.buffer.capacity();
        if free.bytes + capacity <= free.keep {
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.clear();
            free.bytes += capacity;
            free.buffers.push(buffer);
        }
    }
}

/// A large frame being read into a pooled buffer, one read at a time: a reader that waits
/// on other things between reads (cancellation, its receiver) keeps it across them.
#[derive(Debug)]
pub struct PooledFrame {
    buffer: Vec<u8>,
    len: usize,
}

impl PooledFrame {
    /// Starts a frame of `len` bytes whose first bytes (at most `len`) are in `start`: they
    /// are moved into a buffer of `pool`, leaving `start` empty.
    pub fn start(pool: &BufferPool, start: &mut BytesMut, len: usize) -> PooledFrame {
        let mut buffer = pool.take(len);
        buffer.extend_from_slice(&start[..start.len().min(len)]);
        start.clear();
        PooledFrame { buffer, len }
    }

    /// Reads more of the frame, never past its end; the bytes read, 0 at the end of the
    /// stream.
    pub async fn read_from<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<usize> {
        let missing = self.len - self.buffer.len();
        rd.read_buf(&mut (&mut self.buffer).limit(missing)).await
    }

    /// Whether all of the frame is in.
    pub fn is_complete(&self) -> bool {
        self.buffer.len() == self.len
    }

    /// The bytes of the frame received so far.
    pub fn received(&self) -> usize {
        self.buffer.len()
    }

    /// The whole frame, shared: its buffer goes back to `pool` once it is dropped.
    pub fn finish(self, pool: &BufferPool) -> Bytes {
        pool.share(self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_when_its_last_share_is_dropped() {
        let pool = BufferPool::new(64 << 20);
        let mut buffer = pool.take(3 << 20);
        let address = buffer.as_ptr();
        buffer.extend_from_slice(&[7; 3 << 20]);
        let frame = pool.share(buffer);
        let payload = frame.slice(16..);
        drop(frame);
        assert_eq!(pool.kept(), 0, "a slice of it is still alive");
        assert!(payload.iter().all(|&b| b == 7));
        drop(payload);
        assert_eq!(pool.kept(), 3 << 20);
        // The next frame of a similar size is read into the same memory.
        let again = pool.take((3 << 20) - 100);
        assert_eq!(again.as_ptr(), address);
        assert!(again.is_empty());
        assert_eq!(pool.kept(), 0);
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_taken() {
        let pool = BufferPool::new(64 << 20);
        let small = pool.take(2 << 20);
        let large = pool.take(8 << 20);
        let (small_at, large_at) = (small.as_ptr(), large.as_ptr());
        drop((pool.share(large), pool.share(small)));
        let (fits_small, fits_large) = (pool.take(1 << 20), pool.take(3 << 20));
        assert_eq!(fits_small.as_ptr(), small_at);
        assert_eq!(fits_large.as_ptr(), large_at);
        // None left that fits: a new one.
        assert!(pool.take(3 << 20).capacity() >= 3 << 20);
    }

    #[test]
    fn buffers_past_the_bound_are_freed_and_a_dropped_pool_frees_them_all() {
        let pool = BufferPool::new(5 << 20);
        let shared: Vec<Bytes> = (0..3).map(|_| pool.share(pool.take(2 << 20))).collect();
        drop(shared);
        assert_eq!(
            pool.kept(),
            4 << 20,
            "two of 2 MiB fit under 5 MiB, not three"
        );
        let outliving = pool.share(pool.take(2 << 20));
        drop(pool);
        drop(outliving);
    }

    #[tokio::test]
    async fn a_frame_is_read_into_one_buffer_and_nothing_after_it() {
        let pool = BufferPool::new(64 << 20);
        let frame: Vec<u8> = (0..(2 << 20) + 5).map(|i| i as u8).collect();
        let mut stream = frame.clone();
        stream.extend_from_slice(b"next frame");
        let mut start = BytesMut::from(&stream[..1000]);
        let mut rd = &stream[1000..];
        let read = pool
            .read_frame(&mut rd, &mut start, frame.len())
            .await
            .unwrap()
            .expect("the whole frame is there");
        assert_eq!(read, frame);
        assert!(start.is_empty());
        assert_eq!(rd, b"next frame", "the bytes after the frame stay unread");
        let mut cut = &stream[1000..2000];
        let mut start = BytesMut::from(&stream[..1000]);
        assert!(pool
            .read_frame(&mut cut, &mut start, frame.len())
            .await
            .unwrap()
            .is_none());
    }
}
