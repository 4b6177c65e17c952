/* pulp.h — the API libpulp-rs's runtime (libpulp_rs.so) offers to library authors. */
#ifndef PULP_H
#define PULP_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Call from a loop that never leaves a live-patchable library (a worker thread's main
 * loop), at a point where the thread holds no state that depends on the library's
 * current code: a patch transition then moves this thread to the new universe instead
 * of waiting for it to leave. Cheap (one load and a branch) when no transition runs.
 *
 * Declared weak so that a library calling it still loads and runs without the runtime;
 * call it as:   if (pulp_quiescent) pulp_quiescent();                                 */
void pulp_quiescent(void) __attribute__((weak));

/* ---- Callbacks a patch object may define (export them: default visibility) ----------
 *
 * The runtime calls them as the kernel livepatch calls its own, in the thread
 * pulp-trigger borrowed, on the runtime's own stack (1 MiB), with every signal blocked,
 * while no other request can run. They may call the C library and the patch's targets
 * (the patch's own functions are not redirected to yet in pre_patch), take locks that
 * are only ever held briefly, allocate memory, and use the shadow variables below. They
 * must not block for long: pulp-trigger abandons a callback that has not returned within
 * its --timeout (2 to 60 s) and one that crashes; an abandoned pre_patch refuses the
 * patch, and whatever the abandoned code held (a lock it took) stays held, so keep them
 * short and simple.
 *
 *   pulp_pre_patch    before any function of the patch can run. Return 0 to go on; any
 *                     other value refuses the patch (nothing changes, pulp-trigger exits
 *                     1 and prints `why`, a NUL-terminated message of at most `size`
 *                     bytes the callback may write).
 *   pulp_post_patch   once every thread runs the patch (after --force too).
 *   pulp_pre_unpatch  before a revert starts (cannot refuse).
 *   pulp_post_unpatch once no thread runs the patch any more; also after an apply that
 *                     was rolled back (--reverse) or refused after pre_patch returned 0
 *                     (e.g. too many code ranges for a transition), since pre_patch ran.
 * A revert rolled back runs pulp_post_patch again. The callbacks of patches a cumulative
 * (%replace) patch replaces are not run: the cumulative patch's take over.            */
int pulp_pre_patch(char *why, unsigned long size);
void pulp_post_patch(void);
void pulp_pre_unpatch(void);
void pulp_post_unpatch(void);

/* The version of state `id` (`%state ID VERSION` in a .dsc) that the applied patches
 * declare (the highest), or -1 when none does. In a callback, the patch's own
 * declaration is left out: it tells what setup an earlier patch already did. A patch
 * declaring a lower version than an applied one is refused.                          */
long pulp_state_version(unsigned long id) __attribute__((weak));

/* ---------------------------------------------------------------------------------------
 * Shadow variables: new data attached to existing objects, without changing their layout.
 *
 * A fix that needs a new field in a structure the target already has (a lock, a counter,
 * a flag) cannot change that structure: objects created before the patch have the old
 * layout, and the rest of the program still uses it. Instead the patch attaches a shadow
 * to each object: a block of zeroed memory found by the pair (object pointer, id).
 *
 *   OBJ  any pointer identifying the object (usually its address; NULL is a valid key).
 *        The runtime never dereferences it.
 *   ID   a number naming the kind of shadow. Ids are global to the process: choose them
 *        so that different patches do not collide (for example a CVE number, or a fixed
 *        random 64-bit value), and keep the same id in a later patch (a cumulative one)
 *        that must find the shadows an earlier one created.
 *
 * Typical use, in the patch's new functions:
 *
 *     struct conn_extra { pthread_mutex_t lock; unsigned retries; };
 *     #define CONN_EXTRA 0x2026123400000001UL
 *
 *     static int conn_extra_init(void *obj, void *shadow, void *arg)
 *     {
 *         struct conn_extra *x = shadow;            // zeroed memory
 *         return pthread_mutex_init(&x->lock, NULL); // 0 keeps the shadow
 *     }
 *     static void conn_extra_fini(void *obj, void *shadow)
 *     {
 *         pthread_mutex_destroy(&((struct conn_extra *)shadow)->lock);
 *     }
 *
 *     int conn_send_fixed(struct conn *c, ...)   // replaces conn_send
 *     {
 *         struct conn_extra *x = pulp_shadow_get_or_alloc(c, CONN_EXTRA, sizeof *x,
 *                                                         conn_extra_init, NULL);
 *         if (!x)
 *             return -ENOMEM;                      // or fall back to the old behaviour
 *         ...
 *     }
 *     void conn_free_fixed(struct conn *c)       // replaces conn_free
 *     {
 *         pulp_shadow_free(c, CONN_EXTRA, conn_extra_fini);
 *         ...the original body...
 *     }
 *
 * Lifetime (who frees what):
 * - A shadow lives until pulp_shadow_free or pulp_shadow_free_all frees it. The runtime
 *   never frees one by itself: not when the object is freed (the patch must replace the
 *   object's destructor, or whatever frees it, and free the shadow there), and not when
 *   the patch is reverted.
 * - On revert, the patch frees its shadows itself: its unpatch callback calls
 *   pulp_shadow_free_all(ID, destructor) once per id it uses. Shadows left behind stay
 *   allocated until the process exits, and a later patch using the same id finds them.
 * - The patch object stays loaded after a revert, so constructors and destructors that
 *   live in it can still be called.
 * - Freeing is immediate: no thread may use a shadow's pointer after the call that frees
 *   it. As with the object itself, the program must ensure nobody still uses it (free the
 *   shadow where the object is freed, under the same rules).
 * - Shadow data is allocated with calloc (size 0 gets a unique pointer), aligned like
 *   malloc's (16 bytes), and freed with free, after the destructor ran.
 *
 * Threads: every function may be called from any thread, concurrently, including for the
 * same key. pulp_shadow_get takes no lock and writes no shared memory: it is a hash and a
 * probe of an open-addressed table (docs/benchmarks.md has its cost), cheap enough for a
 * hot path; it only repeats the probe when a writer moved entries under it. The other
 * functions take the lock of one of 64 shards for a short time (free_all: each in turn).
 *
 * Constructors and destructors run in the calling thread with no lock of the runtime
 * held: they may call any pulp_shadow_* function. A constructor runs on the zeroed data
 * before anyone else can see the shadow, and exactly once per shadow: a thread asking
 * for a shadow whose constructor is running waits for it. So a constructor must return
 * (not longjmp or throw), and must not wait for another shadow whose constructor waits
 * for this one (a cycle, as with two locks). A constructor asking for its own shadow gets
 * NULL with errno EDEADLK. Destructors run after the shadow left the table.
 *
 * Not async-signal-safe (do not call from a signal handler), except pulp_shadow_get
 * from a handler that did not interrupt a pulp_shadow_* call. fork(): the child has the
 * parent's shadows, consistent; constructors that other threads of the parent were
 * running are not finished in the child and those shadows do not exist there.
 *
 * Linking: nothing to link. The functions are defined by the preloaded libpulp_rs.so and
 * declared weak here, like pulp_quiescent, so that:
 * - a patch object (cc -shared -fPIC fix.c) is bound to them when the runtime loads it,
 *   which it only ever does with the runtime present;
 * - a program or library that includes pulp.h still links and starts without the
 *   runtime, and can test for it:  if (pulp_shadow_get) ...
 *   Code must be position-independent (-fPIC, or -fPIE, the default of current gcc and
 *   clang): the linker resolves a weak function that non-PIC code (-fno-pic) calls to 0
 *   at link time, and the preloaded runtime is then never seen. Such code can look the
 *   functions up with dlsym(RTLD_DEFAULT, "pulp_shadow_get") instead.
 * Do not link a second copy of libpulp_rs.so into the program: two runtimes would keep
 * two separate tables.
 * ------------------------------------------------------------------------------------- */

/* Initialises a new shadow: OBJ and ID as given to the allocating call, SHADOW_DATA the
 * zeroed data (SIZE bytes), CTOR_DATA the caller's argument. Returns 0 to keep the
 * shadow; anything else discards it (the allocating call returns NULL, errno ECANCELED). */
typedef int (*pulp_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);

/* Releases what a shadow holds, just before the runtime frees SHADOW_DATA. */
typedef void (*pulp_shadow_dtor_t)(void *obj, void *shadow_data);

/* The data of OBJ's shadow ID, or NULL when it has none (or its constructor is still
 * running). Takes no lock. */
void *pulp_shadow_get(void *obj, unsigned long id) __attribute__((weak));

/* Attach a new shadow of SIZE zeroed bytes to OBJ under ID, run CTOR on it (if not NULL)
 * and return its data. NULL if OBJ already has a shadow ID (errno EEXIST), when out of
 * memory (ENOMEM), when CTOR refused (ECANCELED), or when called by the constructor of
 * that very shadow (EDEADLK). */
void *pulp_shadow_alloc(void *obj, unsigned long id, size_t size, pulp_shadow_ctor_t ctor, void *ctor_data)
    __attribute__((weak));

/* OBJ's shadow ID: the existing one (SIZE and CTOR are then ignored), or a new one as
 * pulp_shadow_alloc makes it. Racing callers for the same key all get the same shadow,
 * and CTOR runs once. NULL as for pulp_shadow_alloc, except that an existing shadow is
 * the answer, not an error. */
void *pulp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, pulp_shadow_ctor_t ctor,
                               void *ctor_data) __attribute__((weak));

/* Detach OBJ's shadow ID, run DTOR on it (if not NULL) and free its data. Returns 1 if
 * there was one, 0 if not (a shadow whose constructor is still running does not exist
 * yet: it is not freed). */
int pulp_shadow_free(void *obj, unsigned long id, pulp_shadow_dtor_t dtor) __attribute__((weak));

/* Detach every shadow ID of every object, run DTOR on each (if not NULL) and free them;
 * returns how many. Other ids are untouched. Shadows whose constructor is still running
 * when it reaches them are not freed. Meant for a patch's unpatch callback. */
size_t pulp_shadow_free_all(unsigned long id, pulp_shadow_dtor_t dtor) __attribute__((weak));

#ifdef __cplusplus
}
#endif

#endif
