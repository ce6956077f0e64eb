//! The binary's global allocator: the system's (musl's, in the static build) with a small cache of
//! large blocks in front of it.
//!
//! musl maps every block above ~128 KiB on its own and unmaps it when freed, so a buffer of that
//! size freed and allocated again costs an `mmap`, a page fault per 4 KiB touched and an `munmap`
//! (with a TLB flush on every core) each time. hyper's connection read buffer (up to ~400 KiB) is
//! such a block: while a request body's chunk split from it is still held, hyper reads the next
//! bytes into a fresh one, and the old one is freed when the chunk is dropped (~2.5 times per
//! 8 MiB tus `PATCH`, measured with `gdb` on `munmap`). [`BlockCache`] keeps up to [`SLOTS`]
//! freed blocks of [`MIN`]..=[`MAX`] bytes and hands one back to the next allocation of exactly
//! the same size (in whole pages) and alignment. Once blocks wait there, [`arm_trimmer`] (called
//! when a response is done, and by the upload buffer pool when it lets its buffers go) starts
//! one task that frees each block once it waited [`IDLE`], so an idle daemon holds none and
//! wakes up for nothing.

// An allocator is unsafe code by nature: raw pointers in and out.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Smallest block kept.
pub const MIN: usize = 256 * 1024;
/// Largest block kept.
pub const MAX: usize = 1024 * 1024;
/// Blocks kept at most (at most 4 MiB).
pub const SLOTS: usize = 4;

/// Cached blocks are freed once they waited this long.
pub const IDLE: Duration = Duration::from_secs(2);

/// See the module docs.
pub struct BlockCache;

struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    freed: Instant,
}

// SAFETY: a cached block is owned by the cache alone (its user freed it); moving the pointer
// between threads is what any allocator does.
unsafe impl Send for Block {}

/// `std`'s mutex allocates nothing (a futex word), so it may be taken inside the allocator.
static CACHE: Mutex<[Option<Block>; SLOTS]> = Mutex::new([const { None }; SLOTS]);
/// Blocks in the cache now (read without the lock).
static CACHED: AtomicUsize = AtomicUsize::new(0);

fn cacheable(layout: &Layout) -> bool {
    (MIN..=MAX).contains(&layout.size())
}

/// The block actually allocated for a cacheable `layout`: its size rounded up to whole pages
/// (musl maps whole pages anyway), so that requests a few bytes apart (hyper asks for the bytes
/// it holds plus its next read) share blocks.
fn block_layout(layout: &Layout) -> Layout {
    let size = layout.size().div_ceil(PAGE) * PAGE;
    Layout::from_size_align(size, layout.align()).unwrap_or(*layout)
}

const PAGE: usize = 4096;

fn lock() -> std::sync::MutexGuard<'static, [Option<Block>; SLOTS]> {
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cached block of exactly `layout`, if there is one.
fn take(layout: &Layout) -> Option<*mut u8> {
    if CACHED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut cache = lock();
    let slot =
        cache.iter_mut().find(|s| s.as_ref().is_some_and(|b| b.size == layout.size() && b.align == layout.align()))?;
    let block = slot.take()?;
    CACHED.fetch_sub(1, Ordering::Relaxed);
    Some(block.ptr)
}

/// Keeps `ptr`, in place of the block that waited longest when every slot is taken; returns
/// the block pushed out, to be freed by the caller outside the lock.
fn keep(ptr: *mut u8, layout: &Layout) -> Option<Block> {
    let block = Block { ptr, size: layout.size(), align: layout.align(), freed: Instant::now() };
    let mut cache = lock();
    if let Some(slot) = cache.iter_mut().find(|s| s.is_none()) {
        *slot = Some(block);
        CACHED.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let oldest = cache.iter_mut().min_by_key(|s| s.as_ref().map(|b| b.freed))?;
    oldest.replace(block)
}

/// Frees the cached blocks that waited at least `idle`; returns how many are left.
pub fn trim(idle: Duration) -> usize {
    if CACHED.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let mut freed = Vec::<Block>::new();
    let left = {
        let mut cache = lock();
        for slot in cache.iter_mut() {
            if slot.as_ref().is_some_and(|b| b.freed.elapsed() >= idle) {
                freed.extend(slot.take());
            }
        }
        CACHED.fetch_sub(freed.len(), Ordering::Relaxed);
        cache.iter().filter(|s| s.is_some()).count()
    };
    for b in freed {
        // SAFETY: the block came from `System` with this layout and nobody else holds it.
        unsafe { System.dealloc(b.ptr, Layout::from_size_align_unchecked(b.size, b.align)) };
    }
    left
}

/// Blocks in the cache now.
pub fn cached() -> usize {
    CACHED.load(Ordering::Relaxed)
}

/// A trimmer task is running.
static TRIMMING: AtomicBool = AtomicBool::new(false);

/// Starts, on the current tokio runtime, the task that frees cached blocks once they waited
/// [`IDLE`], unless the cache is empty or the task already runs. Called from async code, never
/// from the allocator (spawning allocates).
pub fn arm_trimmer() {
    if cached() == 0 || TRIMMING.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        TRIMMING.store(false, Ordering::Release);
        return;
    };
    rt.spawn(async {
        loop {
            tokio::time::sleep(IDLE).await;
            if trim(IDLE) > 0 {
                continue;
            }
            TRIMMING.store(false, Ordering::Release);
            // A block cached after the trim, whose request saw the task still running.
            if cached() == 0 || TRIMMING.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    });
}

// SAFETY: every block handed out is either fresh from `System` or one that was allocated from
// `System` with exactly the same layout and freed by its user; blocks are freed to `System` with
// the layout they were allocated with.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cacheable(&layout) {
            let block = block_layout(&layout);
            return take(&block).unwrap_or_else(|| System.alloc(block));
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cacheable(&layout) {
            return System.alloc_zeroed(block_layout(&layout));
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if cacheable(&layout) {
            if let Some(out) = keep(ptr, &block_layout(&layout)) {
                System.dealloc(out.ptr, Layout::from_size_align_unchecked(out.size, out.align));
            }
            return;
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        if !cacheable(&layout) && !cacheable(&new) {
            // musl grows a mapped block in place (`mremap`): keep that.
            return System.realloc(ptr, layout, new_size);
        }
        let fresh = self.alloc(new);
        if !fresh.is_null() {
            std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache is global: one test drives it from start to end.
    #[test]
    fn a_freed_large_block_is_handed_out_again_and_trimmed_when_idle() {
        let a = BlockCache;
        let layout = Layout::from_size_align(400 * 1024, 8).unwrap();
        let other = Layout::from_size_align(300 * 1024, 8).unwrap();
        let small = Layout::from_size_align(64 * 1024, 8).unwrap();
        // SAFETY: every block is used within its layout and freed once, with its layout.
        unsafe {
            trim(Duration::ZERO);
            let p = a.alloc(layout);
            p.write_bytes(7, layout.size());
            a.dealloc(p, layout);
            assert_eq!(cached(), 1);
            // A different size does not get it; the same size does.
            let q = a.alloc(other);
            assert_ne!(q, p);
            let r = a.alloc(layout);
            assert_eq!(r, p, "the freed block is reused");
            assert_eq!(cached(), 0);
            a.dealloc(q, other);
            // Small blocks never wait in the cache.
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert_eq!(cached(), 1);
            // Never more than SLOTS: the block that waited longest makes room.
            let many: Vec<*mut u8> = (0..SLOTS + 2).map(|_| a.alloc(layout)).collect();
            for m in &many {
                a.dealloc(*m, layout);
            }
            assert_eq!(cached(), SLOTS);
            a.dealloc(r, layout);
            assert_eq!(cached(), SLOTS);
            let kept: Vec<*mut u8> = (0..SLOTS).map(|_| a.alloc(layout)).collect();
            assert!(kept.contains(&r), "the block freed last is kept");
            assert!(!kept.contains(&many[0]), "the block that waited longest was freed");
            for k in kept {
                a.dealloc(k, layout);
            }
            // Sizes within one page share blocks.
            let near = Layout::from_size_align(400 * 1024 - 100, 8).unwrap();
            let n = a.alloc(near);
            assert_eq!(cached(), SLOTS - 1);
            a.dealloc(n, near);
            // Growing a cached-size block keeps its bytes.
            let g = a.alloc(layout);
            g.write_bytes(9, layout.size());
            let g2 = a.realloc(g, layout, 600 * 1024);
            assert_eq!(*g2.add(layout.size() - 1), 9);
            a.dealloc(g2, Layout::from_size_align(600 * 1024, 8).unwrap());
            // Nothing younger than the idle time is freed; everything older is.
            assert_eq!(trim(Duration::from_secs(3600)), SLOTS);
            assert_eq!(trim(Duration::ZERO), 0);
            assert_eq!(cached(), 0);
        }
    }
}
