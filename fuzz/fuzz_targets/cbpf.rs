//! Classic BPF: programs as `struct sock_filter` arrays (8 bytes each) or
//! as `tcpdump -ddd` text, translated into eBPF, loaded, and run over a
//! frame in both engines, which must agree. First byte: the form (even:
//! binary, odd: text) and then the frame's length.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::cbpf::{self, ClassicInsn};

fuzz_target!(|data: &[u8]| {
    let mut bytes = common::Bytes(data);
    let text = bytes.u8() % 2 == 1;
    let frame_len = usize::from(bytes.u8());
    let mut frame = common::FRAME.to_vec();
    frame.resize(frame_len, 0xaa);
    let program: Vec<ClassicInsn> = if text {
        let Ok(text) = std::str::from_utf8(bytes.rest()) else { return };
        let Ok(program) = cbpf::parse_decimal(text) else { return };
        program
    } else {
        bytes
            .rest()
            .chunks_exact(8)
            .map(|insn| ClassicInsn {
                code: u16::from_le_bytes([insn[0], insn[1]]),
                jt: insn[2],
                jf: insn[3],
                k: u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]),
            })
            .collect()
    };
    if cbpf::translate(&program).is_err() {
        return;
    }
    let config = common::config();
    let load = || match cbpf::load(&program, &config) {
        Ok(loaded) => Some(loaded),
        Err(error) => panic!("a classic program translated but did not load: {error}"),
    };
    let result = common::compare(&frame, load);
    // A classic program that translates has no way to fault: every load
    // past the frame returns 0, as in the kernel.
    if let Some(Err(error)) = result {
        panic!("a translated classic program faulted: {error}");
    }
});
