//! XDP runs from C: the context block an XDP program's input starts with,
//! which a caller of a compiled function fills itself, and
//! ubpf_exec_xdp(), which lays a caller's buffer out, runs the program and
//! says where the packet went.

use std::ffi::{c_int, c_void};
use std::mem::offset_of;

use super::boundary::{boundary, bytes_mut};
use super::vm::{error_printer, ubpf_vm, vm_ref};
use crate::image::{ProgramType, xdp_context};
use crate::xdp::{self, Context, ETH_HLEN, FRAME_RESERVED, RxInfo};

/// Bytes of the ::ubpf_xdp_context at the start of an XDP program's input.
pub const UBPF_XDP_CONTEXT_SIZE: u32 = 48;

/// Bytes at the start of the headroom that the kernel keeps for its own
/// `struct xdp_frame`: `bpf_xdp_adjust_head` and `bpf_xdp_adjust_meta`
/// never move the packet into them.
pub const UBPF_XDP_FRAME_RESERVED: u32 = 40;

/// The headroom the kernel gives a packet (`XDP_PACKET_HEADROOM`).
pub const UBPF_XDP_HEADROOM: u32 = 256;

/// Bytes of an input laid out as the kernel's `BPF_PROG_TEST_RUN` lays out
/// a packet's page: the context (48 bytes), the headroom (256), then the
/// packet and its tailroom up to where the kernel keeps `skb_shared_info`
/// (3520 bytes together).
pub const UBPF_XDP_BUFFER_SIZE: u32 = 3824;

/// ::ubpf_xdp_context's `redirect_kind`: `redirect_target` is an ifindex
/// (`bpf_redirect`, or a devmap's entry through `bpf_redirect_map`).
pub const UBPF_XDP_REDIRECT_DEVICE: u32 = 1;

/// ::ubpf_xdp_context's `redirect_kind`: `redirect_target` is a CPU (a
/// cpumap's entry through `bpf_redirect_map`).
pub const UBPF_XDP_REDIRECT_CPU: u32 = 2;

// cbindgen writes constants only as literals: keep them equal to the engine's.
const _: () = assert!(
    UBPF_XDP_CONTEXT_SIZE as usize == xdp_context::SIZE
        && UBPF_XDP_FRAME_RESERVED as usize == FRAME_RESERVED
        && UBPF_XDP_HEADROOM as usize == xdp::HEADROOM
        && UBPF_XDP_BUFFER_SIZE as usize == xdp::INPUT_LEN
        && UBPF_XDP_REDIRECT_DEVICE == xdp_context::REDIRECT_DEVICE
        && UBPF_XDP_REDIRECT_CPU == xdp_context::REDIRECT_CPU
);

/// @brief The context an XDP program's input starts with: r1 points to it,
/// and the program reads it as a `struct xdp_md`.
///
/// This is how a function from ubpf_compile() runs an XDP program (see
/// ubpf_set_program_type()): the caller passes, as `mem`, a buffer that
/// starts with this struct, followed by the packet's headroom, the packet
/// and its tailroom, and as `mem_len` the whole buffer's length, whose end
/// is as far as `bpf_xdp_adjust_tail` may grow the packet. Before each run
/// it fills the struct: `data`, `data_end` and `data_meta` the addresses of
/// the packet's first byte, of the byte past its last, and of its metadata
/// (`data` for none), at least UBPF_XDP_FRAME_RESERVED bytes past the
/// struct's end; the interfaces; every other field 0. The function returns
/// the program's r0, its XDP action (UINT64_MAX when the run failed, which
/// the kernel would end as XDP_ABORTED). The program's helpers
/// (`bpf_xdp_adjust_head`, `_tail`, `_meta`, `bpf_redirect`...) write the
/// struct, so afterwards `data`, `data_meta` and `data_end` say where the
/// packet is and `redirect_kind` and `redirect_target` where XDP_REDIRECT
/// sends it. Every access of the program is checked against the buffer
/// after this struct, not against `data`..`data_end` as the kernel's
/// verifier does; the struct itself only the program's loads of its fields
/// read, so no store of the program changes it. A run fails at its start
/// (UINT64_MAX) when `mem_len` is shorter than this struct, or when a packet
/// pointer the program loads lies outside the buffer after it (its end
/// included): the JIT proves the accesses those pointers guard. 8-byte
/// alignment makes its loads fastest. Not in ubpf.
#[repr(C)]
pub struct ubpf_xdp_context {
    /// Out: where XDP_REDIRECT sends the packet, as `redirect_kind` says.
    pub redirect_target: u32,
    /// Out: 0 for no target, UBPF_XDP_REDIRECT_DEVICE or
    /// UBPF_XDP_REDIRECT_CPU. Set it to 0 before the run.
    pub redirect_kind: u32,
    /// 0.
    pub reserved: u32,
    /// In: `xdp_md.ingress_ifindex`, the interface the packet came in on.
    pub ingress_ifindex: u32,
    /// In: `xdp_md.rx_queue_index`, the queue it came in on.
    pub rx_queue_index: u32,
    /// 0 (`xdp_md.egress_ifindex`, which programs run on receive cannot
    /// read).
    pub egress_ifindex: u32,
    /// In and out: the address of the packet's first byte.
    pub data: u64,
    /// In and out: the address of the byte past the packet's last.
    pub data_end: u64,
    /// In and out: the address of the metadata before the packet (`data`
    /// when there is none).
    pub data_meta: u64,
}

const _: () = assert!(
    size_of::<ubpf_xdp_context>() == xdp_context::SIZE
        && offset_of!(ubpf_xdp_context, redirect_target) == xdp_context::REDIRECT_TARGET
        && offset_of!(ubpf_xdp_context, redirect_kind) == xdp_context::REDIRECT_SET
        && offset_of!(ubpf_xdp_context, ingress_ifindex) == xdp_context::MD_INGRESS_IFINDEX as usize
        && offset_of!(ubpf_xdp_context, rx_queue_index) == xdp_context::MD_RX_QUEUE_INDEX as usize
        && offset_of!(ubpf_xdp_context, egress_ifindex) == xdp_context::MD_EGRESS_IFINDEX as usize
        && offset_of!(ubpf_xdp_context, data) == xdp_context::DATA as usize
        && offset_of!(ubpf_xdp_context, data_end) == xdp_context::DATA_END as usize
        && offset_of!(ubpf_xdp_context, data_meta) == xdp_context::DATA_META as usize
);

/// @brief Where a packet lies in the buffer of ubpf_exec_xdp(), before and
/// after the run, with the run's inputs and its redirect target. Offsets
/// count from the buffer's start. Not in ubpf.
#[repr(C)]
pub struct ubpf_xdp_packet {
    /// In and out: the offset of the packet's first byte, at least
    /// UBPF_XDP_CONTEXT_SIZE + UBPF_XDP_FRAME_RESERVED + `meta_len`
    /// (UBPF_XDP_CONTEXT_SIZE + UBPF_XDP_HEADROOM gives the kernel's
    /// headroom).
    pub data_offset: u32,
    /// In and out: the packet's length, at least 14 (an Ethernet header,
    /// as the kernel requires).
    pub data_len: u32,
    /// In and out: bytes of metadata right before the packet, a multiple
    /// of 4; usually 0.
    pub meta_len: u32,
    /// In: `xdp_md.ingress_ifindex`.
    pub ingress_ifindex: u32,
    /// In: `xdp_md.rx_queue_index`.
    pub rx_queue_index: u32,
    /// Out: 0 for no target, UBPF_XDP_REDIRECT_DEVICE or
    /// UBPF_XDP_REDIRECT_CPU.
    pub redirect_kind: u32,
    /// Out: the target of XDP_REDIRECT, as `redirect_kind` says.
    pub redirect_target: u32,
}

/// @brief Runs the loaded XDP program in the interpreter over a packet in
/// the caller's buffer, as the Linux kernel runs it, and says where the
/// program left the packet.
///
/// The buffer holds, from its start: UBPF_XDP_CONTEXT_SIZE bytes for the
/// ::ubpf_xdp_context (written here; what was there is lost), the headroom,
/// the packet at `packet->data_offset` (with `packet->meta_len` bytes of
/// metadata before it), and tailroom up to `buffer_len`, as far as
/// `bpf_xdp_adjust_tail` may grow it. A buffer of UBPF_XDP_BUFFER_SIZE bytes
/// with the packet at UBPF_XDP_CONTEXT_SIZE + UBPF_XDP_HEADROOM is laid out
/// as the kernel's `BPF_PROG_TEST_RUN` lays it out. The program may rewrite
/// the packet, move its start (`bpf_xdp_adjust_head`), its end
/// (`bpf_xdp_adjust_tail`) and its metadata (`bpf_xdp_adjust_meta`) within
/// the buffer; the new offsets and lengths come back in `*packet`. A
/// headroom the program may grow into should be zeroed, as the kernel's
/// test_run zeroes it. For a loaded program of another type, or runs that
/// need no offsets back, see ::ubpf_xdp_context.
/// A run fails (-1; the kernel would end it as XDP_ABORTED) when it
/// stops at a check, as ubpf_exec() does, or leaves the packet's pointers
/// outside the buffer (by writing over the context through a packet
/// pointer, which the kernel's verifier refuses); `*packet` and
/// `*bpf_return_value` then stay unchanged. Not in ubpf.
/// Thread safety: as ubpf_exec(); each concurrent run needs its own buffer.
///
/// @param[in] vm The VM, with an XDP program loaded (see
///            ubpf_set_program_type()).
/// @param[in,out] buffer The buffer; nothing else may access it during the
///                run.
/// @param[in] buffer_len Its length: the context, headroom, packet and
///            tailroom.
/// @param[in,out] packet Where the packet is, and where it came in.
/// @param[out] bpf_return_value Where to store r0, the XDP action:
///             XDP_ABORTED (0), XDP_DROP (1), XDP_PASS (2), XDP_TX (3),
///             XDP_REDIRECT (4), or another value, which the kernel handles
///             as XDP_ABORTED.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, buffer, packet or bpf_return_value, no XDP
///         program loaded, a packet that does not fit the buffer as above,
///         or a failed run.
///
/// # Safety
/// `vm` is NULL or a live VM that no thread changes meanwhile; `buffer` is
/// NULL or points at `buffer_len` writable bytes; `packet` is NULL or
/// readable and writable; `bpf_return_value` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_exec_xdp(
    vm: *const ubpf_vm,
    buffer: *mut c_void,
    buffer_len: usize,
    packet: *mut ubpf_xdp_packet,
    bpf_return_value: *mut u64,
) -> c_int {
    // SAFETY: the header requires `vm` to be NULL or a live VM.
    boundary!(report: unsafe { error_printer(vm) }, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        if bpf_return_value.is_null() {
            return Err("bpf_return_value is NULL".to_owned());
        }
        // SAFETY: NULL, or readable and writable by the caller's contract.
        let packet = unsafe { packet.as_mut() }.ok_or("packet is NULL")?;
        let program = &vm.loaded()?.program;
        if program.program_type() != ProgramType::Xdp {
            return Err("the loaded program is a filter, not an XDP program: load it after \
                        ubpf_set_program_type(vm, UBPF_PROGRAM_TYPE_XDP)"
                .to_owned());
        }
        // SAFETY: the caller's contract.
        let input = unsafe { bytes_mut(buffer, buffer_len, "buffer") }?;
        let context = placed(packet, buffer_len)?;
        context.write(input);
        let value = program.execute(input).map_err(|error| error.to_string())?;
        let left = Context::read(input).ok_or(
            "the run left the context's packet pointers outside the buffer: the program wrote over the \
             context block",
        )?;
        let (redirect_kind, redirect_target) = Context::redirect(input);
        // Valid pointers lie in the page, whose length fits the input's.
        let offset = |at: usize| (at + xdp_context::SIZE) as u32;
        *packet = ubpf_xdp_packet {
            data_offset: offset(left.data),
            data_len: (left.data_end - left.data) as u32,
            meta_len: (left.data - left.data_meta) as u32,
            redirect_kind,
            redirect_target,
            ..*packet
        };
        // SAFETY: not NULL, and writable by the caller's contract.
        unsafe { bpf_return_value.write(value) };
        Ok(0)
    })
}

/// The context a run of `packet` in a buffer of `buffer_len` bytes starts
/// from, when the packet fits it as ubpf_exec_xdp() requires.
fn placed(packet: &ubpf_xdp_packet, buffer_len: usize) -> Result<Context, String> {
    let ubpf_xdp_packet { data_offset, data_len, meta_len, .. } = *packet;
    let (offset, len, meta) = (data_offset as usize, data_len as usize, meta_len as usize);
    let lowest = xdp_context::SIZE + FRAME_RESERVED;
    if buffer_len > u32::MAX as usize {
        return Err(format!("a buffer of {buffer_len} bytes is longer than offsets of 32 bits reach"));
    }
    if buffer_len < lowest + ETH_HLEN {
        return Err(format!(
            "a buffer of {buffer_len} bytes is too short for an XDP packet (at least {})",
            lowest + ETH_HLEN
        ));
    }
    if len < ETH_HLEN {
        return Err(format!("a packet of {len} bytes is shorter than an Ethernet header (14 bytes)"));
    }
    if meta % 4 != 0 {
        return Err(format!("{meta} bytes of metadata: not a multiple of 4"));
    }
    if offset < lowest + meta {
        return Err(format!(
            "the packet at offset {offset}, after {meta} bytes of metadata, leaves less than the {} bytes of \
             context and reserved headroom before it",
            lowest
        ));
    }
    if offset + len > buffer_len {
        return Err(format!(
            "the packet at offset {offset}, of {len} bytes, ends past the buffer's {buffer_len} bytes"
        ));
    }
    let data = offset - xdp_context::SIZE;
    let rx = RxInfo { ingress_ifindex: packet.ingress_ifindex, rx_queue_index: packet.rx_queue_index };
    Ok(Context { rx, data_meta: data - meta, data, data_end: data + len })
}
