#!/usr/bin/env bash
# Soaks QEMU's filter-ubpf: SECONDS (default 60) of traffic through the
# guest-less hub at the rate the rig sustains, the program swapped every
# 10 ms (reloaded, interpreter, a failing load, JIT), every frame accounted
# for and QEMU's resident memory sampled each second; then the short run
# under valgrind. Both are tests of tests/qemu.rs; `cargo test` (CI) runs
# them in their short form (10 s).
#
#   scripts/soak.sh [SECONDS]
#
# QEMU comes from scripts/qemu-build.sh (cached after its first build), or
# from QEMU_UBPF_QEMU when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if [ -z "${QEMU_UBPF_QEMU:-}" ]; then
    QEMU_UBPF_QEMU=$(scripts/qemu-build.sh --no-deps | tail -n 1)
fi
export QEMU_UBPF_QEMU QEMU_UBPF_SOAK_SECONDS=$seconds
cargo test --release --test qemu soak_ -- --nocapture --test-threads 1
