#!/usr/bin/env bash
# Builds every examples/*.c and tests/fixtures/*.c into the .o beside it, with
# clang's BPF target at -mcpu=v3, the XDP examples (examples/xdp/*.c) at
# clang's default -mcpu, as a user's `clang -O2 -target bpf` builds them, and
# the C API benchmark's pointer-guarded programs
# (benches/capi/{classifier,checksum}.c) into NAME.v1.o and NAME.v3.o beside
# them, as its filter build at clang's default -mcpu (v1) and at v3, for the
# JIT analysis tests. The objects are committed, so the tests need no clang.
#
#   scripts/build-examples.sh           rebuild the .o files in place
#   scripts/build-examples.sh --check   build into a temporary directory and
#                                       fail, naming each file, if a committed
#                                       .o differs
#
# The output depends on the clang version (the committed objects come from
# Debian bookworm's clang 14); set CLANG to use another compiler binary.
set -euo pipefail

cd "$(dirname "$0")/.."
clang=${CLANG:-clang}

# -nostdlibinc drops the system headers but keeps clang's own, so <stdint.h>
# works without glibc's; -fdebug-prefix-map keeps the checkout path out of the
# debug info, so every checkout builds the same bytes.
flags=(-O2 -g -target bpf -ffreestanding -nostdlibinc -Wall -Wextra -Werror
    "-fdebug-prefix-map=$PWD=.")

# Sources that include libbpf's headers (<bpf/bpf_helpers.h>, from Debian's
# libbpf-dev) also get the system headers they pull in (<linux/bpf.h>, and
# <asm/types.h> from the multiarch directory), after clang's own.
multiarch=$("$clang" -print-multiarch 2>/dev/null || true)
libbpf_flags=(-idirafter /usr/include -idirafter "/usr/include/${multiarch:-x86_64-linux-gnu}")

check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

out_dir=.
if $check; then
    out_dir=$(mktemp -d)
    trap 'rm -rf "$out_dir"' EXIT
fi

status=0
targets=()
for source in examples/*.c tests/fixtures/*.c; do
    targets+=("$source:${source%.c}.o:v3")
done
for source in examples/xdp/*.c; do
    targets+=("$source:${source%.c}.o:default")
done
for source in benches/capi/classifier.c benches/capi/checksum.c; do
    targets+=("$source:${source%.c}.v1.o:v1" "$source:${source%.c}.v3.o:v3")
done
for target in "${targets[@]}"; do
    IFS=: read -r source object cpu <<<"$target"
    mkdir -p "$out_dir/$(dirname "$object")"
    # The source path is relative, so the debug info names it the same way
    # wherever the checkout is.
    extra=()
    if [[ $source == benches/* ]]; then
        # <stdint.h> from the system, as scripts/bench-capi.sh builds them.
        extra=("${libbpf_flags[@]}")
    elif grep -q '#include <bpf/' "$source"; then
        if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
            echo "$source includes libbpf's headers: install libbpf-dev (apt-get install libbpf-dev)" >&2
            exit 1
        fi
        extra=("${libbpf_flags[@]}")
    fi
    if [ "$cpu" != default ]; then
        extra+=("-mcpu=$cpu")
    fi
    "$clang" "${flags[@]}" "${extra[@]}" -c "$source" -o "$out_dir/$object"
    if $check; then
        if ! cmp -s "$out_dir/$object" "$object"; then
            echo "$object is out of date with $source (or missing); run scripts/build-examples.sh" >&2
            status=1
        fi
    else
        echo "built $object"
    fi
done
if $check && [ "$status" -eq 0 ]; then
    echo "all objects match their sources ($("$clang" --version | head -n 1))"
fi
exit "$status"
