/*
 * The 5-tuple classifier of examples/classifier.c, written the way XDP
 * programs are written: every guard compares a pointer with the end of the
 * packet. Built three ways from this one source by scripts/bench-capi.sh:
 *
 *   - as a filter (r1 = frame, r2 = length; non-zero drops), with clang's
 *     default -mcpu, for qemu-ubpf and iovisor/ubpf through ubpf_compile();
 *   - as an XDP program (-DXDP) for the Linux kernel's JIT;
 *   - natively with gcc -O2, the baseline.
 */

#include <stdint.h>

#define PASS 0
#define DROP 1

struct ethhdr_ {
    uint8_t dst[6];
    uint8_t src[6];
    uint16_t proto;
};

struct iphdr_ {
    uint8_t ver_ihl;
    uint8_t tos;
    uint16_t tot_len;
    uint16_t id;
    uint16_t frag_off;
    uint8_t ttl;
    uint8_t protocol;
    uint16_t check;
    uint8_t saddr[4];
    uint8_t daddr[4];
};

#define BE16(x) ((uint16_t)((x) >> 8 | (x) << 8))

static inline __attribute__((always_inline)) int classify(const uint8_t *pkt, const uint8_t *end)
{
    const struct ethhdr_ *eth = (const struct ethhdr_ *)pkt;
    if (pkt + sizeof(*eth) > end)
        return PASS;
    const uint8_t *l3 = pkt + sizeof(*eth);
    uint16_t proto = eth->proto;
    if (proto == BE16(0x8100)) {
        if (l3 + 4 > end)
            return PASS;
        proto = *(const uint16_t *)(l3 + 2);
        l3 += 4;
    }
    if (proto != BE16(0x0800))
        return PASS;

    const struct iphdr_ *ip = (const struct iphdr_ *)l3;
    if (l3 + sizeof(*ip) > end)
        return DROP;
    unsigned ihl = (ip->ver_ihl & 0x0f) * 4u;
    if (ip->ver_ihl >> 4 != 4 || ihl < sizeof(*ip) || l3 + ihl > end)
        return DROP;
    if (ip->protocol != 6 && ip->protocol != 17)
        return PASS;
    if (ip->frag_off & BE16(0x1fff))
        return PASS;

    const uint8_t *l4 = l3 + ihl;
    if (l4 + 4 > end)
        return DROP;
    uint16_t dst_port = *(const uint16_t *)(l4 + 2);
    if (ip->protocol == 6 && dst_port == BE16(23))
        return DROP;
    if (ip->protocol == 17 && dst_port == BE16(53) && ip->saddr[0] != 10)
        return DROP;
    return PASS;
}

#if defined(__bpf__) && defined(XDP)
#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int classifier_xdp(struct xdp_md *ctx)
{
    const uint8_t *pkt = (const uint8_t *)(unsigned long)ctx->data;
    const uint8_t *end = (const uint8_t *)(unsigned long)ctx->data_end;
    return classify(pkt, end) ? XDP_DROP : XDP_PASS;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
#elif defined(__bpf__)
int classifier(const uint8_t *pkt, unsigned long len)
{
    return classify(pkt, pkt + len);
}
#else
uint64_t classifier_native(const uint8_t *pkt, unsigned long len)
{
    return classify(pkt, pkt + len);
}
#endif
