//! The x86-64 backend: one pass over the instructions by the program's
//! plan (see `super::plan`), in the interpreter's terms, emitting System V
//! code (the frequent forms encoded directly, see `encoder`, the rest with
//! dynasm through `assembler`).
//!
//! The generated function is
//! `extern "sysv64" fn(input: u64, input_len: u64, context: *mut Context, stack_top: u64) -> Exit`:
//! the first two arguments arrive where eBPF r1 and r2 live; it returns the
//! `Status` (with the stopping pc above it) and r0 (or the faulting address,
//! or the unknown helper index) in rax:rdx, and leaves the instruction
//! budget in the `Context`. Layout: prologue at offset 0, then the
//! instructions (a label only where some jump or call lands), then the cold
//! paths (the slow half of each memory check, the checked copies of merged
//! checks, the fault stubs, each stopping the run at its own pc), then the
//! shared exits, then the region-check routines. The prologue saves and
//! sets up only what the program uses (callee-saved registers it names,
//! r10, the budget register, the input bounds its checks read).
//!
//! Direct code. For the C API a program is emitted as a `ubpf_jit_fn`
//! instead (see `super::DirectCode`): the prologue first checks
//! the input and reserves the eBPF stack and the context on the native
//! stack; an exit returns r0 itself (by way of the C API's last-error
//! clearing when some thread has one), and a fault tail-calls the C API's
//! reporting. Nothing reads the count of such a run, so it keeps the budget
//! only where a check can stop the run for it (not in DAG mode without
//! helper calls) and stores no count.
//!
//! Fused runs. A few runs of instructions are emitted as one (see
//! `super::fusion`): `mov; add` as an `lea`, and the 16-bit reads of packet fields
//! that clang writes as two byte loads, a shift and an or (BPF has no
//! unaligned loads) as one 16-bit load and a byte swap, with an address
//! computed just before folded in. A fused run may leave unwritten the
//! registers that nothing reads again (see [`super::liveness`]); no jump
//! lands inside it and none of its accesses needs a check, so no run stops
//! inside it and the count is the interpreter's.
//!
//! Memory checks. Every load, store and atomic is checked as
//! `Memory::allows` does (the live stack frames `[r10 - 512, stack_top)`,
//! r10 being the current frame's top; the input; the program's regions),
//! but the order in which the three are tried does not change the answer,
//! so the code tries the likely one inline and the rest out of line:
//!
//! What is known of the base register comes from [`super::facts`], which
//! follows the values along the edges of the program, with an invariant
//! at each loop head that every way in and every back edge fit (see
//! `Checks::plan_checks` in `super::checks`):
//!
//! - A base register that holds `r10 + c` with `c` known (r10 itself, or a
//!   copy moved by constants) gives an address whose place in the frame is
//!   known. Inside the current frame the check is left out (the verifier
//!   guarantees r10 is never written, and calls and returns move it only
//!   between frames); otherwise the inline check is the stack's, a compare
//!   of `r10 + c + off + size` with the stack top.
//! - A base register that holds a known constant (an `lddw` of a global's
//!   address, say) gives a known address: when a region holds the bytes
//!   (writable, for a store) the check is left out, as the regions are fixed
//!   for the program's life.
//! - A base register that holds the input's address plus an offset that the
//!   jumps taken or not taken on the way compared with the length (r2 on
//!   entry, or a copy), or as an address with the input's end (`pkt + len`,
//!   as C filters write `if (p + 20 > end)`), gives an address that is in
//!   the input when the length so learnt covers it: the check is left out.
//! - Any other address is checked against the input inline:
//!   `lea rcx, [base + off]; sub rcx, input_start; cmp rcx, bound; jae slow`,
//!   with `bound = input_len - size + 1` (0 when the input is shorter).
//!   Several such accesses through one unchanged base register in one
//!   straight run share one check of the bytes they span (see
//!   `checks::Group`);
//!   when it fails, a copy of that code checking each access on its own
//!   runs instead.
//!
//! The slow path tries the remaining places (the regions through a shared
//! routine per size and direction, with their bounds compiled in as
//! constants), then stops the run at the instruction's own pc; nothing is
//! hoisted, so every fault happens where the interpreter's does.
//!
//! Instruction budget. The interpreter compares its count with the limit at
//! backward jumps and calls only, so the code subtracts each straight run's
//! length from a register holding `limit - executed` where the run ends (at
//! a jump, call or exit, or before falling into a jump target) and, at the
//! same instructions as the interpreter, stops when it goes below zero
//! (`sub r12, n; jl`): the count is exact there. A fault stub subtracts the
//! part of its run not yet counted, so the count is exact at the end of
//! every run too. A limit above `i64::MAX` starts the register at
//! `i64::MAX` and keeps the rest in the context, moved in when the register
//! runs out. A program without jumps or calls is one straight run: its
//! count is known wherever it stops, so it needs no register. A program
//! without loops that makes no local calls is counted in
//! DAG mode instead (see `Emitter::dag`), at no cost along its longest
//! paths.
//!
//! Local calls use the native stack: the caller pushes those of r6-r9 the
//! program uses, and r10, and `call`s the function; its `exit` is a `ret`.
//! The depth is r10's distance from the stack top.
//!
//! The code lives in pages from the process-wide pool of
//! [`super::code_memory`], never writable and executable at once.

mod assembler;
mod emitter;
mod encoder;

use super::plan::Plan;
use super::{DirectExits, JitError, MachineCode, MachineCodeForC};
use crate::program::Program;

/// Compiles a verified program.
pub(super) fn compile(program: &Program) -> Result<MachineCode, JitError> {
    supported()?;
    emitter::emit(program, &Plan::new(program), None)
}

/// Compiles a verified program for C callers: its direct code (see
/// `super::DirectCode`), unless a run needs Rust around it.
pub(super) fn compile_for_c(program: &Program, exits: &DirectExits) -> Result<MachineCodeForC, JitError> {
    supported()?;
    let plan = Plan::new(program);
    if plan.checks.stopping_helpers {
        return Ok(MachineCodeForC::Jit(emitter::emit(program, &plan, None)?));
    }
    Ok(MachineCodeForC::Direct(emitter::emit(program, &plan, Some(exits))?.bytes))
}

fn supported() -> Result<(), JitError> {
    if cfg!(windows) {
        // Helpers are `extern "C"`, which is not System V there.
        return Err(JitError::Unsupported("x86_64-windows"));
    }
    Ok(())
}
