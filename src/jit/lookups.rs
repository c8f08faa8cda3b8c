//! Calls of `bpf_map_lookup_elem` that the code makes without the helper:
//! where the facts at the call say that r1 is one of the program's maps,
//! whose lookups cannot fail, and that the key lies in the current stack
//! frame, the helper could neither fail nor stop the run, so the code
//! calls the map's lookup directly (no search for the map, no checks of
//! the key, no stop flag to read), or looks an array up itself. Either
//! gives what the helper gives: the same value address, or 0.

use super::direct_calls::DirectCall;
use super::facts::{Facts, Value};
use crate::helpers::builtin;
use crate::helpers::linux::MAP_LOOKUP_ELEM;
use crate::isa::*;
use crate::maps::ArrayLayout;
use crate::program::Program;

/// A lookup the code makes itself, with the map's handle in r1 and the key's
/// address in r2, as at the call: by calling
/// [`crate::maps::LOOKUP_ADDR_RAW`], or for an array or per-CPU array by
/// finding the value through its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MapLookup {
    /// Bytes of a value, which the returned address starts.
    pub(crate) value_size: u32,
    /// May the program write the values?
    pub(crate) writable: bool,
    array: Option<ArrayLayout>,
}

/// An array lookup the code makes inline: for a key `index` below
/// `max_entries`, the value of the run's CPU is at `base + index *
/// entry_stride + cpu * slot`; past them, 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InlineArray {
    pub(crate) base: u64,
    pub(crate) max_entries: u32,
    pub(crate) entry_stride: i32,
    pub(crate) slot: i32,
    pub(crate) cpus: u32,
    /// For a per-CPU array (`cpus` > 1): where the thread's CPU number is,
    /// from the thread pointer (see [`crate::maps::cpus::rseq_cpu_id_offset`]).
    /// A number of `cpus` or more means the code calls the map instead.
    pub(crate) cpu_word: Option<i32>,
}

impl MapLookup {
    /// The array lookup the code may make inline: an array, or a per-CPU
    /// array where the thread's CPU number can be read without a call,
    /// with strides that fit an instruction's immediate.
    pub(crate) fn inline_array(&self) -> Option<InlineArray> {
        let layout = self.array?;
        let cpu_word = if layout.cpus > 1 { Some(crate::maps::cpus::rseq_cpu_id_offset()?) } else { None };
        Some(InlineArray {
            base: layout.base,
            max_entries: layout.max_entries,
            entry_stride: i32::try_from(layout.entry_stride).ok()?,
            slot: i32::try_from(layout.slot).ok()?,
            cpus: layout.cpus,
            cpu_word,
        })
    }
}

/// Does the code call a helper that may stop the run, given the `lookups`
/// it makes itself and the helpers it calls without a run state
/// ([`super::direct_calls`]), by instruction slot?
pub(crate) fn stopping_helpers_remain(
    program: &Program,
    lookups: &[Option<MapLookup>],
    direct_calls: &[Option<DirectCall>],
) -> bool {
    program.has_stopping_helpers()
        && program.insns().iter().zip(lookups.iter().zip(direct_calls)).any(|(&insn, (lookup, direct))| {
            match insn.opc {
                CALL => {
                    insn.src == CALL_HELPER
                        && program.helper_may_stop(insn.imm as u32 as u64)
                        && lookup.is_none()
                        && direct.is_none()
                }
                CALLX => true,
                _ => false,
            }
        })
}

/// The lookup the code may make itself for the call `insn`, given the
/// facts before it.
pub(crate) fn plan(program: &Program, facts: &Facts, insn: Insn) -> Option<MapLookup> {
    if insn.opc != CALL || insn.src != CALL_HELPER || insn.imm != MAP_LOOKUP_ELEM as i32 {
        return None;
    }
    let index = u64::from(MAP_LOOKUP_ELEM);
    if !program.helper(index).is_some_and(builtin::is_map_lookup) || program.unwind_helper() == Some(MAP_LOOKUP_ELEM) {
        return None;
    }
    let (Value::Const(handle), Value::Frame(key)) = (facts.value(1), facts.value(2)) else {
        return None;
    };
    let map = program.maps().iter().find(|map| map.handle() == handle && map.lookup_never_fails())?;
    let key_size = i64::from(map.def().key_size);
    if key < -(STACK_FRAME_SIZE as i64) || key + key_size > 0 {
        return None;
    }
    // A global data section's map may be shorter than its value.
    let region = map.region()?;
    let value_size = u64::from(map.def().value_size).min(region.len) as u32;
    Some(MapLookup { value_size, writable: region.writable, array: map.array_layout() })
}
