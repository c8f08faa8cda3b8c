/*
 * ubpf_load_filter_expr: tcpdump expressions compiled by libpcap (loaded on
 * first use) and run over Ethernet frames, in the interpreter and the JIT;
 * libpcap's own message for an expression it refuses, also for a link type
 * (Linux SLL has no VLAN tags); the argument checks.
 *
 * Usage: filter_expr ROOT
 */
#include "common.h"

#define LINKTYPE_ETHERNET 1
#define LINKTYPE_LINUX_SLL 113

/* Runs every packet through the expression's program, in both engines;
 * a non-zero result is a match (tcpdump would print the frame). */
static void check_expression(const char *expr, struct packet *packets, size_t count)
{
    char *errmsg = NULL;
    struct ubpf_vm *vm = ubpf_create();
    CHECK(vm != NULL);
    int loaded = ubpf_load_filter_expr(vm, expr, LINKTYPE_ETHERNET, &errmsg);
    CHECK(loaded == 0);
    if (loaded != 0) {
        fprintf(stderr, "%s: %s\n", expr, errmsg ? errmsg : "no message");
        free(errmsg);
        ubpf_destroy(vm);
        return;
    }
    CHECK(errmsg == NULL);
    ubpf_jit_fn fn = ubpf_compile(vm, &errmsg);
    CHECK(fn != NULL);
    free(errmsg);
    errmsg = NULL;
    for (size_t i = 0; i < count; i++) {
        uint64_t interpreted = UINT64_MAX;
        CHECK(ubpf_exec(vm, packets[i].data, packets[i].len, &interpreted) == 0);
        uint64_t compiled = fn ? fn(packets[i].data, packets[i].len) : UINT64_MAX;
        uint64_t want = packets[i].expected;
        if ((interpreted != 0) != (want != 0) || (compiled != 0) != (want != 0)) {
            failures++;
            fprintf(stderr, "'%s' on %s: interpreter %llu, JIT %llu, want %s\n", expr, packets[i].name,
                    (unsigned long long)interpreted, (unsigned long long)compiled, want ? "a match" : "none");
        }
        checks++;
    }
    ubpf_destroy(vm);
}

/* The expression fails to load for `link_type` with `needle` in the message. */
static void check_refused(const char *expr, uint32_t link_type, const char *needle)
{
    char *errmsg = NULL;
    struct ubpf_vm *vm = ubpf_create();
    CHECK(ubpf_load_filter_expr(vm, expr, link_type, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, needle);
    ubpf_destroy(vm);
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc != 2) {
        fprintf(stderr, "usage: filter_expr ROOT\n");
        return 2;
    }
    struct packet packets[16];
    size_t count = 0, len;
    uint8_t buffer[160], ip[96];
    static const uint8_t arp[28] = {0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 1, 1, 1, 1};

    /* The RFC filter's selection: IPv4 packets to 1.1.1.1. */
    len = ip_frame(buffer, PROTO_UDP, OUTSIDE, ONES, 53);
    add(packets, &count, "udp to 1.1.1.1", buffer, len, DROP);
    len = ip_frame(buffer, PROTO_TCP, OUTSIDE, ONES, 443);
    add(packets, &count, "tcp to 1.1.1.1", buffer, len, DROP);
    len = ip_frame(buffer, PROTO_UDP, OUTSIDE, SERVER, 53);
    add(packets, &count, "udp to 172.16.0.1", buffer, len, PASS);
    len = ip_frame(buffer, PROTO_UDP, ONES, SERVER, 53);
    add(packets, &count, "udp from 1.1.1.1", buffer, len, PASS);
    len = ethernet(buffer, 0x0806, arp, sizeof arp);
    add(packets, &count, "arp from 1.1.1.1", buffer, len, PASS);
    len = ip_packet(ip, PROTO_UDP, OUTSIDE, ONES, 53);
    len = vlan(buffer, 5, 0x0800, ip, len);
    add(packets, &count, "udp to 1.1.1.1 in VLAN 5 (needs 'vlan and')", buffer, len, PASS);
    len = ip_frame(buffer, PROTO_UDP, OUTSIDE, ONES, 53);
    add(packets, &count, "udp to 1.1.1.1 cut before the address", buffer, 30, PASS);
    check_expression("dst host 1.1.1.1", packets, count);

    count = 0;
    len = ip_frame(buffer, PROTO_TCP, OUTSIDE, SERVER, 443);
    add(packets, &count, "tcp 443 from outside", buffer, len, DROP);
    len = ip_frame(buffer, PROTO_TCP, INSIDE, SERVER, 443);
    add(packets, &count, "tcp 443 from 10.1.2.3", buffer, len, PASS);
    len = ip_frame(buffer, PROTO_UDP, OUTSIDE, SERVER, 443);
    add(packets, &count, "udp 443 from outside", buffer, len, PASS);
    len = ip_frame(buffer, PROTO_TCP, OUTSIDE, SERVER, 80);
    add(packets, &count, "tcp 80 from outside", buffer, len, PASS);
    len = ip_packet(ip, PROTO_TCP, OUTSIDE, SERVER, 443);
    len = vlan(buffer, 5, 0x0800, ip, len);
    add(packets, &count, "tcp 443 from outside in VLAN 5", buffer, len, DROP);
    check_expression("vlan and tcp port 443 and not src net 10.0.0.0/8", packets + 4, 1);
    check_expression("tcp port 443 and not src net 10.0.0.0/8", packets, 4);

    /* Refusals carry libpcap's message. */
    check_refused("tcp port", LINKTYPE_ETHERNET, "syntax error");
    check_refused("vlan", LINKTYPE_LINUX_SLL, "no VLAN support");
    check_refused(NULL, LINKTYPE_ETHERNET, "expr is NULL");
    check_refused("ip", 999999, "link");

    /* A VM that holds a program takes no second one. */
    char *errmsg = NULL;
    struct ubpf_vm *vm = ubpf_create();
    CHECK(ubpf_load_filter_expr(vm, "ip", LINKTYPE_ETHERNET, &errmsg) == 0);
    CHECK(ubpf_load_filter_expr(vm, "ip", LINKTYPE_ETHERNET, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "already loaded");
    ubpf_destroy(vm);

    return finish("filter_expr");
}
