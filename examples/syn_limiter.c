/*
 * A SYN flood limiter: each IPv4 source may open at most 3 TCP connections
 * (SYN without ACK) per second; further SYNs within that second are dropped.
 * A hash keyed by source holds the start of its current one-second window
 * (bpf_ktime_get_ns; replay gives each packet's capture time) and the SYNs
 * seen in it. Everything else passes.
 *
 * The program sees the packet from its IPv4 header on (ip-mode=on).
 *
 * Try it: qemu-ubpf replay examples/syn_limiter.o CAPTURE --maps
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PASS 0
#define DROP 1

#define IP_PROTO_TCP 6
#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define WINDOW_NS 1000000000ull
#define MAX_SYNS 3

struct window {
    __u64 start_ns;
    __u64 syns;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32); /* the source address, in network order */
    __type(value, struct window);
} syn_windows SEC(".maps");

SEC("filter")
int syn_limiter(const __u8 *ip, unsigned long len)
{
    if (len < 20 || ip[0] >> 4 != 4 || ip[9] != IP_PROTO_TCP)
        return PASS;
    unsigned long header_len = (ip[0] & 0x0f) * 4;
    /* Only the first fragment has the TCP header. */
    if (header_len < 20 || ((ip[6] & 0x1f) | ip[7]) != 0 || len < header_len + 14)
        return PASS;
    __u8 flags = ip[header_len + 13];
    if ((flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
        return PASS;

    __u32 source;
    __builtin_memcpy(&source, ip + 12, sizeof(source));
    __u64 now = bpf_ktime_get_ns();
    struct window *window = bpf_map_lookup_elem(&syn_windows, &source);
    if (!window || now - window->start_ns >= WINDOW_NS) {
        struct window fresh = {now, 1};
        bpf_map_update_elem(&syn_windows, &source, &fresh, BPF_ANY);
        return PASS;
    }
    if (__sync_add_and_fetch(&window->syns, 1) > MAX_SYNS)
        return DROP;
    return PASS;
}

char LICENSE[] SEC("license") = "GPL";
