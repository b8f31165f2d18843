//! The coding agent's front ends: `freehold` (interactive), `freehold -p`
//! and `freehold run` (headless). This module turns flags and
//! configuration into [`AgentOptions`] and starts or resumes a session;
//! the loop itself lives in freehold-agent.

mod headless;
mod interactive;
mod render;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use freehold_agent::{Agent, AgentOptions, PermissionMode, Permissions, Rule, SessionStore};
use freehold_engine::default_model::Purpose;
use freehold_llm::router::Router;

use crate::config::{self, AgentConfig};
use crate::local_model;
use crate::setup::Setup;

/// Flags shared by `freehold`, `freehold -p` and `freehold run`.
#[derive(Debug, Args, Default)]
pub(crate) struct AgentArgs {
    /// Run one task without interaction and print the answer. The task may
    /// also come on standard input.
    #[arg(short = 'p', long = "print", value_name = "TASK", num_args = 0..=1)]
    pub(crate) print: Option<Option<String>>,

    /// The model, as `provider:model` (`local:qwen2.5-coder-1.5b`,
    /// `ollama:qwen3:8b`, `openai:gpt-5-mini`), an alias, a `.gguf` file,
    /// or `local` for the embedded engine's default (the default).
    #[arg(short, long, env = "FREEHOLD_MODEL")]
    pub(crate) model: Option<String>,

    /// How headless runs print: the answer (`text`), one JSON object
    /// (`json`), or one JSON event per line (`stream-json`).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output_format: OutputFormat,

    /// The most model calls for one task (default 40).
    #[arg(long)]
    pub(crate) max_turns: Option<u32>,

    /// default (ask before edits and commands), acceptEdits, plan
    /// (read-only) or bypassPermissions.
    #[arg(long, value_parser = parse_mode)]
    pub(crate) permission_mode: Option<PermissionMode>,

    /// Calls allowed without asking: `shell(git status:*)`, `edit`,
    /// `edit(src/**)`. Several may be given, space- or comma-separated.
    #[arg(long = "allowedTools", alias = "allowed-tools", num_args = 1.., value_name = "RULE")]
    pub(crate) allowed_tools: Vec<String>,

    /// Calls always refused (beats allowed rules): `shell(rm:*)`.
    #[arg(long = "disallowedTools", alias = "disallowed-tools", num_args = 1.., value_name = "RULE")]
    pub(crate) disallowed_tools: Vec<String>,

    /// Continue the most recent session in this directory.
    #[arg(short = 'c', long = "continue", conflicts_with = "resume")]
    pub(crate) continue_last: bool,

    /// Continue the session with this id (see `freehold sessions`).
    #[arg(short = 'r', long, value_name = "ID")]
    pub(crate) resume: Option<String>,

    /// Work in this directory instead of the current one.
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    pub(crate) directory: Option<std::path::PathBuf>,
}

/// `freehold run`: the same as `freehold -p`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The task. Read from standard input when omitted; when both are
    /// given, standard input is appended.
    pub(crate) task: Vec<String>,

    #[command(flatten)]
    pub(crate) agent: AgentArgs,
}

/// How headless runs print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// The final answer.
    #[default]
    Text,
    /// One JSON object: result, session id, turns, usage, cost, duration,
    /// stop reason.
    Json,
    /// One JSON event per line, as they happen.
    StreamJson,
}

fn parse_mode(text: &str) -> Result<PermissionMode, String> {
    text.parse()
}

/// `freehold` with no subcommand: interactive, or headless with `-p`.
pub(crate) async fn run(args: AgentArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    match args.print.clone() {
        Some(task) => {
            let words: Vec<String> = task.into_iter().collect();
            let task = crate::chat::read_prompt(&words, "freehold -p \"…\"")?;
            run_headless(args, task, config).await
        }
        None => {
            let session = Session::open(&args, config, true).await?;
            interactive::run(session).await
        }
    }
}

/// `freehold run TASK`.
pub(crate) async fn run_task(args: RunArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let task = crate::chat::read_prompt(&args.task, "freehold run \"…\"")?;
    run_headless(args.agent, task, config).await
}

async fn run_headless(
    args: AgentArgs,
    task: String,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let format = args.output_format;
    let session = Session::open(&args, config, false).await?;
    headless::run(session, &task, format).await
}

/// An agent ready to work, with what the front ends need besides it.
pub(crate) struct Session {
    pub(crate) agent: Agent,
    pub(crate) router: Arc<Router>,
    pub(crate) resumed: bool,
    config: AgentConfig,
}

impl Session {
    async fn open(
        args: &AgentArgs,
        config: Option<&Path>,
        interactive: bool,
    ) -> anyhow::Result<Self> {
        let setup = Setup::load(config)?;
        let agent_config = setup.config.agent.clone();
        let named = args
            .model
            .as_deref()
            .or(setup.config.default_model.as_deref());
        let model = local_model::model_name(named, Purpose::Chat).await?;
        let router = Arc::new(setup.router);
        let cwd = match &args.directory {
            Some(dir) => dir
                .canonicalize()
                .with_context(|| format!("cannot work in {} (given with -C)", dir.display()))?,
            None => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                cwd.canonicalize().unwrap_or(cwd)
            }
        };
        if !cwd.is_dir() {
            bail!("{} is not a directory (given with -C)", cwd.display());
        }
        let options = options(args, &agent_config, &router, model, &cwd, interactive).await?;
        let store = SessionStore::new(SessionStore::default_dir().context(
            "cannot tell where to keep sessions: set FREEHOLD_DATA_DIR, XDG_DATA_HOME or HOME",
        )?);
        let (agent, resumed) = if let Some(id) = &args.resume {
            (Agent::resume(router.clone(), options, &store, id)?, true)
        } else if args.continue_last {
            let Some(latest) = store.latest_in(&cwd)? else {
                bail!(
                    "no earlier session in {}; start one without --continue, or pick one from `freehold sessions` with --resume ID",
                    cwd.display()
                );
            };
            (
                Agent::resume(router.clone(), options, &store, &latest.meta.id)?,
                true,
            )
        } else {
            (Agent::start(router.clone(), options, &store)?, false)
        };
        Ok(Self {
            agent,
            router,
            resumed,
            config: agent_config,
        })
    }

    /// The context window to budget for `model`.
    pub(crate) async fn window_for(&self, model: &str) -> u32 {
        context_window(&self.router, model, self.config.context_window).await
    }
}

/// Flags over configuration over defaults.
async fn options(
    args: &AgentArgs,
    config: &AgentConfig,
    router: &Router,
    model: String,
    cwd: &Path,
    interactive: bool,
) -> anyhow::Result<AgentOptions> {
    let tuning = tuning(router, &model, config).await;
    let mut options = AgentOptions::new(model, cwd);
    options.context_window = tuning.context_window;
    options.max_output_tokens = tuning.max_output_tokens;
    options.temperature = tuning.temperature;
    options.guided = tuning.guided;
    options.max_turns = args.max_turns.or(config.max_turns).unwrap_or(40);
    if let Some(secs) = config.shell_timeout_secs {
        options.shell_timeout_secs = secs;
    }
    options.user_config_dir = config::config_dir();
    options.checkpoint_dir = freehold_agent::data_dir();
    options.permissions = permissions(args, config)?;
    if !interactive && options.permissions.mode == PermissionMode::Default {
        tracing::debug!("headless: calls that would ask are refused");
    }
    Ok(options)
}

fn permissions(args: &AgentArgs, config: &AgentConfig) -> anyhow::Result<Permissions> {
    let mode = match (args.permission_mode, &config.permission_mode) {
        (Some(mode), _) => mode,
        (None, Some(text)) => text.parse().map_err(|e: String| {
            anyhow::anyhow!("[agent] permission_mode in the configuration: {e}")
        })?,
        (None, None) => PermissionMode::Default,
    };
    let parse = |texts: &[String], origin: &str| -> anyhow::Result<Vec<Rule>> {
        texts
            .iter()
            .flat_map(|text| split_rules(text))
            .map(|rule| rule.parse::<Rule>().with_context(|| format!("in {origin}")))
            .collect()
    };
    let mut allow = parse(&config.allow, "[agent] allow")?;
    allow.extend(parse(&args.allowed_tools, "--allowedTools")?);
    let mut deny = parse(&config.deny, "[agent] deny")?;
    deny.extend(parse(&args.disallowed_tools, "--disallowedTools")?);
    Ok(Permissions { mode, allow, deny })
}

/// `"shell(git status:*),edit read"` → three rules: commas and spaces
/// outside parentheses separate rules.
fn split_rules(text: &str) -> Vec<String> {
    let mut rules = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' | ' ' if depth == 0 => {
                if !current.trim().is_empty() {
                    rules.push(std::mem::take(&mut current));
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        rules.push(current);
    }
    rules
}

/// Budget and sampling for a model.
pub(crate) struct Tuning {
    pub(crate) context_window: u32,
    pub(crate) max_output_tokens: u32,
    pub(crate) temperature: Option<f32>,
    pub(crate) guided: bool,
}

/// The budget and sampling for `model`: the configuration's, else a
/// quarter of the window for answers (512–4,096 tokens; local models at
/// most 2,048), and temperature
/// 0.2 for local models (small models call tools more reliably when they
/// sample close to greedy), and guidance ([`AgentOptions::guided`]) for
/// local models.
pub(crate) async fn tuning(router: &Router, model: &str, config: &AgentConfig) -> Tuning {
    let context_window = context_window(router, model, config.context_window).await;
    Tuning {
        context_window,
        max_output_tokens: config
            .max_output_tokens
            .unwrap_or(if model.starts_with("local:") {
                // On a CPU, a small model that rambles to 4,096 tokens costs
                // minutes; 2,048 still fits a file of a few hundred lines.
                (context_window / 4).clamp(512, 2048)
            } else {
                (context_window / 4).clamp(512, 4096)
            }),
        temperature: config
            .temperature
            .or(model.starts_with("local:").then_some(0.2)),
        guided: config.guided.unwrap_or(model.starts_with("local:")),
    }
}

/// The context window to budget for: the configured one, else the model's
/// own (for local models at most [`LOCAL_WINDOW_CAP`]: small models lose
/// the thread long before their trained context, and every token costs
/// prompt time on a CPU), else the catalog's, else 8,192.
pub(crate) async fn context_window(router: &Router, model: &str, configured: Option<u32>) -> u32 {
    if let Some(window) = configured {
        return window;
    }
    if let Some(name) = model.strip_prefix("local:") {
        let known = match router.providers().get("local") {
            Some(local) => local
                .list_models()
                .await
                .ok()
                .and_then(|models| models.into_iter().find(|m| m.id == name))
                .and_then(|m| m.context_window),
            None => None,
        };
        return known.unwrap_or(DEFAULT_WINDOW).min(LOCAL_WINDOW_CAP);
    }
    router
        .resolve(model)
        .ok()
        .and_then(|targets| targets.into_iter().next())
        .and_then(|target| {
            router
                .catalog()
                .lookup(&target.provider, &target.model)
                .and_then(|entry| entry.context_window)
        })
        .unwrap_or(DEFAULT_WINDOW)
}

/// The window assumed when nothing says otherwise.
const DEFAULT_WINDOW: u32 = 8192;

/// The largest window budgeted for a local model.
const LOCAL_WINDOW_CAP: u32 = 16_384;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_outside_parentheses() {
        assert_eq!(
            split_rules("shell(git status:*),edit read"),
            ["shell(git status:*)", "edit", "read"]
        );
        assert_eq!(
            split_rules("shell(cargo test --all)"),
            ["shell(cargo test --all)"]
        );
    }
}
