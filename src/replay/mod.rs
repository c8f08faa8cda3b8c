//! Replaying a capture through a program, with the outcome QEMU's
//! `filter-ubpf` would give the same packets. A filter's non-zero return
//! value drops a packet, zero passes it. An XDP program sees each frame
//! whole and returns an action, as the kernel runs it ([`crate::xdp`]):
//! XDP_PASS, XDP_TX and XDP_REDIRECT send the packet on as the program left
//! it, XDP_DROP and XDP_ABORTED drop it, and a run that faults is dropped as
//! the kernel drops an exception.
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

pub use capture::{CaptureError, CaptureReader, CaptureWriter, Format, Packet, Record, RecordKind};
use capture::{PCAP_RECORD_HEADER_LEN, PcapBatch};
pub use engine::{Engine, EngineKind};
pub use frame::{IpMode, UnsupportedLinkType};
pub use output::OutputFile;

use std::collections::BTreeMap;

use crate::error::{ExecError, ExecErrorKind};
use crate::helpers::builtin::{self, PacketFacts};
use crate::image::ProgramType;
use crate::interp::Stack;
use crate::isa;
use crate::xdp::{self, Action, BufferError, RxInfo};

/// How often, in packets, a replay reports its progress.
const PROGRESS_INTERVAL: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

/// How filters run; an XDP program sees whole frames and its faults are
/// dropped, so neither applies to it.
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

/// What a replay did. For a filter, `passed + dropped == packets`; the
/// skipped packets (no IPv4 with ip-mode on) are among the passed, and the
/// packets whose run faulted are among the dropped or the passed, as
/// [`Options::on_error`] says. For an XDP program, [`XdpCounts`] says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub packets: u64,
    pub passed: u64,
    pub dropped: u64,
    pub skipped: u64,
    /// A filter's faulted runs.
    pub errors: u64,
    /// An XDP program's outcomes.
    pub xdp: XdpCounts,
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

/// An XDP program's outcomes: `actions` and `faults` add up to the packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpCounts {
    /// Packets by the action they got, indexed by its value. XDP_ABORTED
    /// counts the return values past XDP_REDIRECT too, which the kernel
    /// handles as XDP_ABORTED.
    pub actions: [u64; Action::ALL.len()],
    /// Return values past XDP_REDIRECT, among the aborted.
    pub unknown_actions: u64,
    /// Redirected packets by target ifindex.
    pub redirects: BTreeMap<u32, u64>,
    /// Packets that got no action, dropped, by [`Fault::reason`].
    pub faults: BTreeMap<&'static str, u64>,
}

impl XdpCounts {
    pub fn action(&self, action: Action) -> u64 {
        self.actions[action as usize]
    }

    pub fn fault_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// Why a packet got no verdict or action of its program's own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The run stopped at a check: the kernel ends such a program with 0,
    /// which for XDP is XDP_ABORTED.
    #[error(transparent)]
    Run(#[from] ExecError),
    /// A frame XDP does not run on (as test_run refuses it).
    #[error(transparent)]
    Frame(#[from] BufferError),
    /// XDP_REDIRECT with no target set by `bpf_redirect`: the kernel's
    /// redirect fails, and the driver drops the packet.
    #[error("XDP_REDIRECT without a target: the program did not call bpf_redirect")]
    RedirectWithoutTarget,
}

impl Fault {
    /// A name for the kind of fault, as summaries count them.
    pub fn reason(&self) -> &'static str {
        match self {
            Fault::Run(error) => match error.kind {
                ExecErrorKind::OutOfBounds { .. }
                | ExecErrorKind::HelperMemory { .. }
                | ExecErrorKind::BadPacketPointer { .. }
                | ExecErrorKind::ShortContext { .. } => "out_of_bounds",
                ExecErrorKind::ReadOnly { .. } => "read_only",
                ExecErrorKind::UnknownHelper(_) => "unknown_helper",
                ExecErrorKind::BudgetExhausted(_) => "instruction_limit",
                ExecErrorKind::CallDepthExceeded(_) => "call_depth",
                ExecErrorKind::NotAMap { .. }
                | ExecErrorKind::NotARecord { .. }
                | ExecErrorKind::HelperArgument { .. } => "helper_argument",
            },
            Fault::Frame(BufferError::TooShort(_)) => "frame_too_short",
            Fault::Frame(BufferError::MultiBuffer(_)) => "multi_buffer",
            Fault::Frame(BufferError::BadMetadata(_)) => "bad_metadata",
            Fault::RedirectWithoutTarget => "redirect_without_target",
        }
    }
}

/// A fault, and on which packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketFault {
    pub packet: u64,
    pub offset: u64,
    pub error: Fault,
}

impl std::fmt::Display for PacketFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "packet {} at byte offset {}: {}", self.packet, self.offset, self.error)
    }
}

/// Where packets go, by outcome; any may be nowhere. Filters pass and drop
/// packets as they came in. XDP programs pass, transmit (XDP_TX) and
/// redirect packets as they left them, and drop them (XDP_DROP, XDP_ABORTED
/// and faults) as they came in; a redirected packet's comment names its
/// target, so its output should be [`CaptureWriter::pcapng`].
pub struct Outputs<W: Write> {
    pub pass: Option<CaptureWriter<W>>,
    pub drop: Option<CaptureWriter<W>>,
    pub tx: Option<CaptureWriter<W>>,
    pub redirect: Option<CaptureWriter<W>>,
}

impl<W: Write> Outputs<W> {
    pub fn none() -> Outputs<W> {
        Outputs { pass: None, drop: None, tx: None, redirect: None }
    }

    fn all(&mut self) -> impl Iterator<Item = &mut CaptureWriter<W>> {
        [&mut self.pass, &mut self.drop, &mut self.tx, &mut self.redirect].into_iter().flatten()
    }

    fn write_metadata(&mut self, record: &[u8], format: Format) -> Result<(), CaptureError> {
        for output in self.all() {
            output.write_metadata(record, format)?;
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
        for output in self.all() {
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
    #[error("link type {}: XDP programs run on Ethernet frames", frame::link_type_name(*.0))]
    NotEthernet(u32),
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
    /// A program that may write to its input runs on a copy of each
    /// packet, as the outputs must get the packet as it was; one buffer
    /// serves every packet.
    scratch: Vec<u8>,
    stack: Stack,
    /// Whether the program calls helpers, so may read the facts that each
    /// packet sets (capture time, length on the wire); setting them costs a
    /// call per packet for nothing otherwise.
    facts: bool,
    /// Whether the program is an XDP program.
    xdp: bool,
    /// An XDP program's buffer, made for the first packet and reused (see
    /// [`xdp::Buffer::load`]).
    xdp_buffer: Option<xdp::Buffer>,
}

impl<'a> Replay<'a> {
    pub fn new(engine: &'a Engine, options: Options) -> Replay<'a> {
        let facts = calls_helpers(engine);
        Replay {
            engine,
            by_link_type: &[],
            options,
            summary: Summary::default(),
            scratch: Vec::new(),
            stack: Stack::default(),
            facts,
            xdp: engine.program().program_type() == ProgramType::Xdp,
            xdp_buffer: None,
        }
    }

    /// A replay that runs each packet through the engine made for its link
    /// type (a packet of another link type is an error); `None` without
    /// engines. The engines run filters.
    pub fn per_link_type(engines: &'a [(u32, Engine)], options: Options) -> Option<Replay<'a>> {
        let (_, first) = engines.first()?;
        let mut replay = Replay::new(first, options);
        replay.by_link_type = engines;
        replay.facts = engines.iter().any(|(_, engine)| calls_helpers(engine));
        Some(replay)
    }

    /// What the replay did so far; after an error, everything before the
    /// record at fault.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Runs every packet of `reader` through the program and writes it to
    /// the output its verdict or action names, calling `progress` with the
    /// bytes read so far now and then. While a packet runs,
    /// `bpf_ktime_get_ns` gives its capture time, so that time-based state
    /// (rate limits) evolves as it did when the traffic was captured, and
    /// every replay agrees; and `wire_len` (classic BPF's `len`) its length
    /// on the wire, which a snapshot length may have cut short. The outputs
    /// are flushed however it ends; after an error they hold every record
    /// before the one at fault.
    pub fn run<R: Read, W: Write>(
        &mut self,
        reader: &mut CaptureReader<R>,
        outputs: &mut Outputs<W>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), CaptureError> {
        let started = Instant::now();
        let result = self.run_records(reader, outputs, progress);
        builtin::set_packet(None);
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
        let format = reader.format();
        loop {
            if !self.xdp {
                self.filter_batch(reader, outputs, progress)?;
            }
            if let Some(packet) = reader.next_pcap_packet() {
                self.packet(&packet, outputs, progress, &file)?;
                continue;
            }
            match reader.next_record()? {
                None => break,
                Some(Record::Metadata(bytes)) => outputs.write_metadata(bytes, format)?,
                Some(Record::Packet(packet)) => self.packet(&packet, outputs, progress, &file)?,
            }
        }
        progress(reader.offset());
        Ok(())
    }

    /// Runs a filter over the classic pcap records whole in the reader's
    /// buffer, if there are any, in a loop that builds no [`Packet`] (see
    /// [`filter_records`]). A record it cannot handle (cut off by the
    /// buffer's end, corrupt, of a link type without a program) ends the
    /// batch, and is left to [`Replay::packet`], which reports what is
    /// wrong with it.
    fn filter_batch<R: Read, W: Write>(
        &mut self,
        reader: &mut CaptureReader<R>,
        outputs: &mut Outputs<W>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), CaptureError> {
        let Some(mut batch) = reader.pcap_batch() else { return Ok(()) };
        let link_type = batch.link_type();
        let Some(engine) = self.engine_for(link_type) else { return Ok(()) };
        if frame::program_input(self.options.ip_mode, link_type, &[]).is_err() {
            return Ok(());
        }
        let how = BatchOptions { ip_mode: self.options.ip_mode, on_error: self.options.on_error, facts: self.facts };
        let (summary, stack, scratch) = (&mut self.summary, &mut self.stack, &mut self.scratch);
        // The runs are chosen once for the batch, and the loop made for
        // each kind, so that none of it is decided again per packet.
        let result = match engine.read_only(stack) {
            Some(runs) => filter_records(&mut batch, outputs, how, summary, |input| runs.run(input)),
            None => filter_records(&mut batch, outputs, how, summary, |input| {
                scratch.clear();
                scratch.extend_from_slice(input);
                engine.run(scratch, stack)
            }),
        };
        let taken = batch.taken();
        summary.packets += taken.records();
        summary.bytes += taken.captured_bytes();
        reader.take_pcap_batch(taken);
        progress(reader.offset());
        result
    }

    /// The engine that runs packets of `link_type`.
    #[inline]
    fn engine_for(&self, link_type: u32) -> Option<&'a Engine> {
        match self.by_link_type {
            [] => Some(self.engine),
            engines => engines.iter().find(|(engine_link_type, _)| *engine_link_type == link_type).map(|(_, e)| e),
        }
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
        let record_error = |error: PacketError| CaptureError::Record {
            file: file.into(),
            packet: packet.number,
            offset: packet.offset,
            what: error.to_string(),
        };
        if self.xdp {
            if packet.link_type != frame::link_type::ETHERNET {
                return Err(record_error(PacketError::NotEthernet(packet.link_type)));
            }
            self.xdp_packet(packet, outputs)?;
        } else {
            let verdict = self.verdict(packet).map_err(record_error)?;
            outputs.write_packet(verdict, packet.record)?;
        }
        if packet.number % PROGRESS_INTERVAL == 0 {
            progress(packet.offset + packet.record.len() as u64);
        }
        Ok(())
    }

    // Always inlined, as `packet` is: a call would save and restore
    // registers for every packet.
    #[inline(always)]
    fn verdict(&mut self, packet: &Packet) -> Result<Verdict, PacketError> {
        let engine = self.engine_for(packet.link_type).ok_or(PacketError::NoProgram(packet.link_type))?;
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
                if self.facts {
                    builtin::set_packet(Some(facts(packet)));
                }
                match run_filter(engine, input, &mut self.stack, &mut self.scratch) {
                    Ok(0) => Verdict::Pass,
                    Ok(_) => Verdict::Drop,
                    Err(error) => {
                        let (packet, offset) = (packet.number, packet.offset);
                        fault(summary, self.options.on_error, PacketFault { packet, offset, error: error.into() })
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

/// Runs a filter over `input`: in place when the engine can, else on a copy
/// in `scratch`, as the program may write to it and the outputs must get
/// the packet as it was.
#[inline(always)]
fn run_filter(engine: &Engine, input: &[u8], stack: &mut Stack, scratch: &mut Vec<u8>) -> Result<u64, ExecError> {
    if let Some(runs) = engine.read_only(stack) {
        return runs.run(input);
    }
    scratch.clear();
    scratch.extend_from_slice(input);
    engine.run(scratch, stack)
}

/// What [`filter_records`] needs of a replay's options.
#[derive(Clone, Copy)]
struct BatchOptions {
    ip_mode: IpMode,
    on_error: Verdict,
    /// Whether to set each packet's facts (see [`Replay::run`]).
    facts: bool,
}

/// Runs a filter, `run`, over the records of `batch` and writes them where
/// their verdicts send them: consecutive packets with the same verdict in
/// one piece, as they lie together in the batch. Counts the verdicts in
/// `summary` (the packets and bytes are left to the caller); on a write
/// error, stops with every record handed out counted.
#[inline(always)]
fn filter_records<W: Write>(
    batch: &mut PcapBatch,
    outputs: &mut Outputs<W>,
    how: BatchOptions,
    summary: &mut Summary,
    mut run: impl FnMut(&[u8]) -> Result<u64, ExecError>,
) -> Result<(), CaptureError> {
    let link_type = batch.link_type();
    let (mut dropped, mut skipped, mut records) = (0u64, 0u64, 0u64);
    // The records from `run_start` up to the current one all have
    // `run_verdict`, and are not written yet.
    let (mut run_start, mut run_verdict) = (0, Verdict::Pass);
    let mut written = Ok(());
    while let Some((at, head, data)) = batch.next() {
        records += 1;
        let verdict = match frame::program_input(how.ip_mode, link_type, data) {
            Ok(Some(input)) => {
                if how.facts {
                    set_record_facts(batch, head);
                }
                match run(input) {
                    Ok(0) => Verdict::Pass,
                    Ok(_) => Verdict::Drop,
                    Err(error) => {
                        let (packet, offset) = batch.place(at);
                        fault(summary, how.on_error, PacketFault { packet, offset, error: error.into() })
                    }
                }
            }
            // No error: `filter_batch` checked the link type.
            Ok(None) | Err(_) => {
                skipped += 1;
                Verdict::Pass
            }
        };
        dropped += u64::from(verdict == Verdict::Drop);
        if verdict != run_verdict {
            written = outputs.write_packet(run_verdict, batch.records(run_start..at));
            (run_start, run_verdict) = (at, verdict);
            if written.is_err() {
                break;
            }
        }
    }
    if written.is_ok() {
        written = outputs.write_packet(run_verdict, batch.records(run_start..batch.at()));
    }
    summary.dropped += dropped;
    summary.passed += records - dropped;
    summary.skipped += skipped;
    written
}

/// Sets the facts of the batch's record whose header is `head`. Out of
/// line: inlined, it costs the batch loop of a filter that calls no
/// helper two instructions a packet (callgrind), in registers it holds.
#[inline(never)]
fn set_record_facts(batch: &PcapBatch, head: &[u8; PCAP_RECORD_HEADER_LEN]) {
    let (time_ns, beyond_capture) = (batch.timestamp_ns(head), batch.beyond_capture(head));
    builtin::set_packet(Some(PacketFacts { time_ns, beyond_capture }));
}

/// Counts a filter's faulted run, and gives its verdict.
#[cold]
#[inline(never)]
fn fault(summary: &mut Summary, on_error: Verdict, fault: PacketFault) -> Verdict {
    summary.errors += 1;
    summary.first_error.get_or_insert(fault);
    on_error
}

/// An XDP program's outcome for one packet.
enum Outcome {
    Pass,
    Tx,
    Redirect {
        ifindex: u32,
    },
    /// XDP_DROP or XDP_ABORTED.
    Dropped(Action),
    Fault(Fault),
}

impl<'a> Replay<'a> {
    /// Runs an XDP program over one frame, laid out as test_run lays it out
    /// (with the loopback's first queue as where it came in), and writes it
    /// where its action sends it.
    #[inline]
    fn xdp_packet<W: Write>(&mut self, packet: &Packet, outputs: &mut Outputs<W>) -> Result<(), CaptureError> {
        let summary = &mut self.summary;
        summary.packets += 1;
        summary.bytes += packet.data.len() as u64;
        if self.facts {
            builtin::set_packet(Some(facts(packet)));
        }
        let placed = match &mut self.xdp_buffer {
            Some(buffer) => buffer.load(packet.data, &[], RxInfo::default()).map(|()| buffer),
            None => xdp::Buffer::new(packet.data, &[], RxInfo::default()).map(|new| self.xdp_buffer.insert(new)),
        };
        let (outcome, buffer) = match placed {
            Err(error) => (Outcome::Fault(error.into()), None),
            Ok(buffer) => (run_xdp(self.engine, &mut self.stack, buffer, &mut summary.xdp), Some(buffer)),
        };
        let counts = &mut summary.xdp;
        let left = buffer.as_ref().map_or(packet.data, |buffer| buffer.packet());
        match outcome {
            Outcome::Fault(fault) => {
                *counts.faults.entry(fault.reason()).or_default() += 1;
                let (number, offset) = (packet.number, packet.offset);
                summary.first_error.get_or_insert(PacketFault { packet: number, offset, error: fault });
                write_to(&mut outputs.drop, packet, packet.data, None)
            }
            Outcome::Dropped(action) => {
                counts.actions[action as usize] += 1;
                write_to(&mut outputs.drop, packet, packet.data, None)
            }
            Outcome::Pass => {
                counts.actions[Action::Pass as usize] += 1;
                write_to(&mut outputs.pass, packet, left, None)
            }
            Outcome::Tx => {
                counts.actions[Action::Tx as usize] += 1;
                write_to(&mut outputs.tx, packet, left, None)
            }
            Outcome::Redirect { ifindex } => {
                counts.actions[Action::Redirect as usize] += 1;
                *counts.redirects.entry(ifindex).or_default() += 1;
                let Some(output) = outputs.redirect.as_mut() else { return Ok(()) };
                let comment = format!("{} to ifindex {ifindex}", Action::Redirect.name());
                output.write_packet(packet, left, Some(&comment))
            }
        }
    }
}

/// Runs an XDP program over `buffer`, and names its outcome.
#[inline]
fn run_xdp(engine: &Engine, stack: &mut Stack, buffer: &mut xdp::Buffer, counts: &mut XdpCounts) -> Outcome {
    let retval = match buffer.run(|input| engine.run(input, stack)) {
        Ok(retval) => retval,
        Err(error) => return Outcome::Fault(error.into()),
    };
    match Action::from_retval(retval) {
        None => {
            counts.unknown_actions += 1;
            Outcome::Dropped(Action::Aborted)
        }
        Some(action @ (Action::Aborted | Action::Drop)) => Outcome::Dropped(action),
        Some(Action::Pass) => Outcome::Pass,
        Some(Action::Tx) => Outcome::Tx,
        Some(Action::Redirect) => match buffer.redirect_target() {
            Some(ifindex) => Outcome::Redirect { ifindex },
            None => Outcome::Fault(Fault::RedirectWithoutTarget),
        },
    }
}

fn write_to<W: Write>(
    output: &mut Option<CaptureWriter<W>>,
    packet: &Packet,
    data: &[u8],
    comment: Option<&str>,
) -> Result<(), CaptureError> {
    output.as_mut().map_or(Ok(()), |output| output.write_packet(packet, data, comment))
}

/// What a packet's record says of it beyond its bytes.
#[inline]
fn facts(packet: &Packet) -> PacketFacts {
    PacketFacts { time_ns: packet.timestamp_ns, beyond_capture: packet.beyond_capture() }
}

/// Does the engine's program call helpers (which may read the packet's
/// facts)?
fn calls_helpers(engine: &Engine) -> bool {
    engine
        .program()
        .insns()
        .iter()
        .any(|insn| (insn.opc == isa::CALL && insn.src != isa::CALL_LOCAL) || insn.opc == isa::CALLX)
}
