/*
 * Every way a C caller can get the API wrong, and every program the engine
 * must refuse or stop: each gives -1 (or NULL, or UINT64_MAX for a compiled
 * function) with a message, and nothing crashes.
 *
 * Usage: errors ROOT
 */
#include "common.h"

static uint64_t seven(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    (void)c, (void)d, (void)e;
    return a * 1000 + b;
}

static uint64_t plus_one(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    (void)b, (void)c, (void)d, (void)e;
    return a + 1;
}

static const uint64_t RET_42[] = {
    INSN(OP_MOV64_IMM, 0, 0, 0, 42),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

/* r0 = the byte at r1 + 100. */
static const uint64_t READ_AT_100[] = {
    INSN(OP_LDXB, 0, 1, 100, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

/* Stores above the stack's top. */
static const uint64_t WRITE_ABOVE_STACK[] = {
    INSN(OP_STB, 10, 0, 8, 1),
    INSN(OP_MOV64_IMM, 0, 0, 0, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

/* Counts up forever. */
static const uint64_t ENDLESS[] = {
    INSN(OP_MOV64_IMM, 0, 0, 0, 0),
    INSN(OP_ADD64_IMM, 0, 0, 0, 1),
    /* Taken only after 2^64 laps, but without a way out the loop would be
     * refused at load. */
    INSN(OP_JEQ_IMM, 0, 0, 1, 0),
    INSN(OP_JA, 0, 0, -3, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

static const uint64_t CALL_42[] = {
    INSN(OP_CALL, 0, 0, 0, 42),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

/* Garbage, not a program: opcode 0xff. */
static const uint64_t BAD_OPCODE[] = {
    INSN(0xff, 0, 0, 0, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

static struct ubpf_vm *vm_with(const uint64_t *code, size_t len)
{
    struct ubpf_vm *vm = ubpf_create();
    char *errmsg = NULL;
    CHECK(ubpf_load(vm, code, (uint32_t)len, &errmsg) == 0);
    CHECK(errmsg == NULL);
    free(errmsg);
    return vm;
}

static void null_vm(void)
{
    char *errmsg = NULL;
    uint64_t value = 0;
    uint32_t previous;
    CHECK(ubpf_load(NULL, RET_42, sizeof RET_42, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "NULL");
    CHECK(ubpf_load_elf(NULL, RET_42, sizeof RET_42, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "NULL");
    CHECK(ubpf_load_elf_ex(NULL, RET_42, sizeof RET_42, "filter", &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "NULL");
    CHECK(ubpf_compile(NULL, &errmsg) == NULL);
    CHECK_ERRMSG(errmsg, "NULL");
    CHECK(ubpf_compile_ex(NULL, &errmsg, ExtendedJitMode) == NULL);
    CHECK_ERRMSG(errmsg, "NULL");
    CHECK(ubpf_jit(NULL, &errmsg) == NULL);
    CHECK_ERRMSG(errmsg, "NULL");
    size_t size = 100;
    uint8_t buffer[100];
    CHECK(ubpf_translate(NULL, buffer, &size, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "NULL");
    CHECK(ubpf_copy_jit(NULL, buffer, sizeof buffer, &errmsg) == NULL);
    CHECK_ERRMSG(errmsg, "NULL");

    CHECK(ubpf_exec(NULL, NULL, 0, &value) == -1);
    char *last = ubpf_last_error();
    CHECK_ERRMSG(last, "vm is NULL");
    CHECK(ubpf_exec_ex(NULL, NULL, 0, &value, NULL, 0) == -1);
    CHECK(ubpf_register(NULL, 1, "seven", seven) == -1);
    CHECK(ubpf_set_unwind_function_index(NULL, 1) == -1);
    CHECK(ubpf_set_instruction_limit(NULL, 10, &previous) == -1);
    CHECK(ubpf_register_data_relocation(NULL, NULL, NULL) == -1);
    CHECK(ubpf_register_data_bounds_check(NULL, NULL, NULL) == -1);
    CHECK(ubpf_toggle_bounds_check(NULL, false) == false);
    CHECK(ubpf_get_registers(NULL) == NULL);
    ubpf_set_registers(NULL, NULL);
    ubpf_set_error_print(NULL, capture_error);
    ubpf_unload_code(NULL);
    ubpf_destroy(NULL);
}

static void bad_arguments(const char *root)
{
    struct ubpf_vm *vm = ubpf_create();
    char *errmsg = NULL;
    uint64_t value = 0;

    /* Zero lengths and NULL buffers. */
    CHECK(ubpf_load(vm, RET_42, 0, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "code_len is 0");
    CHECK(ubpf_load(vm, NULL, 0, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "code_len is 0");
    CHECK(ubpf_load(vm, NULL, 16, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "NULL");
    CHECK(ubpf_load_elf(vm, NULL, 0, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "not an ELF");
    /* A partial instruction. */
    CHECK(ubpf_load(vm, RET_42, 7, &errmsg) == -1);
    CHECK(errmsg != NULL && strstr(errmsg, "instruction") == NULL);
    CHECK_ERRMSG(errmsg, "not a multiple of 8");
    /* errmsg may be NULL. */
    CHECK(ubpf_load(vm, RET_42, 7, NULL) == -1);
    char *last = ubpf_last_error();
    CHECK_ERRMSG(last, "not a multiple of 8");

    /* Garbage bytes, as bytecode and as an ELF object. */
    static const char garbage[] = "this is not an eBPF program, nor an ELF object";
    CHECK(ubpf_load(vm, BAD_OPCODE, sizeof BAD_OPCODE, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "unknown opcode");
    CHECK(ubpf_load_elf(vm, garbage, sizeof garbage, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "not an ELF");

    /* A truncated ELF object, cut at several places. */
    size_t len;
    unsigned char *object = read_file(root, "examples/drop_1_1_1_1.o", &len);
    size_t cuts[] = {4, 63, 64, 200, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK(ubpf_load_elf(vm, object, cuts[i], &errmsg) == -1);
        CHECK(errmsg != NULL && errmsg[0] != '\0');
        free(errmsg);
        errmsg = NULL;
    }
    /* Flipped bytes in the section headers: refused or loaded, never a crash. */
    for (size_t at = len - 64 * 4; at < len; at += 7) {
        unsigned char saved = object[at];
        object[at] ^= 0xa5;
        if (ubpf_load_elf(vm, object, len, &errmsg) == 0) {
            ubpf_unload_code(vm);
        }
        free(errmsg);
        errmsg = NULL;
        object[at] = saved;
    }
    /* No such entry function. */
    CHECK(ubpf_load_elf_ex(vm, object, len, "no_such_function", &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "no_such_function");
    free(object);

    /* An invalid JIT mode. */
    CHECK(ubpf_load(vm, RET_42, sizeof RET_42, &errmsg) == 0);
    CHECK(ubpf_compile_ex(vm, &errmsg, (enum JitMode)7) == NULL);
    CHECK_ERRMSG(errmsg, "unknown JIT mode");
    /* NULL out-parameters and buffers. */
    CHECK(ubpf_exec(vm, NULL, 0, NULL) == -1);
    CHECK(ubpf_exec(vm, NULL, 5, &value) == -1);
    last = ubpf_last_error();
    CHECK_ERRMSG(last, "mem is NULL");
    CHECK(ubpf_translate(vm, NULL, NULL, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "size is NULL");
    size_t size = 0;
    CHECK(ubpf_translate(vm, NULL, &size, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "buffer is NULL");
    CHECK(size > 0); /* the size it needs */
    size_t needed = size;
    uint8_t small[4];
    size = sizeof small;
    CHECK(ubpf_translate(vm, small, &size, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "too small");
    CHECK(size == needed);
    CHECK(ubpf_register(vm, 1, "null", NULL) == -1);
    ubpf_destroy(vm);
}

static void wrong_order(void)
{
    struct ubpf_vm *vm = ubpf_create();
    char *errmsg = NULL;
    uint64_t value = 0;
    uint8_t buffer[64];

    /* Before any program is loaded. */
    CHECK(ubpf_exec(vm, NULL, 0, &value) == -1);
    char *last = ubpf_last_error();
    CHECK_ERRMSG(last, "no program is loaded");
    CHECK(ubpf_compile(vm, &errmsg) == NULL);
    CHECK_ERRMSG(errmsg, "no program is loaded");
    CHECK(ubpf_copy_jit(vm, buffer, sizeof buffer, &errmsg) == NULL);
    CHECK_ERRMSG(errmsg, "no program is loaded");
    ubpf_unload_code(vm); /* nothing to unload: fine */

    /* Loaded, not compiled. */
    CHECK(ubpf_load(vm, RET_42, sizeof RET_42, &errmsg) == 0);
    CHECK(errmsg == NULL);
    CHECK(ubpf_copy_jit(vm, buffer, sizeof buffer, &errmsg) == NULL);
    CHECK_ERRMSG(errmsg, "not been compiled");

    /* Loading twice, and changing what the loaded program was checked with. */
    CHECK(ubpf_load(vm, RET_42, sizeof RET_42, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "ubpf_unload_code");
    CHECK(ubpf_load_elf(vm, RET_42, sizeof RET_42, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "ubpf_unload_code");
    CHECK(ubpf_register(vm, 1, "plus_one", plus_one) == -1);
    uint32_t previous = 0;
    CHECK(ubpf_set_instruction_limit(vm, 100, &previous) == -1);
    CHECK(previous == 10000000);
    CHECK(ubpf_set_unwind_function_index(vm, 1) == -1);

    /* Unloaded: runs fail again; a new program loads. */
    CHECK(ubpf_exec(vm, NULL, 0, &value) == 0 && value == 42);
    ubpf_unload_code(vm);
    CHECK(ubpf_exec(vm, NULL, 0, &value) == -1);
    CHECK(ubpf_register(vm, 1, "plus_one", plus_one) == 0);
    CHECK(ubpf_set_unwind_function_index(vm, 1) == 0);
    CHECK(ubpf_set_unwind_function_index(vm, 2) == -1);
    CHECK(ubpf_register_data_relocation(vm, NULL, NULL) == 0);
    CHECK(ubpf_load(vm, RET_42, sizeof RET_42, &errmsg) == 0);
    CHECK(ubpf_exec(vm, NULL, 0, &value) == 0 && value == 42);
    /* Unload after compiling, and compile the next program. */
    CHECK(ubpf_compile(vm, &errmsg) != NULL);
    ubpf_unload_code(vm);
    CHECK(ubpf_load(vm, READ_AT_100, sizeof READ_AT_100, &errmsg) == 0);
    CHECK(ubpf_compile(vm, &errmsg) != NULL);
    ubpf_destroy(vm);
}

static void unknown_helpers(const char *root)
{
    struct ubpf_vm *vm = ubpf_create();
    char *errmsg = NULL;
    CHECK(ubpf_load(vm, CALL_42, sizeof CALL_42, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "helper 42");

    /* tests/fixtures/helpers.o calls my_helper by name and helper 7. */
    size_t len;
    void *object = read_file(root, "tests/fixtures/helpers.o", &len);
    CHECK(ubpf_load_elf(vm, object, len, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "my_helper");
    CHECK(ubpf_register(vm, 3, "my_helper", plus_one) == 0);
    CHECK(ubpf_load_elf(vm, object, len, &errmsg) == -1);
    CHECK_ERRMSG(errmsg, "helper 7");
    CHECK(ubpf_register(vm, 7, "seven", seven) == 0);
    CHECK(ubpf_load_elf(vm, object, len, &errmsg) == 0);
    CHECK(errmsg == NULL);
    uint8_t packet[5] = {0};
    uint64_t value = 0;
    CHECK(ubpf_exec(vm, packet, sizeof packet, &value) == 0);
    CHECK(value == (5 + 1) + (5 * 1000 + 1000));
    free(object);

    /* A program that uses maps is refused, with the reason. */
    ubpf_unload_code(vm);
    object = read_file(root, "tests/fixtures/map.o", &len);
    CHECK(ubpf_load_elf(vm, object, len, &errmsg) == -1);
    CHECK(errmsg != NULL);
    free(errmsg);
    free(object);
    ubpf_destroy(vm);
}

static void faults(void)
{
    uint8_t packet[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    uint64_t value = 99;
    char *errmsg = NULL;

    /* A read past the input: the interpreter fails, the message goes to the
     * error_printf function; the compiled code returns UINT64_MAX. */
    struct ubpf_vm *vm = vm_with(READ_AT_100, sizeof READ_AT_100);
    ubpf_set_error_print(vm, capture_error);
    printed_count = 0;
    CHECK(ubpf_exec(vm, packet, sizeof packet, &value) == -1);
    CHECK(value == 99); /* unchanged */
    CHECK(printed_count == 1);
    CHECK(strstr(printed, "outside") != NULL);
    char *last = ubpf_last_error();
    CHECK_ERRMSG(last, "instruction 0");
    ubpf_jit_fn fn = ubpf_compile(vm, &errmsg);
    CHECK(fn != NULL);
    if (fn != NULL) {
        CHECK(fn(packet, sizeof packet) == UINT64_MAX);
        CHECK(printed_count == 2);
        last = ubpf_last_error();
        CHECK_ERRMSG(last, "outside");
        /* The same program reads within a longer input, and succeeding
         * clears the last error. */
        uint8_t longer[101] = {0};
        longer[100] = 77;
        CHECK(fn(longer, sizeof longer) == 77);
        CHECK(ubpf_last_error() == NULL);
        CHECK(ubpf_exec(vm, longer, sizeof longer, &value) == 0 && value == 77);
    }
    /* Toggling the bounds check off keeps it on. */
    CHECK(ubpf_toggle_bounds_check(vm, false) == true);
    CHECK(ubpf_exec(vm, packet, sizeof packet, &value) == -1);
    CHECK(ubpf_toggle_bounds_check(vm, true) == false);
    /* No input at all. */
    CHECK(ubpf_exec(vm, NULL, 0, &value) == -1);
    ubpf_destroy(vm);

    /* A store above the stack. */
    vm = vm_with(WRITE_ABOVE_STACK, sizeof WRITE_ABOVE_STACK);
    ubpf_set_error_print(vm, capture_error);
    CHECK(ubpf_exec(vm, packet, sizeof packet, &value) == -1);
    CHECK(strstr(printed, "store") != NULL);
    fn = ubpf_compile(vm, &errmsg);
    CHECK(fn != NULL && fn(packet, sizeof packet) == UINT64_MAX);
    ubpf_destroy(vm);

    /* An endless loop ends at the instruction limit, in both engines. */
    vm = ubpf_create();
    uint32_t previous = 0;
    CHECK(ubpf_set_instruction_limit(vm, 1000, &previous) == 0);
    CHECK(previous == 10000000);
    CHECK(ubpf_load(vm, ENDLESS, sizeof ENDLESS, &errmsg) == 0);
    ubpf_set_error_print(vm, capture_error);
    CHECK(ubpf_exec(vm, NULL, 0, &value) == -1);
    CHECK(strstr(printed, "budget of 1000") != NULL);
    fn = ubpf_compile(vm, &errmsg);
    CHECK(fn != NULL && fn(NULL, 0) == UINT64_MAX);
    CHECK(strstr(printed, "budget of 1000") != NULL);
    /* The default printer writes to stderr; NULL restores it. */
    ubpf_set_error_print(vm, NULL);
    CHECK(ubpf_exec(vm, NULL, 0, &value) == -1);
    ubpf_destroy(vm);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ROOT\n", argv[0]);
        return 2;
    }
    null_vm();
    bad_arguments(argv[1]);
    wrong_order();
    unknown_helpers(argv[1]);
    faults();
    return finish("errors");
}
