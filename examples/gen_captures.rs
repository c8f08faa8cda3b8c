//! Generates the sample captures of examples/captures/, and the large
//! capture scripts/bench-replay.sh times.
//!
//! ```sh
//! cargo run --example gen_captures                   # rewrite examples/captures/
//! cargo run --example gen_captures -- --out DIR      # write them into DIR
//! cargo run --release --example gen_captures -- --bench FILE PACKETS
//! ```
//!
//! The traffic is the same in every capture, under each link layer: IPv4
//! (TCP, UDP, ICMP, IGMP, with and without options, fragments), DNS queries
//! and answers, IPv6, ARP and LLDP, VLAN tags, and frames cut short by a
//! snapshot length. It is made to meet every rule of the example filters,
//! both ways. Addresses, payloads and timestamps are fixed, so regenerating
//! gives identical bytes (tests/replay.rs checks that).

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Extensions, Ipv4Header, Ipv4Options, LinuxSllHeader, LinuxSllPacketType, LinuxSllProtocolType, PacketBuilder,
    SingleVlanHeader, VlanId, VlanPcp,
};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::interface_statistics::{InterfaceStatisticsBlock, InterfaceStatisticsOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// 2024-05-01 00:00:00 UTC: the first packet's time.
const START: Duration = Duration::from_secs(1_714_521_600);
/// Between two packets: not a round number, so nanosecond captures have
/// digits below the microsecond.
const GAP: Duration = Duration::from_nanos(1_003_417);
const SNAPLEN: u32 = 65535;
const ETHERNET_MIN_FRAME: usize = 60;

const HOST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GATEWAY_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const HOST: [u8; 4] = [10, 0, 2, 15];
const HOST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15];
const SERVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53];

const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];
/// Record Route with room for two addresses, then end of options.
const RECORD_ROUTE: [u8; 12] = [0x07, 0x0b, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0x00];

/// One captured frame: its bytes as captured, and its length on the wire.
#[derive(Clone)]
struct Frame {
    data: Vec<u8>,
    wire_len: u32,
}

impl Frame {
    fn whole(data: Vec<u8>) -> Frame {
        let wire_len = data.len() as u32;
        Frame { data, wire_len }
    }

    /// The frame as a capture with this snapshot length records it.
    fn cut(&self, snaplen: usize) -> Frame {
        Frame { data: self.data[..snaplen.min(self.data.len())].to_vec(), wire_len: self.wire_len }
    }
}

/// What a link layer carries: an IP packet or another protocol.
#[derive(Clone)]
enum Payload {
    Ip(Vec<u8>),
    Other(EtherType, Vec<u8>),
}

impl Payload {
    fn ether_type(&self) -> EtherType {
        match self {
            Payload::Ip(packet) if packet[0] >> 4 == 6 => EtherType::IPV6,
            Payload::Ip(_) => EtherType::IPV4,
            Payload::Other(ether_type, _) => *ether_type,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Ip(bytes) | Payload::Other(_, bytes) => bytes,
        }
    }
}

/// The IP header of a packet to build; its methods build packets under it.
enum Ip {
    Ipv4 { source: [u8; 4], destination: [u8; 4], options: &'static [u8] },
    Ipv6 { source: [u8; 16], destination: [u8; 16] },
}

fn ipv4(source: [u8; 4], destination: [u8; 4]) -> Ip {
    Ip::Ipv4 { source, destination, options: &[] }
}

fn ipv6() -> Ip {
    Ip::Ipv6 { source: HOST6, destination: SERVER6 }
}

impl Ip {
    fn options(self, with: &'static [u8]) -> Ip {
        match self {
            Ip::Ipv4 { source, destination, .. } => Ip::Ipv4 { source, destination, options: with },
            ipv6 => ipv6,
        }
    }

    fn headers(&self, protocol: IpNumber) -> IpHeaders {
        match *self {
            Ip::Ipv4 { source, destination, options } => {
                let mut header = Ipv4Header::new(0, 64, protocol, source, destination).expect("an empty payload fits");
                header.identification = u16::from_be_bytes([destination[2], destination[3]]);
                header.options = Ipv4Options::try_from(options).expect("sample options are a multiple of 4 bytes");
                IpHeaders::Ipv4(header, Ipv4Extensions::default())
            }
            Ip::Ipv6 { source, destination } => {
                let header = etherparse::Ipv6Header {
                    traffic_class: 0,
                    flow_label: Default::default(),
                    payload_length: 0,
                    next_header: protocol,
                    hop_limit: 64,
                    source,
                    destination,
                };
                IpHeaders::Ipv6(header, Default::default())
            }
        }
    }

    fn udp(&self, source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ip(self.headers(IpNumber::UDP)).udp(source_port, destination_port);
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).expect("writing to a Vec");
        packet
    }

    fn tcp_syn(&self, source_port: u16, destination_port: u16) -> Vec<u8> {
        let builder =
            PacketBuilder::ip(self.headers(IpNumber::TCP)).tcp(source_port, destination_port, 0x1000_0000, 64240).syn();
        let mut packet = Vec::new();
        builder.write(&mut packet, &[]).expect("writing to a Vec");
        packet
    }

    fn tcp_data(&self, source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ip(self.headers(IpNumber::TCP))
            .tcp(source_port, destination_port, 0x2000_0000, 64240)
            .ack(0x3000_0000)
            .psh();
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).expect("writing to a Vec");
        packet
    }

    fn ping(&self, sequence: u16) -> Vec<u8> {
        let payload = [0x61; 32];
        let mut packet = Vec::new();
        match self {
            Ip::Ipv4 { .. } => PacketBuilder::ip(self.headers(IpNumber::ICMP))
                .icmpv4_echo_request(7, sequence)
                .write(&mut packet, &payload),
            Ip::Ipv6 { .. } => PacketBuilder::ip(self.headers(IpNumber::IPV6_ICMP))
                .icmpv6_echo_request(7, sequence)
                .write(&mut packet, &payload),
        }
        .expect("writing to a Vec");
        packet
    }
}

/// A DNS message with one question (type A, class IN) for `name`.
fn dns(id: u16, response: bool, name: &str) -> Vec<u8> {
    let flags: u16 = if response { 0x8180 } else { 0x0100 };
    let answers: u16 = response.into();
    let mut message = Vec::new();
    for field in [id, flags, 1, answers, 0, 0] {
        message.extend(field.to_be_bytes());
    }
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend(label.as_bytes());
    }
    message.extend([0, 0, 1, 0, 1]);
    if response {
        // The answer: a pointer to the question's name, A, IN, TTL 300, 4 bytes.
        message.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 99]);
    }
    message
}

/// Splits an IPv4 packet into fragments of at most `size` payload bytes (a
/// multiple of 8).
fn fragments(packet: &[u8], size: usize) -> Vec<Vec<u8>> {
    let (header, payload) = Ipv4Header::from_slice(packet).expect("a packet this generator built");
    let payload = &payload[..usize::from(header.total_len) - header.header_len()];
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            let mut fragment = header.clone();
            fragment.dont_fragment = false;
            fragment.more_fragments = index + 1 < chunks.len();
            fragment.fragment_offset = IpFragOffset::try_new((index * size / 8) as u16).expect("small offsets");
            fragment.set_payload_len(chunk.len()).expect("small fragments");
            fragment.header_checksum = fragment.calc_header_checksum();
            let mut bytes = fragment.to_bytes().to_vec();
            bytes.extend(*chunk);
            bytes
        })
        .collect()
}

/// The IP traffic of every sample capture.
fn ip_traffic() -> Vec<Vec<u8>> {
    let to = |destination| ipv4(HOST, destination);
    let from = |source| ipv4(source, HOST);
    let mut packets = vec![
        // The RFC filter drops these: IPv4 to 1.1.1.1, whatever it carries.
        to([1, 1, 1, 1]).udp(40001, 53, &dns(0x1001, false, "example.com")),
        to([1, 1, 1, 1]).ping(1),
        to([1, 1, 1, 1]).tcp_syn(40002, 443),
        to([1, 1, 1, 1]).options(&ROUTER_ALERT).udp(40003, 53, &dns(0x1002, false, "example.org")),
        from([1, 1, 1, 1]).udp(53, 40001, &dns(0x1001, true, "example.com")),
        to([1, 0, 0, 1]).ping(2),
        to([8, 8, 8, 8]).udp(40004, 53, &dns(0x1003, false, "www.example.com")),
        // The DNS filter drops queries for its names, in any letter case.
        to([8, 8, 8, 8]).udp(40005, 53, &dns(0x2001, false, "ads.example.net")),
        to([9, 9, 9, 9]).udp(40006, 53, &dns(0x2002, false, "TRACKER.Example.ORG")),
        to([8, 8, 4, 4]).options(&RECORD_ROUTE).udp(40007, 53, &dns(0x2003, false, "malware.test")),
        to([1, 1, 1, 1]).udp(40008, 53, &dns(0x2004, false, "malware.test")),
        // ...but not answers, subdomains, other names, other ports, or TCP.
        from([8, 8, 8, 8]).udp(53, 40005, &dns(0x2001, true, "ads.example.net")),
        to([8, 8, 8, 8]).udp(40009, 53, &dns(0x2005, false, "cdn.ads.example.net")),
        to([8, 8, 8, 8]).udp(40010, 53, &dns(0x2006, false, "ads.example.network")),
        to([8, 8, 8, 8]).udp(40011, 53, &dns(0x2007, false, "malware.testing")),
        to([8, 8, 8, 8]).udp(40012, 5353, &dns(0x2008, false, "ads.example.net")),
        to([8, 8, 8, 8]).tcp_data(40013, 53, &[&[0, 33][..], &dns(0x2009, false, "ads.example.net")].concat()),
        // The firewall drops SSH to 192.0.2.10, telnet to 192.0.2.0/24, SNMP
        // to 198.51.100.0/24, RDP anywhere; with options too.
        to([192, 0, 2, 10]).tcp_syn(40020, 22),
        to([192, 0, 2, 10]).options(&RECORD_ROUTE).tcp_syn(40021, 22),
        to([192, 0, 2, 77]).tcp_syn(40022, 23),
        to([198, 51, 100, 7]).udp(40023, 161, &[0x30, 0x26, 0x02, 0x01, 0x01]),
        to([203, 0, 113, 5]).tcp_syn(40024, 3389),
        to([203, 0, 113, 5]).options(&ROUTER_ALERT).tcp_syn(40025, 3389),
        // ...and passes their near misses.
        to([192, 0, 2, 11]).tcp_syn(40030, 22),
        to([192, 0, 2, 10]).udp(40031, 22, b"not ssh"),
        to([192, 0, 3, 77]).tcp_syn(40032, 23),
        to([198, 51, 100, 7]).tcp_syn(40033, 161),
        to([198, 51, 101, 7]).udp(40034, 161, &[0x30, 0x26]),
        to([203, 0, 113, 5]).udp(40035, 3389, b"rdp over udp"),
        from([203, 0, 113, 5]).tcp_syn(3389, 40024),
        to([93, 184, 216, 34]).tcp_data(40036, 80, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        to([10, 0, 2, 2]).ping(3),
        // IPv6: never given to the program with ip-mode on.
        ipv6().udp(40040, 53, &dns(0x3001, false, "ads.example.net")),
        ipv6().tcp_syn(40041, 22),
        ipv6().ping(4),
        igmp_report(),
    ];
    // Fragments: the first carries the ports, the others only data.
    let big_dns = to([1, 1, 1, 1]).udp(40050, 53, &[dns(0x4001, false, "example.com"), vec![0; 1200]].concat());
    packets.extend(fragments(&big_dns, 512));
    let big_snmp = to([198, 51, 100, 9]).udp(40051, 161, &[0x30; 900]);
    packets.extend(fragments(&big_snmp, 504));
    let big_query = to([8, 8, 8, 8]).udp(40052, 53, &[dns(0x4002, false, "ads.example.net"), vec![0; 700]].concat());
    packets.extend(fragments(&big_query, 400));
    packets
}

/// An IGMPv2 membership report, with the Router Alert option.
fn igmp_report() -> Vec<u8> {
    let mut header = Ipv4Header::new(8, 1, IpNumber::IGMP, HOST, [224, 0, 0, 251]).expect("8 bytes fit");
    header.options = Ipv4Options::from(ROUTER_ALERT);
    header.set_payload_len(8).expect("8 bytes fit");
    header.header_checksum = header.calc_header_checksum();
    let mut packet = header.to_bytes().to_vec();
    packet.extend([0x16, 0x00, 0x09, 0x04, 224, 0, 0, 251]);
    packet
}

fn arp(operation: ArpOperation, target: [u8; 4]) -> Payload {
    let target_mac = if operation == ArpOperation::REQUEST { [0; 6] } else { GATEWAY_MAC };
    let packet =
        ArpPacket::new(ArpHardwareId::ETHERNET, EtherType::IPV4, operation, &HOST_MAC, &HOST, &target_mac, &target)
            .expect("Ethernet and IPv4 address lengths");
    Payload::Other(EtherType::ARP, packet.to_bytes().to_vec())
}

/// The traffic as link layers carry it: IP, then ARP and LLDP.
fn payloads() -> Vec<Payload> {
    let mut payloads: Vec<Payload> = ip_traffic().into_iter().map(Payload::Ip).collect();
    payloads.push(arp(ArpOperation::REQUEST, [1, 1, 1, 1]));
    payloads.push(arp(ArpOperation::REPLY, [10, 0, 2, 2]));
    // LLDP: chassis id, port id, TTL, end.
    let lldp =
        vec![0x02, 0x07, 0x04, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x04, 0x02, 0x07, 0x31, 0x06, 0x02, 0, 120, 0, 0];
    payloads.push(Payload::Other(EtherType(0x88cc), lldp));
    payloads
}

fn ethernet(payload: &Payload) -> Vec<u8> {
    ethernet_tagged(payload, &[])
}

/// An Ethernet frame with the VLAN tags (TPID, VLAN id) given, outermost
/// first, padded to the minimum frame size as a NIC sends it.
fn ethernet_tagged(payload: &Payload, tags: &[(EtherType, u16)]) -> Vec<u8> {
    let first_type = tags.first().map_or(payload.ether_type(), |&(tpid, _)| tpid);
    let header = Ethernet2Header { source: HOST_MAC, destination: GATEWAY_MAC, ether_type: first_type };
    let mut frame = header.to_bytes().to_vec();
    for (index, &(_, vlan)) in tags.iter().enumerate() {
        let inner = tags.get(index + 1).map_or(payload.ether_type(), |&(tpid, _)| tpid);
        let tag = SingleVlanHeader {
            pcp: VlanPcp::ZERO,
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(vlan).expect("sample VLAN ids fit"),
            ether_type: inner,
        };
        frame.extend(tag.to_bytes());
    }
    frame.extend(payload.bytes());
    frame.resize(frame.len().max(ETHERNET_MIN_FRAME), 0);
    frame
}

fn linux_sll(payload: &Payload) -> Vec<u8> {
    let header = LinuxSllHeader {
        packet_type: LinuxSllPacketType::OUTGOING,
        arp_hrd_type: ArpHardwareId::ETHERNET,
        sender_address_valid_length: 6,
        sender_address: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0],
        protocol_type: LinuxSllProtocolType::EtherType(payload.ether_type()),
    };
    [&header.to_bytes()[..], payload.bytes()].concat()
}

/// A Linux cooked capture v2 header (etherparse has only v1): protocol,
/// reserved, interface index, hardware type, packet type, address length,
/// address.
fn linux_sll2(payload: &Payload) -> Vec<u8> {
    let mut frame = payload.ether_type().0.to_be_bytes().to_vec();
    frame.extend([0, 0, 0, 0, 0, 2, 0, 1, 4, 6]);
    frame.extend([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0]);
    frame.extend(payload.bytes());
    frame
}

/// Frames cut short, as a capture with a small snapshot length has them:
/// inside the Ethernet header, the IPv4 header, the ports, a DNS name.
fn truncated_ethernet() -> Vec<Frame> {
    let to = |destination| ipv4(HOST, destination);
    let cut = |packet: Vec<u8>, snaplen: usize| Frame::whole(ethernet(&Payload::Ip(packet))).cut(snaplen);
    let tagged = |packet: Vec<u8>, snaplen: usize| {
        Frame::whole(ethernet_tagged(&Payload::Ip(packet), &[(EtherType::VLAN_TAGGED_FRAME, 7)])).cut(snaplen)
    };
    vec![
        cut(to([1, 1, 1, 1]).ping(10), 10),
        cut(to([1, 1, 1, 1]).ping(11), 14),
        cut(to([1, 1, 1, 1]).ping(12), 14 + 19),
        cut(to([1, 1, 1, 1]).ping(13), 14 + 20),
        tagged(to([1, 1, 1, 1]).ping(14), 18 + 20),
        tagged(to([1, 1, 1, 1]).ping(15), 18 + 16),
        cut(to([192, 0, 2, 10]).tcp_syn(40060, 22), 14 + 20 + 3),
        cut(to([192, 0, 2, 10]).tcp_syn(40061, 22), 14 + 20 + 4),
        cut(to([192, 0, 2, 10]).options(&RECORD_ROUTE).tcp_syn(40062, 22), 14 + 24),
        cut(to([203, 0, 113, 5]).tcp_syn(40063, 3389), 14 + 20 + 4),
        cut(to([8, 8, 8, 8]).udp(40064, 53, &dns(0x5001, false, "ads.example.net")), 14 + 20 + 8 + 12 + 16),
        cut(to([8, 8, 8, 8]).udp(40065, 53, &dns(0x5002, false, "ads.example.net")), 14 + 20 + 8 + 12 + 17),
        cut(to([8, 8, 8, 8]).udp(40066, 53, &dns(0x5003, false, "malware.test")), 14 + 20 + 8 + 2),
        cut(ipv6().ping(16), 30),
    ]
}

/// Every Ethernet frame of the samples: the traffic untagged, some of it
/// behind an 802.1Q tag, an 802.1ad tag or two tags, and cut-short frames.
fn ethernet_frames() -> Vec<Frame> {
    let payloads = payloads();
    let mut frames: Vec<Frame> = payloads.iter().map(|payload| Frame::whole(ethernet(payload))).collect();
    for (index, payload) in payloads.iter().enumerate().filter(|(index, _)| index % 3 == 0) {
        let tags = match index % 9 {
            0 => vec![(EtherType::VLAN_TAGGED_FRAME, 100)],
            3 => vec![(EtherType::PROVIDER_BRIDGING, 200)],
            _ => vec![(EtherType::PROVIDER_BRIDGING, 300), (EtherType::VLAN_TAGGED_FRAME, 301)],
        };
        frames.push(Frame::whole(ethernet_tagged(payload, &tags)));
    }
    frames.extend(truncated_ethernet());
    frames
}

/// The traffic under a link layer that carries IP only.
fn raw_ip_frames() -> Vec<Frame> {
    let mut frames: Vec<Frame> = ip_traffic().into_iter().map(Frame::whole).collect();
    let to = |destination| ipv4(HOST, destination);
    frames.extend([
        Frame::whole(to([1, 1, 1, 1]).ping(20)).cut(19),
        Frame::whole(to([1, 1, 1, 1]).ping(21)).cut(20),
        Frame::whole(to([192, 0, 2, 10]).tcp_syn(40070, 22)).cut(23),
        Frame::whole(to([8, 8, 8, 8]).udp(40071, 53, &dns(0x6001, false, "tracker.example.org"))).cut(60),
    ]);
    frames
}

/// The traffic under a cooked-capture header, with some frames cut short.
fn cooked_frames(wrap: fn(&Payload) -> Vec<u8>, header_len: usize) -> Vec<Frame> {
    let mut frames: Vec<Frame> = payloads().iter().map(|payload| Frame::whole(wrap(payload))).collect();
    let to = |destination| Payload::Ip(ipv4(HOST, destination).ping(30));
    frames.extend([
        Frame::whole(wrap(&to([1, 1, 1, 1]))).cut(header_len - 1),
        Frame::whole(wrap(&to([1, 1, 1, 1]))).cut(header_len + 19),
        Frame::whole(wrap(&to([1, 1, 1, 1]))).cut(header_len + 20),
    ]);
    frames
}

fn timestamp(index: usize) -> Duration {
    START + GAP * index as u32
}

/// A pcap of `frames`, each cut to `snaplen` bytes as tcpdump -s would.
fn pcap(link: DataLink, resolution: TsResolution, endianness: Endianness, snaplen: u32, frames: &[Frame]) -> Vec<u8> {
    let header = PcapHeader { datalink: link, ts_resolution: resolution, endianness, snaplen, ..Default::default() };
    let mut writer = PcapWriter::with_header(Vec::new(), header).expect("writing to a Vec");
    for (index, frame) in frames.iter().enumerate() {
        let frame = frame.cut(snaplen as usize);
        let packet = PcapPacket::new(timestamp(index), frame.wire_len, &frame.data);
        writer.write_packet(&packet).expect("sample frames fit the snapshot length");
    }
    writer.into_writer()
}

/// A pcapng interface, its timestamps in units of 10^-`decimals` seconds.
struct Interface {
    link: DataLink,
    name: &'static str,
    decimals: u8,
}

impl Interface {
    fn block(&self) -> InterfaceDescriptionBlock<'static> {
        InterfaceDescriptionBlock {
            linktype: self.link,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed(self.name)),
                InterfaceDescriptionOption::IfTsResol(self.decimals),
            ],
        }
    }

    /// pcap-file writes a timestamp's nanoseconds as the raw count of the
    /// interface's units, so the count goes in as nanoseconds.
    fn timestamp(&self, time: Duration) -> Duration {
        Duration::from_nanos((time.as_nanos() / 10u128.pow(9 - u32::from(self.decimals))) as u64)
    }
}

/// Two sections. The first, little-endian, has three interfaces of three
/// link types, each packet on the next, in enhanced packet blocks (one with
/// a comment) and one simple packet block, then statistics. The second,
/// big-endian, has one Ethernet interface with nanosecond timestamps.
fn multi_interface_pcapng() -> Vec<u8> {
    let interfaces = [
        Interface { link: DataLink::ETHERNET, name: "eth0", decimals: 6 },
        Interface { link: DataLink::RAW, name: "tun0", decimals: 9 },
        Interface { link: DataLink::LINUX_SLL2, name: "any", decimals: 6 },
    ];
    let section = |endianness, application: &'static str| SectionHeaderBlock {
        endianness,
        major_version: 1,
        minor_version: 0,
        section_length: -1,
        options: vec![SectionHeaderOption::UserApplication(Cow::Borrowed(application))],
    };
    let mut writer = PcapNgWriter::with_section_header(Vec::new(), section(Endianness::Little, "gen_captures"))
        .expect("writing to a Vec");
    let mut write = |block: Block| {
        writer.write_block(&block).expect("writing to a Vec");
    };
    for interface in &interfaces {
        write(Block::InterfaceDescription(interface.block()));
    }
    let mut packets = 0;
    for (index, payload) in payloads().iter().enumerate() {
        let interface_id = index % interfaces.len();
        let data = match interface_id {
            0 => ethernet(payload),
            1 => match payload {
                Payload::Ip(packet) => packet.clone(),
                Payload::Other(..) => continue,
            },
            _ => linux_sll2(payload),
        };
        let options = match index {
            7 => vec![EnhancedPacketOption::Comment(Cow::Borrowed("a query for a blocked name"))],
            _ => vec![],
        };
        let timestamp = interfaces[interface_id].timestamp(timestamp(index));
        let original_len = data.len() as u32;
        let block = EnhancedPacketBlock {
            interface_id: interface_id as u32,
            timestamp,
            original_len,
            data: Cow::Owned(data),
            options,
        };
        write(Block::EnhancedPacket(block));
        packets += 1;
    }
    let spb = ethernet(&Payload::Ip(ipv4(HOST, [1, 1, 1, 1]).ping(40)));
    write(Block::SimplePacket(SimplePacketBlock { original_len: spb.len() as u32, data: Cow::Owned(spb) }));
    write(Block::InterfaceStatistics(InterfaceStatisticsBlock {
        interface_id: 0,
        timestamp: interfaces[0].timestamp(timestamp(packets)).as_nanos() as u64,
        options: vec![
            InterfaceStatisticsOption::IsbIfRecv(packets as u64 + 1),
            InterfaceStatisticsOption::IsbIfDrop(0),
        ],
    }));

    write(Block::SectionHeader(section(Endianness::Big, "gen_captures, second section")));
    let nanoseconds = Interface { link: DataLink::ETHERNET, name: "eth1", decimals: 9 };
    write(Block::InterfaceDescription(nanoseconds.block()));
    for (index, frame) in truncated_ethernet().into_iter().enumerate() {
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: nanoseconds.timestamp(timestamp(packets + 1 + index)),
            original_len: frame.wire_len,
            data: Cow::Owned(frame.data),
            options: vec![],
        };
        write(Block::EnhancedPacket(block));
    }
    writer.into_inner()
}

/// Every sample capture, by file name.
pub fn sample_captures() -> Vec<(&'static str, Vec<u8>)> {
    let us = TsResolution::MicroSecond;
    let ns = TsResolution::NanoSecond;
    vec![
        ("ethernet.pcap", pcap(DataLink::ETHERNET, us, Endianness::Little, SNAPLEN, &ethernet_frames())),
        // As tcpdump -s 96 records, on a big-endian machine.
        (
            "ethernet-nanosecond-be-snaplen96.pcap",
            pcap(DataLink::ETHERNET, ns, Endianness::Big, 96, &ethernet_frames()),
        ),
        ("raw-ip.pcap", pcap(DataLink::RAW, us, Endianness::Little, SNAPLEN, &raw_ip_frames())),
        ("linux-sll.pcap", pcap(DataLink::LINUX_SLL, us, Endianness::Little, SNAPLEN, &cooked_frames(linux_sll, 16))),
        (
            "linux-sll2.pcap",
            pcap(DataLink::LINUX_SLL2, ns, Endianness::Little, SNAPLEN, &cooked_frames(linux_sll2, 20)),
        ),
        ("multi-interface.pcapng", multi_interface_pcapng()),
    ]
}

/// Writes a microsecond Ethernet pcap of `packets` packets, the sample
/// Ethernet frames over and over, streaming.
pub fn write_bench_capture(out: impl Write, packets: u64) -> io::Result<()> {
    let frames = ethernet_frames();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        snaplen: SNAPLEN,
        endianness: Endianness::Little,
        ..Default::default()
    };
    let mut writer = PcapWriter::with_header(io::BufWriter::new(out), header).map_err(io::Error::other)?;
    for index in 0..packets {
        let frame = &frames[(index % frames.len() as u64) as usize];
        let time = START + Duration::from_micros(index);
        writer.write_packet(&PcapPacket::new(time, frame.wire_len, &frame.data)).map_err(io::Error::other)?;
    }
    writer.into_writer().flush()
}

fn write_samples(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in sample_captures() {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] => write_samples(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/captures")),
        ["--out", dir] => write_samples(&PathBuf::from(dir)),
        ["--bench", file, count] => match count.parse() {
            Ok(count) => std::fs::File::create(file).and_then(|out| write_bench_capture(out, count)),
            Err(_) => Err(io::Error::other(format!("{count}: not a packet count"))),
        },
        _ => Err(io::Error::other("usage: gen_captures [--out DIR | --bench FILE PACKETS]")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gen_captures: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
