//! tcpdump expressions: compiled by libpcap for a link type, translated,
//! loaded, and run over frames of that link type in both engines, which
//! must agree; a compiled expression must always load. Needs libpcap at run
//! time (loaded on first use). First byte: the link type; the rest: the
//! expression.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::cbpf::{self, libpcap};

/// Ethernet, raw IP, Linux SLL, Linux SLL2.
const LINK_TYPES: [u32; 4] = [1, 101, 113, 276];

fuzz_target!(|data: &[u8]| {
    let mut bytes = common::Bytes(data);
    let link_type = LINK_TYPES[usize::from(bytes.u8()) % LINK_TYPES.len()];
    let Ok(expression) = std::str::from_utf8(bytes.rest()) else { return };
    let Ok(program) = libpcap::compile(expression, link_type) else { return };
    let config = common::config();
    let load = || match cbpf::load(&program, &config) {
        Ok(loaded) => Some(loaded),
        Err(error) => panic!("libpcap compiled {expression:?}, which does not load: {error}"),
    };
    for frame in [&common::FRAME[..], &common::FRAME[14..], &common::FRAME[..20], &[]] {
        if let Some(Err(error)) = common::compare(frame, load) {
            panic!("{expression:?} faulted: {error}");
        }
    }
});
