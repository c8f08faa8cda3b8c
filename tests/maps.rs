//! Maps and the built-in helpers: libbpf-style objects (tests/fixtures/maps.c)
//! loaded as they are, every helper through the interpreter and the JIT
//! (which must agree on results, errors and map contents), argument checks,
//! tail-call bounds, and the host reading and writing maps from another
//! thread while programs run.

use std::sync::{Arc, Mutex};

use qemu_ubpf::MapType;
use qemu_ubpf::helpers::linux;
use qemu_ubpf::image::{MapDef, Region};
use qemu_ubpf::interp;
use qemu_ubpf::isa::{self, Insn};
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::maps::{BPF_ANY, Map};
use qemu_ubpf::{Config, ExecErrorKind, Helpers, Image, LoadErrorKind, Object, Program, elf};

fn read(path: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn fixture() -> Vec<u8> {
    read("tests/fixtures/maps.o")
}

fn load(object: &[u8], name: &str) -> Program {
    Program::from_elf(object, Some(name), &Helpers::linux(), &Config::default()).unwrap()
}

/// A program in one engine; each has its own copy of the object's maps.
enum Engine {
    Interp(Program),
    Jit(JitProgram),
}

impl Engine {
    fn both(object: &[u8], name: &str) -> [Engine; 2] {
        [Engine::Interp(load(object, name)), Engine::Jit(JitProgram::compile(Arc::new(load(object, name))).unwrap())]
    }

    /// The result of a run over `packet`, and how many instructions ran
    /// (over a whole tail-call chain).
    fn run(&self, packet: &[u8]) -> (Result<u64, qemu_ubpf::ExecError>, u64) {
        let mut packet = packet.to_vec();
        match self {
            Engine::Interp(program) => interp::execute_counted(program, &mut packet),
            Engine::Jit(jit) => jit.execute_counted(&mut packet),
        }
    }

    fn program(&self) -> &Program {
        match self {
            Engine::Interp(program) => program,
            Engine::Jit(jit) => jit.program(),
        }
    }

    fn map(&self, name: &str) -> &Arc<Map> {
        self.program().map(name).unwrap_or_else(|| panic!("no map {name}"))
    }
}

/// Every key and value of a map, in key order.
fn contents(map: &Map) -> Vec<(Vec<u8>, Vec<u8>)> {
    map.keys().into_iter().map(|key| (key.clone(), map.lookup(&key).unwrap().unwrap())).collect()
}

/// `result` with a faulting address given as the index of the program's
/// region nearest to it and the distance from that region's start (each
/// engine has its own maps, so the same access faults at different
/// addresses). Nearest by the region's extent, `[start, start + len)`, not
/// its start: an access between the slots of a large region, or just past
/// its end, may lie nearer the start of another region in one engine's
/// heap than in the other's, but lies in (or next to) its own in both.
fn relative(result: &Result<u64, qemu_ubpf::ExecError>, program: &Program) -> Result<u64, qemu_ubpf::ExecError> {
    let mut result = result.clone();
    if let Err(qemu_ubpf::ExecError { kind: ExecErrorKind::OutOfBounds { addr, .. }, .. }) = &mut result {
        let distance = |start: u64| (*addr as i64).wrapping_sub(start as i64);
        let outside = |region: &Region| match distance(region.start) {
            below @ ..0 => below.unsigned_abs(),
            within if (within as u64) < region.len => 0,
            past => past as u64 - region.len + 1,
        };
        let nearest = program.regions().iter().enumerate().min_by_key(|(_, region)| outside(region));
        if let Some((index, region)) = nearest {
            *addr = (index as u64) << 48 | (distance(region.start) as u64 & 0xffff_ffff_ffff);
        }
    }
    result
}

/// Runs `packets` through `name` in both engines; asserts they agree on
/// every result and on the final contents of every map, and returns the
/// results and the interpreter's engine.
fn agree(object: &[u8], name: &str, packets: &[&[u8]]) -> (Vec<Result<u64, qemu_ubpf::ExecError>>, Engine) {
    let [interp, jit] = Engine::both(object, name);
    let mut results = Vec::new();
    for packet in packets {
        let (expected, interpreted) = interp.run(packet);
        let (actual, compiled) = jit.run(packet);
        assert_eq!(relative(&actual, jit.program()), relative(&expected, interp.program()), "{name} over {packet:?}");
        assert_eq!(compiled, interpreted, "{name} over {packet:?}: instructions executed");
        results.push(expected);
    }
    for (left, right) in interp.program().maps().iter().zip(jit.program().maps()) {
        if left.map_type() == MapType::RingBuf {
            assert_eq!(left.ringbuf_drain(), right.ringbuf_drain(), "ring buffer {}", left.name());
        } else if left.map_type() != MapType::Queue {
            assert_eq!(contents(left), contents(right), "map {}", left.name());
        }
    }
    (results, interp)
}

#[test]
fn btf_and_legacy_maps_are_read_from_the_object() {
    let info = elf::inspect(&fixture()).unwrap();
    let maps: Vec<_> = info
        .maps
        .iter()
        .map(|map| (map.name.as_str(), map.map_type, map.key_size, map.value_size, map.max_entries))
        .collect();
    assert_eq!(
        maps,
        // By section (maps, then .maps, as the file has them), then offset.
        [
            ("legacy", 2, 4, 8, 2),
            ("jumps", 3, 4, 4, 2),
            ("hash", 1, 4, 8, 8),
            ("queue", 22, 0, 4, 4),
            ("events", 27, 0, 0, 4096)
        ]
    );
    let jumps = info.maps.iter().find(|map| map.name == "jumps").unwrap();
    assert_eq!(jumps.initial_programs, [(0, "chain".to_owned())]);
    let object = Object::load(&fixture(), &Helpers::linux(), &Config::default()).unwrap();
    let names: Vec<_> = object.program_names().map(|(function, _)| function).collect();
    assert_eq!(names, ["chain", "count", "forget", "fifo", "report", "checksum", "overrun", "printk4"]);
    let data: Vec<_> = object.maps().iter().skip(5).map(|map| map.name().to_owned()).collect();
    assert_eq!(data, [".bss", ".rodata"]);
}

#[test]
fn hash_array_and_globals_count_in_both_engines() {
    let object = fixture();
    let packets: [&[u8]; 5] = [&[7, 1], &[7, 2, 3], &[9], &[7], &[]];
    let (results, engine) = agree(&object, "count", &packets);
    assert_eq!(results, [Ok(1), Ok(2), Ok(1), Ok(3), Ok(0)]);
    let hash = engine.map("hash");
    assert_eq!(hash.lookup(&7u32.to_ne_bytes()), Ok(Some(3u64.to_ne_bytes().to_vec())));
    assert_eq!(hash.keys(), [7u32.to_ne_bytes().to_vec(), 9u32.to_ne_bytes().to_vec()]);
    assert_eq!(engine.map("legacy").lookup(&1u32.to_ne_bytes()), Ok(Some(7u64.to_ne_bytes().to_vec())));
    let bss = engine.map(".bss").lookup(&0u32.to_ne_bytes()).unwrap().unwrap();
    assert_eq!(bss[..8], 4u64.to_ne_bytes(), "runs, in .bss");
    let (results, _) = agree(&object, "forget", &[&[1]]);
    assert_eq!(results, [Ok(-(libc::ENOENT as i64) as u64)]);
}

#[test]
fn programs_of_one_object_share_maps() {
    let object = Object::load(&fixture(), &Helpers::linux(), &Config::default()).unwrap();
    let count = object.program("count").unwrap();
    let forget = object.program("forget").unwrap();
    count.execute(&mut [5]).unwrap();
    assert_eq!(object.map("hash").unwrap().keys().len(), 1);
    assert_eq!(forget.execute(&mut [5]), Ok(0));
    assert!(object.map("hash").unwrap().keys().is_empty());
}

#[test]
fn queue_ring_buffer_and_checksum() {
    let object = fixture();
    let (results, _) = agree(&object, "fifo", &[&[0; 3], &[0; 5]]);
    assert_eq!(results, [Ok(3), Ok(5)]);
    let [interp, jit] = Engine::both(&object, "report");
    for engine in [&interp, &jit] {
        assert_eq!(engine.run(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).0, Ok(0));
        assert_eq!(engine.run(&[0xaa, 0xbb]).0, Ok(0));
        let records = engine.map("events").ringbuf_drain().unwrap();
        assert_eq!(
            records,
            [vec![1, 2, 3, 4, 5, 6, 7, 8], vec![1, 2, 3, 4], vec![0xaa, 0xbb, 0, 0, 0, 0, 0, 0], vec![0xaa, 0xbb]]
        );
    }
    let packet = [0x45, 0, 0, 0x54, 0xff, 0xff, 0x12, 0x34];
    let (results, _) = agree(&object, "checksum", &[&packet]);
    let words =
        [u32::from_ne_bytes(packet[..4].try_into().unwrap()), u32::from_ne_bytes(packet[4..].try_into().unwrap())];
    // Summed, then folded to 16 bits, as Linux returns it.
    let mut sum: u64 = words.iter().map(|&word| u64::from(word)).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(results, [Ok(sum)]);
}

#[test]
fn tail_call_chains_stop_at_33() {
    let (results, engine) = agree(&fixture(), "chain", &[&[1], &[2]]);
    // The first program and 33 tail calls; the 34th call fails and the
    // program returns. The count in .bss carries over to the second run.
    assert_eq!(results, [Ok(34), Ok(68)]);
    assert_eq!(engine.map("jumps").keys(), [0u32.to_ne_bytes().to_vec()]);
}

#[test]
fn a_looked_up_value_is_bounded_by_its_map() {
    let (results, _) = agree(&fixture(), "overrun", &[&[]]);
    let error = results[0].clone().unwrap_err();
    assert!(matches!(error.kind, ExecErrorKind::OutOfBounds { size: 8, write: false, .. }), "{error}");
    assert_eq!(error.insn.opc, isa::LDXDW);
}

#[test]
fn an_access_through_a_value_stays_in_that_value() {
    // Four 12-byte values, 16 bytes apart: look up key 0 (on the stack),
    // then access `size` bytes at `offset` from the value.
    let array = def(MapType::Array, 4, 12, 4);
    let access = |opc: u8, offset: i16| {
        let [lddw, tail] = lddw_map(1, 1, 0, 0);
        [
            Insn::new(isa::STW, 10, 0, -4, 0),
            Insn::new(isa::MOV64_REG, 2, 10, 0, 0),
            Insn::new(isa::ADD64_IMM, 2, 0, 0, -4),
            lddw,
            tail,
            Insn::new(isa::CALL, 0, 0, 0, linux::MAP_LOOKUP_ELEM as i32),
            Insn::new(opc, 0, 0, offset, 0),
            EXIT,
        ]
    };
    let run =
        |opc: u8, offset: i16| both(image_program(&access(opc, offset), std::slice::from_ref(&array)).unwrap(), &[]);
    assert_eq!(run(isa::LDXW, 8), Ok(0));
    assert_eq!(run(isa::LDXB, 11), Ok(0));
    // The whole of the next value is another value: the checks cannot tell
    // which lookup a pointer came from, only that it stays in one value.
    assert_eq!(run(isa::LDXW, 16), Ok(0));
    // Into the padding after the value, across it, before the arena.
    for (opc, offset) in [(isa::LDXDW, 8), (isa::LDXW, 10), (isa::LDXB, 12), (isa::LDXW, 28), (isa::LDXB, -1)] {
        let error = run(opc, offset).unwrap_err();
        assert!(matches!(error.kind, ExecErrorKind::OutOfBounds { .. }), "{opc:#x} at {offset}: {error}");
        assert_eq!(error.pc, 6, "the load");
    }
}

/// A program of `insns` with maps `maps`, whose `lddw src=1 imm=i` name them.
fn image_program(insns: &[Insn], maps: &[MapDef]) -> Result<Program, qemu_ubpf::LoadError> {
    let image = Image { insns: insns.to_vec(), maps: maps.to_vec(), ..Image::default() };
    Program::from_image(image, &Helpers::linux(), &Config::default())
}

fn def(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
    MapDef {
        name: "m".into(),
        map_type: map_type as u32,
        key_size,
        value_size,
        max_entries,
        flags: 0,
        initial_programs: Vec::new(),
    }
}

const EXIT: Insn = Insn::new(isa::EXIT, 0, 0, 0, 0);

fn lddw_map(dst: u8, src: u8, index: i32, offset: i32) -> [Insn; 2] {
    [Insn::new(isa::LDDW, dst, src, 0, index), Insn::new(0, 0, 0, 0, offset)]
}

/// Runs `program` in both engines over `input`, which must agree. One
/// buffer serves both runs, so that addresses in errors agree too.
fn both(program: Program, input: &[u8]) -> Result<u64, qemu_ubpf::ExecError> {
    let program = Arc::new(program);
    let jit = JitProgram::compile(program.clone()).unwrap();
    let mut buffer = input.to_vec();
    let (expected, interpreted) = interp::execute_counted(&program, &mut buffer);
    buffer.copy_from_slice(input);
    let (actual, compiled) = jit.execute_counted(&mut buffer);
    assert_eq!(actual, expected);
    assert_eq!(compiled, interpreted, "instructions executed");
    expected
}

/// Pins this thread to the CPU it runs on, so that per-CPU lookups in
/// both engines use one CPU's values.
fn pin_to_this_cpu() {
    // SAFETY: plain calls on this thread; a zeroed cpu_set_t is valid.
    unsafe {
        let cpu = libc::sched_getcpu();
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu.max(0) as usize, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// A lookup with the key taken from the input's first 4 bytes and stored
/// at `r10 + key_at`, returning the value's address.
fn lookup_program(key_at: i16) -> Vec<Insn> {
    let [lddw, tail] = lddw_map(1, 1, 0, 0);
    vec![
        Insn::new(isa::LDXW, 6, 1, 0, 0),
        Insn::new(isa::STXW, 10, 6, key_at.min(-4), 0),
        lddw,
        tail,
        Insn::new(isa::MOV64_REG, 2, 10, 0, 0),
        Insn::new(isa::ADD64_IMM, 2, 0, 0, key_at as i32),
        Insn::new(isa::CALL, 0, 0, 0, linux::MAP_LOOKUP_ELEM as i32),
        EXIT,
    ]
}

/// The JIT looks up maps itself where the helper could not fail (arrays
/// inline, per-CPU ones by the thread's CPU on x86-64): every kind gives the address
/// the helper gives, or 0, for keys in and out of range, including a map
/// of one entry; a key not wholly in the frame still goes to the helper.
#[test]
fn lookups_the_jit_makes_itself_give_what_the_helper_gives() {
    pin_to_this_cpu();
    let defs = [
        def(MapType::Array, 4, 8, 1),
        def(MapType::Array, 4, 12, 5),
        // One entry, whose slot (24 bytes) is no power of two.
        def(MapType::Array, 4, 20, 1),
        def(MapType::PerCpuArray, 4, 8, 1),
        def(MapType::PerCpuArray, 4, 20, 3),
        def(MapType::Hash, 4, 8, 4),
        def(MapType::PerCpuHash, 4, 8, 4),
        def(MapType::LruHash, 4, 8, 4),
        def(MapType::LruPerCpuHash, 4, 8, 4),
    ];
    for map_def in defs {
        let loaded = Arc::new(image_program(&lookup_program(-4), std::slice::from_ref(&map_def)).unwrap());
        let map = &loaded.maps()[0];
        if map_def.map_type != MapType::Array as u32 && map_def.map_type != MapType::PerCpuArray as u32 {
            for key in [1u32, 2] {
                map.update(&key.to_ne_bytes(), &vec![7; map.host_value_size()], BPF_ANY).unwrap();
            }
        }
        let jit = JitProgram::compile(loaded.clone()).unwrap();
        for key in [0u32, 1, 2, 4, 5, 0x8000_0000, u32::MAX] {
            let mut input = key.to_ne_bytes();
            let expected = interp::execute(&loaded, &mut input);
            let actual = jit.execute(&mut input);
            let host = loaded.maps()[0].lookup_addr(&key.to_ne_bytes()).unwrap().unwrap_or(0);
            assert_eq!(actual, expected, "{map_def:?}, key {key}");
            assert_eq!(actual, Ok(host), "{map_def:?}, key {key}");
        }
    }
    // Key bytes past the frame's top, read by the helper, which refuses them.
    let array = def(MapType::Array, 4, 8, 4);
    let error = both(image_program(&lookup_program(-2), std::slice::from_ref(&array)).unwrap(), &[0; 4]).unwrap_err();
    assert!(matches!(error.kind, ExecErrorKind::HelperMemory { helper: 1, size: 4, .. }), "{error}");
    // The key in the input: the helper reads it there.
    let [lddw, tail] = lddw_map(1, 1, 0, 0);
    let in_input = [Insn::new(isa::MOV64_REG, 2, 1, 0, 0), lddw, tail, Insn::new(isa::CALL, 0, 0, 0, 1), EXIT];
    let program = Arc::new(image_program(&in_input, std::slice::from_ref(&array)).unwrap());
    let value = program.maps()[0].lookup_addr(&3u32.to_ne_bytes()).unwrap().unwrap();
    assert_eq!(both(Arc::into_inner(program).unwrap(), &3u32.to_ne_bytes()), Ok(value));
}

/// An embedder's own helper 1 is called, not the maps' lookup.
#[test]
fn a_helper_registered_over_the_lookup_is_called() {
    extern "C" fn answer(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        42
    }
    let mut helpers = Helpers::linux();
    helpers.register(linux::MAP_LOOKUP_ELEM, "answer", answer);
    let image = Image { insns: lookup_program(-4), maps: vec![def(MapType::Array, 4, 8, 4)], ..Image::default() };
    let program = Program::from_image(image, &helpers, &Config::default()).unwrap();
    assert_eq!(both(program, &[0; 4]), Ok(42));
}

#[test]
fn helpers_refuse_bad_arguments_naming_the_instruction() {
    let hash = def(MapType::Hash, 4, 8, 4);
    let call = |helper: u32| Insn::new(isa::CALL, 0, 0, 0, helper as i32);
    // r1 = 12345, not a map.
    let not_a_map = [Insn::new(isa::MOV64_IMM, 1, 0, 0, 12345), call(linux::MAP_LOOKUP_ELEM), EXIT];
    let error = both(image_program(&not_a_map, std::slice::from_ref(&hash)).unwrap(), &[]).unwrap_err();
    assert_eq!((error.pc, error.kind), (1, ExecErrorKind::NotAMap { helper: 1, value: 12345 }));
    // The key pointer: 0x1000, which the program may not read.
    let mut wild_key = lddw_map(1, 1, 0, 0).to_vec();
    wild_key.extend([Insn::new(isa::MOV64_IMM, 2, 0, 0, 0x1000), call(linux::MAP_UPDATE_ELEM), EXIT]);
    let error = both(image_program(&wild_key, std::slice::from_ref(&hash)).unwrap(), &[]).unwrap_err();
    assert_eq!(error.pc, 3);
    assert!(matches!(error.kind, ExecErrorKind::HelperMemory { helper: 2, addr: 0x1000, size: 4, write: false }));
    // The key is the input, 2 bytes long: too short for a 4-byte key.
    let [lddw, tail] = lddw_map(1, 1, 0, 0);
    let short_key = [Insn::new(isa::MOV64_REG, 2, 1, 0, 0), lddw, tail, call(linux::MAP_LOOKUP_ELEM), EXIT];
    let error = both(image_program(&short_key, std::slice::from_ref(&hash)).unwrap(), &[1, 2]).unwrap_err();
    assert!(matches!(error.kind, ExecErrorKind::HelperMemory { helper: 1, size: 4, .. }), "{error}");
    assert_eq!(
        both(image_program(&short_key, std::slice::from_ref(&hash)).unwrap(), &[1, 2, 3, 4]),
        Ok(0),
        "absent key"
    );
    // Submitting what was never reserved.
    let submit = [Insn::new(isa::MOV64_REG, 1, 10, 0, 0), call(linux::RINGBUF_SUBMIT), EXIT];
    let error = both(image_program(&submit, &[]).unwrap(), &[]).unwrap_err();
    assert!(matches!(error.kind, ExecErrorKind::NotARecord { helper: 132, .. }), "{error}");
    // A tail call through a map that is not a prog array.
    let mut tail = lddw_map(2, 1, 0, 0).to_vec();
    tail.extend([call(linux::TAIL_CALL), EXIT]);
    let error = both(image_program(&tail, std::slice::from_ref(&hash)).unwrap(), &[]).unwrap_err();
    assert!(matches!(error.kind, ExecErrorKind::HelperArgument { helper: 12, .. }));
}

#[test]
fn helpers_may_touch_only_live_stack_frames() {
    // A bpf-to-bpf callee leaves the address of its stack in r0 and
    // returns; the caller hands that address to a helper as the key and
    // value of map_update_elem (with `from_caller`), or its own stack.
    let hash = def(MapType::Hash, 4, 8, 4);
    let program = |from_caller: bool| {
        let [lddw, tail] = lddw_map(1, 1, 0, 0);
        let key =
            if from_caller { Insn::new(isa::MOV64_REG, 2, 0, 0, 0) } else { Insn::new(isa::MOV64_REG, 2, 10, 0, 0) };
        let key_offset = if from_caller { 0 } else { -8 };
        let insns = [
            Insn::new(isa::STDW, 10, 0, -8, 3),
            Insn::new(isa::CALL, 0, isa::CALL_LOCAL, 0, 9),
            key,
            Insn::new(isa::ADD64_IMM, 2, 0, 0, key_offset),
            Insn::new(isa::MOV64_REG, 3, 2, 0, 0),
            lddw,
            tail,
            Insn::new(isa::MOV64_IMM, 4, 0, 0, 0),
            Insn::new(isa::CALL, 0, 0, 0, linux::MAP_UPDATE_ELEM as i32),
            Insn::new(isa::LDXDW, 0, 10, -8, 0),
            EXIT,
            // The callee, at 11.
            Insn::new(isa::STDW, 10, 0, -8, 7),
            Insn::new(isa::MOV64_REG, 0, 10, 0, 0),
            Insn::new(isa::ADD64_IMM, 0, 0, 0, -8),
            EXIT,
        ];
        image_program(&insns, std::slice::from_ref(&hash)).unwrap()
    };
    assert_eq!(both(program(false), &[]), Ok(3), "the caller's own frame");
    let error = both(program(true), &[]).unwrap_err();
    assert_eq!(error.pc, 8);
    assert!(
        matches!(error.kind, ExecErrorKind::HelperMemory { helper: 2, size: 4, write: false, .. }),
        "the callee's frame, which has returned: {error}"
    );
}

/// A callee passes a helper its own frame and its caller's, both live.
#[test]
fn a_callee_hands_helpers_its_frame_and_its_callers() {
    let insns = [
        Insn::new(isa::STDW, 10, 0, -8, 0x0102_0304),
        Insn::new(isa::MOV64_REG, 6, 10, 0, 0),
        Insn::new(isa::CALL, 0, isa::CALL_LOCAL, 0, 1),
        EXIT,
        // The callee, at 4: csum_diff(caller's 8 bytes, own 8 bytes).
        Insn::new(isa::STDW, 10, 0, -8, 0x0506_0708),
        Insn::new(isa::MOV64_REG, 1, 6, 0, 0),
        Insn::new(isa::ADD64_IMM, 1, 0, 0, -8),
        Insn::new(isa::MOV64_IMM, 2, 0, 0, 8),
        Insn::new(isa::MOV64_REG, 3, 10, 0, 0),
        Insn::new(isa::ADD64_IMM, 3, 0, 0, -8),
        Insn::new(isa::MOV64_IMM, 4, 0, 0, 8),
        Insn::new(isa::MOV64_IMM, 5, 0, 0, 0),
        Insn::new(isa::CALL, 0, 0, 0, linux::CSUM_DIFF as i32),
        EXIT,
    ];
    let result = both(image_program(&insns, &[]).unwrap(), &[]).unwrap();
    // From: the caller's words 0x01020304 and 0; to: the callee's
    // 0x05060708 and 0. Folding to 16 bits keeps the sum modulo 2^16 - 1.
    let sum = (0x0506_0708u64 + (!0x0102_0304u32) as u64 + 0xffff_ffff) % 0xffff;
    assert!(result <= 0xffff, "{result:#x} is folded to 16 bits");
    assert_eq!(result % 0xffff, sum);
}

#[test]
fn lddw_of_maps_is_checked_at_load() {
    let array = def(MapType::Array, 4, 16, 2);
    let mut value = lddw_map(1, 2, 0, 12).to_vec();
    value.extend([Insn::new(isa::STW, 1, 0, 0, 7), Insn::new(isa::LDXW, 0, 1, 0, 0), EXIT]);
    let program = image_program(&value, std::slice::from_ref(&array)).unwrap();
    assert_eq!(both(program, &[]), Ok(7));
    let mut past = lddw_map(1, 2, 0, 16).to_vec();
    past.push(EXIT);
    let error = image_program(&past, std::slice::from_ref(&array)).err().unwrap();
    assert!(matches!(error.kind, LoadErrorKind::BadMapValue { offset: 16, .. }));
    let mut missing = lddw_map(1, 1, 1, 0).to_vec();
    missing.push(EXIT);
    let error = image_program(&missing, &[array]).err().unwrap();
    assert_eq!((error.pc, error.kind), (0, LoadErrorKind::NoSuchMap { index: 1, maps: 1 }));
    let error = image_program(&[EXIT], &[def(MapType::Array, 8, 8, 1)]).err().unwrap();
    assert!(matches!(error.kind, LoadErrorKind::Map(_)));
}

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == "bpf_trace_printk"
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn trace_printk_and_vprintk_go_to_the_log() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    load(&fixture(), "count").execute(&mut [1, 2, 3]).unwrap();
    load(&fixture(), "printk4").execute(&mut [1, 2, 3]).unwrap();
    let lines = CAPTURE.0.lock().unwrap();
    assert!(lines.contains(&"packet of 3 bytes".to_owned()), "{lines:?}");
    assert!(lines.contains(&"3 bytes: 1 2 3".to_owned()), "bpf_trace_vprintk: {lines:?}");
}

#[test]
fn the_host_reads_and_writes_maps_while_programs_run() {
    let object = fixture();
    let program = Arc::new(load(&object, "count"));
    let jit = Arc::new(JitProgram::compile(program.clone()).unwrap());
    let runs_per_thread = 20_000u64;
    // Inserted before the runs, so that each of them adds to it atomically.
    program.map("hash").unwrap().update(&1u32.to_ne_bytes(), &0u64.to_ne_bytes(), BPF_ANY).unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let jit = jit.clone();
            std::thread::spawn(move || {
                for _ in 0..runs_per_thread {
                    jit.execute(&mut [1]).unwrap();
                }
            })
        })
        .collect();
    let hash = program.map("hash").unwrap();
    for round in 0..2_000u32 {
        // Keys 100.. are the host's; key 1 is the programs'.
        let key = (100 + round % 4).to_ne_bytes();
        hash.update(&key, &u64::from(round).to_ne_bytes(), BPF_ANY).ok();
        if round % 3 == 0 {
            hash.delete(&key).ok();
        }
        assert!(hash.lookup(&1u32.to_ne_bytes()).unwrap().is_some());
        assert!(hash.keys().len() <= 8);
    }
    for worker in workers {
        worker.join().unwrap();
    }
    // Every run counted, though the host was writing the same map.
    let count = hash.lookup(&1u32.to_ne_bytes()).unwrap().unwrap();
    assert_eq!(u64::from_ne_bytes(count.try_into().unwrap()), 2 * runs_per_thread);
}

/// A small deterministic generator (xorshift64*), so a failing seed can be
/// rerun.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The maps of the random programs: small, so that they fill up.
fn random_program_maps() -> Vec<MapDef> {
    let mut trie = def(MapType::LpmTrie, 8, 4, 4);
    trie.flags = qemu_ubpf::maps::BPF_F_NO_PREALLOC;
    vec![
        def(MapType::Hash, 4, 8, 4),
        def(MapType::Array, 4, 12, 4),
        trie,
        def(MapType::Queue, 0, 4, 2),
        def(MapType::LruHash, 4, 8, 2),
    ]
}

/// A program of a few map helper calls with random keys, values and flags,
/// now and then a pointer the program may not pass, a helper the map does
/// not support, or an access through a looked-up value at a random offset
/// (in or out of the value). r9 sums what the calls return (1 for a value
/// found), so results show every call's outcome.
fn random_map_program(random: &mut Random) -> Vec<Insn> {
    let maps = random_program_maps().len() as u64;
    let keyed = [linux::MAP_LOOKUP_ELEM, linux::MAP_UPDATE_ELEM, linux::MAP_DELETE_ELEM];
    let queued = [linux::MAP_PUSH_ELEM, linux::MAP_POP_ELEM, linux::MAP_PEEK_ELEM];
    const QUEUE: i32 = 3;
    let mut insns = vec![Insn::new(isa::MOV64_IMM, 9, 0, 0, 0)];
    for _ in 0..1 + random.below(8) {
        let map = random.below(maps) as i32;
        // Mostly a helper the map supports; now and then any.
        let helpers = match (random.below(20), map) {
            (0, _) => [keyed, queued].concat(),
            (_, QUEUE) => queued.to_vec(),
            _ => keyed.to_vec(),
        };
        let helper = helpers[random.below(helpers.len() as u64) as usize];
        // A key: a prefix length (for the trie) or the key itself at r10 - 8,
        // an address at r10 - 4; a value at r10 - 16.
        insns.push(Insn::new(isa::STW, 10, 0, -8, random.below(40) as i32));
        insns.push(Insn::new(isa::STW, 10, 0, -4, random.below(4) as i32 * 0x0100_0000));
        insns.push(Insn::new(isa::STDW, 10, 0, -16, random.below(100) as i32));
        let [lddw, tail] = lddw_map(1, 1, map, 0);
        insns.extend([lddw, tail]);
        let (key, value) = match random.below(30) {
            0 => (Insn::new(isa::MOV64_IMM, 2, 0, 0, 0x1000), Insn::new(isa::ADD64_IMM, 3, 0, 0, -16)),
            // Past the stack's top.
            1 => (Insn::new(isa::ADD64_IMM, 2, 0, 0, 16), Insn::new(isa::ADD64_IMM, 3, 0, 0, 8)),
            _ => (Insn::new(isa::ADD64_IMM, 2, 0, 0, -8), Insn::new(isa::ADD64_IMM, 3, 0, 0, -16)),
        };
        insns.push(Insn::new(isa::MOV64_REG, 2, 10, 0, 0));
        insns.push(key);
        insns.push(Insn::new(isa::MOV64_REG, 3, 10, 0, 0));
        insns.push(value);
        insns.push(Insn::new(isa::MOV64_IMM, 4, 0, 0, random.below(4) as i32));
        // Queue helpers take the value in r2 and flags in r3.
        if matches!(helper, linux::MAP_PUSH_ELEM | linux::MAP_POP_ELEM | linux::MAP_PEEK_ELEM) {
            insns.push(Insn::new(isa::MOV64_REG, 2, 3, 0, 0));
            insns.push(Insn::new(isa::MOV64_IMM, 3, 0, 0, random.below(3) as i32));
        }
        insns.push(Insn::new(isa::CALL, 0, 0, 0, helper as i32));
        if helper == linux::MAP_LOOKUP_ELEM {
            let access = [isa::LDXB, isa::LDXH, isa::LDXW, isa::LDXDW, isa::STB, isa::STW, isa::STDW];
            let access = access[random.below(access.len() as u64) as usize];
            let offset = random.below(20) as i16 - 2;
            let touch = match access {
                isa::STB | isa::STW | isa::STDW => Insn::new(access, 0, 0, offset, 7),
                _ => Insn::new(access, 1, 0, offset, 0),
            };
            insns.extend([
                Insn::new(isa::JEQ_IMM, 0, 0, 3, 0),
                Insn::new(isa::ADD64_IMM, 9, 0, 0, 1),
                touch,
                Insn::new(isa::MOV64_IMM, 0, 0, 0, 0),
            ]);
        }
        insns.push(Insn::new(isa::ADD64_REG, 9, 0, 0, 0));
    }
    insns.push(Insn::new(isa::MOV64_REG, 0, 9, 0, 0));
    insns.push(EXIT);
    insns
}

#[test]
fn jit_agrees_with_interpreter_on_random_map_programs() {
    let mut outcomes = std::collections::BTreeMap::new();
    for seed in 1..=3000u64 {
        let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let insns = random_map_program(&mut random);
        let load = || {
            let image = Image { insns: insns.clone(), maps: random_program_maps(), ..Image::default() };
            Arc::new(Program::from_image(image, &Helpers::linux(), &Config::default()).unwrap())
        };
        let (interp, compiled) = (load(), load());
        let jit = JitProgram::compile(compiled.clone()).unwrap();
        // Three runs each, so that later runs see what earlier ones stored.
        for run in 0..3 {
            let (expected, interpreted) = interp::execute_counted(&interp, &mut []);
            let (actual, executed) = jit.execute_counted(&mut []);
            assert_eq!(relative(&actual, &compiled), relative(&expected, &interp), "seed {seed}, run {run}: {insns:?}");
            assert_eq!(executed, interpreted, "seed {seed}, run {run}: instructions executed");
            let name = match &expected {
                Ok(_) => "returned",
                Err(error) => match error.kind {
                    ExecErrorKind::OutOfBounds { .. } => "out of bounds",
                    ExecErrorKind::HelperMemory { .. } => "helper memory",
                    ExecErrorKind::HelperArgument { .. } => "helper argument",
                    _ => "other",
                },
            };
            *outcomes.entry(name).or_insert(0) += 1;
        }
        for (left, right) in interp.maps().iter().zip(compiled.maps()) {
            match left.map_type() {
                MapType::Queue => assert_eq!(left.peek_all(), right.peek_all(), "seed {seed}"),
                _ => assert_eq!(contents(left), contents(right), "seed {seed}: map {}", left.map_type().name()),
            }
        }
    }
    println!("outcomes: {outcomes:?}");
    // Every kind of ending happens: a return, a fault through a value, a
    // pointer the program may not pass, a helper the map does not support.
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(outcomes["returned"] > 3000 * 3 / 2, "most runs return: {outcomes:?}");
}

#[test]
fn a_new_program_takes_over_maps_of_the_same_name_and_shape() {
    let object = read("examples/proto_counters.o");
    let old = load(&object, "count_protocols");
    let mut tcp = [0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    old.execute(&mut tcp).unwrap();
    let config = Config { reuse_maps: old.maps().to_vec(), ..Config::default() };
    let new = Program::from_elf(&object, None, &Helpers::linux(), &config).unwrap();
    assert!(Arc::ptr_eq(old.map("counters").unwrap(), new.map("counters").unwrap()));
    new.execute(&mut tcp).unwrap();
    let packets = |program: &Program| program.map("counters").unwrap().lookup(&6u32.to_ne_bytes()).unwrap().unwrap();
    assert_eq!(packets(&new)[..8], 2u64.to_ne_bytes());
    // Another shape: a fresh map.
    let mut other = old.map("counters").unwrap().def().clone();
    other.max_entries = 16;
    let image =
        Image { insns: vec![Insn::new(isa::MOV64_IMM, 0, 0, 0, 0), EXIT], maps: vec![other], ..Image::default() };
    let fresh = Program::from_image(image, &Helpers::linux(), &config).unwrap();
    assert!(!Arc::ptr_eq(old.map("counters").unwrap(), fresh.map("counters").unwrap()));
}

#[test]
fn the_host_drains_a_ring_buffer_while_programs_fill_it() {
    let program = Arc::new(load(&fixture(), "report"));
    let jit = Arc::new(JitProgram::compile(program.clone()).unwrap());
    let ring = program.map("events").unwrap().clone();
    let workers: Vec<_> = (0..2u8)
        .map(|worker| {
            let jit = jit.clone();
            std::thread::spawn(move || {
                // Records each run submitted: 2, 1 (the output found the
                // buffer full) or 0 (so did the reserve).
                let mut submitted = 0u64;
                for _ in 0..5_000 {
                    submitted += match jit.execute(&mut [worker; 9]).unwrap() as i32 {
                        0 => 2,
                        -1 => 0,
                        _ => 1,
                    };
                }
                submitted
            })
        })
        .collect();
    let mut drained = Vec::new();
    while workers.iter().any(|worker| !worker.is_finished()) {
        drained.extend(ring.ringbuf_drain().unwrap());
    }
    let submitted: u64 = workers.into_iter().map(|worker| worker.join().unwrap()).sum();
    drained.extend(ring.ringbuf_drain().unwrap());
    assert_eq!(drained.len() as u64, submitted);
    // Every record whole: 8 bytes of one worker's packet, or its first 4.
    for record in &drained {
        assert!(record.len() == 8 || record.len() == 4, "{record:?}");
        assert!(record.iter().all(|&byte| byte == record[0]) && record[0] < 2, "{record:?}");
    }
}
