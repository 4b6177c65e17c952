/* One member of the fleet benchmark (`pulp-bench fleet`): a small live-patchable process
 * with two threads, each calling f() of libfleet.so once a second and sleeping in
 * between (in nanosleep, where pulp-trigger finds a thread at a safe point). */
#include <pthread.h>
#include <unistd.h>

int f(int x);

static volatile int sink;

static void *call_and_sleep(void *arg)
{
    for (;;) {
        sink += f(1);
        sleep(1);
    }
    return arg;
}

int main(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, call_and_sleep, NULL))
        return 1;
    call_and_sleep(NULL);
    return 0;
}
