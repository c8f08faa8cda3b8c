#!/usr/bin/env python3
"""Records what the Linux kernel does with XDP programs, as the oracle for
qemu-ubpf's XDP support: tests/kernel/xdp.json (format: tests/kernel/README.md).

    sudo scripts/record-kernel-xdp.py [--only NAME]... [OUTPUT]
    sudo scripts/record-kernel-xdp.py --examples [--only NAME]... [OUTPUT]

With --examples, it records the XDP examples (examples/xdp/*.o) over frames
made for them, into tests/kernel/xdp_examples.json, in the same format.

Needs root, a kernel with BPF_PROG_TEST_RUN, libbpf 1.x (Debian's libbpf1)
and, for the objects Debian ships, the packages libxdp1, xdp-tools and
xdp-tests. Each run loads its object afresh, fills the maps the program needs
configured, runs the program once with BPF_PROG_TEST_RUN on one frame, and
reads every map back, so that each record stands alone. The process is pinned
to CPU 0, since test_run runs the program on the calling CPU: per-CPU values
land in slot 0 unless a record says otherwise.

With --only, only the objects whose path contains one of the NAMEs are
recorded (tests/xdp.rs does so to ask the live kernel, where it may). When
the kernel refuses bpf(2) (EPERM), the script exits with status 77.
"""

import ctypes
import errno
import hashlib
import json
import os
import platform
import re
import struct
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_OUTPUT = os.path.join(ROOT, "tests", "kernel", "xdp.json")
EXAMPLES_OUTPUT = os.path.join(ROOT, "tests", "kernel", "xdp_examples.json")
# The exit status when the kernel refuses bpf(2) to this process.
BPF_REFUSED = 77

XDP_ACTIONS = ["XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"]

# enum bpf_map_type values this script reads differently.
MAP_TYPES = {
    1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
    6: "percpu_array", 9: "lru_hash", 10: "lru_percpu_hash", 14: "devmap",
    16: "cpumap", 17: "xskmap", 27: "ringbuf", 29: "devmap_hash",
}
# A verifier log line showing an instruction: "12: (61) r1 = *(u32 *)(r1 +2)".
INSN_LINE = re.compile(r"^(\d+): (\(.*)$")
PERCPU_MAPS = {"percpu_hash", "percpu_array", "lru_percpu_hash"}
ARRAY_MAPS = {"array", "percpu_array", "devmap", "cpumap", "xskmap", "prog_array"}

# ---------------------------------------------------------------- libbpf


class TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts, libbpf 1.x."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
P = ctypes.c_void_p


def _proto(name, restype, *argtypes):
    function = getattr(libbpf, name)
    function.restype = restype
    function.argtypes = list(argtypes)


_proto("bpf_object__open_file", P, ctypes.c_char_p, P)
_proto("bpf_object__load", ctypes.c_int, P)
_proto("bpf_object__close", None, P)
_proto("bpf_object__next_program", P, P, P)
_proto("bpf_object__next_map", P, P, P)
_proto("bpf_program__name", ctypes.c_char_p, P)
_proto("bpf_program__section_name", ctypes.c_char_p, P)
_proto("bpf_program__set_autoload", ctypes.c_int, P, ctypes.c_bool)
_proto("bpf_program__set_log_buf", ctypes.c_int, P, ctypes.c_char_p, ctypes.c_size_t)
_proto("bpf_program__set_log_level", ctypes.c_int, P, ctypes.c_uint32)
_proto("bpf_program__fd", ctypes.c_int, P)
_proto("bpf_map__name", ctypes.c_char_p, P)
_proto("bpf_map__type", ctypes.c_int, P)
_proto("bpf_map__key_size", ctypes.c_uint32, P)
_proto("bpf_map__value_size", ctypes.c_uint32, P)
_proto("bpf_map__max_entries", ctypes.c_uint32, P)
_proto("bpf_map__set_pin_path", ctypes.c_int, P, ctypes.c_char_p)
_proto("bpf_map__fd", ctypes.c_int, P)
_proto("bpf_map_update_elem", ctypes.c_int, ctypes.c_int, P, P, ctypes.c_uint64)
_proto("bpf_map_lookup_elem", ctypes.c_int, ctypes.c_int, P, P)
_proto("bpf_map_get_next_key", ctypes.c_int, ctypes.c_int, P, P)
_proto("bpf_map_lookup_batch", ctypes.c_int, ctypes.c_int, P, P, P, P, ctypes.POINTER(ctypes.c_uint32), P)
_proto("bpf_prog_test_run_opts", ctypes.c_int, ctypes.c_int, ctypes.POINTER(TestRunOpts))
_proto("libbpf_num_possible_cpus", ctypes.c_int)
_proto("libbpf_major_version", ctypes.c_uint32)
_proto("libbpf_minor_version", ctypes.c_uint32)
_proto("libbpf_set_print", P, P)

# libbpf's own messages (a refused program's log twice, skipped sections)
# would drown the progress report; what matters lands in the output.
libbpf.libbpf_set_print(None)

POSSIBLE_CPUS = libbpf.libbpf_num_possible_cpus()


def error_name(code):
    """An errno as its symbolic name (libbpf returns -errno)."""
    return errno.errorcode.get(abs(code), str(abs(code)))


def programs_of(obj):
    prog = libbpf.bpf_object__next_program(obj, None)
    while prog:
        yield prog
        prog = libbpf.bpf_object__next_program(obj, prog)


def maps_of(obj):
    map_ = libbpf.bpf_object__next_map(obj, None)
    while map_:
        yield map_
        map_ = libbpf.bpf_object__next_map(obj, map_)


class Loaded:
    """One object opened and loaded with only `program` enabled."""

    def __init__(self, path, program, log=False):
        self.obj = libbpf.bpf_object__open_file(path.encode(), None)
        if not self.obj:
            raise OSError(ctypes.get_errno(), f"cannot open {path}")
        self.prog = None
        self.log = ctypes.create_string_buffer(1 << 20) if log else None
        for prog in programs_of(self.obj):
            wanted = libbpf.bpf_program__name(prog).decode() == program
            libbpf.bpf_program__set_autoload(prog, wanted)
            if wanted:
                self.prog = prog
                if log:
                    libbpf.bpf_program__set_log_buf(prog, self.log, len(self.log))
                    libbpf.bpf_program__set_log_level(prog, 1)
        self.maps = {}
        for map_ in maps_of(self.obj):
            # Pinned maps (LIBBPF_PIN_BY_NAME) would outlive the run and be
            # shared between runs; every run gets its own.
            libbpf.bpf_map__set_pin_path(map_, None)
            self.maps[libbpf.bpf_map__name(map_).decode()] = map_
        self.load_error = libbpf.bpf_object__load(self.obj)

    def close(self):
        libbpf.bpf_object__close(self.obj)

    def map_info(self, name):
        map_ = self.maps[name]
        kind = libbpf.bpf_map__type(map_)
        return {
            "type": MAP_TYPES.get(kind, str(kind)),
            "key_size": libbpf.bpf_map__key_size(map_),
            "value_size": libbpf.bpf_map__value_size(map_),
            "max_entries": libbpf.bpf_map__max_entries(map_),
        }

    def update(self, name, key, value):
        """Sets one entry; a per-CPU map gets `value` on every CPU unless it
        is a list of one value per CPU (bpftool's convention)."""
        info = self.map_info(name)
        if info["type"] in PERCPU_MAPS:
            stride = (info["value_size"] + 7) // 8 * 8
            values = value if isinstance(value, list) else [value] * POSSIBLE_CPUS
            value = b"".join(v.ljust(stride, b"\0") for v in values)
        fd = libbpf.bpf_map__fd(self.maps[name])
        key_buf = ctypes.create_string_buffer(key, len(key))
        value_buf = ctypes.create_string_buffer(value, len(value))
        err = libbpf.bpf_map_update_elem(fd, key_buf, value_buf, 0)
        if err:
            raise OSError(-err, f"map {name}: update {key.hex()}: {error_name(err)}")

    def dump(self, name):
        """The map's contents: every entry of a hash, and every entry of an
        array whose value is not all zeros."""
        info = self.map_info(name)
        fd = libbpf.bpf_map__fd(self.maps[name])
        percpu = info["type"] in PERCPU_MAPS
        stride = (info["value_size"] + 7) // 8 * 8
        size = stride * POSSIBLE_CPUS if percpu else info["value_size"]
        key = ctypes.create_string_buffer(info["key_size"])
        value = ctypes.create_string_buffer(max(size, 1))
        batch = self._array_batch(fd, info, size) if info["type"] in {"array", "percpu_array"} else None
        if batch is not None:
            pairs = batch
        elif info["type"] in ARRAY_MAPS:
            pairs = ((struct.pack("<I", i), None) for i in range(info["max_entries"]))
        else:
            pairs = ((k, None) for k in self._hash_keys(fd, info["key_size"]))
        entries = []
        for k, raw in pairs:
            if raw is None:
                ctypes.memmove(key, k, len(k))
                err = libbpf.bpf_map_lookup_elem(fd, key, value)
                if err == -errno.ENOENT:
                    continue
                if err:
                    return {**info, "unreadable": error_name(err)}
                raw = value.raw[:size]
            if info["type"] in ARRAY_MAPS and not any(raw):
                continue
            if percpu:
                shown = [raw[i * stride:i * stride + info["value_size"]].hex() for i in range(POSSIBLE_CPUS)]
            else:
                shown = raw.hex()
            entries.append({"key": k.hex(), "value": shown})
        entries.sort(key=lambda e: e["key"])
        return {**info, "entries": entries}

    @staticmethod
    def _array_batch(fd, info, size):
        """Every (key, value) of an array in one BPF_MAP_LOOKUP_BATCH (a
        per-key loop over 65536 entries takes most of a second), or None
        where the kernel has no batch lookup."""
        entries = info["max_entries"]
        keys = ctypes.create_string_buffer(4 * entries)
        values = ctypes.create_string_buffer(size * entries)
        out_batch = ctypes.create_string_buffer(4)
        count = ctypes.c_uint32(entries)
        err = libbpf.bpf_map_lookup_batch(fd, None, out_batch, keys, values, ctypes.byref(count), None)
        if (err and err != -errno.ENOENT) or count.value != entries:
            return None
        keys, values = keys.raw, values.raw
        return [(keys[4 * i:4 * i + 4], values[size * i:size * (i + 1)]) for i in range(entries)]

    @staticmethod
    def _hash_keys(fd, key_size):
        key = ctypes.create_string_buffer(key_size)
        next_key = ctypes.create_string_buffer(key_size)
        found = []
        previous = None
        while libbpf.bpf_map_get_next_key(fd, previous, next_key) == 0:
            found.append(next_key.raw)
            ctypes.memmove(key, next_key, key_size)
            previous = key
        return found


# ---------------------------------------------------------------- frames


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
MAC_BLOCKED = bytes.fromhex("020000000066")
IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])
IP_FILTERED = bytes([10, 0, 0, 7])
IP6_A = bytes.fromhex("fd000000000000000000000000000001")
IP6_B = bytes.fromhex("fd000000000000000000000000000002")
IP6_FILTERED = bytes.fromhex("fd000000000000000000000000000007")


def ethernet(ethertype, payload, src=MAC_A, dst=MAC_B, tags=()):
    """A frame; tags are (TPID, VLAN id) pairs, outermost first."""
    header = dst + src
    for tpid, vid in tags:
        header += struct.pack("!HH", tpid, vid)
    return header + struct.pack("!H", ethertype) + payload


def ipv4(protocol, payload, src=IP_A, dst=IP_B, options=b"", frag_off=0x4000, ttl=64):
    ihl = (20 + len(options)) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), 0x1234,
                         frag_off, ttl, protocol, 0, src, dst) + options
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(next_header, payload, src=IP6_A, dst=IP6_B):
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), next_header, 64, src, dst) + payload


def pseudo_v4(src, dst, protocol, length):
    return src + dst + struct.pack("!BBH", 0, protocol, length)


def pseudo_v6(src, dst, protocol, length):
    return src + dst + struct.pack("!IxxxB", length, protocol)


def tcp_syn(sport, dport, pseudo):
    header = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 0xFFFF, 0, 0)
    check = checksum(pseudo(6, len(header)) + header)
    return header[:16] + struct.pack("!H", check) + header[18:]


def udp(sport, dport, payload, pseudo):
    header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    check = checksum(pseudo(17, 8 + len(payload)) + header + payload) or 0xFFFF
    return header[:6] + struct.pack("!H", check) + payload


DNS_QUERY = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")


def v4(src=IP_A, dst=IP_B):
    return lambda protocol, length: pseudo_v4(src, dst, protocol, length)


def v6(src=IP6_A, dst=IP6_B):
    return lambda protocol, length: pseudo_v6(src, dst, protocol, length)


def icmp_echo():
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + bytes(range(32))
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def icmpv6_neighbour_solicitation(src, target):
    body = struct.pack("!BBHI", 135, 0, 0, 0) + target
    pseudo = pseudo_v6(src, bytes.fromhex("ff0200000000000000000001ff000002"), 58, len(body))
    return body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]


def arp_request(sender_mac, sender_ip, target_ip):
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sender_mac, sender_ip,
                       b"\0" * 6, target_ip)


def udp_frame(total):
    """An IPv4 UDP frame of `total` bytes, the payload counting up."""
    payload = bytes(i & 0xFF for i in range(total - 14 - 20 - 8))
    return ethernet(0x0800, ipv4(17, udp(40000, 9, payload, v4()), frag_off=0))


def frames():
    """The committed input frames, by name, in a fixed order."""
    ns_dst = bytes.fromhex("ff0200000000000000000001ff000002")
    return {
        "ipv4_tcp_syn": ethernet(0x0800, ipv4(6, tcp_syn(40000, 80, v4()))),
        "ipv4_udp_dns": ethernet(0x0800, ipv4(17, udp(53001, 53, DNS_QUERY, v4()))),
        "ipv4_icmp_echo": ethernet(0x0800, ipv4(1, icmp_echo(), src=IP_FILTERED)),
        "ipv4_options_tcp": ethernet(0x0800, ipv4(6, tcp_syn(40001, 22, v4()),
                                                  options=bytes.fromhex("94040000"))),
        "ipv4_fragment_udp": ethernet(0x0800, ipv4(17, bytes(range(24)), frag_off=185)),
        "vlan_ipv4_udp": ethernet(0x0800, ipv4(17, udp(53002, 53, DNS_QUERY, v4())),
                                  tags=[(0x8100, 100)]),
        "qinq_ipv4_tcp": ethernet(0x0800, ipv4(6, tcp_syn(40002, 80, v4())),
                                  tags=[(0x88A8, 200), (0x8100, 100)]),
        "ipv6_tcp_syn": ethernet(0x86DD, ipv6(6, tcp_syn(40003, 443, v6()))),
        "ipv6_udp_dns": ethernet(0x86DD, ipv6(17, udp(53003, 53, DNS_QUERY, v6(src=IP6_FILTERED)),
                                              src=IP6_FILTERED)),
        "ipv6_icmpv6_ns": ethernet(0x86DD, ipv6(58, icmpv6_neighbour_solicitation(IP6_A, IP6_B),
                                                dst=ns_dst), dst=bytes.fromhex("3333ff000002")),
        "arp_request": ethernet(0x0806, arp_request(MAC_BLOCKED, bytes([10, 0, 0, 102]), IP_B),
                                src=MAC_BLOCKED, dst=b"\xff" * 6),
        "ethernet_only": ethernet(0x0800, b""),
        "ipv4_truncated": ethernet(0x0800, ipv4(6, tcp_syn(40004, 80, v4()))[:10]),
        "runt_10": ethernet(0x0800, b"")[:10],
        "ipv4_udp_1514": udp_frame(1514),
        "ipv4_udp_4000": udp_frame(4000),
    }


# examples/xdp/redirect.json puts MAC_B on port 1 (the loopback) and
# MAC_PORT2 on port 2, whose devmap slot it leaves empty; MAC_UNKNOWN is on
# none. examples/xdp/dnat.json has rules for IP_B only.
MAC_PORT2 = bytes.fromhex("020000000003")
MAC_UNKNOWN = bytes.fromhex("020000000009")
IP_OTHER = bytes([10, 0, 0, 3])


def udp_zero_after_nat(sport, dport, new_dst, new_dport):
    """A UDP datagram to IP_B:dport whose checksum, once dnat.c has sent it
    to new_dst:new_dport, sums to zero: its last payload word is chosen so,
    and the program must then write 0xffff, as 0 means "no checksum"."""
    payload = DNS_QUERY + b"\0\0\0"  # the last word at an even offset
    header = struct.pack("!HHHH", sport, new_dport, 8 + len(payload), 0)
    rest = ~checksum(pseudo_v4(IP_A, new_dst, 17, 8 + len(payload)) + header + payload) & 0xFFFF
    payload = payload[:-2] + struct.pack("!H", 0xFFFF - rest)
    return udp(sport, dport, payload, v4())


def udp_without_checksum(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def example_frames():
    """The frames the XDP examples (examples/xdp/) run over, by name: every
    branch of each, valid and cut short, tagged and not, each protocol."""
    echo = icmp_echo()
    reply = b"\0\0" + struct.pack("!H", checksum(b"\0\0\0\0" + echo[4:])) + echo[4:]
    udp_dns = udp(53001, 53, DNS_QUERY, v4())
    common = frames()
    return {
        "ipv4_icmp_echo": ethernet(0x0800, ipv4(1, echo)),
        "ipv4_icmp_echo_options": ethernet(0x0800, ipv4(1, echo, options=bytes.fromhex("94040000"))),
        "ipv4_icmp_echo_reply": ethernet(0x0800, ipv4(1, reply, src=IP_B, dst=IP_A), src=MAC_B, dst=MAC_A),
        "ipv4_icmp_echo_fragment": ethernet(0x0800, ipv4(1, echo, frag_off=0x2000)),
        "ipv4_icmp_truncated": ethernet(0x0800, ipv4(1, echo)[:24]),
        "vlan_ipv4_icmp_echo": ethernet(0x0800, ipv4(1, echo), tags=[(0x8100, 100)]),
        "ipv4_tcp_syn": common["ipv4_tcp_syn"],
        "ipv4_tcp_syn_port_22": ethernet(0x0800, ipv4(6, tcp_syn(40005, 22, v4()))),
        "ipv4_options_tcp_syn": ethernet(0x0800, ipv4(6, tcp_syn(40001, 80, v4()),
                                                      options=bytes.fromhex("94040000"))),
        "ipv4_tcp_truncated": ethernet(0x0800, ipv4(6, tcp_syn(40006, 80, v4()))[:30]),
        "ipv4_udp_dns": ethernet(0x0800, ipv4(17, udp_dns)),
        "ipv4_udp_no_checksum": ethernet(0x0800, ipv4(17, udp_without_checksum(53004, 53, DNS_QUERY))),
        "ipv4_udp_zero_after_nat": ethernet(0x0800, ipv4(17, udp_zero_after_nat(53005, 53, *dnat_udp_target()))),
        "ipv4_udp_other_host": ethernet(0x0800, ipv4(17, udp(53006, 53, DNS_QUERY, v4(dst=IP_OTHER)),
                                                     dst=IP_OTHER)),
        "ipv4_udp_first_fragment": ethernet(0x0800, ipv4(17, udp_dns, frag_off=0x2000)),
        "ipv4_fragment_udp": common["ipv4_fragment_udp"],
        "ipv4_truncated": common["ipv4_truncated"],
        "ipv4_udp_to_port2": ethernet(0x0800, ipv4(17, udp_dns), dst=MAC_PORT2),
        "ipv4_udp_to_unknown_mac": ethernet(0x0800, ipv4(17, udp_dns), dst=MAC_UNKNOWN),
        "vlan_ipv4_udp": common["vlan_ipv4_udp"],
        "qinq_ipv4_tcp": common["qinq_ipv4_tcp"],
        "vlan_ipv6_tcp": ethernet(0x86DD, ipv6(6, tcp_syn(40007, 443, v6())), tags=[(0x8100, 7)]),
        "vlan_truncated": ethernet(0x8100, b"\x00\x64"),
        "vlan_ipv4_truncated": ethernet(0x0800, b"\x45\x00", tags=[(0x8100, 100)]),
        "ipv6_tcp_syn": common["ipv6_tcp_syn"],
        "ipv6_icmpv6_ns": common["ipv6_icmpv6_ns"],
        "ipv6_truncated": ethernet(0x86DD, ipv6(6, tcp_syn(40008, 443, v6()))[:30]),
        "arp_request": common["arp_request"],
        "ethernet_only": common["ethernet_only"],
        "runt_10": common["runt_10"],
        "ipv4_udp_64": udp_frame(64),
        "ipv4_udp_65": udp_frame(65),
        "ipv4_udp_1514": common["ipv4_udp_1514"],
    }


# ---------------------------------------------------------------- contexts


# A device this script adds and removes, with DEVICE_QUEUES receive queues.
QUEUE_DEVICE = "xdporec0"
DEVICE_QUEUES = 4


def xdp_md(data=0, data_end=None, data_meta=0, ingress_ifindex=0, rx_queue_index=0,
           egress_ifindex=0):
    return {"data": data, "data_end": data_end, "data_meta": data_meta,
            "ingress_ifindex": ingress_ifindex, "rx_queue_index": rx_queue_index,
            "egress_ifindex": egress_ifindex}


def contexts(device_ifindex):
    """How each run's context is given: ctx_in's fields (data_end None means
    the length of data_in) and the metadata bytes put before the frame.
    `None` as ctx_in runs without one."""
    meta = bytes(range(0xA0, 0xC0))
    variants = {
        "lo_queue0": (xdp_md(ingress_ifindex=1), b""),
        "no_ctx": (None, b""),
        "zero_ctx": (xdp_md(), b""),
        "meta_8": (xdp_md(data=8, ingress_ifindex=1), meta[:8]),
        "meta_32": (xdp_md(data=32, ingress_ifindex=1), meta[:32]),
        "meta_36": (xdp_md(data=36, ingress_ifindex=1), meta + b"\xc0\xc1\xc2\xc3"),
        "meta_6": (xdp_md(data=6, ingress_ifindex=1), meta[:6]),
        "data_meta_set": (xdp_md(data_meta=4, ingress_ifindex=1), b""),
        "data_end_short": (xdp_md(data_end=20, ingress_ifindex=1), b""),
        "egress_set": (xdp_md(ingress_ifindex=1, egress_ifindex=1), b""),
        "queue_without_device": (xdp_md(rx_queue_index=1), b""),
        "unknown_ifindex": (xdp_md(ingress_ifindex=99999), b""),
        "lo_queue1": (xdp_md(ingress_ifindex=1, rx_queue_index=1), b""),
    }
    if device_ifindex:
        last = DEVICE_QUEUES - 1
        variants[f"device_queue{last}"] = (xdp_md(ingress_ifindex=device_ifindex, rx_queue_index=last), b"")
    return variants


DEFAULT_CTX = "lo_queue0"
# The frame the context variants run on, for the programs that get them.
CTX_FRAME = "ipv4_udp_dns"

# ---------------------------------------------------------------- the plan


def u32(value):
    return struct.pack("<I", value)


def be32(address):
    return bytes(address)


XDP_DROP, XDP_PASS = XDP_ACTIONS.index("XDP_DROP"), XDP_ACTIONS.index("XDP_PASS")
# xdp-filter's map flags (xdp-tools' xdp-filter/common_kern_user.h).
MAP_FLAG_SRC, MAP_FLAG_DST, MAP_FLAG_TCP, MAP_FLAG_UDP = 1, 2, 4, 8


def xdp_filter_setup():
    """What `xdp-filter port 80 -p tcp -m dst`, `port 53 -p udp -m dst`,
    `ip 10.0.0.7 -m src`, `ip fd00::7 -m src` and `ether 02:00:00:00:00:66
    -m src` write: the mode flags on every CPU, counters zero."""
    return [
        ("filter_ports", u32(80 << 8), struct.pack("<Q", MAP_FLAG_TCP | MAP_FLAG_DST)),
        ("filter_ports", u32(53 << 8), struct.pack("<Q", MAP_FLAG_UDP | MAP_FLAG_DST)),
        ("filter_ipv4", be32(IP_FILTERED), struct.pack("<Q", MAP_FLAG_SRC)),
        ("filter_ipv6", IP6_FILTERED, struct.pack("<Q", MAP_FLAG_SRC)),
        ("filter_ethernet", MAC_BLOCKED, struct.pack("<Q", MAP_FLAG_SRC)),
    ]


def rule(protocol, port):
    return struct.pack("!BBH", protocol, 0, port)


def plan():
    """(object, its origin, map setup, programs that also get every context
    variant, programs run on CPU 1 as well)."""
    debian_bpf = "/usr/lib/x86_64-linux-gnu/bpf"
    debian_tests = "/usr/libexec/xdp-tools"
    fixture = lambda name: os.path.join("tests", "fixtures", name)
    own = "tests/fixtures (scripts/build-examples.sh)"
    cases = [
        (fixture("xdp_actions.o"), own, [
            ("tx_ports", u32(0), u32(1)),
            ("cpus", u32(0), struct.pack("<Ii", 192, 0)),
        ], {"xdp_context"}, set()),
        (fixture("xdp_adjust.o"), own, [], {"xdp_meta", "xdp_adjust_limits"}, set()),
        (fixture("xdp_maps.o"), own, [
            ("settings", u32(0), u32(XDP_PASS)),
            ("settings", u32(1), u32(1000)),
            ("blocked_sources", MAC_BLOCKED + b"\0\0", u32(XDP_DROP)),
            ("nat", be32(IP_B), be32([10, 0, 0, 99])),
        ], set(), {"xdp_count"}),
        (fixture("xdp_firewall.o"), own, [
            ("rules", rule(6, 22), u32(XDP_DROP)),
            ("rules", rule(6, 443), u32(XDP_DROP)),
            ("rules", rule(17, 53), u32(XDP_DROP)),
            ("rules", rule(6, 80), u32(XDP_PASS)),
        ], set(), set()),
        (fixture("xdp_refused.o"), own, [], set(), set()),
        (fixture("xdp_replay.o"), own, [], set(), set()),
    ]
    for mode in ["alw", "dny"]:
        for feature in ["all", "eth", "ip", "tcp", "udp"]:
            cases.append((f"{debian_bpf}/xdpfilt_{mode}_{feature}.o", "libxdp1",
                          xdp_filter_setup(), set(), {f"xdpfilt_{mode}_{feature}"}))
    cases += [
        # xdpdump's trace_cfg: capture on ifindex 1 (lo), whole packets.
        (f"{debian_bpf}/xdpdump_xdp.o", "xdp-tools",
         [(".data", u32(0), struct.pack("<III", 1, 0, 0))], set(), set()),
        (f"{debian_bpf}/xsk_def_xdp_prog.o", "libxdp1", [], set(), set()),
        (f"{debian_bpf}/xsk_def_xdp_prog_5.3.o", "libxdp1", [], set(), set()),
        (f"{debian_bpf}/xdp-dispatcher.o", "libxdp1", [], set(), set()),
        (f"{debian_tests}/xdp_pass.o", "xdp-tests", [], set(), set()),
        (f"{debian_tests}/xdp_drop.o", "xdp-tests", [], set(), set()),
        (f"{debian_tests}/test_long_func_name.o", "xdp-tests", [], set(), set()),
    ]
    return cases


def example_setup(name):
    """The map entries an example's init file (examples/xdp/NAME.json, as
    `qemu-ubpf replay --map-init` reads it) holds, if it has one: keys and
    values in hex, or integers stored as 4 bytes in host order."""
    path = os.path.join(ROOT, "examples", "xdp", f"{name}.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        init = json.load(f)
    as_bytes = lambda v: bytes.fromhex(v) if isinstance(v, str) else struct.pack("<I", v)
    return [(map_name, as_bytes(entry["key"]), as_bytes(entry["value"]))
            for map_name, entries in init.items() for entry in entries]


def dnat_udp_target():
    """Where dnat.c's UDP rule sends packets: (address, port)."""
    for _, key, value in example_setup("dnat"):
        if key[6] == 17:
            return value[:4], struct.unpack("!H", value[4:6])[0]
    raise RuntimeError("examples/xdp/dnat.json has no UDP rule")


def example_plan():
    """The XDP examples, as plan() gives its objects, with the maps their
    init files fill: counters.c also runs on CPU 1, to show the per-CPU
    slot follow the CPU."""
    names = ["ping", "dnat", "vlan_pop", "truncate", "counters", "redirect"]
    own = "examples/xdp (scripts/build-examples.sh)"
    cpu1 = {"counters": {"xdp_counters"}}
    return [(os.path.join("examples", "xdp", f"{name}.o"), own, example_setup(name), set(), cpu1.get(name, set()))
            for name in names]


# ---------------------------------------------------------------- running


def package_version(package):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def verifier_refusal(log):
    """Where the verifier stopped and what it said: the last instruction it
    printed (its index in the program as loaded, and its text) and the lines
    after it, without the statistics that end every log."""
    lines = [line for line in log.decode(errors="replace").splitlines() if line.strip()]
    stats = ("verification time", "stack depth", "processed ")
    while lines and lines[-1].startswith(stats):
        lines.pop()
    last = max((i for i, line in enumerate(lines) if INSN_LINE.match(line)), default=None)
    if last is None:
        return {"message": lines[-3:]}
    pc, text = INSN_LINE.match(lines[last]).groups()
    return {"pc": int(pc), "instruction": text.split(" ; ")[0].strip(), "message": lines[last + 1:]}


def test_run(loaded, ctx, meta, frame):
    data_in = meta + frame
    data_out = ctypes.create_string_buffer(2 * 4096)
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), repeat=1)
    in_buf = ctypes.create_string_buffer(data_in, len(data_in))
    opts.data_in = ctypes.cast(in_buf, P)
    opts.data_size_in = len(data_in)
    opts.data_out = ctypes.cast(data_out, P)
    opts.data_size_out = len(data_out)
    ctx_out = ctypes.create_string_buffer(24)
    if ctx is not None:
        fields = dict(ctx, data_end=len(data_in) if ctx["data_end"] is None else ctx["data_end"])
        ctx_in = ctypes.create_string_buffer(struct.pack(
            "<6I", fields["data"], fields["data_end"], fields["data_meta"],
            fields["ingress_ifindex"], fields["rx_queue_index"], fields["egress_ifindex"]), 24)
        opts.ctx_in = ctypes.cast(ctx_in, P)
        opts.ctx_size_in = 24
        opts.ctx_out = ctypes.cast(ctx_out, P)
        opts.ctx_size_out = 24
    err = libbpf.bpf_prog_test_run_opts(libbpf.bpf_program__fd(loaded.prog), ctypes.byref(opts))
    if err:
        return {"error": error_name(err)}
    out = data_out.raw[:opts.data_size_out]
    result = {
        "retval": opts.retval,
        "action": XDP_ACTIONS[opts.retval] if opts.retval < len(XDP_ACTIONS) else None,
        "data_out_len": opts.data_size_out,
    }
    if out != data_in:
        result["data_out"] = out.hex()
    if ctx is not None and opts.ctx_size_out:
        names = ["data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index", "egress_ifindex"]
        result["ctx_out"] = dict(zip(names, struct.unpack("<6I", ctx_out.raw[:24])))
    return result


def set_cpu(cpu):
    os.sched_setaffinity(0, {cpu})


def record_object(path, origin, setup, ctx_programs, cpu1_programs, inputs, variants):
    absolute = path if os.path.isabs(path) else os.path.join(ROOT, path)
    if not os.path.exists(absolute):
        return {"object": path, "origin": origin, "missing": True}, []
    probe = libbpf.bpf_object__open_file(absolute.encode(), None)
    if not probe:
        return {"object": path, "origin": origin, "error": error_name(ctypes.get_errno())}, []
    names = [(libbpf.bpf_program__name(p).decode(), libbpf.bpf_program__section_name(p).decode())
             for p in programs_of(probe)]
    libbpf.bpf_object__close(probe)

    about = {"object": path, "origin": origin, "sha256": sha256(absolute),
             "map_setup": [{"map": m, "key": k.hex(),
                              "value": [x.hex() for x in v] if isinstance(v, list) else v.hex()}
                             for m, k, v in setup],
             "programs": []}
    if not os.path.isabs(path):
        about["source"] = path[:-2] + ".c"
    records = []
    for program, section in names:
        entry = {"program": program, "section": section}
        about["programs"].append(entry)
        loaded = Loaded(absolute, program)
        if loaded.load_error == -errno.EPERM:
            print("bpf(2) refused: EPERM", file=sys.stderr)
            sys.exit(BPF_REFUSED)
        if loaded.load_error:
            loaded.close()
            logged = Loaded(absolute, program, log=True)
            entry["refused"] = {"error": error_name(logged.load_error),
                                **verifier_refusal(logged.log.value)}
            logged.close()
            print(f"{path} {program}: refused, {entry['refused']['message'][-1:]}", file=sys.stderr)
            continue
        loaded.close()

        runs = [(frame, DEFAULT_CTX, 0) for frame in inputs]
        if program in ctx_programs:
            runs += [(CTX_FRAME, name, 0) for name in variants if name != DEFAULT_CTX]
        if program in cpu1_programs:
            runs += [(frame, DEFAULT_CTX, 1) for frame in inputs]
        for frame, ctx_name, cpu in runs:
            loaded = Loaded(absolute, program)
            if loaded.load_error:
                raise OSError(-loaded.load_error, f"{path} {program} no longer loads")
            try:
                for map_name, key, value in setup:
                    if map_name in loaded.maps:
                        loaded.update(map_name, key, value)
                before = {name: loaded.dump(name) for name in sorted(loaded.maps)}
                if entry.setdefault("maps_loaded", before) != before:
                    raise RuntimeError(f"{path} {program}: maps differ between loads")
                ctx, meta = variants[ctx_name]
                set_cpu(cpu)
                try:
                    result = test_run(loaded, ctx, meta, inputs[frame])
                finally:
                    set_cpu(0)
                after = {name: loaded.dump(name) for name in sorted(loaded.maps)}
                result["maps_changed"] = {name: dump for name, dump in after.items() if dump != before[name]}
            finally:
                loaded.close()
            records.append({"object": path, "section": section, "program": program,
                            "frame": frame, "ctx": ctx_name, "cpu": cpu, **result})
        print(f"{path} {program}: {len(runs)} runs", file=sys.stderr)
    return about, records


def add_queue_device():
    """A device with several receive queues, so that rx_queue_index can be
    other than 0 (the loopback has one queue): an ifb, or a dummy where the
    kernel has no ifb. Its ifindex, or None."""
    for kind in ["ifb", "dummy"]:
        made = subprocess.run(["ip", "link", "add", QUEUE_DEVICE, "numrxqueues", str(DEVICE_QUEUES),
                               "type", kind], capture_output=True, text=True)
        if made.returncode == 0:
            with open(f"/sys/class/net/{QUEUE_DEVICE}/ifindex") as f:
                return int(f.read())
        print(f"no {kind} device: {made.stderr.strip()}", file=sys.stderr)
    print("the context with a queue other than 0 is left out", file=sys.stderr)
    return None


def write_document(f, document):
    """JSON with one line per frame, object and run, so that a record reads,
    greps and diffs as a line."""
    compact = lambda value: json.dumps(value, separators=(", ", ": "))
    f.write("{\n")
    for i, (key, value) in enumerate(document.items()):
        f.write(f" {json.dumps(key)}: ")
        if isinstance(value, list):
            f.write("[\n" + ",\n".join(f"  {compact(item)}" for item in value) + "\n ]")
        elif isinstance(value, dict):
            f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {compact(v)}" for k, v in value.items()) + "\n }")
        else:
            f.write(compact(value))
        f.write(",\n" if i + 1 < len(document) else "\n")
    f.write("}\n")


def main():
    args, only = sys.argv[1:], []
    examples = bool(args) and args[0] == "--examples"
    if examples:
        args = args[1:]
    while len(args) >= 2 and args[0] == "--only":
        only.append(args[1])
        args = args[2:]
    output = args[0] if args else EXAMPLES_OUTPUT if examples else DEFAULT_OUTPUT
    set_cpu(0)
    inputs = example_frames() if examples else frames()
    # The examples run with the default context only: no device to add.
    device = None if examples else add_queue_device()
    try:
        variants = contexts(device)
        if examples:
            variants = {DEFAULT_CTX: variants[DEFAULT_CTX]}
        objects, records = [], []
        for case in example_plan() if examples else plan():
            if only and not any(name in case[0] for name in only):
                continue
            about, found = record_object(*case, inputs, variants)
            objects.append(about)
            records += found
    finally:
        if device:
            subprocess.run(["ip", "link", "del", QUEUE_DEVICE], check=False)

    packages = {p: package_version(p) for p in ["libxdp1", "xdp-tools", "xdp-tests", "libbpf1"]}
    document = {
        "format": "qemu-ubpf kernel XDP oracle, version 1 (tests/kernel/README.md)",
        "recorded_by": "sudo scripts/record-kernel-xdp.py" + (" --examples" if examples else ""),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "libbpf": f"{libbpf.libbpf_major_version()}.{libbpf.libbpf_minor_version()}",
        "packages": packages,
        "possible_cpus": POSSIBLE_CPUS,
        "default_ctx": DEFAULT_CTX,
        "contexts": {name: {"ctx_in": ctx, "meta": meta.hex()} for name, (ctx, meta) in variants.items()},
        "frames": {name: frame.hex() for name, frame in inputs.items()},
        "objects": objects,
        "runs": records,
    }
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        write_document(f, document)
    print(f"wrote {len(records)} runs of {len(objects)} objects to {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
