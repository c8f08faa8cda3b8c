//! Native entry points. ubpf's `ubpf_jit_fn` is a plain `(mem, mem_len)`
//! function, which cannot carry the VM, while the JIT's code takes a
//! private context. So each VM gets, per JIT mode, a small entry of
//! generated code.
//!
//! For a program whose runs need no Rust around them (see
//! [`JitProgram::direct_entry`]), the entry calls the compiled code itself
//! (see `direct_code`, one per backend): the run's context and its eBPF stack are a frame
//! on the caller's native stack, so every thread, and every re-entrant run,
//! has its own without any lookup; the budget, memory checks and call depth
//! are in the compiled code. Rust runs only off the fast path: to explain
//! a stopped run ([`fault`]), to clear the thread's last error when some
//! thread has one, and for inputs the boundary refuses.
//!
//! Otherwise (helpers that may stop a run or tail-call) the entry is a stub that loads the address of its [`Compiled`] into the next
//! argument register and jumps to [`run_basic`] or [`run_extended`], which
//! run the compiled program as [`JitProgram::execute`] does, with every
//! check.

use std::ffi::c_void;
use std::sync::Arc;

use super::boundary::{ErrorPrint, bytes_mut, guard};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::boundary::{THREADS_WITH_LAST_ERROR, clear_last_error};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::jit::{Context, DirectEntry};
use crate::jit::{ExecutableCode, JitProgram};
use crate::program::Program;

/// The native code of a loaded program, built on demand: the compiled
/// program and an entry point per mode.
#[derive(Default)]
pub(super) struct Native {
    compiled: Option<Arc<Compiled>>,
    pub(super) basic: Option<ExecutableCode>,
    pub(super) extended: Option<ExecutableCode>,
    /// The mode of the last successful compile, for ubpf_copy_jit().
    pub(super) last: Option<Mode>,
}

/// What a native entry stub points at: the compiled program and where to
/// report its faults. Lives, at a fixed address, until the program is
/// unloaded.
pub(super) struct Compiled {
    pub(super) jit: JitProgram,
    error_printf: Arc<ErrorPrint>,
}

/// The two kinds of entry point: a `ubpf_jit_fn` or a `ubpf_jit_ex_fn`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    Basic,
    Extended,
}

impl Native {
    /// The compiled program, compiling it on first use.
    pub(super) fn compiled(
        &mut self,
        program: &Arc<Program>,
        error_printf: &Arc<ErrorPrint>,
    ) -> Result<&Arc<Compiled>, String> {
        if self.compiled.is_none() {
            let jit =
                JitProgram::compile(program.clone()).map_err(|error| format!("JIT compilation failed: {error}"))?;
            self.compiled = Some(Arc::new(Compiled { jit, error_printf: error_printf.clone() }));
        }
        Ok(self.compiled.as_ref().expect("set above"))
    }

    /// The entry point for `mode`, generating it on first use.
    pub(super) fn entry(
        &mut self,
        program: &Arc<Program>,
        error_printf: &Arc<ErrorPrint>,
        mode: Mode,
    ) -> Result<*const u8, String> {
        let compiled = self.compiled(program, error_printf)?.clone();
        let slot = match mode {
            Mode::Basic => &mut self.basic,
            Mode::Extended => &mut self.extended,
        };
        if slot.is_none() {
            *slot = Some(entry_point(&compiled, mode)?);
        }
        self.last = Some(mode);
        Ok(slot.as_ref().expect("set above").as_ptr())
    }
}

type Basic = unsafe extern "C" fn(*mut c_void, usize, *const Compiled) -> u64;
type Extended = unsafe extern "C" fn(*mut c_void, usize, *mut u8, usize, *const Compiled) -> u64;

/// Generates the entry point of `mode` for `compiled`, in the JIT's
/// executable memory: the direct entry where there is one, else the stub.
/// Either refers to everything by absolute address and jumps within itself
/// by relative offsets, so that a copy (ubpf_copy_jit) works anywhere.
fn entry_point(compiled: &Compiled, mode: Mode) -> Result<ExecutableCode, String> {
    let rust_entry = match mode {
        Mode::Basic => run_basic as Basic as usize,
        Mode::Extended => run_extended as Extended as usize,
    } as u64;
    let context = std::ptr::from_ref(compiled) as u64;
    let bytes = match compiled.jit.direct_entry() {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        Some(direct) => direct_code(&direct, context, rust_entry, mode)?,
        _ => stub_code(context, rust_entry, mode)?,
    };
    ExecutableCode::new(&bytes).map_err(|error| format!("mapping the entry point failed: {error}"))
}

/// The direct entry's code (System V), for either mode, as a C function
/// would call the compiled code: checks the input as `bytes_mut` does
/// (any input it would refuse goes the stub's way, to Rust, which reports
/// it), reserves a frame holding the stack the code reads and its context,
/// probing each page of it from the top so that a thread's guard page
/// stops it, calls the code, and returns r0. A stopped run tail-calls
/// [`fault`]; a run that succeeds while some thread holds a last error
/// tail-calls [`succeeded`], which clears this thread's.
///
/// The frame, `rsp` after the reservation, 16-byte aligned for the call:
/// `[rsp, rsp + stack_len)` the eBPF stack, whose top is `rsp + stack_len`;
/// the context above it.
#[cfg(target_arch = "x86_64")]
fn direct_code(direct: &DirectEntry, context: u64, rust_entry: u64, mode: Mode) -> Result<Vec<u8>, String> {
    use dynasmrt::x64::X64Relocation;
    use dynasmrt::{DynasmApi, DynasmLabelApi, VecAssembler, dynasm};

    const PAGE: usize = 4096;
    // The caller's call left rsp 8 below a multiple of 16.
    let frame = (direct.stack_len + size_of::<Context>() + 7) / 16 * 16 + 8;
    let stack_top = direct.stack_len as i32;
    let pending = std::ptr::from_ref(&THREADS_WITH_LAST_ERROR) as i64;
    let (context, rust_entry) = (context as i64, rust_entry as i64);
    let (code, fault, succeeded) =
        (direct.code as i64, fault as Fault as usize as i64, succeeded as Succeeded as usize as i64);
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops ; .arch x64
        ; test rsi, rsi
        ; js >rust // longer than memory can hold
        ; jz >empty
        ; test rdi, rdi
        ; jz >rust // NULL with a length
        ; run:
    );
    let mut reserved = 0;
    while frame - reserved > PAGE {
        dynasm!(ops ; .arch x64 ; sub rsp, PAGE as i32 ; mov QWORD [rsp], 0);
        reserved += PAGE;
    }
    dynasm!(ops ; .arch x64
        ; sub rsp, (frame - reserved) as i32
        ; lea rdx, [rsp + stack_top]
        ; mov rcx, rdx
        ; mov rax, QWORD code
        ; call rax
        ; add rsp, frame as i32
        ; test rax, rax
        ; jnz >stopped
        ; mov rax, rdx
        ; mov rcx, QWORD pending
        ; cmp QWORD [rcx], 0
        ; jne >clear
        ; ret
        ; empty: // r1 is 0 for an empty input, whatever mem is
        ; xor edi, edi
        ; jmp <run
        ; stopped: // fault(compiled, status, value): r0's register, rdx, holds the value
        ; mov rsi, rax
        ; mov rdi, QWORD context
        ; mov rax, QWORD fault
        ; jmp rax
        ; clear:
        ; mov rdi, rax
        ; mov rax, QWORD succeeded
        ; jmp rax
        ; rust:
    );
    match mode {
        Mode::Basic => dynasm!(ops ; .arch x64 ; mov rdx, QWORD context),
        Mode::Extended => dynasm!(ops ; .arch x64 ; mov r8, QWORD context),
    }
    dynasm!(ops ; .arch x64 ; mov rax, QWORD rust_entry ; jmp rax);
    ops.finalize().map_err(|error| format!("generating the entry point failed: {error}"))
}

/// The direct entry's code on aarch64 (AAPCS64), as [`direct_code`] on
/// x86-64 is: the same checks, frame (below a saved frame record, sp kept
/// 16-byte aligned), probes and ways out. x16 and x17 are scratch.
#[cfg(target_arch = "aarch64")]
// dynasm's aarch64 macro converts each dynamic register with `.into()`.
#[allow(clippy::useless_conversion)]
fn direct_code(direct: &DirectEntry, context: u64, rust_entry: u64, mode: Mode) -> Result<Vec<u8>, String> {
    use dynasmrt::aarch64::Aarch64Relocation;
    use dynasmrt::{DynasmApi, DynasmLabelApi, VecAssembler, dynasm};

    const PAGE: usize = 4096;
    let frame = (direct.stack_len + size_of::<Context>()).div_ceil(16) * 16;
    let halves = |value: u64| [0, 16, 32, 48].map(|shift| (value >> shift) as u32 & 0xffff);
    let pending = halves(std::ptr::from_ref(&THREADS_WITH_LAST_ERROR) as u64);
    let (code, fault, succeeded) = (
        halves(direct.code as u64),
        halves(fault as Fault as usize as u64),
        halves(succeeded as Succeeded as usize as u64),
    );
    let (context, rust_entry) = (halves(context), halves(rust_entry));
    let stack_top = direct.stack_len as u32;
    let mut ops = VecAssembler::<Aarch64Relocation>::new(0);
    macro_rules! load {
        ($reg:expr, $halves:expr) => {
            dynasm!(ops ; .arch aarch64
                ; movz X($reg), #$halves[0]
                ; movk X($reg), #$halves[1], lsl #16
                ; movk X($reg), #$halves[2], lsl #32
                ; movk X($reg), #$halves[3], lsl #48
            )
        };
    }
    dynasm!(ops ; .arch aarch64
        ; cmp x1, #0
        ; b.lt >rust // longer than memory can hold
        ; b.eq >empty
        ; cbz x0, >rust // NULL with a length
        ; run:
        ; stp x29, x30, [sp, #-16]!
        ; mov x29, sp
    );
    let mut reserved = 0;
    while frame - reserved > PAGE {
        dynasm!(ops ; .arch aarch64 ; sub sp, sp, #1, lsl #12 ; str xzr, [sp]);
        reserved += PAGE;
    }
    let (rest, pages) = ((frame - reserved) as u32, (reserved / PAGE) as u32);
    dynasm!(ops ; .arch aarch64
        ; movz x17, #rest
        ; sub x16, x29, #pages, lsl #12
        ; sub x16, x16, x17
        ; mov sp, x16
        ; movz x17, #stack_top
        ; mov x3, sp
        ; add x3, x3, x17
        ; mov x2, x3
    );
    load!(16, code);
    dynasm!(ops ; .arch aarch64
        ; blr x16
        ; mov sp, x29
        ; ldp x29, x30, [sp], #16
        ; cbnz x0, >stopped
        ; mov x0, x1
    );
    load!(16, pending);
    dynasm!(ops ; .arch aarch64
        ; ldr x16, [x16]
        ; cbnz x16, >clear
        ; ret
        ; empty: // r1 is 0 for an empty input, whatever mem is
        ; mov x0, xzr
        ; b <run
        ; stopped: // fault(compiled, status, value)
        ; mov x2, x1
        ; mov x1, x0
    );
    load!(0, context);
    load!(16, fault);
    dynasm!(ops ; .arch aarch64
        ; br x16
        ; clear: // succeeded(value): x0 holds it
    );
    load!(16, succeeded);
    dynasm!(ops ; .arch aarch64 ; br x16 ; rust:);
    let register: u8 = match mode {
        Mode::Basic => 2,
        Mode::Extended => 4,
    };
    load!(register, context);
    load!(16, rust_entry);
    dynasm!(ops ; .arch aarch64 ; br x16);
    ops.finalize().map_err(|error| format!("generating the entry point failed: {error}"))
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
type Fault = unsafe extern "C" fn(*const Compiled, u64, u64) -> u64;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
type Succeeded = extern "C" fn(u64) -> u64;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// Where a direct entry goes when the code stopped a run with `status` and
/// `value`: reports the error as [`run_native`] does and returns its
/// failure value.
///
/// # Safety
/// `compiled` is the pointer the entry was generated with, whose program is
/// still loaded.
unsafe extern "C" fn fault(compiled: *const Compiled, status: u64, value: u64) -> u64 {
    // SAFETY: the entry lives no longer than the `Compiled` it points at.
    let compiled = unsafe { &*compiled };
    if let Err(message) = guard(|| -> Result<(), String> { Err(compiled.jit.stopped(status, value).to_string()) }) {
        compiled.error_printf.report(&message);
    }
    u64::MAX
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// Where a direct entry goes after a run that returned `value` while some
/// thread holds a last error: a run that succeeds clears this thread's.
extern "C" fn succeeded(value: u64) -> u64 {
    clear_last_error();
    value
}

/// The stub's code: `context` into the argument register after the
/// caller's (rdx after a `ubpf_jit_fn`'s two, r8 after a `ubpf_jit_ex_fn`'s
/// four), then a jump to `target`.
#[cfg(target_arch = "x86_64")]
fn stub_code(context: u64, target: u64, mode: Mode) -> Result<Vec<u8>, String> {
    use dynasmrt::x64::X64Relocation;
    use dynasmrt::{DynasmApi, VecAssembler, dynasm};

    let (context, target) = (context as i64, target as i64);
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    match mode {
        Mode::Basic => dynasm!(ops ; .arch x64 ; mov rdx, QWORD context ; mov rax, QWORD target ; jmp rax),
        Mode::Extended => dynasm!(ops ; .arch x64 ; mov r8, QWORD context ; mov rax, QWORD target ; jmp rax),
    }
    ops.finalize().map_err(|error| format!("generating the entry point failed: {error}"))
}

/// The stub's code: `context` into the argument register after the
/// caller's (x2 after a `ubpf_jit_fn`'s two, x4 after a `ubpf_jit_ex_fn`'s
/// four), then a branch to `target` (x16, the intra-call scratch register).
#[cfg(target_arch = "aarch64")]
// dynasm's aarch64 macro converts each dynamic register with `.into()`.
#[allow(clippy::useless_conversion)]
fn stub_code(context: u64, target: u64, mode: Mode) -> Result<Vec<u8>, String> {
    use dynasmrt::aarch64::Aarch64Relocation;
    use dynasmrt::{DynasmApi, VecAssembler, dynasm};

    let register: u8 = match mode {
        Mode::Basic => 2,
        Mode::Extended => 4,
    };
    let halves = |value: u64| [0, 16, 32, 48].map(|shift| (value >> shift) as u32 & 0xffff);
    let (c, t) = (halves(context), halves(target));
    let mut ops = VecAssembler::<Aarch64Relocation>::new(0);
    dynasm!(ops ; .arch aarch64
        ; movz X(register), #c[0]
        ; movk X(register), #c[1], lsl #16
        ; movk X(register), #c[2], lsl #32
        ; movk X(register), #c[3], lsl #48
        ; movz x16, #t[0]
        ; movk x16, #t[1], lsl #16
        ; movk x16, #t[2], lsl #32
        ; movk x16, #t[3], lsl #48
        ; br x16
    );
    ops.finalize().map_err(|error| format!("generating the entry point failed: {error}"))
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn stub_code(_context: u64, _target: u64, _mode: Mode) -> Result<Vec<u8>, String> {
    Err(format!("native entry points are not implemented on {}", std::env::consts::ARCH))
}

/// Runs a compiled program for a native entry point; the failure value
/// `UINT64_MAX` stands for a failed run, whose message goes to the VM's
/// `error_printf` and to ubpf_last_error().
///
/// # Safety
/// `compiled` is the pointer the entry stub was generated with, whose
/// program is still loaded; `mem` is NULL with `mem_len` 0, or points at
/// `mem_len` bytes the program may read and write.
unsafe fn run_native(mem: *mut c_void, mem_len: usize, compiled: *const Compiled) -> u64 {
    // SAFETY: the stub lives no longer than the `Compiled` it points at.
    let compiled = unsafe { &*compiled };
    match guard(|| {
        // SAFETY: the caller's contract.
        let mem = unsafe { bytes_mut(mem, mem_len, "mem") }?;
        compiled.jit.execute(mem).map_err(|error| error.to_string())
    }) {
        Ok(value) => value,
        Err(message) => {
            compiled.error_printf.report(&message);
            u64::MAX
        }
    }
}

/// Where the `ubpf_jit_fn` stub jumps.
///
/// # Safety
/// As [`run_native`].
unsafe extern "C" fn run_basic(mem: *mut c_void, mem_len: usize, compiled: *const Compiled) -> u64 {
    // SAFETY: the same contract.
    unsafe { run_native(mem, mem_len, compiled) }
}

/// Where the `ubpf_jit_ex_fn` stub jumps; the stack is not used.
///
/// # Safety
/// As [`run_native`].
unsafe extern "C" fn run_extended(
    mem: *mut c_void,
    mem_len: usize,
    _stack: *mut u8,
    _stack_len: usize,
    compiled: *const Compiled,
) -> u64 {
    // SAFETY: the same contract.
    unsafe { run_native(mem, mem_len, compiled) }
}
