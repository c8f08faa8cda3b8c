/*
 * <arpa/inet.h> for BPF programs: what it offers that means something
 * without a C library, the byte-order conversions and the address types of
 * <netinet/in.h>. The address parsers and printers (inet_pton, inet_ntoa,
 * ...) need a C library and are left out. Part of qemu-ubpf's headers for
 * the BPF target (see README in this directory).
 */
#ifndef QEMU_UBPF_BPF_ARPA_INET_H
#define QEMU_UBPF_BPF_ARPA_INET_H

#include <netinet/in.h>

#endif
