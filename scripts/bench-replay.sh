#!/usr/bin/env bash
# Times `qemu-ubpf replay` against tcpdump over one large capture. Not a
# test: the numbers depend on the machine and on its load.
#
#   scripts/bench-replay.sh [PACKETS [EXPR]]   (default 1000000, 'dst host 1.1.1.1')
#
# It generates an Ethernet capture of PACKETS packets (the sample frames of
# examples/gen_captures.rs over and over) into $TMPDIR (default /tmp), then
# times
#
#   qemu-ubpf replay examples/drop_1_1_1_1.o BIG.pcap --drop OUT.pcap
#   qemu-ubpf replay examples/drop_1_1_1_1.o BIG.pcap --pass OUT.pcap
#   qemu-ubpf replay --expr EXPR BIG.pcap --drop OUT.pcap
#   tcpdump -r BIG.pcap -w OUT.pcap EXPR
#
# with hyperfine when it is installed (the median of 10 runs), otherwise
# with bash's time (the best of 5), and prints each one's packets per second
# and the ratios. tcpdump writes the packets its expression selects, as
# --drop writes those the filter drops (with --expr, the same expression
# compiled by the same libpcap: the same output file); --pass writes the
# other four fifths. With another EXPR, only the --expr line compares like
# with like: the program's runs still drop what `dst host 1.1.1.1` selects.
#
# Two things would otherwise time the file system rather than the tools:
# - Each run writes a new output file (it is deleted before each run). A
#   rewritten one would first wait for the previous run's copy to be written
#   back to disk, which ext4 starts when a file emptied by O_TRUNC is closed.
# - The capture is written to disk and dropped from the page cache, so that
#   the runs read it as a capture read from disk is cached (in large
#   folios, by read-ahead), not as the generator's small writes left it
#   (in small ones). The first warmup run, a replay, reads it from disk.
# TMPDIR=/dev/shm times them on tmpfs, where both read and write 4 KiB pages.
# The machine's load changes the numbers: run it more than once, and look
# at `uptime`.
set -euo pipefail
cd "$(dirname "$0")/.."

packets=${1:-1000000}
expression=${2:-dst host 1.1.1.1}
dir=${TMPDIR:-/tmp}/qemu-ubpf-bench
mkdir -p "$dir"
capture=$dir/big.pcap

if ! command -v tcpdump >/dev/null; then
    echo "tcpdump is not installed (Debian: apt-get install tcpdump)" >&2
    exit 1
fi
cargo build --release --quiet --bin qemu-ubpf --example gen_captures
target/release/examples/gen_captures --bench "$capture" "$packets"
sync "$capture"
dd if="$capture" iflag=nocache count=0 status=none
echo "capture: $capture, $packets packets, $(du -h "$capture" | cut -f1)"

drop="target/release/qemu-ubpf replay examples/drop_1_1_1_1.o $capture --drop $dir/replay-out.pcap"
pass="target/release/qemu-ubpf replay examples/drop_1_1_1_1.o $capture --pass $dir/replay-out.pcap"
expr="target/release/qemu-ubpf replay --expr '$expression' $capture --drop $dir/replay-out.pcap"
tcpdump="tcpdump -r $capture -w $dir/tcpdump-out.pcap '$expression'"
fresh_outputs="rm -f $dir/replay-out.pcap $dir/tcpdump-out.pcap"

if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 2 --runs 10 --prepare "$fresh_outputs" --export-csv "$dir/times.csv" \
        -n drop "$drop" -n pass "$pass" -n expr "$expr" -n tcpdump "$tcpdump"
    # Columns: command,mean,stddev,median,user,system,min,max.
    seconds() { awk -F, -v name="$1" '$1 == name { print $4 }' "$dir/times.csv"; }
    cpu_seconds() { awk -F, -v name="$1" '$1 == name { print $5 + $6 }' "$dir/times.csv"; }
    drop_s=$(seconds drop)
    pass_s=$(seconds pass)
    expr_s=$(seconds expr)
    tcpdump_s=$(seconds tcpdump)
    echo "CPU time (user + system): replay --drop $(cpu_seconds drop) s, replay --pass $(cpu_seconds pass) s," \
        "replay --expr $(cpu_seconds expr) s, tcpdump $(cpu_seconds tcpdump) s"
else
    best_of_5() {
        local best=
        for _ in 1 2 3 4 5; do
            local start end
            $fresh_outputs
            start=$(date +%s.%N)
            bash -c "$1" >/dev/null 2>&1
            end=$(date +%s.%N)
            best=$(awk -v a="$best" -v b="$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')" \
                'BEGIN { print (a == "" || b < a) ? b : a }')
        done
        echo "$best"
    }
    drop_s=$(best_of_5 "$drop")
    pass_s=$(best_of_5 "$pass")
    expr_s=$(best_of_5 "$expr")
    tcpdump_s=$(best_of_5 "$tcpdump")
fi

awk -v n="$packets" -v d="$drop_s" -v p="$pass_s" -v e="$expr_s" -v t="$tcpdump_s" 'BEGIN {
    printf "qemu-ubpf replay (jit) --drop: %12.0f packets/s  (%.3f s)  %5.2fx tcpdump\n", n / d, d, t / d
    printf "qemu-ubpf replay (jit) --pass: %12.0f packets/s  (%.3f s)  %5.2fx tcpdump\n", n / p, p, t / p
    printf "qemu-ubpf replay --expr --drop: %11.0f packets/s  (%.3f s)  %5.2fx tcpdump\n", n / e, e, t / e
    printf "tcpdump:                       %12.0f packets/s  (%.3f s)\n", n / t, t
}'
