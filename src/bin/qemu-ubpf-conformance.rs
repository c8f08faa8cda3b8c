//! A bpf_conformance plugin: the program arrives on stdin as hex text (or,
//! with `--elf`, as an ELF object, raw or hex), the input memory as hex bytes
//! in the first argument when the test has memory; prints r0 in hex and
//! exits 0, or prints the error and exits 1.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::testing::conformance;
use qemu_ubpf::{Config, Program};

#[path = "shared/hex.rs"]
mod hex;

const USAGE: &str = "usage: qemu-ubpf-conformance [MEMORY-HEX] [--interpret | --jit] [--elf] < PROGRAM";

#[derive(Default)]
struct Options {
    memory: Vec<u8>,
    elf: bool,
    jit: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options::default();
    for (index, arg) in args.enumerate() {
        match arg.as_str() {
            "--interpret" => options.jit = false,
            "--jit" => options.jit = true,
            "--elf" => options.elf = true,
            "-h" | "--help" => return Err(USAGE.into()),
            memory if index == 0 && !memory.starts_with("--") => {
                options.memory = hex::parse_hex(memory).map_err(|e| format!("memory argument: {e}"))?;
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn run() -> Result<u64, String> {
    let options = parse_args(std::env::args().skip(1))?;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
    let code = if options.elf && input.starts_with(b"\x7fELF") {
        input
    } else {
        hex::parse_hex(&String::from_utf8_lossy(&input)).map_err(|e| format!("program on stdin: {e}"))?
    };
    let helpers = conformance::helpers();
    let program = if options.elf {
        Program::from_elf(&code, None, &helpers, &Config::default()).map_err(|e| e.to_string())?
    } else {
        Program::load(&code, &helpers, &Config::default()).map_err(|e| e.to_string())?
    };
    let mut memory = options.memory;
    if options.jit {
        let compiled = JitProgram::compile(Arc::new(program)).map_err(|e| e.to_string())?;
        compiled.execute(&mut memory).map_err(|e| e.to_string())
    } else {
        program.execute(&mut memory).map_err(|e| e.to_string())
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(r0) => {
            println!("{r0:x}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
