//! Map operations from programs, in the interpreter and the JIT: hash map
//! lookups and updates, LPM trie lookups and updates. Each program makes 16
//! calls of one helper in a loop, on 16 different keys; criterion reports
//! the throughput in operations per second, and the table at the end the
//! cost of one operation in ns (the run's entry and loop included, divided
//! by 16).
//!
//! `cargo bench --bench maps`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use qemu_ubpf::MapType;
use qemu_ubpf::helpers::linux;
use qemu_ubpf::image::MapDef;
use qemu_ubpf::isa::{self, Insn};
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::maps::{BPF_ANY, BPF_F_NO_PREALLOC};
use qemu_ubpf::{Config, Helpers, Image, Program};

/// Calls per run.
const OPS: i32 = 16;
/// Keys (hash) and prefixes (trie) in the maps before the runs.
const ENTRIES: u32 = 1024;

/// The key of call `i` is built at r10 - 8 (hash: a u32 at r10 - 8; trie: a
/// prefix length of 32 at r10 - 8 and an address at r10 - 4) from the u32
/// at the input's start plus `i`.
fn program(map: MapDef, helper: u32) -> Arc<Program> {
    let trie = map.map_type == MapType::LpmTrie as u32;
    let key_at = if trie { -4 } else { -8 };
    let mut insns = vec![
        Insn::new(isa::MOV64_REG, 6, 1, 0, 0),
        Insn::new(isa::MOV64_IMM, 7, 0, 0, 0),
        Insn::new(isa::MOV64_IMM, 8, 0, 0, 0),
        Insn::new(isa::STW, 10, 0, -8, 32),
    ];
    let body = [
        Insn::new(isa::LDXW, 2, 6, 0, 0),
        Insn::new(isa::ADD64_REG, 2, 7, 0, 0),
        Insn::new(isa::STXW, 10, 2, key_at, 0),
        // The value an update stores: the loop counter.
        Insn::new(isa::STXDW, 10, 7, -16, 0),
        Insn::new(isa::MOV64_REG, 2, 10, 0, 0),
        Insn::new(isa::ADD64_IMM, 2, 0, 0, -8),
        Insn::new(isa::MOV64_REG, 3, 10, 0, 0),
        Insn::new(isa::ADD64_IMM, 3, 0, 0, -16),
        Insn::new(isa::MOV64_IMM, 4, 0, 0, BPF_ANY as i32),
        Insn::new(isa::LDDW, 1, 1, 0, 0),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(isa::CALL, 0, 0, 0, helper as i32),
        Insn::new(isa::JEQ_IMM, 0, 0, 1, 0),
        Insn::new(isa::ADD64_IMM, 8, 0, 0, 1),
        Insn::new(isa::ADD64_IMM, 7, 0, 0, 1),
    ];
    let back = -(body.len() as i16) - 1;
    insns.extend(body);
    insns.push(Insn::new(isa::JLT_IMM, 7, 0, back, OPS));
    insns.push(Insn::new(isa::MOV64_REG, 0, 8, 0, 0));
    insns.push(Insn::new(isa::EXIT, 0, 0, 0, 0));
    let image = Image { insns, maps: vec![map], ..Image::default() };
    let program = Program::from_image(image, &Helpers::linux(), &Config::default()).expect("benchmark program loads");
    fill(&program, trie);
    Arc::new(program)
}

/// Puts `ENTRIES` keys in the map: 0.. for the hash; for the trie, prefixes
/// of four lengths so that a lookup probes four tables.
fn fill(program: &Program, trie: bool) {
    let map = &program.maps()[0];
    for index in 0..ENTRIES {
        // A per-CPU map takes the value of every CPU at once.
        let value = u64::from(index).to_ne_bytes().repeat(map.host_value_size() / 8);
        if trie {
            let length = [8u32, 16, 24, 32][index as usize % 4];
            let address = (index * 2_654_435_761).to_ne_bytes();
            map.update(&[&length.to_ne_bytes()[..], &address].concat(), &value, BPF_ANY).unwrap();
        } else {
            map.update(&index.to_ne_bytes(), &value, BPF_ANY).unwrap();
        }
    }
}

fn def(map_type: MapType, key_size: u32, flags: u32) -> MapDef {
    MapDef {
        name: "bench".into(),
        map_type: map_type as u32,
        key_size,
        value_size: 8,
        max_entries: 2 * ENTRIES,
        flags,
        initial_programs: Vec::new(),
    }
}

struct Case {
    name: &'static str,
    interp: Arc<Program>,
    jit: JitProgram,
}

fn cases() -> Vec<Case> {
    let hash = || def(MapType::Hash, 4, 0);
    let per_cpu_hash = || def(MapType::PerCpuHash, 4, 0);
    let trie = || def(MapType::LpmTrie, 8, BPF_F_NO_PREALLOC);
    let case = |name, map: MapDef, helper| {
        let interp = program(map.clone(), helper);
        let jit = JitProgram::compile(program(map, helper)).expect("compiles");
        Case { name, interp, jit }
    };
    vec![
        case("hash lookup", hash(), linux::MAP_LOOKUP_ELEM),
        case("hash update", hash(), linux::MAP_UPDATE_ELEM),
        case("percpu hash lookup", per_cpu_hash(), linux::MAP_LOOKUP_ELEM),
        case("percpu hash update", per_cpu_hash(), linux::MAP_UPDATE_ELEM),
        case("lpm trie lookup", trie(), linux::MAP_LOOKUP_ELEM),
        case("lpm trie update", trie(), linux::MAP_UPDATE_ELEM),
    ]
}

/// The input: the first key (as the trie sees it, the first address).
fn input() -> [u8; 4] {
    100u32.to_ne_bytes()
}

fn criterion_cases(c: &mut Criterion) {
    for case in cases() {
        let mut group = c.benchmark_group(case.name.replace(' ', "_"));
        group.throughput(Throughput::Elements(OPS as u64));
        group.bench_function("interp", |b| b.iter(|| case.interp.execute(&mut input()).unwrap()));
        group.bench_function("jit", |b| b.iter(|| case.jit.execute(&mut input()).unwrap()));
        group.finish();
    }
}

/// ns per operation: the fastest of several timed batches of runs.
fn ns_per_op(mut run: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            for _ in 0..100 {
                run();
            }
            runs += 100;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / (runs * OPS as u64) as f64);
    }
    best
}

fn table() {
    println!("\n{:<20} {:>14} {:>14}", "ns per operation", "interpreter", "JIT");
    for case in cases() {
        let interp = ns_per_op(|| {
            black_box(case.interp.execute(&mut input()).unwrap());
        });
        let jit = ns_per_op(|| {
            black_box(case.jit.execute(&mut input()).unwrap());
        });
        println!("{:<20} {interp:>14.1} {jit:>14.1}", case.name);
    }
}

criterion_group!(benches, criterion_cases);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    table();
}
