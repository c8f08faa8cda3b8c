//! Linux's numbers and names of the helpers this runtime knows (`enum
//! bpf_func_id`, and the names `bpf_helper_defs.h` gives them, by which ELF
//! objects call helpers), for every stage that names one.

pub const MAP_LOOKUP_ELEM: u32 = 1;
pub const MAP_UPDATE_ELEM: u32 = 2;
pub const MAP_DELETE_ELEM: u32 = 3;
pub const KTIME_GET_NS: u32 = 5;
pub const TRACE_PRINTK: u32 = 6;
pub const GET_PRANDOM_U32: u32 = 7;
pub const GET_SMP_PROCESSOR_ID: u32 = 8;
pub const TAIL_CALL: u32 = 12;
pub const REDIRECT: u32 = 23;
pub const PERF_EVENT_OUTPUT: u32 = 25;
pub const CSUM_DIFF: u32 = 28;
pub const XDP_ADJUST_HEAD: u32 = 44;
pub const REDIRECT_MAP: u32 = 51;
pub const XDP_ADJUST_META: u32 = 54;
pub const XDP_ADJUST_TAIL: u32 = 65;
pub const MAP_PUSH_ELEM: u32 = 87;
pub const MAP_POP_ELEM: u32 = 88;
pub const MAP_PEEK_ELEM: u32 = 89;
pub const KTIME_GET_BOOT_NS: u32 = 125;
pub const RINGBUF_OUTPUT: u32 = 130;
pub const RINGBUF_RESERVE: u32 = 131;
pub const RINGBUF_SUBMIT: u32 = 132;
pub const RINGBUF_DISCARD: u32 = 133;
pub const RINGBUF_QUERY: u32 = 134;
pub const TRACE_VPRINTK: u32 = 177;
pub const XDP_LOAD_BYTES: u32 = 189;
pub const XDP_STORE_BYTES: u32 = 190;

/// Each helper's number and name.
#[rustfmt::skip]
const NAMES: &[(u32, &str)] = &[
    (MAP_LOOKUP_ELEM,      "bpf_map_lookup_elem"),
    (MAP_UPDATE_ELEM,      "bpf_map_update_elem"),
    (MAP_DELETE_ELEM,      "bpf_map_delete_elem"),
    (KTIME_GET_NS,         "bpf_ktime_get_ns"),
    (TRACE_PRINTK,         "bpf_trace_printk"),
    (GET_PRANDOM_U32,      "bpf_get_prandom_u32"),
    (GET_SMP_PROCESSOR_ID, "bpf_get_smp_processor_id"),
    (TAIL_CALL,            "bpf_tail_call"),
    (REDIRECT,             "bpf_redirect"),
    (PERF_EVENT_OUTPUT,    "bpf_perf_event_output"),
    (CSUM_DIFF,            "bpf_csum_diff"),
    (XDP_ADJUST_HEAD,      "bpf_xdp_adjust_head"),
    (REDIRECT_MAP,         "bpf_redirect_map"),
    (XDP_ADJUST_META,      "bpf_xdp_adjust_meta"),
    (XDP_ADJUST_TAIL,      "bpf_xdp_adjust_tail"),
    (MAP_PUSH_ELEM,        "bpf_map_push_elem"),
    (MAP_POP_ELEM,         "bpf_map_pop_elem"),
    (MAP_PEEK_ELEM,        "bpf_map_peek_elem"),
    (KTIME_GET_BOOT_NS,    "bpf_ktime_get_boot_ns"),
    (RINGBUF_OUTPUT,       "bpf_ringbuf_output"),
    (RINGBUF_RESERVE,      "bpf_ringbuf_reserve"),
    (RINGBUF_SUBMIT,       "bpf_ringbuf_submit"),
    (RINGBUF_DISCARD,      "bpf_ringbuf_discard"),
    (RINGBUF_QUERY,        "bpf_ringbuf_query"),
    (TRACE_VPRINTK,        "bpf_trace_vprintk"),
    (XDP_LOAD_BYTES,       "bpf_xdp_load_bytes"),
    (XDP_STORE_BYTES,      "bpf_xdp_store_bytes"),
];

/// The name of helper `index`, for messages.
pub fn name(index: u32) -> &'static str {
    NAMES.iter().find(|(number, _)| *number == index).map_or("unknown", |(_, name)| name)
}

/// Does helper `index` take an XDP context (and so apply to XDP programs
/// only)?
pub fn is_xdp_only(index: u32) -> bool {
    matches!(
        index,
        REDIRECT
            | REDIRECT_MAP
            | XDP_ADJUST_HEAD
            | XDP_ADJUST_META
            | XDP_ADJUST_TAIL
            | XDP_LOAD_BYTES
            | XDP_STORE_BYTES
    )
}
