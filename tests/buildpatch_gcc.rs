//! `pulp build-patch` end to end with gcc: for each kind of fix, a diff becomes a patch
//! that changes what every worker thread of a running process computes, and reverting
//! it brings the old results back.

#[path = "buildpatch/common.rs"]
mod common;
#[path = "buildpatch/scenarios.rs"]
mod scenarios;

#[test]
fn every_kind_of_fix_becomes_a_live_patch_with_gcc() {
    scenarios::every_kind_of_fix(common::Compiler::Gcc);
}
