/*
 * A destination NAT: TCP and UDP packets (IPv4) to an address and port the
 * host lists in `nat_rules` get a new destination address and port, and
 * their IPv4 and TCP/UDP checksums are fixed incrementally with
 * bpf_csum_diff, so the receiver accepts them. The L4 checksum covers the
 * pseudo-header's destination address and the port; the IPv4 checksum the
 * address alone. A UDP packet without a checksum (0) keeps none.
 *
 * Packets that match no rule, later fragments (no L4 header to rewrite),
 * other protocols and frames cut short pass untouched.
 *
 * Fill the rules, then run it. Keys and values are the bytes of the structs
 * below, address and port in network order: examples/xdp/dnat.json sends
 * TCP to 10.0.0.2:80 on to 192.168.1.10:8080, and UDP to 10.0.0.2:53 on to
 * 192.168.1.53:5353.
 *   qemu-ubpf replay examples/xdp/dnat.o CAPTURE --map-init examples/xdp/dnat.json \
 *       --pass rewritten.pcap
 *   xdp-loader load DEV examples/xdp/dnat.o        (attached in the Linux kernel)
 *   bpftool map update name nat_rules key hex 0a 00 00 02 00 50 06 00 \
 *       value hex c0 a8 01 0a 1f 90 00 00
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IP_FRAGMENT_OFFSET 0x1fff

/* What a rule matches: the destination as the packet carries it. */
struct nat_key {
    __be32 addr;
    __be16 port;
    __u8 protocol; /* IPPROTO_TCP or IPPROTO_UDP */
    __u8 pad;      /* zero */
};

/* Where a matching packet goes instead. */
struct nat_target {
    __be32 addr;
    __be16 port;
    __u16 pad; /* zero */
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct nat_key);
    __type(value, struct nat_target);
} nat_rules SEC(".maps");

/* A ones' complement sum folded to 16 bits. */
static __always_inline __u16 fold(__u64 sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

/* The checksum `check` with the difference `diff` (from bpf_csum_diff) in. */
static __always_inline __u16 checksum_update(__u16 check, __s64 diff)
{
    return ~fold((__u16)~check + (__u64)diff);
}

SEC("xdp")
int xdp_dnat(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;

    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
        return XDP_PASS;
    if (ip->frag_off & bpf_htons(IP_FRAGMENT_OFFSET))
        return XDP_PASS;

    void *l4 = (void *)ip + ip->ihl * 4;
    __be16 *port;
    __u16 *l4_check;
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > data_end)
            return XDP_PASS;
        port = &tcp->dest;
        l4_check = &tcp->check;
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > data_end)
            return XDP_PASS;
        port = &udp->dest;
        l4_check = &udp->check;
    } else {
        return XDP_PASS;
    }

    struct nat_key key = {.addr = ip->daddr, .port = *port, .protocol = ip->protocol};
    struct nat_target *target = bpf_map_lookup_elem(&nat_rules, &key);
    if (!target)
        return XDP_PASS;

    /* The same layout on both sides, so one difference covers address and port. */
    struct nat_target old = {.addr = ip->daddr, .port = *port};
    struct nat_target new = {.addr = target->addr, .port = target->port};

    __s64 address_diff = bpf_csum_diff(&old.addr, sizeof(old.addr), &new.addr, sizeof(new.addr), 0);
    __s64 both_diff = bpf_csum_diff((__be32 *)&old, sizeof(old), (__be32 *)&new, sizeof(new), 0);
    if (address_diff < 0 || both_diff < 0)
        return XDP_ABORTED;

    ip->daddr = new.addr;
    ip->check = checksum_update(ip->check, address_diff);
    *port = new.port;
    if (ip->protocol == IPPROTO_TCP || *l4_check != 0) {
        __u16 check = checksum_update(*l4_check, both_diff);
        /* In UDP, 0 means "no checksum": a computed 0 is sent as 0xffff. */
        if (ip->protocol == IPPROTO_UDP && check == 0)
            check = 0xffff;
        *l4_check = check;
    }
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
