/*
 * A firewall by destination address and port, over IPv4 packets as QEMU's
 * filter-ubpf shows them with ip-mode=on: r1 = the IPv4 header, r2 = the
 * captured length from there. A non-zero result means DROP, zero PASS.
 *
 * Dropped: TCP or UDP whose destination matches a rule of the table below.
 *
 *   192.0.2.10/32     TCP 22    SSH, to the one host that must not take it
 *   192.0.2.0/24      TCP 23    telnet, to a whole subnet
 *   198.51.100.0/24   UDP 161   SNMP
 *   0.0.0.0/0         TCP 3389  RDP, to anywhere
 *
 * Passed: everything else, including what carries no ports: fragments other
 * than the first, and packets cut off (by a snapshot length) before the
 * destination port. Headers that are not IPv4 with IHL >= 5 pass too.
 *
 * The same packets, as a tcpdump expression (Ethernet captures: E or
 * (vlan and E), as ip-mode skips one VLAN tag):
 *
 *   ip[0] & 0xf0 = 0x40 and ip[0] & 0x0f >= 5 and (
 *       (ip dst host 192.0.2.10 and tcp dst port 22)
 *    or (ip dst net 192.0.2.0/24 and tcp dst port 23)
 *    or (ip dst net 198.51.100.0/24 and udp dst port 161)
 *    or tcp dst port 3389)
 *
 * Every read is checked against len first, so no packet, however short,
 * makes the program fault.
 */

#include <stdint.h>

#define PASS 0
#define DROP 1

#define IPV4_MIN_HLEN 20
#define IP_PROTO_TCP 6
#define IP_PROTO_UDP 17
/* The fragment offset bits of the flags-and-offset field. */
#define FRAGMENT_OFFSET 0x1fff

#define ADDRESS(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))
/* Shifted as 64 bits, so that a /0 prefix is a shift by 32 that clears all. */
#define PREFIX(bits) ((uint32_t)(0xffffffffull << (32 - (bits))))

struct rule {
    uint32_t address;
    uint32_t mask;
    uint8_t proto;
    uint16_t port;
};

static const struct rule rules[] = {
    {ADDRESS(192, 0, 2, 10), PREFIX(32), IP_PROTO_TCP, 22},
    {ADDRESS(192, 0, 2, 0), PREFIX(24), IP_PROTO_TCP, 23},
    {ADDRESS(198, 51, 100, 0), PREFIX(24), IP_PROTO_UDP, 161},
    {ADDRESS(0, 0, 0, 0), PREFIX(0), IP_PROTO_TCP, 3389},
};

static uint16_t load_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int filter(const uint8_t *ip, unsigned long len)
{
    if (len < IPV4_MIN_HLEN || ip[0] >> 4 != 4)
        return PASS;
    unsigned long ihl = (ip[0] & 0x0f) * 4ul;
    uint8_t proto = ip[9];
    if (ihl < IPV4_MIN_HLEN || (proto != IP_PROTO_TCP && proto != IP_PROTO_UDP))
        return PASS;
    if (load_be16(ip + 6) & FRAGMENT_OFFSET)
        return PASS;
    if (len < ihl + 4)
        return PASS;
    uint32_t destination = load_be32(ip + 16);
    uint16_t port = load_be16(ip + ihl + 2);
    for (unsigned long i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        const struct rule *rule = &rules[i];
        if ((destination & rule->mask) == rule->address && proto == rule->proto && port == rule->port)
            return DROP;
    }
    return PASS;
}
