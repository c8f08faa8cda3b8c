/*
 * A dispatcher by protocol through tail calls: the entry program jumps to
 * the handler for the packet's IPv4 protocol, found in a prog array filled
 * statically below. Protocols without a handler pass. The handlers:
 *   TCP  drops telnet (destination port 23),
 *   UDP  passes everything,
 *   ICMP drops echo requests (type 8),
 * each counting what it saw in an array, and every drop is reported to the
 * host through a ring buffer (protocol and destination address).
 *
 * The entry is "dispatch" (replay --program dispatch; ubpf_load_elf_ex()
 * with "dispatch"): clang places the handlers' sections first. The program
 * sees the packet from its IPv4 header on (ip-mode=on).
 *
 * Try it: qemu-ubpf replay examples/dispatcher.o CAPTURE --program dispatch --maps
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PASS 0
#define DROP 1

#define IP_PROTO_ICMP 1
#define IP_PROTO_TCP 6
#define IP_PROTO_UDP 17

struct drop_event {
    __u32 protocol;
    __u8 destination[4];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u64);
} handled SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} drop_events SEC(".maps");

int handle_tcp(const __u8 *ip, unsigned long len);
int handle_udp(const __u8 *ip, unsigned long len);
int handle_icmp(const __u8 *ip, unsigned long len);

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 256);
    __type(key, __u32);
    __array(values, int(const __u8 *, unsigned long));
} handlers SEC(".maps") = {
    .values =
        {
            [IP_PROTO_ICMP] = (void *)&handle_icmp,
            [IP_PROTO_TCP] = (void *)&handle_tcp,
            [IP_PROTO_UDP] = (void *)&handle_udp,
        },
};

SEC("filter")
int dispatch(const __u8 *ip, unsigned long len)
{
    if (len < 20 || ip[0] >> 4 != 4)
        return PASS;
    bpf_tail_call((void *)ip, &handlers, ip[9]);
    /* No handler for this protocol. */
    return PASS;
}

static void count(__u32 protocol)
{
    __u64 *seen = bpf_map_lookup_elem(&handled, &protocol);
    if (seen)
        __sync_fetch_and_add(seen, 1);
}

static int drop(const __u8 *ip)
{
    struct drop_event *event = bpf_ringbuf_reserve(&drop_events, sizeof(*event), 0);
    if (event) {
        event->protocol = ip[9];
        __builtin_memcpy(event->destination, ip + 16, 4);
        bpf_ringbuf_submit(event, 0);
    }
    return DROP;
}

/* The transport header, if the packet has all of its first `need` bytes. */
static const __u8 *transport(const __u8 *ip, unsigned long len, unsigned long need)
{
    unsigned long header_len = (ip[0] & 0x0f) * 4;
    if (header_len < 20 || ((ip[6] & 0x1f) | ip[7]) != 0 || len < header_len + need)
        return 0;
    return ip + header_len;
}

SEC("filter/tcp")
int handle_tcp(const __u8 *ip, unsigned long len)
{
    count(IP_PROTO_TCP);
    const __u8 *tcp = transport(ip, len, 4);
    if (tcp && tcp[2] == 0 && tcp[3] == 23)
        return drop(ip);
    return PASS;
}

SEC("filter/udp")
int handle_udp(const __u8 *ip __attribute__((unused)), unsigned long len __attribute__((unused)))
{
    count(IP_PROTO_UDP);
    return PASS;
}

SEC("filter/icmp")
int handle_icmp(const __u8 *ip, unsigned long len)
{
    count(IP_PROTO_ICMP);
    const __u8 *icmp = transport(ip, len, 1);
    if (icmp && icmp[0] == 8)
        return drop(ip);
    return PASS;
}

char LICENSE[] SEC("license") = "GPL";
