/* The library of the per-call benchmark during a transition (unicall.c).
 *
 * Four trivial functions, each with its own constant so that gcc's identical code
 * folding (-fipa-icf, on at -O2) cannot merge them:
 *   uni_f  exported, patched: a gate during a transition, redirected afterwards;
 *   uni_u  exported, not patched: still a gate during a transition (every exported
 *          function of a target is one), plain afterwards;
 *   uni_g  static, patched: reached through the dispatcher (no gate) during a
 *          transition, redirected afterwards;
 *   uni_s  static, not patched: plain all along, the baseline.
 * uni_w (static, patched) tells which version a thread runs: 1 here, 2 in the fix.
 * uni_block(fd) reads one byte from fd: a thread blocked in it is inside the target,
 * which holds a transition open until the byte arrives. */
#include <unistd.h>

typedef int (*uni_fn)(int);

int uni_f(int x)
{
    return x + 1;
}

int uni_u(int x)
{
    return x + 2;
}

__attribute__((noinline)) static int uni_g(int x)
{
    return x + 3;
}

__attribute__((noinline)) static int uni_s(int x)
{
    return x + 4;
}

__attribute__((noinline)) static int uni_w(int x)
{
    return x + 1;
}

/* The static functions, by name: "g", "s", "w". */
uni_fn uni_static(char which)
{
    switch (which) {
    case 'g':
        return uni_g;
    case 's':
        return uni_s;
    case 'w':
        return uni_w;
    default:
        return 0;
    }
}

int uni_block(int fd)
{
    char c;
    return (int)read(fd, &c, 1);
}
