//! Capture files (pcap and pcapng) through the replay reader and a replay
//! of them through a filter: every packet read gets a verdict and lands in
//! exactly one output, which reads back as a capture with those packets;
//! each packet's run agrees between the engines. Needs the `replay`
//! feature. The first byte picks ip-mode and the engine; the rest is the
//! capture.

#![no_main]

mod common;

use std::io::Cursor;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::Program;
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::replay::frame::program_input;
use qemu_ubpf::replay::{CaptureReader, CaptureWriter, Engine, EngineKind, IpMode, Options, Outputs, Record, Replay};
use qemu_ubpf::testing::engines;

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

/// The filter loaded once: a copy for each engine and the compiled code
/// (it has no maps or global data, so runs leave nothing behind), and the
/// replay engines.
struct Filter {
    interpreted: Program,
    compiled: Arc<Program>,
    jit: JitProgram,
    engines: [Engine; 2],
}

fn load() -> Program {
    Program::from_elf(FILTER, None, &common::helpers(), &common::config()).expect("the filter loads")
}

thread_local! {
    static LOADED: Filter = {
        let compiled = Arc::new(load());
        let jit = JitProgram::compile(compiled.clone()).expect("the filter compiles");
        let engine = |kind| Engine::new(load(), kind).expect("the filter compiles");
        Filter { interpreted: load(), compiled, jit, engines: [engine(EngineKind::Jit), engine(EngineKind::Interpreter)] }
    };
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = common::Bytes(data);
    let choice = bytes.u8();
    let ip_mode = if choice & 1 == 0 { IpMode::On } else { IpMode::Off };
    let capture = bytes.rest();
    LOADED.with(|filter| {
        // The engines agree on every packet the reader hands out.
        if let Ok(mut reader) = CaptureReader::new(Cursor::new(capture), "fuzz") {
            while let Ok(Some(record)) = reader.next_record() {
                let Record::Packet(packet) = record else { continue };
                if let Ok(Some(input)) = program_input(ip_mode, packet.link_type, packet.data) {
                    let run = |memory: &mut [u8]| {
                        let (result, executed) = filter.jit.execute_counted(memory);
                        (result, Some(executed))
                    };
                    if let Err(divergence) = engines::compare(input, &filter.interpreted, &filter.compiled, run) {
                        panic!("packet {}: {divergence}", packet.number);
                    }
                }
            }
        }

        // A replay accounts for every packet it read, in its outputs too.
        let engine = &filter.engines[usize::from(choice >> 1 & 1)];
        let Ok(mut reader) = CaptureReader::new(Cursor::new(capture), "fuzz") else { return };
        let (mut passed, mut dropped) = (Vec::new(), Vec::new());
        let mut outputs = Outputs {
            pass: Some(CaptureWriter::new(&mut passed, "pass")),
            drop: Some(CaptureWriter::new(&mut dropped, "drop")),
            ..Outputs::none()
        };
        let mut replay = Replay::new(engine, Options { ip_mode, ..Options::default() });
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
});
