/* Timing of one trivial int f(int) variant, shared by redirect.c and prologues.c.
 *
 * time_calls(f) makes CALLS indirect calls of f (through a volatile copy of the pointer,
 * as percall.c does through dlsym's) and returns the ns per call. The results are
 * summed in a register that an empty asm makes the compiler keep: with percall.c's
 * volatile sum in memory, this loop took 1.7-2.0 ns per call for every variant, plain
 * included, which hid the differences (docs/benchmarks.md). */
#ifndef PULP_BENCH_TIMING_H
#define PULP_BENCH_TIMING_H

#include <time.h>

#define CALLS 10000000L

typedef int (*fn_t)(int);

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static __attribute__((noinline)) double time_calls(fn_t fn)
{
    fn_t volatile vfn = fn;
    fn_t f = vfn;
    int sum = 0;
    double start = now_ns();
    for (long i = 0; i < CALLS; i++) {
        sum += f((int)i);
        __asm__ volatile("" : "+r"(sum));
    }
    double ns = (now_ns() - start) / (double)CALLS;
    __asm__ volatile("" : : "r"(sum));
    return ns;
}

#endif
