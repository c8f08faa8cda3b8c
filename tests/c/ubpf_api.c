/*
 * A client written for iovisor/ubpf's API, using the rest of it: helpers
 * registered through as_external_function_t, raw bytecode, the unwind
 * index, ubpf_exec_ex, both JIT modes, ubpf_translate, ubpf_copy_jit into
 * executable memory, the register array, the toggles, reloading, and
 * ubpf_load_elf_ex choosing between two programs of one object.
 *
 * Usage: ubpf_api ROOT
 */
#define _DEFAULT_SOURCE
#include <sys/mman.h>

#include "common.h"

#if !defined(UBPF_HAS_ELF_H)
#error "libqemu-ubpf always has the ELF loader"
#endif

static uint64_t sqrti(uint64_t value)
{
    uint64_t root = 0;
    while ((root + 1) * (root + 1) <= value) {
        root++;
    }
    return root;
}

static uint64_t gather(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    return a << 32 | b << 24 | c << 16 | d << 8 | e;
}

static uint64_t unwind(uint64_t a)
{
    return a;
}

static uint64_t sum_bytes(uint64_t address, uint64_t len)
{
    const uint8_t *bytes = (const uint8_t *)(uintptr_t)address;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < len; i++) {
        sum += bytes[i];
    }
    return sum;
}

/* r0 = gather(1, 2, 3, 4, 5) + sqrti(r2 * r2) + sum_bytes(r1, r2);
 * r6 keeps the input across the calls. */
static const uint64_t HELPERS[] = {
    INSN(OP_MOV64_REG, 6, 1, 0, 0),
    INSN(OP_MOV64_REG, 7, 2, 0, 0),
    INSN(OP_MOV64_IMM, 1, 0, 0, 1),
    INSN(OP_MOV64_IMM, 2, 0, 0, 2),
    INSN(OP_MOV64_IMM, 3, 0, 0, 3),
    INSN(OP_MOV64_IMM, 4, 0, 0, 4),
    INSN(OP_MOV64_IMM, 5, 0, 0, 5),
    INSN(OP_CALL, 0, 0, 0, 0),
    INSN(OP_MOV64_REG, 8, 0, 0, 0),
    INSN(OP_MOV64_REG, 1, 7, 0, 0),
    INSN(0x2f, 1, 7, 0, 0), /* mul r1, r7 */
    INSN(OP_CALL, 0, 0, 0, 3),
    INSN(OP_ADD64_REG, 8, 0, 0, 0),
    INSN(OP_MOV64_REG, 1, 6, 0, 0),
    INSN(OP_MOV64_REG, 2, 7, 0, 0),
    INSN(OP_CALL, 0, 0, 0, 6),
    INSN(OP_ADD64_REG, 0, 8, 0, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

/* r0 = 7 unless unwind(r1 = first input byte) returns 0. */
static const uint64_t UNWIND[] = {
    INSN(OP_LDXB, 1, 1, 0, 0),
    INSN(OP_CALL, 0, 0, 0, 5),
    INSN(OP_MOV64_IMM, 0, 0, 0, 7),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

/* Writes r2 to the stack, reads it back, adds the first input byte. */
static const uint64_t STACK[] = {
    INSN(OP_STXDW, 10, 2, -8, 0),
    INSN(OP_LDXDW, 0, 10, -8, 0),
    INSN(OP_LDXB, 3, 1, 0, 0),
    INSN(OP_ADD64_REG, 0, 3, 0, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

static struct ubpf_vm *load(const uint64_t *code, size_t len)
{
    struct ubpf_vm *vm = ubpf_create();
    CHECK(vm != NULL);
    CHECK(ubpf_register(vm, 0, "gather", gather) == 0);
    CHECK(ubpf_register(vm, 3, "sqrti", as_external_function_t((void *)sqrti)) == 0);
    CHECK(ubpf_register(vm, 5, "unwind", as_external_function_t((void *)unwind)) == 0);
    CHECK(ubpf_register(vm, 6, "sum_bytes", as_external_function_t((void *)sum_bytes)) == 0);
    CHECK(ubpf_set_unwind_function_index(vm, 5) == 0);
    char *errmsg = NULL;
    if (ubpf_load(vm, code, (uint32_t)len, &errmsg) < 0) {
        fprintf(stderr, "load: %s\n", errmsg);
        CHECK(0);
    }
    free(errmsg);
    return vm;
}

/* Runs `code` over `input` in the interpreter (ubpf_exec and ubpf_exec_ex)
 * and in both JIT modes, checks they all give `expected`. */
static void run_all_ways(const char *name, const uint64_t *code, size_t len, uint8_t *input,
                         size_t input_len, uint64_t expected)
{
    struct ubpf_vm *vm = load(code, len);
    uint64_t results[5] = {0};
    uint8_t stack[UBPF_EBPF_STACK_SIZE];
    char *errmsg = NULL;
    CHECK(ubpf_exec(vm, input, input_len, &results[0]) == 0);
    CHECK(ubpf_exec_ex(vm, input, input_len, &results[1], stack, sizeof stack) == 0);
    ubpf_jit_fn basic = ubpf_compile(vm, &errmsg);
    CHECK(basic != NULL);
    ubpf_jit_ex_fn extended = ubpf_compile_ex(vm, &errmsg, ExtendedJitMode);
    CHECK(extended != NULL);
    /* BasicJitMode is ubpf_compile's function, to cast back (through
     * void (*)(void), which -Wcast-function-type accepts). */
    CHECK((ubpf_jit_fn)(void (*)(void))ubpf_compile_ex(vm, &errmsg, BasicJitMode) == basic);
    CHECK(ubpf_jit(vm, &errmsg) == basic);
    if (basic && extended) {
        results[2] = basic(input, input_len);
        results[3] = extended(input, input_len, stack, sizeof stack);
    }

    /* The copy of the entry point runs from the caller's executable memory
     * (while the VM keeps the program loaded). */
    size_t page = 4096;
    void *copy = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(copy != MAP_FAILED);
    CHECK(ubpf_compile(vm, &errmsg) == basic); /* the last mode is basic again */
    ubpf_jit_fn copied = ubpf_copy_jit(vm, copy, 8, &errmsg);
    CHECK_ERRMSG(errmsg, "too small");
    CHECK(copied == NULL);
    copied = ubpf_copy_jit(vm, copy, page, &errmsg);
    CHECK(copied == (ubpf_jit_fn)copy);
    CHECK(errmsg == NULL);
    if (copied != NULL && mprotect(copy, page, PROT_READ | PROT_EXEC) == 0) {
        results[4] = copied(input, input_len);
    }
    munmap(copy, page);

    for (int i = 0; i < 5; i++) {
        if (results[i] != expected) {
            fprintf(stderr, "%s: way %d gave %llu, expected %llu\n", name, i,
                    (unsigned long long)results[i], (unsigned long long)expected);
        }
        CHECK(results[i] == expected);
    }
    ubpf_destroy(vm);
}

static void translate(void)
{
    struct ubpf_vm *vm = load(STACK, sizeof STACK);
    char *errmsg = NULL;
    size_t size = 1 << 16;
    uint8_t *buffer = malloc(size);
    CHECK(ubpf_translate(vm, buffer, &size, &errmsg) == 0);
    CHECK(errmsg == NULL);
    CHECK(size > 16 && size < (1 << 16));
    size_t again = 1 << 16;
    CHECK(ubpf_translate_ex(vm, buffer, &again, &errmsg, ExtendedJitMode) == 0);
    CHECK(again == size);
    free(buffer);
    ubpf_destroy(vm);
}

static void settings(void)
{
    struct ubpf_vm *vm = ubpf_create();
    uint64_t regs[16] = {0};
    CHECK(ubpf_get_registers(vm) == NULL);
    ubpf_set_registers(vm, regs);
    CHECK(ubpf_get_registers(vm) == regs);
    CHECK(ubpf_toggle_bounds_check(vm, false) == true);
    CHECK(ubpf_toggle_bounds_check(vm, true) == false);
    CHECK(ubpf_toggle_undefined_behavior_check(vm, true) == false);
    CHECK(ubpf_set_jit_code_size(vm, 1 << 20) == 0);
    CHECK(ubpf_set_pointer_secret(vm, 0x1234) == 0);
    uint32_t previous = 1;
    CHECK(ubpf_set_instruction_limit(vm, 0, &previous) == 0);
    CHECK(ubpf_set_instruction_limit(vm, 5000, &previous) == 0 && previous == 0);
    CHECK(ubpf_set_instruction_limit(vm, 5000, NULL) == 0);
    char *errmsg = NULL;
    CHECK(ubpf_load(vm, STACK, sizeof STACK, &errmsg) == 0);
    CHECK(ubpf_set_pointer_secret(vm, 0x1234) == -1);
    uint8_t input[1] = {1};
    uint64_t value = 0;
    CHECK(ubpf_exec(vm, input, sizeof input, &value) == 0 && value == 2);
    /* Reload: unload, then load another program into the same VM. */
    ubpf_unload_code(vm);
    CHECK(ubpf_load(vm, STACK, sizeof STACK, &errmsg) == 0);
    CHECK(ubpf_exec(vm, input, sizeof input, &value) == 0 && value == 2);
    ubpf_destroy(vm);
}

static void two_programs(const char *root)
{
    size_t len;
    void *object = read_file(root, "tests/fixtures/programs.o", &len);
    static const uint64_t tables[2][4] = {{1, 2, 3, 4}, {100, 200, 300, 400}};
    for (size_t input_len = 0; input_len < 6; input_len++) {
        uint8_t input[8] = {0};
        struct ubpf_vm *vm = ubpf_create();
        char *errmsg = NULL;
        uint64_t value = 0;
        CHECK(ubpf_load_elf_ex(vm, object, len, "first", &errmsg) == 0);
        CHECK(ubpf_exec(vm, input, input_len, &value) == 0);
        CHECK(value == 2 * input_len + 20 + tables[0][input_len % 4]);
        ubpf_unload_code(vm);
        CHECK(ubpf_load_elf_ex(vm, object, len, "second", &errmsg) == 0);
        ubpf_jit_fn fn = ubpf_compile(vm, &errmsg);
        CHECK(fn != NULL);
        uint64_t expected = 3 * input_len + tables[1][input_len % 4] + (input_len % 2 ? 'o' : 'e');
        CHECK(fn != NULL && fn(input, input_len) == expected);
        CHECK(ubpf_exec(vm, input, input_len, &value) == 0 && value == expected);
        ubpf_destroy(vm);
    }
    free(object);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ROOT\n", argv[0]);
        return 2;
    }
    uint8_t input[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    uint64_t gathered = (1ull << 32) | (2 << 24) | (3 << 16) | (4 << 8) | 5;
    run_all_ways("helpers", HELPERS, sizeof HELPERS, input, sizeof input, gathered + 10 + 55);
    run_all_ways("unwind, 0", UNWIND, sizeof UNWIND, (uint8_t[]){0}, 1, 0);
    run_all_ways("unwind, 1", UNWIND, sizeof UNWIND, (uint8_t[]){1}, 1, 7);
    run_all_ways("stack", STACK, sizeof STACK, input, 3, 4);
    translate();
    settings();
    two_programs(argv[1]);
    return finish("ubpf_api");
}
