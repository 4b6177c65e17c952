/* The pricing library, built live-patchable by build.rs. It has a bug: an order of
 * exactly PRICING_BULK_QUANTITY items does not get the bulk discount. */
#include "pricing.h"

__attribute__((noinline)) static long discounted(long cents)
{
    return cents - cents * PRICING_BULK_PERCENT / 100;
}

long pricing_total(long quantity, long unit_cents)
{
    long cents = quantity * unit_cents;
    if (quantity > PRICING_BULK_QUANTITY) /* BUG: should be >= */
        return discounted(cents);
    return cents;
}

const char *pricing_version(void)
{
    return "pricing 1.0";
}
