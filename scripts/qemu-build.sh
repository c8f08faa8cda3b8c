#!/usr/bin/env bash
# Builds a minimal qemu-system-x86_64 with the filter-ubpf patches, linked
# against the libqemu-ubpf built from this tree.
#
#   1. QEMU's source comes from Debian's source packages: a deb-src entry for
#      bookworm and bookworm-backports is added when apt has none (a copy of
#      the existing Debian entry), then `apt-get source --download-only`
#      fetches the package; only its orig tarball is used.
#   2. The library is built and staged with scripts/install.sh; QEMU finds it
#      through the staged qemu-ubpf.pc (PKG_CONFIG_PATH).
#   3. qemu-patches/*.patch are applied, QEMU is configured for the
#      x86_64-softmmu target only and built with ninja.
#   4. With --qtest, the series' qtest (tests/qtest/filter-ubpf-test.c) is
#      built in the same build directory, incrementally, and run with QEMU's
#      own test runner (meson test).
#   5. With --docs, a second configuration of the same tree, for the
#      documentation alone (--enable-docs --enable-werror, so that a Sphinx
#      warning is an error), builds the HTML manual and the man pages.
#
# The QEMU build is cached under $QEMU_UBPF_CACHE (default ~/.cache/qemu-ubpf)
# keyed by QEMU's version and the contents of the patches and of this script,
# so a second run only restages the library and takes seconds. The library
# is loaded at run time from the staged directory (rpath), so rebuilding it
# never forces a QEMU rebuild.
#
# Usage: scripts/qemu-build.sh [--no-deps] [--qtest] [--docs]
#   --no-deps   do not apt-get/pip install build dependencies
#   --qtest     also build and run QEMU's qtest of filter-ubpf
#   --docs      also build QEMU's documentation with the series' pages
#
# Exits non-zero when a step fails. The last line printed is the path of the
# built qemu-system-x86_64.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

install_deps=true
run_qtest=false
build_docs=false
for option in "$@"; do
    case "$option" in
        --no-deps) install_deps=false ;;
        --qtest) run_qtest=true ;;
        --docs) build_docs=true ;;
        *) echo "qemu-build.sh: unknown option $option" >&2; exit 2 ;;
    esac
done

cache=${QEMU_UBPF_CACHE:-$HOME/.cache/qemu-ubpf}
mkdir -p "$cache"
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive

log() { echo "== qemu-build: $*" >&2; }

# --- 1. QEMU's source from Debian -------------------------------------------
qemu_10_source_known() {
    apt-cache showsrc qemu 2>/dev/null | grep -q '^Version: 1:10\.0\.'
}

# A deb-src entry for bookworm and bookworm-backports, made from the
# Debian archive's entry apt already has: its deb822 stanza, or else its
# one-line form in sources.list.
add_deb_src_entry() {
    local deb822=/etc/apt/sources.list.d/debian.sources
    local entry
    if [ -f "$deb822" ]; then
        entry=/etc/apt/sources.list.d/qemu-ubpf-deb-src.sources
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /Suites:[^\n]*bookworm( |$|\n)/ {
                 gsub(/Types: deb/, "Types: deb-src")
                 gsub(/Suites:[^\n]*/, "Suites: bookworm bookworm-backports")
                 print
             }' "$deb822" | $sudo tee "$entry" >/dev/null
    else
        entry=/etc/apt/sources.list.d/qemu-ubpf-deb-src.list
        awk '$1 == "deb" && $3 == "bookworm" {
                 $1 = "deb-src"; print; $3 = "bookworm-backports"; print; exit
             }' /etc/apt/sources.list 2>/dev/null | $sudo tee "$entry" >/dev/null
    fi
    [ -s "$entry" ] || { echo "qemu-build.sh: apt has no Debian bookworm entry to copy into $entry" >&2; exit 1; }
    log "added $entry"
}

if $install_deps; then
    $sudo apt-get update -qq
    if ! qemu_10_source_known; then
        add_deb_src_entry
        $sudo apt-get update -qq
    fi
    log "installing build dependencies"
    $sudo apt-get install -y -qq --no-install-recommends \
        dpkg-dev ninja-build pkg-config libglib2.0-dev libfdt-dev flex bison libpixman-1-dev libslirp-dev \
        python3-venv bzip2 xz-utils gcc >/dev/null
    if $build_docs; then
        $sudo apt-get install -y -qq --no-install-recommends \
            python3-sphinx python3-sphinx-rtd-theme >/dev/null
    fi
fi

# QEMU 10 needs meson >= 1.5 and pycotap, newer than bookworm has: a venv.
# It is made from Debian's python3 and sees its packages, so that the
# documentation build finds the Sphinx that apt installed.
venv=$cache/venv
if [ ! -x "$venv/bin/meson" ] || ! "$venv/bin/python" -c 'import pycotap' 2>/dev/null ||
    ! grep -q '^include-system-site-packages = true' "$venv/pyvenv.cfg"; then
    log "creating $venv with meson and pycotap"
    rm -rf "$venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q 'meson>=1.5,<1.9' pycotap
fi
export PATH=$venv/bin:$PATH

version=$(apt-cache showsrc qemu 2>/dev/null | sed -n 's/^Version: \(1:10\.0\.[0-9.]*+ds.*\)$/\1/p' | sort -V | tail -n 1)
[ -n "$version" ] || { echo "qemu-build.sh: apt knows no qemu 10.0 source package (is the bookworm-backports deb-src entry there?)" >&2; exit 1; }
upstream=${version#*:}
upstream=${upstream%%-*}
src_dir=$cache/src/qemu-$upstream
if [ ! -f "$src_dir/VERSION" ]; then
    log "fetching qemu $version with apt-get source"
    mkdir -p "$cache/src"
    # Only the orig tarball is needed; a missing .dsc or debian tarball on
    # the mirror does not matter as long as it came.
    (cd "$cache/src" && apt-get source -qq --download-only "qemu=$version") >&2 || true
    tarball=$(ls "$cache/src"/qemu_"$upstream".orig.tar.* 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || { echo "qemu-build.sh: apt-get source did not fetch qemu_$upstream.orig.tar.*" >&2; exit 1; }
    rm -rf "$src_dir.tmp" && mkdir -p "$src_dir.tmp"
    tar -xf "$tarball" -C "$src_dir.tmp" --strip-components=1
    mv "$src_dir.tmp" "$src_dir"
fi

# Each patch must stay clean under QEMU's own checkpatch.
for patch in qemu-patches/*.patch; do
    if ! report=$(perl "$src_dir/scripts/checkpatch.pl" --no-tree "$patch" 2>&1); then
        echo "$report" >&2
        echo "qemu-build.sh: checkpatch.pl finds problems in $patch" >&2
        exit 1
    fi
done
log "checkpatch.pl: every patch is clean"

# --- 2. The library, staged where QEMU's pkg-config finds it ----------------
stage=$cache/stage
log "building and staging libqemu-ubpf in $stage"
scripts/install.sh --prefix "$stage" >&2
export PKG_CONFIG_PATH=$stage/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}

# --- 3. Patch, configure, build (cached) -------------------------------------
key=$( (echo "$version"; cat qemu-patches/*.patch "$0") | sha256sum | cut -c1-16)
build_root=$cache/build-$upstream-$key
qemu=$build_root/build/qemu-system-x86_64
if [ ! -x "$qemu" ]; then
    log "building qemu $upstream with filter-ubpf in $build_root (key $key)"
    rm -rf "$build_root"
    mkdir -p "$build_root"
    cp -a "$src_dir/." "$build_root/"
    cd "$build_root"
    for patch in "$repo"/qemu-patches/*.patch; do
        log "applying $(basename "$patch")"
        patch -p1 -s --forward < "$patch"
    done
    # Debian's +ds tarball strips the edk2 firmware images; without them the
    # build must not try to unpack them.
    if ! ls pc-bios/edk2-*.fd.bz2 >/dev/null 2>&1; then
        sed -i 's/^\( *unpack_edk2_blobs = \).*$/\1false/' meson.build
    fi
    ./configure --without-default-features --enable-slirp --enable-ubpf \
        --disable-docs --disable-tools --disable-install-blobs \
        --target-list=x86_64-softmmu --extra-ldflags="-Wl,-rpath,$stage/lib" >&2
    ninja -C build qemu-system-x86_64 >&2
    cd "$repo"
fi

# --- 4. The qtest, built incrementally in the same build directory ----------
if $run_qtest; then
    log "building and running qtest-x86_64/filter-ubpf-test"
    ninja -C "$build_root/build" tests/qtest/filter-ubpf-test >&2
    meson test -C "$build_root/build" --no-rebuild --print-errorlogs \
        qtest-x86_64/filter-ubpf-test >&2
fi

# --- 5. The documentation alone, where a Sphinx warning is an error ----------
if $build_docs; then
    docs=$build_root/build-docs
    if [ ! -f "$docs/build.ninja" ]; then
        log "configuring the documentation build in $docs"
        rm -rf "$docs"
        mkdir -p "$docs"
        (cd "$docs" && "$build_root/configure" --without-default-features \
            --enable-ubpf --enable-docs --enable-werror --disable-tools \
            --disable-install-blobs --target-list=x86_64-softmmu) >&2
    fi
    log "building the manual and the man pages with Sphinx"
    ninja -C "$docs" sphinxdocs man >&2
fi
# Older builds only waste disk.
for old in "$cache"/build-*; do
    [ "$old" = "$build_root" ] || rm -rf "$old"
done
"$qemu" --version | head -n 1 >&2
echo "$qemu"
