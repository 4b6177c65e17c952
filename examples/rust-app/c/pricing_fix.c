/* The live patch of pricing.c: the new versions of the functions it replaces. */
#include "pricing.h"

long pricing_total_fixed(long quantity, long unit_cents)
{
    long cents = quantity * unit_cents;
    if (quantity >= PRICING_BULK_QUANTITY)
        return cents - cents * PRICING_BULK_PERCENT / 100;
    return cents;
}

const char *pricing_version_fixed(void)
{
    return "pricing 1.0.1 (live patch)";
}
