/*
 * <netinet/in.h> for BPF programs: Internet address types, protocol
 * numbers, well-known addresses, and htonl/htons/ntohl/ntohs, which compile
 * to one byte swap (or nothing on a big-endian target) and fold constants.
 * Part of qemu-ubpf's headers for the BPF target (see README in this
 * directory).
 *
 * It agrees with the kernel's <linux/in.h> and <linux/in6.h> in either
 * order: included first, it tells <linux/libc-compat.h> that the shared
 * definitions exist (as a C library's header does); included after them,
 * it leaves theirs in place.
 */
#ifndef QEMU_UBPF_BPF_NETINET_IN_H
#define QEMU_UBPF_BPF_NETINET_IN_H

#include <stdint.h>
#include <endian.h>

typedef uint32_t in_addr_t;
typedef uint16_t in_port_t;
typedef unsigned short sa_family_t;

#define htons(x) ((uint16_t)htobe16((uint16_t)(x)))
#define ntohs(x) ((uint16_t)be16toh((uint16_t)(x)))
#define htonl(x) ((uint32_t)htobe32((uint32_t)(x)))
#define ntohl(x) ((uint32_t)be32toh((uint32_t)(x)))

#define AF_INET 2
#define AF_INET6 10

#define INADDR_ANY ((in_addr_t)0x00000000)
#define INADDR_BROADCAST ((in_addr_t)0xffffffff)
#define INADDR_NONE ((in_addr_t)0xffffffff)
#define INADDR_LOOPBACK ((in_addr_t)0x7f000001)

#define INET_ADDRSTRLEN 16
#define INET6_ADDRSTRLEN 46

#ifndef _LINUX_IN_H
#define __UAPI_DEF_IN_ADDR 0
#define __UAPI_DEF_IN_IPPROTO 0
#define __UAPI_DEF_SOCKADDR_IN 0

struct in_addr {
    in_addr_t s_addr;
};

struct sockaddr_in {
    sa_family_t sin_family;
    in_port_t sin_port;
    struct in_addr sin_addr;
    unsigned char sin_zero[8];
};

#define IPPROTO_IP 0
#define IPPROTO_ICMP 1
#define IPPROTO_IGMP 2
#define IPPROTO_IPIP 4
#define IPPROTO_TCP 6
#define IPPROTO_EGP 8
#define IPPROTO_PUP 12
#define IPPROTO_UDP 17
#define IPPROTO_IDP 22
#define IPPROTO_TP 29
#define IPPROTO_DCCP 33
#define IPPROTO_IPV6 41
#define IPPROTO_RSVP 46
#define IPPROTO_GRE 47
#define IPPROTO_ESP 50
#define IPPROTO_AH 51
#define IPPROTO_MTP 92
#define IPPROTO_BEETPH 94
#define IPPROTO_ENCAP 98
#define IPPROTO_PIM 103
#define IPPROTO_COMP 108
#define IPPROTO_L2TP 115
#define IPPROTO_SCTP 132
#define IPPROTO_UDPLITE 136
#define IPPROTO_MPLS 137
#define IPPROTO_ETHERNET 143
#define IPPROTO_RAW 255
#define IPPROTO_MPTCP 262
#endif

#ifndef _LINUX_IN6_H
#define __UAPI_DEF_IN6_ADDR 0
#define __UAPI_DEF_IN6_ADDR_ALT 0
#define __UAPI_DEF_SOCKADDR_IN6 0
#define __UAPI_DEF_IPPROTO_V6 0

struct in6_addr {
    union {
        uint8_t s6_addr[16];
        uint16_t s6_addr16[8];
        uint32_t s6_addr32[4];
    } in6_u;
};
#define s6_addr in6_u.s6_addr
#define s6_addr16 in6_u.s6_addr16
#define s6_addr32 in6_u.s6_addr32

struct sockaddr_in6 {
    sa_family_t sin6_family;
    in_port_t sin6_port;
    uint32_t sin6_flowinfo;
    struct in6_addr sin6_addr;
    uint32_t sin6_scope_id;
};

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_ICMPV6 58
#define IPPROTO_NONE 59
#define IPPROTO_DSTOPTS 60
#define IPPROTO_MH 135
#endif

#endif
