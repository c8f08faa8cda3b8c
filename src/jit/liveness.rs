//! Which registers some later instruction may still read: where nothing
//! does, the JIT may leave a register's value unwritten when it fuses
//! instructions (see `x86_64::Fusion`).
//!
//! A backward pass over the program's edges, repeated until nothing
//! changes. It errs towards "live": a local call reads every register, and
//! a function that may be called returns r0-r5 as well as r0, since its
//! caller sees the argument registers as the callee left them.

use crate::isa::*;
use crate::scratch::Reused;

/// r0-r5: what a called function's `exit` hands back to its caller.
const RETURNED: Regs = Regs::R0.union(Regs::ARGS);

/// For each slot, the registers (r0-r9, as bits) that some instruction
/// after it may read before writing them. `called_from` is the first slot
/// whose `exit` may return to a caller (the entry function's end, or 0
/// when some local call enters the entry function).
pub(super) fn live_after(insns: &[Insn], called_from: usize) -> Reused<u16> {
    let mut live_in = Reused::filled(insns.len() + 1, Regs::NONE);
    let mut live_out = Reused::filled(insns.len(), Regs::NONE);
    let mut changed = true;
    while changed {
        changed = false;
        for pc in (0..insns.len()).rev() {
            let insn = insns[pc];
            let next = if insn.opc == LDDW { pc + 2 } else { pc + 1 };
            let falls_through = !matches!(insn.opc, EXIT | JA | JA32);
            let mut out = Regs::NONE;
            if falls_through {
                out |= live_in[next.min(insns.len())];
            }
            if let Some(to) = insn.jump_target(pc) {
                out |= live_in[to];
            }
            let read = match insn.opc {
                EXIT if pc >= called_from => RETURNED,
                _ => insn.reads(),
            };
            let live = read | (out - insn.writes());
            live_out[pc] = out;
            if live != live_in[pc] {
                live_in[pc] = live;
                changed = true;
            }
        }
    }
    live_out.iter().map(|regs| regs.bits()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    fn live(source: &str, called_from: usize) -> Vec<u16> {
        live_after(&assemble(source).expect("test source assembles"), called_from).to_vec()
    }

    #[test]
    fn a_register_is_live_until_its_last_read_on_any_path() {
        let after = live(
            "mov %r1, 1\n\
             mov %r2, 2\n\
             jeq %r1, 0, +2\n\
             mov %r0, %r2\n\
             exit\n\
             mov %r0, 0\n\
             exit",
            usize::MAX,
        );
        assert_eq!(after, [0b10, 0b110, 0b100, 0b1, 0, 0b1, 0]);
    }

    #[test]
    fn loops_keep_what_the_next_turn_reads() {
        // r3 is read at the loop's head, written at its end.
        let after = live(
            "mov %r3, 5\n\
             mov %r0, %r3\n\
             sub %r3, 1\n\
             jne %r3, 0, -3\n\
             exit",
            usize::MAX,
        );
        assert_eq!(after, [0b1000, 0b1001, 0b1001, 0b1001, 0]);
    }

    #[test]
    fn calls_and_returns_err_towards_live() {
        // A local call reads everything; a callee's exit hands back r0-r5;
        // a helper call reads r1-r5 and writes r0.
        let after = live(
            "mov %r7, 7\n\
             call local +1\n\
             exit\n\
             mov %r0, 0\n\
             exit",
            3,
        );
        assert_eq!(after[0] & 1 << 7, 1 << 7);
        assert_eq!(after[3], RETURNED.bits());
        let after = live("mov %r0, 1\ncall 0x10\nexit", usize::MAX);
        assert_eq!(after[0], 0b11_1110);
    }
}
