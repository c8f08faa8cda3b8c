/*
 * Four threads share one loaded program, as QEMU filtering from several
 * threads would: each calls ubpf_compile (as the RFC does per packet), then
 * for the given time runs packets through ubpf_exec and the compiled
 * function in turn, checking every verdict. A second VM whose program
 * always faults runs alongside, to check that each thread gets its own
 * ubpf_last_error().
 *
 * Usage: threads ROOT [SECONDS]   (default 2)
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <time.h>

#include "common.h"

#define THREADS 4

static const uint64_t READ_AT_100[] = {
    INSN(OP_LDXB, 0, 1, 100, 0),
    INSN(OP_EXIT, 0, 0, 0, 0),
};

struct shared {
    struct ubpf_vm *vm;
    struct ubpf_vm *faulty;
    struct packet packets[64];
    size_t count;
    double seconds;
};

struct result {
    unsigned long runs;
    unsigned long wrong;
    unsigned long fault_checks;
    unsigned long bad_faults;
    ubpf_jit_fn fn;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int quiet(FILE *stream, const char *format, ...)
{
    (void)stream, (void)format;
    return 0;
}

static void *worker(void *arg)
{
    struct shared *shared = ((void **)arg)[0];
    struct result *result = ((void **)arg)[1];
    char *errmsg = NULL;
    result->fn = ubpf_compile(shared->vm, &errmsg);
    free(errmsg);
    ubpf_jit_fn faulty = ubpf_compile(shared->faulty, &errmsg);
    free(errmsg);
    if (result->fn == NULL || faulty == NULL) {
        return NULL;
    }
    uint8_t packet[160];
    double end = now() + shared->seconds;
    for (unsigned long i = 0;; i++) {
        if (i % 256 == 0 && now() >= end) {
            break;
        }
        const struct packet *p = &shared->packets[(i * 7 + (uintptr_t)arg) % shared->count];
        memcpy(packet, p->data, p->len);
        uint64_t verdict = UINT64_MAX;
        if (i % 2) {
            verdict = result->fn(packet, p->len);
        } else if (ubpf_exec(shared->vm, packet, p->len, &verdict) != 0) {
            verdict = UINT64_MAX;
        }
        result->runs++;
        result->wrong += verdict != p->expected;

        if (i % 64 == 0) {
            /* A fault on this thread sets this thread's last error... */
            uint64_t value = 0;
            int failed = i % 128 ? faulty(packet, 10) == UINT64_MAX
                                 : ubpf_exec(shared->faulty, packet, 10, &value) == -1;
            char *last = ubpf_last_error();
            result->fault_checks++;
            result->bad_faults += !failed || last == NULL || strstr(last, "outside") == NULL;
            free(last);
            /* ...and a success clears it, whatever other threads do. */
            if (result->fn(packet, p->len) != p->expected || (last = ubpf_last_error()) != NULL) {
                result->bad_faults++;
                free(last);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s ROOT [SECONDS]\n", argv[0]);
        return 2;
    }
    static struct shared shared;
    shared.seconds = argc == 3 ? atof(argv[2]) : 2.0;
    shared.count = classifier_packets(shared.packets);

    size_t len;
    void *object = read_file(argv[1], "examples/classifier.o", &len);
    char *errmsg = NULL;
    shared.vm = ubpf_create();
    CHECK(ubpf_load_elf(shared.vm, object, len, &errmsg) == 0);
    free(object);
    shared.faulty = ubpf_create();
    CHECK(ubpf_load(shared.faulty, READ_AT_100, sizeof READ_AT_100, &errmsg) == 0);
    ubpf_set_error_print(shared.faulty, quiet);
    free(errmsg);

    pthread_t threads[THREADS];
    struct result results[THREADS];
    void *args[THREADS][2];
    memset(results, 0, sizeof results);
    for (int t = 0; t < THREADS; t++) {
        args[t][0] = &shared;
        args[t][1] = &results[t];
        CHECK(pthread_create(&threads[t], NULL, worker, args[t]) == 0);
    }
    unsigned long runs = 0, wrong = 0, fault_checks = 0, bad_faults = 0;
    for (int t = 0; t < THREADS; t++) {
        CHECK(pthread_join(threads[t], NULL) == 0);
        CHECK(results[t].fn != NULL);
        CHECK(results[t].fn == results[0].fn); /* one compiled program */
        CHECK(results[t].runs > 0);
        runs += results[t].runs;
        wrong += results[t].wrong;
        fault_checks += results[t].fault_checks;
        bad_faults += results[t].bad_faults;
    }
    CHECK(wrong == 0);
    CHECK(bad_faults == 0);
    printf("threads: %d threads, %.1f s, %lu runs, %lu wrong verdicts, %lu fault checks, %lu bad\n",
           THREADS, shared.seconds, runs, wrong, fault_checks, bad_faults);
    ubpf_destroy(shared.vm);
    ubpf_destroy(shared.faulty);
    return finish("threads");
}
