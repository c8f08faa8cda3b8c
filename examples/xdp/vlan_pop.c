/*
 * A VLAN-tag pop: a frame with an 802.1Q (0x8100) or 802.1ad (0x88a8) tag
 * after its MAC addresses loses that outer tag, as a switch port does when
 * it hands tagged traffic to an untagged host. The addresses move 4 bytes
 * up, over the tag, and bpf_xdp_adjust_head drops the 4 bytes they left at
 * the front. An inner tag (QinQ) stays, now the outer one. Untagged frames,
 * and tagged ones too short to hold the tag and the EtherType after it, pass
 * as they are; every frame passes.
 *
 * Run it:
 *   qemu-ubpf replay examples/xdp/vlan_pop.o CAPTURE --pass untagged.pcap
 *   xdp-loader load DEV examples/xdp/vlan_pop.o   (attached in the Linux kernel)
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* A VLAN tag as it sits after the MAC addresses. */
struct vlan_tag {
    __be16 tpid; /* where an untagged frame has its EtherType */
    __be16 tci;  /* priority, drop eligibility, VLAN id */
};

SEC("xdp")
int xdp_vlan_pop(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    /* The addresses, the tag and the EtherType that follows it. */
    if (data + 2 * ETH_ALEN + sizeof(struct vlan_tag) + sizeof(__be16) > data_end)
        return XDP_PASS;
    struct vlan_tag *tag = (void *)eth->h_source + ETH_ALEN;
    if (tag->tpid != bpf_htons(ETH_P_8021Q) && tag->tpid != bpf_htons(ETH_P_8021AD))
        return XDP_PASS;

    /* Destination and source, moved over the tag (through the stack: they overlap). */
    __u8 addresses[2 * ETH_ALEN];
    __builtin_memcpy(addresses, data, sizeof(addresses));
    __builtin_memcpy(data + sizeof(struct vlan_tag), addresses, sizeof(addresses));

    if (bpf_xdp_adjust_head(ctx, sizeof(struct vlan_tag)))
        return XDP_ABORTED;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
