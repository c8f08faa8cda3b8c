//! The aarch64 emitter: one pass over the instructions, in the
//! interpreter's terms, by the program's [`Plan`] (see [`super`] for the
//! code's shape). Its methods carry the names of the x86-64 emitter's, so
//! that the same instruction is found under the same name in both.

// dynasm's aarch64 macro converts each dynamic register with `.into()`.
#![allow(clippy::useless_conversion)]

use std::mem::offset_of;

use dynasmrt::aarch64::Aarch64Relocation;
use dynasmrt::{DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler, dynasm};

use crate::helpers::xdp::DirectFn;
use crate::image::{ProgramType, xdp_context};
use crate::isa::*;
use crate::jit::checks::Check;
use crate::jit::direct_calls;
use crate::jit::direct_calls::DirectCall;
use crate::jit::fusion::Fusion;
use crate::jit::lookups::MapLookup;
use crate::jit::plan::Plan;
use crate::jit::{Context, JitError, MachineCode, Scratch, Status};
use crate::program::Program;

/// Where each eBPF register lives while the program runs (index = eBPF
/// register number), as host register numbers (xN).
pub const REGISTER_MAP: [u8; NUM_REGS] = [
    5,  // r0: return value; caller-saved, as in eBPF; a helper's x0 is moved here
    0,  // r1: 1st argument, already where an AAPCS64 helper wants it (and the input on entry)
    1,  // r2: 2nd argument, likewise (and the input's length on entry)
    2,  // r3: 3rd argument, likewise
    3,  // r4: 4th argument, likewise
    4,  // r5: 5th argument, likewise
    19, // r6: callee-saved in eBPF and in AAPCS64 alike
    20, // r7: callee-saved
    21, // r8: callee-saved
    22, // r9: callee-saved
    25, // r10: frame pointer, read-only; callee-saved
];
/// The `Context` pointer for the whole run; callee-saved, so helpers keep it.
const CTX: u8 = 26;
/// The instruction budget left; callee-saved.
const BUDGET: u8 = 27;
/// Scratch: addresses being checked and temporaries.
const TMP: u8 = 9;
/// Scratch: a second temporary.
const TMP2: u8 = 10;
/// The value a stop reports (faulting address, unknown helper index), and
/// the helper index across a `callx`.
const VALUE: u8 = 11;
/// Scratch: the store-exclusive status, and immediates.
const TMP3: u8 = 12;
/// The address of the access being made.
const ADDR: u8 = 16;
/// Scratch for immediates that do not fit an instruction.
const IMM: u8 = 17;

// The helper-call sequence relies on r1..r5 being x0..x4, and the entry on
// r1, r2 being the first two arguments.
const _: () = {
    let mut i = 0;
    while i < 5 {
        assert!(REGISTER_MAP[i + 1] == i as u8);
        i += 1;
    }
};

/// Context field offsets, as the code addresses them from `CTX`.
const CTX_REMAINING: u32 = offset_of!(Context, remaining) as u32;
const CTX_EXTRA: u32 = offset_of!(Context, extra) as u32;
const CTX_HELPER_STOP: u32 = offset_of!(Context, helper_stop) as u32;
const CTX_FRAME_POINTER: u32 = offset_of!(Context, frame_pointer) as u32;
const SCRATCH: usize = offset_of!(Context, scratch);
const CTX_INPUT_START: u32 = (SCRATCH + offset_of!(Scratch, input_start)) as u32;
const CTX_INPUT_BOUND: u32 = (SCRATCH + offset_of!(Scratch, input_bound)) as u32;
const CTX_STACK_TOP: u32 = (SCRATCH + offset_of!(Scratch, stack_top)) as u32;
const CTX_DEEPEST: u32 = (SCRATCH + offset_of!(Scratch, deepest_frame)) as u32;
const CTX_SAVED_SP: u32 = (SCRATCH + offset_of!(Scratch, saved_sp)) as u32;
const CTX_INPUT_LEN: u32 = (SCRATCH + offset_of!(Scratch, input_len)) as u32;

// The helper table is read as an array of nullable code pointers.
const _: () = assert!(size_of::<Option<crate::helpers::HelperFn>>() == 8);

/// What the budget register may hold (see the x86-64 emitter's).
#[cfg(not(test))]
const REMAINING_MAX: u64 = i64::MAX as u64;
#[cfg(test)]
const REMAINING_MAX: u64 = 1000;
/// How much of a limit above `REMAINING_MAX` one refill moves in.
#[cfg(not(test))]
const REFILL: u64 = 1 << 62;
#[cfg(test)]
const REFILL: u64 = 300;

/// Bytes the prologue pushes: x29, x30 and x19..x28.
const SAVE_AREA: u32 = 96;

/// dynasm with the architecture spelled out once.
macro_rules! a64 {
    ($ops:expr ; $($t:tt)*) => {
        dynasm!($ops ; .arch aarch64 ; $($t)*)
    };
}

/// The second operand of an ALU or jump instruction.
#[derive(Clone, Copy)]
enum Operand {
    Reg(u8),
    Imm(i32),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    W32,
    W64,
}

#[derive(Clone, Copy)]
enum Alu {
    Add,
    Sub,
    Mul,
    Or,
    And,
    Xor,
    Mov,
}

#[derive(Clone, Copy)]
enum Shift {
    Left,
    Right,
    Arithmetic,
}

#[derive(Clone, Copy)]
enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

/// The conditions a conditional branch tests the flags for.
#[derive(Clone, Copy)]
enum Flag {
    Eq,
    Ne,
    Hs,
    Lo,
    Mi,
    Pl,
    Hi,
    Ls,
    Ge,
    Lt,
    Gt,
    Le,
}

impl Flag {
    /// The condition that holds exactly when this one does not.
    fn inverse(self) -> Flag {
        match self {
            Flag::Eq => Flag::Ne,
            Flag::Ne => Flag::Eq,
            Flag::Hs => Flag::Lo,
            Flag::Lo => Flag::Hs,
            Flag::Mi => Flag::Pl,
            Flag::Pl => Flag::Mi,
            Flag::Hi => Flag::Ls,
            Flag::Ls => Flag::Hi,
            Flag::Ge => Flag::Lt,
            Flag::Lt => Flag::Ge,
            Flag::Gt => Flag::Le,
            Flag::Le => Flag::Gt,
        }
    }
}

#[derive(Clone, Copy)]
enum LoadKind {
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
}

/// Code placed after the body, reached only when a run stops or a check's
/// inline half fails.
enum Cold {
    /// Stops the run at `pc` with `status`, counting `unflushed` more
    /// instructions; `VALUE` already holds the value to report, if any.
    Stop { label: DynamicLabel, pc: usize, status: Status, unflushed: i32 },
    /// The budget went below zero at the check of `pc`: refill it from the
    /// context and go `back`, or stop.
    Budget { label: DynamicLabel, back: Option<DynamicLabel>, pc: usize },
    /// The rest of the memory check of the instruction at `pc`, of `size`
    /// bytes at `ADDR`; on success, back to the access.
    Memory {
        label: DynamicLabel,
        back: DynamicLabel,
        pc: usize,
        size: usize,
        write: bool,
        inline: Check,
        unflushed: i32,
    },
    /// A legacy packet load read outside the input: counting `unflushed`
    /// more instructions, the run ends with r0 = 0.
    PacketMiss { label: DynamicLabel, unflushed: i32 },
    /// An XDP run that cannot start ([`crate::memory::context_fault`]),
    /// with `status` and the value it reports: the buffer's length (in x1)
    /// for [`Status::ShortContext`], else the packet pointer at block
    /// offset `off`. Before any instruction runs: the stop counts none.
    Entry { label: DynamicLabel, status: Status, off: i16 },
}

/// [`REGISTER_MAP`] indexed by any 4-bit field (the verifier keeps them to
/// r0..r10; the rest are never used).
fn reg(index: u8) -> u8 {
    REGISTER_MAP.get(index as usize).copied().unwrap_or(TMP)
}

/// Bytes of code within which every `b.cond`, `cbz` and `cbnz` reaches
/// its label (their offsets reach 1 MiB either way).
const NEAR_CODE: usize = 1 << 20;
/// Bytes of code within which every `b` and `bl` reaches its label.
const FAR_CODE: usize = 128 << 20;

/// How far the conditional branches to labels outside their own
/// instruction must reach.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reach {
    /// Code under [`NEAR_CODE`]: each is one `b.cond`, `cbz` or `cbnz`.
    Near,
    /// Longer code: each is the inverted test over a `b`.
    Far,
}

/// How aligned atomics are made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Atomics {
    /// ARMv8.1's single instructions (`ldaddal`, `swpal`, `casal`...), when
    /// the CPU has them (`HWCAP_ATOMICS`).
    Lse,
    /// Exclusive load/store loops (`ldaxr`/`stlxr`), which every ARMv8 CPU
    /// has.
    Exclusive,
}

impl Atomics {
    /// The form this CPU runs: code is compiled where it runs.
    fn of_this_cpu() -> Atomics {
        if std::arch::is_aarch64_feature_detected!("lse") { Atomics::Lse } else { Atomics::Exclusive }
    }
}

/// What the code emitted with `reach` and `len` bytes long needs: kept, or
/// emitted again with far branches, or refused as too long for any branch.
fn reach_needed(reach: Reach, len: usize) -> Result<Reach, JitError> {
    if len > FAR_CODE {
        // Far code is never shorter than near code.
        Err(JitError::CodeTooLarge { bytes: len, limit: FAR_CODE })
    } else if len > NEAR_CODE {
        Ok(Reach::Far)
    } else {
        Ok(reach)
    }
}

/// The code of a verified program: near branches, unless the code is too
/// long for them (only programs near the 65536-slot limit are).
pub(super) fn emit(program: &Program) -> Result<MachineCode, JitError> {
    let plan = Plan::new(program);
    let atomics = Atomics::of_this_cpu();
    let mut emitter = Emitter::new(program, &plan, Reach::Near, atomics);
    emitter.emit_all()?;
    if reach_needed(Reach::Near, emitter.ops.offset().0)? == Reach::Far {
        emitter = Emitter::new(program, &plan, Reach::Far, atomics);
        emitter.emit_all()?;
        reach_needed(Reach::Far, emitter.ops.offset().0)?;
    }
    emitter.finish()
}

/// The code of a verified program with the branches and atomics given,
/// whatever its length and the CPU.
#[cfg(test)]
fn emit_with(program: &Program, reach: Reach, atomics: Atomics) -> Result<MachineCode, JitError> {
    let plan = Plan::new(program);
    let mut emitter = Emitter::new(program, &plan, reach, atomics);
    emitter.emit_all()?;
    emitter.finish()
}

struct Emitter<'p> {
    ops: VecAssembler<Aarch64Relocation>,
    program: &'p Program,
    plan: &'p Plan,
    /// A label for each slot that some jump or call lands on.
    labels: Vec<Option<DynamicLabel>>,
    /// The instructions of the current straight run not yet subtracted
    /// from the budget register.
    pending: i32,
    cold: Vec<Cold>,
    /// eBPF r6-r9 that local calls save, host registers.
    call_saved: Vec<u8>,
    big_limit: bool,
    /// Does `BUDGET` hold the budget? Not when the program is one straight
    /// run (and the limit is small): its count is known where it ends.
    budget_in_register: bool,
    fault: DynamicLabel,
    unwind: DynamicLabel,
    exit: DynamicLabel,
    refill: DynamicLabel,
    reach: Reach,
    atomics: Atomics,
}

impl<'p> Emitter<'p> {
    fn new(program: &'p Program, plan: &'p Plan, reach: Reach, atomics: Atomics) -> Emitter<'p> {
        let insns = program.insns();
        let mut ops =
            VecAssembler::new_with_capacity(0, 32 * insns.len() + 256, 0, 0, insns.len() / 2 + 16, 0, insns.len() + 16);
        let labels = plan.flow.landings.iter().map(|landing| landing.target.then(|| ops.new_dynamic_label())).collect();
        let mut call_saved: Vec<u8> = (6..=9).filter(|&r| plan.flow.used[r]).map(|r| REGISTER_MAP[r]).collect();
        // Saved in pairs, so that sp stays 16-byte aligned.
        if call_saved.len() % 2 == 1 {
            call_saved.push(call_saved[0]);
        }
        let big_limit = program.instruction_limit() > REMAINING_MAX;
        let budget_in_register = plan.flow.branches || big_limit;
        Emitter {
            fault: ops.new_dynamic_label(),
            unwind: ops.new_dynamic_label(),
            exit: ops.new_dynamic_label(),
            refill: ops.new_dynamic_label(),
            ops,
            program,
            plan,
            labels,
            pending: 0,
            cold: Vec::new(),
            call_saved,
            big_limit,
            budget_in_register,
            reach,
            atomics,
        }
    }

    fn emit_all(&mut self) -> Result<(), JitError> {
        self.emit_prologue();
        self.emit_body()?;
        self.emit_cold();
        self.emit_shared_exits();
        Ok(())
    }

    fn finish(self) -> Result<MachineCode, JitError> {
        let plan = self.plan;
        let bytes = self.ops.finalize().map_err(|error| JitError::Assembler(error.to_string()))?;
        let frame_used = plan.flow.used[FRAME_REG as usize] || plan.flow.local_calls;
        let uses_stack = frame_used || plan.checks.any_check || plan.flow.local_calls || plan.flow.helper_calls;
        let stopping_helpers = plan.checks.stopping_helpers;
        Ok(MachineCode { bytes: bytes.into(), uses_stack, local_calls: plan.flow.local_calls, stopping_helpers })
    }

    /// `b.<flag> label`, for a label close by (in the same instruction's
    /// code).
    fn emit_near_branch(&mut self, flag: Flag, label: DynamicLabel) {
        #[rustfmt::skip]
        match flag {
            Flag::Eq => a64!(self.ops ; b.eq =>label),
            Flag::Ne => a64!(self.ops ; b.ne =>label),
            Flag::Hs => a64!(self.ops ; b.hs =>label),
            Flag::Lo => a64!(self.ops ; b.lo =>label),
            Flag::Mi => a64!(self.ops ; b.mi =>label),
            Flag::Pl => a64!(self.ops ; b.pl =>label),
            Flag::Hi => a64!(self.ops ; b.hi =>label),
            Flag::Ls => a64!(self.ops ; b.ls =>label),
            Flag::Ge => a64!(self.ops ; b.ge =>label),
            Flag::Lt => a64!(self.ops ; b.lt =>label),
            Flag::Gt => a64!(self.ops ; b.gt =>label),
            Flag::Le => a64!(self.ops ; b.le =>label),
        };
    }

    /// `b.<flag> label`, for a label anywhere in the code (see [`Reach`]).
    fn emit_branch(&mut self, flag: Flag, label: DynamicLabel) {
        match self.reach {
            Reach::Near => self.emit_near_branch(flag, label),
            Reach::Far => {
                let skip = self.ops.new_dynamic_label();
                self.emit_near_branch(flag.inverse(), skip);
                a64!(self.ops ; b =>label ; =>skip);
            }
        }
    }

    /// `cbz`/`cbnz xs, label` (`zero`: branch when xs is 0), for a label
    /// anywhere in the code.
    fn emit_branch_if_zero(&mut self, s: u8, zero: bool, label: DynamicLabel) {
        match (self.reach, zero) {
            (Reach::Near, true) => a64!(self.ops ; cbz X(s), =>label),
            (Reach::Near, false) => a64!(self.ops ; cbnz X(s), =>label),
            (Reach::Far, _) => {
                let skip = self.ops.new_dynamic_label();
                if zero {
                    a64!(self.ops ; cbnz X(s), =>skip);
                } else {
                    a64!(self.ops ; cbz X(s), =>skip);
                }
                a64!(self.ops ; b =>label ; =>skip);
            }
        }
    }

    /// `xd = value`, in the fewest `movz`/`movn`/`movk`.
    fn emit_mov_imm(&mut self, d: u8, value: u64) {
        let halves = [0u32, 16, 32, 48].map(|shift| ((value >> shift) & 0xffff) as u32);
        let ones = halves.iter().filter(|&&half| half == 0xffff).count();
        let zeros = halves.iter().filter(|&&half| half == 0).count();
        let inverted = ones > zeros;
        let skip = if inverted { 0xffff } else { 0 };
        let mut first = true;
        for (i, &half) in halves.iter().enumerate() {
            if half == skip && !(first && i == 3) {
                continue;
            }
            let shift = 16 * i as u32;
            if first {
                first = false;
                if inverted {
                    let inv = !half & 0xffff;
                    match shift {
                        0 => a64!(self.ops ; movn X(d), #inv),
                        16 => a64!(self.ops ; movn X(d), #inv, lsl #16),
                        32 => a64!(self.ops ; movn X(d), #inv, lsl #32),
                        _ => a64!(self.ops ; movn X(d), #inv, lsl #48),
                    }
                } else {
                    match shift {
                        0 => a64!(self.ops ; movz X(d), #half),
                        16 => a64!(self.ops ; movz X(d), #half, lsl #16),
                        32 => a64!(self.ops ; movz X(d), #half, lsl #32),
                        _ => a64!(self.ops ; movz X(d), #half, lsl #48),
                    }
                }
            } else {
                match shift {
                    0 => a64!(self.ops ; movk X(d), #half),
                    16 => a64!(self.ops ; movk X(d), #half, lsl #16),
                    32 => a64!(self.ops ; movk X(d), #half, lsl #32),
                    _ => a64!(self.ops ; movk X(d), #half, lsl #48),
                }
            }
        }
    }

    /// `xd = xn + value`, through `IMM` when the value does not fit.
    fn emit_add_imm(&mut self, d: u8, n: u8, value: i64) {
        if (0..4096).contains(&value) {
            let k = value as u32;
            a64!(self.ops ; add XSP(d), XSP(n), #k);
        } else if (-4095..0).contains(&value) {
            let k = (-value) as u32;
            a64!(self.ops ; sub XSP(d), XSP(n), #k);
        } else {
            self.emit_mov_imm(IMM, value as u64);
            a64!(self.ops ; add X(d), X(n), X(IMM));
        }
    }

    /// Loads a context field into `xd`.
    fn emit_load_context(&mut self, d: u8, offset: u32) {
        a64!(self.ops ; ldr X(d), [X(CTX), #offset]);
    }

    /// Stores `xs` into a context field.
    fn emit_store_context(&mut self, s: u8, offset: u32) {
        a64!(self.ops ; str X(s), [X(CTX), #offset]);
    }

    /// Saves the callee-saved registers, keeps the context pointer, fills
    /// the context fields the code reads, and sets the registers as the
    /// interpreter does: r1 = input address, r2 = its length (both already
    /// there), r10 = stack top, all others 0.
    fn emit_prologue(&mut self) {
        a64!(self.ops
            ; stp x29, x30, [sp, #-(SAVE_AREA as i32)]!
            ; stp x19, x20, [sp, #16]
            ; stp x21, x22, [sp, #32]
            ; stp x23, x24, [sp, #48]
            ; stp x25, x26, [sp, #64]
            ; stp x27, x28, [sp, #80]
            ; mov x29, sp
            ; mov X(CTX), x2
            ; mov x25, x3
        );
        let plan = self.plan;
        if plan.checks.any_check || plan.flow.local_calls {
            self.emit_store_context(3, CTX_STACK_TOP);
        }
        a64!(self.ops ; mov XSP(TMP), sp);
        self.emit_store_context(TMP, CTX_SAVED_SP);
        if plan.flow.local_calls {
            let deepest = (STACK_FRAME_SIZE * (MAX_CALL_DEPTH - 1)) as i64;
            self.emit_add_imm(TMP, 3, -deepest);
            self.emit_store_context(TMP, CTX_DEEPEST);
        }
        // The input: the buffer (x0, x1), or for an XDP program the page
        // after its context block (x2, x3: r3 and r4, zeroed below; a buffer
        // too short for the block stops the run below, before any access).
        let xdp = self.program.program_type() == ProgramType::Xdp;
        let (start, len) = if xdp {
            let block = xdp_context::SIZE as u32;
            a64!(self.ops ; add x2, x0, #block ; sub x3, x1, #block);
            (2, 3)
        } else {
            (0, 1)
        };
        let direct_calls = direct_calls::need_input(&plan.checks.direct_calls);
        if direct_calls {
            self.emit_store_context(len, CTX_INPUT_LEN);
        }
        if direct_calls && !plan.checks.any_check {
            self.emit_store_context(start, CTX_INPUT_START);
        }
        if plan.checks.any_check {
            self.emit_store_context(start, CTX_INPUT_START);
            for (index, &span) in
                plan.checks.bounds.iter().enumerate().filter(|&(index, _)| plan.checks.bound_used[index])
            {
                let slot = CTX_INPUT_BOUND + 8 * index as u32;
                let short = i64::from(span) - 1;
                if short == 0 {
                    self.emit_store_context(len, slot);
                } else {
                    // input_len - size + 1, or 0 when the input is shorter.
                    self.emit_mov_imm(TMP2, short as u64);
                    a64!(self.ops
                        ; subs X(TMP), X(len), X(TMP2)
                        ; csel X(TMP), X(TMP), xzr, hs
                    );
                    self.emit_store_context(TMP, slot);
                }
            }
        }
        let limit = self.program.instruction_limit();
        if !self.budget_in_register {
            // Counted where the run ends.
        } else if self.big_limit {
            self.emit_mov_imm(TMP, limit - REMAINING_MAX);
            self.emit_store_context(TMP, CTX_EXTRA);
            self.emit_mov_imm(BUDGET, REMAINING_MAX);
        } else {
            self.emit_mov_imm(BUDGET, limit);
        }
        if xdp {
            self.emit_context_check();
        }
        // r1 and r2 arrive set; the others (r3, r4 after the context and
        // the stack top were moved out of x2, x3) start at 0.
        for (r, &host) in REGISTER_MAP.iter().enumerate().take(10) {
            if r != 1 && r != 2 {
                a64!(self.ops ; mov X(host), xzr);
            }
        }
    }

    fn emit_body(&mut self) -> Result<(), JitError> {
        let insns = self.program.insns();
        let mut pc = 0;
        while pc < insns.len() {
            if let Some(label) = self.labels[pc] {
                // Falling into a jump target ends the straight run.
                self.flush();
                a64!(self.ops ; =>label);
            }
            // Of the fused runs, only the extensions are emitted as one.
            if let Some(Fusion::Extend { dst, src, signed, len }) = self.plan.fusions[pc] {
                self.pending += i32::from(len);
                let (dst, src) = (reg(dst), reg(src));
                if signed {
                    a64!(self.ops ; sxtw X(dst), W(src));
                } else {
                    a64!(self.ops ; mov W(dst), W(src));
                }
                pc += len as usize;
                continue;
            }
            self.pending += 1;
            let insn = insns[pc];
            self.emit_insn(pc, insn)?;
            pc += if insn.opc == LDDW { 2 } else { 1 };
        }
        Ok(())
    }

    /// One instruction; the arms follow `interp::run`'s, in its order.
    fn emit_insn(&mut self, pc: usize, insn: Insn) -> Result<(), JitError> {
        use Operand::{Imm, Reg};
        use Width::{W32, W64};
        let dst = reg(insn.dst);
        let src = reg(insn.src);
        let imm = insn.imm;
        let signed = insn.off != 0;

        #[rustfmt::skip]
        match insn.opc {
            ADD32_IMM  => self.emit_alu(W32, Alu::Add, dst, Imm(imm)),
            ADD32_REG  => self.emit_alu(W32, Alu::Add, dst, Reg(src)),
            SUB32_IMM  => self.emit_alu(W32, Alu::Sub, dst, Imm(imm)),
            SUB32_REG  => self.emit_alu(W32, Alu::Sub, dst, Reg(src)),
            MUL32_IMM  => self.emit_alu(W32, Alu::Mul, dst, Imm(imm)),
            MUL32_REG  => self.emit_alu(W32, Alu::Mul, dst, Reg(src)),
            DIV32_IMM  => self.emit_divmod(W32, false, signed, dst, Imm(imm)),
            DIV32_REG  => self.emit_divmod(W32, false, signed, dst, Reg(src)),
            OR32_IMM   => self.emit_alu(W32, Alu::Or, dst, Imm(imm)),
            OR32_REG   => self.emit_alu(W32, Alu::Or, dst, Reg(src)),
            AND32_IMM  => self.emit_alu(W32, Alu::And, dst, Imm(imm)),
            AND32_REG  => self.emit_alu(W32, Alu::And, dst, Reg(src)),
            LSH32_IMM  => self.emit_shift(W32, Shift::Left, dst, Imm(imm)),
            LSH32_REG  => self.emit_shift(W32, Shift::Left, dst, Reg(src)),
            RSH32_IMM  => self.emit_shift(W32, Shift::Right, dst, Imm(imm)),
            RSH32_REG  => self.emit_shift(W32, Shift::Right, dst, Reg(src)),
            NEG32      => self.emit_neg(W32, dst),
            MOD32_IMM  => self.emit_divmod(W32, true, signed, dst, Imm(imm)),
            MOD32_REG  => self.emit_divmod(W32, true, signed, dst, Reg(src)),
            XOR32_IMM  => self.emit_alu(W32, Alu::Xor, dst, Imm(imm)),
            XOR32_REG  => self.emit_alu(W32, Alu::Xor, dst, Reg(src)),
            MOV32_IMM  => self.emit_alu(W32, Alu::Mov, dst, Imm(imm)),
            MOV32_REG  => self.emit_movsx(W32, dst, src, insn.off),
            ARSH32_IMM => self.emit_shift(W32, Shift::Arithmetic, dst, Imm(imm)),
            ARSH32_REG => self.emit_shift(W32, Shift::Arithmetic, dst, Reg(src)),
            LE         => self.emit_to_le(dst, imm),
            BE         => self.emit_byte_swap(dst, imm),

            ADD64_IMM  => self.emit_alu(W64, Alu::Add, dst, Imm(imm)),
            ADD64_REG  => self.emit_alu(W64, Alu::Add, dst, Reg(src)),
            SUB64_IMM  => self.emit_alu(W64, Alu::Sub, dst, Imm(imm)),
            SUB64_REG  => self.emit_alu(W64, Alu::Sub, dst, Reg(src)),
            MUL64_IMM  => self.emit_alu(W64, Alu::Mul, dst, Imm(imm)),
            MUL64_REG  => self.emit_alu(W64, Alu::Mul, dst, Reg(src)),
            DIV64_IMM  => self.emit_divmod(W64, false, signed, dst, Imm(imm)),
            DIV64_REG  => self.emit_divmod(W64, false, signed, dst, Reg(src)),
            OR64_IMM   => self.emit_alu(W64, Alu::Or, dst, Imm(imm)),
            OR64_REG   => self.emit_alu(W64, Alu::Or, dst, Reg(src)),
            AND64_IMM  => self.emit_alu(W64, Alu::And, dst, Imm(imm)),
            AND64_REG  => self.emit_alu(W64, Alu::And, dst, Reg(src)),
            LSH64_IMM  => self.emit_shift(W64, Shift::Left, dst, Imm(imm)),
            LSH64_REG  => self.emit_shift(W64, Shift::Left, dst, Reg(src)),
            RSH64_IMM  => self.emit_shift(W64, Shift::Right, dst, Imm(imm)),
            RSH64_REG  => self.emit_shift(W64, Shift::Right, dst, Reg(src)),
            NEG64      => self.emit_neg(W64, dst),
            MOD64_IMM  => self.emit_divmod(W64, true, signed, dst, Imm(imm)),
            MOD64_REG  => self.emit_divmod(W64, true, signed, dst, Reg(src)),
            XOR64_IMM  => self.emit_alu(W64, Alu::Xor, dst, Imm(imm)),
            XOR64_REG  => self.emit_alu(W64, Alu::Xor, dst, Reg(src)),
            MOV64_IMM  => self.emit_alu(W64, Alu::Mov, dst, Imm(imm)),
            MOV64_REG  => self.emit_movsx(W64, dst, src, insn.off),
            ARSH64_IMM => self.emit_shift(W64, Shift::Arithmetic, dst, Imm(imm)),
            ARSH64_REG => self.emit_shift(W64, Shift::Arithmetic, dst, Reg(src)),
            BSWAP      => self.emit_byte_swap(dst, imm),

            LDDW => {
                // The verifier checked that the second slot exists.
                let high = self.program.insns()[pc + 1].imm;
                let value = imm as u32 as u64 | (high as u32 as u64) << 32;
                self.emit_mov_imm(dst, value);
            }

            LDXW  => self.emit_load(pc, insn, LoadKind::U32),
            LDXH  => self.emit_load(pc, insn, LoadKind::U16),
            LDXB  => self.emit_load(pc, insn, LoadKind::U8),
            LDXDW => self.emit_load(pc, insn, LoadKind::U64),
            LDXSW => self.emit_load(pc, insn, LoadKind::S32),
            LDXSH => self.emit_load(pc, insn, LoadKind::S16),
            LDXSB => self.emit_load(pc, insn, LoadKind::S8),
            STW   => self.emit_store(pc, insn, Imm(imm)),
            STH   => self.emit_store(pc, insn, Imm(imm)),
            STB   => self.emit_store(pc, insn, Imm(imm)),
            STDW  => self.emit_store(pc, insn, Imm(imm)),
            STXW  => self.emit_store(pc, insn, Reg(src)),
            STXH  => self.emit_store(pc, insn, Reg(src)),
            STXB  => self.emit_store(pc, insn, Reg(src)),
            STXDW => self.emit_store(pc, insn, Reg(src)),
            ATOMIC32 => self.emit_atomic(pc, insn, W32)?,
            ATOMIC64 => self.emit_atomic(pc, insn, W64)?,

            JA         => self.emit_jump(pc, insn.off as i64),
            JEQ_IMM    => self.emit_jump_if(pc, insn, W64, Cond::Eq, Imm(imm)),
            JEQ_REG    => self.emit_jump_if(pc, insn, W64, Cond::Eq, Reg(src)),
            JGT_IMM    => self.emit_jump_if(pc, insn, W64, Cond::Gt, Imm(imm)),
            JGT_REG    => self.emit_jump_if(pc, insn, W64, Cond::Gt, Reg(src)),
            JGE_IMM    => self.emit_jump_if(pc, insn, W64, Cond::Ge, Imm(imm)),
            JGE_REG    => self.emit_jump_if(pc, insn, W64, Cond::Ge, Reg(src)),
            JSET_IMM   => self.emit_jump_if(pc, insn, W64, Cond::Set, Imm(imm)),
            JSET_REG   => self.emit_jump_if(pc, insn, W64, Cond::Set, Reg(src)),
            JNE_IMM    => self.emit_jump_if(pc, insn, W64, Cond::Ne, Imm(imm)),
            JNE_REG    => self.emit_jump_if(pc, insn, W64, Cond::Ne, Reg(src)),
            JSGT_IMM   => self.emit_jump_if(pc, insn, W64, Cond::Sgt, Imm(imm)),
            JSGT_REG   => self.emit_jump_if(pc, insn, W64, Cond::Sgt, Reg(src)),
            JSGE_IMM   => self.emit_jump_if(pc, insn, W64, Cond::Sge, Imm(imm)),
            JSGE_REG   => self.emit_jump_if(pc, insn, W64, Cond::Sge, Reg(src)),
            JLT_IMM    => self.emit_jump_if(pc, insn, W64, Cond::Lt, Imm(imm)),
            JLT_REG    => self.emit_jump_if(pc, insn, W64, Cond::Lt, Reg(src)),
            JLE_IMM    => self.emit_jump_if(pc, insn, W64, Cond::Le, Imm(imm)),
            JLE_REG    => self.emit_jump_if(pc, insn, W64, Cond::Le, Reg(src)),
            JSLT_IMM   => self.emit_jump_if(pc, insn, W64, Cond::Slt, Imm(imm)),
            JSLT_REG   => self.emit_jump_if(pc, insn, W64, Cond::Slt, Reg(src)),
            JSLE_IMM   => self.emit_jump_if(pc, insn, W64, Cond::Sle, Imm(imm)),
            JSLE_REG   => self.emit_jump_if(pc, insn, W64, Cond::Sle, Reg(src)),

            JA32       => self.emit_jump(pc, imm as i64),
            JEQ32_IMM  => self.emit_jump_if(pc, insn, W32, Cond::Eq, Imm(imm)),
            JEQ32_REG  => self.emit_jump_if(pc, insn, W32, Cond::Eq, Reg(src)),
            JGT32_IMM  => self.emit_jump_if(pc, insn, W32, Cond::Gt, Imm(imm)),
            JGT32_REG  => self.emit_jump_if(pc, insn, W32, Cond::Gt, Reg(src)),
            JGE32_IMM  => self.emit_jump_if(pc, insn, W32, Cond::Ge, Imm(imm)),
            JGE32_REG  => self.emit_jump_if(pc, insn, W32, Cond::Ge, Reg(src)),
            JSET32_IMM => self.emit_jump_if(pc, insn, W32, Cond::Set, Imm(imm)),
            JSET32_REG => self.emit_jump_if(pc, insn, W32, Cond::Set, Reg(src)),
            JNE32_IMM  => self.emit_jump_if(pc, insn, W32, Cond::Ne, Imm(imm)),
            JNE32_REG  => self.emit_jump_if(pc, insn, W32, Cond::Ne, Reg(src)),
            JSGT32_IMM => self.emit_jump_if(pc, insn, W32, Cond::Sgt, Imm(imm)),
            JSGT32_REG => self.emit_jump_if(pc, insn, W32, Cond::Sgt, Reg(src)),
            JSGE32_IMM => self.emit_jump_if(pc, insn, W32, Cond::Sge, Imm(imm)),
            JSGE32_REG => self.emit_jump_if(pc, insn, W32, Cond::Sge, Reg(src)),
            JLT32_IMM  => self.emit_jump_if(pc, insn, W32, Cond::Lt, Imm(imm)),
            JLT32_REG  => self.emit_jump_if(pc, insn, W32, Cond::Lt, Reg(src)),
            JLE32_IMM  => self.emit_jump_if(pc, insn, W32, Cond::Le, Imm(imm)),
            JLE32_REG  => self.emit_jump_if(pc, insn, W32, Cond::Le, Reg(src)),
            JSLT32_IMM => self.emit_jump_if(pc, insn, W32, Cond::Slt, Imm(imm)),
            JSLT32_REG => self.emit_jump_if(pc, insn, W32, Cond::Slt, Reg(src)),
            JSLE32_IMM => self.emit_jump_if(pc, insn, W32, Cond::Sle, Imm(imm)),
            JSLE32_REG => self.emit_jump_if(pc, insn, W32, Cond::Sle, Reg(src)),

            CALL if insn.src == CALL_LOCAL => self.emit_local_call(pc, insn),
            CALL       => self.emit_helper_call(pc, insn),
            CALLX      => self.emit_helper_call_by_register(pc, insn),
            EXIT       => self.emit_exit(pc),
            LDABSW | LDABSH | LDABSB => self.emit_packet_load(insn, None),
            LDINDW | LDINDH | LDINDB => self.emit_packet_load(insn, Some(src)),
            opc => return Err(JitError::Unverified { pc, opc }),
        };
        Ok(())
    }

    /// Subtracts the current straight run from the budget, setting the
    /// flags (below zero: `lt`).
    fn flush(&mut self) {
        // Without the register, the only run ends at an exit or a fault,
        // which store the count themselves.
        if self.pending > 0 && self.budget_in_register {
            let pending = self.pending as u32;
            if pending < 4096 {
                a64!(self.ops ; subs X(BUDGET), XSP(BUDGET), #pending);
            } else {
                self.emit_mov_imm(IMM, u64::from(pending));
                a64!(self.ops ; subs X(BUDGET), X(BUDGET), X(IMM));
            }
            self.pending = 0;
        }
    }

    /// Ends the straight run at `pc` and stops the run there if the budget
    /// is past the limit (the `b.lt` reads the flags of the flush's `subs`).
    fn flush_and_check(&mut self, pc: usize) {
        // The jump or call at `pc` is pending, so there is a `subs`.
        debug_assert!(self.pending > 0);
        self.flush();
        let label = self.ops.new_dynamic_label();
        let back = self.big_limit.then(|| self.ops.new_dynamic_label());
        self.emit_branch(Flag::Lt, label);
        if let Some(back) = back {
            a64!(self.ops ; =>back);
        }
        self.cold.push(Cold::Budget { label, back, pc });
    }

    fn stop(&mut self, pc: usize, status: Status) -> DynamicLabel {
        let label = self.ops.new_dynamic_label();
        self.cold.push(Cold::Stop { label, pc, status, unflushed: self.pending });
        label
    }

    /// The operand as a register: itself, or the immediate in `TMP`
    /// (sign-extended to 64 bits, as `k64` does; its low half is `k32`).
    fn operand(&mut self, operand: Operand) -> u8 {
        match operand {
            Operand::Reg(s) => s,
            Operand::Imm(k) => {
                self.emit_mov_imm(TMP, k as i64 as u64);
                TMP
            }
        }
    }

    fn emit_alu(&mut self, width: Width, op: Alu, dst: u8, operand: Operand) {
        if let (Alu::Mov, Operand::Imm(k)) = (op, operand) {
            let value = if width == Width::W32 { u64::from(k as u32) } else { k as i64 as u64 };
            self.emit_mov_imm(dst, value);
            return;
        }
        let s = self.operand(operand);
        #[rustfmt::skip]
        match (width, op) {
            (Width::W32, Alu::Add) => a64!(self.ops ; add W(dst), W(dst), W(s)),
            (Width::W32, Alu::Sub) => a64!(self.ops ; sub W(dst), W(dst), W(s)),
            (Width::W32, Alu::Mul) => a64!(self.ops ; mul W(dst), W(dst), W(s)),
            (Width::W32, Alu::Or)  => a64!(self.ops ; orr W(dst), W(dst), W(s)),
            (Width::W32, Alu::And) => a64!(self.ops ; and W(dst), W(dst), W(s)),
            (Width::W32, Alu::Xor) => a64!(self.ops ; eor W(dst), W(dst), W(s)),
            (Width::W32, Alu::Mov) => a64!(self.ops ; mov W(dst), W(s)),
            (Width::W64, Alu::Add) => a64!(self.ops ; add X(dst), X(dst), X(s)),
            (Width::W64, Alu::Sub) => a64!(self.ops ; sub X(dst), X(dst), X(s)),
            (Width::W64, Alu::Mul) => a64!(self.ops ; mul X(dst), X(dst), X(s)),
            (Width::W64, Alu::Or)  => a64!(self.ops ; orr X(dst), X(dst), X(s)),
            (Width::W64, Alu::And) => a64!(self.ops ; and X(dst), X(dst), X(s)),
            (Width::W64, Alu::Xor) => a64!(self.ops ; eor X(dst), X(dst), X(s)),
            (Width::W64, Alu::Mov) => a64!(self.ops ; mov X(dst), X(s)),
        };
    }

    /// Shifts; the register forms mask counts to 5 bits (32-bit) or 6
    /// (64-bit), as the interpreter's `wrapping_shl`/`wrapping_shr` do.
    fn emit_shift(&mut self, width: Width, shift: Shift, dst: u8, operand: Operand) {
        use Width::{W32, W64};
        let count = match operand {
            Operand::Imm(k) => {
                let mask = if width == W32 { 31 } else { 63 };
                let count = (k & mask) as u32;
                if count == 0 {
                    // Nothing moves, but a 32-bit form still truncates.
                    if width == W32 {
                        a64!(self.ops ; mov W(dst), W(dst));
                    }
                    return;
                }
                #[rustfmt::skip]
                match (width, shift) {
                    (W32, Shift::Left)       => a64!(self.ops ; lsl W(dst), W(dst), #count),
                    (W32, Shift::Right)      => a64!(self.ops ; lsr W(dst), W(dst), #count),
                    (W32, Shift::Arithmetic) => a64!(self.ops ; asr W(dst), W(dst), #count),
                    (W64, Shift::Left)       => a64!(self.ops ; lsl X(dst), X(dst), #count),
                    (W64, Shift::Right)      => a64!(self.ops ; lsr X(dst), X(dst), #count),
                    (W64, Shift::Arithmetic) => a64!(self.ops ; asr X(dst), X(dst), #count),
                };
                return;
            }
            Operand::Reg(s) => s,
        };
        #[rustfmt::skip]
        match (width, shift) {
            (W32, Shift::Left)       => a64!(self.ops ; lsl W(dst), W(dst), W(count)),
            (W32, Shift::Right)      => a64!(self.ops ; lsr W(dst), W(dst), W(count)),
            (W32, Shift::Arithmetic) => a64!(self.ops ; asr W(dst), W(dst), W(count)),
            (W64, Shift::Left)       => a64!(self.ops ; lsl X(dst), X(dst), X(count)),
            (W64, Shift::Right)      => a64!(self.ops ; lsr X(dst), X(dst), X(count)),
            (W64, Shift::Arithmetic) => a64!(self.ops ; asr X(dst), X(dst), X(count)),
        };
    }

    fn emit_neg(&mut self, width: Width, dst: u8) {
        match width {
            Width::W32 => a64!(self.ops ; neg W(dst), W(dst)),
            Width::W64 => a64!(self.ops ; neg X(dst), X(dst)),
        }
    }

    /// `div`/`sdiv`/`mod`/`smod`, as `div32`, `div64`, `mod32`, `mod64`.
    /// aarch64's divisions already agree with them: a zero divisor gives a
    /// quotient of 0 (so `msub` leaves the dividend, truncated by a 32-bit
    /// form), and INT_MIN / -1 gives INT_MIN without a trap (so the
    /// remainder is 0).
    fn emit_divmod(&mut self, width: Width, modulo: bool, signed: bool, dst: u8, divisor: Operand) {
        let s = self.operand(divisor);
        #[rustfmt::skip]
        match (width, signed) {
            (Width::W32, false) => a64!(self.ops ; udiv W(TMP2), W(dst), W(s)),
            (Width::W32, true)  => a64!(self.ops ; sdiv W(TMP2), W(dst), W(s)),
            (Width::W64, false) => a64!(self.ops ; udiv X(TMP2), X(dst), X(s)),
            (Width::W64, true)  => a64!(self.ops ; sdiv X(TMP2), X(dst), X(s)),
        };
        match (width, modulo) {
            (Width::W32, false) => a64!(self.ops ; mov W(dst), W(TMP2)),
            (Width::W64, false) => a64!(self.ops ; mov X(dst), X(TMP2)),
            (Width::W32, true) => a64!(self.ops ; msub W(dst), W(TMP2), W(s), W(dst)),
            (Width::W64, true) => a64!(self.ops ; msub X(dst), X(TMP2), X(s), X(dst)),
        }
    }

    /// `mov`/`mov32`, or `movsx` with offset 8/16/32.
    fn emit_movsx(&mut self, width: Width, dst: u8, src: u8, bits: i16) {
        match (width, bits) {
            (Width::W32, 8) => a64!(self.ops ; sxtb W(dst), W(src)),
            (Width::W32, 16) => a64!(self.ops ; sxth W(dst), W(src)),
            (Width::W32, _) => a64!(self.ops ; mov W(dst), W(src)),
            (Width::W64, 8) => a64!(self.ops ; sxtb X(dst), W(src)),
            (Width::W64, 16) => a64!(self.ops ; sxth X(dst), W(src)),
            (Width::W64, 32) => a64!(self.ops ; sxtw X(dst), W(src)),
            (Width::W64, _) => a64!(self.ops ; mov X(dst), X(src)),
        }
    }

    /// `le16/32/64` on a little-endian host: truncation only.
    fn emit_to_le(&mut self, dst: u8, width: i32) {
        match width {
            16 => a64!(self.ops ; uxth W(dst), W(dst)),
            32 => a64!(self.ops ; mov W(dst), W(dst)),
            _ => {}
        }
    }

    /// `be16/32/64` on a little-endian host, and `bswap16/32/64`.
    fn emit_byte_swap(&mut self, dst: u8, width: i32) {
        match width {
            16 => a64!(self.ops ; rev16 W(dst), W(dst) ; uxth W(dst), W(dst)),
            32 => a64!(self.ops ; rev W(dst), W(dst)),
            _ => a64!(self.ops ; rev X(dst), X(dst)),
        }
    }

    /// Puts the address `[base + off]` of the access at `pc` in `ADDR` and
    /// emits the inline half of its check as the plan planned it; the rest
    /// goes out of line. Every access is checked on its own (the plan's
    /// merged groups are not used).
    fn emit_check(&mut self, pc: usize, base: u8, off: i16, size: usize, write: bool) {
        self.emit_add_imm(ADDR, reg(base), off.into());
        let inline = self.plan.checks.accesses[pc].check;
        let label = self.ops.new_dynamic_label();
        let back = self.ops.new_dynamic_label();
        match inline {
            Check::None => return,
            Check::Input => {
                let bound = CTX_INPUT_BOUND + 8 * size.trailing_zeros();
                self.emit_load_context(TMP2, CTX_INPUT_START);
                a64!(self.ops ; sub X(TMP), X(ADDR), X(TMP2));
                self.emit_load_context(TMP2, bound);
                a64!(self.ops ; cmp X(TMP), X(TMP2));
                self.emit_branch(Flag::Hs, label);
                a64!(self.ops ; =>back);
            }
            Check::Stack { end } => {
                // Frame-relative values come from r10.
                self.emit_add_imm(TMP, REGISTER_MAP[FRAME_REG as usize], end.into());
                self.emit_load_context(TMP2, CTX_STACK_TOP);
                a64!(self.ops ; cmp X(TMP), X(TMP2));
                self.emit_branch(Flag::Hi, label);
                a64!(self.ops ; =>back);
            }
            Check::Context => {
                // The block ends where the input starts.
                self.emit_add_imm(TMP, reg(base), xdp_context::SIZE as i64);
                self.emit_load_context(TMP2, CTX_INPUT_START);
                a64!(self.ops ; cmp X(TMP), X(TMP2));
                self.emit_branch(Flag::Ne, label);
                a64!(self.ops ; =>back);
            }
        }
        let unflushed = self.pending;
        self.cold.push(Cold::Memory { label, back, pc, size, write, inline, unflushed });
    }

    /// The out-of-line half of a memory check: the places the inline half
    /// did not try, then a fault at `pc` with the address in `VALUE`.
    #[allow(clippy::too_many_arguments)]
    fn emit_slow_check(
        &mut self,
        label: DynamicLabel,
        back: DynamicLabel,
        pc: usize,
        size: usize,
        write: bool,
        inline: Check,
        unflushed: i32,
    ) {
        let frame = STACK_FRAME_SIZE as i64;
        let r10 = REGISTER_MAP[FRAME_REG as usize];
        a64!(self.ops ; =>label);
        if inline == Check::Context {
            // A context load reads the block or faults.
            a64!(self.ops ; mov X(VALUE), X(ADDR));
            self.emit_stop_tail(pc, Status::Memory, unflushed);
            return;
        }
        if !matches!(inline, Check::Stack { .. }) {
            // Stack: addr - stack_low <= stack_top - stack_low - size, where
            // stack_low = (eBPF) r10 - 512 is the bottom of the deepest frame.
            self.emit_add_imm(TMP, ADDR, frame);
            a64!(self.ops ; sub X(TMP), X(TMP), X(r10));
            self.emit_load_context(TMP2, CTX_STACK_TOP);
            a64!(self.ops ; sub X(TMP2), X(TMP2), X(r10));
            self.emit_add_imm(TMP2, TMP2, frame - size as i64);
            a64!(self.ops ; cmp X(TMP), X(TMP2));
            self.emit_branch(Flag::Ls, back);
        }
        if inline != Check::Input {
            // Input: addr - input_start < input_bound[size].
            let bound = CTX_INPUT_BOUND + 8 * size.trailing_zeros();
            self.emit_load_context(TMP2, CTX_INPUT_START);
            a64!(self.ops ; sub X(TMP), X(ADDR), X(TMP2));
            self.emit_load_context(TMP2, bound);
            a64!(self.ops ; cmp X(TMP), X(TMP2));
            self.emit_branch(Flag::Lo, back);
        }
        self.emit_region_checks(size, write, back);
        a64!(self.ops ; mov X(VALUE), X(ADDR));
        self.emit_stop_tail(pc, Status::Memory, unflushed);
    }

    /// Goes to `found` when some region holds the `size` bytes at `ADDR`
    /// (`Region::contains`, and writable for a store).
    fn emit_region_checks(&mut self, size: usize, write: bool, found: DynamicLabel) {
        let size = size as u64;
        let regions: Vec<_> = self
            .program
            .regions()
            .iter()
            .filter(|region| region.fits(size) && (region.writable || !write))
            .map(|region| (region.start, region.len, region.stride, region.value_size))
            .collect();
        for (start, len, stride, value_size) in regions {
            // addr - start <= len - size, wrapping as `contains` does.
            self.emit_mov_imm(TMP2, start);
            a64!(self.ops ; sub X(TMP), X(ADDR), X(TMP2));
            self.emit_mov_imm(TMP2, len - size);
            a64!(self.ops ; cmp X(TMP), X(TMP2));
            if stride == 0 {
                self.emit_branch(Flag::Ls, found);
                continue;
            }
            // And within one slot: (addr - start) & (stride - 1) <=
            // value_size - size.
            let next = self.ops.new_dynamic_label();
            a64!(self.ops ; b.hi =>next);
            self.emit_mov_imm(TMP2, stride - 1);
            a64!(self.ops ; and X(TMP), X(TMP), X(TMP2));
            self.emit_mov_imm(TMP2, value_size - size);
            a64!(self.ops ; cmp X(TMP), X(TMP2));
            self.emit_branch(Flag::Ls, found);
            a64!(self.ops ; =>next);
        }
    }

    fn emit_load(&mut self, pc: usize, insn: Insn, kind: LoadKind) {
        self.emit_check(pc, insn.src, insn.off, access_size(insn.opc), false);
        let dst = reg(insn.dst);
        #[rustfmt::skip]
        match kind {
            LoadKind::U8  => a64!(self.ops ; ldrb W(dst), [X(ADDR)]),
            LoadKind::U16 => a64!(self.ops ; ldrh W(dst), [X(ADDR)]),
            LoadKind::U32 => a64!(self.ops ; ldr W(dst), [X(ADDR)]),
            LoadKind::U64 => a64!(self.ops ; ldr X(dst), [X(ADDR)]),
            LoadKind::S8  => a64!(self.ops ; ldrsb X(dst), [X(ADDR)]),
            LoadKind::S16 => a64!(self.ops ; ldrsh X(dst), [X(ADDR)]),
            LoadKind::S32 => a64!(self.ops ; ldrsw X(dst), [X(ADDR)]),
        };
    }

    /// Stops an XDP run that cannot start ([`crate::memory::context_fault`]):
    /// the buffer (x0, x1) too short for the context block, or a packet
    /// pointer the program loads from it outside the page (x2, x3, as the
    /// prologue set them), its end included.
    fn emit_context_check(&mut self) {
        let short = self.ops.new_dynamic_label();
        self.cold.push(Cold::Entry { label: short, status: Status::ShortContext, off: 0 });
        let block = xdp_context::SIZE as u32;
        a64!(self.ops ; cmp x1, #block);
        self.emit_branch(Flag::Lo, short);
        for &off in self.program.packet_pointers() {
            let outside = self.ops.new_dynamic_label();
            self.cold.push(Cold::Entry { label: outside, status: Status::PacketPointer, off });
            let off = off as u32;
            a64!(self.ops
                ; ldr X(TMP), [x0, #off]
                ; sub X(TMP), X(TMP), x2
                ; cmp X(TMP), x3
            );
            self.emit_branch(Flag::Hi, outside);
        }
    }

    /// `ldabs*`/`ldind*` (`index`: the src of `ldind*`): r0 = the input's
    /// big-endian bytes at imm (plus the index, as an i32), or the run ends
    /// with 0 when they are not all in the input.
    fn emit_packet_load(&mut self, insn: Insn, index: Option<u8>) {
        let size = access_size(insn.opc);
        let bound = CTX_INPUT_BOUND + 8 * size.trailing_zeros();
        let miss = self.ops.new_dynamic_label();
        self.cold.push(Cold::PacketMiss { label: miss, unflushed: self.pending });
        match index {
            // Offset imm: known now.
            None if insn.imm < 0 => {
                a64!(self.ops ; b =>miss);
                return;
            }
            None => {
                self.emit_mov_imm(TMP2, insn.imm as u64);
                self.emit_load_context(TMP, bound);
                a64!(self.ops ; cmp X(TMP), X(TMP2));
                self.emit_branch(Flag::Ls, miss);
            }
            // Offset (s32)(src + imm): sign-extended, a negative one is
            // above every bound.
            Some(index) => {
                self.emit_mov_imm(TMP2, u64::from(insn.imm as u32));
                a64!(self.ops
                    ; add W(TMP2), W(index), W(TMP2)
                    ; sxtw X(TMP2), W(TMP2)
                );
                self.emit_load_context(TMP, bound);
                a64!(self.ops ; cmp X(TMP2), X(TMP));
                self.emit_branch(Flag::Hs, miss);
            }
        }
        self.emit_load_context(TMP, CTX_INPUT_START);
        let r0 = REGISTER_MAP[0];
        match size {
            1 => a64!(self.ops ; ldrb W(r0), [X(TMP), X(TMP2)]),
            2 => a64!(self.ops ; ldrh W(r0), [X(TMP), X(TMP2)] ; rev16 W(r0), W(r0)),
            _ => a64!(self.ops ; ldr W(r0), [X(TMP), X(TMP2)] ; rev W(r0), W(r0)),
        }
    }

    /// `st*` (imm, truncated; `stdw` sign-extends it) and `stx*` (src).
    fn emit_store(&mut self, pc: usize, insn: Insn, value: Operand) {
        let size = access_size(insn.opc);
        self.emit_check(pc, insn.dst, insn.off, size, true);
        let s = self.operand(value);
        match size {
            1 => a64!(self.ops ; strb W(s), [X(ADDR)]),
            2 => a64!(self.ops ; strh W(s), [X(ADDR)]),
            4 => a64!(self.ops ; str W(s), [X(ADDR)]),
            _ => a64!(self.ops ; str X(s), [X(ADDR)]),
        }
    }

    /// Atomics: one LSE instruction or an exclusive load/store loop when
    /// aligned (see [`Atomics`]); a plain read-modify-write when not, as the
    /// interpreter's `atomic_rmw` (both atomic forms fault when unaligned).
    fn emit_atomic(&mut self, pc: usize, insn: Insn, width: Width) -> Result<(), JitError> {
        let size = access_size(insn.opc);
        self.emit_check(pc, insn.dst, insn.off, size, true);
        let unaligned = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        let misalignment = size as u32 - 1;
        a64!(self.ops
            ; and XSP(TMP), X(ADDR), #u64::from(misalignment)
            ; cbnz X(TMP), =>unaligned
        );
        match self.atomics {
            Atomics::Lse => self.emit_atomic_lse(pc, insn, width)?,
            Atomics::Exclusive => self.emit_atomic_op(pc, insn, width, true)?,
        }
        a64!(self.ops ; b =>done ; =>unaligned);
        self.emit_atomic_op(pc, insn, width, false)?;
        a64!(self.ops ; =>done);
        Ok(())
    }

    /// The operation `insn.imm` on the aligned value at `ADDR` with operand
    /// `src` as one LSE instruction with acquire and release semantics, as
    /// [`Self::emit_atomic_op`]'s exclusive form; the old value goes where
    /// that one puts it.
    fn emit_atomic_lse(&mut self, pc: usize, insn: Insn, width: Width) -> Result<(), JitError> {
        use Width::{W32, W64};
        let src = reg(insn.src);
        let r0 = REGISTER_MAP[0];
        let op = insn.imm;
        // The old value lands in TMP (discarded by the forms that do not
        // fetch: a zero register there would make them stores without
        // acquire semantics).
        #[rustfmt::skip]
        match (op & !ATOMIC_FETCH, width) {
            (ATOMIC_ADD, W32) => a64!(self.ops ; ldaddal W(src), W(TMP), [X(ADDR)]),
            (ATOMIC_ADD, W64) => a64!(self.ops ; ldaddal X(src), X(TMP), [X(ADDR)]),
            (ATOMIC_OR, W32)  => a64!(self.ops ; ldsetal W(src), W(TMP), [X(ADDR)]),
            (ATOMIC_OR, W64)  => a64!(self.ops ; ldsetal X(src), X(TMP), [X(ADDR)]),
            (ATOMIC_XOR, W32) => a64!(self.ops ; ldeoral W(src), W(TMP), [X(ADDR)]),
            (ATOMIC_XOR, W64) => a64!(self.ops ; ldeoral X(src), X(TMP), [X(ADDR)]),
            // And clears the bits that are clear in src.
            (ATOMIC_AND, W32) => a64!(self.ops ; mvn W(TMP2), W(src) ; ldclral W(TMP2), W(TMP), [X(ADDR)]),
            (ATOMIC_AND, W64) => a64!(self.ops ; mvn X(TMP2), X(src) ; ldclral X(TMP2), X(TMP), [X(ADDR)]),
            _ if op == ATOMIC_XCHG => match width {
                W32 => a64!(self.ops ; swpal W(src), W(TMP), [X(ADDR)]),
                W64 => a64!(self.ops ; swpal X(src), X(TMP), [X(ADDR)]),
            },
            // Compares with r0 (a copy, which receives the old value).
            _ if op == ATOMIC_CMPXCHG => match width {
                W32 => a64!(self.ops ; mov W(TMP), W(r0) ; casal W(TMP), W(src), [X(ADDR)]),
                W64 => a64!(self.ops ; mov X(TMP), X(r0) ; casal X(TMP), X(src), [X(ADDR)]),
            },
            _ => return Err(JitError::Unverified { pc, opc: insn.opc }),
        };
        // The 32-bit forms zero-extended the old value.
        if op == ATOMIC_CMPXCHG {
            a64!(self.ops ; mov X(r0), X(TMP));
        } else if op & ATOMIC_FETCH != 0 {
            a64!(self.ops ; mov X(src), X(TMP));
        }
        Ok(())
    }

    /// The operation `insn.imm` on the value at `ADDR` with operand `src`;
    /// the old value goes to src (fetch forms) or r0 (cmpxchg),
    /// zero-extended for 32-bit forms. `exclusive`: as one atomic step.
    fn emit_atomic_op(&mut self, pc: usize, insn: Insn, width: Width, exclusive: bool) -> Result<(), JitError> {
        let src = reg(insn.src);
        let r0 = REGISTER_MAP[0];
        let op = insn.imm;
        let alu = match op & !ATOMIC_FETCH {
            ATOMIC_ADD => Some(Alu::Add),
            ATOMIC_OR => Some(Alu::Or),
            ATOMIC_AND => Some(Alu::And),
            ATOMIC_XOR => Some(Alu::Xor),
            _ => None,
        };
        let fetch = op & ATOMIC_FETCH != 0;
        if alu.is_none() && op != ATOMIC_XCHG && op != ATOMIC_CMPXCHG {
            return Err(JitError::Unverified { pc, opc: insn.opc });
        }
        let retry = self.ops.new_dynamic_label();
        let skip = self.ops.new_dynamic_label();
        a64!(self.ops ; =>retry);
        // The old value in TMP.
        match (width, exclusive) {
            (Width::W32, true) => a64!(self.ops ; ldaxr W(TMP), [X(ADDR)]),
            (Width::W64, true) => a64!(self.ops ; ldaxr X(TMP), [X(ADDR)]),
            (Width::W32, false) => a64!(self.ops ; ldr W(TMP), [X(ADDR)]),
            (Width::W64, false) => a64!(self.ops ; ldr X(TMP), [X(ADDR)]),
        }
        // The new value in `new`.
        let new = match alu {
            Some(alu) => {
                #[rustfmt::skip]
                match alu {
                    Alu::Add => a64!(self.ops ; add X(TMP2), X(TMP), X(src)),
                    Alu::Or  => a64!(self.ops ; orr X(TMP2), X(TMP), X(src)),
                    Alu::And => a64!(self.ops ; and X(TMP2), X(TMP), X(src)),
                    _        => a64!(self.ops ; eor X(TMP2), X(TMP), X(src)),
                };
                TMP2
            }
            None if op == ATOMIC_CMPXCHG => {
                match width {
                    Width::W32 => a64!(self.ops ; cmp W(TMP), W(r0)),
                    Width::W64 => a64!(self.ops ; cmp X(TMP), X(r0)),
                }
                a64!(self.ops ; b.ne =>skip);
                src
            }
            None => src,
        };
        match (width, exclusive) {
            (Width::W32, true) => a64!(self.ops ; stlxr W(TMP3), W(new), [X(ADDR)] ; cbnz W(TMP3), =>retry),
            (Width::W64, true) => a64!(self.ops ; stlxr W(TMP3), X(new), [X(ADDR)] ; cbnz W(TMP3), =>retry),
            (Width::W32, false) => a64!(self.ops ; str W(new), [X(ADDR)]),
            (Width::W64, false) => a64!(self.ops ; str X(new), [X(ADDR)]),
        }
        a64!(self.ops ; =>skip);
        if op == ATOMIC_CMPXCHG {
            if exclusive {
                // A failed compare leaves the exclusive monitor open.
                a64!(self.ops ; clrex);
            }
            a64!(self.ops ; mov X(r0), X(TMP));
        } else if fetch {
            a64!(self.ops ; mov X(src), X(TMP));
        }
        if exclusive {
            a64!(self.ops ; dmb ish);
        }
        Ok(())
    }

    /// `ja`/`ja32`: the count is checked when the jump goes backward.
    fn emit_jump(&mut self, pc: usize, offset: i64) {
        if offset < 0 {
            self.flush_and_check(pc);
        } else {
            self.flush();
        }
        let label = self.label(branch_target(pc, offset) as usize);
        a64!(self.ops ; b =>label);
    }

    fn label(&self, pc: usize) -> DynamicLabel {
        // The flow gave every jump and call target a label.
        self.labels[pc].expect("every jump and call target has a label")
    }

    /// Conditional jumps: the count is checked, taken or not, when the
    /// jump goes backward.
    fn emit_jump_if(&mut self, pc: usize, insn: Insn, width: Width, cond: Cond, operand: Operand) {
        if insn.off < 0 {
            self.flush_and_check(pc);
        } else {
            self.flush();
        }
        let dst = reg(insn.dst);
        let s = self.operand(operand);
        #[rustfmt::skip]
        match (cond, width) {
            (Cond::Set, Width::W32) => a64!(self.ops ; tst W(dst), W(s)),
            (Cond::Set, Width::W64) => a64!(self.ops ; tst X(dst), X(s)),
            (_, Width::W32)         => a64!(self.ops ; cmp W(dst), W(s)),
            (_, Width::W64)         => a64!(self.ops ; cmp X(dst), X(s)),
        };
        let label = self.label(branch_target(pc, insn.off.into()) as usize);
        let flag = match cond {
            Cond::Eq => Flag::Eq,
            Cond::Gt => Flag::Hi,
            Cond::Ge => Flag::Hs,
            Cond::Set => Flag::Ne,
            Cond::Ne => Flag::Ne,
            Cond::Sgt => Flag::Gt,
            Cond::Sge => Flag::Ge,
            Cond::Lt => Flag::Lo,
            Cond::Le => Flag::Ls,
            Cond::Slt => Flag::Lt,
            Cond::Sle => Flag::Le,
        };
        self.emit_branch(flag, label);
    }

    /// `call local`: budget, depth, then a native call with the link
    /// register, the r6-r9 the program uses and r10 saved on the native
    /// stack and r10 moved down one frame.
    fn emit_local_call(&mut self, pc: usize, insn: Insn) {
        self.flush_and_check(pc);
        let too_deep = self.stop(pc, Status::CallDepth);
        let callee = self.label(branch_target(pc, insn.imm.into()) as usize);
        let r10 = REGISTER_MAP[FRAME_REG as usize];
        self.emit_load_context(TMP, CTX_DEEPEST);
        a64!(self.ops ; cmp X(r10), X(TMP));
        self.emit_branch(Flag::Eq, too_deep);
        a64!(self.ops ; stp x30, X(r10), [sp, #-16]!);
        for pair in self.call_saved.clone().chunks(2) {
            a64!(self.ops ; stp X(pair[0]), X(pair[1]), [sp, #-16]!);
        }
        a64!(self.ops
            ; sub XSP(r10), XSP(r10), #STACK_FRAME_SIZE as u32
            ; bl =>callee
        );
        for pair in self.call_saved.clone().chunks(2).rev() {
            a64!(self.ops ; ldp X(pair[0]), X(pair[1]), [sp], #16);
        }
        a64!(self.ops ; ldp x30, X(r10), [sp], #16);
    }

    /// `call imm`: the helper is known now, as the table is fixed.
    fn emit_helper_call(&mut self, pc: usize, insn: Insn) {
        self.flush_and_check(pc);
        if let Some(lookup) = self.plan.checks.lookups[pc] {
            return self.emit_map_lookup(lookup);
        }
        match self.plan.checks.direct_calls[pc] {
            Some(DirectCall::Form(direct)) => return self.emit_direct_call(pc, direct),
            Some(DirectCall::Plain(helper)) => {
                self.emit_mov_imm(TMP, helper as usize as u64);
                return self.emit_native_call();
            }
            None => {}
        }
        let index = insn.imm as u32 as u64;
        let Some(helper) = self.program.helper(index) else {
            // Registered, but past the table (MAX_HELPER_INDEX): the
            // interpreter fails the call at run time, and so do we.
            let unknown = self.stop(pc, Status::UnknownHelper);
            self.emit_mov_imm(VALUE, index);
            a64!(self.ops ; b =>unknown);
            return;
        };
        let may_stop = self.program.helper_may_stop(index);
        if may_stop {
            self.emit_frame_pointer_for_helper();
        }
        self.emit_mov_imm(TMP, helper as usize as u64);
        self.emit_native_call();
        if may_stop {
            self.emit_stop_check(pc);
        }
        if self.program.unwind_helper().is_some_and(|unwind| unwind as u64 == index) {
            let unwind = self.unwind;
            self.emit_branch_if_zero(REGISTER_MAP[0], true, unwind);
        }
    }

    /// A `bpf_map_lookup_elem` the code makes itself (see
    /// [`crate::jit::lookups`]), with the map's handle in r1 and the key's
    /// address in r2: an array's value found inline, else the map's lookup
    /// called directly. r1-r5 keep their values, as across the helper.
    ///
    /// A per-CPU array of more than one CPU is called: qemu-user, where
    /// this backend's tests run, registers no rseq area, so an inline read
    /// of the thread's CPU could not be tested.
    fn emit_map_lookup(&mut self, lookup: MapLookup) {
        let Some(array) = lookup.inline_array().filter(|array| array.cpu_word.is_none()) else {
            self.emit_mov_imm(TMP, crate::maps::LOOKUP_ADDR_RAW as usize as u64);
            return self.emit_native_call();
        };
        let (r0, key) = (REGISTER_MAP[0], REGISTER_MAP[2]);
        let done = self.ops.new_dynamic_label();
        // The key is a u32 index: no value past max_entries.
        a64!(self.ops ; mov X(r0), xzr ; ldr W(TMP), [X(key)]);
        self.emit_mov_imm(TMP2, u64::from(array.max_entries));
        a64!(self.ops ; cmp X(TMP), X(TMP2));
        self.emit_branch(Flag::Hs, done);
        let stride = array.entry_stride as u32;
        if stride.is_power_of_two() {
            let shift = stride.trailing_zeros();
            a64!(self.ops ; lsl X(TMP), X(TMP), #shift);
        } else {
            self.emit_mov_imm(TMP2, u64::from(stride));
            a64!(self.ops ; mul X(TMP), X(TMP), X(TMP2));
        }
        self.emit_mov_imm(TMP2, array.base);
        a64!(self.ops ; add X(r0), X(TMP2), X(TMP) ; =>done);
    }

    /// A helper called in its direct form (see [`crate::jit::direct_calls`])
    /// with r1-r3 and the input from the context: r0 gets what it returns,
    /// or the run stops at `pc` with the fault it reports (in `VALUE`).
    /// r1-r5 keep their values, as across the helper.
    fn emit_direct_call(&mut self, pc: usize, direct: DirectFn) {
        let stop = self.stop(pc, Status::HelperFault);
        let r0 = REGISTER_MAP[0];
        a64!(self.ops
            ; stp x0, x1, [sp, #-48]!
            ; stp x2, x3, [sp, #16]
            ; stp x4, x30, [sp, #32]
        );
        self.emit_load_context(3, CTX_INPUT_START);
        self.emit_load_context(4, CTX_INPUT_LEN);
        self.emit_mov_imm(TMP, direct as usize as u64);
        a64!(self.ops
            ; blr X(TMP)
            // The fault in x0, r0 in x1.
            ; mov X(VALUE), x0
            ; mov X(r0), x1
            ; ldp x4, x30, [sp, #32]
            ; ldp x2, x3, [sp, #16]
            ; ldp x0, x1, [sp], #48
        );
        self.emit_branch_if_zero(VALUE, false, stop);
    }

    /// `callx dst`: the index in a register, looked up in the helper table.
    fn emit_helper_call_by_register(&mut self, pc: usize, insn: Insn) {
        self.flush_and_check(pc);
        let unknown = self.stop(pc, Status::UnknownHelper);
        let table = self.program.helper_table();
        let len = table.len() as u64;
        let base = table.as_ptr() as u64;
        a64!(self.ops ; mov X(VALUE), X(reg(insn.dst)));
        self.emit_mov_imm(TMP2, len);
        a64!(self.ops ; cmp X(VALUE), X(TMP2));
        self.emit_branch(Flag::Hs, unknown);
        self.emit_mov_imm(TMP2, base);
        a64!(self.ops ; ldr X(TMP), [X(TMP2), X(VALUE), lsl #3]);
        self.emit_branch_if_zero(TMP, true, unknown);
        if self.program.has_stopping_helpers() {
            self.emit_frame_pointer_for_helper();
        }
        self.emit_native_call();
        if self.program.has_stopping_helpers() {
            self.emit_stop_check(pc);
        }
        if let Some(unwind) = self.program.unwind_helper() {
            let next = self.ops.new_dynamic_label();
            let unwind_label = self.unwind;
            self.emit_mov_imm(TMP2, unwind as u64);
            a64!(self.ops
                ; cbnz X(REGISTER_MAP[0]), =>next
                ; cmp X(VALUE), X(TMP2)
            );
            self.emit_branch(Flag::Eq, unwind_label);
            a64!(self.ops ; =>next);
        }
    }

    /// Before a helper that may stop the run: tells it r10, so that it
    /// checks pointers against the live frames only.
    fn emit_frame_pointer_for_helper(&mut self) {
        self.emit_store_context(REGISTER_MAP[FRAME_REG as usize], CTX_FRAME_POINTER);
    }

    /// After a helper that may stop the run: stop at `pc` if it did (the
    /// Rust side then asks the run state why).
    fn emit_stop_check(&mut self, pc: usize) {
        let stop = self.stop(pc, Status::HelperStop);
        self.emit_load_context(TMP, CTX_HELPER_STOP);
        self.emit_branch_if_zero(TMP, false, stop);
    }

    /// Calls the helper at `TMP` with r1..r5 as arguments, keeping r1..r5
    /// (as the interpreter does), the link register and `VALUE`; the result
    /// lands in r0. The context and budget registers are callee-saved.
    fn emit_native_call(&mut self) {
        let r0 = REGISTER_MAP[0];
        a64!(self.ops
            ; stp x0, x1, [sp, #-64]!
            ; stp x2, x3, [sp, #16]
            ; stp x4, x30, [sp, #32]
            ; str X(VALUE), [sp, #48]
            ; blr X(TMP)
            ; mov X(r0), x0
            ; ldr X(VALUE), [sp, #48]
            ; ldp x4, x30, [sp, #32]
            ; ldp x2, x3, [sp, #16]
            ; ldp x0, x1, [sp], #64
        );
    }

    /// `exit`: return from a local call, or end the run when at depth 0.
    fn emit_exit(&mut self, pc: usize) {
        self.flush();
        let r0 = REGISTER_MAP[0];
        let r10 = REGISTER_MAP[FRAME_REG as usize];
        if pc >= self.plan.flow.entry_end {
            // Only local calls enter the other functions.
            a64!(self.ops ; ret);
        } else if self.plan.flow.entry_is_called {
            let exit = self.exit;
            self.emit_load_context(TMP, CTX_STACK_TOP);
            a64!(self.ops ; cmp X(r10), X(TMP));
            self.emit_branch(Flag::Eq, exit);
            a64!(self.ops ; ret);
        } else {
            // At depth 0, with nothing pushed since the prologue.
            if self.budget_in_register {
                self.emit_store_context(BUDGET, CTX_REMAINING);
            } else {
                self.emit_store_count(self.pending);
                self.pending = 0;
            }
            a64!(self.ops
                ; mov x1, X(r0)
                ; mov x0, xzr
            );
            self.emit_epilogue();
        }
    }

    /// Restores the native stack (from any depth) and the callee-saved
    /// registers, and returns.
    fn emit_epilogue(&mut self) {
        self.emit_load_context(TMP, CTX_SAVED_SP);
        a64!(self.ops
            ; mov sp, XSP(TMP)
            ; ldp x19, x20, [sp, #16]
            ; ldp x21, x22, [sp, #32]
            ; ldp x23, x24, [sp, #48]
            ; ldp x25, x26, [sp, #64]
            ; ldp x27, x28, [sp, #80]
            ; ldp x29, x30, [sp], #SAVE_AREA as i32
            ; ret
        );
    }

    /// Without the budget register: leaves `limit - executed` in the
    /// context, for a count known here.
    fn emit_store_count(&mut self, executed: i32) {
        let remaining = self.program.instruction_limit().wrapping_sub(executed as i64 as u64);
        self.emit_mov_imm(TMP, remaining);
        self.emit_store_context(TMP, CTX_REMAINING);
    }

    /// Counts `unflushed` more instructions and stops the run at `pc` with
    /// `status` (`VALUE` holding the value to report).
    fn emit_stop_tail(&mut self, pc: usize, status: Status, unflushed: i32) {
        if self.budget_in_register {
            if unflushed != 0 {
                self.emit_mov_imm(TMP, unflushed as i64 as u64);
                a64!(self.ops ; sub X(BUDGET), X(BUDGET), X(TMP));
            }
        } else {
            self.emit_store_count(unflushed);
        }
        let fault = self.fault;
        // A program has at most 65536 slots, so the pc fits above the status.
        let code = (pc as u64) << 8 | status as u64;
        self.emit_mov_imm(0, code);
        a64!(self.ops ; b =>fault);
    }

    fn emit_cold(&mut self) {
        while let Some(cold) = self.cold.pop() {
            match cold {
                Cold::Stop { label, pc, status, unflushed } => {
                    a64!(self.ops ; =>label);
                    self.emit_stop_tail(pc, status, unflushed);
                }
                Cold::Budget { label, back, pc } => {
                    a64!(self.ops ; =>label);
                    if let Some(back) = back {
                        let refill = self.refill;
                        a64!(self.ops
                            ; str x30, [sp, #-16]!
                            ; bl =>refill
                            ; ldr x30, [sp], #16
                            ; tst X(BUDGET), X(BUDGET)
                        );
                        self.emit_branch(Flag::Pl, back);
                    }
                    self.emit_stop_tail(pc, Status::Budget, 0);
                }
                Cold::Memory { label, back, pc, size, write, inline, unflushed } => {
                    self.emit_slow_check(label, back, pc, size, write, inline, unflushed);
                }
                Cold::Entry { label, status, off } => {
                    a64!(self.ops ; =>label);
                    match status {
                        Status::ShortContext => a64!(self.ops ; mov X(VALUE), x1),
                        _ => {
                            let off = off as u32;
                            a64!(self.ops ; ldr X(VALUE), [x0, #off])
                        }
                    }
                    self.emit_stop_tail(0, status, 0);
                }
                Cold::PacketMiss { label, unflushed } => {
                    a64!(self.ops ; =>label);
                    if !self.budget_in_register {
                        self.emit_store_count(unflushed);
                    } else if unflushed != 0 {
                        self.emit_mov_imm(TMP, unflushed as i64 as u64);
                        a64!(self.ops ; sub X(BUDGET), X(BUDGET), X(TMP));
                    }
                    let unwind = self.unwind;
                    a64!(self.ops ; b =>unwind);
                }
            }
        }
    }

    /// The ways out: a fault (status and pc in x0, address or helper index
    /// in `VALUE`), an unwind (r0 = 0), an exit from a recursive entry
    /// function (r0); all restore the native stack from any call depth.
    /// Then, for limits above `i64::MAX`, the routine that moves more of
    /// the budget into its register.
    fn emit_shared_exits(&mut self) {
        let (fault, unwind, exit, refill) = (self.fault, self.unwind, self.exit, self.refill);
        let r0 = REGISTER_MAP[0];
        a64!(self.ops
            ; =>fault
            ; mov x1, X(VALUE)
        );
        if self.budget_in_register {
            self.emit_store_context(BUDGET, CTX_REMAINING);
        }
        self.emit_epilogue();
        a64!(self.ops
            ; =>unwind
            ; mov X(r0), xzr
            ; =>exit
        );
        // Reached only through calls, which keep the budget in its register.
        if self.budget_in_register {
            self.emit_store_context(BUDGET, CTX_REMAINING);
        }
        a64!(self.ops
            ; mov x1, X(r0)
            ; mov x0, xzr
        );
        self.emit_epilogue();
        if self.big_limit {
            let again = self.ops.new_dynamic_label();
            let done = self.ops.new_dynamic_label();
            a64!(self.ops
                ; =>refill
                ; =>again
                ; tst X(BUDGET), X(BUDGET)
                ; b.pl =>done
            );
            self.emit_load_context(TMP, CTX_EXTRA);
            a64!(self.ops ; cbz X(TMP), =>done);
            self.emit_mov_imm(TMP2, REFILL);
            a64!(self.ops
                ; cmp X(TMP), X(TMP2)
                ; csel X(TMP), X(TMP2), X(TMP), hi
            );
            self.emit_load_context(TMP2, CTX_EXTRA);
            a64!(self.ops ; sub X(TMP2), X(TMP2), X(TMP));
            self.emit_store_context(TMP2, CTX_EXTRA);
            a64!(self.ops
                ; add X(BUDGET), X(BUDGET), X(TMP)
                ; b =>again
                ; =>done
                ; ret
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::jit::JitProgram;
    use crate::program::Config;
    use crate::testing::{conformance, engines, testgen};

    /// `program` compiled with the branches and atomics given.
    fn compile_with(program: Arc<Program>, reach: Reach, atomics: Atomics) -> JitProgram {
        let code = emit_with(&program, reach, atomics).expect("a verified program compiles");
        JitProgram::with_code(program, code).expect("the code maps")
    }

    /// Every conformance vector that loads, compiled so, agrees with the
    /// interpreter.
    fn agree_on_vectors(reach: Reach, atomics: Atomics) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
        let mut compiled = 0;
        for (name, vector) in conformance::read_vectors(&dir).expect("tests/conformance parses") {
            // Vectors that must fail to assemble or load have no code.
            let Ok(insns) = crate::asm::assemble(&vector.asm) else { continue };
            let Ok(program) = Program::load(&encode_program(&insns), &conformance::helpers(), &Config::default())
            else {
                continue;
            };
            let program = Arc::new(program);
            let jit = compile_with(program.clone(), reach, atomics);
            engines::assert_agree(&program, &jit, &vector.mem, &name).ok();
            compiled += 1;
        }
        assert!(compiled >= 290, "only {compiled} vectors compiled");
    }

    /// The generator's programs of `seeds`, compiled so, agree with the
    /// interpreter.
    fn agree_on_random_programs(reach: Reach, atomics: Atomics, seeds: std::ops::Range<u64>) {
        for seed in seeds {
            let case = testgen::program_from_seed(seed);
            let interpreted = case.load().expect("generated programs verify");
            let compiled = Arc::new(case.load().expect("generated programs verify"));
            let jit = compile_with(compiled.clone(), reach, atomics);
            if let Err(divergence) =
                engines::compare(&case.input, &interpreted, &compiled, |memory| (jit.execute(memory), None))
            {
                panic!("seed {seed}: {divergence}{}", testgen::case_description(&case));
            }
        }
    }

    // Far branches at normal sizes: the programs past 1 MiB that get them
    // are few and slow to run.
    #[test]
    fn far_branches_agree_with_the_interpreter() {
        agree_on_vectors(Reach::Far, Atomics::of_this_cpu());
        agree_on_random_programs(Reach::Far, Atomics::of_this_cpu(), 0..2000);
    }

    // Both forms of atomics, whichever this CPU would get.
    #[test]
    fn exclusive_atomics_agree_with_the_interpreter() {
        agree_on_vectors(Reach::Near, Atomics::Exclusive);
        agree_on_random_programs(Reach::Near, Atomics::Exclusive, 0..2000);
    }

    #[test]
    fn lse_atomics_agree_with_the_interpreter() {
        if Atomics::of_this_cpu() != Atomics::Lse {
            // Its instructions would be undefined here; CI runs this test
            // under qemu-user's `max` CPU, which has them.
            eprintln!("this CPU has no LSE atomics: only the exclusive form was tested");
            return;
        }
        agree_on_vectors(Reach::Near, Atomics::Lse);
        agree_on_random_programs(Reach::Near, Atomics::Lse, 0..2000);
    }

    #[test]
    fn register_map_is_injective_and_leaves_scratch_alone() {
        let mut seen = [false; 32];
        for host in REGISTER_MAP {
            assert!(!seen[host as usize], "x{host} mapped twice");
            seen[host as usize] = true;
        }
        for reserved in [CTX, BUDGET, TMP, TMP2, TMP3, VALUE, ADDR, IMM, 18, 29, 30, 31] {
            assert!(!seen[reserved as usize], "x{reserved} is reserved");
        }
    }

    #[test]
    fn code_past_near_branches_is_emitted_again_and_past_far_ones_refused() {
        assert_eq!(reach_needed(Reach::Near, 4096).unwrap(), Reach::Near);
        assert_eq!(reach_needed(Reach::Near, NEAR_CODE).unwrap(), Reach::Near);
        assert_eq!(reach_needed(Reach::Near, NEAR_CODE + 4).unwrap(), Reach::Far);
        assert_eq!(reach_needed(Reach::Far, FAR_CODE).unwrap(), Reach::Far);
        let error = reach_needed(Reach::Far, FAR_CODE + 4).unwrap_err();
        assert!(matches!(error, JitError::CodeTooLarge { bytes, limit: FAR_CODE } if bytes == FAR_CODE + 4));
        assert!(matches!(reach_needed(Reach::Near, FAR_CODE + 4), Err(JitError::CodeTooLarge { .. })));
    }
}
