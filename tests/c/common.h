/*
 * Shared by the C tests of libqemu-ubpf: checks, files, packets, bytecode.
 * Every test program takes the repository root as its first argument.
 */
#ifndef QEMU_UBPF_TEST_COMMON_H
#define QEMU_UBPF_TEST_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ubpf.h>

/* Not every test uses every helper of this file. */
#define UNUSED __attribute__((unused))

UNUSED static int checks;
UNUSED static int failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

/* Checks that a call failed with a message, and frees the message. */
#define CHECK_ERRMSG(errmsg, needle)                                         \
    do {                                                                     \
        checks++;                                                            \
        if ((errmsg) == NULL || strstr((errmsg), (needle)) == NULL) {        \
            failures++;                                                      \
            fprintf(stderr, "%s:%d: expected a message with \"%s\", got %s\n", \
                    __FILE__, __LINE__, (needle),                            \
                    (errmsg) ? (errmsg) : "NULL");                           \
        }                                                                    \
        free(errmsg);                                                        \
        (errmsg) = NULL;                                                     \
    } while (0)

UNUSED static int finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, checks, failures);
    return failures == 0 ? 0 : 1;
}

/* Reads a whole file into memory from malloc; exits when it cannot. */
UNUSED static void *read_file(const char *root, const char *relative, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, relative);
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        perror(path);
        exit(2);
    }
    size_t capacity = 4096, used = 0;
    unsigned char *data = malloc(capacity);
    size_t got;
    while (data != NULL && (got = fread(data + used, 1, capacity - used, file)) > 0) {
        used += got;
        if (used == capacity) {
            unsigned char *bigger = realloc(data, capacity *= 2);
            if (bigger == NULL) {
                free(data);
                data = NULL;
            }
            data = bigger;
        }
    }
    fclose(file);
    if (data == NULL) {
        fprintf(stderr, "out of memory reading %s\n", path);
        exit(2);
    }
    *len = used;
    return data;
}

/* ---- bytecode ---------------------------------------------------------- */

#define INSN(opc, dst, src, off, imm)                                 \
    ((uint64_t)(opc) | (uint64_t)((dst) | (src) << 4) << 8 |          \
     (uint64_t)(uint16_t)(int16_t)(off) << 16 |                       \
     (uint64_t)(uint32_t)(int32_t)(imm) << 32)

#define OP_ADD64_IMM 0x07
#define OP_ADD64_REG 0x0f
#define OP_JA 0x05
#define OP_JEQ_IMM 0x15
#define OP_LDXB 0x71
#define OP_LDXDW 0x79
#define OP_STB 0x72
#define OP_STXDW 0x7b
#define OP_MOV64_IMM 0xb7
#define OP_MOV64_REG 0xbf
#define OP_CALL 0x85
#define OP_EXIT 0x95

/* ---- packets ----------------------------------------------------------- */

#define PASS 0
#define DROP 1

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17

struct packet {
    const char *name;
    uint8_t data[160];
    size_t len;
    uint64_t expected;
};

UNUSED static size_t put(uint8_t *out, const void *bytes, size_t len)
{
    memcpy(out, bytes, len);
    return len;
}

UNUSED static size_t put16(uint8_t *out, uint16_t value)
{
    out[0] = (uint8_t)(value >> 8);
    out[1] = (uint8_t)value;
    return 2;
}

/* An IPv4 header with `options` (a multiple of 4 bytes), then `payload`. */
UNUSED static size_t ipv4(uint8_t *out, uint8_t proto, const uint8_t src[4], const uint8_t dst[4],
                   const uint8_t *options, size_t options_len, uint16_t flags_fragment,
                   const uint8_t *payload, size_t payload_len)
{
    size_t header_len = 20 + options_len;
    size_t n = 0;
    out[n++] = (uint8_t)(0x40 | header_len / 4);
    out[n++] = 0;
    n += put16(out + n, (uint16_t)(header_len + payload_len));
    n += put16(out + n, 0x1234);
    n += put16(out + n, flags_fragment);
    out[n++] = 64;
    out[n++] = proto;
    n += put16(out + n, 0);
    n += put(out + n, src, 4);
    n += put(out + n, dst, 4);
    if (options_len) {
        n += put(out + n, options, options_len);
    }
    if (payload_len) {
        n += put(out + n, payload, payload_len);
    }
    return n;
}

/* The start of a TCP header (20 bytes) or a UDP header (8 bytes). */
UNUSED static size_t l4(uint8_t *out, uint8_t proto, uint16_t src_port, uint16_t dst_port)
{
    size_t n = put16(out, src_port);
    n += put16(out + n, dst_port);
    size_t rest = proto == PROTO_TCP ? 16 : 4;
    memset(out + n, 0, rest);
    if (proto == PROTO_TCP) {
        out[n + 8] = 0x50;
        out[n + 9] = 0x02;
    } else {
        out[n + 1] = 8;
    }
    return n + rest;
}

UNUSED static const uint8_t MACS[12] = {2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};

UNUSED static size_t ethernet(uint8_t *out, uint16_t ethertype, const uint8_t *payload, size_t len)
{
    size_t n = put(out, MACS, sizeof MACS);
    n += put16(out + n, ethertype);
    return n + put(out + n, payload, len);
}

UNUSED static size_t vlan(uint8_t *out, uint16_t vid, uint16_t ethertype, const uint8_t *payload, size_t len)
{
    size_t n = put(out, MACS, sizeof MACS);
    n += put16(out + n, 0x8100);
    n += put16(out + n, vid);
    n += put16(out + n, ethertype);
    return n + put(out + n, payload, len);
}

/* An IPv4 packet (no Ethernet header) of `proto` from `src` to `dst` with a
 * TCP or UDP header to `dst_port` (none for other protocols). */
UNUSED static size_t ip_packet(uint8_t *out, uint8_t proto, const uint8_t src[4], const uint8_t dst[4],
                        uint16_t dst_port)
{
    uint8_t header[20];
    size_t header_len = 0;
    if (proto == PROTO_TCP || proto == PROTO_UDP) {
        header_len = l4(header, proto, 40000, dst_port);
    }
    return ipv4(out, proto, src, dst, NULL, 0, 0, header, header_len);
}

/* The same inside an Ethernet frame. */
UNUSED static size_t ip_frame(uint8_t *out, uint8_t proto, const uint8_t src[4], const uint8_t dst[4],
                       uint16_t dst_port)
{
    uint8_t ip[64];
    size_t len = ip_packet(ip, proto, src, dst, dst_port);
    return ethernet(out, 0x0800, ip, len);
}

UNUSED static const uint8_t OUTSIDE[4] = {192, 168, 1, 1};
UNUSED static const uint8_t INSIDE[4] = {10, 1, 2, 3};
UNUSED static const uint8_t SERVER[4] = {172, 16, 0, 1};
UNUSED static const uint8_t ONES[4] = {1, 1, 1, 1};

UNUSED static void add(struct packet *packets, size_t *count, const char *name, const uint8_t *data,
                size_t len, uint64_t expected)
{
    struct packet *packet = &packets[(*count)++];
    packet->name = name;
    memcpy(packet->data, data, len);
    packet->len = len;
    packet->expected = expected;
}

/* Packets for examples/drop_1_1_1_1.o: from the IPv4 header on. */
UNUSED static size_t drop_1_1_1_1_packets(struct packet *packets)
{
    size_t count = 0, len;
    uint8_t buffer[160];
    len = ip_packet(buffer, PROTO_UDP, OUTSIDE, ONES, 53);
    add(packets, &count, "udp to 1.1.1.1", buffer, len, DROP);
    len = ip_packet(buffer, PROTO_TCP, OUTSIDE, ONES, 443);
    add(packets, &count, "tcp to 1.1.1.1", buffer, len, DROP);
    len = ip_packet(buffer, PROTO_ICMP, OUTSIDE, ONES, 0);
    add(packets, &count, "icmp to 1.1.1.1, header only", buffer, len, DROP);
    len = ip_packet(buffer, PROTO_UDP, OUTSIDE, SERVER, 53);
    add(packets, &count, "udp to 172.16.0.1", buffer, len, PASS);
    len = ip_packet(buffer, PROTO_UDP, ONES, SERVER, 53);
    add(packets, &count, "udp from 1.1.1.1", buffer, len, PASS);
    len = ip_packet(buffer, PROTO_UDP, OUTSIDE, ONES, 53);
    add(packets, &count, "cut to 19 bytes", buffer, 19, PASS);
    add(packets, &count, "empty", buffer, 0, PASS);
    buffer[0] = 0x65;
    add(packets, &count, "version 6", buffer, len, PASS);
    return count;
}

/* Frames for examples/classifier.o, one or more per rule. */
UNUSED static size_t classifier_packets(struct packet *packets)
{
    size_t count = 0, len;
    uint8_t buffer[160], ip[96], l4_header[20];
    static const uint8_t arp[28] = {0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1};
    static const uint8_t options[8] = {1, 1, 1, 0, 0x94, 4, 0, 0};

    len = ethernet(buffer, 0x0806, arp, sizeof arp);
    add(packets, &count, "arp", buffer, len, PASS);
    len = ip_frame(buffer, PROTO_TCP, OUTSIDE, SERVER, 23);
    add(packets, &count, "short frame", buffer, 13, PASS);
    add(packets, &count, "telnet", buffer, len, DROP);
    add(packets, &count, "telnet cut in its ip header", buffer, 14 + 19, DROP);
    add(packets, &count, "telnet cut before its ports", buffer, 14 + 20 + 3, DROP);
    len = ip_frame(buffer, PROTO_TCP, OUTSIDE, SERVER, 22);
    add(packets, &count, "ssh", buffer, len, PASS);
    len = ip_frame(buffer, PROTO_UDP, OUTSIDE, SERVER, 53);
    add(packets, &count, "dns from outside", buffer, len, DROP);
    len = ip_frame(buffer, PROTO_UDP, INSIDE, SERVER, 53);
    add(packets, &count, "dns from 10/8", buffer, len, PASS);
    len = ip_frame(buffer, PROTO_ICMP, OUTSIDE, SERVER, 0);
    add(packets, &count, "icmp", buffer, len, PASS);
    size_t l4_len = l4(l4_header, PROTO_TCP, 40000, 23);
    len = ipv4(ip, PROTO_TCP, OUTSIDE, SERVER, options, sizeof options, 0, l4_header, l4_len);
    size_t frame_len = vlan(buffer, 7, 0x0800, ip, len);
    add(packets, &count, "telnet, vlan, ip options", buffer, frame_len, DROP);
    len = ipv4(ip, PROTO_TCP, OUTSIDE, SERVER, NULL, 0, 0x0010, l4_header, l4_len);
    frame_len = ethernet(buffer, 0x0800, ip, len);
    add(packets, &count, "telnet, a later fragment", buffer, frame_len, PASS);
    len = ip_frame(buffer, PROTO_TCP, OUTSIDE, SERVER, 23);
    buffer[14] = 0x55;
    add(packets, &count, "ip version 5", buffer, len, DROP);
    return count;
}

/* Frames for examples/calls_rodata.o: blocked ports are dropped. */
UNUSED static size_t calls_rodata_packets(struct packet *packets)
{
    static const uint16_t blocked[] = {23, 69, 135, 137, 138, 139, 445, 514};
    static const uint16_t open[] = {22, 53, 80, 136, 140, 443, 513, 1023, 1024, 65535};
    static const char *const blocked_names[] = {"port 23", "port 69", "port 135", "port 137",
                                                "port 138", "port 139", "port 445", "port 514"};
    static const char *const open_names[] = {"port 22", "port 53", "port 80", "port 136",
                                             "port 140", "port 443", "port 513", "port 1023",
                                             "port 1024", "port 65535"};
    size_t count = 0, len;
    uint8_t buffer[160];
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++) {
        len = ip_frame(buffer, i % 2 ? PROTO_UDP : PROTO_TCP, OUTSIDE, SERVER, blocked[i]);
        add(packets, &count, blocked_names[i], buffer, len, DROP);
    }
    for (size_t i = 0; i < sizeof open / sizeof open[0]; i++) {
        len = ip_frame(buffer, i % 2 ? PROTO_UDP : PROTO_TCP, OUTSIDE, SERVER, open[i]);
        add(packets, &count, open_names[i], buffer, len, PASS);
    }
    len = ip_frame(buffer, PROTO_TCP, OUTSIDE, SERVER, 23);
    add(packets, &count, "port 23 cut before its ports", buffer, 14 + 20 + 2, PASS);
    return count;
}

/* ---- error messages ------------------------------------------------------ */

/* An error_printf for ubpf_set_error_print() that keeps the last message. */
UNUSED static char printed[1024];
UNUSED static int printed_count;

UNUSED static int capture_error(FILE *stream, const char *format, ...)
{
    (void)stream;
    va_list args;
    va_start(args, format);
    int n = vsnprintf(printed, sizeof printed, format, args);
    va_end(args);
    printed_count++;
    return n;
}

#endif
