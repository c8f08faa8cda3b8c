//! The XDP helpers, as the kernel's `net/core/filter.c` defines them: they
//! move the packet's bounds in the run's context block within the limits
//! of [`crate::xdp`], and copy to and from the packet. Each checks that r1
//! is the running XDP program's context, and every pointer the program
//! hands it with the memory rule.
//!
//! The helpers that need nothing of the run but its input (moving the
//! packet's bounds, `bpf_redirect`) also have a direct form ([`direct`]),
//! which the JIT's code calls without a run state: it takes the input as
//! arguments and returns why it refused its arguments, if it did, for the
//! code to stop the run with. So does `bpf_redirect_map`, for a map the
//! code proved is a devmap ([`redirect_map_direct`]). Both forms share one
//! body each.

use super::builtin::{RunState, errno, unsupported, with_state};
use super::linux::{
    REDIRECT, REDIRECT_MAP, XDP_ADJUST_HEAD, XDP_ADJUST_META, XDP_ADJUST_TAIL, XDP_LOAD_BYTES, XDP_STORE_BYTES,
};
use crate::error::ExecErrorKind;
use crate::helpers::HelperFn;
use crate::image::{MapType, ProgramType, xdp_context};
use crate::maps::{BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, Map, XDP_ACTION_MASK};
use crate::xdp::{self, Action, ETH_HLEN, FRAME_RESERVED};

/// Why an XDP helper refused an argument and stopped the run; the JIT's
/// code reports it by this number ([`Direct::fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DirectFault {
    /// r1 is not the context block, or the run's input does not follow it.
    NotTheContext = 1,
    /// The context block's packet pointers are not sane.
    Unsound = 2,
    /// `bpf_redirect_map` with `BPF_F_BROADCAST`.
    Broadcast = 3,
}

impl DirectFault {
    /// The fault a [`Direct::fault`] other than 0 names.
    pub(crate) fn from_code(code: u64) -> DirectFault {
        [DirectFault::NotTheContext, DirectFault::Unsound, DirectFault::Broadcast]
            .into_iter()
            .find(|&fault| fault as u64 == code)
            .unwrap_or(DirectFault::Unsound)
    }

    /// The error that stops the run, as `helper`'s.
    pub(crate) fn error(self, helper: u32) -> ExecErrorKind {
        let what = match self {
            DirectFault::NotTheContext => "r1 is not the XDP context",
            DirectFault::Unsound => "the context's packet pointers are unsound: outside the page, or out of order",
            DirectFault::Broadcast => "BPF_F_BROADCAST (to every device of a devmap) is not supported",
        };
        ExecErrorKind::HelperArgument { helper, what: what.to_owned() }
    }
}

/// What a direct form returns, in the two return registers of the C
/// convention: `fault` 0 and r0 in `value`, or a [`DirectFault`]'s number.
#[repr(C)]
pub(crate) struct Direct {
    pub(crate) fault: u64,
    pub(crate) value: u64,
}

/// A helper's direct form: the helper's first three arguments, then the
/// run's input (address and length). It never panics.
///
/// # Safety
/// As the helper's: the arguments the code proved, where the form says so.
pub(crate) type DirectFn = unsafe extern "C" fn(u64, u64, u64, u64, u64) -> Direct;

/// The direct form of the built-in helper `func`, if it has one.
pub(crate) fn direct(func: HelperFn) -> Option<DirectFn> {
    let forms: [(HelperFn, DirectFn); 4] = [
        (adjust_head, adjust_head_direct),
        (adjust_meta, adjust_meta_direct),
        (adjust_tail, adjust_tail_direct),
        (redirect, redirect_direct),
    ];
    forms.into_iter().find(|&(helper, _)| helper as usize == func as usize).map(|(_, direct)| direct)
}

/// Runs `body` over the bounds of the context block at `ctx` in the input
/// `[input_start, +input_len)`, as a direct form.
fn run_direct(
    ctx: u64,
    input_start: u64,
    input_len: u64,
    body: impl FnOnce(&mut Bounds) -> Result<u64, DirectFault>,
) -> Direct {
    match Bounds::in_input(ctx, input_start, input_len).and_then(|mut bounds| body(&mut bounds)) {
        Ok(value) => Direct { fault: 0, value },
        Err(fault) => Direct { fault: fault as u64, value: 0 },
    }
}

/// The packet's bounds, from the start of the headroom.
struct Bounds {
    /// Address of the context block.
    block: u64,
    /// How far the packet may reach: the page's end, which is the input's.
    hard_end: u64,
    data_meta: u64,
    data: u64,
    data_end: u64,
}

impl Bounds {
    fn page(&self) -> u64 {
        self.block + xdp_context::SIZE as u64
    }

    fn word(block: u64, off: i16) -> u64 {
        // SAFETY: `block` is the run's context block (checked by `in_input`:
        // just before the input), which the run's buffer holds (checked on
        // entry) and which lives for the run; the block may be unaligned
        // (a C caller's buffer), hence the unaligned read.
        unsafe { ((block + off as u64) as *const u64).read_unaligned() }
    }

    /// The bounds the context block at `ctx` holds, when `ctx` is the
    /// running XDP program's context and its pointers are sane.
    fn of(state: &RunState, helper: u32, ctx: u64) -> Result<Bounds, ExecErrorKind> {
        if state.program_type() != ProgramType::Xdp {
            return Err(DirectFault::NotTheContext.error(helper));
        }
        let (input_start, input_len) = state.input();
        Bounds::in_input(ctx, input_start, input_len).map_err(|fault| fault.error(helper))
    }

    /// The bounds the context block at `ctx` holds, when `ctx` is the
    /// block of an XDP run whose input (the page after the block) is
    /// `[input_start, +input_len)`, and its pointers are sane.
    fn in_input(ctx: u64, input_start: u64, input_len: u64) -> Result<Bounds, DirectFault> {
        if ctx.wrapping_add(xdp_context::SIZE as u64) != input_start {
            return Err(DirectFault::NotTheContext);
        }
        let at = |off| Bounds::word(ctx, off).wrapping_sub(input_start);
        let bounds = Bounds {
            block: ctx,
            hard_end: input_len,
            data_meta: at(xdp_context::DATA_META),
            data: at(xdp_context::DATA),
            data_end: at(xdp_context::DATA_END),
        };
        if !xdp::valid(bounds.data_meta, bounds.data, bounds.data_end, bounds.hard_end) {
            return Err(DirectFault::Unsound);
        }
        Ok(bounds)
    }

    fn store(&self) {
        let page = self.page();
        for (off, value) in [
            (xdp_context::DATA_META, self.data_meta),
            (xdp_context::DATA, self.data),
            (xdp_context::DATA_END, self.data_end),
        ] {
            // SAFETY: as in `word`, and the input is writable.
            unsafe { ((self.block + off as u64) as *mut u64).write_unaligned(page + value) };
        }
    }

    /// Address of the byte `offset` from the start of the headroom.
    fn at(&self, offset: u64) -> *mut u8 {
        (self.page() + offset) as *mut u8
    }
}

/// Where an XDP run's context block is, the run's input starting at
/// `input_start`: just before it.
fn block_of(input_start: u64) -> u64 {
    input_start.wrapping_sub(xdp_context::SIZE as u64)
}

/// The packet of the run whose context is `ctx` (address and length): for
/// an XDP program, from `data` to `data_end`; for a filter, whose r1 is
/// the packet, the run's input.
pub(super) fn packet_of(state: &RunState, helper: u32, ctx: u64) -> Result<(u64, u64), ExecErrorKind> {
    if state.program_type() == ProgramType::Xdp {
        let bounds = Bounds::of(state, helper, ctx)?;
        return Ok((bounds.page() + bounds.data, bounds.data_end - bounds.data));
    }
    let (start, len) = state.input();
    if ctx != start {
        return Err(ExecErrorKind::HelperArgument { helper, what: "r1 is not the packet".into() });
    }
    Ok((start, len))
}

/// The `int` a helper takes in a 64-bit register.
fn int(value: u64) -> i64 {
    i64::from(value as i32)
}

pub(super) extern "C" fn adjust_head(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| Ok(move_head(&mut Bounds::of(state, XDP_ADJUST_HEAD, ctx)?, delta)))
}

extern "C" fn adjust_head_direct(ctx: u64, delta: u64, _: u64, input_start: u64, input_len: u64) -> Direct {
    run_direct(ctx, input_start, input_len, |bounds| Ok(move_head(bounds, delta)))
}

/// `bpf_xdp_adjust_head`'s body: 0, or `-errno` with nothing moved.
fn move_head(bounds: &mut Bounds, delta: u64) -> u64 {
    let metalen = bounds.data - bounds.data_meta;
    let data = bounds.data as i64 + int(delta);
    if data < (FRAME_RESERVED as u64 + metalen) as i64 || data > (bounds.data_end - ETH_HLEN as u64) as i64 {
        return errno(libc::EINVAL);
    }
    let data_meta = (data as u64) - metalen;
    // SAFETY: both ranges lie in the page (checked above), which the
    // run's input holds; `copy` allows them to overlap.
    unsafe { std::ptr::copy(bounds.at(bounds.data_meta), bounds.at(data_meta), metalen as usize) };
    (bounds.data_meta, bounds.data) = (data_meta, data as u64);
    bounds.store();
    0
}

pub(super) extern "C" fn adjust_meta(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| Ok(move_meta(&mut Bounds::of(state, XDP_ADJUST_META, ctx)?, delta)))
}

extern "C" fn adjust_meta_direct(ctx: u64, delta: u64, _: u64, input_start: u64, input_len: u64) -> Direct {
    run_direct(ctx, input_start, input_len, |bounds| Ok(move_meta(bounds, delta)))
}

/// `bpf_xdp_adjust_meta`'s body: 0, or `-errno` with nothing moved.
fn move_meta(bounds: &mut Bounds, delta: u64) -> u64 {
    let meta = bounds.data_meta as i64 + int(delta);
    if meta < FRAME_RESERVED as i64 || meta > bounds.data as i64 {
        return errno(libc::EINVAL);
    }
    let metalen = bounds.data - meta as u64;
    if metalen % 4 != 0 || metalen > u64::from(u8::MAX) {
        return errno(libc::EACCES);
    }
    bounds.data_meta = meta as u64;
    bounds.store();
    0
}

pub(super) extern "C" fn adjust_tail(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| Ok(move_tail(&mut Bounds::of(state, XDP_ADJUST_TAIL, ctx)?, delta)))
}

extern "C" fn adjust_tail_direct(ctx: u64, delta: u64, _: u64, input_start: u64, input_len: u64) -> Direct {
    run_direct(ctx, input_start, input_len, |bounds| Ok(move_tail(bounds, delta)))
}

/// `bpf_xdp_adjust_tail`'s body: 0, or `-errno` with nothing moved.
fn move_tail(bounds: &mut Bounds, delta: u64) -> u64 {
    let data_end = bounds.data_end as i64 + int(delta);
    if data_end > bounds.hard_end as i64 || data_end < (bounds.data + ETH_HLEN as u64) as i64 {
        return errno(libc::EINVAL);
    }
    if data_end as u64 > bounds.data_end {
        // SAFETY: the grown bytes lie in the page (checked above).
        unsafe { bounds.at(bounds.data_end).write_bytes(0, (data_end as u64 - bounds.data_end) as usize) };
    }
    bounds.data_end = data_end as u64;
    bounds.store();
    0
}

/// The packet's bytes `[offset, offset + len)`, when they lie in it.
fn packet_range(bounds: &Bounds, offset: u64, len: u64) -> Result<u64, u64> {
    let (offset, len) = (offset as u32 as u64, len as u32 as u64);
    if offset > 0xffff || len > 0xffff {
        return Err(errno(libc::EFAULT));
    }
    if offset + len > bounds.data_end - bounds.data {
        return Err(errno(libc::EINVAL));
    }
    Ok(bounds.data + offset)
}

pub(super) extern "C" fn load_bytes(ctx: u64, offset: u64, buf: u64, len: u64, _: u64) -> u64 {
    with_state(|state| {
        let bounds = Bounds::of(state, XDP_LOAD_BYTES, ctx)?;
        let start = match packet_range(&bounds, offset, len) {
            Ok(start) => start,
            Err(errno) => return Ok(errno),
        };
        let len = len as u32 as usize;
        // SAFETY: the bytes lie in the packet (checked above), in the input.
        let bytes = unsafe { std::slice::from_raw_parts(bounds.at(start), len) }.to_vec();
        state.write(XDP_LOAD_BYTES, buf, &bytes)?;
        Ok(0)
    })
}

pub(super) extern "C" fn store_bytes(ctx: u64, offset: u64, buf: u64, len: u64, _: u64) -> u64 {
    with_state(|state| {
        let bounds = Bounds::of(state, XDP_STORE_BYTES, ctx)?;
        let start = match packet_range(&bounds, offset, len) {
            Ok(start) => start,
            Err(errno) => return Ok(errno),
        };
        let bytes = state.read(XDP_STORE_BYTES, buf, len as u32 as u64)?;
        // SAFETY: the bytes lie in the packet (checked above), in the input.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), bounds.at(start), bytes.len()) };
        Ok(0)
    })
}

/// `bpf_redirect(ifindex, flags)`: any flag aborts; otherwise the target
/// goes into the context block for the host, unchecked, as the kernel
/// leaves the device to be looked up after the run.
pub(super) extern "C" fn redirect(ifindex: u64, flags: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| Ok(redirect_to(&Bounds::of(state, REDIRECT, block_of(state.input().0))?, ifindex, flags)))
}

extern "C" fn redirect_direct(ifindex: u64, flags: u64, _: u64, input_start: u64, input_len: u64) -> Direct {
    run_direct(block_of(input_start), input_start, input_len, |bounds| Ok(redirect_to(bounds, ifindex, flags)))
}

/// `bpf_redirect`'s body, with the run's context block sane.
fn redirect_to(bounds: &Bounds, ifindex: u64, flags: u64) -> u64 {
    if flags != 0 {
        return Action::Aborted as u64;
    }
    record_target(bounds.block, ifindex as u32, xdp_context::REDIRECT_DEVICE);
    Action::Redirect as u64
}

/// `bpf_redirect_map(map, key, flags)`: a filled slot of a devmap or
/// devmap-hash records its ifindex, as `bpf_redirect` does, and one of a
/// cpumap its CPU; an empty slot (an xskmap's always is: there are no
/// AF_XDP sockets here) clears the target and returns the flags' low bits,
/// the program's fallback action. Unknown flags abort, as in the kernel;
/// `BPF_F_BROADCAST` stops the run, as not supported.
pub(super) extern "C" fn redirect_map(map: u64, key: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let block = Bounds::of(state, REDIRECT_MAP, block_of(state.input().0))?.block;
        let map = state.map(REDIRECT_MAP, map)?;
        let map_type = map.map_type();
        if !map_type.is_redirect_target() {
            return Err(unsupported(REDIRECT_MAP, map));
        }
        if let Some(action) = redirect_flags(map_type, flags).map_err(|fault| fault.error(REDIRECT_MAP))? {
            return Ok(action);
        }
        // The kernel's redirect maps take 32-bit keys.
        let key = (key as u32).to_ne_bytes();
        // A devmap's value is read in place, without the copy a lookup makes;
        // a cpumap's has no address, and only its presence counts.
        let found = if map_type == MapType::CpuMap {
            map.lookup(&key).map(|value| value.map(|_| 0))
        } else {
            map.lookup_addr(&key)
        };
        let found = found.map_err(|_| unsupported(REDIRECT_MAP, map))?;
        Ok(redirect_found(block, map_type, key, found, flags))
    })
}

/// `bpf_redirect_map`'s direct form, for a map the code proved is one of
/// the program's devmaps or devmap-hashes (see [`is_redirect_map`]).
///
/// # Safety
/// `map` is the [`Map::handle`] of a devmap or devmap-hash that lives for
/// the call.
pub(crate) unsafe extern "C" fn redirect_map_direct(
    map: u64,
    key: u64,
    flags: u64,
    input_start: u64,
    input_len: u64,
) -> Direct {
    // SAFETY: the caller's promise.
    let map = unsafe { &*(map as *const Map) };
    run_direct(block_of(input_start), input_start, input_len, |bounds| {
        if let Some(action) = redirect_flags(map.map_type(), flags)? {
            return Ok(action);
        }
        let key = (key as u32).to_ne_bytes();
        // A devmap's keys are 4 bytes (checked at load), so its lookups
        // cannot fail.
        let found = map.lookup_addr(&key).ok().flatten();
        Ok(redirect_found(bounds.block, map.map_type(), key, found, flags))
    })
}

/// Is `func` the built-in `bpf_redirect_map`, which the code may call in its
/// direct form ([`redirect_map_direct`]) for a devmap?
pub(crate) fn is_redirect_map(func: HelperFn) -> bool {
    func as usize == redirect_map as HelperFn as usize
}

/// `bpf_redirect_map`'s flags for a map of `map_type`: the action when they
/// abort the run, `None` to go on, or the fault that stops it.
fn redirect_flags(map_type: MapType, flags: u64) -> Result<Option<u64>, DirectFault> {
    let devmap = matches!(map_type, MapType::DevMap | MapType::DevMapHash);
    let allowed = XDP_ACTION_MASK | if devmap { BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS } else { 0 };
    if flags & !allowed != 0 {
        return Ok(Some(Action::Aborted as u64));
    }
    if flags & BPF_F_BROADCAST != 0 {
        return Err(DirectFault::Broadcast);
    }
    Ok(None)
}

/// `bpf_redirect_map`'s action once the slot of `key` in a map of
/// `map_type` is `found` (a devmap's value's address; anything for a
/// cpumap's) or not, with the target recorded in the context block at
/// `block`, the run's.
fn redirect_found(block: u64, map_type: MapType, key: [u8; 4], found: Option<u64>, flags: u64) -> u64 {
    match found {
        None => {
            record_target(block, 0, 0);
            flags & XDP_ACTION_MASK
        }
        Some(_) if map_type == MapType::CpuMap => {
            record_target(block, u32::from_ne_bytes(key), xdp_context::REDIRECT_CPU);
            Action::Redirect as u64
        }
        Some(value) => {
            // SAFETY: the address of a devmap's value, which starts with
            // its ifindex, in the map's memory, which the program keeps
            // alive for the run.
            let ifindex = unsafe { (value as *const u32).read_unaligned() };
            record_target(block, ifindex, xdp_context::REDIRECT_DEVICE);
            Action::Redirect as u64
        }
    }
}

/// Writes the redirect target and its kind into the context block at
/// `block`, which `Bounds::of` proved is the run's.
fn record_target(block: u64, target: u32, kind: u32) {
    // SAFETY: the block lies in the run's buffer, which the caller lends
    // for the run, writable.
    unsafe {
        ((block + xdp_context::REDIRECT_TARGET as u64) as *mut u32).write_unaligned(target);
        ((block + xdp_context::REDIRECT_SET as u64) as *mut u32).write_unaligned(kind);
    }
}
