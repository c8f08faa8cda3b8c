//! Host instructions the JIT emits per eBPF instruction, on this machine's
//! backend, for the benchmark programs: benches/capi's classifier and
//! checksum (as clang builds them for -mcpu=v1 and v3), the empty program,
//! and a few of the XDP and filter objects the tests and examples commit.
//!
//! Timings under qemu-user say nothing of real hardware; these counts are
//! the same under qemu-user as on a real machine. `cargo bench --bench
//! insns` counts the host's backend; scripts/bench-insns.sh counts both
//! (the aarch64 one cross-built, under qemu-user).
//!
//! aarch64 instructions are 4 bytes each (the backend puts no data in its
//! code); x86-64 ones have many lengths, so objdump (binutils; `OBJDUMP`
//! names another) decodes the code. The count is of all the code: prologue,
//! body, the out-of-line halves of the memory checks and the exits.

use std::process::Command;
use std::sync::Arc;

use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::{Config, Helpers, Program, asm, isa};

/// Name and path (from the crate's root) of each object counted.
const OBJECTS: &[(&str, &str)] = &[
    ("capi classifier v1", "benches/capi/classifier.v1.o"),
    ("capi classifier v3", "benches/capi/classifier.v3.o"),
    ("capi checksum v1", "benches/capi/checksum.v1.o"),
    ("capi checksum v3", "benches/capi/checksum.v3.o"),
    ("classifier", "examples/classifier.o"),
    ("checksum", "tests/fixtures/checksum.o"),
    ("firewall (XDP)", "examples/firewall.o"),
    ("dns_blocklist (XDP)", "examples/dns_blocklist.o"),
    ("syn_limiter (XDP)", "examples/syn_limiter.o"),
    ("xdp_firewall (XDP)", "tests/fixtures/xdp_firewall.o"),
];

fn main() {
    // cargo passes --bench to harness-less benches; a name filters rows.
    let filter: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with("--")).collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut programs = vec![("empty".to_owned(), empty())];
    for &(name, path) in OBJECTS {
        let object = std::fs::read(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
        let program = Program::from_elf(&object, None, &Helpers::linux(), &Config::default())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        programs.push((name.to_owned(), program));
    }
    let arch = std::env::consts::ARCH;
    println!("{arch} JIT: host instructions per eBPF instruction");
    println!("{:<22} {:>6} {:>8} {:>7} {:>10}", "program", "eBPF", "host", "bytes", "host/eBPF");
    let (mut all_ebpf, mut all_host) = (0, 0);
    for (name, program) in programs {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        // An lddw fills two slots but is one instruction.
        let insns = program.insns();
        let ebpf = insns.len() - insns.iter().filter(|insn| insn.opc == isa::LDDW).count();
        let jit = JitProgram::compile(Arc::new(program)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let host = count_instructions(jit.code());
        println!("{name:<22} {ebpf:>6} {host:>8} {:>7} {:>10.2}", jit.code().len(), host as f64 / ebpf as f64);
        all_ebpf += ebpf;
        all_host += host;
    }
    println!("{:<22} {all_ebpf:>6} {all_host:>8} {:>7} {:>10.2}", "all", "", all_host as f64 / all_ebpf as f64);
}

/// `mov r0, 0; exit`: the cost of a call alone.
fn empty() -> Program {
    let insns = asm::assemble("mov %r0, 0\nexit").expect("assembles");
    Program::load(&isa::encode_program(&insns), &Helpers::new(), &Config::default()).expect("verifies")
}

/// The instructions in `code`, machine code of this machine's architecture.
fn count_instructions(code: &[u8]) -> usize {
    if cfg!(target_arch = "aarch64") {
        return code.len() / 4;
    }
    let file = std::env::temp_dir().join(format!("qemu-ubpf-insns-{}.bin", std::process::id()));
    std::fs::write(&file, code).expect("writes the code to a temporary file");
    let objdump = std::env::var("OBJDUMP").unwrap_or_else(|_| "objdump".to_owned());
    // Wide enough that no instruction's bytes wrap onto a second line.
    let output = Command::new(&objdump)
        .args(["-D", "-b", "binary", "-m", "i386:x86-64", "--insn-width=16"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{objdump}: {e} (install binutils, or set OBJDUMP)"));
    std::fs::remove_file(&file).ok();
    assert!(output.status.success(), "{objdump}: {}", String::from_utf8_lossy(&output.stderr));
    // Instruction lines are "  addr:\tbytes\tmnemonic operands".
    let listing = String::from_utf8_lossy(&output.stdout);
    let count = listing.lines().filter(|line| line.split('\t').count() >= 3).count();
    assert!(!listing.contains("(bad)"), "{objdump} could not decode the code");
    count
}
