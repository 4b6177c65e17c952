/* The fix of libuni.c: uni_f and uni_g with the same bodies (the difference in time per
 * call is the cost of reaching them), uni_w answering 2 (this version runs). */
int uni_f_new(int x)
{
    return x + 1;
}

int uni_g_new(int x)
{
    return x + 3;
}

int uni_w_new(int x)
{
    return x + 2;
}
