//! The example filters in examples/, loaded from their committed objects and
//! run over hand-made packets: every rule of each filter, both ways.

use qemu_ubpf::{Config, Helpers, Program, elf};

const PASS: u64 = 0;
const DROP: u64 = 1;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// IPv4's "more fragments" flag, in the flags-and-offset field.
const MORE_FRAGMENTS: u16 = 0x2000;

const OUTSIDE: [u8; 4] = [192, 168, 1, 1];
const INSIDE: [u8; 4] = [10, 1, 2, 3];

fn read(path: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn load(path: &str) -> Program {
    Program::from_elf(&read(path), None, &Helpers::new(), &Config::default()).unwrap()
}

fn verdict(program: &Program, packet: &[u8]) -> u64 {
    program.execute(&mut packet.to_vec()).unwrap()
}

/// An IPv4 header (with `options`, a multiple of 4 bytes) and its payload.
struct Ipv4<'a> {
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    options: &'a [u8],
    flags_fragment: u16,
}

impl Ipv4<'_> {
    fn to(proto: u8, dst: [u8; 4]) -> Ipv4<'static> {
        Ipv4 { proto, src: OUTSIDE, dst, options: &[], flags_fragment: 0 }
    }

    fn from(proto: u8, src: [u8; 4]) -> Ipv4<'static> {
        Ipv4 { proto, src, dst: [172, 16, 0, 1], options: &[], flags_fragment: 0 }
    }

    fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let header_len = 20 + self.options.len();
        let total_len = (header_len + payload.len()) as u16;
        let mut packet = vec![0x40 | (header_len / 4) as u8, 0];
        packet.extend(total_len.to_be_bytes());
        packet.extend([0x12, 0x34]);
        packet.extend(self.flags_fragment.to_be_bytes());
        packet.extend([64, self.proto, 0, 0]);
        packet.extend(self.src);
        packet.extend(self.dst);
        packet.extend(self.options);
        packet.extend(payload);
        packet
    }
}

fn ports(src: u16, dst: u16) -> Vec<u8> {
    [src.to_be_bytes(), dst.to_be_bytes()].concat()
}

fn tcp(src: u16, dst: u16) -> Vec<u8> {
    let mut header = ports(src, dst);
    header.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    header
}

fn udp(src: u16, dst: u16) -> Vec<u8> {
    let mut header = ports(src, dst);
    header.extend([0, 8, 0, 0]);
    header
}

const MACS: [u8; 12] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&MACS[..], &ethertype.to_be_bytes(), payload].concat()
}

fn vlan(vid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&MACS[..], &ETH_P_8021Q.to_be_bytes(), &vid.to_be_bytes(), &ethertype.to_be_bytes(), payload].concat()
}

fn tcp_frame(dst_port: u16) -> Vec<u8> {
    ethernet(ETH_P_IPV4, &Ipv4::to(PROTO_TCP, [172, 16, 0, 1]).packet(&tcp(40000, dst_port)))
}

fn udp_frame(src: [u8; 4], dst_port: u16) -> Vec<u8> {
    ethernet(ETH_P_IPV4, &Ipv4::from(PROTO_UDP, src).packet(&udp(40000, dst_port)))
}

fn arp_frame() -> Vec<u8> {
    ethernet(ETH_P_ARP, &[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2])
}

#[test]
fn drop_1_1_1_1_drops_ipv4_to_1_1_1_1_only() {
    let program = load("examples/drop_1_1_1_1.o");
    let udp_to = |dst| Ipv4::to(PROTO_UDP, dst).packet(&udp(1234, 53));
    assert_eq!(verdict(&program, &udp_to([1, 1, 1, 1])), DROP);
    assert_eq!(verdict(&program, &Ipv4::to(PROTO_TCP, [1, 1, 1, 1]).packet(&tcp(1234, 443))), DROP);
    // The header alone, no payload.
    assert_eq!(verdict(&program, &Ipv4::to(PROTO_ICMP, [1, 1, 1, 1]).packet(&[])), DROP);

    for dst in [[1, 1, 1, 2], [2, 1, 1, 1], [1, 0, 0, 1], [8, 8, 8, 8]] {
        assert_eq!(verdict(&program, &udp_to(dst)), PASS, "{dst:?}");
    }
    let from_1_1_1_1 = Ipv4 { src: [1, 1, 1, 1], ..Ipv4::to(PROTO_UDP, [9, 9, 9, 9]) };
    assert_eq!(verdict(&program, &from_1_1_1_1.packet(&udp(53, 1234))), PASS);
}

#[test]
fn drop_1_1_1_1_passes_short_packets_and_other_versions() {
    let program = load("examples/drop_1_1_1_1.o");
    let packet = Ipv4::to(PROTO_UDP, [1, 1, 1, 1]).packet(&[]);
    for len in 0..20 {
        assert_eq!(verdict(&program, &packet[..len]), PASS, "{len} bytes");
    }
    let mut version_6 = packet.clone();
    version_6[0] = 0x65;
    assert_eq!(verdict(&program, &version_6), PASS);
}

#[test]
fn classifier_passes_what_is_not_ipv4() {
    let program = load("examples/classifier.o");
    assert_eq!(verdict(&program, &arp_frame()), PASS);
    assert_eq!(verdict(&program, &vlan(7, ETH_P_ARP, &arp_frame()[14..])), PASS);
    // An IPv6 frame whose bytes would read as telnet if taken for IPv4.
    assert_eq!(verdict(&program, &ethernet(ETH_P_IPV6, &tcp_frame(23)[14..])), PASS);
    let telnet = tcp_frame(23);
    for len in 0..14 {
        assert_eq!(verdict(&program, &telnet[..len]), PASS, "{len} bytes");
    }
    // A VLAN tag cut off before its inner ethertype.
    let tagged = vlan(7, ETH_P_IPV4, &telnet[14..]);
    for len in 14..18 {
        assert_eq!(verdict(&program, &tagged[..len]), PASS, "{len} bytes");
    }
}

#[test]
fn classifier_drops_malformed_ipv4() {
    let program = load("examples/classifier.o");
    let frame = tcp_frame(80);
    assert_eq!(verdict(&program, &frame), PASS);
    for len in 14..34 {
        assert_eq!(verdict(&program, &frame[..len]), DROP, "IPv4 header cut to {} bytes", len - 14);
    }
    let mut version_6 = frame.clone();
    version_6[14] = 0x65;
    assert_eq!(verdict(&program, &version_6), DROP);
    let mut ihl_4 = frame.clone();
    ihl_4[14] = 0x44;
    assert_eq!(verdict(&program, &ihl_4), DROP);
    // IHL 15 (60 bytes) but only 20 bytes of L4 header follow the 20 of IPv4.
    let mut ihl_15 = frame.clone();
    ihl_15[14] = 0x4f;
    assert_eq!(verdict(&program, &ihl_15), DROP);
    // Options cut off by the end of the frame.
    let with_options = ethernet(ETH_P_IPV4, &Ipv4 { options: &[1; 8], ..Ipv4::to(PROTO_TCP, OUTSIDE) }.packet(&[]));
    assert_eq!(verdict(&program, &with_options[..14 + 24]), DROP);
}

#[test]
fn classifier_lets_later_fragments_through() {
    let program = load("examples/classifier.o");
    let fragment = |flags_fragment| {
        let ip = Ipv4 { flags_fragment, ..Ipv4::to(PROTO_TCP, [172, 16, 0, 1]) };
        ethernet(ETH_P_IPV4, &ip.packet(&tcp(40000, 23)))
    };
    assert_eq!(verdict(&program, &fragment(MORE_FRAGMENTS)), DROP, "the first fragment has the ports");
    assert_eq!(verdict(&program, &fragment(MORE_FRAGMENTS | 185)), PASS);
    assert_eq!(verdict(&program, &fragment(185)), PASS);
    // The later fragment has no ports, even cut short.
    let later = fragment(185);
    assert_eq!(verdict(&program, &later[..14 + 20]), PASS);
}

#[test]
fn classifier_drops_tcp_and_udp_with_ports_cut_off() {
    let program = load("examples/classifier.o");
    for frame in [tcp_frame(80), udp_frame(INSIDE, 80)] {
        for len in 34..38 {
            assert_eq!(verdict(&program, &frame[..len]), DROP, "{len} bytes");
        }
        // Both ports are there: the rest of the header is not needed.
        assert_eq!(verdict(&program, &frame[..38]), PASS);
    }
    let icmp = ethernet(ETH_P_IPV4, &Ipv4::to(PROTO_ICMP, OUTSIDE).packet(&[8, 0]));
    assert_eq!(verdict(&program, &icmp), PASS, "ICMP has no ports to cut off");
}

#[test]
fn classifier_drops_telnet() {
    let program = load("examples/classifier.o");
    assert_eq!(verdict(&program, &tcp_frame(23)), DROP);
    for port in [22, 24, 80, 23 << 8, 0xffff] {
        assert_eq!(verdict(&program, &tcp_frame(port)), PASS, "port {port}");
    }
    let from_telnet = ethernet(ETH_P_IPV4, &Ipv4::to(PROTO_TCP, OUTSIDE).packet(&tcp(23, 40000)));
    assert_eq!(verdict(&program, &from_telnet), PASS);
    assert_eq!(verdict(&program, &udp_frame(OUTSIDE, 23)), PASS, "UDP to 23 is not telnet");

    assert_eq!(verdict(&program, &vlan(100, ETH_P_IPV4, &tcp_frame(23)[14..])), DROP);
    assert_eq!(verdict(&program, &vlan(100, ETH_P_IPV4, &tcp_frame(22)[14..])), PASS);

    // With options, the ports move: NOP options (1s) where a parser that
    // ignored IHL would look for them read as port 257.
    let with_options = |dst_port| {
        let ip = Ipv4 { options: &[1; 8], ..Ipv4::to(PROTO_TCP, OUTSIDE) };
        ethernet(ETH_P_IPV4, &ip.packet(&tcp(40000, dst_port)))
    };
    assert_eq!(verdict(&program, &with_options(23)), DROP);
    assert_eq!(verdict(&program, &with_options(257)), PASS);
}

#[test]
fn classifier_drops_dns_from_outside_10_0_0_0_8() {
    let program = load("examples/classifier.o");
    assert_eq!(verdict(&program, &udp_frame(OUTSIDE, 53)), DROP);
    assert_eq!(verdict(&program, &udp_frame([11, 0, 0, 1], 53)), DROP);
    assert_eq!(verdict(&program, &udp_frame([9, 255, 255, 255], 53)), DROP);
    assert_eq!(verdict(&program, &udp_frame(INSIDE, 53)), PASS);
    assert_eq!(verdict(&program, &udp_frame([10, 255, 255, 255], 53)), PASS);
    assert_eq!(verdict(&program, &udp_frame(OUTSIDE, 54)), PASS);
    assert_eq!(verdict(&program, &udp_frame(OUTSIDE, 5353)), PASS);
    let from_dns = ethernet(ETH_P_IPV4, &Ipv4::from(PROTO_UDP, OUTSIDE).packet(&udp(53, 40000)));
    assert_eq!(verdict(&program, &from_dns), PASS);
    let tcp_dns = ethernet(ETH_P_IPV4, &Ipv4::from(PROTO_TCP, OUTSIDE).packet(&tcp(40000, 53)));
    assert_eq!(verdict(&program, &tcp_dns), PASS, "only UDP");
    assert_eq!(verdict(&program, &vlan(5, ETH_P_IPV4, &udp_frame(OUTSIDE, 53)[14..])), DROP);
    assert_eq!(verdict(&program, &vlan(5, ETH_P_IPV4, &udp_frame(INSIDE, 53)[14..])), PASS);
}

const BLOCKED_PORTS: [u16; 8] = [23, 69, 135, 137, 138, 139, 445, 514];

#[test]
fn calls_rodata_drops_ports_in_its_table() {
    let program = load("examples/calls_rodata.o");
    for port in BLOCKED_PORTS {
        assert_eq!(verdict(&program, &tcp_frame(port)), DROP, "TCP {port}");
        assert_eq!(verdict(&program, &udp_frame(OUTSIDE, port)), DROP, "UDP {port}");
    }
    for port in [0, 22, 24, 68, 70, 134, 136, 140, 444, 446, 513, 515, 1023, 1024, 1024 + 23, 0xffff] {
        assert_eq!(verdict(&program, &tcp_frame(port)), PASS, "TCP {port}");
        assert_eq!(verdict(&program, &udp_frame(OUTSIDE, port)), PASS, "UDP {port}");
    }
    let ip = Ipv4 { options: &[1; 4], ..Ipv4::to(PROTO_UDP, OUTSIDE) };
    assert_eq!(verdict(&program, &ethernet(ETH_P_IPV4, &ip.packet(&udp(40000, 69)))), DROP, "IPv4 options");
}

#[test]
fn calls_rodata_passes_what_has_no_port() {
    let program = load("examples/calls_rodata.o");
    assert_eq!(verdict(&program, &arp_frame()), PASS);
    let icmp = ethernet(ETH_P_IPV4, &Ipv4::to(PROTO_ICMP, OUTSIDE).packet(&tcp(40000, 23)));
    assert_eq!(verdict(&program, &icmp), PASS);
    let telnet = tcp_frame(23);
    for len in 0..38 {
        assert_eq!(verdict(&program, &telnet[..len]), PASS, "{len} bytes");
    }
    assert_eq!(verdict(&program, &telnet[..38]), DROP);
}

#[test]
fn calls_rodata_counts_packets_in_bss() {
    let object = read("examples/calls_rodata.o");
    let info = elf::inspect(&object).unwrap();
    let index = |name: &str| info.data.iter().position(|section| section.name == name).unwrap();
    assert!(!info.data[index(".rodata")].writable);
    assert!(info.data[index(".bss")].writable);

    let program = Program::from_elf(&object, None, &Helpers::new(), &Config::default()).unwrap();
    assert_eq!(program.data(index(".bss")).unwrap(), 0u64.to_le_bytes());
    assert_eq!(program.data(index(".data")).unwrap(), 1u32.to_le_bytes(), "blocking_enabled");
    for (count, packet) in [tcp_frame(23), arp_frame(), vec![], udp_frame(OUTSIDE, 80)].iter().enumerate() {
        verdict(&program, packet);
        assert_eq!(program.data(index(".bss")).unwrap(), (count as u64 + 1).to_le_bytes());
    }
    assert_eq!(program.data(index(".data")).unwrap(), 1u32.to_le_bytes());
}

#[test]
fn calls_rodata_links_its_calls_across_sections() {
    let object = read("examples/calls_rodata.o");
    let linked = elf::load(&object, None, &Helpers::new()).unwrap();
    assert_eq!((linked.section.as_str(), linked.function.as_str()), ("filter/ports", "filter"));
    let info = elf::inspect(&object).unwrap();
    let names: Vec<_> = info.functions.iter().map(|function| function.name.as_str()).collect();
    assert_eq!(names, ["port_is_blocked", "bit_is_set", "filter", "dst_port"]);
    let total: usize = info.functions.iter().map(|function| function.insns).sum();
    assert_eq!(linked.image.insns.len(), total, "every function is reached");
    let program = Program::from_image(linked.image, &Helpers::new(), &Config::default()).unwrap();
    assert_eq!(program.functions().len(), 4);
}
