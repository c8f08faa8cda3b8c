//! The x86-64 backend: one pass over the instructions, in the interpreter's
//! terms, emitting System V code with dynasm.
//!
//! The generated function is `extern "sysv64" fn(*mut Context) -> u64`: it
//! returns a `Status`, with r0 or the fault's place left in the
//! `Context`. Layout: prologue, then each instruction at its own dynamic
//! label, then cold stubs (one per faulting site: they load the pc and the
//! status and jump to the shared `->fault` exit), then the shared exits
//! (`->fault`, `->unwind`, `->exit`, `->leave`), then the region-check
//! routines.
//!
//! Memory checks. Every load, store and atomic computes its address into
//! r11 and checks it as `Memory::allows` does: the live stack frames
//! `[r10 - 512, stack_top)` (r10 is exact, being the current frame's top),
//! the input, then the program's regions (fixed for the program's life, so
//! compiled in as constants, in a shared routine per size and direction).
//! A check is left out only when the base register is r10 and
//! `[r10 + off, r10 + off + size)` lies inside `[r10 - 512, r10)`, the current
//! frame: the verifier guarantees r10 is never written, and calls and
//! returns move it only between frames, so such an access is always in the
//! live stack.
//!
//! Instruction budget. The interpreter compares its count with the limit at
//! backward jumps and calls only, so the code adds each straight run's
//! length to `Context::executed` where the run ends (at a jump, call or
//! exit, or before falling into a jump target), and compares at the same
//! instructions as the interpreter: the count is exact there. A fault stub
//! adds the part of its run not yet counted, so the count is exact at the
//! end of every run too.
//!
//! Local calls use the native stack: the caller pushes r6-r9 and r10 and
//! `call`s the function; its `exit` is a `ret`. Each level takes 48 bytes
//! with the return address, so the stack stays 16-byte aligned for helpers.

use std::mem::offset_of;

use dynasmrt::mmap::MutableBuffer;
use dynasmrt::x64::{Rq, X64Relocation};
use dynasmrt::{AssemblyOffset, DynamicLabel, DynasmApi, DynasmLabelApi, ExecutableBuffer, VecAssembler, dynasm};

use super::{Context, JitError, Status};
use crate::isa::*;
use crate::program::Program;

/// Where each eBPF register lives while the program runs (index = eBPF
/// register number).
pub const REGISTER_MAP: [Rq; NUM_REGS] = [
    Rq::RAX, // r0: return value; where helpers leave theirs, and cmpxchg's comparand
    Rq::RDI, // r1: 1st argument, already where a System V helper wants it
    Rq::RSI, // r2: 2nd argument, likewise
    Rq::RDX, // r3: 3rd argument, likewise
    Rq::R9,  // r4: 4th argument; not rcx, which shifts need for the count: copied to rcx at a call
    Rq::R8,  // r5: 5th argument, already in place
    Rq::RBX, // r6: callee-saved in eBPF and in System V alike
    Rq::R13, // r7: callee-saved
    Rq::R14, // r8: callee-saved
    Rq::R15, // r9: callee-saved
    Rq::RBP, // r10: frame pointer, read-only; callee-saved
];
// Also reserved: r12 holds the `Context` pointer for the whole run (budget
// counter, input bounds, stack top, call depth, error slots). rcx, r10 and
// r11 are scratch: rcx for shift counts, divisors and temporaries, r11 for
// the address of a memory access (and the faulting value at a fault), r10
// for temporaries and call targets.

// The helper-call sequence relies on r1..r5 being rdi, rsi, rdx, r9, r8.
const _: () = {
    let expected = [Rq::RDI, Rq::RSI, Rq::RDX, Rq::R9, Rq::R8];
    let mut i = 0;
    while i < 5 {
        assert!(REGISTER_MAP[i + 1] as u8 == expected[i] as u8);
        i += 1;
    }
    assert!(REGISTER_MAP[0] as u8 == Rq::RAX as u8);
    assert!(REGISTER_MAP[10] as u8 == Rq::RBP as u8);
};

/// Context field offsets, as the code addresses them from r12.
const CTX_INPUT_START: i32 = offset_of!(Context, input_start) as i32;
const CTX_INPUT_LEN: i32 = offset_of!(Context, input_len) as i32;
const CTX_INPUT_BOUND: i32 = offset_of!(Context, input_bound) as i32;
const CTX_STACK_TOP: i32 = offset_of!(Context, stack_top) as i32;
const CTX_EXECUTED: i32 = offset_of!(Context, executed) as i32;
const CTX_DEPTH: i32 = offset_of!(Context, depth) as i32;
const CTX_SAVED_RSP: i32 = offset_of!(Context, saved_rsp) as i32;
const CTX_RESULT: i32 = offset_of!(Context, result) as i32;
const CTX_ERROR_PC: i32 = offset_of!(Context, error_pc) as i32;
const CTX_ERROR_VALUE: i32 = offset_of!(Context, error_value) as i32;

// The helper table is read as an array of nullable code pointers.
const _: () = assert!(size_of::<Option<crate::helpers::HelperFn>>() == 8);

/// dynasm with the architecture spelled out once.
macro_rules! x64 {
    ($ops:expr ; $($t:tt)*) => {
        dynasm!($ops ; .arch x64 ; $($t)*)
    };
}

/// The same instruction with or without a `lock` prefix.
macro_rules! maybe_locked {
    ($ops:expr, $locked:expr ; $($t:tt)*) => {
        if $locked {
            x64!($ops ; lock $($t)*)
        } else {
            x64!($ops ; $($t)*)
        }
    };
}

/// The native code of one program, in memory that is readable and
/// executable but never writable (it is filled while writable and not
/// executable, then switched). Unmapped on drop.
pub(super) struct Code {
    buffer: ExecutableBuffer,
}

impl Code {
    fn map(bytes: &[u8]) -> Result<Code, JitError> {
        let mut buffer = MutableBuffer::new(bytes.len())?;
        buffer.set_len(bytes.len());
        buffer.copy_from_slice(bytes);
        let buffer = buffer.make_exec()?;
        dynasmrt::cache_control::prepare_for_execution(&buffer);
        Ok(Code { buffer })
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Runs the code with `context`, which must describe memory that stays
    /// valid for the run (the caller's input and stack), for a program that
    /// outlives the call; returns the [`Status`].
    pub(super) fn run(&self, context: &mut Context) -> u64 {
        let start = self.buffer.ptr(AssemblyOffset(0));
        // SAFETY: the buffer holds a complete function generated by
        // `compile` with this signature at offset 0 (the prologue), mapped
        // executable, and lives as long as `self`.
        let entry: unsafe extern "sysv64" fn(*mut Context) -> u64 = unsafe { std::mem::transmute(start) };
        // SAFETY: the code only touches memory that its checks admit: the
        // input and stack the context describes (borrowed by the caller for
        // this call), the program's regions and helper table (owned by the
        // `Program` that the `JitProgram` keeps alive), and the context
        // itself; helpers are called with the System V convention they are
        // declared with; the native stack is restored on every way out.
        unsafe { entry(context) }
    }
}

/// The second operand of an ALU or jump instruction.
#[derive(Clone, Copy)]
enum Operand {
    Reg(Rq),
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

/// A cold path: the code jumps here from `pc` to stop the run with `status`.
struct Stub {
    label: DynamicLabel,
    pc: usize,
    status: Status,
    /// Instructions of the straight run up to `pc` (included) not yet
    /// counted, so that the count is exact however the run stops.
    unflushed: u32,
}

fn reg(index: u8) -> Rq {
    // The verifier keeps register fields to r0..r10.
    REGISTER_MAP[index as usize]
}

fn target(pc: usize, offset: i64) -> usize {
    // The verifier checked that every jump and call lands inside the program.
    (pc as i64 + 1 + offset) as usize
}

/// Compiles a verified program.
pub(super) fn compile(program: &Program) -> Result<Code, JitError> {
    if cfg!(windows) {
        // Helpers are `extern "C"`, which is not System V there.
        return Err(JitError::Unsupported("x86_64-windows"));
    }
    let mut emitter = Emitter::new(program);
    emitter.emit_prologue();
    emitter.emit_body()?;
    emitter.emit_stubs();
    emitter.emit_shared_exits();
    emitter.emit_region_checks();
    let bytes = emitter.ops.finalize().map_err(|error| JitError::Assembler(error.to_string()))?;
    Code::map(&bytes)
}

struct Emitter<'p> {
    ops: VecAssembler<X64Relocation>,
    program: &'p Program,
    /// One label per instruction slot (the second slot of an `lddw` is never
    /// defined nor used).
    labels: Vec<DynamicLabel>,
    /// Slots some jump lands on: a straight run ends before them.
    jump_targets: Vec<bool>,
    /// First slot after the entry function.
    entry_end: usize,
    /// Does some local call enter the entry function (recursion)? Then its
    /// `exit` must look at the depth.
    entry_is_called: bool,
    /// Instructions of the current straight run not yet added to the count.
    pending: u32,
    stubs: Vec<Stub>,
    /// Region-check routines by access size (log2) and direction (write).
    region_checks: [[Option<DynamicLabel>; 2]; 4],
}

impl<'p> Emitter<'p> {
    fn new(program: &'p Program) -> Emitter<'p> {
        let insns = program.insns();
        let mut ops = VecAssembler::new(0);
        let labels = (0..insns.len()).map(|_| ops.new_dynamic_label()).collect();
        let mut jump_targets = vec![false; insns.len()];
        let mut entry_is_called = false;
        let mut pc = 0;
        while pc < insns.len() {
            let insn = insns[pc];
            match insn.opc {
                LDDW => pc += 1,
                JA32 => jump_targets[target(pc, insn.imm as i64)] = true,
                CALL if insn.src == CALL_LOCAL => entry_is_called |= target(pc, insn.imm as i64) == 0,
                CALL | CALLX | EXIT => {}
                _ if matches!(insn.class(), BPF_JMP | BPF_JMP32) => jump_targets[target(pc, insn.off as i64)] = true,
                _ => {}
            }
            pc += 1;
        }
        Emitter {
            ops,
            program,
            labels,
            jump_targets,
            entry_end: program.functions().get(1).copied().unwrap_or(insns.len()),
            entry_is_called,
            pending: 0,
            stubs: Vec::new(),
            region_checks: [[None; 2]; 4],
        }
    }

    /// Saves the callee-saved registers, keeps the context pointer, and
    /// sets the registers as the interpreter does: r1 = input address,
    /// r2 = its length, r10 = stack top, all others 0.
    fn emit_prologue(&mut self) {
        let [r1, r2, frame_pointer] = [1, 2, 10].map(|r| REGISTER_MAP[r]);
        x64!(self.ops
            ; push rbp
            ; push rbx
            ; push r12
            ; push r13
            ; push r14
            ; push r15
            // Six pushes and the return address: realign to 16 for helpers.
            ; sub rsp, 8
            ; mov r12, rdi
            ; mov [r12 + CTX_SAVED_RSP], rsp
            ; mov Rq(r1), [r12 + CTX_INPUT_START]
            ; mov Rq(r2), [r12 + CTX_INPUT_LEN]
            ; mov Rq(frame_pointer), [r12 + CTX_STACK_TOP]
        );
        for r in [0, 3, 4, 5, 6, 7, 8, 9] {
            let host = REGISTER_MAP[r];
            x64!(self.ops ; xor Rd(host), Rd(host));
        }
    }

    fn emit_body(&mut self) -> Result<(), JitError> {
        let insns = self.program.insns();
        let mut pc = 0;
        while pc < insns.len() {
            if self.jump_targets[pc] {
                // Falling into a jump target ends the straight run.
                self.flush();
            }
            let label = self.labels[pc];
            x64!(self.ops ; =>label);
            self.pending += 1;
            self.emit_insn(pc, insns[pc])?;
            pc += if insns[pc].opc == LDDW { 2 } else { 1 };
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
                let value = (imm as u32 as u64 | (high as u32 as u64) << 32) as i64;
                x64!(self.ops ; mov Rq(dst), QWORD value);
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
            opc => return Err(JitError::Unverified { pc, opc }),
        };
        Ok(())
    }

    /// Adds the current straight run to the instruction count.
    fn flush(&mut self) {
        if self.pending > 0 {
            // A run is at most 65536 instructions long.
            let count = self.pending as i32;
            x64!(self.ops ; add QWORD [r12 + CTX_EXECUTED], DWORD count);
            self.pending = 0;
        }
    }

    /// Stops the run at `pc` if the (flushed) count is past the limit.
    fn emit_budget_check(&mut self, pc: usize) {
        let exhausted = self.stub(pc, Status::Budget);
        match i32::try_from(self.program.instruction_limit()) {
            Ok(limit) => x64!(self.ops
                ; cmp QWORD [r12 + CTX_EXECUTED], DWORD limit
                ; ja =>exhausted
            ),
            Err(_) => {
                let limit = self.program.instruction_limit() as i64;
                x64!(self.ops
                    ; mov rcx, QWORD limit
                    ; cmp [r12 + CTX_EXECUTED], rcx
                    ; ja =>exhausted
                );
            }
        }
    }

    fn stub(&mut self, pc: usize, status: Status) -> DynamicLabel {
        let label = self.ops.new_dynamic_label();
        self.stubs.push(Stub { label, pc, status, unflushed: self.pending });
        label
    }

    fn emit_alu(&mut self, width: Width, op: Alu, dst: Rq, operand: Operand) {
        use Operand::{Imm, Reg};
        use Width::{W32, W64};
        #[rustfmt::skip]
        match (width, op, operand) {
            (W32, Alu::Add, Imm(k)) => x64!(self.ops ; add Rd(dst), DWORD k),
            (W32, Alu::Add, Reg(s)) => x64!(self.ops ; add Rd(dst), Rd(s)),
            (W32, Alu::Sub, Imm(k)) => x64!(self.ops ; sub Rd(dst), DWORD k),
            (W32, Alu::Sub, Reg(s)) => x64!(self.ops ; sub Rd(dst), Rd(s)),
            (W32, Alu::Mul, Imm(k)) => x64!(self.ops ; imul Rd(dst), Rd(dst), DWORD k),
            (W32, Alu::Mul, Reg(s)) => x64!(self.ops ; imul Rd(dst), Rd(s)),
            (W32, Alu::Or,  Imm(k)) => x64!(self.ops ; or Rd(dst), DWORD k),
            (W32, Alu::Or,  Reg(s)) => x64!(self.ops ; or Rd(dst), Rd(s)),
            (W32, Alu::And, Imm(k)) => x64!(self.ops ; and Rd(dst), DWORD k),
            (W32, Alu::And, Reg(s)) => x64!(self.ops ; and Rd(dst), Rd(s)),
            (W32, Alu::Xor, Imm(k)) => x64!(self.ops ; xor Rd(dst), DWORD k),
            (W32, Alu::Xor, Reg(s)) => x64!(self.ops ; xor Rd(dst), Rd(s)),
            (W32, Alu::Mov, Imm(k)) => x64!(self.ops ; mov Rd(dst), DWORD k),
            (W32, Alu::Mov, Reg(s)) => x64!(self.ops ; mov Rd(dst), Rd(s)),
            // 64-bit forms sign-extend the immediate, as `k64` does.
            (W64, Alu::Add, Imm(k)) => x64!(self.ops ; add Rq(dst), DWORD k),
            (W64, Alu::Add, Reg(s)) => x64!(self.ops ; add Rq(dst), Rq(s)),
            (W64, Alu::Sub, Imm(k)) => x64!(self.ops ; sub Rq(dst), DWORD k),
            (W64, Alu::Sub, Reg(s)) => x64!(self.ops ; sub Rq(dst), Rq(s)),
            (W64, Alu::Mul, Imm(k)) => x64!(self.ops ; imul Rq(dst), Rq(dst), DWORD k),
            (W64, Alu::Mul, Reg(s)) => x64!(self.ops ; imul Rq(dst), Rq(s)),
            (W64, Alu::Or,  Imm(k)) => x64!(self.ops ; or Rq(dst), DWORD k),
            (W64, Alu::Or,  Reg(s)) => x64!(self.ops ; or Rq(dst), Rq(s)),
            (W64, Alu::And, Imm(k)) => x64!(self.ops ; and Rq(dst), DWORD k),
            (W64, Alu::And, Reg(s)) => x64!(self.ops ; and Rq(dst), Rq(s)),
            (W64, Alu::Xor, Imm(k)) => x64!(self.ops ; xor Rq(dst), DWORD k),
            (W64, Alu::Xor, Reg(s)) => x64!(self.ops ; xor Rq(dst), Rq(s)),
            (W64, Alu::Mov, Imm(k)) => x64!(self.ops ; mov Rq(dst), DWORD k),
            (W64, Alu::Mov, Reg(s)) => x64!(self.ops ; mov Rq(dst), Rq(s)),
        };
    }

    /// Shifts; x86 masks counts to 5 bits (32-bit) or 6 (64-bit), as the
    /// interpreter's `wrapping_shl`/`wrapping_shr` do.
    fn emit_shift(&mut self, width: Width, shift: Shift, dst: Rq, operand: Operand) {
        use Width::{W32, W64};
        match operand {
            Operand::Imm(k) => {
                let mask = if width == W32 { 31 } else { 63 };
                let count = (k & mask) as i8;
                if count == 0 {
                    // Nothing moves, but a 32-bit form still truncates.
                    if width == W32 {
                        x64!(self.ops ; mov Rd(dst), Rd(dst));
                    }
                    return;
                }
                #[rustfmt::skip]
                match (width, shift) {
                    (W32, Shift::Left)       => x64!(self.ops ; shl Rd(dst), BYTE count),
                    (W32, Shift::Right)      => x64!(self.ops ; shr Rd(dst), BYTE count),
                    (W32, Shift::Arithmetic) => x64!(self.ops ; sar Rd(dst), BYTE count),
                    (W64, Shift::Left)       => x64!(self.ops ; shl Rq(dst), BYTE count),
                    (W64, Shift::Right)      => x64!(self.ops ; shr Rq(dst), BYTE count),
                    (W64, Shift::Arithmetic) => x64!(self.ops ; sar Rq(dst), BYTE count),
                };
            }
            Operand::Reg(s) => {
                x64!(self.ops ; mov rcx, Rq(s));
                #[rustfmt::skip]
                match (width, shift) {
                    (W32, Shift::Left)       => x64!(self.ops ; shl Rd(dst), cl),
                    (W32, Shift::Right)      => x64!(self.ops ; shr Rd(dst), cl),
                    (W32, Shift::Arithmetic) => x64!(self.ops ; sar Rd(dst), cl),
                    (W64, Shift::Left)       => x64!(self.ops ; shl Rq(dst), cl),
                    (W64, Shift::Right)      => x64!(self.ops ; shr Rq(dst), cl),
                    (W64, Shift::Arithmetic) => x64!(self.ops ; sar Rq(dst), cl),
                };
                if width == W32 {
                    // A count of 0 may leave the high half: truncate explicitly.
                    x64!(self.ops ; mov Rd(dst), Rd(dst));
                }
            }
        }
    }

    fn emit_neg(&mut self, width: Width, dst: Rq) {
        match width {
            Width::W32 => x64!(self.ops ; neg Rd(dst)),
            Width::W64 => x64!(self.ops ; neg Rq(dst)),
        }
    }

    /// `div`/`sdiv`/`mod`/`smod`, as `div32`, `div64`, `mod32`, `mod64`: a
    /// zero divisor gives 0 (div) or the truncated dividend (mod); a signed
    /// divisor of -1 is done without `idiv`, which faults on INT_MIN / -1.
    fn emit_divmod(&mut self, width: Width, modulo: bool, signed: bool, dst: Rq, divisor: Operand) {
        match divisor {
            // For both widths, the divisor is 0 or -1 exactly when imm is.
            Operand::Imm(0) => self.emit_divide_by_zero(width, modulo, dst),
            Operand::Imm(-1) if signed => self.emit_divide_by_minus_one(width, modulo, dst),
            Operand::Imm(k) => {
                match width {
                    Width::W32 => x64!(self.ops ; mov ecx, DWORD k),
                    Width::W64 => x64!(self.ops ; mov rcx, DWORD k),
                }
                self.emit_divide_rcx(width, modulo, signed, dst);
            }
            Operand::Reg(s) => {
                let by_zero = self.ops.new_dynamic_label();
                let by_minus_one = self.ops.new_dynamic_label();
                let done = self.ops.new_dynamic_label();
                match width {
                    Width::W32 => x64!(self.ops ; mov ecx, Rd(s) ; test ecx, ecx ; jz =>by_zero),
                    Width::W64 => x64!(self.ops ; mov rcx, Rq(s) ; test rcx, rcx ; jz =>by_zero),
                }
                if signed {
                    match width {
                        Width::W32 => x64!(self.ops ; cmp ecx, -1 ; je =>by_minus_one),
                        Width::W64 => x64!(self.ops ; cmp rcx, -1 ; je =>by_minus_one),
                    }
                }
                self.emit_divide_rcx(width, modulo, signed, dst);
                x64!(self.ops ; jmp =>done ; =>by_zero);
                self.emit_divide_by_zero(width, modulo, dst);
                if signed {
                    x64!(self.ops ; jmp =>done ; =>by_minus_one);
                    self.emit_divide_by_minus_one(width, modulo, dst);
                }
                x64!(self.ops ; =>done);
            }
        }
    }

    /// dst = dst / rcx or dst % rcx, for a divisor that is neither 0 nor
    /// (signed) -1. rax and rdx (r0, r3) are kept in r10 and r11.
    fn emit_divide_rcx(&mut self, width: Width, modulo: bool, signed: bool, dst: Rq) {
        x64!(self.ops ; mov r10, rax ; mov r11, rdx);
        match (width, signed) {
            (Width::W32, false) => x64!(self.ops ; mov eax, Rd(dst) ; xor edx, edx ; div ecx),
            (Width::W32, true) => x64!(self.ops ; mov eax, Rd(dst) ; cdq ; idiv ecx),
            (Width::W64, false) => x64!(self.ops ; mov rax, Rq(dst) ; xor edx, edx ; div rcx),
            (Width::W64, true) => x64!(self.ops ; mov rax, Rq(dst) ; cqo ; idiv rcx),
        }
        // 32-bit division leaves zero-extended results.
        if modulo {
            x64!(self.ops ; mov rcx, rdx);
        } else {
            x64!(self.ops ; mov rcx, rax);
        }
        x64!(self.ops ; mov rax, r10 ; mov rdx, r11 ; mov Rq(dst), rcx);
    }

    fn emit_divide_by_zero(&mut self, width: Width, modulo: bool, dst: Rq) {
        match (width, modulo) {
            (_, false) => x64!(self.ops ; xor Rd(dst), Rd(dst)),
            (Width::W32, true) => x64!(self.ops ; mov Rd(dst), Rd(dst)),
            (Width::W64, true) => {}
        }
    }

    /// x / -1 = -x (wrapping, so INT_MIN stays INT_MIN); x % -1 = 0.
    fn emit_divide_by_minus_one(&mut self, width: Width, modulo: bool, dst: Rq) {
        match (width, modulo) {
            (_, true) => x64!(self.ops ; xor Rd(dst), Rd(dst)),
            (Width::W32, false) => x64!(self.ops ; neg Rd(dst)),
            (Width::W64, false) => x64!(self.ops ; neg Rq(dst)),
        }
    }

    /// `mov`/`mov32`, or `movsx` with offset 8/16/32.
    fn emit_movsx(&mut self, width: Width, dst: Rq, src: Rq, bits: i16) {
        match (width, bits) {
            (Width::W32, 8) => x64!(self.ops ; movsx Rd(dst), Rb(src)),
            (Width::W32, 16) => x64!(self.ops ; movsx Rd(dst), Rw(src)),
            (Width::W32, _) => x64!(self.ops ; mov Rd(dst), Rd(src)),
            (Width::W64, 8) => x64!(self.ops ; movsx Rq(dst), Rb(src)),
            (Width::W64, 16) => x64!(self.ops ; movsx Rq(dst), Rw(src)),
            (Width::W64, 32) => x64!(self.ops ; movsxd Rq(dst), Rd(src)),
            (Width::W64, _) => x64!(self.ops ; mov Rq(dst), Rq(src)),
        }
    }

    /// `le16/32/64` on a little-endian host: truncation only.
    fn emit_to_le(&mut self, dst: Rq, width: i32) {
        match width {
            16 => x64!(self.ops ; movzx Rd(dst), Rw(dst)),
            32 => x64!(self.ops ; mov Rd(dst), Rd(dst)),
            _ => {}
        }
    }

    /// `be16/32/64` on a little-endian host, and `bswap16/32/64`.
    fn emit_byte_swap(&mut self, dst: Rq, width: i32) {
        match width {
            16 => x64!(self.ops ; bswap Rd(dst) ; shr Rd(dst), 16),
            32 => x64!(self.ops ; bswap Rd(dst)),
            _ => x64!(self.ops ; bswap Rq(dst)),
        }
    }

    /// r11 = base + off (wrapping), the address of a memory access.
    fn emit_address(&mut self, base: u8, off: i16) {
        let base = reg(base);
        let off = off as i32;
        x64!(self.ops ; lea r11, [Rq(base) + off]);
    }

    /// Checks the access of `size` bytes at r11 made by the instruction at
    /// `pc` (whose address is `base + off`), unless it provably lies in the
    /// current stack frame.
    fn emit_access_check(&mut self, pc: usize, base: u8, off: i16, size: usize, write: bool) {
        let frame = STACK_FRAME_SIZE as i64;
        if base == FRAME_REG && off as i64 >= -frame && off as i64 + size as i64 <= 0 {
            // [r10 + off, r10 + off + size) is inside [r10 - 512, r10).
            return;
        }
        self.emit_bounds_check(pc, size, write);
    }

    /// `Memory::allows` for the access of `size` bytes at r11: the live
    /// stack frames, the input, the regions; else a memory fault at `pc`.
    fn emit_bounds_check(&mut self, pc: usize, size: usize, write: bool) {
        let allowed = self.ops.new_dynamic_label();
        let fault = self.stub(pc, Status::Memory);
        // eBPF r10 (host rbp), not the host's scratch r10.
        let frame_pointer = REGISTER_MAP[FRAME_REG as usize];
        let frame = STACK_FRAME_SIZE as i32;
        let frame_slack = (STACK_FRAME_SIZE - size) as i32;
        let input_bound = CTX_INPUT_BOUND + 8 * size.trailing_zeros() as i32;
        x64!(self.ops
            // Stack: addr - stack_low <= stack_top - stack_low - size, where
            // stack_low = (eBPF) r10 - 512 is the bottom of the deepest frame.
            ; lea rcx, [r11 + frame]
            ; sub rcx, Rq(frame_pointer)
            ; mov r10, [r12 + CTX_STACK_TOP]
            ; sub r10, Rq(frame_pointer)
            ; add r10, DWORD frame_slack
            ; cmp rcx, r10
            ; jbe =>allowed
            // Input: addr - input_start < input_bound[size].
            ; mov rcx, r11
            ; sub rcx, [r12 + CTX_INPUT_START]
            ; cmp rcx, [r12 + input_bound]
            ; jb =>allowed
        );
        match self.region_check(size, write) {
            Some(routine) => x64!(self.ops ; call =>routine ; ja =>fault),
            None => x64!(self.ops ; jmp =>fault),
        }
        x64!(self.ops ; =>allowed);
    }

    /// The routine checking r11 against the regions an access of `size`
    /// bytes in this direction may use, if there are any.
    fn region_check(&mut self, size: usize, write: bool) -> Option<DynamicLabel> {
        if !self.program.regions().iter().any(|region| region.len >= size as u64 && (region.writable || !write)) {
            return None;
        }
        let slot = &mut self.region_checks[size.trailing_zeros() as usize][write as usize];
        Some(*slot.get_or_insert_with(|| self.ops.new_dynamic_label()))
    }

    /// The region-check routines: each returns with the flags of an
    /// unsigned comparison, below-or-equal when some region holds the bytes
    /// (`Region::contains`, and writable for a store).
    fn emit_region_checks(&mut self) {
        for (log2, routines) in self.region_checks.into_iter().enumerate() {
            let size = 1u64 << log2;
            for (write, routine) in routines.into_iter().enumerate() {
                let Some(routine) = routine else { continue };
                let done = self.ops.new_dynamic_label();
                x64!(self.ops ; =>routine);
                let regions = self
                    .program
                    .regions()
                    .iter()
                    .filter(|region| region.len >= size && (region.writable || write == 0));
                for region in regions {
                    let start = region.start as i64;
                    let slack = (region.len - size) as i64;
                    x64!(self.ops
                        ; mov rcx, r11
                        ; mov r10, QWORD start
                        ; sub rcx, r10
                        ; mov r10, QWORD slack
                        ; cmp rcx, r10
                        ; jbe =>done
                    );
                }
                x64!(self.ops ; =>done ; ret);
            }
        }
    }

    fn emit_load(&mut self, pc: usize, insn: Insn, kind: LoadKind) {
        self.emit_address(insn.src, insn.off);
        self.emit_access_check(pc, insn.src, insn.off, access_size(insn.opc), false);
        let dst = reg(insn.dst);
        match kind {
            LoadKind::U8 => x64!(self.ops ; movzx Rd(dst), BYTE [r11]),
            LoadKind::U16 => x64!(self.ops ; movzx Rd(dst), WORD [r11]),
            LoadKind::U32 => x64!(self.ops ; mov Rd(dst), DWORD [r11]),
            LoadKind::U64 => x64!(self.ops ; mov Rq(dst), QWORD [r11]),
            LoadKind::S8 => x64!(self.ops ; movsx Rq(dst), BYTE [r11]),
            LoadKind::S16 => x64!(self.ops ; movsx Rq(dst), WORD [r11]),
            LoadKind::S32 => x64!(self.ops ; movsxd Rq(dst), DWORD [r11]),
        }
    }

    /// `st*` (imm, truncated; `stdw` sign-extends it) and `stx*` (src).
    fn emit_store(&mut self, pc: usize, insn: Insn, value: Operand) {
        let size = access_size(insn.opc);
        self.emit_address(insn.dst, insn.off);
        self.emit_access_check(pc, insn.dst, insn.off, size, true);
        match (size, value) {
            (1, Operand::Imm(k)) => x64!(self.ops ; mov BYTE [r11], BYTE k as i8),
            (2, Operand::Imm(k)) => x64!(self.ops ; mov WORD [r11], WORD k as i16),
            (4, Operand::Imm(k)) => x64!(self.ops ; mov DWORD [r11], DWORD k),
            (_, Operand::Imm(k)) => x64!(self.ops ; mov QWORD [r11], DWORD k),
            (1, Operand::Reg(s)) => x64!(self.ops ; mov BYTE [r11], Rb(s)),
            (2, Operand::Reg(s)) => x64!(self.ops ; mov WORD [r11], Rw(s)),
            (4, Operand::Reg(s)) => x64!(self.ops ; mov DWORD [r11], Rd(s)),
            (_, Operand::Reg(s)) => x64!(self.ops ; mov QWORD [r11], Rq(s)),
        }
    }

    /// Atomics: `lock`ed when aligned; a plain read-modify-write when not,
    /// as the interpreter's `atomic_rmw` (a split lock may trap or stall).
    fn emit_atomic(&mut self, pc: usize, insn: Insn, width: Width) -> Result<(), JitError> {
        let size = access_size(insn.opc);
        self.emit_address(insn.dst, insn.off);
        self.emit_access_check(pc, insn.dst, insn.off, size, true);
        let unaligned = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        let misalignment = size as i32 - 1;
        x64!(self.ops ; test r11d, DWORD misalignment ; jnz =>unaligned);
        self.emit_atomic_op(pc, insn, width, true)?;
        x64!(self.ops ; jmp =>done ; =>unaligned);
        self.emit_atomic_op(pc, insn, width, false)?;
        x64!(self.ops ; =>done);
        Ok(())
    }

    /// The operation `insn.imm` on the value at r11 with operand `src`; the
    /// old value goes to src (fetch forms) or r0 (cmpxchg), zero-extended
    /// for 32-bit forms.
    fn emit_atomic_op(&mut self, pc: usize, insn: Insn, width: Width, locked: bool) -> Result<(), JitError> {
        use Width::{W32, W64};
        let src = reg(insn.src);
        #[rustfmt::skip]
        match (insn.imm, width) {
            (ATOMIC_ADD, W32) => maybe_locked!(self.ops, locked ; add DWORD [r11], Rd(src)),
            (ATOMIC_ADD, W64) => maybe_locked!(self.ops, locked ; add QWORD [r11], Rq(src)),
            (ATOMIC_OR,  W32) => maybe_locked!(self.ops, locked ; or DWORD [r11], Rd(src)),
            (ATOMIC_OR,  W64) => maybe_locked!(self.ops, locked ; or QWORD [r11], Rq(src)),
            (ATOMIC_AND, W32) => maybe_locked!(self.ops, locked ; and DWORD [r11], Rd(src)),
            (ATOMIC_AND, W64) => maybe_locked!(self.ops, locked ; and QWORD [r11], Rq(src)),
            (ATOMIC_XOR, W32) => maybe_locked!(self.ops, locked ; xor DWORD [r11], Rd(src)),
            (ATOMIC_XOR, W64) => maybe_locked!(self.ops, locked ; xor QWORD [r11], Rq(src)),
            (op, W32) if op == ATOMIC_ADD | ATOMIC_FETCH => {
                x64!(self.ops ; mov ecx, Rd(src));
                maybe_locked!(self.ops, locked ; xadd DWORD [r11], ecx);
                x64!(self.ops ; mov Rd(src), ecx);
            }
            (op, W64) if op == ATOMIC_ADD | ATOMIC_FETCH => {
                x64!(self.ops ; mov rcx, Rq(src));
                maybe_locked!(self.ops, locked ; xadd QWORD [r11], rcx);
                x64!(self.ops ; mov Rq(src), rcx);
            }
            (op, _) if op == ATOMIC_OR | ATOMIC_FETCH => self.emit_fetch_loop(Alu::Or, width, src, locked),
            (op, _) if op == ATOMIC_AND | ATOMIC_FETCH => self.emit_fetch_loop(Alu::And, width, src, locked),
            (op, _) if op == ATOMIC_XOR | ATOMIC_FETCH => self.emit_fetch_loop(Alu::Xor, width, src, locked),
            // xchg with memory is always locked, so the unaligned form is
            // spelled as a load and a store.
            (ATOMIC_XCHG, W32) if locked => x64!(self.ops ; mov ecx, Rd(src) ; xchg DWORD [r11], ecx ; mov Rd(src), ecx),
            (ATOMIC_XCHG, W64) if locked => x64!(self.ops ; mov rcx, Rq(src) ; xchg QWORD [r11], rcx ; mov Rq(src), rcx),
            (ATOMIC_XCHG, W32) => x64!(self.ops ; mov ecx, DWORD [r11] ; mov DWORD [r11], Rd(src) ; mov Rd(src), ecx),
            (ATOMIC_XCHG, W64) => x64!(self.ops ; mov rcx, QWORD [r11] ; mov QWORD [r11], Rq(src) ; mov Rq(src), rcx),
            (ATOMIC_CMPXCHG, W32) => {
                maybe_locked!(self.ops, locked ; cmpxchg DWORD [r11], Rd(src));
                // On success cmpxchg leaves rax alone, high half included.
                x64!(self.ops ; mov eax, eax);
            }
            (ATOMIC_CMPXCHG, W64) => maybe_locked!(self.ops, locked ; cmpxchg QWORD [r11], Rq(src)),
            _ => return Err(JitError::Unverified { pc, opc: insn.opc }),
        };
        Ok(())
    }

    /// Fetching or/and/xor: a cmpxchg loop through rax (r0, kept in r10).
    fn emit_fetch_loop(&mut self, op: Alu, width: Width, src: Rq, locked: bool) {
        let retry = self.ops.new_dynamic_label();
        // The operand, where it still is once rax is taken.
        let operand = if src as u8 == Rq::RAX as u8 { Rq::R10 } else { src };
        x64!(self.ops ; mov r10, rax);
        match width {
            Width::W32 => x64!(self.ops ; mov eax, DWORD [r11] ; =>retry ; mov ecx, eax),
            Width::W64 => x64!(self.ops ; mov rax, QWORD [r11] ; =>retry ; mov rcx, rax),
        }
        #[rustfmt::skip]
        match (op, width) {
            (Alu::Or,  Width::W32) => x64!(self.ops ; or ecx, Rd(operand)),
            (Alu::And, Width::W32) => x64!(self.ops ; and ecx, Rd(operand)),
            (Alu::Xor, Width::W32) => x64!(self.ops ; xor ecx, Rd(operand)),
            (Alu::Or,  Width::W64) => x64!(self.ops ; or rcx, Rq(operand)),
            (Alu::And, Width::W64) => x64!(self.ops ; and rcx, Rq(operand)),
            (_,        Width::W64) => x64!(self.ops ; xor rcx, Rq(operand)),
            (_,        Width::W32) => x64!(self.ops ; xor ecx, Rd(operand)),
        };
        match width {
            Width::W32 => maybe_locked!(self.ops, locked ; cmpxchg DWORD [r11], ecx),
            Width::W64 => maybe_locked!(self.ops, locked ; cmpxchg QWORD [r11], rcx),
        }
        // On failure rax holds the current value: try again with it.
        x64!(self.ops ; jne =>retry);
        match width {
            Width::W32 => x64!(self.ops ; mov ecx, eax ; mov rax, r10 ; mov Rd(src), ecx),
            Width::W64 => x64!(self.ops ; mov rcx, rax ; mov rax, r10 ; mov Rq(src), rcx),
        }
    }

    /// `ja`/`ja32`: the count is checked when the jump goes backward.
    fn emit_jump(&mut self, pc: usize, offset: i64) {
        self.flush();
        if offset < 0 {
            self.emit_budget_check(pc);
        }
        let label = self.labels[target(pc, offset)];
        x64!(self.ops ; jmp =>label);
    }

    /// Conditional jumps: the count is checked, taken or not, when the
    /// jump goes backward.
    fn emit_jump_if(&mut self, pc: usize, insn: Insn, width: Width, cond: Cond, operand: Operand) {
        use Operand::{Imm, Reg};
        use Width::{W32, W64};
        self.flush();
        if insn.off < 0 {
            self.emit_budget_check(pc);
        }
        let dst = reg(insn.dst);
        #[rustfmt::skip]
        match (cond, width, operand) {
            (Cond::Set, W32, Imm(k)) => x64!(self.ops ; test Rd(dst), DWORD k),
            (Cond::Set, W32, Reg(s)) => x64!(self.ops ; test Rd(dst), Rd(s)),
            (Cond::Set, W64, Imm(k)) => x64!(self.ops ; test Rq(dst), DWORD k),
            (Cond::Set, W64, Reg(s)) => x64!(self.ops ; test Rq(dst), Rq(s)),
            (_, W32, Imm(k)) => x64!(self.ops ; cmp Rd(dst), DWORD k),
            (_, W32, Reg(s)) => x64!(self.ops ; cmp Rd(dst), Rd(s)),
            (_, W64, Imm(k)) => x64!(self.ops ; cmp Rq(dst), DWORD k),
            (_, W64, Reg(s)) => x64!(self.ops ; cmp Rq(dst), Rq(s)),
        };
        let label = self.labels[target(pc, insn.off as i64)];
        #[rustfmt::skip]
        match cond {
            Cond::Eq  => x64!(self.ops ; je =>label),
            Cond::Gt  => x64!(self.ops ; ja =>label),
            Cond::Ge  => x64!(self.ops ; jae =>label),
            Cond::Set => x64!(self.ops ; jnz =>label),
            Cond::Ne  => x64!(self.ops ; jne =>label),
            Cond::Sgt => x64!(self.ops ; jg =>label),
            Cond::Sge => x64!(self.ops ; jge =>label),
            Cond::Lt  => x64!(self.ops ; jb =>label),
            Cond::Le  => x64!(self.ops ; jbe =>label),
            Cond::Slt => x64!(self.ops ; jl =>label),
            Cond::Sle => x64!(self.ops ; jle =>label),
        };
    }

    /// `call local`: budget, depth, then a native call with r6-r9 and r10
    /// saved on the native stack and r10 moved down one frame.
    fn emit_local_call(&mut self, pc: usize, insn: Insn) {
        self.flush();
        self.emit_budget_check(pc);
        let too_deep = self.stub(pc, Status::CallDepth);
        let callee = self.labels[target(pc, insn.imm as i64)];
        // eBPF registers r6-r9 and r10 (host rbx, r13, r14, r15 and rbp).
        let [r6, r7, r8, r9, frame_pointer] = [6, 7, 8, 9, 10].map(|r| REGISTER_MAP[r]);
        let deepest = (MAX_CALL_DEPTH - 1) as i32;
        let frame = STACK_FRAME_SIZE as i32;
        x64!(self.ops
            ; cmp QWORD [r12 + CTX_DEPTH], DWORD deepest
            ; je =>too_deep
            ; add QWORD [r12 + CTX_DEPTH], 1
            ; push Rq(r6)
            ; push Rq(r7)
            ; push Rq(r8)
            ; push Rq(r9)
            ; push Rq(frame_pointer)
            ; sub Rq(frame_pointer), DWORD frame
            ; call =>callee
            ; pop Rq(frame_pointer)
            ; pop Rq(r9)
            ; pop Rq(r8)
            ; pop Rq(r7)
            ; pop Rq(r6)
            ; sub QWORD [r12 + CTX_DEPTH], 1
        );
    }

    /// `call imm`: the helper is known now, as the table is fixed.
    fn emit_helper_call(&mut self, pc: usize, insn: Insn) {
        self.flush();
        self.emit_budget_check(pc);
        let index = insn.imm as u32 as u64;
        let Some(helper) = self.program.helper(index) else {
            // Registered, but past the table (MAX_HELPER_INDEX): the
            // interpreter fails the call at run time, and so do we.
            let unknown = self.stub(pc, Status::UnknownHelper);
            x64!(self.ops ; mov r11, QWORD index as i64 ; jmp =>unknown);
            return;
        };
        let address = helper as usize as i64;
        x64!(self.ops ; mov r10, QWORD address);
        self.emit_native_call();
        if self.program.unwind_helper().is_some_and(|unwind| unwind as u64 == index) {
            x64!(self.ops ; test rax, rax ; jz ->unwind);
        }
    }

    /// `callx dst`: the index in a register, looked up in the helper table.
    fn emit_helper_call_by_register(&mut self, pc: usize, insn: Insn) {
        self.flush();
        self.emit_budget_check(pc);
        let unknown = self.stub(pc, Status::UnknownHelper);
        let table = self.program.helper_table();
        // At most MAX_HELPER_INDEX entries.
        let len = table.len() as i32;
        let base = table.as_ptr() as i64;
        let index = reg(insn.dst);
        x64!(self.ops
            ; mov r11, Rq(index)
            ; cmp r11, DWORD len
            ; jae =>unknown
            ; mov r10, QWORD base
            ; mov r10, [r10 + r11 * 8]
            ; test r10, r10
            ; jz =>unknown
        );
        self.emit_native_call();
        if let Some(unwind) = self.program.unwind_helper() {
            let next = self.ops.new_dynamic_label();
            let unwind = unwind as i64;
            x64!(self.ops
                ; test rax, rax
                ; jnz =>next
                ; mov rcx, QWORD unwind
                ; cmp r11, rcx
                ; je ->unwind
                ; =>next
            );
        }
    }

    /// Calls the helper at r10 with r1..r5 as arguments, keeping r1..r5
    /// (as the interpreter does) and r11; the result lands in r0 (rax).
    fn emit_native_call(&mut self) {
        x64!(self.ops
            ; push rdi
            ; push rsi
            ; push rdx
            ; push r9
            ; push r8
            // The sixth push keeps rsp 16-byte aligned.
            ; push r11
            ; mov rcx, r9
            ; call r10
            ; pop r11
            ; pop r8
            ; pop r9
            ; pop rdx
            ; pop rsi
            ; pop rdi
        );
    }

    /// `exit`: return from a local call, or end the run when at depth 0.
    fn emit_exit(&mut self, pc: usize) {
        self.flush();
        if pc >= self.entry_end {
            // Only local calls enter the other functions.
            x64!(self.ops ; ret);
        } else if self.entry_is_called {
            x64!(self.ops
                ; cmp QWORD [r12 + CTX_DEPTH], 0
                ; je ->exit
                ; ret
            );
        } else {
            x64!(self.ops ; jmp ->exit);
        }
    }

    fn emit_stubs(&mut self) {
        for stub in std::mem::take(&mut self.stubs) {
            let (label, pc, status) = (stub.label, stub.pc as i32, stub.status as i32);
            x64!(self.ops ; =>label);
            if stub.unflushed > 0 {
                let count = stub.unflushed as i32;
                x64!(self.ops ; add QWORD [r12 + CTX_EXECUTED], DWORD count);
            }
            x64!(self.ops
                ; mov ecx, DWORD pc
                ; mov eax, DWORD status
                ; jmp ->fault
            );
        }
    }

    /// The ways out: a fault (status in eax, pc in rcx, address or helper
    /// index in r11), an unwind (r0 = 0), an exit (r0 in rax); all restore
    /// the native stack from any call depth.
    fn emit_shared_exits(&mut self) {
        x64!(self.ops
            ; ->fault:
            ; mov [r12 + CTX_ERROR_PC], rcx
            ; mov [r12 + CTX_ERROR_VALUE], r11
            ; jmp ->leave
            ; ->unwind:
            ; xor eax, eax
            ; ->exit:
            ; mov [r12 + CTX_RESULT], rax
            ; xor eax, eax
            ; ->leave:
            ; mov rsp, [r12 + CTX_SAVED_RSP]
            ; add rsp, 8
            ; pop r15
            ; pop r14
            ; pop r13
            ; pop r12
            ; pop rbx
            ; pop rbp
            ; ret
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_map_is_injective_and_leaves_scratch_alone() {
        let mut seen = [false; 16];
        for host in REGISTER_MAP {
            assert!(!seen[host as usize], "{host:?} mapped twice");
            seen[host as usize] = true;
        }
        for reserved in [Rq::RSP, Rq::R12, Rq::RCX, Rq::R10, Rq::R11] {
            assert!(!seen[reserved as usize], "{reserved:?} is reserved");
        }
    }

    #[test]
    fn status_is_exited_zero() {
        // `->exit` returns 0 with `xor eax, eax`.
        assert_eq!(Status::Exited as u64, 0);
    }
}
