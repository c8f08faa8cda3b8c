#!/usr/bin/env bash
# Times XDP programs side by side in one run: qemu-ubpf's JIT through the C
# API (benches/capi/xdp.c: ubpf_compile()'s function over a buffer that
# starts with a struct ubpf_xdp_context, memory checks on) and the Linux
# kernel's JIT (bpftool prog run ... repeat N, BPF_PROG_TEST_RUN). Not a
# test: the numbers depend on the machine and its load.
#
#   scripts/bench-xdp.sh [REPEAT]          (as root; REPEAT default 2000000)
#
# The objects are Debian's: xdp-tests' xdp_pass.o and xdp_drop.o, and
# libxdp1's ten xdp-filter programs (xdpfilt_*.o) with their maps filled as
# tests/kernel/xdp.json records them (as the xdp-filter command fills them:
# ports, addresses, a MAC). The frames are that recording's, up to 1514
# bytes. For each object and frame, each side gives ns per run (ours: the
# fastest of 15 batches of thread CPU time; the kernel's: the fastest of 5
# bpftool runs, whose average includes test_run's own cost per run), and
# both must return the same action. Per object: the mean over the frames,
# and the marginal cost, that mean less the same side's for xdp_pass.o (the
# empty program), which takes out each side's fixed cost per run (test_run's
# loop; our call and context). The ratio is ours over the kernel's.
set -euo pipefail
cd "$(dirname "$0")/.."

repeat=${1:-2000000}
if [ "$(id -u)" != 0 ] || ! command -v bpftool >/dev/null; then
    echo "needs root and bpftool (apt-get install bpftool)" >&2
    exit 1
fi
work=$(mktemp -d)
pins=/sys/fs/bpf/qemu_ubpf_bench_xdp
trap 'rm -rf "$work" "$pins"' EXIT

echo "== building the library and the harness" >&2
cargo build --release --lib >&2
# The library under its SONAME, beside the harness.
ln -s "$PWD/target/release/libqemu_ubpf.so" "$work/libqemu-ubpf.so.0"
gcc -O2 -Wall -Wextra -Werror -I include -o "$work/xdp" benches/capi/xdp.c \
    "$work/libqemu-ubpf.so.0" "-Wl,-rpath,$work"

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
if [ -e /sys/fs/bpf/filter_ports ]; then
    echo "xdp-filter's maps are pinned in /sys/fs/bpf (xdp-filter is loaded?): not touching them" >&2
    exit 1
fi
rm -rf "$pins"
mkdir -p "$pins"

# The frames as files, and per object its maps as the harness takes them.
python3 - "$work" <<'EOF'
import glob, json, os, sys
work = sys.argv[1]
record = json.load(open("tests/kernel/xdp.json"))
frames = []
for name, hexbytes in sorted(record["frames"].items()):
    if 14 <= len(hexbytes) // 2 <= 1514:
        open(os.path.join(work, name + ".bin"), "wb").write(bytes.fromhex(hexbytes))
        frames.append(name)
open(os.path.join(work, "frames"), "w").write("\n".join(frames) + "\n")
setups = {o["object"]: o["map_setup"] for o in record["objects"]}
objects = ["/usr/libexec/xdp-tools/xdp_pass.o", "/usr/libexec/xdp-tools/xdp_drop.o"]
objects += sorted(glob.glob("/usr/lib/*/bpf/xdpfilt_*.o"))
with open(os.path.join(work, "objects"), "w") as out:
    for path in objects:
        setup = next((s for o, s in setups.items() if os.path.basename(o) == os.path.basename(path)), [])
        maps = ",".join(f"{e['map']}={e['key']}:{e['value']}" for e in setup) or "-"
        out.write(f"{path} {maps}\n")
EOF
mapfile -t frames <"$work/frames"
frame_files=()
for f in "${frames[@]}"; do frame_files+=("$work/$f.bin"); done
echo "== ${#frames[@]} frames: ${frames[*]}" >&2

# The kernel's ns per run and action for one frame: the fastest of 5.
kernel_run() {
    local pin=$1 input=$2 best="" retval=""
    for _ in 1 2 3 4 5; do
        local out ns
        out=$(bpftool prog run pinned "$pin" data_in "$input" repeat "$repeat")
        ns=$(sed -n 's/.*duration (average): \([0-9]*\)ns.*/\1/p' <<<"$out")
        retval=$(sed -n 's/.*Return value: \([0-9]*\).*/\1/p' <<<"$out")
        if [ -z "$best" ] || [ "$ns" -lt "$best" ]; then best=$ns; fi
    done
    echo "$retval $best"
}

results=$work/results
: >"$results"
while read -r object maps; do
    name=$(basename "$object" .o)
    if [ ! -f "$object" ]; then
        echo "$name: $object is missing (apt-get install xdp-tests libxdp1)" >&2
        continue
    fi
    ours=$("$work/xdp" "$object" "$maps" "${frame_files[@]}")
    dir=$pins/$name
    mkdir -p "$dir"
    # xdp-filter's maps are pinned by name in /sys/fs/bpf, as xdp-filter
    # shares them between its programs: each object gets new ones here,
    # removed after it.
    before=$(ls /sys/fs/bpf)
    bpftool prog load "$object" "$dir/prog" type xdp 2>"$work/$name.log" || {
        echo "$name: the kernel refused it:" >&2
        tail -n 5 "$work/$name.log" >&2
        continue
    }
    new_pins=$(comm -13 <(sort <<<"$before") <(ls /sys/fs/bpf | sort))
    # The program's maps by name, as "NAME ID" lines.
    bpftool prog show pinned "$dir/prog" -j | python3 -c '
import json, subprocess, sys
for id in json.load(sys.stdin).get("map_ids", []):
    info = json.loads(subprocess.run(["bpftool", "map", "show", "id", str(id), "-j"], capture_output=True).stdout)
    print(info["name"], id)' >"$work/maps"
    if [ "$maps" != "-" ]; then
        IFS=, read -ra entries <<<"$maps"
        for entry in "${entries[@]}"; do
            map=${entry%%=*} rest=${entry#*=}
            id=$(awk -v name="$map" '$1 == name { print $2 }' "$work/maps")
            [ -n "$id" ] || continue # as the recording: a map the program lacks
            key=$(sed 's/../& /g' <<<"${rest%%:*}") value=$(sed 's/../& /g' <<<"${rest#*:}")
            # shellcheck disable=SC2086 # one word per byte
            bpftool map update id "$id" key hex $key value hex $value
        done
    fi
    kernel_total=0
    for i in "${!frames[@]}"; do
        read -r kernel_retval kernel_ns < <(kernel_run "$dir/prog" "${frame_files[$i]}")
        read -r _ our_retval _ < <(sed -n "$((i + 1))p" <<<"$ours")
        if [ "$our_retval" != "$kernel_retval" ]; then
            echo "$name on ${frames[$i]}: ours returns $our_retval, the kernel $kernel_retval" >&2
            exit 1
        fi
        kernel_total=$((kernel_total + kernel_ns))
    done
    rm -rf "$dir"
    for pin in $new_pins; do rm -f "/sys/fs/bpf/$pin"; done
    our_mean=$(sed -n 's/^mean //p' <<<"$ours")
    kernel_mean=$(awk -v t="$kernel_total" -v n="${#frames[@]}" 'BEGIN { printf "%.2f", t / n }')
    echo "$name $our_mean $kernel_mean" | tee -a "$results" >&2
done <"$work/objects"

echo "== ns per run, mean over ${#frames[@]} frames; marginal: less the same side's xdp_pass"
awk '
    $1 == "xdp_pass" { our_empty = $2; kernel_empty = $3 }
    { name[NR] = $1; ours[NR] = $2; kernel[NR] = $3 }
    END {
        printf "%-18s %9s %9s %14s %14s %8s\n", "object", "ours", "kernel", "ours marginal", "kernel marginal", "ratio"
        for (i = 1; i <= NR; i++) {
            om = ours[i] - our_empty; km = kernel[i] - kernel_empty
            ratio = km > 0.5 ? sprintf("%.2f", om / km) : "-"
            printf "%-18s %9.2f %9.2f %14.2f %14.2f %8s\n", name[i], ours[i], kernel[i], om, km, ratio
        }
    }' "$results"
