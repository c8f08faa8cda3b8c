/*
 * A ping responder: answers every ICMP echo request (IPv4) itself, so the
 * request never reaches the host's stack. The reply is the request turned
 * around: Ethernet and IPv4 addresses swapped, ICMP type 8 made 0 and the
 * ICMP checksum updated for that one change (RFC 1624), then XDP_TX sends
 * it back out where it came from. The IPv4 checksum holds as it is: the same
 * words in another order. Everything else (other protocols, fragments, frames
 * cut short, VLAN-tagged frames) passes untouched.
 *
 * Run it:
 *   qemu-ubpf replay examples/xdp/ping.o CAPTURE --tx replies.pcap --pass rest.pcap
 *   xdp-loader load DEV examples/xdp/ping.o     (attached in the Linux kernel)
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/icmp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* The fragment offset and "more fragments" bits of frag_off. */
#define IP_FRAGMENT_BITS 0x3fff

/* ~(~check + ~old + new) in ones' complement, for one 16-bit word. */
static __always_inline __u16 checksum_replace(__u16 check, __u16 old, __u16 new)
{
    __u32 sum = (__u16)~check + (__u16)~old + (__u32)new;

    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

SEC("xdp")
int xdp_ping(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;

    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
        return XDP_PASS;
    if (ip->protocol != IPPROTO_ICMP || (ip->frag_off & bpf_htons(IP_FRAGMENT_BITS)))
        return XDP_PASS;

    /* The ICMP header follows the options, if any. */
    struct icmphdr *icmp = (void *)ip + ip->ihl * 4;
    if ((void *)(icmp + 1) > data_end)
        return XDP_PASS;
    if (icmp->type != ICMP_ECHO || icmp->code != 0)
        return XDP_PASS;

    __u8 mac[ETH_ALEN];
    __builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, mac, ETH_ALEN);

    __be32 address = ip->daddr;
    ip->daddr = ip->saddr;
    ip->saddr = address;

    /* Type and code are the checksum's first word: 8 0 becomes 0 0. */
    icmp->type = ICMP_ECHOREPLY;
    icmp->checksum = checksum_replace(icmp->checksum, bpf_htons(ICMP_ECHO << 8), bpf_htons(ICMP_ECHOREPLY << 8));
    return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
