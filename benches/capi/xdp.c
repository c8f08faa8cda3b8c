/*
 * Times an XDP program through qemu-ubpf's C API as an embedder runs it:
 * ubpf_set_program_type(UBPF_PROGRAM_TYPE_XDP), ubpf_load_elf(),
 * ubpf_compile(), then the returned function called from C over a buffer
 * that starts with a struct ubpf_xdp_context (test_run's layout:
 * UBPF_XDP_BUFFER_SIZE bytes, the frame after UBPF_XDP_HEADROOM bytes of
 * headroom). Memory checks are on, as always. As under BPF_PROG_TEST_RUN's
 * repeat, the frame is copied in and the context filled once per frame,
 * and each run clears only the redirect: a program that rewrites the frame
 * sees its own output from its second run on, and one that moves the
 * packet's pointers (truncate, vlan_pop) sees them where the run before
 * left them, so both sides do the same work.
 *
 *   xdp OBJECT MAPS FRAME.bin...
 *
 * MAPS is "-" or NAME=KEYHEX:VALUEHEX,... (a value given once fills every
 * CPU of a per-CPU map, as bpftool's map update does). For each frame it
 * prints "FRAME RETVAL NS": r0 of the last run (bpftool reports the last of
 * its repeats), and ns per call, the fastest of BATCHES batches of CALLS
 * calls timed by the thread's CPU time; then "mean NS" over the frames.
 */

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ubpf.h>

#include "harness.h"

#define BATCHES 15
#define CALLS 200000

static size_t unhex(const char *hex, uint8_t *out, size_t capacity)
{
    size_t len = strlen(hex) / 2;
    for (size_t i = 0; i < len && i < capacity; i++) {
        unsigned byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) {
            fprintf(stderr, "bad hex: %s\n", hex);
            exit(2);
        }
        out[i] = (uint8_t)byte;
    }
    return len < capacity ? len : capacity;
}

static void fill_maps(struct ubpf_vm *vm, char *maps)
{
    if (strcmp(maps, "-") == 0)
        return;
    for (char *entry = strtok(maps, ","); entry; entry = strtok(NULL, ",")) {
        char *key_hex = strchr(entry, '=');
        char *value_hex = key_hex ? strchr(key_hex, ':') : NULL;
        if (!value_hex) {
            fprintf(stderr, "bad map entry: %s\n", entry);
            exit(2);
        }
        *key_hex++ = 0;
        *value_hex++ = 0;
        static uint8_t key[256], value[256], values[1 << 16];
        size_t key_len = unhex(key_hex, key, sizeof key), value_len = unhex(value_hex, value, sizeof value);
        /* As the recording: an entry for a map this program lacks is left out. */
        struct ubpf_map *map = ubpf_map_get(vm, entry);
        if (!map)
            continue;
        size_t total = ubpf_map_value_size(map), slot = (value_len + 7) / 8 * 8;
        const uint8_t *given = value;
        if (total > value_len && total <= sizeof values) {
            memset(values, 0, total);
            for (size_t at = 0; at + slot <= total; at += slot)
                memcpy(values + at, value, value_len);
            given = values;
            value_len = total;
        }
        if (ubpf_map_update(map, key, key_len, given, value_len, 0) != 0) {
            fprintf(stderr, "map %s: update failed\n", entry);
            exit(1);
        }
        ubpf_map_release(map);
    }
}

/* The buffer of every run, 8-byte aligned. */
static uint64_t words[UBPF_XDP_BUFFER_SIZE / 8];

/* The context of a frame, before its first run. */
static void fill_context(uint8_t *data, size_t len)
{
    struct ubpf_xdp_context *context = (struct ubpf_xdp_context *)words;
    context->data = (uint64_t)(uintptr_t)data;
    context->data_end = (uint64_t)(uintptr_t)(data + len);
    context->data_meta = (uint64_t)(uintptr_t)data;
}

/* One run: the redirect cleared, then the call. */
static inline uint64_t run(ubpf_jit_fn fn)
{
    ((struct ubpf_xdp_context *)words)->redirect_kind = 0;
    return fn(words, sizeof words);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s OBJECT MAPS FRAME.bin...\n", argv[0]);
        return 2;
    }
    size_t elf_len;
    uint8_t *elf = read_file(argv[1], &elf_len);
    struct ubpf_vm *vm = ubpf_create();
    char *err = NULL;
    if (ubpf_register_linux_helpers(vm) != 0 || ubpf_set_program_type(vm, UBPF_PROGRAM_TYPE_XDP) != 0 ||
        ubpf_load_elf(vm, elf, elf_len, &err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], err ? err : "setup failed");
        return 1;
    }
    free(elf);
    fill_maps(vm, argv[2]);
    ubpf_jit_fn fn = ubpf_compile(vm, &err);
    if (!fn) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        return 1;
    }
    struct ubpf_xdp_context *context = (struct ubpf_xdp_context *)words;
    context->ingress_ifindex = 1;
    uint8_t *data = (uint8_t *)words + UBPF_XDP_CONTEXT_SIZE + UBPF_XDP_HEADROOM;
    volatile uint64_t sink = 0;
    double total = 0;
    int frames = argc - 3;
    for (int f = 0; f < frames; f++) {
        size_t len;
        uint8_t *frame = read_file(argv[3 + f], &len);
        if (len > UBPF_XDP_BUFFER_SIZE - UBPF_XDP_CONTEXT_SIZE - UBPF_XDP_HEADROOM) {
            fprintf(stderr, "%s: too long\n", argv[3 + f]);
            return 1;
        }
        memcpy(data, frame, len);
        free(frame);
        fill_context(data, len);
        double best = 1e18;
        for (int b = 0; b < BATCHES; b++) {
            uint64_t start = thread_ns(), acc = 0;
            for (int i = 0; i < CALLS; i++)
                acc += run(fn);
            double ns = (double)(thread_ns() - start) / CALLS;
            sink += acc;
            if (ns < best)
                best = ns;
        }
        uint64_t retval = run(fn);
        printf("%s %llu %.2f\n", argv[3 + f], (unsigned long long)retval, best);
        total += best;
    }
    printf("mean %.2f\n", total / frames);
    ubpf_destroy(vm);
    return 0;
}
