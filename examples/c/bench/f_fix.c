/* The replacement of f(): the same body, so the difference in time per call
 * is the cost of the redirect. */
int f_new(int x)
{
    return x + 1;
}
