/*
 * The call sequence of QEMU's 2022 filter-ubpf RFC (ebpf/ubpf.c):
 * ubpf_create, ubpf_register of six helpers (and the unwind index),
 * ubpf_load_elf of the filter object, then per packet ubpf_compile and the
 * compiled function, or ubpf_exec, and ubpf_destroy at the end; run on each
 * example filter with packets covering its rules. The interpreter and the
 * JIT must give the expected verdict, hence the same one.
 *
 * Usage: qemu_rfc ROOT
 */
#include "common.h"

/* The six helpers the RFC registers. */

static uint64_t gather(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    return (a & 0xff) << 32 | (b & 0xff) << 24 | (c & 0xff) << 16 | (d & 0xff) << 8 | (e & 0xff);
}

static uint64_t frob(uint64_t address, uint64_t len, uint64_t c, uint64_t d, uint64_t e)
{
    (void)c, (void)d, (void)e;
    unsigned char *bytes = (unsigned char *)(uintptr_t)address;
    for (uint64_t i = 0; i < len; i++) {
        bytes[i] ^= 42;
    }
    return 0;
}

/* Uses as many registers as the compiler will give it, to catch a JIT that
 * expects a helper to keep registers the C ABI lets it clobber. */
static uint64_t trash_registers(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    volatile uint64_t sink[8] = {a, b, c, d, e, a ^ b, c ^ d, e ^ a};
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++) {
        sum = sum * 31 + sink[i];
    }
    return sum;
}

static uint64_t sqrti(uint64_t value, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    (void)b, (void)c, (void)d, (void)e;
    uint64_t root = 0;
    while ((root + 1) * (root + 1) <= value) {
        root++;
    }
    return root;
}

static uint64_t strcmp_ext(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    (void)c, (void)d, (void)e;
    return (uint64_t)(int64_t)strcmp((const char *)(uintptr_t)a, (const char *)(uintptr_t)b);
}

static uint64_t unwind(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    (void)b, (void)c, (void)d, (void)e;
    return a;
}

static void register_functions(struct ubpf_vm *vm)
{
    CHECK(ubpf_register(vm, 0, "gather", gather) == 0);
    CHECK(ubpf_register(vm, 1, "memfrob", frob) == 0);
    CHECK(ubpf_register(vm, 2, "trash_registers", trash_registers) == 0);
    CHECK(ubpf_register(vm, 3, "sqrti", sqrti) == 0);
    CHECK(ubpf_register(vm, 4, "strcmp_ext", strcmp_ext) == 0);
    CHECK(ubpf_register(vm, 5, "unwind", unwind) == 0);
    CHECK(ubpf_set_unwind_function_index(vm, 5) == 0);
}

/* The RFC's qemu_ubpf_prepare(): a VM with the program of `path` loaded. */
static struct ubpf_vm *prepare(const char *root, const char *path)
{
    size_t code_len;
    void *code = read_file(root, path, &code_len);
    struct ubpf_vm *vm = ubpf_create();
    CHECK(vm != NULL);
    register_functions(vm);
    char *errmsg = NULL;
    int elf = code_len >= 4 && memcmp(code, "\177ELF", 4) == 0;
    int ret = elf ? ubpf_load_elf(vm, code, code_len, &errmsg)
                  : ubpf_load(vm, code, (uint32_t)code_len, &errmsg);
    free(code);
    if (ret < 0) {
        fprintf(stderr, "%s: %s\n", path, errmsg ? errmsg : "(no message)");
    }
    CHECK(ret == 0);
    CHECK(errmsg == NULL);
    free(errmsg);
    return vm;
}

/* The RFC's qemu_ubpf_run_once(), both ways, for every packet. */
static void run(const char *root, const char *path, const struct packet *packets, size_t count)
{
    struct ubpf_vm *vm = prepare(root, path);
    ubpf_jit_fn first = NULL;
    size_t agreed = 0;
    for (size_t i = 0; i < count; i++) {
        uint8_t packet[sizeof packets[i].data];
        memcpy(packet, packets[i].data, packets[i].len);

        char *errmsg = NULL;
        ubpf_jit_fn fn = ubpf_compile(vm, &errmsg);
        CHECK(fn != NULL);
        CHECK(errmsg == NULL);
        free(errmsg);
        if (fn == NULL) {
            break;
        }
        if (first == NULL) {
            first = fn;
        }
        CHECK(fn == first); /* compiled once, then cached */
        uint64_t jit = fn(packet, packets[i].len);

        uint64_t interpreted = 12345;
        CHECK(ubpf_exec(vm, packet, packets[i].len, &interpreted) == 0);

        if (jit != packets[i].expected || interpreted != packets[i].expected) {
            fprintf(stderr, "%s, %s: expected %llu, interpreter %llu, JIT %llu\n", path,
                    packets[i].name, (unsigned long long)packets[i].expected,
                    (unsigned long long)interpreted, (unsigned long long)jit);
        }
        CHECK(interpreted == packets[i].expected);
        CHECK(jit == packets[i].expected);
        agreed += jit == interpreted;
    }
    printf("%s: %zu packets, interpreter and JIT agree on %zu\n", path, count, agreed);
    ubpf_destroy(vm);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ROOT\n", argv[0]);
        return 2;
    }
    struct packet packets[64];
    size_t count;

    count = drop_1_1_1_1_packets(packets);
    run(argv[1], "examples/drop_1_1_1_1.o", packets, count);
    count = classifier_packets(packets);
    run(argv[1], "examples/classifier.o", packets, count);
    count = calls_rodata_packets(packets);
    run(argv[1], "examples/calls_rodata.o", packets, count);

    /* ubpf_load_elf_ex, naming the entry function. */
    size_t len;
    void *object = read_file(argv[1], "examples/calls_rodata.o", &len);
    struct ubpf_vm *vm = ubpf_create();
    register_functions(vm);
    char *errmsg = NULL;
    CHECK(ubpf_load_elf_ex(vm, object, len, "filter", &errmsg) == 0);
    CHECK(errmsg == NULL);
    uint64_t verdict = 7;
    CHECK(ubpf_exec(vm, packets[0].data, packets[0].len, &verdict) == 0);
    CHECK(verdict == packets[0].expected);
    ubpf_destroy(vm);
    free(object);

    return finish("qemu_rfc");
}
