//! `qemu-ubpf`: replay captures through eBPF packet filters; run, check,
//! inspect, assemble and disassemble them.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qemu_ubpf::elf::{HelperRef, ObjectInfo};
use qemu_ubpf::maps;
use qemu_ubpf::replay::frame::link_type_name;
use qemu_ubpf::replay::{
    CaptureReader, CaptureWriter, Engine, EngineKind, Format, IpMode, Options, OutputFile, Outputs, Record, Replay,
    Summary, Verdict,
};
use qemu_ubpf::xdp::{self, Action};
use qemu_ubpf::{Config, Helpers, Program, asm, disasm, elf, isa};
use qemu_ubpf::{MapType, ProgramType};

#[path = "qemu-ubpf/build.rs"]
mod build;
#[path = "shared/hex.rs"]
mod hex;

/// The QEMU RFC's example filter, run when `replay` is given no program.
const BUNDLED_PROGRAM: &[u8] = include_bytes!("../../examples/drop_1_1_1_1.o");
const BUNDLED_PROGRAM_NAME: &str = "examples/drop_1_1_1_1.o";
/// The sample capture, replayed when `replay` is given no capture.
const BUNDLED_CAPTURE: &[u8] = include_bytes!("../../examples/captures/ethernet.pcap");
const BUNDLED_CAPTURE_NAME: &str = "examples/captures/ethernet.pcap";

/// Replays shorter than this show no progress bar.
const PROGRESS_DELAY: Duration = Duration::from_millis(300);
const OUTPUT_BUFFER_LEN: usize = 1 << 18;
/// `LINKTYPE_ETHERNET`: what QEMU's filter sees, and the link type an
/// expression compiles for when the capture has no packets.
const LINKTYPE_ETHERNET: u32 = 1;

#[derive(Parser)]
#[command(name = "qemu-ubpf", version, about = "Userspace eBPF runtime for QEMU's filter-ubpf")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a capture through a filter or an XDP program, as QEMU's filter-ubpf would run it.
    ///
    /// A filter's non-zero return value drops a packet, zero passes it; the
    /// --pass and --drop files hold its packets byte for byte. An XDP program
    /// sees whole Ethernet frames and returns an action: --pass, --tx and
    /// --redirect get the packets as it left them, --drop the ones it dropped
    /// or aborted, or whose run faulted, as they came in. Captures are pcap
    /// (micro- or nanosecond) or pcapng; outputs have the input's format,
    /// except --redirect, always pcapng. With no arguments, replays a bundled
    /// example filter over a bundled sample capture and explains what it did.
    Replay {
        /// Program: a clang -target bpf ELF object, or raw bytecode [default:
        /// the bundled examples/drop_1_1_1_1.o]. With --expr, the capture.
        program: Option<PathBuf>,
        /// Capture: pcap (micro- or nanosecond) or pcapng [default: the
        /// bundled examples/captures/ethernet.pcap].
        capture: Option<PathBuf>,
        /// Function or section to run, in an object with several.
        #[arg(long = "program", value_name = "NAME", alias = "name")]
        function: Option<String>,
        /// Filter with a tcpdump expression instead of a program: libpcap
        /// compiles it for each link type of the capture, and the packets
        /// it matches are dropped. The expression sees frames as the
        /// capture stores them (ip-mode does not apply).
        #[arg(long, value_name = "EXPR", conflicts_with_all = ["capture", "function", "map_init"])]
        expr: Option<String>,
        /// jit: native code; interp: the interpreter, the reference semantics.
        #[arg(long, value_enum, default_value_t = EngineArg::Jit)]
        engine: EngineArg,
        /// The program's type [default: from its ELF section, as libbpf
        /// names them: xdp and xdp/... are XDP, anything else (and raw
        /// bytecode) a filter].
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        program_type: Option<TypeArg>,
        /// on: the program sees IPv4 packets from their header on (after the
        /// Ethernet header and one VLAN tag, or a cooked-capture header), and
        /// packets without IPv4 pass without running it (counted as skipped);
        /// off: the program sees every frame whole [default: on; off with
        /// --expr]. Filters only: an XDP program sees every frame whole.
        #[arg(long, value_enum)]
        ip_mode: Option<Switch>,
        /// Verdict for a packet whose filter run faults (counted as an
        /// error) [default: drop]. Filters only: an XDP run that faults is
        /// dropped, as the kernel drops XDP_ABORTED.
        #[arg(long, value_enum)]
        on_error: Option<VerdictArg>,
        /// Write the passed packets to FILE, in the input's format: a
        /// filter's as they came in, an XDP program's (XDP_PASS) as it left
        /// them.
        #[arg(long, value_name = "FILE")]
        pass: Option<PathBuf>,
        /// Write the dropped packets to FILE, in the input's format, as they
        /// came in: for an XDP program, those it dropped or aborted (or
        /// returned no action for) and those whose run faulted.
        #[arg(long, value_name = "FILE")]
        drop: Option<PathBuf>,
        /// XDP only: write the packets sent back out (XDP_TX) to FILE, in the
        /// input's format, as the program left them.
        #[arg(long, value_name = "FILE")]
        tx: Option<PathBuf>,
        /// XDP only: write the redirected packets (XDP_REDIRECT) to FILE as
        /// the program left them, each with a comment naming its target
        /// ("XDP_REDIRECT to ifindex 7"). Always pcapng, which has room for
        /// the comment: a pcap capture's packets are written on one
        /// interface of its link type, with nanosecond timestamps.
        #[arg(long, value_name = "FILE")]
        redirect: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Instructions one run may execute.
        #[arg(long, default_value_t = qemu_ubpf::image::DEFAULT_INSTRUCTION_LIMIT)]
        instruction_limit: u64,
        /// After the run, print the program's maps as JSON (with --json, as
        /// the summary's "maps"): keys and values as hex bytes in memory
        /// order; arrays list only their non-zero values; ring buffers
        /// their records.
        #[arg(long)]
        maps: bool,
        /// Fill maps before the run from a JSON file:
        /// {"MAP": [{"key": K, "value": V}, ...]}, K and V hex strings,
        /// unsigned integers, or "a.b.c.d/len" keys for an LPM trie.
        #[arg(long, value_name = "FILE")]
        map_init: Option<PathBuf>,
        /// Print what the program writes with bpf_trace_printk to stderr.
        #[arg(long)]
        trace: bool,
    },
    /// List what an ELF object holds: programs, maps, data sections,
    /// relocations and helper calls.
    Inspect { object: PathBuf },
    /// Run a program once over one input and print r0 (and the verdict).
    ///
    /// A filter runs over the input's bytes (r1, r2 = address, length). An
    /// XDP program runs over the input as one frame, laid out as
    /// BPF_PROG_TEST_RUN lays it out (its context, headroom, tailroom), and
    /// the action it returns is printed with the frame's length as it left
    /// it.
    Run {
        /// Program: a clang -target bpf ELF object, or raw bytecode.
        program: PathBuf,
        /// Function or section to run, in an object with several.
        #[arg(long)]
        name: Option<String>,
        /// The program's type [default: from its ELF section, as for
        /// replay].
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        program_type: Option<TypeArg>,
        /// Input as hex bytes (whitespace allowed).
        #[arg(long, conflicts_with = "input")]
        hex: Option<String>,
        /// Input from a file.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Write the input as the program left it to FILE: for an XDP
        /// program, the frame from data to data_end.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Instructions one run may execute.
        #[arg(long, default_value_t = qemu_ubpf::image::DEFAULT_INSTRUCTION_LIMIT)]
        instruction_limit: u64,
        /// Print what the program writes with bpf_trace_printk to stderr.
        #[arg(long)]
        trace: bool,
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
    /// Compile a tcpdump expression, or a classic BPF program, into an ELF
    /// object that filter-ubpf, replay and the other subcommands load.
    ///
    /// The program returns non-zero (drop) for the packets the expression
    /// matches. It reads frames of the link type it was compiled for, whole:
    /// replay it with --ip-mode off.
    Compile {
        /// A tcpdump expression, compiled by libpcap.
        #[arg(long, value_name = "EXPR", required_unless_present = "cbpf", conflicts_with = "cbpf")]
        expr: Option<String>,
        /// A classic BPF program, as `tcpdump -ddd` prints it.
        #[arg(long, value_name = "FILE")]
        cbpf: Option<PathBuf>,
        /// The link type the expression is compiled for.
        #[arg(long, value_enum, default_value_t = LinkTypeArg::Ethernet)]
        link_type: LinkTypeArg,
        /// The program's function name in the object.
        #[arg(long, default_value = "filter")]
        name: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Build a C filter into a BPF object with clang, with the flags and
    /// include paths it needs.
    ///
    /// Runs `clang -target bpf -O2 -g -mcpu=v3 -c SOURCE -o OUTPUT`,
    /// freestanding: <stdint.h> and the like are clang's, <arpa/inet.h>,
    /// <netinet/in.h> and <endian.h> come from headers qemu-ubpf ships, so
    /// no C library for the BPF target is needed; libbpf's and the kernel's
    /// headers (<bpf/...>, <linux/...>) come from the system. Arguments
    /// after the output go to clang, after these flags (-I, -D, -W...,
    /// or -O1 to override). CLANG names another clang binary.
    Build {
        /// The C source.
        source: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// More arguments for clang.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CLANG_ARGS")]
        clang_args: Vec<std::ffi::OsString>,
    },
    /// Disassemble raw bytecode or the program of an ELF object.
    Disasm {
        program: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TypeArg {
    Filter,
    Xdp,
}

impl TypeArg {
    fn program_type(self) -> ProgramType {
        match self {
            TypeArg::Filter => ProgramType::Filter,
            TypeArg::Xdp => ProgramType::Xdp,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineArg {
    Jit,
    Interp,
}

/// The link types an expression may be compiled for (`LINKTYPE_*`).
#[derive(Clone, Copy, ValueEnum)]
enum LinkTypeArg {
    Ethernet,
    Raw,
    LinuxSll,
    LinuxSll2,
}

impl LinkTypeArg {
    fn number(self) -> u32 {
        match self {
            LinkTypeArg::Ethernet => LINKTYPE_ETHERNET,
            LinkTypeArg::Raw => 101,
            LinkTypeArg::LinuxSll => 113,
            LinkTypeArg::LinuxSll2 => 276,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerdictArg {
    Drop,
    Pass,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn load(path: &Path, name: Option<&str>, config: &Config) -> Result<Program, String> {
    load_bytes(&read(path)?, &path.display().to_string(), name, config)
}

fn load_bytes(bytes: &[u8], file: &str, name: Option<&str>, config: &Config) -> Result<Program, String> {
    // Linux's helpers, so that libbpf programs run as they are.
    let helpers = Helpers::linux();
    let result = if bytes.starts_with(b"\x7fELF") {
        Program::from_elf(bytes, name, &helpers, config).map_err(|e| e.to_string())
    } else {
        Program::load(bytes, &helpers, config).map_err(|e| e.to_string())
    };
    result.map_err(|e| format!("{file}: {e}"))
}

/// Runs `program` once in the interpreter over `input`, as `run` does:
/// r0, what it means for the program's type, and the bytes as the program
/// left them.
fn run_once(program: &Program, mut input: Vec<u8>) -> Result<(u64, String, Vec<u8>), String> {
    if program.program_type() == ProgramType::Filter {
        let r0 = program.execute(&mut input).map_err(|e| e.to_string())?;
        let verdict = if r0 == 0 { "pass" } else { "drop" };
        return Ok((r0, verdict.to_string(), input));
    }
    let mut buffer = xdp::Buffer::new(&input, &[], xdp::RxInfo::default()).map_err(|e| format!("input: {e}"))?;
    let r0 = buffer.run(|bytes| program.execute(bytes)).map_err(|e| e.to_string())?;
    let left = buffer.packet().to_vec();
    let verdict = match Action::from_retval(r0) {
        Some(Action::Redirect) => match buffer.redirect_target() {
            Some(ifindex) => format!("XDP_REDIRECT to ifindex {ifindex}, a frame of {} bytes", left.len()),
            None => "XDP_REDIRECT without a target (dropped)".to_string(),
        },
        Some(action) => format!("{}, a frame of {} bytes", action.name(), left.len()),
        None => format!("not an XDP action (handled as {})", Action::Aborted.name()),
    };
    Ok((r0, verdict, left))
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Replay {
            program,
            capture,
            function,
            expr,
            engine,
            program_type,
            ip_mode,
            on_error,
            pass,
            drop,
            tx,
            redirect,
            json,
            instruction_limit,
            maps,
            map_init,
            trace,
        } => {
            show_trace(trace);
            let (program, capture) = match expr {
                Some(_) => (None, program),
                None => (program, capture),
            };
            if let (Some(Switch::On), Some(_)) = (ip_mode, &expr) {
                return Err("--ip-mode on does not apply to --expr: an expression sees each frame as the capture \
                            stores it, link-layer header included"
                    .into());
            }
            let engine = match engine {
                EngineArg::Jit => EngineKind::Jit,
                EngineArg::Interp => EngineKind::Interpreter,
            };
            let config = Config {
                instruction_limit,
                program_type: program_type.map(TypeArg::program_type),
                ..Config::default()
            };
            let request = ReplayRequest {
                program,
                expr,
                capture,
                function,
                engine,
                config,
                ip_mode,
                on_error,
                pass,
                drop,
                tx,
                redirect,
                json,
                maps,
                map_init,
            };
            return replay(request);
        }
        Command::Inspect { object } => {
            let info = elf::inspect(&read(&object)?).map_err(|e| format!("{}: {e}", object.display()))?;
            print!("{}", describe_object(&object, &info));
        }
        Command::Run { program, name, program_type, hex, input, output, instruction_limit, trace } => {
            show_trace(trace);
            let config = Config {
                instruction_limit,
                program_type: program_type.map(TypeArg::program_type),
                ..Config::default()
            };
            let loaded = load(&program, name.as_deref(), &config)?;
            let input = match (hex, input) {
                (Some(hex), _) => hex::parse_hex(&hex).map_err(|e| format!("--hex: {e}"))?,
                (None, Some(path)) => read(&path)?,
                (None, None) => Vec::new(),
            };
            let (r0, verdict, left) = run_once(&loaded, input).map_err(|e| format!("{}: {e}", program.display()))?;
            println!("r0 = {r0:#x} ({r0}): {verdict}");
            if let Some(path) = output {
                std::fs::write(&path, left).map_err(|e| format!("{}: {e}", path.display()))?;
            }
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
        Command::Compile { expr, cbpf, link_type, name, output } => {
            let classic = match (expr, cbpf) {
                (Some(expr), _) => qemu_ubpf::cbpf::libpcap::compile(&expr, link_type.number())
                    .map_err(|e| format!("expression '{expr}': {e}"))?,
                (None, Some(path)) => {
                    let text = String::from_utf8(read(&path)?).map_err(|_| format!("{}: not UTF-8", path.display()))?;
                    qemu_ubpf::cbpf::parse_decimal(&text).map_err(|e| format!("{}: {e}", path.display()))?
                }
                (None, None) => unreachable!("clap requires --expr or --cbpf"),
            };
            // Loaded once, so that what is written is known to load.
            let program = qemu_ubpf::cbpf::load(&classic, &Config::default()).map_err(|e| e.to_string())?;
            let object = qemu_ubpf::cbpf::object_file::write(program.insns(), &name);
            std::fs::write(&output, object).map_err(|e| format!("{}: {e}", output.display()))?;
        }
        Command::Build { .. } => unreachable!("main() runs build, whose exit status is clang's"),
        Command::Disasm { program, name } => {
            let bytes = read(&program)?;
            let insns = if bytes.starts_with(b"\x7fELF") {
                let linked = qemu_ubpf::elf::load(&bytes, name.as_deref(), &Helpers::linux())
                    .map_err(|e| format!("{}: {e}", program.display()))?;
                linked.image.insns
            } else {
                isa::decode_program(&bytes).ok_or_else(|| {
                    format!("{}: {} bytes is not a whole number of instructions", program.display(), bytes.len())
                })?
            };
            print!("{}", disasm::disassemble(&insns));
        }
    }
    Ok(())
}

/// Everything `replay` was asked to do.
struct ReplayRequest {
    program: Option<PathBuf>,
    /// A tcpdump expression, in place of the program.
    expr: Option<String>,
    capture: Option<PathBuf>,
    function: Option<String>,
    engine: EngineKind,
    config: Config,
    ip_mode: Option<Switch>,
    on_error: Option<VerdictArg>,
    pass: Option<PathBuf>,
    drop: Option<PathBuf>,
    tx: Option<PathBuf>,
    redirect: Option<PathBuf>,
    json: bool,
    maps: bool,
    map_init: Option<PathBuf>,
}

fn replay(request: ReplayRequest) -> Result<(), String> {
    let function = request.function.as_deref();
    let (program_name, program) = match (&request.expr, &request.program) {
        // Compiled once the capture's link types are known.
        (Some(expr), _) => (format!("expression '{expr}'"), None),
        (None, Some(path)) => (path.display().to_string(), Some(load(path, function, &request.config)?)),
        (None, None) => {
            let program = load_bytes(BUNDLED_PROGRAM, BUNDLED_PROGRAM_NAME, function, &request.config)?;
            (BUNDLED_PROGRAM_NAME.to_owned(), Some(program))
        }
    };
    let xdp = program.as_ref().is_some_and(|program| program.program_type() == ProgramType::Xdp);
    let options = replay_options(&request, xdp).map_err(|e| format!("{program_name}: {e}"))?;
    if let (Some(path), Some(program)) = (&request.map_init, &program) {
        let text = String::from_utf8(read(path)?).map_err(|_| format!("{}: not UTF-8", path.display()))?;
        maps::json::init(program.maps(), &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let new_engine = |program: Program| {
        Engine::new(program, request.engine).map_err(|e| {
            format!("{program_name}: the JIT cannot compile it: {e}; --engine interp runs it in the interpreter")
        })
    };
    let engines: Vec<(u32, Engine)> = match (program, &request.expr) {
        (Some(program), _) => vec![(0, new_engine(program)?)],
        (None, Some(expr)) => {
            let mut engines = Vec::new();
            for link_type in capture_link_types(request.capture.as_deref())? {
                let program = qemu_ubpf::cbpf::libpcap::load_expression(expr, link_type, &request.config)
                    .map_err(|e| format!("{program_name} for link type {}: {e}", link_type_name(link_type)))?;
                engines.push((link_type, new_engine(program)?));
            }
            engines
        }
        (None, None) => unreachable!("a program is loaded unless there is an expression"),
    };
    let (capture_name, source, capture_len): (String, Box<dyn Read>, Option<u64>) = match &request.capture {
        Some(path) => {
            let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let len = file.metadata().ok().map(|metadata| metadata.len());
            (path.display().to_string(), Box::new(file), len)
        }
        None => (BUNDLED_CAPTURE_NAME.to_owned(), Box::new(BUNDLED_CAPTURE), Some(BUNDLED_CAPTURE.len() as u64)),
    };
    let outputs = [
        ("--pass", request.pass.as_deref()),
        ("--drop", request.drop.as_deref()),
        ("--tx", request.tx.as_deref()),
        ("--redirect", request.redirect.as_deref()),
    ];
    check_outputs(request.capture.as_deref(), &outputs)?;
    let mut reader = CaptureReader::new(source, &capture_name).map_err(|e| e.to_string())?;
    let mut outputs = Outputs {
        pass: create_output(request.pass.as_deref(), CaptureWriter::new)?,
        drop: create_output(request.drop.as_deref(), CaptureWriter::new)?,
        tx: create_output(request.tx.as_deref(), CaptureWriter::new)?,
        redirect: create_output(request.redirect.as_deref(), CaptureWriter::pcapng)?,
    };

    let mut progress = Progress::new(capture_len);
    let mut replay = match &request.expr {
        None => Replay::new(&engines[0].1, options),
        Some(_) => Replay::per_link_type(&engines, options).expect("one engine per link type, at least one"),
    };
    let result = replay.run(&mut reader, &mut outputs, &mut |offset| progress.update(offset));
    progress.finish();
    let error = result.err().map(|e| e.to_string());

    let report = Report {
        program: &program_name,
        capture: &capture_name,
        format: reader.format().to_string(),
        request: &request,
        options,
        xdp,
        summary: replay.summary(),
        error: error.as_deref(),
        maps: request.maps.then(|| maps::json::dump_all(engines[0].1.program().maps())),
    };
    if request.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
        if let Some(maps) = &report.maps {
            println!("{}", serde_json::to_string_pretty(maps).unwrap_or_default());
        }
    }
    error
        .map_or(Ok(()), |error| Err(format!("{error}\n(the summary and the output files cover the packets before it)")))
}

/// The link types of the capture's packets, in the order they first come;
/// Ethernet for a capture without packets. A pcap file has one, named in
/// its header; a pcapng file one per interface.
fn capture_link_types(capture: Option<&Path>) -> Result<Vec<u32>, String> {
    let (name, stream): (String, Box<dyn Read>) = match capture {
        Some(path) => {
            let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            (path.display().to_string(), Box::new(std::io::BufReader::new(file)))
        }
        None => (BUNDLED_CAPTURE_NAME.to_owned(), Box::new(BUNDLED_CAPTURE)),
    };
    let mut reader = CaptureReader::new(stream, &name).map_err(|e| e.to_string())?;
    let one_link_type = matches!(reader.format(), Format::Pcap(_));
    let mut link_types = Vec::new();
    loop {
        let link_type = match reader.next_record().map_err(|e| e.to_string())? {
            None => break,
            Some(Record::Metadata(_)) => continue,
            Some(Record::Packet(packet)) => packet.link_type,
        };
        if !link_types.contains(&link_type) {
            link_types.push(link_type);
        }
        if one_link_type {
            break;
        }
    }
    if link_types.is_empty() {
        link_types.push(LINKTYPE_ETHERNET);
    }
    Ok(link_types)
}

/// How the program runs: ip-mode and on-error apply to filters only, and
/// --tx and --redirect to XDP programs only.
fn replay_options(request: &ReplayRequest, xdp: bool) -> Result<Options, String> {
    let ip_mode = match (request.ip_mode, &request.expr) {
        (Some(Switch::Off), _) | (None, Some(_)) => IpMode::Off,
        (Some(Switch::On), _) | (None, None) => IpMode::On,
    };
    let on_error = match request.on_error {
        Some(VerdictArg::Pass) => Verdict::Pass,
        Some(VerdictArg::Drop) | None => Verdict::Drop,
    };
    if !xdp {
        for (flag, output) in [("--tx", &request.tx), ("--redirect", &request.redirect)] {
            if output.is_some() {
                return Err(format!("a filter: {flag} applies to XDP programs only (--type xdp runs it as one)"));
            }
        }
        return Ok(Options { ip_mode, on_error });
    }
    if let Some(Switch::On) = request.ip_mode {
        return Err("an XDP program: --ip-mode on does not apply, as an XDP program sees each frame whole, from \
                    its Ethernet header on"
            .into());
    }
    if request.on_error.is_some() {
        return Err("an XDP program: --on-error does not apply, as a run that faults is dropped, as the kernel \
                    drops XDP_ABORTED"
            .into());
    }
    Ok(Options { ip_mode: IpMode::Off, on_error: Verdict::Drop })
}

/// Refuses outputs that would overwrite the capture or each other.
fn check_outputs(capture: Option<&Path>, outputs: &[(&str, Option<&Path>)]) -> Result<(), String> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    let given: Vec<(&str, &Path)> = outputs.iter().filter_map(|(flag, path)| Some((*flag, (*path)?))).collect();
    for (at, (flag, output)) in given.iter().enumerate() {
        if let Some((other, _)) = given[at + 1..].iter().find(|(_, other)| same(output, other)) {
            return Err(format!("{flag} and {other} both name {}", output.display()));
        }
        if let Some(capture) = capture
            && same(output, capture)
        {
            return Err(format!("{flag} {} would overwrite the capture being replayed", output.display()));
        }
    }
    Ok(())
}

type Output = CaptureWriter<BufWriter<OutputFile>>;

/// An output file, written by the writer `new` makes.
fn create_output(
    path: Option<&Path>,
    new: fn(BufWriter<OutputFile>, String) -> Output,
) -> Result<Option<Output>, String> {
    let Some(path) = path else { return Ok(None) };
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = BufWriter::with_capacity(OUTPUT_BUFFER_LEN, OutputFile::new(file));
    Ok(Some(new(out, path.display().to_string())))
}

/// A progress bar on stderr, for replays long enough to need one and only
/// when stderr is a terminal.
struct Progress {
    total: Option<u64>,
    started: Instant,
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        Progress { total, started: Instant::now(), enabled: std::io::stderr().is_terminal(), bar: None }
    }

    fn update(&mut self, offset: u64) {
        if !self.enabled {
            return;
        }
        let bar = match &self.bar {
            Some(bar) => bar,
            None if self.started.elapsed() < PROGRESS_DELAY => return,
            None => self.bar.insert(Progress::bar(self.total)),
        };
        bar.set_position(offset);
    }

    fn bar(total: Option<u64>) -> ProgressBar {
        let (bar, template) = match total {
            Some(total) => {
                (ProgressBar::new(total), "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left")
            }
            None => (ProgressBar::no_length(), "{spinner} {bytes} {binary_bytes_per_sec}"),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What `replay` prints.
struct Report<'a> {
    program: &'a str,
    capture: &'a str,
    format: String,
    request: &'a ReplayRequest,
    options: Options,
    /// Whether the program is an XDP program.
    xdp: bool,
    summary: &'a Summary,
    error: Option<&'a str>,
    /// The maps' dump, when asked for.
    maps: Option<serde_json::Value>,
}

impl Report<'_> {
    fn engine(&self) -> &'static str {
        match self.request.engine {
            EngineKind::Jit => "jit",
            EngineKind::Interpreter => "interp",
        }
    }

    fn ip_mode(&self) -> &'static str {
        match self.options.ip_mode {
            IpMode::On => "on",
            IpMode::Off => "off",
        }
    }

    fn on_error(&self) -> &'static str {
        match self.options.on_error {
            Verdict::Drop => "drop",
            Verdict::Pass => "pass",
        }
    }

    fn json(&self) -> String {
        if self.xdp {
            return self.xdp_json();
        }
        let summary = self.summary;
        let path = |path: &Option<PathBuf>| path.as_ref().map(|path| path.display().to_string());
        let first_error = summary.first_error.as_ref().map(|fault| {
            serde_json::json!({ "packet": fault.packet, "offset": fault.offset, "message": fault.error.to_string() })
        });
        let json = serde_json::json!({
            "program": self.program,
            "capture": self.capture,
            "format": self.format,
            "engine": self.engine(),
            "ip_mode": self.ip_mode(),
            "on_error": self.on_error(),
            "packets": summary.packets,
            "passed": summary.passed,
            "dropped": summary.dropped,
            "skipped": summary.skipped,
            "errors": summary.errors,
            "bytes": summary.bytes,
            "seconds": summary.elapsed.as_secs_f64(),
            "packets_per_second": summary.packets_per_second(),
            "ns_per_packet": summary.ns_per_packet(),
            "first_error": first_error,
            "pass_file": path(&self.request.pass),
            "drop_file": path(&self.request.drop),
            "error": self.error,
        });
        self.with_maps(json)
    }

    /// `json` with the maps' contents, when asked for, as printed text.
    fn with_maps(&self, mut json: serde_json::Value) -> String {
        if let Some(maps) = &self.maps {
            json["maps"] = maps["maps"].clone();
        }
        serde_json::to_string_pretty(&json).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The summary of an XDP program's replay: `actions` and `faults` add
    /// up to `packets`.
    fn xdp_json(&self) -> String {
        let (summary, counts) = (self.summary, &self.summary.xdp);
        let path = |path: &Option<PathBuf>| path.as_ref().map(|path| path.display().to_string());
        let first_fault = summary.first_error.as_ref().map(|fault| {
            serde_json::json!({
                "packet": fault.packet,
                "offset": fault.offset,
                "reason": fault.error.reason(),
                "message": fault.error.to_string(),
            })
        });
        let actions: serde_json::Map<String, serde_json::Value> =
            Action::ALL.iter().map(|&action| (action_key(action).into(), counts.action(action).into())).collect();
        let redirects: Vec<serde_json::Value> = counts
            .redirects
            .iter()
            .map(|(ifindex, packets)| serde_json::json!({ "ifindex": ifindex, "packets": packets }))
            .collect();
        let json = serde_json::json!({
            "program": self.program,
            "capture": self.capture,
            "format": self.format,
            "engine": self.engine(),
            "program_type": "xdp",
            "packets": summary.packets,
            "actions": actions,
            "unknown_actions": counts.unknown_actions,
            "redirect_targets": redirects,
            "faults": counts.fault_total(),
            "fault_reasons": counts.faults,
            "bytes": summary.bytes,
            "seconds": summary.elapsed.as_secs_f64(),
            "packets_per_second": summary.packets_per_second(),
            "ns_per_packet": summary.ns_per_packet(),
            "first_fault": first_fault,
            "pass_file": path(&self.request.pass),
            "drop_file": path(&self.request.drop),
            "tx_file": path(&self.request.tx),
            "redirect_file": path(&self.request.redirect),
            "error": self.error,
        });
        self.with_maps(json)
    }

    fn xdp_text(&self) -> String {
        let (summary, counts, request) = (self.summary, &self.summary.xdp, self.request);
        let mut text = format!(
            "{} over {} ({}): XDP program, engine {}\n",
            self.program,
            self.capture,
            self.format,
            self.engine()
        );
        let unknown_note = match counts.unknown_actions {
            0 => String::new(),
            unknown => format!("  ({unknown} returned no action, which the kernel takes as XDP_ABORTED)"),
        };
        let redirect_note = match counts.redirects.len() {
            0 => String::new(),
            _ => {
                let targets: Vec<String> =
                    counts.redirects.iter().map(|(ifindex, packets)| format!("ifindex {ifindex}: {packets}")).collect();
                format!("  ({})", targets.join(", "))
            }
        };
        let fault_note = match counts.faults.len() {
            0 => String::new(),
            _ => {
                let reasons: Vec<String> =
                    counts.faults.iter().map(|(reason, packets)| format!("{reason}: {packets}")).collect();
                format!("  ({}; dropped)", reasons.join(", "))
            }
        };
        let rows = [
            ("packets", summary.packets.to_string(), String::new()),
            ("aborted", counts.action(Action::Aborted).to_string(), unknown_note),
            ("drop", counts.action(Action::Drop).to_string(), String::new()),
            ("pass", counts.action(Action::Pass).to_string(), String::new()),
            ("tx", counts.action(Action::Tx).to_string(), String::new()),
            ("redirect", counts.action(Action::Redirect).to_string(), redirect_note),
            ("faults", counts.fault_total().to_string(), fault_note),
            ("bytes", summary.bytes.to_string(), String::new()),
            ("packets/s", format!("{:.0}", summary.packets_per_second()), String::new()),
            ("ns/packet", format!("{:.1}", summary.ns_per_packet()), String::new()),
        ];
        for (name, value, note) in rows {
            text += &format!("  {name:<10}{value:>12}{note}\n");
        }
        if let Some(fault) = &summary.first_error {
            text += &format!("first fault: {fault}; dropped\n");
        }
        for (what, path) in [
            ("passed packets, as the program left them,", &request.pass),
            ("dropped packets, as they came in,", &request.drop),
            ("transmitted packets, as the program left them,", &request.tx),
            ("redirected packets, as the program left them,", &request.redirect),
        ] {
            if let Some(path) = path {
                text += &format!("{what} written to {}\n", path.display());
            }
        }
        text
    }

    fn text(&self) -> String {
        if self.xdp {
            return self.xdp_text();
        }
        let (summary, request) = (self.summary, self.request);
        let mut text = String::new();
        let bundled_program = request.program.is_none() && request.expr.is_none();
        let bundled_capture = request.capture.is_none();
        if bundled_program || bundled_capture {
            text += "No program or capture given, so this replays a bundled one:\n";
        }
        if bundled_program {
            text += &format!(
                "  filter   {}: the QEMU RFC's example, which drops IPv4 packets sent to 1.1.1.1\n",
                self.program
            );
        }
        if bundled_capture {
            text += &format!(
                "  capture  {}: sample traffic (Ethernet, VLAN, IPv4 with options, IPv6, ARP, \
                 TCP, UDP, ICMP, DNS, fragments, truncated frames)\n",
                self.capture
            );
        }
        if bundled_program || bundled_capture {
            text += "  verdict  each IPv4 packet runs through the filter from its IPv4 header on (ip-mode on); \
                     a non-zero return value drops it, zero passes it; packets without IPv4 pass \
                     without running it\n\n";
        }
        text += &format!(
            "{} over {} ({}): engine {}, ip-mode {}, on-error {}\n",
            self.program,
            self.capture,
            self.format,
            self.engine(),
            self.ip_mode(),
            self.on_error()
        );
        let skipped_note = match self.options.ip_mode {
            IpMode::On => "  (no IPv4: passed without running the program)",
            IpMode::Off => "",
        };
        let rows = [
            ("packets", summary.packets.to_string(), ""),
            ("passed", summary.passed.to_string(), ""),
            ("dropped", summary.dropped.to_string(), ""),
            ("skipped", summary.skipped.to_string(), skipped_note),
            ("errors", summary.errors.to_string(), ""),
            ("bytes", summary.bytes.to_string(), ""),
            ("packets/s", format!("{:.0}", summary.packets_per_second()), ""),
            ("ns/packet", format!("{:.1}", summary.ns_per_packet()), ""),
        ];
        for (name, value, note) in rows {
            text += &format!("  {name:<10}{value:>12}{note}\n");
        }
        if let Some(fault) = &summary.first_error {
            text += &format!("first error: {fault}; {}ped, as --on-error says\n", self.on_error());
        }
        for (what, path) in [("passed", &request.pass), ("dropped", &request.drop)] {
            if let Some(path) = path {
                text += &format!("{what} packets written to {}\n", path.display());
            }
        }
        if bundled_program || bundled_capture {
            text += "\nTo replay your own filter and capture, and keep the verdicts:\n  \
                     qemu-ubpf replay FILTER.o CAPTURE.pcap --pass passed.pcap --drop dropped.pcap\n\
                     A filter is C built with clang -O2 -target bpf -c filter.c -o filter.o; examples/*.c \
                     has some.\n";
        }
        text
    }
}

/// An action's name in summaries: "aborted" for XDP_ABORTED.
fn action_key(action: Action) -> &'static str {
    match action {
        Action::Aborted => "aborted",
        Action::Drop => "drop",
        Action::Pass => "pass",
        Action::Tx => "tx",
        Action::Redirect => "redirect",
    }
}

/// `inspect`'s listing of an object.
fn describe_object(path: &Path, info: &ObjectInfo) -> String {
    let mut text = format!(
        "{}: {} functions, {} maps, {} data sections, {} relocations, {} helper calls\n",
        path.display(),
        info.functions.len(),
        info.maps.len(),
        info.data.len(),
        info.relocations.len(),
        info.helper_calls.len()
    );
    text += "functions (* = the program run when none is named):\n";
    for (index, function) in info.functions.iter().enumerate() {
        let mark = if info.default_function == Some(index) { '*' } else { ' ' };
        let linkage = if function.global { "global" } else { "static" };
        text += &format!(
            "  {mark} {:<24} section {:<16} offset {:#06x}  {:>5} instructions  {linkage}\n",
            function.name, function.section, function.offset, function.insns
        );
    }
    if !info.maps.is_empty() {
        text += "maps:\n";
        for map in &info.maps {
            let map_type =
                MapType::from_linux(map.map_type).map_or_else(|| format!("type {}", map.map_type), |t| t.name().into());
            text += &format!(
                "    {:<24} {map_type:<10} key {:>3} bytes  value {:>5} bytes  max_entries {:>7}  flags {:#x}\n",
                map.name, map.key_size, map.value_size, map.max_entries, map.flags
            );
            for (slot, function) in &map.initial_programs {
                text += &format!("        [{slot}] = {function}\n");
            }
        }
    }
    if !info.data.is_empty() {
        text += "data sections:\n";
        for section in &info.data {
            let access = if section.writable { "writable" } else { "read-only" };
            text += &format!("    {:<24} {:>8} bytes  {access}\n", section.name, section.bytes.len());
        }
    }
    if !info.relocations.is_empty() {
        text += "relocations:\n";
        for relocation in &info.relocations {
            let at = format!("{}+{:#x}", relocation.section, relocation.offset);
            text += &format!("    {at:<28} {:<16} {}\n", relocation_name(relocation.rtype), relocation.symbol);
        }
    }
    if !info.helper_calls.is_empty() {
        text += "helper calls:\n";
        for call in &info.helper_calls {
            let at = format!("{}+{:#x}", call.section, call.offset);
            let helper = match &call.helper {
                HelperRef::Index(index) => format!("helper {index}"),
                HelperRef::Name(name) => format!("{name} (by name, resolved at load)"),
            };
            text += &format!("    {at:<28} {helper}\n");
        }
    }
    text
}

fn relocation_name(rtype: u32) -> String {
    let name = match rtype {
        1 => "R_BPF_64_64",
        // Older LLVM used 2 for R_BPF_64_32 (calls).
        2 => "R_BPF_64_ABS64",
        3 => "R_BPF_64_ABS32",
        4 => "R_BPF_64_NODYLD32",
        10 => "R_BPF_64_32",
        _ => return format!("type {rtype}"),
    };
    name.to_owned()
}

/// Prints `bpf_trace_printk` lines (the `log` target the helper uses) to
/// stderr.
struct TraceToStderr;

impl log::Log for TraceToStderr {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == "bpf_trace_printk"
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("bpf_trace_printk: {}", record.args());
        }
    }

    fn flush(&self) {}
}

fn show_trace(on: bool) {
    static TRACE: TraceToStderr = TraceToStderr;
    if on && log::set_logger(&TRACE).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn main() -> ExitCode {
    // Output piped into `head` or a pager that quits ends the command quietly,
    // as it ends other Unix tools, rather than making `println!` panic.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let result = match Cli::parse().command {
        // Its exit status is clang's.
        Command::Build { source, output, clang_args } => build::build(&source, &output, &clang_args),
        command => run(command).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("qemu-ubpf: {message}");
            ExitCode::FAILURE
        }
    }
}
