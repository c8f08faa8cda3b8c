#!/usr/bin/env bash
# Times XDP programs side by side in one run: qemu-ubpf's JIT through the C
# API (benches/capi/xdp.c: ubpf_compile()'s function over a buffer that
# starts with a struct ubpf_xdp_context, memory checks on) and the Linux
# kernel's JIT (BPF_PROG_TEST_RUN with repeat N, on programs bpftool loads). Not a
# test: the numbers depend on the machine and its load.
#
#   scripts/bench-xdp.sh [--lib LIBRARY]... [--only filter|examples] [REPEAT]
#
# As root. REPEAT defaults to 2000000. --lib times a libqemu_ubpf.so built
# elsewhere instead of building this tree's; given more than once, it times
# each library in turn on each object, one column each, against the same
# kernel figures (a before/after in one sitting).
#
# Two sets of objects, each over the frames of its kernel recording up to
# 1514 bytes, with its maps filled as that recording's map_setup says:
# - filter: Debian's xdp-tests xdp_pass.o and xdp_drop.o, and libxdp1's ten
#   xdp-filter programs (xdpfilt_*.o), with the maps the xdp-filter command
#   fills (ports, addresses, a MAC), from tests/kernel/xdp.json;
# - examples: examples/xdp/*.o, which call XDP helpers, from
#   tests/kernel/xdp_examples.json, with xdp_pass.o again as the empty one.
# For each object and frame, each side gives ns per run (ours: the fastest
# of 15 batches of thread CPU time; the kernel's: the fastest of 15 test_run
# calls, by the thread's CPU time, which includes test_run's own cost per
# run), and both must
# end with the same action. Both sides run over the same bytes again and
# again, so a program that rewrites its frame (ping, dnat, vlan_pop) sees
# its own output from its second run on; bpftool reports the last run's
# action, and so does the harness. Both keep the packet's pointers where
# the run before moved them, as test_run's repeat does (the harness fills
# the context once per frame): truncate cuts and vlan_pop pops on the first
# run only, on both sides.
# Per set and object: the mean over the frames, and the marginal cost, that
# mean less the same side's for xdp_pass.o (the empty program), which takes
# out each side's fixed cost per run (test_run's loop; our call and
# context). The ratio is ours over the kernel's.
set -euo pipefail
cd "$(dirname "$0")/.."

libraries=() only=""
while [ $# -gt 0 ]; do
    case $1 in
    --lib) libraries+=("$(realpath "$2")") && shift 2 ;;
    --only) only=$2 && shift 2 ;;
    *) break ;;
    esac
done
repeat=${1:-2000000}
if [ "$(id -u)" != 0 ] || ! command -v bpftool >/dev/null; then
    echo "needs root and bpftool (apt-get install bpftool)" >&2
    exit 1
fi
work=$(mktemp -d)
pins=/sys/fs/bpf/qemu_ubpf_bench_xdp
trap 'rm -rf "$work" "$pins"' EXIT

if [ ${#libraries[@]} = 0 ]; then
    echo "== building the library" >&2
    cargo build --release --lib >&2
    libraries=("$PWD/target/release/libqemu_ubpf.so")
fi
# Per library, in $work/lib$N: the library under its SONAME, beside its
# harness.
for n in "${!libraries[@]}"; do
    echo "== library $n: ${libraries[$n]}" >&2
    mkdir "$work/lib$n"
    ln -s "${libraries[$n]}" "$work/lib$n/libqemu-ubpf.so.0"
    gcc -O2 -Wall -Wextra -Werror -I include -o "$work/lib$n/xdp" benches/capi/xdp.c \
        "$work/lib$n/libqemu-ubpf.so.0" "-Wl,-rpath,$work/lib$n"
done

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
if [ -e /sys/fs/bpf/filter_ports ]; then
    echo "xdp-filter's maps are pinned in /sys/fs/bpf (xdp-filter is loaded?): not touching them" >&2
    exit 1
fi
rm -rf "$pins"
mkdir -p "$pins"

# Per set, in $work/SET: the frames as files, and per object its maps as the
# harness takes them.
python3 - "$work" "$only" <<'EOF'
import glob, json, os, sys
work, only = sys.argv[1], sys.argv[2]
empty = "/usr/libexec/xdp-tools/xdp_pass.o"
sets = {
    "filter": ("tests/kernel/xdp.json",
               [empty, "/usr/libexec/xdp-tools/xdp_drop.o"] + sorted(glob.glob("/usr/lib/*/bpf/xdpfilt_*.o"))),
    "examples": ("tests/kernel/xdp_examples.json", [empty] + sorted(glob.glob("examples/xdp/*.o"))),
}
if only and only not in sets:
    sys.exit(f"--only takes one of {', '.join(sets)}")
for name, (recording, objects) in sets.items():
    if only and name != only:
        continue
    record = json.load(open(recording))
    directory = os.path.join(work, name)
    os.mkdir(directory)
    frames = []
    for frame, hexbytes in sorted(record["frames"].items()):
        if 14 <= len(hexbytes) // 2 <= 1514:
            open(os.path.join(directory, frame + ".bin"), "wb").write(bytes.fromhex(hexbytes))
            frames.append(frame)
    open(os.path.join(directory, "frames"), "w").write("\n".join(frames) + "\n")
    setups = {os.path.basename(o["object"]): o["map_setup"] for o in record["objects"]}
    with open(os.path.join(directory, "objects"), "w") as out:
        for path in objects:
            setup = setups.get(os.path.basename(path), [])
            maps = ",".join(f"{e['map']}={e['key']}:{e['value']}" for e in setup) or "-"
            out.write(f"{path} {maps}\n")
    with open(os.path.join(work, "sets"), "a") as out:
        out.write(name + "\n")
EOF

# The kernel's last run's action and ns per run for one frame: the fastest
# of 15 BPF_PROG_TEST_RUN calls of $repeat runs, each timed by the thread's
# CPU time, as ours (the kernel's own average is in whole ns, too coarse
# for marginals of a few).
kernel_run() {
    python3 - "$1" "$2" "$repeat" <<'EOF'
import ctypes, importlib.util, sys, time
spec = importlib.util.spec_from_file_location("recorder", "scripts/record-kernel-xdp.py")
recorder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recorder)
libbpf = recorder.libbpf
libbpf.bpf_obj_get.restype = ctypes.c_int
libbpf.bpf_obj_get.argtypes = [ctypes.c_char_p]
pin, frame, repeat = sys.argv[1], open(sys.argv[2], "rb").read(), int(sys.argv[3])
fd = libbpf.bpf_obj_get(pin.encode())
if fd < 0:
    sys.exit(f"{pin}: {recorder.error_name(fd)}")
data_in = ctypes.create_string_buffer(frame, len(frame))
data_out = ctypes.create_string_buffer(2 * 4096)
best = None
for _ in range(15):
    opts = recorder.TestRunOpts(sz=ctypes.sizeof(recorder.TestRunOpts), repeat=repeat)
    opts.data_in, opts.data_size_in = ctypes.cast(data_in, ctypes.c_void_p), len(frame)
    opts.data_out, opts.data_size_out = ctypes.cast(data_out, ctypes.c_void_p), len(data_out)
    start = time.thread_time_ns()
    err = libbpf.bpf_prog_test_run_opts(fd, ctypes.byref(opts))
    ns = (time.thread_time_ns() - start) / repeat
    if err:
        sys.exit(f"{pin}: test_run: {recorder.error_name(err)}")
    best = ns if best is None else min(best, ns)
print(opts.retval, f"{best:.3f}")
EOF
}

# Times one set's objects into $work/SET/results, "NAME KERNEL OURS..." lines,
# one OURS per library.
bench_set() {
    local set_dir=$work/$1 object maps
    local -a frames frame_files=()
    mapfile -t frames <"$set_dir/frames"
    for f in "${frames[@]}"; do frame_files+=("$set_dir/$f.bin"); done
    echo "== $1: ${#frames[@]} frames: ${frames[*]}" >&2
    : >"$set_dir/results"
    while read -r object maps; do
        local name dir before new_pins kernel_total our_means="" kernel_mean
        local -a ours=()
        name=$(basename "$object" .o)
        if [ ! -f "$object" ]; then
            echo "$name: $object is missing (apt-get install xdp-tests libxdp1)" >&2
            continue
        fi
        for n in "${!libraries[@]}"; do
            ours+=("$("$work/lib$n/xdp" "$object" "$maps" "${frame_files[@]}")")
        done
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
            local -a entries
            IFS=, read -ra entries <<<"$maps"
            for entry in "${entries[@]}"; do
                local map=${entry%%=*} rest=${entry#*=} id key value
                id=$(awk -v name="$map" '$1 == name { print $2 }' "$work/maps")
                [ -n "$id" ] || continue # as the recording: a map the program lacks
                key=$(sed 's/../& /g' <<<"${rest%%:*}") value=$(sed 's/../& /g' <<<"${rest#*:}")
                # shellcheck disable=SC2086 # one word per byte
                bpftool map update id "$id" key hex $key value hex $value
            done
        fi
        kernel_total=0
        for i in "${!frames[@]}"; do
            local kernel_retval kernel_ns our_retval
            read -r kernel_retval kernel_ns < <(kernel_run "$dir/prog" "${frame_files[$i]}")
            for n in "${!libraries[@]}"; do
                read -r _ our_retval _ < <(sed -n "$((i + 1))p" <<<"${ours[$n]}")
                if [ "$our_retval" != "$kernel_retval" ]; then
                    echo "$name on ${frames[$i]}: library $n returns $our_retval, the kernel $kernel_retval" >&2
                    exit 1
                fi
            done
            kernel_total=$(awk -v t="$kernel_total" -v ns="$kernel_ns" 'BEGIN { print t + ns }')
        done
        rm -rf "$dir"
        for pin in $new_pins; do rm -f "/sys/fs/bpf/$pin"; done
        for n in "${!libraries[@]}"; do
            our_means+=" $(sed -n 's/^mean //p' <<<"${ours[$n]}")"
        done
        kernel_mean=$(awk -v t="$kernel_total" -v n="${#frames[@]}" 'BEGIN { printf "%.2f", t / n }')
        echo "$name $kernel_mean$our_means" | tee -a "$set_dir/results" >&2
    done <"$set_dir/objects"
}

while read -r set; do bench_set "$set"; done <"$work/sets"
while read -r set; do
    echo "== $set: ns per run, mean over $(wc -l <"$work/$set/frames") frames; marginal: less the same side's xdp_pass"
    for n in "${!libraries[@]}"; do echo "library $n: ${libraries[$n]}"; done
    awk -v libs="${#libraries[@]}" '
        $1 == "xdp_pass" { kernel_empty = $2; for (l = 0; l < libs; l++) our_empty[l] = $(3 + l) }
        { name[NR] = $1; kernel[NR] = $2; for (l = 0; l < libs; l++) ours[NR, l] = $(3 + l) }
        END {
            printf "%-18s %9s %9s", "object", "kernel", "marginal"
            for (l = 0; l < libs; l++) printf " %9s %9s %6s", "ours " l, "marginal", "ratio"
            printf "\n"
            for (i = 1; i <= NR; i++) {
                km = kernel[i] - kernel_empty
                printf "%-18s %9.2f %9.2f", name[i], kernel[i], km
                for (l = 0; l < libs; l++) {
                    om = ours[i, l] - our_empty[l]
                    ratio = km > 0.5 ? sprintf("%.2f", om / km) : "-"
                    printf " %9.2f %9.2f %6s", ours[i, l], om, ratio
                }
                printf "\n"
            }
        }' "$work/$set/results"
done <"$work/sets"
