//! References (`#sym:var` in a `.dsc`, and every reference `pulp build-patch` generates):
//! before a patch is activated, the runtime writes into each of the patch object's
//! reference variables what it needs to know about a symbol of a target (its address,
//! its original code, its TLS index, or its address relative to the patch's GOT).
