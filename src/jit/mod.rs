//! The JIT: compiles a verified [`Program`] to native code that agrees with
//! the interpreter ([`crate::interp`]) bit for bit: the same return value,
//! the same memory effects, and the same [`ExecError`] (instruction, kind and
//! fields) when a run is stopped.
//!
//! The native code keeps the interpreter's memory safety: every load, store
//! and atomic is checked against the live stack frames, the input and the
//! program's regions, except where the address is provably allowed (inside
//! the current stack frame, a region, or input the program has compared
//! the length of; see `checks`); it counts instructions like the
//! interpreter and stops at the same instruction when the budget runs out;
//! it bounds local calls to [`MAX_CALL_DEPTH`] frames.
//!
//! Rooms: the analysis every backend plans with (`facts`, `liveness`,
//! `flow`, `checks`, `fusion`, put together in `plan`), the
//! executable-memory pool (`code_memory`), and a folder per backend, which
//! turns a program and its plan into machine code. This module runs that
//! code, the same way for every backend. x86-64 and aarch64 have a
//! backend; elsewhere [`JitProgram::compile`] returns [`JitError::Unsupported`].

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use crate::error::{ExecError, ExecErrorKind};
use crate::helpers::builtin::RunState;
use crate::helpers::xdp::DirectFault;
use crate::interp::{self, Stack};
use crate::isa::{self, MAX_CALL_DEPTH};
use crate::memory;
use crate::program::Program;
use crate::scratch::Reused;

mod code_memory;

// The analysis, built where a backend uses it.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod checks;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod direct_calls;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod facts;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod flow;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod fusion;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod liveness;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod lookups;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod plan;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as backend;
#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as backend;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod no_backend;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
use no_backend as backend;

pub(crate) use code_memory::ExecutableCode;

/// Why a program could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// The JIT has no backend for this architecture; use the interpreter.
    #[error("the JIT does not support the {0} architecture")]
    Unsupported(&'static str),
    /// The assembler refused the generated code (a label or jump it could
    /// not encode); a bug in the JIT, reported rather than panicking.
    #[error("assembling the native code failed: {0}")]
    Assembler(String),
    /// The program's native code would be longer than the backend's
    /// jumps reach (aarch64's reach 128 MiB).
    #[error("the native code would take at least {bytes} bytes, more than the {limit} bytes its jumps reach")]
    CodeTooLarge { bytes: usize, limit: usize },
    /// An instruction the verifier would have refused; compiling needs a
    /// verified program.
    #[error("instruction {pc} has opcode {opc:#04x}, which the verifier does not accept")]
    Unverified { pc: usize, opc: u8 },
    /// The operating system refused memory for the code, or to make it
    /// executable.
    #[error("mapping the native code failed: {0}")]
    Memory(#[from] std::io::Error),
}

/// What native code reports when it returns to [`JitProgram::execute`].
/// The values are the ones the generated code puts in its first return
/// register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Status {
    /// The program exited (or unwound); r0 is in [`Exit::value`].
    Exited = 0,
    /// A load, store or atomic at `error_pc` touched `error_value` outside
    /// the memory it may access.
    Memory = 1,
    /// The instruction budget ran out at `error_pc`.
    Budget = 2,
    /// The local call at `error_pc` would exceed [`MAX_CALL_DEPTH`] frames.
    CallDepth = 3,
    /// The call at `error_pc` named helper `error_value`, which the program's
    /// helper table does not hold.
    UnknownHelper = 4,
    /// The helper called at `error_pc` set the stop word: it faulted, or
    /// asked for a tail call (the run state says which).
    HelperStop = 5,
    /// On entry, the XDP context block held packet pointer `error_value`
    /// outside the page ([`memory::context_fault`]); `error_pc` is 0.
    PacketPointer = 6,
    /// The helper called at `error_pc` in its direct form ([`direct_calls`])
    /// refused the context block: `error_value` is the
    /// [`DirectFault`](crate::helpers::xdp::DirectFault)'s number.
    HelperFault = 7,
    /// On entry, the XDP run's buffer, of `error_value` bytes, could not
    /// hold the context block ([`memory::context_fault`]).
    ShortContext = 8,
}

/// What the native code returns, in the two return registers of the C
/// convention (rax:rdx on x86-64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exit {
    /// A [`Status`] in the low byte; above it, the pc of the instruction
    /// that stopped the run.
    pub(crate) status: u64,
    /// r0 when the program exited; the faulting address or the unknown
    /// helper index when it was stopped.
    pub(crate) value: u64,
}

/// The per-run state the native code reads and writes through its context
/// register. `repr(C)` so the code generator can address fields by offset.
/// The code writes `remaining` on every way out, `extra` in its prologue
/// when the limit is above `i64::MAX`, and every field of `scratch` it reads
/// before it reads it.
#[repr(C)]
pub(crate) struct Context {
    /// `limit - executed` when the run ended (the part of a limit above
    /// `i64::MAX` not yet used is in `extra`), wrapping.
    pub(crate) remaining: u64,
    /// The part of the limit not yet moved into the budget register (0
    /// unless the limit is above `i64::MAX`).
    pub(crate) extra: u64,
    /// The run state's stop word: set by a helper that stops the run, read
    /// by the code after each call of such a helper. Written by Rust
    /// before a run of a program that has such helpers.
    pub(crate) helper_stop: u64,
    pub(crate) scratch: Scratch,
    /// r10 for a helper that may stop the run, so that it checks pointers
    /// against the live frames only: Rust writes the entry frame's before
    /// the run, the code the current one before each call of such a helper.
    /// After `scratch`, so that the other fields' offsets stay as they were.
    pub(crate) frame_pointer: u64,
}

/// Input bounds a [`Scratch`] holds: for the access sizes 1, 2, 4, 8 and
/// for the spans of merged checks.
pub(crate) const BOUND_SLOTS: usize = 16;

/// Context fields only the native code uses, as the plan's checks and
/// calls need them on any target.
#[repr(C)]
pub(crate) struct Scratch {
    /// Address of the input (0 when it is empty): r1 on entry.
    pub(crate) input_start: u64,
    /// For an access (or span) of `size` bytes: `input_len - size + 1`, or
    /// 0 when the input is shorter, so `addr - input_start < input_bound[i]`
    /// is exactly the interpreter's input check.
    pub(crate) input_bound: [u64; BOUND_SLOTS],
    /// Just past the stack: r10 of the entry frame.
    pub(crate) stack_top: u64,
    /// r10 of the deepest frame a local call may make.
    pub(crate) deepest_frame: u64,
    /// The native stack pointer after the prologue, to leave from any depth.
    pub(crate) saved_sp: u64,
    /// Where a register is kept for a moment.
    pub(crate) spill: u64,
    /// The input's length: r2 on entry, for the helpers' direct forms.
    pub(crate) input_len: u64,
}

/// What a backend makes of a program: a function of the C convention,
/// [`Entry`], at offset 0 of `bytes`.
pub(crate) struct MachineCode {
    pub(crate) bytes: Reused<u8>,
    /// Does the code read its stack argument? Not when it names no r10,
    /// makes no calls and checks no access: then no access can reach the
    /// stack, and the caller may pass 0 instead of lending one.
    pub(crate) uses_stack: bool,
    /// Does the code make local calls? Without them only the entry frame,
    /// the top `STACK_FRAME_SIZE` bytes of the stack, can be reached. (For
    /// the stub of [`JitProgram::direct_entry`].)
    #[cfg(target_arch = "aarch64")]
    pub(crate) local_calls: bool,
    /// Does the code call a helper that may stop the run (see
    /// [`Program::has_stopping_helpers`]), other than the map lookups it
    /// makes itself ([`lookups`]) and the helpers it calls in their direct
    /// forms ([`direct_calls`])? Then a run needs Rust around it.
    pub(crate) stopping_helpers: bool,
}

/// Where [`DirectCode`] goes off its fast path: absolute addresses of
/// `extern "C"` functions and of what they are given.
#[derive(Clone, Copy, Debug)]
// Only the x86-64 backend generates direct code.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct DirectExits {
    /// `fn(sink, status, value) -> u64`, tail-called when a run stops, with
    /// the [`Exit`] the code would have returned: returns the entry's result.
    pub(crate) stopped: u64,
    /// `fn(mem, mem_len, sink) -> u64`, tail-called for an input the entry
    /// refuses (a negative length, or NULL with a length).
    pub(crate) refused: u64,
    /// `fn(value) -> u64`, tail-called after a run that returned `value`
    /// while the word at `pending` is not 0.
    pub(crate) succeeded: u64,
    /// The first argument of `stopped`, the third of `refused`.
    pub(crate) sink: u64,
    /// A word read after every run that succeeds.
    pub(crate) pending: u64,
}

/// A call of the compiled code with nothing around it, for a program whose
/// runs need no Rust (see [`JitProgram::direct_entry`]). The caller calls
/// `code`, an [`Entry`], with a [`Context`] it owns for the call (which may
/// be uninitialised: the code writes what it reads) and the top of a stack
/// of at least `stack_len` bytes below it that no other run uses meanwhile;
/// status 0 in the returned [`Exit`] means r0 is its value, anything else
/// is [`JitProgram::stopped`]'s to explain. The budget, memory checks and
/// call depth are all in the code. (x86-64 generates the whole entry
/// instead: [`DirectCode`].)
#[cfg(target_arch = "aarch64")]
pub(crate) struct DirectEntry {
    pub(crate) code: *const u8,
    /// 0 when the code reads no stack, one frame when it makes no local
    /// calls, else [`memory::STACK_SIZE`].
    pub(crate) stack_len: usize,
}

/// The compiled code: runs over the input at `input` (`input_len` bytes, or
/// `input == 0` and no bytes) with the stack of `STACK_SIZE` bytes whose top
/// is `stack_top` (anything, when the code does not use the stack); writes
/// what it reads of `context` first.
type Entry = unsafe extern "C" fn(input: u64, input_len: u64, context: *mut Context, stack_top: u64) -> Exit;

/// A program compiled to native code. It keeps the [`Program`] alive, as the
/// code refers to its helper table and data regions by address; the code's
/// memory is returned to the pool when the `JitProgram` is dropped.
pub struct JitProgram {
    program: Arc<Program>,
    /// See [`MachineCode::stopping_helpers`], kept here so that a run need
    /// not reach into the program to choose its path.
    stopping_helpers: bool,
    /// Tail-call targets, compiled on their first call.
    targets: Mutex<Vec<Arc<JitProgram>>>,
    code: ExecutableCode,
    /// See [`MachineCode::uses_stack`].
    uses_stack: bool,
    /// See [`MachineCode::local_calls`]; for the direct entry's stack.
    #[cfg(target_arch = "aarch64")]
    local_calls: bool,
    /// Whether runs may be given input they only read: the program writes
    /// only its stack ([`Program::writes_only_stack`]), so it calls no
    /// helper that writes either.
    reads_input_only: bool,
}

/// Runs of a program that only reads its input, all with one stack
/// ([`JitProgram::read_only`]).
pub struct ReadOnlyRuns<'a> {
    jit: &'a JitProgram,
    /// The top of the stack the runs hold, or 0 when the code uses none.
    stack_top: u64,
    _stack: PhantomData<&'a mut Stack>,
}

impl ReadOnlyRuns<'_> {
    /// Runs the program over `input` and returns r0.
    #[inline]
    pub fn run(&self, input: &[u8]) -> Result<u64, ExecError> {
        let address = if input.is_empty() { 0 } else { input.as_ptr() as u64 };
        // Nothing reads the context afterwards, so the code may have it
        // uninitialised (it writes what it reads).
        let mut context = MaybeUninit::uninit();
        // SAFETY: as in `enter`, except that `input` is only valid for
        // reads, which is all the code does with it: its stores all address
        // the stack, and it calls no helper that writes (`reads_input_only`,
        // checked by `read_only`). The stack is borrowed for as long as `self`
        // lives, or not used by the code at all.
        let exit = unsafe { self.jit.call(address, input.len() as u64, context.as_mut_ptr(), self.stack_top) };
        self.jit.result(exit)
    }
}

/// A program compiled as a `ubpf_jit_fn` (and `ubpf_jit_ex_fn`, whose stack
/// it ignores) that runs it as [`JitProgram::execute`] does, from C, with
/// nothing around it: it checks the input, keeps its context and stack in
/// a frame of the caller's stack, and leaves through the [`DirectExits`] it
/// was compiled with to report a refused input or a stopped run, or to
/// clear the thread's last error. It keeps the program alive, as the code
/// refers to its helpers and regions by address.
pub(crate) struct DirectCode {
    // Held for the code's lifetime; read only by `testing`'s comparer.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    program: Arc<Program>,
    code: ExecutableCode,
}

/// A program compiled for C callers: see [`compile_for_c`].
pub(crate) enum ForC {
    Direct(DirectCode),
    /// Where the backend generates no direct code, or a run needs Rust
    /// around it (a helper may stop the run or tail-call: see
    /// [`JitProgram::run`]).
    Jit(JitProgram),
}

/// What a backend makes of a program for C callers.
pub(crate) enum MachineCodeForC {
    /// Only from the x86-64 backend.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Direct(Reused<u8>),
    Jit(MachineCode),
}

/// Compiles `program` for C callers: to [`DirectCode`] that leaves through
/// `exits` where the backend can, else as [`JitProgram::compile`] does.
pub(crate) fn compile_for_c(program: Arc<Program>, exits: &DirectExits) -> Result<ForC, JitError> {
    Ok(match backend::compile_for_c(&program, exits)? {
        MachineCodeForC::Direct(bytes) => ForC::Direct(DirectCode { code: ExecutableCode::new(&bytes)?, program }),
        MachineCodeForC::Jit(machine_code) => ForC::Jit(JitProgram::with_code(program, machine_code)?),
    })
}

impl DirectCode {
    /// The code, a `ubpf_jit_fn` at offset 0. Its jumps are relative, so a
    /// copy runs anywhere while the program lives.
    pub(crate) fn code(&self) -> &ExecutableCode {
        &self.code
    }

    /// The program this code was compiled from.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn program(&self) -> &Arc<Program> {
        &self.program
    }
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("insns", &self.program.insns().len())
            .field("code_len", &self.code.bytes().len())
            .finish()
    }
}

impl JitProgram {
    /// Compiles `program` to native code.
    pub fn compile(program: Arc<Program>) -> Result<JitProgram, JitError> {
        let machine_code = backend::compile(&program)?;
        JitProgram::with_code(program, machine_code)
    }

    /// `program` with the backend's `machine_code` for it, made executable.
    fn with_code(program: Arc<Program>, machine_code: MachineCode) -> Result<JitProgram, JitError> {
        Ok(JitProgram {
            stopping_helpers: machine_code.stopping_helpers,
            targets: Mutex::new(Vec::new()),
            code: ExecutableCode::new(&machine_code.bytes)?,
            uses_stack: machine_code.uses_stack,
            #[cfg(target_arch = "aarch64")]
            local_calls: machine_code.local_calls,
            reads_input_only: program.writes_only_stack(),
            program,
        })
    }

    /// Runs the compiled program over `mem`, exactly as
    /// [`Program::execute`] would: r1 = the address of `mem` (0 when it is
    /// empty), r2 = its length; returns r0.
    #[inline]
    pub fn execute(&self, mem: &mut [u8]) -> Result<u64, ExecError> {
        if self.stopping_helpers {
            return self.execute_chain(mem);
        }
        // Nothing reads the context afterwards, so the code may have it
        // uninitialised (it writes what it reads).
        let mut context = MaybeUninit::uninit();
        let exit = if self.uses_stack {
            interp::with_thread_stack(|stack| self.enter(mem, stack, context.as_mut_ptr()))
        } else {
            let input = if mem.is_empty() { 0 } else { mem.as_mut_ptr() as u64 };
            // SAFETY: as in `enter`, but the code reads no stack (see
            // `uses_stack`), so the thread's need not be lent.
            unsafe { self.call(input, mem.len() as u64, context.as_mut_ptr(), 0) }
        };
        self.result(exit)
    }

    /// Runs of the compiled program over inputs that it only reads, with
    /// `stack` as their call frames, each returning r0: the cheapest way in
    /// (the code is called as it is, what each run needs is looked up once,
    /// and no instructions are counted), for a program that writes only its
    /// stack. `None` for any other program, which must be given input it
    /// may write ([`JitProgram::run`]).
    #[inline]
    pub fn read_only<'a>(&'a self, stack: &'a mut Stack) -> Option<ReadOnlyRuns<'a>> {
        if !self.reads_input_only {
            return None;
        }
        let stack_top = if self.uses_stack { stack.top() } else { 0 };
        Some(ReadOnlyRuns { jit: self, stack_top, _stack: PhantomData })
    }

    /// [`JitProgram::execute`] for a program whose helpers may stop it or
    /// tail-call: out of line, so that the plain case stays small enough to
    /// inline into its callers.
    #[inline(never)]
    fn execute_chain(&self, mem: &mut [u8]) -> Result<u64, ExecError> {
        interp::with_thread_stack(|stack| self.run(mem, stack, &mut 0))
    }

    /// Runs the compiled program over `mem` and also returns how many
    /// instructions ran, as [`interp::execute_counted`] does (the same
    /// number, however the run ends).
    ///
    /// [`interp::execute_counted`]: crate::interp::execute_counted
    pub fn execute_counted(&self, mem: &mut [u8]) -> (Result<u64, ExecError>, u64) {
        let mut executed = 0;
        let result = interp::with_thread_stack(|stack| self.run(mem, stack, &mut executed));
        (result, executed)
    }

    /// The native code, for `ubpf_copy_jit`: a System V function
    /// `fn(input: u64, input_len: u64, context: *mut Context, stack_top: u64)
    /// -> Exit` at offset 0. Its jumps are relative, so a copy runs anywhere,
    /// but it embeds the addresses of the program's helpers, helper table and
    /// regions: a copy is valid only while the program lives.
    pub fn code(&self) -> &[u8] {
        self.code.bytes()
    }

    /// Whether a run needs no Rust around it: no helper may stop the run
    /// or tail-call (see [`JitProgram::run`]). Only such a program's code is
    /// called straight from C. (x86-64 decides this from its plan, in
    /// `backend::compile_for_c`; its tests ask here.)
    #[cfg(any(test, target_arch = "aarch64"))]
    pub(crate) fn runs_without_rust(&self) -> bool {
        !self.stopping_helpers
    }

    /// How generated code may call this code straight from C, or `None`
    /// when a run needs Rust around it.
    #[cfg(target_arch = "aarch64")]
    pub(crate) fn direct_entry(&self) -> Option<DirectEntry> {
        if !self.runs_without_rust() {
            return None;
        }
        let stack_len = match (self.uses_stack, self.local_calls) {
            (false, _) => 0,
            (true, false) => isa::STACK_FRAME_SIZE,
            (true, true) => memory::STACK_SIZE,
        };
        Some(DirectEntry { code: self.code.as_ptr(), stack_len })
    }

    /// The error of a run of `program`'s code that returned `status` (not
    /// [`Status::Exited`]) and `value`, as a direct entry reports them.
    #[cold]
    pub(crate) fn stopped(program: &Program, status: u64, value: u64) -> ExecError {
        exit_error(program, Exit { status, value })
    }

    /// The program this code was compiled from.
    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// Runs the compiled program with `stack` as its call frames, adding the
    /// instructions executed to `executed`, as [`interp::run`] does: given
    /// the same `mem` and `stack`, both engines see the same addresses, so
    /// even the addresses in their errors agree.
    ///
    /// [`interp::run`]: crate::interp::run
    pub fn run(&self, mem: &mut [u8], stack: &mut Stack, executed: &mut u64) -> Result<u64, ExecError> {
        if !self.stopping_helpers {
            return self.run_one(mem, stack, executed, None);
        }
        // The interpreter's protocol (see `interp::run`), with the stop
        // word in each run's context.
        let input_start = if mem.is_empty() { 0 } else { mem.as_mut_ptr() as u64 };
        let state = RunState::new(&self.program, input_start, mem.len() as u64, stack.top());
        let _published = state.publish();
        let mut result = self.run_one(mem, stack, executed, Some(&state));
        let mut target = state.take_tail_call();
        while let (Ok(_), Some(program)) = (&result, target.take()) {
            let jit = match self.target(&program) {
                Ok(jit) => jit,
                Err(error) => return Err(self.tail_call_error(error)),
            };
            result = jit.run_one(mem, stack, executed, Some(&state));
            target = state.take_tail_call();
        }
        result
    }

    /// Runs this program's code once; with a run state, a helper that stops
    /// the run ends it as the interpreter's `run_one` does.
    fn run_one(
        &self,
        mem: &mut [u8],
        stack: &mut Stack,
        executed: &mut u64,
        state: Option<&RunState>,
    ) -> Result<u64, ExecError> {
        // Only the fields read here or by the stop protocol are set: the
        // code writes the others before it reads them (a run per packet
        // should not clear the whole context).
        let mut context = MaybeUninit::<Context>::uninit();
        let context_ptr = context.as_mut_ptr();
        // SAFETY: in-place writes of two whole fields of the context, which
        // this function owns.
        unsafe {
            (&raw mut (*context_ptr).extra).write(0);
            (&raw mut (*context_ptr).helper_stop).write(0);
        }
        if let Some(state) = state {
            // SAFETY: fields of the context, which this function owns and
            // which outlives the run (the only time helpers use them): the
            // stop word, initialised above, and the frame pointer, r10 of the
            // entry frame until the code writes it before a helper call.
            unsafe {
                (&raw mut (*context_ptr).frame_pointer).write(stack.top());
                state.watch(&raw mut (*context_ptr).helper_stop, &raw const (*context_ptr).frame_pointer);
            }
        }
        let exit = self.enter(mem, stack, context_ptr);
        // SAFETY: `extra` was written above (and maybe by the code), and the
        // code writes `remaining` on every way out; both are whole u64s.
        let (remaining, extra) = unsafe { ((*context_ptr).remaining, (*context_ptr).extra) };
        // remaining = limit - extra - executed, all wrapping.
        *executed += self.program.instruction_limit().wrapping_sub(extra).wrapping_sub(remaining);
        match exit.status {
            s if s == Status::Exited as u64 => Ok(exit.value),
            s if s & 0xff == Status::HelperStop as u64 => {
                let pc = (s >> 8) as usize;
                match state.and_then(RunState::take_fault) {
                    Some(kind) => Err(ExecError { pc, insn: self.program.insns()[pc], kind }),
                    None => Ok(0),
                }
            }
            _ => Err(self.error(exit)),
        }
    }

    /// The compiled code of tail-call target `program`, compiled on first
    /// use and kept.
    fn target(&self, program: &Arc<Program>) -> Result<Arc<JitProgram>, JitError> {
        let mut targets = self.targets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(jit) = targets.iter().find(|jit| Arc::ptr_eq(&jit.program, program)) {
            return Ok(jit.clone());
        }
        let jit = Arc::new(JitProgram::compile(program.clone())?);
        targets.push(jit.clone());
        Ok(jit)
    }

    #[cold]
    fn tail_call_error(&self, error: JitError) -> ExecError {
        ExecError {
            pc: 0,
            insn: self.program.insns()[0],
            kind: ExecErrorKind::HelperArgument {
                helper: crate::helpers::linux::TAIL_CALL,
                what: format!("the target could not be compiled: {error}"),
            },
        }
    }

    /// Calls the native code over `mem` with `stack`.
    #[inline(always)]
    fn enter(&self, mem: &mut [u8], stack: &mut Stack, context: *mut Context) -> Exit {
        let input = if mem.is_empty() { 0 } else { mem.as_mut_ptr() as u64 };
        // SAFETY: `mem` and `stack` are borrowed for the call (the stack
        // holds `STACK_SIZE` bytes below its top), `self` keeps the program
        // alive, and every caller passes a context it owns for the call,
        // valid for writes.
        unsafe { self.call(input, mem.len() as u64, context, stack.top()) }
    }

    /// Runs the code (see [`Entry`]).
    ///
    /// # Safety
    /// The input and the stack must be valid for reads and writes and not
    /// otherwise in use for the call, and `context` must be valid for
    /// writes (the code initialises what it reads).
    #[inline(always)]
    unsafe fn call(&self, input: u64, input_len: u64, context: *mut Context, stack_top: u64) -> Exit {
        // SAFETY: the pages hold a complete function that the backend
        // generated with this signature at offset 0 (the prologue), mapped
        // executable, and live as long as `self`.
        let entry: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(self.code.as_ptr()) };
        // SAFETY: the code only touches memory that its checks admit: the
        // input and stack the arguments describe (valid for the call, by the
        // caller's contract), the program's regions and helper table (owned
        // by the program, which `self` keeps alive), and the context itself;
        // helpers are called with the C convention they are declared with;
        // the native stack is restored on every way out.
        unsafe { entry(input, input_len, context, stack_top) }
    }

    /// r0 when the code exited, else the error its exit status describes.
    #[inline]
    fn result(&self, exit: Exit) -> Result<u64, ExecError> {
        if exit.status == Status::Exited as u64 { Ok(exit.value) } else { Err(self.error(exit)) }
    }

    /// Turns a stopped run into the interpreter's error.
    #[cold]
    #[inline(never)]
    fn error(&self, exit: Exit) -> ExecError {
        exit_error(&self.program, exit)
    }
}

/// The interpreter's error for a run of `program`'s code that stopped with
/// `exit`.
fn exit_error(program: &Program, exit: Exit) -> ExecError {
    let pc = (exit.status >> 8) as usize;
    let insn = program.insns()[pc];
    let kind = match exit.status & 0xff {
        s if s == Status::Memory as u64 => {
            let addr = exit.value;
            let size = isa::access_size(insn.opc);
            let write = insn.class() != isa::BPF_LDX;
            memory_fault(program, addr, size, write)
        }
        s if s == Status::Budget as u64 => ExecErrorKind::BudgetExhausted(program.instruction_limit()),
        s if s == Status::CallDepth as u64 => ExecErrorKind::CallDepthExceeded(MAX_CALL_DEPTH),
        s if s == Status::PacketPointer as u64 => ExecErrorKind::BadPacketPointer { value: exit.value },
        s if s == Status::ShortContext as u64 => ExecErrorKind::ShortContext { len: exit.value },
        s if s == Status::HelperFault as u64 => DirectFault::from_code(exit.value).error(insn.imm as u32),
        // The only other status that reaches here: `run_one` handles
        // `HelperStop`, and `Exited` is no error.
        s => {
            debug_assert_eq!(s, Status::UnknownHelper as u64);
            ExecErrorKind::UnknownHelper(exit.value)
        }
    };
    ExecError { pc, insn, kind }
}

/// Classifies a refused access as the interpreter does ([`memory::fault`]).
#[cold]
fn memory_fault(program: &Program, addr: u64, size: usize, write: bool) -> ExecErrorKind {
    memory::fault(program.regions(), addr, size, write)
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use crate::helpers::Helpers;
    use crate::image::Region;
    use crate::isa::*;
    use crate::program::Config;
    use crate::testing::engines;

    fn load(insns: &[Insn], config: &Config) -> Arc<Program> {
        let mut helpers = Helpers::new();
        helpers.register(1, "add5", add5);
        helpers.register(2, "zero", zero);
        helpers.set_unwind(2);
        Arc::new(Program::load(&encode_program(insns), &helpers, config).expect("test program verifies"))
    }

    extern "C" fn add5(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
        a.wrapping_add(b).wrapping_add(c).wrapping_add(d).wrapping_add(e)
    }

    extern "C" fn zero(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        0
    }

    /// `insns` in both engines over `mem` (see [`engines::assert_agree`]).
    fn both(insns: &[Insn], config: &Config, mem: &[u8]) -> Result<u64, ExecError> {
        let program = load(insns, config);
        let jit = JitProgram::compile(program.clone()).expect("compiles");
        engines::assert_agree(&program, &jit, mem, &format_args!("{insns:?}"))
    }

    const EXIT_INSN: Insn = Insn::new(EXIT, 0, 0, 0, 0);

    #[test]
    fn input_bounds_match_the_interpreter_check() {
        // Each size at each offset of inputs of 0 to 9 bytes, through both
        // the inline check and the slow path (base r10 + c puts the stack first).
        let config = Config::default();
        for len in 0..10 {
            let mem = vec![5u8; len];
            for opc in [LDXB, LDXH, LDXW, LDXDW] {
                for off in -2..10 {
                    both(&[Insn::new(opc, 0, 1, off, 0), EXIT_INSN], &config, &mem).ok();
                }
            }
        }
    }

    #[test]
    fn checks_through_copies_of_r10() {
        let config = Config::default();
        for off in [-520, -513, -512, -9, -8, -1, 0, 1, 8, 600] {
            let insns = [
                Insn::new(MOV64_REG, 3, 10, 0, 0),
                Insn::new(ADD64_IMM, 3, 0, 0, -16),
                Insn::new(STDW, 3, 0, off, 7),
                Insn::new(LDXDW, 0, 3, off, 0),
                EXIT_INSN,
            ];
            both(&insns, &config, &[]).ok();
            // From a called function, where the caller's frame is live.
            let call = [Insn::new(CALL, 0, CALL_LOCAL, 0, 1), EXIT_INSN];
            both(&[&call[..], &insns[..]].concat(), &config, &[1, 2]).ok();
        }
    }

    #[test]
    fn limits_above_i64_max_count_exactly() {
        for limit in [u64::MAX, i64::MAX as u64 + 1, i64::MAX as u64, 0, 1, 2, 3] {
            let config = Config { instruction_limit: limit, ..Config::default() };
            let spin = [
                Insn::new(MOV64_IMM, 0, 0, 0, 3),
                Insn::new(SUB64_IMM, 0, 0, 0, 1),
                Insn::new(JNE_IMM, 0, 0, -2, 0),
                EXIT_INSN,
            ];
            both(&spin, &config, &[]).ok();
        }
    }

    #[test]
    fn returns_immediates_and_input() {
        let config = Config::default();
        assert_eq!(both(&[Insn::new(MOV64_IMM, 0, 0, 0, -7), EXIT_INSN], &config, &[]), Ok(-7i64 as u64));
        let lddw = [Insn::new(LDDW, 0, 0, 0, 0x1234_5678), Insn::new(0, 0, 0, 0, -0x1000_0000), EXIT_INSN];
        assert_eq!(both(&lddw, &config, &[]), Ok(0xf000_0000_1234_5678));
        let len = [Insn::new(MOV64_REG, 0, 2, 0, 0), EXIT_INSN];
        assert_eq!(both(&len, &config, &[1, 2, 3]), Ok(3));
        let load = [Insn::new(LDXH, 0, 1, 1, 0), EXIT_INSN];
        assert_eq!(both(&load, &config, &[1, 2, 3]), Ok(0x0302));
    }

    #[test]
    fn every_access_size_faults_like_the_interpreter() {
        let config = Config::default();
        for opc in [LDXB, LDXH, LDXW, LDXDW, LDXSB, LDXSH, LDXSW] {
            for off in [-1, 0, 1, 2, 3, 4, 5, 8] {
                both(&[Insn::new(opc, 0, 1, off, 0), EXIT_INSN], &config, &[9; 8]).ok();
            }
        }
        for opc in [STB, STH, STW, STDW] {
            for off in [-513, -512, -511, -8, -1, 0, 1] {
                both(&[Insn::new(opc, 10, 0, off, 7), EXIT_INSN], &config, &[]).ok();
            }
        }
        let error = both(&[Insn::new(STXDW, 1, 2, 4, 0), EXIT_INSN], &config, &[0; 8]).unwrap_err();
        assert!(matches!(error.kind, ExecErrorKind::OutOfBounds { size: 8, write: true, .. }));
    }

    #[test]
    fn read_only_region() {
        static DATA: [u8; 16] = [3; 16];
        let start = DATA.as_ptr() as u64;
        let config = Config {
            regions: vec![Region { start, len: 16, writable: false, ..Region::default() }],
            ..Config::default()
        };
        let read = [
            Insn::new(LDDW, 1, 0, 0, start as i32),
            Insn::new(0, 0, 0, 0, (start >> 32) as i32),
            Insn::new(LDXDW, 0, 1, 8, 0),
            EXIT_INSN,
        ];
        assert_eq!(both(&read, &config, &[]), Ok(0x0303_0303_0303_0303));
        let write = [
            Insn::new(LDDW, 1, 0, 0, start as i32),
            Insn::new(0, 0, 0, 0, (start >> 32) as i32),
            Insn::new(STB, 1, 0, 15, 1),
            EXIT_INSN,
        ];
        assert_eq!(both(&write, &config, &[]).unwrap_err().kind, ExecErrorKind::ReadOnly { addr: start + 15, size: 1 });
    }

    #[test]
    fn helpers_keep_arguments_and_unwind() {
        let config = Config::default();
        let mut insns: Vec<Insn> = (1..=5).map(|r| Insn::new(MOV64_IMM, r, 0, 0, r as i32 * 10)).collect();
        insns.push(Insn::new(CALL, 0, 0, 0, 1));
        for r in 1..=5 {
            insns.push(Insn::new(ADD64_REG, 0, r, 0, 0));
        }
        insns.push(EXIT_INSN);
        assert_eq!(both(&insns, &config, &[]), Ok(300));
        let unwind = [
            Insn::new(MOV64_IMM, 0, 0, 0, 9),
            Insn::new(CALL, 0, 0, 0, 2),
            Insn::new(MOV64_IMM, 0, 0, 0, 1),
            EXIT_INSN,
        ];
        assert_eq!(both(&unwind, &config, &[]), Ok(0));
        let callx = [Insn::new(MOV64_IMM, 3, 0, 0, 7), Insn::new(CALLX, 3, 0, 0, 0), EXIT_INSN];
        assert_eq!(both(&callx, &config, &[]).unwrap_err().kind, ExecErrorKind::UnknownHelper(7));
    }

    #[test]
    fn helper_calls_check_the_budget_where_the_interpreter_does() {
        // Forward jumps only, so DAG mode with limits this small: the run
        // stops at a call once the count there passes the limit, unwinds,
        // or exits; counts agree in every case.
        let program = [
            Insn::new(MOV64_IMM, 1, 0, 0, 1),
            Insn::new(JEQ_IMM, 2, 0, 2, 0),
            Insn::new(MOV64_IMM, 1, 0, 0, 0),
            Insn::new(ADD64_IMM, 1, 0, 0, 3),
            // r0 = r1 + r2: 1 without input, 5 with two bytes.
            Insn::new(CALL, 0, 0, 0, 1),
            Insn::new(JGT_IMM, 0, 0, 2, 4),
            // Unwinds.
            Insn::new(CALL, 0, 0, 0, 2),
            Insn::new(MOV64_IMM, 0, 0, 0, 7),
            EXIT_INSN,
        ];
        for limit in 0..12 {
            let config = Config { instruction_limit: limit, ..Config::default() };
            for input in [&[][..], &[1, 2][..]] {
                both(&program, &config, input).ok();
            }
        }
        let roomy = Config { instruction_limit: 100, ..Config::default() };
        assert_eq!(both(&program, &roomy, &[]), Ok(0), "unwound");
        assert_eq!(both(&program, &roomy, &[1, 2]), Ok(5));
        // Without input, the call at 4 is the third instruction run.
        let error = both(&program, &Config { instruction_limit: 2, ..Config::default() }, &[]).unwrap_err();
        assert_eq!((error.pc, error.kind), (4, ExecErrorKind::BudgetExhausted(2)));
    }

    #[test]
    fn registers_read_before_written_start_at_zero() {
        let config = Config::default();
        let read_all = |dst: u8| (3..=9).map(move |r| Insn::new(ADD64_REG, dst, r, 0, 0));
        // Straight: r0 and r3-r9 read as the run starts.
        let mut straight: Vec<Insn> = read_all(0).collect();
        straight.push(EXIT_INSN);
        assert_eq!(both(&straight, &config, &[]), Ok(0));
        // Written on one path only, read where the paths meet.
        let mut joined = vec![
            Insn::new(JEQ_IMM, 1, 0, 4, 0),
            Insn::new(MOV64_IMM, 6, 0, 0, 7),
            Insn::new(MOV64_IMM, 3, 0, 0, 5),
            Insn::new(MOV64_IMM, 0, 0, 0, 1),
            Insn::new(MOV64_IMM, 9, 0, 0, 2),
        ];
        joined.extend(read_all(0));
        joined.push(EXIT_INSN);
        assert_eq!(both(&joined, &config, &[]), Ok(0));
        assert_eq!(both(&joined, &config, &[1]), Ok(15));
        // A callee reading what neither it nor its caller wrote.
        let mut called = vec![Insn::new(CALL, 0, CALL_LOCAL, 0, 1), EXIT_INSN];
        called.extend(read_all(0));
        called.push(EXIT_INSN);
        assert_eq!(both(&called, &config, &[]), Ok(0));
    }

    #[test]
    fn jumps_out_of_loops_count_the_run_they_leave() {
        // The exit at 4 leaves the count of 2-4 pending past the jump, to
        // be subtracted on the way out; then a read that faults on a short
        // input. At every limit, the two engines stop at the same place.
        let insns = [
            Insn::new(MOV64_IMM, 0, 0, 0, 0),
            Insn::new(MOV64_IMM, 3, 0, 0, 0),
            Insn::new(ADD64_IMM, 0, 0, 0, 3),
            Insn::new(ADD64_IMM, 3, 0, 0, 1),
            Insn::new(JGT_IMM, 3, 0, 3, 4),
            Insn::new(ADD64_REG, 0, 3, 0, 0),
            Insn::new(JLT_IMM, 3, 0, -5, 10),
            EXIT_INSN,
            Insn::new(LDXB, 4, 1, 7, 0),
            Insn::new(ADD64_REG, 0, 4, 0, 0),
            EXIT_INSN,
        ];
        for limit in (1..40).chain([u64::MAX]) {
            let config = Config { instruction_limit: limit, ..Config::default() };
            for len in [0, 8] {
                both(&insns, &config, &vec![1; len]).ok();
            }
        }
    }

    #[test]
    fn budget_and_depth() {
        let config = Config { instruction_limit: 10, ..Config::default() };
        // r10 is never 0: a jump to itself that the verifier lets through.
        let spin = [Insn::new(MOV64_IMM, 0, 0, 0, 0), Insn::new(JNE_IMM, 10, 0, -1, 0), EXIT_INSN];
        let error = both(&spin, &config, &[]).unwrap_err();
        assert_eq!((error.pc, error.kind), (1, ExecErrorKind::BudgetExhausted(10)));
        let recurse = [Insn::new(CALL, 0, CALL_LOCAL, 0, -1), EXIT_INSN];
        let error = both(&recurse, &Config::default(), &[]).unwrap_err();
        assert_eq!((error.pc, error.kind), (0, ExecErrorKind::CallDepthExceeded(MAX_CALL_DEPTH)));
    }
}
