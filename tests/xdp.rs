//! XDP programs against the Linux kernel's recorded answers
//! (`tests/kernel/xdp.json`, see `tests/kernel/README.md`): every recorded
//! (program, frame, context) runs in both engines and must give the
//! kernel's return value, output bytes, context and map contents; every
//! recorded refusal must be a refusal at the same instruction. Records that
//! need something not supported are skipped by reason, and the count of
//! each is fixed here, so the test fails when it skips more (or less) than
//! it says.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use qemu_ubpf::error::{ElfError, LoadErrorKind};
use qemu_ubpf::jit::JitProgram;
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
}

/// How many records each reason skips: a change here is a change in what
/// is supported.
fn expected_skips() -> BTreeMap<Skip, usize> {
    BTreeMap::from([
        (Skip::MapType("devmap".into()), 221),
        (Skip::MapType("percpu_array".into()), 320),
        (Skip::MapType("percpu_hash".into()), 96),
        (Skip::MapType("perf_event_array".into()), 16),
        (Skip::MapType("xskmap".into()), 32),
        (Skip::MultiBuffer, 17),
        (Skip::RecorderDevice, 2),
        (Skip::PacketRangeAtLoad, 2),
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

/// A map's contents as the recording writes them.
fn dump(map: &Map) -> Value {
    let array = map.map_type().name() == "array";
    let mut entries = Vec::new();
    for key in map.keys() {
        let Ok(Some(value)) = map.lookup(&key) else { continue };
        if array && value.iter().all(|&byte| byte == 0) {
            continue;
        }
        entries.push(json!({"key": to_hex(&key), "value": to_hex(&value)}));
    }
    json!(entries)
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
}

fn run_once(object: &[u8], record: &Value, recording: &Value, setup: &[Value], jit: bool) -> Outcome {
    let name = record["program"].as_str().unwrap();
    let program = Program::from_elf(object, Some(name), &Helpers::linux(), &Config::default()).unwrap();
    for entry in setup {
        let map = our_map(&program, entry["map"].as_str().unwrap()).unwrap();
        map.update(&hex(entry["key"].as_str().unwrap()), &hex(entry["value"].as_str().unwrap()), 0).unwrap();
    }
    let before: BTreeMap<String, Value> = program.maps().iter().map(|map| (map.name().to_owned(), dump(map))).collect();
    let context = &recording["contexts"][record["ctx"].as_str().unwrap()];
    let frame = hex(recording["frames"][record["frame"].as_str().unwrap()].as_str().unwrap());
    let meta = hex(context["meta"].as_str().unwrap());
    let rx = rx_info(&context["ctx_in"]).unwrap();
    let mut buffer = Buffer::new(&frame, &meta, rx).unwrap();
    let program = Arc::new(program);
    let retval = if jit {
        let compiled = JitProgram::compile(program.clone()).unwrap();
        buffer.run(|input| compiled.execute(input))
    } else {
        buffer.run(|input| interp::execute(&program, input))
    };
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
    Outcome { retval: retval.map_err(|error| error.to_string()), data_out: buffer.data_out().to_vec(), ctx_out, maps }
}

/// Checks one run record; returns why it is skipped, if it is.
fn check_run(record: &Value, recording: &Value, objects: &HashMap<String, (Vec<u8>, Vec<Value>)>) -> Option<Skip> {
    let what = format!("{} {} {} {}", record["object"], record["program"], record["frame"], record["ctx"]);
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
        let expected_maps: BTreeMap<String, Value> = record["maps_changed"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, map)| (name.clone(), map["entries"].clone()))
            .collect();
        let ours: BTreeMap<String, Value> = outcome
            .maps
            .into_iter()
            .map(|(name, entries)| {
                let recorded = expected_maps.keys().find(|recorded| recorded.ends_with(&name)).cloned();
                (recorded.unwrap_or(name), entries)
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
    let mut skips: BTreeMap<Skip, usize> = BTreeMap::new();
    let mut objects = HashMap::new();
    let mut unloadable: HashMap<String, Skip> = HashMap::new();
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
        let skip = match unloadable.get(object) {
            Some(skip) => Some(skip.clone()),
            None => check_run(record, &recording, &objects),
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
    assert_eq!(skips, expected_skips(), "what is skipped");
}
