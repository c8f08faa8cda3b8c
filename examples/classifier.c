/*
 * A 5-tuple classifier over whole Ethernet frames: r1 = the frame, r2 = its
 * length. A non-zero result means DROP, zero PASS.
 *
 * The frame may carry one 802.1Q VLAN tag; the IPv4 header may have options
 * (IHL > 5). The rules, in order:
 *
 *   1. Frames that are not IPv4 (ARP, IPv6, ...) or too short for an
 *      Ethernet header pass.
 *   2. Malformed IPv4 is dropped: version not 4, IHL < 5, or the header (with
 *      its options) cut off by the end of the frame.
 *   3. Fragments other than the first pass: they carry no ports.
 *   4. TCP or UDP whose ports are cut off by the end of the frame is dropped.
 *   5. TCP to port 23 (telnet) is dropped.
 *   6. UDP to port 53 (DNS) from outside 10.0.0.0/8 is dropped.
 *   7. Everything else passes.
 */

#include <stdint.h>

#define PASS 0
#define DROP 1

#define ETH_HLEN 14
#define ETH_P_IPV4 0x0800
#define ETH_P_8021Q 0x8100
#define VLAN_HLEN 4
#define IPV4_MIN_HLEN 20
#define IP_PROTO_TCP 6
#define IP_PROTO_UDP 17

static uint16_t load_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

__attribute__((section("classifier"))) int filter(const uint8_t *frame, unsigned long len)
{
    if (len < ETH_HLEN)
        return PASS;
    unsigned long l3 = ETH_HLEN;
    uint16_t ethertype = load_be16(frame + 12);
    if (ethertype == ETH_P_8021Q) {
        if (len < ETH_HLEN + VLAN_HLEN)
            return PASS;
        ethertype = load_be16(frame + 16);
        l3 += VLAN_HLEN;
    }
    if (ethertype != ETH_P_IPV4)
        return PASS;

    if (len < l3 + IPV4_MIN_HLEN)
        return DROP;
    const uint8_t *ip = frame + l3;
    unsigned long ihl = (ip[0] & 0x0f) * 4ul;
    if (ip[0] >> 4 != 4 || ihl < IPV4_MIN_HLEN || len < l3 + ihl)
        return DROP;

    uint8_t proto = ip[9];
    if (proto != IP_PROTO_TCP && proto != IP_PROTO_UDP)
        return PASS;
    if (load_be16(ip + 6) & 0x1fff)
        return PASS;

    unsigned long l4 = l3 + ihl;
    if (len < l4 + 4)
        return DROP;
    uint16_t dst_port = load_be16(frame + l4 + 2);
    if (proto == IP_PROTO_TCP && dst_port == 23)
        return DROP;
    if (proto == IP_PROTO_UDP && dst_port == 53 && ip[12] != 10)
        return DROP;
    return PASS;
}
