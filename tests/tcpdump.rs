//! tcpdump and tshark as the oracle for `qemu-ubpf replay`:
//!
//! - for each example filter and sample capture, the packets replay drops
//!   are exactly those tcpdump selects with the filter's equivalent
//!   expression (bytes, lengths and timestamps);
//! - the output files read back identically with tcpdump and tshark: the
//!   passed and the dropped packets, merged, are the input's;
//! - pcapng files that Wireshark's tools wrote replay the same way.
//!
//! Without tcpdump, tshark or editcap these tests fail when `CI` is set,
//! and otherwise pass after printing a note that they skipped.

mod common;
use common::{example, is_interleaving, sample, scratch_dir};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};

/// Every sample capture of examples/captures/ with one link type, which
/// tcpdump can read.
const SINGLE_LINK_SAMPLES: [&str; 5] =
    ["ethernet.pcap", "ethernet-nanosecond-be-snaplen96.pcap", "raw-ip.pcap", "linux-sll.pcap", "linux-sll2.pcap"];
const MULTI_LINK_SAMPLE: &str = "multi-interface.pcapng";

/// ip-mode on gives the program an IPv4 header with IHL >= 5 only if it
/// starts with version 4; the filters check both.
const IPV4: &str = "ip[0] & 0xf0 = 0x40 and ip[0] & 0x0f >= 5";

/// The names examples/dns_blocklist.c drops queries for.
const DNS_BLOCKLIST: [&str; 3] = ["ads.example.net", "tracker.example.org", "malware.test"];

/// An example filter and the tcpdump expression that selects the packets it
/// drops, for a link layer without VLAN tags.
struct Example {
    name: &'static str,
    expression: String,
}

fn examples() -> Vec<Example> {
    let names: Vec<String> = DNS_BLOCKLIST.iter().map(|name| format!("({})", dns_name_expression(name))).collect();
    vec![
        Example { name: "drop_1_1_1_1", expression: "ip[0] & 0xf0 = 0x40 and ip dst host 1.1.1.1".into() },
        Example {
            name: "firewall",
            expression: format!(
                "{IPV4} and ((ip dst host 192.0.2.10 and tcp dst port 22) \
                 or (ip dst net 192.0.2.0/24 and tcp dst port 23) \
                 or (ip dst net 198.51.100.0/24 and udp dst port 161) or tcp dst port 3389)"
            ),
        },
        Example {
            name: "dns_blocklist",
            expression: format!("{IPV4} and udp dst port 53 and udp[10] & 0x80 = 0 and ({})", names.join(" or ")),
        },
    ]
}

/// The first question's name equals `name`, as examples/dns_blocklist.c
/// compares: in wire format from udp[20], character bytes with bit 0x20
/// set, four bytes at a time.
fn dns_name_expression(name: &str) -> String {
    let mut wire = Vec::new();
    let mut case = Vec::new();
    for label in name.split('.') {
        wire.push(label.len() as u8);
        case.push(0);
        wire.extend(label.bytes());
        case.extend(label.bytes().map(|_| 0x20));
    }
    wire.push(0);
    case.push(0);
    let mut terms = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let size = match wire.len() - at {
            1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
        let (value, mask) = (hex(&wire[at..at + size]), hex(&case[at..at + size]));
        let field = format!("udp[{}:{size}]", 20 + at);
        terms.push(if mask.bytes().all(|digit| digit == b'0') {
            format!("{field} = 0x{value}")
        } else {
            format!("{field} | 0x{mask} = 0x{value}")
        });
        at += size;
    }
    terms.join(" and ")
}

/// `expression` for a link type: on Ethernet, ip-mode skips one VLAN tag,
/// and libpcap's `vlan` must be said to do so too.
fn for_link(expression: &str, link_type: u32) -> String {
    match link_type {
        1 => format!("({expression}) or (vlan and ({expression}))"),
        _ => expression.to_owned(),
    }
}

/// Are `tools` all installed? A missing one fails the test under CI and
/// skips it, with a note on stderr, elsewhere.
fn tools_installed(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> =
        tools.iter().copied().filter(|tool| Command::new(tool).arg("--version").output().is_err()).collect();
    if missing.is_empty() {
        return true;
    }
    common::missing_prerequisite(&format!(
        "{test}: {} not installed (Debian: apt-get install tcpdump tshark)",
        missing.join(", ")
    ));
    false
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// Replays `capture` through an example filter, writing the dropped and
/// the passed packets; returns their files.
fn replay(dir: &Path, filter: &str, capture: &Path) -> (PathBuf, PathBuf) {
    let stem = format!("{filter}-{}", capture.file_name().unwrap().to_str().unwrap());
    let (pass, drop) = (dir.join(format!("pass-{stem}")), dir.join(format!("drop-{stem}")));
    let program = example(filter);
    let args = ["replay", path(&program), path(capture), "--pass", path(&pass), "--drop", path(&drop)];
    run(env!("CARGO_BIN_EXE_qemu-ubpf"), &args);
    (pass, drop)
}

/// A packet as a pcap file holds it: timestamp, length on the wire, bytes.
type Packet = (Duration, u32, Vec<u8>);

fn pcap_link_type(bytes: &[u8]) -> u32 {
    PcapReader::new(bytes).unwrap().header().datalink.into()
}

/// The packets of a pcap file. Raw records, as pcap-file refuses the
/// others when the length on the wire exceeds the snapshot length, as it
/// does in every capture a snapshot length cut short.
fn pcap_packets(bytes: &[u8]) -> Vec<Packet> {
    let mut reader = PcapReader::new(bytes).unwrap();
    let nanos_per_tick = match reader.header().ts_resolution {
        TsResolution::MicroSecond => 1000,
        TsResolution::NanoSecond => 1,
    };
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_raw_packet() {
        let packet = packet.unwrap();
        let time = Duration::new(packet.ts_sec.into(), packet.ts_frac * nanos_per_tick);
        packets.push((time, packet.orig_len, packet.data.into_owned()));
    }
    packets
}

/// A pcapng packet, located: section and interface, timestamp in the
/// interface's units (none in a simple packet block), length, bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PcapNgPacket {
    section: usize,
    interface: u32,
    ticks: Option<u128>,
    wire_len: u32,
    data: Vec<u8>,
}

/// The packets of a pcapng file, and the link type and timestamp
/// resolution (ticks per second) of each section's interfaces.
fn pcapng_packets(bytes: &[u8]) -> (Vec<PcapNgPacket>, Vec<Vec<(u32, u64)>>) {
    let mut reader = PcapNgReader::new(bytes).unwrap();
    let mut sections = vec![Vec::new()];
    let mut packets = Vec::new();
    while let Some(block) = reader.next_block() {
        let section = sections.len() - 1;
        match block.unwrap() {
            Block::SectionHeader(_) => sections.push(Vec::new()),
            Block::InterfaceDescription(interface) => {
                let ticks = interface.options.iter().find_map(|option| match option {
                    InterfaceDescriptionOption::IfTsResol(decimals) if decimals & 0x80 == 0 => {
                        Some(10u64.pow(u32::from(*decimals)))
                    }
                    _ => None,
                });
                sections[section].push((interface.linktype.into(), ticks.unwrap_or(1_000_000)));
            }
            // pcap-file holds the raw timestamp as nanoseconds.
            Block::EnhancedPacket(packet) => packets.push(PcapNgPacket {
                section,
                interface: packet.interface_id,
                ticks: Some(packet.timestamp.as_nanos()),
                wire_len: packet.original_len,
                data: packet.data.into_owned(),
            }),
            // pcap-file keeps the block's padding in a simple packet's data.
            Block::SimplePacket(packet) => packets.push(PcapNgPacket {
                section,
                interface: 0,
                ticks: None,
                wire_len: packet.original_len,
                data: packet.data[..packet.original_len as usize].to_vec(),
            }),
            _ => {}
        }
    }
    (packets, sections)
}

/// A pcapng packet as tcpdump writes it to pcap.
fn as_pcap(packet: &PcapNgPacket, sections: &[Vec<(u32, u64)>]) -> Packet {
    let per_second = u128::from(sections[packet.section][packet.interface as usize].1);
    let ticks = packet.ticks.unwrap_or(0);
    let nanos = (ticks % per_second) * 1_000_000_000 / per_second;
    (Duration::new((ticks / per_second) as u64, nanos as u32), packet.wire_len, packet.data.clone())
}

/// The packets tcpdump selects from `capture` with `expression`.
fn tcpdump_selects(dir: &Path, capture: &Path, expression: &str, nanoseconds: bool) -> Vec<Packet> {
    let selected = dir.join("tcpdump-selected.pcap");
    let mut args = vec!["-r", path(capture), "-w", path(&selected)];
    if nanoseconds {
        args.extend(["--time-stamp-precision", "nano"]);
    }
    args.push(expression);
    run("tcpdump", &args);
    pcap_packets(&std::fs::read(selected).unwrap())
}

#[test]
fn dropped_packets_are_those_tcpdump_selects() {
    if !tools_installed("dropped_packets_are_those_tcpdump_selects", &["tcpdump"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "pcap");
    for name in SINGLE_LINK_SAMPLES {
        let capture = sample(name);
        let bytes = std::fs::read(&capture).unwrap();
        let nanoseconds = PcapReader::new(&bytes[..]).unwrap().header().ts_resolution == TsResolution::NanoSecond;
        for example in examples() {
            let (_, drop) = replay(&dir, example.name, &capture);
            let dropped = pcap_packets(&std::fs::read(&drop).unwrap());
            let expression = for_link(&example.expression, pcap_link_type(&bytes));
            let selected = tcpdump_selects(&dir, &capture, &expression, nanoseconds);
            assert!(!selected.is_empty(), "{} over {name}: the sample has packets to drop", example.name);
            assert!(
                dropped == selected,
                "{} over {name}: replay drops {} packets, tcpdump '{expression}' selects {}",
                example.name,
                dropped.len(),
                selected.len()
            );
        }
    }
}

/// tcpdump reads no pcapng whose interfaces have several link types: each
/// interface's packets go to a pcap of their own, stamped with their index.
#[test]
fn dropped_packets_of_a_multi_link_pcapng_are_those_tcpdump_selects() {
    if !tools_installed("dropped_packets_of_a_multi_link_pcapng_are_those_tcpdump_selects", &["tcpdump"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "pcapng");
    let capture = sample(MULTI_LINK_SAMPLE);
    let interfaces = split_by_interface(&dir, &capture);
    assert!(interfaces.splits.len() >= 4, "the sample has four interfaces with packets");
    for example in examples() {
        let selected = interfaces.tcpdump_selects(&dir, |link_type| for_link(&example.expression, link_type));
        let (_, drop) = replay(&dir, example.name, &capture);
        let dropped = interfaces.indices_of(&drop);
        assert!(!selected.is_empty(), "{}: the sample has packets to drop", example.name);
        assert_eq!(dropped, selected, "{} over {MULTI_LINK_SAMPLE}: packet indices", example.name);
    }
}

/// A multi-link pcapng's packets, and a pcap of each interface's packets,
/// each stamped with its index in the capture.
struct InterfaceSplit {
    packets: Vec<PcapNgPacket>,
    /// Each interface's link type and pcap.
    splits: Vec<(u32, PathBuf)>,
}

fn split_by_interface(dir: &Path, capture: &Path) -> InterfaceSplit {
    let (packets, sections) = pcapng_packets(&std::fs::read(capture).unwrap());
    let mut by_interface: BTreeMap<(usize, u32), Vec<usize>> = BTreeMap::new();
    for (index, packet) in packets.iter().enumerate() {
        by_interface.entry((packet.section, packet.interface)).or_default().push(index);
    }
    let splits = by_interface
        .iter()
        .map(|(&(section, interface), indices)| {
            let link_type = sections[section][interface as usize].0;
            let header = PcapHeader { datalink: DataLink::from(link_type), snaplen: 262144, ..Default::default() };
            let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
            for &index in indices {
                let packet = &packets[index];
                writer
                    .write_packet(&PcapPacket::new(Duration::from_secs(index as u64), packet.wire_len, &packet.data))
                    .unwrap();
            }
            let split = dir.join(format!("interface-{section}-{interface}.pcap"));
            std::fs::write(&split, writer.into_writer()).unwrap();
            (link_type, split)
        })
        .collect();
    InterfaceSplit { packets, splits }
}

impl InterfaceSplit {
    /// The indices of the packets tcpdump selects, interface by interface,
    /// with the expression `for_link` gives for each link type.
    fn tcpdump_selects(&self, dir: &Path, for_link: impl Fn(u32) -> String) -> Vec<usize> {
        let mut selected: Vec<usize> = self
            .splits
            .iter()
            .flat_map(|(link_type, split)| {
                tcpdump_selects(dir, split, &for_link(*link_type), false)
                    .into_iter()
                    .map(|(time, ..)| time.as_secs() as usize)
            })
            .collect();
        selected.sort_unstable();
        selected
    }

    /// The indices in the capture of the packets a replay output holds.
    fn indices_of(&self, output: &Path) -> Vec<usize> {
        let (written, _) = pcapng_packets(&std::fs::read(output).unwrap());
        let mut remaining = self.packets.iter().enumerate();
        written
            .iter()
            .map(|packet| {
                remaining
                    .find(|(_, input)| *input == packet)
                    .map(|(index, _)| index)
                    .expect("a packet of the input, in order")
            })
            .collect()
    }
}

/// The expressions of tests/fixtures/tcpdump-expressions.txt.
fn expression_corpus() -> Vec<&'static str> {
    include_str!("fixtures/tcpdump-expressions.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// `replay --expr` over every single-link sample, in both engines, drops
/// exactly the packets tcpdump selects, and refuses with libpcap's message
/// what tcpdump refuses. `len`, `greater` and `less` included: one sample's
/// records are cut short by a snapshot length, and both see the length on
/// the wire.
#[test]
fn replay_expr_drops_what_tcpdump_selects() {
    if !tools_installed("replay_expr_drops_what_tcpdump_selects", &["tcpdump"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "expr");
    let corpus = expression_corpus();
    assert!(corpus.len() >= 200, "the corpus has {} expressions", corpus.len());
    let (selected, dropped) = (dir.join("selected.pcap"), dir.join("dropped.pcap"));
    let (mut compared, mut refused, mut nonempty) = (0, 0, 0);
    for name in SINGLE_LINK_SAMPLES {
        let capture = sample(name);
        let bytes = std::fs::read(&capture).unwrap();
        let nanoseconds = PcapReader::new(&bytes[..]).unwrap().header().ts_resolution == TsResolution::NanoSecond;
        for &expression in &corpus {
            let _ = std::fs::remove_file(&selected);
            let mut args = vec!["-r", path(&capture), "-w", path(&selected)];
            if nanoseconds {
                args.extend(["--time-stamp-precision", "nano"]);
            }
            args.push(expression);
            let tcpdump = Command::new("tcpdump").args(&args).output().unwrap();
            for engine in ["jit", "interp"] {
                let args =
                    ["replay", "--expr", expression, path(&capture), "--engine", engine, "--drop", path(&dropped)];
                let replay = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(args).output().unwrap();
                let context = format!("'{expression}' over {name}, engine {engine}");
                if !tcpdump.status.success() {
                    let stderr = String::from_utf8_lossy(&tcpdump.stderr);
                    let message = stderr.lines().last().unwrap_or_default().trim_start_matches("tcpdump: ");
                    let ours = String::from_utf8_lossy(&replay.stderr);
                    assert!(!replay.status.success(), "{context}: tcpdump refuses it ({message}), replay runs it");
                    assert!(ours.contains(message), "{context}: libpcap says '{message}', replay says '{ours}'");
                    refused += 1;
                    continue;
                }
                assert!(replay.status.success(), "{context}: {}", String::from_utf8_lossy(&replay.stderr));
                let (ours, theirs) =
                    (pcap_packets(&std::fs::read(&dropped).unwrap()), pcap_packets(&std::fs::read(&selected).unwrap()));
                let times = |packets: &[Packet]| packets.iter().map(|(time, ..)| *time).collect::<Vec<_>>();
                assert_eq!(times(&ours), times(&theirs), "{context}: timestamps of dropped vs selected packets");
                assert!(ours == theirs, "{context}: the same packets, but not the same bytes");
                compared += 1;
                nonempty += usize::from(!ours.is_empty());
            }
        }
    }
    assert!(
        compared >= 1500 && refused >= 100 && nonempty >= 1000,
        "{compared} compared ({nonempty} non-empty), {refused} refused"
    );
}

#[test]
fn pcapng_written_by_editcap_and_tshark_replays_like_tcpdump_reads_it() {
    let test = "pcapng_written_by_editcap_and_tshark_replays_like_tcpdump_reads_it";
    if !tools_installed(test, &["tcpdump", "tshark", "editcap"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "wireshark_pcapng");
    let from_editcap = dir.join("editcap.pcapng");
    run("editcap", &["-F", "pcapng", path(&sample("ethernet.pcap")), path(&from_editcap)]);
    let from_tshark = dir.join("tshark.pcapng");
    run(
        "tshark",
        &["-r", path(&sample("ethernet-nanosecond-be-snaplen96.pcap")), "-F", "pcapng", "-w", path(&from_tshark)],
    );
    for (capture, nanoseconds) in [(from_editcap, false), (from_tshark, true)] {
        for example in examples() {
            let (_, drop) = replay(&dir, example.name, &capture);
            let (dropped, sections) = pcapng_packets(&std::fs::read(drop).unwrap());
            let dropped: Vec<Packet> = dropped.iter().map(|packet| as_pcap(packet, &sections)).collect();
            let selected = tcpdump_selects(&dir, &capture, &for_link(&example.expression, 1), nanoseconds);
            assert!(!selected.is_empty());
            assert!(
                dropped == selected,
                "{} over {}: replay drops {}, tcpdump selects {}",
                example.name,
                capture.display(),
                dropped.len(),
                selected.len()
            );
        }
    }
}

/// Each packet as tcpdump prints it: its line and its bytes in hex.
fn tcpdump_text(capture: &Path) -> Vec<String> {
    let args = ["-r", path(capture), "-nn", "-S", "-tt", "--time-stamp-precision", "nano", "-xx"];
    let stdout = String::from_utf8(run("tcpdump", &args).stdout).unwrap();
    let mut packets: Vec<String> = Vec::new();
    for line in stdout.lines() {
        match packets.last_mut() {
            Some(packet) if line.starts_with('\t') => {
                packet.push('\n');
                packet.push_str(line);
            }
            _ => packets.push(line.to_owned()),
        }
    }
    packets
}

/// Each packet as tshark decodes it: where it was captured, when, its
/// lengths, link type, protocols and bytes.
fn tshark_packets(capture: &Path) -> Vec<String> {
    // Reassembly would make a packet's decoding depend on the others in its
    // file, which differ between the input and the outputs.
    let per_packet = ["-o", "ip.defragment:FALSE", "-o", "tcp.desegment_tcp_streams:FALSE"];
    let args = [&["-r", path(capture), "-T", "json", "-x", "-j", "frame"][..], &per_packet].concat();
    let stdout = run("tshark", &args).stdout;
    let packets: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let fields = [
        "frame.section_number",
        "frame.interface_id",
        "frame.encap_type",
        "frame.time_epoch",
        "frame.len",
        "frame.cap_len",
        "frame.protocols",
    ];
    packets
        .as_array()
        .unwrap()
        .iter()
        .map(|packet| {
            let layers = &packet["_source"]["layers"];
            let frame = &layers["frame"];
            let described: Vec<String> = fields.iter().map(|field| format!("{field}={}", frame[field])).collect();
            format!("{} bytes={}", described.join(" "), layers["frame_raw"][0])
        })
        .collect()
}

/// Lists a capture's packets as a tool sees them, one string each.
type PacketLister = fn(&Path) -> Vec<String>;

#[test]
fn outputs_read_back_identically_with_tcpdump_and_tshark() {
    if !tools_installed("outputs_read_back_identically_with_tcpdump_and_tshark", &["tcpdump", "tshark"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "read_back");
    let samples = SINGLE_LINK_SAMPLES.iter().chain([&MULTI_LINK_SAMPLE]);
    for name in samples {
        let capture = sample(name);
        let (pass, drop) = replay(&dir, "firewall", &capture);
        let mut readers: Vec<(&str, PacketLister)> = vec![("tshark", tshark_packets)];
        if *name != MULTI_LINK_SAMPLE {
            readers.push(("tcpdump", tcpdump_text));
        }
        for (tool, read) in readers {
            let (input, passed, dropped) = (read(&capture), read(&pass), read(&drop));
            assert!(!passed.is_empty() && !dropped.is_empty(), "{tool}, {name}");
            assert!(
                is_interleaving(&input, &passed, &dropped),
                "{tool} reads the outputs of {name} differently from the input:\ninput {input:#?}\npassed {passed:#?}\ndropped {dropped:#?}"
            );
        }
    }
}

/// A capture that the kernel and libpcap made: loopback traffic of this
/// test's own (DNS queries, TCP to closed and open ports, their ICMP and RST
/// answers, IPv6), recorded by `tcpdump -i lo` with a snapshot length that
/// cuts names short, plus whatever else crosses loopback meanwhile. Needs
/// the right to capture; without it the test is skipped with a note.
#[test]
fn a_live_loopback_capture_replays_like_tcpdump_reads_it() {
    let test = "a_live_loopback_capture_replays_like_tcpdump_reads_it";
    if !tools_installed(test, &["tcpdump"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "live");
    let capture = dir.join("loopback.pcap");
    // 14 + 20 + 8 + 12 bytes of headers, then 16 of the first name: a
    // blocked name of 14 wire bytes is whole, one of 17 is cut.
    let args = ["-i", "lo", "-s", "70", "-U", "--immediate-mode", "-w", path(&capture)];
    let child = Command::new("tcpdump").args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut tcpdump = Capturing(child);
    let mut stderr = std::io::BufReader::new(tcpdump.0.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    if !line.contains("listening on lo") {
        let _ = writeln!(std::io::stderr(), "note: skipping {test}: tcpdump cannot capture here: {line}");
        return;
    }
    make_loopback_traffic();
    // SIGTERM, so that tcpdump closes the file properly.
    run("kill", &["-TERM", &tcpdump.0.id().to_string()]);
    tcpdump.0.wait().unwrap();

    let bytes = std::fs::read(&capture).unwrap();
    assert!(pcap_packets(&bytes).len() >= 10, "the traffic was captured");
    let mut dropped_any = false;
    for example in examples() {
        let (_, drop) = replay(&dir, example.name, &capture);
        let dropped = pcap_packets(&std::fs::read(&drop).unwrap());
        let expression = for_link(&example.expression, pcap_link_type(&bytes));
        let selected = tcpdump_selects(&dir, &capture, &expression, false);
        assert!(
            dropped == selected,
            "{}: replay drops {}, tcpdump selects {}",
            example.name,
            dropped.len(),
            selected.len()
        );
        dropped_any |= !dropped.is_empty();
    }
    assert!(dropped_any, "the DNS and RDP traffic meets the filters");
}

/// A capture in progress, ended (killed) if the test ends before it stops it.
struct Capturing(std::process::Child);

impl Drop for Capturing {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends traffic over loopback only: DNS queries to nobody (the kernel
/// answers with ICMP port unreachable), TCP to a closed port (RST), to RDP's
/// port, and to a listener that takes data; the same over IPv6.
fn make_loopback_traffic() {
    use std::net::{TcpListener, TcpStream, UdpSocket};
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (id, name) in ["malware.test", "MALWARE.Test", "ads.example.net", "www.example.com"].iter().enumerate() {
        let mut query = vec![0x12, id as u8, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            query.push(label.len() as u8);
            query.extend(label.bytes());
        }
        query.extend([0, 0, 1, 0, 1]);
        udp.send_to(&query, "127.0.0.1:53").unwrap();
        udp.send_to(&query, ("127.0.0.1", closed)).unwrap();
    }
    let timeout = Duration::from_millis(500);
    for port in [3389, closed] {
        let _ = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout);
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    drop(listener.accept().unwrap());
    if let Ok(udp6) = UdpSocket::bind("[::1]:0") {
        let _ = udp6.send_to(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", "[::1]:53");
    }
    // Give tcpdump time to write the last packets.
    std::thread::sleep(Duration::from_millis(300));
}

/// `compile --expr` and `compile --cbpf` (tcpdump -ddd's output) write
/// objects that the loader, inspect and disasm accept, that llvm-objdump
/// reads where installed, and that give the verdicts of `replay --expr`.
#[test]
fn compiled_objects_give_the_verdicts_of_replay_expr() {
    if !tools_installed("compiled_objects_give_the_verdicts_of_replay_expr", &["tcpdump"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "compile");
    let bin = env!("CARGO_BIN_EXE_qemu-ubpf");
    let objdump = Command::new("llvm-objdump").arg("--version").output().is_ok();
    let expressions =
        ["udp port 53", "tcp[tcpflags] & tcp-syn != 0", "ip6 or arp", "vlan and host 1.1.1.1", "len > 100"];
    let samples = [
        ("ethernet.pcap", "ethernet"),
        ("raw-ip.pcap", "raw"),
        ("linux-sll.pcap", "linux-sll"),
        ("linux-sll2.pcap", "linux-sll2"),
    ];
    for (name, link_type) in samples {
        let capture = sample(name);
        for expression in expressions {
            let context = format!("'{expression}' over {name}");
            let reference = dir.join("reference.pcap");
            let args = ["replay", "--expr", expression, path(&capture), "--drop", path(&reference)];
            let replayed = Command::new(bin).args(args).output().unwrap();
            let (object, cbpf_object) = (dir.join("expr.o"), dir.join("cbpf.o"));
            let compiled = Command::new(bin)
                .args(["compile", "--expr", expression, "--link-type", link_type, "-o", path(&object)])
                .output()
                .unwrap();
            assert_eq!(compiled.status.success(), replayed.status.success(), "{context}: compile and replay --expr");
            if !compiled.status.success() {
                continue;
            }
            let classic = run("tcpdump", &["-r", path(&capture), "-ddd", expression]).stdout;
            let classic_file = dir.join("filter.cbpf");
            std::fs::write(&classic_file, classic).unwrap();
            run(bin, &["compile", "--cbpf", path(&classic_file), "-o", path(&cbpf_object)]);
            let inspected = String::from_utf8(run(bin, &["inspect", path(&object)]).stdout).unwrap();
            assert!(inspected.contains("* filter") && inspected.contains("section socket"), "{inspected}");
            let listing = String::from_utf8(run(bin, &["disasm", path(&object)]).stdout).unwrap();
            assert!(listing.contains("mov %r6, %r1") && listing.ends_with("exit\n"), "{listing}");
            if objdump {
                let text = String::from_utf8(run("llvm-objdump", &["-d", path(&object)]).stdout).unwrap();
                assert!(text.contains("<filter>:") && text.contains("r6 = r1"), "{text}");
            }
            // tcpdump's programs return the capture's snapshot length for a
            // match, ours libpcap's default: the verdicts are what agree.
            for (object, engine) in [(&object, "jit"), (&object, "interp"), (&cbpf_object, "jit")] {
                let dropped = dir.join("dropped.pcap");
                let args = ["replay", path(object), path(&capture), "--ip-mode", "off", "--engine", engine];
                run(bin, &[&args[..], &["--drop", path(&dropped)]].concat());
                assert!(
                    std::fs::read(&dropped).unwrap() == std::fs::read(&reference).unwrap(),
                    "{context}, {}, engine {engine}: the object drops other packets than replay --expr",
                    object.display()
                );
            }
        }
    }
}

/// `replay --expr` over a pcapng whose interfaces have several link types
/// compiles the expression for each and drops what tcpdump selects from
/// each interface's packets (split as in the test above).
#[test]
fn replay_expr_over_a_multi_link_pcapng_drops_what_tcpdump_selects() {
    if !tools_installed("replay_expr_over_a_multi_link_pcapng_drops_what_tcpdump_selects", &["tcpdump"]) {
        return;
    }
    let dir = scratch_dir("tcpdump", "expr-pcapng");
    let capture = sample(MULTI_LINK_SAMPLE);
    let interfaces = split_by_interface(&dir, &capture);
    for expression in ["udp", "host 1.1.1.1", "tcp[tcpflags] & tcp-syn != 0", "ip6 or icmp", "not ip"] {
        let selected = interfaces.tcpdump_selects(&dir, |_| expression.to_string());
        for engine in ["jit", "interp"] {
            let drop = dir.join("dropped.pcapng");
            let args = ["replay", "--expr", expression, path(&capture), "--engine", engine, "--drop", path(&drop)];
            run(env!("CARGO_BIN_EXE_qemu-ubpf"), &args);
            let dropped = interfaces.indices_of(&drop);
            assert_eq!(dropped, selected, "'{expression}' over {MULTI_LINK_SAMPLE}, engine {engine}: packet indices");
        }
    }
}
