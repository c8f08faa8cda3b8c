//! The x86-64 emitter: one pass over the instructions, in the
//! interpreter's terms, by the program's [`Plan`] (see [`super`] for the
//! code's shape).

use std::mem::offset_of;

use dynasmrt::x64::Rq;
use dynasmrt::{DynamicLabel, DynasmApi, DynasmLabelApi, dynasm};

use super::assembler::Assembler;
use super::encoder;
use crate::helpers::xdp::DirectFn;
use crate::image::{ProgramType, xdp_context};
use crate::isa::*;
use crate::jit::checks::Check;
use crate::jit::direct_calls;
use crate::jit::direct_calls::DirectCall;
use crate::jit::fusion::Fusion;
use crate::jit::lookups::MapLookup;
use crate::jit::plan::Plan;
use crate::jit::{Context, DirectExits, JitError, MachineCode, Scratch, Status};
use crate::memory::STACK_SIZE;
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
// Also reserved: r10 holds the `Context` pointer for the whole run (input
// bounds, stack top, error slots), saved around helper calls; r12 the
// instruction budget left (callee-saved, so helpers keep it). rcx and r11
// are scratch: rcx for shift counts, divisors, addresses being checked and
// temporaries, r11 for atomics' addresses, the faulting value at a fault,
// and temporaries.

// The helper-call sequence relies on r1..r5 being rdi, rsi, rdx, r9, r8, and
// the entry on r1, r2 being the first two System V arguments.
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

/// In [`Emitter::label_index`]: no label.
const NO_LABEL: u32 = u32::MAX;

/// Context field offsets, as the code addresses them from (host) r10.
const CTX_REMAINING: i32 = offset_of!(Context, remaining) as i32;
const CTX_EXTRA: i32 = offset_of!(Context, extra) as i32;
const CTX_HELPER_STOP: i32 = offset_of!(Context, helper_stop) as i32;
const CTX_FRAME_POINTER: i32 = offset_of!(Context, frame_pointer) as i32;
const SCRATCH: usize = offset_of!(Context, scratch);
const CTX_INPUT_START: i32 = (SCRATCH + offset_of!(Scratch, input_start)) as i32;
const CTX_INPUT_BOUND: i32 = (SCRATCH + offset_of!(Scratch, input_bound)) as i32;
const CTX_STACK_TOP: i32 = (SCRATCH + offset_of!(Scratch, stack_top)) as i32;
const CTX_DEEPEST: i32 = (SCRATCH + offset_of!(Scratch, deepest_frame)) as i32;
const CTX_SAVED_SP: i32 = (SCRATCH + offset_of!(Scratch, saved_sp)) as i32;
const CTX_SPILL: i32 = (SCRATCH + offset_of!(Scratch, spill)) as i32;
const CTX_INPUT_LEN: i32 = (SCRATCH + offset_of!(Scratch, input_len)) as i32;

// The helper table is read as an array of nullable code pointers.
const _: () = assert!(size_of::<Option<crate::helpers::HelperFn>>() == 8);

/// A straight run is at most this long (the longest program), so run
/// lengths fit the immediate of a `sub`.
const _: () = assert!(MAX_INSNS <= i32::MAX as usize);

/// What r12 may hold: `limit - executed` must fit in an i64 even past the
/// limit, by up to one straight run. (Small in unit tests, so that they
/// run the refills.)
#[cfg(not(test))]
const REMAINING_MAX: u64 = i64::MAX as u64;
#[cfg(test)]
const REMAINING_MAX: u64 = 1000;
/// How much of a limit above `REMAINING_MAX` one refill moves into r12.
#[cfg(not(test))]
const REFILL: u64 = 1 << 62;
#[cfg(test)]
const REFILL: u64 = 300;

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

/// Loop heads start at a multiple of this many bytes, a cache line, so
/// that a loop of up to 64 bytes lies in one line with all its branches.
/// (On this project's AMD machine the C API checksum's 64-byte loop took
/// 1.25 times as long when its head was 32 bytes into a line.)
const LOOP_ALIGN: usize = 64;

/// Code placed after the body, reached only when a run stops or a check's
/// inline half fails.
enum Cold {
    /// Stops the run at `pc` with `status`, counting `unflushed` more
    /// instructions; r11 already holds the value to report, if any.
    Stop { label: DynamicLabel, pc: usize, status: Status, unflushed: i32 },
    /// The budget went below zero at the check of `pc`: refill it from the
    /// context and go `back`, or stop.
    Budget { label: DynamicLabel, back: Option<DynamicLabel>, pc: usize },
    /// The rest of the memory check of the instruction at `pc`, `[base +
    /// off]` of `size` bytes; on success, back to the access.
    Memory {
        label: DynamicLabel,
        back: DynamicLabel,
        pc: usize,
        base: Rq,
        off: i32,
        size: usize,
        write: bool,
        inline: Check,
        unflushed: i32,
    },
    /// The code from `first` to `last` with each access checked on its own,
    /// run when the merged check at `first` fails, then `back` to the code
    /// after `last`; `pending` instructions of the run come before `first`.
    Copy { label: DynamicLabel, first: usize, last: usize, pending: i32, back: DynamicLabel },
    /// A jump to `target` that must add `amount` to the budget on the way:
    /// in DAG mode (see [`Emitter::dag`]), or minus the count a jump out of
    /// a loop left pending.
    Adjust { label: DynamicLabel, amount: i32, target: DynamicLabel },
    /// A legacy packet load read outside the input: counting `unflushed`
    /// more instructions, the run ends with r0 = 0.
    PacketMiss { label: DynamicLabel, unflushed: i32 },
    /// An XDP run that cannot start ([`memory::context_fault`]), with
    /// `status` and the value it reports: the buffer's length (in rsi) for
    /// [`Status::ShortContext`], else the packet pointer at block offset
    /// `off`; counting `unflushed` instructions, which makes none.
    ///
    /// [`memory::context_fault`]: crate::memory::context_fault
    Entry { label: DynamicLabel, status: Status, off: i16, unflushed: i32 },
}

/// [`REGISTER_MAP`] indexed by any 4-bit field (the verifier keeps them to
/// r0..r10; the rest are never used).
const HOST: [Rq; REG_SLOTS] = {
    let mut host = [Rq::RAX; REG_SLOTS];
    let mut i = 0;
    while i < NUM_REGS {
        host[i] = REGISTER_MAP[i];
        i += 1;
    }
    host
};

fn reg(index: u8) -> Rq {
    HOST[index as usize & 15]
}

/// The code of a verified program by its `plan`: the function `Entry` of
/// the Rust side, or with `direct`, the function a C caller calls itself
/// (see `DirectCode`), which leaves through `direct`'s exits.
pub(super) fn emit(program: &Program, plan: &Plan, direct: Option<&DirectExits>) -> Result<MachineCode, JitError> {
    let mut emitter = Emitter::new(program, plan, direct.copied());
    emitter.emit_prologue();
    emitter.emit_body()?;
    emitter.emit_cold()?;
    emitter.emit_shared_exits();
    emitter.emit_region_checks();
    let bytes = emitter.ops.finalize().map_err(|error| JitError::Assembler(error.to_string()))?;
    Ok(MachineCode { bytes, uses_stack: emitter.uses_stack, stopping_helpers: plan.checks.stopping_helpers })
}

struct Emitter<'p> {
    ops: Assembler,
    program: &'p Program,
    plan: &'p Plan,
    /// For each slot, the index in `target_labels` of its label, or
    /// `NO_LABEL` where no jump or call lands: 4 bytes a slot rather than
    /// an optional label's 16, as large programs' compile time goes much to
    /// faulting in fresh memory.
    label_index: Vec<u32>,
    /// A label for each slot that some jump or call lands on, in order.
    target_labels: Vec<DynamicLabel>,
    /// What r12 is ahead of the budget left once the current instruction is
    /// counted: the instructions of the current straight run not yet
    /// subtracted, or in DAG mode `1 - to_exit` of the instruction.
    pending: i32,
    cold: Vec<Cold>,
    /// Region-check routines by access size (log2) and direction (write).
    region_checks: [[Option<DynamicLabel>; 2]; 4],
    /// Host registers the prologue saves, in push order.
    saved: Vec<Rq>,
    /// Bytes below the pushes that keep rsp 16-byte aligned.
    padding: i32,
    /// eBPF r6-r9 that local calls save, host registers.
    call_saved: Vec<Rq>,
    big_limit: bool,
    /// Does r12 hold the budget? Not when the program is one straight run
    /// (and the limit is small): its count is known where it ends.
    budget_in_register: bool,
    /// DAG mode, for a program without loops that makes no local calls
    /// (and a small limit): the budget is checked only at helper calls and
    /// jumps back, and otherwise only the count at the end matters.
    /// Before each instruction, r12 holds `limit - executed - to_exit`;
    /// going on to the next instruction keeps that true at no cost, and so
    /// does the jump to the successor with the longer run; the other
    /// successor of a conditional jump adds the difference. So the count
    /// costs nothing along a longest path, at `exit` (`to_exit` 1, counted)
    /// r12 is the budget left, and anywhere else it is `r12 - pending`.
    dag: bool,
    /// Does rbp hold eBPF r10? Not when no instruction names r10 and there
    /// are no local calls: then it is the stack top, in the context.
    frame_in_rbp: bool,
    /// Does the code read its stack? See `MachineCode::uses_stack`.
    uses_stack: bool,
    /// The direct entry's exits, when emitting one: then the entry checks
    /// the input and keeps its stack and context in `direct_frame` bytes of
    /// the native stack (see `emit_direct_entry`), and nothing reads the
    /// instruction count a run leaves, so none is kept but for the budget.
    direct: Option<DirectExits>,
    direct_frame: i32,
    /// The direct entry's labels: its special input lengths, a refused
    /// input, the run after the checks, a success that clears the last
    /// error (see `DirectExits`).
    direct_labels: [DynamicLabel; 4],
    /// The bytes of stack below the stack top that the code may use.
    stack_len: i32,
    /// Emitting a copy: every access gets its own check.
    individual: bool,
    /// Where code resumes after a copy: (the copy's last slot, label).
    resume: Vec<(usize, DynamicLabel)>,
    fault: DynamicLabel,
    unwind: DynamicLabel,
    exit: DynamicLabel,
    refill: DynamicLabel,
}

impl<'p> Emitter<'p> {
    fn new(program: &'p Program, plan: &'p Plan, direct: Option<DirectExits>) -> Emitter<'p> {
        let insns = program.insns();
        let mut ops = Assembler::with_capacity(24 * insns.len() + 256, insns.len() / 2 + 16, insns.len() + 16);
        let mut target_labels = Vec::new();
        let label_index = plan
            .flow
            .landings
            .iter()
            .map(|landing| {
                if !landing.target {
                    return NO_LABEL;
                }
                target_labels.push(ops.new_dynamic_label());
                (target_labels.len() - 1) as u32
            })
            .collect();
        let call_saved: Vec<Rq> = (6..=9).filter(|&r| plan.flow.used[r]).map(|r| REGISTER_MAP[r]).collect();
        let big_limit = program.instruction_limit() > REMAINING_MAX;
        let dag = plan.flow.branches && !big_limit && !plan.flow.to_exit.is_empty();
        // Where the count is not read, a DAG program needs no budget when
        // it calls no helper and jumps back nowhere, as only there could
        // it stop for its count, or when no run of it is longer than the
        // limit, as these checks then never find the budget spent.
        let never_spent =
            plan.flow.to_exit.first().is_some_and(|&longest| u64::from(longest) <= program.instruction_limit());
        let checked_somewhere = plan.flow.helper_calls || plan.flow.jumps_back;
        let needs_budget = direct.is_none() || !dag || (checked_somewhere && !never_spent);
        let budget_in_register = (plan.flow.branches || big_limit) && needs_budget;
        let dag = dag && needs_budget;
        let frame_in_rbp = plan.flow.used[FRAME_REG as usize] || plan.flow.local_calls;
        let uses_stack = frame_in_rbp || plan.checks.any_check || plan.flow.local_calls || plan.flow.helper_calls;
        let stack_len = match (uses_stack, plan.flow.local_calls) {
            (false, _) => 0,
            (true, false) => STACK_FRAME_SIZE,
            (true, true) => STACK_SIZE,
        };
        // A multiple of 16, so that the code below finds rsp as a call
        // leaves it.
        let direct_frame = (stack_len + size_of::<Context>()).div_ceil(16) * 16;
        let mut saved = Vec::with_capacity(6);
        if frame_in_rbp {
            saved.push(Rq::RBP);
        }
        if budget_in_register {
            saved.push(Rq::R12);
        }
        saved.extend(&call_saved);
        // Helpers want rsp 16-byte aligned: the return address and the
        // pushes, then padding.
        let padding = if !plan.flow.helper_calls || (saved.len() + 1) % 2 == 0 { 0 } else { 8 };
        let direct_labels = [(); 4].map(|()| ops.new_dynamic_label());
        Emitter {
            fault: ops.new_dynamic_label(),
            unwind: ops.new_dynamic_label(),
            exit: ops.new_dynamic_label(),
            refill: ops.new_dynamic_label(),
            ops,
            program,
            plan,
            label_index,
            target_labels,
            pending: 0,
            cold: Vec::new(),
            region_checks: [[None; 2]; 4],
            saved,
            padding,
            call_saved,
            big_limit,
            budget_in_register,
            dag,
            frame_in_rbp,
            uses_stack,
            direct,
            direct_frame: direct_frame as i32,
            direct_labels,
            stack_len: stack_len as i32,
            individual: false,
            resume: Vec::new(),
        }
    }

    /// Saves the callee-saved registers the code uses, keeps the context
    /// pointer, fills the context fields the code reads, and sets the
    /// registers as the interpreter does: r1 = input address, r2 = its
    /// length (both already there), r10 = stack top, all others 0.
    fn emit_prologue(&mut self) {
        if self.direct.is_some() {
            self.emit_direct_entry();
        }
        for &host in &self.saved {
            x64!(self.ops ; push Rq(host));
        }
        if self.padding != 0 {
            x64!(self.ops ; sub rsp, BYTE self.padding as i8);
        }
        let plan = self.plan;
        x64!(self.ops ; mov r10, rdx);
        if self.frame_in_rbp {
            x64!(self.ops ; mov rbp, rcx);
        }
        if plan.checks.any_check || plan.flow.local_calls {
            x64!(self.ops ; mov [r10 + CTX_STACK_TOP], rcx);
        }
        if plan.flow.local_calls {
            let deepest = (STACK_FRAME_SIZE * (MAX_CALL_DEPTH - 1)) as i32;
            x64!(self.ops
                ; lea r11, [rcx - deepest]
                ; mov [r10 + CTX_DEEPEST], r11
                ; mov [r10 + CTX_SAVED_SP], rsp
            );
        }
        // The input: the buffer (rdi, rsi), or for an XDP program the page
        // after its context block (rdx, rax: r3 and r0, which the code
        // writes before it reads them, or which are zeroed below; a buffer
        // too short for the block stops the run below, before any access).
        let xdp = self.program.program_type() == ProgramType::Xdp;
        let (start, len) = if xdp {
            let block = xdp_context::SIZE as i32;
            x64!(self.ops ; lea rdx, [rdi + block] ; lea rax, [rsi - block]);
            (Rq::RDX, Rq::RAX)
        } else {
            (Rq::RDI, Rq::RSI)
        };
        let direct_calls = direct_calls::need_input(&plan.checks.direct_calls);
        if direct_calls {
            x64!(self.ops ; mov [r10 + CTX_INPUT_LEN], Rq(len));
        }
        if direct_calls && !plan.checks.any_check {
            x64!(self.ops ; mov [r10 + CTX_INPUT_START], Rq(start));
        }
        if plan.checks.any_check {
            x64!(self.ops ; mov [r10 + CTX_INPUT_START], Rq(start) ; xor ecx, ecx);
            for (index, &span) in
                plan.checks.bounds.iter().enumerate().filter(|&(index, _)| plan.checks.bound_used[index])
            {
                let slot = CTX_INPUT_BOUND + 8 * index as i32;
                let short = span as i32 - 1;
                if short == 0 {
                    x64!(self.ops ; mov [r10 + slot], Rq(len));
                } else {
                    // input_len - size + 1, or 0 when the input is shorter.
                    x64!(self.ops
                        ; lea r11, [Rq(len) - short]
                        ; cmp Rq(len), DWORD short
                        ; cmovb r11, rcx
                        ; mov [r10 + slot], r11
                    );
                }
            }
        }
        let limit = self.program.instruction_limit();
        if !self.budget_in_register {
            // Counted where the run ends.
        } else if self.dag {
            let start = limit as i64 - i64::from(self.plan.flow.to_exit[0]);
            match i32::try_from(start) {
                Ok(start) => x64!(self.ops ; mov r12, DWORD start),
                Err(_) => x64!(self.ops ; mov r12, QWORD start),
            }
        } else if self.big_limit {
            let extra = (limit - REMAINING_MAX) as i64;
            x64!(self.ops
                ; mov r11, QWORD extra
                ; mov [r10 + CTX_EXTRA], r11
                ; mov r12, QWORD REMAINING_MAX as i64
            );
        } else if let Ok(limit) = i32::try_from(limit) {
            x64!(self.ops ; mov r12d, DWORD limit);
        } else {
            x64!(self.ops ; mov r12, QWORD limit as i64);
        }
        if xdp {
            self.emit_context_check();
        }
        // r1 and r2 arrive set; of the others, those read before written
        // (r6-r9 only where named: the prologue saves no others, and only
        // an instruction naming one reads it).
        for (r, &host) in REGISTER_MAP.iter().enumerate().take(10) {
            let named_if_saved = r <= 5 || plan.flow.used[r];
            if r != 1 && r != 2 && named_if_saved && plan.checks.read_unwritten & 1 << r != 0 {
                x64!(self.ops ; xor Rd(host), Rd(host));
            }
        }
    }

    /// Stops an XDP run that cannot start ([`crate::memory::context_fault`]):
    /// the buffer (rdi, rsi) too short for the context block, or a packet
    /// pointer the program loads from it outside the page (rdx, rax, as the
    /// prologue set them), its end included. Before any instruction runs:
    /// the stop counts none.
    fn emit_context_check(&mut self) {
        let unflushed = if self.dag { -(self.plan.flow.to_exit[0] as i32) } else { 0 };
        let short = self.ops.new_dynamic_label();
        self.cold.push(Cold::Entry { label: short, status: Status::ShortContext, off: 0, unflushed });
        x64!(self.ops
            ; cmp rsi, xdp_context::SIZE as i32
            ; jb =>short
        );
        for &off in self.program.packet_pointers() {
            let outside = self.ops.new_dynamic_label();
            self.cold.push(Cold::Entry { label: outside, status: Status::PacketPointer, off, unflushed });
            x64!(self.ops
                ; mov rcx, [rdi + off as i32]
                ; sub rcx, rdx
                ; cmp rcx, rax
                ; ja =>outside
            );
        }
    }

    /// The direct entry's start, as a C function would call the code: checks
    /// the input as the C API's boundary does (an empty input is r1 = 0;
    /// any input it would refuse goes to `refused`), reserves the frame,
    /// probing each page of it from the top so that a thread's guard page
    /// stops it, and passes the context and stack top as the Rust side
    /// does: `[rsp, rsp + stack_len)` the eBPF stack, whose top is
    /// `rsp + stack_len`, the context above it.
    fn emit_direct_entry(&mut self) {
        const PAGE: i32 = 4096;
        let (special, refused, run) = (self.direct_labels[0], self.direct_labels[1], self.direct_labels[2]);
        x64!(self.ops
            ; test rsi, rsi
            ; jle =>special // empty, or longer than memory can hold
            ; test rdi, rdi
            ; jz =>refused // NULL with a length
            ; =>run
        );
        let frame = self.direct_frame;
        let mut reserved = 0;
        while frame - reserved > PAGE {
            x64!(self.ops ; sub rsp, PAGE ; mov QWORD [rsp], 0);
            reserved += PAGE;
        }
        let stack_top = self.stack_len;
        x64!(self.ops
            ; sub rsp, frame - reserved
            ; lea rdx, [rsp + stack_top]
            ; mov rcx, rdx
        );
    }

    fn emit_body(&mut self) -> Result<(), JitError> {
        let insns = self.program.insns();
        let mut pc = 0;
        while pc < insns.len() {
            if let Some(label) = self.label_at(pc) {
                // Falling into a jump target ends the straight run.
                self.flush();
                if self.plan.flow.landings[pc].loop_head {
                    self.ops.align_with_nops(LOOP_ALIGN);
                }
                x64!(self.ops ; =>label);
            }
            pc = self.emit_step(pc)?;
        }
        Ok(())
    }

    /// The instruction at `pc` (or a fused run); returns the next slot.
    fn emit_step(&mut self, pc: usize) -> Result<usize, JitError> {
        let insns = self.program.insns();
        let insn = insns[pc];
        match self.plan.fusions[pc] {
            Some(Fusion::Lea { dst, base, index, disp }) => {
                let (dst, base) = (reg(dst), reg(base));
                self.count(pc + 1, 2);
                match index.map(reg) {
                    // An `add` of a register: no displacement.
                    Some(index) => x64!(self.ops ; lea Rq(dst), [Rq(base) + Rq(index)]),
                    None => {
                        self.put(encoder::mem(false, true, false, &[0x8d], dst as u8, base, disp, encoder::Imm::None))
                    }
                }
                return Ok(pc + 2);
            }
            Some(Fusion::BytePair { dst, base, index, disp, swap, mask, len }) => {
                let (dst, base) = (reg(dst), reg(base));
                self.count(pc + len as usize - 1, len as i32);
                match index.map(reg) {
                    Some(index) if disp == 0 => x64!(self.ops ; movzx Rd(dst), WORD [Rq(base) + Rq(index)]),
                    Some(index) => x64!(self.ops ; movzx Rd(dst), WORD [Rq(base) + Rq(index) + disp]),
                    None => self.put(encoder::mem(
                        false,
                        false,
                        false,
                        &[0x0f, 0xb7],
                        dst as u8,
                        base,
                        disp,
                        encoder::Imm::None,
                    )),
                }
                if swap {
                    self.put(encoder::rol16_imm(dst, 8));
                }
                if mask != 0xffff {
                    self.put(encoder::group1(false, 4, dst, i32::from(mask)));
                }
                return Ok(pc + len as usize);
            }
            Some(Fusion::Extend { dst, src, signed, len }) => {
                let (dst, src) = (reg(dst), reg(src));
                self.count(pc + len as usize - 1, len as i32);
                if signed {
                    x64!(self.ops ; movsxd Rq(dst), Rd(src));
                } else {
                    x64!(self.ops ; mov Rd(dst), Rd(src));
                }
                return Ok(pc + len as usize);
            }
            None => {}
        }
        self.count(pc, 1);
        self.emit_insn(pc, insn)?;
        if !self.individual {
            while let Some(index) = self.resume.iter().position(|&(last, _)| last == pc) {
                let (_, label) = self.resume.swap_remove(index);
                x64!(self.ops ; =>label);
            }
        }
        Ok(pc + if insn.opc == LDDW { 2 } else { 1 })
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
                if let Ok(value) = u32::try_from(value) {
                    x64!(self.ops ; mov Rd(dst), DWORD value as i32);
                } else if let Ok(value) = i32::try_from(value) {
                    x64!(self.ops ; mov Rq(dst), DWORD value);
                } else {
                    x64!(self.ops ; mov Rq(dst), QWORD value);
                }
            }

            LDABSW | LDABSH | LDABSB => self.emit_packet_load(insn, None),
            LDINDW | LDINDH | LDINDB => self.emit_packet_load(insn, Some(src)),

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

    fn put(&mut self, bytes: encoder::Encoding) {
        self.ops.put(bytes);
    }

    /// Subtracts the current straight run from the budget.
    /// Counts the instructions of one step, the last at `last`.
    fn count(&mut self, last: usize, instructions: i32) {
        if self.dag {
            self.pending = 1 - self.plan.flow.to_exit[last] as i32;
        } else {
            self.pending += instructions;
        }
    }

    fn flush(&mut self) {
        // Without the register, the only run ends at an exit or a fault,
        // which store the count themselves; in DAG mode nothing is owed.
        if self.pending > 0 && self.budget_in_register && !self.dag {
            self.put(encoder::group1(true, 5, Rq::R12, self.pending));
            self.pending = 0;
        }
    }

    /// Ends the straight run at `pc` and stops the run there if the budget
    /// is past the limit (the `jl` reads the flags of the flush's `sub`).
    fn flush_and_check(&mut self, pc: usize) {
        // The jump or call at `pc` is pending, so there is a `sub`.
        debug_assert!(self.pending > 0);
        self.flush();
        let label = self.ops.new_dynamic_label();
        let back = self.big_limit.then(|| self.ops.new_dynamic_label());
        x64!(self.ops ; jl =>label);
        if let Some(back) = back {
            x64!(self.ops ; =>back);
        }
        self.cold.push(Cold::Budget { label, back, pc });
    }

    fn stop(&mut self, pc: usize, status: Status) -> DynamicLabel {
        let label = self.ops.new_dynamic_label();
        self.cold.push(Cold::Stop { label, pc, status, unflushed: self.pending });
        label
    }

    fn emit_alu(&mut self, width: Width, op: Alu, dst: Rq, operand: Operand) {
        let w = width == Width::W64;
        let bytes = match (op, operand) {
            (Alu::Mul, Operand::Imm(k)) => encoder::imul_imm(w, dst, dst, k),
            (Alu::Mul, Operand::Reg(s)) => encoder::rr(w, &[0x0f, 0xaf], dst, s),
            (Alu::Mov, Operand::Imm(k)) if !w || k >= 0 => encoder::mov32_imm(dst, k),
            // 64-bit forms sign-extend the immediate, as `k64` does.
            (Alu::Mov, Operand::Imm(k)) => encoder::mov64_imm(dst, k),
            (op, Operand::Imm(k)) => {
                let ext = match op {
                    Alu::Add => 0,
                    Alu::Or => 1,
                    Alu::And => 4,
                    Alu::Sub => 5,
                    _ => 6,
                };
                encoder::group1(w, ext, dst, k)
            }
            (op, Operand::Reg(s)) => {
                let opcode = match op {
                    Alu::Add => 0x01,
                    Alu::Sub => 0x29,
                    Alu::Or => 0x09,
                    Alu::And => 0x21,
                    Alu::Xor => 0x31,
                    _ => 0x89,
                };
                encoder::rr(w, &[opcode], s, dst)
            }
        };
        self.put(bytes);
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
                let ext = match shift {
                    Shift::Left => 4,
                    Shift::Right => 5,
                    Shift::Arithmetic => 7,
                };
                self.put(encoder::shift_imm(width == W64, ext, dst, count as u8));
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
    /// (signed) -1. rax and rdx (r0, r3) are kept in the context's spill
    /// slot and r11.
    fn emit_divide_rcx(&mut self, width: Width, modulo: bool, signed: bool, dst: Rq) {
        x64!(self.ops ; mov [r10 + CTX_SPILL], rax ; mov r11, rdx);
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
        x64!(self.ops ; mov rax, [r10 + CTX_SPILL] ; mov rdx, r11 ; mov Rq(dst), rcx);
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

    /// The inline half of the check of the access of `size` bytes at
    /// `[base + off]` made by the instruction at `pc`, as the plan
    /// planned it; the rest goes out of line.
    fn emit_check(&mut self, pc: usize, base: u8, off: i16, size: usize, write: bool) {
        let plan = self.plan;
        let access = plan.checks.accesses[pc];
        let inline = access.check;
        if inline == Check::None || (!self.individual && access.covered) {
            return;
        }
        let base = reg(base);
        let off = off as i32;
        let label = self.ops.new_dynamic_label();
        let back = self.ops.new_dynamic_label();
        if let (false, Some(index)) = (self.individual, access.leads) {
            // The span of the group's accesses, then theirs unchecked; or
            // the copy that checks them one by one.
            let group = plan.checks.groups[index as usize];
            let slot = plan
                .checks
                .bounds
                .iter()
                .position(|&bound| bound == group.span())
                .expect("a kept group has a bound slot");
            let bound = CTX_INPUT_BOUND + 8 * slot as i32;
            self.emit_input_compare(base, group.lo, bound);
            x64!(self.ops ; jae =>label);
            let last = plan.checks.copy_end[index as usize];
            self.resume.push((last, back));
            self.cold.push(Cold::Copy { label, first: pc, last, pending: self.pending - 1, back });
            return;
        }
        match inline {
            Check::None => {}
            Check::Input => {
                let bound = CTX_INPUT_BOUND + 8 * size.trailing_zeros() as i32;
                self.emit_input_compare(base, off, bound);
                x64!(self.ops
                    ; jae =>label
                    ; =>back
                );
            }
            Check::Stack { end } => {
                // Frame-relative values come from r10, so it is in rbp.
                debug_assert!(self.frame_in_rbp);
                x64!(self.ops
                    ; lea rcx, [rbp + end]
                    ; cmp rcx, [r10 + CTX_STACK_TOP]
                    ; ja =>label
                    ; =>back
                );
            }
            Check::Context => {
                // The block ends where the input starts.
                x64!(self.ops
                    ; lea rcx, [Rq(base) + xdp_context::SIZE as i32]
                    ; cmp rcx, [r10 + CTX_INPUT_START]
                    ; jne =>label
                    ; =>back
                );
            }
        }
        let unflushed = self.pending;
        self.cold.push(Cold::Memory { label, back, pc, base, off, size, write, inline, unflushed });
    }

    /// `rcx = base + off - input_start`, compared with the input bound at
    /// `bound` in the context (allowed when below).
    fn emit_input_compare(&mut self, base: Rq, off: i32, bound: i32) {
        let none = encoder::Imm::None;
        self.put(encoder::mem(false, true, false, &[0x8d], Rq::RCX as u8, base, off, none));
        self.put(encoder::mem(false, true, false, &[0x2b], Rq::RCX as u8, Rq::R10, CTX_INPUT_START, none));
        self.put(encoder::mem(false, true, false, &[0x3b], Rq::RCX as u8, Rq::R10, bound, none));
    }

    /// The out-of-line half of a memory check: the places the inline half
    /// did not try, then a fault at `pc` with the address in r11.
    #[allow(clippy::too_many_arguments)]
    fn emit_slow_check(
        &mut self,
        label: DynamicLabel,
        back: DynamicLabel,
        pc: usize,
        base: Rq,
        off: i32,
        size: usize,
        write: bool,
        inline: Check,
        unflushed: i32,
    ) {
        let frame = STACK_FRAME_SIZE as i32;
        x64!(self.ops ; =>label);
        if inline == Check::Context {
            // A context load reads the block or faults.
            x64!(self.ops ; lea r11, [Rq(base) + off]);
            self.emit_stop_tail(pc, Status::Memory, unflushed);
            return;
        }
        if !matches!(inline, Check::Stack { .. }) {
            // Stack: addr - stack_low <= stack_top - stack_low - size, where
            // stack_low = (eBPF) r10 - 512 is the bottom of the deepest frame.
            let slack = frame - size as i32;
            if self.frame_in_rbp {
                x64!(self.ops
                    ; lea rcx, [Rq(base) + off + frame]
                    ; sub rcx, rbp
                    ; mov r11, [r10 + CTX_STACK_TOP]
                    ; sub r11, rbp
                    ; add r11, DWORD slack
                    ; cmp rcx, r11
                    ; jbe =>back
                );
            } else {
                // r10 is the stack top: one frame.
                x64!(self.ops
                    ; lea rcx, [Rq(base) + off + frame]
                    ; sub rcx, [r10 + CTX_STACK_TOP]
                    ; cmp rcx, DWORD slack
                    ; jbe =>back
                );
            }
        }
        if inline != Check::Input {
            // Input: addr - input_start < input_bound[size].
            let bound = CTX_INPUT_BOUND + 8 * size.trailing_zeros() as i32;
            x64!(self.ops
                ; lea rcx, [Rq(base) + off]
                ; sub rcx, [r10 + CTX_INPUT_START]
                ; cmp rcx, [r10 + bound]
                ; jb =>back
            );
        }
        if let Some(routine) = self.region_check(size, write) {
            x64!(self.ops
                ; lea rcx, [Rq(base) + off]
                ; call =>routine
                ; jbe =>back
            );
        }
        x64!(self.ops ; lea r11, [Rq(base) + off]);
        self.emit_stop_tail(pc, Status::Memory, unflushed);
    }

    /// The routine checking rcx against the regions an access of `size`
    /// bytes in this direction may use, if there are any.
    fn region_check(&mut self, size: usize, write: bool) -> Option<DynamicLabel> {
        if !self.program.regions().iter().any(|region| region.fits(size as u64) && (region.writable || !write)) {
            return None;
        }
        let slot = &mut self.region_checks[size.trailing_zeros() as usize][write as usize];
        Some(*slot.get_or_insert_with(|| self.ops.new_dynamic_label()))
    }

    /// The region-check routines: each takes the address in rcx, clobbers
    /// r11, and returns with the flags of an unsigned comparison,
    /// below-or-equal when some region holds the bytes (`Region::contains`,
    /// and writable for a store).
    fn emit_region_checks(&mut self) {
        for (log2, routines) in self.region_checks.into_iter().enumerate() {
            let size = 1u64 << log2;
            for (write, routine) in routines.into_iter().enumerate() {
                let Some(routine) = routine else { continue };
                let found = self.ops.new_dynamic_label();
                x64!(self.ops ; =>routine);
                let regions =
                    self.program.regions().iter().filter(|region| region.fits(size) && (region.writable || write == 0));
                for region in regions {
                    // addr - start <= len - size, wrapping as `contains` does.
                    let minus_start = region.start.wrapping_neg() as i64;
                    let slack = region.len - size;
                    x64!(self.ops ; mov r11, QWORD minus_start ; add r11, rcx);
                    match i32::try_from(slack) {
                        Ok(slack) => x64!(self.ops ; cmp r11, DWORD slack),
                        Err(_) => x64!(self.ops
                            ; push rcx
                            ; mov rcx, QWORD slack as i64
                            ; cmp r11, rcx
                            ; pop rcx
                        ),
                    }
                    if region.stride == 0 {
                        x64!(self.ops ; jbe =>found);
                        continue;
                    }
                    // And within one slot: (addr - start) & (stride - 1)
                    // <= value_size - size. Both fit an i32: values are at
                    // most MAX_VALUE_SIZE bytes, strides twice that.
                    let next = self.ops.new_dynamic_label();
                    let mask = (region.stride - 1) as i32;
                    let slot_slack = (region.value_size - size) as i32;
                    x64!(self.ops
                        ; ja =>next
                        ; and r11, DWORD mask
                        ; cmp r11, DWORD slot_slack
                        ; jbe =>found
                        ; =>next
                    );
                }
                // Not found: rsp is not zero, so "above".
                x64!(self.ops
                    ; test rsp, rsp
                    ; ret
                    ; =>found
                    ; cmp rcx, rcx
                    ; ret
                );
            }
        }
    }

    fn emit_load(&mut self, pc: usize, insn: Insn, kind: LoadKind) {
        self.emit_check(pc, insn.src, insn.off, access_size(insn.opc), false);
        let dst = reg(insn.dst);
        let base = reg(insn.src);
        let off = insn.off as i32;
        let (w, opcode): (bool, &[u8]) = match kind {
            LoadKind::U8 => (false, &[0x0f, 0xb6]),
            LoadKind::U16 => (false, &[0x0f, 0xb7]),
            LoadKind::U32 => (false, &[0x8b]),
            LoadKind::U64 => (true, &[0x8b]),
            LoadKind::S8 => (true, &[0x0f, 0xbe]),
            LoadKind::S16 => (true, &[0x0f, 0xbf]),
            LoadKind::S32 => (true, &[0x63]),
        };
        self.put(encoder::mem(false, w, false, opcode, dst as u8, base, off, encoder::Imm::None));
    }

    /// `ldabs*`/`ldind*` (`index`: the src of `ldind*`): r0 = the input's
    /// big-endian bytes at imm (plus the index, as an i32), or the run ends
    /// with 0 when they are not all in the input.
    fn emit_packet_load(&mut self, insn: Insn, index: Option<Rq>) {
        let size = access_size(insn.opc);
        let bound = CTX_INPUT_BOUND + 8 * size.trailing_zeros() as i32;
        let miss = self.ops.new_dynamic_label();
        self.cold.push(Cold::PacketMiss { label: miss, unflushed: self.pending });
        let disp = match index {
            // Offset imm: known now.
            None if insn.imm < 0 => {
                x64!(self.ops ; jmp =>miss);
                return;
            }
            None => {
                x64!(self.ops
                    ; cmp QWORD [r10 + bound], insn.imm
                    ; jbe =>miss
                    ; mov rcx, [r10 + CTX_INPUT_START]
                );
                insn.imm
            }
            // Offset (s32)(src + imm): sign-extended, a negative one is
            // above every bound.
            Some(index) => {
                x64!(self.ops
                    ; mov ecx, Rd(index)
                    ; add ecx, insn.imm
                    ; movsxd rcx, ecx
                    ; cmp rcx, [r10 + bound]
                    ; jae =>miss
                    ; add rcx, [r10 + CTX_INPUT_START]
                );
                0
            }
        };
        match size {
            1 => x64!(self.ops ; movzx eax, BYTE [rcx + disp]),
            2 => x64!(self.ops ; movzx eax, WORD [rcx + disp] ; rol ax, 8),
            _ => x64!(self.ops ; mov eax, DWORD [rcx + disp] ; bswap eax),
        }
    }

    /// `st*` (imm, truncated; `stdw` sign-extends it) and `stx*` (src).
    fn emit_store(&mut self, pc: usize, insn: Insn, value: Operand) {
        let size = access_size(insn.opc);
        self.emit_check(pc, insn.dst, insn.off, size, true);
        let base = reg(insn.dst);
        let off = insn.off as i32;
        use encoder::Imm;
        let bytes = match (size, value) {
            (1, Operand::Imm(k)) => encoder::mem(false, false, false, &[0xc6], 0, base, off, Imm::I8(k as i8)),
            (2, Operand::Imm(k)) => encoder::mem(true, false, false, &[0xc7], 0, base, off, Imm::I16(k as i16)),
            (4, Operand::Imm(k)) => encoder::mem(false, false, false, &[0xc7], 0, base, off, Imm::I32(k)),
            (_, Operand::Imm(k)) => encoder::mem(false, true, false, &[0xc7], 0, base, off, Imm::I32(k)),
            (1, Operand::Reg(s)) => encoder::mem(false, false, true, &[0x88], s as u8, base, off, Imm::None),
            (2, Operand::Reg(s)) => encoder::mem(true, false, false, &[0x89], s as u8, base, off, Imm::None),
            (4, Operand::Reg(s)) => encoder::mem(false, false, false, &[0x89], s as u8, base, off, Imm::None),
            (_, Operand::Reg(s)) => encoder::mem(false, true, false, &[0x89], s as u8, base, off, Imm::None),
        };
        self.put(bytes);
    }

    /// Atomics: `lock`ed when aligned; a plain read-modify-write when not,
    /// as the interpreter's `atomic_rmw` (a split lock may trap or stall).
    fn emit_atomic(&mut self, pc: usize, insn: Insn, width: Width) -> Result<(), JitError> {
        let size = access_size(insn.opc);
        self.emit_check(pc, insn.dst, insn.off, size, true);
        let base = reg(insn.dst);
        let off = insn.off as i32;
        x64!(self.ops ; lea r11, [Rq(base) + off]);
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

    /// Fetching or/and/xor: a cmpxchg loop through rax (r0, kept in the
    /// context's spill slot, where the operand is read from when it is r0).
    fn emit_fetch_loop(&mut self, op: Alu, width: Width, src: Rq, locked: bool) {
        let retry = self.ops.new_dynamic_label();
        x64!(self.ops ; mov [r10 + CTX_SPILL], rax);
        match width {
            Width::W32 => x64!(self.ops ; mov eax, DWORD [r11] ; =>retry ; mov ecx, eax),
            Width::W64 => x64!(self.ops ; mov rax, QWORD [r11] ; =>retry ; mov rcx, rax),
        }
        if src as u8 == Rq::RAX as u8 {
            #[rustfmt::skip]
            match (op, width) {
                (Alu::Or,  Width::W32) => x64!(self.ops ; or ecx, [r10 + CTX_SPILL]),
                (Alu::And, Width::W32) => x64!(self.ops ; and ecx, [r10 + CTX_SPILL]),
                (_,        Width::W32) => x64!(self.ops ; xor ecx, [r10 + CTX_SPILL]),
                (Alu::Or,  Width::W64) => x64!(self.ops ; or rcx, [r10 + CTX_SPILL]),
                (Alu::And, Width::W64) => x64!(self.ops ; and rcx, [r10 + CTX_SPILL]),
                (_,        Width::W64) => x64!(self.ops ; xor rcx, [r10 + CTX_SPILL]),
            };
        } else {
            #[rustfmt::skip]
            match (op, width) {
                (Alu::Or,  Width::W32) => x64!(self.ops ; or ecx, Rd(src)),
                (Alu::And, Width::W32) => x64!(self.ops ; and ecx, Rd(src)),
                (_,        Width::W32) => x64!(self.ops ; xor ecx, Rd(src)),
                (Alu::Or,  Width::W64) => x64!(self.ops ; or rcx, Rq(src)),
                (Alu::And, Width::W64) => x64!(self.ops ; and rcx, Rq(src)),
                (_,        Width::W64) => x64!(self.ops ; xor rcx, Rq(src)),
            };
        }
        match width {
            Width::W32 => maybe_locked!(self.ops, locked ; cmpxchg DWORD [r11], ecx),
            Width::W64 => maybe_locked!(self.ops, locked ; cmpxchg QWORD [r11], rcx),
        }
        // On failure rax holds the current value: try again with it.
        x64!(self.ops ; jne =>retry);
        match width {
            Width::W32 => x64!(self.ops ; mov ecx, eax ; mov rax, [r10 + CTX_SPILL] ; mov Rd(src), ecx),
            Width::W64 => x64!(self.ops ; mov rcx, rax ; mov rax, [r10 + CTX_SPILL] ; mov Rq(src), rcx),
        }
    }

    /// `ja`/`ja32`: the count is checked when the jump goes backward.
    fn emit_jump(&mut self, pc: usize, offset: i64) {
        if offset < 0 {
            self.emit_budget_check(pc);
        } else {
            self.flush();
        }
        let label = self.label(branch_target(pc, offset) as usize);
        x64!(self.ops ; jmp =>label);
    }

    fn label(&self, pc: usize) -> DynamicLabel {
        // The flow gave every jump and call target a label.
        self.label_at(pc).expect("every jump and call target has a label")
    }

    /// The label of the slot at `pc`, if some jump or call lands there.
    fn label_at(&self, pc: usize) -> Option<DynamicLabel> {
        self.target_labels.get(self.label_index[pc] as usize).copied()
    }

    /// Conditional jumps: the count is checked, taken or not, when the
    /// jump goes backward. A jump out of the loops around it leaves the
    /// count of the straight run pending, to be subtracted on the way out,
    /// so that a turn of the loop subtracts it once, at its back edge.
    fn emit_jump_if(&mut self, pc: usize, insn: Insn, width: Width, cond: Cond, operand: Operand) {
        use Operand::{Imm, Reg};
        use Width::W64;
        let to = branch_target(pc, insn.off.into()) as usize;
        let exit_pending = !self.dag && self.budget_in_register && self.plan.flow.leaves_loops(pc, to);
        if insn.off < 0 {
            self.emit_budget_check(pc);
        } else if !exit_pending {
            self.flush();
        }
        let dst = reg(insn.dst);
        let w = width == W64;
        let compare = match (cond, operand) {
            (Cond::Set, Imm(k)) => encoder::test_imm(w, dst, k),
            (Cond::Set, Reg(s)) => encoder::rr(w, &[0x85], s, dst),
            // Sign-extended immediates, as `k64` (and for 32 bits, the same
            // low half).
            (_, Imm(k)) => encoder::group1(w, 7, dst, k),
            (_, Reg(s)) => encoder::rr(w, &[0x39], s, dst),
        };
        self.put(compare);
        let mut label = self.label(to);
        if exit_pending && self.pending > 0 {
            let adjust = self.ops.new_dynamic_label();
            self.cold.push(Cold::Adjust { label: adjust, amount: -self.pending, target: label });
            label = adjust;
        }
        // DAG mode: what each successor adds to r12 (one of them 0).
        let (mut taken_adds, mut next_adds) = (0, 0);
        if self.dag {
            let after = self.plan.flow.to_exit[pc] as i32 - 1;
            (taken_adds, next_adds) =
                (after - self.plan.flow.to_exit[to] as i32, after - self.plan.flow.to_exit[pc + 1] as i32);
        }
        if taken_adds > 0 {
            let adjust = self.ops.new_dynamic_label();
            self.cold.push(Cold::Adjust { label: adjust, amount: taken_adds, target: label });
            label = adjust;
        }
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
        if next_adds > 0 {
            self.put(encoder::group1(true, 0, Rq::R12, next_adds));
        }
    }

    /// `call local`: budget, depth, then a native call with the r6-r9 the
    /// program uses and r10 saved on the native stack and r10 moved down
    /// one frame.
    fn emit_local_call(&mut self, pc: usize, insn: Insn) {
        self.flush_and_check(pc);
        let too_deep = self.stop(pc, Status::CallDepth);
        let callee = self.label(branch_target(pc, insn.imm.into()) as usize);
        let frame = STACK_FRAME_SIZE as i32;
        // The pushes and the return address keep rsp 16-byte aligned.
        let pad = self.call_saved.len() % 2 == 1;
        x64!(self.ops
            ; cmp rbp, [r10 + CTX_DEEPEST]
            ; je =>too_deep
        );
        for &host in &self.call_saved {
            x64!(self.ops ; push Rq(host));
        }
        if pad {
            x64!(self.ops ; sub rsp, 8);
        }
        x64!(self.ops
            ; push rbp
            ; sub rbp, DWORD frame
            ; call =>callee
            ; pop rbp
        );
        if pad {
            x64!(self.ops ; add rsp, 8);
        }
        for &host in self.call_saved.iter().rev() {
            x64!(self.ops ; pop Rq(host));
        }
    }

    /// `call imm`: the helper is known now, as the table is fixed.
    fn emit_helper_call(&mut self, pc: usize, insn: Insn) {
        self.emit_budget_check(pc);
        if let Some(lookup) = self.plan.checks.lookups[pc] {
            self.emit_map_lookup(lookup);
            return;
        }
        match self.plan.checks.direct_calls[pc] {
            Some(DirectCall::Form(direct)) => return self.emit_direct_call(pc, direct),
            Some(DirectCall::Plain(helper)) => {
                // r0 is about to receive the result.
                x64!(self.ops ; mov rax, QWORD helper as usize as i64);
                return self.emit_native_call(false);
            }
            None => {}
        }
        let index = insn.imm as u32 as u64;
        let Some(helper) = self.program.helper(index) else {
            // Registered, but past the table (MAX_HELPER_INDEX): the
            // interpreter fails the call at run time, and so do we.
            let unknown = self.stop(pc, Status::UnknownHelper);
            x64!(self.ops ; mov r11, QWORD index as i64 ; jmp =>unknown);
            return;
        };
        let address = helper as usize as i64;
        let may_stop = self.program.helper_may_stop(index);
        if may_stop {
            self.emit_frame_pointer_for_helper();
        }
        // r0 is about to receive the result.
        x64!(self.ops ; mov rax, QWORD address);
        self.emit_native_call(false);
        if may_stop {
            self.emit_stop_check(pc);
        }
        if self.program.unwind_helper().is_some_and(|unwind| unwind as u64 == index) {
            let unwind = self.unwind_label();
            x64!(self.ops ; test rax, rax ; jz =>unwind);
        }
    }

    /// A `bpf_map_lookup_elem` the code makes itself (see
    /// [`crate::jit::lookups`]), with the map's handle in r1 and the key's
    /// address in r2: an array's value found inline (a per-CPU array's
    /// with the CPU from the thread's rseq area), else the map's lookup
    /// called directly. r1-r5 keep their values, as across the helper.
    fn emit_map_lookup(&mut self, lookup: MapLookup) {
        let lookup_addr = crate::maps::LOOKUP_ADDR_RAW as usize as i64;
        let Some(array) = lookup.inline_array() else {
            x64!(self.ops ; mov rax, QWORD lookup_addr);
            self.emit_native_call(false);
            return;
        };
        let done = self.ops.new_dynamic_label();
        x64!(self.ops
            // The key is a u32 index: no value past max_entries.
            ; xor eax, eax
            ; mov ecx, [rsi]
            ; cmp ecx, array.max_entries as i32
            ; jae =>done
        );
        self.emit_scale(Rq::RCX, array.entry_stride);
        let call = array.cpu_word.map(|cpu_word| {
            // The CPU's number is its slot (see `rseq_cpu_id_offset`); a
            // number past them (no rseq area for this thread) calls.
            let call = self.ops.new_dynamic_label();
            self.put(encoder::load32_fs(Rq::R11, cpu_word));
            x64!(self.ops
                ; cmp r11d, array.cpus as i32
                ; jae =>call
            );
            self.emit_scale(Rq::R11, array.slot);
            x64!(self.ops ; add rcx, r11);
            call
        });
        x64!(self.ops
            ; mov rax, QWORD array.base as i64
            ; add rax, rcx
        );
        if let Some(call) = call {
            x64!(self.ops
                ; jmp =>done
                ; =>call
                ; mov rax, QWORD lookup_addr
            );
            self.emit_native_call(false);
        }
        x64!(self.ops ; =>done);
    }

    /// `reg *= factor`, a shift when `factor` is a power of two: the index
    /// of an inline lookup is on the way to the value's address, where
    /// imul's latency is three times a shift's.
    fn emit_scale(&mut self, reg: Rq, factor: i32) {
        match factor {
            1 => {}
            _ if factor > 0 && factor.count_ones() == 1 => {
                self.put(encoder::shift_imm(true, 4, reg, factor.trailing_zeros() as u8));
            }
            _ => self.put(encoder::imul_imm(true, reg, reg, factor)),
        }
    }

    /// A helper called in its direct form (see [`crate::jit::direct_calls`])
    /// with r1-r3 and the input from the context: r0 gets what it returns,
    /// or the run stops at `pc` with the fault it reports. r1-r5 keep their
    /// values, as across the helper.
    fn emit_direct_call(&mut self, pc: usize, direct: DirectFn) {
        let stop = self.stop(pc, Status::HelperFault);
        x64!(self.ops
            ; push rdi
            ; push rsi
            ; push rdx
            ; push r9
            ; push r8
            // The sixth push keeps rsp 16-byte aligned.
            ; push r10
            ; mov rcx, [r10 + CTX_INPUT_START]
            ; mov r8, [r10 + CTX_INPUT_LEN]
            ; mov rax, QWORD direct as usize as i64
            ; call rax
            // The fault in rax, r0 in rdx.
            ; mov r11, rax
            ; mov rax, rdx
            ; pop r10
            ; pop r8
            ; pop r9
            ; pop rdx
            ; pop rsi
            ; pop rdi
            ; test r11, r11
            ; jnz =>stop
        );
    }

    /// Counts the call or jump back at `pc` and stops the run there if the
    /// budget is past the limit, as the interpreter checks at every call
    /// and every jump back.
    fn emit_budget_check(&mut self, pc: usize) {
        if !self.budget_in_register {
            // No budget is kept: no check can find it spent (see `new`).
            return;
        }
        if self.dag {
            // The budget left is r12 - pending.
            let stop = self.stop(pc, Status::Budget);
            let pending = self.pending;
            x64!(self.ops ; cmp r12, DWORD pending ; jl =>stop);
        } else {
            self.flush_and_check(pc);
        }
    }

    /// Where an unwind after the current instruction goes: the shared exit,
    /// which stores r12 as the budget left, by way of a stub that makes it
    /// so in DAG mode.
    fn unwind_label(&mut self) -> DynamicLabel {
        if !self.dag || self.pending == 0 {
            return self.unwind;
        }
        let label = self.ops.new_dynamic_label();
        self.cold.push(Cold::Adjust { label, amount: -self.pending, target: self.unwind });
        label
    }

    /// `callx dst`: the index in a register, looked up in the helper table.
    fn emit_helper_call_by_register(&mut self, pc: usize, insn: Insn) {
        self.emit_budget_check(pc);
        let unknown = self.stop(pc, Status::UnknownHelper);
        let table = self.program.helper_table();
        // At most MAX_HELPER_INDEX entries.
        let len = table.len() as i32;
        let base = table.as_ptr() as i64;
        let index = reg(insn.dst);
        x64!(self.ops
            ; mov r11, Rq(index)
            ; cmp r11, DWORD len
            ; jae =>unknown
            ; mov rcx, QWORD base
            ; mov rcx, [rcx + r11 * 8]
            ; test rcx, rcx
            ; jz =>unknown
            // r0 is about to receive the result.
            ; mov rax, rcx
        );
        if self.program.has_stopping_helpers() {
            self.emit_frame_pointer_for_helper();
        }
        let unwind = self.program.unwind_helper();
        self.emit_native_call(unwind.is_some());
        if self.program.has_stopping_helpers() {
            self.emit_stop_check(pc);
        }
        if let Some(unwind) = unwind {
            let next = self.ops.new_dynamic_label();
            let unwind_label = self.unwind_label();
            x64!(self.ops
                ; test rax, rax
                ; jnz =>next
                ; cmp r11, DWORD unwind as i32
                ; je =>unwind_label
                ; =>next
            );
        }
    }

    /// Before a helper that may stop the run: tells it r10, so that it
    /// checks pointers against the live frames only (the run state reads
    /// the context's frame pointer). Without r10 in rbp there are no local
    /// calls, and the entry frame's r10, which Rust wrote, stays right.
    fn emit_frame_pointer_for_helper(&mut self) {
        if self.frame_in_rbp {
            x64!(self.ops ; mov [r10 + CTX_FRAME_POINTER], rbp);
        }
    }

    /// After a helper that may stop the run: stop at `pc` if it did (the
    /// Rust side then asks the run state why).
    fn emit_stop_check(&mut self, pc: usize) {
        let stop = self.stop(pc, Status::HelperStop);
        x64!(self.ops
            ; cmp QWORD [r10 + CTX_HELPER_STOP], 0
            ; jne =>stop
        );
    }

    /// Calls the helper at rax with r1..r5 as arguments, keeping r1..r5
    /// (as the interpreter does), the context pointer and, if asked, r11;
    /// the result lands in r0 (rax).
    fn emit_native_call(&mut self, keep_r11: bool) {
        x64!(self.ops
            ; push rdi
            ; push rsi
            ; push rdx
            ; push r9
            ; push r8
            // The sixth push keeps rsp 16-byte aligned.
            ; push r10
        );
        if keep_r11 {
            x64!(self.ops ; push r11 ; push r11);
        }
        x64!(self.ops
            ; mov rcx, r9
            ; call rax
        );
        if keep_r11 {
            x64!(self.ops ; pop r11 ; pop r11);
        }
        x64!(self.ops
            ; pop r10
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
        if pc >= self.plan.flow.entry_end {
            // Only local calls enter the other functions.
            x64!(self.ops ; ret);
        } else if self.plan.flow.entry_is_called {
            let exit = self.exit;
            x64!(self.ops
                ; cmp rbp, [r10 + CTX_STACK_TOP]
                ; je =>exit
                ; ret
            );
        } else {
            // At depth 0, with nothing pushed since the prologue.
            if self.budget_in_register {
                self.emit_store_budget();
            } else {
                self.emit_store_count(self.pending);
                self.pending = 0;
            }
            self.emit_exited();
            self.emit_epilogue(false);
        }
    }

    /// Puts r0 where the run's result goes: the Rust side's [`Exit`] is
    /// status 0 in rax, r0 in rdx; a direct entry returns r0 itself.
    ///
    /// [`Exit`]: crate::jit::Exit
    fn emit_exited(&mut self) {
        if self.direct.is_none() {
            x64!(self.ops
                ; mov rdx, rax
                ; xor eax, eax
            );
        }
    }

    /// With the budget in r12: leaves it in the context, where the Rust
    /// side reads the count.
    fn emit_store_budget(&mut self) {
        if self.direct.is_none() {
            x64!(self.ops ; mov [r10 + CTX_REMAINING], r12);
        }
    }

    /// Restores the native stack and the callee-saved registers, and
    /// returns: a direct entry by way of the last error's clearing, when
    /// some thread has one.
    fn emit_epilogue(&mut self, from_any_depth: bool) {
        self.emit_restore(from_any_depth);
        if let Some(exits) = self.direct {
            let clear = self.direct_labels[3];
            x64!(self.ops
                ; mov rcx, QWORD exits.pending as i64
                ; cmp QWORD [rcx], 0
                ; jne =>clear
            );
        }
        x64!(self.ops ; ret);
    }

    /// Restores the native stack (from any depth, when asked), the
    /// callee-saved registers and, in a direct entry, the caller's rsp.
    fn emit_restore(&mut self, from_any_depth: bool) {
        if from_any_depth && self.plan.flow.local_calls {
            x64!(self.ops ; mov rsp, [r10 + CTX_SAVED_SP]);
        }
        if self.padding != 0 {
            x64!(self.ops ; add rsp, BYTE self.padding as i8);
        }
        for &host in self.saved.clone().iter().rev() {
            x64!(self.ops ; pop Rq(host));
        }
        if self.direct.is_some() {
            x64!(self.ops ; add rsp, self.direct_frame);
        }
    }

    /// Without the budget register: leaves `limit - executed` in the
    /// context, for a count known here.
    fn emit_store_count(&mut self, executed: i32) {
        if self.direct.is_some() {
            return;
        }
        let remaining = self.program.instruction_limit().wrapping_sub(executed as i64 as u64) as i64;
        match i32::try_from(remaining) {
            Ok(remaining) => x64!(self.ops ; mov QWORD [r10 + CTX_REMAINING], DWORD remaining),
            Err(_) => x64!(self.ops ; mov rcx, QWORD remaining ; mov [r10 + CTX_REMAINING], rcx),
        }
    }

    /// Counts `unflushed` more instructions and stops the run at `pc` with
    /// `status` (r11 holding the value to report).
    fn emit_stop_tail(&mut self, pc: usize, status: Status, unflushed: i32) {
        if self.direct.is_some() {
            // Nothing reads the count.
        } else if self.budget_in_register {
            if unflushed != 0 {
                x64!(self.ops ; sub r12, DWORD unflushed);
            }
        } else {
            self.emit_store_count(unflushed);
        }
        let fault = self.fault;
        // A program has at most 65536 slots, so the pc fits above the status.
        let code = (pc as u32) << 8 | status as u32;
        x64!(self.ops
            ; mov eax, DWORD code as i32
            ; jmp =>fault
        );
    }

    fn emit_cold(&mut self) -> Result<(), JitError> {
        // Copies add cold code of their own.
        while let Some(cold) = self.cold.pop() {
            match cold {
                Cold::Stop { label, pc, status, unflushed } => {
                    x64!(self.ops ; =>label);
                    self.emit_stop_tail(pc, status, unflushed);
                }
                Cold::Budget { label, back, pc } => {
                    x64!(self.ops ; =>label);
                    if let Some(back) = back {
                        let refill = self.refill;
                        x64!(self.ops
                            ; call =>refill
                            ; test r12, r12
                            ; jns =>back
                        );
                    }
                    self.emit_stop_tail(pc, Status::Budget, 0);
                }
                Cold::Memory { label, back, pc, base, off, size, write, inline, unflushed } => {
                    self.emit_slow_check(label, back, pc, base, off, size, write, inline, unflushed);
                }
                Cold::Entry { label, status, off, unflushed } => {
                    x64!(self.ops ; =>label);
                    match status {
                        Status::ShortContext => x64!(self.ops ; mov r11, rsi),
                        _ => x64!(self.ops ; mov r11, [rdi + off as i32]),
                    }
                    self.emit_stop_tail(0, status, unflushed);
                }
                Cold::Adjust { label, amount, target } => {
                    x64!(self.ops
                        ; =>label
                        ; add r12, DWORD amount
                        ; jmp =>target
                    );
                }
                Cold::PacketMiss { label, unflushed } => {
                    x64!(self.ops ; =>label);
                    if !self.budget_in_register {
                        self.emit_store_count(unflushed);
                    } else if unflushed != 0 && self.direct.is_none() {
                        // In DAG mode too: the budget left is r12 - pending.
                        x64!(self.ops ; sub r12, DWORD unflushed);
                    }
                    let unwind = self.unwind;
                    x64!(self.ops ; jmp =>unwind);
                }
                Cold::Copy { label, first, last, pending, back } => {
                    x64!(self.ops ; =>label);
                    self.individual = true;
                    self.pending = pending;
                    let mut pc = first;
                    while pc <= last {
                        pc = self.emit_step(pc)?;
                    }
                    x64!(self.ops ; jmp =>back);
                    self.individual = false;
                    self.pending = 0;
                }
            }
        }
        Ok(())
    }

    /// The ways out: a fault (status and pc in eax, address or helper index
    /// in r11), an unwind (r0 = 0), an exit from a recursive entry
    /// function (r0 in rax); all restore the native stack from any call
    /// depth. Then, for limits above `i64::MAX`, the routine that moves
    /// more of the budget into r12.
    fn emit_shared_exits(&mut self) {
        let (fault, unwind, exit, refill) = (self.fault, self.unwind, self.exit, self.refill);
        x64!(self.ops ; =>fault);
        if let Some(exits) = self.direct {
            // stopped(sink, status, value)
            self.emit_restore(true);
            x64!(self.ops
                ; mov rdx, r11
                ; mov rsi, rax
                ; mov rdi, QWORD exits.sink as i64
                ; mov rax, QWORD exits.stopped as i64
                ; jmp rax
            );
        } else {
            x64!(self.ops ; mov rdx, r11);
            if self.budget_in_register {
                self.emit_store_budget();
            }
            self.emit_epilogue(true);
        }
        x64!(self.ops
            ; =>unwind
            ; xor eax, eax
            ; =>exit
        );
        // Reached only through calls, which keep the budget in r12.
        if self.budget_in_register {
            self.emit_store_budget();
        }
        self.emit_exited();
        self.emit_epilogue(true);
        if let Some(exits) = self.direct {
            let [special, refused, run, clear] = self.direct_labels;
            x64!(self.ops
                ; =>special
                ; js =>refused
                ; xor edi, edi // r1 is 0 for an empty input, whatever mem is
                ; jmp =>run
                ; =>refused // refused(mem, mem_len, sink)
                ; mov rdx, QWORD exits.sink as i64
                ; mov rax, QWORD exits.refused as i64
                ; jmp rax
                ; =>clear // succeeded(r0)
                ; mov rdi, rax
                ; mov rax, QWORD exits.succeeded as i64
                ; jmp rax
            );
        }
        if self.big_limit {
            let again = self.ops.new_dynamic_label();
            let done = self.ops.new_dynamic_label();
            x64!(self.ops
                ; =>refill
                ; =>again
                ; test r12, r12
                ; jns =>done
                ; mov rcx, [r10 + CTX_EXTRA]
                ; test rcx, rcx
                ; jz =>done
                ; mov r11, QWORD REFILL as i64
                ; cmp rcx, r11
                ; cmova rcx, r11
                ; sub [r10 + CTX_EXTRA], rcx
                ; add r12, rcx
                ; jmp =>again
                ; =>done
                ; ret
            );
        }
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
        // The exits return 0 with `xor eax, eax`.
        assert_eq!(Status::Exited as u64, 0);
    }
}
