/* The replacement used by `pulp-bench prologues`: x + 2 instead of f's x + 1, so the
 * target can check which version a call reached; the cost is the same (one lea). */
int pf_new(int x)
{
    return x + 2;
}

/* Built twice (VARIANT 1 and 2): a patch's id is its object's build-id, and the two
 * patches of the benchmark must be told apart. */
const int pf_variant = VARIANT;
