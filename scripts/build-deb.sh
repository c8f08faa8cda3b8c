#!/usr/bin/env bash
# Builds the Debian packages of the C library with dpkg-deb, from the tree
# that scripts/install.sh installs (prefix /usr, multiarch libdir):
#
#   libqemu-ubpf0      /usr/lib/TRIPLET/libqemu-ubpf.so.0{,.1.0}
#   libqemu-ubpf-dev   /usr/include/qemu-ubpf/ubpf.h, /usr/lib/TRIPLET/{libqemu-ubpf.so,
#                      libqemu-ubpf.a, pkgconfig/qemu-ubpf.pc}
#   qemu-ubpf          /usr/bin/qemu-ubpf, /usr/share/qemu-ubpf/include/ (the
#                      headers of `qemu-ubpf build`)
#
# with control files from packaging/debian/, a copyright file and
# changelog.Debian.gz in /usr/share/doc/PACKAGE, shlibs, symbols and the
# ldconfig trigger for the library, md5sums, root-owned 0644/0755 files and
# stripped libraries. Then, unless told otherwise, lintian checks both.
#
# Usage: scripts/build-deb.sh [options]
#   --out DIR           where to put the .deb files (default: target/debian)
#   --revision N        Debian revision (default: 1); packaging/debian/changelog
#                       must have a top entry for VERSION-N
#   --profile NAME      cargo profile to build (default: release)
#   --artifacts DIR     package the libqemu_ubpf.so/.a already built in DIR
#   --arch ARCH         Debian architecture to build for (default: this
#                       machine's); another one is cross-built, e.g. arm64
#                       with gcc-aarch64-linux-gnu, binutils-aarch64-linux-gnu
#                       and a cargo first in PATH that has the aarch64
#                       standard library (Debian: libstd-rust-web-dev:arm64,
#                       /usr/bin/cargo); dpkg-shlibdeps needs libc6:ARCH
#   --no-lintian        skip lintian
#   --install-test      then install the packages with dpkg -i (as root, or
#                       through sudo; not when cross-building),
#                       build tests/c/qemu_rfc.c with
#                       `pkg-config --cflags --libs qemu-ubpf`, run it, and
#                       remove the packages again (--keep-installed keeps them)
#
# Needs dpkg-deb, dpkg-shlibdeps (dpkg-dev), binutils; lintian for the check.
# DEB_MAINTAINER overrides the Maintainer field.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

out="" revision=1 install_args=() lintian=true install_test=false keep=false arch=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --revision) revision=${2:?--revision needs a number}; shift 2 ;;
        --profile) install_args+=(--profile "${2:?--profile needs a name}"); shift 2 ;;
        --artifacts) install_args+=(--artifacts "$(cd "${2:?--artifacts needs a directory}" && pwd)"); shift 2 ;;
        --arch) arch=${2:?--arch needs a Debian architecture}; shift 2 ;;
        --no-lintian) lintian=false; shift ;;
        --install-test) install_test=true; shift ;;
        --keep-installed) keep=true; shift ;;
        -h|--help) usage ;;
        *) echo "build-deb.sh: unknown option $1" >&2; usage ;;
    esac
done

[ -z "$out" ] || out=$(mkdir -p "$out" && cd "$out" && pwd)
cd "$(dirname "$0")/.."
root=$PWD
out=${out:-$root/target/debian}
mkdir -p "$out"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
soversion=$(sed -n 's/^const SOVERSION: &str = "\(.*\)";$/\1/p' build.rs)
deb_version=$version-$revision
arch=${arch:-$(dpkg --print-architecture)}
multiarch=$(dpkg-architecture -a"$arch" -qDEB_HOST_MULTIARCH 2>/dev/null)
# The binutils that read this architecture's objects: the host's own, or
# the cross ones (aarch64-linux-gnu-strip...), and Rust's target for it.
tools=""
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
    if $install_test; then
        echo "build-deb.sh: --install-test installs and runs the packages: not for another architecture ($arch)" >&2
        exit 1
    fi
    tools=$(dpkg-architecture -a"$arch" -qDEB_HOST_GNU_TYPE 2>/dev/null)-
    install_args+=(--target "$(dpkg-architecture -a"$arch" -qDEB_HOST_GNU_CPU 2>/dev/null)-unknown-linux-gnu")
    command -v "${tools}strip" >/dev/null || { echo "build-deb.sh: ${tools}strip is missing (binutils for $arch)" >&2; exit 1; }
fi
maintainer=${DEB_MAINTAINER:-$(sed -n 's/^ -- \(.*>\)  .*$/\1/p' packaging/debian/changelog | head -n 1)}
lib_package=libqemu-ubpf$soversion
dev_package=libqemu-ubpf-dev

top=$(sed -n '1s/^qemu-ubpf (\([^)]*\)).*$/\1/p' packaging/debian/changelog)
if [ "$top" != "$deb_version" ]; then
    echo "build-deb.sh: packaging/debian/changelog starts with $top, not $deb_version: add an entry" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/install
scripts/install.sh --prefix /usr --libdir "/usr/lib/$multiarch" --destdir "$stage" --command "${install_args[@]}"
libdir=usr/lib/$multiarch
real=libqemu-ubpf.so.$version
soname=libqemu-ubpf.so.$soversion

# Strip as dh_strip does: debug info and the notes and comments of the
# toolchain go; the dynamic symbol table stays.
"${tools}strip" --remove-section=.comment --remove-section=.note --strip-unneeded "$stage/$libdir/$real"
"${tools}strip" --remove-section=.comment --remove-section=.note --strip-debug --enable-deterministic-archives \
    "$stage/$libdir/libqemu-ubpf.a"
"${tools}strip" --remove-section=.comment --remove-section=.note "$stage/usr/bin/qemu-ubpf"

# The files of each package, as paths below the install tree.
lib_files=("$libdir/$real" "$libdir/$soname")
dev_files=("usr/include/qemu-ubpf/ubpf.h" "$libdir/libqemu-ubpf.so" "$libdir/libqemu-ubpf.a" "$libdir/pkgconfig/qemu-ubpf.pc")
mapfile -t command_files < <(cd "$stage" && { echo usr/bin/qemu-ubpf; find usr/share/qemu-ubpf -type f; } | LC_ALL=C sort)

# Runtime dependencies of the library, as dpkg-shlibdeps finds them (it
# wants a debian/control beside it; DEB_HOST_ARCH makes it read another
# architecture's objects with that one's objdump).
mkdir -p "$work/shlibdeps/debian"
printf 'Source: qemu-ubpf\n\nPackage: %s\nArchitecture: any\n' "$lib_package" > "$work/shlibdeps/debian/control"
shlibdeps() {
    (cd "$work/shlibdeps" && DEB_HOST_ARCH=$arch dpkg-shlibdeps -O -e"$1" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
}
lib_depends=$(shlibdeps "$stage/$libdir/$real")
command_depends=$(shlibdeps "$stage/usr/bin/qemu-ubpf")
[ -n "$lib_depends" ] && [ -n "$command_depends" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
# libpcap is loaded with dlopen when an expression is compiled: neither the
# library nor the command may link it (the command recommends it).
if grep -q libpcap <<<"$lib_depends $command_depends"; then
    echo "build-deb.sh: the library or the command links libpcap: $lib_depends; $command_depends" >&2
    exit 1
fi

# Fills a package tree: its files, documentation, control data, md5sums.
# DEPENDS: what its control file's @DEPENDS@ becomes.
make_package() {
    local package=$1 depends=$2
    shift 2
    local tree=$work/$package
    local file
    mkdir -p "$tree/DEBIAN" "$tree/usr/share/doc/$package"
    for file in "$@"; do
        mkdir -p "$tree/$(dirname "$file")"
        cp -a "$stage/$file" "$tree/$file"
    done
    install -m 0644 packaging/debian/copyright "$tree/usr/share/doc/$package/copyright"
    gzip -9n < packaging/debian/changelog > "$tree/usr/share/doc/$package/changelog.Debian.gz"
    chmod 0644 "$tree/usr/share/doc/$package/changelog.Debian.gz"
    find "$tree" -type d -exec chmod 0755 {} +
    find "$tree" -type f -exec chmod 0644 {} +
    if [ -d "$tree/usr/bin" ]; then
        chmod 0755 "$tree/usr/bin/"*
    fi
    local size
    size=$(du -k -s --apparent-size --exclude=DEBIAN "$tree" | cut -f1)
    sed -e "s/@DEB_VERSION@/$deb_version/g" -e "s/@ARCH@/$arch/" -e "s/@MAINTAINER@/$maintainer/" \
        -e "s/@INSTALLED_SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
        "packaging/debian/control.$package" > "$tree/DEBIAN/control"
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs -r md5sum) \
        > "$tree/DEBIAN/md5sums"
}

make_package "$lib_package" "$lib_depends" "${lib_files[@]}"
# The library's control data: shlibs and symbols for packages built against
# it, and the trigger that runs ldconfig.
echo "libqemu-ubpf $soversion $lib_package (>= $version)" > "$work/$lib_package/DEBIAN/shlibs"
{
    echo "$soname $lib_package #MINVER#"
    echo "* Build-Depends-Package: $dev_package"
    "${tools}nm" -D --defined-only "$stage/$libdir/$real" | awk '$2 == "T" { print $3 }' | LC_ALL=C sort |
        sed "s/^\(.*\)$/ \1@Base $version/"
} > "$work/$lib_package/DEBIAN/symbols"
echo "activate-noawait ldconfig" > "$work/$lib_package/DEBIAN/triggers"
chmod 0644 "$work/$lib_package/DEBIAN/"*

make_package "$dev_package" "" "${dev_files[@]}"
make_package qemu-ubpf "$command_depends" "${command_files[@]}"

debs=()
for package in "$lib_package" "$dev_package" qemu-ubpf; do
    deb=$out/${package}_${deb_version}_$arch.deb
    dpkg-deb --root-owner-group -Zxz --build "$work/$package" "$deb" >/dev/null
    debs+=("$deb")
    echo "built $deb"
done

if $lintian; then
    if command -v lintian >/dev/null; then
        echo "== lintian"
        # Errors fail the build; warnings and the rest are shown.
        lintian --fail-on error --display-info "${debs[@]}"
        echo "lintian: no errors"
    else
        echo "lintian is not installed: skipping the check (apt-get install lintian)" >&2
    fi
fi

if $install_test; then
    echo "== dpkg -i, then a C program built with pkg-config"
    as_root=""
    [ "$(id -u)" = 0 ] || as_root=sudo
    $as_root dpkg -i "${debs[@]}"
    test_dir=$work/install-test
    mkdir -p "$test_dir"
    # shellcheck disable=SC2046 # pkg-config prints separate words
    gcc -std=c99 -Wall -Wextra -Werror -O2 tests/c/qemu_rfc.c $(pkg-config --cflags --libs qemu-ubpf) \
        -o "$test_dir/qemu_rfc"
    ldd "$test_dir/qemu_rfc" | grep libqemu-ubpf
    "$test_dir/qemu_rfc" "$root"
    if command -v clang >/dev/null; then
        # The installed command finds its installed headers.
        /usr/bin/qemu-ubpf build tests/fixtures/build/rfc_filter.c -o "$test_dir/rfc_filter.o" -H 2>&1 |
            grep -F /usr/share/qemu-ubpf/include/arpa/inet.h
        /usr/bin/qemu-ubpf check "$test_dir/rfc_filter.o"
    fi
    if ! $keep; then
        $as_root dpkg -r qemu-ubpf "$dev_package" "$lib_package"
    fi
fi
