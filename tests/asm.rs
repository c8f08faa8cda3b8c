//! The assembler and disassembler against the bpf_conformance vectors, hand
//! checked encodings, and every form of the opcode table.

use std::fs;
use std::path::PathBuf;

use qemu_ubpf::asm::assemble;
use qemu_ubpf::disasm::disassemble;
use qemu_ubpf::error::AsmErrorKind;
use qemu_ubpf::isa::{self, FORMS, Insn, Operands, Selector};

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// The lines of section `-- name` of a conformance file, if it has one.
fn section(text: &str, name: &str) -> Option<String> {
    let header = format!("-- {name}");
    let mut lines = text.lines().skip_while(|line| line.trim_end() != header);
    lines.next()?;
    Some(lines.take_while(|line| !line.starts_with("-- ")).map(|line| format!("{line}\n")).collect())
}

fn bytes_of(source: &str) -> Vec<u8> {
    isa::encode_program(&assemble(source).unwrap_or_else(|error| panic!("{source}\n{error}")))
}

#[test]
fn every_conformance_program_round_trips() {
    let mut paths: Vec<PathBuf> = fs::read_dir(conformance_dir())
        .expect("tests/conformance exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "data"))
        .collect();
    paths.sort();
    let (mut passed, mut failures) = (0, Vec::new());
    for path in &paths {
        let text = fs::read_to_string(path).expect("readable conformance file");
        let Some(source) = section(&text, "asm") else { continue };
        let round_trip = assemble(&source).and_then(|insns| {
            let again = assemble(&disassemble(&insns))?;
            Ok((insns, again))
        });
        match round_trip {
            Ok((insns, again)) if insns == again => passed += 1,
            Ok((insns, again)) => failures.push(format!("{}: {insns:?} became {again:?}", path.display())),
            Err(error) => failures.push(format!("{}: {error}", path.display())),
        }
    }
    println!("asm round trip: {passed} passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(passed >= 313, "only {passed} conformance programs found");
}

#[test]
fn lddw_matches_its_raw_words() {
    let text = fs::read_to_string(conformance_dir().join("lddw.data")).expect("lddw.data");
    let words: Vec<u64> = section(&text, "raw")
        .expect("lddw.data has a raw section")
        .split_whitespace()
        .map(|word| u64::from_str_radix(word.trim_start_matches("0x"), 16).expect("hex word"))
        .collect();
    let insns = assemble(&section(&text, "asm").expect("asm section")).expect("lddw.data assembles");
    let ours: Vec<u64> = insns.iter().map(|insn| u64::from_le_bytes(insn.encode())).collect();
    assert_eq!(ours, words);
}

#[test]
fn golden_encodings() {
    let cases: &[(&str, [u8; 8])] = &[
        ("add32 %r1, 2", [0x04, 0x01, 0, 0, 0x02, 0, 0, 0]),
        ("mov %r0, 0xffffffff", [0xb7, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        ("mov32 %r1, -0x10", [0xb4, 0x01, 0, 0, 0xf0, 0xff, 0xff, 0xff]),
        ("sub %r3, %r4", [0x1f, 0x43, 0, 0, 0, 0, 0, 0]),
        ("sdiv %r1, 3", [0x37, 0x01, 0x01, 0, 0x03, 0, 0, 0]),
        ("smod32 %r1, %r2", [0x9c, 0x21, 0x01, 0, 0, 0, 0, 0]),
        ("movsx832 %r0, %r1", [0xbc, 0x10, 0x08, 0, 0, 0, 0, 0]),
        ("neg %r1", [0x87, 0x01, 0, 0, 0, 0, 0, 0]),
        ("be16 %r0", [0xdc, 0x00, 0, 0, 0x10, 0, 0, 0]),
        ("le32 %r0", [0xd4, 0x00, 0, 0, 0x20, 0, 0, 0]),
        ("bswap64 %r0", [0xd7, 0x00, 0, 0, 0x40, 0, 0, 0]),
        ("swap16 %r2", [0xd7, 0x02, 0, 0, 0x10, 0, 0, 0]),
        ("ldxw %r0, [%r1+4]", [0x61, 0x10, 0x04, 0x00, 0, 0, 0, 0]),
        ("ldxsb %r0, [%r10-1]", [0x91, 0xa0, 0xff, 0xff, 0, 0, 0, 0]),
        ("ldxdw %r2, [%r1+0x10]", [0x79, 0x12, 0x10, 0x00, 0, 0, 0, 0]),
        ("stw [%r1], 7", [0x62, 0x01, 0, 0, 0x07, 0, 0, 0]),
        ("stxb [%r10-8], %r3", [0x73, 0x3a, 0xf8, 0xff, 0, 0, 0, 0]),
        ("lock add [%r10-8], %r1", [0xdb, 0x1a, 0xf8, 0xff, 0x00, 0, 0, 0]),
        ("lock fetch add32 [%r1+4], %r2", [0xc3, 0x21, 0x04, 0x00, 0x01, 0, 0, 0]),
        ("lock xchg [%r1], %r2", [0xdb, 0x21, 0, 0, 0xe1, 0, 0, 0]),
        ("lock cmpxchg [%r10-8], %r1", [0xdb, 0x1a, 0xf8, 0xff, 0xf1, 0, 0, 0]),
        ("ja -1", [0x05, 0x00, 0xff, 0xff, 0, 0, 0, 0]),
        ("ja32 +1", [0x06, 0x00, 0, 0, 0x01, 0, 0, 0]),
        ("gotol +1", [0x06, 0x00, 0, 0, 0x01, 0, 0, 0]),
        ("jeq %r1, 0x80000000, +1", [0x15, 0x01, 0x01, 0x00, 0, 0, 0, 0x80]),
        ("jslt32 %r1, %r2, -2", [0xce, 0x21, 0xfe, 0xff, 0, 0, 0, 0]),
        ("call 5", [0x85, 0x00, 0, 0, 0x05, 0, 0, 0]),
        ("call local +2", [0x85, 0x10, 0, 0, 0x02, 0, 0, 0]),
        ("call %r2", [0x8d, 0x02, 0, 0, 0, 0, 0, 0]),
        ("callx %r2", [0x8d, 0x02, 0, 0, 0, 0, 0, 0]),
        ("exit", [0x95, 0x00, 0, 0, 0, 0, 0, 0]),
    ];
    for (source, expected) in cases {
        assert_eq!(bytes_of(source), expected, "{source}");
    }
    assert_eq!(
        bytes_of("lddw %r0, 0x1122334455667788"),
        [0x18, 0x00, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]
    );
    assert_eq!(bytes_of("lddw %r1, map_value 3+8"), [0x18, 0x21, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0]);
}

/// An instruction of `form` with sample values in the fields its operands use.
fn sample(form: &isa::Form) -> Vec<Insn> {
    let (dst, src, off, imm) = (3, 7, -8, 0x1234);
    let mut insn = match form.operands {
        Operands::DstImm | Operands::DstImm64 => Insn::new(form.opc, dst, 0, 0, imm),
        Operands::DstSrc => Insn::new(form.opc, dst, src, 0, 0),
        Operands::Dst | Operands::CallReg => Insn::new(form.opc, dst, 0, 0, 0),
        Operands::DstMem | Operands::MemSrc | Operands::DstSrcJump => Insn::new(form.opc, dst, src, off, 0),
        Operands::MemImm | Operands::DstImmJump => Insn::new(form.opc, dst, 0, off, imm),
        Operands::Jump => Insn::new(form.opc, 0, 0, off, 0),
        Operands::Jump32 | Operands::CallHelper | Operands::CallLocal | Operands::PacketAbs => {
            Insn::new(form.opc, 0, 0, 0, imm)
        }
        Operands::PacketInd => Insn::new(form.opc, 0, src, 0, imm),
        Operands::Nothing => Insn::new(form.opc, 0, 0, 0, 0),
    };
    match form.selector {
        Selector::None => {}
        Selector::Off(value) => insn.off = value,
        Selector::Imm(value) => insn.imm = value,
        Selector::Src(value) => insn.src = value,
    }
    if form.is_wide() { vec![insn, Insn::new(0, 0, 0, 0, -5)] } else { vec![insn] }
}

#[test]
fn every_form_assembles_from_its_disassembly() {
    for form in FORMS {
        let insns = sample(form);
        let text = disassemble(&insns);
        assert_eq!(assemble(&text), Ok(insns.clone()), "{form:?} printed as {text}");
        // Aliases print under their canonical name; they must assemble alike.
        let canonical = isa::form_of(&insns[0]).expect("the sample selects a form").mnemonic;
        let spelled = text.replacen(canonical, form.mnemonic, 1);
        assert_eq!(assemble(&spelled), Ok(insns), "{form:?} spelled {spelled}");
    }
}

#[test]
fn errors_carry_their_line() {
    use AsmErrorKind::*;
    let text = |text: &str| text.to_string();
    let cases = [
        ("mov %r0, 1\nfrob %r0\nexit", 2, UnknownMnemonic(text("frob"))),
        ("mov %r0, 1\nexit\nja nowhere", 3, UndefinedLabel(text("nowhere"))),
        ("\n\nmov %r11, 1", 3, NoSuchRegister(text("11"))),
        ("add %r1\nexit", 1, OperandCount { mnemonic: text("add"), takes: vec![2], given: 1 }),
        ("exit %r0", 1, OperandCount { mnemonic: text("exit"), takes: vec![0], given: 1 }),
        ("# comment\nmov %r0, 0x100000000", 2, ImmediateOutOfRange { text: text("0x100000000"), bits: 32 }),
        ("again:\nexit\nagain:\nexit", 3, DuplicateLabel { name: text("again"), first: 1 }),
        ("ldxw %r0, [%r1+40000]", 1, OffsetOutOfRange(text("+40000"))),
    ];
    for (source, line, kind) in cases {
        let error = assemble(source).expect_err(source);
        assert_eq!(error.line, line, "{source}: {error}");
        assert_eq!(error.kind, kind, "{source}: {error}");
    }
}

#[test]
fn any_slot_round_trips_through_text() {
    for opc in 0..=u8::MAX {
        for (dst, src) in [(0, 0), (1, 2), (10, 1), (11, 0), (0, 15)] {
            for off in [0, 1, 8, -1] {
                for imm in [0, 1, 16, 64, -1, i32::MIN] {
                    let insn = Insn::new(opc, dst, src, off, imm);
                    let text = disassemble(&[insn]);
                    assert_eq!(assemble(&text), Ok(vec![insn]), "{insn:?} printed as {text}");
                }
            }
        }
    }
}

#[test]
fn every_prefix_of_every_line_is_handled_without_panic() {
    let sources = fs::read_dir(conformance_dir())
        .expect("tests/conformance exists")
        .filter_map(|entry| fs::read_to_string(entry.ok()?.path()).ok())
        .filter_map(|text| section(&text, "asm"));
    for source in sources {
        for line in source.lines() {
            for (end, _) in line.char_indices() {
                let _ = assemble(&line[..end]);
            }
        }
    }
}
