//! Native entry points. ubpf's `ubpf_jit_fn` is a plain `(mem, mem_len)`
//! function, which cannot carry the VM, while the JIT's code takes a
//! private context. So each VM gets, per JIT mode, an entry of generated
//! code.
//!
//! For a program whose runs need no Rust around them, the entry runs the
//! program itself: on x86-64 the JIT generates it whole
//! ([`DirectCode`]); on aarch64 it is a stub that calls the
//! compiled code (see `direct_code`, and [`JitProgram::direct_entry`]). The
//! run's context and its eBPF stack are a frame on the caller's native
//! stack, so every thread, and every re-entrant run, has its own without
//! any lookup; the budget, memory checks and call depth are in the
//! compiled code. Rust runs only off the fast path: to explain a stopped
//! run ([`stopped`]), to clear the thread's last error when some thread
//! has one ([`succeeded`]), and for inputs the boundary refuses.
//!
//! Otherwise (helpers that may stop a run or tail-call) the entry is a stub that loads the address of its [`Compiled`] into the next
//! argument register and jumps to [`run_basic`] or [`run_extended`], which
//! run the compiled program as [`JitProgram::execute`] does, with every
//! check.

use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

use super::boundary::{ErrorPrint, THREADS_WITH_LAST_ERROR, bytes_mut, clear_last_error, guard};
#[cfg(target_arch = "aarch64")]
use crate::jit::{Context, DirectEntry};
use crate::jit::{DirectCode, DirectExits, ExecutableCode, ForC, JitProgram, compile_for_c};
use crate::program::Program;

/// The native code of a loaded program, built on demand: the compiled
/// program and an entry point per mode.
#[derive(Default)]
pub(super) struct Native {
    compiled: Option<Arc<Compiled>>,
    /// The entry point per mode, where it is not the program's direct code.
    basic: Option<ExecutableCode>,
    extended: Option<ExecutableCode>,
    /// The mode of the last successful compile, for ubpf_copy_jit().
    last: Option<Mode>,
}

/// What a native entry stub points at: the compiled program and where to
/// report its faults. Lives, at a fixed address, until the program is
/// unloaded.
pub(super) struct Compiled {
    /// The program's direct code, the entry point of both modes, where the
    /// JIT gives it.
    direct: Option<DirectCode>,
    /// The compiled program, for the other entry points and
    /// ubpf_translate(): compiled on first use where there is direct code.
    jit: OnceLock<JitProgram>,
    /// Boxed, so that its address, which the direct code embeds, is known
    /// before the program is compiled.
    reporter: Box<Reporter>,
}

/// What a run's error is made from, and where it goes.
struct Reporter {
    program: Arc<Program>,
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
    fn compiled(&mut self, program: &Arc<Program>, error_printf: &Arc<ErrorPrint>) -> Result<&Arc<Compiled>, String> {
        if self.compiled.is_none() {
            let reporter = Box::new(Reporter { program: program.clone(), error_printf: error_printf.clone() });
            let exits = DirectExits {
                stopped: stopped as Stopped as usize as u64,
                refused: refused as Refused as usize as u64,
                succeeded: succeeded as Succeeded as usize as u64,
                sink: std::ptr::from_ref(&*reporter) as u64,
                pending: std::ptr::from_ref(&THREADS_WITH_LAST_ERROR) as u64,
            };
            let (direct, jit) = match compile_for_c(program.clone(), &exits).map_err(compile_error)? {
                ForC::Direct(code) => (Some(code), OnceLock::new()),
                ForC::Jit(jit) => (None, OnceLock::from(jit)),
            };
            self.compiled = Some(Arc::new(Compiled { direct, jit, reporter }));
        }
        Ok(self.compiled.as_ref().expect("set above"))
    }

    /// The program compiled as a [`JitProgram`], compiling it on first use.
    pub(super) fn jit(
        &mut self,
        program: &Arc<Program>,
        error_printf: &Arc<ErrorPrint>,
    ) -> Result<&JitProgram, String> {
        let compiled = self.compiled(program, error_printf)?;
        if compiled.jit.get().is_none() {
            let jit = JitProgram::compile(program.clone()).map_err(compile_error)?;
            // Set just now: nothing else reaches it while `self` is borrowed.
            let _ = compiled.jit.set(jit);
        }
        Ok(compiled.jit.get().expect("set above"))
    }

    /// The entry point for `mode`, generating it on first use.
    pub(super) fn entry(
        &mut self,
        program: &Arc<Program>,
        error_printf: &Arc<ErrorPrint>,
        mode: Mode,
    ) -> Result<*const u8, String> {
        let compiled = self.compiled(program, error_printf)?.clone();
        self.last = Some(mode);
        if let Some(direct) = &compiled.direct {
            return Ok(direct.code().as_ptr());
        }
        let slot = match mode {
            Mode::Basic => &mut self.basic,
            Mode::Extended => &mut self.extended,
        };
        if slot.is_none() {
            *slot = Some(entry_point(&compiled, mode)?);
        }
        Ok(slot.as_ref().expect("set above").as_ptr())
    }

    /// The code of the entry point of the last successful compile, for
    /// ubpf_copy_jit().
    pub(super) fn last_entry(&self) -> Option<&[u8]> {
        let mode = self.last?;
        if let Some(direct) = &self.compiled.as_ref()?.direct {
            return Some(direct.code().bytes());
        }
        let slot = match mode {
            Mode::Basic => &self.basic,
            Mode::Extended => &self.extended,
        };
        slot.as_ref().map(ExecutableCode::bytes)
    }
}

fn compile_error(error: crate::jit::JitError) -> String {
    format!("JIT compilation failed: {error}")
}

type Basic = unsafe extern "C" fn(*mut c_void, usize, *const Compiled) -> u64;
type Extended = unsafe extern "C" fn(*mut c_void, usize, *mut u8, usize, *const Compiled) -> u64;

/// Generates the entry point of `mode` for `compiled`, in the JIT's
/// executable memory, where the JIT gave no direct code: a stub calling the
/// code directly where it may (aarch64), else the stub into Rust.
/// Either refers to everything by absolute address and jumps within itself
/// by relative offsets, so that a copy (ubpf_copy_jit) works anywhere.
fn entry_point(compiled: &Compiled, mode: Mode) -> Result<ExecutableCode, String> {
    let rust_entry = match mode {
        Mode::Basic => run_basic as Basic as usize,
        Mode::Extended => run_extended as Extended as usize,
    } as u64;
    let context = std::ptr::from_ref(compiled) as u64;
    #[cfg(target_arch = "aarch64")]
    if let Some(direct) = compiled.jit.get().and_then(JitProgram::direct_entry) {
        let sink = std::ptr::from_ref(&*compiled.reporter) as u64;
        let bytes = direct_code(&direct, context, sink, rust_entry, mode)?;
        return ExecutableCode::new(&bytes).map_err(|error| format!("mapping the entry point failed: {error}"));
    }
    let bytes = stub_code(context, rust_entry, mode)?;
    ExecutableCode::new(&bytes).map_err(|error| format!("mapping the entry point failed: {error}"))
}

/// The direct entry's code on aarch64 (AAPCS64), for either mode, as a C
/// function would call the compiled code: checks the input as `bytes_mut`
/// does (any input it would refuse goes the stub's way, to Rust, which
/// reports it), reserves a frame holding the stack the code reads and its
/// context (below a saved frame record, sp kept 16-byte aligned), probing
/// each page of it from the top so that a thread's guard page stops it,
/// calls the code, and returns r0. A stopped run tail-calls [`stopped`]
/// with `sink`; a run that succeeds while some thread holds a last error
/// tail-calls [`succeeded`], which clears this thread's. x16 and x17 are
/// scratch.
///
/// The frame, sp after the reservation: `[sp, sp + stack_len)` the eBPF
/// stack, whose top is `sp + stack_len`; the context above it.
#[cfg(target_arch = "aarch64")]
// dynasm's aarch64 macro converts each dynamic register with `.into()`.
#[allow(clippy::useless_conversion)]
fn direct_code(direct: &DirectEntry, context: u64, sink: u64, rust_entry: u64, mode: Mode) -> Result<Vec<u8>, String> {
    use dynasmrt::aarch64::Aarch64Relocation;
    use dynasmrt::{DynasmApi, DynasmLabelApi, VecAssembler, dynasm};

    const PAGE: usize = 4096;
    let frame = (direct.stack_len + size_of::<Context>()).div_ceil(16) * 16;
    let halves = |value: u64| [0, 16, 32, 48].map(|shift| (value >> shift) as u32 & 0xffff);
    let pending = halves(std::ptr::from_ref(&THREADS_WITH_LAST_ERROR) as u64);
    let (code, stopped, succeeded) = (
        halves(direct.code as u64),
        halves(stopped as Stopped as usize as u64),
        halves(succeeded as Succeeded as usize as u64),
    );
    let (context, sink, rust_entry) = (halves(context), halves(sink), halves(rust_entry));
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
        ; stopped: // stopped(sink, status, value)
        ; mov x2, x1
        ; mov x1, x0
    );
    load!(0, sink);
    load!(16, stopped);
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

type Stopped = unsafe extern "C" fn(*const Reporter, u64, u64) -> u64;
type Refused = unsafe extern "C" fn(*mut c_void, usize, *const Reporter) -> u64;
type Succeeded = extern "C" fn(u64) -> u64;

/// Where a direct entry goes when the code stopped a run with `status` and
/// `value`: reports the error as [`run_native`] does and returns its
/// failure value.
///
/// # Safety
/// `reporter` is the pointer the entry was generated with, whose program
/// is still loaded.
unsafe extern "C" fn stopped(reporter: *const Reporter, status: u64, value: u64) -> u64 {
    // SAFETY: the entry lives no longer than the `Reporter` it points at.
    let reporter = unsafe { &*reporter };
    let error =
        guard(|| -> Result<(), String> { Err(JitProgram::stopped(&reporter.program, status, value).to_string()) });
    if let Err(message) = error {
        reporter.error_printf.report(&message);
    }
    u64::MAX
}

/// Where a direct entry goes with an input that `bytes_mut` refuses:
/// reports why, as [`run_native`] does, and returns its failure value.
///
/// # Safety
/// As [`stopped`].
unsafe extern "C" fn refused(mem: *mut c_void, mem_len: usize, reporter: *const Reporter) -> u64 {
    // SAFETY: the entry lives no longer than the `Reporter` it points at.
    let reporter = unsafe { &*reporter };
    // SAFETY: an input the entry refused, which `bytes_mut` refuses
    // without reading it.
    if let Err(message) = guard(|| unsafe { bytes_mut(mem, mem_len, "mem") }.map(|_| ())) {
        reporter.error_printf.report(&message);
    }
    u64::MAX
}

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
        // Entries into Rust are made only beside a compiled `JitProgram`.
        let jit = compiled.jit.get().ok_or("the program has no code to run")?;
        jit.execute(mem).map_err(|error| error.to_string())
    }) {
        Ok(value) => value,
        Err(message) => {
            compiled.reporter.error_printf.report(&message);
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
