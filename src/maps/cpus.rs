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
    fn the_current_cpu_is_possible() {
        assert!(count() >= 1);
        assert!(current() < count());
    }
}
