//! Legacy packet loads against the Linux kernel's answers, recorded by
//! `scripts/record-kernel-ldabs.py` in `tests/kernel/ldabs.json`: every
//! program over every frame gives the kernel's return value, in the
//! interpreter and in the JIT.

use std::sync::Arc;

use qemu_ubpf::interp::{self, Stack};
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::{Config, Helpers, Program};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn legacy_packet_loads_return_what_the_kernel_returns() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kernel/ldabs.json");
    let document: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let text = |value: &serde_json::Value| value.as_str().expect("a string").to_string();
    let runs = document["runs"].as_array().unwrap();
    assert!(runs.len() > 600, "the recording has {} runs", runs.len());
    let mut stack = Stack::default();
    for run in runs {
        let (name, frame) = (text(&run["program"]), text(&run["frame"]));
        let expected = run["retval"].as_u64().unwrap();
        let code = hex(&text(&document["programs"][&name]));
        let program = Arc::new(
            Program::load(&code, &Helpers::new(), &Config::default()).unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        let jit = JitProgram::compile(program.clone()).unwrap();
        let input = hex(&text(&document["frames"][&frame]));
        let mut executed = 0;
        let interpreted = interp::run(&program, &mut input.clone(), &mut stack, &mut executed);
        let compiled = jit.run(&mut input.clone(), &mut stack, &mut executed);
        assert_eq!(interpreted, Ok(expected), "interpreter: {name} on {frame}");
        assert_eq!(compiled, Ok(expected), "JIT: {name} on {frame}");
    }
}
