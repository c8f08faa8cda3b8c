//! The aarch64 backend: one pass over the instructions by the program's
//! plan (see `super::plan`), in the interpreter's terms, emitting AAPCS64
//! code with dynasm's aarch64 assembler. It mirrors the x86-64 backend
//! (`super::x86_64`) arm for arm, in a simpler shape:
//!
//! - The generated function is
//!   `extern "C" fn(input: u64, input_len: u64, context: *mut Context, stack_top: u64) -> Exit`:
//!   the first two arguments arrive where eBPF r1 and r2 live; it returns
//!   the `Status` (with the stopping pc above it) and r0 (or the faulting
//!   address, or the unknown helper index) in x0:x1, and leaves the
//!   instruction budget in the `Context`.
//! - Layout: prologue at offset 0 (it saves every callee-saved register
//!   the code may use), the instructions (a label where some jump or call
//!   lands), the cold paths (the slow half of each memory check, fault
//!   stubs, each stopping the run at its own pc), the shared exits.
//! - Memory checks: every access the plan checks gets its own inline check
//!   (`Check::Input` or `Check::Stack`) and an out-of-line rest that tries
//!   the stack, the input and the regions, then faults at the access's pc.
//!   The plan's merged groups are not used (each access is checked alone,
//!   which gives the same answers), nor its fused runs, nor DAG counting.
//! - Instruction budget: as on x86-64, `limit - executed` in a register,
//!   decremented by each straight run's length where it ends and compared
//!   at backward jumps and calls; a program without jumps or calls stores
//!   its count where it ends.
//! - Local calls use the native stack: each call site saves the link
//!   register, the r6-r9 the program uses and r10, so an `exit` of a
//!   called function is a `ret`.
//! - Branches: a `b.cond`, `cbz` or `cbnz` reaches 1 MiB either way. Code
//!   longer than that (a program near the 65536-slot limit) is emitted
//!   again with each as the inverted test over a `b`, which reaches
//!   128 MiB; longer code is refused (`JitError::CodeTooLarge`).
//! - Atomics: when aligned, one LSE instruction (`ldaddal`, `swpal`,
//!   `casal`...) on CPUs that have them (`HWCAP_ATOMICS`, asked when the
//!   program is compiled), else an exclusive load/store loop
//!   (`ldaxr`/`stlxr`, which every ARMv8 CPU has); a plain
//!   read-modify-write when not aligned, as the interpreter's `atomic_rmw`.
//!
//! The code lives in pages from the process-wide pool of
//! [`super::code_memory`], never writable and executable at once; the
//! pool flushes the instruction cache before the code runs.

mod emitter;

use super::{DirectExits, JitError, MachineCode, MachineCodeForC};
use crate::program::Program;

/// Compiles a verified program.
pub(super) fn compile(program: &Program) -> Result<MachineCode, JitError> {
    emitter::emit(program)
}

/// Compiles a verified program for C callers: no direct code here (the C
/// API wraps the code in a stub instead).
pub(super) fn compile_for_c(program: &Program, _exits: &DirectExits) -> Result<MachineCodeForC, JitError> {
    Ok(MachineCodeForC::Jit(compile(program)?))
}
