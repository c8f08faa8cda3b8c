//! The JIT against the interpreter: every bpf_conformance vector, then
//! hand-written programs for each way a run can stop, comparing the two
//! engines' results (errors included, field for field), memory and
//! instruction counts.

use std::path::Path;

use std::sync::Arc;

use qemu_ubpf::interp::{self, Stack};
use qemu_ubpf::isa::{self, Insn, MAX_CALL_DEPTH};
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::testing::conformance::{self, Vector};
use qemu_ubpf::{Config, ExecError, ExecErrorKind, Helpers, Program, Region, asm};

/// What one engine's run produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    result: Result<u64, ExecError>,
    mem: Vec<u8>,
    executed: u64,
}

/// Runs `program` in the JIT and in the interpreter over `mem`, with the
/// same input buffer (restored in between) and the same stack, so that
/// addresses agree too. Returns (JIT, interpreter).
fn run_both(program: &Arc<Program>, mem: &[u8]) -> (Outcome, Outcome) {
    let jit = JitProgram::compile(program.clone()).expect("a verified program compiles");
    let mut buffer = mem.to_vec();
    let mut stack = Stack::default();
    let mut executed = 0;
    let result = interp::run(program, &mut buffer, &mut stack, &mut executed);
    let interpreted = Outcome { result, mem: buffer.clone(), executed };
    buffer.copy_from_slice(mem);
    let mut executed = 0;
    let result = jit.run(&mut buffer, &mut stack, &mut executed);
    let compiled = Outcome { result, mem: buffer.clone(), executed };
    (compiled, interpreted)
}

fn load(source: &str, helpers: &Helpers, config: &Config) -> Arc<Program> {
    let insns = asm::assemble(source).unwrap_or_else(|e| panic!("{e}\n{source}"));
    Arc::new(Program::load(&isa::encode_program(&insns), helpers, config).unwrap_or_else(|e| panic!("{e}\n{source}")))
}

/// Assembles `source` with the conformance helpers, runs it in both
/// engines, asserts they agree, and returns the result.
fn agree_with(source: &str, config: &Config, mem: &[u8]) -> Result<u64, ExecError> {
    let program = load(source, &conformance::helpers(), config);
    let (jit, interpreter) = run_both(&program, mem);
    assert_eq!(jit, interpreter, "\n{source}");
    jit.result
}

fn agree(source: &str, mem: &[u8]) -> Result<u64, ExecError> {
    agree_with(source, &Config::default(), mem)
}

fn kind(result: Result<u64, ExecError>) -> (usize, ExecErrorKind) {
    let error = result.expect_err("the run must fail");
    (error.pc, error.kind)
}

fn vectors() -> Vec<(String, Vector)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    conformance::read_vectors(&dir).expect("tests/conformance is vendored and parses")
}

/// Runs one vector through the JIT; `Err` says how it failed.
fn check(vector: &Vector) -> Result<(), String> {
    let insns = asm::assemble(&vector.asm).map_err(|e| format!("assembly: {e}"))?;
    let program = match Program::load(&isa::encode_program(&insns), &conformance::helpers(), &Config::default()) {
        Ok(program) => Arc::new(program),
        Err(_) if vector.error.is_some() => return Ok(()),
        Err(e) => return Err(format!("load: {e}")),
    };
    let (jit, interpreter) = run_both(&program, &vector.mem);
    if jit != interpreter {
        return Err(format!("JIT {jit:?}\n  interpreter {interpreter:?}"));
    }
    match (jit.result, vector.result, &vector.error) {
        (Ok(r0), Some(expected), _) if r0 == expected => Ok(()),
        (Ok(r0), expected, _) => Err(format!("r0 = {r0:#x}, expected {expected:x?}")),
        (Err(_), _, Some(_)) => Ok(()),
        (Err(e), _, None) => Err(format!("error {e}")),
    }
}

#[test]
fn conformance_jit() {
    let vectors = vectors();
    let failures: Vec<String> =
        vectors.iter().filter_map(|(name, vector)| check(vector).err().map(|why| format!("{name}: {why}"))).collect();
    for failure in &failures {
        eprintln!("FAIL {failure}");
    }
    println!("conformance (jit): {} passed, {} failed", vectors.len() - failures.len(), failures.len());
    assert!(vectors.len() >= 313, "only {} vectors found", vectors.len());
    assert!(failures.is_empty());
}

#[test]
fn out_of_bounds_loads_and_stores() {
    let mem = [1, 2, 3, 4, 5, 6, 7, 8];
    // Past the end of the input, by one byte.
    let (pc, error) = kind(agree("mov %r0, 0\nldxw %r0, [%r1+5]\nexit", &mem));
    assert_eq!(pc, 1);
    assert!(matches!(error, ExecErrorKind::OutOfBounds { size: 4, write: false, .. }), "{error:?}");
    // Before its start.
    assert!(matches!(
        kind(agree("stb [%r1-1], 0\nexit", &mem)).1,
        ExecErrorKind::OutOfBounds { size: 1, write: true, .. }
    ));
    // No input at all: r1 is 0.
    assert_eq!(
        kind(agree("ldxb %r0, [%r1]\nexit", &[])),
        (0, ExecErrorKind::OutOfBounds { addr: 0, size: 1, write: false })
    );
    // The stack: above the entry frame, below it, straddling its bottom.
    for source in [
        "stxdw [%r10], %r1\nexit",
        "ldxdw %r0, [%r10-520]\nexit",
        "stw [%r10-514], 1\nexit",
        "ldxh %r0, [%r10+4096]\nexit",
    ] {
        assert!(matches!(kind(agree(source, &mem)).1, ExecErrorKind::OutOfBounds { .. }), "{source}");
    }
    // A computed address far away, through each access kind.
    for (op, addr) in [
        ("ldxdw %r0, [%r2]", 0x123456789),
        ("ldxsh %r0, [%r2+2]", 0x12345678b),
        ("stdw [%r2], 1", 0x123456789),
        ("stxh [%r2-2], %r1", 0x123456787),
        ("lock add [%r2], %r1", 0x123456789),
        ("lock fetch xor32 [%r2], %r1", 0x123456789),
    ] {
        let source = format!("lddw %r2, 0x123456789\n{op}\nexit");
        let (pc, error) = kind(agree(&source, &mem));
        assert_eq!(pc, 2);
        assert!(matches!(error, ExecErrorKind::OutOfBounds { addr: a, .. } if a == addr), "{op}: {error:?}");
    }
    // In bounds right up to the edge.
    assert_eq!(agree("ldxdw %r0, [%r1]\nexit", &mem), Ok(u64::from_le_bytes(mem)));
    assert_eq!(agree("stb [%r1+7], 9\nldxb %r0, [%r1+7]\nexit", &mem), Ok(9));
    let (pc, error) = kind(agree("ldxb %r0, [%r1+8]\nexit", &mem));
    assert_eq!(pc, 0);
    assert!(matches!(error, ExecErrorKind::OutOfBounds { size: 1, write: false, .. }));
}

#[test]
fn stack_frames_of_callers_stay_reachable() {
    // A callee reads its caller's frame above its own r10, and the entry
    // frame's bottom is out of reach again once the call returned.
    let source = "
        stdw [%r10-8], 42
        call local f
        ldxdw %r1, [%r10-520]
        exit
    f:
        ldxdw %r0, [%r10+504]
        exit";
    let (pc, error) = kind(agree(source, &[]));
    assert_eq!(pc, 2);
    assert!(matches!(error, ExecErrorKind::OutOfBounds { size: 8, write: false, .. }));
    let source = "stdw [%r10-8], 42\ncall local f\nexit\nf:\nldxdw %r0, [%r10+504]\nexit";
    assert_eq!(agree(source, &[]), Ok(42));
}

#[test]
fn read_only_region() {
    let data: &'static mut [u64; 4] = Box::leak(Box::new([7, 8, 9, 10]));
    let start = data.as_ptr() as u64;
    let config =
        Config { regions: vec![Region { start, len: 32, writable: false, ..Region::default() }], ..Config::default() };
    let read = format!("lddw %r1, {start:#x}\nldxdw %r0, [%r1+24]\nexit");
    assert_eq!(agree_with(&read, &config, &[]), Ok(10));
    for store in ["stw [%r1+4], 1", "stxdw [%r1+24], %r1", "lock add32 [%r1+8], %r1"] {
        let write = format!("lddw %r1, {start:#x}\n{store}\nexit");
        let (pc, error) = kind(agree_with(&write, &config, &[]));
        assert_eq!(pc, 2);
        assert!(matches!(error, ExecErrorKind::ReadOnly { .. }), "{store}: {error:?}");
    }
    // Past the region's end it is out of bounds, not read-only.
    let write = format!("lddw %r1, {start:#x}\nstw [%r1+30], 1\nexit");
    assert_eq!(
        kind(agree_with(&write, &config, &[])).1,
        ExecErrorKind::OutOfBounds { addr: start + 30, size: 4, write: true }
    );
    assert_eq!(data, &[7, 8, 9, 10]);

    // A writable region takes the store.
    let config =
        Config { regions: vec![Region { start, len: 32, writable: true, ..Region::default() }], ..Config::default() };
    let write = format!("lddw %r1, {start:#x}\nstdw [%r1+8], 99\nldxdw %r0, [%r1+8]\nexit");
    assert_eq!(agree_with(&write, &config, &[]), Ok(99));
    assert_eq!(data[1], 99);
}

#[test]
fn endless_loops_exhaust_the_budget_where_the_interpreter_does() {
    let config = Config { instruction_limit: 1000, ..Config::default() };
    // r10 is never 0, so this jumps to itself for ever (`ja -1` would be
    // refused at load: no way out).
    assert_eq!(kind(agree_with("jne %r10, 0, -1\nexit", &config, &[])), (0, ExecErrorKind::BudgetExhausted(1000)));
    let counting = "
        mov %r0, 0
    again:
        add %r0, 1
        lddw %r3, 0x100000000
        jne %r3, 0, again
        exit";
    assert_eq!(kind(agree_with(counting, &config, &[])), (4, ExecErrorKind::BudgetExhausted(1000)));
    let long = "mov %r0, 0\nback:\nja32 +0\nadd %r0, 1\njlt %r0, 500, back\nexit";
    assert_eq!(kind(agree_with(long, &config, &[])), (3, ExecErrorKind::BudgetExhausted(1000)));
    // A loop that ends just inside the budget, and the same just outside it.
    let exact = "mov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 333, loop\nexit";
    let just_enough = Config { instruction_limit: 1 + 2 * 333, ..Config::default() };
    assert_eq!(agree_with(exact, &just_enough, &[]), Ok(333));
    let just_short = Config { instruction_limit: 2 * 333, ..Config::default() };
    assert_eq!(kind(agree_with(exact, &just_short, &[])), (2, ExecErrorKind::BudgetExhausted(666)));
    // A limit beyond 32 bits is compared in full.
    let unlimited = Config { instruction_limit: u64::MAX, ..Config::default() };
    assert_eq!(agree_with(exact, &unlimited, &[]), Ok(333));
    let big = Config { instruction_limit: 1 << 32, ..Config::default() };
    assert_eq!(agree_with(exact, &big, &[]), Ok(333));
    // Calls are budget points too, helper calls and local calls.
    let calls = "loop:\ncall 2\ncall local f\njne %r10, 0, loop\nexit\nf:\nexit";
    assert_eq!(kind(agree_with(calls, &config, &[])).1, ExecErrorKind::BudgetExhausted(1000));
}

#[test]
fn recursion_past_the_depth_limit() {
    let source = "call local f\nexit\nf:\nadd %r0, 1\ncall local f\nexit";
    assert_eq!(kind(agree(source, &[])), (3, ExecErrorKind::CallDepthExceeded(MAX_CALL_DEPTH)));
    // The entry function calling itself: its exit returns or ends by depth.
    // At depth d (0 for the entry) r0 is d + 1; depth 15 is the deepest.
    let source = "start:\nadd %r0, 1\njge %r0, 16, done\ncall local start\ndone:\nexit";
    assert_eq!(agree(source, &[]), Ok(16));
    let source = "start:\nadd %r0, 1\njge %r0, 17, done\ncall local start\ndone:\nexit";
    assert_eq!(kind(agree(source, &[])), (2, ExecErrorKind::CallDepthExceeded(MAX_CALL_DEPTH)));
    // r6-r9 and r10 come back after a deep chain of calls.
    let source = "
        mov %r6, 6
        mov %r7, 7
        mov %r8, 8
        mov %r9, 9
        mov %r1, 14
        call local f
        mov %r0, %r6
        add %r0, %r7
        add %r0, %r8
        add %r0, %r9
        stxdw [%r10-8], %r0
        ldxdw %r0, [%r10-8]
        exit
    f:
        mov %r6, 0
        mov %r7, 0
        mov %r8, 0
        mov %r9, 0
        stxdw [%r10-512], %r1
        jeq %r1, 0, out
        sub %r1, 1
        call local f
    out:
        exit";
    assert_eq!(agree(source, &[]), Ok(30));
}

#[test]
fn division_by_zero() {
    let cases = [
        ("div32 %r0, 0", 0),
        ("div32 %r0, %r2", 0),
        ("div %r0, 0", 0),
        ("div %r0, %r2", 0),
        ("sdiv32 %r0, %r2", 0),
        ("sdiv %r0, 0", 0),
        ("mod32 %r0, 0", 0xffff_ffff),
        ("mod32 %r0, %r2", 0xffff_ffff),
        ("mod %r0, 0", u64::MAX),
        ("mod %r0, %r2", u64::MAX),
        ("smod32 %r0, %r2", 0xffff_ffff),
        ("smod %r0, %r2", u64::MAX),
    ];
    for (op, expected) in cases {
        let source = format!("mov %r0, -1\nmov %r2, 0\n{op}\nexit");
        assert_eq!(agree(&source, &[]), Ok(expected), "{op}");
        // Zero in the low half only: 32-bit forms divide by zero, 64-bit ones by 2^32.
        let source = format!("mov %r0, -1\nlddw %r2, 0x100000000\n{op}\nexit");
        agree(&source, &[]).unwrap();
    }
}

#[test]
fn int_min_by_minus_one() {
    let cases = [
        ("sdiv32 %r0, -1", 0x8000_0000),
        ("sdiv32 %r0, %r2", 0x8000_0000),
        ("smod32 %r0, -1", 0),
        ("smod32 %r0, %r2", 0),
        ("sdiv %r0, -1", 1 << 63),
        ("sdiv %r0, %r2", 1 << 63),
        ("smod %r0, -1", 0),
        ("smod %r0, %r2", 0),
        // Unsigned: -1 is a large divisor, not a special case.
        ("div %r0, %r2", 0),
        ("div32 %r0, %r2", 0),
        ("mod32 %r0, %r2", 0x8000_0000),
    ];
    for (op, expected) in cases {
        let min = if op.contains("32") { "mov32 %r0, 0x80000000" } else { "lddw %r0, 0x8000000000000000" };
        let source = format!("{min}\nmov %r2, -1\n{op}\nexit");
        assert_eq!(agree(&source, &[]), Ok(expected), "{op}");
    }
    // Ordinary signed division by -1 negates; the 32-bit form truncates.
    assert_eq!(agree("mov %r0, 7\nmov %r2, -1\nsdiv32 %r0, %r2\nexit", &[]), Ok(0xffff_fff9));
    assert_eq!(agree("mov %r0, 7\nsdiv %r0, -1\nexit", &[]), Ok(-7i64 as u64));
    // r0 and r3 (rax and rdx on x86) survive division into other registers.
    let source = "mov %r0, 5\nmov %r3, 9\nmov %r4, 100\nmov %r5, 7\ndiv %r4, %r5\nmod %r3, %r0\nadd %r0, %r3\nadd %r0, %r4\nexit";
    assert_eq!(agree(source, &[]), Ok(5 + 4 + 14));
}

extern "C" fn scramble(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    // Calls with the arguments reordered, so that the argument registers
    // are rewritten before this helper returns.
    let mix: extern "C" fn(u64, u64, u64, u64, u64) -> u64 = std::hint::black_box(mix);
    mix(e, d, c, b, a)
}

extern "C" fn mix(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    a ^ b.rotate_left(8) ^ c.rotate_left(16) ^ d.rotate_left(24) ^ e.rotate_left(32)
}

#[test]
fn helpers_leave_r1_to_r5_unchanged() {
    let mut helpers = conformance::helpers();
    helpers.register(7, "scramble", scramble);
    let source = "
        mov %r1, 1
        mov %r2, 2
        mov %r3, 3
        mov %r4, 4
        mov %r5, 5
        call 7
        mov %r6, %r0
        mov %r0, %r1
        lsh %r0, 8
        or %r0, %r2
        lsh %r0, 8
        or %r0, %r3
        lsh %r0, 8
        or %r0, %r4
        lsh %r0, 8
        or %r0, %r5
        xor %r0, %r6
        exit";
    let program = load(source, &helpers, &Config::default());
    let (jit, interpreter) = run_both(&program, &[]);
    assert_eq!(jit, interpreter);
    assert_eq!(jit.result, Ok(0x01_0203_0405 ^ mix(5, 4, 3, 2, 1)));
    // Through callx too, with the index in an argument register.
    let source = "mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 7\ncallx %r5\nadd %r0, %r5\nexit";
    let program = load(source, &helpers, &Config::default());
    let (jit, interpreter) = run_both(&program, &[]);
    assert_eq!(jit, interpreter);
    assert_eq!(jit.result, Ok(mix(7, 4, 3, 2, 1).wrapping_add(7)));
}

#[test]
fn callx_to_unknown_indices() {
    for (index, value) in [("99", 99), ("6", 6), ("-1", u64::MAX), ("0x10000", 0x10000)] {
        let source = format!("mov %r2, {index}\nmov %r0, 3\ncallx %r2\nexit");
        assert_eq!(kind(agree(&source, &[])), (2, ExecErrorKind::UnknownHelper(value)), "{index}");
    }
    // An index above 32 bits whose low half is registered.
    assert_eq!(
        kind(agree("lddw %r0, 0x100000002\ncallx %r0\nexit", &[])),
        (2, ExecErrorKind::UnknownHelper(0x1_0000_0002))
    );
    // Known ones work, r0 included as the index register.
    assert_eq!(agree("mov %r0, 3\nmov %r1, 49\ncallx %r0\nexit", &[]), Ok(7));
}

#[test]
fn unwind_helper_ends_the_run() {
    // Helper 5 returns its argument and is the unwind helper.
    assert_eq!(agree("mov %r1, 0\ncall 5\nmov %r0, 2\nexit", &[]), Ok(0));
    assert_eq!(agree("mov %r1, 3\ncall 5\nmov %r0, 2\nexit", &[]), Ok(2));
    assert_eq!(agree("mov %r1, 0\nmov %r6, 5\ncallx %r6\nmov %r0, 2\nexit", &[]), Ok(0));
    // From inside a local call too.
    assert_eq!(agree("call local f\nmov %r0, 2\nexit\nf:\nmov %r1, 0\ncall 5\nmov %r0, 3\nexit", &[]), Ok(0));
    // Another helper returning 0 does not unwind.
    assert_eq!(agree("call 2\nmov %r0, 2\nexit", &[]), Ok(2));
}

#[test]
fn atomics_aligned_and_not() {
    for op in [
        "lock add",
        "lock fetch add",
        "lock or",
        "lock fetch or",
        "lock and",
        "lock fetch and",
        "lock xor",
        "lock fetch xor",
        "lock xchg",
        "lock cmpxchg",
    ] {
        for suffix in ["", "32"] {
            for off in [-16, -15, -13, -12] {
                for src in ["%r2", "%r0"] {
                    let source = format!(
                        "lddw %r1, 0x8070605040302010\nstxdw [%r10-16], %r1\nstxdw [%r10-8], %r1\n\
                         lddw %r2, 0xf0f0f0f0f0f0f0f0\nlddw %r0, 0x8070605040302010\n\
                         {op}{suffix} [%r10{off}], {src}\n\
                         ldxdw %r3, [%r10-16]\nldxdw %r4, [%r10-8]\nxor %r0, %r2\nxor %r0, %r3\nxor %r0, %r4\nexit"
                    );
                    agree(&source, &[]).unwrap();
                }
            }
        }
    }
    // On the input, where the memory effect is compared too.
    agree("lock fetch add [%r1+3], %r2\nmov %r0, %r2\nexit", &[0x11; 16]).unwrap();
    agree("mov %r0, 0x11\nmov %r2, 5\nlock cmpxchg32 [%r1+4], %r2\nexit", &[0x11, 0, 0, 0, 0x11, 0, 0, 0]).unwrap();
}

/// A small xorshift generator, to vary operands without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly edge values: 0, ±1, INT_MIN/MAX of each width, small shifts.
    fn value(&mut self) -> u64 {
        const EDGES: [u64; 10] =
            [0, 1, u64::MAX, 0x8000_0000, 0x7fff_ffff, 0xffff_ffff, 1 << 63, (1 << 63) - 1, 31, 63];
        match self.next() % 3 {
            0 => EDGES[(self.next() % EDGES.len() as u64) as usize],
            1 => self.next() % 70,
            _ => self.next(),
        }
    }
}

#[test]
fn random_alu_sequences_agree() {
    let forms: Vec<&isa::Form> = isa::FORMS
        .iter()
        .filter(|form| matches!(form.opc & isa::CLASS_MASK, isa::BPF_ALU | isa::BPF_ALU64))
        .filter(|form| matches!(form.operands, isa::Operands::DstImm | isa::Operands::DstSrc | isa::Operands::Dst))
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let mut insns = Vec::new();
        for r in 0..10u8 {
            let value = rng.value();
            insns.push(Insn::new(isa::LDDW, r, 0, 0, value as i32));
            insns.push(Insn::new(0, 0, 0, 0, (value >> 32) as i32));
        }
        for _ in 0..40 {
            let form = forms[(rng.next() % forms.len() as u64) as usize];
            let dst = (rng.next() % 10) as u8;
            let mut insn = Insn::new(form.opc, dst, 0, 0, 0);
            match form.operands {
                isa::Operands::DstImm => insn.imm = rng.value() as i32,
                isa::Operands::DstSrc => insn.src = (rng.next() % 10) as u8,
                _ => {}
            }
            match form.selector {
                isa::Selector::Off(off) => insn.off = off,
                isa::Selector::Imm(imm) => insn.imm = imm,
                _ => {}
            }
            insns.push(insn);
        }
        for r in 1..10u8 {
            insns.push(Insn::new(isa::XOR64_REG, 0, r, 0, 0));
            insns.push(Insn::new(isa::LSH64_IMM, 0, 0, 0, 7));
        }
        insns.push(Insn::new(isa::EXIT, 0, 0, 0, 0));
        let program =
            Arc::new(Program::load(&isa::encode_program(&insns), &Helpers::new(), &Config::default()).unwrap());
        let (jit, interpreter) = run_both(&program, &[]);
        assert_eq!(jit, interpreter, "{insns:?}");
    }
}

#[test]
fn one_program_on_four_threads() {
    // Sums the input's bytes through a stack slot, with a helper call and a
    // local call on the way; each thread has its own input.
    let source = "
        mov %r6, %r1
        mov %r7, %r2
        mov %r0, 0
        stxdw [%r10-8], %r0
    loop:
        jeq %r7, 0, done
        ldxb %r3, [%r6]
        ldxdw %r0, [%r10-8]
        add %r0, %r3
        stxdw [%r10-8], %r0
        add %r6, 1
        sub %r7, 1
        ja loop
    done:
        mov %r1, 16
        call 3
        call local twice
        ldxdw %r1, [%r10-8]
        add %r0, %r1
        exit
    twice:
        lsh %r0, 1
        exit";
    let program = load(source, &conformance::helpers(), &Config::default());
    let jit = Arc::new(JitProgram::compile(program.clone()).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let (jit, program) = (jit.clone(), program.clone());
            std::thread::spawn(move || {
                for round in 0..500usize {
                    let mut mem: Vec<u8> = (0..(round % 64) as u8).map(|i| i.wrapping_mul(t + 1)).collect();
                    let expected = 8 + mem.iter().map(|&b| b as u64).sum::<u64>();
                    assert_eq!(jit.execute(&mut mem), Ok(expected));
                    assert_eq!(program.execute(&mut mem), Ok(expected));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn longest_program_with_the_longest_straight_run() {
    // 65536 slots: one straight run of loads and adds, then a ja32 back to
    // the start, so the budget stops it there after a few rounds. The last
    // slot of the run is a jump to the exit that is never taken (r10 is
    // never 0): without it, the loop would have no way out and be refused.
    let mut insns = vec![Insn::new(isa::MOV64_IMM, 0, 0, 0, 0)];
    while insns.len() < isa::MAX_INSNS - 2 {
        insns.push(Insn::new(isa::LDXB, 2, 1, (insns.len() % 8) as i16, 0));
        insns.push(Insn::new(isa::ADD64_REG, 0, 2, 0, 0));
    }
    insns.truncate(isa::MAX_INSNS - 3);
    insns.push(Insn::new(isa::JEQ_IMM, 10, 0, 1, 0));
    insns.push(Insn::new(isa::JA32, 0, 0, 0, -(isa::MAX_INSNS as i32 - 1)));
    insns.push(Insn::new(isa::EXIT, 0, 0, 0, 0));
    let config = Config { instruction_limit: 200_000, ..Config::default() };
    let program = Arc::new(Program::load(&isa::encode_program(&insns), &Helpers::new(), &config).unwrap());
    let (jit, interpreter) = run_both(&program, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(jit, interpreter);
    assert_eq!(kind(jit.result), (isa::MAX_INSNS - 2, ExecErrorKind::BudgetExhausted(200_000)));
    // And out of bounds at the far end of the run, counted exactly.
    let (jit, interpreter) = run_both(&program, &[1, 2, 3, 4]);
    assert_eq!(jit, interpreter);
    assert!(matches!(kind(jit.result), (5, ExecErrorKind::OutOfBounds { size: 1, write: false, .. })));
}

/// Inputs of every length from 0 to `max` bytes, filled with distinct bytes.
fn inputs(max: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..=max).map(|len| (0..len).map(|i| i as u8 ^ 0x5a).collect())
}

#[test]
fn lengths_learnt_from_jumps_not_taken() {
    // The JIT leaves out input checks that a comparison of r2 (the length)
    // proves needless on the way not jumped: at the boundary and one past,
    // for every comparison, both widths, both operand orders.
    let mut count = 0;
    for op in ["jlt", "jle", "jne", "jslt", "jsle", "jgt", "jge", "jeq", "jsgt", "jsge", "jset"] {
        for width in ["", "32"] {
            for k in [0i64, 1, 3, 4, 7, 8, 9, -1] {
                for (load, size) in [("ldxb", 1i64), ("ldxh", 2), ("ldxw", 4), ("ldxdw", 8)] {
                    for off in [k - size - 1, k - size, k - size + 1, 0, k] {
                        if !(-64..64).contains(&off) {
                            continue;
                        }
                        // `len OP k`, then `k OP len` through a register.
                        let direct = format!("mov %r0, 0\n{op}{width} %r2, {k}, +1\n{load} %r0, [%r1{off:+}]\nexit");
                        let reversed = format!(
                            "mov %r0, 0\nmov %r3, {k}\n{op}{width} %r3, %r2, +1\n{load} %r0, [%r1{off:+}]\nexit"
                        );
                        for source in [direct, reversed] {
                            for mem in inputs(10) {
                                agree(&source, &mem).ok();
                                count += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(count > 10_000);
}

#[test]
fn lengths_learnt_are_forgotten_at_jump_targets_and_when_r1_or_r2_change() {
    let sources = [
        // The load at `l` is reached with the length unchecked too.
        "mov %r0, 0\njgt %r2, 3, +2\njlt %r2, 8, +2\nja +0\nl:\nldxdw %r0, [%r1]\nexit",
        "jlt %r2, 8, +4\nldxdw %r0, [%r1]\njeq %r0, 0, +0\nldxdw %r0, [%r1]\nexit\nmov %r0, 0\nexit",
        // r1 moves, r2 is overwritten, a copy of r1 moves.
        "mov %r0, 0\njlt %r2, 8, +3\nadd %r1, 4\nldxw %r0, [%r1+1]\nldxw %r0, [%r1]\nexit",
        "mov %r0, 0\njlt %r2, 4, +3\nmov %r2, 100\njlt %r2, 8, +1\nldxdw %r0, [%r1]\nexit",
        "mov %r0, 0\njlt %r2, 6, +3\nmov %r3, %r1\nadd %r3, 2\nldxw %r0, [%r3]\nexit",
        "mov %r0, 0\njlt %r2, 6, +3\nmov %r3, %r1\nadd %r3, 3\nldxw %r0, [%r3]\nexit",
        "mov %r0, 0\njlt %r2, 6, +3\nmov %r3, 2\nadd %r3, %r1\nldxw %r0, [%r3-2]\nexit",
        // A helper call keeps the length but not the pointer.
        "mov %r6, %r1\njlt %r2, 8, +3\nmov %r1, 1\ncall 0\nldxdw %r0, [%r6]\nexit",
    ];
    for source in sources {
        for mem in inputs(10) {
            agree(source, &mem).ok();
        }
    }
}

#[test]
fn merged_checks_fault_where_each_access_would() {
    // Accesses through one base in one straight run share a check of the
    // bytes they span; when it fails, each access is checked on its own, so
    // the fault is at the first that faults and the stores before it land.
    let sources = [
        "ldxb %r3, [%r1+1]\nldxb %r0, [%r1]\nlsh %r0, 8\nor %r0, %r3\nexit",
        "ldxb %r0, [%r1+7]\nstb [%r1+1], 9\nstb [%r1+3], 9\nldxh %r3, [%r1+2]\nldxw %r4, [%r1+4]\nexit",
        "stb [%r1], 1\nstb [%r1+5], 2\nstb [%r1+2], 3\nldxdw %r0, [%r1]\nexit",
        "stb [%r1-1], 1\nstb [%r1+1], 2\nexit",
        // Two groups interleaved, and a group starting inside another's copy
        // that ends after it.
        "mov %r4, %r1\nadd %r4, 2\nldxb %r0, [%r1]\nldxb %r3, [%r4]\nldxb %r5, [%r1+3]\nldxb %r3, [%r4+4]\nldxb %r3, [%r4+1]\nexit",
        "mov %r4, %r1\nadd %r4, 1\nldxb %r0, [%r1]\nldxb %r3, [%r4+2]\nldxb %r5, [%r1+1]\nstb [%r4+5], 7\nldxb %r3, [%r4+6]\nexit",
        // The base register is written by the last access of its group.
        "ldxb %r3, [%r1+3]\nldxb %r1, [%r1]\nldxb %r0, [%r1]\nexit",
        // Atomics and 64-bit spans.
        "mov %r3, 1\nlock add32 [%r1], %r3\nlock fetch add [%r1+4], %r3\nldxdw %r0, [%r1+8]\nexit",
    ];
    for source in sources {
        for mem in inputs(17) {
            agree(source, &mem).ok();
        }
    }
}

#[test]
fn merged_checks_over_the_stack_and_regions() {
    // A base that is not the input: the merged check fails and the copy
    // checks the stack and the regions.
    let data: &'static mut [u64; 4] = Box::leak(Box::new([7, 8, 9, 10]));
    let start = data.as_ptr() as u64;
    let config =
        Config { regions: vec![Region { start, len: 32, writable: true, ..Region::default() }], ..Config::default() };
    let stack = "stdw [%r10-16], 3\nstdw [%r10-8], 4\nldxdw %r2, [%r10-8]\nadd %r2, 0\nmov %r3, %r10\nand %r2, 0\nadd %r3, %r2\n\
                 ldxw %r0, [%r3-16]\nldxw %r4, [%r3-8]\nldxw %r5, [%r3-4]\nexit";
    assert_eq!(agree_with(stack, &config, &[1, 2]), Ok(3));
    for off in [0, 4, 28, 29, 32] {
        let region = format!(
            "lddw %r1, {start:#x}\nmov %r2, %r1\nldxdw %r3, [%r10-8]\nand %r3, 0\nadd %r2, %r3\n\
             ldxb %r0, [%r2+{off}]\nstb [%r2+1], 5\nldxw %r4, [%r2+{off}]\nexit"
        );
        agree_with(&region, &config, &[0; 4]).ok();
    }
    // The copy of the first group (which fails, the base being in the
    // region) must also check the second group, which started inside it and
    // ends after it, with an access past the region.
    let hidden = format!(
        "stdw [%r10-8], 0\nldxdw %r3, [%r10-8]\nlddw %r1, {start:#x}\nadd %r1, %r3\nmov %r4, %r1\nadd %r4, 2\n"
    );
    for far in [20, 29, 30, 40] {
        let source =
            format!("{hidden}ldxb %r0, [%r1]\nldxb %r5, [%r4]\nldxb %r0, [%r1+3]\nldxb %r5, [%r4+{far}]\nexit");
        agree_with(&source, &config, &[0; 4]).ok();
    }
}

#[test]
fn legacy_packet_loads_read_big_endian_or_end_the_run_with_0() {
    let packet = [0x12, 0x34, 0x56, 0x78, 0x9a];
    assert_eq!(agree("ldabsb 4\nexit", &packet), Ok(0x9a));
    assert_eq!(agree("ldabsh 3\nexit", &packet), Ok(0x789a));
    assert_eq!(agree("ldabsw 1\nexit", &packet), Ok(0x3456_789a));
    // Past the end, or before the start: the run ends at once with 0.
    assert_eq!(agree("ldabsw 2\nmov %r0, 7\nexit", &packet), Ok(0));
    assert_eq!(agree("ldabsb 5\nmov %r0, 7\nexit", &packet), Ok(0));
    assert_eq!(agree("ldabsb -1\nmov %r0, 7\nexit", &packet), Ok(0));
    assert_eq!(agree("ldabsb 0\nmov %r0, 7\nexit", &[]), Ok(0));
    // Indexed: (s32)(src + imm), which may wrap.
    assert_eq!(agree("mov %r3, 2\nldindh %r3, 1\nexit", &packet), Ok(0x789a));
    assert_eq!(agree("mov %r3, -1\nldindb %r3, 5\nexit", &packet), Ok(0x9a));
    assert_eq!(agree("mov32 %r3, 0xffffffff\nldindb %r3, 1\nexit", &packet), Ok(0x12));
    assert_eq!(agree("mov %r3, 0x7fffffff\nldindb %r3, 1\nmov %r0, 7\nexit", &packet), Ok(0));
    assert_eq!(agree("mov %r3, -3\nldindb %r3, 1\nmov %r0, 7\nexit", &packet), Ok(0));
    // r0 is the index, and r1-r5 keep their values.
    assert_eq!(agree("mov %r0, 1\nldindb %r0, 0\nexit", &packet), Ok(0x34));
    assert_eq!(agree("mov %r5, 9\nldabsb 0\nmov %r0, %r5\nexit", &packet), Ok(9));
    // In a loop, inside a local call, and past branches (the count agrees).
    let scan = "mov %r6, 0\nloop:\nldindb %r6, 0\nadd %r6, 1\njne %r0, 0x78, loop\nmov %r0, %r6\nexit";
    assert_eq!(agree(scan, &packet), Ok(4));
    assert_eq!(agree(scan, &packet[..3]), Ok(0));
    assert_eq!(agree("call local f\nmov %r0, 2\nexit\nf:\nldabsw 3\nmov %r0, 3\nexit", &packet), Ok(0));
    assert_eq!(agree("jeq %r2, 5, +1\nldabsw 0\nldabsw 3\nexit", &packet), Ok(0));
    assert_eq!(agree("jeq %r2, 5, +1\nldabsw 0\nldabsb 3\nexit", &packet), Ok(0x78));
}

#[test]
fn csum_diff_of_frame_addresses_spilled_and_reloaded() {
    // bpf_csum_diff(r1, 4, r3, 4, 0) with r1 = r10 - 16 (holding 0x01020304)
    // spilled to [r10 - 8] first, then whatever reloading gives; r3 = r10 - 24
    // (holding 0). The JIT calls it unchecked only where it knows both
    // buffers lie in the frame; otherwise the helper checks them.
    let program = |between: &str| {
        format!(
            "stw [%r10-16], 0x01020304
            stw [%r10-24], 0
            mov %r1, %r10
            add %r1, -16
            stxdw [%r10-8], %r1
            {between}
            ldxdw %r1, [%r10-8]
            mov %r2, 4
            mov %r3, %r10
            add %r3, -24
            mov %r4, 4
            mov %r5, 0
            call 28
            exit"
        )
    };
    let run = |source: &str| {
        let program = load(source, &Helpers::linux(), &Config::default());
        let (jit, interpreter) = run_both(&program, &[0; 8]);
        assert_eq!(jit, interpreter, "\n{source}");
        jit.result
    };
    let sum = run(&program("")).expect("the frame's bytes");
    // The pointer reloaded past a call that only reads, and a store beside it.
    let read_only_call =
        "mov %r1, %r10\nadd %r1, -32\nmov %r2, 0\nmov %r3, %r1\nmov %r4, 0\ncall 28\nstdw [%r10-32], 7";
    assert_eq!(run(&program(read_only_call)), Ok(sum));
    // The slot overwritten, directly or through a pointer the JIT does not
    // know (r10 - 8 computed from the input's length): the helper refuses
    // the address 7.
    let overwritten = [
        "stdw [%r10-8], 7",
        "stw [%r10-4], 0",
        "mov %r6, %r2\nrsh %r6, 63\nadd %r6, %r10\nstdw [%r6-8], 7",
        "mov %r6, %r10\nadd %r6, -8\nmov %r7, 7\nstxdw [%r6], %r7",
    ];
    for between in overwritten {
        let error = run(&program(between)).expect_err(between);
        assert!(matches!(error.kind, ExecErrorKind::HelperMemory { .. }), "{between}: {error}");
    }
}
