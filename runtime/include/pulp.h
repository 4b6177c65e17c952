/* pulp.h — the API libpulp-rs's runtime (libpulp_rs.so) offers to library authors. */
#ifndef PULP_H
#define PULP_H

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
 *                     was rolled back (--reverse), since pre_patch ran.
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

#ifdef __cplusplus
}
#endif

#endif
