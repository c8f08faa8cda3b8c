/*
 * Per-protocol packet and byte counters, in an array map indexed by the IPv4
 * protocol number. Every packet passes; the host reads the counters (replay
 * --maps, the C API, QMP).
 *
 * The program sees the packet from its IPv4 header on (ip-mode=on): r1 = the
 * header, r2 = the captured length from there.
 *
 * Try it: qemu-ubpf replay examples/proto_counters.o CAPTURE --maps
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PASS 0

struct counter {
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, struct counter);
} counters SEC(".maps");

SEC("filter")
int count_protocols(const __u8 *ip, unsigned long len)
{
    if (len < 20 || ip[0] >> 4 != 4)
        return PASS;
    __u32 protocol = ip[9];
    struct counter *counter = bpf_map_lookup_elem(&counters, &protocol);
    if (counter) {
        __sync_fetch_and_add(&counter->packets, 1);
        __sync_fetch_and_add(&counter->bytes, len);
    }
    return PASS;
}

char LICENSE[] SEC("license") = "GPL";
