//! A global allocator that counts, so a campaign can tell how much one input made a parser
//! allocate: a length field believed before its bytes arrived shows up here as a huge peak.
//!
//! A program that runs campaigns installs it:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: funcx_fuzz::alloc::Counting = funcx_fuzz::alloc::Counting;
//! # fn main() {}
//! ```

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// Per thread, so that campaigns on parallel test threads do not measure each other. Const
// initialised and without a destructor: reading them never allocates, which an allocator
// must not do. Memory freed by another thread than its allocator's lowers that thread's
// count, so the counts are signed.
thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting live bytes and their peak.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

fn grew(size: usize) {
    // `try_with`: the counters may be gone while a thread exits; its frees go uncounted.
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(size as isize);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(size as isize)));
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

/// Starts a measurement on this thread: the peak is reset to what is live now.
pub fn start() -> isize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(live));
    live
}

/// How far above `baseline` (from [`start`]) this thread's live bytes went since.
pub fn peak_above(baseline: isize) -> usize {
    usize::try_from(PEAK.with(Cell::get).wrapping_sub(baseline)).unwrap_or(0)
}

/// Whether [`Counting`] is the global allocator of this program (a campaign refuses to
/// claim bounded allocation when nothing counts it).
pub fn is_installed() -> bool {
    let before = start();
    let probe = std::hint::black_box(vec![0u8; 4096]);
    let counted = peak_above(before) >= 4096;
    drop(probe);
    counted
}
