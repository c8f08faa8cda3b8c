//! How each memory access is checked: left out where what is known of
//! its base register proves it allowed (see [`super::facts`]), else the
//! likely place (the input, or the stack for a frame-relative address)
//! inline and the rest out of line; and which input-checked accesses share
//! one check of the bytes they span.
//!
//! The walk that follows the facts also learns which registers may be read
//! before anything wrote them, which map lookups the code makes itself
//! ([`super::lookups`]) and which helpers it calls without a run state
//! ([`super::direct_calls`]); it remembers the registers spilled to the
//! stack in a straight run, so that one reloaded is known again.

use super::BOUND_SLOTS;
use super::direct_calls::{self, DirectCall};
use super::facts::{AccessPlace, Facts, Ids, Value};
use super::flow::Flow;
use super::lookups::{self, MapLookup};
use crate::isa::*;
use crate::program::Program;
use crate::scratch::{Reused, reused};

/// How a memory access is checked on its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Check {
    /// Not at all: provably in the current frame, in the input, or in a
    /// region.
    None,
    /// The input inline; the stack and the regions out of line.
    Input,
    /// The stack inline, as `r10 + end <= stack_top` where the access is
    /// `[r10 + end - size, r10 + end)` with `end - size >= -512`; the
    /// input and the regions out of line.
    Stack { end: i32 },
    /// An XDP context load (`xdp_context::CONTEXT_LOAD`) whose base is not
    /// known to be the block: inline, that it is the block's address; when
    /// it is not, the load faults.
    Context,
}

/// Input-checked accesses through the same base register, unchanged, in
/// one straight run: one inline check of the bytes they span covers them
/// all, as the input is contiguous. When it fails, a copy of the code from
/// the first access to the last, checking each access on its own, runs
/// instead, so that a fault is still the first access's that faults.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group {
    pub(crate) first: usize,
    pub(crate) last: usize,
    /// The span, `[base + lo, base + hi)`.
    pub(crate) lo: i32,
    pub(crate) hi: i32,
    members: u32,
}

impl Group {
    /// The bytes the span covers, which names its input bound slot.
    // The aarch64 backend checks each access on its own.
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    pub(crate) fn span(&self) -> u32 {
        (self.hi - self.lo) as u32
    }
}

/// Widenings of one loop head's candidate before it starts afresh instead:
/// a candidate only widens, and few widenings reach what a loop keeps.
const MAX_WIDENINGS: u8 = 6;

/// Instructions walked, as a multiple of the program's length, before the
/// analysis gives up on candidates and starts every loop head afresh: loops
/// settle by re-walking their own ranges, which nested or overlapping loops
/// could otherwise multiply.
const MAX_WALKS: usize = 8;

/// A merged check spans at most this many bytes.
const MAX_SPAN: i32 = 4096;

/// How the access at one instruction slot is checked.
#[derive(Clone, Copy)]
pub(crate) struct AccessCheck {
    /// How this memory access is checked on its own.
    pub(crate) check: Check,
    /// A group's check covers this access.
    pub(crate) covered: bool,
    /// The group this access leads.
    pub(crate) leads: Option<u32>,
    /// The group this input-checked access joined.
    member_of: Option<u32>,
}

reused!(AccessCheck, Option<MapLookup>, Option<DirectCall>, Option<Facts>, Option<Regs>);

/// The candidate invariant of each slot some jump goes back to, once the
/// walk has reached it: of a loop head, or of a slot the walk in the
/// program's order reaches before some jump that closes no loop.
struct Candidates {
    /// For each instruction slot, the index of its entry below (`u32::MAX`
    /// where no jump goes back to).
    slot: Reused<u32>,
    facts: Reused<Option<Facts>>,
    /// How often each candidate has been widened.
    widenings: Reused<u8>,
    /// The last slot with a back edge to each loop head: past it, the
    /// walk has settled that loop.
    last_back: Reused<usize>,
    /// For each loop head whose loop lies in a short run from it to its
    /// last back edge that makes no memory access and no call and that
    /// nothing else jumps back into: the registers the run may write that
    /// are worth no widening ([`forgettable`]). What is known inside such
    /// a loop decides no check, so its candidate starts as the state first
    /// arriving with those registers unknown, which each turn fits at once
    /// unless others change, rather than widening turn by turn with a walk
    /// of the loop each time.
    forgets: Reused<Option<Regs>>,
}

/// Of the registers that `run` (a loop that checks nothing) writes, those
/// worth no widening: kept are those two registers compare (the facts
/// learnt may bound a counter, as against the length), those set to
/// constants, and those anything kept is computed from.
fn forgettable(run: &[Insn]) -> Regs {
    let mut writes = Regs::NONE;
    let mut kept = Regs::NONE;
    for insn in run {
        writes |= insn.writes();
        if matches!(insn.class(), BPF_JMP | BPF_JMP32) && insn.opc & BPF_X != 0 && insn.jump_offset().is_some() {
            kept |= insn.reads();
        } else if matches!(insn.opc, MOV64_IMM | MOV32_IMM | LDDW) {
            kept |= insn.writes();
        }
    }
    loop {
        let before = kept;
        for insn in run {
            if !(insn.writes() & kept).is_empty() {
                kept |= insn.reads();
            }
        }
        if kept == before {
            return writes - kept;
        }
    }
}

/// The longest run from a loop head to its last back edge whose candidate
/// can start with what it writes unknown: longer runs are rarely free of
/// memory accesses, and not worth reading through for each loop head.
const SHORT_LOOP: usize = 64;

impl Candidates {
    fn new(program: &Program, flow: &Flow) -> Candidates {
        let mut heads = 0;
        let slot: Reused<u32> = flow
            .landings
            .iter()
            .map(|landing| {
                if !landing.jumped_back_to {
                    return u32::MAX;
                }
                heads += 1;
                heads - 1
            })
            .collect();
        let mut last_back = Reused::filled(heads as usize, 0);
        for (pc, insn) in program.insns().iter().enumerate() {
            if let Some(to) = insn.jump_target(pc).filter(|&to| to <= pc)
                && let Some(last) = last_back.get_mut(slot[to] as usize)
            {
                *last = pc;
            }
        }
        let heads = heads as usize;
        let mut forgets = Reused::filled(heads, None);
        let insns = program.insns();
        for (head, landing) in flow.landings.iter().enumerate() {
            let entry = slot[head] as usize;
            if !landing.loop_head || last_back[entry].saturating_sub(head) >= SHORT_LOOP {
                continue;
            }
            let run = &insns[head..=last_back[entry]];
            let checks_nothing = run.iter().enumerate().all(|(at, insn)| {
                !matches!(insn.class(), BPF_LDX | BPF_ST | BPF_STX)
                    && !insn.is_packet_load()
                    && insn.opc != CALL
                    && insn.opc != CALLX
                    && (at == 0 || !flow.landings[head + at].jumped_back_to)
            });
            if checks_nothing {
                forgets[entry] = Some(forgettable(run));
            }
        }
        Candidates { slot, facts: Reused::filled(heads, None), widenings: Reused::filled(heads, 0), last_back, forgets }
    }

    /// Makes the candidate of `head` (which has one) cover `state`: joined
    /// with it where no loop comes back (not a loop head in `flow`: what
    /// arrives joins, as at a target of forward jumps), else widened until
    /// `state` fits it, or started afresh, which everything fits, after
    /// too many widenings. Returns whether it changed.
    fn cover(&mut self, head: usize, state: &Facts, flow: &Flow, ids: &mut Ids) -> bool {
        let slot = self.slot[head] as usize;
        let Some(candidate) = self.facts[slot].as_mut() else {
            return false;
        };
        if state.fits(candidate) {
            return false;
        }
        if !flow.landings[head].loop_head {
            candidate.join(state, ids);
            if state.fits(candidate) {
                return true;
            }
        }
        loop {
            if self.widenings[slot] >= MAX_WIDENINGS {
                *candidate = Facts::fresh();
                return true;
            }
            self.widenings[slot] += 1;
            candidate.widen(state, ids);
            if state.fits(candidate) {
                return true;
            }
        }
    }
}

/// Where the walk of [`Checks::walk`] starts again when a loop head's
/// candidate widens: the loop head, and what the walk had decided and
/// carried when it first reached it.
struct Resume {
    head: usize,
    /// The state arriving at the head from before the loop.
    arriving: Facts,
    /// Where this loop head's share of the walk's saved `incoming` starts.
    incoming_at: usize,
    incoming_len: usize,
    groups: usize,
    bound_used: [bool; BOUND_SLOTS],
    any_check: bool,
    read_unwritten: u16,
}

/// Registers stored as 8-byte words into the current frame in one straight
/// run of the walk, so that a register loaded from such a slot is known
/// again (clang spills the pointers it keeps across helper calls): each
/// entry `(slot, value)` says the word at `r10 + slot` holds `value`.
/// Forgotten where runs join, at calls that may write the stack, and by
/// any store that may overlap the slot.
#[derive(Default)]
struct Spills([Option<(i64, Value)>; SPILLS]);

/// At most this many spilled values are remembered at once.
const SPILLS: usize = 4;

impl Spills {
    /// Follows a store of `size` bytes to `place`, of `stored` when it is
    /// an 8-byte register store.
    fn store(&mut self, place: AccessPlace, size: usize, stored: Option<Value>) {
        let AccessPlace::Frame(start) = place else {
            // The input and the maps' regions lie apart from the stack;
            // anything else may be in it.
            if !matches!(place, AccessPlace::Input | AccessPlace::MapValue { .. }) {
                *self = Spills::default();
            }
            return;
        };
        for entry in &mut self.0 {
            if entry.is_some_and(|(slot, _)| slot < start.saturating_add(size as i64) && start < slot + 8) {
                *entry = None;
            }
        }
        if let Some(value) = stored.filter(|&value| value != Value::Unknown)
            && let Some(free) = self.0.iter_mut().find(|entry| entry.is_none())
        {
            *free = Some((start, value));
        }
    }

    /// The value an 8-byte load from `place` reads, if known.
    fn load(&self, place: AccessPlace) -> Option<Value> {
        let AccessPlace::Frame(start) = place else { return None };
        self.0.iter().flatten().find(|&&(slot, _)| slot == start).map(|&(_, value)| value)
    }
}

/// The checks of a program's accesses.
pub(crate) struct Checks {
    /// For each instruction slot (nothing to check where there is no
    /// access).
    pub(crate) accesses: Reused<AccessCheck>,
    pub(crate) groups: Vec<Group>,
    /// For the group an access leads: the last slot its copy spans (past
    /// the last access of every group the copy starts).
    pub(crate) copy_end: Vec<usize>,
    /// The span (access size, or group span) each input bound slot is for;
    /// sizes 1, 2, 4 and 8 in slots 0 to 3.
    pub(crate) bounds: Vec<u32>,
    /// Which slots some check reads.
    pub(crate) bound_used: [bool; BOUND_SLOTS],
    /// Does some access need a check at all?
    pub(crate) any_check: bool,
    /// r0-r9 (bits) that some instruction may read before anything wrote
    /// them: the code sets these to 0 first, as the interpreter starts.
    pub(crate) read_unwritten: u16,
    /// For each instruction slot, the map lookup the code makes itself
    /// instead of calling the helper there, if any.
    pub(crate) lookups: Reused<Option<MapLookup>>,
    /// For each instruction slot, the helper call the code makes there
    /// without a run state, if any ([`direct_calls`]).
    pub(crate) direct_calls: Reused<Option<DirectCall>>,
    /// Does the code still call a helper that may stop the run?
    pub(crate) stopping_helpers: bool,
}

impl Checks {
    /// Plans the checks of `program`'s accesses.
    pub(crate) fn plan(program: &Program, flow: &Flow) -> Checks {
        let unchecked = AccessCheck { check: Check::None, covered: false, leads: None, member_of: None };
        let mut checks = Checks {
            accesses: Reused::filled(program.insns().len(), unchecked),
            groups: Vec::new(),
            copy_end: Vec::new(),
            bounds: vec![1, 2, 4, 8],
            bound_used: [false; BOUND_SLOTS],
            any_check: false,
            read_unwritten: 0,
            lookups: Reused::filled(program.insns().len(), None),
            direct_calls: Reused::filled(program.insns().len(), None),
            stopping_helpers: false,
        };
        checks.plan_checks(program, flow, !(flow.entry_is_jumped_to || flow.entry_is_called));
        checks.plan_groups();
        checks.stopping_helpers = lookups::stopping_helpers_remain(program, &checks.lookups, &checks.direct_calls);
        checks
    }

    /// Decides each access's check from what is known of the registers
    /// (see [`super::facts`]), followed along the program's edges: joined where
    /// forward edges meet, fresh at function starts, and at a loop head a
    /// candidate invariant, first the state arriving from before the loop
    /// (with what a short loop that checks nothing writes unknown).
    /// A state arriving along a back edge that the candidate does not
    /// cover widens it, and the walk goes back to the loop head, to walk
    /// the loop again from what it had decided and carried there, until
    /// the loop settles; so each loop settles on its own range rather than
    /// by walks over the whole program. Should that take too long, loop
    /// heads start afresh instead, which always holds.
    fn plan_checks(&mut self, program: &Program, flow: &Flow, entry_known: bool) {
        let mut ids = Ids::new();
        // What each instruction reads, looked up once for every walk.
        let reads: Reused<Regs> = program.insns().iter().map(Insn::reads_verified).collect();
        let budget = MAX_WALKS * program.insns().len();
        let mut candidates = Candidates::new(program, flow);
        if !self.walk(program, flow, &reads, entry_known, Some(&mut candidates), budget, &mut ids) {
            self.walk(program, flow, &reads, entry_known, None, usize::MAX, &mut ids);
        }
    }

    /// One walk over the program for [`Checks::plan_checks`], with each
    /// loop head's candidate, or with every loop head afresh. Returns
    /// whether it settled every loop within `budget` instructions walked.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        program: &Program,
        flow: &Flow,
        reads: &[Regs],
        entry_known: bool,
        mut candidates: Option<&mut Candidates>,
        budget: usize,
        ids: &mut Ids,
    ) -> bool {
        let insns = program.insns();
        // A walk starts from no decisions.
        for access in &mut self.accesses {
            access.check = Check::None;
            access.member_of = None;
        }
        self.lookups.fill(None);
        self.direct_calls.fill(None);
        self.groups.clear();
        self.bound_used = [false; BOUND_SLOTS];
        self.any_check = false;
        self.read_unwritten = 0;
        // Function starts are ascending.
        let function_start = |pc: usize| program.functions().binary_search(&pc).is_ok();
        // The facts forward jumps bring to targets not reached yet, joined
        // (few at a time: a linear search beats hashing).
        let mut incoming: Vec<(usize, Facts)> = Vec::new();
        let take = |incoming: &mut Vec<(usize, Facts)>, pc: usize| {
            let at = incoming.iter().position(|&(to, _)| to == pc)?;
            Some(incoming.swap_remove(at).1)
        };
        // The loops being walked, innermost last, and the `incoming` each
        // saved at its head.
        let mut resumes: Vec<Resume> = Vec::new();
        let mut saved: Vec<(usize, Facts)> = Vec::new();
        let mut facts = if entry_known { Facts::entry(program.program_type()) } else { Facts::fresh() };
        // Can control fall into `pc` from the instruction before?
        let mut falls_in = true;
        // The open group of input-checked accesses through each register.
        let mut open: [Option<u32>; REG_SLOTS] = [None; REG_SLOTS];
        // Set when the walk goes back to a loop head: its candidate.
        let mut resumed: Option<Facts> = None;
        // Registers spilled in this straight run.
        let mut spills = Spills::default();
        let mut walked = 0;
        let mut pc = 0;
        while pc < insns.len() {
            walked += 1;
            if walked > budget {
                return false;
            }
            if let Some(candidate) = resumed.take() {
                open = [None; REG_SLOTS];
                spills = Spills::default();
                facts = candidate;
            } else if flow.landings[pc].target {
                open = [None; REG_SLOTS];
                spills = Spills::default();
                // What arrives, joined in place: facts are large to move.
                match (falls_in, take(&mut incoming, pc)) {
                    (true, Some(jumped)) => facts.join(&jumped, ids),
                    (false, Some(jumped)) => facts = jumped,
                    (true, None) => {}
                    // Dead code: nothing reaches it.
                    (false, None) => facts = Facts::fresh(),
                }
                if pc == 0 && entry_known {
                    // As the entry sets them up: nothing jumps here.
                } else if function_start(pc) {
                    facts = Facts::fresh();
                } else if flow.landings[pc].jumped_back_to {
                    match candidates.as_deref_mut() {
                        None => facts = Facts::fresh(),
                        Some(candidates) => {
                            let slot = candidates.slot[pc] as usize;
                            match &candidates.facts[slot] {
                                Some(_) => {
                                    candidates.cover(pc, &facts, flow, ids);
                                }
                                None => {
                                    let mut candidate = facts;
                                    if let Some(written) = candidates.forgets[slot] {
                                        candidate.forget(written);
                                    }
                                    candidates.facts[slot] = Some(candidate);
                                }
                            }
                            // Loops the walk has left behind stay settled.
                            while resumes
                                .last()
                                .is_some_and(|resume| candidates.last_back[candidates.slot[resume.head] as usize] < pc)
                            {
                                resumes.pop();
                            }
                            let incoming_at = resumes.last().map_or(0, |last| last.incoming_at + last.incoming_len);
                            saved.truncate(incoming_at);
                            saved.extend_from_slice(&incoming);
                            resumes.push(Resume {
                                head: pc,
                                arriving: facts,
                                incoming_at,
                                incoming_len: incoming.len(),
                                groups: self.groups.len(),
                                bound_used: self.bound_used,
                                any_check: self.any_check,
                                read_unwritten: self.read_unwritten,
                            });
                            facts = candidates.facts[slot].expect("set above");
                        }
                    }
                }
            }
            let insn = insns[pc];
            let class = insn.class();
            self.read_unwritten |= facts.read_unwritten(reads[pc]);
            falls_in = true;
            match insn.opc {
                CALL | CALLX => {
                    self.lookups[pc] = lookups::plan(program, &facts, insn);
                    self.direct_calls[pc] = direct_calls::plan(program, &facts, insn);
                    // The code's own lookups and the direct calls write no
                    // stack; anything else may, through a pointer.
                    if self.lookups[pc].is_none() && self.direct_calls[pc].is_none() {
                        spills = Spills::default();
                    }
                    facts = facts.after_call();
                    if let Some(lookup) = self.lookups[pc] {
                        facts.returned_map_value(lookup.value_size, lookup.writable);
                    }
                    open = [None; REG_SLOTS];
                }
                EXIT => {
                    open = [None; REG_SLOTS];
                    spills = Spills::default();
                    falls_in = false;
                }
                _ if class == BPF_JMP || class == BPF_JMP32 => {
                    // The end of a straight run.
                    open = [None; REG_SLOTS];
                    if let Some(to) = insn.jump_target(pc) {
                        let mut taken = facts;
                        taken.assume(insn, true);
                        if to > pc {
                            match incoming.iter_mut().find(|(at, _)| *at == to) {
                                Some((_, earlier)) => earlier.join(&taken, ids),
                                None => incoming.push((to, taken)),
                            }
                        } else if let Some(candidates) = candidates.as_deref_mut()
                            && candidates.slot[to] != u32::MAX
                            && candidates.cover(to, &taken, flow, ids)
                        {
                            // A back edge to a loop head (a function's start
                            // has no candidate: always afresh) that its
                            // candidate did not cover: walk the loop again.
                            let Some(at) = resumes.iter().rposition(|resume| resume.head == to) else {
                                return false;
                            };
                            resumes.truncate(at + 1);
                            let resume = &resumes[at];
                            // What fits the old candidate may not fit the new.
                            candidates.cover(to, &resume.arriving, flow, ids);
                            incoming.clear();
                            incoming.extend_from_slice(
                                &saved[resume.incoming_at..resume.incoming_at + resume.incoming_len],
                            );
                            for access in &mut self.accesses[to..=pc] {
                                access.check = Check::None;
                                access.member_of = None;
                            }
                            self.lookups[to..=pc].fill(None);
                            self.direct_calls[to..=pc].fill(None);
                            self.groups.truncate(resume.groups);
                            self.bound_used = resume.bound_used;
                            self.any_check = resume.any_check;
                            self.read_unwritten = resume.read_unwritten;
                            resumed = candidates.facts[candidates.slot[to] as usize];
                            pc = to;
                            continue;
                        }
                    }
                    if insn.opc == JA || insn.opc == JA32 {
                        falls_in = false;
                    } else {
                        facts.assume(insn, false);
                    }
                }
                _ => {
                    let access = match class {
                        BPF_LDX => Some((insn.src, false)),
                        BPF_ST | BPF_STX => Some((insn.dst, true)),
                        _ => None,
                    };
                    let mut reloaded = None;
                    if let Some((base, write)) = access {
                        let size = access_size(insn.opc);
                        if class == BPF_LDX && insn.imm != 0 {
                            self.plan_context_load(&facts, pc, base);
                        } else {
                            self.plan_access(&facts, &mut open, pc, base, insn.off, size, write, program);
                        }
                        let place = facts.place(base, insn.off, size);
                        if write {
                            let stored = (insn.opc == STXDW).then(|| facts.value(insn.src));
                            spills.store(place, size, stored);
                        } else if insn.opc == LDXDW {
                            reloaded = spills.load(place);
                        }
                    } else if insn.is_packet_load() {
                        // Checked against the input's bound for its size.
                        self.any_check = true;
                        self.bound_used[access_size(insn.opc).trailing_zeros() as usize] = true;
                    }
                    // A register written closes its group.
                    if let Some(written) = facts.step(insns, pc, ids) {
                        open[written as usize & 15] = None;
                    }
                    if let Some(value) = reloaded {
                        facts.reload(insn.dst, value);
                    }
                    if insn.opc == LDDW {
                        pc += 1;
                    }
                }
            }
            pc += 1;
        }
        true
    }

    /// A context load reads the block when its base is the block's
    /// address, as the facts may know.
    fn plan_context_load(&mut self, facts: &Facts, pc: usize, base: u8) {
        if facts.value(base) != Facts::context() {
            self.accesses[pc].check = Check::Context;
            // The check compares with the input's address.
            self.any_check = true;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_access(
        &mut self,
        facts: &Facts,
        open: &mut [Option<u32>; REG_SLOTS],
        pc: usize,
        base: u8,
        off: i16,
        size: usize,
        write: bool,
        program: &Program,
    ) {
        let frame = STACK_FRAME_SIZE as i64;
        let check = match facts.place(base, off, size) {
            AccessPlace::Frame(start) => {
                if start >= -frame && start <= -(size as i64) {
                    // [r10 + start, r10 + start + size) is inside [r10 - 512, r10).
                    Check::None
                } else if start >= -frame && start <= i32::MAX as i64 - 8 {
                    Check::Stack { end: (start + size as i64) as i32 }
                } else {
                    Check::Input
                }
            }
            AccessPlace::Input => Check::None,
            // Inside the value, which lies in the map's region.
            AccessPlace::MapValue { start, size: value_size, writable }
                if start >= 0 && start + size as i64 <= i64::from(value_size) && (writable || !write) =>
            {
                Check::None
            }
            AccessPlace::MapValue { .. } => Check::Input,
            AccessPlace::Address(addr) => {
                let allowed = program
                    .regions()
                    .iter()
                    .any(|region| region.contains(addr, size as u64) && (region.writable || !write));
                if allowed { Check::None } else { Check::Input }
            }
            AccessPlace::Unknown => Check::Input,
        };
        self.accesses[pc].check = check;
        if check == Check::None {
            return;
        }
        self.any_check = true;
        self.bound_used[size.trailing_zeros() as usize] = true;
        if check != Check::Input {
            return;
        }
        let (lo, hi) = (off as i32, off as i32 + size as i32);
        let base_index = base as usize & 15;
        if let Some(index) = open[base_index] {
            let group = &mut self.groups[index as usize];
            let (lo, hi) = (group.lo.min(lo), group.hi.max(hi));
            if hi - lo <= MAX_SPAN {
                *group = Group { lo, hi, last: pc, members: group.members + 1, ..*group };
                self.accesses[pc].member_of = Some(index);
                return;
            }
        }
        let index = self.groups.len() as u32;
        open[base_index] = Some(index);
        self.accesses[pc].member_of = Some(index);
        self.groups.push(Group { first: pc, last: pc, lo, hi, members: 1 });
    }

    /// Keeps the groups of two or more accesses whose span has (or can
    /// have) an input bound slot, and sizes their copies.
    fn plan_groups(&mut self) {
        for (index, group) in self.groups.iter().enumerate() {
            if group.members < 2 {
                continue;
            }
            let span = (group.hi - group.lo) as u32;
            let slot = match self.bounds.iter().position(|&bound| bound == span) {
                Some(slot) => slot,
                None if self.bounds.len() < BOUND_SLOTS => {
                    self.bounds.push(span);
                    self.bounds.len() - 1
                }
                None => continue,
            };
            self.bound_used[slot] = true;
            self.accesses[group.first].leads = Some(index as u32);
            for access in &mut self.accesses[group.first + 1..=group.last] {
                access.covered |= access.member_of == Some(index as u32);
            }
        }
        // A copy runs instead of the code from its group's first access
        // on, without the merged checks of the groups starting inside it,
        // so it must reach past their last accesses too. (Groups are in
        // order of their first access, each within one straight run.)
        self.copy_end = self.groups.iter().map(|group| group.last).collect();
        for index in 0..self.groups.len() {
            let mut end = self.groups[index].last;
            for later in &self.groups[index + 1..] {
                if later.first > end {
                    break;
                }
                end = end.max(later.last);
            }
            self.copy_end[index] = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_proves_every_access_of_the_classifier() {
        use crate::helpers::Helpers;
        use crate::program::Config;
        // Each read follows a comparison of its end with the length, some
        // through offsets that differ by path (VLAN tag or not) or come
        // from the packet (the IPv4 header length).
        let object = include_bytes!("../../examples/classifier.o");
        let program = Program::from_elf(object, None, &Helpers::new(), &Config::default()).expect("loads");
        let checks = Checks::plan(&program, &Flow::new(&program));
        let loads: Vec<usize> =
            (0..program.insns().len()).filter(|&pc| program.insns()[pc].class() == BPF_LDX).collect();
        assert_eq!(loads.len(), 11);
        for pc in loads {
            assert_eq!(checks.accesses[pc].check, Check::None, "instruction {pc}");
        }
        assert!(!checks.any_check);
    }

    /// The checks the analysis plans for the program in the ELF `object`,
    /// loaded with Linux's helpers.
    fn planned(object: &[u8]) -> (Program, Checks) {
        use crate::helpers::Helpers;
        use crate::program::Config;
        let program = Program::from_elf(object, None, &Helpers::linux(), &Config::default()).expect("loads");
        let checks = Checks::plan(&program, &Flow::new(&program));
        (program, checks)
    }

    #[test]
    fn xdp_examples_need_no_checks() {
        // Each packet access follows a comparison with `data_end`; each
        // access through a looked-up map value follows its NULL check; the
        // lookups are the code's own; dnat's packet pointer, spilled to the
        // stack around its csum_diff calls, is known again when reloaded;
        // the context loads go through r1, or a copy, known as the block.
        for (name, object) in [
            ("counters", &include_bytes!("../../examples/xdp/counters.o")[..]),
            ("dnat", &include_bytes!("../../examples/xdp/dnat.o")[..]),
            ("ping", &include_bytes!("../../examples/xdp/ping.o")[..]),
            ("redirect", &include_bytes!("../../examples/xdp/redirect.o")[..]),
            ("truncate", &include_bytes!("../../examples/xdp/truncate.o")[..]),
            ("vlan_pop", &include_bytes!("../../examples/xdp/vlan_pop.o")[..]),
        ] {
            let (program, checks) = planned(object);
            let (proved, checked) = accesses(&program, &checks);
            assert!(proved > 0, "{name}");
            assert_eq!(checked, Vec::<usize>::new(), "{name}: checked");
            let lookups = program.insns().iter().filter(|insn| insn.opc == CALL && insn.imm == 1).count();
            assert_eq!(checks.lookups.iter().flatten().count(), lookups, "{name}: every lookup the code's own");
        }
    }

    /// How many of an XDP program's accesses the analysis proves, its
    /// context loads among them, and which it checks.
    fn accesses(program: &Program, checks: &Checks) -> (usize, Vec<usize>) {
        let (mut proved, mut checked) = (0, Vec::new());
        for (pc, insn) in program.insns().iter().enumerate() {
            if !matches!(insn.class(), BPF_LDX | BPF_ST | BPF_STX) {
                continue;
            }
            match checks.accesses[pc].check {
                Check::None => proved += 1,
                _ => checked.push(pc),
            }
        }
        (proved, checked)
    }

    #[test]
    fn debian_xdp_filters_need_no_checks() {
        // libxdp1's xdp-filter objects parse IPv6 extension headers in
        // code placed after the rest, which jumps back into the shared
        // TCP and UDP code: jumps back that close no loop. The header
        // lengths are a byte shifted by a register. (`xdpfilt_*_all` keeps
        // `data_end` on the stack across paths that join, where the
        // analysis forgets what the stack holds: its checks stay.)
        let (mut filters, mut jumps_back) = (0, 0);
        for kind in ["eth", "ip", "tcp", "udp"] {
            for mode in ["alw", "dny"] {
                let path = format!("/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_{mode}_{kind}.o");
                let object = std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error} (package libxdp1)"));
                let (program, checks) = planned(&object);
                let flow = Flow::new(&program);
                jumps_back += flow.landings.iter().filter(|landing| landing.jumped_back_to).count();
                assert!(!flow.landings.iter().any(|landing| landing.loop_head), "{path}: no loop");
                let (proved, checked) = accesses(&program, &checks);
                assert!(proved > 0, "{path}");
                assert_eq!(checked, Vec::<usize>::new(), "{path}: checked");
                filters += 1;
            }
        }
        assert_eq!(filters, 8);
        assert!(jumps_back > 0, "some filter jumps back");
    }

    #[test]
    fn analysis_proves_pointer_guards_as_clang_emits_them() {
        // The benchmark's programs as C filters write them: the end is
        // `pkt + len`, and each read follows `if (p + n > end) return`, on
        // pointers moved by the VLAN tag and the IPv4 header length, and
        // (the checksum) in a loop that walks the packet two bytes a turn.
        // Built by clang at its default -mcpu (v1) and at v3.
        for (name, object, reads) in [
            ("classifier v1", &include_bytes!("../../benches/capi/classifier.v1.o")[..], 7),
            ("classifier v3", &include_bytes!("../../benches/capi/classifier.v3.o")[..], 7),
            ("checksum v1", &include_bytes!("../../benches/capi/checksum.v1.o")[..], 3),
            ("checksum v3", &include_bytes!("../../benches/capi/checksum.v3.o")[..], 3),
        ] {
            let (program, checks) = planned(object);
            let loads: Vec<usize> =
                (0..program.insns().len()).filter(|&pc| program.insns()[pc].class() == BPF_LDX).collect();
            assert_eq!(loads.len(), reads, "{name}");
            for pc in loads {
                assert_eq!(checks.accesses[pc].check, Check::None, "{name}: instruction {pc}");
            }
            assert!(!checks.any_check, "{name}");
        }
    }

    #[test]
    fn pointer_guards_prove_what_they_cover_and_no_more() {
        use crate::helpers::Helpers;
        use crate::jit::JitProgram;
        use crate::program::Config;
        use crate::testing::engines;
        use std::sync::Arc;
        // end = pkt + len; if (pkt + 4 > end) return; then reads ending at
        // byte 4 (proved) and byte 5 (one past: checked); the same with the
        // end moved down by 1, and through a signed comparison.
        let guarded = |guard: Insn, end_moved: i32| {
            vec![
                Insn::new(MOV64_REG, 3, 1, 0, 0), // 0: r3 = pkt
                Insn::new(ADD64_REG, 3, 2, 0, 0), // 1: r3 = end
                Insn::new(ADD64_IMM, 3, 0, 0, end_moved),
                Insn::new(MOV64_REG, 4, 1, 0, 0), // 3: r4 = pkt
                Insn::new(ADD64_IMM, 4, 0, 0, 4), // 4: r4 = pkt + 4
                Insn::new(MOV64_IMM, 0, 0, 0, 0),
                guard,                       // 6: leave unless r4 <= r3
                Insn::new(LDXW, 0, 1, 0, 0), // 7: bytes 0-3
                Insn::new(LDXH, 5, 1, 2, 0), // 8: bytes 2-3
                Insn::new(LDXW, 5, 1, 1, 0), // 9: bytes 1-4: past the guard
                Insn::new(EXIT, 0, 0, 0, 0),
            ]
        };
        let unsigned = Insn::new(JGT_REG, 4, 3, 3, 0);
        let signed = Insn::new(JSGE_REG, 3, 4, 1, 0); // go on when end >= r4
        let exit_after_signed = Insn::new(JA, 0, 0, 3, 0);
        // An unsigned comparison with `end - 1` proves nothing: on an empty
        // input (address 0) that end wraps to the top of memory.
        for (name, signed_guard, end_moved, proved) in [
            ("unsigned", false, 0, [true, true, false]),
            ("unsigned, end - 1", false, -1, [false, false, false]),
            ("signed", true, 0, [true, true, false]),
            ("signed, end - 1", true, -1, [true, true, true]),
        ] {
            let mut insns = guarded(if signed_guard { signed } else { unsigned }, end_moved);
            if signed_guard {
                // `if (end >= p) goto reads; else return 0`.
                insns.insert(7, exit_after_signed);
            }
            let reads = if signed_guard { [8, 9, 10] } else { [7, 8, 9] };
            let config = Config::default();
            let program = Arc::new(Program::load(&encode_program(&insns), &Helpers::new(), &config).expect("verifies"));
            let checks = Checks::plan(&program, &Flow::new(&program));
            let found: Vec<bool> = reads.iter().map(|&pc| checks.accesses[pc].check == Check::None).collect();
            assert_eq!(found, proved, "{name}");
            let jit = JitProgram::compile(program.clone()).expect("compiles");
            for len in 0..8 {
                let input: Vec<u8> = (1..=len as u8).collect();
                let result = engines::assert_agree(&program, &jit, &input, &format_args!("{name}, {len} bytes"));
                if len == 4 && end_moved == 0 {
                    let error = result.expect_err("the read past the guard faults");
                    assert_eq!(error.pc, reads[2], "{name}");
                }
            }
        }
    }

    #[test]
    fn loops_settle_inside_loops_and_keep_their_proofs() {
        use crate::helpers::Helpers;
        use crate::jit::JitProgram;
        use crate::program::Config;
        use crate::testing::engines;
        use std::sync::Arc;
        // An outer loop walks the input a byte a turn behind a guard of its
        // offset against the length; an inner counted loop in its body
        // settles first, then the outer loop's back edge widens its head
        // and the walk goes back there, inner loop and all. The read the
        // guard covers stays proved; the one a byte further stays checked.
        let insns = [
            Insn::new(MOV64_IMM, 3, 0, 0, 0), // 0: r3 = 0
            Insn::new(MOV64_IMM, 0, 0, 0, 0), // 1: r0 = 0
            Insn::new(MOV64_REG, 4, 3, 0, 0), // 2: outer head: r4 = r3
            Insn::new(ADD64_IMM, 4, 0, 0, 1), // 3: r4 = r3 + 1
            Insn::new(JGT_REG, 4, 2, 11, 0),  // 4: leave unless r3 + 1 <= len
            Insn::new(MOV64_REG, 5, 1, 0, 0), // 5: r5 = pkt
            Insn::new(ADD64_REG, 5, 3, 0, 0), // 6: r5 = pkt + r3
            Insn::new(LDXB, 6, 5, 0, 0),      // 7: byte r3: proved
            Insn::new(MOV64_IMM, 7, 0, 0, 2), // 8: r7 = 2
            Insn::new(ADD64_REG, 0, 6, 0, 0), // 9: inner head: r0 += r6
            Insn::new(SUB64_IMM, 7, 0, 0, 1), // 10: r7 -= 1
            Insn::new(JNE_IMM, 7, 0, -3, 0),  // 11: back to 9
            Insn::new(LDXB, 8, 5, 1, 0),      // 12: byte r3 + 1: checked
            Insn::new(ADD64_REG, 0, 8, 0, 0), // 13
            Insn::new(ADD64_IMM, 3, 0, 0, 1), // 14: r3 += 1
            Insn::new(JLT_IMM, 3, 0, -14, 6), // 15: back to 2 while r3 < 6
            Insn::new(EXIT, 0, 0, 0, 0),      // 16
        ];
        let program =
            Arc::new(Program::load(&encode_program(&insns), &Helpers::new(), &Config::default()).expect("verifies"));
        let checks = Checks::plan(&program, &Flow::new(&program));
        assert_eq!(checks.accesses[7].check, Check::None);
        assert_eq!(checks.accesses[12].check, Check::Input);
        let jit = JitProgram::compile(program.clone()).expect("compiles");
        for len in 0..9 {
            let input: Vec<u8> = (1..=len as u8).collect();
            let result = engines::assert_agree(&program, &jit, &input, &format_args!("{len} bytes"));
            // The read a byte past the guard faults on the last byte.
            if (1..7).contains(&len) {
                assert_eq!(result.expect_err("faults").pc, 12, "{len} bytes");
            } else {
                assert!(result.is_ok(), "{len} bytes");
            }
        }
    }

    #[test]
    fn a_loop_counting_down_settles_and_keeps_what_was_known_before_it() {
        use crate::helpers::Helpers;
        use crate::jit::JitProgram;
        use crate::program::Config;
        use crate::testing::engines;
        use std::sync::Arc;
        // A counter coming down from 20, a step a turn, widens its loop
        // head's candidate once per step unless it goes down to 0 at once;
        // past MAX_WIDENINGS the head would start afresh and forget that the
        // input holds at least 8 bytes, which proves the read after the loop.
        let insns = [
            Insn::new(JLT_IMM, 2, 0, 6, 8),    // 0: leave unless len >= 8
            Insn::new(MOV64_IMM, 4, 0, 0, 20), // 1: r4 = 20
            Insn::new(MOV64_IMM, 0, 0, 0, 0),  // 2: r0 = 0
            Insn::new(ADD64_REG, 0, 4, 0, 0),  // 3: loop head: r0 += r4
            Insn::new(SUB64_IMM, 4, 0, 0, 1),  // 4: r4 -= 1
            Insn::new(JNE_IMM, 4, 0, -3, 0),   // 5: back to 3 until r4 is 0
            Insn::new(LDXDW, 0, 1, 0, 0),      // 6: bytes 0-7: proved
            Insn::new(EXIT, 0, 0, 0, 0),       // 7
        ];
        let program =
            Arc::new(Program::load(&encode_program(&insns), &Helpers::new(), &Config::default()).expect("verifies"));
        let checks = Checks::plan(&program, &Flow::new(&program));
        assert_eq!(checks.accesses[6].check, Check::None);
        assert!(!checks.any_check);
        let jit = JitProgram::compile(program.clone()).expect("compiles");
        for len in 0..10 {
            let input: Vec<u8> = (1..=len as u8).collect();
            engines::assert_agree(&program, &jit, &input, &format_args!("{len} bytes")).expect("runs");
        }
    }

    #[test]
    fn a_loop_that_checks_nothing_forgets_only_what_it_writes() {
        use crate::helpers::Helpers;
        use crate::jit::JitProgram;
        use crate::program::Config;
        use crate::testing::engines;
        use std::sync::Arc;
        // A loop with no memory access moves one copy of the input's
        // address on by 3 + 2 + 1 bytes and leaves the other alone: after
        // it, a read of the first 8 bytes through the copy left alone is
        // proved by the guard before the loop; one through the moved copy
        // is checked, and faults on inputs of 8 to 13 bytes.
        let insns = [
            Insn::new(JLT_IMM, 2, 0, 8, 8),   // 0: leave unless len >= 8
            Insn::new(MOV64_REG, 3, 1, 0, 0), // 1: r3 = pkt
            Insn::new(MOV64_REG, 5, 1, 0, 0), // 2: r5 = pkt
            Insn::new(MOV64_IMM, 4, 0, 0, 3), // 3: r4 = 3
            Insn::new(ADD64_REG, 3, 4, 0, 0), // 4: loop head: r3 += r4
            Insn::new(SUB64_IMM, 4, 0, 0, 1), // 5: r4 -= 1
            Insn::new(JNE_IMM, 4, 0, -3, 0),  // 6: back to 4 until r4 is 0
            Insn::new(LDXDW, 0, 5, 0, 0),     // 7: bytes 0-7: proved
            Insn::new(LDXDW, 0, 3, 0, 0),     // 8: bytes 6-13: checked
            Insn::new(EXIT, 0, 0, 0, 0),      // 9
        ];
        let program =
            Arc::new(Program::load(&encode_program(&insns), &Helpers::new(), &Config::default()).expect("verifies"));
        let checks = Checks::plan(&program, &Flow::new(&program));
        assert_eq!(checks.accesses[7].check, Check::None);
        assert_eq!(checks.accesses[8].check, Check::Input);
        let jit = JitProgram::compile(program.clone()).expect("compiles");
        for len in 0..16 {
            let input: Vec<u8> = (1..=len as u8).collect();
            let result = engines::assert_agree(&program, &jit, &input, &format_args!("{len} bytes"));
            if (8..14).contains(&len) {
                assert_eq!(result.expect_err("faults").pc, 8, "{len} bytes");
            } else {
                assert!(result.is_ok(), "{len} bytes");
            }
        }
    }

    #[test]
    fn analysis_elides_frame_and_region_checks_only() {
        use crate::helpers::Helpers;
        use crate::image::Region;
        use crate::program::Config;
        static DATA: [u8; 16] = [0; 16];
        let start = DATA.as_ptr() as u64;
        let config = Config {
            regions: vec![Region { start, len: 16, writable: false, ..Region::default() }],
            ..Config::default()
        };
        let insns = [
            Insn::new(STXDW, 10, 1, -8, 0),         // 0: in the frame
            Insn::new(MOV64_REG, 2, 10, 0, 0),      // 1: r2 = r10
            Insn::new(ADD64_IMM, 2, 0, 0, -16),     // 2: r2 = r10 - 16
            Insn::new(LDXDW, 0, 2, 8, 0),           // 3: r10 - 8: in the frame
            Insn::new(LDXDW, 0, 2, 16, 0),          // 4: r10 + 0: a caller's frame, maybe
            Insn::new(LDDW, 3, 0, 0, start as i32), // 5
            Insn::new(0, 0, 0, 0, (start >> 32) as i32),
            Insn::new(LDXW, 0, 3, 12, 0), // 7: in the region
            Insn::new(STW, 3, 0, 12, 0),  // 8: read-only region
            Insn::new(LDXW, 0, 3, 13, 0), // 9: past the region
            Insn::new(LDXB, 0, 1, 0, 0),  // 10: the input, probably
            Insn::new(EXIT, 0, 0, 0, 0),
        ];
        let program = Program::load(&encode_program(&insns), &Helpers::new(), &config).expect("verifies");
        let planned = Checks::plan(&program, &Flow::new(&program));
        let checks: Vec<Check> = [0, 3, 4, 7, 8, 9, 10].iter().map(|&pc| planned.accesses[pc].check).collect();
        assert_eq!(
            checks,
            [Check::None, Check::None, Check::Stack { end: 8 }, Check::None, Check::Input, Check::Input, Check::Input]
        );
        assert_eq!(planned.bound_used[..4], [true, false, true, true]);
    }
}
