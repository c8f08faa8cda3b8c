/*
 * The packets of benches/common/mod.rs, built in C: a DNS query, a
 * VLAN-tagged TCP SYN, IPv4 with options, mDNS; and 1500 bytes for the
 * checksum.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct packet {
    uint8_t bytes[1600];
    size_t len;
};

static void put(struct packet *p, const void *bytes, size_t len)
{
    memcpy(p->bytes + p->len, bytes, len);
    p->len += len;
}

static void put16(struct packet *p, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(p, b, 2);
}

static void ethernet(struct packet *p, int vlan)
{
    static const uint8_t macs[12] = {0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef};
    p->len = 0;
    put(p, macs, sizeof(macs));
    if (vlan >= 0) {
        put16(p, 0x8100);
        put16(p, (uint16_t)vlan);
    }
    put16(p, 0x0800);
}

/* An IPv4 header; the caller appends `payload_len` bytes of payload. */
static void ipv4(struct packet *p, uint8_t proto, const uint8_t src[4], const uint8_t dst[4], const uint8_t *options,
                 size_t options_len, size_t payload_len)
{
    size_t header_len = 20 + options_len;
    uint8_t head[2] = {(uint8_t)(0x40 | header_len / 4), 0};
    put(p, head, 2);
    put16(p, (uint16_t)(header_len + payload_len));
    uint8_t rest[8] = {0, 1, 0x40, 0, 64, proto, 0, 0};
    put(p, rest, 8);
    put(p, src, 4);
    put(p, dst, 4);
    put(p, options, options_len);
}

static void udp(struct packet *p, uint16_t sport, uint16_t dport, const uint8_t *payload, size_t len)
{
    put16(p, sport);
    put16(p, dport);
    put16(p, (uint16_t)(8 + len));
    put16(p, 0);
    put(p, payload, len);
}

static int packet_mix(struct packet out[4])
{
    static const uint8_t query[] = "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07"
                                   "example\x03"
                                   "com\x00\x00\x01\x00\x01";
    const size_t qlen = sizeof(query) - 1;
    static const uint8_t opts[4] = {0x94, 4, 0, 0};
    static const uint8_t syn[16] = {0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0};

    ethernet(&out[0], -1);
    ipv4(&out[0], 17, (const uint8_t[]){10, 0, 0, 2}, (const uint8_t[]){9, 9, 9, 9}, NULL, 0, 8 + qlen);
    udp(&out[0], 40000, 53, query, qlen);

    ethernet(&out[1], 42);
    ipv4(&out[1], 6, (const uint8_t[]){192, 168, 1, 5}, (const uint8_t[]){10, 1, 2, 3}, NULL, 0, 20);
    put16(&out[1], 51000);
    put16(&out[1], 443);
    put(&out[1], syn, sizeof(syn));

    ethernet(&out[2], -1);
    ipv4(&out[2], 17, (const uint8_t[]){10, 0, 0, 7}, (const uint8_t[]){10, 0, 0, 1}, opts, 4, 12);
    udp(&out[2], 1234, 5678, (const uint8_t *)"data", 4);

    ethernet(&out[3], -1);
    ipv4(&out[3], 17, (const uint8_t[]){10, 0, 0, 9}, (const uint8_t[]){224, 0, 0, 251}, NULL, 0, 8 + qlen);
    udp(&out[3], 5353, 5353, query, qlen);
    return 4;
}

static void packet_1500(struct packet *p)
{
    p->len = 1500;
    for (size_t i = 0; i < p->len; i++)
        p->bytes[i] = (uint8_t)(i * 7 + 3);
}
