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

/// `PULP_CC_REAL` may name the compiler in several words (`ccache gcc`; here `env gcc`):
/// `pulp build-patch` assembles and links the patch with all of them, as `pulp-cc`
/// compiles with all of them.
#[test]
fn a_compiler_named_in_several_words_builds_the_patch() {
    use libpulp_rs_tests::{apply, App};
    let project = common::Project::new(common::Compiler::GccInTwoWords);
    let mut app = App::start(&project.app);
    assert_eq!(app.ask("sync"), scenarios::BEFORE);
    let (diff, after, _, _) = scenarios::FIXES[0];
    project.build_patch(diff, &[]).assert_ok("pulp build-patch with PULP_CC_REAL=\"env gcc\"");
    apply(app.pid(), &project.meta(diff)).assert_ok("pulp-trigger");
    assert_eq!(app.ask("sync"), after);
}
