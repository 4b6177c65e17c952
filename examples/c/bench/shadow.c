/* Cost of pulp_shadow_get beside a plain hash-map lookup, for pulp-bench shadow.
 *
 *   shadow [ROUNDS]          (run with LD_PRELOAD=libpulp_rs.so; exits 2 without it)
 *
 * For N = 1, 1e3 and 1e6 objects (malloc'd, 64 bytes each) with one shadow each, and as
 * many objects without one, it times LOOKUPS lookups in a fixed random order of:
 *   pulp  pulp_shadow_get(obj, ID)          through the weak declaration of pulp.h,
 *                                           bound to the preloaded runtime
 *   map   map_get(obj, ID)                  a plain open-addressed table (linear probing,
 *                                           load <= 1/2, the same multiplicative hash
 *                                           family), not inlined, no lock, in this program
 * both for keys that have a shadow (hit) and keys that do not (miss), alternating the two
 * for ROUNDS rounds (default 11). One line per N:
 *   n=N pulp_hit=ns map_hit=ns pulp_miss=ns map_miss=ns      (median ns per lookup)
 *
 * Between N = 1e3 and N = 1e6, concurrent readers: T = 1, 2, 4 threads each looking up their own random sequence
 * over the N = 1e3 set, started together; per T the aggregate ns per lookup (wall time /
 * all lookups, so 2 threads on 2 processors ideally halve it), for pulp, for the plain map,
 * for the same map behind a pthread rwlock (what a reader lock costs when readers share
 * it), and for pulp while one more thread keeps allocating and freeing other shadows of
 * the same id (readers then retry when that writer moves entries in their shard):
 *   threads=T pulp=ns map=ns rwlock=ns pulp_writer=ns        (median over ROUNDS)
 *
 * Every lookup result is summed and the sums of pulp and map compared: both tables hold
 * the same data pointers, so a wrong answer is reported (exit 1), not timed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pulp.h"

#define ID 0x5eedUL
#define LOOKUPS (1L << 21)
#define MAX_THREADS 4

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* ---- the plain map -------------------------------------------------------------- */

struct entry {
    void *obj;
    unsigned long id;
    void *data;
};

static struct entry *map;
static size_t map_mask;
static unsigned map_shift;

static inline size_t map_hash(void *obj, unsigned long id)
{
    uint64_t x = (uint64_t)(uintptr_t)obj ^ (id * 0x9e3779b97f4a7c15ULL);
    return (size_t)(((x ^ (x >> 32)) * 0xd6e8feb86659fd93ULL) >> map_shift);
}

static void map_init(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    map = calloc(cap, sizeof *map);
    map_mask = cap - 1;
    map_shift = 64 - (unsigned)__builtin_ctzl(cap);
}

static void map_put(void *obj, unsigned long id, void *data)
{
    size_t i = map_hash(obj, id);
    while (map[i].data)
        i = (i + 1) & map_mask;
    map[i] = (struct entry){obj, id, data};
}

static __attribute__((noinline)) void *map_get(void *obj, unsigned long id)
{
    for (size_t i = map_hash(obj, id);; i = (i + 1) & map_mask) {
        if (!map[i].data)
            return NULL;
        if (map[i].obj == obj && map[i].id == id)
            return map[i].data;
    }
}

static pthread_rwlock_t map_lock = PTHREAD_RWLOCK_INITIALIZER;

static __attribute__((noinline)) void *map_get_locked(void *obj, unsigned long id)
{
    pthread_rwlock_rdlock(&map_lock);
    void *data = map_get(obj, id);
    pthread_rwlock_unlock(&map_lock);
    return data;
}

/* ---- keys and timing ------------------------------------------------------------ */

typedef void *(*lookup_fn)(void *, unsigned long);

static void **with, **without; /* objects with a shadow, objects without */
static uint32_t *order;        /* LOOKUPS indices in [0, n) */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* ns per lookup of objs[order[i]] for LOOKUPS lookups; the sum of results in *sum. */
static __attribute__((noinline)) double time_lookups(lookup_fn get, void **objs, const uint32_t *ord, uintptr_t *sum)
{
    uintptr_t s = 0;
    double start = now_ns();
    for (long i = 0; i < LOOKUPS; i++)
        s += (uintptr_t)get(objs[ord[i]], ID);
    double ns = (now_ns() - start) / (double)LOOKUPS;
    *sum = s;
    return ns;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void check(uintptr_t pulp, uintptr_t plain, const char *what)
{
    if (pulp != plain) {
        printf("error: pulp_shadow_get and the map disagree (%s)\n", what);
        exit(1);
    }
}

static void *pulp_get(void *obj, unsigned long id)
{
    return pulp_shadow_get(obj, id);
}

static void single(size_t n, int rounds)
{
    with = malloc(n * sizeof *with);
    without = malloc(n * sizeof *without);
    map_init(n);
    for (size_t i = 0; i < n; i++) {
        with[i] = malloc(64);
        without[i] = malloc(64);
        void *data = pulp_shadow_alloc(with[i], ID, 16, NULL, NULL);
        if (!data) {
            printf("error: pulp_shadow_alloc failed at %zu\n", i);
            exit(1);
        }
        map_put(with[i], ID, data);
    }
    for (long i = 0; i < LOOKUPS; i++)
        order[i] = (uint32_t)(rng() % n);

    double ph[64], mh[64], pm[64], mm[64];
    for (int r = 0; r < rounds; r++) {
        uintptr_t a, b;
        /* Alternate which goes first, so neither always runs on a warmer cache. */
        if (r % 2) {
            ph[r] = time_lookups(pulp_get, with, order, &a);
            mh[r] = time_lookups(map_get, with, order, &b);
        } else {
            mh[r] = time_lookups(map_get, with, order, &b);
            ph[r] = time_lookups(pulp_get, with, order, &a);
        }
        check(a, b, "hit");
        pm[r] = time_lookups(pulp_get, without, order, &a);
        mm[r] = time_lookups(map_get, without, order, &b);
        check(a, b, "miss");
        if (a != 0) {
            printf("error: a shadow for an object that has none\n");
            exit(1);
        }
    }
    printf("n=%zu pulp_hit=%.2f map_hit=%.2f pulp_miss=%.2f map_miss=%.2f\n", n, median(ph, rounds),
           median(mh, rounds), median(pm, rounds), median(mm, rounds));
    fflush(stdout);

    if (pulp_shadow_free_all(ID, NULL) != n) {
        printf("error: free_all did not free %zu shadows\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        free(with[i]);
        free(without[i]);
    }
    free(with);
    free(without);
    free(map);
}

/* ---- concurrent readers --------------------------------------------------------- */

struct reader {
    pthread_t thread;
    lookup_fn get;
    uint32_t *order;
    uintptr_t sum;
};

static pthread_barrier_t start_line;
static atomic_int writer_stop;

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    pthread_barrier_wait(&start_line);
    time_lookups(r->get, with, r->order, &r->sum);
    return NULL;
}

/* Allocates and frees shadows of objects that readers never look up, until told. */
static void *writer_main(void *arg)
{
    void **objs = arg;
    size_t k = 0;
    while (!atomic_load_explicit(&writer_stop, memory_order_relaxed)) {
        void *o = objs[k++ % 1000];
        if (!pulp_shadow_free(o, ID, NULL))
            pulp_shadow_alloc(o, ID, 16, NULL, NULL);
    }
    return NULL;
}

/* Wall ns per lookup (all threads' lookups together). */
static double concurrent(int threads, lookup_fn get, struct reader *rs, int with_writer, void **churn)
{
    pthread_t writer;
    if (with_writer) {
        atomic_store(&writer_stop, 0);
        pthread_create(&writer, NULL, writer_main, churn);
    }
    pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1);
    for (int t = 0; t < threads; t++) {
        rs[t].get = get;
        pthread_create(&rs[t].thread, NULL, reader_main, &rs[t]);
    }
    pthread_barrier_wait(&start_line);
    double start = now_ns();
    for (int t = 0; t < threads; t++)
        pthread_join(rs[t].thread, NULL);
    double ns = (now_ns() - start) / ((double)LOOKUPS * threads);
    pthread_barrier_destroy(&start_line);
    if (with_writer) {
        atomic_store(&writer_stop, 1);
        pthread_join(writer, NULL);
    }
    return ns;
}

static void multi(int rounds)
{
    const size_t n = 1000;
    with = malloc(n * sizeof *with);
    void **churn = malloc(n * sizeof *churn);
    map_init(n);
    for (size_t i = 0; i < n; i++) {
        with[i] = malloc(64);
        churn[i] = malloc(64);
        void *data = pulp_shadow_alloc(with[i], ID, 16, NULL, NULL);
        map_put(with[i], ID, data);
    }
    struct reader rs[MAX_THREADS];
    for (int t = 0; t < MAX_THREADS; t++) {
        rs[t].order = malloc(LOOKUPS * sizeof *rs[t].order);
        for (long i = 0; i < LOOKUPS; i++)
            rs[t].order[i] = (uint32_t)(rng() % n);
    }
    /* Every read-only measurement first: the writer adds up to n more shadows of the id,
     * which grows pulp's slot arrays, and later reads would probe a half-empty table. */
    double p[3][64], m[3][64], l[3][64], w[3][64];
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0, threads = 1; threads <= MAX_THREADS; k++, threads *= 2) {
            for (int r = 0; r < rounds; r++) {
                uintptr_t pulp_sums[MAX_THREADS];
                if (pass == 0) {
                    p[k][r] = concurrent(threads, pulp_get, rs, 0, NULL);
                    for (int t = 0; t < threads; t++)
                        pulp_sums[t] = rs[t].sum;
                    m[k][r] = concurrent(threads, map_get, rs, 0, NULL);
                    for (int t = 0; t < threads; t++)
                        check(pulp_sums[t], rs[t].sum, "concurrent");
                    l[k][r] = concurrent(threads, map_get_locked, rs, 0, NULL);
                } else {
                    for (int t = 0; t < threads; t++)
                        pulp_sums[t] = rs[t].sum; /* the map's sums, left by pass 0 */
                    w[k][r] = concurrent(threads, pulp_get, rs, 1, churn);
                    for (int t = 0; t < threads; t++)
                        check(rs[t].sum, pulp_sums[t], "concurrent with a writer");
                }
            }
        }
    }
    for (int k = 0, threads = 1; threads <= MAX_THREADS; k++, threads *= 2)
        printf("threads=%d pulp=%.2f map=%.2f rwlock=%.2f pulp_writer=%.2f\n", threads, median(p[k], rounds),
               median(m[k], rounds), median(l[k], rounds), median(w[k], rounds));
    fflush(stdout);
    size_t churned = 0;
    for (size_t i = 0; i < n; i++)
        churned += pulp_shadow_get(churn[i], ID) != NULL;
    if (pulp_shadow_free_all(ID, NULL) != n + churned) {
        printf("error: free_all did not free the %zu + %zu shadows\n", n, churned);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        free(with[i]);
        free(churn[i]);
    }
    for (int t = 0; t < MAX_THREADS; t++)
        free(rs[t].order);
    free(with);
    free(churn);
    free(map);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 11;
    if (rounds < 1 || rounds > 64)
        rounds = 11;
    if (!pulp_shadow_get) {
        printf("error: libpulp_rs.so is not preloaded\n");
        return 2;
    }
    order = malloc(LOOKUPS * sizeof *order);
    /* The concurrent part before the 1e6 set: slot arrays never shrink, and after 1e6
     * shadows the 1e3 set would sit in a nearly empty table, faster than it would be. */
    single(1, rounds);
    single(1000, rounds);
    multi(rounds);
    single(1000000, rounds);
    return 0;
}
