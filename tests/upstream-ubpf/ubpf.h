/*
 * The part of iovisor/ubpf's C API that libqemu-ubpf implements too, and
 * nothing else: no map, no Linux helper, no ubpf_last_error().
 *
 * Written for this project from the signatures iovisor/ubpf documents, so
 * that QEMU's filter-ubpf can be built as it would be against iovisor/ubpf
 * itself: scripts/qemu-build-upstream.sh puts this header first on the
 * include path and links a copy of libqemu-ubpf that exports only the
 * functions declared here (its version script is made from this file).
 */

#ifndef UPSTREAM_UBPF_H
#define UPSTREAM_UBPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An eBPF virtual machine: its helpers, its program, its compiled code. */
struct ubpf_vm;

/* Compiled code: runs the program over mem_len bytes at mem. */
typedef uint64_t (*ubpf_jit_fn)(void *mem, size_t mem_len);

/* A helper the program calls by index; r1 to r5 in, r0 out. */
typedef uint64_t (*external_function_t)(uint64_t p0, uint64_t p1, uint64_t p2,
                                        uint64_t p3, uint64_t p4);

/* A new VM (bounds checks on), or NULL when memory is short. */
struct ubpf_vm *ubpf_create(void);

/* Frees the VM, its program and its compiled code (not NULL: iovisor/ubpf
 * dereferences it). */
void ubpf_destroy(struct ubpf_vm *vm);

/* Turns the interpreter's memory checks on or off; returns the old value. */
bool ubpf_toggle_bounds_check(struct ubpf_vm *vm, bool enable);

/* Where run-time errors go: printf-like, called with stderr; NULL restores
 * the default (fprintf). */
void ubpf_set_error_print(struct ubpf_vm *vm,
                          int (*error_printf)(FILE *stream, const char *format,
                                              ...));

/* Makes fn helper number index, called name; 0 or -1. */
int ubpf_register(struct ubpf_vm *vm, unsigned int index, const char *name,
                  external_function_t fn);

/* Loads and checks raw bytecode; 0, or -1 with *errmsg (free()) set. */
int ubpf_load(struct ubpf_vm *vm, const void *code, uint32_t code_len,
              char **errmsg);

/* Loads the first program of an ELF object; as ubpf_load(). */
int ubpf_load_elf(struct ubpf_vm *vm, const void *elf, size_t elf_len,
                  char **errmsg);

/* Loads the program of the ELF object's section main_section_name (the
 * first program when NULL); as ubpf_load(). */
int ubpf_load_elf_ex(struct ubpf_vm *vm, const void *elf, size_t elf_len,
                     const char *main_section_name, char **errmsg);

/* Unloads the program, so that another can be loaded. */
void ubpf_unload_code(struct ubpf_vm *vm);

/* Interprets the program over mem_len bytes at mem; 0 with
 * *bpf_return_value set, or -1 after printing the error. */
int ubpf_exec(const struct ubpf_vm *vm, void *mem, size_t mem_len,
              uint64_t *bpf_return_value);

/* Compiles the loaded program; NULL with *errmsg (free()) on failure. */
ubpf_jit_fn ubpf_compile(struct ubpf_vm *vm, char **errmsg);

/* Sets the number of instructions one run may execute. */
int ubpf_set_instruction_limit(struct ubpf_vm *vm, uint32_t limit,
                               uint32_t *previous_limit);

#ifdef __cplusplus
}
#endif

#endif /* UPSTREAM_UBPF_H */
