#!/usr/bin/env bash
# Prepares a small real guest for the filter-ubpf test of tests/qemu.rs:
# Debian's cloud kernel and a busybox initramfs whose init brings up the
# virtio-net NIC, pings 1.1.1.1 and 9.9.9.9 three times each and powers off.
#
# Every part comes from Debian packages fetched with `apt-get download` and
# unpacked with `dpkg-deb -x`; nothing is installed. Firmware: SeaBIOS from
# `seabios`, the option ROMs that boot a -kernel from `qemu-system-data`.
#
# Usage: scripts/qemu-guest.sh
# The last line printed is the guest directory, which holds vmlinuz,
# initrd.gz and firmware/ (for QEMU's -L); tests/qemu.rs reads it from
# QEMU_UBPF_GUEST. Cached in $QEMU_UBPF_CACHE/guest (default
# ~/.cache/qemu-ubpf/guest), keyed by the package versions and this script.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${QEMU_UBPF_CACHE:-$HOME/.cache/qemu-ubpf}/guest
mkdir -p "$cache"
log() { echo "== qemu-guest: $*" >&2; }

kernel_package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
[ -n "$kernel_package" ] || { echo "qemu-guest.sh: apt knows no linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
packages="$kernel_package busybox-static seabios qemu-system-data"
versions=$(for p in $packages; do apt-cache policy "$p" | sed -n "s/^ *Candidate: /$p=/p"; done)
key=$( (echo "$versions"; cat "$0") | sha256sum | cut -c1-16)
guest=$cache/$key
if [ -f "$guest/initrd.gz" ]; then
    echo "$guest"
    exit 0
fi

log "fetching $packages"
rm -rf "$cache" && mkdir -p "$cache/debs" "$guest.tmp/root"
(cd "$cache/debs" && apt-get download -qq $packages) 2>&1 | grep -v 'unsandboxed' >&2 || true
for deb in "$cache"/debs/*.deb; do
    dpkg-deb -x "$deb" "$guest.tmp/root"
done
root=$guest.tmp/root

kernel_version=${kernel_package#linux-image-}
cp "$root/boot/vmlinuz-$kernel_version" "$guest.tmp/vmlinuz"
mkdir -p "$guest.tmp/firmware"
cp "$root"/usr/share/seabios/bios-256k.bin "$root"/usr/share/qemu/linuxboot_dma.bin \
    "$root"/usr/share/qemu/kvmvapic.bin "$guest.tmp/firmware/"

log "building the initramfs (kernel $kernel_version)"
initramfs=$guest.tmp/initramfs
mkdir -p "$initramfs"/{bin,dev,proc,sys,modules}
cp "$root/bin/busybox" "$initramfs/bin/busybox"
# Built as modules in the cloud kernel; listed in dependency order.
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"
for module in $modules; do
    file=$(find "$root/lib/modules/$kernel_version" -name "$module.ko*" | head -n 1)
    [ -n "$file" ] || { echo "qemu-guest.sh: no $module module in $kernel_package" >&2; exit 1; }
    case "$file" in
        *.ko.xz) xz -dc "$file" > "$initramfs/modules/$module.ko" ;;
        *.ko.zst) zstd -qdc "$file" > "$initramfs/modules/$module.ko" ;;
        *) cp "$file" "$initramfs/modules/$module.ko" ;;
    esac
done
cat > "$initramfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
for module in $modules; do
    insmod /modules/\$module.ko || echo "guest: insmod \$module failed"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
# No one answers ARP on this network: the gateway's address is fixed.
arp -s 10.0.2.2 52:54:00:00:02:02
ip route add default via 10.0.2.2 dev eth0
echo "guest: network up"
ping -c 3 -W 1 1.1.1.1
ping -c 3 -W 1 9.9.9.9
echo "guest: pings sent"
poweroff -f
EOF
chmod +x "$initramfs/init"
# busybox's own cpio: no host package needed.
(cd "$initramfs" && find . | "$root/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$guest.tmp/initrd.gz"
rm -rf "$root" "$initramfs"
mv "$guest.tmp" "$guest"
echo "$guest"
