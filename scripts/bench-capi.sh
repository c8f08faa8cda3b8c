#!/usr/bin/env bash
# Times programs through the C API, as QEMU's filter and C embedders call
# it (ubpf_load_elf, ubpf_compile, then the ubpf_jit_fn from C), side by side
# with baselines in one run. Not a test: the numbers depend on the machine
# and its load.
#
#   scripts/bench-capi.sh [--ubpf DIR] [--compile-only]
#
# The programs are benches/capi/{classifier,checksum,empty}.c, written as
# XDP programs are (pointer guards against the end of the packet) and built
# with clang's default -mcpu (the classifier at -mcpu=v3 too). Each is timed:
#   - natively: the same C, gcc -O2, called through a pointer;
#   - qemu-ubpf: target/release/libqemu_ubpf.so;
#   - iovisor/ubpf, with --ubpf DIR: a checkout of iovisor/ubpf (its vm/
#     folder is enough), built here into a shared library. Nothing of it is
#     committed to this project;
#   - the Linux kernel's JIT, when bpf(2) works (root): the -DXDP build of the
#     same C, through `bpftool prog run ... repeat N`. Its figure includes
#     BPF_PROG_TEST_RUN's own cost per run, which the empty program shows.
# The harness (benches/capi/bench.c) also times create+load+compile+destroy
# of generated programs of 100, 1,000, 10,000 and 65,535 instructions (the
# most both engines load), straight-line and with branches, loops and memory
# accesses, in every engine, with qemu-ubpf's time over each other engine's;
# and of three tcpdump expressions (ubpf_load_filter_expr: libpcap's
# compiler, the translation, verification and JIT), in qemu-ubpf, the
# process's first one also on its own (it loads libpcap).
# --compile-only times the generated programs and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

ubpf_src=""
compile_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --ubpf) ubpf_src=$2; shift 2 ;;
        --compile-only) compile_only=1; shift ;;
        *) echo "usage: $0 [--ubpf DIR] [--compile-only]" >&2; exit 2 ;;
    esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
programs=(classifier checksum empty)

echo "== building the library, the programs and the harness" >&2
cargo build --release --lib >&2
multiarch=$(gcc -print-multiarch)
bpf_flags=(-O2 -g -target bpf -ffreestanding -nostdlibinc -Wall -Wextra -Werror
    -idirafter /usr/include -idirafter "/usr/include/$multiarch")
for p in "${programs[@]}"; do
    clang "${bpf_flags[@]}" -c "benches/capi/$p.c" -o "$work/$p.o"
    clang "${bpf_flags[@]}" -DXDP -c "benches/capi/$p.c" -o "$work/$p.xdp.o"
done
# The classifier also at -mcpu=v3 (32-bit jumps and ALU), timed as
# "classifier.v3" in the C API only.
clang "${bpf_flags[@]}" -mcpu=v3 -c benches/capi/classifier.c -o "$work/classifier.v3.o"
gcc -O2 -Wall -Wextra -Werror -o "$work/bench" benches/capi/bench.c \
    benches/capi/classifier.c benches/capi/checksum.c benches/capi/empty.c -ldl
engines=("qemu-ubpf=$PWD/target/release/libqemu_ubpf.so")

if [ -n "$ubpf_src" ]; then
    echo "== building iovisor/ubpf from $ubpf_src ($(git -C "$ubpf_src" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))" >&2
    mkdir -p "$work/ubpf"
    # The one generated header of its CMake build: ELF support on.
    printf '#pragma once\n#define UBPF_HAS_ELF_H\n' >"$work/ubpf/ubpf_config.h"
    gcc -O2 -fPIC -shared -Wl,-Bsymbolic -I "$ubpf_src/vm/inc" -I "$ubpf_src/vm" -I "$work/ubpf" \
        -o "$work/ubpf/libubpf.so" "$ubpf_src"/vm/ubpf_{instruction_valid,jit_arm64,jit,jit_support,jit_x86_64,safe,loader,vm}.c -lm
    engines+=("ubpf=$work/ubpf/libubpf.so")
fi

if [ -n "$compile_only" ]; then
    echo "== compile time through the C API (fastest of 15 batches of thread CPU time)"
    "$work/bench" --compile "${engines[@]}"
    exit 0
fi
echo "== the C API (ns per call, fastest of 15 batches of thread CPU time)"
"$work/bench" "$work" "${engines[@]}"

echo "== the Linux kernel's JIT (bpftool prog run, average ns per run)"
if ! command -v bpftool >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "skipped: needs root and bpftool (apt-get install bpftool)"
    exit 0
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
"$work/bench" --packets "$work"
for p in "${programs[@]}"; do
    pin=/sys/fs/bpf/qemu_ubpf_bench_$p
    rm -f "$pin"
    if ! bpftool prog load "$work/$p.xdp.o" "$pin" type xdp 2>"$work/$p.log"; then
        echo "$p: the kernel refused it; see the verifier's log:" >&2
        grep -v '^[0-9]*: \|^; ' "$work/$p.log" | tail -n 5 >&2
        continue
    fi
    case $p in checksum) inputs=("$work/big.bin") repeat=200000 ;; *) inputs=("$work"/mix*.bin) repeat=5000000 ;; esac
    # Per input, the fastest of 5 runs; then the mean over the inputs, as the
    # harness rotates over them.
    total=0
    for input in "${inputs[@]}"; do
        best=""
        for _ in 1 2 3 4 5; do
            ns=$(bpftool prog run pinned "$pin" data_in "$input" repeat "$repeat" | sed -n 's/.*duration (average): \([0-9]*\)ns.*/\1/p')
            if [ -z "$best" ] || [ "$ns" -lt "$best" ]; then best=$ns; fi
        done
        total=$((total + best))
    done
    rm -f "$pin"
    awk -v p="$p" -v t="$total" -v n="${#inputs[@]}" 'BEGIN { printf "%-13s kernel %8.2f ns\n", p, t / n }'
done
