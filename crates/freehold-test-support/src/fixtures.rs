//! What tests need from outside the repository: the real test models, the
//! Python interpreter with the official SDKs, the Codex and Claude Code
//! programs, a PostgreSQL server. Each is
//! named by an environment variable that `scripts/test` sets.
//!
//! On a developer's machine a missing fixture skips the test with a note on
//! stderr. Under CI (`CI` set) it fails the test instead: a test of a real
//! part must never pass by skipping it.

use std::path::{Path, PathBuf};

/// A file in the test models' folder (`FREEHOLD_TEST_MODELS`, filled by
/// `scripts/fetch-test-models`), for example
/// `"SmolLM2-135M-Instruct.Q4_1.gguf"`.
///
/// # Panics
/// Under CI, when the variable is unset or the file is missing.
pub fn test_model(file: &str) -> Option<PathBuf> {
    let dir = fixture(
        "FREEHOLD_TEST_MODELS",
        "the folder of test models (scripts/fetch-test-models prints it)",
    )?;
    let path = PathBuf::from(dir).join(file);
    if path.is_file() {
        return Some(path);
    }
    missing(&format!(
        "{} does not exist: run scripts/fetch-test-models",
        path.display()
    ))
}

/// Waits until no other test in this test binary runs a real model, and
/// holds that turn until the guard is dropped.
///
/// llama.cpp gives each model every core, and its threads spin while they
/// wait for each other. Two or three models decoding at once on a 2-core
/// machine therefore slow each other down by far more than half: a CI run
/// once saw a 135M model produce no token in two minutes beside a 0.5B one.
/// Tests that make a model generate (directly or through a `freehold`
/// process they start) take this turn first. Cargo runs test binaries one
/// after another, so a lock per binary is enough.
pub async fn one_model_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static MODEL_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    MODEL_TURN.lock().await
}

/// The Python interpreter of a virtual environment holding the official
/// `openai` and `anthropic` SDKs (`FREEHOLD_TEST_PYTHON`, made by
/// `scripts/python-sdks`).
///
/// # Panics
/// Under CI, when the variable is unset.
pub fn test_python() -> Option<PathBuf> {
    fixture(
        "FREEHOLD_TEST_PYTHON",
        "a Python with the official SDKs (scripts/python-sdks prints it)",
    )
    .map(PathBuf::from)
}

/// A folder holding the coding agents that the gateway's tests drive, as
/// `codex` (OpenAI's Codex CLI), `claude` (Anthropic's Claude Code) and
/// `aider` (Aider)
/// (`FREEHOLD_TEST_AGENT_CLIENTS`, made by `scripts/agent-clients`).
///
/// # Panics
/// Under CI, when the variable is unset.
pub fn test_agent_clients() -> Option<PathBuf> {
    fixture(
        "FREEHOLD_TEST_AGENT_CLIENTS",
        "a folder with the codex, claude and aider programs (scripts/agent-clients prints it)",
    )
    .map(PathBuf::from)
}

/// The URL of a PostgreSQL server whose user may create databases
/// (`FREEHOLD_TEST_POSTGRES`, from `scripts/postgres-test start`).
///
/// # Panics
/// Under CI, when the variable is unset.
pub fn test_postgres() -> Option<String> {
    fixture(
        "FREEHOLD_TEST_POSTGRES",
        "a PostgreSQL server's URL (scripts/postgres-test start prints it)",
    )
}

fn fixture(variable: &str, what: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => missing(&format!("{variable} is not set; it names {what}")),
    }
}

fn missing<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}. Under CI every fixture must be present (scripts/test provides them all)"
    );
    eprintln!("skipped: {why}");
    None
}

/// Makes a self-signed certificate for 127.0.0.1 and its private key (PEM)
/// in `dir` with `openssl` (which `scripts/setup --tests` installs); returns
/// their paths, certificate first.
///
/// # Panics
/// When `openssl` is missing or fails.
pub fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = match std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=freehold-test", "-addext"])
        .arg("subjectAltName=IP:127.0.0.1")
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
    {
        Ok(made) => made,
        Err(error) => panic!("cannot run openssl ({error}): scripts/setup --tests installs it"),
    };
    assert!(made.status.success(), "openssl failed: {made:?}");
    (cert, key)
}
