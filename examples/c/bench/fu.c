/* The function of the unpadded benchmark: trivial, but long enough (9 bytes) for the
 * 5-byte entry jump of a function without pad (`f.c`'s `lea; ret` is 4). Built without
 * pad twice (VARIANT 1: left alone; 2: patched) and with the pad (3: patched). */
int f(int x)
{
    return (x ^ 0x12345) + 1;
}

#ifdef VARIANT
const int f_variant = VARIANT;
#endif
