//! Load-time checks: everything that can be known about a program before it
//! runs. After `verify` succeeds, the interpreter and JIT may rely on:
//! every slot is a form of [`isa::FORMS`] with unused fields zero; registers
//! are r0..r10 and r10 is never written; every jump and local call lands on
//! an instruction of the same function (not the second half of an `lddw`);
//! each function ends in `exit` or `ja`; helper calls by index name a
//! registered helper; no loop is closed to every way out of the run (it
//! would only ever end on the instruction budget). Memory accesses are
//! checked at run time, and the budget stops loops that could end but do
//! not.

mod xdp_context;

pub use xdp_context::rewrite as rewrite_xdp_context;

use crate::error::{LoadError, LoadErrorKind};
use crate::helpers::Helpers;
use crate::image::MAX_HELPER_INDEX;
use crate::isa::{self, FRAME_REG, Form, Insn, MAX_INSNS, Operands, Selector};
use crate::scratch::{Reused, reused};

#[cold]
pub(crate) fn error(pc: usize, insn: Insn, kind: LoadErrorKind) -> LoadError {
    LoadError { pc, insn, kind }
}

/// What verifying a program finds out about its shape.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The first instruction of each function (ascending; the entry
    /// function starts at 0).
    pub functions: Vec<usize>,
    /// For each instruction slot, the loop it lies in: the slots of one
    /// strongly connected piece of the control-flow graph share an id,
    /// [`NO_LOOP`] elsewhere. Empty when no jump goes back.
    pub loops: Vec<u32>,
}

/// In [`Verified::loops`]: a slot in no loop.
pub const NO_LOOP: u32 = u32::MAX;

/// Checks `insns` and finds its functions and loops.
pub fn verify(insns: &[Insn], helpers: &Helpers) -> Result<Verified, LoadError> {
    if insns.is_empty() {
        return Err(error(0, Insn::default(), LoadErrorKind::Empty));
    }
    if insns.len() > MAX_INSNS {
        return Err(error(MAX_INSNS, insns[MAX_INSNS], LoadErrorKind::TooLong(insns.len())));
    }
    let lddw_tail = lddw_tails(insns)?;
    let mut jumps = Reused::filled(insns.len(), NO_JUMP);
    let mut functions = vec![0];
    for (pc, insn) in insns.iter().enumerate() {
        if lddw_tail[pc] {
            continue;
        }
        let form = checked_form(pc, insn)?;
        check_registers(pc, insn)?;
        if let Some(offset) = insn.jump_offset() {
            jumps[pc] = checked_target(insns, &lddw_tail, pc, offset)? as u32;
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
    check_function_bounds(insns, &lddw_tail, &jumps, &functions)?;
    let loops = find_loops(insns, &lddw_tail, &jumps, &functions, helpers)?;
    Ok(Verified { functions, loops })
}

/// In the table of jump targets by slot: not a jump.
const NO_JUMP: u32 = u32::MAX;

/// Where the jump at `pc` lands, from the table of checked targets.
fn jump_target(jumps: &[u32], pc: usize) -> Option<usize> {
    (jumps[pc] != NO_JUMP).then_some(jumps[pc] as usize)
}

/// Marks the second slot of each `lddw`, checking that it exists and is empty.
fn lddw_tails(insns: &[Insn]) -> Result<Reused<bool>, LoadError> {
    let mut tail = Reused::filled(insns.len(), false);
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
    let set = Form::fields_set(insn.dst != 0, insn.src != 0, insn.off != 0, insn.imm != 0);
    let stray = set & form.unused();
    if stray == 0 {
        return Ok(form);
    }
    // The first such field, in the slot's order.
    Err(if stray & Form::UNUSED_DST != 0 {
        invalid("dst", insn.dst as i64)
    } else if stray & Form::UNUSED_SRC != 0 {
        invalid("src", insn.src as i64)
    } else if stray & Form::UNUSED_OFF != 0 {
        invalid("off", insn.off as i64)
    } else {
        invalid("imm", insn.imm as i64)
    })
}

fn check_registers(pc: usize, insn: &Insn) -> Result<(), LoadError> {
    for reg in [insn.dst, insn.src] {
        if !isa::is_register(reg) {
            return Err(error(pc, *insn, LoadErrorKind::BadRegister(reg)));
        }
    }
    // An operation or a load writes its dst (see isa's forms): most
    // instructions, told without the form's lookup.
    let writes_frame = match insn.class() {
        isa::BPF_ALU | isa::BPF_ALU64 | isa::BPF_LDX => insn.dst == FRAME_REG,
        _ => insn.writes().contains(FRAME_REG),
    };
    if writes_frame {
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
fn check_function_bounds(
    insns: &[Insn],
    lddw_tail: &[bool],
    jumps: &[u32],
    functions: &[usize],
) -> Result<(), LoadError> {
    let ends = functions.iter().skip(1).copied().chain([insns.len()]);
    for (&start, end) in functions.iter().zip(ends) {
        let last = if lddw_tail[end - 1] { end - 2 } else { end - 1 };
        if !matches!(insns[last].opc, isa::EXIT | isa::JA | isa::JA32) {
            return Err(error(last, insns[last], LoadErrorKind::FallsOffEnd));
        }
        // The only function is the whole program, where every jump lands.
        if functions.len() == 1 {
            break;
        }
        for pc in start..end {
            let insn = &insns[pc];
            if lddw_tail[pc] {
                continue;
            }
            let Some(target) = jump_target(jumps, pc) else { continue };
            if !(start..end).contains(&target) {
                return Err(error(pc, *insn, LoadErrorKind::CrossesFunction { target }));
            }
        }
    }
    Ok(())
}

/// Finds the loops, and refuses one with no way out: a strongly connected
/// piece of a function's control-flow graph from which no path leads to an
/// `exit`, a legacy packet load (which ends the run outside the input) or
/// to a call that may end the run (a helper that may stop it, such as the
/// tail call, or the unwind helper). A local call returns, so it is a way
/// out only when its callee may end the run. Only code reachable from a
/// function's start is refused (of several such loops, the one that starts
/// first); the loops of code that nothing reaches are found too, for the
/// JIT's analyses, which look at every slot.
///
/// Without a jump back, the graph has no loop; most programs are such, and
/// cost only the look for one. With jumps back, only the slots between a
/// jump back and its target can be in a loop (see [`back_edge_spans`]), and
/// the search looks at those alone.
fn find_loops(
    insns: &[Insn],
    lddw_tail: &[bool],
    jumps: &[u32],
    functions: &[usize],
    helpers: &Helpers,
) -> Result<Vec<u32>, LoadError> {
    let Some(spans) = back_edge_spans(jumps) else {
        return Ok(Vec::new());
    };
    let helper_ends_run =
        |index: u32| helpers.unwind() == Some(index) || helpers.get(index).is_some_and(|h| h.may_stop);
    let any_helper_ends_run = helpers.unwind().is_some() || helpers.iter().any(|(_, helper)| helper.may_stop);
    let function_of = |pc: usize| functions.partition_point(|&start| start <= pc) - 1;
    // Does the call at `pc` (or `callx`) end the run, given which
    // functions may end it from inside?
    let call_ends_run = |pc: usize, ends_run: &[bool]| {
        let insn = &insns[pc];
        match (insn.opc, insn.src) {
            (isa::CALL, isa::CALL_HELPER) => helper_ends_run(insn.imm as u32),
            (isa::CALL, isa::CALL_LOCAL) => ends_run[function_of(isa::branch_target(pc, insn.imm.into()) as usize)],
            (isa::CALLX, _) => any_helper_ends_run,
            _ => false,
        }
    };
    // Which functions may end the run from inside: a fixed point, since
    // calls may go either way between functions.
    // A legacy packet load ends the run when it reads outside the input.
    let mut ends_run = vec![false; functions.len()];
    for pc in (0..insns.len()).filter(|&pc| !lddw_tail[pc] && insns[pc].is_packet_load()) {
        ends_run[function_of(pc)] = true;
    }
    let mut changed = any_helper_ends_run || ends_run.contains(&true);
    while changed {
        changed = false;
        for pc in (0..insns.len()).filter(|&pc| !lddw_tail[pc]) {
            let function = function_of(pc);
            if !ends_run[function] && call_ends_run(pc, &ends_run) {
                (ends_run[function], changed) = (true, true);
            }
        }
    }
    let way_out = |pc: usize| {
        let insn = &insns[pc];
        insn.opc == isa::EXIT || insn.is_packet_load() || call_ends_run(pc, &ends_run)
    };
    let mut graph = Loops::new(insns, jumps, &spans);
    for (pc, &tail) in lddw_tail.iter().enumerate() {
        if !tail && graph.may_loop(pc) {
            graph.search(pc, &way_out);
        }
    }
    if let Some(pcs) = graph.first_endless_reachable(functions) {
        return Err(error(pcs[0], insns[pcs[0]], LoadErrorKind::EndlessLoop { pcs }));
    }
    Ok(graph.loop_of.to_vec())
}

/// For each slot, one past the furthest jump back whose target is at or
/// before it; `None` when no jump goes back. A slot can be in a loop only
/// when that is past it: the way round a loop from any of its slots, `pc`,
/// comes back to `pc` or before, and the first jump of it that does so
/// lands at or before `pc` from `pc` or after.
fn back_edge_spans(jumps: &[u32]) -> Option<Reused<u32>> {
    let back = |(pc, &target): (usize, &u32)| target != NO_JUMP && target as usize <= pc;
    let first = jumps.iter().enumerate().position(back)?;
    let mut spans = Reused::filled(jumps.len(), 0u32);
    for (pc, &target) in jumps.iter().enumerate().skip(first).filter(|&jump| back(jump)) {
        let end = &mut spans[target as usize];
        *end = (*end).max(pc as u32 + 1);
    }
    let mut furthest = 0;
    for end in spans.iter_mut() {
        furthest = furthest.max(*end);
        *end = furthest;
    }
    Some(spans)
}

/// Tarjan's strongly connected components over the instructions that may
/// be in a loop ([`back_edge_spans`]), without recursion: the others are
/// each a component of their own that is no loop. A loop is refused when
/// none of its instructions is a way out and no edge leaves it (then no
/// path from it leads anywhere else), and it is reachable.
struct Loops<'a> {
    insns: &'a [Insn],
    jumps: &'a [u32],
    spans: &'a [u32],
    visits: Reused<Visit>,
    stack: Reused<u32>,
    /// The search path: an instruction, its successors that may be in a
    /// loop (looked up once, `NO_JUMP` for none) and how many of them have
    /// been followed (kept small: it can be as deep as the program).
    path: Reused<(u32, [u32; 2], u8)>,
    visited: u32,
    /// For each slot, its loop's id, as [`Verified::loops`].
    loop_of: Reused<u32>,
    loops: u32,
    /// The loops with no way out, each as its sorted slots.
    endless: Vec<Vec<usize>>,
}

#[derive(Clone, Copy, Default)]
struct Visit {
    /// Visit order plus one; 0 when not visited yet.
    order: u32,
    /// Lowest visit order reachable through the search tree and one more
    /// edge.
    low: u32,
    on_stack: bool,
}

reused!(Visit, (u32, [u32; 2], u8));

impl<'a> Loops<'a> {
    fn new(insns: &'a [Insn], jumps: &'a [u32], spans: &'a [u32]) -> Loops<'a> {
        let n = insns.len();
        let (mut stack, mut path) = (Reused::new(), Reused::new());
        stack.reserve(n);
        path.reserve(n);
        Loops {
            insns,
            jumps,
            spans,
            visits: Reused::filled(n, Visit::default()),
            stack,
            path,
            visited: 0,
            loop_of: Reused::filled(n, NO_LOOP),
            loops: 0,
            endless: Vec::new(),
        }
    }

    /// May the slot `pc` be in a loop?
    fn may_loop(&self, pc: usize) -> bool {
        self.spans[pc] as usize > pc
    }

    /// The instructions that may run after `pc`, within its function.
    fn successors(&self, pc: usize) -> [Option<usize>; 2] {
        match self.insns[pc].opc {
            isa::EXIT => [None, None],
            isa::JA | isa::JA32 => [jump_target(self.jumps, pc), None],
            isa::LDDW => [Some(pc + 2), None],
            _ => [Some(pc + 1), jump_target(self.jumps, pc)],
        }
    }

    fn enter(&mut self, pc: usize) {
        self.visited += 1;
        self.visits[pc] = Visit { order: self.visited, low: self.visited, on_stack: true };
        self.stack.push(pc as u32);
        let successors = self
            .successors(pc)
            .map(|next| next.filter(|&next| self.may_loop(next)).map_or(NO_JUMP, |next| next as u32));
        self.path.push((pc as u32, successors, 0));
    }

    fn search(&mut self, start: usize, way_out: &impl Fn(usize) -> bool) {
        if self.visits[start].order != 0 {
            return;
        }
        self.enter(start);
        while let Some(&(pc, successors, followed)) = self.path.last() {
            let pc = pc as usize;
            if let Some(&next) = successors.get(followed as usize) {
                let top = self.path.len() - 1;
                self.path[top].2 += 1;
                if next == NO_JUMP {
                    continue;
                }
                let next = next as usize;
                let seen = self.visits[next];
                if seen.order == 0 {
                    self.enter(next);
                } else if seen.on_stack {
                    self.visits[pc].low = self.visits[pc].low.min(seen.order);
                }
                continue;
            }
            self.path.pop();
            let Visit { order, low, .. } = self.visits[pc];
            if let Some(&(parent, ..)) = self.path.last() {
                self.visits[parent as usize].low = self.visits[parent as usize].low.min(low);
            }
            if low == order {
                if self.stack.last() == Some(&(pc as u32)) && !successors.contains(&(pc as u32)) {
                    // A component of one instruction that does not jump
                    // to itself is no loop. It leads on, or it is an
                    // `exit`.
                    self.visits[pc].on_stack = false;
                    self.stack.pop();
                } else {
                    self.complete(pc, way_out);
                }
            }
        }
    }

    /// Pops the component whose first visited instruction is `root`, and
    /// keeps it aside when it has no way out.
    fn complete(&mut self, root: usize, way_out: &impl Fn(usize) -> bool) {
        let first = self.stack.iter().rposition(|&pc| pc as usize == root).expect("the root is on the stack");
        let members = &self.stack[first..];
        // A successor off the stack is in another component: one that was
        // completed, or one of a slot that is in no loop.
        let leaves = |pc: usize| self.successors(pc).into_iter().flatten().any(|next| !self.visits[next].on_stack);
        if !members.iter().any(|&pc| way_out(pc as usize) || leaves(pc as usize)) {
            let mut pcs: Vec<usize> = members.iter().map(|&pc| pc as usize).collect();
            pcs.sort_unstable();
            self.endless.push(pcs);
        }
        for &pc in &self.stack[first..] {
            self.visits[pc as usize].on_stack = false;
            self.loop_of[pc as usize] = self.loops;
        }
        self.loops += 1;
        self.stack.truncate(first);
    }

    /// The loop without a way out that starts first of those some
    /// function's start reaches, if any.
    fn first_endless_reachable(&mut self, functions: &[usize]) -> Option<Vec<usize>> {
        if self.endless.is_empty() {
            return None;
        }
        let mut reached = vec![false; self.insns.len()];
        let mut todo: Vec<usize> = functions.to_vec();
        while let Some(pc) = todo.pop() {
            if !std::mem::replace(&mut reached[pc], true) {
                todo.extend(self.successors(pc).into_iter().flatten().filter(|&next| !reached[next]));
            }
        }
        self.endless.sort_unstable();
        self.endless.iter().find(|pcs| reached[pcs[0]]).cloned()
    }
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
        assert_eq!(verify(&[Insn::new(MOV64_IMM, 0, 0, 0, 1), EXIT_INSN], &Helpers::new()).unwrap().functions, vec![0]);
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
    fn of_several_fields_that_must_be_zero_the_first_is_named() {
        let invalid = |field, value| (0, LoadErrorKind::InvalidField { field, value });
        assert_eq!(kind_of(&[Insn::new(EXIT, 1, 2, 3, 4), EXIT_INSN]), invalid("dst", 1));
        assert_eq!(kind_of(&[Insn::new(EXIT, 0, 2, 3, 4), EXIT_INSN]), invalid("src", 2));
        assert_eq!(kind_of(&[Insn::new(EXIT, 0, 0, 3, 4), EXIT_INSN]), invalid("off", 3));
        assert_eq!(kind_of(&[Insn::new(EXIT, 0, 0, 0, 4), EXIT_INSN]), invalid("imm", 4));
        // A selector's field is used: div's off (0 or 1) is not stray, imm is.
        assert_eq!(kind_of(&[Insn::new(DIV64_REG, 0, 1, 1, 4), EXIT_INSN]), invalid("imm", 4));
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
        assert_eq!(verify(&[call, EXIT_INSN, EXIT_INSN], &Helpers::new()).unwrap().functions, vec![0, 2]);
    }

    fn endless(pcs: &[usize]) -> (usize, LoadErrorKind) {
        (pcs[0], LoadErrorKind::EndlessLoop { pcs: pcs.to_vec() })
    }

    #[test]
    fn loops_with_no_way_out_are_refused() {
        let ja = |off| Insn::new(JA, 0, 0, off, 0);
        let mov = Insn::new(MOV64_IMM, 0, 0, 0, 0);
        let jeq = |off| Insn::new(JEQ_IMM, 1, 0, off, 0);
        assert_eq!(kind_of(&[ja(-1), EXIT_INSN]), endless(&[0]));
        assert_eq!(kind_of(&[Insn::new(JA32, 0, 0, 0, -1), EXIT_INSN]), endless(&[0]));
        assert_eq!(kind_of(&[mov, mov, ja(-2), EXIT_INSN]), endless(&[1, 2]));
        // Two ways round, neither out.
        assert_eq!(kind_of(&[mov, jeq(1), mov, ja(-4), EXIT_INSN]), endless(&[0, 1, 2, 3]));
        // A loop with a way out, into a loop with none.
        assert_eq!(kind_of(&[jeq(-1), mov, ja(-2), EXIT_INSN]), endless(&[1, 2]));
        // An lddw inside: both of its slots are the loop's, named by its first.
        let lddw = Insn::new(LDDW, 1, 0, 0, 1);
        assert_eq!(kind_of(&[lddw, Insn::default(), ja(-3), EXIT_INSN]), endless(&[0, 2]));
        // Local calls return: a loop around one is still closed.
        let call = Insn::new(CALL, 0, CALL_LOCAL, 0, 2);
        assert_eq!(kind_of(&[call, ja(-2), EXIT_INSN, EXIT_INSN]), endless(&[0, 1]));
        // In a called function too.
        let call_next = Insn::new(CALL, 0, CALL_LOCAL, 0, 1);
        assert_eq!(kind_of(&[call_next, EXIT_INSN, mov, ja(-2)]), endless(&[2, 3]));
    }

    #[test]
    fn the_first_reachable_loop_with_no_way_out_is_named() {
        let ja = |off| Insn::new(JA, 0, 0, off, 0);
        let mov = Insn::new(MOV64_IMM, 0, 0, 0, 0);
        let jeq = |off| Insn::new(JEQ_IMM, 1, 0, off, 0);
        // Two, both reached: the one that starts first.
        assert_eq!(kind_of(&[jeq(3), mov, ja(-2), EXIT_INSN, mov, ja(-2)]), endless(&[1, 2]));
        // One that nothing reaches before one reached: the one reached.
        assert_eq!(kind_of(&[ja(2), mov, ja(-2), mov, ja(-2), EXIT_INSN]), endless(&[3, 4]));
        // A loop whose way on, through a slot in no loop, leads only into
        // a loop with no way out.
        assert_eq!(kind_of(&[mov, jeq(1), ja(-3), mov, mov, ja(-2), EXIT_INSN]), endless(&[4, 5]));
        // The same way on, to an exit: both load.
        let ok = [mov, jeq(1), ja(-3), mov, jeq(-2), EXIT_INSN];
        assert!(verify(&ok, &Helpers::new()).is_ok());
    }

    extern "C" fn returns_zero(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        0
    }

    #[test]
    fn loops_that_can_end_are_accepted() {
        let ok = |insns: &[Insn], helpers: &Helpers| verify(insns, helpers).map(|_| ()).map_err(|e| e.kind);
        let ja = |off| Insn::new(JA, 0, 0, off, 0);
        // Endless in practice, but the control-flow graph has a way out:
        // the budget stops it.
        assert_eq!(ok(&[Insn::new(JGE_IMM, 10, 0, -1, 0), EXIT_INSN], &Helpers::new()), Ok(()));
        // Unreachable: not looked at.
        assert_eq!(ok(&[EXIT_INSN, ja(-1)], &Helpers::new()), Ok(()));
        // A tail call may end the run, or a helper that may stop it, or the
        // unwind helper; from a called function too.
        let linux = Helpers::linux();
        let tail_call = Insn::new(CALL, 0, 0, 0, crate::helpers::linux::TAIL_CALL as i32);
        assert_eq!(ok(&[tail_call, ja(-2), EXIT_INSN], &linux), Ok(()));
        let call = Insn::new(CALL, 0, CALL_LOCAL, 0, 2);
        assert_eq!(ok(&[call, ja(-2), EXIT_INSN, tail_call, EXIT_INSN], &linux), Ok(()));
        let mut unwind = Helpers::new();
        unwind.register(5, "unwind", returns_zero);
        let call_unwind = Insn::new(CALL, 0, 0, 0, 5);
        assert!(matches!(ok(&[call_unwind, ja(-2), EXIT_INSN], &unwind), Err(LoadErrorKind::EndlessLoop { .. })));
        unwind.set_unwind(5);
        assert_eq!(ok(&[call_unwind, ja(-2), EXIT_INSN], &unwind), Ok(()));
        assert_eq!(ok(&[Insn::new(CALLX, 1, 0, 0, 0), ja(-2), EXIT_INSN], &unwind), Ok(()));
        assert!(ok(&[Insn::new(CALLX, 1, 0, 0, 0), ja(-2), EXIT_INSN], &Helpers::new()).is_err());
    }

    #[test]
    fn loops_are_the_pieces_control_can_come_back_to() {
        let loops = |insns: &[Insn]| verify(insns, &Helpers::new()).unwrap().loops;
        let ja = |off| Insn::new(JA, 0, 0, off, 0);
        let mov = Insn::new(MOV64_IMM, 0, 0, 0, 1);
        // No jump back: no loops looked for.
        assert_eq!(loops(&[Insn::new(JEQ_IMM, 1, 0, 1, 0), mov, EXIT_INSN]), Vec::<u32>::new());
        // Code placed after the exit that jumps back to after the jump out:
        // control never comes back to where it was.
        let out_and_back = loops(&[Insn::new(JEQ_IMM, 1, 0, 2, 0), mov, EXIT_INSN, mov, ja(-4)]);
        assert_eq!(out_and_back, [NO_LOOP; 5]);
        // A loop from 1 to 3, and one of a jump to itself in code nothing
        // reaches.
        let looped =
            loops(&[mov, Insn::new(ADD64_IMM, 0, 0, 0, 1), Insn::new(JEQ_IMM, 0, 0, 1, 9), ja(-3), EXIT_INSN, ja(-1)]);
        assert_eq!(looped[0], NO_LOOP);
        assert!(looped[1] != NO_LOOP && looped[1..4].iter().all(|&id| id == looped[1]), "{looped:?}");
        assert_eq!(looped[4], NO_LOOP);
        assert!(looped[5] != NO_LOOP && looped[5] != looped[1], "{looped:?}");
    }
}
