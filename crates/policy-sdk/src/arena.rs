//! The global allocator of `no_std` policies: a bump allocator over a
//! static arena, then over pages from `memory.grow` when the arena is
//! used up. Nothing is freed except the latest allocation (which lets a
//! growing `Vec` or `String` stay in place): a policy instance serves one
//! evaluation and is then thrown away whole.
//!
//! The arena lives in `.bss`, inside the module's initial memory, so a
//! typical evaluation never grows memory: growing costs the host a system
//! call, and is what made allocation the largest part of an evaluation.
//! It is no larger than a typical evaluation needs, because the host
//! resets the whole initial memory after every evaluation, and the reset
//! costs more the larger the memory is.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of the static arena.
const ARENA: usize = 64 << 10;
/// Pages (64 KiB) grown at a time once the arena is full.
const GROW_PAGES: usize = 16;
const PAGE: usize = 65536;

#[repr(C, align(16))]
struct Space(UnsafeCell<[u8; ARENA]>);

// SAFETY: policies run single-threaded (wasm32 without threads).
unsafe impl Sync for Space {}

static SPACE: Space = Space(UnsafeCell::new([0; ARENA]));

/// A bump allocator; see the module documentation.
pub struct Arena {
    next: AtomicUsize,
    end: AtomicUsize,
}

impl Arena {
    /// An arena that starts with the static space.
    pub const fn new() -> Self {
        Self {
            next: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }

    fn bounds(&self) -> (usize, usize) {
        let end = self.end.load(Ordering::Relaxed);
        if end != 0 {
            return (self.next.load(Ordering::Relaxed), end);
        }
        let start = SPACE.0.get() as usize;
        (start, start + ARENA)
    }

    /// Carves `size` bytes aligned to `align`, growing memory if needed.
    fn carve(&self, size: usize, align: usize) -> *mut u8 {
        let (mut next, mut end) = self.bounds();
        let mut start = next.next_multiple_of(align);
        if start.checked_add(size).is_none_or(|stop| stop > end) {
            let pages = size.div_ceil(PAGE).saturating_add(1).max(GROW_PAGES);
            let previous = core::arch::wasm32::memory_grow(0, pages);
            if previous == usize::MAX {
                return core::ptr::null_mut();
            }
            let grown = previous * PAGE;
            if grown != end {
                next = grown;
            }
            end = grown + pages * PAGE;
            start = next.next_multiple_of(align);
        }
        self.next.store(start + size, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        start as *mut u8
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every pointer handed out is to memory no other allocation
// overlaps, aligned as asked, and stays valid until the instance dies.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.carve(layout.size(), layout.align())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize + layout.size() == self.next.load(Ordering::Relaxed) {
            self.next.store(ptr as usize, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (next, end) = self.bounds();
        let last = ptr as usize + layout.size() == next;
        if last && ptr as usize + new_size <= end {
            self.next.store(ptr as usize + new_size, Ordering::Relaxed);
            return ptr;
        }
        let moved = self.carve(new_size, layout.align());
        if !moved.is_null() {
            // SAFETY: both regions are live, distinct and at least
            // `min(old, new)` bytes long.
            unsafe { core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size)) };
        }
        moved
    }
}
