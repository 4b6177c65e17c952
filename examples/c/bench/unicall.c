/* Per-call cost during a transition, for pulp-bench universes.
 *
 *   unicall [ROUNDS] [CALLS]
 *
 * Two threads: this one reads commands on stdin and times calls; a second one is
 * blocked inside libuni.so (uni_block on a pipe), which holds a transition open.
 * Commands, one reply line each:
 *   which    w=N: uni_w(0) through a pointer: 1, or 2 when this thread runs the fix
 *   time     f=.. g=.. u=.. s=..: the minimum ns per call of each of libuni's four
 *            functions (libuni.c), CALLS calls each through a function pointer,
 *            rotating between the four for ROUNDS rounds (default 30 and 5e6)
 *   release  let the blocked thread out of the library; it then waits in read()
 *            called from this program, outside every target  -> "released"
 *   quit     exit
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*uni_fn)(int);

int uni_f(int);
int uni_u(int);
uni_fn uni_static(char which);
int uni_block(int fd);

#define VARIANTS 4

static const char *const names[VARIANTS] = {"f", "g", "u", "s"};
static const int adds[VARIANTS] = {1, 3, 2, 4};

static int hold[2], park[2];
static atomic_int out_of_library;

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* As in redirect.c: a volatile copy of the pointer (an indirect call), the results
 * summed in a register an empty asm makes the compiler keep. */
static __attribute__((noinline)) double time_calls(uni_fn fn, long calls)
{
    uni_fn volatile vfn = fn;
    uni_fn f = vfn;
    int sum = 0;
    double start = now_ns();
    for (long i = 0; i < calls; i++) {
        sum += f((int)i);
        __asm__ volatile("" : "+r"(sum));
    }
    double ns = (now_ns() - start) / (double)calls;
    __asm__ volatile("" : : "r"(sum));
    return ns;
}

/* Check each function's result, then print the minimum ns per call of each. */
static void time_all(uni_fn const *fns, int rounds, long calls)
{
    double best[VARIANTS];
    for (int v = 0; v < VARIANTS; v++) {
        best[v] = 1e9;
        for (int x = -3; x < 100; x += 7)
            if (fns[v](x) != x + adds[v]) {
                printf("error %s(%d) = %d, not %d\n", names[v], x, fns[v](x), x + adds[v]);
                return;
            }
    }
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < VARIANTS; k++) {
            int v = (k + r) % VARIANTS; /* rotate: no variant always runs first */
            double ns = time_calls(fns[v], calls);
            if (ns < best[v])
                best[v] = ns;
        }
    for (int v = 0; v < VARIANTS; v++)
        printf("%s%s=%.3f", v ? " " : "", names[v], best[v]);
    printf("\n");
}

static void *blocker(void *arg)
{
    (void)arg;
    char c;
    uni_block(hold[0]);
    atomic_store(&out_of_library, 1);
    for (;;)
        if (read(park[0], &c, 1) <= 0)
            pause();
    return NULL;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 30;
    long calls = argc > 2 ? atol(argv[2]) : 5000000L;
    uni_fn fns[VARIANTS] = {uni_f, uni_static('g'), uni_u, uni_static('s')};
    uni_fn which = uni_static('w');
    pthread_t t;
    char line[64];

    if (pipe(hold) || pipe(park) || pthread_create(&t, NULL, blocker, NULL))
        return 1;
    /* Give the blocker time to enter uni_block's read() before anyone patches. */
    usleep(50000);
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "which", 5)) {
            printf("w=%d\n", which(0));
        } else if (!strncmp(line, "time", 4)) {
            time_all(fns, rounds, calls);
        } else if (!strncmp(line, "release", 7)) {
            if (write(hold[1], "x", 1) != 1)
                return 1;
            while (!atomic_load(&out_of_library))
                usleep(100);
            usleep(1000); /* into its read() of park[0] */
            printf("released\n");
        } else if (!strncmp(line, "quit", 4)) {
            return 0;
        } else {
            printf("unknown command\n");
        }
        fflush(stdout);
    }
    return 0;
}
