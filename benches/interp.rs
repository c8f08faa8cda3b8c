//! Interpreter speed in nanoseconds per executed eBPF instruction.
//!
//! `cargo bench --bench interp`: criterion reports each case's throughput in
//! instructions per second ("elem/s"); ns per instruction is its inverse.
//! The setup line printed before each group gives the executed count.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qemu_ubpf::{Config, Helpers, Program, asm, interp, isa};

mod common;
use common::packets;

/// Sums a packet's bytes with a little mixing: a tight loop of loads, ALU
/// and a backward branch, as a checksum-like filter does.
const LOOP: &str = "
    mov %r0, 0
    mov %r3, 0
loop:
    jge %r3, %r2, done
    mov %r4, %r1
    add %r4, %r3
    ldxb %r5, [%r4]
    add %r0, %r5
    mov %r6, %r0
    lsh %r6, 3
    xor %r0, %r6
    add %r3, 1
    ja loop
done:
    exit
";

fn bench_loop(c: &mut Criterion) {
    let code = isa::encode_program(&asm::assemble(LOOP).expect("LOOP assembles"));
    let program = Program::load(&code, &Helpers::new(), &Config::default()).expect("LOOP verifies");
    let mut packet = vec![0xa5u8; 1500];
    let (result, executed) = interp::execute_counted(&program, &mut packet);
    result.expect("LOOP runs");
    println!("interp/byte_sum_loop: {executed} instructions per run");
    let mut group = c.benchmark_group("interp");
    group.throughput(Throughput::Elements(executed));
    group.bench_function("byte_sum_loop_1500", |b| b.iter(|| program.execute(&mut packet)));
    group.finish();
}

fn bench_classifier(c: &mut Criterion) {
    let object = include_bytes!("../examples/classifier.o");
    let program = Program::from_elf(object, None, &Helpers::new(), &Config::default()).expect("classifier loads");
    let mut packets = packets();
    let executed: u64 = packets
        .iter_mut()
        .map(|packet| {
            let (result, executed) = interp::execute_counted(&program, packet);
            result.expect("classifier runs");
            executed
        })
        .sum();
    println!("interp/classifier: {executed} instructions per 4 packets");
    let mut group = c.benchmark_group("interp");
    group.throughput(Throughput::Elements(executed));
    group.bench_function("classifier_4_packets", |b| {
        b.iter(|| {
            for packet in packets.iter_mut() {
                let _ = std::hint::black_box(program.execute(packet));
            }
        })
    });
    group.finish();
}

/// The fixed cost of one run (taking the thread's stack, setting up
/// registers and memory bounds, returning the result), with two
/// instructions: what weighs on short filters such as the classifier.
fn bench_empty(c: &mut Criterion) {
    let code = isa::encode_program(&asm::assemble("mov %r0, 0\nexit").expect("assembles"));
    let program = Program::load(&code, &Helpers::new(), &Config::default()).expect("verifies");
    let mut packet = vec![0xa5u8; 64];
    c.bench_function("interp/empty_run", |b| b.iter(|| program.execute(&mut packet)));
}

criterion_group!(benches, bench_loop, bench_classifier, bench_empty);
criterion_main!(benches);
