//! The Linux kernel as a third engine: random programs that its verifier
//! accepts (`qemu_ubpf::testing::kernelgen`), run as XDP programs in the
//! kernel with `BPF_PROG_TEST_RUN` and in both of our engines, must return
//! the same r0 and leave the same packet. The kernel gives back only r0's low 32 bits, so each program
//! also runs with `r0 >>= 32` before its exit, for the high half.
//!
//! Where `bpf(2)` is allowed (root), [`FRESH`] new programs run each time,
//! from a base seed printed at the start (`QEMU_UBPF_KERNEL_SEED` picks
//! one). Always, and alone where `bpf(2)` is refused, the results recorded
//! from the kernel in `tests/kernel/random.json` are checked: that file says
//! the command that recorded it, and the test fails when the generator no
//! longer makes the programs it recorded.

use std::sync::Arc;

use qemu_ubpf::image::{Image, ProgramType};
use qemu_ubpf::interp;
use qemu_ubpf::isa::Insn;
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::testing::kernel::{Kernel, KernelError};
use qemu_ubpf::testing::kernelgen::{self, KernelCase};
use qemu_ubpf::testing::testgen::listing;
use qemu_ubpf::xdp::{Buffer, RxInfo};
use qemu_ubpf::{Config, Helpers, Program};
use serde_json::{Value, json};

/// New programs per run where the kernel is at hand.
const FRESH: u64 = 2000;
/// Programs recorded, from seed [`RECORDED_BASE`] on (those the verifier
/// found too complex left out).
const RECORDED: u64 = 2000;
const RECORDED_BASE: u64 = 0x6b65_726e_656c;
const RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kernel/random.json");
const RECORD_COMMAND: &str = "sudo QEMU_UBPF_RECORD_KERNEL=1 cargo test --release --test kernel_random";

/// What a program computed: r0 and the packet it left.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    r0: u64,
    packet: Vec<u8>,
}

/// The outcome of a run in each of our engines, which must agree.
fn our_result(case: &KernelCase) -> Result<Outcome, String> {
    let config = Config { program_type: Some(ProgramType::Xdp), ..Config::default() };
    let image = Image { insns: case.insns.clone(), ..Image::default() };
    let program = Arc::new(Program::from_image(image, &Helpers::linux(), &config).map_err(|e| e.to_string())?);
    let jit = JitProgram::compile(program.clone()).map_err(|e| e.to_string())?;
    let run = |engine: &dyn Fn(&mut [u8]) -> Result<u64, String>| {
        let mut buffer = Buffer::new(&case.packet, &[], RxInfo::default()).expect("a valid packet");
        let r0 = buffer.run(engine)?;
        Ok::<_, String>(Outcome { r0, packet: buffer.data_out().to_vec() })
    };
    let interpreted = run(&|input| interp::execute(&program, input).map_err(|e| e.to_string()))?;
    let compiled = run(&|input| jit.execute(input).map_err(|e| e.to_string()))?;
    if interpreted != compiled {
        return Err(format!("the interpreter gave {interpreted:x?}, the JIT {compiled:x?}"));
    }
    Ok(interpreted)
}

/// What the kernel computes, from two runs: r0's halves, and the packet.
fn kernel_result(kernel: &mut Kernel, case: &KernelCase) -> Result<Outcome, KernelError> {
    let low = kernel.load_xdp(&case.insns)?.test_run(&case.packet)?;
    let high = kernel.load_xdp(&case.high_half())?.test_run(&case.packet)?;
    Ok(Outcome { r0: u64::from(high.retval) << 32 | u64::from(low.retval), packet: low.packet })
}

/// FNV-1a of the program's bytes: tells whether the generator still makes
/// the program that was recorded.
fn fingerprint(insns: &[Insn]) -> String {
    let hash = insns
        .iter()
        .flat_map(Insn::encode)
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{hash:016x}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex bytes")).collect()
}

fn describe(seed: u64, case: &KernelCase) -> String {
    let packet = hex(&case.packet);
    format!("seed {seed:#x}, packet {packet}\n{}", listing(&case.insns))
}

/// The verifier's refusal of a program whose paths it could not all walk
/// within its budget of a million instructions: nested loops with branches
/// in them sometimes reach it (about one program in several thousand).
const TOO_COMPLEX: &str = "BPF program is too large";

/// Runs `count` programs from `base` in the kernel and in our engines; the
/// kernel's results. Programs too complex for the verifier are left out,
/// and may be at most 1% of them; any other refusal fails.
fn compare_with_kernel(kernel: &mut Kernel, base: u64, count: u64) -> Vec<(u64, String, Outcome)> {
    let mut results = Vec::new();
    let mut too_complex = 0;
    for seed in base..base + count {
        let case = kernelgen::case_from_seed(seed);
        let expected = match kernel_result(kernel, &case) {
            Ok(expected) => expected,
            Err(KernelError::Refused(log)) if log.contains(TOO_COMPLEX) => {
                too_complex += 1;
                continue;
            }
            Err(error) => panic!("{error}\n{}", describe(seed, &case)),
        };
        let ours = our_result(&case).unwrap_or_else(|e| panic!("{e}\n{}", describe(seed, &case)));
        assert_eq!(ours, expected, "ours against the kernel's\n{}", describe(seed, &case));
        results.push((seed, fingerprint(&case.insns), expected));
    }
    eprintln!("{too_complex} of {count} programs were too complex for the kernel's verifier");
    assert!(too_complex * 100 <= count, "{too_complex} of {count} programs were too complex for the verifier");
    // The programs compute something: most results differ.
    let distinct: std::collections::HashSet<u64> = results.iter().map(|result| result.2.r0).collect();
    assert!(distinct.len() as u64 > count / 2, "only {} distinct results of {count}", distinct.len());
    results
}

#[test]
fn random_programs_return_what_the_kernel_returns() {
    let mut kernel = match Kernel::open() {
        Ok(kernel) => kernel,
        Err(KernelError::Unavailable(error)) => {
            eprintln!(
                "bpf(2) is refused here ({error}): no fresh programs; \
                 the {RECORDED} results recorded from the kernel are checked instead"
            );
            return;
        }
        Err(error) => panic!("{error}"),
    };
    if std::env::var_os("QEMU_UBPF_RECORD_KERNEL").is_some() {
        let results = compare_with_kernel(&mut kernel, RECORDED_BASE, RECORDED);
        let cases: Vec<Value> = results
            .iter()
            .map(|(seed, print, outcome)| {
                let case = kernelgen::case_from_seed(*seed);
                let mut row = vec![json!(seed), json!(print), json!(format!("{:#x}", outcome.r0))];
                if outcome.packet != case.packet {
                    row.push(json!(hex(&outcome.packet)));
                }
                Value::Array(row)
            })
            .collect();
        let document = json!({
            "recorded_by": RECORD_COMMAND,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cases": "[seed, FNV-1a of the program's bytes, r0 from two BPF_PROG_TEST_RUNs, \
                      and the packet out when the program changed it]",
            "results": cases,
        });
        std::fs::write(RECORDING, serde_json::to_string(&document).unwrap() + "\n").unwrap();
    }
    let base = match std::env::var("QEMU_UBPF_KERNEL_SEED") {
        Ok(seed) => seed.parse().expect("QEMU_UBPF_KERNEL_SEED is a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    eprintln!("{FRESH} fresh programs from seed {base} (QEMU_UBPF_KERNEL_SEED={base} repeats them)");
    compare_with_kernel(&mut kernel, base, FRESH);
}

#[test]
fn recorded_kernel_results_still_hold() {
    let document: Value = serde_json::from_str(&std::fs::read_to_string(RECORDING).unwrap()).unwrap();
    let results = document["results"].as_array().unwrap();
    assert!(results.len() as u64 * 100 >= RECORDED * 99, "{RECORDING} holds {} results", results.len());
    for result in results {
        let seed = result[0].as_u64().expect("a seed");
        let case = kernelgen::case_from_seed(seed);
        assert_eq!(
            result[1].as_str(),
            Some(fingerprint(&case.insns).as_str()),
            "the generator no longer makes the program recorded for seed {seed:#x}: record again with `{RECORD_COMMAND}`"
        );
        let r0 = u64::from_str_radix(result[2].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let packet = result.get(3).map_or(case.packet.clone(), |packet| unhex(packet.as_str().unwrap()));
        let expected = Outcome { r0, packet };
        let ours = our_result(&case).unwrap_or_else(|e| panic!("{e}\n{}", describe(seed, &case)));
        assert_eq!(ours, expected, "ours against the kernel's\n{}", describe(seed, &case));
    }
}
