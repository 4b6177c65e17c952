/* The demo application: calls average() from libdemo.so every 300 ms and
 * prints one line each time. Run it with libpulp_rs.so preloaded, then fix
 * it live with pulp-trigger. It exits when its parent dies. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"

int main(void)
{
    static const int values[] = {1, 2, 4};
    const struct timespec period = {0, 300 * 1000 * 1000};

    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        return 0;
    printf("demo-app pid %d\n", (int)getpid());
    fflush(stdout);
    for (int i = 1;; i++) {
        double avg = average(values, 3);
        printf("#%-3d average of {1, 2, 4} = %.3f %s\n", i, avg,
               avg > 2.3 && avg < 2.4 ? "(correct)" : "(WRONG, expected 2.333)");
        fflush(stdout);
        nanosleep(&period, NULL);
    }
}
