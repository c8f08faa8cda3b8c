//! The JIT against the interpreter on programs generated from the fuzzer's
//! bytes (`qemu_ubpf::testing::testgen`); tests/differential.rs runs the same
//! body over seeds. A difference panics with the program and both results.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::testing::testgen;

fuzz_target!(|data: &[u8]| {
    let case = testgen::program_from_bytes(data);
    let refused = |error| {
        panic!("the generator made a program the verifier refuses: {error}\n{}", testgen::case_description(&case))
    };
    // One load per engine, so that both runs start from the same global data.
    let interpreted = case.load().unwrap_or_else(refused);
    let compiled = Arc::new(case.load().unwrap_or_else(refused));
    let jit = JitProgram::compile(Arc::clone(&compiled)).unwrap_or_else(|error| {
        panic!("the JIT refused a verified program: {error:?}\n{}", testgen::case_description(&case))
    });
    if let Err(divergence) = testgen::compare(&case, &interpreted, &compiled, |memory| jit.execute(memory)) {
        panic!("{}", divergence.report(&case));
    }
});
