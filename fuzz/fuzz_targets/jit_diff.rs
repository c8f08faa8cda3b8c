//! The JIT against the interpreter on programs generated from the fuzzer's
//! bytes (`qemu_ubpf::testing::testgen`); tests/differential.rs runs the same
//! body over seeds. A difference panics with the program and both results.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::testing::testgen;

fuzz_target!(|data: &[u8]| {
    if let Err(report) = testgen::program_from_bytes(data).compare_engines() {
        panic!("{report}");
    }
});
