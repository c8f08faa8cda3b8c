//! Interpreter behaviour beyond the conformance vectors: memory checks,
//! budget, call depth, helpers, regions, threads.

use std::sync::Arc;

use qemu_ubpf::isa::*;
use qemu_ubpf::{Config, ExecErrorKind, Helpers, Image, Program, Region};

fn program(insns: &[Insn], helpers: &Helpers, config: &Config) -> Program {
    Program::from_image(Image { insns: insns.to_vec(), ..Image::default() }, helpers, config).expect("program verifies")
}

fn run(insns: &[Insn], mem: &mut [u8]) -> Result<u64, qemu_ubpf::ExecError> {
    program(insns, &Helpers::new(), &Config::default()).execute(mem)
}

const EXIT_INSN: Insn = Insn::new(EXIT, 0, 0, 0, 0);

fn mov(dst: u8, imm: i32) -> Insn {
    Insn::new(MOV64_IMM, dst, 0, 0, imm)
}

#[test]
fn r1_and_r2_describe_the_input() {
    let mut packet = [1u8, 2, 3, 4, 5];
    let r0 = run(&[Insn::new(MOV64_REG, 0, 2, 0, 0), EXIT_INSN], &mut packet).unwrap();
    assert_eq!(r0, 5);
    let r0 = run(&[Insn::new(MOV64_REG, 0, 1, 0, 0), EXIT_INSN], &mut []).unwrap();
    assert_eq!(r0, 0, "no input: r1 is 0");
}

#[test]
fn loads_and_stores_inside_the_input_work_and_outside_fail() {
    let mut packet = [0u8; 8];
    let store_last = [Insn::new(STB, 1, 0, 7, 0x5a), Insn::new(LDXB, 0, 1, 7, 0), EXIT_INSN];
    assert_eq!(run(&store_last, &mut packet).unwrap(), 0x5a);
    assert_eq!(packet[7], 0x5a);

    // A 2-byte load at offset 7 of an 8-byte packet reaches one byte past it.
    let straddle = [Insn::new(LDXH, 0, 1, 7, 0), EXIT_INSN];
    let e = run(&straddle, &mut packet).unwrap_err();
    assert_eq!(e.pc, 0);
    let base = packet.as_ptr() as u64;
    assert_eq!(e.kind, ExecErrorKind::OutOfBounds { addr: base + 7, size: 2, write: false });

    let before = [Insn::new(STW, 1, 0, -4, 1), EXIT_INSN];
    let e = run(&before, &mut packet).unwrap_err();
    assert!(matches!(e.kind, ExecErrorKind::OutOfBounds { size: 4, write: true, .. }));

    // No input at all: r1 is 0 and a load through it is refused, not a crash.
    let null = [Insn::new(LDXDW, 0, 1, 0, 0), EXIT_INSN];
    assert_eq!(run(&null, &mut []).unwrap_err().kind, ExecErrorKind::OutOfBounds { addr: 0, size: 8, write: false });
}

#[test]
fn addresses_that_wrap_are_refused() {
    // r1 = -1: addr + size wraps around; the check must not be fooled.
    let insns = [Insn::new(MOV64_IMM, 1, 0, 0, -1), Insn::new(LDXDW, 0, 1, 0, 0), EXIT_INSN];
    assert!(matches!(run(&insns, &mut [0; 16]).unwrap_err().kind, ExecErrorKind::OutOfBounds { addr: u64::MAX, .. }));
}

#[test]
fn stack_frame_is_512_bytes() {
    let mut none = [];
    let top = [Insn::new(STDW, 10, 0, -8, 7), Insn::new(LDXDW, 0, 10, -8, 0), EXIT_INSN];
    assert_eq!(run(&top, &mut none).unwrap(), 7);
    let bottom = [Insn::new(STB, 10, 0, -512, 9), Insn::new(LDXB, 0, 10, -512, 0), EXIT_INSN];
    assert_eq!(run(&bottom, &mut none).unwrap(), 9);
    let below = [Insn::new(STB, 10, 0, -513, 9), EXIT_INSN];
    assert!(matches!(run(&below, &mut none).unwrap_err().kind, ExecErrorKind::OutOfBounds { write: true, .. }));
    let above = [Insn::new(LDXB, 0, 10, 0, 0), EXIT_INSN];
    assert!(matches!(run(&above, &mut none).unwrap_err().kind, ExecErrorKind::OutOfBounds { write: false, .. }));
}

#[test]
fn callee_frames_are_separate_and_callers_frames_stay_reachable() {
    // main: [r10-8] = 11; r1 = r10; call f; r0 += [r10-8]; exit
    // f:    [r10-8] = 22 (its own frame); r0 = [r1-8] (the caller's); exit
    let insns = [
        Insn::new(STDW, 10, 0, -8, 11),
        Insn::new(MOV64_REG, 1, 10, 0, 0),
        Insn::new(CALL, 0, CALL_LOCAL, 0, 3),
        Insn::new(LDXDW, 2, 10, -8, 0),
        Insn::new(ADD64_REG, 0, 2, 0, 0),
        EXIT_INSN,
        Insn::new(STDW, 10, 0, -8, 22),
        Insn::new(LDXDW, 0, 1, -8, 0),
        EXIT_INSN,
    ];
    assert_eq!(run(&insns, &mut []).unwrap(), 22);
}

#[test]
fn recursion_stops_at_the_frame_limit() {
    let insns = [Insn::new(CALL, 0, CALL_LOCAL, 0, -1), EXIT_INSN];
    let e = run(&insns, &mut []).unwrap_err();
    assert_eq!((e.pc, e.kind), (0, ExecErrorKind::CallDepthExceeded(MAX_CALL_DEPTH)));
    // Eight nested calls (the minimum) are fine: f0 calls f1 ... f7.
    let mut nested = Vec::new();
    for _ in 0..8 {
        nested.extend([Insn::new(CALL, 0, CALL_LOCAL, 0, 1), EXIT_INSN]);
    }
    nested.extend([mov(0, 8), EXIT_INSN]);
    assert_eq!(run(&nested, &mut []).unwrap(), 8);
}

#[test]
fn endless_loop_ends_with_the_budget_error_at_the_back_edge() {
    let config = Config { instruction_limit: 1000, ..Config::default() };
    // r0 counts up from 1 and would take 2^64 laps to come back to 0; a
    // plain `ja` back would be refused at load, having no way out.
    let insns = [mov(0, 0), Insn::new(ADD64_IMM, 0, 0, 0, 1), Insn::new(JNE_IMM, 0, 0, -2, 0), EXIT_INSN];
    let e = program(&insns, &Helpers::new(), &config).execute(&mut []).unwrap_err();
    assert_eq!((e.pc, e.kind), (2, ExecErrorKind::BudgetExhausted(1000)));
    // The default budget is finite too.
    let e = run(&insns, &mut []).unwrap_err();
    assert!(matches!(e.kind, ExecErrorKind::BudgetExhausted(_)));
}

#[test]
fn budget_counts_instructions_exactly() {
    // r0 = 0; loop: r0 += 1; if r0 < 5 goto loop; exit. The back edge is
    // checked on each of the 5 laps (taken or not); at the last check
    // 1 + 2 * 5 = 11 instructions have run.
    let insns = [mov(0, 0), Insn::new(ADD64_IMM, 0, 0, 0, 1), Insn::new(JLT_IMM, 0, 0, -2, 5), EXIT_INSN];
    let with_limit = |instruction_limit| {
        program(&insns, &Helpers::new(), &Config { instruction_limit, ..Config::default() }).execute(&mut [])
    };
    assert_eq!(with_limit(11).unwrap(), 5);
    let e = with_limit(10).unwrap_err();
    assert_eq!((e.pc, e.kind), (2, ExecErrorKind::BudgetExhausted(10)));
}

extern "C" fn sum5(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    a + b + c + d + e
}

extern "C" fn zero(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

#[test]
fn helpers_get_five_arguments_and_keep_r1_to_r5() {
    let mut helpers = Helpers::new();
    helpers.register(7, "sum5", sum5);
    let insns = [
        mov(1, 1),
        mov(2, 2),
        mov(3, 3),
        mov(4, 4),
        mov(5, 5),
        Insn::new(CALL, 0, CALL_HELPER, 0, 7),
        Insn::new(ADD64_REG, 0, 5, 0, 0),
        EXIT_INSN,
    ];
    assert_eq!(program(&insns, &helpers, &Config::default()).execute(&mut []).unwrap(), 20);
}

#[test]
fn callx_to_an_unregistered_index_is_a_run_error() {
    let mut helpers = Helpers::new();
    helpers.register(1, "zero", zero);
    let insns = [mov(3, 9), Insn::new(CALLX, 3, 0, 0, 0), EXIT_INSN];
    let e = program(&insns, &helpers, &Config::default()).execute(&mut []).unwrap_err();
    assert_eq!((e.pc, e.kind), (1, ExecErrorKind::UnknownHelper(9)));
    // The legacy encoding with the register in imm means the same.
    let legacy = [mov(3, 1), Insn::new(CALLX, 0, 0, 0, 3), mov(0, 4), EXIT_INSN];
    assert_eq!(program(&legacy, &helpers, &Config::default()).execute(&mut []).unwrap(), 4);
}

#[test]
fn unwind_helper_ends_the_program_when_it_returns_zero() {
    let mut helpers = Helpers::new();
    helpers.register(3, "zero", zero);
    helpers.set_unwind(3);
    let insns = [mov(0, 5), Insn::new(CALL, 0, CALL_HELPER, 0, 3), mov(0, 6), EXIT_INSN];
    assert_eq!(program(&insns, &helpers, &Config::default()).execute(&mut []).unwrap(), 0);
}

#[test]
fn registered_regions_honour_write_permission() {
    let mut buffer = vec![0u8; 16];
    let start = buffer.as_mut_ptr() as u64;
    let lddw =
        |dst: u8, value: u64| [Insn::new(LDDW, dst, 0, 0, value as i32), Insn::new(0, 0, 0, 0, (value >> 32) as i32)];
    let mut insns = lddw(1, start).to_vec();
    insns.extend([Insn::new(LDXDW, 0, 1, 8, 0), Insn::new(STB, 1, 0, 0, 1), EXIT_INSN]);

    let read_only =
        Config { regions: vec![Region { start, len: 16, writable: false, ..Region::default() }], ..Config::default() };
    let e = program(&insns, &Helpers::new(), &read_only).execute(&mut []).unwrap_err();
    assert_eq!((e.pc, e.kind), (3, ExecErrorKind::ReadOnly { addr: start, size: 1 }));

    let writable =
        Config { regions: vec![Region { start, len: 16, writable: true, ..Region::default() }], ..Config::default() };
    assert_eq!(program(&insns, &Helpers::new(), &writable).execute(&mut []).unwrap(), 0);
    assert_eq!(buffer[0], 1);

    // Without the region the same address is simply out of bounds.
    let e = run(&insns, &mut []).unwrap_err();
    assert!(matches!(e.kind, ExecErrorKind::OutOfBounds { .. }));
}

#[test]
fn global_data_is_shared_between_runs() {
    // `lock add [data+0], 1; r0 = [data+0]` over a one-word .data section.
    let image = Image {
        insns: vec![
            Insn::new(LDDW, 1, 0, 0, 0),
            Insn::new(0, 0, 0, 0, 0),
            mov(2, 1),
            Insn::new(ATOMIC64, 1, 2, 0, ATOMIC_ADD),
            Insn::new(LDXDW, 0, 1, 0, 0),
            EXIT_INSN,
        ],
        data: vec![qemu_ubpf::image::DataSection { name: ".data".into(), bytes: vec![0; 8], writable: true }],
        data_relocs: vec![qemu_ubpf::image::DataReloc { pc: 0, section: 0, offset: 0 }],
        maps: Vec::new(),
    };
    let program = Arc::new(Program::from_image(image, &Helpers::new(), &Config::default()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let program = Arc::clone(&program);
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    program.execute(&mut []).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(program.data(0).unwrap(), 4000u64.to_le_bytes().to_vec(), "atomic adds from 4 threads all land");
}

#[test]
fn division_edge_cases() {
    let cases: &[(Insn, u64, u64)] = &[
        (Insn::new(DIV64_IMM, 0, 0, 0, 0), 7, 0),
        (Insn::new(MOD64_IMM, 0, 0, 0, 0), 7, 7),
        (Insn::new(MOD32_IMM, 0, 0, 0, 0), 0x1_0000_0007, 7),
        (Insn::new(DIV64_IMM, 0, 0, 1, -1), i64::MIN as u64, i64::MIN as u64),
        (Insn::new(MOD64_IMM, 0, 0, 1, -1), i64::MIN as u64, 0),
        (Insn::new(DIV32_IMM, 0, 0, 1, -1), i32::MIN as u32 as u64, i32::MIN as u32 as u64),
        (Insn::new(MOD64_IMM, 0, 0, 1, 3), -7i64 as u64, -1i64 as u64),
        (Insn::new(DIV64_IMM, 0, 0, 0, -1), 5, 0),
    ];
    for &(insn, input, expected) in cases {
        let lddw = [Insn::new(LDDW, 0, 0, 0, input as i32), Insn::new(0, 0, 0, 0, (input >> 32) as i32)];
        let insns = [lddw[0], lddw[1], insn, EXIT_INSN];
        assert_eq!(run(&insns, &mut []).unwrap(), expected, "{insn:?} on {input:#x}");
    }
}

/// Every form of the opcode table runs in the interpreter (the lddw map
/// forms aside, which the verifier refuses until maps exist).
#[test]
fn every_form_of_the_table_executes() {
    let mut helpers = Helpers::new();
    helpers.register(0, "zero", zero);
    for form in FORMS.iter().filter(|form| !(form.opc == LDDW && form.selector != Selector::Src(LDDW_IMM64))) {
        let mut insn = Insn::new(form.opc, 0, 0, 0, 0);
        match form.operands {
            Operands::DstImm | Operands::DstImmJump => (insn.dst, insn.imm) = (2, 3),
            Operands::DstSrc | Operands::DstSrcJump => (insn.dst, insn.src) = (2, 3),
            Operands::Dst | Operands::DstImm64 | Operands::CallReg => insn.dst = 2,
            Operands::DstMem => (insn.dst, insn.src, insn.off) = (2, 10, -8),
            Operands::MemImm => (insn.dst, insn.off, insn.imm) = (10, -8, 3),
            Operands::MemSrc => (insn.dst, insn.src, insn.off) = (10, 3, -8),
            Operands::CallLocal => insn.imm = 2,
            Operands::PacketAbs => insn.imm = 1,
            Operands::PacketInd => (insn.src, insn.imm) = (3, -2),
            Operands::Jump | Operands::Jump32 | Operands::CallHelper | Operands::Nothing => {}
        }
        match form.selector {
            Selector::Off(off) => insn.off = off,
            Selector::Imm(imm) => insn.imm = imm,
            Selector::Src(src) => insn.src = src,
            Selector::None => {}
        }
        // r2 = 0 (a valid helper index for callx), r3 = 3, stack word zeroed.
        let mut insns = vec![mov(2, 0), mov(3, 3), Insn::new(STDW, 10, 0, -8, 0), insn];
        if form.is_wide() {
            insns.push(Insn::new(0, 0, 0, 0, 0));
        }
        insns.extend([mov(0, 0), EXIT_INSN, mov(0, 0), EXIT_INSN]);
        let program = Program::from_image(Image { insns, ..Image::default() }, &helpers, &Config::default())
            .unwrap_or_else(|e| panic!("{}: {e}", form.mnemonic));
        program.execute(&mut []).unwrap_or_else(|e| panic!("{}: {e}", form.mnemonic));
    }
}
