//! The directory walk `glob` and `grep` share: it skips what `.gitignore`,
//! `.ignore` and hidden names hide, in git repositories or not.

use std::path::Path;

use ignore::WalkBuilder;

/// A walker over `dir` with the project's ignore rules.
pub(crate) fn builder(dir: &Path) -> WalkBuilder {
    let mut builder = WalkBuilder::new(dir);
    // Projects that are not (yet) git repositories still have .gitignore.
    builder.require_git(false).threads(threads());
    builder
}

/// Search threads: ripgrep's default (the cores, at most 12).
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(12)
}
