//! Load-time checks: everything that can be known about a program before it
//! runs. After `verify` succeeds, the interpreter and JIT may rely on:
//! every slot is a form of [`isa::FORMS`] with unused fields zero; registers
//! are r0..r10 and r10 is never written; every jump and local call lands on
//! an instruction of the same function (not the second half of an `lddw`);
//! each function ends in `exit` or `ja`; helper calls by index name a
//! registered helper. Memory accesses are checked at run time.

use crate::error::{LoadError, LoadErrorKind};
use crate::helpers::Helpers;
use crate::image::MAX_HELPER_INDEX;
use crate::isa::{self, FRAME_REG, Form, Insn, MAX_INSNS, Operands, Selector};

#[cold]
pub(crate) fn error(pc: usize, insn: Insn, kind: LoadErrorKind) -> LoadError {
    LoadError { pc, insn, kind }
}

/// Checks `insns` and returns the first instruction of each function
/// (ascending; the entry function starts at 0).
pub fn verify(insns: &[Insn], helpers: &Helpers) -> Result<Vec<usize>, LoadError> {
    if insns.is_empty() {
        return Err(error(0, Insn::default(), LoadErrorKind::Empty));
    }
    if insns.len() > MAX_INSNS {
        return Err(error(MAX_INSNS, insns[MAX_INSNS], LoadErrorKind::TooLong(insns.len())));
    }
    let lddw_tail = lddw_tails(insns)?;
    let mut functions = vec![0];
    for (pc, insn) in insns.iter().enumerate() {
        if lddw_tail[pc] {
            continue;
        }
        let form = checked_form(pc, insn)?;
        check_registers(pc, insn)?;
        if let Some(offset) = insn.jump_offset() {
            checked_target(insns, &lddw_tail, pc, offset)?;
        }
        if let Some(offset) = insn.local_call_offset() {
            let target = checked_target(insns, &lddw_tail, pc, offset).map_err(|e| {
                error(e.pc, e.insn, LoadErrorKind::CallToNonFunction { target: isa::branch_target(pc, offset) })
            })?;
            functions.push(target);
        }
        match form.operands {
            Operands::CallHelper if insn.imm as u32 >= MAX_HELPER_INDEX || helpers.get(insn.imm as u32).is_none() => {
                return Err(error(pc, *insn, LoadErrorKind::UnknownHelper(insn.imm as u32)));
            }
            Operands::DstImm64 if insn.src != isa::LDDW_IMM64 => {
                return Err(error(pc, *insn, LoadErrorKind::UnsupportedLddw(insn.src)));
            }
            _ => {}
        }
    }
    functions.sort_unstable();
    functions.dedup();
    check_function_bounds(insns, &lddw_tail, &functions)?;
    Ok(functions)
}

/// Marks the second slot of each `lddw`, checking that it exists and is empty.
fn lddw_tails(insns: &[Insn]) -> Result<Vec<bool>, LoadError> {
    let mut tail = vec![false; insns.len()];
    let mut pc = 0;
    while pc < insns.len() {
        if insns[pc].opc == isa::LDDW {
            let Some(next) = insns.get(pc + 1) else {
                return Err(error(pc, insns[pc], LoadErrorKind::LddwTruncated));
            };
            if next.opc != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                return Err(error(pc + 1, *next, LoadErrorKind::BadLddwTail));
            }
            tail[pc + 1] = true;
            pc += 2;
        } else {
            pc += 1;
        }
    }
    Ok(tail)
}

/// The form of `insn`, with every field the form does not use checked zero.
fn checked_form(pc: usize, insn: &Insn) -> Result<&'static Form, LoadError> {
    let invalid = |field: &'static str, value: i64| error(pc, *insn, LoadErrorKind::InvalidField { field, value });
    let Some(form) = isa::form_of(insn) else {
        // A known opcode with a selector no form has: name that field.
        return Err(match isa::FORMS.iter().find(|form| form.opc == insn.opc).map(|form| form.selector) {
            Some(Selector::Off(_)) => invalid("off", insn.off as i64),
            Some(Selector::Imm(_)) => invalid("imm", insn.imm as i64),
            Some(Selector::Src(_)) => invalid("src", insn.src as i64),
            _ => error(pc, *insn, LoadErrorKind::UnknownOpcode(insn.opc)),
        });
    };
    let fields = form.operands.fields();
    let uses_off = fields.off || matches!(form.selector, Selector::Off(_));
    let uses_imm = fields.imm || matches!(form.selector, Selector::Imm(_));
    let uses_src = fields.src || matches!(form.selector, Selector::Src(_));
    if !fields.dst && insn.dst != 0 {
        return Err(invalid("dst", insn.dst as i64));
    }
    if !uses_src && insn.src != 0 {
        return Err(invalid("src", insn.src as i64));
    }
    if !uses_off && insn.off != 0 {
        return Err(invalid("off", insn.off as i64));
    }
    if !uses_imm && insn.imm != 0 {
        return Err(invalid("imm", insn.imm as i64));
    }
    Ok(form)
}

fn check_registers(pc: usize, insn: &Insn) -> Result<(), LoadError> {
    for reg in [insn.dst, insn.src] {
        if !isa::is_register(reg) {
            return Err(error(pc, *insn, LoadErrorKind::BadRegister(reg)));
        }
    }
    if insn.writes().contains(FRAME_REG) {
        return Err(error(pc, *insn, LoadErrorKind::WriteToR10));
    }
    Ok(())
}

/// The instruction `pc + 1 + offset`, which must exist and start an instruction.
fn checked_target(insns: &[Insn], lddw_tail: &[bool], pc: usize, offset: i64) -> Result<usize, LoadError> {
    let target = isa::branch_target(pc, offset);
    if target < 0 || target >= insns.len() as i64 {
        return Err(error(pc, insns[pc], LoadErrorKind::JumpOutOfRange { target }));
    }
    let target = target as usize;
    if lddw_tail[target] {
        return Err(error(pc, insns[pc], LoadErrorKind::JumpIntoLddw { target }));
    }
    Ok(target)
}

/// Each function must end in `exit` or `ja`, and its jumps stay inside it:
/// falling or jumping into another function would run it on the wrong frame.
fn check_function_bounds(insns: &[Insn], lddw_tail: &[bool], functions: &[usize]) -> Result<(), LoadError> {
    let ends = functions.iter().skip(1).copied().chain([insns.len()]);
    for (&start, end) in functions.iter().zip(ends) {
        let last = if lddw_tail[end - 1] { end - 2 } else { end - 1 };
        if !matches!(insns[last].opc, isa::EXIT | isa::JA | isa::JA32) {
            return Err(error(last, insns[last], LoadErrorKind::FallsOffEnd));
        }
        for pc in start..end {
            let insn = &insns[pc];
            if lddw_tail[pc] {
                continue;
            }
            let Some(target) = insn.jump_target(pc) else { continue };
            if !(start..end).contains(&target) {
                return Err(error(pc, *insn, LoadErrorKind::CrossesFunction { target }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::*;

    fn kind_of(insns: &[Insn]) -> (usize, LoadErrorKind) {
        let e = verify(insns, &Helpers::new()).unwrap_err();
        (e.pc, e.kind)
    }

    const EXIT_INSN: Insn = Insn::new(EXIT, 0, 0, 0, 0);

    #[test]
    fn accepts_minimal_program() {
        assert_eq!(verify(&[Insn::new(MOV64_IMM, 0, 0, 0, 1), EXIT_INSN], &Helpers::new()).unwrap(), vec![0]);
    }

    #[test]
    fn rejects_each_kind_with_its_place() {
        assert_eq!(kind_of(&[]), (0, LoadErrorKind::Empty));
        assert_eq!(kind_of(&[Insn::new(0xff, 0, 0, 0, 0), EXIT_INSN]).1, LoadErrorKind::UnknownOpcode(0xff));
        assert_eq!(kind_of(&[Insn::new(MOV64_IMM, 11, 0, 0, 0), EXIT_INSN]), (0, LoadErrorKind::BadRegister(11)));
        assert_eq!(kind_of(&[EXIT_INSN, Insn::new(MOV64_IMM, 10, 0, 0, 0), EXIT_INSN]), (1, LoadErrorKind::WriteToR10));
        assert_eq!(kind_of(&[Insn::new(JA, 0, 0, 5, 0), EXIT_INSN]), (0, LoadErrorKind::JumpOutOfRange { target: 6 }));
        assert_eq!(
            kind_of(&[Insn::new(JA, 0, 0, 1, 0), Insn::new(LDDW, 0, 0, 0, 1), Insn::default(), EXIT_INSN]),
            (0, LoadErrorKind::JumpIntoLddw { target: 2 })
        );
        assert_eq!(kind_of(&[EXIT_INSN, Insn::new(LDDW, 0, 0, 0, 1)]), (1, LoadErrorKind::LddwTruncated));
        assert_eq!(kind_of(&[Insn::new(MOV64_IMM, 0, 0, 0, 0)]), (0, LoadErrorKind::FallsOffEnd));
        assert_eq!(kind_of(&[Insn::new(CALL, 0, 0, 0, 7), EXIT_INSN]), (0, LoadErrorKind::UnknownHelper(7)));
        assert_eq!(
            kind_of(&[Insn::new(CALL, 0, 1, 0, 5), EXIT_INSN]).1,
            LoadErrorKind::CallToNonFunction { target: 6 }
        );
        assert_eq!(
            kind_of(&[Insn::new(DIV64_IMM, 0, 0, 2, 1), EXIT_INSN]),
            (0, LoadErrorKind::InvalidField { field: "off", value: 2 })
        );
        assert_eq!(
            kind_of(&[Insn::new(ADD64_IMM, 0, 3, 0, 1), EXIT_INSN]),
            (0, LoadErrorKind::InvalidField { field: "src", value: 3 })
        );
        assert_eq!(
            kind_of(&[Insn::new(LE, 0, 0, 0, 8), EXIT_INSN]),
            (0, LoadErrorKind::InvalidField { field: "imm", value: 8 })
        );
        let too_long = vec![EXIT_INSN; MAX_INSNS + 1];
        assert_eq!(kind_of(&too_long), (MAX_INSNS, LoadErrorKind::TooLong(MAX_INSNS + 1)));
    }

    #[test]
    fn fetching_atomic_may_not_write_r10() {
        let insn = Insn::new(ATOMIC64, 1, 10, 0, ATOMIC_ADD | ATOMIC_FETCH);
        assert_eq!(kind_of(&[insn, EXIT_INSN]), (0, LoadErrorKind::WriteToR10));
        let plain = Insn::new(ATOMIC64, 1, 10, 0, ATOMIC_ADD);
        assert!(verify(&[plain, EXIT_INSN], &Helpers::new()).is_ok());
    }

    #[test]
    fn functions_are_closed() {
        // Entry calls the function at 3; the function jumps back into the entry.
        let call = Insn::new(CALL, 0, CALL_LOCAL, 0, 1);
        let escape = Insn::new(JA, 0, 0, -2, 0);
        assert_eq!(kind_of(&[call, EXIT_INSN, escape, EXIT_INSN]), (2, LoadErrorKind::CrossesFunction { target: 1 }));
        let falls = Insn::new(MOV64_IMM, 0, 0, 0, 0);
        assert_eq!(kind_of(&[call, falls, EXIT_INSN]), (1, LoadErrorKind::FallsOffEnd));
        assert_eq!(verify(&[call, EXIT_INSN, EXIT_INSN], &Helpers::new()).unwrap(), vec![0, 2]);
    }
}
