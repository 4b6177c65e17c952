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

#ifdef __cplusplus
}
#endif

#endif
