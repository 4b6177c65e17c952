/* The benchmarked function: trivial, so a call costs little more than the
 * call itself. Built three times: without a pad, with a pad, and with a pad
 * and VARIANT defined (another build-id, so it can be patched on its own). */
int f(int x)
{
    return x + 1;
}

#ifdef VARIANT
const int f_variant = VARIANT;
#endif
