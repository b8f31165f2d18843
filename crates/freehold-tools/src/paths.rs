//! Resolving the model's paths against the project root.
//!
//! Resolution is lexical (`..` is folded without touching the disk) so that
//! paths to files that do not exist yet resolve too; a symlink inside the
//! project that points out of it is not detected here.

use std::path::{Component, Path, PathBuf};

use crate::ToolError;

/// `root` made absolute and normalized (it may be given relative).
pub(crate) fn root(root: &Path) -> PathBuf {
    normalize(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()))
}

/// The absolute, normalized path for `path` (relative to `root`, or
/// absolute), refusing one outside the project.
pub(crate) fn resolve(project: &Path, path: &str) -> Result<PathBuf, ToolError> {
    let project = root(project);
    let resolved = normalize(&project.join(path));
    if resolved.starts_with(&project) {
        Ok(resolved)
    } else {
        Err(ToolError::OutsideProject {
            path: path.to_owned(),
            root: project.display().to_string(),
        })
    }
}

/// How to show `path` (absolute, inside the project) to the model: relative
/// to the root, `.` for the root itself.
pub(crate) fn display(project: &Path, path: &Path) -> String {
    let project = root(project);
    match path.strip_prefix(&project) {
        Ok(relative) if relative.as_os_str().is_empty() => ".".to_owned(),
        Ok(relative) => relative.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// Fold `.` and `..` lexically; `..` at the filesystem root stays there.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_absolute_paths() {
        let root = Path::new("/project");
        assert_eq!(
            resolve(root, "src/main.rs").unwrap(),
            Path::new("/project/src/main.rs")
        );
        assert_eq!(
            resolve(root, "./src/../lib.rs").unwrap(),
            Path::new("/project/lib.rs")
        );
        assert_eq!(
            resolve(root, "/project/a/b").unwrap(),
            Path::new("/project/a/b")
        );
        assert_eq!(resolve(root, "").unwrap(), Path::new("/project"));
        assert_eq!(
            resolve(Path::new("/project/x/.."), "a").unwrap(),
            Path::new("/project/a")
        );
    }

    #[test]
    fn refuses_paths_outside_the_root() {
        let root = Path::new("/project");
        for path in ["../etc/passwd", "/etc/passwd", "src/../../x", "/projectx/a"] {
            let error = resolve(root, path).unwrap_err();
            assert!(
                matches!(error, ToolError::OutsideProject { .. }),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn displays_paths_relative_to_the_root() {
        let root = Path::new("/project");
        assert_eq!(display(root, Path::new("/project/src/a.rs")), "src/a.rs");
        assert_eq!(display(root, Path::new("/project")), ".");
        assert_eq!(display(root, Path::new("/elsewhere")), "/elsewhere");
    }
}
