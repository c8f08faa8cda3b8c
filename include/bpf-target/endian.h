/*
 * <endian.h> for BPF programs: byte-order macros and conversions, as
 * constant expressions where the argument is one. Part of qemu-ubpf's
 * headers for the BPF target (see README in this directory).
 */
#ifndef QEMU_UBPF_BPF_ENDIAN_H
#define QEMU_UBPF_BPF_ENDIAN_H

#define LITTLE_ENDIAN __ORDER_LITTLE_ENDIAN__
#define BIG_ENDIAN __ORDER_BIG_ENDIAN__
#define BYTE_ORDER __BYTE_ORDER__

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define htobe16(x) __builtin_bswap16(x)
#define htobe32(x) __builtin_bswap32(x)
#define htobe64(x) __builtin_bswap64(x)
#define htole16(x) ((__UINT16_TYPE__)(x))
#define htole32(x) ((__UINT32_TYPE__)(x))
#define htole64(x) ((__UINT64_TYPE__)(x))
#else
#define htobe16(x) ((__UINT16_TYPE__)(x))
#define htobe32(x) ((__UINT32_TYPE__)(x))
#define htobe64(x) ((__UINT64_TYPE__)(x))
#define htole16(x) __builtin_bswap16(x)
#define htole32(x) __builtin_bswap32(x)
#define htole64(x) __builtin_bswap64(x)
#endif

#define be16toh(x) htobe16(x)
#define be32toh(x) htobe32(x)
#define be64toh(x) htobe64(x)
#define le16toh(x) htole16(x)
#define le32toh(x) htole32(x)
#define le64toh(x) htole64(x)

#endif
