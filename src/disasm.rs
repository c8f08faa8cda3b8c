//! The disassembler: instructions printed in the syntax [`crate::asm`] reads,
//! named by [`isa::form_of`]. Jumps and local calls print as relative offsets
//! (`+N`/`-N`); a slot that no form describes exactly (unknown opcode, a
//! register above r10, a nonzero field the form does not use, an lddw
//! without its second slot) prints as a raw `.insn` line, so that
//! reassembling any disassembly gives back the same bytes.

use crate::isa::{self, Form, Insn, Operands, Selector};

/// One slot as text, for error messages. An lddw shows only its low half,
/// the high half being in the next slot.
pub fn describe(insn: &Insn) -> String {
    match printable_form(insn) {
        Some(form) => format_insn(form, insn, None),
        None => raw(insn),
    }
}

/// The whole program, one instruction per line.
pub fn disassemble(insns: &[Insn]) -> String {
    let mut text = String::new();
    let mut pc = 0;
    while pc < insns.len() {
        let insn = &insns[pc];
        let high = insns.get(pc + 1).filter(|next| is_lddw_tail(next)).map(|next| next.imm);
        let line = match (printable_form(insn), high) {
            (Some(form), Some(high)) if form.is_wide() => {
                pc += 1;
                format_insn(form, insn, Some(high))
            }
            (Some(form), _) if !form.is_wide() => format_insn(form, insn, None),
            _ => raw(insn),
        };
        text.push_str(&line);
        text.push('\n');
        pc += 1;
    }
    text
}

/// The form of `insn`, if printing it loses no field.
fn printable_form(insn: &Insn) -> Option<&'static Form> {
    let form = isa::form_of(insn)?;
    let uses = form.operands.fields();
    let fits = (if uses.dst { isa::is_register(insn.dst) } else { insn.dst == 0 })
        && (if uses.src {
            isa::is_register(insn.src)
        } else {
            insn.src == 0 || matches!(form.selector, Selector::Src(_))
        })
        && (uses.off || insn.off == 0 || matches!(form.selector, Selector::Off(_)))
        && (uses.imm || insn.imm == 0 || matches!(form.selector, Selector::Imm(_)));
    fits.then_some(form)
}

/// The second slot of an lddw carries only an imm.
fn is_lddw_tail(insn: &Insn) -> bool {
    *insn == Insn::new(0, 0, 0, 0, insn.imm)
}

fn raw(insn: &Insn) -> String {
    format!(".insn opc={:#04x} dst={} src={} off={} imm={}", insn.opc, insn.dst, insn.src, insn.off, insn.imm)
}

/// `insn` in `form`; `high` is the imm of an lddw's second slot, when known.
fn format_insn(form: &Form, insn: &Insn, high: Option<i32>) -> String {
    let mnemonic = form.mnemonic;
    let (dst, src, off, imm) = (insn.dst, insn.src, insn.off, insn.imm);
    match form.operands {
        Operands::DstImm => format!("{mnemonic} %r{dst}, {}", immediate(imm)),
        Operands::DstSrc => format!("{mnemonic} %r{dst}, %r{src}"),
        Operands::Dst | Operands::CallReg => format!("{mnemonic} %r{dst}"),
        Operands::DstImm64 => format!("{mnemonic} %r{dst}, {}", lddw_value(insn, high)),
        Operands::DstMem => format!("{mnemonic} %r{dst}, {}", memory(src, off)),
        Operands::MemImm => format!("{mnemonic} {}, {}", memory(dst, off), immediate(imm)),
        Operands::MemSrc => format!("{mnemonic} {}, %r{src}", memory(dst, off)),
        Operands::Jump => format!("{mnemonic} {off:+}"),
        Operands::Jump32 => format!("{mnemonic} {imm:+}"),
        Operands::DstImmJump => format!("{mnemonic} %r{dst}, {}, {off:+}", immediate(imm)),
        Operands::DstSrcJump => format!("{mnemonic} %r{dst}, %r{src}, {off:+}"),
        Operands::CallHelper => format!("{mnemonic} {imm}"),
        Operands::PacketAbs => format!("{mnemonic} {}", immediate(imm)),
        Operands::PacketInd => format!("{mnemonic} %r{src}, {}", immediate(imm)),
        Operands::CallLocal => format!("{mnemonic} local {imm:+}"),
        Operands::Nothing => mnemonic.to_string(),
    }
}

/// Small values in decimal, large ones (masks, addresses) in hex.
fn immediate(imm: i32) -> String {
    if imm.unsigned_abs() <= 4096 {
        imm.to_string()
    } else if imm < 0 {
        format!("-{:#x}", imm.unsigned_abs())
    } else {
        format!("{imm:#x}")
    }
}

fn memory(base: u8, off: i16) -> String {
    match off {
        0 => format!("[%r{base}]"),
        _ => format!("[%r{base}{off:+}]"),
    }
}

fn lddw_value(insn: &Insn, high: Option<i32>) -> String {
    let low = insn.imm as u32;
    match isa::LDDW_PSEUDO_KEYWORDS.iter().find(|&&(src, _)| src == insn.src) {
        Some((_, name)) => match high {
            Some(0) | None => format!("{name} {}", insn.imm),
            Some(addend) => format!("{name} {}{addend:+}", insn.imm),
        },
        None => match high {
            Some(high) => format!("{:#x}", u64::from(high as u32) << 32 | u64::from(low)),
            None => format!("0x????????{low:08x}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    #[test]
    fn describes_each_kind_of_operand() {
        let cases = [
            (Insn::new(isa::ADD64_IMM, 1, 0, 0, -1), "add %r1, -1"),
            (Insn::new(isa::AND64_IMM, 1, 0, 0, -256), "and %r1, -256"),
            (Insn::new(isa::AND64_IMM, 1, 0, 0, 0xffffff), "and %r1, 0xffffff"),
            (Insn::new(isa::MOV32_IMM, 1, 0, 0, i32::MIN), "mov32 %r1, -0x80000000"),
            (Insn::new(isa::MOV64_REG, 1, 2, 8, 0), "movsx864 %r1, %r2"),
            (Insn::new(isa::BSWAP, 3, 0, 0, 16), "bswap16 %r3"),
            (Insn::new(isa::LDXW, 0, 1, 4, 0), "ldxw %r0, [%r1+4]"),
            (Insn::new(isa::STB, 10, 0, -8, 7), "stb [%r10-8], 7"),
            (Insn::new(isa::STXDW, 1, 2, 0, 0), "stxdw [%r1], %r2"),
            (Insn::new(isa::ATOMIC32, 1, 2, 4, isa::ATOMIC_ADD | isa::ATOMIC_FETCH), "lock fetch add32 [%r1+4], %r2"),
            (Insn::new(isa::JA, 0, 0, -3, 0), "ja -3"),
            (Insn::new(isa::JA32, 0, 0, 0, 1), "ja32 +1"),
            (Insn::new(isa::JEQ_IMM, 1, 0, 0, 5), "jeq %r1, 5, +0"),
            (Insn::new(isa::JSLT32_REG, 1, 2, 7, 0), "jslt32 %r1, %r2, +7"),
            (Insn::new(isa::CALL, 0, 0, 0, 5), "call 5"),
            (Insn::new(isa::CALL, 0, 1, 0, -4), "call local -4"),
            (Insn::new(isa::CALLX, 2, 0, 0, 0), "callx %r2"),
            (Insn::new(isa::EXIT, 0, 0, 0, 0), "exit"),
            (Insn::new(isa::LDDW, 0, 0, 0, 0x55667788), "lddw %r0, 0x????????55667788"),
            (Insn::new(isa::LDDW, 1, isa::LDDW_MAP_FD, 0, 3), "lddw %r1, map_fd 3"),
        ];
        for (insn, text) in cases {
            assert_eq!(describe(&insn), text);
        }
    }

    #[test]
    fn slots_no_form_fits_print_raw() {
        let cases = [
            Insn::new(0xff, 0, 0, 0, 0),
            Insn::new(isa::ADD64_IMM, 11, 0, 0, 1),
            Insn::new(isa::ADD64_IMM, 1, 0, 3, 1),
            Insn::new(isa::EXIT, 0, 0, 0, 1),
            Insn::new(isa::DIV64_REG, 1, 2, 2, 0),
            Insn::new(isa::LDDW, 1, 7, 0, 0),
        ];
        for insn in cases {
            assert!(describe(&insn).starts_with(".insn opc="), "{insn:?}");
            assert_eq!(assemble(&disassemble(&[insn])), Ok(vec![insn]));
        }
    }

    #[test]
    fn lddw_takes_two_slots_when_the_second_is_plain() {
        let program =
            [Insn::new(isa::LDDW, 0, 0, 0, -1), Insn::new(0, 0, 0, 0, 0x11), Insn::new(isa::EXIT, 0, 0, 0, 0)];
        assert_eq!(disassemble(&program), "lddw %r0, 0x11ffffffff\nexit\n");
        let value = [Insn::new(isa::LDDW, 1, isa::LDDW_MAP_VALUE, 0, 3), Insn::new(0, 0, 0, 0, -8)];
        assert_eq!(disassemble(&value), "lddw %r1, map_value 3-8\n");
        let cut_off = [Insn::new(isa::LDDW, 0, 0, 0, 1)];
        let bad_tail = [Insn::new(isa::LDDW, 0, 0, 0, 1), Insn::new(0, 1, 0, 0, 0)];
        for program in [&cut_off[..], &bad_tail[..], &value[..]] {
            assert_eq!(assemble(&disassemble(program)).as_deref(), Ok(program));
        }
    }

    #[test]
    fn lddw_pseudo_keywords_round_trip() {
        for (src, keyword) in isa::LDDW_PSEUDO_KEYWORDS {
            for (text, high) in [(format!("lddw %r1, {keyword} 3"), 0), (format!("lddw %r1, {keyword} 3-8"), -8)] {
                let insns = assemble(&text).unwrap();
                assert_eq!(insns, [Insn::new(isa::LDDW, 1, src, 0, 3), Insn::new(0, 0, 0, 0, high)]);
                assert_eq!(disassemble(&insns), format!("{text}\n"));
            }
        }
    }
}
