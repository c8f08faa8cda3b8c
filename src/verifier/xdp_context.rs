//! XDP's context at load time: every access through the pointer r1 holds on
//! entry is checked as the kernel checks `struct xdp_md` accesses (4-byte
//! loads of its fields, nothing else), and each becomes a context load
//! (`imm` [`xdp_context::CONTEXT_LOAD`]) of the run's context block, those
//! of `data`, `data_end` and `data_meta` 64-bit loads of the packet
//! pointers, as the kernel's context conversion does. The context is
//! followed through register copies, 8-byte stack spills of the
//! frame and the arguments of local functions.

use std::collections::BTreeMap;

use crate::error::{LoadError, LoadErrorKind};
use crate::image::xdp_context;
use crate::isa::{self, BPF_ATOMIC, BPF_DW, BPF_JA, BPF_JMP, BPF_JMP32, BPF_LDX, BPF_MEM, BPF_ST, BPF_STX, Insn};

use super::error;

/// What a register or stack slot holds, as far as the context goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Other,
    Context,
    /// The context plus a constant, or something else past arithmetic.
    Modified,
    /// The context on one path, something else on another.
    Either,
}

fn join(a: Value, b: Value) -> Value {
    match (a, b) {
        _ if a == b => a,
        (Value::Modified, _) | (_, Value::Modified) => Value::Modified,
        _ => Value::Either,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    regs: [Value; 11],
    /// 8-byte stack slots of the entry frame by offset below r10, holding
    /// something context-like (absent: `Other`).
    spills: Vec<(i16, Value)>,
}

impl State {
    fn spill(&self, off: i16) -> Value {
        self.spills.iter().find(|(slot, _)| *slot == off).map_or(Value::Other, |(_, value)| *value)
    }

    /// Forgets the slots `[off, off + size)` overlaps, then records `value`
    /// in the slot at `off` when it is an 8-byte store of something
    /// context-like.
    fn store(&mut self, off: i16, size: usize, value: Value) {
        let (start, end) = (i32::from(off), i32::from(off) + size as i32);
        self.spills.retain(|(slot, _)| i32::from(*slot) + 8 <= start || end <= i32::from(*slot));
        if size == 8 && value != Value::Other {
            self.spills.push((off, value));
        }
    }

    fn join(&self, other: &State) -> State {
        let mut regs = self.regs;
        for (reg, value) in regs.iter_mut().zip(other.regs) {
            *reg = join(*reg, value);
        }
        let mut spills: Vec<(i16, Value)> = Vec::new();
        for &(off, _) in self.spills.iter().chain(&other.spills) {
            if !spills.iter().any(|(slot, _)| *slot == off) {
                let value = join(self.spill(off), other.spill(off));
                if value != Value::Other {
                    spills.push((off, value));
                }
            }
        }
        spills.sort_unstable_by_key(|(off, _)| *off);
        State { regs, spills }
    }
}

/// Checks and rewrites every context access of a verified program. A local
/// function's arguments are what its callers pass, joined over them.
pub fn rewrite(insns: &mut [Insn]) -> Result<(), LoadError> {
    let mut entry = State { regs: [Value::Other; 11], spills: Vec::new() };
    entry.regs[1] = Value::Context;
    let mut states: Vec<Option<State>> = vec![None; insns.len()];
    let mut work = Vec::new();
    let arrive = |states: &mut Vec<Option<State>>, work: &mut Vec<usize>, pc: usize, state: &State| {
        let joined = match &states[pc] {
            Some(old) => old.join(state),
            None => state.clone(),
        };
        if states[pc].as_ref() != Some(&joined) {
            states[pc] = Some(joined);
            work.push(pc);
        }
    };
    arrive(&mut states, &mut work, 0, &entry);
    let mut rewrites = BTreeMap::new();
    while let Some(pc) = work.pop() {
        let Some(mut state) = states[pc].clone() else { continue };
        let insn = insns[pc];
        if let Some(target) = insn.local_call_target(pc) {
            let mut callee = State { regs: [Value::Other; 11], spills: Vec::new() };
            callee.regs[1..6].copy_from_slice(&state.regs[1..6]);
            arrive(&mut states, &mut work, target, &callee);
        }
        if let Some(rewritten) = step(pc, insn, &mut state)? {
            rewrites.insert(pc, rewritten);
        }
        for next in successors(pc, &insn).into_iter().flatten().filter(|&next| next < insns.len()) {
            arrive(&mut states, &mut work, next, &state);
        }
    }
    for (pc, insn) in rewrites {
        insns[pc] = insn;
    }
    Ok(())
}

fn successors(pc: usize, insn: &Insn) -> [Option<usize>; 2] {
    let class = insn.class();
    let jump = matches!(class, BPF_JMP | BPF_JMP32);
    if insn.opc == isa::EXIT {
        [None, None]
    } else if insn.opc == isa::LDDW {
        [Some(pc + 2), None]
    } else if let Some(target) = insn.jump_target(pc) {
        let unconditional = jump && insn.opc & isa::OP_MASK == BPF_JA;
        [Some(target), (!unconditional).then_some(pc + 1)]
    } else {
        [Some(pc + 1), None]
    }
}

/// Applies `insn` to `state`; returns the instruction a context load
/// becomes.
fn step(pc: usize, insn: Insn, state: &mut State) -> Result<Option<Insn>, LoadError> {
    let refuse = |kind| Err(error(pc, insn, kind));
    let class = insn.class();
    let mode = insn.opc & isa::MODE_MASK;
    let size = isa::access_size(insn.opc);
    let (dst, src) = (usize::from(insn.dst), usize::from(insn.src));
    let regs = state.regs;
    let through = |reg: usize| regs[reg];
    let mut rewritten = None;
    match class {
        BPF_LDX => {
            let value = match through(src) {
                Value::Context => {
                    if mode != BPF_MEM {
                        return refuse(LoadErrorKind::ContextAccess { off: insn.off, size });
                    }
                    let Some((off, new_size)) = xdp_context::load(insn.off, size) else {
                        return refuse(LoadErrorKind::ContextAccess { off: insn.off, size });
                    };
                    let opc = if new_size == 8 { BPF_LDX | BPF_MEM | BPF_DW } else { insn.opc };
                    rewritten = Some(Insn { opc, off, imm: xdp_context::CONTEXT_LOAD, ..insn });
                    Value::Other
                }
                Value::Modified => return refuse(LoadErrorKind::ContextModified { reg: insn.src }),
                Value::Either => return refuse(LoadErrorKind::ContextAmbiguous { reg: insn.src }),
                Value::Other if src == usize::from(isa::FRAME_REG) && size == 8 => state.spill(insn.off),
                Value::Other => Value::Other,
            };
            state.regs[dst] = value;
        }
        BPF_ST | BPF_STX => {
            match through(dst) {
                Value::Context => return refuse(LoadErrorKind::ContextAccess { off: insn.off, size }),
                Value::Modified => return refuse(LoadErrorKind::ContextModified { reg: insn.dst }),
                Value::Either => return refuse(LoadErrorKind::ContextAmbiguous { reg: insn.dst }),
                Value::Other => {}
            }
            let stored = if class == BPF_STX { through(src) } else { Value::Other };
            if dst == usize::from(isa::FRAME_REG) {
                state.store(insn.off, size, if mode == BPF_ATOMIC { Value::Other } else { stored });
            }
            if mode == BPF_ATOMIC && insn.imm & isa::ATOMIC_FETCH != 0 {
                let written = if insn.imm == isa::ATOMIC_CMPXCHG { 0 } else { src };
                state.regs[written] = Value::Other;
            }
        }
        BPF_JMP | BPF_JMP32 if matches!(insn.opc, isa::CALL | isa::CALLX) => state.regs[..6].fill(Value::Other),
        _ => {
            for reg in insn.writes().iter() {
                let reg = usize::from(reg);
                state.regs[reg] = if insn.opc == isa::MOV64_REG && insn.off == 0 {
                    through(src)
                } else if state.regs[reg] != Value::Other && insn.reads().iter().any(|read| usize::from(read) == reg) {
                    Value::Modified
                } else {
                    Value::Other
                };
            }
        }
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    /// A load from the block: marked, so that the engines read the block
    /// through it and through nothing else.
    fn context_load(source: &str) -> Insn {
        Insn { imm: xdp_context::CONTEXT_LOAD, ..assemble(source).unwrap()[0] }
    }

    fn rewritten(source: &str) -> Result<Vec<Insn>, LoadErrorKind> {
        let mut insns = assemble(source).unwrap();
        rewrite(&mut insns).map(|()| insns).map_err(|error| error.kind)
    }

    fn refused_at(source: &str) -> (usize, LoadErrorKind) {
        let mut insns = assemble(source).unwrap();
        let error = rewrite(&mut insns).unwrap_err();
        (error.pc, error.kind)
    }

    #[test]
    fn context_loads_become_loads_of_the_block() {
        let insns = rewritten(
            "mov %r6, %r1\n stxdw [%r10-8], %r6\n ldxw %r2, [%r6+4]\n ldxdw %r7, [%r10-8]\n ldxw %r3, [%r7]\n \
             ldxw %r4, [%r1+12]\n ldxw %r0, [%r1+16]\n exit",
        )
        .unwrap();
        assert_eq!(insns[2], context_load("ldxdw %r2, [%r6+32]"));
        assert_eq!(insns[4], context_load("ldxdw %r3, [%r7+24]"));
        assert_eq!(insns[5], context_load("ldxw %r4, [%r1+12]"), "ingress_ifindex keeps its offset and size");
        assert_eq!(insns[6], context_load("ldxw %r0, [%r1+16]"));
    }

    #[test]
    fn the_context_follows_function_arguments() {
        let insns = rewritten("call local +1\n exit\n ldxw %r0, [%r1+8]\n exit").unwrap();
        assert_eq!(insns[2], context_load("ldxdw %r0, [%r1+40]"));
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        let access = |off, size| LoadErrorKind::ContextAccess { off, size };
        assert_eq!(refused_at("stxw [%r1], %r2\n exit"), (0, access(0, 4)));
        assert_eq!(refused_at("mov %r0, 0\n ldxw %r0, [%r1+2]\n exit"), (1, access(2, 4)));
        assert_eq!(refused_at("ldxdw %r0, [%r1]\n exit"), (0, access(0, 8)));
        assert_eq!(refused_at("ldxw %r0, [%r1+20]\n exit"), (0, access(20, 4)), "egress_ifindex");
        assert_eq!(refused_at("ldxw %r0, [%r1+24]\n exit"), (0, access(24, 4)));
        assert_eq!(refused_at("add %r1, 4\n ldxw %r0, [%r1]\n exit"), (1, LoadErrorKind::ContextModified { reg: 1 }));
        assert_eq!(
            refused_at("jeq %r2, 0, +1\n mov %r1, %r10\n ldxw %r0, [%r1]\n exit"),
            (2, LoadErrorKind::ContextAmbiguous { reg: 1 })
        );
    }

    #[test]
    fn other_pointers_are_left_alone() {
        let source = "ldxw %r2, [%r1]\n mov %r1, %r10\n ldxdw %r0, [%r1-8]\n stxdw [%r1-8], %r0\n exit";
        let insns = rewritten(source).unwrap();
        assert_eq!(&insns[1..], &assemble(source).unwrap()[1..]);
    }
}
