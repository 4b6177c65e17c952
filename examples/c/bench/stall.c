/* Pause-time target.
 *
 *   stall NTHREADS
 *
 * One thread ("spinner") spins on the clock and records the longest gap between two
 * reads (the longest time it was kept from running); NTHREADS-1 more threads sleep
 * 1 ms and call f(1), over and over. f lives in a live-patchable library.
 * Commands on stdin, one reply line each:
 *   reset   forget the longest gap            -> "reset"
 *   gap     the longest gap since the reset   -> "gap_ns=N"
 *   call    f(1) from the main thread         -> "f=N"
 *   quit    exit
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int f(int);

static atomic_long longest_gap;
static atomic_int reset_requested;
static atomic_long calls;

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *spinner(void *arg)
{
    (void)arg;
    long last = now_ns();
    for (;;) {
        long t = now_ns();
        if (atomic_exchange(&reset_requested, 0)) {
            atomic_store(&longest_gap, 0);
            last = t;
        }
        if (t - last > atomic_load(&longest_gap))
            atomic_store(&longest_gap, t - last);
        last = t;
    }
    return NULL;
}

static void *caller(void *arg)
{
    (void)arg;
    const struct timespec ms = {0, 1000000};
    for (;;) {
        nanosleep(&ms, NULL);
        atomic_fetch_add(&calls, f(1));
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2;
    pthread_t t;
    char line[64];

    if (n > 0 && pthread_create(&t, NULL, spinner, NULL) != 0)
        return 1;
    /* So that pulp-bench can find it in /proc/PID/task/TID/comm. */
    if (n > 0)
        pthread_setname_np(t, "spinner");
    for (int i = 1; i < n; i++)
        if (pthread_create(&t, NULL, caller, NULL) != 0)
            return 1;
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "reset", 5)) {
            atomic_store(&reset_requested, 1);
            usleep(10000);
            printf("reset\n");
        } else if (!strncmp(line, "gap", 3)) {
            printf("gap_ns=%ld\n", atomic_load(&longest_gap));
        } else if (!strncmp(line, "call", 4)) {
            printf("f=%d\n", f(1));
        } else if (!strncmp(line, "quit", 4)) {
            return 0;
        } else {
            printf("unknown command\n");
        }
        fflush(stdout);
    }
    return 0;
}
