/*
 * Truncation, as a packet sampler does it: every frame longer than the snap
 * length is cut to it with bpf_xdp_adjust_tail, so that what goes on (to a
 * capture, to a collector) holds the headers and not the whole payload.
 * Shorter frames pass whole. The host sets the snap length in `settings`
 * (key 0, bytes; 0 means DEFAULT_SNAP_LEN); a length below the Ethernet
 * header's 14 bytes is taken as 14, the least the kernel lets a frame keep.
 *
 * Run it:
 *   qemu-ubpf replay examples/xdp/truncate.o CAPTURE --pass sampled.pcap
 *   qemu-ubpf replay examples/xdp/truncate.o CAPTURE --pass sampled.pcap \
 *       --map-init examples/xdp/truncate.json      (a snap length of 64)
 *   xdp-loader load DEV examples/xdp/truncate.o   (attached in the Linux kernel)
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#define DEFAULT_SNAP_LEN 128

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} settings SEC(".maps");

SEC("xdp")
int xdp_truncate(struct xdp_md *ctx)
{
    __u32 key = 0;
    __u32 *configured = bpf_map_lookup_elem(&settings, &key);
    __u32 snap_len = configured && *configured ? *configured : DEFAULT_SNAP_LEN;

    if (snap_len < ETH_HLEN)
        snap_len = ETH_HLEN;

    __u32 len = ctx->data_end - ctx->data;
    if (len <= snap_len)
        return XDP_PASS;
    /* A negative delta shrinks the frame from its end. */
    if (bpf_xdp_adjust_tail(ctx, -(int)(len - snap_len)))
        return XDP_ABORTED;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
