//! Project memory: `AGENTS.md` (and `CLAUDE.md`) files whose instructions
//! go into the system prompt.
//!
//! Read, in this order (general before specific, so later files can refine
//! earlier ones): the user's own file in the configuration directory, then
//! one per directory from the repository root (the nearest ancestor with a
//! `.git`) down to the working directory. In each directory `AGENTS.md`
//! wins; `CLAUDE.md` is read where there is no `AGENTS.md`.

use std::path::{Path, PathBuf};

/// The most bytes read from one memory file: a memory file is instructions,
/// not a dump, and every byte costs prompt time on a local model.
pub const MAX_MEMORY_FILE_BYTES: usize = 16 * 1024;

/// The file names looked for, in order of preference.
const NAMES: [&str; 2] = ["AGENTS.md", "CLAUDE.md"];

/// One memory file that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its text (cut at [`MAX_MEMORY_FILE_BYTES`], with a note).
    pub text: String,
}

/// The memory files for working directory `cwd`, the user's first.
/// `user_dir` is the user's configuration directory (`~/.config/freehold`).
pub fn discover(cwd: &Path, user_dir: Option<&Path>) -> Vec<MemoryFile> {
    let mut found = Vec::new();
    if let Some(dir) = user_dir {
        found.extend(read_dir_memory(dir));
    }
    let root = repository_root(cwd).unwrap_or_else(|| cwd.to_path_buf());
    let mut dirs: Vec<&Path> = cwd
        .ancestors()
        .take_while(|d| d.starts_with(&root))
        .collect();
    dirs.reverse();
    for dir in dirs {
        if user_dir.is_some_and(|user| user == dir) {
            continue;
        }
        found.extend(read_dir_memory(dir));
    }
    found
}

/// The nearest ancestor of `dir` (itself included) holding `.git`.
pub fn repository_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

fn read_dir_memory(dir: &Path) -> Option<MemoryFile> {
    NAMES.iter().find_map(|name| {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).ok()?;
        let mut text = if bytes.len() > MAX_MEMORY_FILE_BYTES {
            let cut = String::from_utf8_lossy(&bytes[..MAX_MEMORY_FILE_BYTES]).into_owned();
            format!(
                "{cut}\n[... {name} cut at {} KiB; read the file for the rest]",
                MAX_MEMORY_FILE_BYTES / 1024
            )
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
        (!text.is_empty()).then_some(MemoryFile { path, text })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "freehold-memory-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_from_user_dir_then_root_down_to_cwd() {
        let base = temp_dir("order");
        let repo = base.join("repo");
        let sub = repo.join("crates/x");
        let user = base.join("user");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(base.join("AGENTS.md"), "outside the repo").unwrap();
        std::fs::write(user.join("AGENTS.md"), "user rules").unwrap();
        std::fs::write(repo.join("AGENTS.md"), "root rules").unwrap();
        std::fs::write(repo.join("CLAUDE.md"), "ignored: AGENTS.md wins").unwrap();
        std::fs::write(repo.join("crates/CLAUDE.md"), "crates rules").unwrap();
        std::fs::write(sub.join("AGENTS.md"), "  \n").unwrap();
        let texts: Vec<String> = discover(&sub, Some(&user))
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["user rules", "root rules", "crates rules"]);
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn large_files_are_cut_with_a_note() {
        let dir = temp_dir("large");
        std::fs::write(dir.join("AGENTS.md"), "x".repeat(MAX_MEMORY_FILE_BYTES * 2)).unwrap();
        let found = discover(&dir, None);
        assert_eq!(found.len(), 1);
        assert!(found[0].text.len() < MAX_MEMORY_FILE_BYTES + 200);
        assert!(found[0].text.contains("cut at 16 KiB"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
