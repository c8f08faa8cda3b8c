//! Interpreter vs JIT vs the same function compiled natively from Rust, in
//! one run, with memory checks on:
//!
//! (a) the 5-tuple classifier (examples/classifier.o) over a rotating set of
//!     a DNS query, a VLAN-tagged TCP SYN, IPv4 with options and mDNS;
//! (b) the RFC 1071 checksum (tests/fixtures/checksum.o) of 1500 bytes;
//! (c) the empty program: the cost of one call;
//! (d) load + verify + compile of a 100-instruction program.
//!
//! `cargo bench --bench jit`. Criterion reports each case; the table printed
//! at the end gives the ratios, from the fastest of several timed batches
//! of the thread's CPU time.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group};
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::{Config, Helpers, Program, asm, isa};

mod common;

const CLASSIFIER: &[u8] = include_bytes!("../examples/classifier.o");
const CHECKSUM: &[u8] = include_bytes!("../tests/fixtures/checksum.o");

/// classifier.c, rule for rule, in Rust.
fn classify_native(frame: &[u8]) -> u64 {
    let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    if frame.len() < 14 {
        return 0;
    }
    let (mut l3, mut ethertype) = (14, be16(12));
    if ethertype == 0x8100 {
        if frame.len() < 18 {
            return 0;
        }
        ethertype = be16(16);
        l3 += 4;
    }
    if ethertype != 0x0800 {
        return 0;
    }
    if frame.len() < l3 + 20 {
        return 1;
    }
    let ihl = (frame[l3] & 0x0f) as usize * 4;
    if frame[l3] >> 4 != 4 || ihl < 20 || frame.len() < l3 + ihl {
        return 1;
    }
    let proto = frame[l3 + 9];
    if proto != 6 && proto != 17 {
        return 0;
    }
    if be16(l3 + 6) & 0x1fff != 0 {
        return 0;
    }
    let l4 = l3 + ihl;
    if frame.len() < l4 + 4 {
        return 1;
    }
    let dst_port = be16(l4 + 2);
    u64::from((proto == 6 && dst_port == 23) || (proto == 17 && dst_port == 53 && frame[l3 + 12] != 10))
}

/// checksum.c in Rust.
fn checksum_native(data: &[u8]) -> u64 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        sum = sum.wrapping_add((data[i] as u32) << 8 | data[i + 1] as u32);
        i += 2;
    }
    if i < data.len() {
        sum = sum.wrapping_add((data[i] as u32) << 8);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!sum as u16) as u64
}

/// A straight 100-instruction program: ALU, loads and stores on the stack,
/// and forward branches, as compilers emit.
fn program_100() -> Vec<u8> {
    let mut source = String::from("mov %r0, 0\nmov %r1, 1\nmov %r3, 3\n");
    for i in 0..24 {
        source += &format!(
            "add %r0, {i}\nstxdw [%r10-{}], %r0\nldxdw %r2, [%r10-{}]\njeq %r2, {i}, +0\n",
            8 + 8 * (i % 8),
            8 + 8 * (i % 8)
        );
    }
    source += "exit\n";
    let insns = asm::assemble(&source).expect("program_100 assembles");
    assert_eq!(insns.len(), 100);
    isa::encode_program(&insns)
}

struct Engines {
    interp: Arc<Program>,
    jit: JitProgram,
}

fn engines(object: &[u8]) -> Engines {
    let program = Arc::new(Program::from_elf(object, None, &Helpers::new(), &Config::default()).expect("loads"));
    Engines { jit: JitProgram::compile(Arc::clone(&program)).expect("compiles"), interp: program }
}

fn empty_engines() -> Engines {
    let program = Program::load(
        &isa::encode_program(&asm::assemble("mov %r0, 0\nexit").unwrap()),
        &Helpers::new(),
        &Config::default(),
    )
    .unwrap();
    let program = Arc::new(program);
    Engines { jit: JitProgram::compile(Arc::clone(&program)).unwrap(), interp: program }
}

fn load_and_compile(bytecode: &[u8]) -> JitProgram {
    let program = Program::load(bytecode, &Helpers::new(), &Config::default()).expect("verifies");
    JitProgram::compile(Arc::new(program)).expect("compiles")
}

fn criterion_cases(c: &mut Criterion) {
    let classifier = engines(CLASSIFIER);
    let mut packets = common::packets();
    for packet in packets.iter_mut() {
        let native = classify_native(packet);
        assert_eq!(classifier.interp.execute(packet), Ok(native));
        assert_eq!(classifier.jit.execute(packet), Ok(native));
    }
    let mut group = c.benchmark_group("classifier_4_packets");
    group.bench_function("interp", |b| {
        b.iter(|| packets.iter_mut().map(|p| classifier.interp.execute(p).unwrap()).sum::<u64>())
    });
    group.bench_function("jit", |b| {
        b.iter(|| packets.iter_mut().map(|p| classifier.jit.execute(p).unwrap()).sum::<u64>())
    });
    group.bench_function("native", |b| b.iter(|| packets.iter().map(|p| classify_native(black_box(p))).sum::<u64>()));
    group.finish();

    let checksum = engines(CHECKSUM);
    let mut data: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
    let native = checksum_native(&data);
    assert_eq!(checksum.interp.execute(&mut data), Ok(native));
    assert_eq!(checksum.jit.execute(&mut data), Ok(native));
    let mut group = c.benchmark_group("checksum_1500");
    group.bench_function("interp", |b| b.iter(|| checksum.interp.execute(&mut data).unwrap()));
    group.bench_function("jit", |b| b.iter(|| checksum.jit.execute(&mut data).unwrap()));
    group.bench_function("native", |b| b.iter(|| checksum_native(black_box(&data))));
    group.finish();

    let empty = empty_engines();
    let mut group = c.benchmark_group("empty_program");
    group.bench_function("interp", |b| b.iter(|| empty.interp.execute(&mut []).unwrap()));
    group.bench_function("jit", |b| b.iter(|| empty.jit.execute(&mut []).unwrap()));
    group.finish();

    let bytecode = program_100();
    c.bench_function("load_verify_compile_100", |b| b.iter(|| load_and_compile(black_box(&bytecode))));
}

/// Nanoseconds of the thread's CPU time per call of each case: the fastest
/// mean over several batches, which is what the machine can do when nothing
/// else interferes. CPU time rather than the wall clock, so that a batch
/// during which the thread waited for a core counts only what it ran; the
/// cases' batches take turns, so that a slow spell of the machine (a busy
/// host under this virtual one, say) falls on all of them alike, and none
/// loses all its batches to it unless it lasts the whole measurement. Each case
/// runs a batch of calls (see [`repeated`]), so the calls themselves are
/// direct and inlined as in a real caller.
fn ns_per_call<const N: usize>(mut cases: [&mut dyn FnMut(u64); N]) -> [f64; N] {
    let cpu_ns = |f: &mut dyn FnMut(u64), batch: u64| {
        let start = common::thread_cpu_ns();
        f(batch);
        common::thread_cpu_ns() - start
    };
    let batches = cases.each_mut().map(|f| {
        let mut batch = 1u64;
        while cpu_ns(&mut **f, batch) < 20_000_000 {
            batch *= 2;
        }
        batch
    });
    let mut fastest = [f64::INFINITY; N];
    for _ in 0..15 {
        for (f, (&batch, best)) in cases.iter_mut().zip(batches.iter().zip(&mut fastest)) {
            *best = best.min(cpu_ns(&mut **f, batch) as f64 / batch as f64);
        }
    }
    fastest
}

/// `f` as a case of [`ns_per_call`]: a batch of `n` calls.
fn repeated(mut f: impl FnMut()) -> impl FnMut(u64) {
    move |n| {
        for _ in 0..n {
            f();
        }
    }
}

fn ratio_table() {
    let classifier = engines(CLASSIFIER);
    let (mut interp_packets, mut jit_packets, native_packets) =
        (common::packets(), common::packets(), common::packets());
    let checksum = engines(CHECKSUM);
    let data: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
    let (mut interp_data, mut jit_data) = (data.clone(), data.clone());
    let empty = empty_engines();
    let bytecode = program_100();

    println!(
        "\n{:<28} {:>11} {:>11} {:>11} {:>10} {:>10}",
        "case (ns per call)", "interp", "jit", "native", "jit/native", "interp/jit"
    );
    let row = |name: &str, interp: f64, jit: f64, native: Option<f64>| {
        let native_text = native.map_or("-".to_string(), |n| format!("{n:.1}"));
        let ratio = native.map_or("-".to_string(), |n| format!("{:.2}", jit / n));
        println!("{name:<28} {interp:>11.1} {jit:>11.1} {native_text:>11} {ratio:>10} {:>10.2}", interp / jit);
    };
    // All cases in one call, so that each case's batches spread over the
    // whole measurement: a slow spell shorter than that cannot cover them.
    let [
        classifier_interp,
        classifier_jit,
        classifier_native,
        checksum_interp,
        checksum_jit,
        checksum_native_ns,
        empty_interp,
        empty_jit,
        compile,
    ] = ns_per_call([
        &mut repeated(|| {
            black_box(interp_packets.iter_mut().map(|p| classifier.interp.execute(p).unwrap()).sum::<u64>());
        }),
        &mut repeated(|| {
            black_box(jit_packets.iter_mut().map(|p| classifier.jit.execute(p).unwrap()).sum::<u64>());
        }),
        &mut repeated(|| {
            black_box(native_packets.iter().map(|p| classify_native(black_box(p))).sum::<u64>());
        }),
        &mut repeated(|| {
            black_box(checksum.interp.execute(&mut interp_data).unwrap());
        }),
        &mut repeated(|| {
            black_box(checksum.jit.execute(&mut jit_data).unwrap());
        }),
        &mut repeated(|| {
            black_box(checksum_native(black_box(&data)));
        }),
        &mut repeated(|| {
            black_box(empty.interp.execute(&mut []).unwrap());
        }),
        &mut repeated(|| {
            black_box(empty.jit.execute(&mut []).unwrap());
        }),
        &mut repeated(|| {
            black_box(load_and_compile(black_box(&bytecode)));
        }),
    ]);
    row("classifier (4 packets)", classifier_interp, classifier_jit, Some(classifier_native));
    row("checksum (1500 bytes)", checksum_interp, checksum_jit, Some(checksum_native_ns));
    row("empty program", empty_interp, empty_jit, None);
    println!(
        "{:<28} {:>11} {:>11.1} (load + verify + JIT compile, 100 instructions)",
        "load+verify+compile", "-", compile
    );
}

criterion_group!(benches, criterion_cases);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio_table();
}
