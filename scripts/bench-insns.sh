#!/usr/bin/env bash
# Counts the host instructions each JIT backend emits per eBPF instruction
# on the benchmark programs (benches/insns.rs): this machine's backend and,
# on an x86-64 machine with the aarch64 cross toolchain and qemu-user (as
# .ci/run's aarch64 section installs them), the aarch64 one, cross-built
# and run under qemu-aarch64-static. Counts, not timings: qemu-user gives
# the same ones as a real arm64 machine, where this script counts the
# aarch64 backend natively.
#
#   scripts/bench-insns.sh [--host-only]
set -euo pipefail
cd "$(dirname "$0")/.."

cross=true
case "${1:-}" in
    --host-only) cross=false ;;
    "") ;;
    *) echo "usage: $0 [--host-only]" >&2; exit 2 ;;
esac

cargo bench --bench insns
if $cross && [ "$(uname -m)" = x86_64 ]; then
    # Debian's cargo (rustc-web) has the aarch64 standard library.
    if command -v qemu-aarch64-static aarch64-linux-gnu-gcc >/dev/null &&
        [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ]; then
        PATH=/usr/bin:$PATH cargo bench --bench insns --target aarch64-unknown-linux-gnu --target-dir target-arm
    else
        echo "bench-insns.sh: no aarch64 cross toolchain (see .ci/run): counted x86-64 only" >&2
        exit 1
    fi
fi
