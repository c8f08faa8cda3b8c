//! Capture files (pcap and pcapng) through the replay reader and a replay
//! of them through a filter: every packet read gets a verdict and lands in
//! exactly one output, which reads back as a capture with those packets;
//! each packet's run agrees between the engines. Needs the `replay`
//! feature. The first byte picks ip-mode and the engine; the rest is the
//! capture.

#![no_main]

mod common;

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::Program;
use qemu_ubpf::replay::frame::program_input;
use qemu_ubpf::replay::{CaptureReader, CaptureWriter, Engine, EngineKind, IpMode, Options, Outputs, Record, Replay};

const FILTER: &[u8] = include_bytes!("../../examples/drop_1_1_1_1.o");

/// Packets in a capture, and whether it read to its end without an error.
fn count_packets(capture: &[u8]) -> (u64, bool) {
    let Ok(mut reader) = CaptureReader::new(Cursor::new(capture), "output") else { return (0, false) };
    let mut packets = 0;
    loop {
        match reader.next_record() {
            Ok(Some(Record::Packet(_))) => packets += 1,
            Ok(Some(Record::Metadata(_))) => {}
            Ok(None) => return (packets, true),
            Err(_) => return (packets, false),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = common::Bytes(data);
    let choice = bytes.u8();
    let ip_mode = if choice & 1 == 0 { IpMode::On } else { IpMode::Off };
    let kind = if choice & 2 == 0 { EngineKind::Jit } else { EngineKind::Interpreter };
    let capture = bytes.rest();
    let (helpers, config) = (common::helpers(), common::config());
    let load = || Program::from_elf(FILTER, None, &helpers, &config).ok();

    // The engines agree on every packet the reader hands out.
    if let Ok(mut reader) = CaptureReader::new(Cursor::new(capture), "fuzz") {
        while let Ok(Some(record)) = reader.next_record() {
            if let Record::Packet(packet) = record {
                if let Ok(Some(input)) = program_input(ip_mode, packet.link_type, packet.data) {
                    common::compare(input, load);
                }
            }
        }
    }

    // A replay accounts for every packet it read, in its outputs too.
    let engine = Engine::new(load().expect("the filter loads"), kind).expect("the filter compiles");
    let Ok(mut reader) = CaptureReader::new(Cursor::new(capture), "fuzz") else { return };
    let (mut passed, mut dropped) = (Vec::new(), Vec::new());
    let mut outputs = Outputs {
        pass: Some(CaptureWriter::new(&mut passed, "pass")),
        drop: Some(CaptureWriter::new(&mut dropped, "drop")),
    };
    let mut replay = Replay::new(&engine, Options { ip_mode, ..Options::default() });
    let finished = replay.run(&mut reader, &mut outputs, &mut |_| {}).is_ok();
    drop(outputs);
    let summary = replay.summary().clone();
    assert_eq!(summary.passed + summary.dropped, summary.packets, "{summary:?}");
    let (pass_count, pass_whole) = count_packets(&passed);
    let (drop_count, drop_whole) = count_packets(&dropped);
    assert_eq!((pass_count, drop_count), (summary.passed, summary.dropped), "outputs against {summary:?}");
    if finished {
        assert!(pass_whole && drop_whole, "a capture read to its end gave outputs that do not read back");
    }
});
