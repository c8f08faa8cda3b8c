//! Raw bytecode through load (decoding, map and helper resolution), the
//! verifier, and both engines, which must agree. The first byte sets the
//! input's length, then come the input and the program, 8 bytes a slot.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::{Program, disasm, isa};

fuzz_target!(|data: &[u8]| {
    let mut bytes = common::Bytes(data);
    let input_len = usize::from(bytes.u8());
    let input = bytes.take(input_len).to_vec();
    let code = bytes.rest();
    if let Some(insns) = isa::decode_program(code) {
        let _ = disasm::disassemble(&insns);
    }
    let (helpers, config) = (common::helpers(), common::config());
    common::compare(&input, || Program::load(code, &helpers, &config).ok());
});
