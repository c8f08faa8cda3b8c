//! The XDP helpers, as the kernel's `net/core/filter.c` defines them: they
//! move the packet's bounds in the run's context block within the limits
//! of [`crate::xdp`], and copy to and from the packet. Each checks that r1
//! is the running XDP program's context, and every pointer the program
//! hands it with the memory rule.

use super::builtin::{RunState, errno, with_state};
use super::linux::{REDIRECT, XDP_ADJUST_HEAD, XDP_ADJUST_META, XDP_ADJUST_TAIL, XDP_LOAD_BYTES, XDP_STORE_BYTES};
use crate::error::ExecErrorKind;
use crate::image::{ProgramType, xdp_context};
use crate::xdp::{self, Action, ETH_HLEN, FRAME_RESERVED};

/// The packet's bounds, from the start of the headroom.
struct Bounds {
    /// Address of the context block.
    block: u64,
    data_meta: u64,
    data: u64,
    data_end: u64,
}

impl Bounds {
    fn page(&self) -> u64 {
        self.block + xdp_context::SIZE as u64
    }

    fn word(block: u64, off: i16) -> u64 {
        // SAFETY: `block` is the run's input (checked by `of`), which holds
        // the whole block and lives for the run; the block is 8-byte aligned
        // (`xdp::Buffer` keeps words) but is read unaligned anyway.
        unsafe { ((block + off as u64) as *const u64).read_unaligned() }
    }

    /// The bounds the context block at `ctx` holds, when `ctx` is the
    /// running XDP program's context and its pointers are sane.
    fn of(state: &RunState, helper: u32, ctx: u64) -> Result<Bounds, ExecErrorKind> {
        let bad = |what: &str| ExecErrorKind::HelperArgument { helper, what: what.to_owned() };
        let (input_start, input_len) = state.input();
        if state.program_type() != ProgramType::Xdp || ctx != input_start || input_len != xdp::INPUT_LEN as u64 {
            return Err(bad("r1 is not the XDP context"));
        }
        let page = ctx + xdp_context::SIZE as u64;
        let at = |off| Bounds::word(ctx, off).wrapping_sub(page);
        let bounds = Bounds {
            block: ctx,
            data_meta: at(xdp_context::DATA_META),
            data: at(xdp_context::DATA),
            data_end: at(xdp_context::DATA_END),
        };
        if !xdp::valid(bounds.data_meta, bounds.data, bounds.data_end) {
            return Err(bad("the context's packet pointers were overwritten"));
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

/// The `int` a helper takes in a 64-bit register.
fn int(value: u64) -> i64 {
    i64::from(value as i32)
}

pub(super) extern "C" fn adjust_head(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let mut bounds = Bounds::of(state, XDP_ADJUST_HEAD, ctx)?;
        let metalen = bounds.data - bounds.data_meta;
        let data = bounds.data as i64 + int(delta);
        if data < (FRAME_RESERVED as u64 + metalen) as i64 || data > (bounds.data_end - ETH_HLEN as u64) as i64 {
            return Ok(errno(libc::EINVAL));
        }
        let data_meta = (data as u64) - metalen;
        // SAFETY: both ranges lie in the page (checked above), which the
        // run's input holds; `copy` allows them to overlap.
        unsafe { std::ptr::copy(bounds.at(bounds.data_meta), bounds.at(data_meta), metalen as usize) };
        (bounds.data_meta, bounds.data) = (data_meta, data as u64);
        bounds.store();
        Ok(0)
    })
}

pub(super) extern "C" fn adjust_meta(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let mut bounds = Bounds::of(state, XDP_ADJUST_META, ctx)?;
        let meta = bounds.data_meta as i64 + int(delta);
        if meta < FRAME_RESERVED as i64 || meta > bounds.data as i64 {
            return Ok(errno(libc::EINVAL));
        }
        let metalen = bounds.data - meta as u64;
        if metalen % 4 != 0 || metalen > u64::from(u8::MAX) {
            return Ok(errno(libc::EACCES));
        }
        bounds.data_meta = meta as u64;
        bounds.store();
        Ok(0)
    })
}

pub(super) extern "C" fn adjust_tail(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(|state| {
        let mut bounds = Bounds::of(state, XDP_ADJUST_TAIL, ctx)?;
        let data_end = bounds.data_end as i64 + int(delta);
        if data_end > xdp::HARD_END as i64 || data_end < (bounds.data + ETH_HLEN as u64) as i64 {
            return Ok(errno(libc::EINVAL));
        }
        if data_end as u64 > bounds.data_end {
            // SAFETY: the grown bytes lie in the page (checked above).
            unsafe { bounds.at(bounds.data_end).write_bytes(0, (data_end as u64 - bounds.data_end) as usize) };
        }
        bounds.data_end = data_end as u64;
        bounds.store();
        Ok(0)
    })
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
    with_state(|state| {
        let (block, _) = state.input();
        Bounds::of(state, REDIRECT, block)?;
        if flags != 0 {
            return Ok(Action::Aborted as u64);
        }
        // SAFETY: the block is the run's input (checked by `Bounds::of`),
        // writable for the run.
        unsafe {
            ((block + xdp_context::REDIRECT_TARGET as u64) as *mut u32).write_unaligned(ifindex as u32);
            ((block + xdp_context::REDIRECT_SET as u64) as *mut u32).write_unaligned(1);
        }
        Ok(Action::Redirect as u64)
    })
}
