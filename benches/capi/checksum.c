/*
 * The RFC 1071 Internet checksum of the whole input, written as an XDP
 * program would walk it: a pointer advanced up to the end. Built as
 * benches/capi/classifier.c is (filter, -DXDP, native).
 */

#include <stdint.h>

#define MAX_WORDS 4096

static inline __attribute__((always_inline)) uint16_t checksum(const uint8_t *p, const uint8_t *end)
{
    uint32_t sum = 0;
    /* Bounded, as the kernel's verifier wants XDP loops to be. */
    for (int i = 0; i < MAX_WORDS && p + 2 <= end; i++, p += 2)
        sum += (uint32_t)p[0] << 8 | p[1];
    if (p + 1 <= end)
        sum += (uint32_t)p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

#if defined(__bpf__) && defined(XDP)
#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int checksum_xdp(struct xdp_md *ctx)
{
    const uint8_t *pkt = (const uint8_t *)(unsigned long)ctx->data;
    const uint8_t *end = (const uint8_t *)(unsigned long)ctx->data_end;
    /* The sum decides the action, so the loop cannot be optimised away. */
    return checksum(pkt, end) == 0x1234 ? XDP_DROP : XDP_PASS;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
#elif defined(__bpf__)
uint64_t checksum_filter(const uint8_t *pkt, unsigned long len)
{
    return checksum(pkt, pkt + len);
}
#else
uint64_t checksum_native(const uint8_t *pkt, unsigned long len)
{
    return checksum(pkt, pkt + len);
}
#endif
