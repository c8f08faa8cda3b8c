//! `qemu-ubpf`: run, check, assemble and disassemble eBPF packet filters.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qemu_ubpf::{Config, Helpers, Program, asm, disasm, isa};

#[derive(Parser)]
#[command(name = "qemu-ubpf", version, about = "Userspace eBPF runtime for QEMU's filter-ubpf")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program once over one input and print r0 (and the verdict).
    Run {
        /// Program: a clang -target bpf ELF object, or raw bytecode.
        program: PathBuf,
        /// Function or section to run, in an object with several.
        #[arg(long)]
        name: Option<String>,
        /// Input as hex bytes (whitespace allowed).
        #[arg(long, conflicts_with = "input")]
        hex: Option<String>,
        /// Input from a file.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Instructions one run may execute.
        #[arg(long, default_value_t = qemu_ubpf::program::DEFAULT_INSTRUCTION_LIMIT)]
        instruction_limit: u64,
    },
    /// Load and verify a program, printing what the loader finds wrong.
    Check {
        program: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// Assemble a text file into raw bytecode.
    Asm {
        source: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Disassemble raw bytecode or the program of an ELF object.
    Disasm {
        program: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn load(path: &Path, name: Option<&str>, config: &Config) -> Result<Program, String> {
    let bytes = read(path)?;
    let helpers = Helpers::new();
    let result = if bytes.starts_with(b"\x7fELF") {
        Program::from_elf(&bytes, name, &helpers, config).map_err(|e| e.to_string())
    } else {
        Program::load(&bytes, &helpers, config).map_err(|e| e.to_string())
    };
    result.map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err("--hex: odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let pair: String = pair.iter().collect();
            u8::from_str_radix(&pair, 16).map_err(|_| format!("--hex: byte {i} ({pair:?}) is not hex"))
        })
        .collect()
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Run { program, name, hex, input, instruction_limit } => {
            let config = Config { instruction_limit, ..Config::default() };
            let loaded = load(&program, name.as_deref(), &config)?;
            let mut packet = match (hex, input) {
                (Some(hex), _) => parse_hex(&hex)?,
                (None, Some(path)) => read(&path)?,
                (None, None) => Vec::new(),
            };
            let r0 = loaded.execute(&mut packet).map_err(|e| format!("{}: {e}", program.display()))?;
            let verdict = if r0 == 0 { "pass" } else { "drop" };
            println!("r0 = {r0:#x} ({r0}): {verdict}");
        }
        Command::Check { program, name } => {
            let loaded = load(&program, name.as_deref(), &Config::default())?;
            println!(
                "{}: ok, {} instructions in {} functions",
                program.display(),
                loaded.insns().len(),
                loaded.functions().len()
            );
        }
        Command::Asm { source, output } => {
            let text = String::from_utf8(read(&source)?).map_err(|_| format!("{}: not UTF-8", source.display()))?;
            let insns = asm::assemble(&text).map_err(|e| format!("{}: {e}", source.display()))?;
            std::fs::write(&output, isa::encode_program(&insns)).map_err(|e| format!("{}: {e}", output.display()))?;
        }
        Command::Disasm { program, name } => {
            let bytes = read(&program)?;
            let insns = if bytes.starts_with(b"\x7fELF") {
                let linked = qemu_ubpf::elf::load(&bytes, name.as_deref(), &Helpers::new())
                    .map_err(|e| format!("{}: {e}", program.display()))?;
                linked.image.insns
            } else {
                isa::decode_program(&bytes)
                    .ok_or_else(|| format!("{}: {} bytes is not a whole number of instructions", program.display(), bytes.len()))?
            };
            print!("{}", disasm::disassemble(&insns));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("qemu-ubpf: {message}");
            ExitCode::FAILURE
        }
    }
}
