/* Per-call cost of each prologue kind, measured side by side in one process
 * (pulp-bench prologues).
 *
 *   prologues PLAIN.so PAD.so NEAR.so ENDBR.so PG.so PGCLANG.so PGOTHER.so PGGLIBC.so [ROUNDS]
 *
 * The same trivial int f(int) (f.c) in each object, and exe_f below, which lives in
 * this executable (built -fPIE with the NOP pad: more than 2 GiB from the runtime, so
 * a patch of it uses the far layout). PGGLIBC.so is opened with RTLD_DEEPBIND, so
 * its call to __fentry__ binds to the C library's (the runtime, preloaded, defines
 * __fentry__ for every other object); the program checks which __fentry__ each gcc
 * -pg object's GOT slot holds.
 *
 * Prints "ready" and then, for every line read on stdin ("go"; the driver patches
 * some of the functions in between), times 1e7 calls of each variant through a
 * function pointer, rotating between them for ROUNDS rounds (default 30), and prints
 * one line: the minimum ns per call of each, and what each returns for 1 (2: f, 3:
 * the fix):
 *
 *   plain=1.000 pad=1.000 ... ret=22332...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VARIANTS 9

#include "timing.h"

static const char *const names[VARIANTS] = {"plain", "pad", "near", "endbr", "far",
                                            "pg", "pgclang", "pgother", "pgglibc"};

/* The function patched through the far layout. Global, so that pulp pack finds it
 * without an inlining warning; only ever called through a pointer. */
__attribute__((noinline)) int exe_f(int x)
{
    return x + 1;
}

static fn_t load(const char *path, int flags)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | flags);
    if (!h) {
        fprintf(stderr, "prologues: %s\n", dlerror());
        exit(1);
    }
    fn_t fn = (fn_t)dlsym(h, "f");
    if (!fn) {
        fprintf(stderr, "prologues: %s: no symbol f\n", path);
        exit(1);
    }
    return fn;
}

/* The __fentry__ a gcc -pg function calls: its entry is `ff 15 disp32`
 * (call *slot(%rip)); returns what the slot holds, or NULL for another entry. */
static void *fentry_target(fn_t fn)
{
    const unsigned char *p = (const unsigned char *)fn;
    if (p[0] != 0xff || p[1] != 0x15)
        return NULL;
    int32_t disp;
    memcpy(&disp, p + 2, 4);
    void *slot;
    memcpy(&slot, p + 6 + disp, sizeof slot);
    return slot;
}

int main(int argc, char **argv)
{
    if (argc < 9) {
        fprintf(stderr, "usage: prologues PLAIN.so PAD.so NEAR.so ENDBR.so PG.so PGCLANG.so "
                        "PGOTHER.so PGGLIBC.so [ROUNDS]\n");
        return 2;
    }
    fn_t fns[VARIANTS];
    for (int v = 0; v < VARIANTS; v++) {
        if (v == 4)
            fns[v] = exe_f;
        else
            fns[v] = load(argv[v < 4 ? v + 1 : v], v == 8 ? RTLD_DEEPBIND : 0);
    }
    int rounds = argc > 9 ? atoi(argv[9]) : 30;

    /* Which __fentry__ the gcc objects reach: the runtime's (the global definition,
     * first in the preload order) and, under RTLD_DEEPBIND, the C library's. */
    void *global = dlsym(RTLD_DEFAULT, "__fentry__");
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void *glibc = libc ? dlsym(libc, "__fentry__") : NULL;
    void *pg = fentry_target(fns[5]), *deep = fentry_target(fns[8]);
    if (!global || !glibc || global == glibc || pg != global || deep != glibc) {
        fprintf(stderr, "prologues: __fentry__: global %p, C library %p, PG.so calls %p, "
                        "PGGLIBC.so calls %p\n", global, glibc, pg, deep);
        return 1;
    }

    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        double best[VARIANTS];
        for (int v = 0; v < VARIANTS; v++)
            best[v] = 1e9;
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < VARIANTS; k++) {
                int v = (k + r) % VARIANTS; /* rotate: no variant always runs first */
                double ns = time_calls(fns[v]);
                if (ns < best[v])
                    best[v] = ns;
            }
        for (int v = 0; v < VARIANTS; v++)
            printf("%s=%.3f ", names[v], best[v]);
        printf("ret=");
        for (int v = 0; v < VARIANTS; v++)
            printf("%d", fns[v](1));
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
