//! The built-in helpers, numbered as Linux numbers them (`enum
//! bpf_func_id`), and the per-run state they work with.
//!
//! A helper only gets r1..r5, so what it needs to know about the run (the
//! program's maps, which memory the program may hand it, where to report a
//! fault) is in a [`RunState`] the engine publishes in a thread-local for
//! the run. A helper never trusts a pointer: every key, value, format string
//! or buffer must lie in memory the program may read (or write) itself
//! ([`crate::memory`]): its input, its live stack frames, its regions
//! (global data, map values, ring buffer records). Anything else, or an r1 that is not one of the program's maps,
//! stops the run with an [`ExecErrorKind`] that names the helper; the engine
//! adds the instruction.
//!
//! Stopping: the helper sets the run's stop flag (a word the engine reads
//! after each call of a helper that may stop) and records why: a fault, or
//! a tail call, after which the engine runs the target program over the
//! same input.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::linux::{self, *};
use super::{Helper, HelperFn, Helpers, xdp};
use crate::error::ExecErrorKind;
use crate::image::{MapType, ProgramType};
use crate::maps::{Map, MapOpError};
use crate::memory::{self, Memory};
use crate::program::Program;

/// Tail calls one run may make, as Linux's `MAX_TAIL_CALL_CNT`: the 34th
/// fails (returns an error to the program, which goes on).
pub const MAX_TAIL_CALLS: u32 = 33;

/// Most bytes `csum_diff` sums over, from and to together (Linux's limit).
const MAX_CSUM_DIFF: u64 = 512;
/// Most bytes of a `trace_printk` format or `%s` argument read.
const MAX_PRINTK: u64 = 1024;
/// Most arguments of `trace_vprintk` (Linux's `MAX_BPF_FUNC_VARARGS`).
const MAX_PRINTK_ARGS: usize = 12;

/// Every built-in: index, function, and whether it may stop the run.
#[rustfmt::skip]
const BUILTINS: &[(u32, HelperFn, bool)] = &[
    (MAP_LOOKUP_ELEM,      map_lookup_elem,      true),
    (MAP_UPDATE_ELEM,      map_update_elem,      true),
    (MAP_DELETE_ELEM,      map_delete_elem,      true),
    (KTIME_GET_NS,         ktime_get_ns,         false),
    (TRACE_PRINTK,         trace_printk,         true),
    (GET_PRANDOM_U32,      get_prandom_u32,      false),
    (GET_SMP_PROCESSOR_ID, get_smp_processor_id, false),
    (TAIL_CALL,            tail_call,            true),
    (PERF_EVENT_OUTPUT,    perf_event_output,    true),
    (CSUM_DIFF,            csum_diff,            true),
    (MAP_PUSH_ELEM,        map_push_elem,        true),
    (MAP_POP_ELEM,         map_pop_elem,         true),
    (MAP_PEEK_ELEM,        map_peek_elem,        true),
    (KTIME_GET_BOOT_NS,    ktime_get_ns,         false),
    (RINGBUF_OUTPUT,       ringbuf_output,       true),
    (RINGBUF_RESERVE,      ringbuf_reserve,      true),
    (RINGBUF_SUBMIT,       ringbuf_submit,       true),
    (RINGBUF_DISCARD,      ringbuf_discard,      true),
    (RINGBUF_QUERY,        ringbuf_query,        true),
    (TRACE_VPRINTK,        trace_vprintk,        true),
    (REDIRECT,             xdp::redirect,        true),
    (REDIRECT_MAP,         xdp::redirect_map,    true),
    (XDP_ADJUST_HEAD,      xdp::adjust_head,     true),
    (XDP_ADJUST_META,      xdp::adjust_meta,     true),
    (XDP_ADJUST_TAIL,      xdp::adjust_tail,     true),
    (XDP_LOAD_BYTES,       xdp::load_bytes,      true),
    (XDP_STORE_BYTES,      xdp::store_bytes,     true),
];

/// The one built-in Linux does not have: `wire_len(len)`, the length on
/// the wire of the `len` bytes a run sees (r2 on entry): `len` plus what
/// the host says the packet had on the wire beyond its captured bytes
/// ([`PacketFacts::beyond_capture`]), so `len` itself unless the host says
/// otherwise (replay of a record that a snapshot length cut short).
/// Classic BPF's `ld len` reads it ([`crate::cbpf`]). Numbered past Linux's
/// helpers, which stopped growing at 211 when Linux froze them in favour
/// of kfuncs, so no program written for Linux calls it by mistake.
pub const WIRE_LEN: u32 = 256;
pub const WIRE_LEN_NAME: &str = "qemu_ubpf_wire_len";

impl Helpers {
    /// The built-in helpers, by Linux's numbers and names, and `wire_len`
    /// ([`WIRE_LEN`]).
    pub fn linux() -> Helpers {
        let mut helpers = Helpers::new();
        for &(index, func, may_stop) in BUILTINS {
            helpers.by_index.insert(index, Helper { name: linux::name(index).to_owned(), func, may_stop });
        }
        helpers.register(WIRE_LEN, WIRE_LEN_NAME, wire_len);
        helpers
    }

    /// Adds the built-in helpers at the indices nothing is registered at.
    pub fn add_linux(&mut self) {
        for (index, helper) in Helpers::linux().by_index {
            self.by_index.entry(index).or_insert(helper);
        }
    }
}

/// What the built-in helpers know about the run in progress on a thread.
pub(crate) struct RunState {
    /// The running program (it changes at a tail call).
    program: Cell<*const Program>,
    input_start: u64,
    input_len: u64,
    stack_top: u64,
    /// The word the engine reads after a helper that may stop.
    stop: Cell<*mut u64>,
    /// The word where the engine puts r10 of the frame that calls a helper
    /// that may stop: the frames below it have returned.
    frame_pointer: Cell<*const u64>,
    fault: Cell<Option<ExecErrorKind>>,
    tail_call: Cell<Option<Arc<Program>>>,
    tail_calls: Cell<u32>,
    /// Ring buffer records reserved and not yet submitted or discarded:
    /// discarded when the run ends, so a program that forgets one cannot
    /// block the buffer.
    reservations: RefCell<Vec<(Arc<Map>, u64)>>,
}

thread_local! {
    static CURRENT: Cell<*const RunState> = const { Cell::new(std::ptr::null()) };
    /// What the host knows of the packet being run, if it says (replay
    /// does, for each record).
    static PACKET: Cell<Option<PacketFacts>> = const { Cell::new(None) };
    static RANDOM: Cell<u64> = Cell::new(random_seed());
}

/// What a host knows of a packet beyond the bytes a run sees, for the
/// helpers that report it; each fact's rule is in its helper alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketFacts {
    /// When it was captured, in nanoseconds: what `ktime_get_ns` returns
    /// instead of the monotonic clock.
    pub time_ns: u64,
    /// Its length on the wire less its captured length, which `wire_len`
    /// adds: the bytes a snapshot length cut off, or less than 0 where a
    /// record claims fewer bytes on the wire than it holds (libpcap's
    /// filter takes the claim as it is).
    pub beyond_capture: i64,
}

/// Makes the helpers of runs on this thread report `facts` of the packet,
/// until it is set again: with `None`, the monotonic clock, and packets
/// whole on the wire (every run's own packet, as an embedder gives it).
#[inline]
pub fn set_packet(facts: Option<PacketFacts>) {
    PACKET.with(|packet| packet.set(facts));
}

fn random_seed() -> u64 {
    let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let local = 0u8;
    (time ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

/// Keys up to this long are copied without allocating.
const INLINE_KEY: usize = 64;

/// A key copied out of the program's memory.
struct Key {
    inline: [u8; INLINE_KEY],
    /// How much of `inline` is the key; 0 when it is in `heap`.
    len: usize,
    heap: Vec<u8>,
}

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.heap.is_empty() { &self.inline[..self.len] } else { &self.heap }
    }
}

/// Restores the thread's previous run state (a helper may re-enter the
/// engine) when a run ends.
pub(crate) struct Published {
    previous: *const RunState,
}

impl Drop for Published {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
    }
}

impl RunState {
    /// The state of a run of `program` over the buffer `[start, +len)`
    /// with the stack below `stack_top`. Before any helper runs, the engine
    /// points it at its words with [`RunState::watch`].
    pub(crate) fn new(program: &Program, start: u64, len: u64, stack_top: u64) -> RunState {
        let (input_start, input_len) = memory::accessible_input(program.program_type(), start, len);
        RunState {
            program: Cell::new(program),
            input_start,
            input_len,
            stack_top,
            stop: Cell::new(std::ptr::null_mut()),
            frame_pointer: Cell::new(std::ptr::null()),
            fault: Cell::new(None),
            tail_call: Cell::new(None),
            tail_calls: Cell::new(0),
            reservations: RefCell::new(Vec::new()),
        }
    }

    /// Makes this the thread's run state until the result is dropped.
    ///
    /// The state must not move while published; callers keep it in a local
    /// that outlives the guard.
    pub(crate) fn publish(&self) -> Published {
        Published { previous: CURRENT.with(|current| current.replace(self)) }
    }

    /// The words the engine shares with the helpers of a run (the JIT's
    /// context, or the interpreter's own): `stop`, which a helper that stops
    /// the run sets, and `frame_pointer`, where the engine puts r10 before
    /// it calls a helper that may stop. Both must be valid for the rest of
    /// the run.
    pub(crate) fn watch(&self, stop: *mut u64, frame_pointer: *const u64) {
        self.stop.set(stop);
        self.frame_pointer.set(frame_pointer);
    }

    /// Why a helper stopped the run, if it was a fault.
    pub(crate) fn take_fault(&self) -> Option<ExecErrorKind> {
        self.fault.take()
    }

    /// The program a tail call asked for; the state switches to it.
    pub(crate) fn take_tail_call(&self) -> Option<Arc<Program>> {
        let target = self.tail_call.take()?;
        self.program.set(Arc::as_ptr(&target));
        Some(target)
    }

    /// The run's input, as the program may access it: address and length
    /// (for an XDP program, the page after the context block).
    pub(super) fn input(&self) -> (u64, u64) {
        (self.input_start, self.input_len)
    }

    pub(super) fn program_type(&self) -> ProgramType {
        self.program().program_type()
    }

    fn program(&self) -> &Program {
        // SAFETY: the program is the one being run (the engine's borrow, or
        // a tail-call target the engine holds an Arc of) for the whole run.
        unsafe { &*self.program.get() }
    }

    fn stop_with(&self, kind: ExecErrorKind) {
        self.fault.set(Some(kind));
        // SAFETY: the engine keeps the stop word valid while the state is
        // published (see `watch`).
        unsafe { *self.stop.get() = 1 };
    }

    /// The map whose handle is `value`, among the running program's.
    pub(super) fn map(&self, helper: u32, value: u64) -> Result<&Arc<Map>, ExecErrorKind> {
        self.program().maps().iter().find(|map| map.handle() == value).ok_or(ExecErrorKind::NotAMap { helper, value })
    }

    /// Can the program itself access `[addr, addr + size)`, from the frame
    /// that called the helper?
    fn allows(&self, addr: u64, size: u64, write: bool) -> bool {
        // SAFETY: the engine keeps the word valid while the state is
        // published (see `watch`), and wrote it before the call.
        let frame_pointer = unsafe { *self.frame_pointer.get() };
        let memory = Memory {
            input_start: self.input_start,
            input_len: self.input_len,
            stack_top: self.stack_top,
            regions: self.program().regions(),
        };
        memory.allows(addr, size, write, memory::live_stack_low(frame_pointer))
    }

    fn check(&self, helper: u32, addr: u64, size: u64, write: bool) -> Result<(), ExecErrorKind> {
        if size == 0 || self.allows(addr, size, write) {
            Ok(())
        } else {
            Err(ExecErrorKind::HelperMemory { helper, addr, size, write })
        }
    }

    /// A copy of `size` bytes the program passed at `addr`.
    pub(super) fn read(&self, helper: u32, addr: u64, size: u64) -> Result<Vec<u8>, ExecErrorKind> {
        self.check(helper, addr, size, false)?;
        let mut bytes = vec![0; size as usize];
        if size > 0 {
            // SAFETY: `check` proved the bytes lie in memory the program may
            // read (input, live stack frames, regions), all live for the run.
            unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, bytes.as_mut_ptr(), size as usize) };
        }
        Ok(bytes)
    }

    /// A copy of the `size`-byte key the program passed at `addr`: in
    /// place for the short keys of packet filters, sparing an allocation per
    /// lookup. Inlined, so that the key is built where the caller keeps
    /// it: moving it out of a call, just after its bytes were copied in,
    /// stalls on store forwarding (a fifth of an XDP filter's run).
    #[inline(always)]
    fn read_key(&self, helper: u32, addr: u64, size: u64) -> Result<Key, ExecErrorKind> {
        if size > INLINE_KEY as u64 {
            return self.read(helper, addr, size).map(|bytes| Key { inline: [0; INLINE_KEY], len: 0, heap: bytes });
        }
        self.check(helper, addr, size, false)?;
        let mut key = Key { inline: [0; INLINE_KEY], len: size as usize, heap: Vec::new() };
        // SAFETY: `check` proved the bytes lie in memory the program may
        // read, live for the run; `size` fits the inline buffer.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, key.inline.as_mut_ptr(), key.len) };
        Ok(key)
    }

    /// Copies `bytes` to `addr` in memory the program may write.
    pub(super) fn write(&self, helper: u32, addr: u64, bytes: &[u8]) -> Result<(), ExecErrorKind> {
        self.check(helper, addr, bytes.len() as u64, true)?;
        // SAFETY: `check` proved the bytes lie in memory the program may
        // write, live for the run.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
        Ok(())
    }
}

impl Drop for RunState {
    fn drop(&mut self) {
        for (map, addr) in self.reservations.take() {
            let _ = map.ringbuf_commit(addr, false);
        }
    }
}

/// Runs a helper's body against the thread's run state: a fault stops the
/// run (the helper returns 0, which nothing reads). Outside a run (a C
/// embedder calling the function itself) every built-in fails with
/// `-EINVAL`.
#[inline]
pub(super) fn with_state(body: impl FnOnce(&RunState) -> Result<u64, ExecErrorKind>) -> u64 {
    let state = CURRENT.with(Cell::get);
    if state.is_null() {
        return errno(libc::EINVAL);
    }
    // SAFETY: a published state outlives its `Published` guard, which the
    // engine holds for the whole run, and lives on this thread.
    let state = unsafe { &*state };
    match body(state) {
        Ok(value) => value,
        Err(kind) => {
            state.stop_with(kind);
            0
        }
    }
}

/// `-errno` as a helper returns it.
pub(super) fn errno(errno: i32) -> u64 {
    (-i64::from(errno)) as u64
}

fn result(outcome: Result<(), MapOpError>) -> u64 {
    match outcome {
        Ok(()) => 0,
        Err(error) => errno(error.errno()),
    }
}

fn key_size(map: &Map) -> u64 {
    u64::from(map.def().key_size)
}

fn value_size(map: &Map) -> u64 {
    u64::from(map.def().value_size)
}

pub(super) fn unsupported(helper: u32, map: &Map) -> ExecErrorKind {
    ExecErrorKind::HelperArgument { helper, what: format!("map {} is a {} map", map.name(), map.map_type().name()) }
}

/// Is `func` the built-in `bpf_map_lookup_elem`? Then the JIT may look a
/// map up itself where the helper could not fail (see
/// [`Map::lookup_never_fails`]).
pub fn is_map_lookup(func: HelperFn) -> bool {
    func as usize == map_lookup_elem as HelperFn as usize
}

extern "C" fn map_lookup_elem(map: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(MAP_LOOKUP_ELEM, map)?;
        let key = state.read_key(MAP_LOOKUP_ELEM, key, key_size(map))?;
        map.lookup_addr(&key).map(|addr| addr.unwrap_or(0)).map_err(|_| unsupported(MAP_LOOKUP_ELEM, map))
    })
}

extern "C" fn map_update_elem(map: u64, key: u64, value: u64, flags: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(MAP_UPDATE_ELEM, map)?;
        let map_type = map.map_type();
        if matches!(map_type, MapType::ProgArray | MapType::RingBuf | MapType::Queue | MapType::Stack)
            || map_type.is_redirect_target()
        {
            return Err(unsupported(MAP_UPDATE_ELEM, map));
        }
        let key = state.read_key(MAP_UPDATE_ELEM, key, key_size(map))?;
        let value = state.read(MAP_UPDATE_ELEM, value, value_size(map))?;
        Ok(result(map.update_from_program(&key, &value, flags)))
    })
}

extern "C" fn map_delete_elem(map: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(MAP_DELETE_ELEM, map)?;
        if matches!(map.map_type(), MapType::RingBuf | MapType::Queue | MapType::Stack)
            || map.map_type().is_redirect_target()
        {
            return Err(unsupported(MAP_DELETE_ELEM, map));
        }
        let key = state.read_key(MAP_DELETE_ELEM, key, key_size(map))?;
        Ok(result(map.delete(&key)))
    })
}

extern "C" fn map_push_elem(map: u64, value: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(MAP_PUSH_ELEM, map)?;
        if !matches!(map.map_type(), MapType::Queue | MapType::Stack) {
            return Err(unsupported(MAP_PUSH_ELEM, map));
        }
        let value = state.read(MAP_PUSH_ELEM, value, value_size(map))?;
        Ok(result(map.push(&value, flags)))
    })
}

fn pop_or_peek(helper: u32, map: u64, value: u64, remove: bool) -> u64 {
    with_state(|state| {
        let map = state.map(helper, map)?;
        if !matches!(map.map_type(), MapType::Queue | MapType::Stack) {
            return Err(unsupported(helper, map));
        }
        state.check(helper, value, value_size(map), true)?;
        match map.pop(remove) {
            Ok(bytes) => state.write(helper, value, &bytes).map(|()| 0),
            Err(error) => Ok(errno(error.errno())),
        }
    })
}

extern "C" fn map_pop_elem(map: u64, value: u64, _: u64, _: u64, _: u64) -> u64 {
    pop_or_peek(MAP_POP_ELEM, map, value, true)
}

extern "C" fn map_peek_elem(map: u64, value: u64, _: u64, _: u64, _: u64) -> u64 {
    pop_or_peek(MAP_PEEK_ELEM, map, value, false)
}

extern "C" fn ktime_get_ns(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    if let Some(packet) = PACKET.with(Cell::get) {
        return packet.time_ns;
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; CLOCK_MONOTONIC exists on
    // every system this builds for.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(now.tv_nsec as u64)
}

pub(crate) extern "C" fn wire_len(len: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    len.wrapping_add_signed(PACKET.with(Cell::get).map_or(0, |packet| packet.beyond_capture))
}

/// Does `func` read nothing but its arguments and the host's facts, and
/// write nothing? Then a program that calls it may run over input it only
/// reads ([`Program::writes_only_stack`]).
pub(crate) fn reads_only_facts(func: HelperFn) -> bool {
    func as usize == wire_len as HelperFn as usize
}

extern "C" fn get_prandom_u32(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    // xorshift64*: not cryptographic, as Linux's prandom is not either.
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) & 0xffff_ffff
    })
}

/// The number of the CPU the program runs on, whose values of per-CPU
/// maps it uses.
extern "C" fn get_smp_processor_id(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: sched_getcpu has no preconditions.
    u64::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0)
}

extern "C" fn tail_call(_ctx: u64, map: u64, index: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(TAIL_CALL, map)?;
        if map.map_type() != MapType::ProgArray {
            return Err(unsupported(TAIL_CALL, map));
        }
        let target = u32::try_from(index).ok().and_then(|index| map.program(index));
        let Some(target) = target.filter(|_| state.tail_calls.get() < MAX_TAIL_CALLS) else {
            // As in Linux: the call fails and the program goes on.
            return Ok(errno(libc::ENOENT));
        };
        state.tail_calls.set(state.tail_calls.get() + 1);
        state.tail_call.set(Some(target));
        // SAFETY: as in `stop_with`.
        unsafe { *state.stop.get() = 1 };
        Ok(0)
    })
}

extern "C" fn csum_diff(from: u64, from_size: u64, to: u64, to_size: u64, seed: u64) -> u64 {
    with_state(|state| {
        if !csum_diff_sizes(from_size, to_size) {
            return Ok(errno(libc::EINVAL));
        }
        let from = state.read(CSUM_DIFF, from, from_size)?;
        let to = state.read(CSUM_DIFF, to, to_size)?;
        Ok(csum_diff_of(&from, &to, seed))
    })
}

/// `bpf_csum_diff` called without a run state, where the code proved both
/// buffers lie in the current stack frame (see
/// [`crate::jit::direct_calls`]): it cannot fail or stop the run.
///
/// # Safety
/// `[from, +from_size)` and `[to, +to_size)` are readable.
pub(crate) unsafe extern "C" fn csum_diff_proved(from: u64, from_size: u64, to: u64, to_size: u64, seed: u64) -> u64 {
    if !csum_diff_sizes(from_size, to_size) {
        return errno(libc::EINVAL);
    }
    let bytes = |addr: u64, len: u64| -> &[u8] {
        if len == 0 {
            return &[];
        }
        // SAFETY: the caller's promise; the bytes are only read.
        unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }
    };
    csum_diff_of(bytes(from, from_size), bytes(to, to_size), seed)
}

/// Is `func` the built-in `bpf_csum_diff`, which the code may call as
/// [`csum_diff_proved`]?
pub(crate) fn is_csum_diff(func: HelperFn) -> bool {
    func as usize == csum_diff as HelperFn as usize
}

/// Does `bpf_csum_diff` take buffers of these sizes (else it returns
/// `-EINVAL`, reading neither)?
fn csum_diff_sizes(from_size: u64, to_size: u64) -> bool {
    (from_size | to_size) % 4 == 0 && from_size.saturating_add(to_size) <= MAX_CSUM_DIFF
}

/// `bpf_csum_diff`'s result for the buffers `from` and `to`.
fn csum_diff_of(from: &[u8], to: &[u8], seed: u64) -> u64 {
    let seed = seed as u32;
    // Linux's cases, each of which gives its own form of a zero sum
    // (0 or 0xffff once folded).
    let sum = match (from.is_empty(), to.is_empty()) {
        (false, false) => csum_add(csum_partial(to, seed), !csum_partial(from, 0)),
        (true, false) => csum_partial(to, seed),
        (false, true) => !csum_partial(from, !seed),
        (true, true) => seed,
    };
    // Folded to 16 bits on every architecture (Linux 6.18 does;
    // tests/kernel_random.rs compares).
    let halves = (sum & 0xffff) + (sum >> 16);
    u64::from((halves & 0xffff) + (halves >> 16))
}

/// The 32-bit ones' complement sum of `bytes`' words and `seed`.
fn csum_partial(bytes: &[u8], seed: u32) -> u32 {
    bytes.chunks_exact(4).map(|chunk| u32::from_ne_bytes(chunk.try_into().expect("4-byte chunks"))).fold(seed, csum_add)
}

/// Ones' complement addition: the carry out comes back in.
fn csum_add(a: u32, b: u32) -> u32 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u32::from(carry)
}

extern "C" fn trace_printk(format: u64, format_size: u64, a: u64, b: u64, c: u64) -> u64 {
    with_state(|state| trace(state, TRACE_PRINTK, format, format_size, &[a, b, c]))
}

/// `bpf_trace_vprintk` (what libbpf's `bpf_printk` calls with more than
/// three arguments): the arguments are `data_len / 8` u64s at `data`.
extern "C" fn trace_vprintk(format: u64, format_size: u64, data: u64, data_len: u64, _: u64) -> u64 {
    with_state(|state| {
        if data_len % 8 != 0 || data_len > 8 * MAX_PRINTK_ARGS as u64 {
            return Ok(errno(libc::EINVAL));
        }
        let data = state.read(TRACE_VPRINTK, data, data_len)?;
        let args: Vec<u64> =
            data.chunks_exact(8).map(|arg| u64::from_ne_bytes(arg.try_into().expect("8-byte chunks"))).collect();
        trace(state, TRACE_VPRINTK, format, format_size, &args)
    })
}

/// Formats the NUL-terminated `format` (at most `format_size` bytes, in
/// the program's memory) with `args` and logs it; returns its length.
fn trace(state: &RunState, helper: u32, format: u64, format_size: u64, args: &[u64]) -> Result<u64, ExecErrorKind> {
    if format_size == 0 || format_size > MAX_PRINTK {
        return Ok(errno(libc::EINVAL));
    }
    let format = state.read(helper, format, format_size)?;
    let Some(end) = format.iter().position(|&byte| byte == 0) else {
        return Err(ExecErrorKind::HelperArgument {
            helper,
            what: "the format string has no NUL within its size".into(),
        });
    };
    let text = printk(state, helper, &format[..end], args)?;
    log::info!(target: "bpf_trace_printk", "{}", text.trim_end_matches('\n'));
    Ok(text.len() as u64)
}

/// Formats like Linux's `bpf_trace_printk`: `%d %i %u %x %X %c %p %s %%`
/// with `l`/`ll` sizes, one argument of `args` per conversion.
fn printk(state: &RunState, helper: u32, format: &[u8], args: &[u64]) -> Result<String, ExecErrorKind> {
    let bad = |what: &str| ExecErrorKind::HelperArgument { helper, what: what.into() };
    let mut out = String::new();
    let mut args = args.iter().copied();
    let mut bytes = format.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte as char);
            continue;
        }
        let mut long = 0;
        while bytes.next_if_eq(&b'l').is_some() {
            long += 1;
        }
        let conversion = bytes.next().ok_or_else(|| bad("the format ends within a conversion"))?;
        if conversion == b'%' {
            out.push('%');
            continue;
        }
        let arg = args.next().ok_or_else(|| bad("more conversions than arguments"))?;
        let narrow = long == 0;
        match conversion {
            b'd' | b'i' if narrow => out.push_str(&(arg as i32).to_string()),
            b'd' | b'i' => out.push_str(&(arg as i64).to_string()),
            b'u' if narrow => out.push_str(&(arg as u32).to_string()),
            b'u' => out.push_str(&arg.to_string()),
            b'x' if narrow => out.push_str(&format!("{:x}", arg as u32)),
            b'x' => out.push_str(&format!("{arg:x}")),
            b'X' if narrow => out.push_str(&format!("{:X}", arg as u32)),
            b'X' => out.push_str(&format!("{arg:X}")),
            b'c' => out.push(arg as u8 as char),
            b'p' => out.push_str(&format!("{arg:#x}")),
            b's' => {
                let mut text = Vec::new();
                for offset in 0..MAX_PRINTK {
                    let byte = state.read(helper, arg.wrapping_add(offset), 1)?[0];
                    if byte == 0 {
                        break;
                    }
                    text.push(byte);
                }
                out.push_str(&String::from_utf8_lossy(&text));
            }
            _ => return Err(bad("an unsupported conversion")),
        }
    }
    Ok(out)
}

/// `bpf_perf_event_output(ctx, map, flags, data, size)`: a record of the
/// `size` bytes at `data`, then the first bytes of the packet (flags' bits
/// 32 to 51, as XDP and socket programs may ask), for the slot of flags'
/// low 32 bits (`BPF_F_CURRENT_CPU`: the CPU the program runs on).
extern "C" fn perf_event_output(ctx: u64, map: u64, flags: u64, data: u64, size: u64) -> u64 {
    const INDEX_MASK: u64 = 0xffff_ffff;
    const CTXLEN_MASK: u64 = 0xf_ffff << 32;
    const CURRENT_CPU: u64 = INDEX_MASK;
    with_state(|state| {
        let map = state.map(PERF_EVENT_OUTPUT, map)?;
        if map.map_type() != MapType::PerfEventArray {
            return Err(unsupported(PERF_EVENT_OUTPUT, map));
        }
        if flags & !(INDEX_MASK | CTXLEN_MASK) != 0 {
            return Ok(errno(libc::EINVAL));
        }
        let mut record = state.read(PERF_EVENT_OUTPUT, data, size)?;
        let ctx_len = (flags & CTXLEN_MASK) >> 32;
        let (packet, packet_len) = xdp::packet_of(state, PERF_EVENT_OUTPUT, ctx)?;
        if ctx_len > packet_len {
            return Ok(errno(libc::EFAULT));
        }
        // SAFETY: the packet lies in the run's input (`packet_of`), which
        // lives for the run.
        record.extend_from_slice(unsafe { std::slice::from_raw_parts(packet as *const u8, ctx_len as usize) });
        let index = match flags & INDEX_MASK {
            CURRENT_CPU => crate::maps::cpus::current() as u64,
            index => index,
        };
        Ok(result(map.perf_event_output(index, record)))
    })
}

extern "C" fn ringbuf_output(map: u64, data: u64, size: u64, _flags: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(RINGBUF_OUTPUT, map)?;
        if map.map_type() != MapType::RingBuf {
            return Err(unsupported(RINGBUF_OUTPUT, map));
        }
        let bytes = state.read(RINGBUF_OUTPUT, data, size)?;
        let addr = match map.ringbuf_reserve(size) {
            Ok(addr) => addr,
            Err(error) => return Ok(errno(error.errno())),
        };
        // SAFETY: `ringbuf_reserve` returned `size` bytes inside the arena,
        // reserved for this record alone.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
        Ok(result(map.ringbuf_commit(addr, true)))
    })
}

extern "C" fn ringbuf_reserve(map: u64, size: u64, _flags: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(RINGBUF_RESERVE, map)?;
        if map.map_type() != MapType::RingBuf {
            return Err(unsupported(RINGBUF_RESERVE, map));
        }
        match map.ringbuf_reserve(size) {
            Ok(addr) => {
                state.reservations.borrow_mut().push((map.clone(), addr));
                Ok(addr)
            }
            // NULL, as Linux returns when the buffer is full.
            Err(_) => Ok(0),
        }
    })
}

fn ringbuf_commit(helper: u32, addr: u64, submit: bool) -> u64 {
    with_state(|state| {
        let mut reservations = state.reservations.borrow_mut();
        let position = reservations
            .iter()
            .position(|(_, reserved)| *reserved == addr)
            .ok_or(ExecErrorKind::NotARecord { helper, addr })?;
        let (map, _) = reservations.swap_remove(position);
        map.ringbuf_commit(addr, submit)
            .map_err(|error| ExecErrorKind::HelperArgument { helper, what: error.to_string() })?;
        Ok(0)
    })
}

extern "C" fn ringbuf_submit(data: u64, _flags: u64, _: u64, _: u64, _: u64) -> u64 {
    ringbuf_commit(RINGBUF_SUBMIT, data, true)
}

extern "C" fn ringbuf_discard(data: u64, _flags: u64, _: u64, _: u64, _: u64) -> u64 {
    ringbuf_commit(RINGBUF_DISCARD, data, false)
}

extern "C" fn ringbuf_query(map: u64, flags: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let map = state.map(RINGBUF_QUERY, map)?;
        if map.map_type() != MapType::RingBuf {
            return Err(unsupported(RINGBUF_QUERY, map));
        }
        // BPF_RB_AVAIL_DATA is 0, BPF_RB_RING_SIZE 1; the positions (2, 3)
        // have no meaning in this ring buffer's layout.
        Ok(match flags {
            0 => map.ringbuf_pending(),
            1 => u64::from(map.def().max_entries),
            _ => 0,
        })
    })
}
