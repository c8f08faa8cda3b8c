#!/usr/bin/env bash
# Times `qemu-ubpf replay` against tcpdump over one large capture. Not a
# test: the numbers depend on the machine and on its load.
#
#   scripts/bench-replay.sh [PACKETS]      (default 1000000)
#
# It generates an Ethernet capture of PACKETS packets (the sample frames of
# examples/gen_captures.rs over and over) into $TMPDIR (default /tmp), then
# times
#
#   qemu-ubpf replay examples/drop_1_1_1_1.o BIG.pcap --pass OUT.pcap
#   tcpdump -r BIG.pcap -w OUT.pcap 'dst host 1.1.1.1'
#
# with hyperfine when it is installed (the median of 10 runs), otherwise
# with bash's time (the best of 5), and prints each one's packets per second
# and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

packets=${1:-1000000}
dir=${TMPDIR:-/tmp}/qemu-ubpf-bench
mkdir -p "$dir"
capture=$dir/big.pcap

if ! command -v tcpdump >/dev/null; then
    echo "tcpdump is not installed (Debian: apt-get install tcpdump)" >&2
    exit 1
fi
cargo build --release --quiet --bin qemu-ubpf --example gen_captures
target/release/examples/gen_captures --bench "$capture" "$packets"
echo "capture: $capture, $packets packets, $(du -h "$capture" | cut -f1)"

replay="target/release/qemu-ubpf replay examples/drop_1_1_1_1.o $capture --pass $dir/replay-out.pcap"
tcpdump="tcpdump -r $capture -w $dir/tcpdump-out.pcap 'dst host 1.1.1.1'"

if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 2 --runs 10 --export-csv "$dir/times.csv" -n replay "$replay" -n tcpdump "$tcpdump"
    # Columns: command,mean,stddev,median,user,system,min,max.
    seconds() { awk -F, -v name="$1" '$1 == name { print $4 }' "$dir/times.csv"; }
    cpu_seconds() { awk -F, -v name="$1" '$1 == name { print $5 + $6 }' "$dir/times.csv"; }
    replay_s=$(seconds replay)
    tcpdump_s=$(seconds tcpdump)
    echo "CPU time (user + system): replay $(cpu_seconds replay) s, tcpdump $(cpu_seconds tcpdump) s"
else
    best_of_5() {
        local best=
        for _ in 1 2 3 4 5; do
            local start end
            start=$(date +%s.%N)
            bash -c "$1" >/dev/null 2>&1
            end=$(date +%s.%N)
            best=$(awk -v a="$best" -v b="$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')" \
                'BEGIN { print (a == "" || b < a) ? b : a }')
        done
        echo "$best"
    }
    replay_s=$(best_of_5 "$replay")
    tcpdump_s=$(best_of_5 "$tcpdump")
fi

awk -v n="$packets" -v r="$replay_s" -v t="$tcpdump_s" 'BEGIN {
    printf "qemu-ubpf replay (jit): %12.0f packets/s  (%.3f s)\n", n / r, r
    printf "tcpdump:                %12.0f packets/s  (%.3f s)\n", n / t, t
    printf "replay / tcpdump:       %12.2fx\n", t / r
}'
