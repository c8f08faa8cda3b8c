/*
 * A DNS classifier: drops DNS queries for the names of a small blocklist,
 * over IPv4 packets as QEMU's filter-ubpf shows them with ip-mode=on: r1 =
 * the IPv4 header, r2 = the captured length from there. A non-zero result
 * means DROP, zero PASS.
 *
 * Dropped: a UDP datagram to port 53 that holds a DNS query (QR bit clear)
 * whose first question asks for one of these names, exactly (not their
 * subdomains), in any ASCII letter case:
 *
 *   ads.example.net   tracker.example.org   malware.test
 *
 * Passed: everything else: answers, other names, DNS over TCP, fragments
 * other than the first, packets cut off (by a snapshot length) before the
 * end of the name, and headers that are not IPv4 with IHL >= 5.
 *
 * Names are compared in wire format (length-prefixed labels, then a zero
 * byte); each character with bit 0x20 set, which folds ASCII case. The same
 * packets, as a tcpdump expression (Ethernet captures: E or (vlan and E), as
 * ip-mode skips one VLAN tag):
 *
 *   ip[0] & 0xf0 = 0x40 and ip[0] & 0x0f >= 5 and udp dst port 53
 *   and udp[10] & 0x80 = 0 and (NAME(ads.example.net) or ...)
 *
 * where NAME compares the name from udp[20] on, four bytes at a time, with
 * 0x20 or-ed into the character bytes; for ads.example.net:
 *
 *   udp[20:4] | 0x00202020 = 0x03616473 and udp[24:4] | 0x00202020 = 0x07657861
 *   and udp[28:4] | 0x20202020 = 0x6d706c65 and udp[32:4] | 0x00202020 = 0x036e6574
 *   and udp[36] = 0
 *
 * Every read is checked against len first, so no packet, however short,
 * makes the program fault.
 */

#include <stdint.h>

#define PASS 0
#define DROP 1

#define IPV4_MIN_HLEN 20
#define IP_PROTO_UDP 17
#define FRAGMENT_OFFSET 0x1fff
#define DNS_PORT 53
#define UDP_HLEN 8
#define DNS_HLEN 12
#define DNS_FLAG_RESPONSE 0x80
#define CASE_BIT 0x20

/* Room for the longest name of the list, in wire format. */
#define MAX_NAME_LEN 24

/* A name in wire format, lower case, with its terminating zero byte (the
 * literal's own NUL, which sizeof counts). The names are stored inline, not
 * as pointers: the loader relocates code, not data. */
struct name {
    uint8_t len;
    uint8_t wire[MAX_NAME_LEN];
};

#define NAME(wire) {sizeof(wire), wire}

static const struct name blocklist[] = {
    NAME("\x03" "ads" "\x07" "example" "\x03" "net"),
    NAME("\x07" "tracker" "\x07" "example" "\x03" "org"),
    NAME("\x07" "malware" "\x04" "test"),
};

static uint16_t load_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* Does the name at `qname` (with `room` bytes captured from there) equal
 * `name`? Label lengths compare exactly, characters with CASE_BIT set. */
static int name_matches(const uint8_t *qname, unsigned long room, const struct name *name)
{
    if (room < name->len)
        return 0;
    unsigned long next_label = 0;
    for (unsigned long i = 0; i < name->len; i++) {
        uint8_t byte = qname[i];
        if (i == next_label)
            next_label += name->wire[i] + 1ul;
        else
            byte |= CASE_BIT;
        if (byte != name->wire[i])
            return 0;
    }
    return 1;
}

int filter(const uint8_t *ip, unsigned long len)
{
    if (len < IPV4_MIN_HLEN || ip[0] >> 4 != 4)
        return PASS;
    unsigned long ihl = (ip[0] & 0x0f) * 4ul;
    if (ihl < IPV4_MIN_HLEN || ip[9] != IP_PROTO_UDP || load_be16(ip + 6) & FRAGMENT_OFFSET)
        return PASS;
    if (len < ihl + 4 || load_be16(ip + ihl + 2) != DNS_PORT)
        return PASS;
    unsigned long dns = ihl + UDP_HLEN;
    if (len < dns + 3 || ip[dns + 2] & DNS_FLAG_RESPONSE)
        return PASS;
    unsigned long qname = dns + DNS_HLEN;
    if (len < qname)
        return PASS;
    for (unsigned long i = 0; i < sizeof(blocklist) / sizeof(blocklist[0]); i++)
        if (name_matches(ip + qname, len - qname, &blocklist[i]))
            return DROP;
    return PASS;
}
