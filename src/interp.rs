//! The interpreter: the reference semantics of qemu-ubpf. The JIT must agree
//! with it bit for bit (return value, memory effects, errors).
//!
//! On entry r1 holds the input's address (0 when there is no input), r2 its
//! length, r10 the top of a 512-byte frame. Every load, store and atomic is
//! checked against the input, the live stack frames and the program's
//! regions; anything else stops the run with an [`ExecError`].
//!
//! The instruction budget: a run counts the instructions it executes (an
//! `lddw` is one). Where control can go backward (a jump with a negative
//! offset, taken or not) and at every call, the count including that
//! instruction is compared with the limit; past it the run stops with
//! `BudgetExhausted` at that instruction. Code between two such points is
//! straight and at most 65536 instructions long, so no run exceeds
//! limit + 65536 instructions. The JIT counts the same way, so both stop at
//! the same instruction.
//!
//! Tail calls: `bpf_tail_call` ends the run of the caller (as if it exited)
//! and the target runs over the same input from a fresh frame, with a
//! budget of its own; the count of instructions covers the whole chain,
//! which has at most 1 + `MAX_TAIL_CALLS` programs.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{ExecError, ExecErrorKind};
use crate::helpers::builtin::RunState;
use crate::image::ProgramType;
use crate::isa::*;
use crate::memory::{self, Memory, STACK_SIZE};
use crate::program::Program;

/// Unused bytes kept above the stack's top, so that an address a little
/// past the top never belongs to another allocation (a program's global
/// data, say): such an access is refused the same way whatever the heap
/// layout, which keeps runs of two loaded copies of a program comparable.
const STACK_GUARD: usize = 4096;

/// Memory for the call frames of a run. Reused between runs on a thread
/// without clearing: like the kernel's, a program must write its stack
/// before it reads it, or it sees an earlier run's bytes.
pub struct Stack {
    words: Box<[u64]>,
    /// Where local calls save the caller's state; kept here rather than
    /// set up per run, which would cost more than a short filter's run.
    frames: [Frame; MAX_CALL_DEPTH],
}

impl Default for Stack {
    fn default() -> Stack {
        Stack {
            words: vec![0; (STACK_SIZE + STACK_GUARD) / 8].into_boxed_slice(),
            frames: [Frame::default(); MAX_CALL_DEPTH],
        }
    }
}

impl Stack {
    /// Fills every frame with `byte`: runs compared with each other then
    /// start from the same stack, whatever earlier runs left there.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn fill(&mut self, byte: u8) {
        self.words.fill(u64::from_ne_bytes([byte; 8]));
    }

    /// The address just past the stack: r10 of the entry frame.
    pub fn top(&mut self) -> u64 {
        self.words.as_mut_ptr() as u64 + STACK_SIZE as u64
    }
}

thread_local! {
    /// This thread's stack while no run holds it. A run takes it out and puts
    /// it back, so the run's result goes straight to the caller rather than
    /// being copied out of a `LocalKey::with` closure.
    static THREAD_STACK: Cell<Option<Box<Stack>>> = const { Cell::new(None) };
}

impl Program {
    /// Runs the program in the interpreter over `mem` (r1 = its address, or
    /// 0 when empty; r2 = its length) and returns r0.
    pub fn execute(&self, mem: &mut [u8]) -> Result<u64, ExecError> {
        execute(self, mem)
    }
}

/// Runs `program` over `mem` on this thread's stack.
pub fn execute(program: &Program, mem: &mut [u8]) -> Result<u64, ExecError> {
    // Not through `execute_counted`: without its tuple the result is
    // written once, in the caller's slot, rather than copied at each level.
    with_thread_stack(|stack| run(program, mem, stack, &mut 0))
}

/// Runs `program` over `mem` and also returns how many instructions ran.
pub fn execute_counted(program: &Program, mem: &mut [u8]) -> (Result<u64, ExecError>, u64) {
    let mut executed = 0;
    let result = with_thread_stack(|stack| run(program, mem, stack, &mut executed));
    (result, executed)
}

/// Lends this thread's stack to `f`; the interpreter and the JIT share it,
/// so both see the same frame addresses.
#[inline]
pub fn with_thread_stack<R>(f: impl FnOnce(&mut Stack) -> R) -> R {
    // None on a thread's first run, or when a helper re-entered the engine
    // while the outer run holds the stack: then a stack of its own. The
    // guard puts the stack back after `f`, which writes its result straight
    // into the caller's.
    let mut lent = LentStack(THREAD_STACK.take());
    f(lent.0.get_or_insert_with(new_stack))
}

/// The thread's stack while a run holds it; dropping it puts it back.
struct LentStack(Option<Box<Stack>>);

impl Drop for LentStack {
    #[inline]
    fn drop(&mut self) {
        // Something is there only when a helper's run put its own stack back.
        if let Some(displaced) = THREAD_STACK.replace(self.0.take()) {
            free_stack(displaced);
        }
    }
}

// Allocating and freeing stacks happens once per thread, or when a helper
// re-enters the engine: out of line, so that lending stays a few
// instructions in every caller (a `Stack` built in place would also give
// each caller a frame of its size).
#[cold]
#[inline(never)]
fn new_stack() -> Box<Stack> {
    Box::default()
}

#[cold]
#[inline(never)]
fn free_stack(stack: Box<Stack>) {
    drop(stack);
}

#[derive(Clone, Copy, Default)]
struct Frame {
    return_pc: usize,
    saved: [u64; 4],
    frame_pointer: u64,
}

#[cold]
fn stop(insns: &[Insn], pc: usize, kind: ExecErrorKind) -> ExecError {
    ExecError { pc, insn: insns[pc], kind }
}

/// Applies the atomic operation `op` (an `ATOMIC_*` imm) to the value at
/// `addr`, returning the old value. Aligned values get real atomics, as other
/// threads may share the memory; unaligned ones a plain read-modify-write.
macro_rules! atomic_rmw {
    ($name:ident, $ty:ty, $atomic:ty) => {
        fn $name(addr: u64, op: i32, operand: $ty, expected: $ty) -> $ty {
            let ptr = addr as *mut $ty;
            if addr % std::mem::size_of::<$ty>() as u64 == 0 {
                // SAFETY: the caller checked that the bytes lie in memory the
                // program may write, and the address is aligned.
                let cell = unsafe { <$atomic>::from_ptr(ptr) };
                match op & !ATOMIC_FETCH {
                    ATOMIC_ADD => cell.fetch_add(operand, Ordering::SeqCst),
                    ATOMIC_OR => cell.fetch_or(operand, Ordering::SeqCst),
                    ATOMIC_AND => cell.fetch_and(operand, Ordering::SeqCst),
                    ATOMIC_XOR => cell.fetch_xor(operand, Ordering::SeqCst),
                    0xe0 => cell.swap(operand, Ordering::SeqCst),
                    _ => cell
                        .compare_exchange(expected, operand, Ordering::SeqCst, Ordering::SeqCst)
                        .unwrap_or_else(|old| old),
                }
            } else {
                // SAFETY: the caller checked the bytes; unaligned access is allowed.
                let old = unsafe { ptr.read_unaligned() };
                let new = match op & !ATOMIC_FETCH {
                    ATOMIC_ADD => old.wrapping_add(operand),
                    ATOMIC_OR => old | operand,
                    ATOMIC_AND => old & operand,
                    ATOMIC_XOR => old ^ operand,
                    0xe0 => operand,
                    _ if old == expected => operand,
                    _ => old,
                };
                // SAFETY: as above.
                unsafe { ptr.write_unaligned(new) };
                old
            }
        }
    };
}
atomic_rmw!(atomic_rmw32, u32, AtomicU32);
atomic_rmw!(atomic_rmw64, u64, AtomicU64);

/// Runs `program` with `stack` as its call frames, adding the instructions
/// executed to `executed`. A program that may call built-in helpers gets a
/// [`RunState`] for them, and its tail calls are followed here: the target
/// runs over the same input, from a fresh stack frame.
#[inline]
pub fn run(program: &Program, mem: &mut [u8], stack: &mut Stack, executed_out: &mut u64) -> Result<u64, ExecError> {
    if program.has_stopping_helpers() {
        run_chain(program, mem, stack, executed_out)
    } else {
        run_one(program, mem, stack, executed_out, None)
    }
}

/// [`run`] for a program whose helpers may stop it or tail-call; kept out of
/// line so that the plain case stays a direct call to `run_one`.
#[inline(never)]
fn run_chain(program: &Program, mem: &mut [u8], stack: &mut Stack, executed_out: &mut u64) -> Result<u64, ExecError> {
    let input_start = if mem.is_empty() { 0 } else { mem.as_mut_ptr() as u64 };
    let state = RunState::new(program, input_start, mem.len() as u64, stack.top());
    let watched = Watched { state: &state, stop: &Cell::new(0), frame_pointer: &Cell::new(stack.top()) };
    state.watch(watched.stop.as_ptr(), watched.frame_pointer.as_ptr());
    let _published = state.publish();
    let mut result = run_one(program, mem, stack, executed_out, Some(watched));
    while let (Ok(_), Some(target)) = (&result, state.take_tail_call()) {
        watched.stop.set(0);
        result = run_one(&target, mem, stack, executed_out, Some(watched));
    }
    result
}

/// A run's state for the built-in helpers, and the words it shares with
/// them.
#[derive(Clone, Copy)]
struct Watched<'a> {
    state: &'a RunState,
    /// Set by a helper that stops the run.
    stop: &'a Cell<u64>,
    /// r10 of the frame that calls a helper, written before each call.
    frame_pointer: &'a Cell<u64>,
}

/// Runs one program of a tail-call chain; with a run state, a helper that
/// sets its stop word ends the run (with r0 = 0 for a tail call).
fn run_one(
    program: &Program,
    mem: &mut [u8],
    stack: &mut Stack,
    executed_out: &mut u64,
    watched: Option<Watched>,
) -> Result<u64, ExecError> {
    let insns = program.insns();
    let slots = program.slots();
    if program.program_type() == ProgramType::Xdp
        && let Some(kind) = memory::context_fault(mem, program.packet_pointers())
    {
        return Err(stop(insns, 0, kind));
    }
    let buffer = if mem.is_empty() { 0 } else { mem.as_mut_ptr() as u64 };
    let (input_start, input_len) = memory::accessible_input(program.program_type(), buffer, mem.len() as u64);
    let memory = Memory { input_start, input_len, stack_top: stack.top(), regions: program.regions() };
    // Sixteen slots so that a 4-bit register field indexes without a check;
    // the verifier keeps them to r0..r10.
    let mut reg = [0u64; 16];
    reg[1] = buffer;
    reg[2] = mem.len() as u64;
    reg[10] = memory.stack_top;
    let mut stack_low = memory.stack_top - STACK_FRAME_SIZE as u64;
    let frames = &mut stack.frames;
    let mut depth = 0;
    let limit = program.instruction_limit();
    let mut executed: u64 = 0;
    let mut pc = 0;

    let result = loop {
        let at = pc;
        // SAFETY: the verifier proved that control stays in the program:
        // jumps and local calls land on an instruction (never an lddw's
        // second slot), each function ends in `exit` or `ja`, so no
        // instruction falls through past the end, and a local call returns
        // to the instruction after it, which exists for the same reason.
        let slot = *unsafe { slots.get_unchecked(at) };
        executed += 1;
        pc += 1;
        macro_rules! fail {
            ($kind:expr) => {
                break Err(stop(insns, at, $kind))
            };
        }
        macro_rules! check {
            ($addr:expr, $size:expr, $write:expr) => {
                if !memory.allows($addr, $size, $write, stack_low) {
                    fail!(memory.fault($addr, $size, $write));
                }
            };
        }
        macro_rules! load {
            ($ty:ty) => {{
                let addr = reg[slot.src()].wrapping_add(slot.off() as i64 as u64);
                check!(addr, std::mem::size_of::<$ty>() as u64, false);
                // SAFETY: `allows` proved the bytes lie in readable memory.
                unsafe { (addr as *const $ty).read_unaligned() }
            }};
        }
        // A load of the XDP context block (`imm` CONTEXT_LOAD), through
        // its address and nothing else.
        macro_rules! context_load {
            ($ty:ty) => {{
                let addr = reg[slot.src()].wrapping_add(slot.off() as i64 as u64);
                if reg[slot.src()] != buffer {
                    fail!(memory.fault(addr, std::mem::size_of::<$ty>() as u64, false));
                }
                // SAFETY: the base is the block's address, and the rewrite
                // that made this load keeps it within the block, which the
                // buffer holds (`context_fault` checked on entry).
                unsafe { (addr as *const $ty).read_unaligned() }
            }};
        }
        macro_rules! store {
            ($ty:ty, $value:expr) => {{
                let addr = reg[slot.dst()].wrapping_add(slot.off() as i64 as u64);
                check!(addr, std::mem::size_of::<$ty>() as u64, true);
                // SAFETY: `allows` proved the bytes lie in writable memory.
                unsafe { (addr as *mut $ty).write_unaligned($value as $ty) }
            }};
        }
        // A legacy packet load: big-endian from the input at `offset` (an
        // i32); outside the input, the run ends at once with 0, as in Linux.
        macro_rules! packet_load {
            ($ty:ty, $offset:expr) => {{
                let offset = $offset as i64 as u64;
                let size = std::mem::size_of::<$ty>() as u64;
                if offset > memory.input_len || memory.input_len - offset < size {
                    break Ok(0);
                }
                // SAFETY: the bytes lie in the input, checked just above.
                let value = unsafe { ((memory.input_start + offset) as *const $ty).read_unaligned() };
                reg[0] = <$ty>::from_be(value) as u64;
            }};
        }
        macro_rules! check_budget {
            () => {
                if executed > limit {
                    fail!(ExecErrorKind::BudgetExhausted(limit));
                }
            };
        }
        macro_rules! jump_if {
            ($cond:expr) => {{
                if slot.off() < 0 {
                    check_budget!();
                }
                if $cond {
                    pc = (pc as i64 + slot.off() as i64) as usize;
                }
            }};
        }
        // Operands as the forms read them, computed only in the arms that
        // use them so the dispatch carries no dead loads.
        macro_rules! d32 {
            () => {
                reg[slot.dst()] as u32
            };
        }
        macro_rules! s32 {
            () => {
                reg[slot.src()] as u32
            };
        }
        macro_rules! k32 {
            () => {
                slot.imm() as u32
            };
        }
        macro_rules! d64 {
            () => {
                reg[slot.dst()]
            };
        }
        macro_rules! s64 {
            () => {
                reg[slot.src()]
            };
        }
        macro_rules! k64 {
            () => {
                slot.imm() as i64 as u64
            };
        }

        #[rustfmt::skip]
        match slot.opc() {
            ADD32_IMM  => reg[slot.dst()] = d32!().wrapping_add(k32!()) as u64,
            ADD32_REG  => reg[slot.dst()] = d32!().wrapping_add(s32!()) as u64,
            SUB32_IMM  => reg[slot.dst()] = d32!().wrapping_sub(k32!()) as u64,
            SUB32_REG  => reg[slot.dst()] = d32!().wrapping_sub(s32!()) as u64,
            MUL32_IMM  => reg[slot.dst()] = d32!().wrapping_mul(k32!()) as u64,
            MUL32_REG  => reg[slot.dst()] = d32!().wrapping_mul(s32!()) as u64,
            DIV32_IMM  => reg[slot.dst()] = div32(d32!(), k32!(), slot.off()) as u64,
            DIV32_REG  => reg[slot.dst()] = div32(d32!(), s32!(), slot.off()) as u64,
            OR32_IMM   => reg[slot.dst()] = (d32!() | k32!()) as u64,
            OR32_REG   => reg[slot.dst()] = (d32!() | s32!()) as u64,
            AND32_IMM  => reg[slot.dst()] = (d32!() & k32!()) as u64,
            AND32_REG  => reg[slot.dst()] = (d32!() & s32!()) as u64,
            LSH32_IMM  => reg[slot.dst()] = d32!().wrapping_shl(k32!()) as u64,
            LSH32_REG  => reg[slot.dst()] = d32!().wrapping_shl(s32!()) as u64,
            RSH32_IMM  => reg[slot.dst()] = d32!().wrapping_shr(k32!()) as u64,
            RSH32_REG  => reg[slot.dst()] = d32!().wrapping_shr(s32!()) as u64,
            NEG32      => reg[slot.dst()] = d32!().wrapping_neg() as u64,
            MOD32_IMM  => reg[slot.dst()] = mod32(d32!(), k32!(), slot.off()) as u64,
            MOD32_REG  => reg[slot.dst()] = mod32(d32!(), s32!(), slot.off()) as u64,
            XOR32_IMM  => reg[slot.dst()] = (d32!() ^ k32!()) as u64,
            XOR32_REG  => reg[slot.dst()] = (d32!() ^ s32!()) as u64,
            MOV32_IMM  => reg[slot.dst()] = k32!() as u64,
            MOV32_REG  => reg[slot.dst()] = movsx32(s32!(), slot.off()) as u64,
            ARSH32_IMM => reg[slot.dst()] = (d32!() as i32).wrapping_shr(k32!()) as u32 as u64,
            ARSH32_REG => reg[slot.dst()] = (d32!() as i32).wrapping_shr(s32!()) as u32 as u64,
            LE         => reg[slot.dst()] = to_le(d64!(), slot.imm()),
            BE         => reg[slot.dst()] = to_be(d64!(), slot.imm()),

            ADD64_IMM  => reg[slot.dst()] = d64!().wrapping_add(k64!()),
            ADD64_REG  => reg[slot.dst()] = d64!().wrapping_add(s64!()),
            SUB64_IMM  => reg[slot.dst()] = d64!().wrapping_sub(k64!()),
            SUB64_REG  => reg[slot.dst()] = d64!().wrapping_sub(s64!()),
            MUL64_IMM  => reg[slot.dst()] = d64!().wrapping_mul(k64!()),
            MUL64_REG  => reg[slot.dst()] = d64!().wrapping_mul(s64!()),
            DIV64_IMM  => reg[slot.dst()] = div64(d64!(), k64!(), slot.off()),
            DIV64_REG  => reg[slot.dst()] = div64(d64!(), s64!(), slot.off()),
            OR64_IMM   => reg[slot.dst()] = d64!() | k64!(),
            OR64_REG   => reg[slot.dst()] = d64!() | s64!(),
            AND64_IMM  => reg[slot.dst()] = d64!() & k64!(),
            AND64_REG  => reg[slot.dst()] = d64!() & s64!(),
            LSH64_IMM  => reg[slot.dst()] = d64!().wrapping_shl(k32!()),
            LSH64_REG  => reg[slot.dst()] = d64!().wrapping_shl(s32!()),
            RSH64_IMM  => reg[slot.dst()] = d64!().wrapping_shr(k32!()),
            RSH64_REG  => reg[slot.dst()] = d64!().wrapping_shr(s32!()),
            NEG64      => reg[slot.dst()] = d64!().wrapping_neg(),
            MOD64_IMM  => reg[slot.dst()] = mod64(d64!(), k64!(), slot.off()),
            MOD64_REG  => reg[slot.dst()] = mod64(d64!(), s64!(), slot.off()),
            XOR64_IMM  => reg[slot.dst()] = d64!() ^ k64!(),
            XOR64_REG  => reg[slot.dst()] = d64!() ^ s64!(),
            MOV64_IMM  => reg[slot.dst()] = k64!(),
            MOV64_REG  => reg[slot.dst()] = movsx64(s64!(), slot.off()),
            ARSH64_IMM => reg[slot.dst()] = (d64!() as i64).wrapping_shr(k32!()) as u64,
            ARSH64_REG => reg[slot.dst()] = (d64!() as i64).wrapping_shr(s32!()) as u64,
            BSWAP      => reg[slot.dst()] = bswap(d64!(), slot.imm()),

            LDDW => {
                reg[slot.dst()] = k32!() as u64 | (slots[pc].imm() as u32 as u64) << 32;
                pc += 1;
            }

            LDABSW => packet_load!(u32, slot.imm()),
            LDABSH => packet_load!(u16, slot.imm()),
            LDABSB => packet_load!(u8, slot.imm()),
            LDINDW => packet_load!(u32, s32!().wrapping_add(k32!()) as i32),
            LDINDH => packet_load!(u16, s32!().wrapping_add(k32!()) as i32),
            LDINDB => packet_load!(u8, s32!().wrapping_add(k32!()) as i32),

            LDXW if slot.imm() != 0 => reg[slot.dst()] = context_load!(u32) as u64,
            LDXW  => reg[slot.dst()] = load!(u32) as u64,
            LDXH  => reg[slot.dst()] = load!(u16) as u64,
            LDXB  => reg[slot.dst()] = load!(u8) as u64,
            LDXDW if slot.imm() != 0 => reg[slot.dst()] = context_load!(u64),
            LDXDW => reg[slot.dst()] = load!(u64),
            LDXSW => reg[slot.dst()] = load!(i32) as i64 as u64,
            LDXSH => reg[slot.dst()] = load!(i16) as i64 as u64,
            LDXSB => reg[slot.dst()] = load!(i8) as i64 as u64,
            STW   => store!(u32, k32!()),
            STH   => store!(u16, k32!()),
            STB   => store!(u8, k32!()),
            STDW  => store!(u64, k64!()),
            STXW  => store!(u32, s64!()),
            STXH  => store!(u16, s64!()),
            STXB  => store!(u8, s64!()),
            STXDW => store!(u64, s64!()),
            ATOMIC32 => {
                let addr = d64!().wrapping_add(slot.off() as i64 as u64);
                check!(addr, 4, true);
                let old = atomic_rmw32(addr, slot.imm(), s32!(), reg[0] as u32) as u64;
                match slot.imm() {
                    ATOMIC_CMPXCHG => reg[0] = old,
                    _ if slot.imm() & ATOMIC_FETCH != 0 => reg[slot.src()] = old,
                    _ => {}
                }
            }
            ATOMIC64 => {
                let addr = d64!().wrapping_add(slot.off() as i64 as u64);
                check!(addr, 8, true);
                let old = atomic_rmw64(addr, slot.imm(), s64!(), reg[0]);
                match slot.imm() {
                    ATOMIC_CMPXCHG => reg[0] = old,
                    _ if slot.imm() & ATOMIC_FETCH != 0 => reg[slot.src()] = old,
                    _ => {}
                }
            }

            JA         => jump_if!(true),
            JEQ_IMM    => jump_if!(d64!() == k64!()),
            JEQ_REG    => jump_if!(d64!() == s64!()),
            JGT_IMM    => jump_if!(d64!() > k64!()),
            JGT_REG    => jump_if!(d64!() > s64!()),
            JGE_IMM    => jump_if!(d64!() >= k64!()),
            JGE_REG    => jump_if!(d64!() >= s64!()),
            JSET_IMM   => jump_if!(d64!() & k64!() != 0),
            JSET_REG   => jump_if!(d64!() & s64!() != 0),
            JNE_IMM    => jump_if!(d64!() != k64!()),
            JNE_REG    => jump_if!(d64!() != s64!()),
            JSGT_IMM   => jump_if!((d64!() as i64) > k64!() as i64),
            JSGT_REG   => jump_if!((d64!() as i64) > s64!() as i64),
            JSGE_IMM   => jump_if!((d64!() as i64) >= k64!() as i64),
            JSGE_REG   => jump_if!((d64!() as i64) >= s64!() as i64),
            JLT_IMM    => jump_if!(d64!() < k64!()),
            JLT_REG    => jump_if!(d64!() < s64!()),
            JLE_IMM    => jump_if!(d64!() <= k64!()),
            JLE_REG    => jump_if!(d64!() <= s64!()),
            JSLT_IMM   => jump_if!((d64!() as i64) < k64!() as i64),
            JSLT_REG   => jump_if!((d64!() as i64) < s64!() as i64),
            JSLE_IMM   => jump_if!((d64!() as i64) <= k64!() as i64),
            JSLE_REG   => jump_if!((d64!() as i64) <= s64!() as i64),

            JA32       => {
                if slot.imm() < 0 {
                    check_budget!();
                }
                pc = (pc as i64 + slot.imm() as i64) as usize;
            }
            JEQ32_IMM  => jump_if!(d32!() == k32!()),
            JEQ32_REG  => jump_if!(d32!() == s32!()),
            JGT32_IMM  => jump_if!(d32!() > k32!()),
            JGT32_REG  => jump_if!(d32!() > s32!()),
            JGE32_IMM  => jump_if!(d32!() >= k32!()),
            JGE32_REG  => jump_if!(d32!() >= s32!()),
            JSET32_IMM => jump_if!(d32!() & k32!() != 0),
            JSET32_REG => jump_if!(d32!() & s32!() != 0),
            JNE32_IMM  => jump_if!(d32!() != k32!()),
            JNE32_REG  => jump_if!(d32!() != s32!()),
            JSGT32_IMM => jump_if!((d32!() as i32) > k32!() as i32),
            JSGT32_REG => jump_if!((d32!() as i32) > s32!() as i32),
            JSGE32_IMM => jump_if!((d32!() as i32) >= k32!() as i32),
            JSGE32_REG => jump_if!((d32!() as i32) >= s32!() as i32),
            JLT32_IMM  => jump_if!(d32!() < k32!()),
            JLT32_REG  => jump_if!(d32!() < s32!()),
            JLE32_IMM  => jump_if!(d32!() <= k32!()),
            JLE32_REG  => jump_if!(d32!() <= s32!()),
            JSLT32_IMM => jump_if!((d32!() as i32) < k32!() as i32),
            JSLT32_REG => jump_if!((d32!() as i32) < s32!() as i32),
            JSLE32_IMM => jump_if!((d32!() as i32) <= k32!() as i32),
            JSLE32_REG => jump_if!((d32!() as i32) <= s32!() as i32),

            CALL if slot.src() == CALL_LOCAL as usize => {
                check_budget!();
                if depth + 1 == MAX_CALL_DEPTH {
                    fail!(ExecErrorKind::CallDepthExceeded(MAX_CALL_DEPTH));
                }
                frames[depth] = Frame { return_pc: pc, saved: [reg[6], reg[7], reg[8], reg[9]], frame_pointer: reg[10] };
                depth += 1;
                reg[10] -= STACK_FRAME_SIZE as u64;
                stack_low -= STACK_FRAME_SIZE as u64;
                pc = (pc as i64 + slot.imm() as i64) as usize;
            }
            CALL | CALLX => {
                check_budget!();
                let index = if slot.opc() == CALL { k32!() as u64 } else { d64!() };
                let Some(helper) = program.helper(index) else {
                    fail!(ExecErrorKind::UnknownHelper(index));
                };
                if let Some(watched) = watched {
                    watched.frame_pointer.set(reg[10]);
                }
                reg[0] = helper(reg[1], reg[2], reg[3], reg[4], reg[5]);
                if let Some(watched) = watched.filter(|watched| watched.stop.get() != 0) {
                    match watched.state.take_fault() {
                        Some(kind) => fail!(kind),
                        None => break Ok(0),
                    }
                }
                if reg[0] == 0 && program.unwind_helper().is_some_and(|unwind| unwind as u64 == index) {
                    break Ok(0);
                }
            }
            EXIT => {
                if depth == 0 {
                    break Ok(reg[0]);
                }
                depth -= 1;
                let frame = frames[depth];
                [reg[6], reg[7], reg[8], reg[9]] = frame.saved;
                reg[10] = frame.frame_pointer;
                stack_low += STACK_FRAME_SIZE as u64;
                pc = frame.return_pc;
            }
            // SAFETY: the verifier accepts only the opcodes of `isa::FORMS`,
            // each of which has an arm above (tests/interp.rs runs every
            // form, and debug builds check this hint); the second slot of an
            // lddw, opcode 0, is skipped by its first and no jump lands on
            // it. Saying so lets the dispatch use its jump table without a
            // range check.
            _ => unsafe { std::hint::unreachable_unchecked() },
        };
    };
    *executed_out += executed;
    result
}

/// `div32`/`sdiv32`: 0 for a zero divisor, INT_MIN / -1 = INT_MIN.
#[inline(always)]
fn div32(dividend: u32, divisor: u32, signed: i16) -> u32 {
    match (divisor, signed) {
        (0, _) => 0,
        (_, 0) => dividend / divisor,
        _ => (dividend as i32).wrapping_div(divisor as i32) as u32,
    }
}

/// `div`/`sdiv`: 0 for a zero divisor, INT_MIN / -1 = INT_MIN.
#[inline(always)]
fn div64(dividend: u64, divisor: u64, signed: i16) -> u64 {
    match (divisor, signed) {
        (0, _) => 0,
        (_, 0) => dividend / divisor,
        _ => (dividend as i64).wrapping_div(divisor as i64) as u64,
    }
}

/// `mod32`/`smod32`: the (truncated) dividend for a zero divisor; the sign
/// of a signed result follows the dividend.
#[inline(always)]
fn mod32(dividend: u32, divisor: u32, signed: i16) -> u32 {
    match (divisor, signed) {
        (0, _) => dividend,
        (_, 0) => dividend % divisor,
        _ => (dividend as i32).wrapping_rem(divisor as i32) as u32,
    }
}

#[inline(always)]
fn mod64(dividend: u64, divisor: u64, signed: i16) -> u64 {
    match (divisor, signed) {
        (0, _) => dividend,
        (_, 0) => dividend % divisor,
        _ => (dividend as i64).wrapping_rem(divisor as i64) as u64,
    }
}

/// `mov32` (offset 0) or `movsx832`/`movsx1632`.
#[inline(always)]
fn movsx32(value: u32, bits: i16) -> u32 {
    match bits {
        8 => value as i8 as i32 as u32,
        16 => value as i16 as i32 as u32,
        _ => value,
    }
}

/// `mov` (offset 0) or `movsx864`/`movsx1664`/`movsx3264`.
#[inline(always)]
fn movsx64(value: u64, bits: i16) -> u64 {
    match bits {
        8 => value as i8 as i64 as u64,
        16 => value as i16 as i64 as u64,
        32 => value as i32 as i64 as u64,
        _ => value,
    }
}

/// `le16/32/64`: to little endian, keeping only the low `width` bits.
#[inline(always)]
fn to_le(value: u64, width: i32) -> u64 {
    match width {
        16 => (value as u16).to_le() as u64,
        32 => (value as u32).to_le() as u64,
        _ => value.to_le(),
    }
}

/// `be16/32/64`: to big endian, keeping only the low `width` bits.
#[inline(always)]
fn to_be(value: u64, width: i32) -> u64 {
    match width {
        16 => (value as u16).to_be() as u64,
        32 => (value as u32).to_be() as u64,
        _ => value.to_be(),
    }
}

/// `bswap16/32/64`: unconditional byte swap of the low `width` bits.
#[inline(always)]
fn bswap(value: u64, width: i32) -> u64 {
    match width {
        16 => (value as u16).swap_bytes() as u64,
        32 => (value as u32).swap_bytes() as u64,
        _ => value.swap_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Helpers, asm};

    fn load(source: &str, helpers: &Helpers) -> Program {
        let code = encode_program(&asm::assemble(source).expect("assembles"));
        Program::load(&code, helpers, &Config::default()).expect("verifies")
    }

    /// Writes its own frame and returns its r10.
    const INNER: &str = "stdw [%r10-8], 0x5678\nmov %r0, %r10\nexit";

    thread_local! {
        static INNER_PROGRAM: Program = load(INNER, &Helpers::new());
    }

    /// Runs `INNER` from inside a helper, as an embedder's helper may.
    extern "C" fn run_inner(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        INNER_PROGRAM.with(|program| execute(program, &mut []).unwrap_or(u64::MAX))
    }

    #[test]
    fn a_helper_that_reenters_gets_a_stack_of_its_own() {
        let mut helpers = Helpers::new();
        helpers.register(0, "run_inner", run_inner);
        // 0 when the inner run had another frame and left this one alone.
        let outer = load(
            "mov %r6, 0x1234\n stxdw [%r10-8], %r6\n call 0\n mov %r7, %r10\n jeq %r0, %r7, bad\n \
             ldxdw %r1, [%r10-8]\n jne %r1, %r6, bad\n mov %r0, 0\n exit\n bad:\n mov %r0, 1\n exit",
            &helpers,
        );
        let frame = load("mov %r0, %r10\nexit", &Helpers::new());
        let before = execute(&frame, &mut []).unwrap();
        assert_eq!(execute(&outer, &mut []).unwrap(), 0);
        assert_eq!(execute(&frame, &mut []).unwrap(), before, "the thread's stack is back for the next run");
    }
}
