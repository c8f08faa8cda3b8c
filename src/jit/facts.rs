//! What the JIT knows of the registers' values at an instruction: enough to
//! prove an access inside the current stack frame, a region or the input,
//! so that its check can be left out.
//!
//! A value is tracked as a constant, r10 plus a constant, the input's
//! length, or a bounded unknown plus a constant (`s + c`, `0 <= s <= max`),
//! on its own (a scalar) or added to the input's address. Each unknown has
//! an identity, shared by the registers copied from it, and the facts learnt
//! from comparisons with the length are kept per unknown: "`s + room <=
//! length`". So an offset compared with the length and then added to the
//! input's address (the way C filters check a header before reading it)
//! gives an address known to be in the input, whichever came first. The
//! input's end (address plus length, plus a constant) is tracked too, and
//! an input address compared with it teaches the same fact of its offset:
//! the pointer guards of C filters, `if (p + 20 > end) return`. A packet
//! pointer an XDP program loads from its context block is an input address
//! too (sound from entry on: see `xdp_context::CONTEXT_LOAD`), with an
//! unknown offset at most the length; an input address compared with
//! another one, as with `data_end`, teaches the same fact. Where
//! paths join, the values they agree on stay; differing ones become a fresh
//! unknown covering both, with the facts both paths had. At a loop head a
//! candidate invariant stands for every turn: [`Facts::fits`] says whether
//! a state arriving there is one of its cases, [`Facts::widen`] makes a
//! candidate that covers one more, keeping copies of a counter copies and
//! a counter that stays below the length bounded by it.

use std::mem::MaybeUninit;

use crate::image::{ProgramType, xdp_context};
use crate::isa::*;

/// Bounds kept on offsets and unknowns, far below where a sum of two could
/// wrap: an input is far shorter, so a comparison with the length that
/// holds says the same of the mathematical value as of the wrapped one.
const LIMIT: i64 = 1 << 60;

/// Facts are kept for at most this many unknowns: as many as the registers
/// can name at once (r10 is always the frame), so that a fact about an
/// unknown some register holds always finds an entry.
const ROOMS: usize = FRAME_REG as usize;

/// Inputs are shorter than this: they are slices of a process's memory,
/// whose user addresses on x86-64 stay below 2^47. So an unknown known to
/// be `room` below the length is below `MAX_LEN - room`: how a loop's
/// counter stays bounded from one turn to the next.
const MAX_LEN: i64 = 1 << 47;

/// `s + c`, where `s` is an unknown in `[0, max]` named by `id` (id 0: `s`
/// is 0 and `max` is 0, the offset is the constant `c`).
// Packed to 4 bytes, so that a value holding one takes 24 bytes rather
// than 32: facts hold eleven and are copied and compared many times a walk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C, packed(4))]
pub(super) struct Offset {
    id: u32,
    max: u64,
    c: i64,
}

const _: () = assert!(size_of::<Value>() == 24);

impl Offset {
    const fn constant(c: i64) -> Offset {
        Offset { id: 0, max: 0, c }
    }

    /// Within the bounds that keep sums exact, or `None`.
    fn checked(self) -> Option<Offset> {
        let top = (self.c as i128) + self.max as i128;
        (self.c >= -LIMIT && top <= LIMIT as i128).then_some(self)
    }

    fn plus(self, k: i64) -> Option<Offset> {
        Offset { c: self.c.checked_add(k)?, ..self }.checked()
    }

    fn lowest(self) -> i64 {
        self.c
    }

    fn highest(self) -> i64 {
        self.c + self.max as i64
    }
}

/// What is known of a register's value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Value {
    Unknown,
    /// Exactly this.
    Const(u64),
    /// r10 plus this (wrapping).
    Frame(i64),
    /// The input's length.
    Len,
    /// A number: the offset itself, never below 0.
    Scalar(Offset),
    /// The input's address plus the offset.
    Input(Offset),
    /// The input's end (its address plus its length) plus this, within
    /// `[-LIMIT, LIMIT]`: what C filters compare their packet pointers with.
    End(i64),
    /// What a map lookup the code makes itself returned
    /// ([`super::lookups`]): the start of one of the map's values, of
    /// `size` bytes, in memory the program may write when `writable`; or
    /// 0, unless `null` is false (a comparison with 0 said it is not).
    Lookup {
        size: u32,
        writable: bool,
        null: bool,
    },
}

/// What the facts say of the bytes an access touches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum AccessPlace {
    /// `r10 + start`, for `start` of any sign.
    Frame(i64),
    /// Inside the input.
    Input,
    /// At this address.
    Address(u64),
    /// At `start` from the start of a map's value of `size` bytes.
    MapValue {
        start: i64,
        size: u32,
        writable: bool,
    },
    Unknown,
}

/// Hands out the identities of unknowns, never twice in one analysis.
pub(super) struct Ids(u32);

impl Ids {
    pub(super) fn new() -> Ids {
        Ids(0)
    }

    fn fresh(&mut self, max: u64, c: i64) -> Option<Offset> {
        self.0 += 1;
        Offset { id: self.0, max, c }.checked()
    }

    fn scalar(&mut self, max: u64) -> Value {
        self.fresh(max, 0).map_or(Value::Unknown, Value::Scalar)
    }
}

/// The register values and facts at one instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Facts {
    /// r0-r10, the registers the verifier lets a program name: facts are
    /// copied, joined and compared many times a walk, so they stay small.
    values: [Value; NUM_REGS],
    /// The input is at least this long.
    len_min: u64,
    /// Unknown `room_ids[i]` plus `rooms[i]` is at most the length (id 0:
    /// an empty entry). Apart, so that looking for an id reads ids only.
    room_ids: [u32; ROOMS],
    rooms: [i64; ROOMS],
    /// r0-r9 that may still hold the value the run started with: the code
    /// must set up those some instruction reads.
    unwritten: Regs,
}

impl Facts {
    /// What is known anywhere: r10 is the frame pointer.
    pub(super) fn fresh() -> Facts {
        let mut values = [Value::Unknown; NUM_REGS];
        values[FRAME_REG as usize] = Value::Frame(0);
        Facts { values, len_min: 0, room_ids: [0; ROOMS], rooms: [0; ROOMS], unwritten: Regs::WRITABLE }
    }

    /// On entry, as the interpreter sets the registers: r1 the buffer's
    /// address, r2 its length, the others 0. The buffer is the input, but
    /// for an XDP program, whose input starts after its context block:
    /// there r1 is the block, [`Facts::context`].
    pub(super) fn entry(program_type: ProgramType) -> Facts {
        let mut facts = Facts::fresh();
        for value in &mut facts.values[..FRAME_REG as usize] {
            *value = Value::Const(0);
        }
        match program_type {
            ProgramType::Filter => (facts.values[1], facts.values[2]) = (Value::Input(Offset::constant(0)), Value::Len),
            // r2, the length with the block's, is no value tracked.
            ProgramType::Xdp => (facts.values[1], facts.values[2]) = (Facts::context(), Value::Unknown),
        }
        facts.unwritten = Regs::WRITABLE - (Regs::of(1) | Regs::of(2));
        facts
    }

    /// An XDP program's context block: the bytes before its input.
    pub(super) fn context() -> Value {
        Value::Input(Offset::constant(-(xdp_context::SIZE as i64)))
    }

    /// After a call returns: r0-r5 are the callee's, r6-r9 and r10 as they
    /// were (helpers cannot reach them; local calls restore them).
    pub(super) fn after_call(&self) -> Facts {
        let mut facts = *self;
        for value in &mut facts.values[..6] {
            *value = Value::Unknown;
        }
        // A callee may leave r1-r5 as they were; r0 it sets.
        facts.unwritten -= Regs::R0;
        facts
    }

    /// Knows nothing of the values of `regs`, as after a loop that may
    /// write them; which of them may still hold their value from the run's
    /// start stays as it was.
    pub(super) fn forget(&mut self, regs: Regs) {
        for reg in regs.iter() {
            self.values[reg as usize] = Value::Unknown;
        }
    }

    /// After a map lookup the code makes itself: r0 is the address of one
    /// of the map's values of `size` bytes, or 0.
    pub(super) fn returned_map_value(&mut self, size: u32, writable: bool) {
        self.set(0, Value::Lookup { size, writable, null: true });
    }

    /// After an 8-byte load of `reg` from a stack slot known to hold
    /// `value`, stored there from a register in the same function: the
    /// same 64 bits, so the same facts.
    pub(super) fn reload(&mut self, reg: u8, value: Value) {
        self.set(reg, value);
    }

    /// Of `reads` (the registers an instruction reads), those that may
    /// still hold their value from the start of the run (as bits).
    pub(super) fn read_unwritten(&self, reads: Regs) -> u16 {
        (reads & self.unwritten).bits()
    }

    pub(super) fn value(&self, reg: u8) -> Value {
        self.values.get(reg as usize).copied().unwrap_or(Value::Unknown)
    }

    fn set(&mut self, reg: u8, value: Value) {
        if let Some(slot) = self.values.get_mut(reg as usize) {
            *slot = value;
        }
        self.unwritten -= Regs::of(reg);
    }

    /// The room known for unknown `id`: `s + room <= length` (id 0, the
    /// unknown that is 0: the length's known minimum).
    fn room(&self, id: u32) -> Option<i64> {
        if id == 0 {
            return i64::try_from(self.len_min).ok();
        }
        self.room_ids.iter().position(|&entry| entry == id).map(|i| self.rooms[i])
    }

    /// Learns `s + room <= length` for unknown `id`.
    fn learn(&mut self, id: u32, room: i64) {
        if id == 0 {
            if let Ok(len_min) = u64::try_from(room) {
                self.len_min = self.len_min.max(len_min);
            }
            return;
        }
        if let Some(i) = self.room_ids.iter().position(|&entry| entry == id) {
            self.rooms[i] = self.rooms[i].max(room);
            return;
        }
        // An entry for an unknown no register holds any more is free.
        let live =
            |held: u32| self.values.iter().any(|v| matches!(v, Value::Scalar(o) | Value::Input(o) if o.id == held));
        if let Some(free) = (0..ROOMS).find(|&i| self.room_ids[i] == 0 || !live(self.room_ids[i])) {
            self.room_ids[free] = id;
            self.rooms[free] = room;
        }
    }

    /// What the `size` bytes at `[base + off]` are known to be.
    pub(super) fn place(&self, base: u8, off: i16, size: usize) -> AccessPlace {
        match self.value(base) {
            Value::Frame(c) => AccessPlace::Frame(c.wrapping_add(off as i64)),
            Value::Const(address) => AccessPlace::Address(address.wrapping_add(off as i64 as u64)),
            Value::Input(offset) => {
                // [input + s + c + off, + size) lies in [input, input + len)
                // when c + off >= 0 and s + c + off + size <= len, which
                // `s + room <= len` gives when c + off + size <= room. The
                // input then holds at least size > 0 bytes, so its address
                // is the real one.
                let start = offset.c + off as i64;
                match self.room(offset.id) {
                    Some(room) if start >= 0 && start + size as i64 <= room => AccessPlace::Input,
                    _ => AccessPlace::Unknown,
                }
            }
            Value::Lookup { size, writable, null: false } => {
                AccessPlace::MapValue { start: off as i64, size, writable }
            }
            Value::Unknown | Value::Len | Value::Scalar(_) | Value::End(_) | Value::Lookup { null: true, .. } => {
                AccessPlace::Unknown
            }
        }
    }

    /// Follows the instruction at `pc` (an lddw's both slots), except jumps,
    /// whose outcome [`Facts::assume`] follows, and calls
    /// ([`Facts::after_call`]); returns the register it writes, if any.
    pub(super) fn step(&mut self, insns: &[Insn], pc: usize, ids: &mut Ids) -> Option<u8> {
        let insn = insns[pc];
        let (dst, src) = (insn.dst, insn.src);
        let imm = insn.imm as i64;
        let class = insn.class();
        let value = match insn.opc {
            LDDW => Value::Const(insn.imm as u32 as u64 | (insns[pc + 1].imm as u32 as u64) << 32),
            MOV64_IMM => Value::Const(imm as u64),
            MOV32_IMM => Value::Const(imm as u32 as u64),
            MOV64_REG if insn.off == 0 => self.value(src),
            // A zero-extending copy of a value that fits 32 bits.
            MOV32_REG if insn.off == 0 => match self.value(src) {
                Value::Const(k) => Value::Const(k as u32 as u64),
                Value::Scalar(o) if o.highest() <= u32::MAX as i64 => Value::Scalar(o),
                _ => ids.scalar(u32::MAX as u64),
            },
            ADD64_IMM => self.add(self.value(dst), Value::Const(imm as u64), ids),
            SUB64_IMM => self.add(self.value(dst), Value::Const(imm.wrapping_neg() as u64), ids),
            ADD64_REG => self.add(self.value(dst), self.value(src), ids),
            AND64_IMM | AND32_IMM if imm >= 0 => ids.scalar(imm as u64),
            AND32_IMM => ids.scalar(u32::MAX as u64),
            LSH64_IMM | LSH32_IMM | LSH64_REG | LSH32_REG => {
                let width = if class == BPF_ALU { 32 } else { 64 };
                let top = if width == 32 { u32::MAX as u64 } else { LIMIT as u64 };
                // The largest value shifted by the largest amount.
                match (self.range(self.value(dst)), self.shift_range(insn, width)) {
                    (Some((_, hi)), Some((_, most)))
                        if (hi as u64).checked_shl(most).is_some_and(|v| v >> most == hi as u64 && v <= top) =>
                    {
                        ids.scalar((hi as u64) << most)
                    }
                    _ if width == 32 => ids.scalar(u32::MAX as u64),
                    _ => Value::Unknown,
                }
            }
            RSH64_IMM | RSH32_IMM | RSH64_REG | RSH32_REG => {
                let width = if class == BPF_ALU { 32 } else { 64 };
                let hi = match self.range(self.value(dst)) {
                    Some((_, hi)) if width == 64 || hi <= u32::MAX as i64 => hi as u64,
                    _ if width == 32 => u32::MAX as u64,
                    _ => u64::MAX,
                };
                // The largest value shifted by the smallest amount.
                let least = self.shift_range(insn, width).map_or(0, |(least, _)| least);
                ids.scalar(hi >> least)
            }
            // le/be/bswap of 16 or 32 bits; 64 keeps every bit.
            LE | BE | BSWAP => match imm {
                16 => ids.scalar(u16::MAX as u64),
                32 => ids.scalar(u32::MAX as u64),
                _ => Value::Unknown,
            },
            // A packet pointer from the XDP context block, which lies in the
            // input, its end included (see `xdp_context::CONTEXT_LOAD`).
            LDXDW if insn.imm != 0 => match ids.fresh(MAX_LEN as u64, 0) {
                Some(offset) => {
                    self.learn(offset.id, 0);
                    Value::Input(offset)
                }
                None => Value::Unknown,
            },
            // Every other 32-bit operation leaves a zero-extended result.
            _ if class == BPF_ALU => ids.scalar(u32::MAX as u64),
            _ if class == BPF_ALU64 => Value::Unknown,
            _ if class == BPF_LDX && insn.opc & MODE_MASK == BPF_MEM && access_size(insn.opc) < 8 => {
                ids.scalar((1u64 << (8 * access_size(insn.opc))) - 1)
            }
            // Wider loads, and what a fetching atomic returns (stores and
            // other atomics write nothing).
            _ => Value::Unknown,
        };
        // Every operation and every load from memory writes its dst (a
        // test in `isa` holds the forms to that), the most common case.
        let written = match class {
            BPF_ALU | BPF_ALU64 | BPF_LDX => dst,
            _ => insn.writes().first()?,
        };
        self.set(written, value);
        Some(written)
    }

    /// `[lowest, highest]` of a number, when known and never below 0.
    fn range(&self, value: Value) -> Option<(i64, i64)> {
        match value {
            Value::Const(k) if k <= LIMIT as u64 => Some((k as i64, k as i64)),
            Value::Scalar(o) if o.lowest() >= 0 => Some((o.lowest(), o.highest())),
            _ => None,
        }
    }

    /// The amounts a shift of `width` bits may shift by, when known: the
    /// source register's range when it lies below the width (the machine
    /// takes the amount modulo the width).
    fn shift_range(&self, insn: Insn, width: u32) -> Option<(u32, u32)> {
        if insn.opc & BPF_X == 0 {
            let shift = (insn.imm as u32) & (width - 1);
            return Some((shift, shift));
        }
        match self.range(self.value(insn.src)) {
            Some((lo, hi)) if hi < i64::from(width) => Some((lo as u32, hi as u32)),
            _ => None,
        }
    }

    fn add(&self, a: Value, b: Value, ids: &mut Ids) -> Value {
        let sum = |offset: Offset, k: u64| offset.plus(k as i64);
        match (a, b) {
            (Value::Const(x), Value::Const(y)) => Value::Const(x.wrapping_add(y)),
            (Value::Frame(c), Value::Const(k)) | (Value::Const(k), Value::Frame(c)) => {
                Value::Frame(c.wrapping_add(k as i64))
            }
            (Value::Input(o), Value::Const(k)) | (Value::Const(k), Value::Input(o)) => {
                sum(o, k).map_or(Value::Unknown, Value::Input)
            }
            (Value::Scalar(o), Value::Const(k)) | (Value::Const(k), Value::Scalar(o)) => {
                sum(o, k).filter(|o| o.lowest() >= 0).map_or(Value::Unknown, Value::Scalar)
            }
            // The input plus a number: the number's unknown, moved; or,
            // when both have one, a fresh unknown covering the sum.
            (Value::Input(o), Value::Scalar(s)) | (Value::Scalar(s), Value::Input(o)) if o.id == 0 => {
                s.plus(o.c).map_or(Value::Unknown, Value::Input)
            }
            (Value::Input(o), Value::Scalar(s)) | (Value::Scalar(s), Value::Input(o)) => {
                match (o.checked(), self.range(Value::Scalar(s))) {
                    (Some(o), Some((lo, hi))) => {
                        ids.fresh(o.max + (hi - lo) as u64, o.c + lo).map_or(Value::Unknown, Value::Input)
                    }
                    _ => Value::Unknown,
                }
            }
            // The input's address plus its length: its end.
            (Value::Input(o), Value::Len) | (Value::Len, Value::Input(o)) if o.id == 0 => Value::End(o.c),
            (Value::End(k), Value::Const(x)) | (Value::Const(x), Value::End(k)) => {
                match k.checked_add(x as i64).filter(|k| (-LIMIT..=LIMIT).contains(k)) {
                    Some(k) => Value::End(k),
                    None => Value::Unknown,
                }
            }
            (Value::Scalar(_), Value::Scalar(_)) => match (self.range(a), self.range(b)) {
                (Some((lo_a, hi_a)), Some((lo_b, hi_b))) => {
                    ids.fresh((hi_a + hi_b - lo_a - lo_b) as u64, lo_a + lo_b).map_or(Value::Unknown, Value::Scalar)
                }
                _ => Value::Unknown,
            },
            _ => Value::Unknown,
        }
    }

    /// Learns what the conditional jump `insn` says when it is `taken` (or
    /// not): where one side is the input's length and the other a known
    /// number, how far below the length the number is.
    pub(super) fn assume(&mut self, insn: Insn, taken: bool) {
        let wide = insn.class() == BPF_JMP;
        let uses_src = insn.opc & BPF_X != 0;
        let left = self.value(insn.dst);
        let right = if uses_src {
            self.value(insn.src)
        } else if wide {
            Value::Const(insn.imm as i64 as u64)
        } else {
            Value::Const(insn.imm as u32 as u64)
        };
        // Written as `a < b` (strict) or `a <= b`, where it holds.
        let op = insn.opc & OP_MASK;
        // A looked-up value compared with 0, all 64 bits: where it is not 0.
        if let (Value::Lookup { size, writable, null: true }, Value::Const(0), true) = (left, right, wide)
            && ((op == BPF_JNE) == taken && matches!(op, BPF_JEQ | BPF_JNE))
        {
            self.set(insn.dst, Value::Lookup { size, writable, null: false });
            return;
        }
        let signed = matches!(op, BPF_JSGT | BPF_JSGE | BPF_JSLT | BPF_JSLE);
        let (a, b, strict) = match (op, taken) {
            (BPF_JLT | BPF_JSLT, true) | (BPF_JGE | BPF_JSGE, false) => (left, right, true),
            (BPF_JLE | BPF_JSLE, true) | (BPF_JGT | BPF_JSGT, false) => (left, right, false),
            (BPF_JGT | BPF_JSGT, true) | (BPF_JLE | BPF_JSLE, false) => (right, left, true),
            (BPF_JGE | BPF_JSGE, true) | (BPF_JLT | BPF_JSLT, false) => (right, left, false),
            (BPF_JEQ, true) | (BPF_JNE, false) => {
                self.assume_at_most(left, right, false, wide, signed);
                (right, left, false)
            }
            _ => return,
        };
        self.assume_at_most(a, b, strict, wide, signed);
    }

    /// Learns from `a < b` (`strict`) or `a <= b` where `b` is the length,
    /// or where `a` is an input address and `b` the input's end.
    fn assume_at_most(&mut self, a: Value, b: Value, strict: bool, wide: bool, signed: bool) {
        if let (Value::Input(offset), Value::End(k)) = (a, b) {
            self.assume_below_end(offset, k, strict, wide, signed);
            return;
        }
        if let (Value::Input(a), Value::Input(b)) = (a, b) {
            self.assume_below_address(a, b, strict, wide, signed);
            return;
        }
        if b != Value::Len {
            return;
        }
        let offset = match a {
            Value::Const(k) => Offset::constant(if wide { k } else { k as u32 as u64 } as i64),
            Value::Scalar(o) => o,
            _ => return,
        };
        // A 32-bit comparison sees the length's low half, which is no more
        // than the length, when the number fits 32 bits (so it is its own
        // low half). A signed comparison says as much as an unsigned one
        // when both sides are at least 0: the length always is, the number
        // must be (as 32 bits, too). Offsets outside the bounds say nothing.
        let top = if !wide && signed {
            i32::MAX as i64
        } else if !wide {
            u32::MAX as i64
        } else {
            LIMIT
        };
        if offset.checked().is_none() || offset.lowest() < 0 || offset.highest() > top {
            return;
        }
        // s + c (+ 1) <= length.
        self.learn(offset.id, offset.c + strict as i64);
    }

    /// Learns from `input + offset < end + k` (`strict`) or `<=`: a guard
    /// of a packet pointer against the end, `if (p + 20 > end) return`.
    /// Only a 64-bit comparison sees whole addresses. The input lies below
    /// `MAX_LEN`, so `input + offset` and `end + k` are, as integers, well
    /// inside the signed range, where a signed comparison is exact. So is
    /// an unsigned one of them when `end + k` is not below 0, as `k >= 0`
    /// or the known length ensure; `input + offset` below 0 would read as
    /// more than any end, so that the comparison could not hold. Either
    /// way, `offset (+ 1) <= length + k`.
    fn assume_below_end(&mut self, offset: Offset, k: i64, strict: bool, wide: bool, signed: bool) {
        let end_not_below_zero = k >= 0 || i64::try_from(self.len_min).is_ok_and(|len_min| len_min >= -k);
        if !wide || offset.checked().is_none() || !(signed || end_not_below_zero) {
            return;
        }
        // s + c - k (+ 1) <= length.
        self.learn(offset.id, offset.c - k + strict as i64);
    }

    /// Learns from `input + a < input + b` (`strict`) or `<=`, where `b`'s
    /// unknown is known to be below the length: a guard of a packet pointer
    /// against another address in the input, as XDP programs compare theirs
    /// with `data_end`. As in [`Facts::assume_below_end`], only a 64-bit
    /// comparison sees whole addresses, a signed one is exact, and so is an
    /// unsigned one when `input + b` is not below 0, as `b.c >= 0` ensures.
    /// Then `s_a + c_a (+ 1) <= s_b + c_b` and `s_b + room_b <= length`
    /// give `s_a + c_a - c_b + room_b (+ 1) <= length`.
    fn assume_below_address(&mut self, a: Offset, b: Offset, strict: bool, wide: bool, signed: bool) {
        if !wide || a.checked().is_none() || b.checked().is_none() || !(signed || b.c >= 0) {
            return;
        }
        let Some(room_b) = self.room(b.id) else { return };
        let room = a.c.checked_sub(b.c).and_then(|d| d.checked_add(room_b)).and_then(|r| r.checked_add(strict as i64));
        if let Some(room) = room.filter(|room| (-LIMIT..=LIMIT).contains(room)) {
            self.learn(a.id, room);
        }
    }

    /// Becomes the facts that hold whichever of `self` and `other` held.
    pub(super) fn join(&mut self, other: &Facts, ids: &mut Ids) {
        // Most jumps teach nothing: both sides are the same.
        if self == other {
            return;
        }
        // Each register's value from the two sides' values and rooms, in
        // place: the rooms, and the length's minimum that is the room of
        // id 0, change only after.
        let mut covered = RegList::new();
        for reg in 0..NUM_REGS {
            let (mine, theirs) = (self.values[reg], other.values[reg]);
            if mine == theirs {
                continue;
            }
            self.values[reg] = if let (Some(a), Some(b)) = (self.number(mine), other.number(theirs)) {
                cover(a, b, ids, &mut covered).map_or(Value::Unknown, Value::Scalar)
            } else if let (Some(a), Some(b)) = (self.address(mine), other.address(theirs)) {
                cover(a, b, ids, &mut covered).map_or(Value::Unknown, Value::Input)
            } else {
                Value::Unknown
            };
        }
        self.len_min = self.len_min.min(other.len_min);
        self.unwritten |= other.unwritten;
        // Facts about an unknown both sides hold: the weaker.
        let (room_ids, rooms) = (self.room_ids, self.rooms);
        self.room_ids = [0; ROOMS];
        self.rooms = [0; ROOMS];
        for (&id, &room) in room_ids.iter().zip(&rooms).filter(|&(&id, _)| id != 0) {
            if let Some(theirs) = other.room(id) {
                self.learn(id, room.min(theirs));
            }
        }
        for (offset, room) in covered.iter() {
            self.learn(offset.id, room);
        }
    }

    /// Does every run in a state `self` describes also fit `candidate`
    /// (a loop head's invariant)? Each unknown of the candidate must stand
    /// for one and the same offset of `self` (an unknown of its own plus a
    /// constant) wherever it appears, within its bounds and with its facts.
    pub(super) fn fits(&self, candidate: &Facts) -> bool {
        if self.len_min < candidate.len_min || !(self.unwritten - candidate.unwritten).is_empty() {
            return false;
        }
        // Candidate unknown -> (this state's offset it stands for).
        let mut bound: RegList<(u32, Offset)> = RegList::new();
        for (theirs, mine) in candidate.values.iter().zip(&self.values) {
            let (wanted, found) = match (theirs, mine) {
                (Value::Unknown, _) => continue,
                (&Value::Scalar(wanted), _) => match number_offset(*mine) {
                    Some(found) => (wanted, found),
                    None => return false,
                },
                (&Value::Input(wanted), &Value::Input(found)) => (wanted, found),
                _ if theirs == mine => continue,
                _ => return false,
            };
            // The candidate's `s` is found's `s' + delta`.
            let delta = found.c - wanted.c;
            let stands_for = Offset { c: delta, ..found };
            if wanted.id == 0 {
                if found.id != 0 || delta != 0 {
                    return false;
                }
                continue;
            }
            match bound.find(|(id, _)| *id == wanted.id) {
                Some((_, earlier)) if earlier != stands_for => return false,
                Some(_) => continue,
                None => bound.push((wanted.id, stands_for)),
            }
            if delta < 0 || self.highest_unknown(found).is_none_or(|top| top + delta > wanted.max as i64) {
                return false;
            }
        }
        // The candidate's facts about its unknowns hold of what they stand for.
        bound.iter().all(|(id, stands_for)| match candidate.room(id) {
            None => true,
            Some(room) => self.room(stands_for.id).is_some_and(|mine| mine >= stands_for.c + room),
        })
    }

    /// The most an offset's unknown can be: its bound, or less when the
    /// facts put it below the length.
    fn highest_unknown(&self, offset: Offset) -> Option<i64> {
        let by_room = self.room(offset.id).map(|room| MAX_LEN - room);
        let max = i64::try_from(offset.max).ok()?;
        Some(by_room.map_or(max, |by_room| by_room.min(max)))
    }

    /// Becomes a candidate invariant that covers both `self` (the previous
    /// one) and `state`: registers they agree on stay; registers holding
    /// offsets on both sides become fresh unknowns, one per class of
    /// registers whose offsets differ alike on the two sides, so that copies
    /// of a loop counter stay copies; the rest become unknown.
    pub(super) fn widen(&mut self, state: &Facts, ids: &mut Ids) {
        // Each register's value in place, from the old values and rooms (the
        // length's minimum is the room of id 0): those change only after.
        // (their id, my id, difference) -> the fresh unknown for the class,
        // and its lift (below).
        let mut classes: RegList<((u32, u32, i64), Offset, i64)> = RegList::new();
        let mut facts: RegList<(u32, i64)> = RegList::new();
        for reg in 0..NUM_REGS {
            let (mine, theirs) = (&self.values[reg], &state.values[reg]);
            if mine == theirs {
                if let Value::Scalar(o) | Value::Input(o) = mine
                    && let Some(room) = self.room(o.id).zip(state.room(o.id)).map(|(a, b)| a.min(b))
                {
                    facts.push((o.id, room));
                }
                continue;
            }
            let pair = match (number_offset(*mine), number_offset(*theirs), mine, theirs) {
                (Some(a), Some(b), _, _) => Some((a, b, false)),
                (_, _, &Value::Input(a), &Value::Input(b)) => Some((a, b, true)),
                _ => None,
            };
            let widened = pair
                .and_then(|(a, b, input)| {
                    let d = b.c - a.c;
                    let key = (a.id, b.id, d);
                    let (offset, lift) = match classes.find(|(k, ..)| *k == key) {
                        Some((_, offset, lift)) => (offset, lift),
                        None => {
                            // g = a's unknown - min(0, d) = b's unknown + max(0, d).
                            // Where `state` goes past the old bound, the new
                            // one is MAX_LEN at once (a loop counter kept
                            // below the length stays there), else unknown:
                            // a bound creeping up by a step a round would
                            // never settle.
                            let old = self.highest_unknown(a)?.checked_sub(d.min(0))?;
                            let new = state.highest_unknown(b)?.checked_add(d.max(0))?;
                            let top = match new {
                                _ if new <= old => old,
                                _ if new <= MAX_LEN => MAX_LEN,
                                _ => return None,
                            };
                            // A number that a turn of the loop took below
                            // its own unknown's value (a counter going down)
                            // goes down to 0 at once: the class's unknown is
                            // g' = g + lift, taken as anywhere in [0, top +
                            // lift], where lift is b.c (= a.c + d), so that
                            // this register is g'. It would otherwise widen
                            // once a step, as far as it goes.
                            let going_down = !input && d < 0 && a.id == b.id && a.id != 0;
                            let lift = if going_down { b.c.max(0) } else { 0 };
                            let offset = ids.fresh(u64::try_from(top.checked_add(lift)?).ok()?, 0)?;
                            let room_a = self.room(a.id).map(|room| room + d.min(0));
                            let room_b = state.room(b.id).map(|room| room - d.max(0));
                            if let (Some(x), Some(y)) = (room_a, room_b)
                                && let Some(room) = x.min(y).checked_sub(lift)
                            {
                                facts.push((offset.id, room));
                            }
                            classes.push((key, offset, lift));
                            (offset, lift)
                        }
                    };
                    // value = g + a.c + min(0, d) = g' + a.c + min(0, d) - lift.
                    let value = offset.plus(a.c + d.min(0) - lift)?;
                    if input {
                        Some(Value::Input(value))
                    } else {
                        (value.lowest() >= 0).then_some(Value::Scalar(value))
                    }
                })
                .unwrap_or(Value::Unknown);
            self.values[reg] = widened;
        }
        self.len_min = self.len_min.min(state.len_min);
        self.unwritten |= state.unwritten;
        self.room_ids = [0; ROOMS];
        self.rooms = [0; ROOMS];
        for (id, room) in facts.iter() {
            self.learn(id, room);
        }
    }

    /// A number's offset and how far below the length its value is known
    /// to be (`value + headroom <= length`).
    fn number(&self, value: Value) -> Option<(Offset, Option<i64>)> {
        let offset = number_offset(value)?;
        Some((offset, self.headroom(offset)))
    }

    /// The offset of an input address, as [`Facts::number`].
    fn address(&self, value: Value) -> Option<(Offset, Option<i64>)> {
        match value {
            Value::Input(offset) => Some((offset, self.headroom(offset))),
            _ => None,
        }
    }

    fn headroom(&self, offset: Offset) -> Option<i64> {
        self.room(offset.id).map(|room| room - offset.c)
    }
}

/// A number's offset, as [`Facts::number`] without the facts' lookup.
fn number_offset(value: Value) -> Option<Offset> {
    match value {
        Value::Const(k) if k <= LIMIT as u64 => Some(Offset::constant(k as i64)),
        Value::Scalar(o) => Some(o),
        _ => None,
    }
}

/// A list of at most one entry per register (r0-r10), kept on the stack: joins,
/// fits and widenings each build some, many times in every walk.
struct RegList<T: Copy> {
    /// The first `len` are set; the others are left unset, as setting them
    /// all costs more than the rest of a small list's work.
    items: [MaybeUninit<T>; NUM_REGS],
    len: usize,
}

impl<T: Copy> RegList<T> {
    fn new() -> RegList<T> {
        RegList { items: [const { MaybeUninit::uninit() }; NUM_REGS], len: 0 }
    }

    /// Adds `item`; callers add at most one per register.
    fn push(&mut self, item: T) {
        self.items[self.len] = MaybeUninit::new(item);
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = T> + '_ {
        // SAFETY: `push` set the first `len` items.
        self.items[..self.len].iter().map(|item| unsafe { item.assume_init() })
    }

    fn find(&self, wanted: impl Fn(&T) -> bool) -> Option<T> {
        self.iter().find(wanted)
    }
}

/// A fresh unknown covering the offsets of both sides, and the room both
/// sides' headroom gives it, for `covered`.
fn cover(
    a: (Offset, Option<i64>),
    b: (Offset, Option<i64>),
    ids: &mut Ids,
    covered: &mut RegList<(Offset, i64)>,
) -> Option<Offset> {
    let low = a.0.lowest().min(b.0.lowest());
    let high = a.0.highest().max(b.0.highest());
    let offset = ids.fresh((high - low) as u64, low)?;
    if let (Some(x), Some(y)) = (a.1, b.1) {
        // value + min(x, y) <= length, and value = s + low.
        covered.push((offset, low + x.min(y)));
    }
    Some(offset)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Facts, Ids, MAX_LEN, Offset, Value};
    use crate::helpers::Helpers;
    use crate::image::ProgramType;
    use crate::isa::*;
    use crate::jit::JitProgram;
    use crate::program::{Config, Program};
    use crate::testing::engines;
    use crate::testing::testgen::{self, ByteSource};

    /// Value registers; r1 keeps the input's address and r2 its length, r8
    /// counts a loop's turns and r9 is a temporary.
    const VALUES: [u8; 5] = [3, 4, 5, 6, 7];

    /// A program in the shape of a C filter's header parsing: offsets loaded
    /// from the input, masked, shifted, added and copied; compared with the
    /// length (every kind of comparison, both widths, either way round,
    /// sometimes off by one); added to the input's address and read
    /// through (also two bytes at a time, as clang reads 16 bits, which the
    /// JIT fuses); with forward jumps that make paths meet. Every jump goes
    /// forward to the final `exit`, or over a few instructions.
    fn guarded_program(rng: &mut ByteSource) -> Vec<Insn> {
        let mut program = Generated {
            insns: vec![Insn::new(MOV64_IMM, 0, 0, 0, 0)],
            exits: Vec::new(),
            skips: Vec::new(),
            outlined: Vec::new(),
        };
        for &r in &VALUES {
            program.insns.push(Insn::new(MOV64_IMM, r, 0, 0, rng.below(24) as i32));
        }
        program.insns.push(Insn::new(MOV64_IMM, 8, 0, 0, 0));
        for _ in 0..4 + rng.below(20) {
            program.step(rng, 0);
        }
        let Generated { mut insns, exits, skips, outlined } = program;
        let exit = insns.len();
        insns.push(Insn::new(EXIT, 0, 0, 0, 0));
        for pc in exits {
            insns[pc].off = (exit - pc - 1) as i16;
        }
        for pc in skips {
            let span = (exit - pc - 1) as u64;
            let mut to = pc + 1 + rng.below(span.min(6) as u32 + 1) as usize;
            // Never into the middle of an lddw.
            while to > 0 && to < exit && insns[to - 1].opc == LDDW {
                to += 1;
            }
            insns[pc].off = (to - pc - 1) as i16;
        }
        for (pc, block) in outlined {
            insns[pc].off = (insns.len() - pc - 1) as i16;
            insns.extend(block);
            let back = (pc + 1) as i64 - insns.len() as i64 - 1;
            insns.push(Insn::new(JA, 0, 0, back as i16, 0));
        }
        insns
    }

    /// A program being generated, with the jumps whose targets come last:
    /// to the final exit, forward over a few instructions, and to a block
    /// placed after the exit that jumps back to the instruction after the
    /// jump (a jump back that closes no loop, unless the jump lies in one).
    struct Generated {
        insns: Vec<Insn>,
        exits: Vec<usize>,
        skips: Vec<usize>,
        outlined: Vec<(usize, Vec<Insn>)>,
    }

    impl Generated {
        /// One step of the program: an operation, a guard, a read, a jump
        /// forward, or (in at most one loop) a loop of a few steps.
        fn step(&mut self, rng: &mut ByteSource, loops: u32) {
            let Generated { insns, exits, skips, outlined } = self;
            let (x, y) = (rng.pick(&VALUES), rng.pick(&VALUES));
            let imm = rng.pick(&[0, 1, 2, 3, 4, 8, 14, 20, 40, 60, 255, -1, -4, 0x7fff_ffff, i32::MIN]);
            match rng.below(if loops < 2 { 23 } else { 21 }) {
                0 => insns.push(Insn::new(rng.pick(&[LDXB, LDXH, LDXW, LDXDW, LDXSB]), x, 1, rng.below(8) as i16, 0)),
                1 => insns.push(Insn::new(rng.pick(&[AND64_IMM, AND32_IMM]), x, 0, 0, imm)),
                2 if rng.below(3) == 0 => {
                    insns.push(Insn::new(rng.pick(&[LSH64_REG, LSH32_REG, RSH64_REG, RSH32_REG]), x, y, 0, 0))
                }
                2 => insns.push(Insn::new(
                    rng.pick(&[LSH64_IMM, LSH32_IMM, RSH64_IMM, RSH32_IMM]),
                    x,
                    0,
                    0,
                    rng.below(66) as i32,
                )),
                3 => insns.push(Insn::new(rng.pick(&[ADD64_IMM, SUB64_IMM, ADD32_IMM]), x, 0, 0, imm)),
                4 => insns.push(Insn::new(
                    rng.pick(&[ADD64_REG, MOV64_REG, MOV32_REG, SUB64_REG, MUL64_REG]),
                    x,
                    y,
                    0,
                    0,
                )),
                5 => insns.push(Insn::new(rng.pick(&[MOV64_IMM, MOV32_IMM]), x, 0, 0, imm)),
                6 => {
                    let value = rng.pick(&[u64::MAX, 1 << 62, (1 << 60) + 3, 1 << 32, 0xffff_ffff]);
                    insns.push(Insn::new(LDDW, x, 0, 0, value as i32));
                    insns.push(Insn::new(0, 0, 0, 0, (value >> 32) as i32));
                }
                7 => {
                    // A guard: compare with the length (or a copy), leave
                    // when it fails.
                    exits.push(insns.len());
                    insns.push(guard(rng, x, imm));
                }
                8 => {
                    // The same, laid out the other way: go on when it holds,
                    // else fall into an early exit.
                    let mut go_on = guard(rng, x, imm);
                    go_on.off = 1;
                    insns.push(go_on);
                    insns.push(Insn::new(EXIT, 0, 0, 0, 0));
                }
                9 | 10 => {
                    // A header check, as C filters make them: the offset
                    // plus a length compared with the input's length, then
                    // a read near that end, through the input's address
                    // plus the offset (computed before or after).
                    let k = rng.below(40) as i32;
                    let (size_op, size) = rng.pick(&[(LDXB, 1), (LDXH, 2), (LDXW, 4), (LDXDW, 8)]);
                    let off = (k - size + rng.below(5) as i32 - 2) as i16;
                    let early = rng.below(2) == 0;
                    if early {
                        insns.push(Insn::new(MOV64_REG, 9, 1, 0, 0));
                        insns.push(Insn::new(ADD64_REG, 9, x, 0, 0));
                    }
                    insns.push(Insn::new(MOV64_REG, y, x, 0, 0));
                    insns.push(Insn::new(ADD64_IMM, y, 0, 0, k));
                    exits.push(insns.len());
                    insns.push(guard(rng, y, imm));
                    if !early {
                        insns.push(Insn::new(MOV64_REG, 9, 1, 0, 0));
                        insns.push(Insn::new(ADD64_REG, 9, x, 0, 0));
                    }
                    insns.push(Insn::new(size_op, 0, 9, off, 0));
                }
                11 | 12 => {
                    // Read through the input's address plus a value.
                    let size_op = rng.pick(&[LDXB, LDXH, LDXW, LDXDW]);
                    insns.push(Insn::new(MOV64_REG, 9, 1, 0, 0));
                    insns.push(Insn::new(ADD64_REG, 9, x, 0, 0));
                    insns.push(Insn::new(size_op, 0, 9, rng.below(48) as i16 - 4, 0));
                }
                15 | 16 => {
                    // A 16-bit read as clang writes it, through the input's
                    // address plus a value (in a loop, one that walks the
                    // input): two byte loads, either shifted, or-ed.
                    let (low, high) = (rng.pick(&VALUES), rng.pick(&VALUES));
                    let off = rng.below(40) as i16;
                    insns.push(Insn::new(MOV64_REG, 9, 1, 0, 0));
                    insns.push(Insn::new(ADD64_REG, 9, x, 0, 0));
                    insns.push(Insn::new(LDXB, low, 9, off + 1, 0));
                    insns.push(Insn::new(LDXB, high, 9, off, 0));
                    let (shifted, other) = if rng.below(2) == 0 { (high, low) } else { (low, high) };
                    insns.push(Insn::new(LSH32_IMM, shifted, 0, 0, 8));
                    insns.push(Insn::new(OR32_REG, shifted, other, 0, 0));
                    insns.push(Insn::new(ADD64_REG, 0, shifted, 0, 0));
                }
                17 | 18 => {
                    // A pointer guard, as C filters make them: a packet
                    // pointer (the input's address plus a value, maybe plus
                    // another) plus a length compared with the end (the
                    // input's address plus its length, sometimes moved a
                    // little), then a read near that length through the
                    // pointer: some reads go past what the guard covers.
                    let k = rng.below(40) as i32;
                    let (size_op, size) = rng.pick(&[(LDXB, 1), (LDXH, 2), (LDXW, 4), (LDXDW, 8)]);
                    let off = (k - size + rng.below(5) as i32 - 2) as i16;
                    insns.push(Insn::new(MOV64_REG, y, 1, 0, 0));
                    insns.push(Insn::new(ADD64_REG, y, x, 0, 0));
                    if rng.below(3) == 0 {
                        insns.push(Insn::new(ADD64_REG, y, rng.pick(&VALUES), 0, 0));
                    }
                    let (first, second) = if rng.below(2) == 0 { (1, 2) } else { (2, 1) };
                    insns.push(Insn::new(MOV64_REG, 9, first, 0, 0));
                    insns.push(Insn::new(ADD64_REG, 9, second, 0, 0));
                    let moved = rng.pick(&[0, 0, 0, 1, -1, -4, 8]);
                    if moved != 0 {
                        insns.push(Insn::new(ADD64_IMM, 9, 0, 0, moved));
                    }
                    insns.push(Insn::new(MOV64_REG, 0, y, 0, 0));
                    insns.push(Insn::new(ADD64_IMM, 0, 0, 0, k));
                    exits.push(insns.len());
                    insns.push(pointer_guard(rng));
                    insns.push(Insn::new(size_op, 0, y, off, 0));
                }
                14 => {
                    // A forward jump over what follows: paths meet.
                    skips.push(insns.len());
                    insns.push(Insn::new(BPF_JMP | BPF_K | rng.pick(&[BPF_JEQ, BPF_JGT, BPF_JSET]), x, 0, 0, imm));
                }
                19 | 20 => {
                    // A jump out to a block that moves a value or a
                    // pointer (or reads through one), then comes back: the
                    // paths meet at the instruction after the jump.
                    let mut block = Vec::new();
                    for _ in 0..1 + rng.below(3) {
                        let (a, b) = (rng.pick(&VALUES), rng.pick(&VALUES));
                        block.push(match rng.below(6) {
                            0 => Insn::new(ADD64_IMM, a, 0, 0, imm),
                            1 => Insn::new(MOV64_REG, a, rng.pick(&[b, 1]), 0, 0),
                            2 => Insn::new(rng.pick(&[LSH64_REG, ADD64_REG]), a, b, 0, 0),
                            3 => Insn::new(MOV64_IMM, a, 0, 0, rng.below(64) as i32),
                            4 => Insn::new(ADD64_REG, a, 1, 0, 0),
                            _ => Insn::new(rng.pick(&[LDXB, LDXW]), 0, a, rng.below(8) as i16, 0),
                        });
                    }
                    outlined.push((insns.len(), block));
                    insns.push(Insn::new(BPF_JMP | BPF_K | rng.pick(&[BPF_JEQ, BPF_JGT, BPF_JSET]), x, 0, 0, imm));
                }
                _ => self.looped(rng, x, loops + 1),
            }
        }

        /// A loop: a few steps, then `x` moves on and a back edge on a
        /// count of turns, or on `x` (plus a constant) against the length,
        /// either width; reads through `x` in the steps then walk the input.
        fn looped(&mut self, rng: &mut ByteSource, x: u8, loops: u32) {
            self.insns.push(Insn::new(MOV64_IMM, 8, 0, 0, 1 + rng.below(6) as i32));
            let head = self.insns.len();
            for _ in 0..1 + rng.below(4) {
                self.step(rng, loops);
            }
            self.insns.push(Insn::new(ADD64_IMM, x, 0, 0, rng.pick(&[1, 1, 2, 4, 3])));
            let class = if rng.below(4) == 0 { BPF_JMP32 } else { BPF_JMP };
            let back = match rng.below(4) {
                0 => {
                    self.insns.push(Insn::new(SUB64_IMM, 8, 0, 0, 1));
                    Insn::new(JNE_IMM, 8, 0, 0, 0)
                }
                1 => Insn::new(class | BPF_X | rng.pick(&[BPF_JLT, BPF_JLE, BPF_JSLT]), x, 2, 0, 0),
                2 => Insn::new(class | BPF_X | rng.pick(&[BPF_JGT, BPF_JGE]), 2, x, 0, 0),
                _ => {
                    self.insns.push(Insn::new(MOV64_REG, 9, x, 0, 0));
                    self.insns.push(Insn::new(ADD64_IMM, 9, 0, 0, rng.below(9) as i32));
                    Insn::new(class | BPF_X | rng.pick(&[BPF_JLT, BPF_JLE]), 9, 2, 0, 0)
                }
            };
            let pc = self.insns.len();
            self.insns.push(Insn { off: (head as i64 - pc as i64 - 1) as i16, ..back });
        }
    }

    /// A comparison of `reg` with the length: mostly the usual `reg > len`,
    /// else any kind, either way round, either width, or of the length
    /// with a constant.
    fn guard(rng: &mut ByteSource, reg: u8, imm: i32) -> Insn {
        let op = if rng.below(2) == 0 {
            BPF_JGT
        } else {
            rng.pick(&[BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE, BPF_JEQ, BPF_JNE])
        };
        let class = if rng.below(4) == 0 { BPF_JMP32 } else { BPF_JMP };
        match rng.below(4) {
            0 | 1 => Insn::new(class | BPF_X | op, reg, 2, 0, 0),
            2 => Insn::new(class | BPF_X | op, 2, reg, 0, 0),
            _ => Insn::new(class | BPF_K | op, 2, 0, 0, imm),
        }
    }

    /// A comparison of a packet pointer plus a length, r0, with the end,
    /// r9, that leaves when it fails: mostly `r0 > r9` as clang writes it,
    /// else any kind, either way round, sometimes 32 bits wide.
    fn pointer_guard(rng: &mut ByteSource) -> Insn {
        let op = if rng.below(2) == 0 {
            BPF_JGT
        } else {
            rng.pick(&[BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE, BPF_JEQ, BPF_JNE])
        };
        let class = if rng.below(6) == 0 { BPF_JMP32 } else { BPF_JMP };
        if rng.below(3) == 0 {
            Insn::new(class | BPF_X | op, 9, 0, 0, 0)
        } else {
            Insn::new(class | BPF_X | op, 0, 9, 0, 0)
        }
    }

    #[test]
    fn a_loop_state_fits_a_candidate_only_within_its_bounds_and_facts() {
        let mut ids = Ids::new();
        let counter = ids.fresh(10, 0).unwrap();
        let mut candidate = Facts::entry(ProgramType::Filter);
        candidate.values[3] = Value::Scalar(counter);
        candidate.len_min = 4;
        // The counter moved on by 5, past its bound of 10.
        let mut moved = candidate;
        moved.values[3] = Value::Scalar(Offset { c: 5, ..counter });
        assert!(!moved.fits(&candidate));
        // Unless the length holds it below: s + 4 <= len, so s < MAX_LEN - 4.
        let mut loose = candidate;
        loose.values[3] = Value::Scalar(ids.fresh(MAX_LEN as u64, 0).unwrap());
        let Value::Scalar(wide) = loose.values[3] else { unreachable!() };
        let mut held = loose;
        held.values[3] = Value::Scalar(Offset { c: 3, ..wide });
        assert!(!held.fits(&loose));
        held.learn(wide.id, 4);
        assert!(held.fits(&loose));
        // A candidate's fact must hold of what its unknown stands for.
        loose.learn(wide.id, 2);
        assert!(!held.fits(&loose), "s + 3 + 2 <= len is not known");
        held.learn(wide.id, 5);
        assert!(held.fits(&loose));
        // Less known of the length than the candidate says.
        let mut shorter = held;
        shorter.len_min = 3;
        assert!(!shorter.fits(&loose));
        // Copies of one unknown must stay copies.
        loose.values[4] = loose.values[3];
        held.values[4] = Value::Scalar(Offset { c: 4, ..wide });
        assert!(!held.fits(&loose));
    }

    #[test]
    fn jit_checks_what_the_facts_cannot_prove() {
        for seed in 0..20_000 {
            // A fixed sequence per seed, so a failing seed reruns alone.
            let bytes = testgen::seed_bytes(seed);
            let mut rng = ByteSource::new(&bytes);
            let insns = guarded_program(&mut rng);
            // Limits below the program's length too: without loops no check
            // stops the run, but the count must still be exact. Loops may
            // not end (a 32-bit comparison, a count entered past its start):
            // the limit ends them.
            let instruction_limit = rng.pick(&[10_000, 1, 7, 30, 300]);
            let config = Config { instruction_limit, ..Config::default() };
            let program = Arc::new(
                Program::load(&encode_program(&insns), &Helpers::new(), &config)
                    .unwrap_or_else(|error| panic!("seed {seed}: {error}")),
            );
            let jit = JitProgram::compile(program.clone()).expect("compiles");
            for _ in 0..6 {
                let len = rng.below(80) as usize;
                let input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                let _ = engines::assert_agree(&program, &jit, &input, &format_args!("seed {seed}, program {insns:?}"));
            }
        }
    }
}
