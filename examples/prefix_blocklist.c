/*
 * A blocklist of IPv4 prefixes, filled by the host (replay --map-init, the
 * C API, QMP): packets from or to an address under a listed prefix are
 * dropped, the longest matching prefix's entry saying why. Drops are counted
 * per reason in an array.
 *
 * The program sees the packet from its IPv4 header on (ip-mode=on).
 *
 * Try it, with the sample list examples/prefix_blocklist.json:
 *   qemu-ubpf replay examples/prefix_blocklist.o CAPTURE \
 *       --map-init examples/prefix_blocklist.json --maps
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PASS 0
#define DROP 1

struct prefix {
    __u32 prefixlen;
    __u8 address[4];
};

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 1024);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct prefix);
    __type(value, __u32); /* a reason, 0 to 15; 0 = allowed (an exception) */
} blocklist SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u64);
} drops SEC(".maps");

/* The reason the longest prefix holding `address` gives, 0 if none. */
static __u32 reason_for(const __u8 *address)
{
    struct prefix key = {32, {address[0], address[1], address[2], address[3]}};
    __u32 *reason = bpf_map_lookup_elem(&blocklist, &key);
    return reason ? *reason & 15 : 0;
}

SEC("filter")
int prefix_blocklist(const __u8 *ip, unsigned long len)
{
    if (len < 20 || ip[0] >> 4 != 4)
        return PASS;
    __u32 reason = reason_for(ip + 12);
    if (!reason)
        reason = reason_for(ip + 16);
    if (!reason)
        return PASS;
    __u64 *count = bpf_map_lookup_elem(&drops, &reason);
    if (count)
        __sync_fetch_and_add(count, 1);
    return DROP;
}

char LICENSE[] SEC("license") = "GPL";
