/*
 * A guest that makes every packet fault must not flood the host's log:
 * with no error printer set, 10,000 faulting runs in the interpreter and
 * 10,000 through the compiled function print the first few messages, a
 * note that the rest are counted, at most one summary a second, and the
 * count when the VM goes; an embedder's printer gets every message.
 *
 * Usage: flood ROOT
 */
#include "common.h"

#include <time.h>
#include <unistd.h>

/* r0 = the byte at r1 + 100: faults on shorter packets. */
static const uint64_t READ_AT_100[] = {
    INSN(OP_LDXB, 0, 1, 100, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

#define RUNS 10000

static int messages;

static int count_messages(FILE *stream, const char *format, ...)
{
    (void)stream, (void)format;
    messages++;
    return 0;
}

static struct ubpf_vm *faulting_vm(ubpf_jit_fn *jit)
{
    char *errmsg = NULL;
    struct ubpf_vm *vm = ubpf_create();
    CHECK(vm != NULL);
    CHECK(ubpf_load(vm, READ_AT_100, sizeof READ_AT_100, &errmsg) == 0);
    free(errmsg);
    errmsg = NULL;
    *jit = ubpf_compile(vm, &errmsg);
    CHECK(*jit != NULL);
    free(errmsg);
    return vm;
}

/* Makes RUNS faulting runs in each engine; counts those that failed. */
static int fault(struct ubpf_vm *vm, ubpf_jit_fn jit)
{
    uint8_t packet[20] = {0};
    uint64_t r0;
    int failed = 0;
    for (int i = 0; i < RUNS; i++) {
        failed += ubpf_exec(vm, packet, sizeof packet, &r0) == -1;
        failed += jit(packet, sizeof packet) == UINT64_MAX;
    }
    return failed;
}

/* The lines in `file` from its start, and whether the last holds `needle`. */
static int count_lines(FILE *file, const char *needle, int *last_has_needle)
{
    char line[1024];
    int lines = 0;
    rewind(file);
    while (fgets(line, sizeof line, file) != NULL) {
        lines++;
        *last_has_needle = strstr(line, needle) != NULL;
    }
    return lines;
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    ubpf_jit_fn jit;

    /* The default printer, with stderr in a temporary file. */
    FILE *log = tmpfile();
    CHECK(log != NULL);
    fflush(stderr);
    int saved = dup(2);
    CHECK(dup2(fileno(log), 2) == 2);

    struct timespec start, end;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &start) == 0);
    struct ubpf_vm *vm = faulting_vm(&jit);
    CHECK(fault(vm, jit) == 2 * RUNS);
    /* A second later, the next fault brings a summary. */
    sleep(1);
    uint8_t packet[20] = {0};
    uint64_t r0;
    CHECK(ubpf_exec(vm, packet, sizeof packet, &r0) == -1);
    CHECK(fault(vm, jit) == 2 * RUNS);
    ubpf_destroy(vm);
    CHECK(clock_gettime(CLOCK_MONOTONIC, &end) == 0);
    /* Whole seconds begun while faulting (slow under qemu-user). */
    long seconds = end.tv_sec - start.tv_sec + 1;

    fflush(stderr);
    CHECK(dup2(saved, 2) == 2);
    close(saved);
    int last_counts = 0;
    int lines = count_lines(log, " more run-time faults, not printed", &last_counts);
    CHECK(last_counts);
    /* Every fault is printed or counted once. */
    int summaries = 0;
    long counted = 0;
    rewind(log);
    char line[1024];
    while (fgets(line, sizeof line, log) != NULL) {
        long count;
        printf("stderr: %s", line);
        summaries += strstr(line, " more run-time faults in the last ") != NULL &&
                     strstr(line, "; the latest: ") != NULL;
        if (strstr(line, " more run-time faults") != NULL && sscanf(line, "qemu-ubpf: %ld more", &count) == 1) {
            counted += count;
        }
    }
    CHECK(counted == 4 * RUNS + 1 - 5);
    /* 5 messages, the note, the summaries (one after the sleep, and at
     * most one for each other second the runs took), the count at the end. */
    CHECK(summaries >= 1 && summaries <= seconds);
    CHECK(lines == 5 + 1 + summaries + 1);
    fclose(log);

    /* An embedder's printer gets every message. */
    vm = faulting_vm(&jit);
    ubpf_set_error_print(vm, count_messages);
    CHECK(fault(vm, jit) == 2 * RUNS);
    CHECK(messages == 2 * RUNS);
    ubpf_destroy(vm);

    return finish("flood");
}
