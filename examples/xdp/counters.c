/*
 * Per-CPU counters of packets and bytes per protocol: IPv4's protocol field
 * or IPv6's next header (the first one; extension headers count as
 * themselves), behind at most one VLAN tag. Each CPU counts in its own slot
 * of a BPF_MAP_TYPE_PERCPU_ARRAY, so CPUs never contend for a counter and no
 * atomic add is needed; the host sums the slots when it reads them. Frames
 * that are not IP, or too short to show their protocol, count in
 * `other_counters`, and so do frames with a second VLAN tag. Every frame
 * passes.
 *
 * Run it:
 *   qemu-ubpf replay examples/xdp/counters.o CAPTURE --maps   (one value per CPU)
 *   xdp-loader load DEV examples/xdp/counters.o    (attached in the Linux kernel)
 *   bpftool map dump name proto_counters           (its counters, per CPU)
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct counters {
    __u64 packets;
    __u64 bytes;
};

/* Indexed by the IP protocol number. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, struct counters);
} proto_counters SEC(".maps");

enum other {
    NOT_IP,    /* an EtherType other than IPv4 and IPv6 */
    TRUNCATED, /* cut short before the protocol number */
    OTHERS,
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, OTHERS);
    __type(key, __u32);
    __type(value, struct counters);
} other_counters SEC(".maps");

struct vlan_tag {
    __be16 tci;
    __be16 ethertype; /* of what follows the tag */
};

static __always_inline void count(void *map, __u32 key, __u64 bytes)
{
    struct counters *counters = bpf_map_lookup_elem(map, &key);

    /* This CPU's slot: no other CPU writes it. */
    if (counters) {
        counters->packets++;
        counters->bytes += bytes;
    }
}

SEC("xdp")
int xdp_counters(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u64 bytes = data_end - data;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end) {
        count(&other_counters, TRUNCATED, bytes);
        return XDP_PASS;
    }
    __be16 ethertype = eth->h_proto;
    void *next = eth + 1;
    if (ethertype == bpf_htons(ETH_P_8021Q) || ethertype == bpf_htons(ETH_P_8021AD)) {
        struct vlan_tag *tag = next;
        if ((void *)(tag + 1) > data_end) {
            count(&other_counters, TRUNCATED, bytes);
            return XDP_PASS;
        }
        ethertype = tag->ethertype;
        next = tag + 1;
    }

    if (ethertype == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = next;
        if ((void *)(ip + 1) > data_end)
            count(&other_counters, TRUNCATED, bytes);
        else
            count(&proto_counters, ip->protocol, bytes);
    } else if (ethertype == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = next;
        if ((void *)(ip6 + 1) > data_end)
            count(&other_counters, TRUNCATED, bytes);
        else
            count(&proto_counters, ip6->nexthdr, bytes);
    } else {
        count(&other_counters, NOT_IP, bytes);
    }
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
