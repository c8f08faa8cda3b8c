//! The interpreter against the JIT: a program run in each engine over the
//! same input, compared on everything a caller can see: r0, or where and why
//! the run stopped; the instructions executed; the input and the global data
//! afterwards. The first difference is put in words.
//!
//! Results must not depend on where an engine's memory happens to be, so
//! each run gets its input between guard bytes, and a faulting address is
//! compared as a place (this far into the input, into that data section)
//! rather than as a number.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{ExecError, ExecErrorKind};
use crate::image::Region;
use crate::interp;
use crate::isa::Insn;
use crate::jit::{self, DirectCode, DirectExits, ForC, JitError, JitProgram};
use crate::program::Program;
use crate::xdp;

/// Bytes on each side of the input that no program may touch: accesses
/// just outside the input then fault in every engine, instead of landing in
/// whatever the allocator put next to it (an engine's stack, say).
const GUARD: usize = 4096;
const GUARD_BYTE: u8 = 0xa5;
/// Addresses this close to the input are described relative to it.
const NEAR_INPUT: i64 = GUARD as i64;
/// Returned values this close above a map's handle or memory are taken as
/// addresses in it.
const NEAR_MAP: u64 = 1 << 16;

/// What each compared run finds in its stack before writing it.
const STACK_BYTE: u8 = 0x5a;

/// Fills this thread's stack, which both engines run on, with one pattern.
/// The engines let a program read stack it has not written, as the kernel
/// lets privileged programs, and it then sees what earlier runs left:
/// compared runs must start from the same bytes.
pub fn reset_thread_stack() {
    interp::with_thread_stack(|stack| stack.fill(STACK_BYTE));
}

/// `program`'s direct code (see `DirectCode`), which leaves through exits
/// that [`run_direct`] reads; `None` where the backend gives none or a run
/// needs Rust around it.
pub(crate) fn compile_direct(program: Arc<Program>) -> Result<Option<DirectCode>, JitError> {
    let exits = DirectExits {
        stopped: direct_exits::stopped as DirectStopped as usize as u64,
        refused: direct_exits::refused as DirectRefused as usize as u64,
        succeeded: direct_exits::succeeded as DirectSucceeded as usize as u64,
        sink: 0,
        pending: std::ptr::from_ref(&direct_exits::PENDING) as u64,
    };
    Ok(match jit::compile_for_c(program, &exits)? {
        ForC::Direct(code) => Some(code),
        ForC::Jit(_) => None,
    })
}

/// Runs `jit`'s direct code over `memory`, as a C caller calls it, on native
/// stack that holds what [`reset_thread_stack`] leaves in the interpreter's.
pub(crate) fn run_direct(direct: &DirectCode, memory: &mut [u8]) -> Result<u64, ExecError> {
    let code = direct.code();
    // SAFETY: the direct code is a `ubpf_jit_fn`: a C function of the input
    // and its length.
    let entry = unsafe { std::mem::transmute::<*const u8, extern "C" fn(*mut u8, usize) -> u64>(code.as_ptr()) };
    // Each run takes the other way out of a success, so both are compared.
    direct_exits::PENDING.fetch_xor(1, Ordering::Relaxed);
    direct_exits::fill_stack_below();
    let r0 = entry(memory.as_mut_ptr(), memory.len());
    match direct_exits::STOPPED.take() {
        Some((status, value)) => Err(JitProgram::stopped(direct.program(), status, value)),
        None => Ok(r0),
    }
}

type DirectStopped = extern "C" fn(u64, u64, u64) -> u64;
type DirectRefused = extern "C" fn(*mut u8, usize, u64) -> u64;
type DirectSucceeded = extern "C" fn(u64) -> u64;

/// Where the direct code of [`compile_direct`] goes off its fast path.
mod direct_exits {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;

    use super::STACK_BYTE;
    use crate::memory::STACK_SIZE;

    thread_local! {
        /// The status and value of this thread's last stopped run.
        pub(super) static STOPPED: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
    }
    /// The word the code reads after a success, 0 or 1.
    pub(super) static PENDING: AtomicUsize = AtomicUsize::new(0);

    pub(super) extern "C" fn stopped(_sink: u64, status: u64, value: u64) -> u64 {
        STOPPED.set(Some((status, value)));
        u64::MAX
    }

    pub(super) extern "C" fn refused(mem: *mut u8, len: usize, _sink: u64) -> u64 {
        panic!("the direct code refused the input at {mem:?} of {len} bytes, which a slice is")
    }

    pub(super) extern "C" fn succeeded(value: u64) -> u64 {
        value
    }

    /// Fills the native stack below the caller's with [`STACK_BYTE`], where
    /// the direct code the caller calls next keeps its stack: a frame below
    /// this one's top, its bytes not written again before that call.
    #[inline(never)]
    pub(super) fn fill_stack_below() {
        let mut bytes = [STACK_BYTE; 2 * STACK_SIZE];
        std::hint::black_box(&mut bytes);
    }
}

/// One engine's run of a case.
#[derive(Debug)]
pub struct Run {
    pub result: Result<u64, ExecError>,
    /// The instructions executed, when the engine counted them.
    pub executed: Option<u64>,
    /// The input memory afterwards.
    pub memory: Vec<u8>,
    /// The global data sections afterwards.
    pub data: Vec<Vec<u8>>,
    /// Where the input was (0 when empty, as r1 is).
    input_base: u64,
    /// The program's regions, its data sections first.
    regions: Vec<Region>,
    /// Where the program's maps are: each map's handle and, for a map
    /// with memory of its own, where that memory starts.
    map_bases: Vec<u64>,
    guards_intact: bool,
}

/// What an engine's run gives: its result and, when it counts them, the
/// instructions it executed.
pub type Counted = (Result<u64, ExecError>, Option<u64>);

/// The input of both runs, between guard bytes, at one address: a value
/// that holds an input address (r1, say) is then the same in both engines.
struct GuardedInput<'a> {
    input: &'a [u8],
    /// Writes what depends on the input's address (an XDP context block's
    /// pointers) into each fresh copy.
    lay_out: &'a dyn Fn(&mut [u8]),
    buffer: Vec<u8>,
}

impl<'a> GuardedInput<'a> {
    fn new(input: &'a [u8], lay_out: &'a dyn Fn(&mut [u8])) -> GuardedInput<'a> {
        GuardedInput { input, lay_out, buffer: vec![GUARD_BYTE; GUARD + input.len() + GUARD] }
    }

    /// Runs `engine` (which runs `program`) over a fresh copy of the input.
    fn run(&mut self, program: &Program, engine: impl FnOnce(&mut [u8]) -> Counted) -> Run {
        let len = self.input.len();
        self.buffer.fill(GUARD_BYTE);
        let memory = &mut self.buffer[GUARD..GUARD + len];
        memory.copy_from_slice(self.input);
        (self.lay_out)(memory);
        reset_thread_stack();
        let input_base = if len == 0 { 0 } else { memory.as_ptr() as u64 };
        let (result, executed) = engine(memory);
        let memory = self.buffer[GUARD..GUARD + len].to_vec();
        let guards_intact =
            self.buffer[..GUARD].iter().chain(&self.buffer[GUARD + len..]).all(|&byte| byte == GUARD_BYTE);
        let data = (0..).map_while(|section| program.data(section)).collect();
        let map_bases = program
            .maps()
            .iter()
            .flat_map(|map| [Some(map.handle()), map.region().map(|region| region.start)])
            .flatten()
            .collect();
        let regions = program.regions().to_vec();
        Run { result, executed, memory, data, input_base, regions, map_bases, guards_intact }
    }
}

/// A faulting address in terms that do not depend on where an engine's
/// memory happens to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultPlace {
    /// This far from the input's start.
    Input(i64),
    /// In or just past a region (a data section): its index and the offset.
    Region(usize, u64),
    /// Where no engine's memory is (the first 4 GiB, or not a user address):
    /// a value used as an address, the same in every engine.
    Absolute(u64),
    /// Elsewhere: a stack, whose address differs between engines.
    Elsewhere,
}

/// How a run ended, comparable between engines.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Returned(u64),
    /// An address this far from the program's map base `base` (see
    /// [`Run::returned`]), or its low 32 bits.
    ReturnedAddress {
        base: usize,
        offset: u64,
        low_half: bool,
    },
    /// `kind` with its address zeroed, which `place` gives instead.
    Stopped {
        pc: usize,
        insn: Insn,
        kind: ExecErrorKind,
        place: Option<FaultPlace>,
    },
}

impl Run {
    fn place(&self, addr: u64) -> FaultPlace {
        let from_input = addr.wrapping_sub(self.input_base) as i64;
        // A region's allocation ends at the next multiple of 8.
        let region =
            self.regions.iter().position(|region| addr.wrapping_sub(region.start) < region.len.next_multiple_of(8));
        if let Some(index) = region {
            FaultPlace::Region(index, addr - self.regions[index].start)
        } else if (-NEAR_INPUT..self.memory.len() as i64 + NEAR_INPUT).contains(&from_input) {
            FaultPlace::Input(from_input)
        } else if !(1 << 32..1 << 47).contains(&addr) {
            FaultPlace::Absolute(addr)
        } else {
            FaultPlace::Elsewhere
        }
    }

    /// The address a fault names, if it names one.
    fn fault_address(&self) -> Option<u64> {
        match self.result.as_ref().err()?.kind {
            ExecErrorKind::OutOfBounds { addr, .. }
            | ExecErrorKind::ReadOnly { addr, .. }
            | ExecErrorKind::HelperMemory { addr, .. }
            | ExecErrorKind::NotARecord { addr, .. } => Some(addr),
            ExecErrorKind::NotAMap { value, .. } | ExecErrorKind::BadPacketPointer { value } => Some(value),
            _ => None,
        }
    }

    /// Where the regions, the maps and the input start, in a fixed order.
    fn bases(&self) -> impl Iterator<Item = u64> + '_ {
        let regions = self.regions.iter().map(|region| region.start);
        regions.chain(self.map_bases.iter().copied()).chain([self.input_base])
    }

    /// A returned value, or the place it points at when it is an address
    /// near one of the program's maps (or the low half of one): each
    /// engine's load has maps of its own, at different addresses.
    fn returned(&self, r0: u64) -> Outcome {
        // The nearest base below: a map's memory may lie just above another
        // map's handle.
        let nearest = |offset_from: &dyn Fn(u64) -> u64| {
            let offsets = self.map_bases.iter().map(|&base| offset_from(base)).enumerate();
            offsets.filter(|&(_, offset)| offset < NEAR_MAP).min_by_key(|&(_, offset)| offset)
        };
        if let Some((base, offset)) = nearest(&|base| r0.wrapping_sub(base)) {
            return Outcome::ReturnedAddress { base, offset, low_half: false };
        }
        if r0 >> 32 == 0 {
            if let Some((base, offset)) = nearest(&|base| u64::from((r0 as u32).wrapping_sub(base as u32))) {
                return Outcome::ReturnedAddress { base, offset, low_half: true };
            }
        }
        Outcome::Returned(r0)
    }

    fn outcome(&self) -> Outcome {
        match &self.result {
            Ok(r0) => self.returned(*r0),
            Err(error) => {
                let (kind, place) = match error.kind.clone() {
                    ExecErrorKind::OutOfBounds { addr, size, write } => {
                        (ExecErrorKind::OutOfBounds { addr: 0, size, write }, Some(self.place(addr)))
                    }
                    ExecErrorKind::ReadOnly { addr, size } => {
                        (ExecErrorKind::ReadOnly { addr: 0, size }, Some(self.place(addr)))
                    }
                    ExecErrorKind::HelperMemory { helper, addr, size, write } => {
                        (ExecErrorKind::HelperMemory { helper, addr: 0, size, write }, Some(self.place(addr)))
                    }
                    ExecErrorKind::NotAMap { helper, value } => {
                        (ExecErrorKind::NotAMap { helper, value: 0 }, Some(self.place(value)))
                    }
                    ExecErrorKind::NotARecord { helper, addr } => {
                        (ExecErrorKind::NotARecord { helper, addr: 0 }, Some(self.place(addr)))
                    }
                    ExecErrorKind::BadPacketPointer { value } => {
                        (ExecErrorKind::BadPacketPointer { value: 0 }, Some(self.place(value)))
                    }
                    kind => (kind, None),
                };
                Outcome::Stopped { pc: error.pc, insn: error.insn, kind, place }
            }
        }
    }
}

/// The interpreter and the JIT disagreed on a program.
#[derive(Debug)]
pub struct Divergence {
    /// The first difference found, in words.
    pub detail: String,
    pub interpreter: Run,
    pub jit: Run,
}

/// Runs a program over `input` in the interpreter, over `interpreted`, and
/// in `jit`, which runs `compiled`: two loads of the program, so that each
/// run starts from the same global data. Each run gets its own copy of the
/// input, at the same address. Compares what they returned or where and why they stopped, the
/// instructions executed (when `jit` counts them), and the input and global
/// data afterwards. Gives the interpreter's result when they agree.
pub fn compare(
    input: &[u8],
    interpreted: &Program,
    compiled: &Program,
    jit: impl FnOnce(&mut [u8]) -> Counted,
) -> Result<Result<u64, ExecError>, Box<Divergence>> {
    compare_laid_out(input, &|_| (), interpreted, compiled, jit)
}

/// [`compare`] for an XDP program (loaded as [`ProgramType::Xdp`]) over
/// `buffer`: each run's input is the buffer's context block and page, the
/// block pointing into that copy, as [`xdp::Buffer::run`] lays it out.
///
/// [`ProgramType::Xdp`]: crate::image::ProgramType::Xdp
pub fn compare_xdp(
    buffer: &xdp::Buffer,
    interpreted: &Program,
    compiled: &Program,
    jit: impl FnOnce(&mut [u8]) -> Counted,
) -> Result<Result<u64, ExecError>, Box<Divergence>> {
    let context = buffer.context();
    compare_laid_out(buffer.bytes(), &|memory| context.write(memory), interpreted, compiled, jit)
}

fn compare_laid_out(
    input: &[u8],
    lay_out: &dyn Fn(&mut [u8]),
    interpreted: &Program,
    compiled: &Program,
    jit: impl FnOnce(&mut [u8]) -> Counted,
) -> Result<Result<u64, ExecError>, Box<Divergence>> {
    let mut input = GuardedInput::new(input, lay_out);
    let interpreter = input.run(interpreted, |memory| {
        let (result, executed) = interp::execute_counted(interpreted, memory);
        (result, Some(executed))
    });
    let jit = input.run(compiled, jit);
    match first_difference(&interpreter, &jit) {
        None => Ok(interpreter.result),
        Some(detail) => Err(Box::new(Divergence { detail, interpreter, jit })),
    }
}

/// [`compare`] for one load of a program without global data and its
/// compiled form, counting instructions in both; panics with the
/// difference and `what` when they disagree.
pub fn assert_agree(
    program: &Program,
    jit: &JitProgram,
    input: &[u8],
    what: &dyn fmt::Display,
) -> Result<u64, ExecError> {
    compare(input, program, program, |memory| {
        let (result, executed) = jit.execute_counted(memory);
        (result, Some(executed))
    })
    .unwrap_or_else(|divergence| panic!("{what}, input {input:?}: {divergence}"))
}

/// Whether both runs faulted at the same distance from the same base, a
/// region, a map or the input: an address computed from one of them is
/// near another base of one load only (near the input, say) by where the
/// allocator put them.
fn same_offset_from_a_base(interpreter: &Run, jit: &Run) -> bool {
    let (Some(a), Some(b)) = (interpreter.fault_address(), jit.fault_address()) else { return false };
    interpreter.bases().zip(jit.bases()).any(|(base_a, base_b)| a.wrapping_sub(base_a) == b.wrapping_sub(base_b))
}

/// Whether `stopped` faulted outside every region of its load where the
/// other run's load has one of its regions: at the same distance from the
/// nearest region below the fault (the one the pointer came from), the
/// other load's memory holds another region. An access is checked against
/// every region, so such an access succeeds in one load and faults in the
/// other by where the allocator put their regions, not by a difference
/// between the engines.
fn fault_lands_in_the_other_loads_region(stopped: &Run, other: &Run) -> bool {
    let Err(ExecError { kind: ExecErrorKind::OutOfBounds { addr, size, write }, .. }) = stopped.result else {
        return false;
    };
    if !matches!(stopped.place(addr), FaultPlace::Elsewhere) || other.result.is_err() {
        return false;
    }
    let starts = |run: &Run| run.regions.iter().map(|region| region.start).collect::<Vec<_>>();
    let pairs = starts(stopped).into_iter().zip(starts(other));
    let nearest = pairs.filter(|(start, _)| *start <= addr).max_by_key(|(start, _)| *start);
    let Some((base, other_base)) = nearest else { return false };
    let there = other_base.wrapping_add(addr - base);
    other.regions.iter().any(|region| region.contains(there, size as u64) && (region.writable || !write))
}

/// Whether a fault's place is an address computed from the addresses of
/// one engine's load: outside every region and the input, and outside the
/// first 4 GiB, where values that are not addresses lie. A relocation with
/// a huge addend gives one, and so does a product of a map's address and a
/// value's (the fuzzer found both). Each load has its own addresses, so two
/// such faults of the same instruction, for the same reason, agree.
fn derived_from_addresses(place: FaultPlace) -> bool {
    match place {
        FaultPlace::Absolute(addr) => addr >= 1 << 32,
        FaultPlace::Elsewhere => true,
        FaultPlace::Input(_) | FaultPlace::Region(..) => false,
    }
}

/// Whether `stopped` faulted on a wild access while `other` went on: an
/// access more than [`NEAR_REGION`] bytes from each of its load's regions
/// and away from the input. Both engines check accesses against every
/// region and live stack frame, and each engine's load and stack lie
/// elsewhere, so whether such an address hits one of them is where the
/// allocator put things. Accesses near a region or the input, where a
/// wrongly removed check would show, still compare.
fn wild_access(stopped: &Run, other: &Run) -> bool {
    let Err(ExecError { kind: ExecErrorKind::OutOfBounds { addr, .. }, .. }) = stopped.result else { return false };
    let far_from = |region: &Region| {
        let end = region.start.saturating_add(region.len);
        addr.saturating_add(NEAR_REGION) < region.start || addr > end.saturating_add(NEAR_REGION)
    };
    other.result.is_ok()
        && matches!(stopped.place(addr), FaultPlace::Elsewhere | FaultPlace::Absolute(_))
        && stopped.regions.iter().all(far_from)
}

/// How far past a region an access still counts as near it.
const NEAR_REGION: u64 = 64;

fn first_difference(interpreter: &Run, jit: &Run) -> Option<String> {
    if fault_lands_in_the_other_loads_region(interpreter, jit)
        || fault_lands_in_the_other_loads_region(jit, interpreter)
        || wild_access(interpreter, jit)
        || wild_access(jit, interpreter)
    {
        return None;
    }
    let (expected, mut actual) = (interpreter.outcome(), jit.outcome());
    // The same r0 agrees, even when one load's map happens to lie near it.
    if interpreter.result.as_ref().ok().is_some_and(|r0| jit.result.as_ref().ok() == Some(r0)) {
        actual = expected.clone();
    }
    if let (Outcome::Stopped { place: Some(pa), .. }, Outcome::Stopped { place: Some(pb), .. }) =
        (&expected, &mut actual)
        && pa != pb
        && (derived_from_addresses(*pa) && derived_from_addresses(*pb) || same_offset_from_a_base(interpreter, jit))
    {
        *pb = *pa;
    }
    let first_byte = |a: &[u8], b: &[u8]| a.iter().zip(b).position(|(x, y)| x != y);
    let detail = match (&expected, &actual) {
        (Outcome::Returned(a), Outcome::Returned(b)) if a != b => {
            format!("r0: interpreter {a:#x}, JIT {b:#x}")
        }
        (Outcome::Stopped { pc: a, .. }, Outcome::Stopped { pc: b, .. }) if a != b => {
            format!("stopped at pc {a} in the interpreter, at pc {b} in the JIT")
        }
        (Outcome::Stopped { kind: a, place: pa, .. }, Outcome::Stopped { kind: b, place: pb, .. })
            if a != b || pa != pb =>
        {
            format!("why it stopped: interpreter {a:?} at {pa:?}, JIT {b:?} at {pb:?}")
        }
        _ if expected != actual => format!("interpreter {expected:?}, JIT {actual:?}"),
        _ if interpreter.executed.zip(jit.executed).is_some_and(|(a, b)| a != b) => {
            format!("instructions executed: interpreter {:?}, JIT {:?}", interpreter.executed, jit.executed)
        }
        _ if !interpreter.guards_intact => "the interpreter wrote outside the input".to_string(),
        _ if !jit.guards_intact => "the JIT wrote outside the input".to_string(),
        _ => {
            if let Some(at) = first_byte(&interpreter.memory, &jit.memory) {
                let (a, b) = (interpreter.memory[at], jit.memory[at]);
                format!("input byte {at} afterwards: interpreter {a:#04x}, JIT {b:#04x}")
            } else {
                let (section, at) = interpreter
                    .data
                    .iter()
                    .zip(&jit.data)
                    .enumerate()
                    .find_map(|(section, (a, b))| Some((section, first_byte(a, b)?)))?;
                let (a, b) = (interpreter.data[section][at], jit.data[section][at]);
                format!("data section {section} byte {at} afterwards: interpreter {a:#04x}, JIT {b:#04x}")
            }
        }
    };
    Some(detail)
}

impl fmt::Display for Divergence {
    /// The difference and both results.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let describe = |result: &Result<u64, ExecError>| match result {
            Ok(r0) => format!("returned {r0:#x}"),
            Err(error) => format!("stopped: {error}"),
        };
        writeln!(f, "first difference: {}", self.detail)?;
        writeln!(f, "interpreter: {}", describe(&self.interpreter.result))?;
        writeln!(f, "JIT:         {}", describe(&self.jit.result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::testgen::{GeneratedCase, program_from_seed};

    #[test]
    fn compare_reports_each_kind_of_difference() {
        // A program that returns and writes its input and global data.
        let suits = |case: &GeneratedCase| {
            let program = case.load().unwrap();
            let mut input = case.input.clone();
            program.execute(&mut input).is_ok()
                && input != case.input
                && case.data.first().is_some_and(|section| program.data(0).unwrap() != section.bytes)
        };
        let case = (0..).map(program_from_seed).find(suits).expect("a seed whose program suits");
        type Engine<'a> = &'a dyn Fn(&Program, &mut [u8]) -> Result<u64, ExecError>;
        let detail = |engine: Engine| {
            let (interpreted, compiled) = (case.load().unwrap(), case.load().unwrap());
            compare(&case.input, &interpreted, &compiled, |memory| (engine(&compiled, memory), None))
                .err()
                .map(|divergence| divergence.detail)
        };
        assert_eq!(detail(&|program, memory| program.execute(memory)), None);
        let r0 = detail(&|program, memory| program.execute(memory).map(|r0| r0 ^ 1)).unwrap();
        assert!(r0.starts_with("r0: "), "{r0}");
        let stopped =
            detail(&|_, _| Err(ExecError { pc: 3, insn: Insn::default(), kind: ExecErrorKind::BudgetExhausted(1) }));
        assert!(stopped.unwrap().starts_with("interpreter Returned"));
        let input = detail(&|program, memory| {
            let result = program.execute(memory);
            memory[memory.len() - 1] ^= 1;
            result
        });
        assert!(input.unwrap().starts_with(&format!("input byte {} afterwards", case.input.len() - 1)));
        // Running a third load leaves the compiled program's data as loaded.
        let data = detail(&|_, memory| case.load().unwrap().execute(memory)).unwrap();
        assert!(data.starts_with("data section 0"), "{data}");
    }

    #[test]
    fn fault_places_do_not_depend_on_where_memory_is() {
        let case = (0..).map(program_from_seed).find(|case| {
            let program = case.load().unwrap();
            matches!(
                program.execute(&mut case.input.clone()),
                Err(ExecError { kind: ExecErrorKind::OutOfBounds { .. }, .. })
            )
        });
        let case = case.expect("a seed whose program faults");
        let (interpreted, compiled) = (case.load().unwrap(), case.load().unwrap());
        // Different input copies and data sections, the same place.
        assert!(compare(&case.input, &interpreted, &compiled, |memory| (compiled.execute(memory), None)).is_ok());
    }

    #[test]
    fn the_same_r0_agrees_whatever_map_lies_near_it() {
        let run = |map_base: u64| Run {
            result: Ok(0x8000_a33a),
            executed: None,
            memory: Vec::new(),
            data: Vec::new(),
            input_base: 0,
            regions: Vec::new(),
            map_bases: vec![map_base],
            guards_intact: true,
        };
        // r0's low half lies just above the JIT's map's, not the interpreter's.
        let (interpreter, jit) = (run(0x5555_0000_0000), run(0x5555_8000_0000));
        assert_ne!(interpreter.outcome(), jit.outcome());
        assert_eq!(first_difference(&interpreter, &jit), None);
        let other = Run { result: Ok(0x8000_a33b), ..run(0x5555_8000_0000) };
        assert!(first_difference(&interpreter, &other).is_some());
    }

    #[test]
    fn an_access_past_a_region_into_another_in_one_load_only_is_layout() {
        let bss = |start: u64| Region { start, len: 12, writable: true, ..Region::default() };
        let rodata = |start: u64| Region { start, len: 40, writable: false, ..Region::default() };
        let run = |result, regions| Run {
            result,
            executed: None,
            memory: Vec::new(),
            data: Vec::new(),
            input_base: 0,
            regions,
            map_bases: Vec::new(),
            guards_intact: true,
        };
        let fault = |addr| {
            Err(ExecError {
                pc: 2,
                insn: Insn::new(crate::isa::LDXW, 2, 6, 49, 0),
                kind: ExecErrorKind::OutOfBounds { addr, size: 4, write: false },
            })
        };
        // The interpreter's .rodata lies far away; the JIT's right after its
        // .bss, where bss + 49 falls.
        let (interpreter_bss, jit_bss) = (0x5555_0000_0000, 0x5555_8000_0000);
        let interpreter = run(fault(interpreter_bss + 49), vec![bss(interpreter_bss), rodata(0x5555_4000_0000)]);
        let jit = run(Ok(0x7365_747a), vec![bss(jit_bss), rodata(jit_bss + 48)]);
        assert_eq!(first_difference(&interpreter, &jit), None);
        // Where the JIT's load has no region there either, it is a difference.
        let unexplained = run(Ok(0x7365_747a), vec![bss(jit_bss), rodata(jit_bss + 4096)]);
        assert!(first_difference(&interpreter, &unexplained).is_some());
        // Both fault at bss + 49: near the interpreter's input, far from the
        // JIT's; the same place.
        let near_input = Run {
            input_base: interpreter_bss + 1024,
            memory: vec![0; 64],
            ..run(fault(interpreter_bss + 49), vec![bss(interpreter_bss), rodata(0x5555_4000_0000)])
        };
        let far = run(fault(jit_bss + 49), vec![bss(jit_bss), rodata(0x5555_c000_0000)]);
        assert_ne!(near_input.outcome(), far.outcome());
        assert_eq!(first_difference(&near_input, &far), None);
        let elsewhere = run(fault(jit_bss + 57), vec![bss(jit_bss), rodata(0x5555_c000_0000)]);
        assert!(first_difference(&near_input, &elsewhere).is_some());
        // A wild access, 24 KiB past every region: where it lands is layout.
        let wild = run(fault(interpreter_bss + 24579), vec![bss(interpreter_bss), rodata(0x5555_4000_0000)]);
        assert_eq!(first_difference(&wild, &jit), None);
        assert_eq!(first_difference(&jit, &wild), None);
    }

    #[test]
    fn faults_at_addresses_of_a_load_agree_and_at_values_below_4_gib_compare() {
        use crate::helpers::Helpers;
        use crate::image::{DataReloc, DataSection, Image};
        use crate::program::Config;
        // A relocation with a huge addend: each load's address is its own
        // section's plus the same distance, far from every region.
        let load = |addend: u64| {
            let image = Image {
                insns: crate::asm::assemble("lddw r6, 0\nldxw r0, [r6+0]\nexit").unwrap(),
                data: vec![DataSection { name: ".data".into(), bytes: vec![0; 8], writable: true }],
                data_relocs: vec![DataReloc { pc: 0, section: 0, offset: addend }],
                ..Image::default()
            };
            Program::from_image(image, &Helpers::new(), &Config::default()).unwrap()
        };
        let far = 0x0a00_0000_0000_0000;
        let (interpreted, compiled) = (load(far), load(far));
        let same = compare(&[], &interpreted, &compiled, |memory| (interp::execute(&compiled, memory), None));
        assert!(matches!(same.unwrap().unwrap_err().kind, ExecErrorKind::OutOfBounds { .. }));
        // Any address computed from a load's addresses is its own.
        let other = load(far + 8);
        let same = compare(&[], &interpreted, &other, |memory| (interp::execute(&other, memory), None));
        assert!(matches!(same.unwrap().unwrap_err().kind, ExecErrorKind::OutOfBounds { .. }));
        // A value below 4 GiB used as an address is the same in every engine.
        let absolute = |addr: u32| {
            let source = format!("mov32 r6, {addr:#x}\nldxw r0, [r6+0]\nexit");
            let image = Image { insns: crate::asm::assemble(&source).unwrap(), ..Image::default() };
            Program::from_image(image, &Helpers::new(), &Config::default()).unwrap()
        };
        let (low, other_low) = (absolute(0x1000), absolute(0x2000));
        let differs = compare(&[], &low, &other_low, |memory| (interp::execute(&other_low, memory), None));
        assert!(differs.unwrap_err().detail.starts_with("why it stopped"));
    }

    #[test]
    fn xdp_runs_see_their_own_copy_of_the_packet() {
        use crate::helpers::Helpers;
        use crate::image::{Image, ProgramType};
        use crate::program::Config;
        // The packet's length, from the context block's pointers, and its
        // first byte incremented.
        let source = "ldxw r2, [r1+0]\nldxw r3, [r1+4]\nldxb r4, [r2+0]\nadd r4, 1\nstxb [r2+0], r4\n\
                      mov r0, r3\nsub r0, r2\nexit";
        let config = Config { program_type: Some(ProgramType::Xdp), ..Config::default() };
        let load = || {
            let image = Image { insns: crate::asm::assemble(source).unwrap(), ..Image::default() };
            Program::from_image(image, &Helpers::new(), &config).unwrap()
        };
        let (interpreted, compiled) = (load(), load());
        let buffer = xdp::Buffer::new(&[7; 60], &[], xdp::RxInfo::default()).unwrap();
        let result = compare_xdp(&buffer, &interpreted, &compiled, |memory| (interp::execute(&compiled, memory), None));
        assert_eq!(result.unwrap().unwrap(), 60);
        let broken = compare_xdp(&buffer, &interpreted, &compiled, |memory| {
            let result = interp::execute(&compiled, memory);
            memory[xdp::INPUT_LEN - 1] ^= 1;
            (result, None)
        });
        assert!(broken.unwrap_err().detail.starts_with("input byte"));
    }

    /// A program that reads its stack before writing it sees the same
    /// bytes in both engines, though the first run writes them.
    #[test]
    fn runs_start_from_the_same_stack() {
        use crate::helpers::Helpers;
        use crate::image::Image;
        use crate::program::Config;
        let source = "ldxdw r0, [r10-8]\nstdw [r10-8], 1\nexit";
        let image = Image { insns: crate::asm::assemble(source).unwrap(), ..Image::default() };
        let program = Arc::new(Program::from_image(image, &Helpers::new(), &Config::default()).unwrap());
        let jit = JitProgram::compile(program.clone()).unwrap();
        let r0 = assert_agree(&program, &jit, &[], &"a read of the stack before a write");
        assert_eq!(r0.unwrap(), u64::from_ne_bytes([STACK_BYTE; 8]));
    }

    /// Each load has maps of its own: an address in one, or its low half,
    /// returned by both engines is the same result.
    #[test]
    fn returned_map_addresses_compare_by_place() {
        use crate::helpers::Helpers;
        use crate::image::{Image, MapDef, MapType};
        use crate::program::Config;
        for source in ["lddw %r0, map_value 0+4\nexit", "lddw %r0, map_fd 0\nmov32 %r0, %r0\nexit"] {
            let load = || {
                let def = MapDef {
                    name: "values".into(),
                    map_type: MapType::Array as u32,
                    key_size: 4,
                    value_size: 8,
                    max_entries: 2,
                    flags: 0,
                    initial_programs: Vec::new(),
                };
                let image = Image { insns: crate::asm::assemble(source).unwrap(), maps: vec![def], ..Image::default() };
                Program::from_image(image, &Helpers::new(), &Config::default()).unwrap()
            };
            let (interpreted, compiled) = (load(), load());
            let run = |memory: &mut [u8]| (interp::execute(&compiled, memory), None);
            assert!(compare(&[], &interpreted, &compiled, run).is_ok(), "{source}");
            let off_by_one = |memory: &mut [u8]| (interp::execute(&compiled, memory).map(|r0| r0 + 1), None);
            assert!(compare(&[], &interpreted, &compiled, off_by_one).is_err(), "{source}");
        }
    }

    #[test]
    fn compare_reports_a_different_count() {
        let case = program_from_seed(0);
        let detail = |extra: u64| {
            let (interpreted, compiled) = (case.load().unwrap(), case.load().unwrap());
            compare(&case.input, &interpreted, &compiled, |memory| {
                let (result, executed) = interp::execute_counted(&compiled, memory);
                (result, Some(executed + extra))
            })
            .err()
            .map(|divergence| divergence.detail)
        };
        assert_eq!(detail(0), None);
        assert!(detail(1).unwrap().starts_with("instructions executed: "));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn direct_code_runs_on_the_pattern_and_reports_stops() {
        use crate::helpers::Helpers;
        use crate::image::Image;
        use crate::program::Config;
        // Unwritten stack at both ends of the frame; a fault past the input
        // (at instruction 1); a DAG program (no budget kept) and a loop.
        for source in [
            "ldxdw r0, [r10-8]\nexit",
            "ldxdw r0, [r10-512]\nexit",
            "ldxb r0, [r1+3]\nexit",
            "mov r0, 0\nldxb r3, [r1+3]\njgt r3, 2, +1\nmov r0, 5\nexit",
            "mov r0, 0\nmov r3, 9\nadd r0, r3\nsub r3, 1\njne r3, 0, -3\nexit",
        ] {
            let load = || {
                let image = Image { insns: crate::asm::assemble(source).unwrap(), ..Image::default() };
                Arc::new(Program::from_image(image, &Helpers::new(), &Config::default()).unwrap())
            };
            for input in [&[1u8, 2, 3, 4][..], &[1, 2]] {
                let (interpreted, compiled) = (load(), load());
                let direct = compile_direct(compiled.clone()).unwrap().expect("direct code on x86-64");
                let run = |memory: &mut [u8]| (run_direct(&direct, memory), None);
                let result = compare(input, &interpreted, &compiled, run).unwrap_or_else(|d| panic!("{source}: {d}"));
                if source.contains("r10") {
                    assert_eq!(result, Ok(u64::from_ne_bytes([STACK_BYTE; 8])), "{source}");
                }
            }
        }
    }
}
