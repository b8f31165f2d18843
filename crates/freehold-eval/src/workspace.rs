//! The throwaway directory a task runs in: a copy of `repo/` (made a git
//! repository when git is available), the answer file, the check's log and,
//! by default, the agent's session transcripts.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Scratch directories made by this process, so names never repeat.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A task's scratch directory:
///
/// ```text
/// freehold-eval-<pid>-<n>-<task>/
/// ├── repo/        the copy of the task's repo/, where the agent works
/// ├── answer.txt   the agent's final answer (FREEHOLD_EVAL_ANSWER)
/// ├── check.log    the check's standard output and error
/// └── sessions/    the agent's transcripts, unless a session dir is set
/// ```
///
/// The answer and log live beside the copy, not in it, so they never show
/// up in the agent's `git status` or a check's file listing.
#[derive(Debug)]
pub(crate) struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Make a fresh, empty scratch directory for `task` under `base`.
    pub(crate) fn create(base: &Path, task: &str) -> io::Result<Self> {
        std::fs::create_dir_all(base)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let root = base.join(format!(
                "freehold-eval-{}-{nanos:x}-{n}-{task}",
                std::process::id()
            ));
            // `create_dir`, not `create_dir_all`: it fails when the name is
            // taken, so two runners never share a directory.
            match std::fs::create_dir(&root) {
                Ok(()) => return Ok(Self { root }),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// The scratch directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The agent's working copy.
    pub(crate) fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }

    /// The answer file.
    pub(crate) fn answer(&self) -> PathBuf {
        self.root.join("answer.txt")
    }

    /// The check's log.
    pub(crate) fn check_log(&self) -> PathBuf {
        self.root.join("check.log")
    }

    /// The default session directory.
    pub(crate) fn sessions(&self) -> PathBuf {
        self.root.join("sessions")
    }

    /// Delete the scratch directory and everything in it.
    pub(crate) async fn remove(self) -> io::Result<()> {
        let root = self.root;
        // A Rust task's target/ can be large: keep the walk off the runtime.
        tokio::task::spawn_blocking(move || make_writable_and_remove(&root))
            .await
            .map_err(io::Error::other)?
    }
}

/// Remove `root`, first making its directories writable: a task may ship
/// (or an agent may create) read-only directories, which `remove_dir_all`
/// cannot empty.
fn make_writable_and_remove(root: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_writable(root);
            std::fs::remove_dir_all(root)
        }
    }
}

fn make_dirs_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut permissions = meta.permissions();
    permissions.set_mode(permissions.mode() | 0o700);
    let _ = std::fs::set_permissions(dir, permissions);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

/// Copy the directory `from` to `to` (which must not exist), keeping file
/// modes (scripts stay executable) and symbolic links.
pub(crate) async fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || copy_dir(&from, &to))
        .await
        .map_err(io::Error::other)?
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            // `fs::copy` copies the permission bits too.
            std::fs::copy(&source, &target)?;
        }
    }
    // Last, so a read-only directory is still writable while it is filled.
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())
}

/// Make `dir` a git repository whose first commit is the starting state, so
/// the agent's checkpoints and `git diff` work as in a real project.
///
/// Returns `Ok(false)` when git is not installed. The user's and the
/// system's git configuration are ignored (a global hook or signing setup
/// must not change or break the run) and the identity is fixed.
pub(crate) async fn git_init(dir: &Path) -> io::Result<bool> {
    let steps: [&[&str]; 3] = [
        &["-c", "init.defaultBranch=main", "init", "-q"],
        &["add", "-A"],
        &[
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "--no-gpg-sign",
            "-m",
            "Starting state",
        ],
    ];
    for args in steps {
        let output = match git(dir, args).output().await {
            Ok(output) => output,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(true)
}

fn git(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "freehold eval")
        .env("GIT_AUTHOR_EMAIL", "eval@freehold.invalid")
        .env("GIT_COMMITTER_NAME", "freehold eval")
        .env("GIT_COMMITTER_EMAIL", "eval@freehold.invalid")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    command
}
