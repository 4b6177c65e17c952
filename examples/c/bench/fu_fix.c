/* The same computation as fu.c's f: the patched call costs only its redirect. */
int f_new(int x)
{
    return (x ^ 0x12345) + 1;
}
