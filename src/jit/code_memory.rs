//! Executable memory for generated code: compiled programs and any small
//! stub. Handed out in whole pages and recycled, because on many systems
//! mapping, protecting and unmapping memory costs tens of microseconds,
//! more than compiling a small program.
//!
//! Pages are in one of three states: free (read+write, owned by the pool),
//! in use (read+execute, owned by an [`ExecutableCode`]), retired
//! (read+execute, no longer used, owned by the pool). Code is copied into
//! free pages, which are switched to read+execute before any of it runs;
//! retired pages are switched back to read+write, in as few calls as
//! adjacent ranges allow, only when no free run is large enough. No page is
//! ever writable and executable at once, and no page is written while code
//! may run from it (a retired page's owner has been dropped).

use std::io;
use std::sync::{Mutex, OnceLock};

/// Fresh memory is mapped this many bytes at a time (or more, for larger
/// code). Its pages are faulted in as they are first filled (populating the
/// chunk up front costs more than most processes use).
const CHUNK: usize = 256 * 1024;
/// Free and retired pages the pool keeps; past this, retired pages are
/// unmapped.
const KEEP: usize = 1024 * 1024;
/// What fills a page past the end of its code: a byte that traps when
/// executed (`int3` on x86-64; elsewhere zero words, which are permanently
/// undefined instructions on aarch64).
const TRAP_FILL: u8 = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) { 0xcc } else { 0 };

/// The size of a page: mmap and mprotect work on multiples of it.
fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).ok().filter(|size| size.is_power_of_two()).unwrap_or(4096)
    })
}

#[derive(Clone, Copy, Debug)]
struct Range {
    addr: usize,
    len: usize,
}

struct Pool {
    /// Read+write pages, ready to be filled.
    free: Vec<Range>,
    /// Read+execute pages whose code was dropped.
    retired: Vec<Range>,
    /// Bytes in `free` and `retired`.
    kept: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), retired: Vec::new(), kept: 0 });

fn lock() -> std::sync::MutexGuard<'static, Pool> {
    // The pool's lists stay consistent at every await point of a panic
    // (there is none inside the critical sections that could leave a
    // half-done change), so a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn protect(range: Range, prot: libc::c_int) -> io::Result<()> {
    // SAFETY: `range` is page-aligned memory this pool mapped and owns;
    // no code runs from it (free or retired pages, or pages being sealed
    // by their only owner).
    if unsafe { libc::mprotect(range.addr as *mut libc::c_void, range.len, prot) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn unmap(range: Range) {
    // SAFETY: the pool owns `range` (mapped by it, unused); a failure
    // leaves it mapped, which only leaks it.
    unsafe { libc::munmap(range.addr as *mut libc::c_void, range.len) };
}

/// Sorts `ranges` and merges the adjacent ones.
fn coalesce(ranges: &mut Vec<Range>) {
    ranges.sort_unstable_by_key(|range| range.addr);
    let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
    for &range in ranges.iter() {
        match merged.last_mut() {
            Some(last) if last.addr + last.len == range.addr => last.len += range.len,
            _ => merged.push(range),
        }
    }
    *ranges = merged;
}

impl Pool {
    /// The first `len` bytes of the first free range that holds them.
    fn take(&mut self, len: usize) -> Option<Range> {
        let index = self.free.iter().position(|range| range.len >= len)?;
        let range = &mut self.free[index];
        let taken = Range { addr: range.addr, len };
        if range.len == len {
            self.free.swap_remove(index);
        } else {
            range.addr += len;
            range.len -= len;
        }
        self.kept -= len;
        Some(taken)
    }

    /// Makes the retired pages writable again and frees them.
    fn recycle(&mut self) {
        coalesce(&mut self.retired);
        for range in std::mem::take(&mut self.retired) {
            if protect(range, libc::PROT_READ | libc::PROT_WRITE).is_ok() {
                self.free.push(range);
            } else {
                self.kept -= range.len;
                unmap(range);
            }
        }
        coalesce(&mut self.free);
    }

    fn allocate(&mut self, len: usize) -> io::Result<Range> {
        if let Some(range) = self.take(len) {
            return Ok(range);
        }
        if !self.retired.is_empty() {
            self.recycle();
            if let Some(range) = self.take(len) {
                return Ok(range);
            }
        }
        let size = len.max(CHUNK);
        // SAFETY: a fresh private anonymous mapping; it aliases nothing.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = addr as usize;
        if size > len {
            self.free.push(Range { addr: addr + len, len: size - len });
            self.kept += size - len;
        }
        Ok(Range { addr, len })
    }

    fn retire(&mut self, range: Range) {
        if self.kept + range.len <= KEEP {
            self.retired.push(range);
            self.kept += range.len;
        } else {
            unmap(range);
        }
    }
}

/// Machine code in pool pages that are readable and executable but never
/// writable while they hold it; returned to the pool on drop.
#[derive(Debug)]
pub(crate) struct ExecutableCode {
    pages: Range,
    len: usize,
}

impl ExecutableCode {
    /// Pages holding `bytes` at their start (then bytes that trap up to the
    /// page end), switched to read+execute, with the instruction cache made
    /// to see them.
    pub(crate) fn new(bytes: &[u8]) -> io::Result<ExecutableCode> {
        let len = bytes.len().max(1).next_multiple_of(page_size());
        let pages = lock().allocate(len)?;
        // SAFETY: the range is free, so read+write, mapped and owned by this
        // call alone; it holds `len >= bytes.len()` bytes, and `bytes` lies
        // elsewhere.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), pages.addr as *mut u8, bytes.len());
            std::ptr::write_bytes((pages.addr + bytes.len()) as *mut u8, TRAP_FILL, len - bytes.len());
        }
        if let Err(error) = protect(pages, libc::PROT_READ | libc::PROT_EXEC) {
            let mut pool = lock();
            pool.free.push(pages);
            pool.kept += pages.len;
            return Err(error);
        }
        let code = ExecutableCode { pages, len: bytes.len() };
        dynasmrt::cache_control::prepare_for_execution(code.bytes());
        Ok(code)
    }

    /// The address of the first byte of the code.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.pages.addr as *const u8
    }

    /// The code, as it was given to [`ExecutableCode::new`].
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the pages hold `len` bytes of code, readable, and stay
        // mapped and unchanged while `self` owns them.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }
}

impl Drop for ExecutableCode {
    fn drop(&mut self) {
        lock().retire(self.pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_recycles_pages_and_never_maps_them_writable_and_executable() {
        let first = ExecutableCode::new(&[0xc3; 10]).expect("maps");
        let addr = first.as_ptr();
        drop(first);
        // Some later fill reuses retired pages once the free ones run out.
        let mut seen = false;
        let mut held = Vec::new();
        // (Other tests share the pool, so allow for them.)
        while !seen && held.len() < 1024 {
            let code = ExecutableCode::new(&[0xc3; 10]).expect("maps");
            seen |= code.as_ptr() == addr;
            assert_eq!(code.bytes(), [0xc3; 10]);
            held.push(code);
        }
        assert!(seen, "retired pages are reused");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        for line in maps.lines() {
            let perms = line.split_whitespace().nth(1).unwrap_or("");
            assert!(!(perms.contains('w') && perms.contains('x')), "writable and executable: {line}");
        }
    }
}
