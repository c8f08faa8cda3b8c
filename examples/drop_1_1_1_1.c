/*
 * Drops IPv4 packets sent to 1.1.1.1 and passes everything else.
 *
 * The program sees the packet from its IPv4 header on (no Ethernet header):
 * r1 = the packet, r2 = its length. A non-zero result means DROP, zero PASS.
 * Packets too short for an IPv4 header, or of another IP version, pass.
 */

#include <stdint.h>

#define PASS 0
#define DROP 1

int filter(const uint8_t *ip, unsigned long len)
{
    if (len < 20 || ip[0] >> 4 != 4)
        return PASS;
    /* The destination address, bytes 16..19, in network order. */
    if (ip[16] == 1 && ip[17] == 1 && ip[18] == 1 && ip[19] == 1)
        return DROP;
    return PASS;
}
