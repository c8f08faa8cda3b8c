//! Captures, read and written one record at a time: classic pcap (micro- or
//! nanosecond timestamps, either byte order) and pcapng (any number of
//! sections and interfaces, each with its own link type).
//!
//! pcap-file parses the file header and the pcapng blocks. This module keeps
//! its own read buffer around it, for two reasons: every error can then name
//! the packet and the byte offset where it happened, and every record is
//! handed out as the bytes it has in the file, so an output written from
//! them is a byte-identical copy, timestamps and pcapng options included.

use std::io::{self, Read, Write};
use std::ops::Range;

use pcap_file::pcap::PcapHeader;
use pcap_file::pcapng::PcapNgParser;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::{
    ENHANCED_PACKET_BLOCK, INTERFACE_DESCRIPTION_BLOCK, PACKET_BLOCK, SECTION_HEADER_BLOCK, SIMPLE_PACKET_BLOCK,
};
use pcap_file::{Endianness, TsResolution};

const PCAP_HEADER_LEN: usize = 24;
pub(crate) const PCAP_RECORD_HEADER_LEN: usize = 16;
/// Block type, block length and, in a section header, the byte-order magic:
/// enough to know how long any block is.
const BLOCK_HEAD_LEN: usize = 12;
const SECTION_HEADER_MAGIC: u32 = 0x1A2B_3C4D;
/// The section length field of a section header block, as a byte range.
const SECTION_LENGTH: Range<usize> = 16..24;
/// libpcap refuses longer packet records in pcap files unless the snapshot
/// length says otherwise; a longer length is taken as corruption.
const PCAP_MAX_CAPTURED: u32 = 262_144;
/// The longest record or block read: a corrupt length must not make the
/// reader allocate gigabytes.
const MAX_RECORD_LEN: u32 = 16 << 20;
/// The pcap link-type field keeps FCS information in its upper bits.
const LINK_TYPE_MASK: u32 = 0xFFFF;
/// The read buffer: big enough that a replay makes few reads (one per 256
/// KiB), small enough to stay in the CPU's cache between the kernel's copy
/// into it and the replay's reads of it. Reads into it cost less than a map
/// of the file: on the 1M-packet benchmark, CPU time 28-36 ms against 32-42
/// ms on ext4, 35-38 ms against 58-63 ms on tmpfs (where the page cache
/// holds 4 KiB pages, whose faults and unmapping outweigh a copy), as a
/// mapped file's records are read from memory, not from the cache.
const READ_BUFFER_LEN: usize = 1 << 18;

/// Why a capture could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{file}: not a pcap or pcapng capture: {what}")]
    NotACapture { file: String, what: String },
    /// A record that is cut off or does not parse. `packet` counts from 1,
    /// as Wireshark numbers frames; in pcapng it is the packet that the next
    /// packet block would hold, whatever block the error is in.
    #[error("{file}: packet {packet} at byte offset {offset}: {what}")]
    Record { file: String, packet: u64, offset: u64, what: String },
    #[error("{file}: reading at byte offset {offset}: {error}")]
    Read { file: String, offset: u64, error: io::Error },
    #[error("{file}: {error}")]
    Write { file: String, error: io::Error },
}

/// What kind of file a capture is; outputs have the kind of their input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap(TsResolution),
    PcapNg,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Pcap(TsResolution::MicroSecond) => f.write_str("pcap, microsecond timestamps"),
            Format::Pcap(TsResolution::NanoSecond) => f.write_str("pcap, nanosecond timestamps"),
            Format::PcapNg => f.write_str("pcapng"),
        }
    }
}

/// One record of a capture, as the bytes it has in the file.
pub enum Record<'a> {
    /// The pcap file header, or a pcapng block that holds no packet
    /// (section header, interface description, statistics, names...):
    /// every output gets a copy, so each stays a valid capture of the same
    /// interfaces.
    Metadata(&'a [u8]),
    Packet(Packet<'a>),
}

pub struct Packet<'a> {
    /// Counting from 1.
    pub number: u64,
    /// What kind of record holds it, and in which byte order, so that it
    /// can be written again with other bytes ([`CaptureWriter::write_packet`]).
    pub kind: RecordKind,
    pub endianness: Endianness,
    /// Where the record starts in the file.
    pub offset: u64,
    pub link_type: u32,
    /// When the packet was captured, in nanoseconds since the epoch (as the
    /// record's resolution gives it; 0 for a pcapng simple packet block).
    pub timestamp_ns: u64,
    /// The captured bytes of the frame.
    pub data: &'a [u8],
    /// The whole record: header, data and (in pcapng) options.
    pub record: &'a [u8],
}

impl Packet<'_> {
    /// The packet's length on the wire, as its record says.
    pub fn original_len(&self) -> u32 {
        match self.kind {
            RecordKind::Pcap => read_u32(self.record, 12, self.endianness),
            // After block type and length, interface and timestamp (12
            // bytes) and the captured length; the reader checked that the
            // body holds its 20-byte header.
            RecordKind::EnhancedPacket | RecordKind::ObsoletePacket => read_u32(self.record, 24, self.endianness),
            RecordKind::SimplePacket => read_u32(self.record, 8, self.endianness),
        }
    }

    /// The record's original length (on the wire) less its captured one:
    /// the bytes a snapshot length cut off, or less than 0 in a record that
    /// claims fewer bytes on the wire than it holds.
    pub fn beyond_capture(&self) -> i64 {
        i64::from(self.original_len()) - self.data.len() as i64
    }
}

/// The kinds of record that hold a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A classic pcap packet record.
    Pcap,
    /// A pcapng Enhanced Packet Block.
    EnhancedPacket,
    /// The obsolete pcapng Packet Block.
    ObsoletePacket,
    /// A pcapng Simple Packet Block.
    SimplePacket,
}

/// Reads a capture record by record, holding one buffer however long the
/// capture is.
pub struct CaptureReader<R> {
    file: String,
    input: Input<R>,
    format: FormatState,
    packets: u64,
    /// The last section header handed out, with its section length
    /// forgotten (see [`forget_section_length`]).
    section_header: Vec<u8>,
}

enum FormatState {
    /// `link_type` is the header's, without its FCS bits; `limit` the
    /// longest captured length taken as not corrupt.
    Pcap { header: PcapHeader, link_type: u32, limit: u32, header_pending: bool },
    /// The parser exists once the first section header has been read.
    PcapNg { parser: Option<PcapNgParser> },
}

impl<R: Read> CaptureReader<R> {
    /// Starts reading `source`; `file` names it in errors.
    pub fn new(source: R, file: impl Into<String>) -> Result<CaptureReader<R>, CaptureError> {
        CaptureReader::start(Input::new(source), file.into())
    }

    /// Finds the format from the first bytes of `input`.
    fn start(mut input: Input<R>, file: String) -> Result<CaptureReader<R>, CaptureError> {
        let not_a_capture = |what: String| CaptureError::NotACapture { file: file.clone(), what };
        let available = input.fill(PCAP_HEADER_LEN).map_err(|error| read_error(&file, 0, error))?;
        let start = input.peek(available.min(4));
        let format = match start {
            [] => return Err(not_a_capture("the file is empty".into())),
            [0x0A, 0x0D, 0x0D, 0x0A] => FormatState::PcapNg { parser: None },
            [0xA1, 0xB2, 0xC3, 0xD4]
            | [0xD4, 0xC3, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0x3C, 0x4D]
            | [0x4D, 0x3C, 0xB2, 0xA1] => {
                if available < PCAP_HEADER_LEN {
                    return Err(not_a_capture(format!(
                        "the pcap file header is cut off after {available} of its {PCAP_HEADER_LEN} bytes"
                    )));
                }
                let (_, header) = PcapHeader::from_slice(input.peek(PCAP_HEADER_LEN))
                    .map_err(|error| not_a_capture(format!("pcap file header: {error}")))?;
                let link_type = u32::from(header.datalink) & LINK_TYPE_MASK;
                let limit = header.snaplen.clamp(PCAP_MAX_CAPTURED, MAX_RECORD_LEN);
                FormatState::Pcap { header, link_type, limit, header_pending: true }
            }
            _ => {
                let hex: Vec<String> = start.iter().map(|byte| format!("{byte:02x}")).collect();
                return Err(not_a_capture(format!(
                    "it starts with {}, neither a pcap magic number (a1b2c3d4, a1b23c4d, either byte order) \
                     nor a pcapng section header (0a0d0d0a)",
                    hex.join(" ")
                )));
            }
        };
        Ok(CaptureReader { file, input, format, packets: 0, section_header: Vec::new() })
    }

    /// The name errors give the capture.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn format(&self) -> Format {
        match &self.format {
            FormatState::Pcap { header, .. } => Format::Pcap(header.ts_resolution),
            FormatState::PcapNg { .. } => Format::PcapNg,
        }
    }

    /// Bytes of the file read and handed out so far.
    pub fn offset(&self) -> u64 {
        self.input.offset
    }

    /// The next record, or `None` at the end of the file.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        match self.pcap_packet_at() {
            Some(at) => Ok(Some(Record::Packet(self.pcap_packet(at)))),
            None => self.next_any_record(),
        }
    }

    /// The next record if it is a classic pcap packet record, whole in the
    /// input and sound: the common case, small enough to inline into a
    /// replay's loop, where it spares building a `Result<Option<Record>>`.
    /// `None` leaves the record, whatever it is, to
    /// [`CaptureReader::next_record`].
    #[inline]
    pub(crate) fn next_pcap_packet(&mut self) -> Option<Packet<'_>> {
        let at = self.pcap_packet_at()?;
        Some(self.pcap_packet(at))
    }

    #[inline]
    fn pcap_packet(&self, at: PcapPacketAt) -> Packet<'_> {
        let record = &self.input.bytes()[at.record];
        Packet {
            number: at.number,
            kind: RecordKind::Pcap,
            endianness: at.endianness,
            offset: at.offset,
            link_type: at.link_type,
            timestamp_ns: at.timestamp_ns,
            data: &record[PCAP_RECORD_HEADER_LEN..],
            record,
        }
    }

    /// The classic pcap packet records that lie whole and sound in the read
    /// buffer, to be handed out one after the other without a [`Packet`]
    /// each (a replay's loop); `None` unless the file is classic pcap past
    /// its header. [`CaptureReader::take_pcap_batch`] then takes those that
    /// were handed out.
    #[inline]
    pub(crate) fn pcap_batch(&self) -> Option<PcapBatch<'_>> {
        let FormatState::Pcap { header, link_type, limit, header_pending: false } = &self.format else {
            return None;
        };
        Some(PcapBatch {
            bytes: &self.input.bytes()[self.input.start..self.input.end],
            at: 0,
            records: 0,
            header,
            link_type: *link_type,
            limit: *limit,
            number: self.packets + 1,
            offset: self.input.offset,
        })
    }

    /// Takes the records of a batch of this reader that it handed out.
    #[inline]
    pub(crate) fn take_pcap_batch(&mut self, taken: BatchTaken) {
        self.input.take(taken.bytes);
        self.packets += taken.records;
    }

    /// Takes the record [`CaptureReader::next_pcap_packet`] returns.
    #[inline]
    fn pcap_packet_at(&mut self) -> Option<PcapPacketAt> {
        let FormatState::Pcap { header, link_type, limit, header_pending: false } = &self.format else {
            return None;
        };
        let available = self.input.bytes().get(self.input.start..self.input.end)?;
        let head = available.get(..PCAP_RECORD_HEADER_LEN)?;
        let captured = read_u32(head, 8, header.endianness);
        let record_len = PCAP_RECORD_HEADER_LEN + captured as usize;
        if captured > *limit || available.len() < record_len {
            return None;
        }
        let packet = PcapPacketAt {
            number: self.packets + 1,
            endianness: header.endianness,
            offset: self.input.offset,
            link_type: *link_type,
            timestamp_ns: pcap_timestamp(head, header),
            record: self.input.take(record_len),
        };
        self.packets = packet.number;
        Some(packet)
    }

    fn next_any_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        let offset = self.input.offset;
        let number = self.packets + 1;
        let record_error =
            |file: &str, what: String| CaptureError::Record { file: file.into(), packet: number, offset, what };

        if let FormatState::Pcap { header_pending: pending @ true, .. } = &mut self.format {
            *pending = false;
            let range = self.input.take(PCAP_HEADER_LEN);
            return Ok(Some(Record::Metadata(&self.input.bytes()[range])));
        }
        let head_len = match self.format {
            FormatState::Pcap { .. } => PCAP_RECORD_HEADER_LEN,
            FormatState::PcapNg { .. } => BLOCK_HEAD_LEN,
        };
        let available = self.input.fill(head_len).map_err(|error| read_error(&self.file, offset, error))?;
        if available == 0 {
            return Ok(None);
        }
        if available < head_len {
            let what = format!("truncated: the file ends {available} bytes into the {head_len}-byte record header");
            return Err(record_error(&self.file, what));
        }
        let record_len =
            self.format.record_len(self.input.peek(head_len)).map_err(|what| record_error(&self.file, what))?;
        let available = self.input.fill(record_len).map_err(|error| read_error(&self.file, offset, error))?;
        if available < record_len {
            let what = format!("truncated: the file ends {available} bytes into this {record_len}-byte record");
            return Err(record_error(&self.file, what));
        }
        let range = self.input.take(record_len);
        let record = &self.input.bytes()[range];
        let parsed = match &mut self.format {
            FormatState::Pcap { link_type, header, .. } => Ok(Parsed::Packet {
                kind: RecordKind::Pcap,
                endianness: header.endianness,
                link_type: *link_type,
                timestamp_ns: pcap_timestamp(record, header),
                data: PCAP_RECORD_HEADER_LEN..record.len(),
            }),
            FormatState::PcapNg { parser } => pcapng_record(parser, record),
        };
        match parsed.map_err(|what| record_error(&self.file, what))? {
            Parsed::Metadata => Ok(Some(Record::Metadata(record))),
            Parsed::SectionHeader => {
                self.section_header.clear();
                self.section_header.extend_from_slice(record);
                forget_section_length(&mut self.section_header);
                Ok(Some(Record::Metadata(&self.section_header)))
            }
            Parsed::Packet { kind, endianness, link_type, timestamp_ns, data } => {
                self.packets = number;
                Ok(Some(Record::Packet(Packet {
                    number,
                    kind,
                    endianness,
                    offset,
                    link_type,
                    timestamp_ns,
                    data: &record[data],
                    record,
                })))
            }
        }
    }
}

/// A pcap packet record found by [`CaptureReader::pcap_packet_at`]:
/// what its [`Packet`] holds, with the record as a range of the input.
struct PcapPacketAt {
    number: u64,
    endianness: Endianness,
    offset: u64,
    link_type: u32,
    timestamp_ns: u64,
    record: Range<usize>,
}

/// Classic pcap packet records whole in a reader's buffer, handed out as
/// the bytes they have in the file ([`CaptureReader::pcap_batch`]).
pub(crate) struct PcapBatch<'a> {
    /// The unread bytes of the buffer.
    bytes: &'a [u8],
    /// Where the next record starts in `bytes`.
    at: usize,
    /// Records handed out.
    records: u64,
    header: &'a PcapHeader,
    link_type: u32,
    limit: u32,
    /// The first record's packet number and file offset.
    number: u64,
    offset: u64,
}

/// How much of a batch was handed out.
pub(crate) struct BatchTaken {
    records: u64,
    bytes: usize,
}

impl<'a> PcapBatch<'a> {
    /// The link type of every packet in the batch.
    pub(crate) fn link_type(&self) -> u32 {
        self.link_type
    }

    /// The next record, as where it starts in the batch, its header and
    /// its captured bytes; `None` at the first record not whole in the
    /// buffer or longer than the limit (which [`CaptureReader::next_record`]
    /// reports).
    #[inline]
    pub(crate) fn next(&mut self) -> Option<(usize, &'a [u8; PCAP_RECORD_HEADER_LEN], &'a [u8])> {
        let at = self.at;
        let (head, rest) = self.bytes.get(at..)?.split_first_chunk::<PCAP_RECORD_HEADER_LEN>()?;
        let captured = read_u32(head, 8, self.header.endianness);
        if captured > self.limit {
            return None;
        }
        let data = rest.get(..captured as usize)?;
        self.at = at + PCAP_RECORD_HEADER_LEN + data.len();
        self.records += 1;
        Some((at, head, data))
    }

    /// Where the next record starts in the batch.
    #[inline]
    pub(crate) fn at(&self) -> usize {
        self.at
    }

    /// Records handed out, from where one starts up to where another
    /// starts (or [`PcapBatch::at`]).
    #[inline]
    pub(crate) fn records(&self, range: Range<usize>) -> &'a [u8] {
        &self.bytes[range]
    }

    /// The capture time of the record with header `head`, in nanoseconds.
    #[inline]
    pub(crate) fn timestamp_ns(&self, head: &[u8]) -> u64 {
        pcap_timestamp(head, self.header)
    }

    /// [`Packet::beyond_capture`] of the record whose header is `head`.
    #[inline]
    pub(crate) fn beyond_capture(&self, head: &[u8]) -> i64 {
        let endianness = self.header.endianness;
        i64::from(read_u32(head, 12, endianness)) - i64::from(read_u32(head, 8, endianness))
    }

    /// The packet number and the file offset of the last record handed
    /// out, which starts at `at`.
    pub(crate) fn place(&self, at: usize) -> (u64, u64) {
        (self.number + self.records - 1, self.offset + at as u64)
    }

    /// The records and bytes handed out: the captured bytes of the packets
    /// are all of them but the record headers.
    pub(crate) fn taken(&self) -> BatchTaken {
        BatchTaken { records: self.records, bytes: self.at }
    }
}

impl BatchTaken {
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// The captured bytes of the packets taken.
    pub(crate) fn captured_bytes(&self) -> u64 {
        (self.bytes - self.records as usize * PCAP_RECORD_HEADER_LEN) as u64
    }
}

/// The capture time of the pcap record that starts with `head`, in
/// nanoseconds.
#[inline]
fn pcap_timestamp(head: &[u8], header: &PcapHeader) -> u64 {
    let seconds = u64::from(read_u32(head, 0, header.endianness));
    let fraction = u64::from(read_u32(head, 4, header.endianness));
    let fraction_ns = match header.ts_resolution {
        TsResolution::MicroSecond => fraction * 1000,
        TsResolution::NanoSecond => fraction,
    };
    seconds * 1_000_000_000 + fraction_ns
}

/// A record's kind, with where its frame lies in it.
enum Parsed {
    Metadata,
    /// Metadata that outputs get with its section length forgotten.
    SectionHeader,
    Packet {
        kind: RecordKind,
        endianness: Endianness,
        link_type: u32,
        timestamp_ns: u64,
        data: Range<usize>,
    },
}

impl FormatState {
    /// The length of the record whose first bytes are `head`.
    fn record_len(&self, head: &[u8]) -> Result<usize, String> {
        match self {
            FormatState::Pcap { header, limit, .. } => {
                let captured = read_u32(head, 8, header.endianness);
                if captured > *limit {
                    return Err(format!(
                        "corrupt record: captured length {captured} is more than the limit of {limit} bytes"
                    ));
                }
                Ok(PCAP_RECORD_HEADER_LEN + captured as usize)
            }
            FormatState::PcapNg { parser } => {
                let block_type = read_u32(head, 0, Endianness::Little);
                let endianness = if block_type == SECTION_HEADER_BLOCK {
                    match read_u32(head, 8, Endianness::Big) {
                        SECTION_HEADER_MAGIC => Endianness::Big,
                        magic if magic.swap_bytes() == SECTION_HEADER_MAGIC => Endianness::Little,
                        magic => return Err(format!("corrupt section header: byte-order magic {magic:#010x}")),
                    }
                } else {
                    match parser {
                        Some(parser) => parser.section().endianness,
                        None => return Err("corrupt pcapng: the file does not start with a section header".into()),
                    }
                };
                let len = read_u32(head, 4, endianness);
                if len < BLOCK_HEAD_LEN as u32 || len % 4 != 0 || len > MAX_RECORD_LEN {
                    return Err(format!(
                        "corrupt block: length {len} is not a multiple of 4 from {BLOCK_HEAD_LEN} to {MAX_RECORD_LEN}"
                    ));
                }
                Ok(len as usize)
            }
        }
    }
}

/// A whole pcapng block: a packet, or metadata that `parser` takes note of
/// (a section header starts a section, an interface description adds an
/// interface).
fn pcapng_record(parser: &mut Option<PcapNgParser>, record: &[u8]) -> Result<Parsed, String> {
    let corrupt = |error: pcap_file::PcapError| format!("corrupt block: {error}");
    let Some(parser) = parser else {
        *parser = Some(PcapNgParser::new(record).map_err(corrupt)?.1);
        return Ok(Parsed::SectionHeader);
    };
    let (_, block) = parser.next_raw_block(record).map_err(corrupt)?;
    let endianness = parser.section().endianness;
    let body = &block.body;
    // Where the body starts in the record: after block type and length.
    const BODY: usize = 8;
    let (kind, interface, captured, data_at) = match block.type_ {
        ENHANCED_PACKET_BLOCK | PACKET_BLOCK if body.len() < 20 => {
            return Err(format!("corrupt packet block: its body is {} bytes, less than 20", body.len()));
        }
        ENHANCED_PACKET_BLOCK => {
            (RecordKind::EnhancedPacket, read_u32(body, 0, endianness), read_u32(body, 12, endianness), 20)
        }
        // The obsolete Packet Block: a 16-bit interface, then a drop count.
        PACKET_BLOCK => {
            (RecordKind::ObsoletePacket, u32::from(read_u16(body, 0, endianness)), read_u32(body, 12, endianness), 20)
        }
        SIMPLE_PACKET_BLOCK if body.len() < 4 => return Err("corrupt simple packet block: no length".into()),
        SIMPLE_PACKET_BLOCK => {
            // It holds the packet up to the interface's snapshot length.
            let original = read_u32(body, 0, endianness);
            let snaplen = parser.interfaces().first().map_or(0, |interface| interface.snaplen);
            (RecordKind::SimplePacket, 0, if snaplen == 0 { original } else { original.min(snaplen) }, 4)
        }
        SECTION_HEADER_BLOCK => return Ok(Parsed::SectionHeader),
        _ => return Ok(Parsed::Metadata),
    };
    let interfaces = parser.interfaces();
    let description = interfaces.get(interface as usize).ok_or_else(|| {
        format!(
            "corrupt packet block: interface {interface}, but the section describes {} interfaces",
            interfaces.len()
        )
    })?;
    let link_type = u32::from(description.linktype);
    let timestamp_ns = match block.type_ {
        ENHANCED_PACKET_BLOCK | PACKET_BLOCK => {
            let units = u64::from(read_u32(body, 4, endianness)) << 32 | u64::from(read_u32(body, 8, endianness));
            to_nanoseconds(units, description)
        }
        _ => 0,
    };
    let room = body.len() - data_at;
    if captured as usize > room {
        return Err(format!("corrupt packet block: captured length {captured}, but the block has room for {room}"));
    }
    let start = BODY + data_at;
    Ok(Parsed::Packet { kind, endianness, link_type, timestamp_ns, data: start..start + captured as usize })
}

/// A pcapng timestamp in nanoseconds: `units` of the interface's
/// resolution (`if_tsresol`: 10^-n, or 2^-n with the top bit; 10^-6 when
/// absent).
fn to_nanoseconds(units: u64, interface: &InterfaceDescriptionBlock) -> u64 {
    let resolution = interface.options.iter().find_map(|option| match option {
        InterfaceDescriptionOption::IfTsResol(resolution) => Some(*resolution),
        _ => None,
    });
    match resolution.unwrap_or(6) {
        power if power & 0x80 != 0 => {
            let shift = u32::from(power & 0x7f);
            ((u128::from(units) * 1_000_000_000) >> shift.min(127)) as u64
        }
        power if power <= 9 => units.saturating_mul(10u64.pow(9 - u32::from(power))),
        power => units / 10u64.saturating_pow(u32::from(power) - 9),
    }
}

/// Sets a section header's length to -1, "not given": an output holds only
/// some of the section's blocks, so the input's length would be wrong there.
fn forget_section_length(section_header: &mut [u8]) {
    if let Some(length) = section_header.get_mut(SECTION_LENGTH) {
        length.fill(0xFF);
    }
}

#[inline]
fn read_u32(bytes: &[u8], at: usize, endianness: Endianness) -> u32 {
    let word = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    match endianness {
        Endianness::Big => u32::from_be_bytes(word),
        Endianness::Little => u32::from_le_bytes(word),
    }
}

fn read_u16(bytes: &[u8], at: usize, endianness: Endianness) -> u16 {
    let half = [bytes[at], bytes[at + 1]];
    match endianness {
        Endianness::Big => u16::from_be_bytes(half),
        Endianness::Little => u16::from_le_bytes(half),
    }
}

fn read_error(file: &str, offset: u64, error: io::Error) -> CaptureError {
    CaptureError::Read { file: file.into(), offset, error }
}

/// The bytes of the capture read but not yet handed out:
/// `buffer[start..end]`.
struct Input<R> {
    source: R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buffer[start]`.
    offset: u64,
}

impl<R: Read> Input<R> {
    fn new(source: R) -> Input<R> {
        Input { source, buffer: vec![0; READ_BUFFER_LEN], start: 0, end: 0, offset: 0 }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Reads until `len` bytes are available or the source ends, and returns
    /// how many are.
    #[inline]
    fn fill(&mut self, len: usize) -> io::Result<usize> {
        if self.end - self.start >= len {
            return Ok(self.end - self.start);
        }
        self.refill(len)
    }

    fn refill(&mut self, len: usize) -> io::Result<usize> {
        let buffer = &mut self.buffer;
        if self.start + len > buffer.len() {
            buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if len > buffer.len() {
                buffer.resize(len, 0);
            }
        }
        while self.end - self.start < len {
            match self.source.read(&mut buffer[self.end..]) {
                Ok(0) => break,
                Ok(read) => self.end += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(self.end - self.start)
    }

    /// The next `len` bytes, which [`Input::fill`] made available.
    fn peek(&self, len: usize) -> &[u8] {
        &self.bytes()[self.start..self.start + len]
    }

    /// Hands out the next `len` bytes, as a range of `bytes()`.
    #[inline]
    fn take(&mut self, len: usize) -> Range<usize> {
        let range = self.start..self.start + len;
        self.start += len;
        self.offset += len as u64;
        range
    }
}

/// Writes records to a capture of the input's format (or pcapng, see
/// [`CaptureWriter::pcapng`]). Each is written as the bytes it had in the
/// input, unless its packet is given other bytes.
pub struct CaptureWriter<W: Write> {
    file: String,
    out: W,
    /// Whether a pcap input's records become pcapng ones.
    pcapng: bool,
    /// A record rebuilt, reused from one to the next.
    scratch: Vec<u8>,
}

impl<W: Write> CaptureWriter<W> {
    /// `file` names the output in errors.
    pub fn new(out: W, file: impl Into<String>) -> CaptureWriter<W> {
        CaptureWriter { file: file.into(), out, pcapng: false, scratch: Vec::new() }
    }

    /// A writer of pcapng whatever the input, so that every packet can
    /// carry a comment: a pcap file header becomes a section (little-endian)
    /// with one interface of its link type and snapshot length, timestamps
    /// in nanoseconds, and each pcap record an enhanced packet block on it.
    /// A pcapng input is written as [`CaptureWriter::new`] writes it.
    pub fn pcapng(out: W, file: impl Into<String>) -> CaptureWriter<W> {
        CaptureWriter { pcapng: true, ..CaptureWriter::new(out, file) }
    }

    pub fn write(&mut self, record: &[u8]) -> Result<(), CaptureError> {
        self.out.write_all(record).map_err(|error| self.error(error))
    }

    /// A metadata record of a capture of `format`.
    pub fn write_metadata(&mut self, record: &[u8], format: Format) -> Result<(), CaptureError> {
        match format {
            Format::Pcap(_) if self.pcapng => {
                let mut section = std::mem::take(&mut self.scratch);
                section.clear();
                section_from_pcap_header(record, &mut section);
                let written = self.write(&section);
                self.scratch = section;
                written
            }
            _ => self.write(record),
        }
    }

    /// `packet` with `data` as its bytes, and `comment` as its `opt_comment`
    /// (a pcapng record's; a pcap record has no room for one, so a writer
    /// that keeps pcap leaves it out). The bytes not captured stay so: the
    /// original length grows or shrinks with the captured one. In pcapng,
    /// every packet record becomes an enhanced packet block (a simple packet
    /// block's on interface 0, at time 0), with the options it had, less a
    /// hash of bytes that changed. A packet unchanged, without comment and
    /// in its own format is written as the record it was.
    pub fn write_packet(&mut self, packet: &Packet, data: &[u8], comment: Option<&str>) -> Result<(), CaptureError> {
        let to_pcapng = self.pcapng && packet.kind == RecordKind::Pcap;
        if data == packet.data && comment.is_none() && !to_pcapng {
            return self.write(packet.record);
        }
        let mut record = std::mem::take(&mut self.scratch);
        record.clear();
        match packet.kind {
            RecordKind::Pcap if !self.pcapng => pcap_record(packet, data, &mut record),
            _ => enhanced_packet_block(packet, data, comment, &mut record),
        }
        let written = self.write(&record);
        self.scratch = record;
        written
    }

    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.out.flush().map_err(|error| self.error(error))
    }

    fn error(&self, error: io::Error) -> CaptureError {
        CaptureError::Write { file: self.file.clone(), error }
    }
}

/// pcapng option codes.
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
/// `epb_hash`, and the obsolete packet block's `pack_hash`.
const EPB_HASH: u16 = 3;
const IF_TSRESOL: u16 = 9;
/// `if_tsresol` for nanoseconds: 10^-9.
const NANOSECONDS: u8 = 9;

fn put_u16(out: &mut Vec<u8>, value: u16, endianness: Endianness) {
    out.extend(match endianness {
        Endianness::Big => value.to_be_bytes(),
        Endianness::Little => value.to_le_bytes(),
    });
}

fn put_u32(out: &mut Vec<u8>, value: u32, endianness: Endianness) {
    out.extend(match endianness {
        Endianness::Big => value.to_be_bytes(),
        Endianness::Little => value.to_le_bytes(),
    });
}

/// Bytes, then zeros up to a multiple of 4.
fn put_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(bytes);
    out.resize(out.len() + bytes.len().next_multiple_of(4) - bytes.len(), 0);
}

fn put_option(out: &mut Vec<u8>, code: u16, value: &[u8], endianness: Endianness) {
    put_u16(out, code, endianness);
    put_u16(out, value.len() as u16, endianness);
    put_padded(out, value);
}

/// The options of a block, up to `opt_endofopt` or the first that does not
/// fit.
fn options(mut bytes: &[u8], endianness: Endianness) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < 4 {
            return None;
        }
        let (code, len) = (read_u16(bytes, 0, endianness), usize::from(read_u16(bytes, 2, endianness)));
        let value = bytes.get(4..4 + len).filter(|_| code != OPT_ENDOFOPT)?;
        bytes = bytes.get(4 + len.next_multiple_of(4)..).unwrap_or_default();
        Some((code, value))
    })
}

/// A pcap packet record with `data` in place of `packet`'s bytes.
fn pcap_record(packet: &Packet, data: &[u8], out: &mut Vec<u8>) {
    let (head, endianness) = (&packet.record[..PCAP_RECORD_HEADER_LEN], packet.endianness);
    let uncaptured = read_u32(head, 12, endianness).saturating_sub(read_u32(head, 8, endianness));
    let captured = data.len() as u32;
    out.extend(&head[..8]);
    put_u32(out, captured, endianness);
    put_u32(out, captured.saturating_add(uncaptured), endianness);
    out.extend(data);
}

/// An enhanced packet block for `packet` with `data` as its bytes (see
/// [`CaptureWriter::write_packet`]), in the byte order of its section: the
/// input's, or little-endian for a pcap record's.
fn enhanced_packet_block(packet: &Packet, data: &[u8], comment: Option<&str>, out: &mut Vec<u8>) {
    let input = packet.endianness;
    let record = packet.record;
    let (endianness, interface, timestamp, captured, original, old_options) = match packet.kind {
        RecordKind::Pcap => {
            let head = &record[..PCAP_RECORD_HEADER_LEN];
            (Endianness::Little, 0, packet.timestamp_ns, read_u32(head, 8, input), packet.original_len(), &[][..])
        }
        RecordKind::EnhancedPacket | RecordKind::ObsoletePacket => {
            // The reader checked that the body holds its 20-byte header and
            // the captured bytes.
            let body = &record[8..record.len() - 4];
            let interface = match packet.kind {
                RecordKind::EnhancedPacket => read_u32(body, 0, input),
                _ => u32::from(read_u16(body, 0, input)),
            };
            let timestamp = u64::from(read_u32(body, 4, input)) << 32 | u64::from(read_u32(body, 8, input));
            let captured = read_u32(body, 12, input);
            let options = body.get(20 + (captured as usize).next_multiple_of(4)..).unwrap_or_default();
            (input, interface, timestamp, captured, packet.original_len(), options)
        }
        RecordKind::SimplePacket => (input, 0, 0, packet.data.len() as u32, packet.original_len(), &[][..]),
    };
    let new_len = data.len() as u32;
    put_u32(out, ENHANCED_PACKET_BLOCK, endianness);
    put_u32(out, 0, endianness); // the length, once known
    for word in [interface, (timestamp >> 32) as u32, timestamp as u32, new_len] {
        put_u32(out, word, endianness);
    }
    put_u32(out, original.saturating_sub(captured).saturating_add(new_len), endianness);
    put_padded(out, data);
    let options_at = out.len();
    for (code, value) in options(old_options, input) {
        if code != EPB_HASH || data == packet.data {
            put_option(out, code, value, endianness);
        }
    }
    if let Some(comment) = comment {
        put_option(out, OPT_COMMENT, comment.as_bytes(), endianness);
    }
    if out.len() > options_at {
        put_option(out, OPT_ENDOFOPT, &[], endianness);
    }
    let len = out.len() as u32 + 4;
    put_u32(out, len, endianness);
    let len_field = match endianness {
        Endianness::Big => len.to_be_bytes(),
        Endianness::Little => len.to_le_bytes(),
    };
    out[4..8].copy_from_slice(&len_field);
}

/// A section header and one interface description, for a pcap file header.
fn section_from_pcap_header(header: &[u8], out: &mut Vec<u8>) {
    let input = if header[..4] == [0xA1, 0xB2, 0xC3, 0xD4] || header[..4] == [0xA1, 0xB2, 0x3C, 0x4D] {
        Endianness::Big
    } else {
        Endianness::Little
    };
    let (snaplen, link_type) = (read_u32(header, 16, input), read_u32(header, 20, input) & LINK_TYPE_MASK);
    let little = Endianness::Little;
    const SECTION_HEADER_LEN: u32 = 28;
    for word in [SECTION_HEADER_BLOCK, SECTION_HEADER_LEN, SECTION_HEADER_MAGIC] {
        put_u32(out, word, little);
    }
    put_u16(out, 1, little); // version 1.0
    put_u16(out, 0, little);
    out.extend([0xFF; 8]); // section length: not given
    put_u32(out, SECTION_HEADER_LEN, little);
    const INTERFACE_LEN: u32 = 32;
    put_u32(out, INTERFACE_DESCRIPTION_BLOCK, little);
    put_u32(out, INTERFACE_LEN, little);
    put_u16(out, link_type as u16, little);
    put_u16(out, 0, little);
    put_u32(out, snaplen, little);
    put_option(out, IF_TSRESOL, &[NANOSECONDS], little);
    put_option(out, OPT_ENDOFOPT, &[], little);
    put_u32(out, INTERFACE_LEN, little);
}
