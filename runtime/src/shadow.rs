//! Shadow variables: data a patch attaches to existing objects of the target, keyed by
//! (object pointer, id), without changing their layout (the kernel livepatch's
//! `klp_shadow_*`). Declared in `runtime/include/pulp.h`.
