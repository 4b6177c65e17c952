/* A tiny pricing library, called from Rust through FFI. */
#ifndef PRICING_H
#define PRICING_H

/* Total price in cents of `quantity` items of `unit_cents` each: orders of
 * PRICING_BULK_QUANTITY items or more get PRICING_BULK_PERCENT off. */
long pricing_total(long quantity, long unit_cents);

/* The library's version string. */
const char *pricing_version(void);

#define PRICING_BULK_QUANTITY 10
#define PRICING_BULK_PERCENT 10

#endif
