#!/usr/bin/env bash
# Builds the C library of qemu-ubpf (cargo's --no-default-features: no
# command, no test code) and installs it as a distribution would:
#
#   LIBDIR/libqemu-ubpf.so.0.1.0     the shared library (SONAME libqemu-ubpf.so.0)
#   LIBDIR/libqemu-ubpf.so.0         -> libqemu-ubpf.so.0.1.0 (what programs load)
#   LIBDIR/libqemu-ubpf.so           -> libqemu-ubpf.so.0 (what -lqemu-ubpf links)
#   LIBDIR/libqemu-ubpf.a            the static library
#   LIBDIR/pkgconfig/qemu-ubpf.pc    Cflags: -I${includedir}/qemu-ubpf, Libs: -lqemu-ubpf
#   INCLUDEDIR/qemu-ubpf/ubpf.h      the header (iovisor/ubpf's API)
#
# and with --command also the command (built with its default features):
#
#   PREFIX/bin/qemu-ubpf
#   PREFIX/share/qemu-ubpf/include/  the headers `qemu-ubpf build` gives C
#                                    filters (include/bpf-target/), where
#                                    the command looks for them
#
# Usage: scripts/install.sh --prefix DIR [options]
#   --prefix DIR        installation prefix (required), e.g. /usr/local
#   --libdir DIR        default PREFIX/lib; distributions pass their multiarch
#                       directory, e.g. /usr/lib/x86_64-linux-gnu
#   --includedir DIR    default PREFIX/include
#   --destdir DIR       stage the files under DIR (paths inside the .pc file
#                       stay those of --prefix), as for packaging
#   --profile NAME      cargo profile to build and install (default: release)
#   --artifacts DIR     install the libqemu_ubpf.so and .a already built in DIR
#                       instead of building (tests/capi.rs points it at the
#                       profile directory that `cargo test` just built)
#   --no-build          install what the profile directory already holds
#   --command           also build and install the qemu-ubpf command
#   --target TRIPLE     cross-build for Rust's target TRIPLE, e.g.
#                       aarch64-unknown-linux-gnu (the cargo first in PATH
#                       needs its standard library; .cargo/config.toml names
#                       the linker)
#
# cargo names its outputs libqemu_ubpf.so and libqemu_ubpf.a; they are renamed
# on the way. Relative paths are taken from the current directory.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

prefix="" libdir="" includedir="" destdir="" profile=release artifacts="" build=true command=false target=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --libdir) libdir=${2:?--libdir needs a directory}; shift 2 ;;
        --libdir=*) libdir=${1#*=}; shift ;;
        --includedir) includedir=${2:?--includedir needs a directory}; shift 2 ;;
        --includedir=*) includedir=${1#*=}; shift ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --profile) profile=${2:?--profile needs a name}; shift 2 ;;
        --profile=*) profile=${1#*=}; shift ;;
        --artifacts) artifacts=${2:?--artifacts needs a directory}; build=false; shift 2 ;;
        --artifacts=*) artifacts=${1#*=}; build=false; shift ;;
        --no-build) build=false; shift ;;
        --command) command=true; shift ;;
        --target) target=${2:?--target needs a triple}; shift 2 ;;
        --target=*) target=${1#*=}; shift ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown option $1" >&2; usage ;;
    esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix is required" >&2; usage; }

absolute() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}
prefix=$(absolute "$prefix")
libdir=$(absolute "${libdir:-$prefix/lib}")
includedir=$(absolute "${includedir:-$prefix/include}")
[ -z "$destdir" ] || destdir=$(absolute "$destdir")
[ -z "$artifacts" ] || artifacts=$(absolute "$artifacts")

cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "install.sh: no version in Cargo.toml" >&2; exit 1; }
# The ABI version, as build.rs puts it in the SONAME.
soversion=$(sed -n 's/^const SOVERSION: &str = "\(.*\)";$/\1/p' build.rs)
[ -n "$soversion" ] || { echo "install.sh: no SOVERSION in build.rs" >&2; exit 1; }

cargo_target=()
if [ -z "$artifacts" ]; then
    target_dir=${CARGO_TARGET_DIR:-target}
    if [ -n "$target" ]; then
        # cargo puts a --target build one directory further down.
        target_dir=$target_dir/$target
        cargo_target=(--target "$target")
    fi
    # cargo puts the dev profile in target/debug, every other one under its name.
    case "$profile" in
        dev|debug) artifacts=$(absolute "$target_dir/debug"); profile=dev ;;
        *) artifacts=$(absolute "$target_dir/$profile") ;;
    esac
fi
if $build && $command; then
    # First: building the command also builds the library's cdylib, with
    # the default features; the lean build below then replaces it.
    echo "== building the command (cargo profile $profile)"
    cargo build --bin qemu-ubpf --locked --profile "$profile" "${cargo_target[@]}"
fi
if $build; then
    echo "== building the library (cargo profile $profile)"
    # Without the default features (the command, replay, test support): the
    # library C programs link is built from the engine, maps, helpers and C
    # API alone, and depends on none of the command's crates.
    cargo build --lib --locked --no-default-features --profile "$profile" "${cargo_target[@]}"
fi
for file in libqemu_ubpf.so libqemu_ubpf.a; do
    [ -f "$artifacts/$file" ] || { echo "install.sh: $artifacts/$file is missing (build first, or drop --no-build)" >&2; exit 1; }
done
[ -f include/ubpf.h ] || { echo "install.sh: include/ubpf.h is missing" >&2; exit 1; }
if $command; then
    [ -f "$artifacts/qemu-ubpf" ] || { echo "install.sh: $artifacts/qemu-ubpf is missing (build first, or drop --no-build)" >&2; exit 1; }
fi

real=libqemu-ubpf.so.$version
soname=libqemu-ubpf.so.$soversion
lib_dest=$destdir$libdir
include_dest=$destdir$includedir/qemu-ubpf
pc_dest=$lib_dest/pkgconfig

install -d -m 0755 "$lib_dest" "$include_dest" "$pc_dest"
# Shared libraries are not executables: 0644, as Debian policy has them.
install -m 0644 "$artifacts/libqemu_ubpf.so" "$lib_dest/$real"
ln -sfn "$real" "$lib_dest/$soname"
ln -sfn "$soname" "$lib_dest/libqemu-ubpf.so"
install -m 0644 "$artifacts/libqemu_ubpf.a" "$lib_dest/libqemu-ubpf.a"
install -m 0644 include/ubpf.h "$include_dest/ubpf.h"

# The libraries the Rust standard library needs when linking the static
# library (rustc --print native-static-libs, for linux-gnu).
cat > "$pc_dest/qemu-ubpf.pc" <<EOF
prefix=$prefix
exec_prefix=\${prefix}
libdir=$libdir
includedir=$includedir

Name: qemu-ubpf
Description: Userspace eBPF runtime (RFC 9669) with iovisor/ubpf's C API, for QEMU's filter-ubpf
Version: $version
Cflags: -I\${includedir}/qemu-ubpf
Libs: -L\${libdir} -lqemu-ubpf
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
EOF
chmod 0644 "$pc_dest/qemu-ubpf.pc"

echo "installed qemu-ubpf $version: $lib_dest/{$real,$soname,libqemu-ubpf.so,libqemu-ubpf.a}, $include_dest/ubpf.h, $pc_dest/qemu-ubpf.pc"

if $command; then
    # The command finds the headers at ../share/qemu-ubpf/include from its
    # own directory (src/bin/qemu-ubpf/build.rs), so they follow the prefix.
    bin_dest=$destdir$prefix/bin
    headers_dest=$destdir$prefix/share/qemu-ubpf/include
    install -d -m 0755 "$bin_dest" "$headers_dest"
    install -m 0755 "$artifacts/qemu-ubpf" "$bin_dest/qemu-ubpf"
    (cd include/bpf-target && find . -type f -name '*.h' -printf '%P\n') | while read -r header; do
        install -D -m 0644 "include/bpf-target/$header" "$headers_dest/$header"
    done
    echo "installed the command: $bin_dest/qemu-ubpf, its headers for C filters in $headers_dest"
fi
