/*
 * Compiles the installed header alone, as C99 and as C++ (tests/capi.rs
 * builds this file with gcc -std=c99 -Wall -Wextra -Werror -pedantic and
 * with g++ -x c++ -Wall -Wextra -Werror), and names every declaration in it.
 */
#include <ubpf.h>
#include <ubpf.h> /* the include guard works */

static uint64_t helper(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
    return a + b + c + d + e;
}

static bool allow(void *context, uint64_t addr, uint64_t size)
{
    (void)context, (void)addr, (void)size;
    return false;
}

static uint64_t relocate(void *context, const uint8_t *data, uint64_t data_size, const char *name,
                         uint64_t offset, uint64_t size)
{
    (void)context, (void)data, (void)data_size, (void)name, (void)offset, (void)size;
    return 0;
}

int main(void)
{
    struct ubpf_vm *vm = ubpf_create();
    char *errmsg = NULL;
    uint64_t result = 0;
    uint32_t previous = 0;
    size_t size = 0;
    uint64_t regs[16];
    enum JitMode mode = BasicJitMode;
    external_function_t fn = helper;
    ubpf_data_relocation relocation = relocate;
    ubpf_bounds_check bounds_check = allow;
    int status = 0;

    status |= ubpf_register(vm, 1, "helper", fn);
    status |= ubpf_register(vm, 2, "helper2", as_external_function_t((void *)0));
    status |= ubpf_set_unwind_function_index(vm, 1);
    status |= ubpf_set_instruction_limit(vm, UBPF_MAX_INSTS, &previous);
    status |= ubpf_register_data_relocation(vm, NULL, relocation);
    status |= ubpf_register_data_bounds_check(vm, NULL, bounds_check);
    status |= ubpf_set_jit_code_size(vm, 4096);
    status |= ubpf_set_pointer_secret(vm, 42);
    ubpf_set_error_print(vm, fprintf);
    ubpf_set_registers(vm, regs);
    (void)ubpf_get_registers(vm);
    (void)ubpf_toggle_bounds_check(vm, true);
    (void)ubpf_toggle_undefined_behavior_check(vm, false);
    status |= ubpf_load(vm, "", 0, &errmsg);
    status |= ubpf_load_elf(vm, "", 0, &errmsg);
    status |= ubpf_load_elf_ex(vm, "", 0, "filter", &errmsg);
    status |= ubpf_exec(vm, NULL, 0, &result);
    status |= ubpf_exec_ex(vm, NULL, 0, &result, NULL, UBPF_EBPF_STACK_SIZE);
    ubpf_jit_fn jit = ubpf_compile(vm, &errmsg);
    ubpf_jit_ex_fn jit_ex = ubpf_compile_ex(vm, &errmsg, mode);
    ubpf_jit_fn alias = ubpf_jit(vm, &errmsg);
    ubpf_jit_fn copy = ubpf_copy_jit(vm, NULL, 0, &errmsg);
    status |= ubpf_translate(vm, NULL, &size, &errmsg);
    status |= ubpf_translate_ex(vm, NULL, &size, &errmsg, ExtendedJitMode);
    char *last = ubpf_last_error();
    ubpf_unload_code(vm);
    ubpf_destroy(vm);
    (void)jit, (void)jit_ex, (void)alias, (void)copy, (void)last;
    return status == -1 && UBPF_HAS_ELF_H && UBPF_MAX_CALL_DEPTH > 0 ? 0 : 1;
}
