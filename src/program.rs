//! A loaded program: verified code, its global data, the helpers it may call
//! and the memory regions it may touch besides its input and stack.

use std::cell::UnsafeCell;

use crate::error::{ElfError, ExecError, LoadError};
use crate::helpers::{HelperFn, Helpers};
use crate::isa::{self, Insn};
use crate::{elf, interp, verifier};

/// Helper indices at or above this are never callable; it bounds the dense
/// table that makes a helper call one indexed load.
pub const MAX_HELPER_INDEX: u32 = 65536;

/// Instructions a run may execute unless the embedder says otherwise.
pub const DEFAULT_INSTRUCTION_LIMIT: u64 = 10_000_000;

/// A range of host memory a program may access, `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub writable: bool,
}

impl Region {
    /// Does `[addr, addr + size)` lie inside this region?
    #[inline(always)]
    pub fn contains(&self, addr: u64, size: u64) -> bool {
        addr.wrapping_sub(self.start) <= self.len.saturating_sub(size) && size <= self.len
    }
}

/// Settings an embedder chooses when loading.
#[derive(Clone, Debug)]
pub struct Config {
    /// Instructions one run may execute before it is stopped (local calls and
    /// helpers count as one each).
    pub instruction_limit: u64,
    /// Extra host memory the program may access, for example a buffer whose
    /// address the embedder passes in a register.
    pub regions: Vec<Region>,
}

impl Default for Config {
    fn default() -> Config {
        Config { instruction_limit: DEFAULT_INSTRUCTION_LIMIT, regions: Vec::new() }
    }
}

/// A global data section (`.rodata`, `.data`, `.bss`) as the loader found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSection {
    pub name: String,
    pub bytes: Vec<u8>,
    pub writable: bool,
}

/// An `lddw` at `pc` that must load the address of `data[section] + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataReloc {
    pub pc: usize,
    pub section: usize,
    pub offset: u64,
}

/// Code and data before they are placed in memory and verified: what the ELF
/// loader produces, or plain bytecode with no data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub insns: Vec<Insn>,
    pub data: Vec<DataSection>,
    pub data_relocs: Vec<DataReloc>,
}

/// One data section's memory, 8-byte aligned, at a fixed address for the
/// program's life. Programs write it through raw pointers from any thread,
/// as eBPF globals are shared by every run.
struct GlobalData {
    words: Box<[UnsafeCell<u64>]>,
    len: usize,
}

impl GlobalData {
    fn new(bytes: &[u8]) -> GlobalData {
        let words: Box<[UnsafeCell<u64>]> = (0..bytes.len().div_ceil(8).max(1)).map(|_| UnsafeCell::new(0)).collect();
        let data = GlobalData { words, len: bytes.len() };
        // SAFETY: the allocation holds at least `bytes.len()` bytes, nothing
        // else references it yet, and the source is a distinct Vec.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.addr() as *mut u8, bytes.len()) };
        data
    }

    fn addr(&self) -> u64 {
        UnsafeCell::raw_get(self.words.as_ptr()) as u64
    }
}

/// Early `callx` encodings (iovisor/ubpf, older bpf_conformance) put the
/// register in imm; the kernel's puts it in dst. Both are accepted.
fn normalize_callx(insns: &mut [Insn]) {
    for insn in insns.iter_mut().filter(|insn| insn.opc == isa::CALLX && insn.dst == 0) {
        if let Ok(reg @ 1..=10) = u8::try_from(insn.imm) {
            (insn.dst, insn.imm) = (reg, 0);
        }
    }
}

/// A verified program, ready to run from any number of threads.
pub struct Program {
    insns: Vec<Insn>,
    functions: Vec<usize>,
    helpers: Vec<Option<HelperFn>>,
    unwind: Option<u32>,
    data: Vec<GlobalData>,
    regions: Vec<Region>,
    instruction_limit: u64,
}

// SAFETY: the only shared mutable state is the global data, which programs
// reach solely through raw pointers (as eBPF globals are shared by every run,
// in the kernel too); the rest is immutable after loading.
unsafe impl Sync for Program {}
// SAFETY: as above; nothing in a Program is tied to the thread that made it.
unsafe impl Send for Program {}

impl Program {
    /// Loads raw bytecode (8 bytes per slot, little-endian).
    pub fn load(bytecode: &[u8], helpers: &Helpers, config: &Config) -> Result<Program, LoadError> {
        let insns = isa::decode_program(bytecode).ok_or_else(|| {
            verifier::error(
                bytecode.len() / 8,
                Insn::default(),
                crate::error::LoadErrorKind::PartialSlot(bytecode.len()),
            )
        })?;
        Program::from_image(Image { insns, ..Image::default() }, helpers, config)
    }

    /// Loads a program from a clang `-target bpf` object; `name` picks a
    /// function or section, by default the only program or the first.
    pub fn from_elf(
        object: &[u8],
        name: Option<&str>,
        helpers: &Helpers,
        config: &Config,
    ) -> Result<Program, ElfError> {
        let linked = elf::load(object, name, helpers)?;
        let section = linked.section.clone();
        Program::from_image(linked.image, helpers, config).map_err(|error| ElfError::Load { section, error })
    }

    /// Places the image's data in memory, points its `lddw`s there, and
    /// verifies the code.
    pub fn from_image(mut image: Image, helpers: &Helpers, config: &Config) -> Result<Program, LoadError> {
        let data: Vec<GlobalData> = image.data.iter().map(|section| GlobalData::new(&section.bytes)).collect();
        for reloc in &image.data_relocs {
            let (Some(section), true) = (data.get(reloc.section), reloc.pc + 1 < image.insns.len()) else {
                return Err(verifier::error(
                    reloc.pc,
                    image.insns.get(reloc.pc).copied().unwrap_or_default(),
                    crate::error::LoadErrorKind::LddwTruncated,
                ));
            };
            let addr = section.addr().wrapping_add(reloc.offset);
            image.insns[reloc.pc].imm = addr as i32;
            image.insns[reloc.pc + 1].imm = (addr >> 32) as i32;
        }
        normalize_callx(&mut image.insns);
        let functions = verifier::verify(&image.insns, helpers)?;
        let mut regions: Vec<Region> = data
            .iter()
            .zip(&image.data)
            .map(|(mem, section)| Region { start: mem.addr(), len: mem.len as u64, writable: section.writable })
            .collect();
        regions.extend(config.regions.iter().copied());
        let mut table = Vec::new();
        for (index, helper) in helpers.iter().filter(|(index, _)| *index < MAX_HELPER_INDEX) {
            table.resize(table.len().max(index as usize + 1), None);
            table[index as usize] = Some(helper.func);
        }
        Ok(Program {
            insns: image.insns,
            functions,
            helpers: table,
            unwind: helpers.unwind(),
            data,
            regions,
            instruction_limit: config.instruction_limit,
        })
    }

    /// Runs the program in the interpreter over `mem` (r1 = its address, or
    /// 0 when empty; r2 = its length) and returns r0.
    pub fn execute(&self, mem: &mut [u8]) -> Result<u64, ExecError> {
        interp::execute(self, mem)
    }

    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// First instruction of each function, in order; the entry is at 0.
    pub fn functions(&self) -> &[usize] {
        &self.functions
    }

    pub fn helper(&self, index: u64) -> Option<HelperFn> {
        self.helpers.get(usize::try_from(index).ok()?).copied().flatten()
    }

    pub fn helper_table(&self) -> &[Option<HelperFn>] {
        &self.helpers
    }

    pub fn unwind_helper(&self) -> Option<u32> {
        self.unwind
    }

    /// Global data and embedder regions, besides input memory and stack.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Contents of global data section `index`, as they are now.
    pub fn data(&self, index: usize) -> Option<Vec<u8>> {
        let section = self.data.get(index)?;
        let mut bytes = vec![0; section.len];
        // SAFETY: the section holds `len` bytes; a concurrent run may write
        // them, which can only tear the snapshot, never reach outside it.
        unsafe { std::ptr::copy_nonoverlapping(section.addr() as *const u8, bytes.as_mut_ptr(), section.len) };
        Some(bytes)
    }

    pub fn instruction_limit(&self) -> u64 {
        self.instruction_limit
    }
}
