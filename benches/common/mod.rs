//! Realistic packets shared by the benchmarks, and their clock.

/// The CPU time the calling thread has used, in nanoseconds. On a machine
/// whose few cores other work shares, the wall clock also counts the time
/// the thread waits for a core; this leaves it out.
pub fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "Linux has a per-thread CPU clock");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

pub fn ethernet(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef];
    if let Some(tag) = vlan {
        frame.extend(0x8100u16.to_be_bytes());
        frame.extend(tag.to_be_bytes());
    }
    frame.extend(ethertype.to_be_bytes());
    frame.extend(payload);
    frame
}

pub fn ipv4(protocol: u8, src: [u8; 4], dst: [u8; 4], options: &[u8], payload: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = (header_len + payload.len()) as u16;
    let mut packet = vec![0x40 | (header_len / 4) as u8, 0];
    packet.extend(total.to_be_bytes());
    packet.extend([0, 1, 0x40, 0, 64, protocol, 0, 0]);
    packet.extend(src);
    packet.extend(dst);
    packet.extend(options);
    packet.extend(payload);
    packet
}

pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend(src_port.to_be_bytes());
    datagram.extend(dst_port.to_be_bytes());
    datagram.extend(((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend([0, 0]);
    datagram.extend(payload);
    datagram
}

pub fn tcp_syn(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend(src_port.to_be_bytes());
    segment.extend(dst_port.to_be_bytes());
    segment.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    segment
}

/// A DNS query, a VLAN-tagged TCP SYN, IPv4 with options, and mDNS.
pub fn packets() -> Vec<Vec<u8>> {
    let dns_query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    vec![
        ethernet(0x0800, None, &ipv4(17, [10, 0, 0, 2], [9, 9, 9, 9], &[], &udp(40000, 53, dns_query))),
        ethernet(0x0800, Some(42), &ipv4(6, [192, 168, 1, 5], [10, 1, 2, 3], &[], &tcp_syn(51000, 443))),
        ethernet(0x0800, None, &ipv4(17, [10, 0, 0, 7], [10, 0, 0, 1], &[0x94, 4, 0, 0], &udp(1234, 5678, b"data"))),
        ethernet(0x0800, None, &ipv4(17, [10, 0, 0, 9], [224, 0, 0, 251], &[], &udp(5353, 5353, dns_query))),
    ]
}
