/*
 * Top talkers: packets and bytes per IPv4 source address, in an LRU hash of
 * 64 entries, so the busiest senders stay and the quiet ones make room.
 * Every packet passes.
 *
 * The program sees the packet from its IPv4 header on (ip-mode=on).
 *
 * Try it: qemu-ubpf replay examples/top_talkers.o CAPTURE --maps
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PASS 0

struct traffic {
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 64);
    __type(key, __u32); /* the source address, in network order */
    __type(value, struct traffic);
} talkers SEC(".maps");

SEC("filter")
int top_talkers(const __u8 *ip, unsigned long len)
{
    if (len < 20 || ip[0] >> 4 != 4)
        return PASS;
    __u32 source;
    __builtin_memcpy(&source, ip + 12, sizeof(source));
    struct traffic *traffic = bpf_map_lookup_elem(&talkers, &source);
    if (traffic) {
        __sync_fetch_and_add(&traffic->packets, 1);
        __sync_fetch_and_add(&traffic->bytes, len);
        return PASS;
    }
    struct traffic first = {1, len};
    /* Another packet of the same source may have inserted it meanwhile;
     * BPF_NOEXIST keeps its count. */
    bpf_map_update_elem(&talkers, &source, &first, BPF_NOEXIST);
    return PASS;
}

char LICENSE[] SEC("license") = "GPL";
