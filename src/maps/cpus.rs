//! The host's CPUs as per-CPU maps see them: one value per possible CPU
//! (as Linux and libbpf count them, from `/sys/devices/system/cpu/possible`),
//! in the order of the CPUs' numbers; a run uses the value of the CPU it
//! runs on.

use std::sync::OnceLock;

const POSSIBLE: &str = "/sys/devices/system/cpu/possible";

/// The numbers of the possible CPUs, ascending: from the kernel's list
/// (`0-3,8-11`), or, where it cannot be read, the CPUs the system
/// configured, numbered from 0.
fn possible() -> &'static [u32] {
    static POSSIBLE_CPUS: OnceLock<Vec<u32>> = OnceLock::new();
    POSSIBLE_CPUS.get_or_init(|| {
        let listed = std::fs::read_to_string(POSSIBLE).ok().and_then(|text| parse_list(text.trim()));
        listed.filter(|cpus| !cpus.is_empty()).unwrap_or_else(|| {
            // SAFETY: sysconf has no preconditions.
            let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
            (0..u32::try_from(configured).unwrap_or(1).max(1)).collect()
        })
    })
}

/// A CPU list as the kernel writes it: ranges `a-b` and single numbers,
/// separated by commas.
fn parse_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if first > last || cpus.last().is_some_and(|&previous| previous >= first) {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus)
}

/// How many values a per-CPU map keeps per entry: the possible CPUs
/// (`libbpf_num_possible_cpus()`).
pub fn count() -> usize {
    possible().len()
}

/// The slot of the CPU this thread runs on (its rank among the possible
/// CPUs), as the kernel picks a per-CPU value for a program.
pub fn current() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let cpus = possible();
    // A CPU outside the list cannot run this thread; should the call fail,
    // slot 0 keeps the run inside the map.
    u32::try_from(cpu).ok().and_then(|cpu| cpus.binary_search(&cpu).ok()).unwrap_or(0)
}

/// Where compiled code finds the CPU slot [`current`] gives without a
/// call: the offset from the thread pointer of the `cpu_id` word of the
/// thread's rseq area, which the C library registers for every thread and
/// the kernel keeps up to date (glibc's `sched_getcpu` reads the same
/// word). `None` where the C library has no rseq area, or where CPU
/// numbers are not their own slots (possible CPUs other than `0..count`).
/// A word of `count()` or more (rseq not registered for the thread: -1 or
/// -2 as unsigned) means: call [`current`] instead.
pub fn rseq_cpu_id_offset() -> Option<i32> {
    static OFFSET: OnceLock<Option<i32>> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let numbered_from_zero = possible().iter().enumerate().all(|(slot, &cpu)| cpu as usize == slot);
        // SAFETY: dlsym with a NUL-terminated name has no preconditions.
        let (offset, size) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) as *const isize,
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) as *const u32,
            )
        };
        if !numbered_from_zero || offset.is_null() || size.is_null() {
            return None;
        }
        // SAFETY: glibc's `__rseq_offset` (ptrdiff_t) and `__rseq_size`
        // (unsigned int), set before any user code runs, constant after.
        let (offset, size) = unsafe { (*offset, *size) };
        // `struct rseq`: cpu_id_start, then cpu_id; size 0 when the
        // library registered no area.
        const CPU_ID: isize = 4;
        (size >= 8).then(|| i32::try_from(offset + CPU_ID).ok()).flatten()
    })
}

/// The slot of CPU number `cpu`, if it is possible.
pub fn slot_of(cpu: u32) -> Option<usize> {
    possible().binary_search(&cpu).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_lists() {
        assert_eq!(parse_list("0-3"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_list("0"), Some(vec![0]));
        assert_eq!(parse_list("0-1,4,6-7"), Some(vec![0, 1, 4, 6, 7]));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("x"), None);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_rseq_word_says_what_current_says() {
        let Some(offset) = rseq_cpu_id_offset() else { return };
        // Pinned, so that both reads see the same CPU.
        for cpu in 0..count() {
            // SAFETY: a zeroed cpu_set_t is valid; pinning this thread only.
            let pinned = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
            };
            if !pinned {
                continue;
            }
            let word: u32;
            // SAFETY: reads the rseq area's cpu_id word of this thread, which
            // `rseq_cpu_id_offset` found.
            unsafe { std::arch::asm!("mov {0:e}, fs:[{1}]", out(reg) word, in(reg) offset as i64) };
            assert_eq!(word as usize, current(), "cpu {cpu}");
        }
    }

    #[test]
    fn the_current_cpu_is_possible() {
        assert!(count() >= 1);
        assert!(current() < count());
    }
}
