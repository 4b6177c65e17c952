/* The demo library's interface. */
#ifndef PULP_DEMO_H
#define PULP_DEMO_H

/* Average of the n values in v. */
double average(const int *v, int n);

#endif
