//! The one rule for what memory a run may touch: its input, its live stack
//! frames, and its regions (global data, map values, embedder buffers),
//! read-only ones for loads only. The interpreter checks every access with
//! it, the built-in helpers check every pointer a program hands them with
//! it (a helper may touch exactly what the program may), and both engines
//! classify a refused access with [`fault`]. An XDP program's input is
//! the part of the run's buffer past its context block
//! ([`accessible_input`]), and a run starts only from a sound block
//! ([`context_fault`]).

use crate::error::ExecErrorKind;
use crate::image::{ProgramType, Region, xdp_context};
use crate::isa::{MAX_CALL_DEPTH, STACK_FRAME_SIZE};

/// Stack bytes for all call frames of one run.
pub const STACK_SIZE: usize = STACK_FRAME_SIZE * MAX_CALL_DEPTH;

/// Where a run may read and write.
#[derive(Clone, Copy, Debug)]
pub struct Memory<'a> {
    /// Address of the input (0 when it is empty).
    pub input_start: u64,
    pub input_len: u64,
    /// Just past the stack: r10 of the entry frame.
    pub stack_top: u64,
    pub regions: &'a [Region],
}

/// The input a run of a program of `program_type` over the buffer
/// `[start, +len)` has, as address and length: the whole buffer, but for an
/// XDP program the page after its context block, which only its context
/// loads read ([`xdp_context::CONTEXT_LOAD`]): so neither its stores nor the
/// helpers it hands pointers to can change the block. (A buffer too short
/// for the block leaves an empty input: the run does not start, see
/// [`context_fault`].) r1 on entry is the buffer's address all the same.
pub fn accessible_input(program_type: ProgramType, start: u64, len: u64) -> (u64, u64) {
    match program_type {
        ProgramType::Filter => (start, len),
        ProgramType::Xdp => {
            let block = len.min(xdp_context::SIZE as u64);
            (start.wrapping_add(block), len - block)
        }
    }
}

/// Why a run of an XDP program over `buffer` cannot start, if it cannot:
/// the buffer is too short for the context block, or one of the packet
/// pointers the program loads from the block (`pointers`, block offsets, in
/// order: see [`crate::program::Program::packet_pointers`]) lies outside the
/// page after it, its end included. The code proves the accesses guarded by
/// these pointers, so they must be sound on entry; afterwards only the
/// helpers change them, and keep them sound. Both engines check on entry,
/// before counting an instruction, and report a fault at pc 0.
pub fn context_fault(buffer: &[u8], pointers: &[i16]) -> Option<ExecErrorKind> {
    let len = buffer.len() as u64;
    if len < xdp_context::SIZE as u64 {
        return Some(ExecErrorKind::ShortContext { len });
    }
    let (page, page_len) = accessible_input(ProgramType::Xdp, buffer.as_ptr() as u64, len);
    pointers.iter().find_map(|&off| {
        let word = buffer[off as usize..off as usize + 8].try_into().expect("8 bytes in the block");
        let value = u64::from_ne_bytes(word);
        (value.wrapping_sub(page) > page_len).then_some(ExecErrorKind::BadPacketPointer { value })
    })
}

impl Memory<'_> {
    /// May `size` bytes at `addr` be accessed (written, if `write`), with
    /// `stack_low` the bottom of the deepest live frame (see
    /// [`live_stack_low`])? Frames below it have returned, or were never
    /// entered.
    #[inline(always)]
    pub fn allows(&self, addr: u64, size: u64, write: bool, stack_low: u64) -> bool {
        let live_stack = self.stack_top - stack_low;
        (addr.wrapping_sub(self.input_start) <= self.input_len.wrapping_sub(size) && size <= self.input_len)
            || (addr.wrapping_sub(stack_low) <= live_stack.wrapping_sub(size) && size <= live_stack)
            || self.regions.iter().any(|region| region.contains(addr, size) && (region.writable || !write))
    }

    /// Why an access [`Memory::allows`] refused was refused.
    #[cold]
    pub fn fault(&self, addr: u64, size: u64, write: bool) -> ExecErrorKind {
        fault(self.regions, addr, size as usize, write)
    }
}

/// The bottom of the live stack when the deepest live frame's r10 is
/// `frame_pointer`.
#[inline(always)]
pub fn live_stack_low(frame_pointer: u64) -> u64 {
    frame_pointer.wrapping_sub(STACK_FRAME_SIZE as u64)
}

/// Classifies a refused access of a program with `regions`: a store into a
/// region that holds the bytes but is read-only is `ReadOnly`; anything
/// else is `OutOfBounds`.
#[cold]
pub fn fault(regions: &[Region], addr: u64, size: usize, write: bool) -> ExecErrorKind {
    if write && regions.iter().any(|region| region.contains(addr, size as u64)) {
        ExecErrorKind::ReadOnly { addr, size }
    } else {
        ExecErrorKind::OutOfBounds { addr, size, write }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: u64 = 0x10_0000;

    fn memory(regions: &[Region]) -> Memory<'_> {
        Memory { input_start: 0x1000, input_len: 16, stack_top: TOP, regions }
    }

    #[test]
    fn only_live_frames_of_the_stack() {
        let memory = memory(&[]);
        let low = live_stack_low(TOP - STACK_FRAME_SIZE as u64);
        assert_eq!(low, TOP - 2 * STACK_FRAME_SIZE as u64);
        assert!(memory.allows(low, 8, true, low));
        assert!(memory.allows(TOP - 8, 8, true, low));
        assert!(memory.allows(low, 2 * STACK_FRAME_SIZE as u64, false, low), "both live frames at once");
        assert!(!memory.allows(low - 1, 1, false, low), "a frame that has returned");
        assert!(!memory.allows(TOP - 4, 8, false, low), "past the top");
        assert!(!memory.allows(low, 2 * STACK_FRAME_SIZE as u64 + 1, false, low), "more than the live stack");
        assert!(!memory.allows(low, u64::MAX, false, low));
    }

    #[test]
    fn input_and_regions() {
        let regions = [Region { start: 0x8000, len: 8, writable: false, ..Region::default() }];
        let memory = memory(&regions);
        let low = live_stack_low(TOP);
        assert!(memory.allows(0x1000, 16, true, low));
        assert!(!memory.allows(0x1008, 9, false, low));
        assert!(memory.allows(0x8000, 8, false, low));
        assert!(!memory.allows(0x8000, 8, true, low));
        assert_eq!(memory.fault(0x8000, 8, true), ExecErrorKind::ReadOnly { addr: 0x8000, size: 8 });
        assert_eq!(memory.fault(0x8000, 8, false), ExecErrorKind::OutOfBounds { addr: 0x8000, size: 8, write: false });
        assert_eq!(memory.fault(0x8004, 8, true), ExecErrorKind::OutOfBounds { addr: 0x8004, size: 8, write: true });
    }
}
