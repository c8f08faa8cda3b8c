//! Which registers some later instruction may still read: where nothing
//! does, the JIT may leave a register's value unwritten when it fuses
//! instructions (see `x86_64::Fusion`).
//!
//! A backward pass over the program's edges, repeated until nothing
//! changes. It errs towards "live": a local call reads every register, and
//! a function that may be called returns r0-r5 as well as r0, since its
//! caller sees the argument registers as the callee left them.

use super::facts::reads;
use super::jump_target;
use crate::isa::*;

/// r0-r5: what a called function's `exit` hands back to its caller.
const RETURNED: u16 = 0b11_1111;

/// The registers `insn` surely writes, as bits. Only writes that always
/// happen count: an atomic's fetch or a local call is left out.
fn writes(insn: Insn) -> u16 {
    let class = insn.class();
    match insn.opc {
        CALL if insn.src == CALL_LOCAL => 0,
        CALL | CALLX => 1,
        _ if class == BPF_ALU || class == BPF_ALU64 || class == BPF_LDX || insn.opc == LDDW => 1 << (insn.dst & 15),
        _ => 0,
    }
}

/// For each slot, the registers (r0-r9, as bits) that some instruction
/// after it may read before writing them. `called_from` is the first slot
/// whose `exit` may return to a caller (the entry function's end, or 0
/// when some local call enters the entry function).
pub(super) fn live_after(insns: &[Insn], called_from: usize) -> Vec<u16> {
    let mut live_in = vec![0u16; insns.len() + 1];
    let mut live_out = vec![0u16; insns.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for pc in (0..insns.len()).rev() {
            let insn = insns[pc];
            let next = if insn.opc == LDDW { pc + 2 } else { pc + 1 };
            let jump = jump_target(pc, insn);
            let falls_through = !matches!(insn.opc, EXIT | JA | JA32);
            let mut out = 0;
            if falls_through {
                out |= live_in[next.min(insns.len())];
            }
            if let Some(to) = jump {
                out |= live_in[to];
            }
            let read = match insn.opc {
                EXIT if pc >= called_from => RETURNED,
                _ => reads(insn),
            };
            let live = read | out & !writes(insn);
            live_out[pc] = out;
            if live != live_in[pc] {
                live_in[pc] = live;
                changed = true;
            }
        }
    }
    live_out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    fn live(source: &str, called_from: usize) -> Vec<u16> {
        live_after(&assemble(source).expect("test source assembles"), called_from)
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
        assert_eq!(after[3], RETURNED);
        let after = live("mov %r0, 1\ncall 0x10\nexit", usize::MAX);
        assert_eq!(after[0], 0b11_1110);
    }
}
