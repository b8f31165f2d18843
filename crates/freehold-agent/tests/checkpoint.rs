//! Checkpoints against real git in temporary directories: snapshots and
//! restores leave the user's index, HEAD and branches alone, honour
//! .gitignore, and step back one turn per undo.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use freehold_agent::checkpoint::{CheckpointError, Checkpoints};

// ------------------------------------------------------------ helpers

/// A directory removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "freehold-checkpoint-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(std::fs::canonicalize(&dir).unwrap())
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, relative: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(relative)).ok()
    }

    fn remove(&self, relative: &str) {
        std::fs::remove_file(self.0.join(relative)).unwrap();
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs git in `dir`, isolated from this machine's git configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A repository with one commit: tracked files (one with spaces and
/// non-ASCII in its path), a .gitignore, and an ignored file.
fn repo() -> TestDir {
    let dir = TestDir::new();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["config", "user.name", "Test"]);
    git(dir.path(), &["config", "user.email", "test@example.com"]);
    dir.write(".gitignore", "*.log\nbuild/\n");
    dir.write("a.txt", "a1\n");
    dir.write("dir with space/b ü.txt", "b1\n");
    dir.write("staged.txt", "s1\n");
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "initial"]);
    dir.write("debug.log", "ignored 1\n");
    dir
}

/// Every file under `dir` (not `.git`), path to content.
fn files(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == ".git" {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Everything about the user's git state a checkpoint must not change.
#[derive(Debug, PartialEq)]
struct GitState {
    head: String,
    branch: String,
    refs: String,
    staged: String,
    index: Vec<u8>,
}

fn git_state(dir: &Path) -> GitState {
    // Read the index bytes first: the git commands below may refresh it.
    let index = std::fs::read(dir.join(".git/index")).unwrap();
    GitState {
        head: git(dir, &["rev-parse", "HEAD"]),
        branch: git(dir, &["symbolic-ref", "HEAD"]),
        refs: git(
            dir,
            &["for-each-ref", "refs/heads", "refs/tags", "refs/stash"],
        ),
        staged: git(dir, &["diff", "--cached"]),
        index,
    }
}

fn shadow_for(data: &TestDir, root: &Path) -> PathBuf {
    freehold_agent::checkpoint::default_shadow_dir(data.path(), root)
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn restore_reverts_edits_deletions_and_creations_and_leaves_git_alone() {
    let dir = repo();
    let data = TestDir::new();
    // A staged change the user is in the middle of.
    dir.write("staged.txt", "s2 staged\n");
    git(dir.path(), &["add", "staged.txt"]);
    let before = git_state(dir.path());
    let status = git(dir.path(), &["status", "--porcelain"]);
    let snapshot_files = files(dir.path());

    let checkpoints = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    assert!(checkpoints.shadow_repository().is_none());
    let checkpoint = checkpoints
        .snapshot("session-1", "Fix the bug\nand more")
        .await
        .unwrap();
    assert_eq!(checkpoint.label, "Fix the bug");
    assert_eq!(checkpoint.session_id, "session-1");
    assert!(
        !data.path().join("checkpoints").exists(),
        "no shadow repository in a git repo"
    );

    // The agent's turn: edit, delete, create; ignored files change too.
    dir.write("a.txt", "a2\n");
    dir.write("staged.txt", "s3 agent\n");
    dir.remove("dir with space/b ü.txt");
    dir.write("new dir/nested/c d.txt", "new\n");
    dir.write("debug.log", "ignored 2\n");
    dir.write("build/out.bin", "artefact\n");

    let report = checkpoints.restore_last().await.unwrap();
    assert_eq!(report.checkpoint, checkpoint);
    assert_eq!(
        report.restored,
        ["a.txt", "dir with space/b ü.txt", "staged.txt"]
    );
    assert_eq!(report.deleted, ["new dir/nested/c d.txt"]);

    let mut expected = snapshot_files;
    expected.insert("debug.log".into(), "ignored 2\n".into());
    expected.insert("build/out.bin".into(), "artefact\n".into());
    assert_eq!(files(dir.path()), expected);
    assert!(
        !dir.path().join("new dir").exists(),
        "emptied directories are removed"
    );

    assert_eq!(git_state(dir.path()), before);
    assert_eq!(git(dir.path(), &["status", "--porcelain"]), status);
    assert!(
        checkpoints.list().await.unwrap().is_empty(),
        "undo drops the checkpoint"
    );
    let scratch: Vec<_> = std::fs::read_dir(dir.path().join(".git"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("freehold-index"))
        .collect();
    assert!(
        scratch.is_empty(),
        "scratch indexes are removed: {scratch:?}"
    );

    // The state from just before the undo is kept.
    let saved = report.before.unwrap();
    assert_eq!(
        git(dir.path(), &["show", &format!("{saved}:a.txt")]),
        "a2\n"
    );
    let undone = git(
        dir.path(),
        &[
            "for-each-ref",
            "--format=%(objectname)",
            "refs/freehold/undone/",
        ],
    );
    assert_eq!(undone.trim(), saved);
}

#[tokio::test]
async fn non_git_directory_uses_a_shadow_repository() {
    let dir = TestDir::new();
    let data = TestDir::new();
    dir.write("main.py", "print(1)\n");
    dir.write("docs/read me.md", "hello\n");
    dir.write("node_modules/pkg/index.js", "big\n");
    let snapshot_files = files(dir.path());
    let shadow = shadow_for(&data, dir.path());

    let checkpoints = Checkpoints::open(dir.path(), &shadow).await.unwrap();
    assert_eq!(checkpoints.shadow_repository(), Some(shadow.as_path()));
    checkpoints.snapshot("s", "turn 1").await.unwrap();
    assert!(shadow.join("HEAD").exists(), "shadow repository created");
    assert!(
        !dir.path().join(".git").exists(),
        "the project gets no .git"
    );

    dir.write("main.py", "print(2)\n");
    dir.remove("docs/read me.md");
    dir.write("extra.py", "x\n");
    dir.write("node_modules/pkg/index.js", "changed\n");

    let report = checkpoints.restore_last().await.unwrap();
    assert_eq!(report.restored, ["docs/read me.md", "main.py"]);
    assert_eq!(report.deleted, ["extra.py"]);
    let mut expected = snapshot_files;
    expected.insert("node_modules/pkg/index.js".into(), "changed\n".into());
    assert_eq!(files(dir.path()), expected);

    // A second handle on the same directory finds the same repository.
    checkpoints.snapshot("s", "turn 2").await.unwrap();
    let again = Checkpoints::open(dir.path(), &shadow).await.unwrap();
    assert_eq!(again.list().await.unwrap().len(), 1);
}

/// Git trusts a file whose size and timestamps match its index entry,
/// unless the entry is "racy": not older than the index file itself. On a
/// clock with coarse ticks, a same-size rewrite inside the tick in which git
/// indexed the file is caught only that way. Snapshots seed their scratch
/// index from the last one, so the copy must keep the original's timestamp,
/// or git stops seeing such entries as racy and undo misses the edit.
///
/// The tick is simulated: the file, the snapshot's index and the rewritten
/// file all get the same mtime, and ctime (which a test cannot set) is left
/// out of git's comparison by `core.trustctime`.
#[tokio::test]
async fn an_edit_that_keeps_size_and_mtime_is_still_undone() {
    let dir = TestDir::new();
    let data = TestDir::new();
    let shadow = shadow_for(&data, dir.path());
    let tick = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    let stamp = |path: &Path| {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(tick)
            .unwrap();
    };
    dir.write("main.py", "print(1)\n");
    stamp(&dir.path().join("main.py"));

    let checkpoints = Checkpoints::open(dir.path(), &shadow).await.unwrap();
    let shadow_dir = format!("--git-dir={}", shadow.display());
    git(
        dir.path(),
        &[&shadow_dir, "config", "core.trustctime", "false"],
    );
    checkpoints.snapshot("s", "turn 1").await.unwrap();
    // The index the snapshot kept, and the agent's edit, in the same tick.
    stamp(&shadow.join("index"));
    dir.write("main.py", "print(2)\n");
    stamp(&dir.path().join("main.py"));

    let report = checkpoints.restore_last().await.unwrap();
    assert_eq!(report.restored, ["main.py"]);
    assert_eq!(dir.read("main.py").as_deref(), Some("print(1)\n"));
}

#[tokio::test]
async fn each_undo_steps_one_checkpoint_back_until_none_is_left() {
    let dir = repo();
    let data = TestDir::new();
    let checkpoints = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    let first = checkpoints.snapshot("s", "turn 1").await.unwrap();
    dir.write("a.txt", "turn 1 edit\n");
    dir.write("one.txt", "1\n");
    let second = checkpoints.snapshot("s", "turn 2").await.unwrap();
    dir.write("a.txt", "turn 2 edit\n");
    dir.write("two.txt", "2\n");

    let list = checkpoints.list().await.unwrap();
    assert_eq!(list, [second.clone(), first.clone()], "newest first");

    let report = checkpoints.restore_last().await.unwrap();
    assert_eq!(report.checkpoint, second);
    assert_eq!(dir.read("a.txt").unwrap(), "turn 1 edit\n");
    assert_eq!(dir.read("one.txt").unwrap(), "1\n");
    assert_eq!(dir.read("two.txt"), None);

    let report = checkpoints.restore_last().await.unwrap();
    assert_eq!(report.checkpoint, first);
    assert_eq!(dir.read("a.txt").unwrap(), "a1\n");
    assert_eq!(dir.read("one.txt"), None);

    let error = checkpoints.restore_last().await.unwrap_err();
    assert!(
        matches!(error, CheckpointError::NoCheckpoint { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("no checkpoint to undo"),
        "{error}"
    );
}

#[tokio::test]
async fn undo_without_checkpoints_is_a_clear_error() {
    let dir = repo();
    let data = TestDir::new();
    let checkpoints = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    let error = checkpoints.restore_last().await.unwrap_err();
    assert!(
        matches!(error, CheckpointError::NoCheckpoint { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("no checkpoint to undo for "),
        "{error}"
    );
}

#[tokio::test]
async fn restoring_an_older_checkpoint_keeps_the_list_and_unchanged_restore_is_empty() {
    let dir = repo();
    let data = TestDir::new();
    let checkpoints = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    let first = checkpoints.snapshot("s", "turn 1").await.unwrap();
    dir.write("a.txt", "changed\n");
    checkpoints.snapshot("s", "turn 2").await.unwrap();

    let report = checkpoints.restore(&first).await.unwrap();
    assert_eq!(report.restored, ["a.txt"]);
    assert_eq!(dir.read("a.txt").unwrap(), "a1\n");
    assert_eq!(checkpoints.list().await.unwrap().len(), 2);

    let report = checkpoints.restore(&first).await.unwrap();
    assert!(report.restored.is_empty() && report.deleted.is_empty());
    assert_eq!(report.before, None);
}

#[tokio::test]
async fn a_subdirectory_root_only_snapshots_and_restores_its_own_files() {
    let dir = repo();
    let data = TestDir::new();
    dir.write("sub/inner.txt", "in 1\n");
    let sub = dir.path().join("sub");
    let checkpoints = Checkpoints::open(&sub, &shadow_for(&data, &sub))
        .await
        .unwrap();
    checkpoints.snapshot("s", "turn").await.unwrap();

    dir.write("sub/inner.txt", "in 2\n");
    dir.write("sub/new.txt", "new\n");
    dir.write("a.txt", "user edit outside\n");
    let report = checkpoints.restore_last().await.unwrap();
    assert_eq!(report.restored, ["inner.txt"]);
    assert_eq!(report.deleted, ["new.txt"]);
    assert_eq!(dir.read("sub/inner.txt").unwrap(), "in 1\n");
    assert_eq!(dir.read("a.txt").unwrap(), "user edit outside\n");

    // The repository root's checkpoints are another list.
    let top = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    checkpoints.snapshot("s", "sub turn").await.unwrap();
    assert!(top.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_repository_without_commits_works() {
    let dir = TestDir::new();
    let data = TestDir::new();
    git(dir.path(), &["init", "-q"]);
    dir.write("x.txt", "x\n");
    let checkpoints = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    checkpoints.snapshot("s", "turn").await.unwrap();
    dir.write("x.txt", "y\n");
    checkpoints.restore_last().await.unwrap();
    assert_eq!(dir.read("x.txt").unwrap(), "x\n");
    assert_eq!(git(dir.path(), &["status", "--porcelain"]), "?? x.txt\n");
    assert!(
        !dir.path().join(".git/index").exists(),
        "the user's index is not created"
    );
}

#[tokio::test]
async fn prune_keeps_the_newest() {
    let dir = repo();
    let data = TestDir::new();
    let checkpoints = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    for turn in 0..4 {
        dir.write("a.txt", &format!("{turn}\n"));
        checkpoints
            .snapshot("s", &format!("turn {turn}"))
            .await
            .unwrap();
    }
    assert_eq!(checkpoints.prune(2).await.unwrap(), 2);
    let labels: Vec<String> = checkpoints
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.label)
        .collect();
    assert_eq!(labels, ["turn 3", "turn 2"]);
    assert_eq!(checkpoints.prune(5).await.unwrap(), 0);
}

#[cfg(unix)]
#[tokio::test]
async fn modes_and_symlinks_are_restored() {
    use std::os::unix::fs::PermissionsExt;
    let dir = repo();
    let data = TestDir::new();
    dir.write("run.sh", "#!/bin/sh\n");
    let script = dir.path().join("run.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", dir.path().join("link")).unwrap();
    let checkpoints = Checkpoints::open(dir.path(), &shadow_for(&data, dir.path()))
        .await
        .unwrap();
    checkpoints.snapshot("s", "turn").await.unwrap();

    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(dir.path().join("link")).unwrap();
    dir.write("link", "now a file\n");
    let report = checkpoints.restore_last().await.unwrap();
    assert_eq!(report.restored, ["link", "run.sh"]);
    let mode = std::fs::metadata(&script).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable again: {mode:o}");
    let target = std::fs::read_link(dir.path().join("link")).unwrap();
    assert_eq!(target, Path::new("a.txt"));
}
