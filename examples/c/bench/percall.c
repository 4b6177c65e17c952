/* Per-call cost, measured inside one process so that all variants see the same
 * machine state.
 *
 *   percall PLAIN.so PAD.so PATCHED.so [ROUNDS]
 *
 * Loads the three objects with dlopen, prints "ready" and waits for a line on
 * stdin (the driver live-patches PATCHED.so's f meanwhile), then times 1e7
 * calls of each f through a function pointer, rotating between the three for
 * ROUNDS rounds, and prints the minimum ns per call of each:
 *
 *   plain=0.912 pad=0.915 patched=1.240
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CALLS 10000000L

typedef int (*fn_t)(int);

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static double time_calls(fn_t fn)
{
    volatile int sink = 0;
    double start = now_ns();
    for (long i = 0; i < CALLS; i++)
        sink += fn((int)i);
    (void)sink;
    return (now_ns() - start) / (double)CALLS;
}

static fn_t load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "percall: %s\n", dlerror());
        exit(1);
    }
    fn_t fn = (fn_t)dlsym(h, "f");
    if (!fn) {
        fprintf(stderr, "percall: %s: no symbol f\n", path);
        exit(1);
    }
    return fn;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: percall PLAIN.so PAD.so PATCHED.so [ROUNDS]\n");
        return 2;
    }
    fn_t fns[3] = {load(argv[1]), load(argv[2]), load(argv[3])};
    int rounds = argc > 4 ? atoi(argv[4]) : 30;
    char line[64];

    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;

    double best[3] = {1e9, 1e9, 1e9};
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            /* rotate the order so that no variant always runs first */
            int v = (k + r) % 3;
            double ns = time_calls(fns[v]);
            if (ns < best[v])
                best[v] = ns;
        }
    }
    printf("plain=%.3f pad=%.3f patched=%.3f f=%d\n", best[0], best[1], best[2], fns[2](1));
    fflush(stdout);
    return 0;
}
