//! The environment commands run with: the agent's own, minus secrets.

use std::ffi::{OsStr, OsString};

/// Name parts that mark a variable as a secret (compared upper-case).
const SECRET_PARTS: [&str; 7] = [
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "PRIVATE",
];

/// Secrets whose names the parts above miss.
const SECRET_NAMES: [&str; 6] = [
    "DATABASE_URL",
    "GH_PAT",
    "GITHUB_PAT",
    "NPM_CONFIG__AUTH",
    "PGPASS",
    "SENTRY_DSN",
];

/// Whether a variable must not reach the model's commands: API keys,
/// tokens, passwords, and Freehold's own settings.
pub(crate) fn is_secret_env(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("FREEHOLD_")
        || SECRET_PARTS.iter().any(|part| upper.contains(part))
        || SECRET_NAMES.contains(&upper.as_str())
}

/// The child's environment from the agent's: secrets removed, pagers and
/// prompts that would wait for a terminal turned off.
pub(crate) fn child_env(
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vars
        .filter(|(name, _)| name.to_str().is_some_and(|name| !is_secret_env(name)))
        .collect();
    // The command has no terminal: a pager or a password prompt would only
    // hang until the timeout.
    for (name, value) in [
        ("PAGER", "cat"),
        ("GIT_PAGER", "cat"),
        ("GIT_TERMINAL_PROMPT", "0"),
    ] {
        env.retain(|(existing, _)| existing.as_os_str() != OsStr::new(name));
        env.push((name.into(), value.into()));
    }
    env
}
