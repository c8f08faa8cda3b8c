//! Random programs that the Linux kernel's verifier accepts, to run as XDP
//! programs in the kernel ([`super::kernel`]) and in both of our engines.
//!
//! [`testgen`](super::testgen) explores what only our engines allow (custom
//! helpers, faults, endless loops, pointers as data); these programs stay
//! inside what the kernel proves safe, so that its JIT can be the third
//! engine:
//! - every register gets a value the verifier cannot know (8 bytes of the
//!   packet, behind a `data + 88 > data_end` guard) before anything reads it,
//!   and the context and packet pointers are overwritten at once;
//! - the stack is touched only at constant, aligned offsets in the top
//!   [`STACK_BYTES`], which the prologue writes first;
//! - atomics work on the stack, and a fetch never writes a loop's counter;
//! - branches go forward over a block or around an `else` block (the kernel
//!   refuses code that no path reaches), and loops count a constant number
//!   of trips, so the verifier can walk each one;
//! - division by an immediate 0 and shifts by an immediate past the width,
//!   which the kernel refuses at load, are left out; by a register, they
//!   are in.
//!
//! - the prologue spills the context and the packet pointer below those
//!   bytes, where nothing else writes: packet accesses and the helpers that
//!   take the context load them from there, and a packet access ends by
//!   loading a value over the pointer, so no pointer is left as data;
//! - helper calls (`bpf_csum_diff`, `bpf_xdp_load_bytes`,
//!   `bpf_xdp_store_bytes`) take constant sizes and stack buffers the
//!   prologue wrote, and local calls go to subprograms that start by giving
//!   every register and their own stack values; after either, r1 to r5 are
//!   loaded again from the stack, as the call left them unreadable.
//!
//! The main program has one `exit` for the result, as its last instruction
//! before the subprograms, so that [`KernelCase::high_half`] can put
//! `r0 >>= 32` in front of it: XDP's test run returns only the low 32 bits
//! of r0.

use super::testgen::{ATOMIC_OPS, BINARY_OPS, ByteSource, CONDITIONS, seed_bytes};
use crate::isa::*;

/// The bytes below r10 that programs use, all written by the prologue.
pub const STACK_BYTES: i16 = 64;
/// The packet every case runs over is this long; the prologue reads the
/// first [`PACKET_READ`] bytes.
pub const PACKET_LEN: usize = 96;
const PACKET_READ: i32 = 88;
/// Where the prologue spills the packet pointer (`data`) and the context.
const PACKET_SLOT: i16 = -STACK_BYTES - 8;
const CONTEXT_SLOT: i16 = -STACK_BYTES - 16;
/// Local calls per program, each to a subprogram of its own.
const MAX_CALLS: u32 = 2;
/// Blocks nest at most this deep, and loops at most two deep, so that the
/// verifier's walk stays far below its limits.
const MAX_NESTING: u32 = 3;
const MAX_LOOPS: u32 = 2;
/// The registers that count a loop's trips.
const LOOP_COUNTERS: [u8; 4] = [6, 7, 8, 9];
const LOADS: [u8; 7] = [LDXB, LDXH, LDXW, LDXDW, LDXSB, LDXSH, LDXSW];
const SIZES: [u8; 4] = [BPF_B, BPF_H, BPF_W, BPF_DW];

/// A program and the packet it runs over.
#[derive(Clone, Debug)]
pub struct KernelCase {
    /// Returns r0 whole; instruction `exit` ends the main program and
    /// returns it, and the subprograms follow it.
    pub insns: Vec<Insn>,
    pub exit: usize,
    pub packet: Vec<u8>,
}

impl KernelCase {
    /// The program with `r0 >>= 32` before the main program's `exit`: a
    /// jump to that `exit` now lands on the shift, so the program returns
    /// r0's high half. Local calls reach past it, one instruction further.
    pub fn high_half(&self) -> Vec<Insn> {
        let mut insns = self.insns.clone();
        for insn in &mut insns[..self.exit] {
            if insn.opc == CALL && insn.src == CALL_LOCAL {
                insn.imm += 1;
            }
        }
        insns.insert(self.exit, Insn::new(RSH64_IMM, 0, 0, 0, 32));
        insns
    }
}

/// The case that `seed` names; the same seed always gives the same case.
pub fn case_from_seed(seed: u64) -> KernelCase {
    case_from_bytes(&seed_bytes(seed))
}

/// The case that `data` describes; any bytes give one.
pub fn case_from_bytes(data: &[u8]) -> KernelCase {
    let mut source = ByteSource::new(data);
    let packet = (0..PACKET_LEN).map(|_| source.byte()).collect();
    let mut generator = Generator {
        source,
        insns: Vec::new(),
        reserved: 0,
        nesting: 0,
        loops: 0,
        in_subprogram: false,
        calls: Vec::new(),
        subprograms: Vec::new(),
    };
    generator.prologue();
    let items = 8 + generator.source.below(32);
    generator.block(items);
    let exit = generator.insns.len();
    generator.emit(Insn::new(EXIT, 0, 0, 0, 0));
    for (at, subprogram) in std::mem::take(&mut generator.calls) {
        let start = generator.insns.len();
        generator.insns[at].imm = (start - at - 1) as i32;
        generator.insns.extend(&generator.subprograms[subprogram]);
    }
    KernelCase { insns: generator.insns, exit, packet }
}

struct Generator<'a> {
    source: ByteSource<'a>,
    insns: Vec<Insn>,
    /// Counters of the enclosing loops, which nothing else may write.
    reserved: u16,
    nesting: u32,
    loops: u32,
    /// Generating a subprogram: its frame holds no spilled pointers, and it
    /// makes no calls.
    in_subprogram: bool,
    /// Each local call's instruction and the subprogram it calls.
    calls: Vec<(usize, usize)>,
    subprograms: Vec<Vec<Insn>>,
}

impl Generator<'_> {
    fn emit(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    /// r1 = data, r2 = data_end; leaves with 0 when the packet is short
    /// (never: it is [`PACKET_LEN`] bytes), else loads every register from
    /// the packet, r1 last, and writes the top of the stack.
    /// Also spills the context and `data` to their slots.
    fn prologue(&mut self) {
        self.emit(Insn::new(STXDW, FRAME_REG, 1, CONTEXT_SLOT, 0));
        self.emit(Insn::new(LDXW, 2, 1, 4, 0));
        self.emit(Insn::new(LDXW, 1, 1, 0, 0));
        self.emit(Insn::new(MOV64_REG, 3, 1, 0, 0));
        self.emit(Insn::new(ADD64_IMM, 3, 0, 0, PACKET_READ));
        self.emit(Insn::new(JLE_REG, 3, 2, 2, 0));
        self.emit(Insn::new(MOV64_IMM, 0, 0, 0, 0));
        self.emit(Insn::new(EXIT, 0, 0, 0, 0));
        self.emit(Insn::new(STXDW, FRAME_REG, 1, PACKET_SLOT, 0));
        for (reg, slot) in [0u8, 2, 3, 4, 5, 6, 7, 8, 9, 1].into_iter().zip(0i16..) {
            self.emit(Insn::new(LDXDW, reg, 1, slot * 8, 0));
        }
        self.write_stack();
    }

    /// Writes the top [`STACK_BYTES`] of the frame from random registers.
    fn write_stack(&mut self) {
        for slot in 0..STACK_BYTES / 8 {
            let src = self.source.below(10) as u8;
            self.emit(Insn::new(STXDW, FRAME_REG, src, -8 - slot * 8, 0));
        }
    }

    /// After a call: r1 to r5, which it left unreadable, loaded from the
    /// stack.
    fn reload_arguments(&mut self) {
        for reg in 1..=5 {
            let off = self.stack_offset(8);
            self.emit(Insn::new(LDXDW, reg, FRAME_REG, off, 0));
        }
    }

    fn block(&mut self, items: u32) {
        for _ in 0..items {
            self.item();
        }
    }

    fn nested_block(&mut self, items: u32) {
        self.nesting += 1;
        self.block(items);
        self.nesting -= 1;
    }

    fn item(&mut self) {
        let nests = self.nesting < MAX_NESTING;
        match self.source.byte() {
            0..=69 => self.alu(),
            70..=89 => self.unary(),
            90..=99 => self.wide_constant(),
            100..=129 => self.load(),
            130..=154 => self.store(),
            155..=169 => self.atomic(),
            170..=179 if !self.in_subprogram => self.packet_access(),
            180..=184 if !self.in_subprogram => self.helper_call(),
            185..=187 if !self.in_subprogram && self.calls.len() < MAX_CALLS as usize => self.local_call(),
            188..=214 if nests => self.branch(),
            215..=234 if nests => self.if_else(),
            235..=255 if nests && self.loops < MAX_LOOPS => self.bounded_loop(),
            _ => self.alu(),
        }
    }

    /// Any register: all hold values.
    fn readable(&mut self) -> u8 {
        self.source.below(10) as u8
    }

    /// A register that no enclosing loop counts with.
    fn writable(&mut self) -> u8 {
        loop {
            let reg = self.source.below(10) as u8;
            if self.reserved & 1 << reg == 0 {
                return reg;
            }
        }
    }

    /// A binary ALU or ALU32 operation, signed division and modulo and
    /// `movsx` among them.
    fn alu(&mut self) {
        let wide = self.source.chance(128);
        let class = if wide { BPF_ALU64 } else { BPF_ALU };
        let op = self.source.pick(&BINARY_OPS);
        let dst = self.writable();
        let signed = match op {
            BPF_DIV | BPF_MOD => self.source.below(2) as i16,
            _ => 0,
        };
        let insn = if self.source.chance(128) {
            let imm = match op {
                BPF_LSH | BPF_RSH | BPF_ARSH => self.source.below(if wide { 64 } else { 32 }) as i32,
                BPF_DIV | BPF_MOD => match self.source.imm() {
                    0 => -1,
                    divisor => divisor,
                },
                _ => self.source.imm(),
            };
            Insn::new(class | BPF_K | op, dst, 0, signed, imm)
        } else {
            let src = self.readable();
            let off = match (op, wide) {
                (BPF_MOV, true) => self.source.pick(&[0, 0, 8, 16, 32]),
                (BPF_MOV, false) => self.source.pick(&[0, 0, 8, 16]),
                _ => signed,
            };
            Insn::new(class | BPF_X | op, dst, src, off, 0)
        };
        self.emit(insn);
    }

    /// neg and the byte swaps.
    fn unary(&mut self) {
        let dst = self.writable();
        if self.source.chance(64) {
            let opc = if self.source.chance(128) { NEG64 } else { NEG32 };
            self.emit(Insn::new(opc, dst, 0, 0, 0));
        } else {
            let opc = self.source.pick(&[LE, BE, BSWAP]);
            let width = self.source.pick(&[16, 32, 64]);
            self.emit(Insn::new(opc, dst, 0, 0, width));
        }
    }

    fn wide_constant(&mut self) {
        let dst = self.writable();
        let value = self.source.wide();
        self.emit(Insn::new(LDDW, dst, 0, 0, value as i32));
        self.emit(Insn::new(0, 0, 0, 0, (value >> 32) as i32));
    }

    /// An offset below r10 for a `size`-byte access, aligned to the size
    /// as the kernel requires on the stack.
    fn stack_offset(&mut self, size: i16) -> i16 {
        let slots = STACK_BYTES / size;
        -size - self.source.below(slots as u32) as i16 * size
    }

    fn load(&mut self) {
        let opc = self.source.pick(&LOADS);
        let off = self.stack_offset(access_size(opc) as i16);
        let dst = self.writable();
        self.emit(Insn::new(opc, dst, FRAME_REG, off, 0));
    }

    fn store(&mut self) {
        let size = self.source.pick(&SIZES);
        let off = self.stack_offset(access_size(size) as i16);
        if self.source.chance(96) {
            let imm = self.source.imm();
            self.emit(Insn::new(BPF_ST | BPF_MEM | size, FRAME_REG, 0, off, imm));
        } else {
            let src = self.readable();
            self.emit(Insn::new(BPF_STX | BPF_MEM | size, FRAME_REG, src, off, 0));
        }
    }

    /// Every atomic operation, 32 and 64 bits, on the stack; a cmpxchg
    /// (which writes r0, never a loop's counter) sometimes finds the value
    /// it expects.
    fn atomic(&mut self) {
        let (opc, size) = if self.source.chance(128) { (ATOMIC64, 8) } else { (ATOMIC32, 4) };
        let op = self.source.pick(&ATOMIC_OPS);
        let off = self.stack_offset(size);
        // A fetch writes its source register, except cmpxchg's.
        let src = if op & ATOMIC_FETCH != 0 && op != ATOMIC_CMPXCHG { self.writable() } else { self.readable() };
        if op == ATOMIC_CMPXCHG && self.source.chance(128) {
            let load = if size == 8 { LDXDW } else { LDXW };
            self.emit(Insn::new(load, 0, FRAME_REG, off, 0));
        }
        self.emit(Insn::new(opc, FRAME_REG, src, off, op));
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

    /// A conditional jump over a nested block, sometimes an empty one.
    fn branch(&mut self) {
        let at = self.insns.len();
        let jump = self.condition();
        self.emit(jump);
        let items = self.source.below(5);
        self.nested_block(items);
        self.insns[at].off = (self.insns.len() - at - 1) as i16;
    }

    /// `if (cond) { then } else { otherwise }`: the `then` block ends with
    /// `ja` or `gotol` over the other.
    fn if_else(&mut self) {
        let at = self.insns.len();
        let jump = self.condition();
        self.emit(jump);
        let items = 1 + self.source.below(4);
        self.nested_block(items);
        let over = self.insns.len();
        let long = self.source.chance(96);
        self.emit(Insn::new(if long { JA32 } else { JA }, 0, 0, 0, 0));
        self.insns[at].off = (self.insns.len() - at - 1) as i16;
        let items = 1 + self.source.below(4);
        self.nested_block(items);
        let distance = self.insns.len() - over - 1;
        if long {
            self.insns[over].imm = distance as i32;
        } else {
            self.insns[over].off = distance as i16;
        }
    }

    /// A loop of 1 to 4 trips, its counter in a register its body leaves
    /// alone, counted down by a 64- or 32-bit step.
    fn bounded_loop(&mut self) {
        let Some(counter) = LOOP_COUNTERS.into_iter().find(|&reg| self.reserved & 1 << reg == 0) else {
            return self.alu();
        };
        let trips = 1 + self.source.below(4) as i32;
        self.emit(Insn::new(MOV64_IMM, counter, 0, 0, trips));
        self.reserved |= 1 << counter;
        self.loops += 1;
        let start = self.insns.len();
        let items = 1 + self.source.below(4);
        self.nested_block(items);
        let step = self.source.pick(&[(SUB64_IMM, 1), (ADD64_IMM, -1), (SUB32_IMM, 1)]);
        self.emit(Insn::new(step.0, counter, 0, 0, step.1));
        let back = self.source.pick(&[JNE_IMM, JSGT_IMM, JGT_IMM, JNE32_IMM, JSGT32_IMM]);
        let off = start as i64 - self.insns.len() as i64 - 1;
        self.emit(Insn::new(back, counter, 0, off as i16, 0));
        self.loops -= 1;
        self.reserved &= !(1 << counter);
    }

    /// A register loaded with `data`, sometimes a store into the packet
    /// through it (of another register, or an immediate), then a load from
    /// the packet over the pointer. All within the [`PACKET_READ`] bytes the
    /// guard proved; unaligned, as the kernel allows on x86-64.
    fn packet_access(&mut self) {
        let pointer = self.writable();
        self.emit(Insn::new(LDXDW, pointer, FRAME_REG, PACKET_SLOT, 0));
        if self.source.chance(160) {
            let size = self.source.pick(&SIZES);
            let off = self.source.below((PACKET_READ - access_size(size) as i32 + 1) as u32) as i16;
            let src = loop {
                let src = self.readable();
                if src != pointer {
                    break src;
                }
            };
            if self.source.chance(64) {
                let imm = self.source.imm();
                self.emit(Insn::new(BPF_ST | BPF_MEM | size, pointer, 0, off, imm));
            } else {
                self.emit(Insn::new(BPF_STX | BPF_MEM | size, pointer, src, off, 0));
            }
        }
        let opc = self.source.pick(&LOADS);
        let off = self.source.below((PACKET_READ - access_size(opc) as i32 + 1) as u32) as i16;
        self.emit(Insn::new(opc, pointer, pointer, off, 0));
    }

    /// A stack buffer of the prologue's bytes: r10 plus an offset in `reg`,
    /// and its length, a multiple of 4 when `words`.
    fn stack_buffer(&mut self, reg: u8, words: bool) -> i32 {
        let unit = if words { 4 } else { 1 };
        let len = unit * (1 + self.source.below((STACK_BYTES / unit) as u32) as i16);
        let start = -len - unit * self.source.below(((STACK_BYTES - len) / unit + 1) as u32) as i16;
        self.emit(Insn::new(MOV64_REG, reg, FRAME_REG, 0, 0));
        self.emit(Insn::new(ADD64_IMM, reg, 0, 0, i32::from(start)));
        i32::from(len)
    }

    /// `bpf_csum_diff` over stack buffers (either may be empty), or
    /// `bpf_xdp_load_bytes`/`bpf_xdp_store_bytes` between the stack and the
    /// packet, sometimes reaching past its end (the helper then fails).
    fn helper_call(&mut self) {
        use crate::helpers::linux::{CSUM_DIFF, XDP_LOAD_BYTES, XDP_STORE_BYTES};
        let helper = self.source.pick(&[CSUM_DIFF, XDP_LOAD_BYTES, XDP_STORE_BYTES]);
        if helper == CSUM_DIFF {
            for (pointer, size) in [(1, 2), (3, 4)] {
                if self.source.chance(32) {
                    self.emit(Insn::new(MOV64_IMM, pointer, 0, 0, 0));
                    self.emit(Insn::new(MOV64_IMM, size, 0, 0, 0));
                } else {
                    let len = self.stack_buffer(pointer, true);
                    self.emit(Insn::new(MOV64_IMM, size, 0, 0, len));
                }
            }
            // r5, the seed, keeps its value.
        } else {
            self.emit(Insn::new(LDXDW, 1, FRAME_REG, CONTEXT_SLOT, 0));
            let len = self.stack_buffer(3, false);
            let offset = self.source.below(PACKET_LEN as u32 + 8) as i32;
            self.emit(Insn::new(MOV64_IMM, 2, 0, 0, offset));
            self.emit(Insn::new(MOV64_IMM, 4, 0, 0, len));
        }
        self.emit(Insn::new(CALL, 0, CALL_HELPER, 0, helper as i32));
        self.reload_arguments();
    }

    /// A call to a new subprogram, which gives r0 and r6 to r9 values from
    /// its arguments, writes its own stack, runs a block and returns r0.
    fn local_call(&mut self) {
        let at = self.insns.len();
        self.emit(Insn::new(CALL, 0, CALL_LOCAL, 0, 0));
        self.calls.push((at, self.subprograms.len()));
        let caller = (std::mem::take(&mut self.insns), self.reserved, self.nesting, self.loops);
        (self.reserved, self.nesting, self.loops, self.in_subprogram) = (0, 0, 0, true);
        for reg in [0u8, 6, 7, 8, 9] {
            let src = 1 + self.source.below(5) as u8;
            self.emit(Insn::new(MOV64_REG, reg, src, 0, 0));
        }
        self.write_stack();
        let items = 2 + self.source.below(12);
        self.block(items);
        self.emit(Insn::new(EXIT, 0, 0, 0, 0));
        let subprogram = std::mem::replace(&mut self.insns, caller.0);
        self.subprograms.push(subprogram);
        (self.reserved, self.nesting, self.loops, self.in_subprogram) = (caller.1, caller.2, caller.3, false);
        self.reload_arguments();
    }
}
