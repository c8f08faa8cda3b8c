/* The empty program: what one call through each engine costs. */

#include <stdint.h>

#if defined(__bpf__) && defined(XDP)
#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int empty_xdp(struct xdp_md *ctx)
{
    (void)ctx;
    return XDP_PASS;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
#elif defined(__bpf__)
uint64_t empty(const uint8_t *pkt, unsigned long len)
{
    (void)pkt;
    (void)len;
    return 0;
}
#else
uint64_t empty_native(const uint8_t *pkt, unsigned long len)
{
    (void)pkt;
    (void)len;
    return 0;
}
#endif
