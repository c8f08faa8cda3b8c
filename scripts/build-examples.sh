#!/usr/bin/env bash
# Builds every examples/*.c and tests/fixtures/*.c into the .o beside it, with
# clang's BPF target. The objects are committed, so the tests need no clang.
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
flags=(-O2 -g -mcpu=v3 -target bpf -ffreestanding -nostdlibinc -Wall -Wextra -Werror
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
for source in examples/*.c tests/fixtures/*.c; do
    object=${source%.c}.o
    mkdir -p "$out_dir/$(dirname "$object")"
    # The source path is relative, so the debug info names it the same way
    # wherever the checkout is.
    extra=()
    if grep -q '#include <bpf/' "$source"; then
        if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
            echo "$source includes libbpf's headers: install libbpf-dev (apt-get install libbpf-dev)" >&2
            exit 1
        fi
        extra=("${libbpf_flags[@]}")
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
