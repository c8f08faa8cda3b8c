//! Random valid programs for differential testing of the JIT against the
//! interpreter (`tests/differential.rs`, `fuzz/fuzz_targets/jit_diff.rs`),
//! which [`GeneratedCase::compare_engines`] runs in both.
//!
//! A case is built from a byte string, read as choices that are zeros once
//! it is exhausted, so any bytes (a fuzzer's too) give a valid program; [`program_from_seed`] is [`program_from_bytes`] over splitmix64
//! output. The same bytes always give the same case.
//!
//! Results must not depend on where an engine's memory happens to be, nor on
//! anything the spec leaves undefined, so the generated programs:
//! - never let an address become data: one of r6-r9 holds the input's
//!   address (r1 at entry) and r10 the frame's, and a pointer computed from
//!   them lives in a temporary register for one access and is overwritten
//!   right after;
//! - read only the top [`FRAME_INIT`] bytes of each frame, which the function
//!   writes first (engines reuse their stacks without clearing them);
//! - write r1-r5 again after every call before reading them (a helper may
//!   clobber them, and a callee's r0 and r6-r8 are unset until it writes them).

use std::fmt::Write as _;

use std::sync::Arc;

use super::engines;
use crate::disasm;
use crate::error::{ExecError, LoadError};
use crate::helpers::Helpers;
use crate::image::{DataReloc, DataSection, Image};
use crate::isa::*;
use crate::jit::JitProgram;
use crate::program::{Config, Program};

/// Bytes at the top of each frame that its function initialises and may read.
pub const FRAME_INIT: i16 = 64;
/// Instruction budget of most cases: loops that end stay far below it.
pub const INSTRUCTION_LIMIT: u64 = 10_000;

pub const HELPER_MIX: u32 = 1;
pub const HELPER_ZERO: u32 = 2;
/// Returns 0 for a quarter of its arguments: the usual unwind helper.
pub const HELPER_COIN: u32 = 3;
/// Far from the others, so that the helper table is not dense.
pub const HELPER_SUM: u32 = 1000;
const HELPER_INDICES: [u32; 4] = [HELPER_MIX, HELPER_ZERO, HELPER_COIN, HELPER_SUM];
/// Indices `callx` may find unregistered; `1 << 32 | 1` is a registered one
/// with a high bit set, which an engine must not truncate.
const UNREGISTERED_INDICES: [u64; 7] = [0, 4, 999, 65535, 65536, 1 << 32 | 1, u64::MAX];

/// Registers that may hold the input's address for the whole run: saved
/// across calls. The others of r0-r9 hold values, never addresses.
const INPUT_REGS: [u8; 4] = [6, 7, 8, 9];
/// r0-r9, of which all but the input's address are data registers.
const REGS: u8 = 10;
/// r1-r5: a call's arguments, unset after it.
const ARG_REGS: u16 = 0b11_1110;
/// Loop counters are saved across calls too.
const LOOP_COUNTERS: [u8; 4] = [6, 7, 8, 9];
/// Blocks inside forward jumps and loops nest at most this deep.
const MAX_NESTING: u32 = 3;
/// No item starts once a program has this many slots.
const MAX_SLOTS: usize = 4000;
/// Bytes behind each seed: more than a program reads.
const SEED_BYTES: usize = 4096;

const INTERESTING_IMMS: [i32; 16] =
    [0, 1, -1, 2, 7, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, i32::MAX, i32::MIN, 31, 32, 63];
const INTERESTING_WIDES: [u64; 12] = [
    0,
    1,
    u64::MAX,
    i64::MIN as u64,
    i64::MAX as u64,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff,
    0xffff_ffff_8000_0000,
    0x8000_0000_0000_0001,
    0x0123_4567_89ab_cdef,
];
/// Shift counts, many past the width: engines must mask them.
const SHIFT_IMMS: [i32; 18] = [0, 1, 7, 8, 15, 16, 31, 32, 33, 47, 63, 64, 65, 127, 255, -1, -32, -63];
const SHIFT_WIDES: [u64; 8] = [32, 33, 63, 64, 65, 0xffff_ffff, 1 << 32 | 3, u64::MAX];
/// Divisors, wide so that a register divisor's low half may be 0 or -1
/// while the whole is not.
const DIVISORS: [u64; 8] = [0, u64::MAX, 1, 0x1_0000_0000, 0xffff_ffff, i64::MIN as u64, 0xffff_ffff_0000_0000, 3];

pub(crate) const BINARY_OPS: [u8; 12] =
    [BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH];
pub(crate) const CONDITIONS: [u8; 11] =
    [BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE];
const LOADS: [u8; 7] = [LDXB, LDXH, LDXW, LDXDW, LDXSB, LDXSH, LDXSW];
const SIZES: [u8; 4] = [BPF_B, BPF_H, BPF_W, BPF_DW];
pub(crate) const ATOMIC_OPS: [i32; 10] = [
    ATOMIC_ADD,
    ATOMIC_OR,
    ATOMIC_AND,
    ATOMIC_XOR,
    ATOMIC_ADD | ATOMIC_FETCH,
    ATOMIC_OR | ATOMIC_FETCH,
    ATOMIC_AND | ATOMIC_FETCH,
    ATOMIC_XOR | ATOMIC_FETCH,
    ATOMIC_XCHG,
    ATOMIC_CMPXCHG,
];

/// A program to run in two engines, with its input and environment.
#[derive(Clone, Debug)]
pub struct GeneratedCase {
    pub insns: Vec<Insn>,
    /// Global data (a writable and a read-only section, or none), which the
    /// program reaches through lddws that loading points at it.
    pub data: Vec<DataSection>,
    pub data_relocs: Vec<DataReloc>,
    /// The input memory (r1, r2); sometimes empty.
    pub input: Vec<u8>,
    pub helpers: Helpers,
    pub config: Config,
}

impl GeneratedCase {
    /// Loads the program with fresh global data: load it once per engine,
    /// as runs change the data.
    pub fn load(&self) -> Result<Program, LoadError> {
        let image = Image {
            insns: self.insns.clone(),
            data: self.data.clone(),
            data_relocs: self.data_relocs.clone(),
            maps: Vec::new(),
        };
        Program::from_image(image, &self.helpers, &self.config)
    }

    /// Runs the case in the interpreter and in the JIT, entered as C callers
    /// enter it ([`JitProgram::execute`], which does not count instructions),
    /// and compares them ([`engines::compare`]); then, where the backend
    /// generates it, the JIT's direct code likewise ([`engines::run_direct`]).
    /// The interpreter's result when they agree, else a report of the
    /// difference and of the case.
    pub fn compare_engines(&self) -> Result<Result<u64, ExecError>, String> {
        let refused =
            |error| format!("the generator made a program the verifier refuses: {error}\n{}", case_description(self));
        let unjitted = |error| format!("the JIT refused a verified program: {error:?}\n{}", case_description(self));
        // One load per engine, so that both runs start from the same global data.
        let interpreted = self.load().map_err(refused)?;
        let compiled = Arc::new(self.load().map_err(refused)?);
        let jit = JitProgram::compile(Arc::clone(&compiled)).map_err(unjitted)?;
        let result = engines::compare(&self.input, &interpreted, &compiled, |memory| (jit.execute(memory), None))
            .map_err(|divergence| format!("{divergence}{}", case_description(self)))?;
        let compiled = Arc::new(self.load().map_err(refused)?);
        if let Some(direct) = engines::compile_direct(Arc::clone(&compiled)).map_err(unjitted)? {
            let interpreted = self.load().map_err(refused)?;
            let run = |memory: &mut [u8]| (engines::run_direct(&direct, memory), None);
            engines::compare(&self.input, &interpreted, &compiled, run)
                .map_err(|divergence| format!("direct code: {divergence}{}", case_description(self)))?
                .ok();
        }
        Ok(result)
    }
}

/// The case that `seed` names: [`program_from_bytes`] over [`seed_bytes`].
pub fn program_from_seed(seed: u64) -> GeneratedCase {
    program_from_bytes(&seed_bytes(seed))
}

/// The generator bytes behind `seed`.
pub fn seed_bytes(seed: u64) -> Vec<u8> {
    let mut random = SplitMix64(seed);
    (0..SEED_BYTES / 8).flat_map(|_| random.next().to_le_bytes()).collect()
}

/// The case that `data` describes; every byte string gives a valid one.
pub fn program_from_bytes(data: &[u8]) -> GeneratedCase {
    let mut source = ByteSource::new(data);
    let input_len = match source.below(16) {
        0 => 0,
        1 => source.below(16),
        _ => 16 + source.below(241),
    } as usize;
    let mut contents = SplitMix64(source.u64());
    let input = (0..input_len).map(|_| contents.next() as u8).collect();
    let instruction_limit = if source.chance(16) { 20 + u64::from(source.below(2000)) } else { INSTRUCTION_LIMIT };
    let unwind = match source.below(8) {
        0..=4 => Some(HELPER_COIN),
        5 => Some(HELPER_ZERO),
        _ => None,
    };
    let data = if source.chance(192) { data_sections(&mut source) } else { Vec::new() };
    let callees = source.below(4) as usize;
    let input_reg = source.pick(&INPUT_REGS);
    let mut generator = Generator {
        source,
        insns: Vec::new(),
        input_reg,
        input_len: input_len as i64,
        data: data.iter().map(|section| (section.bytes.len() as i64, section.writable)).collect(),
        data_relocs: Vec::new(),
        callees,
        function: 0,
        defined: 0,
        reserved: 0,
        nesting: 0,
        calls: Vec::new(),
    };
    GeneratedCase {
        insns: generator.program(),
        data,
        data_relocs: generator.data_relocs,
        input,
        helpers: helpers(unwind),
        config: Config { instruction_limit, ..Config::default() },
    }
}

/// A writable and a read-only section, their lengths often not a multiple
/// of 8: the bytes up to the next multiple are allocated but outside the
/// section, so an access may cross its end and fault in every engine alike.
fn data_sections(source: &mut ByteSource) -> Vec<DataSection> {
    let mut contents = SplitMix64(source.u64());
    let mut section = |name: &str, len: u32, writable| DataSection {
        name: name.to_string(),
        bytes: (0..len).map(|_| contents.next() as u8).collect(),
        writable,
    };
    let data_len = 1 + source.below(96);
    let rodata_len = 1 + source.below(48);
    vec![section(".data", data_len, true), section(".rodata", rodata_len, false)]
}

fn helpers(unwind: Option<u32>) -> Helpers {
    let mut helpers = Helpers::new();
    helpers.register(HELPER_MIX, "mix", mix);
    helpers.register(HELPER_ZERO, "zero", zero);
    helpers.register(HELPER_COIN, "coin", coin);
    helpers.register(HELPER_SUM, "sum", sum);
    if let Some(index) = unwind {
        helpers.set_unwind(index);
    }
    helpers
}

/// Every argument matters to the result, each differently.
extern "C" fn mix(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(17) ^ c.wrapping_sub(d).rotate_right(5) ^ e.wrapping_mul(3)
}

extern "C" fn zero(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

extern "C" fn coin(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    if (a ^ b) & 3 == 0 { 0 } else { a.wrapping_add(b) | 1 }
}

/// Also adds how far the stack is from the 16-byte alignment System V
/// promises at a call: the compiler places `probe` (16-byte aligned)
/// assuming it, so a JIT that breaks it changes the result.
extern "C" fn sum(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    let probe = 0u128;
    let misalignment = std::hint::black_box(&probe as *const u128).addr() % 16;
    a.wrapping_add(b).wrapping_add(c).wrapping_add(d).wrapping_add(e).wrapping_add(misalignment as u64)
}

/// Reads choices from a byte string; zeros once it is exhausted.
pub(crate) struct ByteSource<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl ByteSource<'_> {
    pub(crate) fn new(bytes: &[u8]) -> ByteSource<'_> {
        ByteSource { bytes, pos: 0 }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos = (self.pos + 1).min(self.bytes.len());
        byte
    }

    fn is_exhausted(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// A number in `0..n` (`n` > 0), from as few bytes as `n` needs.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        match n {
            0..=256 => u32::from(self.byte()) % n,
            257..=65536 => u32::from(self.u16()) % n,
            _ => self.u32() % n,
        }
    }

    /// True with probability `in_256` / 256.
    pub(crate) fn chance(&mut self, in_256: u8) -> bool {
        self.byte() < in_256
    }

    pub(crate) fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u32) as usize]
    }

    /// An immediate: half the time one of [`INTERESTING_IMMS`].
    pub(crate) fn imm(&mut self) -> i32 {
        if self.chance(128) { self.pick(&INTERESTING_IMMS) } else { self.u32() as i32 }
    }

    /// A 64-bit value: half the time one of [`INTERESTING_WIDES`].
    pub(crate) fn wide(&mut self) -> u64 {
        if self.chance(128) { self.pick(&INTERESTING_WIDES) } else { self.u64() }
    }
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn bit(reg: u8) -> u16 {
    1 << reg
}

/// What an access does with memory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Load,
    Store,
    /// An atomic: reads and writes.
    Update,
}

impl Access {
    fn reads(self) -> bool {
        self != Access::Store
    }

    fn writes(self) -> bool {
        self != Access::Load
    }
}

/// Where an access goes: `[base + off]`. A computed base is a temporary
/// pointer, to be overwritten after the access.
struct Address {
    base: u8,
    off: i16,
    temp: Option<u8>,
}

/// Builds the program: the main function, then its callees, each a block of
/// items (an item is a few instructions that do one thing).
struct Generator<'a> {
    source: ByteSource<'a>,
    insns: Vec<Insn>,
    /// Holds the input's address: r1 at entry, saved at once.
    input_reg: u8,
    input_len: i64,
    /// Each global data section's length and writability.
    data: Vec<(i64, bool)>,
    data_relocs: Vec<DataReloc>,
    /// Functions after the main one.
    callees: usize,
    /// The function being built; 0 is the main one.
    function: usize,
    /// Data registers holding a value this program gave them, as bits.
    defined: u16,
    /// Counters of the enclosing loops, which nothing else may write.
    reserved: u16,
    nesting: u32,
    /// Local calls to patch: the call's pc and the callee's number.
    calls: Vec<(usize, usize)>,
}

impl Generator<'_> {
    fn program(&mut self) -> Vec<Insn> {
        self.main_prologue();
        let items = 8 + self.source.below(24);
        self.block(items);
        self.main_epilogue();
        let mut starts = vec![0];
        for function in 1..=self.callees {
            let start = self.insns.len();
            starts.push(start);
            self.function = function;
            self.defined = ARG_REGS;
            self.frame_prologue();
            let items = 2 + self.source.below(10);
            self.block(items);
            if self.source.chance(8) {
                // Back to the function's first instruction, a call target too.
                self.restore(ARG_REGS);
                self.never_taken_way_out();
                let back = start as i64 - self.insns.len() as i64 - 1;
                self.emit(Insn::new(JA, 0, 0, back as i16, 0));
            }
            self.callee_epilogue();
        }
        for &(pc, callee) in &self.calls {
            self.insns[pc].imm = (starts[callee] as i64 - pc as i64 - 1) as i32;
        }
        std::mem::take(&mut self.insns)
    }

    fn emit(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    fn lddw(&mut self, dst: u8, value: u64) {
        self.emit(Insn::new(LDDW, dst, 0, 0, value as i32));
        self.emit(Insn::new(0, 0, 0, 0, (value >> 32) as i32));
    }

    fn is_defined(&self, reg: u8) -> bool {
        self.defined & bit(reg) != 0
    }

    /// Gives `reg` a fresh value.
    fn set(&mut self, reg: u8) {
        match self.source.below(4) {
            0 => {
                let imm = self.source.imm();
                self.emit(Insn::new(MOV64_IMM, reg, 0, 0, imm));
            }
            1 => {
                let imm = self.source.imm();
                self.emit(Insn::new(MOV32_IMM, reg, 0, 0, imm));
            }
            _ => {
                let value = self.source.wide();
                self.lddw(reg, value);
            }
        }
        self.defined |= bit(reg);
    }

    /// The data registers, from a chosen one on, wrapping around.
    fn data_regs(&mut self) -> impl Iterator<Item = u8> + use<> {
        let first = self.source.below(REGS.into()) as u8;
        let input_reg = self.input_reg;
        (0..REGS).map(move |i| (first + i) % REGS).filter(move |&reg| reg != input_reg)
    }

    /// Sets every register of `regs` that has no value.
    fn restore(&mut self, regs: u16) {
        for reg in 0..REGS {
            if regs & bit(reg) != 0 && !self.is_defined(reg) {
                self.set(reg);
            }
        }
    }

    /// A data register no enclosing loop counts with.
    fn writable(&mut self) -> u8 {
        self.writable_except(0)
    }

    fn writable_except(&mut self, avoid: u16) -> u8 {
        let excluded = self.reserved | avoid;
        self.data_regs()
            .find(|&reg| excluded & bit(reg) == 0)
            .expect("at most five of the nine data registers are excluded")
    }

    /// A data register with a value, to read.
    fn readable(&mut self) -> u8 {
        let defined = self.defined;
        match self.data_regs().find(|&reg| defined & bit(reg) != 0) {
            Some(reg) => reg,
            None => {
                let reg = self.writable();
                self.set(reg);
                reg
            }
        }
    }

    /// A data register to read and overwrite.
    fn modifiable(&mut self) -> u8 {
        let reg = self.writable();
        if !self.is_defined(reg) {
            self.set(reg);
        }
        reg
    }

    /// Saves the input's address and gives every data register a value.
    fn main_prologue(&mut self) {
        self.emit(Insn::new(MOV64_REG, self.input_reg, 1, 0, 0));
        // A few accesses through r1 itself, before it becomes data.
        for _ in 0..self.source.below(3) {
            let outside = self.source.chance(3);
            if self.source.chance(128) {
                let opc = self.source.pick(&LOADS);
                let address = self.input_address(access_size(opc) as i64, outside);
                self.emit(Insn::new(opc, 0, 1, address.off, 0));
                self.defined |= bit(0);
            } else {
                let size = self.source.pick(&SIZES);
                let address = self.input_address(access_size(size) as i64, outside);
                let imm = self.source.imm();
                self.emit(Insn::new(BPF_ST | BPF_MEM | size, 1, 0, address.off, imm));
            }
        }
        let input_reg = self.input_reg;
        for reg in (0..REGS).filter(|&reg| reg != input_reg) {
            // r0 may hold a load through r1; r2 sometimes keeps the input's
            // length, which engines must set.
            if (reg == 0 && self.is_defined(reg)) || (reg == 2 && self.source.chance(128)) {
                self.defined |= bit(reg);
            } else {
                self.set(reg);
            }
        }
        self.frame_prologue();
    }

    /// Writes the bytes of the frame that the function may read.
    fn frame_prologue(&mut self) {
        for slot in 1..=FRAME_INIT / 8 {
            if self.source.chance(128) {
                let imm = self.source.imm();
                self.emit(Insn::new(STDW, FRAME_REG, 0, -8 * slot, imm));
            } else {
                let src = self.readable();
                self.emit(Insn::new(STXDW, FRAME_REG, src, -8 * slot, 0));
            }
        }
    }

    /// Folds every register and the initialised frame into r0, so that the
    /// result shows any difference in them, and exits.
    fn main_epilogue(&mut self) {
        self.restore(bit(0));
        for reg in 1..REGS {
            if self.is_defined(reg) {
                self.emit(Insn::new(MUL64_IMM, 0, 0, 0, 0x0100_0193));
                self.emit(Insn::new(XOR64_REG, 0, reg, 0, 0));
            }
        }
        for slot in 1..=FRAME_INIT / 8 {
            self.emit(Insn::new(LDXDW, 1, FRAME_REG, -8 * slot, 0));
            self.emit(Insn::new(MUL64_IMM, 0, 0, 0, 0x0100_0193));
            self.emit(Insn::new(XOR64_REG, 0, 1, 0, 0));
        }
        self.emit(Insn::new(EXIT, 0, 0, 0, 0));
    }

    /// Folds the callee's registers into r0 (r6-r8 do not survive the
    /// return) and exits.
    fn callee_epilogue(&mut self) {
        self.restore(bit(0));
        for reg in 1..REGS {
            if self.is_defined(reg) {
                self.emit(Insn::new(XOR64_REG, 0, reg, 0, 0));
            }
        }
        self.emit(Insn::new(EXIT, 0, 0, 0, 0));
    }

    fn block(&mut self, items: u32) {
        for _ in 0..items {
            if self.source.is_exhausted() || self.insns.len() >= MAX_SLOTS {
                return;
            }
            self.item();
        }
    }

    fn item(&mut self) {
        let nests = self.nesting < MAX_NESTING;
        match self.source.byte() {
            0..=39 => self.alu(),
            40..=51 => self.division_hazard(),
            52..=59 => self.shift_hazard(),
            60..=71 => self.unary(),
            72..=79 => self.set_interesting(),
            80..=109 => self.load(),
            110..=134 => self.store(),
            135..=159 => self.atomic(),
            160..=184 if nests => self.forward_jump(false),
            185..=191 if nests => self.forward_jump(true),
            192..=204 if nests => self.bounded_loop(),
            205 if nests => self.unbounded_loop(),
            206..=219 => self.helper_call(),
            220..=227 => self.indirect_call(),
            228..=243 => self.local_call(),
            244..=249 => self.early_exit(),
            250..=254 => self.packet_load(),
            _ => self.alu(),
        }
    }

    /// One binary ALU or ALU32 operation, immediate or register, including
    /// `mov` and the `movsx` forms.
    fn alu(&mut self) {
        let class = if self.source.chance(128) { BPF_ALU64 } else { BPF_ALU };
        let op = self.source.pick(&BINARY_OPS);
        let dst = if op == BPF_MOV { self.writable() } else { self.modifiable() };
        let insn = if self.source.chance(128) {
            let imm = match op {
                BPF_LSH | BPF_RSH | BPF_ARSH => self.source.pick(&SHIFT_IMMS),
                BPF_DIV | BPF_MOD if self.source.chance(128) => self.source.pick(&DIVISORS) as i32,
                _ => self.source.imm(),
            };
            Insn::new(class | BPF_K | op, dst, 0, self.signedness(op), imm)
        } else {
            let src = self.readable();
            let off = match (op, class) {
                (BPF_MOV, BPF_ALU64) => self.source.pick(&[0, 0, 8, 16, 32]),
                (BPF_MOV, _) => self.source.pick(&[0, 0, 8, 16]),
                _ => self.signedness(op),
            };
            Insn::new(class | BPF_X | op, dst, src, off, 0)
        };
        self.emit(insn);
        self.defined |= bit(dst);
    }

    /// The offset of a division or modulo: 0 unsigned, 1 signed.
    fn signedness(&mut self, op: u8) -> i16 {
        match op {
            BPF_DIV | BPF_MOD => self.source.below(2) as i16,
            _ => 0,
        }
    }

    /// Division or modulo where it goes wrong on hardware: by 0, by -1 of
    /// INT_MIN, by a register whose low half alone is 0 or -1.
    fn division_hazard(&mut self) {
        let wide = self.source.chance(128);
        let class = if wide { BPF_ALU64 } else { BPF_ALU };
        let op = if self.source.chance(128) { BPF_DIV } else { BPF_MOD };
        let signed = self.source.pick(&[0, 1, 1]);
        let dst = self.writable();
        match self.source.below(4) {
            0 | 1 if wide => self.lddw(dst, i64::MIN as u64),
            0 | 1 => self.emit(Insn::new(MOV32_IMM, dst, 0, 0, i32::MIN)),
            2 => self.emit(Insn::new(MOV64_IMM, dst, 0, 0, -1)),
            _ => self.set(dst),
        }
        self.defined |= bit(dst);
        if self.source.chance(128) {
            let divisor = self.source.pick(&[0, -1, -1, 1, i32::MIN]);
            self.emit(Insn::new(class | BPF_K | op, dst, 0, signed, divisor));
        } else {
            let src = self.writable_except(bit(dst));
            let divisor = self.source.pick(&DIVISORS);
            self.lddw(src, divisor);
            self.defined |= bit(src);
            self.emit(Insn::new(class | BPF_X | op, dst, src, signed, 0));
        }
    }

    /// A shift by a register holding a count past the width.
    fn shift_hazard(&mut self) {
        let class = if self.source.chance(128) { BPF_ALU64 } else { BPF_ALU };
        let op = self.source.pick(&[BPF_LSH, BPF_RSH, BPF_ARSH]);
        let dst = self.modifiable();
        // The count may land in dst itself: `lsh r3, r3`.
        let src = self.writable();
        let count = self.source.pick(&SHIFT_WIDES);
        self.lddw(src, count);
        self.defined |= bit(src);
        self.emit(Insn::new(class | BPF_X | op, dst, src, 0, 0));
    }

    /// neg, the byte swaps, and sign extension by register.
    fn unary(&mut self) {
        match self.source.below(4) {
            0 => {
                let dst = self.modifiable();
                let opc = if self.source.chance(128) { NEG64 } else { NEG32 };
                self.emit(Insn::new(opc, dst, 0, 0, 0));
            }
            1 | 2 => {
                let dst = self.modifiable();
                let opc = self.source.pick(&[LE, BE, BSWAP]);
                let width = self.source.pick(&[16, 32, 64]);
                self.emit(Insn::new(opc, dst, 0, 0, width));
            }
            _ => {
                let src = self.readable();
                let dst = self.writable();
                let (opc, bits) = match self.source.below(5) {
                    0 => (MOV32_REG, 8),
                    1 => (MOV32_REG, 16),
                    2 => (MOV64_REG, 8),
                    3 => (MOV64_REG, 16),
                    _ => (MOV64_REG, 32),
                };
                self.emit(Insn::new(opc, dst, src, bits, 0));
                self.defined |= bit(dst);
            }
        }
    }

    fn set_interesting(&mut self) {
        let dst = self.writable();
        self.set(dst);
    }

    /// An address for a `size`-byte access, mostly valid; a load or atomic
    /// never reads stack bytes no one wrote. `keep`: registers the access
    /// uses, which may not hold the pointer.
    fn address(&mut self, size: i64, access: Access, keep: u16) -> Address {
        let outside = self.source.chance(3);
        match self.source.below(128) {
            0..=39 => self.input_address(size, outside),
            40..=79 => self.stack_address(size, access, outside),
            80..=95 => self.computed_input_address(size, outside, keep),
            96..=111 => self.computed_stack_address(size, access, outside, keep),
            112..=126 if !self.data.is_empty() => self.data_address(size, access, outside, keep),
            112..=126 => self.input_address(size, outside),
            _ => {
                // A value as address: always outside, as no value is an address.
                let base = self.readable();
                Address { base, off: self.source.u16() as i16, temp: None }
            }
        }
    }

    /// The input's address plus a constant: inside the input, or just
    /// before or after it.
    fn input_address(&mut self, size: i64, outside: bool) -> Address {
        let room = self.input_len - size;
        let off = if outside || room < 0 {
            if self.source.chance(128) {
                -1 - i64::from(self.source.below(8))
            } else {
                room + 1 + i64::from(self.source.below(8))
            }
        } else {
            let off = i64::from(self.source.below(room as u32 + 1));
            if self.source.chance(128) { off - off % size } else { off }
        };
        Address { base: self.input_reg, off: off as i16, temp: None }
    }

    /// r10 plus a constant: the initialised bytes, the whole frame for a
    /// store, the caller's initialised bytes from a callee, or just outside
    /// the live frames.
    fn stack_address(&mut self, size: i64, access: Access, outside: bool) -> Address {
        let frame = STACK_FRAME_SIZE as i64;
        let init = i64::from(FRAME_INIT);
        let off = if self.function > 0 && !outside && self.source.chance(32) {
            frame - init + i64::from(self.source.below((init - size) as u32 + 1))
        } else if outside {
            // Above the top only in the main function: a callee's r10 + off
            // is its caller's frame.
            if self.function == 0 && self.source.chance(128) {
                1 - size + i64::from(self.source.below(size as u32 + 16))
            } else {
                -frame - 1 - i64::from(self.source.below(16))
            }
        } else {
            let span = if !access.reads() && self.source.chance(64) { frame } else { init };
            let off = -size - i64::from(self.source.below((span - size) as u32 + 1));
            if self.source.chance(128) { off - off.rem_euclid(size) } else { off }
        };
        Address { base: FRAME_REG, off: off as i16, temp: None }
    }

    /// A temporary pointer: the input's address plus a data register cut
    /// down by a mask or a modulo, inside the input unless `outside`.
    fn computed_input_address(&mut self, size: i64, outside: bool, keep: u16) -> Address {
        let value = self.readable();
        let temp = self.writable_except(keep);
        let opc = if self.source.chance(192) { MOV64_REG } else { MOV32_REG };
        self.emit(Insn::new(opc, temp, value, 0, 0));
        let room = self.input_len - size;
        let off = if outside || room < 0 {
            let mask = self.source.pick(&[63, 127, 255, 511]);
            self.emit(Insn::new(AND64_IMM, temp, 0, 0, mask));
            -i64::from(self.source.below(8))
        } else {
            let off = i64::from(self.source.below(room.min(8) as u32 + 1));
            let limit = room - off;
            if self.source.chance(160) {
                let bits = 64 - limit.leading_zeros();
                let mask = (1i64 << self.source.below(bits.max(1))) - 1;
                self.emit(Insn::new(AND64_IMM, temp, 0, 0, mask as i32));
            } else {
                self.emit(Insn::new(MOD64_IMM, temp, 0, 0, (limit + 1) as i32));
            }
            off
        };
        self.emit(Insn::new(ADD64_REG, temp, self.input_reg, 0, 0));
        Address { base: temp, off: off as i16, temp: Some(temp) }
    }

    /// A temporary pointer: r10 plus or minus a masked data register, inside
    /// the initialised bytes unless `outside`.
    fn computed_stack_address(&mut self, size: i64, access: Access, outside: bool, keep: u16) -> Address {
        let value = self.readable();
        let temp = self.writable_except(keep);
        self.emit(Insn::new(MOV64_REG, temp, value, 0, 0));
        let init = i64::from(FRAME_INIT);
        let off = if outside && self.function == 0 && self.source.chance(128) {
            // Above the top of the main function's frame.
            self.emit(Insn::new(AND64_IMM, temp, 0, 0, 63));
            self.emit(Insn::new(ADD64_REG, temp, FRAME_REG, 0, 0));
            1
        } else if outside {
            // Below the frame: r10 - 512 - (0..512) - 1.
            self.emit(Insn::new(AND64_IMM, temp, 0, 0, 511));
            self.emit(Insn::new(OR64_IMM, temp, 0, 0, STACK_FRAME_SIZE as i32));
            self.emit(Insn::new(NEG64, temp, 0, 0, 0));
            self.emit(Insn::new(ADD64_REG, temp, FRAME_REG, 0, 0));
            -1
        } else {
            let span = if !access.reads() && self.source.chance(64) { STACK_FRAME_SIZE as i64 } else { init };
            let bits = 64 - (span - size).leading_zeros();
            let mask = (1i64 << self.source.below(bits)) - 1;
            self.emit(Insn::new(AND64_IMM, temp, 0, 0, mask as i32));
            if self.source.chance(128) {
                // r10 - span + (0..=span - size)
                self.emit(Insn::new(ADD64_REG, temp, FRAME_REG, 0, 0));
                -span
            } else {
                // r10 - (0..=span - size) - size
                self.emit(Insn::new(NEG64, temp, 0, 0, 0));
                self.emit(Insn::new(ADD64_REG, temp, FRAME_REG, 0, 0));
                -size
            }
        };
        Address { base: temp, off: off as i16, temp: Some(temp) }
    }

    /// A temporary pointer into a global data section, from an lddw that
    /// loading points there. Unless `outside`, inside the section, and for a
    /// write a writable one; else a write inside the read-only section or an
    /// access crossing a section's end.
    fn data_address(&mut self, size: i64, access: Access, outside: bool, keep: u16) -> Address {
        let read_only_write = access.writes() && outside && self.source.chance(128);
        let eligible: Vec<usize> = (0..self.data.len())
            .filter(|&section| match (read_only_write, access.writes() && !outside) {
                (true, _) => !self.data[section].1,
                (false, true) => self.data[section].1,
                (false, false) => true,
            })
            .collect();
        let section = self.source.pick(&eligible);
        let len = self.data[section].0;
        let padding = (-len).rem_euclid(8);
        let at = if outside && !read_only_write && padding > 0 && len - size + 1 >= 0 {
            len - size + 1 + i64::from(self.source.below(padding as u32))
        } else if len >= size {
            i64::from(self.source.below((len - size) as u32 + 1))
        } else {
            // Longer than the section: every such access crosses its end.
            0
        };
        // Split the place between the relocation's addend and the offset.
        let addend = i64::from(self.source.below(len as u32 + 1));
        let temp = self.writable_except(keep);
        self.data_relocs.push(DataReloc { pc: self.insns.len(), section, offset: addend as u64 });
        self.lddw(temp, 0);
        Address { base: temp, off: (at - addend) as i16, temp: Some(temp) }
    }

    /// Overwrites the temporary pointer of `address`, unless the access
    /// itself wrote a value over it.
    fn drop_pointer(&mut self, address: &Address, written: Option<u8>) {
        if let Some(temp) = address.temp.filter(|&temp| Some(temp) != written) {
            let imm = self.source.imm();
            self.emit(Insn::new(MOV64_IMM, temp, 0, 0, imm));
        }
    }

    fn load(&mut self) {
        let opc = self.source.pick(&LOADS);
        let address = self.address(access_size(opc) as i64, Access::Load, 0);
        let dst = self.writable();
        self.emit(Insn::new(opc, dst, address.base, address.off, 0));
        self.defined |= bit(dst);
        self.drop_pointer(&address, Some(dst));
    }

    fn store(&mut self) {
        let size = self.source.pick(&SIZES);
        if self.source.chance(128) {
            let address = self.address(access_size(size) as i64, Access::Store, 0);
            let imm = self.source.imm();
            self.emit(Insn::new(BPF_ST | BPF_MEM | size, address.base, 0, address.off, imm));
            self.drop_pointer(&address, None);
        } else {
            let src = self.readable();
            let address = self.address(access_size(size) as i64, Access::Store, bit(src));
            self.emit(Insn::new(BPF_STX | BPF_MEM | size, address.base, src, address.off, 0));
            self.drop_pointer(&address, None);
        }
    }

    /// Every atomic operation, 32 and 64 bits; a cmpxchg often finds the
    /// value it expects.
    fn atomic(&mut self) {
        let (opc, size) = if self.source.chance(128) { (ATOMIC64, 8) } else { (ATOMIC32, 4) };
        let op = self.source.pick(&ATOMIC_OPS);
        let writes_src = op & ATOMIC_FETCH != 0 && op != ATOMIC_CMPXCHG;
        let src = if writes_src { self.modifiable() } else { self.readable() };
        let mut keep = bit(src);
        if op == ATOMIC_CMPXCHG {
            self.restore(bit(0));
            keep |= bit(0);
        }
        let address = self.address(size, Access::Update, keep);
        if op == ATOMIC_CMPXCHG && self.source.chance(128) {
            let load = if size == 8 { LDXDW } else { LDXW };
            self.emit(Insn::new(load, 0, address.base, address.off, 0));
        }
        self.emit(Insn::new(opc, address.base, src, address.off, op));
        self.drop_pointer(&address, None);
    }

    /// A conditional jump of the JMP or JMP32 class, immediate or register,
    /// with its offset left 0.
    fn condition(&mut self) -> Insn {
        let class = if self.source.chance(128) { BPF_JMP } else { BPF_JMP32 };
        let op = self.source.pick(&CONDITIONS);
        let dst = self.readable();
        if self.source.chance(128) {
            let imm = self.source.imm();
            Insn::new(class | BPF_K | op, dst, 0, 0, imm)
        } else {
            let src = self.readable();
            Insn::new(class | BPF_X | op, dst, src, 0, 0)
        }
    }

    /// A jump over a nested block: conditional, or `ja`/`ja32` over dead code.
    fn forward_jump(&mut self, unconditional: bool) {
        let before = self.defined;
        let jump = match (unconditional, self.source.chance(128)) {
            (true, true) => Insn::new(JA, 0, 0, 0, 0),
            (true, false) => Insn::new(JA32, 0, 0, 0, 0),
            (false, _) => self.condition(),
        };
        let at = self.insns.len();
        self.emit(jump);
        // Sometimes no item: a jump to the next instruction.
        let items = self.source.below(5);
        self.nested_block(items);
        let distance = self.insns.len() - at - 1;
        if jump.opc == JA32 {
            self.insns[at].imm = distance as i32;
        } else {
            self.insns[at].off = distance as i16;
        }
        // Past the block, a register has a value only if it had one on both paths.
        self.defined &= before;
    }

    fn nested_block(&mut self, items: u32) {
        self.nesting += 1;
        self.block(items);
        self.nesting -= 1;
    }

    /// A loop of 1 to 6 trips, counting down to 0 or up to the trip count
    /// in a register that its body does not write.
    fn bounded_loop(&mut self) {
        let free = |reg: u8| reg != self.input_reg && self.reserved & bit(reg) == 0;
        let Some(counter) = LOOP_COUNTERS.into_iter().find(|&reg| free(reg)) else {
            return self.alu();
        };
        let trips = 1 + self.source.below(6) as i32;
        let up = self.source.chance(128);
        self.emit(Insn::new(MOV64_IMM, counter, 0, 0, if up { 0 } else { trips }));
        self.defined |= bit(counter);
        self.reserved |= bit(counter);
        let start = self.insns.len();
        let at_start = self.defined;
        let items = 1 + self.source.below(4);
        self.nested_block(items);
        // The next trip reads what the first one could.
        self.restore(at_start);
        let (step, back) = if up {
            let step = self.source.pick(&[(ADD64_IMM, 1), (ADD32_IMM, 1), (SUB64_IMM, -1)]);
            let back = self.source.pick(&[
                (JLT_IMM, trips),
                (JSLT_IMM, trips),
                (JLE_IMM, trips - 1),
                (JNE_IMM, trips),
                (JLT32_IMM, trips),
                (JSLE32_IMM, trips - 1),
            ]);
            (step, back)
        } else {
            let step = self.source.pick(&[(SUB64_IMM, 1), (ADD64_IMM, -1), (SUB32_IMM, 1), (ADD32_IMM, -1)]);
            let back = self.source.pick(&[
                (JNE_IMM, 0),
                (JSGT_IMM, 0),
                (JGT_IMM, 0),
                (JNE32_IMM, 0),
                (JSGT32_IMM, 0),
                (JGE_IMM, 1),
                (JSGE32_IMM, 1),
                (JSET_IMM, 7),
            ]);
            (step, back)
        };
        self.emit(Insn::new(step.0, counter, 0, 0, step.1));
        let off = start as i64 - self.insns.len() as i64 - 1;
        self.emit(Insn::new(back.0, counter, 0, off as i16, back.1));
        self.reserved &= !bit(counter);
    }

    /// A loop that never ends, for the instruction budget to stop.
    fn unbounded_loop(&mut self) {
        let start = self.insns.len();
        let at_start = self.defined;
        // An empty body makes a conditional jump to itself, or a way out
        // and `ja -2`.
        let items = self.source.below(3);
        self.nested_block(items);
        self.restore(at_start);
        let kind = self.source.below(5);
        let reg = self.readable();
        if kind < 2 {
            self.never_taken_way_out();
        }
        let back = start as i64 - self.insns.len() as i64 - 1;
        let jump = match kind {
            0 => Insn::new(JA, 0, 0, back as i16, 0),
            1 => Insn::new(JA32, 0, 0, 0, back as i32),
            2 => Insn::new(JGE_IMM, reg, 0, back as i16, 0),
            3 => Insn::new(JEQ_REG, reg, reg, back as i16, 0),
            _ => Insn::new(JLE32_IMM, reg, 0, back as i16, -1),
        };
        self.emit(jump);
    }

    /// A jump over the `ja` back that follows, never taken (r10 is never
    /// 0): the loop keeps a way out, without which the verifier would
    /// refuse it, and still runs until the budget stops it.
    fn never_taken_way_out(&mut self) {
        self.emit(Insn::new(JEQ_IMM, FRAME_REG, 0, 1, 0));
    }

    /// Calls a later function, or rarely its own, which recurses until the
    /// call depth runs out.
    fn local_call(&mut self) {
        let callee = if self.function > 0 && self.source.chance(8) {
            self.function
        } else if self.function < self.callees {
            self.function + 1 + self.source.below((self.callees - self.function) as u32) as usize
        } else {
            return self.alu();
        };
        self.restore(ARG_REGS);
        self.calls.push((self.insns.len(), callee));
        self.emit(Insn::new(CALL, 0, CALL_LOCAL, 0, 0));
        self.after_call();
    }

    fn after_call(&mut self) {
        self.defined = (self.defined & !ARG_REGS) | bit(0);
    }

    fn helper_call(&mut self) {
        let index = self.source.pick(&HELPER_INDICES);
        self.restore(ARG_REGS);
        self.emit(Insn::new(CALL, 0, CALL_HELPER, 0, index as i32));
        self.after_call();
    }

    /// `callx` with a registered index, an unregistered one, or any value.
    fn indirect_call(&mut self) {
        let reg = if self.source.chance(8) {
            self.readable()
        } else {
            let reg = self.writable();
            let index = if self.source.chance(244) {
                u64::from(self.source.pick(&HELPER_INDICES))
            } else {
                self.source.pick(&UNREGISTERED_INDICES)
            };
            self.lddw(reg, index);
            self.defined |= bit(reg);
            reg
        };
        self.restore(ARG_REGS);
        self.emit(Insn::new(CALLX, reg, 0, 0, 0));
        self.after_call();
    }

    /// A legacy packet load into r0, mostly inside the input; outside it
    /// (past the end, negative, or with an index near i32's ends) the run
    /// ends with 0.
    fn packet_load(&mut self) {
        let size = self.source.pick(&[BPF_B, BPF_H, BPF_W]);
        let outside = self.source.chance(24);
        let offset = self.input_address(access_size(size) as i64, outside).off as i32;
        if self.source.chance(128) {
            self.emit(Insn::new(BPF_LD | BPF_ABS | size, 0, 0, 0, offset));
        } else {
            // index + imm = offset, the split chosen, so that the 32-bit
            // sum may wrap; sometimes an index with any value.
            let index = self.writable_except(bit(0));
            let value = match self.source.below(4) {
                0 => i32::MIN,
                1 => i32::MAX,
                2 => self.source.u32() as i32,
                _ => self.source.below(64) as i32,
            };
            self.emit(Insn::new(MOV32_IMM, index, 0, 0, value));
            self.defined |= bit(index);
            let imm = if self.source.chance(32) { self.source.imm() } else { offset.wrapping_sub(value) };
            self.emit(Insn::new(BPF_LD | BPF_IND | size, 0, index, 0, imm));
        }
        self.defined |= bit(0);
    }

    /// `exit` behind a conditional jump, in any function.
    fn early_exit(&mut self) {
        self.restore(bit(0));
        let mut jump = self.condition();
        jump.off = 1;
        self.emit(jump);
        self.emit(Insn::new(EXIT, 0, 0, 0, 0));
    }
}

/// A case's input, settings and program listing, for failure reports.
pub fn case_description(case: &GeneratedCase) -> String {
    let mut text = String::new();
    let hex: String = case.input.iter().map(|byte| format!("{byte:02x}")).collect();
    let _ = writeln!(text, "input ({} bytes): {hex}", case.input.len());
    let _ = writeln!(
        text,
        "instruction limit {}, unwind helper {:?}",
        case.config.instruction_limit,
        case.helpers.unwind()
    );
    for (index, section) in case.data.iter().enumerate() {
        let hex: String = section.bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        let access = if section.writable { "writable" } else { "read-only" };
        let _ =
            writeln!(text, "data section {index} ({}, {access}, {} bytes): {hex}", section.name, section.bytes.len());
    }
    for reloc in &case.data_relocs {
        let _ = writeln!(text, "lddw at pc {} = address of section {} + {}", reloc.pc, reloc.section, reloc.offset);
    }
    let _ = writeln!(text, "program ({} slots):", case.insns.len());
    text.push_str(&listing(&case.insns));
    text
}

/// The disassembly with each line's pc.
pub fn listing(insns: &[Insn]) -> String {
    let mut text = String::new();
    let mut pc = 0;
    for line in disasm::disassemble(insns).lines() {
        let _ = writeln!(text, "{pc:5}: {line}");
        // disassemble prints an lddw and its second slot as one line.
        let wide = insns.get(pc).is_some_and(|insn| insn.opc == LDDW)
            && insns.get(pc + 1).is_some_and(|next| *next == Insn::new(0, 0, 0, 0, next.imm));
        pc += if wide { 2 } else { 1 };
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExecErrorKind;

    const SEEDS: u64 = 3000;

    #[test]
    fn every_generated_program_verifies() {
        let fuzzer_like: [&[u8]; 4] = [&[], &[0xff; 64], &[0x80; 1000], &[7, 200, 13]];
        let cases = (0..SEEDS).map(program_from_seed).chain(fuzzer_like.into_iter().map(program_from_bytes));
        for (n, case) in cases.enumerate() {
            if let Err(error) = case.load() {
                panic!("case {n} does not verify: {error}\n{}", case_description(&case));
            }
        }
    }

    #[test]
    fn same_seed_gives_same_case() {
        for seed in [0, 1, 0xdead_beef] {
            let (a, b) = (program_from_seed(seed), program_from_seed(seed));
            assert_eq!((a.insns, a.input, a.config.instruction_limit), (b.insns, b.input, b.config.instruction_limit));
            assert_eq!(a.helpers.unwind(), b.helpers.unwind());
        }
    }

    #[test]
    fn every_accepted_form_is_generated() {
        let mut seen = vec![false; FORMS.len()];
        for case in (0..SEEDS).map(program_from_seed) {
            let mut pc = 0;
            while pc < case.insns.len() {
                let insn = &case.insns[pc];
                let form = form_of(insn).expect("generated programs verify");
                seen[FORMS.iter().position(|other| std::ptr::eq(other, form)).expect("a form of FORMS")] = true;
                pc += if form.is_wide() { 2 } else { 1 };
            }
        }
        for (form, seen) in FORMS.iter().zip(seen) {
            let alias = !std::ptr::eq(
                FORMS.iter().find(|other| other.opc == form.opc && other.selector == form.selector).unwrap(),
                form,
            );
            // The verifier refuses lddw's map forms; aliases print as their first name.
            let refused = form.opc == LDDW && form.selector != Selector::Src(LDDW_IMM64);
            assert!(seen || alias || refused, "no generated program has {} ({form:?})", form.mnemonic);
        }
    }

    #[test]
    fn every_way_to_stop_is_generated() {
        let mut returned = 0;
        let mut stops = std::collections::BTreeMap::new();
        for case in (0..SEEDS).map(program_from_seed) {
            let program = case.load().expect("generated programs verify");
            match program.execute(&mut case.input.clone()) {
                Ok(_) => returned += 1,
                Err(error) => {
                    let name = match error.kind {
                        ExecErrorKind::OutOfBounds { write: false, .. } => "out of bounds load",
                        ExecErrorKind::OutOfBounds { write: true, .. } => "out of bounds store",
                        ExecErrorKind::BadPacketPointer { .. } | ExecErrorKind::ShortContext { .. } => "bad context",
                        ExecErrorKind::ReadOnly { .. } => "read-only",
                        ExecErrorKind::UnknownHelper(_) => "unknown helper",
                        ExecErrorKind::BudgetExhausted(_) => "budget",
                        ExecErrorKind::CallDepthExceeded(_) => "call depth",
                        ExecErrorKind::NotAMap { .. }
                        | ExecErrorKind::HelperMemory { .. }
                        | ExecErrorKind::NotARecord { .. }
                        | ExecErrorKind::HelperArgument { .. } => "built-in helper",
                    };
                    *stops.entry(name).or_insert(0) += 1;
                }
            }
        }
        // Most programs should run to their end, or most instructions go untested.
        assert!(returned > SEEDS / 2, "only {returned} of {SEEDS} returned; stops: {stops:?}");
        for name in ["out of bounds load", "out of bounds store", "read-only", "unknown helper", "budget", "call depth"]
        {
            assert!(stops.contains_key(name), "no program stopped by {name}: {stops:?}");
        }
    }
}
