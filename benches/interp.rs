//! Interpreter speed in nanoseconds per executed eBPF instruction.
//!
//! `cargo bench --bench interp`: criterion reports each case's throughput in
//! instructions per second ("elem/s"); ns per instruction is its inverse.
//! The setup line printed before each case gives the executed count.
//!
//! Every case runs twice: group `interp` times it by the wall clock, group
//! `interp_cpu` by the benchmark thread's CPU time. On a machine whose few
//! cores other work shares, the wall clock also counts the time the thread
//! waits for a core (up to twice the CPU time on two busy cores); the CPU
//! time leaves that out. On an idle machine the two agree.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
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

/// The CPU time the calling thread has used, in nanoseconds.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        common::thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        common::thread_cpu_ns() - start
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    /// Nanoseconds, shown as the wall clock's are.
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL_TIME: WallTime = WallTime;
        WALL_TIME.formatter()
    }
}

fn bench_loop<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let code = isa::encode_program(&asm::assemble(LOOP).expect("LOOP assembles"));
    let program = Program::load(&code, &Helpers::new(), &Config::default()).expect("LOOP verifies");
    let mut packet = vec![0xa5u8; 1500];
    let (result, executed) = interp::execute_counted(&program, &mut packet);
    result.expect("LOOP runs");
    println!("{group}/byte_sum_loop: {executed} instructions per run");
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(executed));
    group.bench_function("byte_sum_loop_1500", |b| b.iter(|| program.execute(&mut packet)));
    group.finish();
}

fn bench_classifier<M: Measurement>(c: &mut Criterion<M>, group: &str) {
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
    println!("{group}/classifier: {executed} instructions per 4 packets");
    let mut group = c.benchmark_group(group);
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
fn bench_empty<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let code = isa::encode_program(&asm::assemble("mov %r0, 0\nexit").expect("assembles"));
    let program = Program::load(&code, &Helpers::new(), &Config::default()).expect("verifies");
    let mut packet = vec![0xa5u8; 64];
    c.benchmark_group(group).bench_function("empty_run", |b| b.iter(|| program.execute(&mut packet)));
}

fn cases<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    bench_loop(c, group);
    bench_classifier(c, group);
    bench_empty(c, group);
}

fn wall_time(c: &mut Criterion) {
    cases(c, "interp");
}

fn cpu_time(c: &mut Criterion<ThreadCpuTime>) {
    cases(c, "interp_cpu");
}

criterion_group!(wall, wall_time);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu_time
}
criterion_main!(wall, cpu);
