//! `pulp build-patch` end to end with clang: the same fixes as with gcc.

#[path = "buildpatch/common.rs"]
mod common;
#[path = "buildpatch/scenarios.rs"]
mod scenarios;

#[test]
fn every_kind_of_fix_becomes_a_live_patch_with_clang() {
    scenarios::every_kind_of_fix(common::Compiler::Clang);
}
