//! Runs every bpf_conformance vector (vendored in tests/conformance) through
//! the interpreter.

use std::path::Path;

use qemu_ubpf::testing::conformance::{self, Vector};
use qemu_ubpf::{Config, Program, asm, isa};

fn vectors() -> Vec<(String, Vector)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    conformance::read_vectors(&dir).expect("tests/conformance is vendored and parses")
}

/// Runs one vector; `Err` says how it failed.
fn check(vector: &Vector) -> Result<(), String> {
    let insns = asm::assemble(&vector.asm).map_err(|e| format!("assembly: {e}"))?;
    let outcome = Program::load(&isa::encode_program(&insns), &conformance::helpers(), &Config::default())
        .map_err(|e| e.to_string())
        .and_then(|program| program.execute(&mut vector.mem.clone()).map_err(|e| e.to_string()));
    match (outcome, vector.result, &vector.error) {
        (Ok(r0), Some(expected), _) if r0 == expected => Ok(()),
        (Ok(r0), expected, _) => Err(format!("r0 = {r0:#x}, expected {expected:x?}")),
        (Err(_), _, Some(_)) => Ok(()),
        (Err(e), _, None) => Err(format!("error {e}")),
    }
}

#[test]
fn conformance_interpreter() {
    let vectors = vectors();
    let failures: Vec<String> =
        vectors.iter().filter_map(|(name, vector)| check(vector).err().map(|why| format!("{name}: {why}"))).collect();
    for failure in &failures {
        eprintln!("FAIL {failure}");
    }
    println!("conformance (interpreter): {} passed, {} failed", vectors.len() - failures.len(), failures.len());
    assert!(vectors.len() >= 313, "only {} vectors found", vectors.len());
    assert!(failures.is_empty());
}

/// Drives `qemu-ubpf-conformance` as bpf_conformance's runner does: program
/// as hex on stdin, memory as hex bytes in the first argument, r0 in hex on
/// stdout.
#[test]
fn conformance_plugin_binary_interpreter() {
    plugin_run("--interpret", "interpreter");
}

#[test]
fn conformance_plugin_binary_jit() {
    plugin_run("--jit", "jit");
}

fn plugin_run(option: &str, engine: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    let vectors = vectors();
    let mut failed = 0;
    for (name, vector) in &vectors {
        let program = isa::encode_program(&asm::assemble(&vector.asm).unwrap());
        let mut command = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf-conformance"));
        if !vector.mem.is_empty() {
            command.arg(hex(&vector.mem));
        }
        let mut child = command
            .arg(option)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("plugin starts");
        child.stdin.take().unwrap().write_all(hex(&program).as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let r0 = u64::from_str_radix(stdout.trim(), 16).ok();
        let ok = match (&vector.error, vector.result) {
            (Some(_), _) => !output.status.success(),
            (None, expected) => output.status.success() && r0 == expected,
        };
        if !ok {
            failed += 1;
            eprintln!(
                "FAIL {name}: status {}, stdout {stdout:?}, stderr {:?}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    println!("conformance plugin ({engine}): {} passed, {failed} failed", vectors.len() - failed);
    assert_eq!(failed, 0);
}
