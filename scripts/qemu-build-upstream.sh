#!/usr/bin/env bash
# Builds QEMU's filter-ubpf against iovisor/ubpf's API instead of
# libqemu-ubpf's, as a distribution would that packages iovisor/ubpf with a
# pkg-config file ("ubpf"): the filter must build with the extensions
# (maps, Linux helpers, tcpdump expressions) compiled out, and refuse the
# properties that need them.
#
# Two ways, each a second meson configuration of the source tree that
# scripts/qemu-build.sh prepared (run first, cached):
#
#   (default)  iovisor/ubpf's API, checked without its code: the header
#              tests/upstream-ubpf/ubpf.h (written by us from upstream's
#              documented signatures) and a copy of libqemu-ubpf linked
#              with a version script made from that header, so that it
#              exports those functions and no other.  meson finds it as
#              "ubpf"; then only the filter's object and the qtest's are
#              built (a few minutes, not a second QEMU build), and the
#              script checks that meson found neither the extensions nor
#              libqemu-ubpf, and that every ubpf_* symbol the filter's
#              object needs is one the library exports.
#              With --full, qemu-system-x86_64 is built too (15-25 min on
#              2 cores) and the qtest runs against this library.
#
#   --ubpf-source DIR
#              iovisor/ubpf itself: its source tree DIR (not part of this
#              repository) is built with cmake as a shared library,
#              installed under the cache with a ubpf.pc written here, and
#              QEMU is built against it in full; the qtest runs. Needs
#              cmake.
#
# Usage: scripts/qemu-build-upstream.sh [--no-deps] [--full] [--ubpf-source DIR]
# Exits non-zero when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

deps=()
full=false
ubpf_source=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-deps) deps=(--no-deps) ;;
        --full) full=true ;;
        --ubpf-source) ubpf_source=$(realpath "$2"); shift ;;
        *) echo "qemu-build-upstream.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "== qemu-build-upstream: $*" >&2; }

cache=${QEMU_UBPF_CACHE:-$HOME/.cache/qemu-ubpf}
qemu=$(scripts/qemu-build.sh "${deps[@]}" | tail -n 1)
build_root=$(dirname "$(dirname "$qemu")")
export PATH=$cache/venv/bin:$PATH

# --- The library, installed with a ubpf.pc ----------------------------------
if [ -n "$ubpf_source" ]; then
    prefix=$cache/upstream-ubpf
    build=$build_root/build-upstream-ubpf
    log "building iovisor/ubpf from $ubpf_source into $prefix"
    rm -rf "$prefix" "$prefix.build"
    cmake -S "$ubpf_source" -B "$prefix.build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=ON -DUBPF_ENABLE_INSTALL=ON -DUBPF_SKIP_EXTERNAL=ON \
        -DUBPF_INSTALL_GIT_HOOKS=OFF -DCMAKE_INSTALL_PREFIX="$prefix" >&2
    cmake --build "$prefix.build" -j "$(nproc)" >&2
    cmake --install "$prefix.build" >&2
    libs="-L\${libdir} -lubpf -lm"
    version=$(git -C "$ubpf_source" describe --tags --always 2>/dev/null || echo 0)
else
    prefix=$cache/upstream-api
    build=$build_root/build-upstream-api
    header=tests/upstream-ubpf/ubpf.h
    log "iovisor/ubpf's API in $prefix: $header and libqemu-ubpf exporting only its functions"
    rm -rf "$prefix"
    mkdir -p "$prefix/include" "$prefix/lib"
    cp "$header" "$prefix/include/ubpf.h"
    # Every function the header declares (outside its comments), and nothing more.
    mapfile -t functions < <(grep -vE '^ *(/\*|\*)' "$header" |
        grep -oE '[ *]ubpf_[a-z0-9_]+\(' | tr -d ' *(' | sort -u)
    { echo "{ global:"; printf '  %s;\n' "${functions[@]}"; echo "local: *; };"; } >"$prefix/lib/ubpf.map"
    gcc -shared -o "$prefix/lib/libubpf.so" -Wl,-soname,libubpf.so \
        -Wl,--whole-archive "$cache/stage/lib/libqemu-ubpf.a" -Wl,--no-whole-archive \
        -Wl,--version-script="$prefix/lib/ubpf.map" -lgcc_s -lutil -lrt -lpthread -lm -ldl
    libs="-L\${libdir} -lubpf"
    version=0
fi
mkdir -p "$prefix/lib/pkgconfig"
cat >"$prefix/lib/pkgconfig/ubpf.pc" <<EOF
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: ubpf
Description: iovisor/ubpf's API (see scripts/qemu-build-upstream.sh)
Version: $version
Cflags: -I\${includedir}
Libs: $libs
EOF

# --- QEMU's second configuration -------------------------------------------
# meson prefers "qemu-ubpf": a machine with libqemu-ubpf installed would
# test nothing here, so that is an error (the check below catches it too).
if pkg-config --exists qemu-ubpf; then
    echo "qemu-build-upstream.sh: pkg-config finds qemu-ubpf on this machine; remove it first" >&2
    exit 1
fi
log "configuring $build"
rm -rf "$build"
mkdir -p "$build"
(cd "$build" && PKG_CONFIG_PATH=$prefix/lib/pkgconfig "$build_root/configure" \
    --without-default-features --enable-slirp --enable-ubpf --disable-docs \
    --disable-tools --disable-install-blobs --target-list=x86_64-softmmu \
    --extra-ldflags="-Wl,-rpath,$prefix/lib") >&2

# What meson found: "ubpf", without the extensions.
config=$build/config-host.h
grep -qx '#define CONFIG_UBPF' "$config" || { echo "qemu-build-upstream.sh: meson did not find ubpf" >&2; exit 1; }
for absent in CONFIG_UBPF_MAPS CONFIG_UBPF_FILTER_EXPR CONFIG_UBPF_CHECKED_JIT; do
    if ! grep -qx "#undef $absent" "$config"; then
        echo "qemu-build-upstream.sh: $absent is set against iovisor/ubpf's API" >&2
        exit 1
    fi
done
log "meson found ubpf $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --modversion ubpf), without maps or expressions (CONFIG_UBPF_MAPS, CONFIG_UBPF_FILTER_EXPR and CONFIG_UBPF_CHECKED_JIT unset)"

filter_object=libcommon.a.p/net_filter-ubpf.c.o
qtest_object=tests/qtest/filter-ubpf-test.p/filter-ubpf-test.c.o
if [ -z "$ubpf_source" ] && ! $full; then
    log "building $filter_object and $qtest_object"
    ninja -C "$build" "$filter_object" "$qtest_object" >&2
else
    log "building qemu-system-x86_64 and the qtest"
    ninja -C "$build" qemu-system-x86_64 tests/qtest/filter-ubpf-test >&2
fi

# The filter calls nothing that the library does not export.
mapfile -t needed < <(nm -u "$build/$filter_object" | awk '$2 ~ /^ubpf_/ { print $2 }' | sort -u)
lib=$(ls "$prefix"/lib/libubpf.so* | head -n 1)
mapfile -t exported < <(nm -D --defined-only "$lib" | awk '$3 ~ /^ubpf_/ { print $3 }' | sort -u)
missing=$(comm -23 <(printf '%s\n' "${needed[@]}") <(printf '%s\n' "${exported[@]}"))
if [ -n "$missing" ]; then
    echo "qemu-build-upstream.sh: the filter needs functions the library lacks: $missing" >&2
    exit 1
fi
log "the filter calls ${#needed[@]} functions, all exported by $(basename "$lib"): ${needed[*]}"

if [ -n "$ubpf_source" ] || $full; then
    log "running qtest-x86_64/filter-ubpf-test"
    meson test -C "$build" --no-rebuild --print-errorlogs qtest-x86_64/filter-ubpf-test >&2
    "$build/qemu-system-x86_64" --version | head -n 1 >&2
    echo "$build/qemu-system-x86_64"
fi
