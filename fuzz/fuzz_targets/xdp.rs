//! XDP programs: raw bytecode loaded as an XDP program (context accesses
//! rewritten, XDP helpers allowed) and run over an XDP buffer in both
//! engines, which must agree on r0, the packet, the metadata and the
//! context block. Bytes: frame length, metadata words (at most 54, the
//! headroom test_run allows), ifindex, queue, the
//! frame and metadata, then the program.

#![no_main]

mod common;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::testing::{engines, testgen};
use qemu_ubpf::xdp::{Buffer, RxInfo};
use qemu_ubpf::{Config, Program, ProgramType};

fuzz_target!(|data: &[u8]| {
    let mut bytes = common::Bytes(data);
    let frame_len = 14 + usize::from(bytes.u8());
    let meta_len = 4 * usize::from(bytes.u8() % 55);
    let rx = RxInfo { ingress_ifindex: u32::from(bytes.u8()), rx_queue_index: u32::from(bytes.u8()) };
    let mut frame = bytes.take(frame_len).to_vec();
    frame.resize(frame_len, 0);
    let mut meta = bytes.take(meta_len).to_vec();
    meta.resize(meta_len, 0);
    let code = bytes.rest();
    let helpers = common::helpers();
    let config = Config { program_type: Some(ProgramType::Xdp), ..common::config() };
    let Ok(interpreted) = Program::load(code, &helpers, &config) else { return };
    let compiled = Arc::new(Program::load(code, &helpers, &config).expect("loads again"));
    let jit = JitProgram::compile(compiled.clone())
        .unwrap_or_else(|error| panic!("the JIT refused a verified program: {error}"));
    let buffer = Buffer::new(&frame, &meta, rx).expect("a frame and metadata test_run accepts");
    let result = engines::compare_xdp(&buffer, &interpreted, &compiled, |memory| {
        let (result, executed) = jit.execute_counted(memory);
        (result, Some(executed))
    });
    if let Err(divergence) = result {
        panic!("{divergence}{}", testgen::listing(compiled.insns()));
    }
    // The kernel's way of running it: the buffer's own run and accessors.
    let mut buffer = buffer;
    if buffer.run(|memory| jit.execute(memory)).is_ok() {
        let _ = (buffer.packet(), buffer.metadata(), buffer.redirect_target());
    }
});
