//! Replaying a capture through a filter, with the verdicts QEMU's
//! `filter-ubpf` would give the same packets: a non-zero return value drops
//! a packet, zero passes it.
//!
//! Stages, one module each: [`capture`] reads and writes pcap and pcapng
//! record by record, [`frame`] finds the bytes the program sees (ip-mode),
//! [`engine`] runs the program in the JIT or the interpreter, [`output`]
//! writes output files. [`Replay`] ties them together: it streams, so
//! memory stays flat however long the capture is.

pub mod capture;
pub mod engine;
pub mod frame;
pub mod output;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

pub use capture::{CaptureError, CaptureReader, CaptureWriter, Format, MappedCapture, Packet, Record};
pub use engine::{Engine, EngineKind};
pub use frame::{IpMode, UnsupportedLinkType};
pub use output::OutputFile;

use crate::error::ExecError;
use crate::helpers::builtin;
use crate::interp::Stack;
use crate::isa;

/// How often, in packets, a replay reports its progress.
const PROGRESS_INTERVAL: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub ip_mode: IpMode,
    /// The verdict for a packet whose run faults.
    pub on_error: Verdict,
}

impl Default for Options {
    fn default() -> Options {
        Options { ip_mode: IpMode::On, on_error: Verdict::Drop }
    }
}

/// What a replay did. `passed + dropped == packets`; the skipped packets
/// (no IPv4 with ip-mode on) are among the passed, and the packets whose
/// run faulted are among the dropped or the passed, as [`Options::on_error`]
/// says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub packets: u64,
    pub passed: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub errors: u64,
    /// Captured bytes of all packets, link-layer headers included.
    pub bytes: u64,
    /// Wall-clock time of the replay: reading, running and writing.
    pub elapsed: Duration,
    pub first_error: Option<PacketFault>,
}

impl Summary {
    pub fn packets_per_second(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn ns_per_packet(&self) -> f64 {
        if self.packets == 0 { 0.0 } else { self.elapsed.as_nanos() as f64 / self.packets as f64 }
    }
}

/// A run that faulted, and on which packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketFault {
    pub packet: u64,
    pub offset: u64,
    pub error: ExecError,
}

impl std::fmt::Display for PacketFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "packet {} at byte offset {}: {}", self.packet, self.offset, self.error)
    }
}

/// Where passed and dropped packets go; either may be nowhere.
pub struct Outputs<W: Write> {
    pub pass: Option<CaptureWriter<W>>,
    pub drop: Option<CaptureWriter<W>>,
}

impl<W: Write> Outputs<W> {
    pub fn none() -> Outputs<W> {
        Outputs { pass: None, drop: None }
    }

    fn write_metadata(&mut self, record: &[u8]) -> Result<(), CaptureError> {
        for output in [&mut self.pass, &mut self.drop].into_iter().flatten() {
            output.write(record)?;
        }
        Ok(())
    }

    fn write_packet(&mut self, verdict: Verdict, record: &[u8]) -> Result<(), CaptureError> {
        let output = match verdict {
            Verdict::Pass => &mut self.pass,
            Verdict::Drop => &mut self.drop,
        };
        output.as_mut().map_or(Ok(()), |output| output.write(record))
    }

    fn flush(&mut self) -> Result<(), CaptureError> {
        for output in [&mut self.pass, &mut self.drop].into_iter().flatten() {
            output.flush()?;
        }
        Ok(())
    }
}

/// Why a packet could not be given a verdict.
#[derive(Debug, thiserror::Error)]
enum PacketError {
    #[error(transparent)]
    Unsupported(#[from] UnsupportedLinkType),
    #[error("no program was made for link type {}", frame::link_type_name(*.0))]
    NoProgram(u32),
}

/// A replay of captures through one program, or one per link type.
pub struct Replay<'a> {
    engine: &'a Engine,
    /// With a program per link type (a tcpdump expression compiles for
    /// one), each packet runs the one for its link type; else `engine` runs
    /// every packet.
    by_link_type: &'a [(u32, Engine)],
    options: Options,
    summary: Summary,
    /// The program runs on a copy of each packet, as it may write to it,
    /// and the outputs must get the packet as it was; one buffer serves
    /// every packet.
    scratch: Vec<u8>,
    stack: Stack,
    /// Whether the program calls helpers, so may read the clock that each
    /// packet sets; setting it costs a call per packet for nothing otherwise.
    clock: bool,
}

impl<'a> Replay<'a> {
    pub fn new(engine: &'a Engine, options: Options) -> Replay<'a> {
        let clock = calls_helpers(engine);
        Replay {
            engine,
            by_link_type: &[],
            options,
            summary: Summary::default(),
            scratch: Vec::new(),
            stack: Stack::default(),
            clock,
        }
    }

    /// A replay that runs each packet through the engine made for its link
    /// type (a packet of another link type is an error); `None` without
    /// engines.
    pub fn per_link_type(engines: &'a [(u32, Engine)], options: Options) -> Option<Replay<'a>> {
        let (_, first) = engines.first()?;
        let mut replay = Replay::new(first, options);
        replay.by_link_type = engines;
        replay.clock = engines.iter().any(|(_, engine)| calls_helpers(engine));
        Some(replay)
    }

    /// What the replay did so far; after an error, everything before the
    /// record at fault.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Runs every packet of `reader` through the program and writes it to
    /// the output its verdict names, calling `progress` with the bytes read
    /// so far now and then. While a packet runs, `bpf_ktime_get_ns` gives
    /// its capture time, so that time-based state (rate limits) evolves as
    /// it did when the traffic was captured, and every replay agrees. The outputs are flushed however it ends; after
    /// an error they hold every record before the one at fault.
    pub fn run<R: Read, W: Write>(
        &mut self,
        reader: &mut CaptureReader<R>,
        outputs: &mut Outputs<W>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), CaptureError> {
        let started = Instant::now();
        let result = self.run_records(reader, outputs, progress);
        builtin::set_clock(None);
        self.summary.elapsed += started.elapsed();
        let flushed = outputs.flush();
        result.and(flushed)
    }

    fn run_records<R: Read, W: Write>(
        &mut self,
        reader: &mut CaptureReader<R>,
        outputs: &mut Outputs<W>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), CaptureError> {
        let file = reader.file().to_owned();
        loop {
            if let Some(packet) = reader.next_pcap_packet() {
                self.packet(&packet, outputs, progress, &file)?;
                continue;
            }
            match reader.next_record()? {
                None => break,
                Some(Record::Metadata(bytes)) => outputs.write_metadata(bytes)?,
                Some(Record::Packet(packet)) => self.packet(&packet, outputs, progress, &file)?,
            }
        }
        progress(reader.offset());
        Ok(())
    }

    // Always inlined: left to itself the compiler makes it a call, whose
    // register saves and stack traffic are paid for every packet.
    #[inline(always)]
    fn packet<W: Write>(
        &mut self,
        packet: &Packet,
        outputs: &mut Outputs<W>,
        progress: &mut dyn FnMut(u64),
        file: &str,
    ) -> Result<(), CaptureError> {
        let verdict = self.verdict(packet).map_err(|error| CaptureError::Record {
            file: file.into(),
            packet: packet.number,
            offset: packet.offset,
            what: error.to_string(),
        })?;
        outputs.write_packet(verdict, packet.record)?;
        if packet.number % PROGRESS_INTERVAL == 0 {
            progress(packet.offset + packet.record.len() as u64);
        }
        Ok(())
    }

    #[inline]
    fn verdict(&mut self, packet: &Packet) -> Result<Verdict, PacketError> {
        let engine = match self.by_link_type {
            [] => self.engine,
            engines => match engines.iter().find(|(link_type, _)| *link_type == packet.link_type) {
                Some((_, engine)) => engine,
                None => return Err(PacketError::NoProgram(packet.link_type)),
            },
        };
        let input = frame::program_input(self.options.ip_mode, packet.link_type, packet.data)?;
        let summary = &mut self.summary;
        summary.packets += 1;
        summary.bytes += packet.data.len() as u64;
        let verdict = match input {
            None => {
                summary.skipped += 1;
                Verdict::Pass
            }
            Some(input) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(input);
                if self.clock {
                    builtin::set_clock(Some(packet.timestamp_ns));
                }
                match engine.run(&mut self.scratch, &mut self.stack) {
                    Ok(0) => Verdict::Pass,
                    Ok(_) => Verdict::Drop,
                    Err(error) => {
                        summary.errors += 1;
                        summary.first_error.get_or_insert(PacketFault {
                            packet: packet.number,
                            offset: packet.offset,
                            error,
                        });
                        self.options.on_error
                    }
                }
            }
        };
        match verdict {
            Verdict::Pass => summary.passed += 1,
            Verdict::Drop => summary.dropped += 1,
        }
        Ok(verdict)
    }
}

/// Does the engine's program call helpers (which may read the clock)?
fn calls_helpers(engine: &Engine) -> bool {
    engine
        .program()
        .insns()
        .iter()
        .any(|insn| (insn.opc == isa::CALL && insn.src != isa::CALL_LOCAL) || insn.opc == isa::CALLX)
}
