//! `qemu-ubpf replay` and `inspect` without outside tools: the committed
//! sample captures against their generator, outputs byte-identical to the
//! input, the verdict counts, both engines, faulting programs, and bad
//! captures (cut short, corrupt, empty, of an unknown link type). The
//! comparison with tcpdump and tshark is in tests/tcpdump.rs.

mod common;
use common::{example, is_interleaving, root, sample, scratch_dir};

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qemu_ubpf::replay::{CaptureReader, Engine, EngineKind, IpMode, Options, Outputs, Record, Replay, Verdict};
use qemu_ubpf::{Config, Helpers, Program, asm, isa};

#[path = "../examples/gen_captures.rs"]
#[allow(dead_code)]
mod gen_captures;

const EXAMPLES: [&str; 3] = ["drop_1_1_1_1", "firewall", "dns_blocklist"];

fn qemu_ubpf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `qemu-ubpf replay ARGS --json` and returns its summary.
fn replay_json(args: &[&str]) -> (serde_json::Value, Output) {
    let output = qemu_ubpf(&[&["replay"], args, &["--json"]].concat());
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&output.stdout), text(&output.stderr)));
    (json, output)
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes a raw-bytecode program assembled from `source`.
fn assembled(dir: &Path, name: &str, source: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, isa::encode_program(&asm::assemble(source).unwrap())).unwrap();
    file
}

fn sample_names() -> Vec<&'static str> {
    gen_captures::sample_captures().into_iter().map(|(name, _)| name).collect()
}

#[test]
fn committed_sample_captures_are_what_the_generator_makes() {
    for (name, bytes) in gen_captures::sample_captures() {
        let committed = std::fs::read(sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            committed == bytes,
            "examples/captures/{name} differs from the generator's; run cargo run --example gen_captures"
        );
    }
}

#[test]
fn a_filter_that_passes_everything_copies_each_capture_byte_for_byte() {
    let dir = scratch_dir("replay", "pass_all");
    let pass_all = assembled(&dir, "pass_all.bin", "mov r0, 0\nexit");
    for name in sample_names() {
        for ip_mode in ["on", "off"] {
            let out = dir.join(format!("{ip_mode}-{name}"));
            let (json, output) =
                replay_json(&[path(&pass_all), path(&sample(name)), "--ip-mode", ip_mode, "--pass", path(&out)]);
            assert!(output.status.success(), "{}", text(&output.stderr));
            assert_eq!(json["dropped"], 0);
            assert!(std::fs::read(&out).unwrap() == std::fs::read(sample(name)).unwrap(), "{name}, ip-mode {ip_mode}");
        }
    }
}

#[test]
fn outputs_hold_the_input_packets_even_when_the_program_writes_to_them() {
    let dir = scratch_dir("replay", "writes");
    // Overwrites the first 8 bytes it is given, then drops odd lengths.
    let scribble = assembled(&dir, "scribble.bin", "stdw [r1], -1\nmov r0, r2\nand r0, 1\nexit");
    for name in sample_names() {
        let (pass, drop) = (dir.join(format!("pass-{name}")), dir.join(format!("drop-{name}")));
        let (json, output) = replay_json(&[
            path(&scribble),
            path(&sample(name)),
            "--ip-mode",
            "off",
            "--on-error",
            "pass",
            "--pass",
            path(&pass),
            "--drop",
            path(&drop),
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(json["dropped"].as_u64().unwrap() > 0, "{name}: {json}");
        let records = |file: &Path| packet_records(&std::fs::read(file).unwrap());
        let (input, passed, dropped) = (records(&sample(name)), records(&pass), records(&drop));
        assert_eq!(passed.len() + dropped.len(), input.len(), "{name}");
        assert!(is_interleaving(&input, &passed, &dropped), "{name}: outputs are not the input's packets, unchanged");
    }
}

/// The raw records of every packet of a capture, with its reader.
fn packet_records(capture: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = CaptureReader::new(capture, "capture").unwrap();
    let mut records = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        if let Record::Packet(packet) = record {
            records.push(packet.record.to_vec());
        }
    }
    records
}

#[test]
fn summary_counts_add_up_and_both_engines_agree() {
    let dir = scratch_dir("replay", "engines");
    for name in sample_names() {
        for filter in EXAMPLES {
            let mut drops = Vec::new();
            let mut summaries = Vec::new();
            for engine in ["jit", "interp"] {
                let drop = dir.join(format!("{engine}-{filter}-{name}"));
                let (json, output) = replay_json(&[
                    path(&example(filter)),
                    path(&sample(name)),
                    "--engine",
                    engine,
                    "--drop",
                    path(&drop),
                ]);
                assert!(output.status.success(), "{}", text(&output.stderr));
                let count = |key: &str| json[key].as_u64().unwrap();
                assert_eq!(count("passed") + count("dropped"), count("packets"), "{json}");
                assert!(count("skipped") <= count("passed") && count("dropped") > 0, "{json}");
                assert_eq!(count("errors"), 0, "the examples check every length: {json}");
                assert_eq!(json["engine"], engine);
                drops.push(std::fs::read(&drop).unwrap());
                summaries.push(["packets", "passed", "dropped", "skipped", "bytes"].map(count));
            }
            assert_eq!(summaries[0], summaries[1], "{filter} over {name}");
            assert!(drops[0] == drops[1], "{filter} over {name}: the engines drop different packets");
        }
    }
}

#[test]
fn ip_mode_on_shows_the_program_the_ipv4_packet_and_skips_the_rest() {
    let dir = scratch_dir("replay", "ip_mode");
    // Drops what does not start with IP version 4 (and passes empty input).
    let not_ipv4 = assembled(
        &dir,
        "not_ipv4.bin",
        "mov r0, 0\njlt r2, 1, +4\nldxb r3, [r1]\nrsh r3, 4\njeq r3, 4, +1\nmov r0, 1\nexit",
    );
    for name in sample_names() {
        let (json, _) = replay_json(&[path(&not_ipv4), path(&sample(name))]);
        assert_eq!(json["dropped"], 0, "{name}: {json}");
        assert!(json["skipped"].as_u64().unwrap() > 0, "{name}: the IPv6, ARP and LLDP packets are skipped");
        let (json, _) = replay_json(&[path(&not_ipv4), path(&sample(name)), "--ip-mode", "off"]);
        assert_eq!(json["skipped"], 0, "{name}");
        assert!(json["dropped"].as_u64().unwrap() > 0, "{name}: link-layer headers are seen");
    }
}

#[test]
fn a_faulting_program_counts_errors_and_follows_on_error() {
    let dir = scratch_dir("replay", "faults");
    // Reads byte 40 whatever the length: faults on shorter packets.
    let reader = assembled(&dir, "byte40.bin", "ldxb r0, [r1+40]\nmov r0, 0\nexit");
    let capture = sample("ethernet.pcap");
    let (dropping, output) = replay_json(&[path(&reader), path(&capture)]);
    assert!(output.status.success());
    let errors = dropping["errors"].as_u64().unwrap();
    assert!(errors > 0);
    assert_eq!(dropping["dropped"].as_u64().unwrap(), errors);
    assert!(dropping["first_error"]["message"].as_str().unwrap().contains("outside"), "{dropping}");
    let (passing, _) = replay_json(&[path(&reader), path(&capture), "--on-error", "pass"]);
    assert_eq!((passing["errors"].as_u64().unwrap(), passing["dropped"].as_u64().unwrap()), (errors, 0));

    let first = dropping["first_error"]["packet"].as_u64().unwrap();
    let bytes = std::fs::read(&capture).unwrap();
    let mut capture_reader = CaptureReader::new(&bytes[..], "ethernet.pcap").unwrap();
    let offset = loop {
        if let Some(Record::Packet(packet)) = capture_reader.next_record().unwrap()
            && packet.number == first
        {
            break packet.offset;
        }
    };
    assert_eq!(dropping["first_error"]["offset"], offset);
    let output = qemu_ubpf(&["replay", path(&reader), path(&capture), "--engine", "interp"]);
    let stdout = text(&output.stdout);
    let expected = format!("first error: packet {first} at byte offset {offset}: instruction 0 (ldxb %r0, [%r1+40])");
    assert!(stdout.contains(&expected), "{stdout}");
}

/// Replays `capture` with the RFC filter, writing both outputs; returns the
/// process output and the outputs' bytes.
fn replay_files(dir: &Path, capture: &Path) -> (Output, Vec<u8>, Vec<u8>) {
    let (pass, drop) = (dir.join("pass"), dir.join("drop"));
    let output = qemu_ubpf(&[
        "replay",
        path(&example("drop_1_1_1_1")),
        path(capture),
        "--pass",
        path(&pass),
        "--drop",
        path(&drop),
    ]);
    (output, std::fs::read(pass).unwrap_or_default(), std::fs::read(drop).unwrap_or_default())
}

#[test]
fn a_truncated_capture_is_an_error_after_everything_before_it_is_written() {
    let dir = scratch_dir("replay", "truncated");
    for name in sample_names() {
        let whole = std::fs::read(sample(name)).unwrap();
        let records = packet_records(&whole);
        // Cut inside the 11th packet's record, 5 bytes into it.
        let mut reader = CaptureReader::new(&whole[..], name).unwrap();
        let offset = loop {
            match reader.next_record().unwrap().unwrap() {
                Record::Packet(packet) if packet.number == 11 => break packet.offset,
                _ => {}
            }
        };
        let cut = dir.join(name);
        std::fs::write(&cut, &whole[..offset as usize + 5]).unwrap();
        let (output, pass, drop) = replay_files(&dir, &cut);
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        assert!(stderr.contains(&format!("packet 11 at byte offset {offset}: truncated")), "{name}: {stderr}");
        assert!(text(&output.stdout).contains("packets             10"), "{}", text(&output.stdout));
        let (passed, dropped) = (packet_records(&pass), packet_records(&drop));
        assert!(
            is_interleaving(&records[..10], &passed, &dropped),
            "{name}: the first ten packets are not all written"
        );
    }
}

#[test]
fn a_corrupt_record_is_an_error_naming_packet_and_offset() {
    let dir = scratch_dir("replay", "corrupt");
    let mut pcap = std::fs::read(sample("ethernet.pcap")).unwrap();
    // The third record's captured length: 24 + two records on.
    let third = 24 + packet_records(&pcap)[..2].iter().map(Vec::len).sum::<usize>();
    pcap[third + 8..third + 12].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let file = dir.join("bad-length.pcap");
    std::fs::write(&file, &pcap).unwrap();
    let (output, _, _) = replay_files(&dir, &file);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("packet 3 at byte offset {third}: corrupt record: captured length 2147418112")),
        "{stderr}"
    );

    let mut pcapng = std::fs::read(sample("multi-interface.pcapng")).unwrap();
    // The section header's trailing length, made to disagree with its leading one.
    let shb_len = u32::from_le_bytes(pcapng[4..8].try_into().unwrap()) as usize;
    pcapng[shb_len - 4] ^= 0x40;
    let file = dir.join("bad-trailer.pcapng");
    std::fs::write(&file, &pcapng).unwrap();
    let (output, _, _) = replay_files(&dir, &file);
    assert!(text(&output.stderr).contains("packet 1 at byte offset 0: corrupt block"), "{}", text(&output.stderr));
}

#[test]
fn an_empty_capture_is_fine_and_an_empty_file_is_not() {
    let dir = scratch_dir("replay", "empty");
    for name in ["ethernet.pcap", "multi-interface.pcapng"] {
        let whole = std::fs::read(sample(name)).unwrap();
        let header_len =
            if name.ends_with("ng") { u32::from_le_bytes(whole[4..8].try_into().unwrap()) as usize } else { 24 };
        let empty = dir.join(name);
        std::fs::write(&empty, &whole[..header_len]).unwrap();
        let (output, pass, drop) = replay_files(&dir, &empty);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(pass == whole[..header_len] && drop == whole[..header_len]);
    }
    let nothing = dir.join("nothing.pcap");
    std::fs::write(&nothing, b"").unwrap();
    let output = qemu_ubpf(&["replay", path(&example("drop_1_1_1_1")), path(&nothing)]);
    assert!(text(&output.stderr).contains("nothing.pcap: not a pcap or pcapng capture: the file is empty"));
    let text_file = dir.join("notes.txt");
    std::fs::write(&text_file, b"hello, world").unwrap();
    let output = qemu_ubpf(&["replay", path(&example("drop_1_1_1_1")), path(&text_file)]);
    assert!(text(&output.stderr).contains("it starts with 68 65 6c 6c"), "{}", text(&output.stderr));
}

#[test]
fn an_unsupported_link_type_is_named_unless_ip_mode_is_off() {
    let dir = scratch_dir("replay", "link_type");
    let mut pcap = std::fs::read(sample("raw-ip.pcap")).unwrap();
    pcap[20..24].copy_from_slice(&147u32.to_le_bytes());
    let user0 = dir.join("user0.pcap");
    std::fs::write(&user0, &pcap).unwrap();
    let output = qemu_ubpf(&["replay", path(&example("drop_1_1_1_1")), path(&user0)]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("user0.pcap: packet 1 at byte offset 24: link type 147 (USER0) is not supported"),
        "{stderr}"
    );
    let (json, output) = replay_json(&[path(&example("drop_1_1_1_1")), path(&user0), "--ip-mode", "off"]);
    assert!(output.status.success());
    assert_eq!(json["dropped"], 9, "the raw-IP packets are the frames: {json}");
}

#[test]
fn outputs_never_overwrite_the_capture() {
    let capture = sample("ethernet.pcap");
    let output = qemu_ubpf(&["replay", path(&example("firewall")), path(&capture), "--drop", path(&capture)]);
    assert!(text(&output.stderr).contains("would overwrite the capture"), "{}", text(&output.stderr));
    let output =
        qemu_ubpf(&["replay", path(&example("firewall")), path(&capture), "--pass", "/tmp/x", "--drop", "/tmp/x"]);
    assert!(text(&output.stderr).contains("--pass and --drop both name /tmp/x"));
}

#[test]
fn with_no_arguments_replay_runs_the_bundled_example_and_explains_it() {
    let output = qemu_ubpf(&["replay"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    for expected in [
        "examples/drop_1_1_1_1.o: the QEMU RFC's example, which drops IPv4 packets sent to 1.1.1.1",
        "examples/captures/ethernet.pcap: sample traffic",
        "a non-zero return value drops it, zero passes it",
        "packets             76",
        "dropped             13",
        "qemu-ubpf replay FILTER.o CAPTURE.pcap",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
}

#[test]
fn replay_picks_a_program_by_name() {
    let (json, output) = replay_json(&[
        path(&example("classifier")),
        path(&sample("ethernet.pcap")),
        "--program",
        "filter",
        "--ip-mode",
        "off",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(json["dropped"].as_u64().unwrap() > 0);
    let output =
        qemu_ubpf(&["replay", path(&example("classifier")), path(&sample("ethernet.pcap")), "--program", "nope"]);
    assert!(text(&output.stderr).contains("no function or section named \"nope\""), "{}", text(&output.stderr));
}

#[test]
fn inspect_lists_functions_data_and_relocations() {
    let output = qemu_ubpf(&["inspect", path(&example("calls_rodata"))]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    for expected in ["* filter", "port_is_blocked", ".rodata", "read-only", ".bss", "R_BPF_64_64", "relocations:"] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    let output = qemu_ubpf(&["inspect", path(&root().join("tests/fixtures/helpers.o"))]);
    assert!(text(&output.stdout).contains("helper calls:"), "{}", text(&output.stdout));
}

fn engine(filter: &str, kind: EngineKind) -> Engine {
    let object = std::fs::read(example(filter)).unwrap();
    Engine::new(Program::from_elf(&object, None, &Helpers::new(), &Config::default()).unwrap(), kind).unwrap()
}

/// Mutated captures: every outcome is a summary or an error, never a panic.
#[test]
fn corrupted_captures_never_panic() {
    let engine = engine("dns_blocklist", EngineKind::Interpreter);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (name, bytes) in gen_captures::sample_captures() {
        for _ in 0..300 {
            let mut bytes = bytes.clone();
            for _ in 0..1 + random() % 4 {
                let at = (random() % bytes.len() as u64) as usize;
                bytes[at] = random() as u8;
            }
            bytes.truncate(bytes.len() - (random() % 64) as usize);
            let Ok(mut reader) = CaptureReader::new(&bytes[..], name) else { continue };
            let mut outputs = Outputs {
                pass: None,
                drop: Some(qemu_ubpf::replay::CaptureWriter::new(Cursor::new(Vec::new()), "drop")),
            };
            let options = Options { ip_mode: IpMode::On, on_error: Verdict::Drop };
            let _ = Replay::new(&engine, options).run(&mut reader, &mut outputs, &mut |_| {});
        }
    }
}

#[test]
fn the_library_replays_from_memory() {
    let engine = engine("firewall", EngineKind::Jit);
    let capture = std::fs::read(sample("linux-sll2.pcap")).unwrap();
    let mut reader = CaptureReader::new(&capture[..], "linux-sll2.pcap").unwrap();
    let mut outputs = Outputs::<Vec<u8>>::none();
    let mut progress = Vec::new();
    let mut replay = Replay::new(&engine, Options::default());
    replay.run(&mut reader, &mut outputs, &mut |offset| progress.push(offset)).unwrap();
    let summary = replay.summary();
    assert_eq!((summary.packets, summary.dropped, summary.skipped, summary.errors), (49, 7, 7, 0));
    assert_eq!(progress.last(), Some(&(capture.len() as u64)));
}
