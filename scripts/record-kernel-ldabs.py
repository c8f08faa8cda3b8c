#!/usr/bin/env python3
"""Records what the Linux kernel returns for legacy packet loads (LD_ABS and
LD_IND), so that qemu-ubpf's interpreter and JIT can be checked against it
also where bpf(2) is refused: tests/kernel/ldabs.json, read by
tests/kernel_ldabs.rs (format: tests/kernel/README.md).

Each program is a SCHED_CLS program (the frame from its Ethernet header on)
run with BPF_PROG_TEST_RUN once per frame; the kernel's answer is the
program's return value. Needs root (or CAP_BPF and CAP_NET_ADMIN); raw
syscalls, no libbpf.

    scripts/record-kernel-ldabs.py [OUTPUT]
"""

import ctypes
import json
import os
import platform
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "tests", "kernel", "ldabs.json")

SYS_BPF = 321  # x86-64
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_SCHED_CLS = 3

# Opcodes.
MOV64_REG, MOV64_IMM, MOV32_IMM = 0xBF, 0xB7, 0xB4
ADD64_REG, LSH64_IMM = 0x0F, 0x67
JEQ_IMM, EXIT = 0x15, 0x95
LDABS = {"b": 0x30, "h": 0x28, "w": 0x20}
LDIND = {"b": 0x50, "h": 0x48, "w": 0x40}


def insn(opc, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", opc, dst | src << 4, off, imm)


# The kernel wants the context in r6 at a legacy load; our engines ignore it.
CTX = insn(MOV64_REG, 6, 1)


def programs():
    out = {}
    offsets = [0, 1, 12, 13, 14, 23, 40, 56, 57, 58, 59, 60, 61, 63, 64, 73, 74, 1500, 0x7FFFFFFF, -1, -(1 << 31)]
    for size in "bhw":
        for k in offsets:
            out[f"ldabs{size}_{k}"] = CTX + insn(LDABS[size], imm=k) + insn(EXIT)
    # (index, imm): the offset is (s32)(index + imm), wrapping.
    pairs = [(0, 0), (2, 10), (14, 9), (-1, 13), (0xFFFFFFFF, 1), (0x7FFFFFFF, 1), (-3, 1), (60, -1), (30, 30),
             (1 << 31, 1 << 31 & 0x7FFFFFFF), (100, -50)]
    for size in "bhw":
        for index, imm in pairs:
            imm = struct.unpack("<i", struct.pack("<I", imm & 0xFFFFFFFF))[0]
            index32 = struct.unpack("<i", struct.pack("<I", index & 0xFFFFFFFF))[0]
            name = f"ldind{size}_{index & 0xFFFFFFFF:#x}_{imm}"
            out[name] = CTX + insn(MOV32_IMM, 7, imm=index32) + insn(LDIND[size], src=7, imm=imm) + insn(EXIT)
    # Loads whose values feed later ones, and a miss after a hit: the run
    # ends with 0 at the miss.
    out["ihl_then_ports"] = (
        CTX + insn(LDABS["b"], imm=14) + insn(0x54, 0, imm=0xF) + insn(0x64, 0, imm=2) + insn(MOV64_REG, 7, 0)
        + insn(LDIND["h"], src=7, imm=14) + insn(MOV64_REG, 8, 0) + insn(LDIND["h"], src=7, imm=16)
        + insn(LSH64_IMM, 8, imm=16) + insn(ADD64_REG, 0, 8) + insn(EXIT)
    )
    out["hit_then_miss"] = CTX + insn(LDABS["w"], imm=0) + insn(LDABS["b"], imm=70) + insn(MOV64_IMM, 0, imm=7) + insn(EXIT)
    out["ethertype_branch"] = (
        CTX + insn(LDABS["h"], imm=12) + insn(JEQ_IMM, 0, off=2, imm=0x0800) + insn(MOV64_IMM, 0, imm=1) + insn(EXIT)
        + insn(LDABS["b"], imm=23) + insn(EXIT)
    )
    return out


def frames():
    def pattern(n, seed):
        return bytes((seed + 37 * i) & 0xFF for i in range(n))

    eth = bytes.fromhex("02000000000102000000000208 00".replace(" ", ""))
    ipv4_tcp = bytes.fromhex(
        "4500003c1c4640004006b1e6c0a80001c0a800c7"  # IPv4, IHL 5, TCP
        "c35001bb0000000100000000a0027210fe300000020405b40402080a000000010000000001030307"
    )
    ipv4_opts = bytes.fromhex("4600004000004000400600000a0000010a00000201010101") + pattern(32, 5)
    return {
        # test_run refuses a frame of ETH_HLEN bytes or fewer, and an IPv4
        # one without a whole IPv4 header: a local EtherType.
        "ethernet_and_one_15": eth[:12] + b"\x88\xb5\x45",
        "ipv4_tcp_74": eth + ipv4_tcp,
        "ipv4_options_70": eth + ipv4_opts,
        "pattern_60": pattern(60, 1),
        "pattern_61": pattern(61, 2),
        "pattern_64": pattern(64, 3),
        "pattern_1514": pattern(1514, 4),
    }


libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 144)
    fd = libc.syscall(SYS_BPF, cmd, buf, 144)
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return fd, buf.raw


def load(code):
    insns = ctypes.create_string_buffer(code)
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    attr = struct.pack(
        "<IIQQIIQ", BPF_PROG_TYPE_SCHED_CLS, len(code) // 8, ctypes.addressof(insns), ctypes.addressof(license),
        1, len(log), ctypes.addressof(log),
    )
    try:
        return bpf(BPF_PROG_LOAD, attr)[0]
    except OSError as error:
        raise SystemExit(f"the kernel refused a program: {error}\n{log.value.decode()}")


def test_run(fd, frame):
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    attr = struct.pack("<IIIIQQII", fd, 0, len(frame), len(out), ctypes.addressof(data), ctypes.addressof(out), 1, 0)
    _, raw = bpf(BPF_PROG_TEST_RUN, attr)
    return struct.unpack_from("<I", raw, 4)[0]


def main():
    output = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUTPUT
    progs, frms = programs(), frames()
    runs = []
    for name, code in progs.items():
        fd = load(code)
        for frame_name, frame in frms.items():
            runs.append({"program": name, "frame": frame_name, "retval": test_run(fd, frame)})
        os.close(fd)
    document = {
        "format": "qemu-ubpf kernel legacy packet load oracle, version 1 (tests/kernel/README.md)",
        "recorded_by": "scripts/record-kernel-ldabs.py",
        "kernel": platform.release(),
        "machine": platform.machine(),
        "frames": {name: frame.hex() for name, frame in frms.items()},
        "programs": {name: code.hex() for name, code in progs.items()},
        "runs": runs,
    }
    with open(output, "w") as file:
        file.write(json.dumps(document, indent=1) + "\n")
    print(f"{len(runs)} runs of {len(progs)} programs written to {output}")


if __name__ == "__main__":
    main()
