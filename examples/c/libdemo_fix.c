/* The live patch for libdemo.so: the fixed average(). pulp-trigger loads this
 * object into the running demo-app and redirects average() to
 * average_fixed(). */
double average_fixed(const int *v, int n)
{
    long sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    return n > 0 ? (double)sum / n : 0.0;
}
