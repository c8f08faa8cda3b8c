/*
 * The map API as a host (QEMU) uses it: libbpf-style example filters loaded
 * with ubpf_register_linux_helpers(), their maps found by name, read while
 * another thread runs packets, filled from the host (a blocklist), dumped
 * and updated as JSON, and a ring buffer drained.
 *
 * Usage: maps ROOT
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>

#include "common.h"

#define RUNS 2000

struct counter {
    uint64_t packets;
    uint64_t bytes;
};

static struct ubpf_vm *load(const char *root, const char *object, const char *entry)
{
    struct ubpf_vm *vm = ubpf_create();
    CHECK(vm != NULL);
    CHECK(ubpf_register_linux_helpers(vm) == 0);
    size_t len;
    void *elf = read_file(root, object, &len);
    char *errmsg = NULL;
    int loaded = ubpf_load_elf_ex(vm, elf, len, entry, &errmsg);
    if (errmsg) {
        fprintf(stderr, "%s: %s\n", object, errmsg);
    }
    CHECK(loaded == 0);
    free(errmsg);
    free(elf);
    return vm;
}

struct runner {
    struct ubpf_vm *vm;
    ubpf_jit_fn fn;
    unsigned long wrong;
};

/* Runs TCP packets through the program, half interpreted, half compiled. */
static void *run_packets(void *arg)
{
    struct runner *runner = arg;
    uint8_t packet[64];
    for (int i = 0; i < RUNS; i++) {
        size_t len = ip_packet(packet, PROTO_TCP, OUTSIDE, SERVER, 80);
        uint64_t result = 1;
        if (i % 2) {
            result = runner->fn(packet, len);
        } else if (ubpf_exec(runner->vm, packet, len, &result) != 0) {
            result = 1;
        }
        runner->wrong += result != PASS;
    }
    return NULL;
}

static uint64_t verdict(struct ubpf_vm *vm, const uint8_t *packet, size_t len)
{
    uint8_t copy[160];
    memcpy(copy, packet, len);
    uint64_t result = 99;
    CHECK(ubpf_exec(vm, copy, len, &result) == 0);
    return result;
}

/* Per-protocol counters, read from this thread while another counts. */
static void counters(const char *root)
{
    struct ubpf_vm *vm = load(root, "examples/proto_counters.o", NULL);
    struct ubpf_map *map = ubpf_map_get(vm, "counters");
    CHECK(map != NULL && strcmp(ubpf_map_name(map), "counters") == 0);
    struct ubpf_map_info info;
    CHECK(ubpf_map_info(map, &info) == 0);
    CHECK(info.map_type == 2 && info.key_size == 4 && info.value_size == 16 && info.max_entries == 256);
    CHECK(ubpf_map_get(vm, "no such map") == NULL);
    CHECK(ubpf_map_count(vm) == 1);
    struct ubpf_map *first = ubpf_map_get_by_index(vm, 0);
    CHECK(first != NULL && strcmp(ubpf_map_name(first), "counters") == 0);
    ubpf_map_release(first);
    CHECK(ubpf_map_get_by_index(vm, 1) == NULL);

    /* Misuse fails with -EINVAL, never a crash. */
    uint8_t scratch[16];
    CHECK(ubpf_ringbuf_read(map, scratch, sizeof scratch, NULL) == -EINVAL);
    CHECK(ubpf_map_info(NULL, &info) == -EINVAL && ubpf_map_info(map, NULL) == -EINVAL);
    CHECK(ubpf_map_lookup(NULL, scratch, 4, scratch, 16) == -EINVAL);
    CHECK(ubpf_map_lookup(map, NULL, 4, scratch, 16) == -EINVAL);
    CHECK(ubpf_map_next_key(map, NULL, scratch, 8) == -EINVAL);
    CHECK(ubpf_map_name(NULL) == NULL);
    ubpf_map_release(NULL);

    char *errmsg = NULL;
    struct runner runner = {vm, ubpf_compile(vm, &errmsg), 0};
    free(errmsg);
    CHECK(runner.fn != NULL);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, run_packets, &runner) == 0);
    uint32_t tcp = PROTO_TCP;
    uint64_t last = 0;
    int monotonic = 1;
    for (int i = 0; i < 500; i++) {
        struct counter counter;
        CHECK(ubpf_map_lookup(map, &tcp, sizeof tcp, &counter, sizeof counter) == 0);
        monotonic &= counter.packets >= last;
        last = counter.packets;
    }
    pthread_join(thread, NULL);
    CHECK(monotonic);
    CHECK(runner.wrong == 0);

    struct counter counter;
    CHECK(ubpf_map_lookup(map, &tcp, sizeof tcp, &counter, sizeof counter) == 0);
    CHECK(counter.packets == RUNS && counter.bytes == RUNS * 40ull);
    CHECK(ubpf_map_lookup(map, &tcp, 2, &counter, sizeof counter) == -EINVAL);
    uint32_t past = 256;
    CHECK(ubpf_map_lookup(map, &past, sizeof past, &counter, sizeof counter) == -ENOENT);
    CHECK(ubpf_map_delete(map, &tcp, sizeof tcp) == -EINVAL);

    /* Iteration visits every index of an array, in order. */
    uint32_t key, next, seen = 0;
    int status = ubpf_map_next_key(map, NULL, &next, sizeof next);
    while (status == 0) {
        CHECK(next == seen);
        seen++;
        key = next;
        status = ubpf_map_next_key(map, &key, &next, sizeof next);
    }
    CHECK(status == -ENOENT && seen == 256);

    /* A new version of the filter takes the counters over. */
    struct ubpf_vm *swapped = ubpf_create();
    CHECK(ubpf_register_linux_helpers(swapped) == 0);
    CHECK(ubpf_reuse_maps(swapped, vm) == 0);
    CHECK(ubpf_reuse_maps(vm, swapped) == -1);
    size_t elf_len;
    void *elf = read_file(root, "examples/proto_counters.o", &elf_len);
    CHECK(ubpf_load_elf(swapped, elf, elf_len, NULL) == 0);
    free(elf);
    uint8_t packet[64];
    size_t len = ip_packet(packet, PROTO_TCP, OUTSIDE, SERVER, 80);
    CHECK(verdict(swapped, packet, len) == PASS);
    struct ubpf_map *taken = ubpf_map_get(swapped, "counters");
    CHECK(ubpf_map_lookup(taken, &tcp, sizeof tcp, &counter, sizeof counter) == 0);
    CHECK(counter.packets == RUNS + 1);
    ubpf_map_release(taken);
    ubpf_destroy(swapped);

    /* Resetting a counter from the host. */
    struct counter zero = {0, 0};
    CHECK(ubpf_map_update(map, &tcp, sizeof tcp, &zero, sizeof zero, 0) == 0);
    CHECK(ubpf_map_update(map, &tcp, sizeof tcp, &zero, sizeof zero, 1) == -EEXIST);
    CHECK(ubpf_map_lookup(map, &tcp, sizeof tcp, &counter, sizeof counter) == 0 && counter.packets == 0);
    ubpf_map_release(map);
    ubpf_destroy(vm);
}

/* A blocklist filled from the host, by key bytes and as JSON. */
static void blocklist(const char *root)
{
    struct ubpf_vm *vm = load(root, "examples/prefix_blocklist.o", NULL);
    struct ubpf_map *list = ubpf_map_get(vm, "blocklist");
    struct ubpf_map *drops = ubpf_map_get(vm, "drops");
    CHECK(list != NULL && drops != NULL);
    uint8_t packet[64];
    size_t len = ip_packet(packet, PROTO_UDP, INSIDE, SERVER, 53);
    CHECK(verdict(vm, packet, len) == PASS);

    struct {
        uint32_t prefixlen;
        uint8_t address[4];
    } prefix = {24, {10, 1, 2, 0}};
    uint32_t reason = 2;
    CHECK(ubpf_map_update(list, &prefix, sizeof prefix, &reason, sizeof reason, 0) == 0);
    CHECK(verdict(vm, packet, len) == DROP);
    len = ip_packet(packet, PROTO_UDP, OUTSIDE, SERVER, 53);
    CHECK(verdict(vm, packet, len) == PASS);

    char *errmsg = NULL;
    CHECK(ubpf_maps_update_json(vm, "{\"blocklist\": [{\"key\": \"172.16.0.0/16\", \"value\": 3}]}", &errmsg) == 1);
    CHECK(errmsg == NULL);
    CHECK(verdict(vm, packet, len) == DROP);
    CHECK(ubpf_maps_update_json(vm, "{\"nope\": []}", &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "nope");

    uint64_t count = 0;
    CHECK(ubpf_map_lookup(drops, &reason, sizeof reason, &count, sizeof count) == 0 && count == 1);
    char *json = ubpf_maps_json(vm);
    CHECK(json != NULL && strstr(json, "\"name\":\"blocklist\"") != NULL);
    CHECK(json != NULL && strstr(json, "\"type\":\"lpm_trie\"") != NULL);
    free(json);
    ubpf_map_release(list);
    ubpf_map_release(drops);
    ubpf_destroy(vm);
}

/* Tail calls to a handler that reports drops through a ring buffer. */
static void events(const char *root)
{
    struct ubpf_vm *vm = load(root, "examples/dispatcher.o", "dispatch");
    struct ubpf_map *ring = ubpf_map_get(vm, "drop_events");
    CHECK(ring != NULL);
    uint8_t packet[64];
    const uint8_t echo_request[8] = {8, 0, 0, 0, 0, 1, 0, 1};
    size_t len = ipv4(packet, PROTO_ICMP, OUTSIDE, SERVER, NULL, 0, 0, echo_request, sizeof echo_request);
    CHECK(verdict(vm, packet, len) == DROP);
    len = ip_packet(packet, PROTO_UDP, OUTSIDE, SERVER, 53);
    CHECK(verdict(vm, packet, len) == PASS);

    uint8_t record[8], tiny[2];
    size_t record_len = 0;
    CHECK(ubpf_ringbuf_read(ring, tiny, sizeof tiny, &record_len) == -ENOSPC && record_len == 8);
    CHECK(ubpf_ringbuf_read(ring, record, sizeof record, &record_len) == 1 && record_len == 8);
    uint32_t protocol;
    memcpy(&protocol, record, 4);
    CHECK(protocol == PROTO_ICMP && memcmp(record + 4, SERVER, 4) == 0);
    CHECK(ubpf_ringbuf_read(ring, record, sizeof record, &record_len) == 0);
    ubpf_map_release(ring);
    ubpf_destroy(vm);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s ROOT\n", argv[0]);
        return 2;
    }
    counters(argv[1]);
    blocklist(argv[1]);
    events(argv[1]);
    return finish("maps");
}
