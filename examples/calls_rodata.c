/*
 * Blocks well-known ports listed in a read-only table, through bpf-to-bpf
 * calls, and counts the packets it sees in a global.
 *
 * Input: a whole Ethernet frame (no VLAN tag), r1 = the frame, r2 = its
 * length. A non-zero result means DROP, zero PASS. The rules:
 *
 *   - Every call adds one to packets_seen (.bss).
 *   - While blocking_enabled (.data, initially 1) is zero, everything passes.
 *   - IPv4 TCP or UDP to a destination port in blocked_ports (.rodata: 23,
 *     69, 135, 137, 138, 139, 445, 514) is dropped.
 *   - Everything else passes, including frames too short to hold the ports.
 *
 * Layout, to exercise the loader's linking: filter and dst_port share the
 * section "filter/ports"; port_is_blocked and bit_is_set are static functions
 * in .text, so filter calls across sections, two levels deep.
 */

#include <stdint.h>

#define PASS 0
#define DROP 1
#define NO_PORT -1

uint64_t packets_seen;
uint32_t blocking_enabled = 1;

/* One bit per port below 1024; a bitmap keeps clang from folding the table
 * into compares, so it stays in .rodata. */
#define BIT(port) (1 << (port) % 8)
static const uint8_t blocked_ports[1024 / 8] = {
    [23 / 8] = BIT(23),
    [69 / 8] = BIT(69),
    [135 / 8] = BIT(135),
    [137 / 8] = BIT(137) | BIT(138) | BIT(139),
    [445 / 8] = BIT(445),
    [514 / 8] = BIT(514),
};

static __attribute__((noinline)) int bit_is_set(const uint8_t *bitmap, unsigned long bit)
{
    return bitmap[bit / 8] >> (bit % 8) & 1;
}

static __attribute__((noinline)) int port_is_blocked(long port)
{
    if (port < 0 || port >= 1024)
        return 0;
    return bit_is_set(blocked_ports, (unsigned long)port);
}

/* The TCP or UDP destination port of an IPv4 frame, or NO_PORT. */
static __attribute__((noinline, section("filter/ports"))) long dst_port(const uint8_t *frame, unsigned long len)
{
    if (len < 14 + 20 || frame[12] != 0x08 || frame[13] != 0x00)
        return NO_PORT;
    const uint8_t *ip = frame + 14;
    if (ip[9] != 6 && ip[9] != 17)
        return NO_PORT;
    unsigned long l4 = 14 + (ip[0] & 0x0f) * 4ul;
    if (len < l4 + 4)
        return NO_PORT;
    return frame[l4 + 2] << 8 | frame[l4 + 3];
}

__attribute__((section("filter/ports"))) int filter(const uint8_t *frame, unsigned long len)
{
    packets_seen++;
    if (!blocking_enabled)
        return PASS;
    return port_is_blocked(dst_port(frame, len)) ? DROP : PASS;
}
