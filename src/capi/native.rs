//! Native entry points. ubpf's `ubpf_jit_fn` is a plain `(mem, mem_len)`
//! function, which cannot carry the VM, while the JIT's code takes a
//! private context. So each VM gets, per JIT mode, a tiny stub of generated
//! code that loads the address of its [`Compiled`] into the next argument
//! register and jumps to [`run_basic`] or [`run_extended`], which run the
//! compiled program as [`JitProgram::execute`] does, with every check.

use std::ffi::c_void;
use std::sync::Arc;

use super::boundary::{ErrorPrint, bytes_mut, guard};
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
        let compiled = Arc::as_ptr(self.compiled(program, error_printf)?);
        let slot = match mode {
            Mode::Basic => &mut self.basic,
            Mode::Extended => &mut self.extended,
        };
        if slot.is_none() {
            *slot = Some(entry_stub(compiled, mode)?);
        }
        self.last = Some(mode);
        Ok(slot.as_ref().expect("set above").as_ptr())
    }
}

type Basic = unsafe extern "C" fn(*mut c_void, usize, *const Compiled) -> u64;
type Extended = unsafe extern "C" fn(*mut c_void, usize, *mut u8, usize, *const Compiled) -> u64;

/// Generates the entry point of `mode` for `compiled`, in the JIT's
/// executable memory: it puts `compiled` in the argument register after the
/// C caller's own and jumps to the Rust function that runs the program. A
/// jump, not a call, so the stack stays as the C caller left it and the Rust
/// function returns straight to it.
fn entry_stub(compiled: *const Compiled, mode: Mode) -> Result<ExecutableCode, String> {
    let target = match mode {
        Mode::Basic => run_basic as Basic as usize,
        Mode::Extended => run_extended as Extended as usize,
    };
    let bytes = stub_code(compiled as u64, target as u64, mode)?;
    ExecutableCode::new(&bytes).map_err(|error| format!("mapping the entry point failed: {error}"))
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
