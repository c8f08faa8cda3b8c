#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each, one after another, on
# the stable toolchain (RUSTC_BOOTSTRAP=1, no sanitizer: `cargo fuzz run -s
# none -O`), installing cargo-fuzz when it is missing.
#
#   scripts/fuzz.sh SECONDS [TARGET...]
#
# Seed corpora are made fresh from committed files (objects, captures,
# tcpdump expressions, the map init example) and, where installed, Debian's
# libbpf/xdp-tools objects, into fuzz/corpus/TARGET, where the fuzzer also
# keeps what it finds (not committed). Prints executions per target; exits
# non-zero when a target crashed (the input is in fuzz/artifacts/TARGET/).
# Needs libpcap (the tcpdump target; tcpdump brings it) and llvm-objdump/llvm-objcopy (seeds
# of raw bytecode from the objects' code sections; without them those
# targets start empty).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
all_targets=(jit_diff bytecode elf xdp cbpf tcpdump capture maps capi)
targets=("${@:-${all_targets[@]}}")
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

corpus=fuzz/corpus
frame=$(printf '%s' 000000000001 000000000002 0800 4500003200000000401100000a000001 01010101 |
    sed 's/../\\x&/g')
# A 64-byte Ethernet/IPv4 frame to 1.1.1.1, for seeds that carry a packet.
write_frame() { printf "$frame"; head -c 30 /dev/zero; }

debian_objects() {
    for package in libxdp1 xdp-tools libbpf1 libbpf-dev; do
        dpkg -L "$package" 2>/dev/null | grep '\.o$' || true
    done | sort -u
}

# Each executable section of an object as raw bytecode, into "$1.SECTION".
code_sections() {
    local object=$1 out=$2 section
    command -v llvm-objdump >/dev/null && command -v llvm-objcopy >/dev/null || return 0
    for section in $(llvm-objdump -h "$object" 2>/dev/null | awk '$NF == "TEXT" { print $2 }'); do
        llvm-objcopy -O binary --only-section="$section" "$object" "$out.${section//\//_}" 2>/dev/null || true
    done
}

seed() {
    local target=$1 dir=$corpus/$1 object file name
    mkdir -p "$dir"
    case $target in
    elf)
        for object in tests/fixtures/*.o examples/*.o $(debian_objects); do
            [ -f "$object" ] && cp "$object" "$dir/$(basename "${object%.o}")"
        done
        ;;
    bytecode | xdp)
        local scratch
        scratch=$(mktemp -d)
        for object in tests/fixtures/*.o examples/*.o $(debian_objects); do
            [ -f "$object" ] && code_sections "$object" "$scratch/$(basename "${object%.o}")"
        done
        for file in "$scratch"/*; do
            [ -f "$file" ] || continue
            name=$(basename "$file")
            if [ "$target" = bytecode ]; then
                # Input length 64, the frame, the code.
                { printf '\x40'; write_frame; cat "$file"; } >"$dir/$name"
            else
                # Frame of 14+50 bytes, no metadata, ifindex 1, queue 0.
                { printf '\x32\x00\x01\x00'; write_frame; cat "$file"; } >"$dir/$name"
            fi
        done
        rm -rf "$scratch"
        ;;
    cbpf | tcpdump)
        local line count=0
        while IFS= read -r line; do
            case $line in '' | '#'*) continue ;; esac
            count=$((count + 1))
            if [ "$target" = tcpdump ]; then
                { printf '\x00'; printf '%s' "$line"; } >"$dir/expression-$count"
            elif command -v tcpdump >/dev/null; then
                # The text form tcpdump -ddd prints, over the frame.
                { printf '\x01\x40'; tcpdump -ddd -r examples/captures/ethernet.pcap "$line" 2>/dev/null || true; } \
                    >"$dir/expression-$count"
            fi
        done <tests/fixtures/tcpdump-expressions.txt
        ;;
    capture)
        for file in examples/captures/*; do
            { printf '\x00'; cat "$file"; } >"$dir/$(basename "$file")"
            { printf '\x01'; cat "$file"; } >"$dir/$(basename "$file")-ip-off"
        done
        ;;
    maps)
        # An array of the fuzzer's own (type 2, key 4, value 8, 16 entries),
        # then init files for the target's maps, then no operations.
        local custom='\x08\x01\x04\x00\x08\x00\x10\x00\x00'
        { printf "$custom"; printf '%s' '{"array": [{"key": 1, "value": "0102030405060708"}], "lpm": [{"key": "10.0.0.0/8", "value": 7}]}'; } >"$dir/init"
        { printf "$custom"; printf '%s' '{"hash": [{"key": "010203040506", "value": 5}], "queue": [{"key": 0, "value": 9}], "custom": [{"key": 3, "value": 4}]}'; } >"$dir/hash-queue"
        { printf "$custom"; cat examples/prefix_blocklist.json; } >"$dir/prefix_blocklist"
        ;;
    esac
}

failed=()
report=()
for target in "${targets[@]}"; do
    seed "$target"
    echo "== $target: $seconds s ($(find "$corpus/$target" -type f | wc -l) inputs to start from)"
    log=$(mktemp)
    # cargo fuzz's own status, not the filter's: a target that does not
    # build, or a run that ends without libFuzzer's final statistics, fails.
    {
        cargo fuzz run -s none -O "$target" "$corpus/$target" -- \
            -max_total_time="$seconds" -timeout=30 -print_final_stats=1 2>&1
        echo $? >"$log.status"
    } | tee "$log" | grep -E '^(#[0-9]+ +(DONE|INITED)|==|thread|panicked|SUMMARY|Done)' || true
    status=$(cat "$log.status")
    executions=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log" | tail -n 1)
    if grep -qE 'panicked|deadly signal|SUMMARY: libFuzzer|ERROR: libFuzzer' "$log"; then
        failed+=("$target")
        report+=("$target: ${executions:-?} executions, CRASHED (see fuzz/artifacts/$target/)")
        grep -E -A20 'panicked' "$log" | head -40 || true
    elif [ "$status" != 0 ] || [ -z "$executions" ]; then
        failed+=("$target")
        report+=("$target: did not run (cargo fuzz exited with $status)")
        grep -E -B2 -A12 '^error' "$log" | head -40 || true
    else
        report+=("$target: $executions executions, no crash")
    fi
    rm -f "$log" "$log.status"
done

echo "== fuzzing, $seconds s per target"
printf '%s\n' "${report[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed (crashed or did not run): ${failed[*]}" >&2
    exit 1
fi
