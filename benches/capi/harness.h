/*
 * What both C harnesses (bench.c, xdp.c) need: the thread's CPU time, and
 * a whole file read into memory.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* CPU time of this thread: other processes on the machine do not count. */
static uint64_t thread_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The bytes of `path`, or exit with its error. */
static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    uint8_t *bytes = malloc(*len ? *len : 1);
    if (fread(bytes, 1, *len, f) != *len) {
        perror(path);
        exit(1);
    }
    fclose(f);
    return bytes;
}
