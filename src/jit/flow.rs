//! Where control goes in a program, as the plans and the code generator
//! need it: which instructions are jump targets and loop heads, what the
//! program calls, which registers it names, and, for a program whose runs
//! never loop, how long a run can still be from each instruction.

use crate::isa::*;
use crate::program::Program;
use crate::scratch::{Reused, reused};

/// Where control can arrive at one instruction slot.
#[derive(Clone, Copy, Default)]
pub(crate) struct Landing {
    /// Some jump or local call lands here (function starts included).
    pub(crate) target: bool,
    /// Some jump from here or further on lands here, so a walk in the
    /// program's order reaches this slot before all its ways in.
    pub(crate) jumped_back_to: bool,
    /// Some such jump closes a loop: a loop head.
    pub(crate) loop_head: bool,
}

reused!(Landing);

/// The control flow of a program.
pub(crate) struct Flow {
    /// For each instruction slot, where control arrives.
    pub(crate) landings: Reused<Landing>,
    /// eBPF registers any instruction names.
    pub(crate) used: [bool; REG_SLOTS],
    pub(crate) local_calls: bool,
    pub(crate) helper_calls: bool,
    /// Are there jumps or calls at all? Without, the program is one
    /// straight run and its count is known where it ends.
    pub(crate) branches: bool,
    /// Does some jump go back (where the budget is checked)?
    // The aarch64 backend checks at every jump back.
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    pub(crate) jumps_back: bool,
    /// First slot after the entry function.
    pub(crate) entry_end: usize,
    /// Does some local call enter the entry function (recursion)? Then its
    /// `exit` must look at the depth.
    pub(crate) entry_is_called: bool,
    /// Does some jump land on the first instruction? Then what is known
    /// there is not only what the entry sets up.
    pub(crate) entry_is_jumped_to: bool,
    /// For a program with branches but without local calls or loops: for
    /// each slot, the most instructions a run can still execute from
    /// there, its own included (see [`longest_runs`]). Empty for other
    /// programs.
    // The aarch64 backend does not count in DAG mode.
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    pub(crate) to_exit: Reused<u32>,
    /// For each slot inside some loop (from a loop head to a jump that
    /// closes it), the slot after the loop around it that reaches furthest; for
    /// other slots, the slot itself or one before. Empty without loops.
    // The aarch64 backend subtracts the count before every jump.
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    loop_end: Reused<u32>,
}

impl Flow {
    pub(crate) fn new(program: &Program) -> Flow {
        let insns = program.insns();
        let mut landings = Reused::filled(insns.len(), Landing::default());
        for &start in program.functions() {
            landings[start].target = true;
        }
        let mut used = [false; REG_SLOTS];
        let mut local_calls = false;
        let mut helper_calls = false;
        let mut branches = false;
        let mut entry_is_called = false;
        let mut entry_is_jumped_to = false;
        // Jumps that close loops, as (loop head, jump) pairs.
        let mut back_edges = Reused::new();
        let mut jumps_back = false;
        let mut pc = 0;
        while pc < insns.len() {
            let insn = insns[pc];
            // Fields a form does not use are 0, naming r0, which is always
            // set up.
            used[insn.dst as usize & 15] = true;
            used[insn.src as usize & 15] = true;
            match insn.opc {
                LDDW => pc += 1,
                CALL if insn.src == CALL_LOCAL => {
                    local_calls = true;
                    entry_is_called |= insn.local_call_target(pc) == Some(0);
                }
                CALL | CALLX => helper_calls = true,
                _ => {}
            }
            let jump = insn.jump_target(pc);
            branches |= matches!(insn.class(), BPF_JMP | BPF_JMP32) && insn.opc != EXIT;
            if let Some(to) = jump {
                landings[to].target = true;
                if to <= pc {
                    landings[to].jumped_back_to = true;
                    jumps_back = true;
                    if program.closes_loop(pc, to) {
                        landings[to].loop_head = true;
                        back_edges.push((to, pc));
                    }
                }
                entry_is_jumped_to |= to == 0;
            }
            pc += 1;
        }
        // Only a program with branches counts by it: one straight run is
        // counted where it ends.
        let counted_by_runs = branches && !local_calls && back_edges.is_empty();
        Flow {
            loop_end: loop_ends(insns.len(), &back_edges),
            to_exit: if counted_by_runs { longest_runs(insns, jumps_back) } else { Reused::new() },
            landings,
            used,
            local_calls,
            helper_calls,
            branches,
            jumps_back,
            entry_end: program.functions().get(1).copied().unwrap_or(insns.len()),
            entry_is_called,
            entry_is_jumped_to,
        }
    }

    /// Does the jump from `pc` to `to` leave every loop around `pc`? Then,
    /// in a loop, it is taken at most once per entry to the loop.
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    pub(crate) fn leaves_loops(&self, pc: usize, to: usize) -> bool {
        self.loop_end.get(pc).is_some_and(|&end| end as usize > pc && to >= end as usize)
    }

    /// Can control reach `pc` only from the instruction before?
    pub(crate) fn inner(&self, pc: usize) -> bool {
        pc < self.landings.len() && !self.landings[pc].target
    }
}

/// [`Flow::loop_end`] from the back edges, (loop head, jump) pairs.
fn loop_ends(len: usize, back_edges: &[(usize, usize)]) -> Reused<u32> {
    if back_edges.is_empty() {
        return Reused::new();
    }
    let mut end = Reused::filled(len, 0u32);
    for &(head, jump) in back_edges {
        end[head] = end[head].max(jump as u32 + 1);
    }
    // The furthest end of the loops that start at or before each slot.
    let mut furthest = 0;
    for slot in &mut end {
        furthest = furthest.max(*slot);
        *slot = furthest;
    }
    end
}

/// For a program without local calls or loops: from each slot, the most
/// instructions a run executes until it exits (an lddw counts once, as the
/// interpreter counts it; a helper call is one instruction). Each slot's
/// count needs its successors' first: the program's order backwards gives
/// them when no jump goes back, else a depth-first search's postorder.
fn longest_runs(insns: &[Insn], jumps_back: bool) -> Reused<u32> {
    let mut to_exit = Reused::filled(insns.len() + 2, 0u32);
    let successors = |pc: usize| -> [Option<usize>; 2] {
        let insn = insns[pc];
        match insn.opc {
            EXIT => [None, None],
            LDDW => [Some(pc + 2), None],
            JA | JA32 => [Some(insn.jump_target(pc).unwrap_or(pc + 1)), None],
            _ => [Some(pc + 1), insn.jump_target(pc)],
        }
    };
    let count = |to_exit: &mut [u32], pc: usize| {
        let [next, jump] = successors(pc);
        let longest = |next: Option<usize>| next.map_or(0, |next| to_exit[next]);
        to_exit[pc] = 1 + longest(next).max(longest(jump));
    };
    if jumps_back {
        // 0: not seen; 1: its successors pending; 2: counted.
        let mut seen = Reused::filled(insns.len() + 2, 0u8);
        let mut stack: Vec<usize> = Vec::new();
        for start in (0..insns.len()).rev() {
            stack.push(start);
            while let Some(&pc) = stack.last() {
                match seen[pc] {
                    0 if pc < insns.len() => {
                        seen[pc] = 1;
                        stack.extend(successors(pc).into_iter().flatten().filter(|&next| seen[next] == 0));
                    }
                    1 => {
                        count(&mut to_exit, pc);
                        seen[pc] = 2;
                        stack.pop();
                    }
                    _ => {
                        stack.pop();
                    }
                }
            }
        }
    } else {
        for pc in (0..insns.len()).rev() {
            count(&mut to_exit, pc);
        }
    }
    to_exit.truncate(insns.len());
    to_exit
}
