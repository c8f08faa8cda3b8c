//! Differential test: the JIT against the interpreter, the reference, on
//! generated programs ([`qemu_ubpf::testing::testgen`]): the same r0 or the same error
//! (pc, instruction, kind, place), and the same input memory afterwards.
//!
//! `QEMU_UBPF_DIFF_CASES` sets how many seeds run (default 20000),
//! `QEMU_UBPF_DIFF_SEED` the first one (default 0), so that one failing
//! seed reruns alone: `QEMU_UBPF_DIFF_SEED=1234 QEMU_UBPF_DIFF_CASES=1`.

use std::collections::BTreeMap;
use std::thread;

use qemu_ubpf::testing::testgen;
use qemu_ubpf::{ExecError, ExecErrorKind};

const DEFAULT_CASES: u64 = 20_000;
/// Failures reported in full; the rest are counted.
const REPORTED_FAILURES: usize = 3;
/// Cases the minimiser may try for one failure.
const SHRINK_ATTEMPTS: usize = 3000;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// The same as the cargo-fuzz target `jit_diff` (fuzz/fuzz_targets/jit_diff.rs).
fn jit_diff(data: &[u8]) {
    if let Err(report) = testgen::program_from_bytes(data).compare_engines() {
        panic!("{report}");
    }
}

/// Cuts and zeroes spans of the generator's bytes while the case still
/// fails, for a shorter program showing a failure (not always the same one).
fn shrink(mut bytes: Vec<u8>) -> Vec<u8> {
    let fails = |bytes: &[u8]| testgen::program_from_bytes(bytes).compare_engines().is_err();
    let mut attempts = 0;
    let mut span = bytes.len().div_ceil(2);
    while span > 0 && attempts < SHRINK_ATTEMPTS {
        let mut start = 0;
        while start < bytes.len() && attempts < SHRINK_ATTEMPTS {
            let end = (start + span).min(bytes.len());
            let mut cut = bytes.clone();
            cut.drain(start..end);
            attempts += 1;
            if fails(&cut) {
                bytes = cut;
                continue;
            }
            if bytes[start..end].iter().any(|&byte| byte != 0) {
                let mut zeroed = bytes.clone();
                zeroed[start..end].fill(0);
                attempts += 1;
                if fails(&zeroed) {
                    bytes = zeroed;
                }
            }
            start += span;
        }
        span /= 2;
    }
    bytes
}

fn stop_name(result: &Result<u64, ExecError>) -> &'static str {
    match result {
        Ok(_) => "returned",
        Err(error) => match error.kind {
            ExecErrorKind::OutOfBounds { write: false, .. } => "out-of-bounds load",
            ExecErrorKind::OutOfBounds { write: true, .. } => "out-of-bounds store",
            ExecErrorKind::ReadOnly { .. } => "read-only store",
            ExecErrorKind::UnknownHelper(_) => "unknown helper",
            ExecErrorKind::BudgetExhausted(_) => "budget exhausted",
            ExecErrorKind::CallDepthExceeded(_) => "call depth exceeded",
            ExecErrorKind::NotAMap { .. } => "not a map",
            ExecErrorKind::HelperMemory { .. } => "helper memory",
            ExecErrorKind::NotARecord { .. } => "not a record",
            ExecErrorKind::HelperArgument { .. } => "helper argument",
            ExecErrorKind::BadPacketPointer { .. } | ExecErrorKind::ShortContext { .. } => "bad context",
        },
    }
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<&'static str, u64>,
    failures: Vec<(u64, String)>,
}

#[test]
fn jit_agrees_with_interpreter_on_generated_programs() {
    let cases = env_number("QEMU_UBPF_DIFF_CASES", DEFAULT_CASES);
    let first_seed = env_number("QEMU_UBPF_DIFF_SEED", 0);
    let threads = thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    for seed in (first_seed..first_seed + cases).skip(worker as usize).step_by(threads as usize) {
                        match testgen::program_from_seed(seed).compare_engines() {
                            Ok(result) => *tally.outcomes.entry(stop_name(&result)).or_default() += 1,
                            Err(report) => tally.failures.push((seed, report)),
                        }
                    }
                    tally
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().expect("worker thread")).collect()
    });
    let mut outcomes = BTreeMap::new();
    let mut failures = Vec::new();
    for tally in tallies {
        for (name, count) in tally.outcomes {
            *outcomes.entry(name).or_insert(0) += count;
        }
        failures.extend(tally.failures);
    }
    failures.sort_by_key(|&(seed, _)| seed);
    for (seed, report) in failures.iter().take(REPORTED_FAILURES) {
        println!("==== seed {seed} differs\n{report}");
        let shrunk = testgen::program_from_bytes(&shrink(testgen::seed_bytes(*seed)));
        match shrunk.compare_engines() {
            Err(report) => println!("---- seed {seed}, minimised:\n{report}"),
            Ok(_) => println!("---- seed {seed}: the minimised case passes"),
        }
    }
    println!("outcomes of the agreeing cases: {outcomes:?}");
    let failed = failures.len() as u64;
    println!("differential: {} passed, {failed} failed", cases - failed);
    let seeds: Vec<u64> = failures.iter().map(|&(seed, _)| seed).collect();
    assert!(failures.is_empty(), "the JIT differs from the interpreter for seeds {seeds:?}");
}

#[test]
fn fuzz_target_body_runs_on_odd_bytes() {
    for data in [&[][..], &[0xff; 300], &[0x55; 5000], &[1, 2, 3]] {
        jit_diff(data);
    }
}
