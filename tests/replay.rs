//! `qemu-ubpf replay` and `inspect`: the committed sample captures against
//! their generator, outputs byte-identical to the input, the verdict
//! counts, both engines, faulting programs, bad captures (cut short,
//! corrupt, empty, of an unknown link type), and the map examples with
//! their map contents, all without outside tools; XDP programs' outputs
//! against the kernel's recorded answers (tests/kernel/xdp.json), and read
//! back with tcpdump and tshark. The comparison of filters with tcpdump and
//! tshark is in tests/tcpdump.rs.

mod common;
use common::{example, is_interleaving, root, sample, scratch_dir};

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qemu_ubpf::replay::{
    CaptureReader, Engine, EngineKind, IpMode, Options, OutputFile, Outputs, Record, Replay, Verdict,
};
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

/// A fixed pseudo-random sequence (xorshift64) from `seed`, so that a
/// failing case reruns as it was.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Mutated captures: every outcome is a summary or an error, never a panic.
#[test]
fn corrupted_captures_never_panic() {
    let engine = engine("dns_blocklist", EngineKind::Interpreter);
    let mut random = xorshift(0x2545_f491_4f6c_dd1d);
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
                drop: Some(qemu_ubpf::replay::CaptureWriter::new(Cursor::new(Vec::new()), "drop")),
                ..Outputs::none()
            };
            let options = Options { ip_mode: IpMode::On, on_error: Verdict::Drop };
            let _ = Replay::new(&engine, options).run(&mut reader, &mut outputs, &mut |_| {});
        }
    }
}

/// Every record of a capture as its reader gives it, then how it ends.
fn read_all<R: std::io::Read>(mut reader: CaptureReader<R>) -> (Vec<String>, String) {
    let mut records = Vec::new();
    loop {
        match reader.next_record() {
            Ok(None) => return (records, "end".into()),
            Err(error) => return (records, error.to_string()),
            Ok(Some(Record::Metadata(bytes))) => records.push(format!("metadata {bytes:?}")),
            Ok(Some(Record::Packet(p))) => records.push(format!(
                "packet {} at {}: link type {}, time {}, data {:?}, record {:?}",
                p.number, p.offset, p.link_type, p.timestamp_ns, p.data, p.record
            )),
        }
    }
}

/// Reads a few bytes at a time, as a pipe may give them.
struct Trickle<'a> {
    bytes: &'a [u8],
    next: Box<dyn FnMut() -> u64 + 'a>,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let len = ((self.next)() % 300 + 1).min(out.len() as u64) as usize;
        let len = len.min(self.bytes.len());
        out[..len].copy_from_slice(&self.bytes[..len]);
        self.bytes = &self.bytes[len..];
        Ok(len)
    }
}

/// The reader's buffer is refilled however the reads cut the records: a
/// capture read a few bytes at a time gives the records and the error that
/// it gives read at once, whole or cut short or corrupt.
#[test]
fn a_capture_read_in_pieces_reads_as_a_whole_one() {
    let mut random = xorshift(0x9e37_79b9_7f4a_7c15);
    for (name, whole) in gen_captures::sample_captures() {
        for round in 0..40 {
            let mut bytes = whole.clone();
            if round > 0 {
                let at = (random() % bytes.len() as u64) as usize;
                bytes[at] = random() as u8;
                bytes.truncate(bytes.len() - (random() % 64) as usize);
            }
            let at_once = CaptureReader::new(&bytes[..], name).map(read_all).map_err(|e| e.to_string());
            let seed = random() | 1;
            let trickle = Trickle { bytes: &bytes, next: Box::new(xorshift(seed)) };
            let in_pieces = CaptureReader::new(trickle, name).map(read_all).map_err(|e| e.to_string());
            assert!(at_once == in_pieces, "{name}, round {round}: {at_once:?}\n{in_pieces:?}");
        }
    }
}

/// However the reads cut a capture into the reader's buffer, each packet is
/// written, unchanged and in order, where its verdict sends it, the summary
/// counts it, and the first fault named is the first packet's that faults:
/// a filter whose verdicts and faults follow from the bytes, in both
/// engines (in place and on a copy), either verdict for faults.
#[test]
fn each_packet_goes_where_its_verdict_sends_it_however_the_capture_is_read() {
    // Drops a frame whose byte 60 is odd, and faults on a shorter one.
    let bytecode = isa::encode_program(&asm::assemble("ldxb r0, [r1+60]\nand r0, 1\nexit").unwrap());
    let mut random = xorshift(0x5851_f42d_4c95_7f2d);
    let (mut drops, mut faults) = (0, 0);
    for kind in [EngineKind::Jit, EngineKind::Interpreter] {
        let engine = Engine::new(Program::load(&bytecode, &Helpers::new(), &Config::default()).unwrap(), kind).unwrap();
        for (name, whole) in gen_captures::sample_captures() {
            for on_error in [Verdict::Pass, Verdict::Drop] {
                let (mut passed, mut dropped, mut first_fault, mut bytes) = (Vec::new(), Vec::new(), None, 0);
                let mut reader = CaptureReader::new(&whole[..], name).unwrap();
                while let Some(record) = reader.next_record().unwrap() {
                    let Record::Packet(packet) = record else { continue };
                    bytes += packet.data.len() as u64;
                    let verdict = match packet.data.get(60) {
                        Some(byte) if byte & 1 == 1 => Verdict::Drop,
                        Some(_) => Verdict::Pass,
                        None => {
                            first_fault.get_or_insert((packet.number, packet.offset));
                            faults += 1;
                            on_error
                        }
                    };
                    match verdict {
                        Verdict::Pass => passed.push(packet.record.to_vec()),
                        Verdict::Drop => dropped.push(packet.record.to_vec()),
                    }
                }
                drops += dropped.len();
                for round in 0..6 {
                    let (mut pass_out, mut drop_out) = (Vec::new(), Vec::new());
                    let mut outputs = Outputs {
                        pass: Some(qemu_ubpf::replay::CaptureWriter::new(&mut pass_out, "pass")),
                        drop: Some(qemu_ubpf::replay::CaptureWriter::new(&mut drop_out, "drop")),
                        ..Outputs::none()
                    };
                    let options = Options { ip_mode: IpMode::Off, on_error };
                    let mut replay = Replay::new(&engine, options);
                    let at_once: Box<dyn std::io::Read> = Box::new(&whole[..]);
                    let seed = random() | 1;
                    let source = if round == 0 {
                        at_once
                    } else {
                        Box::new(Trickle { bytes: &whole, next: Box::new(xorshift(seed)) })
                    };
                    let mut reader = CaptureReader::new(source, name).unwrap();
                    replay.run(&mut reader, &mut outputs, &mut |_| {}).unwrap();
                    drop(outputs);
                    let case = format!("{name}, {kind:?}, on-error {on_error:?}, round {round}");
                    let summary = replay.summary();
                    let counts = (summary.packets, summary.passed, summary.dropped, summary.bytes);
                    let total = (passed.len() + dropped.len()) as u64;
                    assert_eq!(counts, (total, passed.len() as u64, dropped.len() as u64, bytes), "{case}");
                    let fault = summary.first_error.as_ref().map(|fault| (fault.packet, fault.offset));
                    assert_eq!(fault, first_fault, "{case}");
                    assert!(packet_records(&pass_out) == passed, "{case}: the passed packets");
                    assert!(packet_records(&drop_out) == dropped, "{case}: the dropped packets");
                }
            }
        }
    }
    assert!(drops > 0 && faults > 0, "the captures give the filter both verdicts and faults");
}

/// A capture read from a pipe replays as the same file does.
#[test]
fn a_capture_from_a_pipe_replays() {
    use std::io::Write;
    use std::process::Stdio;
    let capture = std::fs::read(sample("ethernet.pcap")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf"))
        .args(["replay", path(&example("drop_1_1_1_1")), "/dev/stdin", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&capture).unwrap();
    let output = child.wait_with_output().unwrap();
    let (json, _) = replay_json(&[path(&example("drop_1_1_1_1")), path(&sample("ethernet.pcap"))]);
    let piped: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(output.status.success());
    for count in ["packets", "passed", "dropped", "skipped", "bytes"] {
        assert_eq!(piped[count], json[count], "{count}");
    }
}

/// An output file holds what was written, and after the flush no blocks
/// past its end (on ext4 they are allocated ahead of the writes).
#[cfg(unix)]
#[test]
fn an_output_file_keeps_no_blocks_past_its_end() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    let path = scratch_dir("replay", "output_file").join("out.pcap");
    let mut out = OutputFile::new(std::fs::File::create(&path).unwrap());
    let bytes: Vec<u8> = (0..10_000_003u32).map(|i| (i % 251) as u8).collect();
    for piece in bytes.chunks(65_537) {
        out.write_all(piece).unwrap();
    }
    out.flush().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(allocated < bytes.len() as u64 + (1 << 20), "{allocated} bytes allocated for {}", bytes.len());
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

/// The map examples (examples/*.c with libbpf headers) through
/// `qemu-ubpf replay --maps`, in both engines: the packets each drops, and
/// what its maps hold afterwards. The captures are raw-IPv4 pcaps written
/// here, with timestamps the SYN limiter's clock follows.
mod map_examples {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use serde_json::Value;

    use super::{example, scratch_dir};

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;

    /// An IPv4 packet: a 20-byte header then `payload`.
    fn ip(protocol: u8, source: [u8; 4], destination: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut packet = vec![0x45, 0];
        packet.extend(total.to_be_bytes());
        packet.extend([0, 1, 0, 0, 64, protocol, 0, 0]);
        packet.extend(source);
        packet.extend(destination);
        packet.extend(payload);
        packet
    }

    fn tcp(source: [u8; 4], destination: [u8; 4], port: u16, flags: u8) -> Vec<u8> {
        let mut header = vec![0x9c, 0x40];
        header.extend(port.to_be_bytes());
        header.extend([0; 8]);
        header.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        ip(TCP, source, destination, &header)
    }

    fn udp(source: [u8; 4], destination: [u8; 4], port: u16) -> Vec<u8> {
        let mut header = vec![0x9c, 0x40];
        header.extend(port.to_be_bytes());
        header.extend([0, 8, 0, 0]);
        ip(UDP, source, destination, &header)
    }

    fn icmp(source: [u8; 4], destination: [u8; 4], kind: u8) -> Vec<u8> {
        ip(ICMP, source, destination, &[kind, 0, 0, 0, 0, 1, 0, 1])
    }

    /// A pcap (microseconds, link type raw IPv4) of `packets` at their times
    /// (microseconds).
    fn pcap(packets: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut file = Vec::new();
        file.extend(0xa1b2_c3d4u32.to_le_bytes());
        file.extend(2u16.to_le_bytes());
        file.extend(4u16.to_le_bytes());
        file.extend([0; 8]);
        file.extend(65535u32.to_le_bytes());
        file.extend(228u32.to_le_bytes()); // LINKTYPE_IPV4
        for (micros, packet) in packets {
            file.extend(((micros / 1_000_000) as u32).to_le_bytes());
            file.extend(((micros % 1_000_000) as u32).to_le_bytes());
            file.extend((packet.len() as u32).to_le_bytes());
            file.extend((packet.len() as u32).to_le_bytes());
            file.extend(packet);
        }
        file
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Two u64 in host order, as a value's hex.
    fn pair(a: u64, b: u64) -> String {
        hex(&[a.to_ne_bytes(), b.to_ne_bytes()].concat())
    }

    /// What a replay did: the packets it dropped (their indices), its summary.
    struct Outcome {
        dropped: Vec<usize>,
        json: Value,
    }

    impl Outcome {
        fn map(&self, name: &str) -> &Value {
            let maps = self.json["maps"].as_array().expect("--maps gives maps");
            maps.iter().find(|map| map["name"] == name).unwrap_or_else(|| panic!("no map {name} in {maps:?}"))
        }

        /// A map's entries as (key, value) hex pairs.
        fn entries(&self, name: &str) -> Vec<(String, String)> {
            let entries = self.map(name)["entries"].as_array().expect("entries").clone();
            entries
                .iter()
                .map(|entry| (entry["key"].as_str().unwrap().into(), entry["value"].as_str().unwrap().into()))
                .collect()
        }
    }

    /// Replays `packets` through example `name` in both engines, which must
    /// agree on the dropped packets and the maps; `extra` are more arguments.
    fn replay(test: &str, name: &str, packets: &[(u64, Vec<u8>)], extra: &[&str]) -> Outcome {
        let dir = scratch_dir("replay", &format!("map_{test}"));
        let capture = dir.join("in.pcap");
        std::fs::write(&capture, pcap(packets)).unwrap();
        let mut outcomes = Vec::new();
        for engine in ["jit", "interp"] {
            let drop = dir.join(format!("drop-{engine}.pcap"));
            let object = example(name);
            let args = [
                &[
                    "replay",
                    path(&object),
                    path(&capture),
                    "--engine",
                    engine,
                    "--maps",
                    "--json",
                    "--drop",
                    path(&drop),
                ],
                extra,
            ]
            .concat();
            let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{name} ({engine}): {stderr}");
            let json: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(json["errors"], 0, "{name} ({engine}): {json}");
            outcomes.push(Outcome { dropped: dropped(&drop, packets), json });
        }
        let (jit, interp) = (&outcomes[0], &outcomes[1]);
        assert_eq!(jit.dropped, interp.dropped, "{name}: dropped packets");
        assert_eq!(jit.json["maps"], interp.json["maps"], "{name}: maps");
        outcomes.pop().unwrap()
    }

    fn path(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    /// Which of `packets` (each at its own time) the drop output holds, by
    /// index.
    fn dropped(file: &PathBuf, packets: &[(u64, Vec<u8>)]) -> Vec<usize> {
        let bytes = std::fs::read(file).unwrap();
        let word = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
        let mut at = 24;
        let mut indices = Vec::new();
        while at < bytes.len() {
            let micros = word(at) * 1_000_000 + word(at + 4);
            let len = word(at + 8) as usize;
            let data = &bytes[at + 16..at + 16 + len];
            let index = packets.iter().position(|(time, packet)| *time == micros && packet == data);
            indices.push(index.expect("a packet of the input"));
            at += 16 + len;
        }
        indices
    }

    const A: [u8; 4] = [192, 0, 2, 1];
    const B: [u8; 4] = [198, 51, 100, 7];
    const SERVER: [u8; 4] = [10, 0, 0, 1];

    fn at_ms(packets: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        packets.into_iter().enumerate().map(|(index, packet)| (index as u64 * 1000, packet)).collect()
    }

    #[test]
    fn protocol_counters_count_packets_and_bytes() {
        let packets = at_ms(vec![
            tcp(A, SERVER, 80, ACK),
            tcp(A, SERVER, 80, ACK),
            tcp(B, SERVER, 443, SYN),
            udp(A, SERVER, 53),
            udp(B, SERVER, 53),
            icmp(A, SERVER, 8),
        ]);
        let outcome = replay("counters", "proto_counters", &packets, &[]);
        assert!(outcome.dropped.is_empty());
        let key = |protocol: u32| hex(&protocol.to_ne_bytes());
        assert_eq!(
            outcome.entries("counters"),
            [(key(1), pair(1, 28)), (key(6), pair(3, 120)), (key(17), pair(2, 56))],
            "only the non-zero counters, by protocol"
        );
    }

    #[test]
    fn top_talkers_sum_per_source() {
        let mut packets = vec![udp(A, SERVER, 53); 3];
        packets.push(tcp(B, SERVER, 22, SYN));
        packets.push(udp(SERVER, A, 5353));
        let outcome = replay("talkers", "top_talkers", &at_ms(packets), &[]);
        assert!(outcome.dropped.is_empty());
        let mut expected = vec![(hex(&A), pair(3, 84)), (hex(&B), pair(1, 40)), (hex(&SERVER), pair(1, 28))];
        expected.sort();
        assert_eq!(outcome.entries("talkers"), expected);
        assert_eq!(outcome.map("talkers")["type"], "lru_hash");
    }

    #[test]
    fn prefix_blocklist_filled_from_the_host() {
        let dir = scratch_dir("replay", "map_blocklist_init");
        let init = dir.join("blocklist.json");
        std::fs::write(
            &init,
            r#"{"blocklist": [
                {"key": "10.0.0.0/8", "value": 1},
                {"key": "10.1.0.0/16", "value": 0},
                {"key": "203.0.113.0/24", "value": 2}
            ]}"#,
        )
        .unwrap();
        let packets = at_ms(vec![
            udp([10, 2, 3, 4], A, 53),          // 0: from 10/8: dropped, reason 1
            udp([10, 1, 2, 3], A, 53),          // 1: 10.1/16 is an exception
            tcp(A, [203, 0, 113, 9], 443, SYN), // 2: to 203.0.113/24: reason 2
            tcp(A, [203, 0, 114, 9], 443, SYN), // 3: next door: passes
            udp([10, 200, 0, 1], SERVER, 123),  // 4: reason 1 again
        ]);
        let outcome = replay("blocklist", "prefix_blocklist", &packets, &["--map-init", path(&init)]);
        assert_eq!(outcome.dropped, [0, 2, 4]);
        let reason = |reason: u32| hex(&reason.to_ne_bytes());
        assert_eq!(
            outcome.entries("drops"),
            [(reason(1), hex(&2u64.to_ne_bytes())), (reason(2), hex(&1u64.to_ne_bytes()))]
        );
        assert_eq!(outcome.entries("blocklist").len(), 3);
    }

    #[test]
    fn syn_limiter_follows_capture_time() {
        let second = 1_000_000;
        let packets = vec![
            (0, tcp(A, SERVER, 80, SYN)),
            (100_000, tcp(A, SERVER, 80, SYN)),
            (200_000, tcp(B, SERVER, 80, SYN)),
            (300_000, tcp(A, SERVER, 80, SYN)),
            (400_000, tcp(A, SERVER, 80, SYN)), // 4: A's fourth SYN in a second
            (500_000, tcp(A, SERVER, 80, SYN | ACK)),
            (600_000, tcp(A, SERVER, 80, SYN)),          // 6: the fifth
            (second + 500_000, tcp(A, SERVER, 80, SYN)), // a new second
        ];
        let outcome = replay("syn", "syn_limiter", &packets, &[]);
        assert_eq!(outcome.dropped, [4, 6]);
        let mut expected = vec![(hex(&A), pair(1_500_000_000, 1)), (hex(&B), pair(200_000_000, 1))];
        expected.sort();
        assert_eq!(outcome.entries("syn_windows"), expected);
    }

    #[test]
    fn dispatcher_tail_calls_by_protocol_and_reports_drops() {
        let packets = at_ms(vec![
            tcp(A, SERVER, 23, SYN),    // 0: telnet: dropped by the TCP handler
            tcp(A, SERVER, 80, SYN),    // 1
            udp(A, SERVER, 53),         // 2
            icmp(B, SERVER, 8),         // 3: echo request: dropped by the ICMP handler
            icmp(SERVER, B, 0),         // 4: echo reply
            ip(47, A, SERVER, &[0; 4]), // 5: GRE: no handler
        ]);
        let outcome = replay("dispatcher", "dispatcher", &packets, &["--program", "dispatch"]);
        assert_eq!(outcome.dropped, [0, 3]);
        let key = |protocol: u32| hex(&protocol.to_ne_bytes());
        let count = |count: u64| hex(&count.to_ne_bytes());
        assert_eq!(outcome.entries("handled"), [(key(1), count(2)), (key(6), count(2)), (key(17), count(1))]);
        let event = |protocol: u32, destination: [u8; 4]| hex(&[&protocol.to_ne_bytes()[..], &destination].concat());
        assert_eq!(outcome.map("drop_events")["records"], serde_json::json!([event(6, SERVER), event(1, SERVER)]));
        let programs = &outcome.map("handlers")["programs"];
        assert_eq!(programs.as_array().unwrap().len(), 3);
    }

    #[test]
    fn the_sample_blocklist_fills_the_example() {
        let sample = super::root().join("examples/prefix_blocklist.json");
        let (capture, object) = (super::sample("ethernet.pcap"), example("prefix_blocklist"));
        let args = ["replay", path(&object), path(&capture), "--json", "--maps", "--map-init"];
        let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(args).arg(&sample).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        let maps = json["maps"].as_array().unwrap();
        let blocklist = maps.iter().find(|map| map["name"] == "blocklist").unwrap();
        assert_eq!(blocklist["entries"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn inspect_lists_maps_and_a_bad_init_file_is_named() {
        let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf"))
            .args(["inspect", path(&example("dispatcher"))])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("3 maps"), "{text}");
        assert!(
            text.contains("handlers") && text.contains("prog_array") && text.contains("[6] = handle_tcp"),
            "{text}"
        );
        assert!(text.contains("drop_events") && text.contains("ringbuf"), "{text}");

        let dir = scratch_dir("replay", "map_bad_init");
        let init = dir.join("bad.json");
        std::fs::write(&init, r#"{"blocklist": [{"key": "10.0.0.0/33", "value": 1}]}"#).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf"))
            .args(["replay", path(&example("prefix_blocklist")), "--map-init", path(&init)])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("bad.json") && stderr.contains("blocklist") && stderr.contains("entry 0"), "{stderr}");
    }
}

#[test]
fn trace_prints_what_the_program_writes_with_bpf_trace_printk() {
    let fixture = root().join("tests/fixtures/maps.o");
    let args = ["run", path(&fixture), "--name", "count", "--hex", "07 00 00", "--trace"];
    let output = qemu_ubpf(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("bpf_trace_printk: packet of 3 bytes"), "{}", text(&output.stderr));
    let quiet = qemu_ubpf(&args[..args.len() - 1]);
    assert!(!text(&quiet.stderr).contains("bpf_trace_printk"), "{}", text(&quiet.stderr));
}

/// Output into a pipe nobody reads any more (`| head`, a pager that quit)
/// ends the command as it ends other Unix tools: by SIGPIPE, not a panic.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf"))
        .args(["replay", path(&example("drop_1_1_1_1")), path(&sample("ethernet.pcap"))])
        .stdout(writer)
        .output()
        .unwrap();
    assert!(!text(&output.stderr).contains("panicked"), "{}", text(&output.stderr));
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{:?}", output.status);
}

/// XDP programs in replay: each action's output, as the kernel's
/// BPF_PROG_TEST_RUN left the packet (recorded in tests/kernel/xdp.json).
mod xdp {
    use super::{common, path, qemu_ubpf, root, sample, scratch_dir, text};

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use qemu_ubpf::replay::{CaptureReader, Record};
    use serde_json::{Value, json};

    /// The longest frame one XDP buffer holds; test_run runs longer ones
    /// as multi-buffer packets, which replay does not.
    const MAX_LINEAR: usize = 3520;

    fn recording() -> Value {
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/kernel/xdp.json")).unwrap()).unwrap()
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap()).collect()
    }

    fn to_hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn frame(recording: &Value, name: &str) -> Vec<u8> {
        hex(recording["frames"][name].as_str().unwrap())
    }

    /// A pcap (Ethernet, microseconds) of `frames`, the i-th at i seconds
    /// and 250 microseconds.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut file = Vec::new();
        for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            file.extend(word.to_le_bytes());
        }
        for (second, frame) in frames.iter().enumerate() {
            for word in [second as u32, 250, frame.len() as u32, frame.len() as u32] {
                file.extend(word.to_le_bytes());
            }
            file.extend(frame);
        }
        file
    }

    /// The bytes of each packet of a capture, with the crate's reader.
    fn packets(file: &Path) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut reader = CaptureReader::new(&bytes[..], "output").unwrap();
        let mut packets = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            if let Record::Packet(packet) = record {
                packets.push(packet.data.to_vec());
            }
        }
        packets
    }

    /// The four outputs of one replay, by flag.
    const OUTPUTS: [&str; 4] = ["pass", "drop", "tx", "redirect"];

    struct Replayed {
        output: Output,
        json: Value,
        files: BTreeMap<&'static str, PathBuf>,
    }

    /// `qemu-ubpf replay OBJECT CAPTURE --json` with every output, and `extra`.
    fn replay(dir: &Path, object: &Path, capture: &Path, extra: &[&str]) -> Replayed {
        let files: BTreeMap<&str, PathBuf> =
            OUTPUTS.iter().map(|name| (*name, dir.join(format!("{name}.out")))).collect();
        let mut args = vec!["replay".to_owned(), path(object).into(), path(capture).into(), "--json".into()];
        for (name, file) in &files {
            args.extend([format!("--{name}"), path(file).into()]);
        }
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(&args).output().unwrap();
        let json = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        Replayed { output, json, files }
    }

    fn sha256(path: &Path) -> Option<String> {
        let output = Command::new("sha256sum").arg(path).output().ok()?;
        String::from_utf8(output.stdout).ok()?.split_whitespace().next().map(str::to_owned)
    }

    /// What the kernel did with each frame, in order, checked against one
    /// replay's outputs and summary.
    fn check_against_kernel(what: &str, recording: &Value, runs: &[&Value], replayed: &Replayed) {
        let mut outputs: BTreeMap<&str, std::vec::IntoIter<Vec<u8>>> =
            replayed.files.iter().map(|(name, file)| (*name, packets(file).into_iter())).collect();
        let mut next = |name: &str| outputs.get_mut(name).unwrap().next();
        let mut actions = [0u64; 5];
        let (mut unknown, mut faults) = (0u64, BTreeMap::<&str, u64>::new());
        for (index, run) in runs.iter().enumerate() {
            let what = format!("{what}, packet {} ({})", index + 1, run["frame"]);
            let frame = frame(recording, run["frame"].as_str().unwrap());
            let fault = match run.get("error") {
                Some(error) => {
                    assert_eq!(error, "EINVAL", "{what}: test_run refuses only runts");
                    Some("frame_too_short")
                }
                None if frame.len() > MAX_LINEAR => Some("multi_buffer"),
                None => None,
            };
            if let Some(reason) = fault {
                *faults.entry(reason).or_default() += 1;
                assert_eq!(next("drop").map(|p| to_hex(&p)), Some(to_hex(&frame)), "{what}: dropped as it came");
                continue;
            }
            let data_out = run.get("data_out").map_or(frame.clone(), |out| hex(out.as_str().unwrap()));
            let meta = run["ctx_out"]["data"].as_u64().unwrap() as usize;
            let left = to_hex(&data_out[meta..]);
            let retval = run["retval"].as_u64().unwrap();
            let (output, expected) = match retval {
                0 | 1 => ("drop", to_hex(&frame)),
                2 => ("pass", left),
                3 => ("tx", left),
                4 => ("redirect", left),
                _ => {
                    unknown += 1;
                    ("drop", to_hex(&frame))
                }
            };
            let got = next(output).map(|p| to_hex(&p));
            if retval == 4 && got.is_none() {
                // A redirect without a target fails: dropped, as it came.
                *faults.entry("redirect_without_target").or_default() += 1;
                assert_eq!(next("drop").map(|p| to_hex(&p)), Some(to_hex(&frame)), "{what}: failed redirect");
                continue;
            }
            assert_eq!(got, Some(expected), "{what}: the kernel's {output} bytes");
            actions[if retval > 4 { 0 } else { retval as usize }] += 1;
        }
        for name in OUTPUTS {
            assert_eq!(next(name), None, "{what}: more packets in --{name} than the kernel sent there");
        }
        let json = &replayed.json;
        let counted: Vec<u64> = ["aborted", "drop", "pass", "tx", "redirect"]
            .iter()
            .map(|a| json["actions"][a].as_u64().unwrap())
            .collect();
        assert_eq!(counted, actions, "{what}: actions in {json}");
        assert_eq!(json["unknown_actions"], unknown, "{what}");
        assert_eq!(json["fault_reasons"], json!(faults), "{what}");
        assert_eq!(json["packets"], runs.len(), "{what}");
    }

    /// Every XDP program of the recording that loads runs in replay, in
    /// both engines, over the frames the kernel ran it on: each packet
    /// lands in the output its action names, with the bytes the kernel
    /// left (as it came in, where dropped), and the summary counts it.
    #[test]
    fn xdp_outputs_are_the_kernels() {
        let (checked, absent) = replay_as_recorded(&recording(), &scratch_dir("replay", "xdp_kernel"));
        println!("checked {checked:?}; not installed: {absent:?}");
        for program in [
            "xdp_actions.o xdp_redirect_devmap",
            "xdp_actions.o xdp_redirect_cpumap",
            "xdp_maps.o xdp_count",
            "xdpfilt_dny_all.o xdpfilt_dny_all",
            "xdpfilt_alw_eth.o xdpfilt_alw_eth",
            "xdpdump_xdp.o xdpdump",
            "xdp_pass.o xdp_pass",
            "xdp_replay.o xdp_every_action",
            "xdp_replay.o xdp_redirect_nowhere",
            "xdp_adjust.o xdp_vlan_push",
            "xdp_adjust.o xdp_vlan_pop",
            "xdp_adjust.o xdp_ipip_encap",
            "xdp_adjust.o xdp_tail_trim",
            "xdp_adjust.o xdp_tail_trailer",
            "xdp_adjust.o xdp_meta",
        ] {
            assert!(checked.contains(program), "{program} was not checked: {checked:?}");
        }
    }

    fn examples_recording() -> Value {
        let text = std::fs::read_to_string(root().join("tests/kernel/xdp_examples.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The XDP examples replay as the kernel ran them, each with its maps
    /// filled from its init file (`examples/xdp/NAME.json`, which the
    /// recorder read too).
    #[test]
    fn xdp_examples_replay_as_the_kernel_ran_them() {
        let (checked, _) = replay_as_recorded(&examples_recording(), &scratch_dir("replay", "xdp_examples"));
        let expected = [
            "ping.o xdp_ping",
            "dnat.o xdp_dnat",
            "vlan_pop.o xdp_vlan_pop",
            "truncate.o xdp_truncate",
            "counters.o xdp_counters",
            "redirect.o xdp_redirect_by_mac",
        ];
        assert_eq!(checked, expected.iter().map(|program| program.to_string()).collect());
    }

    /// `run` runs an XDP program over one frame as test_run does: for each
    /// recorded run of an example that needs no map filled, in the
    /// default context, the same r0, action and frame as the kernel's.
    #[test]
    fn run_gives_an_xdp_program_one_frame_as_the_kernel_ran_it() {
        let recording = examples_recording();
        let dir = scratch_dir("replay", "xdp_run");
        let mut checked = BTreeSet::new();
        for run in recording["runs"].as_array().unwrap() {
            let object =
                recording["objects"].as_array().unwrap().iter().find(|object| object["object"] == run["object"]);
            let needs_maps = !object.unwrap()["map_setup"].as_array().unwrap().is_empty();
            if needs_maps || run["ctx"] != recording["default_ctx"] {
                continue;
            }
            let frame = run["frame"].as_str().unwrap();
            let (object, output) = (root().join(run["object"].as_str().unwrap()), dir.join("frame.bin"));
            let result = qemu_ubpf(&[
                "run",
                path(&object),
                "--hex",
                recording["frames"][frame].as_str().unwrap(),
                "--output",
                path(&output),
            ]);
            let case = format!("{} on {frame}", run["object"]);
            if run["error"].is_string() {
                // test_run refuses a frame shorter than an Ethernet header.
                assert!(text(&result.stderr).contains("shorter than an Ethernet header"), "{case}: {result:?}");
                assert!(!result.status.success(), "{case}");
                continue;
            }
            assert!(result.status.success(), "{case}: {}", text(&result.stderr));
            let (retval, action) = (run["retval"].as_u64().unwrap(), run["action"].as_str().unwrap());
            let printed = text(&result.stdout);
            assert!(printed.starts_with(&format!("r0 = {retval:#x} ({retval}): {action}")), "{case}: {printed}");
            // test_run gives no data_out when the program drops.
            if let Some(data_out) = run["data_out"].as_str() {
                assert_eq!(to_hex(&std::fs::read(&output).unwrap()), data_out, "{case}");
            }
            checked.insert(run["object"].as_str().unwrap().to_string());
        }
        let expected = ["examples/xdp/counters.o", "examples/xdp/ping.o", "examples/xdp/vlan_pop.o"];
        assert_eq!(checked, expected.iter().map(|object| object.to_string()).collect());
    }

    /// A `--map-init` file's contents for the map setup of one recorded object.
    fn recorded_setup(object: &Value) -> Value {
        let mut setup = serde_json::Map::new();
        // As the recorder: entries for maps this object lacks are left
        // out (xdp-filter's objects declare only the maps they use).
        let declared: BTreeSet<&str> = object["programs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|program| program["maps_loaded"].as_object().into_iter().flat_map(|maps| maps.keys()))
            .map(String::as_str)
            .collect();
        for entry in object["map_setup"].as_array().into_iter().flatten() {
            let map_name = entry["map"].as_str().unwrap();
            if !declared.iter().any(|declared| declared.ends_with(map_name)) {
                continue;
            }
            let map = setup.entry(map_name).or_insert(json!([]));
            map.as_array_mut().unwrap().push(json!({"key": entry["key"], "value": entry["value"]}));
        }
        Value::Object(setup)
    }

    /// What a receiver checks: the ping responder's replies and the NAT's
    /// rewritten packets, as replay writes them, carry IPv4, ICMP, TCP and
    /// UDP checksums that tshark, told to verify them all, finds good.
    #[test]
    fn xdp_example_checksums_are_accepted_by_tshark() {
        if !tools_installed("xdp_example_checksums_are_accepted_by_tshark") {
            return;
        }
        let recording = examples_recording();
        let dir = scratch_dir("replay", "xdp_example_checksums");
        let frames: Vec<Vec<u8>> =
            recording["frames"].as_object().unwrap().values().map(|frame| hex(frame.as_str().unwrap())).collect();
        let capture = dir.join("frames.pcap");
        std::fs::write(&capture, pcap(&frames)).unwrap();
        // Status per field, as tshark numbers them: 1 good, 3 not present
        // (a UDP checksum of 0); 0 would be bad.
        let statuses = |example: &str, output: &str, only: &str| {
            let object = root().join(format!("examples/xdp/{example}.o"));
            let init = object.with_extension("json");
            let extra: Vec<&str> = if init.exists() { vec!["--map-init", path(&init)] } else { vec![] };
            let replayed = replay(&dir, &object, &capture, &extra);
            assert!(replayed.output.status.success(), "{example}: {}", text(&replayed.output.stderr));
            let fields = ["ip.checksum.status", "icmp.checksum.status", "tcp.checksum.status", "udp.checksum.status"];
            let mut args = vec!["-r", path(&replayed.files[output]), "-Y", only, "-T", "fields"];
            args.extend(["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"]);
            args.extend(["-o", "udp.check_checksum:TRUE", "-E", "separator=,"]);
            args.extend(fields.iter().flat_map(|field| ["-e", field]));
            run("tshark", &args)
        };
        // Both echo requests (one with IPv4 options) come back as replies to 10.0.0.1.
        assert_eq!(statuses("ping", "tx", "ip.dst == 10.0.0.1 && icmp.type == 0"), "1,1,,\n1,1,,\n");
        // Eight packets rewritten: TCP (with and without IPv4 options), UDP
        // to three MACs, UDP whose checksum came to 0 (sent as 0xffff), UDP
        // without a checksum, and a first fragment, whose UDP tshark leaves
        // to reassembly.
        let nat = statuses("dnat", "pass", "ip.dst == 192.168.1.0/24");
        let mut lines: Vec<&str> = nat.lines().collect();
        lines.sort();
        assert_eq!(lines, ["1,,,", "1,,,1", "1,,,1", "1,,,1", "1,,,1", "1,,,3", "1,,1,", "1,,1,"], "{nat}");
    }

    /// Replays each XDP program of `recording` over the frames the kernel
    /// ran it on, with the maps filled as the recorder filled them, and
    /// checks the outputs against the kernel's. Returns the programs
    /// checked (as "OBJECT_FILE PROGRAM") and the Debian objects absent.
    fn replay_as_recorded(recording: &Value, dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
        let default_ctx = recording["default_ctx"].as_str().unwrap();
        let (mut checked, mut absent) = (BTreeSet::new(), BTreeSet::new());
        for object in recording["objects"].as_array().unwrap() {
            let name = object["object"].as_str().unwrap();
            let file = root().join(name);
            if name.starts_with('/') && sha256(&file).as_deref() != object["sha256"].as_str() {
                absent.insert(name.to_owned());
                continue;
            }
            // The examples' init files, beside them, are what the recorder
            // read; other objects get one written from the recorded setup.
            let beside = file.with_extension("json");
            let init = if beside.exists() {
                beside
            } else {
                let init = dir.join("init.json");
                std::fs::write(&init, recorded_setup(object).to_string()).unwrap();
                init
            };
            for program in object["programs"].as_array().unwrap() {
                let function = program["program"].as_str().unwrap();
                if program.get("refused").is_some() || program["section"] != "xdp" {
                    continue;
                }
                let runs: Vec<&Value> = recording["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|run| run["object"] == name && run["program"] == function && run["ctx"] == default_ctx)
                    .collect();
                let frames: Vec<Vec<u8>> =
                    runs.iter().map(|run| frame(recording, run["frame"].as_str().unwrap())).collect();
                let capture = dir.join("frames.pcap");
                std::fs::write(&capture, pcap(&frames)).unwrap();
                for engine in ["jit", "interp"] {
                    let extra = ["--program", function, "--engine", engine, "--map-init", path(&init)];
                    let replayed = replay(dir, &file, &capture, &extra);
                    let stderr = text(&replayed.output.stderr);
                    assert!(replayed.output.status.success(), "{name} {function}: {stderr}");
                    check_against_kernel(&format!("{name} {function} ({engine})"), recording, &runs, &replayed);
                }
                checked.insert(format!("{} {function}", Path::new(name).file_name().unwrap().to_str().unwrap()));
            }
        }
        (checked, absent)
    }

    /// The frames xdp_every_action ran on in the kernel, with its runs.
    fn every_action_runs(recording: &Value) -> Vec<&Value> {
        let default_ctx = &recording["default_ctx"];
        let runs = recording["runs"].as_array().unwrap();
        runs.iter().filter(|run| run["program"] == "xdp_every_action" && run["ctx"] == *default_ctx).collect()
    }

    fn replay_object() -> PathBuf {
        root().join("tests/fixtures/xdp_replay.o")
    }

    fn tools_installed(test: &str) -> bool {
        let missing: Vec<&str> = ["tcpdump", "tshark", "editcap"]
            .into_iter()
            .filter(|tool| Command::new(tool).arg("--version").output().is_err())
            .collect();
        if !missing.is_empty() {
            common::missing_prerequisite(&format!(
                "{test}: {} not installed (Debian: tcpdump tshark)",
                missing.join(", ")
            ));
        }
        missing.is_empty()
    }

    fn run(program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}: {}", text(&output.stderr));
        text(&output.stdout)
    }

    /// The packets of a capture as tcpdump reads them: written again by
    /// tcpdump as a classic pcap, whose records are then split here.
    fn tcpdump_packets(dir: &Path, file: &Path) -> Vec<Vec<u8>> {
        let copy = dir.join("tcpdump-copy.pcap");
        run("tcpdump", &["-r", path(file), "-w", path(&copy)]);
        let bytes = std::fs::read(&copy).unwrap();
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let (mut at, mut packets) = (24, Vec::new());
        while at < bytes.len() {
            let len = word(at + 8);
            packets.push(bytes[at + 16..at + 16 + len].to_vec());
            at += 16 + len;
        }
        packets
    }

    /// tcpdump and tshark read the four outputs, pcap and pcapng: the bytes
    /// are the kernel's, the redirected packets name their target in a
    /// comment, keep their capture time, and keep the comments they had.
    #[test]
    fn xdp_outputs_read_back_with_tcpdump_and_tshark() {
        if !tools_installed("xdp_outputs_read_back_with_tcpdump_and_tshark") {
            return;
        }
        let recording = recording();
        let dir = scratch_dir("replay", "xdp_tools");
        let runs = every_action_runs(&recording);
        let frames: Vec<Vec<u8>> = runs.iter().map(|run| frame(&recording, run["frame"].as_str().unwrap())).collect();
        let by_frame = |name: &str| runs.iter().position(|run| run["frame"] == name).unwrap();
        let kernel_out = |name: &str| hex(runs[by_frame(name)]["data_out"].as_str().unwrap());
        let pcap_in = dir.join("in.pcap");
        std::fs::write(&pcap_in, pcap(&frames)).unwrap();
        // Frame 2 (DNS over UDP) is redirected: a comment of its own is kept.
        let pcapng_in = dir.join("in.pcapng");
        run("editcap", &["-F", "pcapng", "-a", "2:captured here", path(&pcap_in), path(&pcapng_in)]);
        for capture in [&pcap_in, &pcapng_in] {
            let replayed = replay(&dir, &replay_object(), capture, &[]);
            assert!(replayed.output.status.success(), "{}", text(&replayed.output.stderr));
            let read = |name: &str| tcpdump_packets(&dir, &replayed.files[name]);
            assert_eq!(
                read("pass"),
                [kernel_out("ipv4_tcp_syn"), kernel_out("vlan_ipv4_udp"), kernel_out("qinq_ipv4_tcp")]
            );
            assert_eq!(read("tx"), [kernel_out("ipv4_icmp_echo")]);
            assert_eq!(read("redirect"), [kernel_out("ipv4_udp_dns"), kernel_out("ipv4_udp_1514")]);
            let dropped: Vec<Vec<u8>> = frames
                .iter()
                .zip(&runs)
                .filter(|(frame, run)| {
                    let sent_on = matches!(run["retval"].as_u64(), Some(2..=4));
                    run.get("error").is_some() || frame.len() > MAX_LINEAR || !sent_on
                })
                .map(|(frame, _)| frame.clone())
                .collect();
            assert_eq!(read("drop"), dropped, "{}", capture.display());

            let tshark = |name: &str, field: &str| {
                run("tshark", &["-r", path(&replayed.files[name]), "-T", "fields", "-e", field])
            };
            let comments = tshark("redirect", "frame.comment");
            let own = if capture == &pcapng_in { "captured here," } else { "" };
            assert_eq!(
                comments,
                format!("{own}XDP_REDIRECT to ifindex 7\nXDP_REDIRECT to ifindex 7\n"),
                "{}",
                capture.display()
            );
            let times = tshark("redirect", "frame.time_epoch");
            assert_eq!(times, "1.000250000\n14.000250000\n", "{}", capture.display());
            let lengths = tshark("pass", "frame.len");
            assert_eq!(lengths, "58\n71\n58\n", "the original lengths follow the new bytes");
        }
    }

    #[test]
    fn what_does_not_apply_to_xdp_is_refused_by_name() {
        let object = replay_object();
        let capture = sample("ethernet.pcap");
        for (args, expected) in [
            (&["--ip-mode", "on"][..], "an XDP program: --ip-mode on does not apply"),
            (&["--on-error", "pass"][..], "an XDP program: --on-error does not apply"),
        ] {
            let output = qemu_ubpf(&[&["replay", path(&object), path(&capture)], args].concat());
            assert!(!output.status.success());
            assert!(text(&output.stderr).contains(expected), "{}", text(&output.stderr));
        }
        let (json, output) =
            super::replay_json(&[path(&object), path(&capture), "--ip-mode", "off", "--program", "xdp_every_action"]);
        assert!(output.status.success(), "--ip-mode off is what XDP does: {}", text(&output.stderr));
        assert_eq!(json["program_type"], "xdp");
        let dir = scratch_dir("replay", "xdp_not_for_filters");
        for flag in ["--tx", "--redirect"] {
            let never = dir.join("never-written");
            let output =
                qemu_ubpf(&["replay", path(&super::example("drop_1_1_1_1")), path(&capture), flag, path(&never)]);
            assert!(!output.status.success() && !never.exists());
            assert!(text(&output.stderr).contains(&format!("a filter: {flag} applies to XDP programs only")));
        }
        let output = qemu_ubpf(&["replay", path(&object), path(&sample("raw-ip.pcap"))]);
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("packet 1 at byte offset 24: link type 101 (RAW): XDP programs run on Ethernet frames"),
            "{stderr}"
        );
    }

    /// A program that passes everything unchanged copies every record byte
    /// for byte; the one runt, which XDP does not run on, is dropped.
    #[test]
    fn an_xdp_program_passing_everything_copies_the_capture() {
        let dir = scratch_dir("replay", "xdp_pass_all");
        let pass_all = super::assembled(&dir, "pass_all.bin", "mov r0, 2\nexit");
        for name in ["ethernet.pcap", "ethernet-nanosecond-be-snaplen96.pcap"] {
            let replayed = replay(&dir, &pass_all, &sample(name), &["--type", "xdp"]);
            assert!(replayed.output.status.success(), "{}", text(&replayed.output.stderr));
            let records = |file: &Path| super::packet_records(&std::fs::read(file).unwrap());
            let (input, passed, dropped) =
                (records(&sample(name)), records(&replayed.files["pass"]), records(&replayed.files["drop"]));
            assert!(super::is_interleaving(&input, &passed, &dropped), "{name}");
            let json = &replayed.json;
            assert_eq!(json["actions"]["pass"], passed.len(), "{name}: {json}");
            assert_eq!(json["faults"], dropped.len(), "{name}: {json}");
            assert_eq!(json["fault_reasons"]["frame_too_short"], dropped.len(), "{name}: {json}");
        }
    }

    /// bpf_ktime_get_ns gives each packet its capture time, in both engines.
    #[test]
    fn the_xdp_clock_is_the_capture_time() {
        let dir = scratch_dir("replay", "xdp_clock");
        let recording = recording();
        let frames = vec![frame(&recording, "ipv4_tcp_syn"), frame(&recording, "arp_request")];
        let capture = dir.join("in.pcap");
        std::fs::write(&capture, pcap(&frames)).unwrap();
        for engine in ["jit", "interp"] {
            let replayed = replay(&dir, &root().join("tests/fixtures/xdp_clock.o"), &capture, &["--engine", engine]);
            assert!(replayed.output.status.success(), "{}", text(&replayed.output.stderr));
            let passed = packets(&replayed.files["pass"]);
            for (second, (packet, frame)) in passed.iter().zip(&frames).enumerate() {
                let now = second as u64 * 1_000_000_000 + 250_000;
                assert_eq!(packet[..8], now.to_ne_bytes(), "{engine}: packet {second}");
                assert_eq!(packet[8..], frame[8..]);
            }
            assert_eq!(passed.len(), 2);
        }
    }

    /// A run that faults (here, a load past the packet's page, which the
    /// kernel's verifier would refuse and replay checks as it runs) is
    /// dropped as the packet came in and counted by reason, never as an
    /// action.
    #[test]
    fn xdp_faults_are_dropped_and_counted_by_reason() {
        let dir = scratch_dir("replay", "xdp_faults");
        let capture = sample("ethernet.pcap");
        let past_the_page = super::assembled(&dir, "past.bin", "ldxw r2, [r1]\nldxb r0, [r2+5000]\nmov r0, 2\nexit");
        for engine in ["jit", "interp"] {
            let replayed = replay(&dir, &past_the_page, &capture, &["--type", "xdp", "--engine", engine]);
            assert!(replayed.output.status.success(), "{}", text(&replayed.output.stderr));
            let json = &replayed.json;
            let packets = json["packets"].as_u64().unwrap();
            assert_eq!(json["faults"], packets, "{json}");
            assert_eq!(json["fault_reasons"], json!({"frame_too_short": 1, "out_of_bounds": packets - 1}));
            assert!(json["actions"].as_object().unwrap().values().all(|count| count == 0), "{json}");
            let input = super::packet_records(&std::fs::read(&capture).unwrap());
            assert!(super::packet_records(&std::fs::read(&replayed.files["drop"]).unwrap()) == input);
            let message = json["first_fault"]["message"].as_str().unwrap();
            assert!(message.starts_with("instruction 1 (ldxb %r0, [%r2+5000]): load of 1 bytes"), "{json}");
        }
        let output = qemu_ubpf(&["replay", path(&past_the_page), path(&capture), "--type", "xdp"]);
        let stdout = text(&output.stdout);
        assert!(stdout.contains("XDP program, engine jit"), "{stdout}");
        assert!(
            stdout.contains("faults              76  (frame_too_short: 1, out_of_bounds: 75; dropped)"),
            "{stdout}"
        );
        assert!(stdout.contains("first fault: packet 1 at byte offset 24: instruction 1"), "{stdout}");
    }

    /// Every kind of packet record, rewritten with 3 more bytes and a
    /// comment: pcapng (both byte orders, enhanced and simple packet
    /// blocks, an existing comment, frames cut short by a snapshot length)
    /// and pcap (big-endian, nanoseconds) made pcapng. Read back with the
    /// crate's reader and with tshark, each packet keeps its interface's
    /// link type and its time, and its lengths grow by 3.
    #[test]
    fn rewritten_records_keep_time_interface_and_options() {
        use qemu_ubpf::replay::{CaptureWriter, Format};
        let dir = scratch_dir("replay", "xdp_records");
        for name in ["multi-interface.pcapng", "ethernet-nanosecond-be-snaplen96.pcap"] {
            let input = std::fs::read(sample(name)).unwrap();
            let mut reader = CaptureReader::new(&input[..], name).unwrap();
            let format = reader.format();
            let output = dir.join(format!("{name}.pcapng"));
            let mut writer = CaptureWriter::pcapng(std::fs::File::create(&output).unwrap(), "rewritten");
            // (link type, time, bytes, original length, comment) of each.
            let mut expected = Vec::new();
            while let Some(record) = reader.next_record().unwrap() {
                match record {
                    Record::Metadata(bytes) => writer.write_metadata(bytes, format).unwrap(),
                    Record::Packet(packet) => {
                        let data = [packet.data, &[0xab; 3]].concat();
                        let comment = format!("packet {}", packet.number);
                        writer.write_packet(&packet, &data, Some(&comment)).unwrap();
                        expected.push((packet.link_type, packet.timestamp_ns, data, comment));
                    }
                }
            }
            writer.flush().unwrap();
            drop(writer);
            let written = std::fs::read(&output).unwrap();

            let mut reader = CaptureReader::new(&written[..], "rewritten").unwrap();
            assert_eq!(reader.format(), Format::PcapNg);
            let mut got = Vec::new();
            while let Some(record) = reader.next_record().unwrap() {
                if let Record::Packet(packet) = record {
                    got.push((packet.link_type, packet.timestamp_ns, packet.data.to_vec()));
                }
            }
            let without_comments: Vec<_> =
                expected.iter().map(|(link, time, data, _)| (*link, *time, data.clone())).collect();
            assert_eq!(got, without_comments, "{name}");

            if !tools_installed("rewritten_records_keep_time_interface_and_options") {
                continue;
            }
            let fields = run(
                "tshark",
                &["-r", path(&output), "-T", "fields", "-E", "separator=|", "-e", "frame.comment", "-e", "frame.len"],
            );
            let originals: Vec<u64> = run("tshark", &["-r", path(&sample(name)), "-T", "fields", "-e", "frame.len"])
                .lines()
                .map(|line| line.parse().unwrap())
                .collect();
            let lines: Vec<&str> = fields.lines().collect();
            assert_eq!(lines.len(), expected.len(), "{name}");
            for (index, (line, (_, _, _, comment))) in lines.iter().zip(&expected).enumerate() {
                let own = if name.ends_with("pcapng") && index == 7 { "a query for a blocked name," } else { "" };
                assert_eq!(*line, format!("{own}{comment}|{}", originals[index] + 3), "{name}");
            }
        }
    }
}

/// Packets as (captured bytes, length on the wire): cut short by a snapshot
/// length, whole, and one whose record claims fewer bytes on the wire than
/// it holds, which libpcap's filter takes as it is.
const WIRE_LENGTHS: [(usize, u32); 8] =
    [(60, 60), (96, 546), (96, 97), (40, 74), (74, 74), (96, 96), (60, 20), (14, 1514)];

/// A frame of `len` bytes that names its place in `WIRE_LENGTHS`.
fn numbered_frame(index: usize, len: usize) -> Vec<u8> {
    (0..len).map(|at| if at == 0 { index as u8 } else { at as u8 }).collect()
}

/// A little-endian pcap of `WIRE_LENGTHS`' packets, Ethernet, snapshot
/// length 96.
fn cut_short_pcap() -> Vec<u8> {
    let mut out = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 96, 1] {
        out.extend(word.to_le_bytes());
    }
    for (index, &(captured, wire)) in WIRE_LENGTHS.iter().enumerate() {
        for word in [index as u32, 0, captured as u32, wire] {
            out.extend(word.to_le_bytes());
        }
        out.extend(numbered_frame(index, captured));
    }
    out
}

/// The same packets in a pcapng: one Ethernet interface, enhanced packet
/// blocks.
fn cut_short_pcapng() -> Vec<u8> {
    let mut out = Vec::new();
    let words = |out: &mut Vec<u8>, words: &[u32]| words.iter().for_each(|word| out.extend(word.to_le_bytes()));
    words(&mut out, &[0x0a0d_0d0a, 28, 0x1a2b_3c4d, 1, u32::MAX, u32::MAX, 28]);
    words(&mut out, &[1, 20, 1, 96, 20]);
    for (index, &(captured, wire)) in WIRE_LENGTHS.iter().enumerate() {
        let padded = captured.next_multiple_of(4);
        let len = 32 + padded as u32;
        words(&mut out, &[6, len, 0, 0, index as u32, captured as u32, wire]);
        let mut frame = numbered_frame(index, captured);
        frame.resize(padded, 0);
        out.extend(frame);
        words(&mut out, &[len]);
    }
    out
}

/// `len`, `greater` and `less` in `replay --expr` see each packet's length
/// on the wire, as libpcap's filter (and so `tcpdump -r`, which
/// tests/tcpdump.rs compares with) sees it, not the bytes a snapshot
/// length left: in pcap (the batch loop) and pcapng, in both engines. The
/// selections are tcpdump 4.99's over these captures, recorded.
#[test]
fn len_in_an_expression_is_the_length_on_the_wire() {
    let dir = scratch_dir("replay", "wire-len");
    type Selects = fn(u32) -> bool;
    let selects: [(&str, Selects); 7] = [
        ("len > 96", |wire| wire > 96),
        ("greater 97", |wire| wire >= 97),
        ("less 96", |wire| wire <= 96),
        ("len = 74", |wire| wire == 74),
        ("len = 20", |wire| wire == 20),
        ("len - 14 >= 1500", |wire| wire >= 1514),
        ("tcp or len != 60", |wire| wire != 60),
    ];
    for (name, capture) in [("cut-short.pcap", cut_short_pcap()), ("cut-short.pcapng", cut_short_pcapng())] {
        let file = dir.join(name);
        std::fs::write(&file, capture).unwrap();
        let dropped = dir.join(format!("dropped-{name}"));
        for (expression, selects) in selects {
            let expected: Vec<(usize, u32)> = WIRE_LENGTHS.iter().copied().filter(|&(_, wire)| selects(wire)).collect();
            for engine in ["jit", "interp"] {
                let args = ["replay", "--expr", expression, path(&file), "--engine", engine, "--drop", path(&dropped)];
                let output = qemu_ubpf(&args);
                assert!(output.status.success(), "{}", text(&output.stderr));
                let bytes = std::fs::read(&dropped).unwrap();
                let mut reader = CaptureReader::new(&bytes[..], "dropped").unwrap();
                let mut got = Vec::new();
                while let Some(record) = reader.next_record().unwrap() {
                    if let Record::Packet(packet) = record {
                        let (index, captured) = (packet.data[0] as usize, packet.data.len());
                        assert_eq!(packet.data, numbered_frame(index, captured), "a packet of the input, whole");
                        got.push((captured, (captured as i64 + packet.beyond_capture()) as u32));
                    }
                }
                assert_eq!(got, expected, "'{expression}' over {name}, engine {engine}");
            }
        }
    }
}
