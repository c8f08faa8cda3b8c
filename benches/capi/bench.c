/*
 * Times eBPF programs through the C API that QEMU's filter and C embedders
 * call: ubpf_load_elf(), ubpf_compile(), then the returned ubpf_jit_fn called
 * from C. Each engine is a shared library implementing ubpf.h, opened with
 * dlopen, so qemu-ubpf and iovisor/ubpf run side by side in one process,
 * beside the same C compiled natively and called through a pointer.
 *
 *   bench OBJDIR LIB...    OBJDIR holds NAME.o for every case; each LIB is
 *                          "label=path/to/lib.so"
 *   bench --compile LIB... only the compile times of generated programs
 *   bench --packets DIR    writes the packets as files, for bpftool
 *
 * Every figure is the fastest of BATCHES batches, timed by the thread's CPU
 * time; the batches of all engines take turns, so a slow spell of the
 * machine falls on all of them. Prints one table row per case, in ns.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "packets.h"
#include "harness.h"

typedef uint64_t (*jit_fn)(void *mem, size_t len);
typedef uint64_t (*native_fn)(const uint8_t *pkt, unsigned long len);

struct api {
    const char *label;
    void *(*create)(void);
    void (*destroy)(void *vm);
    int (*load)(void *vm, const void *code, uint32_t len, char **errmsg);
    int (*load_elf)(void *vm, const void *elf, size_t len, char **errmsg);
    jit_fn (*compile)(void *vm, char **errmsg);
    int (*set_jit_code_size)(void *vm, size_t size);
    /* qemu-ubpf's extension; NULL in a library without it. */
    int (*load_filter_expr)(void *vm, const char *expr, uint32_t link_type, char **errmsg);
};

#define BATCHES 15

/* The sum of every result, kept so that no call can be left out. */
volatile uint64_t results_sink;
#define MAX_ENGINES 4

static void *must_sym(void *lib, const char *path, const char *name)
{
    void *sym = dlsym(lib, name);
    if (!sym) {
        fprintf(stderr, "%s has no %s\n", path, name);
        exit(1);
    }
    return sym;
}

static struct api open_api(char *spec)
{
    char *eq = strchr(spec, '=');
    if (!eq) {
        fprintf(stderr, "engine %s: want label=path\n", spec);
        exit(2);
    }
    *eq = 0;
    const char *path = eq + 1;
    /* RTLD_DEEPBIND: each library's own calls stay inside it. */
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        exit(1);
    }
    struct api api = {.label = spec};
    api.create = (void *(*)(void))must_sym(lib, path, "ubpf_create");
    api.destroy = (void (*)(void *))must_sym(lib, path, "ubpf_destroy");
    api.load = (int (*)(void *, const void *, uint32_t, char **))must_sym(lib, path, "ubpf_load");
    api.load_elf = (int (*)(void *, const void *, size_t, char **))must_sym(lib, path, "ubpf_load_elf");
    api.compile = (jit_fn(*)(void *, char **))must_sym(lib, path, "ubpf_compile");
    api.set_jit_code_size = (int (*)(void *, size_t))must_sym(lib, path, "ubpf_set_jit_code_size");
    api.load_filter_expr = (int (*)(void *, const char *, uint32_t, char **))dlsym(lib, "ubpf_load_filter_expr");
    return api;
}

static jit_fn compile_object(const struct api *api, const char *path, void **vm_out)
{
    size_t len;
    uint8_t *elf = read_file(path, &len);
    void *vm = api->create();
    char *err = NULL;
    if (api->load_elf(vm, elf, len, &err) < 0) {
        fprintf(stderr, "%s: %s refused %s: %s\n", api->label, "ubpf_load_elf", path, err);
        exit(1);
    }
    jit_fn fn = api->compile(vm, &err);
    if (!fn) {
        fprintf(stderr, "%s: ubpf_compile refused %s: %s\n", api->label, path, err);
        exit(1);
    }
    free(elf);
    *vm_out = vm;
    return fn;
}

/* One batch: `calls` calls rotating over the packets, in ns per call. */
static double time_jit(jit_fn fn, struct packet *pkts, int npkts, int calls, uint64_t *sink)
{
    uint64_t start = thread_ns();
    for (int i = 0; i < calls; i++) {
        struct packet *p = &pkts[i % npkts];
        *sink += fn(p->bytes, p->len);
    }
    return (double)(thread_ns() - start) / calls;
}

static double time_native(native_fn volatile fn, struct packet *pkts, int npkts, int calls, uint64_t *sink)
{
    uint64_t start = thread_ns();
    for (int i = 0; i < calls; i++) {
        struct packet *p = &pkts[i % npkts];
        *sink += fn(p->bytes, p->len);
    }
    return (double)(thread_ns() - start) / calls;
}

uint64_t classifier_native(const uint8_t *pkt, unsigned long len);
uint64_t checksum_native(const uint8_t *pkt, unsigned long len);
uint64_t empty_native(const uint8_t *pkt, unsigned long len);

struct run_case {
    const char *name;
    native_fn native;
    struct packet *packets;
    int npackets;
    int calls;
};

static void run_case(const char *objdir, const struct run_case *c, struct api *apis, int napis)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.o", objdir, c->name);
    jit_fn fns[MAX_ENGINES];
    void *vms[MAX_ENGINES];
    for (int e = 0; e < napis; e++) {
        fns[e] = compile_object(&apis[e], path, &vms[e]);
        /* Every engine must give the native result on every packet. */
        for (int i = 0; i < c->npackets; i++) {
            uint64_t want = c->native(c->packets[i].bytes, c->packets[i].len);
            uint64_t got = fns[e](c->packets[i].bytes, c->packets[i].len);
            if (got != want) {
                fprintf(stderr, "%s: %s gives %llu on packet %d, native %llu\n", c->name, apis[e].label,
                        (unsigned long long)got, i, (unsigned long long)want);
                exit(1);
            }
        }
    }
    double best_native = 1e18, best[MAX_ENGINES];
    for (int e = 0; e < napis; e++)
        best[e] = 1e18;
    uint64_t sink = 0;
    for (int b = 0; b < BATCHES; b++) {
        double t = time_native(c->native, c->packets, c->npackets, c->calls, &sink);
        if (t < best_native)
            best_native = t;
        for (int e = 0; e < napis; e++) {
            t = time_jit(fns[e], c->packets, c->npackets, c->calls, &sink);
            if (t < best[e])
                best[e] = t;
        }
    }
    printf("%-13s native %8.2f ns", c->name, best_native);
    for (int e = 0; e < napis; e++)
        printf(" | %s %8.2f ns (%.2fx)", apis[e].label, best[e], best[e] / best_native);
    printf("\n");
    results_sink = sink;
    for (int e = 0; e < napis; e++)
        apis[e].destroy(vms[e]);
}

/*
 * Compile time of generated programs: create, load raw bytecode, compile,
 * destroy, in µs. Two shapes: straight-line arithmetic and stack traffic,
 * and blocks as compiled C has them (packet loads, forward branches, a
 * counted loop, stack and packet stores). The largest size is 65,535
 * instructions, the most that both engines load (each refuses more than
 * 65,536; iovisor/ubpf refuses 65,536 itself).
 */
static uint64_t insn(uint8_t op, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
    return op | (uint64_t)(dst | src << 4) << 8 | (uint64_t)(uint16_t)off << 16 | (uint64_t)(uint32_t)imm << 32;
}

static uint8_t *straight_line(int n, uint32_t *len)
{
    uint64_t *insns = calloc((size_t)n, 8);
    for (int i = 0; i < n - 1; i++) {
        uint8_t dst = (uint8_t)(i % 5), src = (uint8_t)((i + 1) % 5);
        int16_t slot = (int16_t)(-8 * (1 + i % 8));
        switch (i % 6) { /* mov/add/xor/lsh/stxdw/ldxdw over r0..r4 and the stack */
        case 0: insns[i] = insn(0xb7, dst, 0, 0, i); break;
        case 1: insns[i] = insn(0x0f, dst, src, 0, 0); break;
        case 2: insns[i] = insn(0xaf, dst, src, 0, 0); break;
        case 3: insns[i] = insn(0x67, dst, 0, 0, 3); break;
        case 4: insns[i] = insn(0x7b, 10, dst, slot, 0); break;
        default: insns[i] = insn(0x79, dst, 10, slot, 0); break;
        }
    }
    insns[n - 1] = insn(0x95, 0, 0, 0, 0);
    *len = (uint32_t)n * 8;
    return (uint8_t *)insns;
}

#define BLOCK 16
static uint8_t *branchy(int n, uint32_t *len)
{
    uint64_t *insns = calloc((size_t)n, 8);
    int i = 0;
    insns[i++] = insn(0xbf, 6, 1, 0, 0); /* r6 = packet */
    insns[i++] = insn(0xbf, 7, 2, 0, 0); /* r7 = length */
    insns[i++] = insn(0xb7, 0, 0, 0, 0);
    insns[i++] = insn(0xb7, 5, 0, 0, 0);
    for (int k = 0; i + BLOCK < n; k++) {
        int16_t at = (int16_t)(k % 60), slot = (int16_t)(-8 * (1 + k % 8));
        insns[i++] = insn(0x71, 3, 6, at, 0);             /* r3 = *(u8 *)(r6 + at) */
        insns[i++] = insn(0x25, 3, 0, 3, 0x40 + k % 64);  /* if r3 > imm goto +3 */
        insns[i++] = insn(0x0f, 0, 3, 0, 0);              /* r0 += r3 */
        insns[i++] = insn(0xbf, 4, 0, 0, 0);              /* r4 = r0 */
        insns[i++] = insn(0x67, 4, 0, 0, 3);              /* r4 <<= 3 */
        insns[i++] = insn(0x7b, 10, 0, slot, 0);          /* *(u64 *)(r10 + slot) = r0 */
        insns[i++] = insn(0x79, 5, 10, slot, 0);          /* r5 = *(u64 *)(r10 + slot) */
        insns[i++] = insn(0xb7, 8, 0, 0, 3);              /* r8 = 3 */
        insns[i++] = insn(0x0f, 0, 8, 0, 0);              /* loop: r0 += r8 */
        insns[i++] = insn(0x17, 8, 0, 0, 1);              /* r8 -= 1 */
        insns[i++] = insn(0x55, 8, 0, -3, 0);             /* if r8 != 0 goto loop */
        insns[i++] = insn(0x1d, 0, 3, 4, 0);              /* if r0 == r3 goto next block */
        insns[i++] = insn(0xaf, 0, 5, 0, 0);              /* r0 ^= r5 */
        insns[i++] = insn(0x63, 6, 0, (int16_t)(at & ~3), 0); /* *(u32 *)(r6 + at) = r0 */
        insns[i++] = insn(0x57, 0, 0, 0, 0xffff);         /* r0 &= 0xffff */
        insns[i++] = insn(0x2d, 4, 7, 0, 0);              /* if r4 > r7 goto +0 */
    }
    while (i < n - 1)
        insns[i++] = insn(0x07, 0, 0, 0, 1);
    insns[n - 1] = insn(0x95, 0, 0, 0, 0);
    *len = (uint32_t)n * 8;
    return (uint8_t *)insns;
}

static void compile_times(struct api *apis, int napis)
{
    static const int sizes[] = {100, 1000, 10000, 65535};
    static const struct {
        const char *name;
        uint8_t *(*generate)(int n, uint32_t *len);
    } shapes[] = {{"straight", straight_line}, {"branchy", branchy}};
    for (size_t g = 0; g < sizeof(shapes) / sizeof(shapes[0]); g++) {
        double per_1000[MAX_ENGINES];
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            uint32_t len;
            uint8_t *code = shapes[g].generate(sizes[s], &len);
            double best[MAX_ENGINES];
            for (int e = 0; e < napis; e++)
                best[e] = 1e18;
            int reps = sizes[s] >= 10000 ? 5 : 50;
            for (int b = 0; b < BATCHES; b++) {
                for (int e = 0; e < napis; e++) {
                    uint64_t start = thread_ns();
                    for (int r = 0; r < reps; r++) {
                        void *vm = apis[e].create();
                        char *err = NULL;
                        /* iovisor/ubpf's JIT writes into a buffer of this size, 64 KiB unless set. */
                        if (apis[e].set_jit_code_size)
                            apis[e].set_jit_code_size(vm, 65536 + 32 * (size_t)sizes[s]);
                        if (apis[e].load(vm, code, len, &err) < 0 || !apis[e].compile(vm, &err)) {
                            fprintf(stderr, "%s: %s %d: %s\n", apis[e].label, shapes[g].name, sizes[s], err);
                            exit(1);
                        }
                        apis[e].destroy(vm);
                    }
                    double t = (double)(thread_ns() - start) / reps / 1000.0;
                    if (t < best[e])
                        best[e] = t;
                }
            }
            printf("compile %-8s %5d", shapes[g].name, sizes[s]);
            for (int e = 0; e < napis; e++) {
                printf(" | %s %8.1f µs %4.0f ns/insn", apis[e].label, best[e], best[e] * 1000.0 / sizes[s]);
                if (sizes[s] == 1000)
                    per_1000[e] = best[e];
                if (sizes[s] == 10000)
                    printf(" %4.1fx of 1000", best[e] / per_1000[e]);
            }
            for (int e = 1; e < napis; e++)
                printf(" | %s/%s %.2f", apis[0].label, apis[e].label, best[0] / best[e]);
            printf("\n");
            free(code);
        }
    }
}

/*
 * Compile time of a tcpdump expression for Ethernet (libpcap's
 * pcap_compile, the translation into eBPF, verification, JIT): create,
 * ubpf_load_filter_expr, ubpf_compile, destroy, in µs, for the engines
 * that have ubpf_load_filter_expr.
 */
static void expression_times(struct api *apis, int napis)
{
    static const char *const expressions[] = {
        "dst host 1.1.1.1",
        "tcp port 443 and not src net 10.0.0.0/8",
        "vlan and tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn and ip[2:2] > 576",
    };
    /* The process's first expression also loads libpcap (dlopen on first
     * use): timed once, on its own, before the best-of batches. */
    printf("first expression in the process, with libpcap's loading");
    for (int e = 0; e < napis; e++) {
        if (!apis[e].load_filter_expr)
            continue;
        uint64_t start = thread_ns();
        void *vm = apis[e].create();
        char *err = NULL;
        if (apis[e].load_filter_expr(vm, expressions[0], 1, &err) < 0 || !apis[e].compile(vm, &err)) {
            fprintf(stderr, "%s: '%s': %s\n", apis[e].label, expressions[0], err);
            exit(1);
        }
        apis[e].destroy(vm);
        printf(" | %s %7.1f µs", apis[e].label, (double)(thread_ns() - start) / 1000.0);
    }
    printf("\n");
    for (size_t x = 0; x < sizeof(expressions) / sizeof(expressions[0]); x++) {
        printf("compile expression '%s'", expressions[x]);
        for (int e = 0; e < napis; e++) {
            if (!apis[e].load_filter_expr)
                continue;
            double best = 1e18;
            const int reps = 50;
            for (int b = 0; b < BATCHES; b++) {
                uint64_t start = thread_ns();
                for (int r = 0; r < reps; r++) {
                    void *vm = apis[e].create();
                    char *err = NULL;
                    if (apis[e].load_filter_expr(vm, expressions[x], 1, &err) < 0 || !apis[e].compile(vm, &err)) {
                        fprintf(stderr, "%s: '%s': %s\n", apis[e].label, expressions[x], err);
                        exit(1);
                    }
                    apis[e].destroy(vm);
                }
                double t = (double)(thread_ns() - start) / reps / 1000.0;
                if (t < best)
                    best = t;
            }
            printf(" | %s %7.1f µs", apis[e].label, best);
        }
        printf("\n");
    }
}

static int write_packets(const char *dir)
{
    struct packet mix[4], big;
    int n = packet_mix(mix);
    packet_1500(&big);
    char path[4096];
    for (int i = 0; i <= n; i++) {
        const struct packet *p = i < n ? &mix[i] : &big;
        snprintf(path, sizeof(path), i < n ? "%s/mix%d.bin" : "%s/big.bin", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(p->bytes, 1, p->len, f) != p->len || fclose(f) != 0) {
            perror(path);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--packets") == 0)
        return write_packets(argv[2]);
    int compile_only = argc > 1 && strcmp(argv[1], "--compile") == 0;
    if (argc < 3 || argc - 2 > MAX_ENGINES) {
        fprintf(stderr, "usage: %s OBJDIR|--compile label=lib.so...\n", argv[0]);
        return 2;
    }
    struct api apis[MAX_ENGINES];
    int napis = argc - 2;
    for (int e = 0; e < napis; e++)
        apis[e] = open_api(argv[2 + e]);

    if (!compile_only) {
        struct packet mix[4], big[1];
        int nmix = packet_mix(mix);
        packet_1500(&big[0]);
        const struct run_case cases[] = {
            {"classifier", classifier_native, mix, nmix, 2000000},
            {"classifier.v3", classifier_native, mix, nmix, 2000000},
            {"checksum", checksum_native, big, 1, 20000},
            {"empty", empty_native, mix, nmix, 5000000},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
            run_case(argv[1], &cases[i], apis, napis);
    }
    compile_times(apis, napis);
    if (!compile_only)
        expression_times(apis, napis);
    return 0;
}
