//! Interpreter speed in nanoseconds per executed eBPF instruction.
//!
//! `cargo bench --bench interp`: criterion reports each case's throughput in
//! instructions per second ("elem/s"); ns per instruction is its inverse.
//! The setup line printed before each group gives the executed count.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qemu_ubpf::{Config, Helpers, Program, asm, interp, isa};

/// Sums a packet's bytes with a little mixing: a tight loop of loads, ALU
/// and a backward branch, as a checksum-like filter does.
const LOOP: &str = "
    mov %r0, 0
    mov %r3, 0
loop:
    jge %r3, %r2, done
    mov %r4, %r1
    add %r4, %r3
    ldxb %r5, [%r4]
    add %r0, %r5
    mov %r6, %r0
    lsh %r6, 3
    xor %r0, %r6
    add %r3, 1
    ja loop
done:
    exit
";

fn ethernet(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef];
    if let Some(tag) = vlan {
        frame.extend(0x8100u16.to_be_bytes());
        frame.extend(tag.to_be_bytes());
    }
    frame.extend(ethertype.to_be_bytes());
    frame.extend(payload);
    frame
}

fn ipv4(protocol: u8, src: [u8; 4], dst: [u8; 4], options: &[u8], payload: &[u8]) -> Vec<u8> {
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

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend(src_port.to_be_bytes());
    datagram.extend(dst_port.to_be_bytes());
    datagram.extend(((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend([0, 0]);
    datagram.extend(payload);
    datagram
}

fn tcp_syn(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend(src_port.to_be_bytes());
    segment.extend(dst_port.to_be_bytes());
    segment.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    segment
}

/// A DNS query, a VLAN-tagged TCP SYN, IPv4 with options, and mDNS.
fn packets() -> Vec<Vec<u8>> {
    let dns_query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    vec![
        ethernet(0x0800, None, &ipv4(17, [10, 0, 0, 2], [9, 9, 9, 9], &[], &udp(40000, 53, dns_query))),
        ethernet(0x0800, Some(42), &ipv4(6, [192, 168, 1, 5], [10, 1, 2, 3], &[], &tcp_syn(51000, 443))),
        ethernet(0x0800, None, &ipv4(17, [10, 0, 0, 7], [10, 0, 0, 1], &[0x94, 4, 0, 0], &udp(1234, 5678, b"data"))),
        ethernet(0x0800, None, &ipv4(17, [10, 0, 0, 9], [224, 0, 0, 251], &[], &udp(5353, 5353, dns_query))),
    ]
}

fn bench_loop(c: &mut Criterion) {
    let code = isa::encode_program(&asm::assemble(LOOP).expect("LOOP assembles"));
    let program = Program::load(&code, &Helpers::new(), &Config::default()).expect("LOOP verifies");
    let mut packet = vec![0xa5u8; 1500];
    let (result, executed) = interp::execute_counted(&program, &mut packet);
    result.expect("LOOP runs");
    println!("interp/byte_sum_loop: {executed} instructions per run");
    let mut group = c.benchmark_group("interp");
    group.throughput(Throughput::Elements(executed));
    group.bench_function("byte_sum_loop_1500", |b| b.iter(|| program.execute(&mut packet)));
    group.finish();
}

fn bench_classifier(c: &mut Criterion) {
    let object = include_bytes!("../examples/classifier.o");
    let program = Program::from_elf(object, None, &Helpers::new(), &Config::default()).expect("classifier loads");
    let mut packets = packets();
    let executed: u64 = packets
        .iter_mut()
        .map(|packet| {
            let (result, executed) = interp::execute_counted(&program, packet);
            result.expect("classifier runs");
            executed
        })
        .sum();
    println!("interp/classifier: {executed} instructions per 4 packets");
    let mut group = c.benchmark_group("interp");
    group.throughput(Throughput::Elements(executed));
    group.bench_function("classifier_4_packets", |b| {
        b.iter(|| {
            for packet in packets.iter_mut() {
                let _ = std::hint::black_box(program.execute(packet));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_loop, bench_classifier);
criterion_main!(benches);
