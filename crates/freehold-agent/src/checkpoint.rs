//! Git checkpoints of the working tree: taken before the first file edit of
//! each user turn, restored by `freehold undo`.
//!
//! # Where checkpoints live
//!
//! * If the project root is inside a git work tree, checkpoints are commits
//!   in that repository's object store, one ref per checkpoint under
//!   `refs/freehold/checkpoints/<scope>/<stamp>`. Nothing under `refs/heads`,
//!   `HEAD` or the index is ever written, so `git status`, `git log` and the
//!   user's branches look exactly as before; the objects are ordinary loose
//!   objects that `git gc` packs (and prunes once the refs are removed).
//! * Otherwise checkpoints go into a *shadow* bare repository that the caller
//!   names (for example `<data dir>/checkpoints/<hash>.git`, see
//!   [`default_shadow_dir`]), created on first use, with `GIT_DIR=<shadow>`
//!   and `GIT_WORK_TREE=<root>`. A few heavy, regenerable directories
//!   (`node_modules`, `target`, virtual environments…) are excluded there
//!   through the shadow repository's `info/exclude`, since such a directory
//!   has no `.gitignore` of its own to say so.
//!
//! `<scope>` is a hash of the canonical project root, so two linked work
//! trees of one repository (which share refs) or two sessions rooted in
//! different subdirectories never see each other's checkpoints. Only the
//! files under the root are snapshotted and restored. `<stamp>` is the
//! creation time in nanoseconds, zero-padded, then the commit's short id:
//! refs sort by name in creation order and never collide. One ref per
//! checkpoint (rather than a chain of parents) makes dropping the newest
//! ([`Checkpoints::restore_last`]) or the oldest ([`Checkpoints::prune`]) a
//! plain ref deletion, with no history rewriting and no races between
//! sessions. Checkpoint commits have no parent: they must not keep the
//! user's own history alive.
//!
//! # Why a temporary index
//!
//! `git add -A` is the only cheap, exact way to turn a work tree into a tree
//! object with `.gitignore` honoured, but it writes an index. Every command
//! here runs with `GIT_INDEX_FILE` pointing at a scratch copy, so the user's
//! staged changes are never disturbed. The scratch index is seeded from the
//! user's index (a byte copy: its cached stat data lets `git add` re-hash
//! only the files that changed), or from `HEAD` when there is no index, or
//! in a shadow repository from the index the previous snapshot left there.
//!
//! # Restoring
//!
//! The current state is snapshotted the same way, diffed against the
//! checkpoint's tree, and then: files added since are deleted (and the
//! directories they leave empty), files changed or deleted since are written
//! back with `git checkout-index`. Ignored files are neither snapshotted nor
//! touched. The state from just before a restore is kept as a commit under
//! `refs/freehold/undone/<scope>` (only the last one), so an undo can itself
//! be undone by hand ([`RestoreReport::before`]).
//!
//! Every snapshot is recorded, even when nothing changed since the previous
//! one: each records the state before one user turn, and its label says
//! which.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Where checkpoint refs live in the repository.
const REF_ROOT: &str = "refs/freehold/checkpoints";
/// Where the state from just before the last restore is kept.
const UNDONE_ROOT: &str = "refs/freehold/undone";
/// The identity checkpoint commits are made with, so no git config is needed.
const IDENTITY_NAME: &str = "freehold";
const IDENTITY_EMAIL: &str = "freehold@localhost";
/// The trailer that carries the session id in a checkpoint's message.
const SESSION_TRAILER: &str = "Freehold-Session: ";
/// Longest label kept, in characters.
const MAX_LABEL_CHARS: usize = 200;
/// A gitlink (submodule) mode: such entries are never written or deleted.
const GITLINK_MODE: &str = "160000";
/// Excluded in shadow repositories only (see the module docs).
const SHADOW_EXCLUDES: &[&str] = &[
    "node_modules/",
    "target/",
    ".venv/",
    "venv/",
    "__pycache__/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".tox/",
    ".gradle/",
    ".next/",
    ".cache/",
    ".DS_Store",
];
/// Inherited variables that would point git somewhere else (set when
/// freehold itself runs from a git hook, for example).
const GIT_LOCATION_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// Why a checkpoint operation failed. Messages are written for the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// `git` could not be started.
    #[error("git is not installed or not on PATH; checkpoints and undo need it (install git)")]
    GitMissing,
    /// A git command exited with an error.
    #[error("`git {command}` failed: {stderr}")]
    Git {
        /// The command, without the `git`.
        command: String,
        /// What git printed on standard error.
        stderr: String,
    },
    /// Git could not write into the repository or shadow repository.
    #[error("cannot write checkpoints into {path}: {detail}; check its permissions")]
    NotWritable {
        /// The repository's git directory.
        path: String,
        /// What git said.
        detail: String,
    },
    /// There is no checkpoint to restore.
    #[error("no checkpoint to undo for {root}")]
    NoCheckpoint {
        /// The project root.
        root: String,
    },
    /// The checkpoint's commit is gone (deleted ref, pruned objects).
    #[error("checkpoint {id} no longer exists in the repository")]
    NotFound {
        /// The checkpoint's commit id.
        id: String,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl CheckpointError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// One snapshot of the working tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The checkpoint commit's id (full hex).
    pub id: String,
    /// The session that took it.
    pub session_id: String,
    /// What it was taken before (typically the first line of the prompt).
    pub label: String,
    /// When it was taken, in seconds since the Unix epoch.
    pub created_at: u64,
    /// The full ref that keeps it, under `refs/freehold/checkpoints/`.
    pub reference: String,
}

/// What a restore changed, for the front end to tell the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The checkpoint restored.
    pub checkpoint: Checkpoint,
    /// Files written back (changed or deleted since the checkpoint), relative
    /// to the project root, sorted.
    pub restored: Vec<String>,
    /// Files deleted (created since the checkpoint), relative to the project
    /// root, sorted.
    pub deleted: Vec<String>,
    /// A commit holding the state from just before the restore, also at
    /// `refs/freehold/undone/<scope>` until the next restore; e.g.
    /// `git checkout <before> -- .` brings it back. `None` when nothing
    /// changed.
    pub before: Option<String>,
}

/// The checkpoints of one project directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// The canonical project root; git runs here.
    root: PathBuf,
    /// The shadow repository, when the root is in no git work tree.
    shadow: Option<PathBuf>,
    /// The git directory: scratch indexes go here, errors name it.
    git_dir: PathBuf,
    /// The index scratch indexes are copied from, if it exists.
    seed_index: PathBuf,
    /// `refs/freehold/checkpoints/<scope>`.
    namespace: String,
    /// `refs/freehold/undone/<scope>`.
    undone_ref: String,
}

/// A suggested shadow repository for `root`: `<data_dir>/checkpoints/<hash>.git`,
/// where the hash is of the canonical root path (or the path as given when it
/// cannot be canonicalised).
pub fn default_shadow_dir(data_dir: &Path, root: &Path) -> PathBuf {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    data_dir
        .join("checkpoints")
        .join(format!("{:016x}.git", path_hash(&root)))
}

impl Checkpoints {
    /// Opens the checkpoints of the project at `root`: in the enclosing git
    /// repository if there is one, otherwise in the shadow repository at
    /// `shadow_dir` (created, with its parents, if missing).
    ///
    /// Fails with [`CheckpointError::GitMissing`] when git is not installed;
    /// callers are expected to carry on without checkpoints then.
    pub async fn open(root: &Path, shadow_dir: &Path) -> Result<Self, CheckpointError> {
        let root = std::fs::canonicalize(root).map_err(|e| {
            CheckpointError::io(format!("cannot open project {}", root.display()), e)
        })?;
        let scope = format!("{:016x}", path_hash(&root));
        let namespace = format!("{REF_ROOT}/{scope}");
        let undone_ref = format!("{UNDONE_ROOT}/{scope}");
        let probe = base_command(&root)
            .args([
                "rev-parse",
                "--is-inside-work-tree",
                "--git-dir",
                "--git-path",
                "index",
            ])
            .output()
            .await
            .map_err(spawn_error)?;
        let stdout = String::from_utf8_lossy(&probe.stdout);
        let mut lines = stdout.lines();
        let in_work_tree = probe.status.success() && lines.next() == Some("true");
        if in_work_tree {
            let (Some(git_dir), Some(index)) = (lines.next(), lines.next()) else {
                return Err(CheckpointError::Git {
                    command: "rev-parse --git-dir".into(),
                    stderr: format!("unexpected output: {stdout}"),
                });
            };
            return Ok(Self {
                git_dir: root.join(git_dir),
                seed_index: root.join(index),
                shadow: None,
                root,
                namespace,
                undone_ref,
            });
        }
        let stderr = String::from_utf8_lossy(&probe.stderr);
        if !probe.status.success() && !stderr.contains("not a git repository") {
            // E.g. "dubious ownership": the user must fix it, not be
            // silently moved to a shadow repository.
            return Err(CheckpointError::Git {
                command: "rev-parse --is-inside-work-tree".into(),
                stderr: stderr.trim().to_string(),
            });
        }
        let shadow = init_shadow(&root, shadow_dir).await?;
        Ok(Self {
            seed_index: shadow.join("index"),
            git_dir: shadow.clone(),
            shadow: Some(shadow),
            root,
            namespace,
            undone_ref,
        })
    }

    /// The canonical project root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shadow repository in use, or `None` when checkpoints live in the
    /// project's own repository.
    pub fn shadow_repository(&self) -> Option<&Path> {
        self.shadow.as_deref()
    }

    /// Snapshots the working tree (non-ignored files under the root) as a new
    /// checkpoint. The user's index, `HEAD` and branches are not touched.
    pub async fn snapshot(
        &self,
        session_id: &str,
        label: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let session_id = one_line(session_id, "unknown");
        let label = one_line(label, "checkpoint");
        let (tree, index) = self.tree_of_work_tree().await?;
        let created_at = unix_now();
        let message = format!("{label}\n\n{SESSION_TRAILER}{session_id}\n");
        let id = self
            .commit_tree(&tree, &message, created_at.as_secs())
            .await?;
        let reference = format!(
            "{}/{:020}-{}",
            self.namespace,
            created_at.as_nanos(),
            id.get(..12).unwrap_or(&id)
        );
        // The empty old value makes git refuse to overwrite an existing ref.
        self.git(
            None,
            [
                "update-ref",
                "-m",
                "freehold checkpoint",
                &reference,
                &id,
                "",
            ],
            None,
        )
        .await?;
        self.keep_shadow_index(index);
        Ok(Checkpoint {
            id,
            session_id,
            label,
            created_at: created_at.as_secs(),
            reference,
        })
    }

    /// All checkpoints of this project, newest first.
    pub async fn list(&self) -> Result<Vec<Checkpoint>, CheckpointError> {
        let format = "--format=%(objectname)%00%(refname)%00%(committerdate:unix)%00%(contents)%00";
        let out = self
            .git(
                None,
                [
                    "for-each-ref",
                    "--sort=-refname",
                    format,
                    &format!("{}/", self.namespace),
                ],
                None,
            )
            .await?;
        Ok(parse_checkpoints(&String::from_utf8_lossy(&out)))
    }

    /// Makes the working tree's non-ignored files under the root exactly
    /// those of `checkpoint`: changed and deleted files are written back,
    /// files created since are deleted. Ignored files, the index, `HEAD` and
    /// branches are not touched. The checkpoint itself is kept (see
    /// [`Checkpoints::restore_last`] for the undo that drops it).
    pub async fn restore(&self, checkpoint: &Checkpoint) -> Result<RestoreReport, CheckpointError> {
        let target = self.tree_of_commit(&checkpoint.id).await?;
        let (current, _index) = self.tree_of_work_tree().await?;
        let changes = self.diff_trees(&target, &current).await?;
        let mut report = RestoreReport {
            checkpoint: checkpoint.clone(),
            restored: Vec::new(),
            deleted: Vec::new(),
            before: None,
        };
        if changes.is_empty() {
            return Ok(report);
        }
        let message = format!("Before restoring {}\n", checkpoint.id);
        let before = self
            .commit_tree(&current, &message, unix_now().as_secs())
            .await?;
        self.git(
            None,
            [
                "update-ref",
                "-m",
                "freehold undo",
                &self.undone_ref,
                &before,
            ],
            None,
        )
        .await?;
        report.before = Some(before);
        let (added, rest): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| c.status == 'A');
        // Deletions first: a file created where the checkpoint had a
        // directory (or the reverse) must go before the checkpoint's is written.
        for change in &added {
            self.delete(&change.path)?;
        }
        self.write_back(&target, &rest).await?;
        report.deleted = added.into_iter().map(|c| lossy(&c.path)).collect();
        report.restored = rest.into_iter().map(|c| lossy(&c.path)).collect();
        report.deleted.sort();
        report.restored.sort();
        Ok(report)
    }

    /// Undo: restores the newest checkpoint, then drops it, so the next call
    /// goes one further back. Fails with [`CheckpointError::NoCheckpoint`]
    /// when there is none.
    pub async fn restore_last(&self) -> Result<RestoreReport, CheckpointError> {
        let Some(newest) = self.list().await?.into_iter().next() else {
            return Err(CheckpointError::NoCheckpoint {
                root: self.root.display().to_string(),
            });
        };
        let report = self.restore(&newest).await?;
        self.remove(&newest).await?;
        Ok(report)
    }

    /// Deletes a checkpoint's ref (its objects go at the next `git gc`).
    pub async fn remove(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        if !checkpoint
            .reference
            .starts_with(&format!("{}/", self.namespace))
        {
            return Err(CheckpointError::NotFound {
                id: checkpoint.id.clone(),
            });
        }
        self.git(
            None,
            ["update-ref", "-d", &checkpoint.reference, &checkpoint.id],
            None,
        )
        .await?;
        Ok(())
    }

    /// Keeps the newest `keep` checkpoints and removes the others; returns
    /// how many were removed.
    pub async fn prune(&self, keep: usize) -> Result<usize, CheckpointError> {
        let old: Vec<Checkpoint> = self.list().await?.into_iter().skip(keep).collect();
        if old.is_empty() {
            return Ok(0);
        }
        let script: String = old
            .iter()
            .map(|c| format!("delete {}\0{}\0", c.reference, c.id))
            .collect();
        self.git(
            None,
            ["update-ref", "-z", "--stdin"],
            Some(script.into_bytes()),
        )
        .await?;
        Ok(old.len())
    }

    // ------------------------------------------------------------ steps

    /// Writes the work tree under the root as a tree object, through a
    /// scratch index; returns the tree and the scratch index (still alive).
    async fn tree_of_work_tree(&self) -> Result<(String, ScratchIndex), CheckpointError> {
        let index = ScratchIndex::new(&self.git_dir);
        self.seed(&index).await?;
        self.git(Some(&index.path), ["add", "-A", "--", "."], None)
            .await?;
        let tree = self.git_line(Some(&index.path), ["write-tree"]).await?;
        Ok((tree, index))
    }

    /// Fills a scratch index so that `git add` has little to re-hash.
    async fn seed(&self, index: &ScratchIndex) -> Result<(), CheckpointError> {
        match copy_keeping_mtime(&self.seed_index, &index.path) {
            Ok(Seeded::Yes) => return Ok(()),
            Ok(Seeded::NoTimestamp(e)) => {
                // A seed without its time would hide edits from git (see
                // `copy_keeping_mtime`): start from no seed, which is only
                // slower.
                tracing::debug!("not seeding the scratch index: {e}");
                let _ = std::fs::remove_file(&index.path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let context = format!("cannot copy the git index into {}", index.path.display());
                return Err(self.classify_io(context, e));
            }
        }
        if self.shadow.is_none() && self.resolve("HEAD^{tree}").await?.is_some() {
            self.git(Some(&index.path), ["read-tree", "HEAD"], None)
                .await?;
        }
        Ok(())
    }

    /// In a shadow repository, keeps the last scratch index as the seed for
    /// the next snapshot. Best effort: without it snapshots are only slower.
    fn keep_shadow_index(&self, index: ScratchIndex) {
        if self.shadow.is_some()
            && let Err(e) = std::fs::rename(&index.path, &self.seed_index)
        {
            tracing::debug!("could not keep the shadow index: {e}");
        }
    }

    async fn commit_tree(
        &self,
        tree: &str,
        message: &str,
        secs: u64,
    ) -> Result<String, CheckpointError> {
        let date = format!("{secs} +0000");
        let mut cmd = self.command(None);
        cmd.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            // commit-tree honours commit.gpgSign; a checkpoint must never
            // wait on a passphrase prompt or fail for want of a key.
            .args(["commit-tree", "--no-gpg-sign", tree, "-m", message]);
        let out = self.run(cmd, "commit-tree", None).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    async fn tree_of_commit(&self, id: &str) -> Result<String, CheckpointError> {
        self.resolve(&format!("{id}^{{tree}}"))
            .await?
            .ok_or_else(|| CheckpointError::NotFound { id: id.to_string() })
    }

    /// `git rev-parse --verify`, `None` when the name does not resolve.
    async fn resolve(&self, name: &str) -> Result<Option<String>, CheckpointError> {
        let mut cmd = self.command(None);
        cmd.args(["rev-parse", "-q", "--verify", name]);
        let out = cmd.output().await.map_err(spawn_error)?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok((out.status.success() && !id.is_empty()).then_some(id))
    }

    /// The files under the root that differ from `from` (checkpoint) to `to`
    /// (now), submodules left out.
    async fn diff_trees(&self, from: &str, to: &str) -> Result<Vec<Change>, CheckpointError> {
        let out = self
            .git(
                None,
                [
                    "diff-tree",
                    "-r",
                    "-z",
                    "--no-renames",
                    "--relative",
                    from,
                    to,
                ],
                None,
            )
            .await?;
        Ok(parse_raw_diff(&out))
    }

    /// Writes the checkpoint's version of `changes` into the work tree.
    async fn write_back(&self, tree: &str, changes: &[Change]) -> Result<(), CheckpointError> {
        if changes.is_empty() {
            return Ok(());
        }
        let index = ScratchIndex::new(&self.git_dir);
        self.git(Some(&index.path), ["read-tree", tree], None)
            .await?;
        let mut paths = Vec::new();
        for change in changes {
            paths.extend_from_slice(&change.path);
            paths.push(0);
        }
        self.git(
            Some(&index.path),
            ["checkout-index", "-f", "-z", "--stdin"],
            Some(paths),
        )
        .await?;
        Ok(())
    }

    /// Deletes a file created since the checkpoint, then the directories it
    /// leaves empty (up to, not including, the root).
    fn delete(&self, relative: &[u8]) -> Result<(), CheckpointError> {
        let path = self.root.join(bytes_to_path(relative));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let context = format!("cannot delete {}", path.display());
                return Err(self.classify_io(context, e));
            }
        }
        let mut dir = path.parent();
        while let Some(d) = dir {
            // remove_dir fails on a non-empty directory: that is the test.
            if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    // ------------------------------------------------------------ running git

    /// A git command at the root, pointed at the shadow repository if any
    /// and at `index` if given.
    fn command(&self, index: Option<&Path>) -> Command {
        let mut cmd = base_command(&self.root);
        if let Some(shadow) = &self.shadow {
            cmd.env("GIT_DIR", shadow).env("GIT_WORK_TREE", &self.root);
        }
        if let Some(index) = index {
            cmd.env("GIT_INDEX_FILE", index);
        }
        cmd
    }

    async fn git<I, S>(
        &self,
        index: Option<&Path>,
        args: I,
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CheckpointError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let name = args
            .first()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = self.command(index);
        cmd.args(&args);
        self.run(cmd, &name, stdin).await
    }

    async fn git_line<I, S>(&self, index: Option<&Path>, args: I) -> Result<String, CheckpointError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.git(index, args, None).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    async fn run(
        &self,
        cmd: Command,
        name: &str,
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CheckpointError> {
        run_command(cmd, name, stdin)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Turns permission failures into [`CheckpointError::NotWritable`].
    fn classify(&self, error: CheckpointError) -> CheckpointError {
        match error {
            CheckpointError::Git { stderr, .. } if is_permission_problem(&stderr) => {
                CheckpointError::NotWritable {
                    path: self.git_dir.display().to_string(),
                    detail: stderr,
                }
            }
            other => other,
        }
    }

    fn classify_io(&self, context: String, e: std::io::Error) -> CheckpointError {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            CheckpointError::NotWritable {
                path: self.git_dir.display().to_string(),
                detail: format!("{context}: {e}"),
            }
        } else {
            CheckpointError::io(context, e)
        }
    }
}

/// What [`copy_keeping_mtime`] did.
enum Seeded {
    /// The copy has the original's modification time.
    Yes,
    /// The copy was made but its time could not be set (the error says
    /// why); it must not be used.
    NoTimestamp(std::io::Error),
}

/// Copies a git index, keeping its modification time. Git trusts an entry
/// whose size and timestamps match the file unless the entry is "racy": not
/// older than the index file. A copy stamped with the time of copying would
/// make every entry look settled, and a same-size edit made within the
/// timestamp granularity (whole seconds, for some git builds) of the entry
/// would go unseen. The time is read before the copy: if the index is
/// replaced in between, the older time only makes more entries racy.
fn copy_keeping_mtime(from: &Path, to: &Path) -> std::io::Result<Seeded> {
    let modified = std::fs::metadata(from)?.modified();
    std::fs::copy(from, to)?;
    // Setting a given time takes owning the file, not writing to it: the
    // copy keeps the original's permissions, which may be read-only.
    let set = modified.and_then(|time| std::fs::File::open(to)?.set_modified(time));
    Ok(match set {
        Ok(()) => Seeded::Yes,
        Err(e) => Seeded::NoTimestamp(e),
    })
}

/// Creates the shadow repository if needed; returns its canonical path.
async fn init_shadow(root: &Path, shadow_dir: &Path) -> Result<PathBuf, CheckpointError> {
    let not_writable = |e: std::io::Error| CheckpointError::NotWritable {
        path: shadow_dir.display().to_string(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(shadow_dir).map_err(not_writable)?;
    let shadow = std::fs::canonicalize(shadow_dir).map_err(not_writable)?;
    if !shadow.join("HEAD").exists() {
        let mut cmd = base_command(root);
        cmd.args(["init", "--quiet", "--bare"]).arg(&shadow);
        run_command(cmd, "init", None).await?;
    }
    // `git init` writes a template `info/exclude`; the repository is ours, so
    // ours replaces it (and follows changes to the list).
    let exclude = shadow.join("info").join("exclude");
    let mut patterns: Vec<String> = SHADOW_EXCLUDES.iter().map(|p| p.to_string()).collect();
    // A shadow repository inside the project must not snapshot itself.
    if let Ok(inside) = shadow.strip_prefix(root) {
        patterns.push(format!("/{}/", inside.to_string_lossy()));
    }
    let text = format!("# Written by freehold.\n{}\n", patterns.join("\n"));
    if std::fs::read_to_string(&exclude).ok().as_deref() != Some(text.as_str()) {
        std::fs::create_dir_all(shadow.join("info")).map_err(not_writable)?;
        std::fs::write(&exclude, text).map_err(not_writable)?;
    }
    Ok(shadow)
}

/// A git command run at `root`, isolated from inherited git locations, with
/// a fixed identity and no prompts.
fn base_command(root: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(root)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("GIT_AUTHOR_NAME", IDENTITY_NAME)
        .env("GIT_AUTHOR_EMAIL", IDENTITY_EMAIL)
        .env("GIT_COMMITTER_NAME", IDENTITY_NAME)
        .env("GIT_COMMITTER_EMAIL", IDENTITY_EMAIL)
        .env("GIT_TERMINAL_PROMPT", "0");
    for var in GIT_LOCATION_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd` to completion, feeding `stdin`; its stdout, or its stderr as
/// the error.
async fn run_command(
    mut cmd: Command,
    name: &str,
    stdin: Option<Vec<u8>>,
) -> Result<Vec<u8>, CheckpointError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(spawn_error)?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means git exited early; its stderr says why.
        let _ = pipe.write_all(&bytes).await;
        drop(pipe);
    }
    let out = child.wait_with_output().await.map_err(spawn_error)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(CheckpointError::Git {
        command: name.to_string(),
        stderr: if stderr.is_empty() {
            format!("exited with {}", out.status)
        } else {
            stderr
        },
    })
}

fn spawn_error(e: std::io::Error) -> CheckpointError {
    if e.kind() == std::io::ErrorKind::NotFound {
        CheckpointError::GitMissing
    } else {
        CheckpointError::io("cannot run git", e)
    }
}

fn is_permission_problem(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    lower.contains("permission denied")
        || lower.contains("insufficient permission")
        || lower.contains("read-only file system")
}

/// An index file in the git directory, removed (with its lock) when dropped.
struct ScratchIndex {
    path: PathBuf,
}

impl ScratchIndex {
    fn new(git_dir: &Path) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("freehold-index-{}-{n}", std::process::id());
        Self {
            path: git_dir.join(name),
        }
    }
}

impl Drop for ScratchIndex {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let mut lock = self.path.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}

/// One line of `git diff-tree -r -z` raw output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    /// `A`, `D`, `M`, `T`… from the checkpoint's tree to the current one.
    status: char,
    /// Relative to the root, as git's bytes.
    path: Vec<u8>,
}

/// Parses `:<mode> <mode> <id> <id> <status>\0<path>\0` records, leaving out
/// submodules (which git does not write back) and anything malformed.
fn parse_raw_diff(out: &[u8]) -> Vec<Change> {
    let mut fields = out.split(|&b| b == 0);
    let mut changes = Vec::new();
    while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
        let meta = String::from_utf8_lossy(meta);
        let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let [src_mode, dst_mode, _, _, status] = parts.as_slice() else {
            continue;
        };
        let Some(status) = status.chars().next() else {
            continue;
        };
        if *src_mode == GITLINK_MODE || *dst_mode == GITLINK_MODE || path.is_empty() {
            continue;
        }
        changes.push(Change {
            status,
            path: path.to_vec(),
        });
    }
    changes
}

/// Parses `for-each-ref` output in the format [`Checkpoints::list`] asks for.
fn parse_checkpoints(out: &str) -> Vec<Checkpoint> {
    let fields: Vec<&str> = out.split('\0').collect();
    fields
        .chunks_exact(4)
        .filter_map(|record| {
            let [id, reference, date, contents] = record else {
                return None;
            };
            let (label, session_id) = parse_message(contents);
            Some(Checkpoint {
                // Each record after the first starts after a newline.
                id: id.trim().to_string(),
                reference: reference.to_string(),
                created_at: date.trim().parse().unwrap_or(0),
                label,
                session_id,
            })
        })
        .collect()
}

/// The label (subject) and session id (trailer) of a checkpoint message.
fn parse_message(contents: &str) -> (String, String) {
    let label = contents.lines().next().unwrap_or_default().to_string();
    let session = contents
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(SESSION_TRAILER))
        .unwrap_or_default()
        .to_string();
    (label, session)
}

/// The first non-blank line of `text`, without control characters, at most
/// [`MAX_LABEL_CHARS`] long; `fallback` if nothing is left.
fn one_line(text: &str, fallback: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let clean: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL_CHARS)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() {
        fallback.to_string()
    } else {
        clean.to_string()
    }
}

fn unix_now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// FNV-1a of the path's bytes: stable across runs and Rust versions, unlike
/// `DefaultHasher`.
fn path_hash(path: &Path) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A path from git's bytes (exact on Unix, where names are bytes).
#[cfg(unix)]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// A path from git's bytes (git writes UTF-8 names elsewhere).
#[cfg(not(unix))]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_diff_is_parsed_and_submodules_left_out() {
        let z = "0000000000000000000000000000000000000000";
        let a = "61780798228d17af2d34fce4cfbdf35556832472";
        let out = format!(
            ":100644 100644 {a} {a} M\0dir/a file\0\
             :000000 100644 {z} {a} A\0new\u{e9}\0\
             :160000 160000 {a} {a} M\0sub\0\
             :100644 000000 {a} {z} D\0gone\0"
        );
        let changes = parse_raw_diff(out.as_bytes());
        let got: Vec<(char, String)> = changes.iter().map(|c| (c.status, lossy(&c.path))).collect();
        assert_eq!(
            got,
            vec![
                ('M', "dir/a file".to_string()),
                ('A', "new\u{e9}".to_string()),
                ('D', "gone".to_string()),
            ]
        );
    }

    #[test]
    fn checkpoints_are_parsed_from_for_each_ref() {
        let out = "aaa\0refs/freehold/checkpoints/x/2\x00100\0Fix it\n\nFreehold-Session: s1\n\0\n\
                   bbb\0refs/freehold/checkpoints/x/1\x0090\0First\n\nFreehold-Session: s0\n\0\n";
        let list = parse_checkpoints(out);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, "aaa");
        assert_eq!(list[0].label, "Fix it");
        assert_eq!(list[0].session_id, "s1");
        assert_eq!(list[0].created_at, 100);
        assert_eq!(list[1].id, "bbb");
        assert_eq!(list[1].reference, "refs/freehold/checkpoints/x/1");
    }

    #[test]
    fn labels_are_one_clean_bounded_line() {
        assert_eq!(one_line("\n  fix the bug \nmore", "x"), "fix the bug");
        assert_eq!(one_line("a\tb\x1b[0m", "x"), "ab[0m");
        assert_eq!(one_line("   \n", "fallback"), "fallback");
        assert_eq!(
            one_line(&"é".repeat(500), "x").chars().count(),
            MAX_LABEL_CHARS
        );
    }

    #[test]
    fn a_missing_git_binary_is_reported_as_such() {
        let error = spawn_error(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(matches!(error, CheckpointError::GitMissing));
        assert!(error.to_string().contains("install git"));
    }

    #[test]
    fn permission_failures_are_recognised() {
        assert!(is_permission_problem(
            "error: insufficient permission for adding an object to repository database"
        ));
        assert!(!is_permission_problem("fatal: bad object"));
    }

    #[test]
    fn path_hash_is_stable() {
        assert_eq!(path_hash(Path::new("")), 0xcbf2_9ce4_8422_2325);
        assert_ne!(path_hash(Path::new("/a")), path_hash(Path::new("/b")));
    }
}
