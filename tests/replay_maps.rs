//! The map examples (examples/*.c with libbpf headers) through
//! `qemu-ubpf replay --maps`, in both engines: the packets each drops, and
//! what its maps hold afterwards. The captures are raw-IP pcaps written
//! here, with timestamps the SYN limiter's clock follows.

mod common;
use common::{example, scratch_dir};

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// An IPv4 packet: a 20-byte header then `payload`.
fn ip(protocol: u8, source: [u8; 4], destination: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut packet = vec![0x45, 0];
    packet.extend(total.to_be_bytes());
    packet.extend([0, 1, 0, 0, 64, protocol, 0, 0]);
    packet.extend(source);
    packet.extend(destination);
    packet.extend(payload);
    packet
}

fn tcp(source: [u8; 4], destination: [u8; 4], port: u16, flags: u8) -> Vec<u8> {
    let mut header = vec![0x9c, 0x40];
    header.extend(port.to_be_bytes());
    header.extend([0; 8]);
    header.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    ip(TCP, source, destination, &header)
}

fn udp(source: [u8; 4], destination: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = vec![0x9c, 0x40];
    header.extend(port.to_be_bytes());
    header.extend([0, 8, 0, 0]);
    ip(UDP, source, destination, &header)
}

fn icmp(source: [u8; 4], destination: [u8; 4], kind: u8) -> Vec<u8> {
    ip(ICMP, source, destination, &[kind, 0, 0, 0, 0, 1, 0, 1])
}

/// A pcap (microseconds, link type raw IPv4) of `packets` at their times
/// (microseconds).
fn pcap(packets: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut file = Vec::new();
    for word in [0xa1b2_c3d4u32] {
        file.extend(word.to_le_bytes());
    }
    file.extend(2u16.to_le_bytes());
    file.extend(4u16.to_le_bytes());
    file.extend([0; 8]);
    file.extend(65535u32.to_le_bytes());
    file.extend(228u32.to_le_bytes()); // LINKTYPE_IPV4
    for (micros, packet) in packets {
        file.extend(((micros / 1_000_000) as u32).to_le_bytes());
        file.extend(((micros % 1_000_000) as u32).to_le_bytes());
        file.extend((packet.len() as u32).to_le_bytes());
        file.extend((packet.len() as u32).to_le_bytes());
        file.extend(packet);
    }
    file
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Two u64 in host order, as a value's hex.
fn pair(a: u64, b: u64) -> String {
    hex(&[a.to_ne_bytes(), b.to_ne_bytes()].concat())
}

/// What a replay did: the packets it dropped (their indices), its summary.
struct Outcome {
    dropped: Vec<usize>,
    json: Value,
}

impl Outcome {
    fn map(&self, name: &str) -> &Value {
        let maps = self.json["maps"].as_array().expect("--maps gives maps");
        maps.iter().find(|map| map["name"] == name).unwrap_or_else(|| panic!("no map {name} in {maps:?}"))
    }

    /// A map's entries as (key, value) hex pairs.
    fn entries(&self, name: &str) -> Vec<(String, String)> {
        let entries = self.map(name)["entries"].as_array().expect("entries").clone();
        entries
            .iter()
            .map(|entry| (entry["key"].as_str().unwrap().into(), entry["value"].as_str().unwrap().into()))
            .collect()
    }
}

/// Replays `packets` through example `name` in both engines, which must
/// agree on the dropped packets and the maps; `extra` are more arguments.
fn replay(test: &str, name: &str, packets: &[(u64, Vec<u8>)], extra: &[&str]) -> Outcome {
    let dir = scratch_dir("replay_maps", test);
    let capture = dir.join("in.pcap");
    std::fs::write(&capture, pcap(packets)).unwrap();
    let mut outcomes = Vec::new();
    for engine in ["jit", "interp"] {
        let drop = dir.join(format!("drop-{engine}.pcap"));
        let object = example(name);
        let args = [
            &["replay", path(&object), path(&capture), "--engine", engine, "--maps", "--json", "--drop", path(&drop)],
            extra,
        ]
        .concat();
        let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name} ({engine}): {stderr}");
        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["errors"], 0, "{name} ({engine}): {json}");
        outcomes.push(Outcome { dropped: dropped(&drop, packets), json });
    }
    let (jit, interp) = (&outcomes[0], &outcomes[1]);
    assert_eq!(jit.dropped, interp.dropped, "{name}: dropped packets");
    assert_eq!(jit.json["maps"], interp.json["maps"], "{name}: maps");
    outcomes.pop().unwrap()
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Which of `packets` (each at its own time) the drop output holds, by
/// index.
fn dropped(file: &PathBuf, packets: &[(u64, Vec<u8>)]) -> Vec<usize> {
    let bytes = std::fs::read(file).unwrap();
    let word = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
    let mut at = 24;
    let mut indices = Vec::new();
    while at < bytes.len() {
        let micros = word(at) * 1_000_000 + word(at + 4);
        let len = word(at + 8) as usize;
        let data = &bytes[at + 16..at + 16 + len];
        let index = packets.iter().position(|(time, packet)| *time == micros && packet == data);
        indices.push(index.expect("a packet of the input"));
        at += 16 + len;
    }
    indices
}

const A: [u8; 4] = [192, 0, 2, 1];
const B: [u8; 4] = [198, 51, 100, 7];
const SERVER: [u8; 4] = [10, 0, 0, 1];

fn at_ms(packets: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
    packets.into_iter().enumerate().map(|(index, packet)| (index as u64 * 1000, packet)).collect()
}

#[test]
fn protocol_counters_count_packets_and_bytes() {
    let packets = at_ms(vec![
        tcp(A, SERVER, 80, ACK),
        tcp(A, SERVER, 80, ACK),
        tcp(B, SERVER, 443, SYN),
        udp(A, SERVER, 53),
        udp(B, SERVER, 53),
        icmp(A, SERVER, 8),
    ]);
    let outcome = replay("counters", "proto_counters", &packets, &[]);
    assert!(outcome.dropped.is_empty());
    let key = |protocol: u32| hex(&protocol.to_ne_bytes());
    assert_eq!(
        outcome.entries("counters"),
        [(key(1), pair(1, 28)), (key(6), pair(3, 120)), (key(17), pair(2, 56))],
        "only the non-zero counters, by protocol"
    );
}

#[test]
fn top_talkers_sum_per_source() {
    let mut packets = vec![udp(A, SERVER, 53); 3];
    packets.push(tcp(B, SERVER, 22, SYN));
    packets.push(udp(SERVER, A, 5353));
    let outcome = replay("talkers", "top_talkers", &at_ms(packets), &[]);
    assert!(outcome.dropped.is_empty());
    let mut expected = vec![(hex(&A), pair(3, 84)), (hex(&B), pair(1, 40)), (hex(&SERVER), pair(1, 28))];
    expected.sort();
    assert_eq!(outcome.entries("talkers"), expected);
    assert_eq!(outcome.map("talkers")["type"], "lru_hash");
}

#[test]
fn prefix_blocklist_filled_from_the_host() {
    let dir = scratch_dir("replay_maps", "blocklist_init");
    let init = dir.join("blocklist.json");
    std::fs::write(
        &init,
        r#"{"blocklist": [
            {"key": "10.0.0.0/8", "value": 1},
            {"key": "10.1.0.0/16", "value": 0},
            {"key": "203.0.113.0/24", "value": 2}
        ]}"#,
    )
    .unwrap();
    let packets = at_ms(vec![
        udp([10, 2, 3, 4], A, 53),          // 0: from 10/8: dropped, reason 1
        udp([10, 1, 2, 3], A, 53),          // 1: 10.1/16 is an exception
        tcp(A, [203, 0, 113, 9], 443, SYN), // 2: to 203.0.113/24: reason 2
        tcp(A, [203, 0, 114, 9], 443, SYN), // 3: next door: passes
        udp([10, 200, 0, 1], SERVER, 123),  // 4: reason 1 again
    ]);
    let outcome = replay("blocklist", "prefix_blocklist", &packets, &["--map-init", path(&init)]);
    assert_eq!(outcome.dropped, [0, 2, 4]);
    let reason = |reason: u32| hex(&reason.to_ne_bytes());
    assert_eq!(
        outcome.entries("drops"),
        [(reason(1), hex(&2u64.to_ne_bytes())), (reason(2), hex(&1u64.to_ne_bytes()))]
    );
    assert_eq!(outcome.entries("blocklist").len(), 3);
}

#[test]
fn syn_limiter_follows_capture_time() {
    let second = 1_000_000;
    let packets = vec![
        (0, tcp(A, SERVER, 80, SYN)),
        (100_000, tcp(A, SERVER, 80, SYN)),
        (200_000, tcp(B, SERVER, 80, SYN)),
        (300_000, tcp(A, SERVER, 80, SYN)),
        (400_000, tcp(A, SERVER, 80, SYN)), // 4: A's fourth SYN in a second
        (500_000, tcp(A, SERVER, 80, SYN | ACK)),
        (600_000, tcp(A, SERVER, 80, SYN)),          // 6: the fifth
        (second + 500_000, tcp(A, SERVER, 80, SYN)), // a new second
    ];
    let outcome = replay("syn", "syn_limiter", &packets, &[]);
    assert_eq!(outcome.dropped, [4, 6]);
    let mut expected = vec![(hex(&A), pair(1_500_000_000, 1)), (hex(&B), pair(200_000_000, 1))];
    expected.sort();
    assert_eq!(outcome.entries("syn_windows"), expected);
}

#[test]
fn dispatcher_tail_calls_by_protocol_and_reports_drops() {
    let packets = at_ms(vec![
        tcp(A, SERVER, 23, SYN),    // 0: telnet: dropped by the TCP handler
        tcp(A, SERVER, 80, SYN),    // 1
        udp(A, SERVER, 53),         // 2
        icmp(B, SERVER, 8),         // 3: echo request: dropped by the ICMP handler
        icmp(SERVER, B, 0),         // 4: echo reply
        ip(47, A, SERVER, &[0; 4]), // 5: GRE: no handler
    ]);
    let outcome = replay("dispatcher", "dispatcher", &packets, &["--program", "dispatch"]);
    assert_eq!(outcome.dropped, [0, 3]);
    let key = |protocol: u32| hex(&protocol.to_ne_bytes());
    let count = |count: u64| hex(&count.to_ne_bytes());
    assert_eq!(outcome.entries("handled"), [(key(1), count(2)), (key(6), count(2)), (key(17), count(1))]);
    let event = |protocol: u32, destination: [u8; 4]| hex(&[&protocol.to_ne_bytes()[..], &destination].concat());
    assert_eq!(outcome.map("drop_events")["records"], serde_json::json!([event(6, SERVER), event(1, SERVER)]));
    let programs = &outcome.map("handlers")["programs"];
    assert_eq!(programs.as_array().unwrap().len(), 3);
}

#[test]
fn inspect_lists_maps_and_a_bad_init_file_is_named() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(["inspect", path(&example("dispatcher"))]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("3 maps"), "{text}");
    assert!(text.contains("handlers") && text.contains("prog_array") && text.contains("[6] = handle_tcp"), "{text}");
    assert!(text.contains("drop_events") && text.contains("ringbuf"), "{text}");

    let dir = scratch_dir("replay_maps", "bad_init");
    let init = dir.join("bad.json");
    std::fs::write(&init, r#"{"blocklist": [{"key": "10.0.0.0/33", "value": 1}]}"#).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf"))
        .args(["replay", path(&example("prefix_blocklist")), "--map-init", path(&init)])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.json") && stderr.contains("blocklist") && stderr.contains("entry 0"), "{stderr}");
}
