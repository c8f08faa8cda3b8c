//! XDP programs against the Linux kernel's recorded answers
//! (`tests/kernel/xdp.json`, see `tests/kernel/README.md`): every recorded
//! (program, frame, context) runs in both engines and must give the
//! kernel's return value, output bytes, context and map contents; every
//! recorded refusal must be a refusal at the same instruction. Records that
//! need something not supported are skipped by reason, and the count of
//! each is fixed here, so the test fails when it skips more (or less) than
//! it says. The XDP examples (`examples/xdp/`) have their own recording,
//! `tests/kernel/xdp_examples.json`, checked the same way with nothing
//! skipped.
//!
//! Per-CPU maps: each run is pinned to the CPU the kernel's ran on (or, if
//! that one is not ours to use, to one that is), and a per-CPU value is
//! compared as the value of the CPU the run used and the values of the
//! others, which the run must leave alone; so the recording holds on a host
//! with any number of CPUs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use qemu_ubpf::error::{ElfError, ExecError, LoadErrorKind};
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::maps::cpus;
use qemu_ubpf::xdp::{Buffer, BufferError, RxInfo};
use qemu_ubpf::{Config, Helpers, Map, MapError, Program, interp};
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap()).collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn sha256(path: &Path) -> Option<String> {
    let output = std::process::Command::new("sha256sum").arg(path).output().ok()?;
    String::from_utf8(output.stdout).ok()?.split_whitespace().next().map(str::to_owned)
}

/// Why a record is skipped.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    /// The object declares a map type not supported yet.
    MapType(String),
    /// A Debian object missing here, or not the one recorded.
    DebianObject,
    /// A multi-buffer packet (a short `data_end`, or a frame past 3520 bytes).
    MultiBuffer,
    /// A context naming the recorder's ifb device.
    RecorderDevice,
    /// A packet-range refusal: the kernel proves packet accesses at load;
    /// here they are checked at run time.
    PacketRangeAtLoad,
    /// A program for a devmap's entries (section `xdp/devmap`): the kernel
    /// loads it but test_run refuses to run it (every record says EINVAL);
    /// here it is refused at load, as such programs are not supported.
    DevmapProgram,
}

/// How many records each reason skips: a change here is a change in what
/// is supported.
fn expected_skips() -> BTreeMap<Skip, usize> {
    BTreeMap::from([
        (Skip::MultiBuffer, 59),
        (Skip::RecorderDevice, 3),
        (Skip::PacketRangeAtLoad, 2),
        (Skip::DevmapProgram, 17),
    ])
}

fn map_type_name(number: u32) -> String {
    match number {
        5 => "percpu_hash",
        6 => "percpu_array",
        4 => "perf_event_array",
        10 => "lru_percpu_hash",
        14 => "devmap",
        16 => "cpumap",
        17 => "xskmap",
        25 => "devmap_hash",
        _ => return format!("type {number}"),
    }
    .into()
}

/// A map's contents as the recording writes them (a per-CPU value as a
/// list, one per CPU).
fn dump(map: &Map) -> Value {
    let array = matches!(map.map_type().name(), "array" | "percpu_array");
    let mut entries = Vec::new();
    for key in map.keys() {
        let Ok(Some(value)) = map.lookup(&key) else { continue };
        if array && value.iter().all(|&byte| byte == 0) {
            continue;
        }
        entries.push(json!({"key": to_hex(&key), "value": qemu_ubpf::maps::json::value_json(map, &value)}));
    }
    json!(entries)
}

/// Entries with each per-CPU value (a list) put as the value of the CPU
/// slot `used` and the distinct values of the other CPUs, so that hosts
/// with different numbers of CPUs compare. `others` is false on a host of
/// one CPU, where there are none to compare.
fn per_cpu_view(entries: &Value, used: usize, others: bool) -> Value {
    let view = |entry: &Value| {
        let Some(values) = entry["value"].as_array() else { return entry.clone() };
        let mut rest: Vec<&Value> =
            values.iter().enumerate().filter(|(cpu, _)| *cpu != used).map(|(_, value)| value).collect();
        rest.sort_by_key(|value| value.as_str());
        rest.dedup();
        let rest = if others { json!(rest) } else { json!(null) };
        json!({"key": entry["key"], "value": {"this_cpu": values[used], "other_cpus": rest}})
    };
    Value::Array(entries.as_array().unwrap().iter().map(view).collect())
}

/// Pins this thread to CPU `wanted` if it may run there, else to the first
/// CPU it may run on; returns the pinned CPU's per-CPU slot and a guard
/// that restores the thread's CPUs.
fn pin_to_cpu(wanted: usize) -> (usize, impl Drop) {
    struct Restore(libc::cpu_set_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: a valid set for this thread (0), of its own size.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        }
    }
    // SAFETY: cpu_set_t is plain bits, valid zeroed; the calls get its
    // size and read or write only it.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed), 0);
        let usable = |cpu: usize| libc::CPU_ISSET(cpu, &allowed) && cpus::slot_of(cpu as u32).is_some();
        let cpu =
            if usable(wanted) { wanted } else { (0..libc::CPU_SETSIZE as usize).find(|&cpu| usable(cpu)).unwrap() };
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &only), 0);
        (cpus::slot_of(cpu as u32).unwrap(), Restore(allowed))
    }
}

/// The bytes the host stores for a recorded setup value: a per-CPU map's
/// goes to every CPU, as the recorder (and bpftool) put it.
fn setup_value(map: &Map, value: &[u8]) -> Vec<u8> {
    if !map.map_type().is_per_cpu() {
        return value.to_vec();
    }
    let stride = value.len().div_ceil(8) * 8;
    let padded = [value, &vec![0; stride - value.len()]].concat();
    padded.repeat(map.cpus())
}

/// The recorded name of one of our maps: libbpf prefixes global data
/// sections with the object's name.
fn our_map<'a>(program: &'a Program, recorded: &str) -> Option<&'a Arc<Map>> {
    program.map(recorded).or_else(|| recorded.find('.').and_then(|dot| program.map(&recorded[dot..])))
}

/// The context's `ingress_ifindex` and `rx_queue_index` as test_run checks
/// them: the loopback (1, or 0 for none) has one receive queue; any other
/// device is unknown.
fn rx_info(ctx: &Value) -> Result<RxInfo, &'static str> {
    if ctx.is_null() {
        return Ok(RxInfo::default());
    }
    let field = |name: &str| ctx[name].as_u64().unwrap() as u32;
    if field("data_meta") != 0 || field("egress_ifindex") != 0 {
        return Err("EINVAL");
    }
    match field("ingress_ifindex") {
        0 | 1 if field("rx_queue_index") != 0 => Err("EINVAL"),
        0 | 1 => Ok(RxInfo::default()),
        _ => Err("ENODEV"),
    }
}

struct Outcome {
    retval: Result<u64, String>,
    data_out: Vec<u8>,
    ctx_out: Value,
    maps: BTreeMap<String, Value>,
    /// The per-CPU slot the run used.
    cpu: usize,
}

/// One run of `program` over `buffer`, in the JIT or the interpreter.
fn run_in_engine(program: &Arc<Program>, jit: bool, buffer: &mut Buffer) -> Result<u64, ExecError> {
    if jit {
        let compiled = JitProgram::compile(program.clone()).unwrap();
        buffer.run(|input| compiled.execute(input))
    } else {
        buffer.run(|input| interp::execute(program, input))
    }
}

fn run_once(object: &[u8], record: &Value, recording: &Value, setup: &[Value], jit: bool) -> Outcome {
    let name = record["program"].as_str().unwrap();
    let program = Program::from_elf(object, Some(name), &Helpers::linux(), &Config::default()).unwrap();
    for entry in setup {
        // As the recorder: an entry for a map this object lacks is left out.
        let Some(map) = our_map(&program, entry["map"].as_str().unwrap()) else { continue };
        let value = setup_value(map, &hex(entry["value"].as_str().unwrap()));
        map.update(&hex(entry["key"].as_str().unwrap()), &value, 0).unwrap();
    }
    let before: BTreeMap<String, Value> = program.maps().iter().map(|map| (map.name().to_owned(), dump(map))).collect();
    let context = &recording["contexts"][record["ctx"].as_str().unwrap()];
    let frame = hex(recording["frames"][record["frame"].as_str().unwrap()].as_str().unwrap());
    let meta = hex(context["meta"].as_str().unwrap());
    let rx = rx_info(&context["ctx_in"]).unwrap();
    let mut buffer = Buffer::new(&frame, &meta, rx).unwrap();
    let program = Arc::new(program);
    let (cpu, pinned) = pin_to_cpu(record["cpu"].as_u64().unwrap() as usize);
    let retval = run_in_engine(&program, jit, &mut buffer);
    drop(pinned);
    let maps = program
        .maps()
        .iter()
        .filter(|map| dump(map) != before[map.name()])
        .map(|map| (map.name().to_owned(), dump(map)))
        .collect();
    // test_run gives back the device fields as they came in.
    let ctx_out = json!({
        "data": buffer.metadata().len(),
        "data_end": buffer.data_out().len(),
        "data_meta": 0,
        "ingress_ifindex": context["ctx_in"]["ingress_ifindex"],
        "rx_queue_index": context["ctx_in"]["rx_queue_index"],
        "egress_ifindex": 0,
    });
    Outcome {
        retval: retval.map_err(|error| error.to_string()),
        data_out: buffer.data_out().to_vec(),
        ctx_out,
        maps,
        cpu,
    }
}

/// Checks one run record; returns why it is skipped, if it is.
fn check_run(record: &Value, recording: &Value, objects: &HashMap<String, (Vec<u8>, Vec<Value>)>) -> Option<Skip> {
    let what = format!(
        "{} {} {} {} cpu {}",
        record["object"], record["program"], record["frame"], record["ctx"], record["cpu"]
    );
    let (object, setup) = &objects[record["object"].as_str().unwrap()];
    let context = &recording["contexts"][record["ctx"].as_str().unwrap()];
    if context["ctx_in"]["ingress_ifindex"].as_u64().is_some_and(|ifindex| ifindex > 1) && record.get("error").is_none()
    {
        return Some(Skip::RecorderDevice);
    }
    let frame = hex(recording["frames"][record["frame"].as_str().unwrap()].as_str().unwrap());
    let meta = hex(context["meta"].as_str().unwrap());
    let refused = rx_info(&context["ctx_in"]).err().map(str::to_owned).or_else(|| {
        match Buffer::new(&frame, &meta, RxInfo::default()) {
            Err(BufferError::MultiBuffer(_)) => Some("multi-buffer".into()),
            Err(_) => Some("EINVAL".into()),
            Ok(_) => None,
        }
    });
    if refused.as_deref() == Some("multi-buffer") || !context["ctx_in"]["data_end"].is_null() {
        return Some(Skip::MultiBuffer);
    }
    if let Some(error) = record.get("error") {
        assert_eq!(refused.as_deref(), error.as_str(), "{what}: test_run's refusal");
        return None;
    }
    assert_eq!(refused, None, "{what}: the kernel ran it");
    let data_in = [&meta[..], &frame[..]].concat();
    let expected_out = record.get("data_out").map_or(data_in, |out| hex(out.as_str().unwrap()));
    for jit in [false, true] {
        let engine = if jit { "jit" } else { "interpreter" };
        let outcome = run_once(object, record, recording, setup, jit);
        assert_eq!(outcome.retval, Ok(record["retval"].as_u64().unwrap()), "{what}: {engine}'s return value");
        assert_eq!(to_hex(&outcome.data_out), to_hex(&expected_out), "{what}: {engine}'s data_out");
        assert_eq!(outcome.data_out.len() as u64, record["data_out_len"].as_u64().unwrap(), "{what}: {engine}");
        if !context["ctx_in"].is_null() {
            assert_eq!(outcome.ctx_out, record["ctx_out"], "{what}: {engine}'s ctx_out");
        }
        let others = cpus::count() > 1;
        let kernel_cpu = record["cpu"].as_u64().unwrap() as usize;
        let expected_maps: BTreeMap<String, Value> = record["maps_changed"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, map)| (name.clone(), per_cpu_view(&map["entries"], kernel_cpu, others)))
            .collect();
        let ours: BTreeMap<String, Value> = outcome
            .maps
            .into_iter()
            .map(|(name, entries)| {
                let recorded = expected_maps.keys().find(|recorded| recorded.ends_with(&name)).cloned();
                (recorded.unwrap_or(name), per_cpu_view(&entries, outcome.cpu, others))
            })
            .collect();
        assert_eq!(ours, expected_maps, "{what}: {engine}'s changed maps");
    }
    None
}

#[test]
fn xdp_programs_do_what_the_kernel_does() {
    let recording: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/kernel/xdp.json")).unwrap()).unwrap();
    let skips = check_recording(&recording);
    assert_eq!(skips, expected_skips(), "what is skipped");
}

/// The live kernel, where this process may use bpf(2): the recorder asks
/// it afresh about Debian's `xdpfilt_dny_all` (with maps filled as
/// `xdp-filter` fills them, per-CPU counters, runs on CPUs 0 and 1) and our
/// `xdp_maps.o`, and both engines must answer the same. Where bpf(2) is
/// refused, this says so, and the recorded answers
/// (`xdp_programs_do_what_the_kernel_does`) remain the oracle.
#[test]
fn xdp_programs_do_what_the_live_kernel_does() {
    let options = ["--only", "xdpfilt_dny_all", "--only", "xdp_maps.o"];
    let Some(recording) = live_recording(&options, "xdp-live-kernel.json") else { return };
    let runs = recording["runs"].as_array().unwrap().len();
    let skips = check_recording(&recording);
    let skipped: usize = skips.values().sum();
    assert!(skips.keys().all(|skip| matches!(skip, Skip::MultiBuffer)), "{skips:?}");
    assert!(runs >= 48 && skipped < runs / 8, "{runs} runs, {skips:?}");
}

/// The XDP examples (`examples/xdp/`) against the kernel's recorded answers
/// (`tests/kernel/xdp_examples.json`): every frame of every example, in both
/// engines, nothing skipped.
#[test]
fn xdp_examples_do_what_the_kernel_does() {
    let recording: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/kernel/xdp_examples.json")).unwrap()).unwrap();
    check_examples(&recording);
}

/// The XDP examples against the live kernel, where this process may use
/// bpf(2): the recorder runs them all afresh (a few seconds). Where bpf(2)
/// is refused, this says so, and the recorded answers
/// (`xdp_examples_do_what_the_kernel_does`) remain the oracle.
#[test]
fn xdp_examples_do_what_the_live_kernel_does() {
    let Some(recording) = live_recording(&["--examples"], "xdp-examples-live-kernel.json") else { return };
    check_examples(&recording);
}

/// What the recorder records afresh from the live kernel with `options`,
/// written to `name` in the tests' scratch directory; `None`, with a note,
/// where bpf(2) is refused.
fn live_recording(options: &[&str], name: &str) -> Option<Value> {
    let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let recorder = std::process::Command::new("python3")
        .arg(root().join("scripts/record-kernel-xdp.py"))
        .args(options)
        .arg(&output)
        .output()
        .expect("python3 runs the recorder");
    let stderr = String::from_utf8_lossy(&recorder.stderr);
    if recorder.status.code() == Some(BPF_REFUSED) {
        eprintln!("note: bpf(2) is refused here ({}): the recorded answers are the oracle", stderr.trim());
        return None;
    }
    assert!(recorder.status.success(), "the recorder failed: {stderr}");
    Some(serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap())
}

/// Checks a recording of the examples: all six, every run in both engines.
fn check_examples(recording: &Value) {
    let objects: Vec<&str> =
        recording["objects"].as_array().unwrap().iter().map(|object| object["object"].as_str().unwrap()).collect();
    let expected =
        ["ping", "dnat", "vlan_pop", "truncate", "counters", "redirect"].map(|name| format!("examples/xdp/{name}.o"));
    assert_eq!(objects, expected, "the examples recorded");
    assert!(recording["runs"].as_array().unwrap().len() >= 6 * 30, "every frame for each");
    assert_eq!(check_recording(recording), BTreeMap::new(), "nothing skipped");
}

/// The recorder's exit status when the kernel refuses it bpf(2).
const BPF_REFUSED: i32 = 77;

/// Checks every object and run of a recording in both engines; returns
/// what was skipped, by reason.
fn check_recording(recording: &Value) -> BTreeMap<Skip, usize> {
    let mut skips: BTreeMap<Skip, usize> = BTreeMap::new();
    let mut objects = HashMap::new();
    let mut unloadable: HashMap<String, Skip> = HashMap::new();
    let mut unrunnable: HashMap<(String, String), Skip> = HashMap::new();
    let mut checked_refusals = 0;
    for object in recording["objects"].as_array().unwrap() {
        let path = object["object"].as_str().unwrap();
        let file = root().join(path);
        if path.starts_with('/') && sha256(&file).as_deref() != object["sha256"].as_str() {
            unloadable.insert(path.into(), Skip::DebianObject);
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        for program in object["programs"].as_array().unwrap() {
            let name = program["program"].as_str().unwrap();
            let loaded = Program::from_elf(&bytes, Some(name), &Helpers::linux(), &Config::default());
            if let Err(ElfError::Map(MapError::UnsupportedType { map_type, .. })) = &loaded {
                unloadable.insert(path.into(), Skip::MapType(map_type_name(*map_type)));
                break;
            }
            if program["section"].as_str().unwrap().starts_with("xdp/devmap") {
                let Err(ElfError::Load { error, .. }) = loaded else { panic!("{path} {name}: loaded") };
                assert!(matches!(error.kind, LoadErrorKind::ProgramType(_)), "{path} {name}: {error}");
                unrunnable.insert((path.into(), name.into()), Skip::DevmapProgram);
                *skips.entry(Skip::DevmapProgram).or_default() += 1;
                continue;
            }
            let Some(refused) = program.get("refused") else {
                if let Err(error) = loaded {
                    panic!("{path} {name}: the kernel loads it, we refuse: {error}");
                }
                continue;
            };
            let message = refused["message"][0].as_str().unwrap();
            if message.starts_with("invalid access to packet") {
                *skips.entry(Skip::PacketRangeAtLoad).or_default() += 1;
                continue;
            }
            let Err(ElfError::Load { error, .. }) = loaded else { panic!("{path} {name}: the kernel refuses it") };
            assert_eq!(error.pc as u64, refused["pc"].as_u64().unwrap(), "{path} {name}: {error}");
            assert!(matches!(error.kind, LoadErrorKind::ContextAccess { .. }), "{path} {name}: {error}");
            assert_eq!(error.kind.to_string(), message, "{path} {name}");
            checked_refusals += 1;
        }
        objects.insert(path.to_owned(), (bytes, object["map_setup"].as_array().cloned().unwrap_or_default()));
    }
    let mut checked_runs = 0;
    for record in recording["runs"].as_array().unwrap() {
        let object = record["object"].as_str().unwrap();
        let program = record["program"].as_str().unwrap();
        let skip = match (unloadable.get(object), unrunnable.get(&(object.into(), program.into()))) {
            (Some(skip), _) => Some(skip.clone()),
            (None, Some(skip)) => {
                assert_eq!(record["error"], "EINVAL", "{object} {program}: the kernel ran it");
                Some(skip.clone())
            }
            (None, None) => check_run(record, recording, &objects),
        };
        match skip {
            Some(skip) => *skips.entry(skip).or_default() += 1,
            None => checked_runs += 1,
        }
    }
    println!("checked {checked_runs} runs in both engines and {checked_refusals} refusals against the kernel");
    for (skip, count) in &skips {
        println!("skipped {count}: {skip:?}");
    }
    skips
}

/// What test_run does not show: where a redirect sends the packet. A
/// devmap's slot gives its ifindex, as `bpf_redirect` gives its argument;
/// a cpumap's its CPU; an empty slot (an xskmap's always is) no target.
#[test]
fn redirects_record_their_target_in_both_engines() {
    let object = std::fs::read(root().join("tests/fixtures/xdp_actions.o")).unwrap();
    let frame = hex(recording_frame("ipv4_udp_dns").as_str());
    // (program, return value, device, CPU)
    let cases = [
        ("xdp_redirect_ifindex", 4, Some(5), None),
        ("xdp_redirect_devmap", 4, Some(7), None),
        ("xdp_redirect_devmap_miss", 2, None, None),
        ("xdp_redirect_cpumap", 4, None, Some(0)),
        ("xdp_redirect_xskmap", 2, None, None),
    ];
    for (name, retval, device, cpu) in cases {
        for jit in [false, true] {
            let program = Program::from_elf(&object, Some(name), &Helpers::linux(), &Config::default()).unwrap();
            let tx_ports = program.map("tx_ports").unwrap();
            tx_ports.update(&0u32.to_ne_bytes(), &7u32.to_ne_bytes(), 0).unwrap();
            let cpumap_entry = [192u32.to_ne_bytes(), [0; 4]].concat();
            program.map("cpus").unwrap().update(&0u32.to_ne_bytes(), &cpumap_entry, 0).unwrap();
            let program = Arc::new(program);
            let mut buffer = Buffer::new(&frame, &[], RxInfo::default()).unwrap();
            let got = run_in_engine(&program, jit, &mut buffer);
            let what = format!("{name} (jit: {jit})");
            assert_eq!(got.unwrap(), retval, "{what}");
            assert_eq!(buffer.redirect_target(), device, "{what}");
            assert_eq!(buffer.redirect_cpu(), cpu, "{what}");
        }
    }
}

/// What the recorded setup (a snap length of 64) leaves out of
/// `examples/xdp/truncate.c`: with no snap length set, frames are cut to
/// 128 bytes, and a snap length below the Ethernet header's 14 bytes cuts
/// to 14 (the kernel refuses to shrink a frame further).
#[test]
fn truncate_example_has_a_default_and_keeps_the_ethernet_header() {
    let object = std::fs::read(root().join("examples/xdp/truncate.o")).unwrap();
    let frame = hex(&recording_frame("ipv4_udp_1514"));
    for (snap_len, kept) in [(None, 128), (Some(5u32), 14), (Some(14), 14), (Some(200), 200), (Some(2000), 1514)] {
        for jit in [false, true] {
            let program = Program::from_elf(&object, None, &Helpers::linux(), &Config::default()).unwrap();
            if let Some(snap_len) = snap_len {
                program.map("settings").unwrap().update(&0u32.to_ne_bytes(), &snap_len.to_ne_bytes(), 0).unwrap();
            }
            let program = Arc::new(program);
            let mut buffer = Buffer::new(&frame, &[], RxInfo::default()).unwrap();
            let retval = run_in_engine(&program, jit, &mut buffer);
            let what = format!("snap length {snap_len:?} (jit: {jit})");
            assert_eq!(retval.unwrap(), 2, "{what}: XDP_PASS");
            assert_eq!(to_hex(buffer.data_out()), to_hex(&frame[..kept]), "{what}");
        }
    }
}

fn recording_frame(name: &str) -> String {
    let recording: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/kernel/xdp.json")).unwrap()).unwrap();
    recording["frames"][name].as_str().unwrap().to_owned()
}

/// What the recording cannot show: the records `bpf_perf_event_output`
/// writes. xdpdump (xdp-tools) captures packets of the device its
/// `trace_cfg` names: a 20-byte `struct pkt_trace_metadata` (ifindex, rx
/// queue, packet length, captured length, flags, program index, action)
/// then the packet's first bytes, up to the snap length.
#[test]
fn xdpdump_writes_its_records_to_the_perf_event_array() {
    let path = Path::new("/usr/lib/x86_64-linux-gnu/bpf/xdpdump_xdp.o");
    let object = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error} (package xdp-tools)", path.display()));
    let frame = hex(&recording_frame("ipv4_udp_dns"));
    for jit in [false, true] {
        let program = Arc::new(Program::from_elf(&object, None, &Helpers::linux(), &Config::default()).unwrap());
        // trace_cfg: capture on ifindex 1, 64 bytes, program index 3.
        let config: Vec<u8> = [1u32, 64, 3].iter().flat_map(|word| word.to_ne_bytes()).collect();
        program.map(".data").unwrap().update(&0u32.to_ne_bytes(), &config, 0).unwrap();
        let perf = program.map("xdpdump_perf_map").unwrap();
        for ingress_ifindex in [1, 2] {
            let mut buffer = Buffer::new(&frame, &[], RxInfo { ingress_ifindex, rx_queue_index: 0 }).unwrap();
            let retval = run_in_engine(&program, jit, &mut buffer);
            assert_eq!(retval.unwrap(), 2, "XDP_PASS");
        }
        let mut expected: Vec<u8> = [1u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
        for half in [frame.len() as u16, 64, 0, 3] {
            expected.extend(half.to_ne_bytes());
        }
        expected.extend(0u32.to_ne_bytes());
        expected.extend(&frame[..64]);
        assert_eq!(perf.ringbuf_next().unwrap().map(|record| to_hex(&record)), Some(to_hex(&expected)), "jit: {jit}");
        assert_eq!(perf.ringbuf_next(), Ok(None), "ifindex 2 is not captured (jit: {jit})");
    }
}

/// Loads assembly as an XDP program.
fn load_xdp(source: &str) -> Arc<Program> {
    use qemu_ubpf::asm::assemble;
    let config = Config { program_type: Some(qemu_ubpf::ProgramType::Xdp), ..Config::default() };
    let bytecode: Vec<u8> = assemble(source).unwrap().iter().flat_map(|insn| insn.encode()).collect();
    Arc::new(Program::load(&bytecode, &Helpers::linux(), &config).unwrap())
}

/// A buffer as a C caller of the native entry lays it out (see `struct
/// ubpf_xdp_context`): the block, then the page with `frame` after the
/// headroom; the block's `data`, `data_end` and `data_meta` are `pointers`,
/// relative to the page's start.
fn caller_buffer(frame: &[u8], pointers: [i64; 3]) -> Vec<u8> {
    use qemu_ubpf::image::xdp_context;
    use qemu_ubpf::xdp::{HEADROOM, INPUT_LEN};
    let mut buffer = vec![0u8; INPUT_LEN];
    let page = buffer.as_ptr() as u64 + xdp_context::SIZE as u64;
    for (off, pointer) in [xdp_context::DATA, xdp_context::DATA_END, xdp_context::DATA_META].into_iter().zip(pointers) {
        let at = off as usize;
        buffer[at..at + 8].copy_from_slice(&page.wrapping_add(pointer as u64).to_ne_bytes());
    }
    let data = xdp_context::SIZE + HEADROOM;
    buffer[data..data + frame.len()].copy_from_slice(frame);
    buffer
}

/// Runs `program` over a caller's `buffer` in both engines, one after the
/// other in place (the block's pointers are addresses in it), for a program
/// that writes no memory there: the same result from each, which is
/// returned.
fn run_both(program: &Arc<Program>, buffer: &mut [u8], what: &str) -> Result<u64, ExecError> {
    let compiled = JitProgram::compile(program.clone()).unwrap();
    let interpreted = interp::execute(program, buffer);
    assert_eq!(compiled.execute(buffer), interpreted, "{what}: the JIT as the interpreter");
    interpreted
}

/// The context block is not memory the program may access: only its
/// context loads read it, through the block's own address. So a store
/// through a packet pointer cannot change the packet pointers the block
/// holds (the kernel's verifier refuses such a store; here it faults), and
/// the JIT trusts them to prove the accesses they guard. A caller's block
/// (the native entry's) is checked on entry instead: its packet pointers
/// the program loads must lie in the page, its end included. The same in
/// both engines.
#[test]
fn only_context_loads_reach_the_context_block_which_is_checked_on_entry() {
    use qemu_ubpf::ExecErrorKind;
    use qemu_ubpf::image::xdp_context;
    use qemu_ubpf::xdp::{HEADROOM, INPUT_LEN};
    let frame = hex(&recording_frame("ipv4_udp_dns"));
    // From `data`, back over the headroom to the block's `data_end`.
    let to_block = -(HEADROOM as i32) - xdp_context::SIZE as i32 + i32::from(xdp_context::DATA_END);
    let reaching = [
        (
            format!(
                "ldxw %r2, [%r1]
 mov %r3, 1
 stxdw [%r2{to_block}], %r3
 mov %r0, 2
 exit"
            ),
            2,
            true,
        ),
        (
            format!(
                "ldxw %r2, [%r1]
 ldxdw %r0, [%r2{to_block}]
 exit"
            ),
            1,
            false,
        ),
    ];
    for (source, pc, write) in reaching {
        let program = load_xdp(&source);
        for jit in [false, true] {
            let mut buffer = Buffer::new(&frame, &[], RxInfo::default()).unwrap();
            let error = run_in_engine(&program, jit, &mut buffer).expect_err(&source);
            assert_eq!(error.pc, pc, "{source} (jit: {jit})");
            assert!(
                matches!(error.kind, ExecErrorKind::OutOfBounds { write: w, size: 8, .. } if w == write),
                "{source}: {error}"
            );
        }
    }
    // A context load through what the load-time rewrite took for the
    // context (a spill it saw) but a store through another pointer
    // replaced: it faults rather than read elsewhere.
    let program = load_xdp(
        "stxdw [%r10-8], %r1
 mov %r2, %r10
 add %r2, -8
 stxdw [%r2], %r2
 ldxdw %r3, [%r10-8]
          ldxw %r0, [%r3+4]
 exit",
    );
    let mut buffer = caller_buffer(&frame, [HEADROOM as i64, (HEADROOM + frame.len()) as i64, HEADROOM as i64]);
    let error = run_both(&program, &mut buffer, "a spill overwritten").unwrap_err();
    assert_eq!(error.pc, 5);
    assert!(matches!(error.kind, ExecErrorKind::OutOfBounds { write: false, .. }), "{error}");

    // Caller's blocks. The program reads a byte through `data`, guarded by
    // `data_end`; it loads no `data_meta`.
    let program = load_xdp(
        "ldxw %r2, [%r1]
 ldxw %r3, [%r1+4]
 mov %r4, %r2
 add %r4, 1
 mov %r0, 0
 jgt %r4, %r3, +1
          ldxb %r0, [%r2]
 exit",
    );
    let page_len = (INPUT_LEN - xdp_context::SIZE) as i64;
    let (data, end) = (HEADROOM as i64, (HEADROOM + frame.len()) as i64);
    let sound = [[data, end, data], [data, page_len, -1], [page_len, page_len, 0], [0, 0, page_len + 1]];
    for pointers in sound {
        let expected = if pointers[0] < pointers[1] { u64::from(frame[0]) } else { 0 };
        assert_eq!(run_both(&program, &mut caller_buffer(&frame, pointers), "sound"), Ok(expected), "{pointers:?}");
    }
    for (pointers, bad) in
        [([-1, end, data], -1), ([data, page_len + 1, data], page_len + 1), ([data, -4096, 7], -4096)]
    {
        let mut buffer = caller_buffer(&frame, pointers);
        let value = (buffer.as_ptr() as u64 + xdp_context::SIZE as u64).wrapping_add(bad as u64);
        let error = run_both(&program, &mut buffer, "unsound").unwrap_err();
        assert_eq!((error.pc, error.kind), (0, ExecErrorKind::BadPacketPointer { value }), "{pointers:?}");
    }
    for len in [0, xdp_context::SIZE - 1] {
        let error = run_both(&program, &mut vec![0; len], "short").unwrap_err();
        assert_eq!((error.pc, error.kind), (0, ExecErrorKind::ShortContext { len: len as u64 }));
    }
}

/// The helpers that move the packet's bounds, and `bpf_redirect`, which the
/// JIT calls in their direct forms: at each limit and one past it both
/// engines give the kernel's answer (0, or -EINVAL, -EACCES) and leave the
/// same packet; a context block they refuse (r1 not the context, or a
/// caller's block with a packet pointer the program did not load, so not
/// checked on entry, outside the page) stops the run at the call with the
/// same error in both.
#[test]
fn xdp_helpers_move_the_bounds_to_their_limits_and_refuse_a_bad_block_in_both_engines() {
    use qemu_ubpf::ExecErrorKind;
    use qemu_ubpf::xdp::{ETH_HLEN, FRAME_RESERVED, HARD_END, HEADROOM};
    let load = load_xdp;
    let frame: Vec<u8> = (0..60).collect();
    let (len, (head, meta, tail)) = (frame.len() as i64, (44, 54, 65));
    let (einval, eacces) = (-22i64 as u64, -13i64 as u64);
    let room = (HEADROOM - FRAME_RESERVED) as i64;
    let shrink = len - ETH_HLEN as i64;
    let grow = (HARD_END - HEADROOM) as i64 - len;
    let cases = [
        (head, -room, 0),
        (head, -room - 1, einval),
        (head, shrink, 0),
        (head, shrink + 1, einval),
        (tail, -shrink, 0),
        (tail, -shrink - 1, einval),
        (tail, grow, 0),
        (tail, grow + 1, einval),
        (meta, -room, 0),
        (meta, -room - 1, einval),
        (meta, -2, eacces),
        (meta, 1, einval),
    ];
    for (helper, delta, expected) in cases {
        let program = load(&format!("mov %r2, {delta}\n call {helper}\n exit"));
        let mut outcomes = Vec::new();
        for jit in [false, true] {
            let mut buffer = Buffer::new(&frame, &[], RxInfo::default()).unwrap();
            let retval = run_in_engine(&program, jit, &mut buffer).unwrap();
            assert_eq!(retval, expected, "helper {helper}, delta {delta} (jit: {jit})");
            outcomes.push((buffer.packet().to_vec(), buffer.metadata().to_vec()));
        }
        assert_eq!(outcomes[0], outcomes[1], "helper {helper}, delta {delta}");
    }
    // Refused blocks: r1 past the context; a caller's `data_meta` before
    // the page, for bpf_xdp_adjust_tail and for bpf_redirect, which reads
    // the block without r1.
    let data = HEADROOM as i64;
    let end = data + len;
    let refused = [
        (format!("add %r1, 8\n call {head}\n exit"), [data, end, data], 1, "r1 is not the XDP context"),
        (format!("mov %r2, 4\n call {tail}\n exit"), [data, end, -8], 1, "unsound"),
        (String::from("mov %r1, 3\n mov %r2, 0\n call 23\n exit"), [data, end, -8], 2, "unsound"),
    ];
    for (source, pointers, pc, what) in refused {
        let program = load(&source);
        let error = run_both(&program, &mut caller_buffer(&frame, pointers), &source).expect_err(&source);
        assert_eq!(error.pc, pc, "{source}");
        assert!(
            matches!(&error.kind, ExecErrorKind::HelperArgument { what: said, .. } if said.contains(what)),
            "{source}: {error}"
        );
    }
}
