/*
 * A redirect by destination MAC address, as a small switch that does not
 * learn addresses: the host lists the MAC addresses it knows in `mac_ports` (address -> port
 * number) and the device of each port in the devmap `ports` (port number ->
 * ifindex). A frame to a listed address leaves through its port's device
 * with bpf_redirect_map; one to an address not listed, or to a port whose
 * devmap slot is empty, passes to the host's stack instead (the flags
 * argument XDP_PASS is what bpf_redirect_map returns for an empty slot).
 * Frames too short for an Ethernet header pass.
 *
 * Fill the maps, then run it. examples/xdp/redirect.json puts
 * 02:00:00:00:00:02 on port 1, ifindex 1, and 02:00:00:00:00:03 on port 2,
 * whose slot it leaves empty:
 *   qemu-ubpf replay examples/xdp/redirect.o CAPTURE --map-init examples/xdp/redirect.json \
 *       --redirect out.pcapng --pass rest.pcap   (out.pcapng names each frame's ifindex)
 *   xdp-loader load DEV examples/xdp/redirect.o    (attached in the Linux kernel)
 *   bpftool map update name mac_ports key hex 02 00 00 00 00 02 00 00 value hex 01 00 00 00
 *   bpftool map update name ports key hex 01 00 00 00 value hex IFINDEX 00 00 00
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#define PORTS 16

struct mac_key {
    __u8 addr[ETH_ALEN];
    __u16 pad; /* zero */
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, struct mac_key);
    __type(value, __u32);
} mac_ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, PORTS);
    __type(key, __u32);
    __type(value, __u32);
} ports SEC(".maps");

SEC("xdp")
int xdp_redirect_by_mac(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;

    struct mac_key key = {};
    __builtin_memcpy(key.addr, eth->h_dest, ETH_ALEN);
    __u32 *port = bpf_map_lookup_elem(&mac_ports, &key);
    if (!port)
        return XDP_PASS;
    return bpf_redirect_map(&ports, *port, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
