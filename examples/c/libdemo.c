/* The demo library, built live-patchable (-fpatchable-function-entry=16,14).
 *
 * It has a bug: average() divides two ints, so the fraction is lost and the
 * average of {1, 2, 4} comes out as 2.000 instead of 2.333. */
#include "demo.h"

double average(const int *v, int n)
{
    int sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    return sum / n; /* BUG: integer division */
}
