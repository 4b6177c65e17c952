/* Redirect mechanisms side by side, in one process and one run (pulp-bench).
 *
 *   redirect [ROUNDS]
 *
 * redirect.S holds the same trivial int f(int) five times: (a) plain, and
 * reached through the pad redirect of (b) our scheme, (c) libpulp's kind,
 * (d) DESIGN.md's, (e) a direct jmp rel32 (lower bound), all ending in the same
 * redir_new. Each is first checked to compute x + 1, then 1e7 calls of each are
 * timed through a function pointer, rotating between the five for ROUNDS
 * rounds (default 30); the minimum ns per call of each is printed:
 *
 *   plain=1.000 ours=2.000 libpulp=2.000 design=2.000 direct=2.000
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define VARIANTS 5

#include "timing.h"

int redir_plain(int), redir_ours(int), redir_libpulp(int), redir_design(int), redir_direct(int);

static const char *const names[VARIANTS] = {"plain", "ours", "libpulp", "design", "direct"};
static fn_t const fns[VARIANTS] = {redir_plain, redir_ours, redir_libpulp, redir_design, redir_direct};

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 30;
    for (int v = 0; v < VARIANTS; v++)
        for (int x = -3; x < 1000; x += 7)
            if (fns[v](x) != x + 1) {
                fprintf(stderr, "redirect: %s(%d) = %d, not %d\n", names[v], x, fns[v](x), x + 1);
                return 1;
            }

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
        printf("%s%s=%.3f", v ? " " : "", names[v], best[v]);
    printf("\n");
    return 0;
}
