//! The helper registry: functions a program may `call` by index, which the
//! embedder fills; [`Helpers::linux`] starts from the built-in helpers
//! ([`builtin`]) with Linux's numbers and names ([`linux`]), so that
//! programs written against libbpf's `bpf_helpers.h` call the right thing.

use std::collections::BTreeMap;

pub mod builtin;
pub mod linux;
pub(crate) mod xdp;

/// A helper: five arguments in r1..r5, the result in r0, System V ABI so the
/// JIT and C embedders call it directly.
pub type HelperFn = extern "C" fn(u64, u64, u64, u64, u64) -> u64;

#[derive(Clone, Debug)]
pub struct Helper {
    pub name: String,
    pub func: HelperFn,
    /// A built-in helper that may stop the run (a bad argument, a tail
    /// call): the engines look at the run's stop flag after calling it.
    pub may_stop: bool,
}

/// Helpers by index, with their names for ELF objects that call them by name.
#[derive(Clone, Debug, Default)]
pub struct Helpers {
    by_index: BTreeMap<u32, Helper>,
    unwind: Option<u32>,
}

impl Helpers {
    pub fn new() -> Helpers {
        Helpers::default()
    }

    /// Registers `func` as helper `index`, replacing any earlier one there.
    pub fn register(&mut self, index: u32, name: &str, func: HelperFn) {
        self.by_index.insert(index, Helper { name: name.to_owned(), func, may_stop: false });
    }

    pub fn get(&self, index: u32) -> Option<&Helper> {
        self.by_index.get(&index)
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.by_index.iter().find(|(_, helper)| helper.name == name).map(|(&index, _)| index)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Helper)> {
        self.by_index.iter().map(|(&index, helper)| (index, helper))
    }

    /// Makes helper `index` an unwind point: when it returns 0 the program
    /// ends at once with r0 = 0 (iovisor/ubpf's `ubpf_set_unwind_function_index`).
    pub fn set_unwind(&mut self, index: u32) {
        self.unwind = Some(index);
    }

    pub fn unwind(&self) -> Option<u32> {
        self.unwind
    }
}
