/*
 * XDP programs through the C API, checked against the Linux kernel's
 * recorded answers (tests/kernel/xdp.json; tests/capi.rs picks the runs and
 * writes them to the file this program reads). Each run goes through
 * ubpf_exec_xdp() (the interpreter) and through the function ubpf_compile()
 * returns, with a ::ubpf_xdp_context the caller fills: both must give the
 * kernel's action and its bytes (metadata and packet, as test_run's data_out).
 *
 * The cases file has one run a line, fields separated by a space, "-" for no
 * bytes:
 *   OBJECT PROGRAM TYPE META_HEX INGRESS QUEUE FRAME_HEX RETVAL META_LEN_OUT DATA_OUT_HEX
 * TYPE is "xdp" (loaded with UBPF_PROGRAM_TYPE_XDP) or "section"
 * (UBPF_PROGRAM_TYPE_BY_SECTION). DATA_OUT_HEX is "?" when the kernel did not
 * say (actions that drop).
 */
#include "common.h"

#define MAX_BYTES 4096
#define HEADROOM_AT (UBPF_XDP_CONTEXT_SIZE + UBPF_XDP_HEADROOM)

/* Checks that this thread's last error (from malloc) says `needle`. */
#define CHECK_LAST(needle)                 \
    do {                                   \
        char *last = ubpf_last_error();    \
        CHECK_ERRMSG(last, needle);        \
    } while (0)

static size_t unhex(const char *hex, uint8_t *out, size_t capacity)
{
    if (strcmp(hex, "-") == 0) {
        return 0;
    }
    size_t len = strlen(hex) / 2;
    if (len > capacity) {
        fprintf(stderr, "a field of %zu bytes is too long\n", len);
        exit(2);
    }
    for (size_t i = 0; i < len; i++) {
        unsigned byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) {
            fprintf(stderr, "bad hex: %s\n", hex);
            exit(2);
        }
        out[i] = (uint8_t)byte;
    }
    return len;
}

/* Fills the maps as the recording did: "-", or NAME=KEY:VALUE,... in hex.
 * A value given once goes to every CPU of a per-CPU map, as bpftool does. */
static void fill_maps(struct ubpf_vm *vm, char *maps)
{
    if (strcmp(maps, "-") == 0) {
        return;
    }
    for (char *entry = strtok(maps, ","); entry != NULL; entry = strtok(NULL, ",")) {
        char *key_hex = strchr(entry, '=');
        char *value_hex = key_hex ? strchr(key_hex, ':') : NULL;
        if (value_hex == NULL) {
            fprintf(stderr, "bad map entry: %s\n", entry);
            exit(2);
        }
        *key_hex++ = 0;
        *value_hex++ = 0;
        static uint8_t key[256], value[256], values[MAX_BYTES * 4];
        size_t key_len = unhex(key_hex, key, sizeof key), value_len = unhex(value_hex, value, sizeof value);
        /* As the recorder: an entry for a map this program lacks is left out. */
        struct ubpf_map *map = ubpf_map_get(vm, entry);
        if (map == NULL) {
            continue;
        }
        size_t total = ubpf_map_value_size(map), slot = (value_len + 7) / 8 * 8;
        if (total > value_len && total <= sizeof values) {
            memset(values, 0, total);
            for (size_t at = 0; at + slot <= total; at += slot) {
                memcpy(values + at, value, value_len);
            }
            CHECK(ubpf_map_update(map, key, key_len, values, total, 0) == 0);
        } else {
            CHECK(ubpf_map_update(map, key, key_len, value, value_len, 0) == 0);
        }
        ubpf_map_release(map);
    }
}

/* A new VM with PROGRAM of OBJECT loaded and its maps filled; NULL when it
 * fails (a failed check). */
static struct ubpf_vm *load(const char *root, const char *object, const char *program, const char *type,
                            const char *maps)
{
    size_t len;
    void *elf = read_file(object[0] == '/' ? "" : root, object, &len);
    char *errmsg = NULL;
    struct ubpf_vm *vm = ubpf_create();
    CHECK(vm != NULL);
    CHECK(ubpf_register_linux_helpers(vm) == 0);
    enum ubpf_program_type wanted =
        strcmp(type, "xdp") == 0 ? UBPF_PROGRAM_TYPE_XDP : UBPF_PROGRAM_TYPE_BY_SECTION;
    CHECK(ubpf_set_program_type(vm, wanted) == 0);
    int ok = ubpf_load_elf_ex(vm, elf, len, program, &errmsg);
    free(elf);
    if (ok != 0) {
        fprintf(stderr, "%s %s: %s\n", object, program, errmsg ? errmsg : "?");
        free(errmsg);
        CHECK(ok == 0);
        ubpf_destroy(vm);
        return NULL;
    }
    CHECK(ubpf_get_program_type(vm) == UBPF_PROGRAM_TYPE_XDP);
    static char copy[4 * MAX_BYTES];
    snprintf(copy, sizeof copy, "%s", maps);
    fill_maps(vm, copy);
    return vm;
}

/* The buffer of one run, 8-byte aligned, laid out as test_run lays it out. */
static uint64_t words[UBPF_XDP_BUFFER_SIZE / 8];

static void place(const uint8_t *meta, size_t meta_len, const uint8_t *frame, size_t frame_len)
{
    uint8_t *buffer = (uint8_t *)words;
    memset(buffer, 0, sizeof words);
    memcpy(buffer + HEADROOM_AT - meta_len, meta, meta_len);
    memcpy(buffer + HEADROOM_AT, frame, frame_len);
}

static int same(const char *how, const char *line, uint64_t retval, uint64_t expected_retval, const uint8_t *out,
                size_t meta_len, size_t len, size_t expected_meta_len, const uint8_t *expected, size_t expected_len,
                int check_bytes)
{
    int ok = retval == expected_retval;
    if (check_bytes) {
        ok = ok && meta_len == expected_meta_len && meta_len + len == expected_len &&
             memcmp(out, expected, expected_len) == 0;
    }
    if (!ok) {
        fprintf(stderr, "%s: r0 %llu, %zu + %zu bytes out, for: %s", how, (unsigned long long)retval, meta_len, len,
                line);
    }
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ROOT CASES\n", argv[0]);
        return 2;
    }
    const char *root = argv[1];
    FILE *cases = fopen(argv[2], "r");
    if (cases == NULL) {
        perror(argv[2]);
        return 2;
    }
    static char line[4 * MAX_BYTES];
    static uint8_t meta[MAX_BYTES], frame[MAX_BYTES], expected[MAX_BYTES];
    int runs = 0;
    struct ubpf_vm *last_vm = NULL;
    while (fgets(line, sizeof line, cases) != NULL) {
        static char object[512], program[128], type[16], maps[4 * MAX_BYTES], meta_hex[2 * MAX_BYTES + 1],
            frame_hex[2 * MAX_BYTES + 1], out_hex[2 * MAX_BYTES + 1];
        unsigned ingress, queue, expected_meta_len;
        unsigned long long expected_retval;
        if (sscanf(line, "%511s %127s %15s %16383s %8192s %u %u %8192s %llu %u %8192s", object, program, type, maps,
                   meta_hex, &ingress, &queue, frame_hex, &expected_retval, &expected_meta_len, out_hex) != 11) {
            fprintf(stderr, "bad line: %s", line);
            return 2;
        }
        size_t meta_len = unhex(meta_hex, meta, sizeof meta);
        size_t frame_len = unhex(frame_hex, frame, sizeof frame);
        int check_bytes = strcmp(out_hex, "?") != 0;
        size_t expected_len = check_bytes ? unhex(out_hex, expected, sizeof expected) : 0;
        uint8_t *buffer = (uint8_t *)words;

        /* ubpf_exec_xdp(): offsets in, offsets out. */
        struct ubpf_vm *vm = load(root, object, program, type, maps);
        if (vm == NULL) {
            continue;
        }
        place(meta, meta_len, frame, frame_len);
        struct ubpf_xdp_packet packet = {
            .data_offset = HEADROOM_AT,
            .data_len = (uint32_t)frame_len,
            .meta_len = (uint32_t)meta_len,
            .ingress_ifindex = ingress,
            .rx_queue_index = queue,
        };
        uint64_t retval = UINT64_MAX;
        CHECK(ubpf_exec_xdp(vm, buffer, sizeof words, &packet, &retval) == 0);
        CHECK(same("ubpf_exec_xdp", line, retval, expected_retval, buffer + packet.data_offset - packet.meta_len,
                   packet.meta_len, packet.data_len, expected_meta_len, expected, expected_len, check_bytes));
        if (strcmp(program, "xdp_redirect_ifindex") == 0) {
            CHECK(packet.redirect_kind == UBPF_XDP_REDIRECT_DEVICE);
        }
        ubpf_destroy(vm);

        /* The compiled function, in a VM of its own (maps as recorded): the
         * caller's own context. */
        vm = load(root, object, program, type, maps);
        if (vm == NULL) {
            continue;
        }
        char *errmsg = NULL;
        ubpf_jit_fn compiled = ubpf_compile(vm, &errmsg);
        if (compiled == NULL) {
            fprintf(stderr, "%s %s: %s\n", object, program, errmsg ? errmsg : "?");
            free(errmsg);
            CHECK(compiled != NULL);
            ubpf_destroy(vm);
            continue;
        }
        place(meta, meta_len, frame, frame_len);
        struct ubpf_xdp_context *context = (struct ubpf_xdp_context *)buffer;
        context->ingress_ifindex = ingress;
        context->rx_queue_index = queue;
        context->data = (uint64_t)(uintptr_t)(buffer + HEADROOM_AT);
        context->data_end = context->data + frame_len;
        context->data_meta = context->data - meta_len;
        retval = compiled(buffer, sizeof words);
        uint64_t start = (uint64_t)(uintptr_t)buffer + UBPF_XDP_CONTEXT_SIZE + UBPF_XDP_FRAME_RESERVED;
        uint64_t end = (uint64_t)(uintptr_t)buffer + sizeof words;
        int sane = start <= context->data_meta && context->data_meta <= context->data &&
                   context->data <= context->data_end && context->data_end <= end;
        CHECK(sane);
        if (sane) {
            size_t out_meta = (size_t)(context->data - context->data_meta);
            size_t out_len = (size_t)(context->data_end - context->data);
            CHECK(same("ubpf_compile", line, retval, expected_retval, (const uint8_t *)(uintptr_t)context->data_meta,
                       out_meta, out_len, expected_meta_len, expected, expected_len, check_bytes));
        }
        if (strcmp(program, "xdp_redirect_ifindex") == 0) {
            CHECK(context->redirect_kind == UBPF_XDP_REDIRECT_DEVICE);
        }

        /* The last VM stays for the refusals below. */
        ubpf_destroy(last_vm);
        last_vm = vm;
        runs++;
    }
    fclose(cases);

    /* What ubpf_exec_xdp() refuses: a packet that does not fit. */
    if (last_vm != NULL) {
        struct ubpf_vm *xdp_vm = last_vm;
        uint8_t *buffer = (uint8_t *)words;
        place(meta, 0, frame, 60);
        struct ubpf_xdp_packet packet = {.data_offset = HEADROOM_AT, .data_len = 13};
        uint64_t retval = 7;
        CHECK(ubpf_exec_xdp(xdp_vm, buffer, sizeof words, &packet, &retval) == -1);
        CHECK_LAST("shorter than an Ethernet header");
        packet.data_len = 60;
        packet.data_offset = UBPF_XDP_CONTEXT_SIZE + 8;
        CHECK(ubpf_exec_xdp(xdp_vm, buffer, sizeof words, &packet, &retval) == -1);
        CHECK_LAST("reserved headroom");
        packet.data_offset = sizeof words - 59;
        CHECK(ubpf_exec_xdp(xdp_vm, buffer, sizeof words, &packet, &retval) == -1);
        CHECK_LAST("ends past the buffer");
        packet.data_offset = HEADROOM_AT;
        packet.meta_len = 6;
        CHECK(ubpf_exec_xdp(xdp_vm, buffer, sizeof words, &packet, &retval) == -1);
        CHECK_LAST("multiple of 4");
        CHECK(retval == 7 && packet.data_offset == HEADROOM_AT && packet.data_len == 60);
        CHECK(ubpf_set_program_type(xdp_vm, UBPF_PROGRAM_TYPE_FILTER) == -1);
        CHECK_LAST("before the program is loaded");
        ubpf_destroy(xdp_vm);
    }
    struct ubpf_vm *vm = ubpf_create();
    CHECK(ubpf_set_program_type(vm, (enum ubpf_program_type)7) == -1);
    CHECK_LAST("unknown program type 7");
    uint64_t code[] = {INSN(OP_MOV64_IMM, 0, 0, 0, 2), INSN(OP_EXIT, 0, 0, 0, 0)};
    char *errmsg = NULL;
    CHECK(ubpf_get_program_type(vm) == -1);
    CHECK(ubpf_load(vm, code, sizeof code, &errmsg) == 0);
    CHECK(ubpf_get_program_type(vm) == UBPF_PROGRAM_TYPE_FILTER);
    struct ubpf_xdp_packet packet = {.data_offset = HEADROOM_AT, .data_len = 60};
    uint64_t retval;
    CHECK(ubpf_exec_xdp(vm, words, sizeof words, &packet, &retval) == -1);
    CHECK_LAST("is a filter");
    ubpf_unload_code(vm);
    /* Raw bytecode forced to XDP: the context's fields as the kernel's. */
    CHECK(ubpf_set_program_type(vm, UBPF_PROGRAM_TYPE_XDP) == 0);
    CHECK(ubpf_load(vm, code, sizeof code, &errmsg) == 0);
    CHECK(ubpf_get_program_type(vm) == UBPF_PROGRAM_TYPE_XDP);
    CHECK(ubpf_exec_xdp(vm, words, sizeof words, &packet, &retval) == 0 && retval == 2);
    ubpf_unload_code(vm);
    /* Classic BPF stays a filter. */
    uint64_t classic = 0x0000000000000006ull; /* ret #0 */
    CHECK(ubpf_load_cbpf(vm, &classic, 1, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "is a filter");
    ubpf_destroy(vm);

    printf("xdp: %d runs, ", runs);
    return finish("xdp");
}
