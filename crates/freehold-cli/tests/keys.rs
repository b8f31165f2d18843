//! `freehold keys` and `freehold usage` end to end: the real binary on a
//! SQLite database in a temporary data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `freehold` with only a temporary home and data directory.
fn freehold(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_freehold"));
    command
        .args(args)
        .current_dir(home)
        .env_clear()
        .env("HOME", home)
        .env("FREEHOLD_DATA_DIR", home.join("data"))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(run: &Run) {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn create_list_revoke() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    let created = freehold(
        home,
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--expires",
            "30d",
            "--models",
            "gpt-4o,claude",
            "--rpm",
            "60",
            "--tpm",
            "10000",
            "--budget",
            "5",
            "--local-only",
        ],
        &[],
    );
    ok(&created);
    let secret = created
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("fh-"))
        .expect("the secret is printed")
        .to_owned();
    assert!(secret.len() > 40, "{secret}");
    assert!(
        created.stderr.contains("cannot be shown again"),
        "{}",
        created.stderr
    );
    assert!(home.join("data/gateway.db").exists());

    let list = freehold(home, &["keys", "list"], &[]);
    ok(&list);
    assert!(list.stdout.contains("ci"), "{}", list.stdout);
    assert!(
        list.stdout.contains(&secret[..11]),
        "the prefix is shown: {}",
        list.stdout
    );
    assert!(
        !list.stdout.contains(&secret),
        "the secret is not: {}",
        list.stdout
    );
    assert!(list.stdout.contains("active"), "{}", list.stdout);
    assert!(list.stdout.contains("gpt-4o,claude"), "{}", list.stdout);
    assert!(
        list.stdout.contains("60 rpm, 10000 tpm, local-only"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("$0.00 / $5.00"), "{}", list.stdout);

    // JSON, for scripts: a second key, created and listed.
    let created = freehold(home, &["keys", "create", "--name", "bot", "--json"], &[]);
    ok(&created);
    let created: serde_json::Value = serde_json::from_str(&created.stdout).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("fh-"));
    assert_eq!(created["name"], "bot");
    assert_eq!(created["state"], "active");

    let revoked = freehold(home, &["keys", "revoke", "ci"], &[]);
    ok(&revoked);
    assert!(revoked.stdout.contains("revoked"), "{}", revoked.stdout);

    let list = freehold(home, &["keys", "list"], &[]);
    ok(&list);
    let ci_line = list.stdout.lines().find(|l| l.contains(" ci ")).unwrap();
    assert!(ci_line.contains("revoked"), "{}", list.stdout);
    // A key without a budget has no spend kept against one.
    let bot_line = list.stdout.lines().find(|l| l.contains(" bot ")).unwrap();
    assert!(bot_line.contains("unlimited"), "{}", list.stdout);
    assert!(!bot_line.contains('$'), "{}", list.stdout);

    let json = freehold(home, &["keys", "list", "--json"], &[]);
    ok(&json);
    let keys: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let ci = keys.iter().find(|k| k["name"] == "ci").unwrap();
    assert_eq!(ci["state"], "revoked");
    assert!(ci["revoked_at"].is_i64());
    assert!(!json.stdout.contains(&secret));

    let unknown = freehold(home, &["keys", "revoke", "nobody"], &[]);
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no virtual key matches `nobody`"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn usage_on_an_empty_ledger() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let usage = freehold(home, &["usage"], &[]);
    ok(&usage);
    assert!(
        usage.stdout.contains("no requests recorded"),
        "{}",
        usage.stdout
    );
    let usage = freehold(
        home,
        &["usage", "--by", "day", "--since", "7d", "--json"],
        &[],
    );
    ok(&usage);
    assert_eq!(usage.stdout.trim(), "[]");
    let bad = freehold(home, &["usage", "--since", "lately"], &[]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("invalid --since `lately`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn bad_expiry_is_explained() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let run = freehold(
        home,
        &["keys", "create", "--name", "x", "--expires", "soon"],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("invalid --expires `soon`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("30d"), "{}", run.stderr);
    let run = freehold(
        home,
        &["keys", "create", "--name", "x", "--expires", "2001-01-01"],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("in the past"), "{}", run.stderr);
    // Nothing was created.
    let list = freehold(home, &["keys", "list"], &[]);
    ok(&list);
    assert!(list.stdout.contains("no keys"), "{}", list.stdout);
}

#[test]
fn database_option_and_environment() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let by_flag = home.join("flag/keys.db");
    let flag = by_flag.to_str().unwrap();
    ok(&freehold(
        home,
        &["keys", "create", "--name", "a", "--database", flag],
        &[],
    ));
    assert!(by_flag.exists());
    let by_env = home.join("env.db");
    let env = format!("sqlite:{}", by_env.display());
    ok(&freehold(
        home,
        &["keys", "create", "--name", "b"],
        &[("FREEHOLD_DATABASE", &env)],
    ));
    assert!(by_env.exists());
    assert!(!home.join("data/gateway.db").exists());

    let list = freehold(home, &["keys", "--database", flag, "list"], &[]);
    ok(&list);
    assert!(list.stdout.contains(" a "), "{}", list.stdout);
    assert!(!list.stdout.contains(" b "), "{}", list.stdout);
}

#[test]
fn an_expiry_too_far_ahead_or_an_empty_model_list_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    // Seconds past what an i64 holds once added to now.
    let run = freehold(
        home,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--expires",
            "15250284452471w",
        ],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("too far ahead"), "{}", run.stderr);
    // An empty `--models` (a script's empty variable) is not "every model".
    let run = freehold(
        home,
        &["keys", "create", "--name", "x", "--models", " , "],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("list of allowed models is empty"),
        "{}",
        run.stderr
    );
    let list = freehold(home, &["keys", "list"], &[]);
    ok(&list);
    assert!(list.stdout.contains("no keys"), "{}", list.stdout);
}

#[test]
fn help_never_shows_the_database_url() {
    let home = tempfile::tempdir().unwrap();
    let url = "postgres://freehold:hunter2-secret@db.example/freehold";
    for command in [
        &["serve", "--help"][..],
        &["keys", "--help"],
        &["usage", "--help"],
    ] {
        let run = freehold(home.path(), command, &[("FREEHOLD_DATABASE", url)]);
        ok(&run);
        assert!(
            !run.stdout.contains("hunter2"),
            "{command:?}:\n{}",
            run.stdout
        );
    }
}
