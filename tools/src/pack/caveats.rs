//! What the operator should know about a legal patch: local functions the compiler may
//! have inlined, compiler clones that keep the old code, hints for a name not found.

use super::{Object, PendingTarget};

use pulp_elf::symbols::{has_compiler_abi, is_clone_of};
use pulp_meta::Function;

/// Functions the compiler derived from `name` (`name.isra.0`, `name.constprop.1`,
/// `name.part.0`, `name.cold`, ...): they hold copies of its code.
pub(super) fn clones_of(object: &Object, name: &str) -> Vec<String> {
    let mut out: Vec<String> = object
        .functions()
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| is_clone_of(n, name))
        .map(str::to_owned)
        .collect();
    out.dedup();
    out
}

/// What the operator should know about replacing `func` in `target`.
pub(super) fn caveats(target: &PendingTarget, func: &Function) -> Vec<String> {
    let mut out = Vec::new();
    let me = target.object.functions().iter().find(|f| f.offset == func.offset && f.name == func.old);
    // A local alias of a global function (glibc's hidden `__GI_` names) is that function.
    let global_alias = target.object.functions().iter().any(|f| f.offset == func.offset && f.global);
    if me.is_some_and(|f| !f.global) && !global_alias {
        out.push(format!(
            "`{}` is a local (static) function: calls the compiler inlined into its callers are not redirected; \
             if it may have been inlined, replace its callers too",
            func.old
        ));
    }
    if has_compiler_abi(&func.old) {
        out.push(format!(
            "`{}` is a compiler clone whose calling convention is the compiler's own (arguments may be removed \
             or replaced by constants): the new function must take the same registers",
            func.old
        ));
    }
    let clones = clones_of(&target.object, &func.old);
    if !clones.is_empty() {
        out.push(format!(
            "`{}` has compiler clones that keep the old code: {}; replace them too, or rebuild with \
             -fno-ipa-sra -fno-ipa-cp -fno-partial-inlining",
            func.old,
            clones.join(", ")
        ));
    }
    out
}

/// Why `name` is not among `target`'s symbols, as a hint for the message.
pub(super) fn not_found_hint(object: &Object, name: &str) -> String {
    let clones = clones_of(object, name);
    if !clones.is_empty() {
        return format!(
            "; the compiler made clones of it: {} (name one directly, knowing its calling convention is the \
             compiler's own)",
            clones.join(", ")
        );
    }
    object.stripped_hint()
}
